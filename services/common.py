"""Shared by every service module: the default dataset, the progress callback's type, the demo data, and the
checks and exports every domain uses.
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from store import movielens, repository

Progress = Callable[[float, str], None]


DEFAULT_DATASET = movielens.NAME


def quiet(_fraction: float, _message: str) -> None:
    """The progress callback used when the caller does not show progress."""


def ensure_demo_data() -> bool:
    """Load MovieLens-100k into the store on first use; True when it was loaded now."""
    return movielens.ensure_loaded()


def catalog(dataset: str) -> pd.DataFrame:
    """The dataset's items indexed by item id (for pickers)."""
    return repository.catalog(dataset)


def require_dataset(dataset: str) -> None:
    """UnknownDataset (naming the loaded ones) unless the dataset is in the store."""
    repository.require_dataset(dataset)


def known_item(dataset: str, item_id: str) -> str:
    from rewards.audience import UnknownItem

    item_id = str(item_id).strip()
    if item_id not in set(repository.items(dataset)["item_id"]):
        raise UnknownItem(f"Unknown item '{item_id}' in dataset '{dataset}'")
    return item_id


def csv_export(frame: pd.DataFrame) -> bytes:
    """CSV bytes safe to open in a spreadsheet: cells that would start a formula are prefixed with '."""
    def guard(value: object) -> object:
        return f"'{value}" if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r") else value

    # CRLF rows (RFC 4180) make the writer quote any cell holding a bare CR; with '\n' rows a CR in a cell is left
    # unquoted, a spreadsheet splits the row there, and what follows the CR starts a new, unguarded cell
    return frame.map(guard).to_csv(index=False, lineterminator="\r\n").encode("utf-8")
