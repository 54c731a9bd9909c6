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


@dataclass(frozen=True)
class Clicked:
    """A first click just recorded, with what the bandit counts it under."""

    dataset: str
    item_id: str
    variant_id: int | None
    segment: str


def apply(impressions: Sequence[dict], events: Sequence[Event]) -> tuple[list[str], list[Clicked]]:
    """Insert the impressions, then record the events, in one transaction.

    Returns each event's outcome in order, "recorded" (first time), "duplicate" (already recorded: nothing
    changes, so retries are safe) or "unknown" (no such impression), and the clicks recorded. An event for an
    impression of the same batch is recorded, since the impressions are inserted first. A batch costs a few
    statements whatever its size (one insert, one update and one lookup per event kind).
    """
    table = ServedImpression.__table__
    outcomes: dict[int, str] = {}
    clicks: list[Clicked] = []
    with engine().begin() as connection:  # Core statements: the ORM's bookkeeping would double each write's cost
        if impressions:
            connection.execute(insert(table), [{"clicked_at": None, "converted_at": None, **row}
                                               for row in impressions])
        for kind, column_name in EVENTS.items():
            wanted = [(n, ev.impression_id) for n, ev in enumerate(events) if ev.event == kind]
            ids = sorted({i for _, i in wanted})
            recorded, known = {}, set()
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                column = table.c[column_name]
                for row in connection.execute(update(table).where(table.c.id.in_(chunk), column.is_(None))
                                              .values({column: now()})
                                              .returning(table.c.id, table.c.dataset, table.c.item_id,
                                                         table.c.variant_id, table.c.segment)):
                    recorded[row.id] = Clicked(row.dataset, row.item_id, row.variant_id, row.segment)
                known |= set(connection.execute(select(table.c.id).where(table.c.id.in_(chunk))).scalars())
            for n, impression_id in wanted:  # the first report of an id records it; a repeat is a duplicate
                if impression_id in recorded:
                    outcomes[n] = "recorded"
                    if kind == "click":
                        clicks.append(recorded[impression_id])
                    del recorded[impression_id]
                else:
                    outcomes[n] = "duplicate" if impression_id in known else "unknown"
    return [outcomes[n] for n in range(len(events))], clicks


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
