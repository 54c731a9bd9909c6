"""Copy-generation speed on the configured (default: embedded) model: batched writer vs a naive loop, same run.

    .venv/bin/python bench/generation.py [--variants 8] [--segment 64] [--per-user 2] [--naive 16]

1. Latency of 8 variants for one user: the writer's batched call vs one unbatched model call per variant.
2. Throughput for a segment of 64 users: variants per second of the batched writer (batches of 16 across
   users) vs the naive loop, which is timed on its first `--naive` variants (the whole loop would take many
   minutes) and reported as a rate.
3. The whole Studio request (profile, copy, checks, banners, scoring) for 8 variants, for context.

Both paths run one round (no regeneration) so they do the same model work; acceptance counts are printed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import services  # noqa: E402
from generation import models, writer  # noqa: E402

DATASET = services.DEFAULT_DATASET
ITEM = "50"


def jobs(users: list[str], per_user: int, seed: int) -> list[writer.Job]:
    item = services.catalog(DATASET).loc[ITEM].to_dict()
    return [writer.Job(item, services.profile(DATASET, u, use_llm=False), per_user, seed + k)
            for k, u in enumerate(users)]


def timed(batch_size: int, work: list[writer.Job], checks: writer.Checks) -> tuple[float, int]:
    llm, embedder = models.text_model(), models.embedder()
    started = time.perf_counter()
    results = writer.write_variants(llm.generate, embedder.encode, work, checks, rounds=1, batch_size=batch_size)
    seconds = time.perf_counter() - started
    return seconds, sum(v["safety"]["status"] == "passed" for r in results for v in r)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--variants", type=int, default=8)
    parser.add_argument("--segment", type=int, default=64)
    parser.add_argument("--per-user", type=int, default=2)
    parser.add_argument("--naive", type=int, default=16)
    args = parser.parse_args()
    services.prepare()
    kit = services.brand_kit()
    labels, titles = services.catalog_vocabulary(DATASET)
    checks = writer.Checks(labels, titles, kit.check_terms())
    print(f"model {models.text_model().model_id} on {models.text_model().device}")

    one = jobs(["1"], args.variants, 0)
    batched, ok_b = timed(16, one, checks)
    naive, ok_n = timed(1, jobs(["1"], args.variants, 0), checks)
    print(f"{args.variants} variants, one user: batched {batched:.1f} s ({ok_b} accepted), "
          f"naive loop {naive:.1f} s ({ok_n} accepted), speed-up {naive / batched:.1f}x")

    users = services.users(DATASET)["user_id"].tolist()[: args.segment]
    total = len(users) * args.per_user
    seg_seconds, ok_seg = timed(16, jobs(users, args.per_user, 0), checks)
    naive_users = users[: max(1, args.naive // args.per_user)]
    naive_seconds, _ = timed(1, jobs(naive_users, args.per_user, 0), checks)
    naive_count = len(naive_users) * args.per_user
    batched_rate, naive_rate = total / seg_seconds, naive_count / naive_seconds
    print(f"segment of {len(users)} users x {args.per_user}: batched {batched_rate:.2f} variants/s "
          f"({total} in {seg_seconds:.0f} s, {ok_seg} accepted); naive loop {naive_rate:.2f} variants/s "
          f"(on {naive_count}); speed-up {batched_rate / naive_rate:.1f}x")

    started = time.perf_counter()
    variants = services.generate(DATASET, ITEM, user_id="1", n=args.variants, seed=1)
    accepted = sum(v["safety"]["status"] == "passed" for v in variants)
    print(f"whole Studio request, {args.variants} variants with banners and scores: "
          f"{time.perf_counter() - started:.1f} s ({accepted} accepted)")


if __name__ == "__main__":
    main()
