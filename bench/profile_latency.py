"""Profile latency for one user: structured signals only (baseline) vs with the LLM summary, same run.

    .venv/bin/python bench/profile_latency.py [--user 1] [--repeats 3]

Models are loaded first (load time printed separately), so the figures are warm per-request latency.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import services  # noqa: E402
from generation import models  # noqa: E402


def timed(repeats: int, action) -> list[float]:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--user", default="1")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    started = time.perf_counter()
    services.settings.prepare()
    print(f"setup (data, embeddings, models): {time.perf_counter() - started:.1f} s")
    print(f"text model load: {models.text_model().load_seconds:.2f} s on {models.text_model().device}")
    dataset = services.common.DEFAULT_DATASET
    size = len(services.audience.history(dataset, args.user))
    rows = {
        "structured only (baseline)": timed(args.repeats, lambda: services.audience.profile(
            dataset, args.user, recompute=True, use_llm=False)),
        "with LLM summary": timed(args.repeats, lambda: services.audience.profile(dataset, args.user, recompute=True)),
        "cached": timed(args.repeats, lambda: services.audience.profile(dataset, args.user)),
    }
    print(f"user {args.user}, {size} interactions, median of {args.repeats}:")
    for name, times in rows.items():
        print(f"  {name:<28} {statistics.median(times):7.2f} s   (min {min(times):.2f}, max {max(times):.2f})")
    base = statistics.median(rows["structured only (baseline)"])
    print(f"  LLM summary adds {statistics.median(rows['with LLM summary']) - base:.2f} s over the baseline")


if __name__ == "__main__":
    main()
