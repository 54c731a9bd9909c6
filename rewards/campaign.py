"""Campaign simulation: traffic from simulated users split across ad variants by A/B or Thompson sampling.

The audience model gives every (user, variant) pair an expected click probability up front, so a
campaign is a fast loop over impression batches: pick users, let the allocation choose a variant
for each, sample clicks, update the posterior. Regret is exact because the probabilities are known:
for each impression it is the best single variant's probability for that user minus the chosen one's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

ALLOCATIONS = ("ab", "thompson")


@dataclass
class CampaignResult:
    variants: pd.DataFrame  # one row per variant: impressions, clicks, ctr, ci_low, ci_high, expected_ctr, p_best,
    # expected_lift (`posterior_best`)
    timeline: pd.DataFrame  # per batch and variant: impressions, clicks, cumulative values, regret
    impressions: pd.DataFrame  # one row per impression: user, variant, position, probability, click
    allocation: str
    best_variant: int

    @property
    def total_clicks(self) -> int:
        return int(self.variants["clicks"].sum())

    @property
    def regret(self) -> float:
        return float(self.timeline.groupby("batch")["batch_regret"].first().sum())


def wilson_interval(clicks: np.ndarray, impressions: np.ndarray, confidence: float = 0.95) -> tuple[np.ndarray,
                                                                                                      np.ndarray]:
    """Wilson score interval for a binomial rate; sensible at 0 clicks and at small counts, unlike Wald."""
    z = stats.norm.ppf(0.5 + confidence / 2)
    clicks, impressions = np.asarray(clicks, dtype=float), np.asarray(impressions, dtype=float)
    empty = impressions == 0
    n = np.where(empty, 1.0, impressions)
    p = np.where(empty, 0.0, clicks / n)
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    low = np.where(clicks == 0, 0.0, centre - half)  # exactly 0 rather than rounding noise
    return np.where(empty, 0.0, low).clip(0, 1), np.where(empty, 1.0, centre + half).clip(0, 1)


POSTERIOR_DRAWS = 20_000  # joint posterior draws behind "chance of being best": its Monte Carlo error is under 0.4 pt


def posterior_best(clicks: np.ndarray, impressions: np.ndarray, draws: int = POSTERIOR_DRAWS,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per variant, from its Beta(1 + clicks, 1 + misses) posterior drawn jointly with the others': the
    probability that its CTR is the highest, and its expected relative lift over the best of the others
    (E[(p - max other) / max other]): what a marketer asks of a test, "which one wins, how surely, by how much"."""
    clicks, impressions = np.asarray(clicks, dtype=float), np.asarray(impressions, dtype=float)
    rng = np.random.default_rng(seed)
    rates = rng.beta(1 + clicks, 1 + impressions - clicks, size=(draws, len(clicks)))
    best = np.bincount(rates.argmax(axis=1), minlength=len(clicks)) / draws
    if len(clicks) < 2:
        return best, np.zeros(len(clicks))
    lifts = np.empty(len(clicks))
    for v in range(len(clicks)):
        others = np.delete(rates, v, axis=1).max(axis=1)
        lifts[v] = float(np.mean((rates[:, v] - others) / others))
    return best, lifts


def _choose(allocation: str, size: int, successes: np.ndarray, failures: np.ndarray,
            rng: np.random.Generator) -> np.ndarray:
    """Variant index for each impression of a batch."""
    if allocation == "ab":
        return rng.integers(0, len(successes), size=size)
    draws = rng.beta(1 + successes[None, :], 1 + failures[None, :], size=(size, len(successes)))
    return draws.argmax(axis=1)


def simulate(probabilities: np.ndarray, impressions: int, allocation: str = "ab", batch_size: int = 200,
             seed: int = 0, user_ids: list[str] | None = None, progress=None) -> CampaignResult:
    """Run a campaign of `impressions` over users x variants click `probabilities` (users drawn uniformly).

    Thompson sampling updates its Beta posteriors after every batch, as a live system would between
    reporting intervals; A/B splits traffic uniformly at random.
    """
    if allocation not in ALLOCATIONS:
        raise ValueError(f"Unknown allocation '{allocation}'; choose one of {', '.join(ALLOCATIONS)}")
    users, variants = probabilities.shape
    if users == 0 or variants == 0:
        raise ValueError("A campaign needs at least one user and one variant")
    if not 1 <= impressions <= 10_000_000:
        raise ValueError(f"Impressions must be between 1 and 10,000,000 (got {impressions})")
    rng = np.random.default_rng(seed)
    best = int(probabilities.mean(axis=0).argmax())
    successes, failures = np.zeros(variants), np.zeros(variants)
    rows, timeline, done, batch = [], [], 0, 0
    while done < impressions:
        size = min(batch_size, impressions - done)
        who = rng.integers(0, users, size=size)
        chosen = _choose(allocation, size, successes, failures, rng)
        p = probabilities[who, chosen]
        clicks = rng.random(size) < p
        np.add.at(successes, chosen, clicks)
        np.add.at(failures, chosen, ~clicks)
        regret = float((probabilities[who, best] - p).sum())
        rows.append(pd.DataFrame({"batch": batch, "user_index": who, "variant": chosen,
                                  "position": np.arange(done, done + size), "probability": p, "click": clicks}))
        for v in range(variants):
            mask = chosen == v
            timeline.append({"batch": batch, "variant": v, "impressions": int(mask.sum()),
                             "clicks": int(clicks[mask].sum()), "batch_regret": regret})
        done, batch = done + size, batch + 1
        if progress:
            progress(done / impressions, f"{done:,} of {impressions:,} impressions")
    return _summarise(probabilities, pd.concat(rows, ignore_index=True), pd.DataFrame(timeline), allocation,
                      best, user_ids)


def _summarise(probabilities: np.ndarray, log: pd.DataFrame, timeline: pd.DataFrame, allocation: str, best: int,
               user_ids: list[str] | None) -> CampaignResult:
    per = log.groupby("variant").agg(impressions=("click", "size"), clicks=("click", "sum"))
    per = per.reindex(range(probabilities.shape[1]), fill_value=0)
    per["ctr"] = per["clicks"] / per["impressions"].clip(lower=1)
    per["ci_low"], per["ci_high"] = wilson_interval(per["clicks"].to_numpy(), per["impressions"].to_numpy())
    per["expected_ctr"] = probabilities.mean(axis=0)
    per["p_best"], per["expected_lift"] = posterior_best(per["clicks"].to_numpy(), per["impressions"].to_numpy())
    timeline = timeline.sort_values(["variant", "batch"])
    timeline["cumulative_impressions"] = timeline.groupby("variant")["impressions"].cumsum()
    timeline["cumulative_clicks"] = timeline.groupby("variant")["clicks"].cumsum()
    totals = timeline.groupby("batch")[["impressions", "clicks"]].sum()
    timeline = timeline.join(totals.rename(columns=lambda c: f"batch_{c}"), on="batch")
    timeline["share"] = timeline["impressions"] / timeline["batch_impressions"].clip(lower=1)
    regret = timeline.groupby("batch")["batch_regret"].first().cumsum()
    timeline["cumulative_regret"] = timeline["batch"].map(regret)
    if user_ids is not None:
        log["user_id"] = np.asarray(user_ids, dtype=object)[log["user_index"].to_numpy()]
    return CampaignResult(per.reset_index(names="variant"), timeline.sort_values(["batch", "variant"])
                          .reset_index(drop=True), log, allocation, best)


def segment_breakdown(result: CampaignResult, segments: pd.Series) -> pd.DataFrame:
    """CTR per (segment, variant) with Wilson intervals; `segments` maps user_index -> segment label."""
    log = result.impressions.assign(segment=segments.reindex(result.impressions["user_index"]).to_numpy())
    table = log.groupby(["segment", "variant"]).agg(impressions=("click", "size"), clicks=("click", "sum"))
    table = table.reset_index()
    table["ctr"] = table["clicks"] / table["impressions"].clip(lower=1)
    table["ci_low"], table["ci_high"] = wilson_interval(table["clicks"].to_numpy(), table["impressions"].to_numpy())
    return table
