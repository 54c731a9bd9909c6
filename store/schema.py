"""Tables. Users and items are namespaced by dataset so the demo data and imports live side by side."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    Boolean,
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
    image: Mapped[str | None] = mapped_column(String(1000))  # absolute path of the item's own picture, if any
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


class Variant(Base):
    """A generated ad variant with everything needed to reproduce and audit it."""

    __tablename__ = "variants"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    batch: Mapped[str] = mapped_column(String(64), index=True)  # one generation request
    dataset: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[str | None] = mapped_column(String(128))  # None for a segment-level variant
    segment: Mapped[str | None] = mapped_column(String(200))
    item_id: Mapped[str] = mapped_column(String(128))
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(String(600))
    cta: Mapped[str] = mapped_column(String(60))
    angle: Mapped[str] = mapped_column(String(200))
    hook: Mapped[dict | None] = mapped_column(JSON)  # the user's liked item its headline names (`taste.hooks`)
    model: Mapped[str] = mapped_column(String(300))
    adapter: Mapped[str | None] = mapped_column(String(300))
    prompt: Mapped[str] = mapped_column(Text)
    seed: Mapped[int] = mapped_column(Integer)
    profile_version: Mapped[str] = mapped_column(String(64))
    safety: Mapped[dict] = mapped_column(JSON)
    score: Mapped[float | None] = mapped_column(Float)
    candidates: Mapped[int | None] = mapped_column(Integer)  # samples drawn for this variant's slot (reranked)
    brief: Mapped[dict | None] = mapped_column(JSON)
    banners: Mapped[dict | None] = mapped_column(JSON)
    kept: Mapped[bool] = mapped_column(default=False)
    edited_from: Mapped[int | None] = mapped_column(Integer)  # the variant this one edits by hand (None: as written)
    created_at: Mapped[datetime] = mapped_column(DateTime, server_default=func.now())
    __table_args__ = (
        ForeignKeyConstraint(["dataset", "item_id"], ["items.dataset", "items.item_id"], ondelete="CASCADE"),
        Index("ix_variants_user", "dataset", "user_id", "item_id"),
    )


class SimulatedImpression(Base):
    __tablename__ = "impressions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dataset: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[str] = mapped_column(String(128))
    item_id: Mapped[str] = mapped_column(String(128))
    variant_id: Mapped[str] = mapped_column(String(64))  # hash of the creative's text
    variant_text: Mapped[str] = mapped_column(Text)
    position: Mapped[int] = mapped_column(Integer)
    seen: Mapped[int] = mapped_column(Integer)  # times the user had seen this creative before
    probability: Mapped[float] = mapped_column(Float)
    click: Mapped[bool] = mapped_column(Boolean)
    audience: Mapped[str] = mapped_column(String(16))  # "train" or "judge"
    shown_at: Mapped[datetime] = mapped_column(DateTime)
    __table_args__ = (
        ForeignKeyConstraint(["dataset", "user_id"], ["users.dataset", "users.user_id"], ondelete="CASCADE"),
        ForeignKeyConstraint(["dataset", "item_id"], ["items.dataset", "items.item_id"], ondelete="CASCADE"),
        Index("ix_impressions_user", "dataset", "audience", "user_id"),
    )


class ServedImpression(Base):
    """A creative shown for real: decided by the serving API, or a row of an imported campaign log.

    Events (click, conversion) set their timestamp once; a repeated event changes nothing, so an ad server may
    retry. `variant_id` names the stored variant the API served; an imported row carries only the text.
    """

    __tablename__ = "served_impressions"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # the impression id given to the caller
    dataset: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[str] = mapped_column(String(128))
    item_id: Mapped[str] = mapped_column(String(128))
    variant_id: Mapped[int | None] = mapped_column(Integer)
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(String(600))
    cta: Mapped[str] = mapped_column(String(60))
    segment: Mapped[str] = mapped_column(String(200))  # the user's taste segment when it was shown
    source: Mapped[str] = mapped_column(String(100))  # "api", or "import:<campaign name>"
    shown_at: Mapped[datetime] = mapped_column(DateTime)
    clicked_at: Mapped[datetime | None] = mapped_column(DateTime)
    converted_at: Mapped[datetime | None] = mapped_column(DateTime)
    __table_args__ = (
        ForeignKeyConstraint(["dataset", "item_id"], ["items.dataset", "items.item_id"], ondelete="CASCADE"),
        ForeignKeyConstraint(["variant_id"], ["variants.id"], ondelete="SET NULL"),
        Index("ix_served_item", "dataset", "item_id", "source"),
    )


class Run(Base):
    """A reward-tuning run: its config, lifecycle status and where its files are (one worker process per run)."""

    __tablename__ = "runs"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    method: Mapped[str] = mapped_column(String(16))  # grpo | rloo | dpo
    dataset: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), index=True)  # queued|running|finished|failed|cancelled
    config: Mapped[dict] = mapped_column(JSON)
    folder: Mapped[str] = mapped_column(String(500))
    log_path: Mapped[str] = mapped_column(String(500))
    pid: Mapped[int | None] = mapped_column(Integer)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    global_step: Mapped[int] = mapped_column(Integer, default=0)
    max_steps: Mapped[int] = mapped_column(Integer, default=0)
    adapter_path: Mapped[str | None] = mapped_column(String(500))
    error: Mapped[str | None] = mapped_column(Text)
    evaluation: Mapped[dict | None] = mapped_column(JSON)
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # worker starts: 1 + resumes
    created_at: Mapped[datetime] = mapped_column(DateTime, server_default=func.now())
    started_at: Mapped[datetime | None] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)


class RunMetric(Base):
    """One logged training step of a run (loss, reward, KL, ...), as the trainer reported it."""

    __tablename__ = "run_metrics"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(32))
    step: Mapped[int] = mapped_column(Integer)
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    values: Mapped[dict] = mapped_column(JSON)
    logged_at: Mapped[datetime] = mapped_column(DateTime, server_default=func.now())
    __table_args__ = (
        ForeignKeyConstraint(["run_id"], ["runs.id"], ondelete="CASCADE"),
        Index("ix_run_metrics_run", "run_id", "step"),
    )
