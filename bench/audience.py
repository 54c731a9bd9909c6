"""The whole audience as one segment job, local against Ray Data in the same run.

    .venv/bin/python bench/audience.py [--users 943] [--n 4] [--batch-users 8] [--workers N]

Every MovieLens user (or the first `--users` of the seeded draw) gets `--n` variants of one item, written,
checked, reranked, illustrated, scored and stored in batches (services/segment_job.py), once with the local
engine (one process, batch after batch) and once on a local Ray (one actor per core by default). Each engine
writes into a store of its own (a fresh SQLite file under a temporary home, the demo data loaded before the clock
starts), so both do exactly the same work and neither resumes the other's batches. Wall time counts everything a
user waits for: the models loading (in the actors, for Ray), every batch, the commits. Prints each engine's wall
time, variants per second and accepted share, Ray's time relative to local, and a final JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import limits  # noqa: E402
import services  # noqa: E402
import settings  # noqa: E402
from generation import writer  # noqa: E402
from services import segment_job  # noqa: E402

AUDIENCE = 943  # MovieLens-100k's users
ITEM = "50"  # Star Wars (1977)


def run_engine(engine: str, args: argparse.Namespace) -> dict:
    """One engine's job in a store of its own; its summary."""
    with tempfile.TemporaryDirectory(prefix=f"adloop-bench-{engine}-") as home:
        os.environ["ADLOOP_HOME"] = home
        os.environ.pop("DATABASE_URL", None)  # the fresh home's SQLite store
        services.common.ensure_demo_data()
        job = segment_job.SegmentJob(services.common.DEFAULT_DATASET, args.item, ("all", None), args.users, args.n,
                                     args.seed, args.candidates, None, args.batch_users)

        def progress(fraction: float, message: str) -> None:
            print(f"[{engine} {fraction:4.0%}] {message}", file=sys.stderr, flush=True)

        return segment_job.run(job, engine, args.workers if engine == "ray" else None, progress=progress)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=limits.JOB_USERS.argument, default=AUDIENCE)
    parser.add_argument("--n", type=limits.VARIANTS_PER_USER.argument, default=4)
    parser.add_argument("--candidates", type=limits.CANDIDATES.argument, default=writer.DEFAULT_CANDIDATES)
    parser.add_argument("--batch-users", type=limits.BATCH_USERS.argument, default=segment_job.DEFAULT_BATCH_USERS)
    parser.add_argument("--workers", type=limits.WORKERS.argument, default=None,
                        help="Ray actors (default: one per core)")
    parser.add_argument("--engines", default="local,ray", help="comma-separated, run in this order")
    parser.add_argument("--item", default=ITEM)
    parser.add_argument("--seed", type=limits.SEED.argument, default=0)
    args = parser.parse_args()
    os.environ.setdefault("ADLOOP_MODEL_CACHE", settings.load().model_cache)  # shared by the temporary homes
    results = {engine: run_engine(engine, args) for engine in args.engines.split(",")}
    for engine, result in results.items():
        print(f"{engine:>5}: {result['users']} users, {result['variants']} variants in {result['seconds']:.1f} s "
              f"= {result['variants_per_second']:.2f} variants/s, {result['accepted_share']:.1%} accepted")
    report = {"users": args.users, "n": args.n, "candidates": args.candidates, "batch_users": args.batch_users,
              "cores": os.cpu_count(), "engines": results}
    if {"local", "ray"} <= results.keys():
        report["ray_over_local"] = round(results["ray"]["seconds"] / results["local"]["seconds"], 3)
        print(f"Ray took {report['ray_over_local']:.2f}x the local wall time")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
