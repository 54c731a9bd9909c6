"""Segment jobs on Ray Data (issue 13): a local Ray with 2 CPUs writes a small segment's variants, each user's
exactly once; a job killed with SIGKILL and started again skips the batches it had stored and ends with every user
once. The tiny model writes the copy: these tests prove the job, not the wording.

Each Ray start costs its actors half a minute of imports and model loads on 2 cores, so the in-process job runs on
SQLite and the killed one (two CLI starts) on PostgreSQL, where a connection killed inside its transaction must
leave nothing behind; both databases are exercised by the store's own tests.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from services import segment_job
from store import repository

REPO = Path(__file__).resolve().parent.parent
ITEM = "50"  # Star Wars (1977)
pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("one_torch_thread")]


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """Ray as CI has it: 2 CPUs on this machine, started by the first job, stopped after the module."""
    with pytest.MonkeyPatch.context() as env:
        env.delenv("RAY_ADDRESS", raising=False)
        env.setenv("ADLOOP_RAY_CPUS", "2")
        yield
    import ray

    ray.shutdown()


def stored(job: segment_job.SegmentJob):
    return repository.variants(job.dataset, batch_prefix=job.job_id + "-")


@pytest.mark.parametrize("demo_database", ["sqlite"], indirect=True)
def test_a_ray_job_stores_each_users_variants_once_and_a_rerun_writes_nothing(demo_database: str, tiny_llm: str):
    job = segment_job.SegmentJob(demo_database, ITEM, ("gender", "F"), users=5, n=2, seed=3, candidates=1,
                                 batch_users=2)
    users = [u for batch in segment_job.plan(job).batches for u in batch]
    first = segment_job.run(job, "ray")
    assert (first["batches"], first["skipped"], first["users"], first["variants"]) == (3, 0, 5, 10), first
    variants = stored(job)
    assert sorted(variants["user_id"]) == sorted(u for u in users for _ in range(2))  # each user's n, once
    assert variants.groupby("batch")["user_id"].nunique().tolist() == [2, 2, 1]  # batches as planned
    for banners in variants["banners"].dropna():
        assert all(Path(p).exists() for p in banners.values())  # published after the batch's commit
    again = segment_job.run(job, "ray")
    assert (again["skipped"], again["variants"]) == (3, 10)
    assert stored(job)["id"].tolist() == variants["id"].tolist()


def test_bad_job_settings_are_refused_before_anything_is_written(demo_database: str) -> None:
    before = repository.table_counts()
    for job, message in ((segment_job.SegmentJob(demo_database, ITEM, batch_users=64, n=2), "at most 64 variants"),
                         (segment_job.SegmentJob(demo_database, "no-such-item"), "Unknown item"),
                         (segment_job.SegmentJob(demo_database, ITEM, users=0), "users of a segment job")):
        with pytest.raises((ValueError, LookupError), match=message):
            segment_job.run(job, "ray")
    with pytest.raises(ValueError, match="Unknown engine"):
        segment_job.run(segment_job.SegmentJob(demo_database, ITEM), "spark")
    assert repository.table_counts() == before


def _wait_for_batches(job: segment_job.SegmentJob, process: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not repository.stored_batches(job.job_id + "-"):
        assert process.poll() is None, "the job ended before it could be killed"
        assert time.monotonic() < deadline, "no batch was stored in time"
        time.sleep(0.1)


@pytest.mark.parametrize("demo_database", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True)
def test_a_killed_ray_job_restarts_skipping_its_stored_batches(demo_database: str, tiny_llm: str,
                                                               tmp_path: Path) -> None:
    job = segment_job.SegmentJob(demo_database, ITEM, ("gender", "M"), users=6, n=1, seed=5, candidates=1,
                                 batch_users=1)
    command = [sys.executable, "cli.py", "generate", "--item", ITEM, "--segment", "gender", "--group", "M",
               "--users", "6", "--n", "1", "--seed", "5", "--candidates", "1", "--batch-users", "1",
               "--engine", "ray", "--out", str(tmp_path / "out"), "--json"]
    env = dict(os.environ)  # with the tiny model (`tiny_llm`): the same job, so the same id, in both processes
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               start_new_session=True)  # its own group: the kill takes its Ray processes too
    try:
        _wait_for_batches(job, process)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL
    before = repository.stored_batches(job.job_id + "-")
    assert 1 <= len(before) < 6, before
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["skipped"] >= len(before) and result["batches"] == 6, result
    variants = stored(job)
    assert variants["user_id"].value_counts().eq(1).all() and len(variants) == 6  # every user once, none twice
    assert set(variants["batch"]) == {job.batch_key(i) for i in range(6)}


DASHBOARD_WITHOUT_RAY = """
import sys
from streamlit.testing.v1 import AppTest

app = AppTest.from_file("streamlit_app.py", default_timeout=120)
app.run()
app.switch_page("pages/studio.py").run()
app.radio(key="studio_mode").set_value("A segment").run()
assert not app.exception, app.exception
assert list(app.radio(key="studio_engine").options) == ["local", "ray"], app.radio(key="studio_engine").options
assert app.radio(key="studio_engine").value == "local"
loaded = sorted(m for m in sys.modules if m == "ray" or m.startswith("ray."))
assert not loaded, loaded
print("ok")
"""


@pytest.mark.parametrize("demo_database", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True)
def test_the_dashboard_offers_ray_for_a_segment_without_importing_it(demo_database: str) -> None:
    """In a fresh process (this one has Ray loaded), on a PostgreSQL store (DATABASE_URL, as a deployment sets
    it): the Studio's segment form offers local (the default) and ray, and the dashboard imports no Ray module."""
    done = subprocess.run([sys.executable, "-c", DASHBOARD_WITHOUT_RAY], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]


def test_a_job_is_new_when_the_models_that_write_it_change(demo_store: str, monkeypatch) -> None:
    """The job id covers the writing models: after an adapter is promoted, the same command writes anew instead
    of skipping the batches the old adapter wrote."""
    before = segment_job.SegmentJob(demo_store, ITEM)
    assert segment_job.SegmentJob(demo_store, ITEM).job_id == before.job_id
    monkeypatch.setenv("ADLOOP_TEXT_ADAPTER", "/runs/some-run/adapter")
    assert segment_job.SegmentJob(demo_store, ITEM).job_id != before.job_id
