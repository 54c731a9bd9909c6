"""Real impressions and their events: what the serving API decided and what imported campaign logs hold.

Writes come in batches (`apply`): the API commits every decision and event that arrived while the previous
commit ran in one transaction, and answers each caller only after that commit, so an acknowledged event is
on disk even if the server is killed a moment later.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import pandas as pd
from sqlalchemy import and_, case, func, insert, select, update

from store.db import engine, transaction
from store.repository import passed
from store.schema import ServedImpression, Variant

EVENTS = {"click": "clicked_at", "conversion": "converted_at"}
IMPRESSION_COLUMNS = ["id", "dataset", "user_id", "item_id", "variant_id", "title", "body", "cta", "segment",
                      "source", "shown_at", "clicked_at", "converted_at"]


@dataclass(frozen=True)
class Event:
    """A click or conversion reported for an impression id."""

    impression_id: str
    event: str  # a key of EVENTS


def now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def apply(impressions: Sequence[dict], events: Sequence[Event]) -> list[str]:
    """Insert the impressions, then record the events, in one transaction.

    Returns each event's outcome in order: "recorded" (first time), "duplicate" (already recorded: nothing
    changes, so retries are safe) or "unknown" (no such impression). An event for an impression in the same
    batch is recorded, since the impressions are inserted first.
    """
    outcomes = []
    with transaction() as s:
        if impressions:
            s.execute(insert(ServedImpression), [{"clicked_at": None, "converted_at": None, **row}
                                                 for row in impressions])
        for ev in events:
            column = getattr(ServedImpression, EVENTS[ev.event])
            changed = s.execute(update(ServedImpression)
                                .where(ServedImpression.id == ev.impression_id, column.is_(None))
                                .values({EVENTS[ev.event]: now()})).rowcount
            if changed:
                outcomes.append("recorded")
            else:
                exists = s.scalar(select(ServedImpression.id).where(ServedImpression.id == ev.impression_id))
                outcomes.append("duplicate" if exists else "unknown")
    return outcomes


def counts(dataset: str, item_id: str) -> pd.DataFrame:
    """Impressions and clicks of every (variant, segment) the API served for an item: the bandit's evidence."""
    stmt = (select(ServedImpression.variant_id, ServedImpression.segment,
                   func.count().label("impressions"), func.count(ServedImpression.clicked_at).label("clicks"))
            .where(ServedImpression.dataset == dataset, ServedImpression.item_id == item_id,
                   ServedImpression.variant_id.is_not(None))
            .group_by(ServedImpression.variant_id, ServedImpression.segment))
    return pd.read_sql(stmt, engine())


def report(dataset: str, item_id: str | None = None, source: str | None = None) -> pd.DataFrame:
    """Impressions, clicks and conversions per creative (variant id, or the text of an imported one) and
    source, optionally of one item or one source."""
    keys = [ServedImpression.source, ServedImpression.item_id, ServedImpression.variant_id, ServedImpression.title,
            ServedImpression.body, ServedImpression.cta]
    stmt = (select(*keys, func.count().label("impressions"), func.count(ServedImpression.clicked_at).label("clicks"),
                   func.count(ServedImpression.converted_at).label("conversions"))
            .where(ServedImpression.dataset == dataset).group_by(*keys).order_by(*keys[:3]))
    if item_id is not None:
        stmt = stmt.where(ServedImpression.item_id == item_id)
    if source is not None:
        stmt = stmt.where(ServedImpression.source == source)
    return pd.read_sql(stmt, engine())


def impressions(dataset: str, source: str | None = None) -> pd.DataFrame:
    """Every real impression of a dataset (optionally of one source), oldest first, with `clicked` as 0/1."""
    stmt = select(*(getattr(ServedImpression, c) for c in IMPRESSION_COLUMNS),
                  case((ServedImpression.clicked_at.is_not(None), 1), else_=0).label("clicked")
                  ).where(ServedImpression.dataset == dataset)
    if source is not None:
        stmt = stmt.where(ServedImpression.source == source)
    return pd.read_sql(stmt.order_by(ServedImpression.shown_at, ServedImpression.id), engine())


def sources(dataset: str) -> list[str]:
    """The sources that logged real impressions in a dataset ("api", "import:<name>"...)."""
    with transaction() as s:
        return list(s.scalars(select(ServedImpression.source).where(ServedImpression.dataset == dataset)
                              .distinct().order_by(ServedImpression.source)))


def existing_ids(ids: Sequence[str]) -> set[str]:
    """Which of these impression ids are already stored (an import must not overwrite a logged impression)."""
    found: set[str] = set()
    with transaction() as s:
        for start in range(0, len(ids), 500):
            found |= set(s.scalars(select(ServedImpression.id).where(ServedImpression.id.in_(ids[start:start + 500]))))
    return found


def import_log(rows: Sequence[dict]) -> int:
    """Write an imported campaign log (complete rows) in one transaction: all of it lands or none."""
    with transaction() as s:
        if rows:
            s.execute(insert(ServedImpression), list(rows))
    return len(rows)


def live_variants(dataset: str, item_id: str) -> pd.DataFrame:
    """The variants an item's decisions choose among: kept ones that passed the Studio's checks (variants made
    through the API are kept when made), best predicted CTR first."""
    stmt = (select(Variant.id, Variant.title, Variant.body, Variant.cta, Variant.score, Variant.banners,
                   Variant.safety)
            .where(and_(Variant.dataset == dataset, Variant.item_id == item_id, Variant.kept.is_(True)))
            .order_by(Variant.score.desc(), Variant.id))
    return passed(pd.read_sql(stmt, engine())).drop(columns=["safety"])
