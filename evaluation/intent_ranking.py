"""Leave-last-one-out ranking: does a profile inferred from the history predict the next item?

For each user the latest interaction is held out; the profile is inferred from the rest and ranks
the held-out item among sampled items the user never touched. The same split and the same
negatives score a popularity baseline and a matrix-factorization baseline, so the numbers compare. Every model
(the popularity counts, the factorisation, the taste model of "profile+taste") is fitted on the training part
only: a model fitted on more data would know the held-out item.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from generation import intent, taste

METHODS = ["popularity", "matrix_factorization", "profile", "profile+popularity", "profile+taste"]


def leave_last_out(interactions: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split off each user's latest interaction (users with fewer than 2 interactions are dropped)."""
    ordered = interactions.reset_index(drop=True).reset_index(names="order")
    ordered = ordered.sort_values(["user_id", "timestamp", "order"])
    counts = ordered.groupby("user_id")["item_id"].transform("size")
    ordered = ordered[counts >= 2]
    is_last = ~ordered.duplicated("user_id", keep="last")
    return ordered[~is_last].drop(columns="order"), ordered[is_last].drop(columns="order")


def hit_and_ndcg(scores: np.ndarray, k: int = 10) -> tuple[float, float]:
    """Metrics for one list whose first entry is the held-out item."""
    rank = int((scores[1:] > scores[0]).sum())
    return float(rank < k), float(1.0 / np.log2(rank + 2)) if rank < k else 0.0


def evaluate(interactions: pd.DataFrame, catalog: pd.DataFrame, vectors: dict[str, np.ndarray],
             users: int | None = None, negatives: int = 100, seed: int = 0, k: int = 10,
             progress: Callable[[float, str], None] | None = None) -> dict:
    """HR@k and NDCG@k of every method on the same users, held-out items and negatives."""
    train, test = leave_last_out(interactions)
    rng = np.random.default_rng(seed)
    if users is not None and users < len(test):
        test = test.iloc[np.sort(rng.choice(len(test), size=users, replace=False))]
    popularity = train["item_id"].value_counts()
    log_pop = np.log1p(popularity.reindex(catalog["item_id"]).fillna(0).to_numpy())
    pop_by_item = dict(zip(catalog["item_id"], log_pop, strict=True))
    tastes = taste.Taste.fit(train, seed=seed)  # its PureSVD is the matrix-factorization baseline
    facts = catalog.set_index("item_id")
    all_items = catalog["item_id"].to_numpy()
    shares = intent.category_shares(catalog, np.ones(len(catalog)))
    train_by_user = dict(tuple(train.groupby("user_id")))
    totals = {m: [0.0, 0.0] for m in METHODS}
    for n, held in enumerate(test.itertuples()):
        past = train_by_user[held.user_id]
        seen = set(past["item_id"]) | {held.item_id}
        pool = all_items[~np.isin(all_items, list(seen))]
        candidates = [held.item_id, *rng.choice(pool, size=min(negatives, len(pool)), replace=False)]
        jitter = rng.uniform(0, 1e-6, size=len(candidates))  # breaks ties at random, not in favour of the target
        history = past.join(facts, on="item_id")
        profile = intent.build_profile(held.user_id, history, np.stack([vectors[i] for i in history["item_id"]]),
                                       shares, "none")
        cand_vectors = np.stack([vectors[i] for i in candidates])
        cand_cats = [intent.categories_of(facts.at[i, "category"]) for i in candidates]
        pop = np.array([pop_by_item[i] for i in candidates])
        profile_scores = intent.score_items(profile, cand_vectors, cand_cats)
        method_scores = {
            "popularity": pop,
            "matrix_factorization": tastes.model.scores(held.user_id, candidates),
            "profile": profile_scores,
            "profile+popularity": taste.zscore(profile_scores) + taste.zscore(pop),
            "profile+taste": tastes.scores(held.user_id, past["item_id"].tolist(), candidates, profile_scores),
        }
        for method, scores in method_scores.items():
            hit, ndcg = hit_and_ndcg(np.asarray(scores, dtype=float) + jitter, k)
            totals[method][0] += hit
            totals[method][1] += ndcg
        if progress and n % 25 == 0:
            progress(n / len(test), f"Ranked {n} of {len(test)} users")
    count = len(test)
    return {
        "users": count, "negatives": negatives, "k": k, "seed": seed,
        "chance_hr": round(k / (negatives + 1), 4),
        "results": {m: {f"hr@{k}": round(v[0] / count, 4), f"ndcg@{k}": round(v[1] / count, 4)}
                    for m, v in totals.items()},
    }
