"""PureSVD collaborative filtering and the leave-last-one-out split, on the real MovieLens-100k ratings."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from evaluation.intent_ranking import hit_and_ndcg, leave_last_out
from generation.collaborative import CollaborativeModel
from store import movielens


@pytest.fixture(scope="module")
def ratings() -> pd.DataFrame:
    interactions = movielens.frames()[2]
    assert len(interactions) == 100_000
    return interactions


@pytest.fixture(scope="module")
def split(ratings: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    return leave_last_out(ratings)


@pytest.fixture(scope="module")
def model(split: tuple[pd.DataFrame, pd.DataFrame]) -> CollaborativeModel:
    return CollaborativeModel.fit(split[0])


def test_leave_last_out_holds_out_each_users_latest(ratings: pd.DataFrame, split):
    train, test = split
    assert len(train) + len(test) == len(ratings)
    assert test["user_id"].is_unique
    assert set(test["user_id"]) == set(ratings["user_id"])  # every MovieLens user has at least 20 ratings
    latest = ratings.groupby("user_id")["timestamp"].max()
    assert (test.set_index("user_id")["timestamp"] == latest.reindex(test["user_id"]).to_numpy()).all()
    # nothing in training is later than the held-out interaction of the same user
    last_train = train.groupby("user_id")["timestamp"].max()
    assert (last_train <= test.set_index("user_id")["timestamp"].reindex(last_train.index)).all()
    # train and test together are exactly the original rows
    rebuilt = pd.concat([train, test]).sort_values(["user_id", "item_id", "timestamp"]).reset_index(drop=True)
    original = ratings.sort_values(["user_id", "item_id", "timestamp"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(rebuilt[original.columns], original)


def test_leave_last_out_drops_single_interaction_users_and_breaks_ties_by_order(ratings: pd.DataFrame):
    user1 = ratings[ratings["user_id"] == "1"]
    latest = user1[user1["timestamp"] == user1["timestamp"].max()]
    assert len(latest) > 1  # user 1 rated several films in the same second
    sample = pd.concat([ratings[ratings["user_id"] == "2"].head(1), user1])
    train, test = leave_last_out(sample)
    assert test["user_id"].tolist() == ["1"]
    assert "2" not in set(train["user_id"])
    assert test["item_id"].iloc[0] == latest["item_id"].iloc[-1]  # the last of the tied rows in input order
    assert len(train) == len(user1) - 1


def test_held_out_items_rank_above_random_unseen_items(ratings: pd.DataFrame, split, model: CollaborativeModel):
    train, test = split
    rng = np.random.default_rng(0)
    items = ratings["item_id"].unique()
    seen = ratings.groupby("user_id")["item_id"].agg(set)
    aucs, hits = [], []
    for held in test.sample(200, random_state=0).itertuples():
        pool = items[~np.isin(items, list(seen[held.user_id]))]
        negatives = rng.choice(pool, size=100, replace=False).tolist()
        scores = model.scores(held.user_id, [held.item_id, *negatives])
        aucs.append(float((scores[1:] < scores[0]).mean() + 0.5 * (scores[1:] == scores[0]).mean()))
        hits.append(hit_and_ndcg(scores.astype(float), k=10)[0])
    assert np.mean(aucs) > 0.75
    assert np.mean(hits) > 2 * 10 / 101  # HR@10 well above chance


def test_scores_for_unknown_users_and_items_are_zero(model: CollaborativeModel, split):
    train = split[0]
    some_items = train["item_id"].head(5).tolist()
    assert model.scores("no-such-user", some_items).tolist() == [0.0] * 5
    scores = model.scores("1", [*some_items, "no-such-item"])
    assert scores[-1] == 0.0
    assert np.any(scores[:-1] != 0.0)
    assert model.scores("no-such-user", []).shape == (0,)


def test_fit_counts_repeated_interactions_once(ratings: pd.DataFrame):
    sample = ratings[ratings["user_id"].isin(["1", "2", "3"])]
    doubled = pd.concat([sample, sample[sample["user_id"] == "1"]])
    model = CollaborativeModel.fit(doubled, factors=8)
    assert model.matrix.shape == (3, sample["item_id"].nunique())
    assert model.matrix.max() == 1.0
    assert model.matrix.sum() == len(sample)
    assert model.item_factors.shape == (sample["item_id"].nunique(), 2)  # at most min(shape) - 1 factors
    one = CollaborativeModel.fit(doubled, factors=8)
    items = sample["item_id"].tolist()[:20]
    np.testing.assert_allclose(model.scores("1", items), one.scores("1", items))  # deterministic
