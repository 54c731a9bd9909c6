"""Is the simulator believable? Three checks on the real data, for both audiences.

1. Appeal: per user, the AUC of CF appeal separating the items they liked (rated in the top quarter
   of the scale: 4+ of 5) in their time-held-out part from random items they never rated (a simulator
   that cannot tell what a user will like next cannot reward personalisation).
2. Attacks: for sampled users, a fluent, relevant creative for an item they like must beat its
   keyword-stuffed, shouting, off-topic (another item's creative) and catalog-contradicting (wrong
   year, wrong genre) versions, in at least 90 % of users per attack (a reward that loses to these
   is hacked within minutes, as the first GRPO pilot showed).
3. Calibration: the CTR of the clean creatives, which should mostly lie in 0.5 %-5 %.

The creatives here are templated from catalog facts and the user's top category. They are fixtures
for testing the simulator, not product copy.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from generation.titles import year_of
from rewards.appeal import Appeal, Population
from rewards.audience import AUDIENCES, Audience, Impression, audience, world
from rewards.features import Catalog, display_title

ATTACKS = ["keyword_stuffed", "shouting", "off_topic", "wrong_year", "wrong_genre"]
LIKED = 0.75  # ratings in the top quarter of the dataset's scale count as liked (4 and 5 of 5 on MovieLens)
CTR_RANGE = (0.005, 0.05)
TITLES = ["{name}: {adj} {cat} from {year}", "Your next {cat} night: {name}", "{name} ({year}), a {cat} to remember"]
BODIES = ["{name} is {adj} {cat} film from {year}. It deserves a place on your list tonight.",
          "Released in {year}, {name} is {cat} done well, with a story worth your evening.",
          "Fans of {cat} keep coming back to {name} from {year}. Settle in and enjoy it."]
ADJECTIVES = ["a memorable", "a beloved", "a much-loved", "a remarkable", "a gripping"]  # no unsupported claims
CTAS = ["Watch now", "Stream it tonight", "Add it to your list"]
Progress = Callable[[float, str], None]


def liked(population: Population) -> pd.DataFrame:
    """Held-out interactions the user liked: rated at least LIKED x the top rating, or all when unrated."""
    held = population.held_out
    ratings = pd.concat([population.train["rating"], held["rating"]])
    if ratings.notna().sum() == 0:
        return held
    return held[held["rating"] >= LIKED * ratings.max()]


def appeal_auc(appeal: Appeal, population: Population, catalog: Catalog, negatives: int = 100,
               seed: int = 0) -> dict:
    """Mean per-user AUC: held-out liked items against random items the user never rated."""
    rng = np.random.default_rng(seed)
    rated = pd.concat([population.train, population.held_out]).groupby("user_id")["item_id"].agg(set)
    aucs = []
    for user_id, rows in liked(population).groupby("user_id"):
        never = np.setdiff1d(np.arange(len(catalog.item_ids)), [catalog.index[i] for i in rated[user_id]])
        if not len(never):
            continue
        scores = appeal.z[population.index[user_id]]
        pos = scores[[catalog.index[i] for i in rows["item_id"]]]
        neg = scores[rng.choice(never, size=min(negatives, len(never)), replace=False)]
        aucs.append(float(((pos[:, None] > neg[None]) + 0.5 * (pos[:, None] == neg[None])).mean()))
    return {"auc": round(float(np.mean(aucs)), 4) if aucs else None, "users": len(aucs), "negatives": negatives}


def _fill(template: str, catalog: Catalog, item: int, category: str, adj: str) -> str:
    """A template with the item's name, year (the one in its title, as people know it) and a category."""
    year = year_of(catalog.titles[item]) or min(catalog.years[item], default="")
    return template.format(name=display_title(catalog.titles[item]), cat=category.lower(), year=year, adj=adj)


def clean_creative(catalog: Catalog, item: int, category: str, rng: np.random.Generator) -> dict:
    """A fluent, truthful creative for the item that names the given category (one of the item's)."""
    adj = ADJECTIVES[rng.integers(len(ADJECTIVES))]
    return {"title": _fill(TITLES[rng.integers(len(TITLES))], catalog, item, category, adj.split(" ", 1)[1]),
            "body": _fill(BODIES[rng.integers(len(BODIES))], catalog, item, category, adj),
            "cta": CTAS[rng.integers(len(CTAS))]}


def keyword_stuffed(creative: dict, catalog: Catalog, item: int, favourites: list[str]) -> dict:
    """Category names piled up with filler: only true categories, so only the stuffing itself can lose."""
    own = catalog.item_categories(item)
    words = [c for c in favourites if c in own] + [c for c in own if c not in favourites]
    body = (words * 4)[:8] + ["movie", "film", "best", "movie"]
    name = display_title(catalog.titles[item])
    return {"title": f"{name} {' '.join(words[:2])} {words[0]} Movie", "body": " ".join(body),
            "cta": creative["cta"]}


def shouting(creative: dict) -> dict:
    """Every field in capitals with '!!!' appended."""
    return {k: f"{v.upper()}!!!" for k, v in creative.items()}


def wrong_year(creative: dict, catalog: Catalog, item: int, rng: np.random.Generator) -> dict:
    """The same creative naming a year a few years off (never one the item has)."""
    year = year_of(catalog.titles[item]) or min(catalog.years[item])
    wrong = int(rng.choice([year + s for s in (-9, -7, -5, -3, 3, 5, 7) if year + s not in catalog.years[item]]))
    return {k: v.replace(str(year), str(wrong)) for k, v in creative.items()}


def wrong_genre(creative: dict, category: str, wrong: str) -> dict:
    """The same creative calling the item a category it does not have (the user's favourite, when possible)."""
    return {k: v.replace(category.lower(), wrong.lower()) for k, v in creative.items()}


@dataclass
class ProbeSet:
    """Per sampled user: the clean creative's impression and one impression per attack (same slot)."""

    users: list[str]
    clean: list[Impression]
    attacks: dict[str, list[Impression]]

    def all(self) -> list[Impression]:
        return self.clean + [imp for name in ATTACKS for imp in self.attacks[name]]


def _liked_item(held: pd.DataFrame, catalog: Catalog, user_id: str, rng: np.random.Generator) -> int | None:
    """A held-out item the user liked (what the simulator must predict), with a category and a year."""
    options = [catalog.index[i] for i in held.loc[held["user_id"] == user_id, "item_id"]
               if catalog.genres[catalog.index[i]].any() and catalog.years[catalog.index[i]]]
    return int(rng.choice(options)) if options else None


def _other_item(catalog: Catalog, seen: set[str], item: int, rng: np.random.Generator) -> int:
    """A random item the user never rated, under another name, with a category, for the off-topic attack."""
    for other in rng.permutation(len(catalog.item_ids)):
        if (catalog.item_ids[other] not in seen and catalog.genres[other].any()
                and set(catalog.names[other]).isdisjoint(catalog.names[item])):
            return int(other)
    raise ValueError("The catalog has no other item with a category to build an off-topic creative from")


def _versions(catalog: Catalog, favourites: list[str], item: int, seen: set[str],
              rng: np.random.Generator) -> tuple[dict, dict[str, dict]]:
    """The clean creative for an item (naming the user's favourite of its categories) and its attacked versions."""
    own = catalog.item_categories(item)
    category = next(c for c in [*favourites, *own] if c in own)
    wrong = next(c for c in [*favourites, *catalog.categories] if c not in own)
    creative = clean_creative(catalog, item, category, rng)
    other = _other_item(catalog, seen, item, rng)
    other_category = next(c for c in [*favourites, *catalog.item_categories(other)]
                          if c in catalog.item_categories(other))
    return creative, {"keyword_stuffed": keyword_stuffed(creative, catalog, item, favourites),
                      "shouting": shouting(creative), "off_topic": clean_creative(catalog, other, other_category, rng),
                      "wrong_year": wrong_year(creative, catalog, item, rng),
                      "wrong_genre": wrong_genre(creative, category, wrong)}


def probe_set(dataset: str, users: int = 200, seed: int = 0) -> ProbeSet:
    """Clean and attacked creatives for `users` sampled users with a held-out liked item."""
    shared = world(dataset, seed)
    catalog, population = shared.catalog, shared.population
    rng = np.random.default_rng(seed)
    seen = pd.concat([population.train, population.held_out]).groupby("user_id")["item_id"].agg(set)
    held = liked(population)
    probes = ProbeSet([], [], {name: [] for name in ATTACKS})
    for user_id in rng.permutation(population.user_ids):
        item = _liked_item(held, catalog, user_id, rng)
        if item is None:
            continue
        favourites = population.top_categories(population.index[user_id], catalog, k=len(catalog.categories))
        creative, versions = _versions(catalog, favourites, item, seen.get(user_id, set()), rng)
        probes.users.append(str(user_id))
        probes.clean.append(Impression(str(user_id), catalog.item_ids[item], creative))
        for name, version in versions.items():
            probes.attacks[name].append(Impression(str(user_id), catalog.item_ids[item], version))
        if len(probes.users) == users:
            break
    return probes


def score_probes(target: Audience, probes: ProbeSet) -> dict:
    """Win rate of the clean creative over each attack, and the CTR distribution of the clean creatives."""
    p = target.probabilities(probes.all())
    n = len(probes.clean)
    clean = p[:n]
    wins = {name: round(float((clean > p[n * (k + 1):n * (k + 2)]).mean()), 4) for k, name in enumerate(ATTACKS)}
    percentiles = np.percentile(clean, [5, 25, 50, 75, 95])
    ctr = {f"p{q}": round(float(v), 5) for q, v in zip((5, 25, 50, 75, 95), percentiles, strict=True)}
    ctr["share_in_range"] = round(float(((clean >= CTR_RANGE[0]) & (clean <= CTR_RANGE[1])).mean()), 4)
    return {"win_rate": wins, "clean_ctr": ctr, "probabilities": p}


def validate(dataset: str, users: int = 200, seed: int = 0, progress: Progress | None = None) -> dict:
    """All checks for both audiences; `passed` says whether each meets its bar."""
    started = time.perf_counter()
    report = {"dataset": dataset, "seed": seed, "appeal_auc": {}, "attack_win_rate": {}, "clean_ctr": {}}
    probes = probe_set(dataset, users, seed)
    if not probes.users:
        raise ValueError(f"No user of '{dataset}' liked a held-out item with a category: nothing to validate")
    scores = {}
    for n, name in enumerate(AUDIENCES):
        if progress:
            progress(n / len(AUDIENCES), f"Scoring {len(probes.all())} impressions with the {name} audience")
        target = audience(name, dataset, seed)
        report["appeal_auc"][name] = appeal_auc(target.appeal, target.world.population, target.world.catalog,
                                                  seed=seed)
        result = score_probes(target, probes)
        report["attack_win_rate"][name], report["clean_ctr"][name] = result["win_rate"], result["clean_ctr"]
        scores[name] = result["probabilities"]
    report["users"] = len(probes.users)
    report["train_judge_spearman"] = round(float(spearmanr(scores["train"], scores["judge"]).statistic), 4)
    report["passed"] = {
        "appeal_auc_above_0.75": all((v["auc"] or 0) > 0.75 for v in report["appeal_auc"].values()),
        "attacks_lose_in_90pct": all(r >= 0.9 for w in report["attack_win_rate"].values() for r in w.values()),
        "clean_ctr_mostly_in_range": all(c["share_in_range"] >= 0.8 for c in report["clean_ctr"].values()),
    }
    report["seconds"] = round(time.perf_counter() - started, 1)
    return report
