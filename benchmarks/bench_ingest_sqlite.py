"""SQLite ingest: ``repo.record_events`` against raw ``sqlite3.executemany`` of the same rows.

What is measured (``ingest_sqlite.events``):

* **Input**: N canonical events (default 1,000,000; ``--events`` or
  ``$COMMHISTORY_BENCH_EVENTS``) from :mod:`benchmarks._data`, five per message.
  Every event carries exactly three personal fields, ``url``, ``user_agent``
  and ``ip``, each stored as an AES-256-GCM envelope under its contact's data
  key. The events name their message by ``message_id``.
* **Untimed setup**: the N/5 messages (to N/100 contacts) are stored first with
  ``repo.record_messages``; that writes the contacts with their wrapped data
  keys, the encrypted messages and one blind index per message address. The
  database file with those messages is kept as a template and copied before
  every timed run, and the repository is opened (schema check, keyring check)
  before the clock starts. The events are built as :class:`~commhistory.Event`
  objects before the clock starts too.
* **Timed (candidate)**: one ``repo.record_events(events)`` call: batching,
  metadata and revenue checks, the message -> contact lookups, unwrapping each
  contact's data key once, 3 encryptions per event, and ``executemany`` inserts,
  one transaction per batch (5,000), into a fresh SQLite file in WAL mode.
* **Timed (baseline)**: the rows the repository actually wrote, read back from
  its file with :mod:`sqlite3` (``ORDER BY rowid``), inserted with plain
  ``sqlite3`` ``executemany`` into a fresh file with the same schema (the same
  Alembic migration), the same pragmas (WAL, ``synchronous=NORMAL``,
  ``foreign_keys=ON``), the same batch size and one ``BEGIN IMMEDIATE`` ...
  ``COMMIT`` per batch.

The goal is throughput >= 0.5x the baseline, that is a time ratio <= 2.0.

Two cheap comparisons, on a sample of the same rows, show where the usual
alternatives land: SQLAlchemy Core ``insert()`` with a list of dicts
(``ingest_sqlite.core_dicts``, 200,000 rows) and per-row ORM ``Session.add``
(``ingest_sqlite.orm_per_row``, 20,000 rows), each against raw executemany of
the same sample.

Run: ``python -m benchmarks ingest_sqlite`` or
``python -m benchmarks.bench_ingest_sqlite --events 100000``.
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy import orm

from benchmarks import _data
from benchmarks._harness import Benchmark, Goal, main
from commhistory.crypto import Keyring
from commhistory.facade import CommHistory, open_repository
from commhistory.model import Event
from commhistory.store import SQLRepository
from commhistory.store import schema as store_schema
from commhistory.store.migrate import upgrade
from commhistory.store.protocol import IngestReport

EVENTS_ENV: Final = "COMMHISTORY_BENCH_EVENTS"
DEFAULT_EVENTS: Final = 1_000_000
BATCH_SIZE: Final = 5000
CORE_SAMPLE: Final = 200_000
ORM_SAMPLE: Final = 20_000
GOAL: Final = Goal(text=">= 0.5x raw executemany (time ratio <= 2.0)", max_ratio=2.0)

Row = tuple[Any, ...]


def event_count() -> int:
    """The number of events to ingest: ``$COMMHISTORY_BENCH_EVENTS`` or 1,000,000."""
    return int(os.environ.get(EVENTS_ENV, DEFAULT_EVENTS))


def event_columns() -> tuple[str, ...]:
    """The ``events`` table's columns, in schema order."""
    return tuple(c.name for c in store_schema.events.columns)


def build_events(n_events: int) -> tuple[_data.HistorySpec, list[Event]]:
    """Return the history spec and its events, built in memory."""
    spec = _data.HistorySpec.for_events(n_events, n_contacts=max(1, n_events // 100))
    return spec, list(_data.events(spec))


def _remove_db(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(str(path) + suffix).unlink(missing_ok=True)


def _copy_db(template: Path, target: Path) -> None:
    _remove_db(target)
    shutil.copyfile(template, target)


def _sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def raw_connection(path: Path) -> sqlite3.Connection:
    """Open *path* with :mod:`sqlite3` and the store's pragmas, in autocommit mode."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA busy_timeout = 60000")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def read_rows(path: Path, columns: Sequence[str]) -> list[Row]:
    """Read every ``events`` row back, in insertion (rowid) order."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute(f"SELECT {', '.join(columns)} FROM events ORDER BY rowid").fetchall()
    finally:
        conn.close()


def count_events(path: Path) -> tuple[int, int]:
    """Return ``(rows, distinct event ids)`` of the ``events`` table."""
    conn = sqlite3.connect(path)
    try:
        row = conn.execute("SELECT count(*), count(DISTINCT event_id) FROM events").fetchone()
        return int(row[0]), int(row[1])
    finally:
        conn.close()


def raw_insert(
    conn: sqlite3.Connection, columns: Sequence[str], rows: Sequence[Row], batch_size: int
) -> None:
    """Insert *rows* with ``executemany``, one ``BEGIN IMMEDIATE`` transaction per batch."""
    sql = f"INSERT INTO events ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
    for start in range(0, len(rows), batch_size):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(sql, rows[start : start + batch_size])
        conn.execute("COMMIT")


class SQLiteIngest:
    """The state of the SQLite ingest benchmarks: templates, inputs, captured rows.

    Args:
        n_events: How many events to ingest.
        batch_size: Items per transaction, for the repository and the baseline alike.
    """

    def __init__(self, n_events: int, batch_size: int = BATCH_SIZE) -> None:
        self.n_events = n_events
        self.batch_size = batch_size
        self.workdir = Path(tempfile.mkdtemp(prefix="commhistory-bench-sqlite-"))
        self.keyring = Keyring.generate()
        self.columns = event_columns()
        self.repo_template = self.workdir / "repo-template.db"
        self.raw_template = self.workdir / "raw-template.db"
        self.repo_db = self.workdir / "repo.db"
        self.raw_db = self.workdir / "raw.db"
        self.repo: CommHistory[SQLRepository] | None = None
        self.repo_used = False
        self.raw_conn: sqlite3.Connection | None = None
        self.raw_used = False
        self.rows: list[Row] | None = None
        self.report: IngestReport | None = None
        self.figures: dict[str, Any] = {}

        self.events: list[Event] = []
        self._prepared = False
        atexit.register(self.close)

    def prepare(self) -> None:
        """Build the inputs and the database templates, once (untimed)."""
        if self._prepared:
            return
        self._prepared = True
        spec, self.events = build_events(self.n_events)
        upgrade(_sqlite_url(self.raw_template))
        started = time.perf_counter()
        with open_repository(
            _sqlite_url(self.repo_template), self.keyring, batch_size=self.batch_size
        ) as repo:
            messages = repo.record_messages(_data.messages(spec))
        self.figures.update(
            events=len(self.events),
            messages=spec.n_messages,
            contacts_max=spec.n_contacts,
            batch_size=self.batch_size,
            untimed_messages_seconds=round(time.perf_counter() - started, 3),
            messages_inserted=messages.inserted,
        )

    # --------------------------------------------------------------- main benchmark

    def setup(self) -> None:
        """Make a fresh repository database and a fresh raw database ready."""
        self.prepare()
        if self.repo_used and self.rows is None:
            self._capture()
        if self.repo is None or self.repo_used:
            if self.repo is not None:
                self.repo.close()
            _copy_db(self.repo_template, self.repo_db)
            self.repo = open_repository(
                _sqlite_url(self.repo_db), self.keyring, batch_size=self.batch_size
            )
            self.repo_used = False
        if self.raw_conn is None or self.raw_used:
            if self.raw_conn is not None:
                self.raw_conn.close()
            _copy_db(self.raw_template, self.raw_db)
            self.raw_conn = raw_connection(self.raw_db)
            self.raw_used = False

    def _capture(self) -> None:
        assert self.repo is not None
        self.repo.close()
        self.repo = None
        self.figures["repo_db_mb"] = round(self.repo_db.stat().st_size / 1e6, 1)
        self.rows = read_rows(self.repo_db, self.columns)

    def candidate(self) -> None:
        """Ingest the events through the repository."""
        assert self.repo is not None
        assert not self.repo_used
        self.repo_used = True
        self.report = self.repo.record_events(self.events)

    def baseline(self) -> None:
        """Insert the captured rows with raw ``executemany``."""
        if self.rows is None:
            raise RuntimeError("the baseline needs the rows of a candidate run")
        assert self.raw_conn is not None
        assert not self.raw_used
        self.raw_used = True
        raw_insert(self.raw_conn, self.columns, self.rows, self.batch_size)

    def extra(self) -> dict[str, Any]:
        """Check both databases hold every event once; return the figures."""
        out = dict(self.figures, source_revision=_data.source_revision())
        if self.report is not None:
            out["report"] = {
                "inserted": self.report.inserted,
                "duplicates": self.report.duplicates,
                "rejected": self.report.rejected,
            }
        if self.raw_conn is not None:
            self.raw_conn.close()
            self.raw_conn = None
        if self.raw_used:
            out["raw_rows_stored"] = count_events(self.raw_db)[0]
        out["rows_identical_count"] = self.rows is not None and len(self.rows) == self.n_events
        return out

    # --------------------------------------------------------------- comparisons

    def sample(self, size: int) -> list[Row]:
        """The first *size* captured rows (running the repository once if needed)."""
        self.prepare()
        if self.rows is None:
            self.setup()
            self.candidate()
            self.setup()
        assert self.rows is not None
        return self.rows[:size]

    def fresh_raw(self, name: str) -> Path:
        """Copy the empty-schema template to a new file and return its path."""
        path = self.workdir / name
        _copy_db(self.raw_template, path)
        return path

    def close(self) -> None:
        """Close everything and delete the working directory."""
        if self.repo is not None:
            self.repo.close()
            self.repo = None
        if self.raw_conn is not None:
            self.raw_conn.close()
            self.raw_conn = None
        shutil.rmtree(self.workdir, ignore_errors=True)


class _Comparison:
    """One alternative way to insert a sample of the rows, against raw executemany."""

    def __init__(self, state: SQLiteIngest, size: int, kind: str) -> None:
        self.state = state
        self.size = size
        self.kind = kind
        self.rows: list[Row] = []
        self.dicts: list[dict[str, Any]] = []
        self.engine: sa.Engine | None = None
        self.conn: sqlite3.Connection | None = None
        self.path_alt: Path | None = None
        self.path_raw: Path | None = None
        self._runs = 0
        self.alt_used = False
        self.raw_used = False
        self.stored: dict[str, int] = {}

    def setup(self) -> None:
        """Fresh databases for whichever side ran last; the sample, as tuples and dicts."""
        from commhistory.store._engine import create_engine

        if not self.rows:
            self.rows = self.state.sample(self.size)
            columns = self.state.columns
            self.dicts = [dict(zip(columns, row, strict=True)) for row in self.rows]
        self._runs += 1
        if self.engine is None or self.alt_used:
            if self.engine is not None:
                self.engine.dispose()
            if self.alt_used and self.path_alt is not None:
                self.stored["stored"] = count_events(self.path_alt)[0]
            self.path_alt = self.state.fresh_raw(f"{self.kind}-{self._runs}.db")
            self.engine = create_engine(_sqlite_url(self.path_alt))
            with self.engine.connect():
                pass  # open the pooled connection (and set its pragmas) untimed
            self.alt_used = False
        if self.conn is None or self.raw_used:
            if self.conn is not None:
                self.conn.close()
            if self.raw_used and self.path_raw is not None:
                self.stored["raw_stored"] = count_events(self.path_raw)[0]
            self.path_raw = self.state.fresh_raw(f"{self.kind}-raw-{self._runs}.db")
            self.conn = raw_connection(self.path_raw)
            self.raw_used = False

    def _dispose(self) -> None:
        if self.engine is not None:
            self.engine.dispose()
            self.engine = None
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def core_dicts(self) -> None:
        """SQLAlchemy Core ``insert()`` with a list of dicts, one transaction per batch."""
        assert self.engine is not None
        self.alt_used = True
        table = store_schema.events
        size = self.state.batch_size
        with self.engine.connect() as conn:
            for start in range(0, len(self.dicts), size):
                with conn.begin():
                    conn.execute(table.insert(), self.dicts[start : start + size])

    def orm_per_row(self) -> None:
        """ORM ``Session.add`` per row, one commit per batch."""
        assert self.engine is not None
        self.alt_used = True
        size = self.state.batch_size
        with orm.Session(self.engine) as session:
            for start in range(0, len(self.dicts), size):
                for values in self.dicts[start : start + size]:
                    session.add(_EventRow(**values))
                session.commit()

    def raw(self) -> None:
        """Raw executemany of the same sample."""
        assert self.conn is not None
        self.raw_used = True
        raw_insert(self.conn, self.state.columns, self.rows, self.state.batch_size)

    def extra(self) -> dict[str, Any]:
        """Check both sides stored the sample."""
        self._dispose()
        if self.alt_used and self.path_alt is not None:
            self.stored["stored"] = count_events(self.path_alt)[0]
        if self.raw_used and self.path_raw is not None:
            self.stored["raw_stored"] = count_events(self.path_raw)[0]
        return {"rows": len(self.rows), **self.stored}


class _EventRow:
    """An ORM-mapped row of the ``events`` table (for the per-row comparison)."""

    def __init__(self, **values: Any) -> None:
        for key, value in values.items():
            setattr(self, key, value)


orm.registry().map_imperatively(_EventRow, store_schema.events)


def benchmarks() -> list[Benchmark]:
    """The SQLite ingest benchmarks; inputs are built at the first setup, not here."""
    state = SQLiteIngest(event_count())
    core = _Comparison(state, min(CORE_SAMPLE, state.n_events), "core")
    per_row = _Comparison(state, min(ORM_SAMPLE, state.n_events), "orm")
    return [
        Benchmark(
            name="ingest_sqlite.events",
            candidate=state.candidate,
            baseline=state.baseline,
            setup=state.setup,
            goal=GOAL,
            repeats=1,
            extra=state.extra,
            items=state.n_events,
        ),
        Benchmark(
            name="ingest_sqlite.core_dicts",
            candidate=core.core_dicts,
            baseline=core.raw,
            setup=core.setup,
            repeats=1,
            extra=core.extra,
            items=core.size,
        ),
        Benchmark(
            name="ingest_sqlite.orm_per_row",
            candidate=per_row.orm_per_row,
            baseline=per_row.raw,
            setup=per_row.setup,
            repeats=1,
            extra=per_row.extra,
            items=per_row.size,
        ),
    ]


def parse_size(argv: Sequence[str], env: str, option: str = "--events") -> list[str]:
    """Read ``OPTION N`` from *argv* into ``$ENV``; return the remaining arguments."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument(option, type=int, default=None)
    known, rest = parser.parse_known_args(argv)
    value = getattr(known, option.lstrip("-").replace("-", "_"))
    if value is not None:
        os.environ[env] = str(value)
    return rest


if __name__ == "__main__":
    sys.exit(main([benchmarks], parse_size(sys.argv[1:], EVENTS_ENV)))
