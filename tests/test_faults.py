"""Faults: workers and generations killed with SIGKILL at random points, a dashboard restarted after it, run
folders that cannot be written. Nothing committed is lost and the store stays consistent, on SQLite and on a
real PostgreSQL server (`demo_database`; the killed processes reach it through `DATABASE_URL`).

The kill points are drawn from a seeded generator, so a failure can be replayed with the same seed.
"""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import text

import services
import settings
from store import repository
from store import runs as run_store
from store.db import transaction
from tuning import runs, trainers, worker

REPO = Path(__file__).resolve().parent.parent
KILLS = 3


def assert_store_consistent() -> None:
    """SQLite's own checks of its file (PostgreSQL enforces its constraints at every commit), plus the
    invariants the run manager promises."""
    with transaction() as s:
        if s.get_bind().dialect.name == "sqlite":
            assert s.execute(text("PRAGMA integrity_check")).scalar() == "ok"
            assert not s.execute(text("PRAGMA foreign_key_check")).fetchall()
    for run in run_store.list_runs():
        assert run["status"] in run_store.STATES
        logged = run_store.metrics(run["id"])
        assert run["global_step"] == max((m["step"] for m in logged), default=0), run["id"]
        for attempt in {m["attempt"] for m in logged}:
            steps = [m["step"] for m in logged if m["attempt"] == attempt and "loss" in m]
            assert steps == sorted(steps) and len(steps) == len(set(steps)), (run["id"], attempt, steps)


def _wait_status(run_id: str, wanted: set[str], timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while (run := runs.refresh(run_id))["status"] not in wanted:
        assert time.monotonic() < deadline, run
        time.sleep(0.2)
    return run


def _wait_committed(run_id: str, attempt: int, timeout: float = 240) -> None:
    """Until the run's current attempt has logged a step, or the run stopped."""
    deadline = time.monotonic() + timeout
    while not any(m["attempt"] == attempt for m in run_store.metrics(run_id)):
        if runs.refresh(run_id)["status"] not in run_store.ACTIVE:
            return
        assert time.monotonic() < deadline
        time.sleep(0.1)


@pytest.fixture
def tiny_run_config(demo_database: str, tiny_model_dir: Path) -> dict:
    return {"dataset": demo_database, "model": str(tiny_model_dir), "users": 2, "max_completion_length": 8,
            "num_generations": 2, "prompts_per_step": 1, "torch_threads": 1, "eval_steps": 0, "method": "grpo",
            "max_steps": 12, "save_steps": 2}


def test_killing_a_tuning_run_at_random_points_loses_no_committed_step(tiny_run_config: dict) -> None:
    chance = random.Random(7)
    run_id = runs.launch(tiny_run_config)
    committed: list[tuple[int, int]] = []
    landed = between_commits = 0  # kills that stopped a running worker; of those, after it had committed a step
    for kill in range(KILLS):
        running = _wait_status(run_id, {"running", "finished"})
        if running["status"] == "finished":
            break
        if kill:  # the later kills land after the attempt has committed a step: between commits
            _wait_committed(run_id, running["attempts"])
        time.sleep(chance.uniform(1.0, 8.0) if kill == 0 else chance.uniform(0.0, 1.5))
        before = [(m["attempt"], m["step"]) for m in run_store.metrics(run_id)]
        os.kill(runs.refresh(run_id)["pid"], signal.SIGKILL)
        failed = _wait_status(run_id, {"failed", "finished"})
        after = [(m["attempt"], m["step"]) for m in run_store.metrics(run_id)]
        assert after[:len(before)] == before and after[:len(committed)] == committed  # nothing committed is lost
        committed = after
        assert_store_consistent()
        if failed["status"] == "finished":
            break
        assert "ended without reporting a result" in failed["error"]
        landed += 1
        attempt = max((a for a, _ in after), default=None)
        between_commits += any(a == attempt for a, _ in before)  # the killed attempt had committed a step
        runs.resume(run_id)  # from the last complete checkpoint, or from the start if none was saved yet
    if runs.refresh(run_id)["status"] == "failed":
        runs.resume(run_id)
    done = runs.wait(run_id, timeout=300)
    assert done["status"] == "finished" and done["global_step"] == 12, done["error"]
    assert landed >= 1 and between_commits >= 1, (landed, between_commits)  # the kills interrupted real work
    assert_store_consistent()


def test_a_half_written_checkpoint_is_passed_over(tmp_path: Path) -> None:
    for step, state in ((2, '{"global_step": 2}'), (4, '{"global_st')):  # the second was cut off mid-write
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text(state)
    (tmp_path / "checkpoint-6").mkdir()  # killed before the trainer state was written at all
    assert trainers.last_checkpoint(tmp_path) == str(tmp_path / "checkpoint-2")


RESTARTED_DASHBOARD = """
import json, sys
from streamlit.testing.v1 import AppTest
run_id = sys.argv[1]
app = AppTest.from_file("streamlit_app.py", default_timeout=120)
app.run()
app.switch_page("pages/reward_tuning.py").run()
app.selectbox(key="selected_run").set_value(run_id).run()
table = next(df.value for df in app.dataframe if "method" in df.value.columns)
print(json.dumps({"exceptions": [str(e.value) for e in app.exception],
                  "status": str(table.set_index("id").loc[run_id, "status"]),
                  "resume": any(b.label == "Resume" for b in app.button)}))
"""


@pytest.mark.parametrize("demo_database", ["sqlite"], indirect=True)  # what the page reads of a killed run is
# the kill test's on both databases; the page itself is the same on either
def test_a_restarted_dashboard_shows_the_killed_run_as_resumable(tiny_run_config: dict, tiny_llm: str) -> None:
    run_id = runs.launch(tiny_run_config | {"max_steps": 200})
    deadline = time.monotonic() + 240
    while trainers.last_checkpoint(Path(runs.refresh(run_id)["folder"])) is None:
        assert time.monotonic() < deadline and runs.refresh(run_id)["status"] in run_store.ACTIVE
        time.sleep(0.2)
    os.kill(runs.refresh(run_id)["pid"], signal.SIGKILL)
    # the restarted dashboard is a new process: it knows nothing of the workers the old one started
    done = subprocess.run([sys.executable, "-c", RESTARTED_DASHBOARD, run_id], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    shown = json.loads(done.stdout.strip().splitlines()[-1])
    assert not shown["exceptions"], shown["exceptions"]
    assert shown["status"] == "failed" and shown["resume"], shown
    assert_store_consistent()


@pytest.mark.parametrize("demo_database", ["sqlite"], indirect=True)  # on PostgreSQL: test_segment_job's killed
# Ray job (the same batches and transactions), within the suite's time budget
def test_killing_a_segment_generation_leaves_whole_batches_only(demo_database: str, tiny_model_dir: Path) -> None:
    chance = random.Random(11)
    env = os.environ | {"ADLOOP_TEXT_MODEL": str(tiny_model_dir)}
    command = [sys.executable, "cli.py", "generate", "--item", "50", "--segment", "gender", "--group", "F",
               "--users", "6", "--n", "2", "--out", str(services.studio.studio_folder("cli-out")), "--json"]
    landed = 0  # kills that stopped a generation still running (not one that had already exited)
    for _ in range(KILLS):
        before = repository.variants(demo_database)
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(chance.uniform(2.0, 20.0))
        process.send_signal(signal.SIGKILL)
        landed += process.wait() == -signal.SIGKILL
        after = repository.variants(demo_database)
        new = after[~after["id"].isin(before["id"])]
        assert new.empty or new.groupby("batch").size().eq(12).all()  # a batch is all 6 users x 2, or nothing
        assert_store_consistent()
    assert landed >= 1, "every kill came after the generation had finished"
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    services.studio.sweep_studio()
    assert not list((settings.home() / "studio").glob("*.partial"))
    stored = repository.variants(demo_database)
    for banners in stored["banners"].dropna():
        assert all(Path(p).exists() for p in banners.values())


def test_drafts_of_killed_generations_are_settled(demo_store: str, tiny_llm: str) -> None:
    studio = settings.home() / "studio"
    committed = services.studio.generate(demo_store, "50", user_id="3", n=1, seed=1)[0]["batch"]  # a stored batch
    for batch in (committed, "never-committed"):
        draft = studio / f"{batch}.partial"
        draft.mkdir(parents=True, exist_ok=True)
        (draft / "banner-300x250.png").write_bytes(b"png")
    services.studio.studio_folder(committed).mkdir(parents=True, exist_ok=True)
    for leftover in services.studio.studio_folder(committed).iterdir():
        leftover.unlink()
    services.studio.studio_folder(committed).rmdir()
    orphan = studio / "killed-before-its-draft.partial.lock"  # a lock whose generation died with no draft
    orphan.write_text("")
    held = services.studio._draft_lock("still-starting")  # a live generation that has not made its draft yet
    with held:
        assert services.studio.sweep_studio() == {"published": 1, "deleted": 1}
        assert not orphan.exists() and Path(held.lock_file).exists()
    assert (services.studio.studio_folder(committed) / "banner-300x250.png").exists()
    assert not (studio / "never-committed.partial").exists()
    assert not services.studio.studio_folder("never-committed").exists()


def test_an_unwritable_or_full_run_folder_is_refused_before_anything_is_stored(
        tiny_run_config: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    before = len(run_store.list_runs())
    blocked = settings.home() / "blocked-home"
    blocked.mkdir(exist_ok=True)
    (blocked / "runs").write_text("a file where the runs folder should be")
    with pytest.MonkeyPatch.context() as blocked_runs:  # its own patch: undoing the test's would also undo the
        # store that `demo_database` pointed DATABASE_URL at
        blocked_runs.setattr(runs, "runs_folder", lambda: blocked / "runs")
        with pytest.raises(ValueError, match="Cannot write the run folder .*blocked-home/runs"):
            runs.launch(tiny_run_config)
    monkeypatch.setenv("ADLOOP_MIN_FREE_MB", str(10**12))  # more than any disk has: the disk is "full"
    with pytest.raises(ValueError, match=r"Only \d+ MB free where runs are saved"):
        runs.launch(tiny_run_config)
    assert len(run_store.list_runs()) == before
    full = OSError(errno.ENOSPC, "No space left on device", "/runs/x/checkpoint-4/optimizer.pt")
    assert worker.reason(full).startswith("The disk is full (/runs/x/checkpoint-4/optimizer.pt)")
    assert "permission denied" in worker.reason(PermissionError(errno.EACCES, "Permission denied", "/runs/x"))
