"""Run manager: one worker process per tuning run; status and metrics in the store, files in the run folder.

A run lives in `$ADLOOP_HOME/runs/<run_id>/` (checkpoints `checkpoint-N/`, final `adapter/`, `worker.log`).
The worker is a separate process (`python -m tuning.worker RUN_ID`, its own session) so a page or the CLI
can return at once, a crash cannot take the app down, and `cancel` works across processes through a
flag in the store. A worker that died without saying so (killed, out of memory) is found by `refresh`:
its pid is gone (or now belongs to another program) while the store still says it is active, so it is
marked failed with the tail of its log; so is a run whose worker never started.

Evaluating a run's adapter takes minutes, so it runs in a worker process too
(`python -m tuning.worker RUN_ID --evaluate OPTIONS_JSON`), with its state in the run's `evaluation` field:
{"status": "running", "pid", "options"} until it stores the result ({"status": "finished", ...}) or
the error ({"status": "failed", "error"}).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import settings
from store import runs as run_store
from tuning.configs import config_for
from tuning.trainers import last_checkpoint

LOG_TAIL = 4000  # characters of the worker log kept as the error of a run that died
START_GRACE = timedelta(minutes=2)  # a queued run with no worker process after this never started
_children: dict[str, subprocess.Popen] = {}  # workers this process started (each reaped by its waiter thread)


def runs_folder() -> Path:
    return settings.home() / "runs"


def run_folder(run_id: str) -> Path:
    return runs_folder() / run_id


def min_free_mb() -> int:
    """Free disk space a new run needs (`ADLOOP_MIN_FREE_MB`, default 500): checkpoints of the default LoRA
    adapter and its optimizer take a few MB each, a full fine-tune far more."""
    value = os.environ.get("ADLOOP_MIN_FREE_MB", "500").strip()
    if not value.isdigit():
        raise ValueError(f"ADLOOP_MIN_FREE_MB must be a whole number of megabytes, not '{value}'")
    return int(value)


def _prepare_folder(folder: Path) -> None:
    """Create the run folder and check it is writable with room to spare, before anything is stored: a run
    that cannot write its checkpoints should be refused with the reason, not fail an hour later."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".write-test"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        raise ValueError(f"Cannot write the run folder {folder}: {exc.strerror or exc}. Check ADLOOP_HOME "
                         "points at a writable folder.") from exc
    free = shutil.disk_usage(folder).free // 2**20
    if free < min_free_mb():
        folder.rmdir()
        raise ValueError(f"Only {free} MB free where runs are saved ({folder.parent}); a run needs at least "
                         f"{min_free_mb()} MB for its checkpoints. Free some space or move ADLOOP_HOME.")


def launch(config: dict) -> str:
    """Validate the config, store a queued run and start its worker; returns the run id at once."""
    cfg = config_for(config)
    run_id = f"{cfg.method}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    folder = run_folder(run_id)
    _prepare_folder(folder)
    run_store.create_run(run_id, cfg.method, cfg.dataset, cfg.to_dict(), str(folder), str(folder / "worker.log"),
                         cfg.total_steps)
    _start_worker(run_id)
    return run_id


def train_processes() -> int:
    """Processes a training run uses: `ADLOOP_TRAIN_PROCESSES`, else one per CUDA device (at least one)."""
    value = os.environ.get("ADLOOP_TRAIN_PROCESSES", "").strip()
    if value:
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"ADLOOP_TRAIN_PROCESSES must be a positive whole number, not '{value}'")
        return int(value)
    import torch

    return max(torch.cuda.device_count(), 1)


def worker_command(run_id: str, *extra: str) -> list[str]:
    """The worker's command line: plain Python, or `accelerate launch` over several processes (data parallel,
    the same code) when a training run has more than one; evaluation always runs in one process."""
    worker = ["-m", "tuning.worker", run_id, *extra]
    processes = 1 if extra else train_processes()
    if processes == 1:
        return [sys.executable, *worker]
    import torch

    cpu = [] if torch.cuda.is_available() else ["--cpu"]
    return [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(processes), *cpu, *worker]


def _worker_env() -> dict[str, str]:
    """This process's environment, with the store it is using pinned: the worker must read and write the very
    run this process created, whatever a settings file says by the time it starts."""
    return os.environ | {"DATABASE_URL": settings.load().database_url}


def _spawn(run_id: str, key: str, *extra: str) -> int:
    """Start the worker in its own session, output appended to the run's log; returns its pid."""
    run = run_store.get_run(run_id)
    with open(run["log_path"], "ab") as log:
        process = subprocess.Popen(worker_command(run_id, *extra), cwd=settings.REPO_ROOT,
                                   stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True, env=_worker_env())
    _children[key] = process
    # a waiter reaps the worker the moment it ends: a finished worker must not stay a zombie until someone asks
    # about its run (the dashboard's server kept every one until it stopped)
    threading.Thread(target=process.wait, name=f"reap-{key}", daemon=True).start()
    return process.pid


def _start_worker(run_id: str) -> None:
    """Start the training worker; a run whose worker cannot even start is failed at once, with the reason."""
    try:
        run_store.update_run(run_id, pid=_spawn(run_id, run_id))
    except OSError as exc:
        run_store.transition(run_id, "failed", run_store.ACTIVE, error=f"Could not start the worker: {exc}", pid=None)
        raise


def _alive(key: str, pid: int | None) -> bool:
    """Whether the worker process still exists and is still a tuning worker (a zombie or a reused pid is dead)."""
    child = _children.get(key)
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
    proc = Path(f"/proc/{pid}")
    if not proc.exists():  # not Linux: the signal check above is all there is
        return True
    try:
        zombie = (proc / "stat").read_text().split(")")[-1].split()[0] == "Z"
        command = (proc / "cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return False
    return not zombie and b"tuning.worker" in command


def log_tail(run: dict, limit: int = LOG_TAIL) -> str:
    path = Path(run["log_path"] or "")
    return path.read_text(encoding="utf-8", errors="replace")[-limit:] if path.is_file() else ""


def _never_started(run: dict) -> bool:
    created = run["created_at"]
    return run["status"] == "queued" and not run["pid"] and created is not None and \
        datetime.now(UTC).replace(tzinfo=None) - created > START_GRACE


def refresh(run_id: str) -> dict:
    """The run, after marking it failed (with its log tail) when the store says active but its process is gone
    or never started, and its evaluation failed when the evaluating process is gone."""
    run = run_store.get_run(run_id)
    if run["status"] in run_store.ACTIVE and (run["pid"] and not _alive(run_id, run["pid"]) or _never_started(run)):
        message = "The worker process ended without reporting a result.\n" + log_tail(run)
        run_store.transition(run_id, "failed", run_store.ACTIVE, error=message, pid=None)
        run = run_store.get_run(run_id)
    evaluation = run["evaluation"] or {}
    if evaluation.get("status") == "running" and not _alive(f"{run_id}:evaluate", evaluation.get("pid")):
        failed = {"status": "failed", "error": "The evaluation process ended without a result.\n" + log_tail(run)}
        run_store.update_run(run_id, evaluation=evaluation | failed)
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
    """Continue a failed or cancelled run in a new worker (same run id and folder): from its last complete
    checkpoint, or from the start when it was stopped before its first one."""
    run = refresh(run_id)
    if run["status"] not in ("failed", "cancelled"):
        raise ValueError(f"Only a failed or cancelled run can be resumed; '{run_id}' is {run['status']}")
    if not run_store.transition(run_id, "queued", ("failed", "cancelled"), cancel_requested=False, error=None,
                                finished_at=None, pid=None):
        raise ValueError(f"Run '{run_id}' changed state while resuming; try again")
    _start_worker(run_id)
    return run_store.get_run(run_id)


def evaluate_in_background(run_id: str, **options) -> dict:
    """Start judging the run's adapter in a worker process; the result lands in the run's `evaluation`."""
    run = refresh(run_id)
    if not run["adapter_path"]:
        raise ValueError(f"Run '{run_id}' has no adapter yet ({run['status']})")
    if (run["evaluation"] or {}).get("status") == "running":
        raise ValueError(f"Run '{run_id}' is already being evaluated")
    pid = _spawn(run_id, f"{run_id}:evaluate", "--evaluate", json.dumps(options))
    run_store.update_run(run_id, evaluation={"status": "running", "options": options, "pid": pid})
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
