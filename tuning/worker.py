"""The process that trains one run: `python -m tuning.worker RUN_ID`.

It reads the run's config from the store, trains (continuing from the last checkpoint when the run
has one, so a resumed run never restarts at step 0), and records the outcome. Every status change
is a guarded transition, so a worker never overwrites a state someone else set (e.g. a run that
`refresh` already marked failed).
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path

from store import runs as run_store


def _start(run_id: str) -> dict | None:
    """Mark the run running (pid, attempt); None when it must not start (cancelled while queued)."""
    run = run_store.get_run(run_id)
    if run["cancel_requested"]:
        run_store.transition(run_id, "cancelled", ("queued",), pid=None)
        return None
    attempt = int(run["attempts"] or 0) + 1
    if not run_store.transition(run_id, "running", ("queued",), pid=os.getpid(), attempts=attempt):
        return None
    return run_store.get_run(run_id)


def execute(run_id: str) -> str:
    """Train the run and record the outcome; returns the final status."""
    run = _start(run_id)
    if run is None:
        return run_store.get_run(run_id)["status"]
    from tuning.trainers import TuningConfig, last_checkpoint, train

    folder = Path(run["folder"])
    try:
        cfg = TuningConfig.from_dict(run["config"])
        result = train(cfg, folder, run_id=run_id, resume=last_checkpoint(folder) is not None,
                       attempt=run["attempts"])
    except Exception:  # noqa: BLE001 - any failure of a run is recorded, with its traceback
        run_store.transition(run_id, "failed", ("running",), error=traceback.format_exc()[-4000:], pid=None)
        print(traceback.format_exc(), file=sys.stderr, flush=True)
        return "failed"
    final = "cancelled" if run_store.cancel_requested(run_id) else "finished"
    run_store.transition(run_id, final, ("running",), adapter_path=result["adapter_path"],
                         global_step=result["global_step"], pid=None)
    print(f"run {run_id} {final} at step {result['global_step']}: {result['adapter_path']}", flush=True)
    return final


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m tuning.worker RUN_ID", file=sys.stderr)
        return 2
    return 0 if execute(argv[0]) in ("finished", "cancelled") else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
