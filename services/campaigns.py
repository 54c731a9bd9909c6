"""Campaign Lab: variant files, the simulated audience's click probabilities, campaigns (A/B and bandits) on a
segment, and the simulator's validation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

import limits
from generation import intent, titles
from rewards import segments, variant_file
from services.audience import segment_table
from services.common import DEFAULT_DATASET, Progress, catalog, ensure_demo_data, known_item, quiet


def parse_variants(data: bytes, name: str) -> list[dict[str, str]]:
    return variant_file.parse(data, name)


def parse_variants_file(path: str | Path) -> list[dict[str, str]]:
    return variant_file.read_file(path)


def validate_variants(rows: list[dict]) -> list[dict[str, str]]:
    return variant_file.validate(rows, "variants")


def example_variants(dataset: str, item_id: str) -> list[dict[str, str]]:
    """Starting variants for an item written from its catalog facts, for a marketer to edit or replace."""
    item = catalog(dataset).loc[item_id]
    name = titles.without_year(item["title"])
    cats = intent.categories_of(item["category"])
    kind = f"{cats[0].lower()} " if cats else ""
    article = "An" if (kind or "pick")[0] in "aeiou" else "A"
    year = f" ({int(item['year'])})" if pd.notna(item["year"]) else ""
    return [
        {"title": f"{name}{year}", "body": f"The {kind}classic everyone talks about.", "cta": "Watch now"},
        {"title": f"Tonight: {name}", "body": f"{article} {kind}pick made for your next night in.",
         "cta": "Start watching"},
        {"title": f"Rediscover {name}", "body": "See why audiences keep coming back to it.", "cta": "Play"},
    ]


def click_matrix(dataset: str, item_id: str, user_ids: list[str], variants: list[dict],
                 audience_name: str = "train", seed: int = 0) -> np.ndarray:
    """Expected click probability of every (user, variant) pair for an item, in one batch."""
    from rewards.audience import Impression, audience

    crowd = audience(audience_name, dataset, seed)
    pairs = [Impression(u, item_id, v) for u in user_ids for v in variants]
    return crowd.probabilities(pairs).reshape(len(user_ids), len(variants))


def run_campaigns(dataset: str, item_id: str, variants: list[dict], segment_kind: str = "all",
                  segment_value: str | None = None, impressions: int = 20_000, allocation: str = "thompson",
                  compare: bool = False, seed: int = 0, progress: Progress = quiet) -> dict[str, dict]:
    """The campaign with `allocation` (logged), and with `compare` the same traffic under the other allocations
    too (Thompson sampling and A/B), as counterfactual runs that are not logged: {allocation: summary}."""
    allocations = [allocation] + ([a for a in ("thompson", "ab") if a != allocation] if compare else [])
    return {name: run_campaign(dataset, item_id, variants, segment_kind, segment_value, impressions, name, seed,
                               progress=lambda f, m, n=n: progress((n + f) / len(allocations), m),
                               record=name == allocation)
            for n, name in enumerate(allocations)}


def run_campaign(dataset: str, item_id: str, variants: list[dict], segment_kind: str = "all",
                 segment_value: str | None = None, impressions: int = 20_000, allocation: str = "thompson",
                 seed: int = 0, audience_name: str = "train", max_users: int | None = None,
                 progress: Progress = quiet, record: bool = True) -> dict:
    """Simulate a campaign for an item's variants on a segment, log its impressions (unless `record` is False:
    a counterfactual run on the same traffic, for comparison, is not a second campaign), and summarise it."""
    from rewards import campaign
    from rewards.audience import Impression, audience

    limits.check_all({"impressions": impressions, "max_users": max_users, "seed": seed},
                     {"impressions": limits.IMPRESSIONS, "max_users": limits.CAMPAIGN_USERS, "seed": limits.SEED})
    item_id = known_item(dataset, item_id)  # before minutes of scoring, not after
    variants = validate_variants(variants)
    table = segment_table(dataset)
    user_ids = segments.members(table, segment_kind, segment_value)
    if max_users is not None and max_users < len(user_ids):
        rng = np.random.default_rng(seed)
        user_ids = sorted(rng.choice(user_ids, size=max_users, replace=False).tolist(), key=str)
    progress(0.02, f"Scoring {len(variants)} variants for {len(user_ids)} simulated users")
    matrix = click_matrix(dataset, item_id, user_ids, variants, audience_name, seed)
    result = campaign.simulate(matrix, impressions, allocation, seed=seed, user_ids=user_ids,
                               progress=lambda f, m: progress(0.05 + 0.85 * f, m))
    log = result.impressions
    if record:
        progress(0.92, "Saving the impression log")
        crowd = audience(audience_name, dataset, seed)
        crowd.record([Impression(u, item_id, variants[v], int(p)) for u, v, p in
                      zip(log["user_id"], log["variant"], log["position"], strict=True)],
                     log["probability"].to_numpy(), log["click"].to_numpy())
    by_user = table.set_index("user_id").loc[user_ids].reset_index(drop=True)
    breakdowns = {kind: campaign.segment_breakdown(result, by_user[kind]) for kind in segments.KINDS if kind != "all"}
    progress(1.0, "Done")
    return {"allocation": allocation, "users": len(user_ids), "variants": result.variants,
            "timeline": result.timeline, "impressions": log.drop(columns=["user_index"]),
            "regret": result.regret, "best_variant": result.best_variant, "segments": breakdowns,
            "audience": audience_name}


def import_log(dataset: str, campaign: str, data: bytes, file: str = "log.csv") -> dict[str, int]:
    """Import a real campaign's log (impression, user, item, the ad shown, clicked, time) as source
    "import:<campaign>", each impression under its user's taste segment; ImportFailed lists every problem."""
    from store import campaign_log

    taste = segment_table(dataset).set_index("user_id")["taste"].dropna().astype(str).to_dict()
    return campaign_log.import_log(dataset, campaign, data, file, taste, segments.EVERYONE)


def import_log_file(dataset: str, campaign: str, path: str | Path) -> dict[str, int]:
    from store.csv_import import read_file

    return import_log(dataset, campaign, read_file(path), Path(path).name)


def logged_sources(dataset: str) -> list[str]:
    """Where the dataset's real impressions came from: "api" and "import:<campaign>" for each imported log."""
    from store import serving

    return serving.sources(dataset)


def validate_simulator(dataset: str = DEFAULT_DATASET, users: int = 200, seed: int = 0,
                       progress: Progress = quiet) -> dict:
    """Is the simulated audience believable? Appeal AUC, attack win rates and CTR calibration, both audiences."""
    from rewards import validation

    limits.SIMULATOR_USERS.check(users)
    limits.SEED.check(seed)
    ensure_demo_data()
    progress(0.0, "Building the train and judge audiences")
    return validation.validate(dataset, users, seed, progress=lambda f, m: progress(0.1 + 0.9 * f, m))
