"""Run manager: one worker process per tuning run; status and metrics in the store, files in the run folder.

A run lives in `$ADLOOP_HOME/runs/<run_id>/` (checkpoints `checkpoint-N/`, final `adapter/`, `worker.log`).
The worker is a separate process (`python -m tuning.worker RUN_ID`, its own session) so a page or the CLI
can return at once, a crash cannot take the app down, and `cancel` works across processes through a
flag in the store. A worker that died without saying so (killed, out of memory) is found by `refresh`:
its pid is gone while the store still says it is active, so it is marked failed with the tail of its log.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import settings
from store import runs as run_store
from tuning.trainers import TuningConfig, last_checkpoint

LOG_TAIL = 4000  # characters of the worker log kept as the error of a run that died
_children: dict[str, subprocess.Popen] = {}  # workers this process started: reaped so a dead one is not a zombie


def runs_folder() -> Path:
    return settings.home() / "runs"


def run_folder(run_id: str) -> Path:
    return runs_folder() / run_id


def launch(config: dict) -> str:
    """Validate the config, store a queued run and start its worker; returns the run id at once."""
    cfg = TuningConfig.from_dict(config)
    run_id = f"{cfg.method}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    folder = run_folder(run_id)
    folder.mkdir(parents=True, exist_ok=True)
    run_store.create_run(run_id, cfg.method, cfg.dataset, cfg.to_dict(), str(folder), str(folder / "worker.log"),
                         cfg.max_steps)
    _start_worker(run_id)
    return run_id


def _start_worker(run_id: str) -> None:
    """Start `python -m tuning.worker RUN_ID` in its own session, output appended to the run's log."""
    run = run_store.get_run(run_id)
    with open(run["log_path"], "ab") as log:
        process = subprocess.Popen([sys.executable, "-m", "tuning.worker", run_id], cwd=settings.REPO_ROOT,
                                   stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True, env=os.environ.copy())
    _children[run_id] = process
    run_store.update_run(run_id, pid=process.pid)


def _alive(run_id: str, pid: int | None) -> bool:
    """Whether the run's worker process still exists (a zombie counts as dead)."""
    child = _children.get(run_id)
    if child is not None and child.pid == pid:
        return child.poll() is None
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z")


def log_tail(run: dict, limit: int = LOG_TAIL) -> str:
    path = Path(run["log_path"])
    return path.read_text(encoding="utf-8", errors="replace")[-limit:] if path.exists() else ""


def refresh(run_id: str) -> dict:
    """The run, after marking it failed (with its log tail) when the store says active but its process is gone."""
    run = run_store.get_run(run_id)
    if run["status"] in run_store.ACTIVE and run["pid"] and not _alive(run_id, run["pid"]):
        message = "The worker process ended without reporting a result.\n" + log_tail(run)
        run_store.transition(run_id, "failed", run_store.ACTIVE, error=message, pid=None)
        run = run_store.get_run(run_id)
    return run


def get(run_id: str) -> dict:
    """One run (refreshed) with its last checkpoint folder."""
    run = refresh(run_id)
    return run | {"checkpoint": last_checkpoint(Path(run["folder"]))}


def list_runs() -> list[dict]:
    """Every run, newest first, each refreshed."""
    return [refresh(r["id"]) if r["status"] in run_store.ACTIVE else r for r in run_store.list_runs()]


def metrics(run_id: str) -> list[dict]:
    """Logged steps of a run: {step, attempt, logged_at, loss, reward, kl, ...}."""
    return run_store.metrics(run_id)


def cancel(run_id: str) -> dict:
    """Ask the worker to stop after its current step (it saves the adapter and marks the run cancelled)."""
    run = refresh(run_id)
    if run["status"] not in run_store.ACTIVE:
        raise ValueError(f"Run '{run_id}' has already ended ({run['status']})")
    run_store.request_cancel(run_id)
    return run_store.get_run(run_id)


def resume(run_id: str) -> dict:
    """Continue a failed or cancelled run from its last checkpoint in a new worker (same run id and folder)."""
    run = refresh(run_id)
    if run["status"] not in ("failed", "cancelled"):
        raise ValueError(f"Only a failed or cancelled run can be resumed; '{run_id}' is {run['status']}")
    if last_checkpoint(Path(run["folder"])) is None:
        raise ValueError(f"Run '{run_id}' has no checkpoint to resume from")
    if not run_store.transition(run_id, "queued", ("failed", "cancelled"), cancel_requested=False, error=None,
                                finished_at=None, pid=None):
        raise ValueError(f"Run '{run_id}' changed state while resuming; try again")
    _start_worker(run_id)
    return run_store.get_run(run_id)


def wait(run_id: str, timeout: float = 600, poll: float = 0.5) -> dict:
    """Block until the run ends (CLI and tests); raises TimeoutError with the run's state."""
    deadline = time.monotonic() + timeout
    while True:
        run = refresh(run_id)
        if run["status"] not in run_store.ACTIVE:
            return run
        if time.monotonic() > deadline:
            raise TimeoutError(f"Run '{run_id}' still {run['status']} after {timeout} s")
        time.sleep(poll)
