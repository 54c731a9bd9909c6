"""The service layer: every action of the dashboard, callable from the CLI and tests without a browser.

Pages and `cli.py` call these functions and nothing below them, so each page action has one
implementation. Functions take an optional `progress(fraction, message)` callback for slow work.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

import settings
from generation import intent, models
from generation.untrusted import clean
from store import csv_import, movielens, repository

Progress = Callable[[float, str], None]
DEFAULT_DATASET = movielens.NAME


def _quiet(_fraction: float, _message: str) -> None:
    """The progress callback used when the caller does not show progress."""


def ensure_demo_data() -> bool:
    """Load MovieLens-100k into the store on first use; True when it was loaded now."""
    return movielens.ensure_loaded()


def prepare(progress: Progress = _quiet) -> dict:
    """Everything a first page view would otherwise wait for: demo data, item embeddings, the text model."""
    started = time.perf_counter()
    progress(0.0, "Loading the demo dataset")
    loaded = ensure_demo_data()
    vectors = item_vectors(DEFAULT_DATASET, progress=lambda f, m: progress(0.1 + 0.4 * f, m))
    progress(0.5, f"Loading {settings.load().text_model}")
    llm = models.text_model()
    progress(1.0, "Ready")
    return {"demo_dataset": "loaded now" if loaded else "already loaded", "item_embeddings": len(vectors),
            "text_model": f"{llm.model_id} on {llm.device} ({llm.load_seconds:.1f} s)",
            "seconds": round(time.perf_counter() - started, 1)}


def datasets() -> pd.DataFrame:
    ensure_demo_data()
    return repository.dataset_summary()


def users(dataset: str = DEFAULT_DATASET, query: str = "", limit: int | None = None) -> pd.DataFrame:
    repository.require_dataset(dataset)
    return repository.list_users(dataset, query, limit)


def user(dataset: str, user_id: str) -> dict:
    return repository.get_user(dataset, str(user_id).strip())


def history(dataset: str, user_id: str) -> pd.DataFrame:
    """The user's history, oldest first, with a readable date column."""
    frame = repository.history(dataset, str(user_id).strip())
    return frame.assign(date=pd.to_datetime(frame["timestamp"], unit="s"))


def item_text(title: str, category: str | None, description: str | None) -> str:
    """The text embedded for an item: what a person would read about it."""
    parts = [clean(title, 200), ", ".join(intent.categories_of(category)), clean(description, 300)]
    return ". ".join(p for p in parts if p)


def item_vectors(dataset: str, item_ids: list[str] | None = None, progress: Progress = _quiet) -> dict[str, np.ndarray]:
    """Embeddings of the dataset's items (all, or `item_ids`), computed once and cached in the store."""
    catalog = repository.items(dataset)
    if item_ids is not None:
        catalog = catalog[catalog["item_id"].isin(set(item_ids))]
    embedder = models.embedder()
    cached = repository.cached_embeddings(dataset, embedder.model_id)
    texts = {r.item_id: item_text(r.title, r.category, r.description) for r in catalog.itertuples()}
    hashes = {i: repository.text_hash(t) for i, t in texts.items()}
    missing = [i for i in texts if i not in cached or cached[i][0] != hashes[i]]
    for start in range(0, len(missing), 256):
        chunk = missing[start:start + 256]
        progress(start / len(missing), f"Embedding items {start + 1}-{start + len(chunk)} of {len(missing)}")
        vectors = embedder.encode([texts[i] for i in chunk])
        repository.save_embeddings(dataset, embedder.model_id, [(i, hashes[i], v) for i, v in
                                                                 zip(chunk, vectors, strict=True)])
        cached.update({i: (hashes[i], v) for i, v in zip(chunk, vectors, strict=True)})
    return {i: cached[i][1] for i in texts}


def catalog_shares(dataset: str) -> dict[str, float]:
    """Share of each category across the catalog, the reference that makes an interest distinctive."""
    catalog = repository.items(dataset)
    return intent.category_shares(catalog, np.ones(len(catalog)))


def history_hash(frame: pd.DataFrame, model: str) -> str:
    """Fingerprint of what a profile was computed from; a change means the cache is stale."""
    key = frame[["item_id", "timestamp", "rating"]].to_csv(index=False) + model + intent.ALGORITHM_VERSION
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def _fingerprint(dataset: str, user_id: str, use_llm: bool) -> tuple[pd.DataFrame, str, str]:
    frame = repository.history(dataset, user_id)
    cfg = settings.load()
    model_name = cfg.text_model if use_llm else "none (structured signals only)"
    return frame, model_name, history_hash(frame, f"{model_name}|{cfg.embedding_model}")


def cached_profile(dataset: str, user_id: str, use_llm: bool = True) -> dict | None:
    """The stored profile if it was computed from the current history and models, else None."""
    user_id = str(user_id).strip()
    _, _, fingerprint = _fingerprint(dataset, user_id, use_llm)
    cached = repository.load_profile(dataset, user_id)
    return cached[0] | {"cached": True} if cached and cached[1] == fingerprint else None


def profile(dataset: str, user_id: str, recompute: bool = False, use_llm: bool = True,
            progress: Progress = _quiet) -> dict:
    """The user's profile from the cache, or inferred now (and cached) when asked or when stale."""
    user_id = str(user_id).strip()
    progress(0.05, "Reading history")
    if not recompute and (cached := cached_profile(dataset, user_id, use_llm)):
        progress(1.0, "Loaded from cache")
        return cached
    frame, model_name, fingerprint = _fingerprint(dataset, user_id, use_llm)
    started = time.perf_counter()
    progress(0.15, "Embedding history items")
    vectors = item_vectors(dataset, frame["item_id"].tolist())
    matrix = np.stack([vectors[i] for i in frame["item_id"]]) if len(frame) else np.zeros((0, 1))
    writer = None
    if use_llm:
        progress(0.35, f"Loading {model_name}")
        llm = models.text_model()
        progress(0.5, "Writing the intent summary")

        def writer(chat: list[dict]) -> str:
            return llm.generate([chat], max_new_tokens=40, assistant_prefix=" " + intent.SUMMARY_PREFIX)[0]

    result = intent.build_profile(user_id, frame, matrix, catalog_shares(dataset), model_name, writer)
    payload = result.to_dict() | {"dataset": dataset, "embedding_model": settings.load().embedding_model,
                                  "seconds": round(time.perf_counter() - started, 2)}
    progress(0.95, "Saving")
    repository.save_profile(dataset, user_id, model_name, fingerprint, payload)
    progress(1.0, "Done")
    return payload | {"cached": False}


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


def environment() -> dict:
    """What the Settings page shows: resolved settings with their sources, device and loaded models."""
    cfg = settings.load()
    return {"settings": cfg.public(), "sources": cfg.sources, "env_vars": settings.ENV_VARS,
            "device": models.resolve_device(cfg.device), "settings_file": str(settings.settings_file()),
            "loaded_models": models.loaded()}


def save_settings(changes: dict[str, str]) -> str:
    """Persist settings to the settings file; they apply to the next model load."""
    return str(settings.save(changes))


def eval_intent(dataset: str = DEFAULT_DATASET, users: int | None = None, negatives: int = 100, seed: int = 0,
                progress: Progress = _quiet) -> dict:
    """Leave-last-one-out ranking quality of profiles against popularity and matrix factorization."""
    from evaluation import intent_ranking

    ensure_demo_data()
    vectors = item_vectors(dataset, progress=lambda f, m: progress(0.1 * f, m))
    started = time.perf_counter()
    report = intent_ranking.evaluate(repository.interactions(dataset), repository.items(dataset), vectors,
                                     users, negatives, seed,
                                     progress=lambda f, m: progress(0.1 + 0.9 * f, m))
    return report | {"dataset": dataset, "seconds": round(time.perf_counter() - started, 1)}
