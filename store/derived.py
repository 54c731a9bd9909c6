"""What is built from a whole dataset (the taste model, segment tables, defaults), once per loaded state of it.

Pages rerun often and profiles are built one user at a time; each would otherwise refit the same model. The key
is `repository.dataset_version`, so a replaced or grown dataset is never served from a stale build.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from store import repository

T = TypeVar("T")
_built: dict[tuple, object] = {}
_lock = threading.Lock()


def per_dataset(kind: str, dataset: str, build: Callable[[], T]) -> T:
    """`build()` once per `kind` and loaded state of `dataset`; later calls get the same object."""
    key = (kind, *repository.dataset_version(dataset))
    with _lock:
        if key not in _built:
            _built[key] = build()
        return _built[key]  # type: ignore[return-value]
