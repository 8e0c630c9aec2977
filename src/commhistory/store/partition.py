"""Monthly partitions of ``messages`` and ``events`` on PostgreSQL (opt-in).

A history of years is easier to keep on PostgreSQL when ``messages`` is
range-partitioned by ``sent_at`` and ``events`` by ``occurred_at``, one
partition a month (native declarative partitioning): the hot month's indexes
stay in memory, vacuum works a month at a time, a ``since``/``until`` window
reads only its months, and retention drops a whole month's partition instead of
deleting its rows one by one. See ``docs/scaling.md`` ("Monthly partitions").

**Idempotency across partitions.** PostgreSQL requires every unique constraint
of a partitioned table to include the partition key, so the partitioned tables'
primary keys are ``(message_id, sent_at)`` and ``(event_id, occurred_at)``, and
the ``(provider, provider_*_id)`` keys are plain indexes. The global keys live
in two small unpartitioned tables, ``message_keys`` and ``event_keys`` (id,
provider pair, timestamp), which carry the unique constraints the unpartitioned
tables had. A ``BEFORE INSERT`` trigger on each partitioned table claims the
row's keys there (``INSERT ... ON CONFLICT DO NOTHING``) and skips the row when
another row holds one of them, as ``ON CONFLICT DO NOTHING`` skips it on an
unpartitioned table: concurrent writers of one key wait for each other on the
key table's unique index, and whichever commits first keeps the row. An
``AFTER DELETE`` trigger releases the keys of a deleted row; a ``BEFORE UPDATE``
trigger refuses to change a key or the timestamp (nothing in commhistory does).
The trigger functions come with migration 0012.

**Opt-in.** :func:`enable` converts an unpartitioned database in one
transaction (tables locked, rows copied into the partitions, keys copied into
the key tables); the ``commhistory partitions enable`` command runs it.
:func:`ensure_partitions` creates the coming months' partitions (and a
``DEFAULT`` partition is always there, so no insert ever fails for want of a
partition); :func:`delete_before` is what retention runs. SQLite has no
partitions: these functions refuse it, and an unpartitioned PostgreSQL database
works as before.

.. versionadded:: 0.4.0
"""

# SQL text here is built only from schema identifiers, partition names made
# here from integers, and integers; values are bound as parameters.
# ruff: noqa: S608

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Final

import attrs
import sqlalchemy as sa

from commhistory.errors import InvalidInputError, StorageError
from commhistory.normalize.time import to_micros
from commhistory.store._engine import connect, create_engine, require_existing

__all__ = [
    "PARTITIONED_TABLES",
    "PartitionReport",
    "check_ahead",
    "delete_before",
    "enable",
    "ensure_partitions",
    "is_partitioned",
    "maintain",
    "partitions",
    "status",
]


@attrs.frozen
class _Spec:
    table: str
    column: str  # the partition key
    id_column: str
    pair: tuple[str, str]
    keys: str  # the key table


_SPECS: Final = (
    _Spec(
        "messages", "sent_at", "message_id", ("provider", "provider_message_id"), "message_keys"
    ),
    _Spec("events", "occurred_at", "event_id", ("provider", "provider_event_id"), "event_keys"),
)

PARTITIONED_TABLES: Final = tuple(s.table for s in _SPECS)
"""The tables :func:`enable` partitions by month."""

_DEFAULT_AHEAD: Final = 3

_LOCK_KEY: Final = 0x636F6D6D70617274  # "commpart": serializes conversion and maintenance

_MIN_MONTH: Final = (1 - 1970) * 12
_MAX_MONTH: Final = (9998 - 1970) * 12
"""Months outside years 1 to 9998 stay in the DEFAULT partition (Python's datetime range)."""

_MONTHS_BACK: Final = 600
"""The oldest month :func:`enable` makes a partition for: 50 years back (older: DEFAULT)."""

# The indexes of the partitioned tables (the unpartitioned tables' unique keys become
# plain indexes; uniqueness is the key tables' job).
_INDEXES: Final = {
    "messages": (
        "CREATE INDEX ix_messages_contact_id_sent_at ON messages (contact_id, sent_at)",
        "CREATE INDEX ix_messages_provider_provider_message_id "
        "ON messages (provider, provider_message_id)",
        "CREATE INDEX ix_messages_message_id ON messages (message_id)",
        "CREATE INDEX ix_messages_stored_seq ON messages (stored_seq)",
    ),
    "events": (
        "CREATE INDEX ix_events_contact_id_occurred_at ON events (contact_id, occurred_at)",
        "CREATE INDEX ix_events_kpi ON events "
        "(message_id, type, machine, bounce, revenue_micros, currency)",
        "CREATE INDEX ix_events_orphans ON events (provider, provider_message_id, message_id) "
        "WHERE contact_id IS NULL",
        "CREATE INDEX ix_events_provider_provider_event_id "
        "ON events (provider, provider_event_id)",
        "CREATE INDEX ix_events_event_id ON events (event_id)",
        "CREATE INDEX ix_events_stored_seq ON events (stored_seq)",
    ),
}


@attrs.frozen(kw_only=True)
class PartitionReport:
    """What a partition maintenance call did.

    Attributes:
        created: The partitions created (``events_y2026m01``, ...).
        moved: Rows moved out of a ``DEFAULT`` partition into a new month's one.
        dropped: The partitions dropped (whole months past a retention cutoff).
        deleted: Rows deleted one by one (the part of a month, or of the
            ``DEFAULT`` partition, before the cutoff).
        copied: Rows copied into partitions by :func:`enable`.

    .. versionadded:: 0.4.0
    """

    created: tuple[str, ...] = ()
    moved: int = 0
    dropped: tuple[str, ...] = ()
    deleted: int = 0
    copied: int = 0


# ----------------------------------------------------------------- months


def _month_index(micros: int) -> int:
    """Months since January 1970 of the UTC month holding *micros*."""
    d = datetime.fromtimestamp(micros / 1_000_000, UTC)
    return (d.year - 1970) * 12 + d.month - 1


def _month_start(index: int) -> int:
    year, month = divmod(index, 12)
    return to_micros(datetime(1970 + year, month + 1, 1, tzinfo=UTC))


def _partition_name(table: str, index: int) -> str:
    year, month = divmod(index, 12)
    return f"{table}_y{1970 + year:04d}m{month + 1:02d}"


def _check_postgres(conn: sa.Connection) -> None:
    if conn.dialect.name != "postgresql":
        raise InvalidInputError(
            field="partitions", reason="monthly partitions are a PostgreSQL feature"
        )


def is_partitioned(conn: sa.Connection) -> bool:
    """Whether ``events`` (and ``messages``) are partitioned tables in this database."""
    if conn.dialect.name != "postgresql":
        return False
    kind = conn.exec_driver_sql(
        "SELECT c.relkind FROM pg_class c WHERE c.oid = to_regclass('events')"
    ).scalar()
    return kind == "p"


def partitions(conn: sa.Connection, table: str) -> dict[str, tuple[int, int] | None]:
    """Return *table*'s partitions: name -> ``(from_us, to_us)``, ``None`` for ``DEFAULT``."""
    rows = conn.exec_driver_sql(
        "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
        "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass(%s) "
        "ORDER BY c.relname",
        (table,),
    ).all()
    out: dict[str, tuple[int, int] | None] = {}
    for name, bound in rows:
        if bound == "DEFAULT":
            out[name] = None
            continue
        # "FOR VALUES FROM ('1234') TO ('5678')"
        low, high = (int(part.split("'")[1]) for part in bound.split(" TO "))
        out[name] = (low, high)
    return out


# ----------------------------------------------------------------- enable


@contextmanager
def _engine_for(url_or_engine: str | sa.Engine) -> Iterator[sa.Engine]:
    if isinstance(url_or_engine, sa.Engine):
        yield url_or_engine
        return
    require_existing(url_or_engine)
    engine = create_engine(url_or_engine)
    try:
        yield engine
    finally:
        engine.dispose()


def status(url_or_engine: str | sa.Engine) -> dict[str, dict[str, tuple[int, int] | None]]:
    """Return each partitioned table's partitions (``{}`` when not partitioned).

    Args:
        url_or_engine: A database URL or an engine.

    .. versionadded:: 0.4.0
    """
    with _engine_for(url_or_engine) as engine, connect(engine) as conn:
        if not is_partitioned(conn):
            return {}
        return {t: partitions(conn, t) for t in PARTITIONED_TABLES}


def maintain(
    url_or_engine: str | sa.Engine,
    *,
    ahead_months: int = _DEFAULT_AHEAD,
    now: datetime | None = None,
) -> PartitionReport:
    """Run :func:`ensure_partitions` in a transaction of its own.

    Args:
        url_or_engine: A database URL or an engine.
        ahead_months: Months after the current one.
        now: The current instant (default: now).

    Raises:
        InvalidInputError: *ahead_months* is out of range.
        StorageError: The database failed (nothing changed).

    .. versionadded:: 0.4.0
    """
    check_ahead(ahead_months)
    with _engine_for(url_or_engine) as engine, connect(engine) as conn:
        try:
            with conn.begin():
                return ensure_partitions(conn, ahead_months=ahead_months, now=now)
        except sa.exc.SQLAlchemyError as exc:
            raise _storage_error(exc) from exc


def enable(
    url_or_engine: str | sa.Engine,
    *,
    ahead_months: int = _DEFAULT_AHEAD,
    now: datetime | None = None,
) -> PartitionReport:
    """Convert ``messages`` and ``events`` to monthly partitions, in one transaction.

    Both tables are locked (``ACCESS EXCLUSIVE``: readers and writers wait), a
    partitioned table is made for each, with one partition per month from the
    oldest stored row to *ahead_months* after *now* and a ``DEFAULT``
    partition; every row is copied over, the ids and provider pairs are copied
    into the key tables, the old tables are dropped and the new ones take their
    names, indexes and triggers. Any failure rolls all of it back. The copy
    needs the space of both tables at once while it runs.

    Args:
        url_or_engine: A database URL or an engine (schema at revision 0012 or later).
        ahead_months: Months after the current one to create partitions for.
        now: The current instant (default: now).

    Returns:
        The partitions created and the rows copied.

    Raises:
        InvalidInputError: Not PostgreSQL, or *ahead_months* is negative.
        StorageError: Already partitioned, the schema is too old, or the
            database failed (nothing changed).

    .. versionadded:: 0.4.0
    """
    check_ahead(ahead_months)
    now_us = to_micros(now or datetime.now(UTC))
    with _engine_for(url_or_engine) as engine, connect(engine) as conn:
        _check_postgres(conn)
        try:
            with conn.begin():
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_LOCK_KEY})")
                if is_partitioned(conn):
                    raise StorageError("messages and events are partitioned already")
                if (
                    conn.exec_driver_sql(
                        "SELECT to_regprocedure('commhistory_claim_event_key()')"
                    ).scalar()
                    is None
                ):
                    raise StorageError(
                        "the schema is older than revision 0012: run 'commhistory init' first"
                    )
                conn.exec_driver_sql("LOCK TABLE messages, events IN ACCESS EXCLUSIVE MODE")
                created: list[str] = []
                copied = 0
                for spec in _SPECS:
                    names, rows = _convert(conn, spec, ahead_months, now_us)
                    created.extend(names)
                    copied += rows
        except sa.exc.SQLAlchemyError as exc:
            raise _storage_error(exc) from exc
    return PartitionReport(created=tuple(created), copied=copied)


def check_ahead(ahead_months: object) -> None:
    """Check a number of months ahead.

    Raises:
        InvalidInputError: Not a whole number 0 to 120.
    """
    if (
        not isinstance(ahead_months, int)
        or isinstance(ahead_months, bool)
        or not 0 <= ahead_months <= 120
    ):
        raise InvalidInputError(field="ahead_months", reason="must be a whole number 0 to 120")


def _storage_error(exc: sa.exc.SQLAlchemyError) -> StorageError:
    reason = getattr(getattr(exc, "orig", exc), "sqlstate", None) or type(exc).__name__
    return StorageError(f"the database refused the partition operation ({reason})")


def _convert(
    conn: sa.Connection, spec: _Spec, ahead_months: int, now_us: int
) -> tuple[list[str], int]:
    t, col = spec.table, spec.column
    new = f"{t}_partitioned"
    oldest = conn.exec_driver_sql(f"SELECT MIN({col}) FROM {t}").scalar()
    first = (
        _month_index(now_us) if oldest is None else min(_month_index(oldest), _month_index(now_us))
    )
    last = _month_index(now_us) + ahead_months
    first = max(first, _month_index(now_us) - _MONTHS_BACK)  # older rows: DEFAULT
    conn.exec_driver_sql(
        f"CREATE TABLE {new} (LIKE {t} INCLUDING DEFAULTS INCLUDING COMMENTS) "
        f"PARTITION BY RANGE ({col})"
    )
    created = []
    for index in range(first, last + 1):
        name = _partition_name(t, index)
        conn.exec_driver_sql(
            f"CREATE TABLE {name} PARTITION OF {new} "
            f"FOR VALUES FROM ({_month_start(index)}) TO ({_month_start(index + 1)})"
        )
        created.append(name)
    conn.exec_driver_sql(f"CREATE TABLE {t}_default PARTITION OF {new} DEFAULT")
    created.append(f"{t}_default")
    copied = int(conn.exec_driver_sql(f"INSERT INTO {new} SELECT * FROM {t}").rowcount)
    a, b = spec.pair
    conn.exec_driver_sql(
        f"CREATE TABLE {spec.keys} ({spec.id_column} TEXT NOT NULL, {a} TEXT, {b} TEXT, "
        f"{col} BIGINT NOT NULL, CONSTRAINT pk_{spec.keys} PRIMARY KEY ({spec.id_column}), "
        f"CONSTRAINT uq_{spec.keys}_{a}_{b} UNIQUE ({a}, {b}))"
    )
    conn.exec_driver_sql(f"CREATE INDEX ix_{spec.keys}_{col} ON {spec.keys} ({col})")
    conn.exec_driver_sql(
        f"COMMENT ON TABLE {spec.keys} IS 'The global unique keys of the partitioned {t} "
        "table (commhistory.store.partition): claimed by its insert trigger.'"
    )
    conn.exec_driver_sql(
        f"INSERT INTO {spec.keys} SELECT {spec.id_column}, {a}, {b}, {col} FROM {t}"
    )
    comment = conn.exec_driver_sql("SELECT obj_description(to_regclass(%s), 'pg_class')", (t,))
    table_comment = comment.scalar()
    conn.exec_driver_sql(f"DROP TABLE {t}")
    conn.exec_driver_sql(f"ALTER TABLE {new} RENAME TO {t}")
    conn.exec_driver_sql(
        f"ALTER TABLE {t} ADD CONSTRAINT pk_{t} PRIMARY KEY ({spec.id_column}, {col})"
    )
    if t == "messages":
        conn.exec_driver_sql(
            "ALTER TABLE messages ADD CONSTRAINT fk_messages_contact_id_contacts "
            "FOREIGN KEY (contact_id) REFERENCES contacts (contact_id)"
        )
    for statement in _INDEXES[t]:
        conn.exec_driver_sql(statement)
    if table_comment is not None:
        statement = conn.exec_driver_sql(
            "SELECT format('COMMENT ON TABLE %%I IS %%L', %s::text, %s::text)", (t, table_comment)
        ).scalar_one()
        conn.exec_driver_sql(statement)
    singular = t.removesuffix("s")
    conn.exec_driver_sql(
        f"CREATE TRIGGER claim_{singular}_key BEFORE INSERT ON {t} "
        f"FOR EACH ROW EXECUTE FUNCTION commhistory_claim_{singular}_key()"
    )
    conn.exec_driver_sql(
        f"CREATE TRIGGER release_{singular}_key AFTER DELETE ON {t} "
        f"FOR EACH ROW EXECUTE FUNCTION commhistory_release_{singular}_key()"
    )
    conn.exec_driver_sql(
        f"CREATE TRIGGER keep_{singular}_key BEFORE UPDATE OF {spec.id_column}, {a}, {b}, {col} "
        f"ON {t} FOR EACH ROW EXECUTE FUNCTION commhistory_keep_{singular}_key()"
    )
    return created, copied


# ----------------------------------------------------------------- maintenance


def ensure_partitions(
    conn: sa.Connection, *, ahead_months: int = _DEFAULT_AHEAD, now: datetime | None = None
) -> PartitionReport:
    """Create the partitions of the current month and *ahead_months* after it.

    Also gives every month that has rows in a ``DEFAULT`` partition its own
    partition, moving those rows there (their keys stay claimed). Runs in the
    caller's transaction; does nothing on a database that is not partitioned.

    Args:
        conn: A connection inside a transaction.
        ahead_months: Months after the current one.
        now: The current instant (default: now).

    Returns:
        The partitions created and the rows moved.

    .. versionadded:: 0.4.0
    """
    check_ahead(ahead_months)
    if not is_partitioned(conn):
        return PartitionReport()
    # Two runs at once would both create the same month; the second waits and finds it.
    conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_LOCK_KEY})")
    current = _month_index(to_micros(now or datetime.now(UTC)))
    created: list[str] = []
    moved = 0
    for spec in _SPECS:
        existing = partitions(conn, spec.table)
        have = {bound[0] for bound in existing.values() if bound is not None}
        wanted = set(range(current, current + ahead_months + 1))
        default = f"{spec.table}_default"
        if default in existing:
            wanted |= {
                int(r[0])
                for r in conn.exec_driver_sql(
                    "SELECT DISTINCT (EXTRACT(YEAR FROM x)::int - 1970) * 12 "
                    "+ EXTRACT(MONTH FROM x)::int - 1 FROM (SELECT to_timestamp("
                    f"{spec.column} / 1000000.0) AT TIME ZONE 'UTC' AS x FROM {default}) s"
                )
                if _MIN_MONTH <= int(r[0]) <= _MAX_MONTH
            }
        for index in sorted(wanted):
            if _month_start(index) in have:
                continue
            count = _add_month(conn, spec, index, has_default=default in existing)
            created.append(_partition_name(spec.table, index))
            moved += count
    return PartitionReport(created=tuple(created), moved=moved)


def _add_month(conn: sa.Connection, spec: _Spec, index: int, *, has_default: bool) -> int:
    t, col = spec.table, spec.column
    name = _partition_name(t, index)
    low, high = _month_start(index), _month_start(index + 1)
    moving = False
    if has_default:
        moving = bool(
            conn.exec_driver_sql(
                f"SELECT EXISTS (SELECT 1 FROM {t}_default WHERE {col} >= %s AND {col} < %s)",
                (low, high),
            ).scalar()
        )
    if not moving:
        conn.exec_driver_sql(
            f"CREATE TABLE {name} PARTITION OF {t} FOR VALUES FROM ({low}) TO ({high})"
        )
        return 0
    # A month the DEFAULT partition holds rows of: move them into a new table, then
    # attach it. The keys stay claimed: the delete trigger is told to keep them.
    conn.exec_driver_sql("SET LOCAL commhistory.keep_keys = 'on'")
    conn.exec_driver_sql(f"CREATE TABLE {name} (LIKE {t} INCLUDING DEFAULTS)")
    moved = int(
        conn.exec_driver_sql(
            f"WITH moved AS (DELETE FROM {t}_default WHERE {col} >= %s AND {col} < %s "
            f"RETURNING *) INSERT INTO {name} SELECT * FROM moved",
            (low, high),
        ).rowcount
    )
    conn.exec_driver_sql("SET LOCAL commhistory.keep_keys = 'off'")
    conn.exec_driver_sql(
        f"ALTER TABLE {name} ADD CONSTRAINT {name}_bound CHECK ({col} >= {low} AND {col} < {high})"
    )
    conn.exec_driver_sql(
        f"ALTER TABLE {t} ATTACH PARTITION {name} FOR VALUES FROM ({low}) TO ({high})"
    )
    conn.exec_driver_sql(f"ALTER TABLE {name} DROP CONSTRAINT {name}_bound")
    return moved


def delete_before(
    conn: sa.Connection, cutoff_us: int, *, tables: Iterable[str] = ()
) -> PartitionReport:
    """Delete the rows of ``messages`` and ``events`` dated before *cutoff_us*.

    A month partition wholly before the cutoff is dropped (its keys deleted from
    the key table by range first); the rows before the cutoff in the month that
    holds it, and in the ``DEFAULT`` partition, are deleted row by row. Runs in
    the caller's transaction; on a database that is not partitioned, every row
    is deleted with ``DELETE``.

    Args:
        conn: A connection inside a transaction.
        cutoff_us: The cutoff, microseconds since the epoch.
        tables: Only these of ``messages`` and ``events`` (default both).

    Returns:
        The partitions dropped and the rows deleted one by one.

    .. versionadded:: 0.4.0
    """
    chosen = set(tables) or set(PARTITIONED_TABLES)
    specs = [s for s in _SPECS if s.table in chosen]
    if not is_partitioned(conn):
        deleted = 0
        for spec in specs:
            deleted += int(
                conn.exec_driver_sql(
                    f"DELETE FROM {spec.table} WHERE {spec.column} < {_ph(conn)}", (cutoff_us,)
                ).rowcount
            )
        return PartitionReport(deleted=deleted)
    conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_LOCK_KEY})")
    dropped: list[str] = []
    deleted = 0
    for spec in specs:
        for name, bound in partitions(conn, spec.table).items():
            if bound is None or bound[1] > cutoff_us:
                continue
            conn.exec_driver_sql(
                f"DELETE FROM {spec.keys} WHERE {spec.column} >= %s AND {spec.column} < %s",
                bound,
            )
            conn.exec_driver_sql(f"DROP TABLE {name}")
            dropped.append(name)
        deleted += int(
            conn.exec_driver_sql(
                f"DELETE FROM {spec.table} WHERE {spec.column} < %s", (cutoff_us,)
            ).rowcount
        )
    return PartitionReport(dropped=tuple(dropped), deleted=deleted)


def _ph(conn: sa.Connection) -> str:
    return "%s" if conn.dialect.name == "postgresql" else "?"
