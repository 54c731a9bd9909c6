"""Reads and writes of the store, shared by the services, the CLI and the tests."""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pandas as pd
from sqlalchemy import delete, func, insert, select
from sqlalchemy.exc import IntegrityError

from store.db import engine, transaction
from store.schema import (
    Base,
    Dataset,
    Interaction,
    Item,
    ItemEmbedding,
    Profile,
    ServedImpression,
    SimulatedImpression,
    User,
    Variant,
)


class UnknownUser(LookupError):
    """The user id is not in the dataset."""


class UnknownDataset(LookupError):
    """No dataset of that name has been loaded."""


class DatasetExists(ValueError):
    """A dataset of that name is already loaded and replacing it was not asked for."""


def natural_key(ids: pd.Series) -> pd.Series:
    """Sort key that puts "2" before "10" when ids are numbers, and sorts text ids as text."""
    numeric = pd.to_numeric(ids, errors="coerce")
    return numeric.fillna(np.inf) if numeric.notna().all() else ids.astype(str)


def dataset_names() -> list[str]:
    with transaction() as s:
        return list(s.scalars(select(Dataset.name).order_by(Dataset.created_at, Dataset.name)))


def dataset_summary() -> pd.DataFrame:
    """One row per dataset with its size, for the dashboard and the CLI."""
    with transaction() as s:
        rows = []
        for ds in s.scalars(select(Dataset).order_by(Dataset.created_at)):
            counts = {m.__tablename__: s.scalar(select(func.count()).select_from(m).where(m.dataset == ds.name))
                      for m in (User, Item, Interaction)}
            rows.append({"dataset": ds.name, "source": ds.source, **counts})
    return pd.DataFrame(rows, columns=["dataset", "source", "users", "items", "interactions"])


def dataset_version(dataset: str) -> tuple:
    """Identifies one loaded state of a dataset (database, load time, sizes): the key for in-process caches
    of things built from it, so a replaced dataset is never served from a stale cache."""
    with transaction() as s:
        row = s.get(Dataset, dataset)
        if row is None:
            return (str(engine().url), dataset)
        sizes = tuple(s.scalar(select(func.count()).select_from(m).where(m.dataset == dataset))
                      for m in (User, Item, Interaction))
        return (str(engine().url), dataset, str(row.created_at), *sizes)


def require_dataset(dataset: str) -> None:
    with transaction() as s:
        if s.get(Dataset, dataset) is None:
            known = ", ".join(dataset_names()) or "none loaded"
            raise UnknownDataset(f"Unknown dataset '{dataset}' (known: {known})")


def write_dataset(name: str, source: str, users: pd.DataFrame, items: pd.DataFrame,
                  interactions: pd.DataFrame, replace: bool = False) -> None:
    """Write a whole dataset in one transaction: either all of it lands or nothing changes."""
    taken = DatasetExists(f"Dataset '{name}' already exists; choose another name or replace it")
    with transaction(lock=True) as s:  # a replace holds the old row until it commits; a second replace waits
        existing = s.get(Dataset, name, with_for_update=True)
        if existing is not None and not replace:
            raise taken
        if existing is not None:
            for model in (ServedImpression, SimulatedImpression, Variant, Profile, ItemEmbedding, Interaction, Item,
                          User):
                s.execute(delete(model).where(model.dataset == name))
            s.delete(existing)
            s.flush()
        s.add(Dataset(name=name, source=source))
        try:
            s.flush()
        except IntegrityError as exc:  # another import of this name committed after our read (PostgreSQL)
            raise taken from exc
        for model, frame in ((User, users), (Item, items), (Interaction, interactions)):
            records = frame.assign(dataset=name).astype(object)
            records = records.where(records.notna(), None)
            if len(records):
                s.execute(insert(model), records.to_dict("records"))


def list_users(dataset: str, query: str = "", limit: int | None = None) -> pd.DataFrame:
    """Users with their demographics and history length; `query` matches id, occupation or gender."""
    stmt = (
        select(User.user_id, User.age, User.gender, User.occupation,
               func.count(Interaction.id).label("interactions"))
        .join(Interaction, (Interaction.dataset == User.dataset) & (Interaction.user_id == User.user_id),
              isouter=True)
        .where(User.dataset == dataset)
        .group_by(User.user_id, User.age, User.gender, User.occupation)
    )
    if query:  # LIKE's wildcards are escaped: a search for '%' or '_' finds those characters, not every user
        like = "%" + re.sub(r"([\\%_])", r"\\\1", query.strip()) + "%"
        stmt = stmt.where(User.user_id.like(like, escape="\\") | User.occupation.like(like, escape="\\")
                          | (User.gender == query.strip()))
    frame = pd.read_sql(stmt, engine())
    frame = frame.sort_values("user_id", key=natural_key).reset_index(drop=True)
    return frame.head(limit) if limit else frame


def get_user(dataset: str, user_id: str) -> dict:
    require_dataset(dataset)
    with transaction() as s:
        user = s.get(User, (dataset, str(user_id)))
        if user is None:
            raise UnknownUser(f"Unknown user '{user_id}' in dataset '{dataset}'")
        return {"user_id": user.user_id, "age": user.age, "gender": user.gender,
                "occupation": user.occupation, "zip_code": user.zip_code}


def history(dataset: str, user_id: str) -> pd.DataFrame:
    """The user's interactions joined with item facts, oldest first."""
    get_user(dataset, user_id)
    stmt = (
        select(Interaction.item_id, Item.title, Item.category, Item.year, Item.description,
               Interaction.rating, Interaction.timestamp)
        .join(Item, (Item.dataset == Interaction.dataset) & (Item.item_id == Interaction.item_id))
        .where(Interaction.dataset == dataset, Interaction.user_id == str(user_id))
        .order_by(Interaction.timestamp, Interaction.id)
    )
    return pd.read_sql(stmt, engine())


def catalog(dataset: str) -> pd.DataFrame:
    """The dataset's items indexed by item id (for pickers and lookups by id)."""
    return items(dataset).set_index("item_id", drop=False)


def items(dataset: str) -> pd.DataFrame:
    require_dataset(dataset)
    stmt = select(Item.item_id, Item.title, Item.category, Item.year, Item.description, Item.image).where(
        Item.dataset == dataset)
    return pd.read_sql(stmt, engine())


def interactions(dataset: str) -> pd.DataFrame:
    require_dataset(dataset)
    stmt = (select(Interaction.user_id, Interaction.item_id, Interaction.rating, Interaction.timestamp)
            .where(Interaction.dataset == dataset).order_by(Interaction.id))
    return pd.read_sql(stmt, engine())


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def cached_embeddings(dataset: str, model: str) -> dict[str, tuple[str, np.ndarray]]:
    """item_id -> (hash of the embedded text, vector) for every cached item embedding."""
    with transaction() as s:
        rows = s.execute(select(ItemEmbedding.item_id, ItemEmbedding.text_hash, ItemEmbedding.vector)
                         .where(ItemEmbedding.dataset == dataset, ItemEmbedding.model == model))
        return {r.item_id: (r.text_hash, np.frombuffer(r.vector, dtype=np.float32)) for r in rows}


def save_embeddings(dataset: str, model: str, rows: list[tuple[str, str, np.ndarray]]) -> None:
    """Store (item_id, text hash, vector) rows, replacing older vectors of the same items."""
    with transaction() as s:
        ids = [r[0] for r in rows]
        for start in range(0, len(ids), 500):
            s.execute(delete(ItemEmbedding).where(
                ItemEmbedding.dataset == dataset, ItemEmbedding.model == model,
                ItemEmbedding.item_id.in_(ids[start:start + 500])))
        if rows:
            s.execute(insert(ItemEmbedding), [
                {"dataset": dataset, "item_id": i, "model": model, "text_hash": h,
                 "vector": np.asarray(v, dtype=np.float32).tobytes()} for i, h, v in rows])


def load_profile(dataset: str, user_id: str) -> tuple[dict, str] | None:
    """The cached profile payload and the history hash it was computed from, if any."""
    with transaction() as s:
        row = s.get(Profile, (dataset, str(user_id)))
        return (row.payload, row.history_hash) if row else None


def save_profile(dataset: str, user_id: str, model: str, history_hash: str, payload: dict) -> None:
    with transaction() as s:
        row = s.get(Profile, (dataset, str(user_id)))
        if row is None:
            s.add(Profile(dataset=dataset, user_id=str(user_id), model=model,
                          history_hash=history_hash, payload=payload))
        else:
            row.model, row.history_hash, row.payload = model, history_hash, payload
            row.computed_at = func.now()


def table_counts() -> dict[str, int]:
    """Row count of every table in the schema: tests compare it before and after a refused input."""
    with transaction() as s:
        return {t.name: s.scalar(select(func.count()).select_from(t)) for t in Base.metadata.sorted_tables}


def save_variants(rows: list[dict]) -> list[int]:
    """Store generated variants in one transaction; returns their ids in order."""
    with transaction() as s:
        objects = [Variant(**row) for row in rows]
        s.add_all(objects)
        s.flush()
        return [o.id for o in objects]


def batch_stored(batch: str) -> bool:
    """Whether any variant of a generation batch is in the store (a batch is written in one transaction)."""
    with transaction() as s:
        return s.scalar(select(Variant.id).where(Variant.batch == batch).limit(1)) is not None


def stored_batches(prefix: str) -> set[str]:
    """The generation batches whose key starts with `prefix` that have variants in the store: a segment job's
    finished batches (each is written in one transaction), in one query."""
    with transaction() as s:
        return set(s.scalars(select(Variant.batch).where(Variant.batch.startswith(prefix, autoescape=True))
                             .distinct()))


def variants(dataset: str, batch: str | None = None, kept: bool | None = None,
             batch_prefix: str | None = None) -> pd.DataFrame:
    """Stored variants of a dataset in id order; of one batch, or of the batches a key prefix names (a job's)."""
    stmt = select(Variant).where(Variant.dataset == dataset)
    if batch is not None:
        stmt = stmt.where(Variant.batch == batch)
    if batch_prefix is not None:
        stmt = stmt.where(Variant.batch.startswith(batch_prefix, autoescape=True))
    if kept is not None:
        stmt = stmt.where(Variant.kept == kept)
    with transaction() as s:
        rows = [{c.name: getattr(v, c.name) for c in Variant.__table__.columns}
                for v in s.scalars(stmt.order_by(Variant.id))]
    return pd.DataFrame(rows, columns=[c.name for c in Variant.__table__.columns])


def variant(variant_id: int) -> dict | None:
    """One stored variant, every column; None when there is no such variant."""
    with transaction() as s:
        found = s.get(Variant, int(variant_id))
        return None if found is None else {c.name: getattr(found, c.name) for c in Variant.__table__.columns}


def set_kept(variant_ids: list[int], kept: bool) -> None:
    with transaction() as s:
        for variant in s.scalars(select(Variant).where(Variant.id.in_(variant_ids))):
            variant.kept = kept


def passed(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of a variants frame whose Studio checks passed (an empty frame keeps its columns)."""
    mask = frame["safety"].map(lambda s: (s or {}).get("status") == "passed").astype(bool)
    return frame.loc[mask].reset_index(drop=True)


def variants_for(dataset: str, user_id: str, item_id: str, adapter: str | None) -> pd.DataFrame:
    """The stored variants of an item written for one user by one adapter (None: the base model)."""
    stmt = select(Variant.id, Variant.title, Variant.body, Variant.cta, Variant.score, Variant.banners,
                  Variant.safety, Variant.kept).where(Variant.dataset == dataset, Variant.user_id == str(user_id),
                                        Variant.item_id == item_id)
    stmt = stmt.where(Variant.adapter.is_(None) if adapter is None else Variant.adapter == adapter)
    return pd.read_sql(stmt.order_by(Variant.id), engine())


def variant_banners(variant_id: int) -> dict | None:
    """A stored variant's banner paths by size ({} when it has none); None when there is no such variant."""
    with transaction() as s:
        row = s.get(Variant, int(variant_id))
        return None if row is None else dict(row.banners or {})
