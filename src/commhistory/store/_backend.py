"""Bulk SQL per database: executemany on SQLite, binary COPY on PostgreSQL.

On PostgreSQL, :meth:`PostgresBackend.insert` copies into a temporary staging
table and inserts from it with ``ON CONFLICT DO NOTHING``;
:meth:`PostgresBackend.insert_new` copies rows whose keys were just found absent
straight into the table, and falls back to the staging table only when a
concurrent writer stored one of them first.

Every statement here is plain driver SQL built from :mod:`commhistory.store.schema`
table and column names (never from input), with values bound as parameters.
"""

# SQL text here is built only from schema identifiers, placeholders and integers;
# every value is bound as a parameter.
# ruff: noqa: S608

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from operator import itemgetter
from typing import Any, Final

import sqlalchemy as sa

from commhistory.store import schema

__all__ = [
    "STORED_SEQ_TABLES",
    "Backend",
    "PostgresBackend",
    "SQLiteBackend",
    "backend_for",
    "without_null_columns",
]

_CHUNK: Final = 500
"""Values per ``IN (...)`` list (well under SQLite's bound-parameter limit)."""

_ANY_CHUNK: Final = 10_000
"""Values per ``= ANY(%s)`` array on PostgreSQL (one parameter, however many values)."""

_IN_SLOT: Final = "IN ({in})"

_UNNEST_ROWS: Final = 200
"""PostgreSQL inserts of at most this many rows bind each column as one array, not ``COPY``."""

Row = tuple[Any, ...]

STORED_SEQ_TABLES: Final = frozenset({"messages", "events", "activities", "campaign_costs"})
"""The tables whose rows carry ``stored_seq`` (migration 0014), filled on insert."""

_SQLITE_SEQ: Final = "(SELECT value FROM stored_seq WHERE id = 1)"
_SQLITE_TAKE_SEQ: Final = "UPDATE stored_seq SET value = value + 1 WHERE id = 1"
_PG_SEQ: Final = "pg_current_xact_id()::text::bigint"


def _pg_type(column: sa.Column[Any]) -> str:
    kind = column.type
    if isinstance(kind, schema.UTCTimestamp | sa.BigInteger):
        return "int8"
    if isinstance(kind, sa.Integer):
        return "int4"
    if isinstance(kind, sa.Boolean):
        return "bool"
    if isinstance(kind, sa.LargeBinary):
        return "bytea"
    return "text"


_PRUNE_MIN_ROWS: Final = 64
"""Inserts of fewer rows bind every column (finding the empty ones would not pay)."""


def _null_by_default(column: sa.Column[Any]) -> bool:
    """Whether leaving *column* out of an ``INSERT`` stores NULL, as binding NULL does."""
    return (
        bool(column.nullable)
        and column.default is None
        and column.server_default is None
        and not column.primary_key
    )


_PRUNABLE: dict[tuple[str, tuple[str, ...]], tuple[int, ...]] = {}
"""The positions, among an insert's columns, of those that default to NULL (by table)."""


def without_null_columns(
    table: sa.Table, columns: Sequence[str], rows: list[Row]
) -> tuple[Sequence[str], list[Row]]:
    """Leave out of a bulk insert the columns that are NULL in every row and default to NULL.

    The database stores exactly the same rows (an omitted column takes its
    default, NULL, as the bound NULL would), but binds fewer parameters a row:
    on SQLite ``executemany`` costs about as much per bound value as per row,
    and most of the nullable columns of ``events`` and ``messages`` are empty in
    a typical import (provider ids, bounce fields, revenue, metadata).

    Returns:
        The columns to insert and the rows with only those values (the same
        objects when no column can be left out).

    .. versionadded:: 0.4.0
    """
    if len(rows) < _PRUNE_MIN_ROWS:
        return columns, rows
    key = (table.name, tuple(columns))
    prunable = _PRUNABLE.get(key)
    if prunable is None:
        prunable = _PRUNABLE[key] = tuple(
            i for i, name in enumerate(columns) if _null_by_default(table.c[name])
        )
    if not prunable:
        return columns, rows
    # One column at a time, in C (map, itemgetter, list.count): a column the first
    # row sets is not looked at further.
    first, n = rows[0], len(rows)
    empty = {
        i for i in prunable if first[i] is None and list(map(itemgetter(i), rows)).count(None) == n
    }
    if not empty:
        return columns, rows
    keep = [i for i in range(len(columns)) if i not in empty]
    if len(keep) == 1:  # itemgetter of one position gives the value, not a tuple
        return [columns[keep[0]]], [(r[keep[0]],) for r in rows]
    return [columns[i] for i in keep], list(map(itemgetter(*keep), rows))


class Backend:
    """The SQL that differs between databases.

    Attributes:
        name: ``"sqlite"`` or ``"postgresql"``.
        ph: The driver's placeholder (``?`` or ``%s``).
    """

    name: str = ""
    ph: str = "?"
    copies_new_rows: bool = False
    """Whether :meth:`insert_new` is much cheaper than :meth:`insert` for rows that are new.

    True on PostgreSQL, where :meth:`insert_new` copies rows straight into their
    table and :meth:`insert` goes through a staging table; on SQLite
    ``INSERT ... ON CONFLICT DO NOTHING`` already costs what a plain insert does.
    """
    key_share: str = ""
    """Appended to a ``SELECT`` of ``contacts`` rows a write depends on: a lock that an
    erasure's ``FOR UPDATE`` waits for (PostgreSQL ``FOR KEY SHARE``). Empty on SQLite,
    whose write transactions are serialized already."""

    def insert(
        self, conn: sa.Connection, table: sa.Table, columns: Sequence[str], rows: list[Row]
    ) -> int:
        """Insert rows, skipping any that conflict with a unique key.

        Returns:
            The number of rows inserted.
        """
        raise NotImplementedError

    def insert_new(
        self, conn: sa.Connection, table: sa.Table, columns: Sequence[str], rows: Iterable[Row]
    ) -> int:
        """Insert rows that are probably new: none repeats another's unique key.

        Rows whose key is stored already (the caller did not look, or a concurrent
        writer stored it since) are skipped, as :meth:`insert` skips them; only
        the cost differs.

        Args:
            conn: The connection, inside the batch's transaction.
            table: The table.
            columns: The columns of each row.
            rows: The rows, consumed once (they may be built while they are written).

        Returns:
            The number of rows inserted.
        """
        return self.insert(conn, table, columns, list(rows))

    def try_copy_new(
        self, conn: sa.Connection, table: sa.Table, columns: Sequence[str], rows: Iterable[Row]
    ) -> int | None:
        """Copy rows straight into the table, or nothing when one of their keys is stored.

        For a caller that must tell stored keys apart itself (an activity id
        stored with another contact is a conflict, not a duplicate): it looks
        keys up only after this returns ``None``. Only where
        :attr:`copies_new_rows` is true.

        Returns:
            The number of rows written, or ``None`` when a key was stored
            already and nothing was written.
        """
        raise NotImplementedError

    def existing_keys(
        self,
        conn: sa.Connection,
        table: sa.Table,
        columns: Sequence[str],
        keys: Collection[tuple[Any, ...]],
    ) -> set[tuple[Any, ...]]:
        """Return which of *keys* (values of *columns*, one or two) are stored in *table*.

        The generic form searches the unique index through ``IN`` lists (one
        column) or the joined ``_pairs`` (two); PostgreSQL overrides it with
        array-bound statements for the bulk path.
        """
        keys = list(keys)
        if not keys:
            return set()
        name = table.name
        if len(columns) == 1:
            (col,) = columns
            return {
                (r[0],)
                for r in self.select_in(
                    conn, f"SELECT {col} FROM {name} WHERE {col} IN ({{in}})", [k[0] for k in keys]
                )
            }
        a, b = columns
        return {
            (r[0], r[1])
            for r in self.select_pairs(
                conn,
                f"SELECT t.{a}, t.{b} FROM _pairs p JOIN {name} t ON t.{a} = p.a AND t.{b} = p.b",
                [(k[0], k[1]) for k in keys],
            )
        }

    def placeholders(self, n: int) -> str:
        """Return ``n`` comma-separated placeholders."""
        return ", ".join([self.ph] * n)

    def select_in(
        self, conn: sa.Connection, sql: str, values: Iterable[Any], *, extra: Row = ()
    ) -> list[Row]:
        """Run ``sql`` (with one ``{in}`` slot) over *values* in chunks.

        Args:
            conn: The connection.
            sql: A SELECT whose ``{in}`` is replaced by the placeholders of a chunk;
                the chunk's values follow *extra* in the parameters.
            values: The values of the ``IN`` list.
            extra: Parameters bound before the chunk.

        Returns:
            All rows of all chunks.
        """
        values = list(values)
        out: list[Row] = []
        for start in range(0, len(values), _CHUNK):
            chunk = values[start : start + _CHUNK]
            statement = sql.replace("{in}", self.placeholders(len(chunk)))
            out.extend(tuple(r) for r in conn.exec_driver_sql(statement, (*extra, *chunk)))
        return out

    def execute_in(self, conn: sa.Connection, sql: str, values: Iterable[Any]) -> int:
        """Run a writing statement with one ``IN ({in})`` slot over *values* in chunks.

        Returns:
            The rows changed.
        """
        values = list(values)
        changed = 0
        for start in range(0, len(values), _CHUNK):
            chunk = values[start : start + _CHUNK]
            statement = sql.replace("{in}", self.placeholders(len(chunk)))
            changed += int(conn.exec_driver_sql(statement, tuple(chunk)).rowcount)
        return changed

    def select_pairs(
        self, conn: sa.Connection, sql: str, pairs: Iterable[tuple[Any, Any]]
    ) -> list[Row]:
        """Run ``sql``, which joins the table ``_pairs(a, b)``, over 2-tuples in chunks.

        Each chunk is given as ``WITH _pairs(a, b) AS (VALUES ...)``, so the query
        drives from the pairs and searches the index once per pair. (A
        ``(x, y) IN (VALUES ...)`` filter made SQLite scan the whole index for
        every chunk: message ingest slowed down as the table grew.)
        """
        pairs = list(pairs)
        out: list[Row] = []
        step = _CHUNK // 2
        for start in range(0, len(pairs), step):
            chunk = pairs[start : start + step]
            values = ", ".join([f"({self.ph}, {self.ph})"] * len(chunk))
            params = tuple(v for pair in chunk for v in pair)
            statement = f"WITH _pairs(a, b) AS (VALUES {values}) {sql}"
            out.extend(tuple(r) for r in conn.exec_driver_sql(statement, params))
        return out

    def executemany(self, conn: sa.Connection, sql: str, rows: list[Row]) -> int:
        """Run one statement for many parameter rows; return the rows changed."""
        if not rows:
            return 0
        result = conn.exec_driver_sql(sql, rows)
        return int(result.rowcount)

    def lock_linking(self, conn: sa.Connection) -> None:
        """Serialize orphan linking with concurrent event writers (PostgreSQL only)."""

    def stored_seq(self, conn: sa.Connection) -> str:
        """Return the SQL expression of the stored-at sequence value for rows written now.

        For an ``UPDATE`` that makes a row exportable again (an orphan event
        linked to its message). On SQLite it takes the next counter value first.
        """
        raise NotImplementedError

    def stored_seq_bound(self, conn: sa.Connection) -> int:
        """Return the value every row stored by a committed write is below, and no later one.

        The analytics export reads rows under it; every row stored after it has a
        ``stored_seq`` at or above it.
        """
        raise NotImplementedError


class SQLiteBackend(Backend):
    """SQLite: ``executemany`` of tuples; ``BEGIN IMMEDIATE`` already serializes writers."""

    name = "sqlite"
    ph = "?"

    def insert(
        self, conn: sa.Connection, table: sa.Table, columns: Sequence[str], rows: list[Row]
    ) -> int:
        """Insert with ``executemany`` and ``ON CONFLICT DO NOTHING``.

        Rows of :data:`STORED_SEQ_TABLES` get the next ``stored_seq`` value, one
        per call (writers are serialized, so values grow in commit order).
        """
        if not rows:
            return 0
        columns, rows = without_null_columns(table, columns, rows)
        cols, marks = ", ".join(columns), self.placeholders(len(columns))
        if table.name in STORED_SEQ_TABLES:
            conn.exec_driver_sql(_SQLITE_TAKE_SEQ)
            cols, marks = f"{cols}, stored_seq", f"{marks}, {_SQLITE_SEQ}"
        sql = f"INSERT INTO {table.name} ({cols}) VALUES ({marks}) ON CONFLICT DO NOTHING"
        return self.executemany(conn, sql, rows)

    def stored_seq(self, conn: sa.Connection) -> str:
        """The counter's next value (taken now)."""
        conn.exec_driver_sql(_SQLITE_TAKE_SEQ)
        return _SQLITE_SEQ

    def stored_seq_bound(self, conn: sa.Connection) -> int:
        """One above the committed counter: writers in progress took values at or above it."""
        value = conn.exec_driver_sql(f"SELECT {_SQLITE_SEQ}").scalar()
        return int(value or 0) + 1


_LINK_LOCK_KEY: Final = 0x636F6D6D6C696E6B  # "commlink"

_KEY_TABLES: Final = {"events": "event_keys", "messages": "message_keys"}
"""The unpartitioned key tables of partitioned tables (:mod:`commhistory.store.partition`)."""


class PostgresBackend(Backend):
    """PostgreSQL: binary ``COPY`` into a temporary staging table, then ``INSERT ... SELECT``."""

    name = "postgresql"
    ph = "%s"
    copies_new_rows = True
    key_share = " FOR KEY SHARE"

    def __init__(self) -> None:
        self._partitioned: bool | None = None

    def select_in(
        self, conn: sa.Connection, sql: str, values: Iterable[Any], *, extra: Row = ()
    ) -> list[Row]:
        """Run ``sql`` with its ``col IN ({in})`` bound as one array: ``col = ANY(%s)``.

        One statement text for every list length, so psycopg prepares it once and
        the server plans it once, instead of one text per length of ``IN`` list.
        """
        if _IN_SLOT not in sql:
            return super().select_in(conn, sql, values, extra=extra)
        statement = sql.replace(_IN_SLOT, "= ANY(%s)")
        values = list(values)
        out: list[Row] = []
        for start in range(0, len(values), _ANY_CHUNK):
            chunk = values[start : start + _ANY_CHUNK]
            out.extend(tuple(r) for r in conn.exec_driver_sql(statement, (*extra, chunk)))
        return out

    def execute_in(self, conn: sa.Connection, sql: str, values: Iterable[Any]) -> int:
        """Run a writing statement with its ``col IN ({in})`` bound as one array."""
        if _IN_SLOT not in sql:
            return super().execute_in(conn, sql, values)
        statement = sql.replace(_IN_SLOT, "= ANY(%s)")
        values = list(values)
        changed = 0
        for start in range(0, len(values), _ANY_CHUNK):
            chunk = values[start : start + _ANY_CHUNK]
            changed += int(conn.exec_driver_sql(statement, (chunk,)).rowcount)
        return changed

    def existing_keys(
        self,
        conn: sa.Connection,
        table: sa.Table,
        columns: Sequence[str],
        keys: Collection[tuple[Any, ...]],
    ) -> set[tuple[Any, ...]]:
        """Return which of *keys* are stored, in one statement searching the unique index.

        One column: ``col = ANY(%s)``. Two: one ``a = %s AND b = ANY(%s)`` branch
        per distinct first value (a provider), joined by ``UNION ALL``; each is a
        search of the index per value, where a join to ``unnest(...)`` would be
        planned as a hash join over the whole table.
        """
        if not keys:
            return set()
        name = self._key_table(conn, table.name)
        if len(columns) == 1:
            (col,) = columns
            sql = f"SELECT {col} FROM {name} WHERE {col} = ANY(%s)"
            params: list[Any] = [[k[0] for k in keys]]
        else:
            a, b = columns
            groups: dict[Any, list[Any]] = {}
            for k in keys:
                groups.setdefault(k[0], []).append(k[1])
            branch = f"SELECT {a}, {b} FROM {name} WHERE {a} = %s AND {b} = ANY(%s)"
            sql = " UNION ALL ".join([branch] * len(groups))
            params = [v for first, rest in groups.items() for v in (first, rest)]
        raw: Any = conn.connection.driver_connection
        with raw.cursor() as cur:
            cur.execute(sql, params)
            return {tuple(r) for r in cur}

    def _key_table(self, conn: sa.Connection, name: str) -> str:
        """The table to look *name*'s unique keys up in: its key table when partitioned.

        On a database with monthly partitions (:mod:`commhistory.store.partition`)
        the ids and provider pairs of ``messages`` and ``events`` are also in the
        unpartitioned ``message_keys`` / ``event_keys``, written in the same
        transaction as the rows: one index search there, instead of one in every
        month's partition. Checked once per repository; a database partitioned
        after the repository was opened is searched the slower way, with the same
        answers.
        """
        keys = _KEY_TABLES.get(name)
        if keys is None:
            return name
        if self._partitioned is None:
            found = conn.exec_driver_sql("SELECT to_regclass('event_keys')").scalar()
            self._partitioned = found is not None
        return keys if self._partitioned else name

    def insert_new(
        self, conn: sa.Connection, table: sa.Table, columns: Sequence[str], rows: Iterable[Row]
    ) -> int:
        """Copy rows straight into the table; fall back to :meth:`insert` on a key conflict.

        The ``COPY`` runs inside a savepoint, in the order *rows* come (the caller
        sorts them by primary key, as :meth:`insert` orders its ``INSERT``), and
        rows are written as *rows* yields them, so the server stores the first
        rows while later ones are still being built. If one of the keys is stored
        already (by an earlier batch, or by a concurrent writer meanwhile), the
        server reports a unique violation: the savepoint is rolled back and every
        row goes through :meth:`insert`, which skips the stored ones. Any other
        error propagates and fails the transaction, as in :meth:`insert`; a
        deadlock (``40P01``) is retried with the whole batch by the repository.
        The server logs the unique violation (with the key, an id, never a
        personal field), so callers look keys up first where stored rows are
        likely.
        """
        written: list[Row] = []
        stored = self._copy(conn, table, columns, rows, written)
        if stored is not None:
            return stored
        written.extend(rows)  # any not yet consumed
        return self.insert(conn, table, columns, written)

    def try_copy_new(
        self, conn: sa.Connection, table: sa.Table, columns: Sequence[str], rows: Iterable[Row]
    ) -> int | None:
        """See :meth:`Backend.try_copy_new`: ``COPY`` in a savepoint, rolled back on a conflict."""
        written: list[Row] = []
        return self._copy(conn, table, columns, rows, written)

    def _copy(
        self,
        conn: sa.Connection,
        table: sa.Table,
        columns: Sequence[str],
        rows: Iterable[Row],
        written: list[Row],
    ) -> int | None:
        """``COPY`` *rows* in a savepoint, keeping each in *written*; ``None`` on a key conflict.

        Returns the rows the server stored: all of *written* on an unpartitioned
        table; on a partitioned one (:mod:`commhistory.store.partition`) the key
        trigger skips, as ``ON CONFLICT DO NOTHING`` would, a row whose key is
        stored already, and the count leaves it out.
        """
        from psycopg.errors import UniqueViolation  # noqa: PLC0415 - the postgres extra

        cols = ", ".join(columns)
        types = [_pg_type(table.c[name]) for name in columns]
        raw: Any = conn.connection.driver_connection
        keep = written.append
        with raw.cursor() as cur:
            cur.execute("SAVEPOINT _ch_insert_new")
            try:
                with cur.copy(f"COPY {table.name} ({cols}) FROM STDIN (FORMAT BINARY)") as copy:
                    copy.set_types(types)
                    write = copy.write_row
                    for row in rows:
                        keep(row)
                        write(row)
            except UniqueViolation:
                cur.execute("ROLLBACK TO SAVEPOINT _ch_insert_new")
                return None
            stored = cur.rowcount
            cur.execute("RELEASE SAVEPOINT _ch_insert_new")
        return len(written) if stored < 0 else int(stored)

    def insert(
        self, conn: sa.Connection, table: sa.Table, columns: Sequence[str], rows: list[Row]
    ) -> int:
        """Insert with ``ON CONFLICT DO NOTHING``, in primary-key order.

        Up to :data:`_UNNEST_ROWS` rows go in one statement, each column bound
        as one array (``INSERT ... SELECT ... FROM unnest(...)``); more go through
        a binary ``COPY`` into a temporary staging table. Both insert ``ORDER BY``
        the primary key, so two writers adding overlapping keys take their row
        locks in the same order, and one waits instead of both deadlocking.
        """
        if not rows:
            return 0
        columns, rows = without_null_columns(table, columns, rows)
        cols = ", ".join(columns)
        types = [_pg_type(table.c[name]) for name in columns]
        order = ", ".join(c.name for c in table.primary_key.columns)
        raw: Any = conn.connection.driver_connection
        if len(rows) <= _UNNEST_ROWS:
            # The staging table costs a few statements (CREATE ... IF NOT EXISTS,
            # COPY, TRUNCATE: about 2 ms) whatever the number of rows.
            arrays = ", ".join(f"%s::{t}[]" for t in types)
            with raw.cursor() as cur:
                cur.execute(
                    f"INSERT INTO {table.name} ({cols}) SELECT {cols} FROM unnest({arrays}) "
                    f"AS _rows ({cols}) ORDER BY {order} ON CONFLICT DO NOTHING",
                    [list(column) for column in zip(*rows, strict=True)],
                )
                return int(cur.rowcount)
        stage = f"_ch_stage_{table.name}"
        with raw.cursor() as cur:
            cur.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS {stage} (LIKE {table.name} INCLUDING DEFAULTS) "
                "ON COMMIT DELETE ROWS"
            )
            with cur.copy(f"COPY {stage} ({cols}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(types)
                write = copy.write_row
                for row in rows:
                    write(row)
            cur.execute(
                f"INSERT INTO {table.name} ({cols}) SELECT {cols} FROM {stage} "
                f"ORDER BY {order} ON CONFLICT DO NOTHING"
            )
            inserted = int(cur.rowcount)
            cur.execute(f"TRUNCATE {stage}")
        return inserted

    def lock_linking(self, conn: sa.Connection) -> None:
        """Take the transaction-scoped advisory lock that orders linking and orphan writes."""
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_LINK_LOCK_KEY})")

    def stored_seq(self, conn: sa.Connection) -> str:
        """The writing transaction's id (the column default of :data:`STORED_SEQ_TABLES`)."""
        return _PG_SEQ

    def stored_seq_bound(self, conn: sa.Connection) -> int:
        """The oldest id of a transaction still running in this database, or the next id.

        Every transaction with a smaller id has ended; a later one gets a greater
        id. Transactions of other databases cannot write here and are left out,
        so a long one elsewhere in the cluster holds nothing back. The snapshot
        is taken first; its running ids are then matched (on their low 32 bits,
        as ``pg_locks`` shows them) with the transactions holding their id lock
        in this database, and prepared ones.
        """
        snapshot = str(conn.exec_driver_sql("SELECT pg_current_snapshot()::text").scalar_one())
        _xmin, xmax, running = snapshot.split(":")
        bound = int(xmax)
        if running:
            ours = {
                int(r[0])
                for r in conn.exec_driver_sql(
                    "SELECT l.transactionid::text FROM pg_locks l "
                    "JOIN pg_stat_activity a ON a.pid = l.pid "
                    "WHERE l.locktype = 'transactionid' AND l.mode = 'ExclusiveLock' "
                    "AND a.datname = current_database() "
                    "UNION SELECT transaction::text FROM pg_prepared_xacts "
                    "WHERE database = current_database()"
                )
            }
            for xid in map(int, running.split(",")):
                if xid & 0xFFFFFFFF in ours:
                    bound = min(bound, xid)
        return bound


def backend_for(engine: sa.Engine) -> Backend:
    """Return the backend for an engine's database."""
    if engine.dialect.name == "postgresql":
        return PostgresBackend()
    return SQLiteBackend()
