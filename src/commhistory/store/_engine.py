"""Engines configured for the store: SQLite pragmas and write locks, PostgreSQL via psycopg."""

from __future__ import annotations

from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy import event

from commhistory.errors import StorageError

__all__ = ["READ", "create_engine", "normalize_url"]

SQLITE_BUSY_TIMEOUT_MS: Final = 60_000
"""How long a SQLite writer waits for another process's write transaction."""

READ: Final = {"commhistory_read": True}
"""Execution options for read-only work: on SQLite, a deferred (shared) transaction."""


def normalize_url(url: str | sa.URL) -> sa.URL:
    """Parse a database URL; ``postgresql://`` and ``postgres://`` use psycopg 3.

    Raises:
        StorageError: The URL cannot be parsed or names another database.
    """
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise StorageError("the database URL cannot be parsed") from exc
    backend = parsed.get_backend_name()
    if backend in ("postgresql", "postgres"):
        if parsed.drivername in ("postgresql", "postgres"):
            parsed = parsed.set(drivername="postgresql+psycopg")
    elif backend != "sqlite":
        raise StorageError(
            f"unsupported database {backend!r}: use sqlite:///FILE or postgresql://..."
        )
    return parsed


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # Take over transaction control from the sqlite3 module (see _sqlite_begin).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        # Overwrite deleted content with zeros, whatever the build's default:
        # erasure clears masked addresses and wrapped keys, and their old bytes
        # must not linger in free pages.
        cursor.execute("PRAGMA secure_delete = ON")
    finally:
        cursor.close()


def _sqlite_begin(conn: sa.Connection) -> None:
    # Writers take the write lock up front (BEGIN IMMEDIATE), so two processes
    # never both read and then fail to upgrade to writing; busy_timeout makes
    # the second one wait. Reads use a deferred transaction.
    if conn.get_execution_options().get("commhistory_read"):
        conn.exec_driver_sql("BEGIN")
    else:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def create_engine(url: str | sa.URL, **kwargs: Any) -> sa.Engine:
    """Create an engine for the store.

    SQLite: WAL journal, ``synchronous=NORMAL``, a busy timeout, foreign keys on,
    ``secure_delete``, and ``BEGIN IMMEDIATE`` for write transactions. PostgreSQL: psycopg 3.

    Args:
        url: The database URL.
        **kwargs: Passed to :func:`sqlalchemy.create_engine`.

    Raises:
        StorageError: The URL is unusable or the driver is not installed.
    """
    parsed = normalize_url(url)
    try:
        engine = sa.create_engine(parsed, **kwargs)
    except (ImportError, sa.exc.ArgumentError) as exc:
        raise StorageError(
            f"cannot create a {parsed.get_backend_name()} engine: {type(exc).__name__}"
            " (for PostgreSQL install commhistory[postgres])"
        ) from exc
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
    return engine
