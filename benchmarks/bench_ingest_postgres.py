"""PostgreSQL ingest: ``repo.record_events`` against raw psycopg binary ``COPY`` of the same rows.

The same measurement as :mod:`benchmarks.bench_ingest_sqlite`, on PostgreSQL
(``ingest_postgres.events``):

* **Input**: N events (default 1,000,000; ``--events`` or
  ``$COMMHISTORY_BENCH_EVENTS``), five per message, each with three encrypted
  personal fields (``url``, ``user_agent``, ``ip``).
* **Untimed setup**: a fresh schema (``search_path`` set through libpq
  ``options``, dropped afterwards); the N/5 messages stored with
  ``repo.record_messages`` (contacts, data keys, one blind index per address);
  the repository opened; the events built in memory.
* **Timed (candidate)**: one ``repo.record_events(events)``: lookups,
  encryption, and per batch of 5,000 one transaction with a binary ``COPY`` into
  a temporary staging table and ``INSERT ... SELECT ... ON CONFLICT DO NOTHING``.
* **Timed (baseline)**: the rows the repository wrote, read back with psycopg,
  written with psycopg's binary ``COPY ... FROM STDIN`` straight into the
  ``events`` table of another fresh schema with the same migration, one
  transaction per batch of 5,000.

Goal: throughput >= 0.5x the baseline (time ratio <= 2.0).

The server comes from ``$COMMHISTORY_TEST_POSTGRES_URL``, else
``postgresql://postgres@127.0.0.1:5432/test``. Run: ``python -m benchmarks
ingest_postgres`` or ``python -m benchmarks.bench_ingest_postgres --events 100000``.
"""

from __future__ import annotations

import atexit
import os
import sys
import time
import uuid
from collections.abc import Sequence
from typing import Any, Final
from urllib.parse import quote

import psycopg
import sqlalchemy as sa

from benchmarks import _data
from benchmarks._harness import Benchmark, Goal, main
from benchmarks.bench_ingest_sqlite import (
    BATCH_SIZE,
    EVENTS_ENV,
    build_events,
    event_columns,
    event_count,
    parse_size,
)
from commhistory.crypto import Keyring
from commhistory.facade import CommHistory, open_repository
from commhistory.model import Event
from commhistory.store import SQLRepository
from commhistory.store import schema as store_schema
from commhistory.store.migrate import upgrade
from commhistory.store.protocol import IngestReport

URL_ENV: Final = "COMMHISTORY_TEST_POSTGRES_URL"
DEFAULT_URL: Final = "postgresql://postgres@127.0.0.1:5432/test"
GOAL: Final = Goal(text=">= 0.5x raw binary COPY (time ratio <= 2.0)", max_ratio=2.0)

Row = tuple[Any, ...]


def server_url() -> str:
    """The server's libpq URL (``postgresql://...``)."""
    url = os.environ.get(URL_ENV) or DEFAULT_URL
    for prefix in ("postgresql+psycopg://", "postgres://"):
        if url.startswith(prefix):
            url = "postgresql://" + url.removeprefix(prefix)
    return url


def pg_type(column: sa.Column[Any]) -> str:
    """The PostgreSQL type name psycopg's binary ``COPY`` needs for a schema column."""
    kind = column.type
    if isinstance(kind, store_schema.UTCTimestamp | sa.BigInteger):
        return "int8"
    if isinstance(kind, sa.Integer):
        return "int4"
    if isinstance(kind, sa.Boolean):
        return "bool"
    if isinstance(kind, sa.LargeBinary):
        return "bytea"
    return "text"


class Schemas:
    """Fresh PostgreSQL schemas, each dropped when done (or at exit)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.live: set[str] = set()
        atexit.register(self.drop_all)

    def create(self) -> str:
        """Create an empty schema and return its name."""
        name = f"bench_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {name}")
        self.live.add(name)
        return name

    def drop(self, name: str) -> None:
        """Drop a schema and everything in it."""
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
        self.live.discard(name)

    def drop_all(self) -> None:
        """Drop every schema still alive."""
        for name in list(self.live):
            self.drop(name)

    def sqlalchemy_url(self, name: str) -> str:
        """A SQLAlchemy URL whose connections use schema *name*."""
        sep = "&" if "?" in self.url else "?"
        options = quote(f"-csearch_path={name}", safe="")
        return f"{self.url}{sep}options={options}"

    def connect(self, name: str) -> psycopg.Connection[Any]:
        """A psycopg connection whose ``search_path`` is schema *name*."""
        return psycopg.connect(self.url, options=f"-csearch_path={name}")


def copy_rows(
    conn: psycopg.Connection[Any],
    columns: Sequence[str],
    types: Sequence[str],
    rows: Sequence[Row],
    batch_size: int,
) -> None:
    """Write *rows* with binary ``COPY``, one transaction per batch."""
    sql = f"COPY events ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)"
    for start in range(0, len(rows), batch_size):
        with conn.transaction(), conn.cursor() as cur, cur.copy(sql) as copy:
            copy.set_types(types)
            write = copy.write_row
            for row in rows[start : start + batch_size]:
                write(row)


class PostgresIngest:
    """The state of the PostgreSQL ingest benchmark.

    Args:
        n_events: How many events to ingest.
        batch_size: Items per transaction, for the repository and the baseline alike.
    """

    def __init__(self, n_events: int, batch_size: int = BATCH_SIZE) -> None:
        self.n_events = n_events
        self.batch_size = batch_size
        self.keyring = Keyring.generate()
        self.columns = event_columns()
        self.types = [pg_type(store_schema.events.c[name]) for name in self.columns]
        self.schemas = Schemas(server_url())
        self.spec: _data.HistorySpec | None = None
        self.events: list[Event] = []
        self.repo: CommHistory[SQLRepository] | None = None
        self.repo_schema: str | None = None
        self.repo_used = False
        self.raw_conn: psycopg.Connection[Any] | None = None
        self.raw_schema: str | None = None
        self.raw_used = False
        self.rows: list[Row] | None = None
        self.report: IngestReport | None = None
        self.figures: dict[str, Any] = {}

    def setup(self) -> None:
        """Make a fresh repository schema (messages stored) and a fresh raw schema ready."""
        if self.spec is None:
            self.spec, self.events = build_events(self.n_events)
            self.figures.update(
                events=len(self.events),
                messages=self.spec.n_messages,
                contacts_max=self.spec.n_contacts,
                batch_size=self.batch_size,
            )
        if self.repo_used and self.rows is None:
            self._capture()
        if self.repo is None or self.repo_used:
            self._close_repo()
            self.repo_schema = self.schemas.create()
            url = self.schemas.sqlalchemy_url(self.repo_schema)
            started = time.perf_counter()
            self.repo = open_repository(url, self.keyring, batch_size=self.batch_size)
            report = self.repo.record_messages(_data.messages(self.spec))
            self.figures["untimed_messages_seconds"] = round(time.perf_counter() - started, 3)
            self.figures["messages_inserted"] = report.inserted
            self.repo_used = False
        if self.raw_conn is None or self.raw_used:
            self._close_raw()
            self.raw_schema = self.schemas.create()
            upgrade(self.schemas.sqlalchemy_url(self.raw_schema))
            self.raw_conn = self.schemas.connect(self.raw_schema)
            self.raw_used = False

    def _close_repo(self) -> None:
        if self.repo is not None:
            self.repo.close()
            self.repo = None
        if self.repo_schema is not None:
            self.schemas.drop(self.repo_schema)
            self.repo_schema = None

    def _close_raw(self) -> None:
        if self.raw_conn is not None:
            self.raw_conn.close()
            self.raw_conn = None
        if self.raw_schema is not None:
            self.schemas.drop(self.raw_schema)
            self.raw_schema = None

    def _capture(self) -> None:
        assert self.repo_schema is not None
        with self.schemas.connect(self.repo_schema) as conn:
            self.rows = conn.execute(
                f"SELECT {', '.join(self.columns)} FROM events ORDER BY event_id"
            ).fetchall()

    def candidate(self) -> None:
        """Ingest the events through the repository."""
        assert self.repo is not None
        assert not self.repo_used
        self.repo_used = True
        self.report = self.repo.record_events(self.events)

    def baseline(self) -> None:
        """Write the captured rows with raw binary ``COPY``."""
        if self.rows is None:
            raise RuntimeError("the baseline needs the rows of a candidate run")
        assert self.raw_conn is not None
        assert not self.raw_used
        self.raw_used = True
        copy_rows(self.raw_conn, self.columns, self.types, self.rows, self.batch_size)

    def extra(self) -> dict[str, Any]:
        """Check both schemas hold every event once; drop them; return the figures."""
        out = dict(self.figures, source_revision=_data.source_revision())
        if self.report is not None:
            out["report"] = {
                "inserted": self.report.inserted,
                "duplicates": self.report.duplicates,
                "rejected": self.report.rejected,
            }
        if self.raw_conn is not None and self.raw_used:
            row = self.raw_conn.execute("SELECT count(*) FROM events").fetchone()
            out["raw_rows_stored"] = None if row is None else int(row[0])
        out["rows_identical_count"] = self.rows is not None and len(self.rows) == self.n_events
        self._close_repo()
        self._close_raw()
        self.schemas.drop_all()
        return out


def benchmarks() -> list[Benchmark]:
    """The PostgreSQL ingest benchmark; inputs are built at the first setup, not here."""
    state = PostgresIngest(event_count())
    return [
        Benchmark(
            name="ingest_postgres.events",
            candidate=state.candidate,
            baseline=state.baseline,
            setup=state.setup,
            goal=GOAL,
            repeats=1,
            extra=state.extra,
            items=state.n_events,
        )
    ]


if __name__ == "__main__":
    sys.exit(main([benchmarks], parse_size(sys.argv[1:], EVENTS_ENV)))
