"""Serving: variants per request, Thompson-sampling decisions over an item's live variants, real events back
into the store, and the report of what was shown and clicked.

The hot path (`Decider.decide`) touches the database only through short-lived caches: an item's live variants
and their counts are re-read at most once a `ttl` seconds, users and segments once a minute (a user the cache
does not know is looked up), so thousands of decisions a second cost one small query a second per item.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

import limits
import settings
from rewards.audience import UnknownItem
from rewards.campaign import wilson_interval
from rewards.segments import EVERYONE
from services.audience import segment_table
from services.common import known_item
from services.studio import generate
from store import repository, serving
from store.repository import UnknownDataset, UnknownUser
from store.serving import Event

PRIOR_IMPRESSIONS = 100  # at most this much of a variant's pooled evidence (all segments) seeds each segment
_generation_locks: dict[tuple, threading.Lock] = {}
_locks_guard = threading.Lock()


class NotFound(LookupError):
    """A variant, banner or impression the request names does not exist."""


class NoLiveVariants(LookupError):
    """The item has no live variant to decide among (none made through the API or kept in the Studio)."""


def _public(row: dict) -> dict:
    """A variant as the API returns it."""
    return {"variant_id": int(row["id"]), "title": row["title"], "body": row["body"], "cta": row["cta"],
            "predicted_ctr": None if pd.isna(row["score"]) else float(row["score"]),
            "banners": dict(row["banners"] or {})}


def _stored_for(dataset: str, user_id: str, item_id: str, adapter: str | None) -> list[dict]:
    passed = repository.passed(repository.variants_for(dataset, user_id, item_id, adapter))
    return passed.sort_values(["score", "id"], ascending=[False, True]).to_dict("records")


def variants_for(dataset: str, user_id: str, item_id: str, n: int) -> tuple[list[dict], bool]:
    """N checked variants of an item for a user, and whether they were made now.

    Made once per (dataset, user, item, adapter) and stored; later requests are served from the store (the
    Studio's variants for that user and item count). Served variants are kept, so decisions choose among them.
    Concurrent requests for the same key wait for one generation; fewer than N come back when the checks
    rejected some of what was written.
    """
    limits.VARIANTS_PER_USER.check(n)
    repository.get_user(dataset, user_id)
    item_id = known_item(dataset, item_id)
    adapter = settings.load().text_adapter or None  # what Variant.adapter records for the promoted adapter
    key = (dataset, str(user_id), item_id, adapter)
    with _locks_guard:
        lock = _generation_locks.setdefault(key, threading.Lock())
    with lock:
        stored = _stored_for(dataset, str(user_id), item_id, adapter)
        generated = len(stored) < n
        if generated:
            generate(dataset, item_id, user_id=str(user_id), n=n - len(stored))
            stored = _stored_for(dataset, str(user_id), item_id, adapter)
        served = stored[:n]
        repository.set_kept([r["id"] for r in served if not r["kept"]], True)  # served: live for decisions
        return [_public(r) for r in served], generated


def banner_path(variant_id: int, size: str) -> Path:
    """The PNG of a stored variant's banner; LookupError when the variant or size has none."""
    banners = repository.variant_banners(int(variant_id))
    if banners is None:
        raise NotFound(f"Unknown variant {variant_id}")
    if size not in banners:
        raise NotFound(f"Variant {variant_id} has no {size} banner (sizes: {', '.join(banners) or 'none'})")
    return Path(banners[size])


class _Timed:
    """A value rebuilt by `build` when older than `ttl` seconds."""

    def __init__(self, build: Callable[[], object], ttl: float) -> None:
        self._build, self._ttl, self._at, self._value = build, ttl, -np.inf, None
        self._lock = threading.Lock()

    def get(self) -> object:
        with self._lock:
            if time.monotonic() - self._at > self._ttl:
                self._value, self._at = self._build(), time.monotonic()
            return self._value


class _ItemState:
    """An item's live variants with each one's impressions and clicks, overall and per segment."""

    def __init__(self, dataset: str, item_id: str) -> None:
        self.loaded_at = time.monotonic()
        variants = serving.live_variants(dataset, item_id)
        self.ids = variants["id"].to_numpy()
        self.records = [_public(r) for r in variants.to_dict("records")]
        self._index = {int(v): k for k, v in enumerate(self.ids)}
        self.total = np.zeros((2, len(self.ids)))
        self.by_segment: dict[str, np.ndarray] = {}
        for row in serving.counts(dataset, item_id).itertuples():
            self.add(int(row.variant_id), row.segment, row.impressions, row.clicks)

    def add(self, variant_id: int, segment: str, shown: int, clicked: int) -> None:
        """Count impressions and clicks of a variant in a segment (a variant no longer live is ignored)."""
        k = self._index.get(variant_id)
        if k is None:
            return
        cell = self.by_segment.setdefault(segment, np.zeros((2, len(self.ids))))
        cell[:, k] += (shown, clicked)
        self.total[:, k] += (shown, clicked)

    def posterior(self, segment: str) -> tuple[np.ndarray, np.ndarray]:
        """Beta(alpha, beta) of each variant's CTR in a segment: its own counts on top of a prior worth up to
        PRIOR_IMPRESSIONS impressions at the variant's pooled rate, so a segment with little data borrows from
        the others and one with much data follows its own clicks."""
        shown, clicked = self.by_segment.get(segment, np.zeros((2, len(self.ids))))
        pooled_rate = (self.total[1] + 1) / (self.total[0] + 2)
        strength = np.minimum(self.total[0], PRIOR_IMPRESSIONS)
        return (1 + clicked + strength * pooled_rate, 1 + shown - clicked + strength * (1 - pooled_rate))


class Decider:
    """Thompson sampling over a dataset's items' live variants, per taste segment, from the logged events.

    An item's evidence is read from the store once, then kept current by `observe` with every write this
    process commits; `refresh` re-reads items older than `refresh_s` (picking up new live variants, imported
    logs and other servers' events). Both run right after a commit, on the thread that commits, so no commit is
    counted twice or missed.
    """

    def __init__(self, dataset: str, refresh_s: float = 30.0, seed: int | None = None) -> None:
        self.dataset, self.refresh_s = dataset, refresh_s
        self._rng = np.random.default_rng(seed)
        self._items: dict[str, _ItemState] = {}
        self._people = _Timed(self._load_people, 60.0)
        self._lock = threading.Lock()

    def _load_people(self) -> tuple[dict[str, str], set[str]]:
        table = segment_table(self.dataset)
        taste = table.set_index("user_id")["taste"].dropna().astype(str).to_dict()
        return taste, set(repository.items(self.dataset)["item_id"])

    def _segment(self, user_id: str) -> str:
        taste, _ = self._people.get()
        if user_id in taste:
            return taste[user_id]
        repository.get_user(self.dataset, user_id)  # UnknownUser unless the user arrived since the last load
        return EVERYONE

    def _item(self, item_id: str) -> _ItemState:
        state = self._items.get(item_id)
        if state is None:
            _, items = self._people.get()
            if item_id not in items:
                known_item(self.dataset, item_id)  # UnknownItem unless the item arrived since the last load
            with self._lock:
                state = self._items.setdefault(item_id, _ItemState(self.dataset, item_id))
        return state

    def decide(self, user_id: str, item_id: str) -> tuple[dict, dict]:
        """(the impression to log, the chosen variant) for a request; NoLiveVariants when there is nothing to show."""
        user_id, item_id = str(user_id).strip(), str(item_id).strip()
        segment = self._segment(user_id)
        state = self._item(item_id)
        if not len(state.ids):
            with self._lock:  # look again next time: variants may be made or kept meanwhile
                self._items.pop(item_id, None)
            raise NoLiveVariants(f"Item '{item_id}' has no live variants: make some with POST /v1/variants "
                                 "or keep some in the Studio")
        with self._lock:
            alpha, beta = state.posterior(segment)
            choice = int(np.argmax(self._rng.beta(alpha, beta)))
        variant = state.records[choice]
        impression = {"id": uuid.uuid4().hex, "dataset": self.dataset, "user_id": user_id, "item_id": item_id,
                      "variant_id": variant["variant_id"], "title": variant["title"], "body": variant["body"],
                      "cta": variant["cta"], "segment": segment, "source": "api", "shown_at": serving.now()}
        return impression, variant

    def observe(self, impressions: list[dict], clicks: list[serving.Clicked]) -> None:
        """Count committed impressions and first clicks of this dataset into the loaded items."""
        with self._lock:
            for row in impressions:
                state = self._items.get(row["item_id"]) if row["dataset"] == self.dataset else None
                if state is not None:
                    state.add(row["variant_id"], row["segment"], 1, 0)
            for click in clicks:
                state = self._items.get(click.item_id) if click.dataset == self.dataset else None
                if state is not None and click.variant_id is not None:
                    state.add(click.variant_id, click.segment, 0, 1)

    def refresh(self) -> None:
        """Re-read the items loaded longer ago than `refresh_s` from the store."""
        stale = [i for i, state in list(self._items.items()) if time.monotonic() - state.loaded_at > self.refresh_s]
        for item_id in stale:
            fresh = _ItemState(self.dataset, item_id)
            with self._lock:
                self._items[item_id] = fresh


class Serving:
    """One serving process's state: a decider per dataset, and the write that commits decisions and events
    and then counts them into the deciders (the API calls it from its group commit, one batch at a time)."""

    def __init__(self, default_dataset: str, refresh_s: float = 30.0, seed: int | None = None) -> None:
        self.default_dataset, self.refresh_s, self.seed = default_dataset, refresh_s, seed
        self._deciders: dict[str, Decider] = {}
        self._lock = threading.Lock()

    def decider(self, dataset: str | None = None) -> Decider:
        name = dataset or self.default_dataset
        if name not in self._deciders:
            repository.require_dataset(name)
            with self._lock:
                self._deciders.setdefault(name, Decider(name, self.refresh_s, self.seed))
        return self._deciders[name]

    def decide(self, user_id: str, item_id: str, dataset: str | None = None) -> tuple[dict, dict]:
        return self.decider(dataset).decide(user_id, item_id)

    def write(self, impressions: list[dict], events: list[Event]) -> list[str]:
        """Commit, then count; each event's outcome ("recorded", "duplicate", "unknown")."""
        outcomes, clicks = serving.apply(impressions, events)
        for decider in list(self._deciders.values()):
            decider.observe(impressions, clicks)
            decider.refresh()
        return outcomes


def impressions(dataset: str, source: str | None = None) -> pd.DataFrame:
    """Every real impression of a dataset (optionally of one source), oldest first, for export."""
    return serving.impressions(dataset, source)


def report(dataset: str, item_id: str | None = None, source: str | None = None,
           confidence: float = 0.95) -> pd.DataFrame:
    """Per creative and source: impressions, clicks, conversions, CTR and its Wilson interval."""
    if item_id is not None:
        item_id = known_item(dataset, item_id)
    frame = serving.report(dataset, item_id, source)
    if item_id is not None and source in (None, "api"):  # live variants not shown yet are in it, at zero
        live = serving.live_variants(dataset, item_id)
        unseen = live[~live["id"].isin(frame.loc[frame["source"] == "api", "variant_id"])]
        zeros = pd.DataFrame({"source": "api", "item_id": item_id, "variant_id": unseen["id"],
                              "title": unseen["title"], "body": unseen["body"], "cta": unseen["cta"],
                              "impressions": 0, "clicks": 0, "conversions": 0})
        frame = pd.concat([frame, zeros], ignore_index=True) if len(zeros) else frame
    low, high = wilson_interval(frame["clicks"].to_numpy(), frame["impressions"].to_numpy(), confidence)
    frame["ctr"] = np.where(frame["impressions"] > 0, frame["clicks"] / frame["impressions"].clip(lower=1), 0.0)
    return frame.assign(ctr_low=low, ctr_high=high)


__all__ = ["Decider", "Event", "NoLiveVariants", "NotFound", "Serving", "UnknownDataset", "UnknownItem", "UnknownUser",
           "banner_path", "impressions", "report", "variants_for"]
