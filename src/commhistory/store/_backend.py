"""Bulk SQL per database: executemany on SQLite, binary COPY through a staging table on PostgreSQL.

Every statement here is plain driver SQL built from :mod:`commhistory.store.schema`
table and column names (never from input), with values bound as parameters.
"""

# SQL text here is built only from schema identifiers, placeholders and integers;
# every value is bound as a parameter.
# ruff: noqa: S608

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Final

import sqlalchemy as sa

from commhistory.store import schema

__all__ = ["Backend", "PostgresBackend", "SQLiteBackend", "backend_for"]

_CHUNK: Final = 500
"""Values per ``IN (...)`` list (well under SQLite's bound-parameter limit)."""

Row = tuple[Any, ...]


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


class Backend:
    """The SQL that differs between databases.

    Attributes:
        name: ``"sqlite"`` or ``"postgresql"``.
        ph: The driver's placeholder (``?`` or ``%s``).
    """

    name: str = ""
    ph: str = "?"

    def insert(
        self, conn: sa.Connection, table: sa.Table, columns: Sequence[str], rows: list[Row]
    ) -> int:
        """Insert rows, skipping any that conflict with a unique key.

        Returns:
            The number of rows inserted.
        """
        raise NotImplementedError

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


class SQLiteBackend(Backend):
    """SQLite: ``executemany`` of tuples; ``BEGIN IMMEDIATE`` already serializes writers."""

    name = "sqlite"
    ph = "?"

    def insert(
        self, conn: sa.Connection, table: sa.Table, columns: Sequence[str], rows: list[Row]
    ) -> int:
        """Insert with ``executemany`` and ``ON CONFLICT DO NOTHING``."""
        if not rows:
            return 0
        sql = (
            f"INSERT INTO {table.name} ({', '.join(columns)}) "
            f"VALUES ({self.placeholders(len(columns))}) ON CONFLICT DO NOTHING"
        )
        return self.executemany(conn, sql, rows)


_LINK_LOCK_KEY: Final = 0x636F6D6D6C696E6B  # "commlink"


class PostgresBackend(Backend):
    """PostgreSQL: binary ``COPY`` into a temporary staging table, then ``INSERT ... SELECT``."""

    name = "postgresql"
    ph = "%s"

    def insert(
        self, conn: sa.Connection, table: sa.Table, columns: Sequence[str], rows: list[Row]
    ) -> int:
        """Insert through binary ``COPY`` and ``ON CONFLICT DO NOTHING``."""
        if not rows:
            return 0
        stage = f"_ch_stage_{table.name}"
        cols = ", ".join(columns)
        types = [_pg_type(table.c[name]) for name in columns]
        raw: Any = conn.connection.driver_connection
        with raw.cursor() as cur:
            cur.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS {stage} (LIKE {table.name}) "
                "ON COMMIT DELETE ROWS"
            )
            with cur.copy(f"COPY {stage} ({cols}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(types)
                write = copy.write_row
                for row in rows:
                    write(row)
            # Insert in primary-key order: two writers adding overlapping keys then
            # take their row locks in the same order, so one waits instead of both
            # deadlocking.
            order = ", ".join(c.name for c in table.primary_key.columns)
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


def backend_for(engine: sa.Engine) -> Backend:
    """Return the backend for an engine's database."""
    if engine.dialect.name == "postgresql":
        return PostgresBackend()
    return SQLiteBackend()
