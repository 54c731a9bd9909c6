"""Simulated impressions: which creative a simulated user saw, where, how likely a click was and whether it came.

The table (`store.schema.SimulatedImpression`) is created with the rest of the schema.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import pandas as pd
from sqlalchemy import insert, select

from store.db import engine, transaction
from store.schema import SimulatedImpression

COLUMNS = ["dataset", "user_id", "item_id", "variant_id", "variant_text", "position", "seen", "probability",
           "click", "audience", "shown_at"]


def write_impressions(rows: Sequence[dict]) -> int:
    """Write a batch of impressions (dicts with COLUMNS; `shown_at` defaults to now) in one transaction."""
    now = datetime.now(UTC).replace(tzinfo=None)
    records = [{**{k: row.get(k) for k in COLUMNS}, "shown_at": row.get("shown_at") or now} for row in rows]
    if not records:
        return 0
    with transaction() as s:
        s.execute(insert(SimulatedImpression), records)
    return len(records)


def read_impressions(dataset: str, audience: str | None = None, user_id: str | None = None) -> pd.DataFrame:
    """Logged impressions of a dataset, oldest first, optionally of one audience or user."""
    stmt = select(*(getattr(SimulatedImpression, c) for c in COLUMNS)).where(SimulatedImpression.dataset == dataset)
    if audience is not None:
        stmt = stmt.where(SimulatedImpression.audience == audience)
    if user_id is not None:
        stmt = stmt.where(SimulatedImpression.user_id == str(user_id))
    return pd.read_sql(stmt.order_by(SimulatedImpression.id), engine())
