"""Reads and writes of tuning runs and their per-step metrics.

Every status change is a compare-and-set inside one transaction (`transition`): a run moves only
from the states a caller expects, so a worker finishing and a user cancelling at the same moment
cannot leave the row half-updated or flip a finished run back to running.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import delete, select

from store.db import transaction
from store.schema import Run, RunMetric

STATES = ("queued", "running", "finished", "failed", "cancelled")
ACTIVE = ("queued", "running")
_FIELDS = ("id", "method", "dataset", "status", "config", "folder", "log_path", "pid", "cancel_requested",
           "global_step", "max_steps", "adapter_path", "error", "evaluation", "attempts", "created_at",
           "started_at", "finished_at")


class UnknownRun(LookupError):
    """No run has that id."""


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _as_dict(run: Run) -> dict:
    return {name: getattr(run, name) for name in _FIELDS}


def _get(session, run_id: str, lock: bool = False) -> Run:
    """The run's row; `lock` holds it until the transaction ends (open that with `transaction(lock=True)`)."""
    run = session.get(Run, run_id, with_for_update=lock)
    if run is None:
        raise UnknownRun(f"Unknown run '{run_id}'")
    return run


def create_run(run_id: str, method: str, dataset: str, config: dict, folder: str, log_path: str,
               max_steps: int) -> dict:
    """Insert a queued run."""
    with transaction() as s:
        run = Run(id=run_id, method=method, dataset=dataset, status="queued", config=config, folder=folder,
                  log_path=log_path, max_steps=max_steps, cancel_requested=False, global_step=0, attempts=0)
        s.add(run)
        s.flush()
        return _as_dict(run)


def get_run(run_id: str) -> dict:
    with transaction() as s:
        return _as_dict(_get(s, run_id))


def list_runs() -> list[dict]:
    """All runs, newest first."""
    with transaction() as s:
        return [_as_dict(r) for r in s.scalars(select(Run).order_by(Run.created_at.desc(), Run.id.desc()))]


def transition(run_id: str, status: str, expect: tuple[str, ...], **fields) -> bool:
    """Set `status` (and `fields`) only if the run is in one of `expect`; False when it was not.

    Entering a final state stamps `finished_at`; entering `running` stamps `started_at`.
    """
    if status not in STATES:
        raise ValueError(f"Unknown run status '{status}'")
    with transaction(lock=True) as s:
        run = _get(s, run_id, lock=True)
        if run.status not in expect:
            return False
        run.status = status
        if status == "running":
            run.started_at = _now()
        if status not in ACTIVE:
            run.finished_at = _now()
        for name, value in fields.items():
            setattr(run, name, value)
        return True


def update_run(run_id: str, **fields) -> None:
    """Change non-status fields (pid, global_step, evaluation, ...)."""
    if "status" in fields:
        raise ValueError("Use transition() to change a run's status")
    with transaction() as s:
        run = _get(s, run_id)
        for name, value in fields.items():
            setattr(run, name, value)


def request_cancel(run_id: str) -> bool:
    """Raise the cancel flag of an active run; False when the run has already ended."""
    with transaction(lock=True) as s:
        run = _get(s, run_id, lock=True)
        if run.status not in ACTIVE:
            return False
        run.cancel_requested = True
        return True


def cancel_requested(run_id: str) -> bool:
    with transaction() as s:
        return bool(_get(s, run_id).cancel_requested)


def add_metrics(run_id: str, step: int, values: dict, attempt: int = 1) -> None:
    """Append one logged step and advance the run's `global_step`, together."""
    clean = {k: float(v) for k, v in values.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    with transaction(lock=True) as s:  # global_step is read, then raised: two loggers must not both read the old one
        run = _get(s, run_id, lock=True)
        s.add(RunMetric(run_id=run_id, step=int(step), attempt=attempt, values=clean))
        run.global_step = max(int(run.global_step or 0), int(step))


def metrics(run_id: str) -> list[dict]:
    """Every logged step of a run in order: {step, attempt, logged_at, **values}."""
    with transaction() as s:
        _get(s, run_id)
        rows = s.scalars(select(RunMetric).where(RunMetric.run_id == run_id).order_by(RunMetric.id))
        return [{"step": m.step, "attempt": m.attempt, "logged_at": m.logged_at, **m.values} for m in rows]


def delete_run(run_id: str) -> None:
    """Remove a run and its metrics (the caller removes its folder)."""
    with transaction() as s:
        s.execute(delete(RunMetric).where(RunMetric.run_id == run_id))
        s.delete(_get(s, run_id))
