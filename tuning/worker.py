"""The process that trains one run, `python -m tuning.worker RUN_ID`, or evaluates its adapter,
`python -m tuning.worker RUN_ID --evaluate OPTIONS_JSON`.

It reads the run's config from the store, trains (continuing from the last checkpoint when the run
has one, so a resumed run never restarts at step 0), and records the outcome. Every status change
is a guarded transition, so a worker never overwrites a state someone else set (e.g. a run that
`refresh` already marked failed).
"""

from __future__ import annotations

import errno
import json
import os
import sys
import traceback
from pathlib import Path

from store import runs as run_store


def _start(run_id: str) -> dict | None:
    """Mark the run running (pid, attempt); None when it must not start (cancelled while queued)."""
    try:
        run = run_store.get_run(run_id)
    except run_store.UnknownRun as exc:  # say which store was searched: a worker must share its launcher's
        import settings

        raise run_store.UnknownRun(f"{exc} in {settings.mask_password(settings.load().database_url)}") from None
    if run["cancel_requested"]:
        run_store.transition(run_id, "cancelled", ("queued",), pid=None)
        return None
    attempt = int(run["attempts"] or 0) + 1
    if not run_store.transition(run_id, "running", ("queued",), pid=os.getpid(), attempts=attempt):
        return None
    return run_store.get_run(run_id)


def reason(exc: BaseException) -> str:
    """The first line of a failed run's error: what a person can do about it, before the traceback."""
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return (f"The disk is full ({exc.filename or 'while saving'}): free some space, then resume the run from "
                "its last checkpoint.")
    if isinstance(exc, PermissionError):
        return f"Cannot write {exc.filename}: permission denied. Check that ADLOOP_HOME is writable."
    return f"{type(exc).__name__}: {exc}"


def execute(run_id: str) -> str:
    """Train the run and record the outcome; returns the final status. Under `accelerate launch` every rank
    trains, and only the main one (rank 0) records the run's state."""
    from tuning.trainers import is_main_process

    if not is_main_process():
        return _follow(run_id)
    run = _start(run_id)
    if run is None:
        return run_store.get_run(run_id)["status"]
    from tuning.configs import config_for
    from tuning.trainers import last_checkpoint, train

    folder = Path(run["folder"])
    try:
        cfg = config_for(run["config"], stored=True)
        result = train(cfg, folder, run_id=run_id, resume=last_checkpoint(folder) is not None,
                       attempt=run["attempts"])
    except Exception as exc:  # noqa: BLE001 - any failure of a run is recorded, with its traceback
        error = f"{reason(exc)}\n\n{traceback.format_exc()[-4000:]}"
        run_store.transition(run_id, "failed", ("running",), error=error, pid=None)
        print(traceback.format_exc(), file=sys.stderr, flush=True)
        return "failed"
    final = "cancelled" if run_store.cancel_requested(run_id) else "finished"
    run_store.transition(run_id, final, ("running",), adapter_path=result["adapter_path"],
                         global_step=result["global_step"], pid=None)
    print(f"run {run_id} {final} at step {result['global_step']}: {result['adapter_path']}", flush=True)
    return final


def _follow(run_id: str) -> str:
    """A secondary rank: train alongside the main process; it records state and errors for the run."""
    from tuning.configs import config_for
    from tuning.trainers import last_checkpoint, train

    run = run_store.get_run(run_id)
    folder = Path(run["folder"])
    train(config_for(run["config"], stored=True), folder, run_id=run_id, resume=last_checkpoint(folder) is not None)
    return "finished"


def evaluate(run_id: str, options: dict) -> str:
    """Judge the run's adapter and store the result (or the error) as the run's evaluation."""
    from tuning.evaluate import evaluate_run

    try:
        evaluate_run(run_id, **options)
    except Exception:  # noqa: BLE001 - any failure of an evaluation is recorded, with its traceback
        error = traceback.format_exc()
        run_store.update_run(run_id, evaluation={"status": "failed", "options": options, "error": error[-4000:]})
        print(error, file=sys.stderr, flush=True)
        return "failed"
    print(f"run {run_id} evaluated", flush=True)
    return "finished"


def main(argv: list[str]) -> int:
    if len(argv) == 1:
        return 0 if execute(argv[0]) in ("finished", "cancelled") else 1
    if len(argv) == 3 and argv[1] == "--evaluate":
        return 0 if evaluate(argv[0], json.loads(argv[2])) == "finished" else 1
    print("usage: python -m tuning.worker RUN_ID [--evaluate OPTIONS_JSON]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
