"""What each simulated user likes: item appeal learned from real ratings, and style taste that logs cannot show.

Every simulated user is a real user of the loaded dataset. Their appeal for an item comes from
collaborative filtering (PureSVD, `generation.collaborative`) fitted on the older part of the real
interactions: each user's latest 20 % are held out by time, so the simulator can be checked against
what users actually chose next. Appeal is the CF score standardised per user over the catalog (a
z-score), so one weight means the same for a heavy and a light rater.

Logs say nothing about how a user responds to ad *style*. Those traits are simulation assumptions,
derived from the user's real history where a plausible link exists, plus seeded individual variation
(a per-user generator seeded by the simulation seed and the user id, so a trait never depends on
which other users were loaded). They are assumptions, not findings:

| trait | derived from the user's real data | individual variation |
|---|---|---|
| click propensity (logit offset) | 0.15 x z-score of log(1 + ratings): active users click more | + N(0, 0.25) |
| preferred length (words) | 18 x exp(0.25 x genre length lean + 0.008 x (age - 30)), in 6-45 | x exp(N(0, 0.2)) |
| preferred tone (0 calm, 1 energetic) | 0.5 + 0.35 x genre energy lean - 0.006 x (age - 30), in 0-1 | + N(0, 0.1) |
| palette (banner colour, RGB) | genre colours mixed by share, toward sepia by share of pre-1970 films | + N(0, 18) |
| mood affinity (8 mood words) | each genre votes for its mood by share; pre-1970 films vote vintage | x Gamma(4, 1/4) |
| contrast need (WCAG ratio) | 3 + 0.05 x (age - 25), in 2-8: older readers need more contrast | + N(0, 0.5) |
| hype aversion (x shouting, clickbait) | exp(0.01 x (age - 30)) | x exp(N(0, 0.25)) |
| CTA response (x call to action) | none | exp(N(0, 0.3)) |

Each genre's colour, mood, energy lean and length lean are in `GENRE_STYLE` (e.g. Horror: deep red, dark,
energetic, short; Drama: muted blue, calm, reflective, long). Category shares are the rating- and recency-weighted
shares of `generation.intent`, from the training part of the history.
Categories outside MovieLens' genres get a colour and mood drawn from a hash of their name and no lean.
Users without an age are given the median age of the dataset.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from generation import intent
from generation.collaborative import CollaborativeModel
from rewards.features import MOODS, Catalog

HOLDOUT_FRACTION = 0.2
TOP_CATEGORY_WEIGHTS = (1.0, 0.8, 0.6)  # how much naming the user's 1st, 2nd, 3rd category counts
SEPIA = np.array([160.0, 120.0, 80.0])
# genre -> (colour, mood, energy lean, length lean): the simulation's assumptions about genre fans
GENRE_STYLE: dict[str, tuple[tuple[int, int, int], str, float, float]] = {
    "Action": ((220, 80, 40), "bold", 1.0, -1.0),
    "Adventure": ((60, 150, 90), "bold", 1.0, 0.0),
    "Animation": ((255, 190, 60), "bright", 0.5, -1.0),
    "Children's": ((250, 200, 70), "bright", 0.5, -1.0),
    "Comedy": ((250, 210, 80), "bright", 0.5, -1.0),
    "Crime": ((70, 70, 90), "dark", 0.5, 0.0),
    "Documentary": ((150, 140, 120), "calm", -1.0, 1.0),
    "Drama": ((90, 110, 150), "calm", -1.0, 1.0),
    "Fantasy": ((140, 90, 190), "dreamy", 0.0, 0.0),
    "Film-Noir": ((40, 40, 45), "vintage", -0.5, 1.0),
    "Horror": ((90, 10, 20), "dark", 1.0, -1.0),
    "Musical": ((230, 90, 160), "bright", 0.5, 0.0),
    "Mystery": ((80, 60, 120), "dark", 0.0, 0.5),
    "Romance": ((230, 120, 140), "warm", -0.5, 0.5),
    "Sci-Fi": ((40, 160, 210), "cool", 0.5, 0.0),
    "Thriller": ((30, 50, 90), "dark", 1.0, 0.0),
    "War": ((100, 110, 60), "vintage", 0.5, 0.5),
    "Western": ((190, 140, 70), "warm", 0.0, 0.0),
}


def split_by_time(interactions: pd.DataFrame, fraction: float = HOLDOUT_FRACTION) -> tuple[pd.DataFrame,
                                                                                           pd.DataFrame]:
    """Each user's latest `fraction` of interactions (ties broken by input order) becomes the held-out part.

    Users with fewer than 1/fraction interactions keep everything in the training part.
    """
    ordered = interactions.reset_index(drop=True).reset_index(names="order")
    ordered = ordered.sort_values(["user_id", "timestamp", "order"])
    position = ordered.groupby("user_id").cumcount()
    size = ordered.groupby("user_id")["item_id"].transform("size")
    held = position >= size - np.floor(fraction * size)
    return ordered[~held].drop(columns="order"), ordered[held].drop(columns="order")


@dataclass
class Appeal:
    """Collaborative-filtering appeal of every catalog item for every user, standardised per user."""

    z: np.ndarray  # users x items, float32, population order
    factors: int
    seed: int

    @classmethod
    def fit(cls, train: pd.DataFrame, user_ids: list[str], item_ids: list[str], factors: int,
            seed: int) -> Appeal:
        model = CollaborativeModel.fit(train, factors=factors, seed=seed)
        raw = np.stack([model.scores(u, item_ids) for u in user_ids]).astype(np.float32)
        std = raw.std(axis=1, keepdims=True)
        z = (raw - raw.mean(axis=1, keepdims=True)) / np.where(std > 0, std, 1.0)
        return cls(z.astype(np.float32), factors, seed)


def _user_rng(seed: int, user_id: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(str(user_id).encode())])


def _style(label: str) -> tuple[np.ndarray, int, float, float]:
    """A category's colour, mood index, energy lean and length lean (hashed for unknown categories)."""
    if label in GENRE_STYLE:
        rgb, mood, energy, length = GENRE_STYLE[label]
        return np.array(rgb, dtype=float), MOODS.index(mood), energy, length
    rng = np.random.default_rng(zlib.crc32(label.encode()))
    return rng.uniform(30, 230, 3), int(rng.integers(len(MOODS))), 0.0, 0.0


@dataclass
class Population:
    """The real users as the simulator sees them: training history, profile vectors and taste traits."""

    user_ids: list[str]
    index: dict[str, int]
    train: pd.DataFrame
    held_out: pd.DataFrame
    shares: np.ndarray  # users x categories: rating- and recency-weighted category shares
    top: np.ndarray  # users x categories: TOP_CATEGORY_WEIGHTS on the user's top three categories
    centroid: np.ndarray  # users x d: weighted mean embedding of the history (unit rows)
    traits: dict[str, np.ndarray]  # see the module table

    def top_categories(self, user: int, catalog: Catalog, k: int = 3) -> list[str]:
        order = np.argsort(-self.shares[user], kind="stable")[:k]
        return [catalog.categories[g] for g in order if self.shares[user, g] > 0]


def _history_signals(train: pd.DataFrame, user_ids: list[str], catalog: Catalog) -> dict[str, np.ndarray]:
    """Per user, from the training history: category shares, centroid, activity and share of old films."""
    categories = {c: g for g, c in enumerate(catalog.categories)}
    first_year = np.array([min(y) if y else np.nan for y in catalog.years])
    shares = np.zeros((len(user_ids), len(categories)), dtype=np.float32)
    centroid = np.zeros((len(user_ids), catalog.vectors.shape[1]), dtype=np.float32)
    activity, old = np.zeros(len(user_ids)), np.zeros(len(user_ids))
    groups = dict(tuple(train.groupby("user_id", sort=False)))
    for u, user_id in enumerate(user_ids):
        history = groups.get(user_id)
        if history is None:
            continue
        rows = history["item_id"].map(catalog.index).to_numpy()
        weights = intent.interaction_weights(history)
        frame = pd.DataFrame({"category": [catalog.category_text[i] for i in rows]})
        for label, share in intent.category_shares(frame, weights).items():
            shares[u, categories[label]] = share
        vector = weights @ catalog.vectors[rows]
        centroid[u] = vector / max(float(np.linalg.norm(vector)), 1e-9)
        activity[u] = np.log1p(len(history))
        old[u] = float(np.nansum(weights * (first_year[rows] < 1970)) / weights.sum())
    return {"shares": shares, "centroid": centroid, "activity": activity, "old": old}


def _top(shares: np.ndarray) -> np.ndarray:
    top = np.zeros_like(shares)
    order = np.argsort(-shares, axis=1, kind="stable")[:, :len(TOP_CATEGORY_WEIGHTS)]
    for rank, weight in enumerate(TOP_CATEGORY_WEIGHTS[:order.shape[1]]):
        rows = np.arange(len(shares))
        top[rows, order[:, rank]] = np.where(shares[rows, order[:, rank]] > 0, weight, 0.0)
    return top


def _genre_leans(shares: np.ndarray, catalog: Catalog) -> dict[str, np.ndarray]:
    """Per user, the share-weighted mix of GENRE_STYLE: colour, mood votes, energy lean and length lean."""
    styles = [_style(label) for label in catalog.categories]
    if not styles:  # a catalog without categories: neutral grey, no mood, no lean
        return {"colour": np.full((len(shares), 3), 128.0), "votes": np.zeros((len(shares), len(MOODS))),
                "energy": np.zeros(len(shares)), "length": np.zeros(len(shares))}
    shares = shares / np.maximum(shares.sum(axis=1, keepdims=True), 1e-9)
    return {"colour": shares @ np.stack([s[0] for s in styles]),
            "votes": shares @ np.eye(len(MOODS))[[s[1] for s in styles]],
            "energy": shares @ np.array([s[2] for s in styles]), "length": shares @ np.array([s[3] for s in styles])}


def taste_traits(user_ids: list[str], ages: np.ndarray, signals: dict[str, np.ndarray], catalog: Catalog,
                 seed: int) -> dict[str, np.ndarray]:
    """The style traits of the module table, one array per trait (propensity is relative to these users)."""
    lean = _genre_leans(signals["shares"], catalog)
    old, activity = signals["old"], signals["activity"]
    noise = np.stack([_user_rng(seed, u).standard_normal(9) for u in user_ids]).reshape(len(user_ids), 9)
    gamma = np.stack([_user_rng(seed + 1, u).gamma(4.0, 0.25, len(MOODS)) for u in user_ids])
    moods = (lean["votes"] + old[:, None] * np.eye(len(MOODS))[MOODS.index("vintage")]) * gamma + 0.02
    age = np.where(np.isnan(ages), np.nanmedian(ages) if np.isfinite(ages).any() else 30.0, ages)
    words = 18 * np.exp(0.25 * lean["length"] + 0.008 * (age - 30) + 0.2 * noise[:, 1])
    palette = (1 - 0.6 * old[:, None]) * lean["colour"] + 0.6 * old[:, None] * SEPIA + 18 * noise[:, 3:6]
    return {
        "propensity": 0.15 * (activity - activity.mean()) / max(float(activity.std()), 1e-9) + 0.25 * noise[:, 0],
        "preferred_words": np.clip(words, 6, 45),
        "preferred_energy": np.clip(0.5 + 0.35 * lean["energy"] - 0.006 * (age - 30) + 0.1 * noise[:, 2], 0, 1),
        "palette": np.clip(palette, 0, 255),
        "moods": moods / moods.sum(axis=1, keepdims=True),
        "contrast_need": np.clip(3 + 0.05 * (age - 25) + 0.5 * noise[:, 6], 2, 8),
        "hype_aversion": np.exp(0.01 * (age - 30) + 0.25 * noise[:, 7]),
        "cta_response": np.exp(0.3 * noise[:, 8]),
    }


def build_population(users: pd.DataFrame, interactions: pd.DataFrame, catalog: Catalog,
                     seed: int) -> Population:
    """Split the real interactions by time and derive every user's signals and traits from the older part."""
    train, held_out = split_by_time(interactions)
    user_ids = users["user_id"].astype(str).tolist()
    signals = _history_signals(train, user_ids, catalog)
    ages = pd.to_numeric(users["age"], errors="coerce").to_numpy(dtype=float)
    traits = taste_traits(user_ids, ages, signals, catalog, seed)
    return Population(user_ids, {u: n for n, u in enumerate(user_ids)}, train, held_out, signals["shares"],
                      _top(signals["shares"]), signals["centroid"], traits)
