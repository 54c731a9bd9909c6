"""Segment jobs: variants for a whole segment (up to the whole audience), written in batches of users on this
machine or on Ray Data, and resumable.

Every batch is the Studio's own per-user work (`studio.generate_for`) for a few users, stored in one transaction
under the key `<job id>-<batch number>` with its banners published after the commit. A batch with variants in the
store is therefore finished, and a job that was killed and started again with the same settings (same job id)
skips it: nothing is written twice and nothing half-written is left. On Ray, batches go to actors that load the
models once and each write their own batches; the same code runs on a cluster when RAY_ADDRESS is set.

Ray is imported only inside the Ray path, so the dashboard and the local engine never load it.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import limits
import settings
from generation import writer
from services import studio
from services.common import Progress, catalog, known_item, quiet
from store import repository

ENGINES = ("local", "ray")
DEFAULT_BATCH_USERS = 8
REPO = Path(__file__).resolve().parent.parent
# Settings the actors must share with the process that starts the job (they read them from their environment).
SHARED_VARIABLES = ("DATABASE_URL", "ADLOOP_HOME", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def writing_models() -> str:
    """The models and adapters that write and draw a job's variants, as configured now."""
    cfg = settings.load()
    return "|".join((cfg.text_model, cfg.text_adapter, cfg.brief_adapter, cfg.image_model, cfg.image_adapter))


@dataclass(frozen=True)
class SegmentJob:
    """What a segment job writes; two jobs with the same fields are the same job (one id), so a restart resumes."""

    dataset: str
    item_id: str
    segment: tuple[str, str | None] = ("all", None)
    users: int = 943
    n: int = 4
    seed: int = 0
    candidates: int = writer.DEFAULT_CANDIDATES
    renderer: str | None = None
    batch_users: int = DEFAULT_BATCH_USERS
    models: str = field(default_factory=writing_models)  # part of the id: after an adapter is promoted
    # the same command is a new job, not a resumed one

    @property
    def job_id(self) -> str:
        text = json.dumps(asdict(self), sort_keys=True, default=str)
        return "job-" + hashlib.sha256(text.encode()).hexdigest()[:12]

    def batch_key(self, index: int) -> str:
        return f"{self.job_id}-{index:05d}"

    def check(self) -> None:
        """Refuse out-of-range settings before any work starts (each batch must also be a valid request)."""
        limits.check_all(asdict(self), {"users": limits.JOB_USERS, "n": limits.VARIANTS_PER_USER,
                                        "seed": limits.SEED, "candidates": limits.CANDIDATES,
                                        "batch_users": limits.BATCH_USERS})
        studio.check_request(self.n, self.batch_users, self.candidates)


@dataclass(frozen=True)
class Plan:
    """The job's item, segment label and users split into numbered batches."""

    item: dict
    label: str | None
    batches: list[list[str]]


def plan(job: SegmentJob) -> Plan:
    """The job's batches of users (the same users in the same order on every start, drawn with the job's seed)."""
    job.check()
    item = catalog(job.dataset).loc[known_item(job.dataset, job.item_id)].to_dict()
    users, label = studio.studio_users(job.dataset, None, job.segment, job.users, job.seed)
    size = job.batch_users
    return Plan(item, label, [users[i:i + size] for i in range(0, len(users), size)])


def run_batch(job: SegmentJob, plan_: Plan, index: int) -> dict:
    """Write, store and publish one batch unless it is already stored (a retried or restarted batch); its counts."""
    key = job.batch_key(index)
    if repository.batch_stored(key):
        return {"index": index, "variants": 0, "accepted": 0, "skipped": True}
    rows = studio.generate_for(job.dataset, plan_.item, plan_.batches[index], plan_.label, job.n, job.seed,
                               job.renderer, job.candidates, key, first=index * job.batch_users)
    accepted = sum(r["safety"]["status"] == "passed" for r in rows)
    return {"index": index, "variants": len(rows), "accepted": accepted, "skipped": False}


def run(job: SegmentJob, engine: str = "local", workers: int | None = None, progress: Progress = quiet) -> dict:
    """Run (or resume) a segment job; a summary: batches run and skipped, variants, accepted share, wall time."""
    if engine not in ENGINES:
        raise ValueError(f"Unknown engine '{engine}': choose {' or '.join(ENGINES)}")
    if workers is not None:
        limits.WORKERS.check(workers)
    started = time.perf_counter()
    plan_ = plan(job)
    finished = repository.stored_batches(job.job_id + "-")
    todo = [i for i in range(len(plan_.batches)) if job.batch_key(i) not in finished]
    progress(0.0, f"Job {job.job_id}: {len(plan_.batches)} batches of up to {job.batch_users} users; "
                  f"{len(plan_.batches) - len(todo)} already stored, skipped")
    studio.sweep_studio()  # settle the drafts of a killed run of this job before any batch is drawn again

    def done(count: int) -> None:
        progress(count / max(len(todo), 1), f"{count} of {len(todo)} batches stored")

    if engine == "local":
        for count, index in enumerate(todo, 1):
            run_batch(job, plan_, index)
            done(count)
    else:
        _run_on_ray(job, plan_, todo, workers, done)
    return summary(job, len(plan_.batches), finished, time.perf_counter() - started, engine)


def summary(job: SegmentJob, batches: int, skipped: set[str], seconds: float, engine: str) -> dict:
    """What the job has in the store now (users, variants, accepted share) and what this start wrote, how fast
    (`skipped`: the batches that were stored before it)."""
    stored = repository.variants(job.dataset, batch_prefix=job.job_id + "-")
    written = int((~stored["batch"].isin(skipped)).sum())
    return {"job": job.job_id, "engine": engine, "batches": batches, "skipped": len(skipped),
            "users": int(stored["user_id"].nunique()), "variants": len(stored), "written": written,
            "accepted_share": round(len(repository.passed(stored)) / len(stored), 4) if len(stored) else 0.0,
            "seconds": round(seconds, 2), "variants_per_second": round(written / seconds, 3) if seconds else 0.0}


def stored_rows(job: SegmentJob) -> list[dict]:
    """The job's stored variants as the Studio shows them (accepted by predicted CTR first)."""
    frame = repository.variants(job.dataset, batch_prefix=job.job_id + "-")
    # the store keeps a variant's angle, not the interests its text happened to name: the angle is its target
    return studio.ranked([row | {"targets": [row["angle"]]} for row in frame.to_dict("records")])


def generate(dataset: str, item_id: str, user_id: str | None, segment: tuple[str, str | None] | None, n: int,
             seed: int, renderer: str | None, max_users: int, candidates: int, engine: str = "local",
             progress: Progress = quiet) -> list[dict]:
    """The Studio's form: one user, or a segment on the local engine, is the Studio's one request; a segment on
    "ray" runs as a segment job (resumable, in batches on Ray actors) and returns its variants the same way."""
    if user_id is not None or engine == "local":
        return studio.generate(dataset, item_id, user_id, segment, n, seed, renderer, max_users, candidates,
                               progress=progress)
    limits.SEGMENT_USERS.check(max_users)  # the form's own bound; a bigger job is the CLI's or the bench's
    job = SegmentJob(dataset, item_id, segment or ("all", None), max_users, n, seed, candidates, renderer,
                     min(max_users, DEFAULT_BATCH_USERS))
    run(job, engine, progress=progress)
    return stored_rows(job)


class BatchWriter:
    """A Ray Data actor: loads the models once, then writes the batches it is given (one row = one batch)."""

    def __init__(self, job: dict, plan_: dict, threads: int | None) -> None:
        if threads:  # one core of a machine shared by one actor per core: see engine.threads
            from generation import engine

            os.environ[engine.THREADS_VARIABLE] = str(threads)
            import torch

            torch.set_num_threads(threads)
        self.job = SegmentJob(**{**job, "segment": tuple(job["segment"])})
        self.plan = Plan(**plan_)
        from generation import models
        from rewards.audience import audience

        models.text_model(), models.embedder(), audience("train", self.job.dataset)  # loaded before the first batch

    def __call__(self, rows: dict) -> dict:
        results = [run_batch(self.job, self.plan, int(i)) for i in rows["index"]]
        return {key: [r[key] for r in results] for key in ("index", "variants", "accepted", "skipped")}


def _run_on_ray(job: SegmentJob, plan_: Plan, todo: list[int], workers: int | None, done) -> None:
    """Send the batches to Ray Data actors, one per CPU core (or per GPU when the cluster has them) unless
    `workers` says otherwise; report each batch as its transaction commits."""
    if not todo:
        return
    import ray

    start_ray()
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    per_actor = {"num_gpus": 1} if gpus else {"num_cpus": 1}
    actors = min(workers or gpus or max(1, int(resources.get("CPU", 1))), len(todo))
    dataset = ray.data.from_items([{"index": i} for i in todo], override_num_blocks=len(todo))
    written = dataset.map_batches(BatchWriter, batch_size=1, compute=ray.data.ActorPoolStrategy(size=actors),
                                  **per_actor,
                                  runtime_env={"env_vars": _shared_environment()},
                                  fn_constructor_kwargs={"job": asdict(job), "plan_": asdict(plan_),
                                                         "threads": None if gpus else 1})
    for count, _ in enumerate(written.iter_rows(), 1):
        done(count)


def start_ray() -> None:
    """Connect to the cluster RAY_ADDRESS names, or start a local Ray on this machine; the actors get this
    process's store, home and code (a cluster's nodes need the repository at the same path)."""
    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS") or None
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    local = {} if address else {"num_cpus": _local_cpus(), "object_store_memory": 256 * 2**20,
                                "include_dashboard": False}
    ray.init(address=address, runtime_env={"env_vars": {"PYTHONPATH": path}}, logging_level="WARNING",
             log_to_driver=False, **local)
    ray.data.DataContext.get_current().enable_progress_bars = False


def _shared_environment() -> dict[str, str]:
    """This process's store, home and model settings, given to each job's actors (read when the job starts, so
    a Ray started earlier by this process still writes where the caller now points)."""
    return {k: v for k, v in os.environ.items() if k in SHARED_VARIABLES or k.startswith("ADLOOP_")}


def _local_cpus() -> int:
    """The cores of a local Ray: ADLOOP_RAY_CPUS if set (tests pin 2), else this process's cores."""
    from generation import engine

    wanted = os.environ.get("ADLOOP_RAY_CPUS", "")
    return int(wanted) if wanted.isdigit() and int(wanted) > 0 else engine.threads()
