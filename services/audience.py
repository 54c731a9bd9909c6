"""Audience: datasets, users and their histories, profiles (inferred and cached in the store), CSV imports,
segments, and the intent ranking evaluation.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

import limits
from generation import embeddings, intent

# the profile services are the generation layer's own (the tuning prompts need them below the services)
from generation.profiles import cached_profile as cached_profile
from generation.profiles import hooks as profile_hooks
from generation.profiles import profile as profile
from rewards import segments
from services.common import DEFAULT_DATASET, Progress, ensure_demo_data, known_item, quiet
from store import csv_import, repository
from store.derived import per_dataset


def datasets() -> pd.DataFrame:
    ensure_demo_data()
    return repository.dataset_summary()


def users(dataset: str = DEFAULT_DATASET, query: str = "", limit: int | None = None) -> pd.DataFrame:
    if limit is not None:
        limits.LIST_LIMIT.check(limit)
    repository.require_dataset(dataset)
    return repository.list_users(dataset, query, limit)


def user(dataset: str, user_id: str) -> dict:
    return repository.get_user(dataset, str(user_id).strip())


def hooks(dataset: str, user_id: str, item_id: str) -> list[dict]:
    """For an item to promote, the user's own liked history items most related to it, with their evidence (what
    a Studio headline may name: "for fans of ..."); empty when none is related enough or nothing is rated."""
    item = repository.catalog(dataset).loc[known_item(dataset, item_id)].to_dict()
    return profile_hooks(dataset, str(user_id).strip(), item)


def history(dataset: str, user_id: str) -> pd.DataFrame:
    """The user's history, oldest first, with a readable date column."""
    frame = repository.history(dataset, str(user_id).strip())
    return frame.assign(date=pd.to_datetime(frame["timestamp"], unit="s"))


def category_mix(frame: pd.DataFrame) -> pd.DataFrame:
    """Interactions per category (an item counts once in each of its categories) with mean rating."""
    exploded = frame.assign(category=frame["category"].map(intent.categories_of)).explode("category")
    exploded = exploded.dropna(subset=["category"])
    mix = exploded.groupby("category").agg(interactions=("item_id", "size"), mean_rating=("rating", "mean"))
    mix["share"] = mix["interactions"] / max(len(frame), 1)
    return mix.sort_values("interactions", ascending=False).reset_index()


def activity(frame: pd.DataFrame, freq: str = "W") -> pd.DataFrame:
    """Interactions and mean rating per period (weeks by default), for the activity chart."""
    dated = frame.assign(period=pd.to_datetime(frame["timestamp"], unit="s").dt.to_period(freq).dt.start_time)
    return dated.groupby("period").agg(interactions=("item_id", "size"),
                                       mean_rating=("rating", "mean")).reset_index()


def import_csv(name: str, items_data: bytes, interactions_data: bytes, items_name: str = "items.csv",
               interactions_name: str = "interactions.csv", replace: bool = False) -> dict[str, int]:
    """Validate and import uploaded CSV files; raises csv_import.ImportFailed listing every problem."""
    return csv_import.import_bytes(name, items_data, interactions_data, items_name, interactions_name, replace)


def import_csv_files(name: str, items_path: str | Path, interactions_path: str | Path,
                     replace: bool = False) -> dict[str, int]:
    return csv_import.import_files(name, items_path, interactions_path, replace)


def import_message(name: str, counts: dict[str, int]) -> str:
    """What an import did, in words, for the Audience page and the CLI; says what was redacted, as a receipt."""
    message = (f"Imported '{name}': {counts['users']} users, {counts['items']} items, {counts['interactions']} "
               f"interactions; redacted {counts.get('redacted', 0)} personal identifiers")
    if counts.get("neutralised"):
        message += f"; neutralised {counts['neutralised']} texts holding instructions or markup"
    return message + "."


def eval_intent(dataset: str = DEFAULT_DATASET, users: int | None = None, negatives: int = 100, seed: int = 0,
                progress: Progress = quiet) -> dict:
    """Leave-last-one-out ranking quality of profiles against popularity and matrix factorization."""
    from evaluation import intent_ranking

    limits.check_all({"users": users, "negatives": negatives, "seed": seed},
                     {"users": limits.EVAL_USERS, "negatives": limits.NEGATIVES, "seed": limits.SEED})
    ensure_demo_data()
    vectors = embeddings.item_vectors(dataset, progress=lambda f, m: progress(0.1 * f, m))
    started = time.perf_counter()
    report = intent_ranking.evaluate(repository.interactions(dataset), repository.items(dataset), vectors,
                                     users, negatives, seed,
                                     progress=lambda f, m: progress(0.1 + 0.9 * f, m))
    return report | {"dataset": dataset, "seconds": round(time.perf_counter() - started, 1)}


def default_item(dataset: str) -> str:
    """The most interacted-with item: a sensible first thing to promote."""
    return per_dataset("default_item", dataset, lambda: str(
        repository.interactions(dataset)["item_id"].value_counts().index[0]))


def segment_kinds() -> dict[str, str]:
    return dict(segments.KINDS)


def segment_table(dataset: str) -> pd.DataFrame:
    """Every user's segments (demographics and taste theme); built once per loaded state of the dataset."""
    table = per_dataset("segments", dataset, lambda: segments.table(
        repository.list_users(dataset), repository.interactions(dataset), repository.items(dataset)))
    return table.copy()


def segment_values(dataset: str, kind: str) -> list[str]:
    """The groups of a segment kind, largest first ('everyone' for 'all')."""
    table = segment_table(dataset)
    return table[kind].dropna().value_counts().index.astype(str).tolist()
