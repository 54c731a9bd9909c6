"""Engine and transactions. One engine per database URL per process, created with the schema."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

import settings
from store.schema import Base

_engines: dict[str, Engine] = {}
_lock = threading.Lock()


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    """Enforce foreign keys and let readers work while a writer commits. In WAL mode synchronous=NORMAL keeps
    every committed transaction through a killed process (only a power cut may lose the last few) and saves an
    fsync per commit, which the serving API's event log pays thousands of times a second."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def engine(url: str | None = None) -> Engine:
    """The engine for `url` (default: the configured DATABASE_URL), schema created on first use."""
    url = url or settings.load().database_url
    with _lock:
        if url not in _engines:
            try:
                _engines[url] = _open(url)
            except (SQLAlchemyError, ImportError, OSError) as exc:  # unknown scheme, missing driver, no access
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise settings.ConfigError(f"The database_url {settings.mask_password(url)} cannot be opened: "
                                           f"{reason}") from exc
        return _engines[url]


def _open(url: str) -> Engine:
    """Create the engine and the schema; any failure here is a configuration problem of the URL."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    eng = create_engine(url, future=True)
    if parsed.get_backend_name() == "sqlite":
        event.listen(eng, "connect", _sqlite_pragmas)
    Base.metadata.create_all(eng)
    _add_new_columns(eng)
    return eng


def _add_new_columns(eng: Engine) -> None:
    """Columns added to a table after a store was created (create_all makes only missing tables): a store made
    by an earlier version gains them, empty, instead of failing on its first read."""
    tables = inspect(eng)
    with eng.begin() as connection:
        for table in Base.metadata.sorted_tables:
            if not tables.has_table(table.name):
                continue
            present = {c["name"] for c in tables.get_columns(table.name)}
            for column in table.columns:
                if column.name not in present and column.nullable:
                    kind = column.type.compile(dialect=eng.dialect)
                    try:
                        with connection.begin_nested():
                            connection.execute(text(f'ALTER TABLE "{table.name}" ADD COLUMN "{column.name}" {kind}'))
                    except SQLAlchemyError:  # another process added it first
                        if column.name not in {c["name"] for c in inspect(connection).get_columns(table.name)}:
                            raise


@contextmanager
def transaction(url: str | None = None, lock: bool = False) -> Iterator[Session]:
    """A session whose writes commit together at the end, or not at all if anything fails.

    `lock`: the transaction writes what depends on what it read (a compare-and-set, a counter). PostgreSQL locks
    the rows it reads `with_for_update`; SQLite ignores FOR UPDATE and its driver starts a transaction only at the
    first write, so two sessions could both read the old value and both write. There the transaction takes the
    database's write lock before it reads (BEGIN IMMEDIATE; other writers wait up to the busy timeout).
    """
    session = sessionmaker(engine(url), expire_on_commit=False)()
    if lock and session.get_bind().dialect.name == "sqlite":
        session.connection().exec_driver_sql("BEGIN IMMEDIATE")
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def dispose_all() -> None:
    """Close every engine (tests switch databases between cases)."""
    with _lock:
        for eng in _engines.values():
            eng.dispose()
        _engines.clear()
