"""Schema migrations: bring a database to the schema this version of commhistory needs.

The Alembic scripts ship inside the package (``commhistory/store/migrations``);
these helpers build the Alembic configuration programmatically, so neither an
``alembic.ini`` nor the ``alembic`` command is needed (``commhistory init``
calls :func:`upgrade`).

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError

from commhistory.errors import SchemaError, StorageError
from commhistory.store._engine import connect, create_engine, driver_message

__all__ = [
    "current_revision",
    "downgrade_to_base",
    "head_revision",
    "known_revisions",
    "upgrade",
]

_PG_LOCK_KEY: Final = 0x636F6D6D68697374  # "commhist": pg_advisory_lock key for migrations


def _config(connection: sa.Connection | None = None) -> Config:
    cfg = Config()
    location = importlib.resources.files("commhistory.store").joinpath("migrations")
    cfg.set_main_option("script_location", str(location))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def known_revisions() -> frozenset[str]:
    """Return the ids of every migration shipped with this version."""
    return frozenset(s.revision for s in ScriptDirectory.from_config(_config()).walk_revisions())


def head_revision() -> str:
    """Return the revision id of the newest migration shipped with this version."""
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


@contextmanager
def _engine_for(url_or_engine: str | sa.Engine) -> Iterator[sa.Engine]:
    if isinstance(url_or_engine, sa.Engine):
        yield url_or_engine
        return
    engine = create_engine(url_or_engine)
    try:
        yield engine
    finally:
        engine.dispose()


def current_revision(url_or_engine: str | sa.Engine) -> str | None:
    """Return the database's schema revision (``None`` for an empty database).

    Args:
        url_or_engine: A database URL or an engine.

    Raises:
        DatabaseUnavailableError: The database cannot be reached (the message says
            which and why).
        StorageError: The revision cannot be read.
    """
    with _engine_for(url_or_engine) as engine, connect(engine) as conn:
        try:
            return MigrationContext.configure(conn).get_current_revision()
        except sa.exc.SQLAlchemyError as exc:
            raise StorageError(
                f"cannot read the schema revision: {type(exc).__name__}: {driver_message(exc)}"
            ) from exc


@contextmanager
def _migration_lock(conn: sa.Connection) -> Iterator[None]:
    """Serialize migrations between processes (SQLite serializes by its write lock)."""
    if conn.dialect.name != "postgresql":
        yield
        return
    conn.exec_driver_sql(f"SELECT pg_advisory_lock({_PG_LOCK_KEY})")
    conn.commit()
    try:
        yield
    finally:
        conn.exec_driver_sql(f"SELECT pg_advisory_unlock({_PG_LOCK_KEY})")
        conn.commit()


def upgrade(url_or_engine: str | sa.Engine, revision: str = "head") -> str:
    """Upgrade the database's schema (creating it in an empty database).

    Safe to call from several processes at once: on PostgreSQL an advisory lock
    serializes them, on SQLite the migration's write transaction does.

    Args:
        url_or_engine: A database URL or an engine.
        revision: The target revision (default: the newest).

    Returns:
        The database's revision afterwards.

    Raises:
        DatabaseUnavailableError: The database cannot be reached.
        SchemaError: The migration failed.
    """
    with _engine_for(url_or_engine) as engine:
        with connect(engine) as conn:
            try:
                with _migration_lock(conn):
                    command.upgrade(_config(conn), revision)
                    conn.commit()
                    rev = MigrationContext.configure(conn).get_current_revision()
            except (sa.exc.SQLAlchemyError, CommandError) as exc:
                raise SchemaError(
                    f"schema upgrade failed: {type(exc).__name__}: {driver_message(exc)}"
                ) from exc
        return rev or ""


def downgrade_to_base(url_or_engine: str | sa.Engine) -> None:
    """Drop every table the migrations created (all data is lost).

    Args:
        url_or_engine: A database URL or an engine.

    Raises:
        DatabaseUnavailableError: The database cannot be reached.
        SchemaError: The migration failed.
    """
    with _engine_for(url_or_engine) as engine, connect(engine) as conn:
        try:
            with _migration_lock(conn):
                command.downgrade(_config(conn), "base")
                conn.commit()
        except (sa.exc.SQLAlchemyError, CommandError) as exc:
            raise SchemaError(
                f"schema downgrade failed: {type(exc).__name__}: {driver_message(exc)}"
            ) from exc
