"""Engines configured for the store: SQLite pragmas and write locks, PostgreSQL via psycopg."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy import event

from commhistory.errors import DatabaseNotFoundError, DatabaseUnavailableError, StorageError

__all__ = [
    "READ",
    "connect",
    "create_engine",
    "describe_target",
    "driver_message",
    "normalize_url",
    "require_existing",
    "sqlite_file",
    "unavailable",
]

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


# -- errors that say why -----------------------------------------------------------------


def sqlite_file(url: sa.URL) -> str | None:
    """The SQLite database file a URL names; ``None`` for another backend or in memory."""
    if url.get_backend_name() != "sqlite":
        return None
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        return None
    return database


def describe_target(url: sa.URL) -> str:
    """What a URL opens, for messages: never a user name or password."""
    path = sqlite_file(url)
    if url.get_backend_name() == "sqlite":
        return f"SQLite file {path!r}" if path is not None else "the in-memory SQLite database"
    where = f"{url.host or 'localhost'}:{url.port or 5432}"
    return f"PostgreSQL database {url.database or '(default)'!r} at {where}"


def driver_message(exc: BaseException, url: sa.URL | None = None) -> str:
    """The driver's own message, on one line, with the URL's credentials removed."""
    orig = getattr(exc, "orig", None) or exc
    text = " ".join(str(orig).split())
    if url is not None:
        for secret in (url.password, url.username):
            if secret:
                text = text.replace(str(secret), "***")
    return text[:300]


_PG_REASONS: Final = (
    (
        re.compile(r"database \S+ does not exist"),
        "the database does not exist on that server; "
        "create it (createdb NAME) or fix the name in the URL",
    ),
    (
        re.compile(r"Connection refused|No such file or directory"),
        "nothing is listening there; "
        "is the PostgreSQL server running, and are the host and port right?",
    ),
    (
        re.compile(
            r"could not translate host name|Name or service not known|nodename nor servname"
        ),
        "the host name cannot be resolved; check the host in the URL",
    ),
    (
        re.compile(r"password authentication failed|authentication failed|no password supplied"),
        "the server refused the user name or password; check the credentials",
    ),
    (
        re.compile(r"no pg_hba.conf entry"),
        "the server does not accept this user or host (pg_hba.conf); ask its administrator",
    ),
    (re.compile(r"role \S+ does not exist"), "that user does not exist on the server"),
    (
        re.compile(r"timeout|timed out", re.I),
        "the server did not answer in time; check the host, port and firewall",
    ),
)


def unavailable(url: sa.URL, exc: BaseException) -> DatabaseUnavailableError:
    """Translate a failure to connect into an error naming what failed and why."""
    target = describe_target(url)
    detail = driver_message(exc, url)
    path = sqlite_file(url)
    if url.get_backend_name() == "sqlite":
        if path is not None:
            folder = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(folder):
                return DatabaseUnavailableError(
                    target=target,
                    reason=f"the folder {folder!r} does not exist; "
                    "create it or fix the database URL (--db)",
                    detail=detail,
                )
            if "readonly" in detail or not os.access(folder, os.W_OK):
                return DatabaseUnavailableError(
                    target=target,
                    reason="permission denied: the file or its folder is not writable "
                    "by this user",
                    detail=detail,
                )
            if os.path.exists(path) and not os.access(path, os.R_OK | os.W_OK):
                return DatabaseUnavailableError(
                    target=target,
                    reason="permission denied: this user cannot read and write the file",
                    detail=detail,
                )
        return DatabaseUnavailableError(
            target=target, reason="SQLite cannot open it", detail=detail
        )
    for pattern, reason in _PG_REASONS:
        if pattern.search(detail):
            missing = pattern is _PG_REASONS[0][0]
            cls = DatabaseNotFoundError if missing else DatabaseUnavailableError
            return cls(target=target, reason=reason, detail=detail)
    return DatabaseUnavailableError(
        target=target, reason="the server cannot be reached", detail=detail
    )


def require_existing(url: str | sa.URL) -> None:
    """Refuse a SQLite URL whose file does not exist, before anything creates it.

    Raises:
        DatabaseNotFoundError: The file is missing (the message names it and the fix).
    """
    parsed = normalize_url(url)
    path = sqlite_file(parsed)
    if path is not None and not os.path.exists(path):
        folder = os.path.dirname(os.path.abspath(path))
        hint = "" if os.path.isdir(folder) else f" (nor does its folder {folder!r})"
        raise DatabaseNotFoundError(
            target=describe_target(parsed),
            reason=f"the file does not exist{hint}; check --db (or $COMMHISTORY_DB), "
            "or create the database with `commhistory init`",
        )


@contextmanager
def connect(engine: sa.Engine) -> Iterator[sa.Connection]:
    """Connect, translating a failure into :class:`DatabaseUnavailableError`."""
    try:
        conn = engine.connect()
    except sa.exc.DBAPIError as exc:
        raise unavailable(engine.url, exc) from exc
    with conn:
        yield conn
