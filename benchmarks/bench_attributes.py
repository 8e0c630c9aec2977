"""Contact attributes: ``repo.record_contacts`` against hand-written bulk writes of the same rows.

* **Input**: N contacts (default 100,000; ``--contacts`` or
  ``$COMMHISTORY_BENCH_CONTACTS``), each with one update of three attributes:
  two plain (``tier``, an enum; ``spend``, a decimal) and one personal
  (``full_name``, encrypted under the contact's data key).
* **Untimed setup**: a fresh database with the schema declared; the updates
  built in memory.
* **Timed (candidate)**: one ``repo.record_contacts(updates)``, batches of
  5,000: schema validation, contact rows with new wrapped data keys, a look-up
  of stored versions, encryption, the attribute rows.
* **Timed (baseline)**: the rows the repository wrote (``contacts`` and
  ``contact_attributes``), read back, written straight into a fresh database
  with the same migration, one transaction per 5,000 contacts: ``executemany``
  on SQLite (``attributes.sqlite``), psycopg's binary ``COPY`` on PostgreSQL
  (``attributes.postgres``, server from ``$COMMHISTORY_TEST_POSTGRES_URL``).

Goal: throughput >= 0.5x the baseline (time ratio <= 2.0). On SQLite both run
in this process, so their CPU times (``time.process_time``) are reported too
(``candidate_cpu_s``, ``baseline_cpu_s``, ``cpu_ratio``): on a shared machine
the wall-clock ratio also counts the time other processes held the core.

Run: ``python -m benchmarks attributes`` or
``python -m benchmarks.bench_attributes --contacts 20000``.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

from benchmarks import _data
from benchmarks._harness import Benchmark, Goal, main
from benchmarks.bench_ingest_postgres import Schemas, pg_type, server_url
from benchmarks.bench_ingest_sqlite import parse_size, raw_connection
from commhistory.contacts import AttributeDefinition, AttributeSchema, AttributeType
from commhistory.crypto import Keyring
from commhistory.facade import CommHistory, open_repository
from commhistory.model import ContactUpdate
from commhistory.store import SQLRepository
from commhistory.store import schema as store_schema
from commhistory.store.migrate import upgrade
from commhistory.store.protocol import IngestReport

CONTACTS_ENV: Final = "COMMHISTORY_BENCH_CONTACTS"
DEFAULT_CONTACTS: Final = 100_000
BATCH_SIZE: Final = 5000
GOAL: Final = Goal(text=">= 0.5x hand-written bulk insert (time ratio <= 2.0)", max_ratio=2.0)
AT: Final = datetime(2026, 4, 1, tzinfo=UTC)
SCHEMA: Final = AttributeSchema(
    [
        AttributeDefinition(
            name="tier", type=AttributeType.ENUM, values=("gold", "silver", "bronze")
        ),
        AttributeDefinition(name="spend", type=AttributeType.DECIMAL),
        AttributeDefinition(name="full_name", type=AttributeType.STR, personal=True),
    ]
)
TABLES: Final = ("contacts", "contact_attributes")

Row = tuple[Any, ...]


def contact_count() -> int:
    """The number of contacts: ``$COMMHISTORY_BENCH_CONTACTS`` or 100,000."""
    return int(os.environ.get(CONTACTS_ENV, DEFAULT_CONTACTS))


def build_updates(n: int) -> list[ContactUpdate]:
    """One update of two plain and one personal attribute per contact."""
    tiers = ("gold", "silver", "bronze")
    return [
        ContactUpdate(
            contact_id=f"c{i:07d}",
            attributes={
                "tier": tiers[i % 3],
                "spend": Decimal(i % 100_000) / 100,
                "full_name": f"Customer {i} Yamada",
            },
            at=AT,
        )
        for i in range(n)
    ]


def columns(table: str) -> tuple[str, ...]:
    """The table's columns, in schema order."""
    return tuple(c.name for c in store_schema.metadata.tables[table].columns)


class AttributeUpserts:
    """The state of one backend's benchmark: fresh stores, inputs, captured rows.

    Args:
        dialect: ``"sqlite"`` or ``"postgresql"``.
        n: How many contacts.
    """

    def __init__(self, dialect: str, n: int) -> None:
        self.dialect = dialect
        self.n = n
        self.keyring = Keyring.generate()
        self.updates: list[ContactUpdate] = []
        self.repo: CommHistory[SQLRepository] | None = None
        self.repo_used = False
        self.raw: Any = None
        self.raw_used = False
        self.rows: dict[str, list[Row]] | None = None
        self.report: IngestReport | None = None
        self.workdir = Path(tempfile.mkdtemp(prefix="commhistory-bench-attrs-"))
        self.schemas: Any = None
        self.repo_target = ""
        self.raw_target = ""
        self.figures: dict[str, Any] = {"contacts": n, "batch_size": BATCH_SIZE}

    # ------------------------------------------------------------------ stores

    def _fresh_target(self, tag: str) -> str:
        if self.dialect == "sqlite":
            path = self.workdir / f"{tag}.db"
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
            return str(path)
        if self.schemas is None:
            self.schemas = Schemas(server_url())
        return str(self.schemas.create())

    def _url(self, target: str) -> str:
        if self.dialect == "sqlite":
            return f"sqlite:///{target}"
        return str(self.schemas.sqlalchemy_url(target))

    def _drop(self, target: str) -> None:
        if target and self.dialect == "postgresql":
            self.schemas.drop(target)

    def setup(self) -> None:
        """A fresh declared repository and a fresh migrated raw database, as needed."""
        if not self.updates:
            self.updates = build_updates(self.n)
        if self.repo_used and self.rows is None:
            self._capture()
        if self.repo is None or self.repo_used:
            if self.repo is not None:
                self.repo.close()
            self._drop(self.repo_target)
            self.repo_target = self._fresh_target("repo")
            self.repo = open_repository(
                self._url(self.repo_target), self.keyring, batch_size=BATCH_SIZE
            )
            self.repo.declare_attributes(SCHEMA)
            self.repo_used = False
        if self.raw is None or self.raw_used:
            if self.raw is not None:
                self.raw.close()
            self._drop(self.raw_target)
            self.raw_target = self._fresh_target("raw")
            upgrade(self._url(self.raw_target))
            if self.dialect == "sqlite":
                self.raw = raw_connection(Path(self.raw_target))
            else:
                self.raw = self.schemas.connect(self.raw_target)
            self.raw_used = False

    def _capture(self) -> None:
        assert self.repo is not None
        rows: dict[str, list[Row]] = {}
        with self.repo.store.engine.connect() as conn:
            for table in TABLES:
                cols = ", ".join(columns(table))
                order = "contact_id" if table == "contacts" else "contact_id, name, valid_from"
                rows[table] = [
                    tuple(r) for r in conn.exec_driver_sql(f"SELECT {cols} FROM {table} "
                                                           f"ORDER BY {order}")
                ]  # fmt: skip
        self.rows = rows

    # ------------------------------------------------------------------ timed

    def candidate(self) -> None:
        """Store the updates through the public call."""
        assert self.repo is not None
        assert not self.repo_used
        self.repo_used = True
        started = time.process_time()
        self.report = self.repo.record_contacts(self.updates)
        self._cpu("candidate_cpu_s", started)

    def _cpu(self, key: str, started: float) -> None:
        if self.dialect == "sqlite":  # PostgreSQL's server work is not this process's
            self.figures[key] = round(time.process_time() - started, 3)

    def baseline(self) -> None:
        """Write the captured rows by hand: ``executemany`` or binary ``COPY``."""
        if self.rows is None:
            raise RuntimeError("the baseline needs the rows of a candidate run")
        assert self.raw is not None
        assert not self.raw_used
        self.raw_used = True
        contacts, attributes = self.rows["contacts"], self.rows["contact_attributes"]
        per = len(attributes) // max(1, len(contacts))
        started = time.process_time()
        for start in range(0, len(contacts), BATCH_SIZE):
            chunk = {
                "contacts": contacts[start : start + BATCH_SIZE],
                "contact_attributes": attributes[start * per : (start + BATCH_SIZE) * per],
            }
            if self.dialect == "sqlite":
                self._executemany(chunk)
            else:
                self._copy(chunk)
        self._cpu("baseline_cpu_s", started)

    def _executemany(self, chunk: dict[str, list[Row]]) -> None:
        conn: sqlite3.Connection = self.raw
        conn.execute("BEGIN IMMEDIATE")
        for table in TABLES:
            cols = columns(table)
            conn.executemany(
                f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                chunk[table],
            )
        conn.execute("COMMIT")

    def _copy(self, chunk: dict[str, list[Row]]) -> None:
        conn = self.raw
        with conn.transaction(), conn.cursor() as cur:
            for table in TABLES:
                cols = columns(table)
                types = [pg_type(store_schema.metadata.tables[table].c[c]) for c in cols]
                with cur.copy(
                    f"COPY {table} ({', '.join(cols)}) FROM STDIN (FORMAT BINARY)"
                ) as copy:
                    copy.set_types(types)
                    for row in chunk[table]:
                        copy.write_row(row)

    def extra(self) -> dict[str, Any]:
        """Check both stores hold the same number of rows; clean up; return the figures."""
        out = dict(self.figures, source_revision=_data.source_revision())
        if "candidate_cpu_s" in out and out.get("baseline_cpu_s"):
            out["cpu_ratio"] = round(out["candidate_cpu_s"] / out["baseline_cpu_s"], 3)
        if self.report is not None:
            out["report"] = {
                "inserted": self.report.inserted,
                "duplicates": self.report.duplicates,
                "rejected": self.report.rejected,
            }
        if self.rows is not None:
            out["rows"] = {t: len(r) for t, r in self.rows.items()}
        if self.raw is not None:
            if self.raw_used:
                out["raw_attribute_rows"] = int(
                    self.raw.execute("SELECT count(*) FROM contact_attributes").fetchone()[0]
                )
            self.raw.close()
            self.raw = None
        if self.repo is not None:
            self.repo.close()
            self.repo = None
        self._drop(self.repo_target)
        self._drop(self.raw_target)
        shutil.rmtree(self.workdir, ignore_errors=True)
        return out


def _benchmark(dialect: str, n: int) -> Benchmark:
    state = AttributeUpserts(dialect, n)
    return Benchmark(
        name=f"attributes.{dialect}",
        candidate=state.candidate,
        baseline=state.baseline,
        setup=state.setup,
        goal=GOAL,
        repeats=1,
        extra=state.extra,
        items=n,
    )


def benchmarks() -> Sequence[Benchmark]:
    """Upserts of 2 plain + 1 personal attribute per contact, on SQLite and PostgreSQL."""
    n = contact_count()
    return [_benchmark("sqlite", n), _benchmark("postgresql", n)]


if __name__ == "__main__":
    sys.exit(main([benchmarks], parse_size(sys.argv[1:], CONTACTS_ENV, "--contacts")))
