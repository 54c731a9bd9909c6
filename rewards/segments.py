"""Audience segments: demographic groups and taste groups (each user's dominant category)."""

from __future__ import annotations

import pandas as pd

from generation.intent import categories_of

AGE_BANDS = [(0, 17, "under 18"), (18, 24, "18-24"), (25, 34, "25-34"), (35, 44, "35-44"), (45, 54, "45-54"),
             (55, 200, "55+")]
EVERYONE = "everyone"  # the group of the "all" kind, and of a user whose taste the data does not tell
KINDS = {"all": "Everyone", "gender": "Gender", "age_band": "Age band", "occupation": "Occupation",
         "taste": "Taste theme (dominant category)"}


def age_band(age: object) -> str | None:
    if age is None or pd.isna(age):
        return None
    return next(label for lo, hi, label in AGE_BANDS if lo <= int(age) <= hi)


def dominant_category(interactions: pd.DataFrame, items: pd.DataFrame, min_share: float = 0.05) -> pd.Series:
    """user_id -> the category the user over-indexes on most (share / everyone's share), among those
    making up at least `min_share` of their interactions; plain largest share would make most users
    "Drama fans"."""
    cats = items.set_index("item_id")["category"].map(categories_of)
    joined = interactions[["user_id", "item_id"]].join(cats.rename("cats"), on="item_id")
    joined = joined[joined["cats"].map(bool)]
    joined = joined.assign(weight=1.0 / joined["cats"].map(len)).explode("cats")
    totals = joined.groupby(["user_id", "cats"])["weight"].sum().reset_index()
    totals["share"] = totals["weight"] / totals.groupby("user_id")["weight"].transform("sum")
    overall = totals.groupby("cats")["weight"].sum() / totals["weight"].sum()
    totals["lift"] = totals["share"] / totals["cats"].map(overall)
    totals = totals[totals["share"] >= min_share]
    top = totals.sort_values(["user_id", "lift", "cats"], ascending=[True, False, True])
    return top.drop_duplicates("user_id").set_index("user_id")["cats"]


def table(users: pd.DataFrame, interactions: pd.DataFrame, items: pd.DataFrame) -> pd.DataFrame:
    """One row per user with every segment kind as a column (None where the data does not say)."""
    frame = users[["user_id", "gender", "occupation"]].copy()
    frame["all"] = EVERYONE
    frame["age_band"] = users["age"].map(age_band)
    frame["taste"] = frame["user_id"].map(dominant_category(interactions, items))
    frame["taste"] = frame["taste"].map(lambda c: f"{c} fans" if isinstance(c, str) else None)
    return frame


def members(segments: pd.DataFrame, kind: str, value: str | None = None) -> list[str]:
    """User ids in a segment (`kind` a column of `table`, `value` one of its labels; all users for 'all')."""
    if kind not in KINDS:
        raise ValueError(f"Unknown segment kind '{kind}'; choose one of {', '.join(KINDS)}")
    if kind == "all" or value is None:
        return segments["user_id"].tolist()
    chosen = segments.loc[segments[kind] == value, "user_id"].tolist()
    if not chosen:
        raise ValueError(f"No user is in segment {KINDS[kind]} = '{value}'")
    return chosen
