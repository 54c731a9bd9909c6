"""Scoring speed of the simulated audience: one vectorised batch vs a naive per-impression loop, same run.

    .venv/bin/python bench/simulator.py [--users 200] [--creatives 50] [--naive 500] [--audience train]

The batch is every sampled user shown every creative (templated from catalog facts, one creative per
item). The naive loop calls `probabilities` once per impression on the first `--naive` impressions of
the same batch (the whole batch would take minutes) and must give the same numbers. Each is timed
cold (creative embeddings cleared first, so each pays for encoding its creatives) and warm (embeddings
cached, so only the per-call work remains).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import services  # noqa: E402
from rewards import audience as simulated  # noqa: E402
from rewards.validation import clean_creative  # noqa: E402


def impressions(crowd: simulated.Audience, users: int, creatives: int, seed: int) -> list[simulated.Impression]:
    """`users` random real users x `creatives` creatives for random items, at positions 0-4."""
    rng = np.random.default_rng(seed)
    catalog = crowd.world.catalog
    items = rng.choice(np.flatnonzero(catalog.genres.any(axis=1)), size=creatives, replace=False)
    ads = [(catalog.item_ids[i], clean_creative(catalog, int(i), catalog.item_categories(int(i))[0], rng))
           for i in items]
    people = rng.choice(crowd.world.population.user_ids, size=users, replace=False)
    return [simulated.Impression(str(u), item, ad, position=n % 5) for u in people
            for n, (item, ad) in enumerate(ads)]


def timed(action, repeats: int, cold: bool) -> tuple[float, object]:
    """Median seconds of `action` over `repeats` runs, with the creative embeddings cleared first when cold."""
    times, result = [], None
    for _ in range(repeats):
        if cold:
            simulated.clear_cache(embeddings_only=True)
        started = time.perf_counter()
        result = action()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--creatives", type=int, default=50)
    parser.add_argument("--naive", type=int, default=500, help="impressions scored one at a time")
    parser.add_argument("--audience", default="train", choices=list(simulated.AUDIENCES))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    started = time.perf_counter()
    services.common.ensure_demo_data()
    crowd = simulated.audience(args.audience, services.common.DEFAULT_DATASET)
    print(f"setup (data, item embeddings, {args.audience} audience): {time.perf_counter() - started:.1f} s")
    batch = impressions(crowd, args.users, args.creatives, seed=0)
    subset = batch[:args.naive]
    crowd.probabilities(batch[:1])  # load the sentence encoder outside the measurements
    print(f"{len(batch)} impressions ({args.users} users x {args.creatives} creatives), {args.audience} audience; "
          f"naive loop on the first {len(subset)}:")
    for cold in (True, False):
        batch_s, p = timed(lambda: crowd.probabilities(batch), args.repeats, cold)
        naive_s, one_by_one = timed(lambda: np.array([crowd.probabilities([imp])[0] for imp in subset]), 1, cold)
        np.testing.assert_allclose(one_by_one, p[:len(subset)], rtol=1e-4, atol=1e-7)
        batch_rate, naive_rate = len(batch) / batch_s, len(subset) / naive_s
        label = "cold (embeds creatives)" if cold else "warm (embeddings cached)"
        print(f"  {label}: vectorised {batch_rate:,.0f} scores/s ({batch_s:.2f} s), naive per-pair "
              f"{naive_rate:,.0f} scores/s ({naive_s:.2f} s), speed-up {batch_rate / naive_rate:,.0f}x, "
              "same probabilities")


if __name__ == "__main__":
    main()
