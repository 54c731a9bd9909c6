"""Time a full banner set (the five IAB sizes): brief, background art and composition.

    .venv/bin/python bench/banners.py [--renderer procedural|MODEL_ID_OR_FOLDER] [--repeats 3] [--steps 30]

The renderer is loaded first (load time printed separately), so the figures are warm per-set latency.
Each repeat uses a new seed, so a diffusers model generates fresh art every time (three generations
per set: one per aspect bucket).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from generation.brief import brief_from  # noqa: E402
from generation.compose import load_brand_kit  # noqa: E402
from generation.designs import banners_for_brief  # noqa: E402
from generation.render import PROCEDURAL, renderer_for  # noqa: E402

PROFILE = {"interests": [{"label": "Horror", "weight": 0.6}, {"label": "Comedy", "weight": 0.4}]}
ITEMS = [{"title": "Scream (1996)", "category": "Horror|Thriller", "year": 1996},
         {"title": "Toy Story (1995)", "category": "Animation|Children's|Comedy", "year": 1995},
         {"title": "Casablanca (1942)", "category": "Drama|Romance|War", "year": 1942}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--renderer", default=PROCEDURAL)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    started = time.perf_counter()
    options = {} if args.renderer == PROCEDURAL else {"steps": args.steps}
    renderer = renderer_for(args.renderer, **options)
    kit = load_brand_kit()
    print(f"renderer {renderer.name}: load {time.perf_counter() - started:.2f} s")
    for item in ITEMS:
        times = []
        for seed in range(args.repeats):
            brief = brief_from(PROFILE, item, seed)
            begun = time.perf_counter()
            banners = banners_for_brief(renderer, brief, item["title"], "Watch now", kit, seed)
            times.append(time.perf_counter() - begun)
        contrast = min(b.contrast for b in banners.values())
        print(f"{item['title']:<20} mood {brief.mood:<8} set of {len(banners)}: median {statistics.median(times):.2f} s"
              f" (min {min(times):.2f}), weakest contrast {contrast:.1f}:1")


if __name__ == "__main__":
    main()
