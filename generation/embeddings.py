"""Item embeddings: the sentence vectors of item texts, computed once per model and cached in the store.

Profiles, the simulated audience and the Studio all compare texts with items, so they share this
one cache instead of each embedding the catalog again.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from generation import models
from generation.intent import categories_of
from store import repository
from store.derived import per_dataset
from untrusted import clean


def _quiet(_fraction: float, _message: str) -> None:
    """The progress callback used when the caller does not show progress."""


def item_text(title: str, category: str | None, description: str | None) -> str:
    """The text embedded for an item: what a person would read about it."""
    parts = [clean(title, 200), ", ".join(categories_of(category)), clean(description, 300)]
    return ". ".join(p for p in parts if p)


def item_vectors(dataset: str, item_ids: list[str] | None = None,
                 progress: Callable[[float, str], None] = _quiet) -> dict[str, np.ndarray]:
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




def catalog_vectors(dataset: str) -> dict[str, np.ndarray]:
    """Every item's embedding, read once per loaded state of the dataset and embedding model: a profile and a
    hook lookup each need the whole catalog, and re-reading it from the store cost 0.3 s a user in segment jobs."""
    return per_dataset(f"item vectors {models.embedder().model_id}", dataset, lambda: item_vectors(dataset))
