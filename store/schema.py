"""Tables. Users and items are namespaced by dataset so the demo data and imports live side by side."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Dataset(Base):
    __tablename__ = "datasets"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    source: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime, server_default=func.now())


class User(Base):
    __tablename__ = "users"
    dataset: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    age: Mapped[int | None] = mapped_column(Integer)
    gender: Mapped[str | None] = mapped_column(String(16))
    occupation: Mapped[str | None] = mapped_column(String(64))
    zip_code: Mapped[str | None] = mapped_column(String(16))
    __table_args__ = (ForeignKeyConstraint(["dataset"], ["datasets.name"], ondelete="CASCADE"),)


class Item(Base):
    __tablename__ = "items"
    dataset: Mapped[str] = mapped_column(String(64), primary_key=True)
    item_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    title: Mapped[str] = mapped_column(String(500))
    description: Mapped[str | None] = mapped_column(Text)
    # categories joined by "|" (MovieLens genres), so an item can belong to several
    category: Mapped[str | None] = mapped_column(String(500))
    year: Mapped[int | None] = mapped_column(Integer)
    __table_args__ = (ForeignKeyConstraint(["dataset"], ["datasets.name"], ondelete="CASCADE"),)


class Interaction(Base):
    __tablename__ = "interactions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dataset: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[str] = mapped_column(String(128))
    item_id: Mapped[str] = mapped_column(String(128))
    timestamp: Mapped[int] = mapped_column(Integer)  # Unix seconds, UTC
    rating: Mapped[float | None] = mapped_column(Float)
    __table_args__ = (
        ForeignKeyConstraint(["dataset", "user_id"], ["users.dataset", "users.user_id"], ondelete="CASCADE"),
        ForeignKeyConstraint(["dataset", "item_id"], ["items.dataset", "items.item_id"], ondelete="CASCADE"),
        Index("ix_interactions_user", "dataset", "user_id", "timestamp"),
    )


class ItemEmbedding(Base):
    """Cached sentence embeddings of item texts, keyed by the embedding model."""

    __tablename__ = "item_embeddings"
    dataset: Mapped[str] = mapped_column(String(64), primary_key=True)
    item_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    model: Mapped[str] = mapped_column(String(300), primary_key=True)
    text_hash: Mapped[str] = mapped_column(String(64))
    vector: Mapped[bytes] = mapped_column(LargeBinary)
    __table_args__ = (
        ForeignKeyConstraint(["dataset", "item_id"], ["items.dataset", "items.item_id"], ondelete="CASCADE"),
    )


class Profile(Base):
    """A user's inferred profile, cached; `history_hash` tells when the history changed since."""

    __tablename__ = "profiles"
    dataset: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    model: Mapped[str] = mapped_column(String(300))
    history_hash: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict] = mapped_column(JSON)
    computed_at: Mapped[datetime] = mapped_column(DateTime, server_default=func.now())
    __table_args__ = (
        ForeignKeyConstraint(["dataset", "user_id"], ["users.dataset", "users.user_id"], ondelete="CASCADE"),
    )
