"""Profiles kept in the store: inferred from a user's history once, served from the cache while that history
and the models it was inferred with are unchanged.

Here rather than in the services because the tuning prompts and the Studio both need a user's profile, and
tuning sits below the services.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import asdict

import numpy as np
import pandas as pd

import settings
from generation import embeddings, intent, models, taste
from store import repository
from store.derived import per_dataset

Progress = Callable[[float, str], None]


def _quiet(_fraction: float, _message: str) -> None:
    """The progress callback used when the caller does not show progress."""


def catalog_shares(dataset: str) -> dict[str, float]:
    """Share of each category across the catalog, the reference that makes an interest distinctive."""
    items = repository.items(dataset)
    return intent.category_shares(items, np.ones(len(items)))


def history_hash(frame: pd.DataFrame, model: str) -> str:
    """Fingerprint of what a profile was computed from; a change means the cache is stale."""
    key = frame[["item_id", "timestamp", "rating"]].to_csv(index=False) + model + intent.ALGORITHM_VERSION
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def taste_model(dataset: str) -> taste.Taste:
    """The dataset's taste model, fitted once per loaded state of its interactions."""
    return per_dataset("taste", dataset, lambda: taste.Taste.fit(repository.interactions(dataset)))


def _fingerprint(dataset: str, user_id: str, use_llm: bool) -> tuple[pd.DataFrame, str, str]:
    """The history, the summary model's name and what the profile depends on: the history, the models and,
    for the taste neighbours and picks, the state of the whole dataset."""
    frame = repository.history(dataset, user_id)
    cfg = settings.load()
    model_name = cfg.text_model if use_llm else "none (structured signals only)"
    loaded = "|".join(map(str, repository.dataset_version(dataset)[2:]))
    return frame, model_name, history_hash(frame, f"{model_name}|{cfg.embedding_model}|{loaded}")


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
    progress(0.15, "Embedding the catalog")
    vectors = embeddings.catalog_vectors(dataset)
    matrix = np.stack([vectors[i] for i in frame["item_id"]]) if len(frame) else np.zeros((0, 1))
    progress(0.25, "Finding taste neighbours")
    tastes = taste_model(dataset)

    def with_taste(found: intent.Profile) -> tuple[list[intent.Neighbour], list[intent.Pick]]:
        return (taste.neighbours(tastes, user_id, frame),
                taste.picks(tastes, found, frame, repository.items(dataset), vectors))
    writer = None
    if use_llm:
        progress(0.35, f"Loading {model_name}")
        llm = models.text_model()
        progress(0.5, "Writing the intent summary")

        def writer(chat: list[dict]) -> str:
            return llm.generate([chat], max_new_tokens=40, assistant_prefix=" " + intent.SUMMARY_PREFIX)[0]

    result = intent.build_profile(user_id, frame, matrix, catalog_shares(dataset), model_name, writer,
                                  with_taste)
    payload = result.to_dict() | {"dataset": dataset, "neighbour_pool": taste.NEIGHBOURS,
                                  "embedding_model": settings.load().embedding_model,
                                  "seconds": round(time.perf_counter() - started, 2), "version": fingerprint}
    progress(0.95, "Saving")
    repository.save_profile(dataset, user_id, model_name, fingerprint, payload)
    progress(1.0, "Done")
    return payload | {"cached": False}


def hooks(dataset: str, user_id: str, item: dict) -> list[dict]:
    """For an item to promote, the user's own liked history items most related to it (`taste.hooks`), each with
    its evidence: the user's rating against their mean, relatedness and the people who chose both."""
    frame = repository.history(dataset, str(user_id).strip())
    vectors = embeddings.catalog_vectors(dataset)
    return [asdict(h) for h in taste.hooks(taste_model(dataset), frame, item, vectors)]
