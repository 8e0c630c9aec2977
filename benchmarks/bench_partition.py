"""Monthly partitions on PostgreSQL: ingest and KPIs, partitioned against unpartitioned.

What is measured (``partition.*``; skipped without a PostgreSQL server):

* **Input (untimed)**: a history of 24 months, the same number of messages each
  month (default 250 a month, ``$COMMHISTORY_BENCH_PARTITION_MESSAGES`` in all),
  three events each with three encrypted personal fields, built in memory from
  :mod:`benchmarks._data` (one seeded spec per month).
* **Untimed setup**: before each timed ingest, a fresh schema at the newest
  revision; the partitioned one converted with
  :func:`commhistory.store.partition.enable` (a partition per month of the
  history, three ahead, and ``DEFAULT``). The reads use the two schemas the
  last ingests filled.
* ``partition.ingest``: candidate ``record_messages`` then ``record_events`` of
  the whole history into the partitioned schema (the key-claiming trigger on
  every row); baseline the same into the unpartitioned one. Goal: ratio
  <= 1.5 (partitioning costs at most half again on ingest).
* ``partition.kpis``: ``repo.kpis(("campaign_id", "variant"))`` over all of
  history, partitioned against unpartitioned (after ``VACUUM ANALYZE``).
  Goal: ratio <= 1.2.
* ``partition.kpis_month``: the same with ``since``/``until`` one month; the
  partitioned plan reads one month's partition. Goal: ratio <= 1.0.
* Reported once (extra of ``partition.kpis_month``): the seconds of a
  retention purge of the oldest 12 months (``delete_history``), by dropping
  partitions against ``DELETE``; then the seconds of
  :func:`~commhistory.store.partition.enable` converting the unpartitioned
  schema's remaining 12 months.

Run: ``python -m benchmarks partition``.
"""

from __future__ import annotations

import atexit
import os
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final

import sqlalchemy as sa

from benchmarks import _data
from benchmarks._harness import Benchmark, Goal, main
from commhistory.crypto import Keyring
from commhistory.facade import open_repository
from commhistory.model import Event, Message
from commhistory.store import partition
from commhistory.store.migrate import upgrade

URL_ENV: Final = "COMMHISTORY_TEST_POSTGRES_URL"
SIZE_ENV: Final = "COMMHISTORY_BENCH_PARTITION_MESSAGES"
MONTHS: Final = 24
FIRST: Final = datetime(2024, 1, 3, tzinfo=UTC)
NOW: Final = datetime(2025, 12, 20, tzinfo=UTC)
BATCH_SIZE: Final = 5000


def _server() -> str:
    url = os.environ.get(URL_ENV, "postgresql://postgres@127.0.0.1:5432/test")
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return url


def _month(index: int) -> datetime:
    year, month = divmod(FIRST.month - 1 + index, 12)
    return FIRST.replace(year=FIRST.year + year, month=month + 1)


def build_history(n_messages: int) -> tuple[list[Message], list[Event]]:
    """The history: ``n_messages`` spread evenly over 24 months, three events each."""
    per = max(1, n_messages // MONTHS)
    messages: list[Message] = []
    events: list[Event] = []
    for k in range(MONTHS):
        spec = _data.HistorySpec(
            n_messages=per,
            events_per_message=3,
            n_contacts=max(1, per // 4),
            seed=1000 + k,
            prefix=f"p{k:02d}",
            start=_month(k),
        )
        messages.extend(_data.messages(spec))
        events.extend(_data.events(spec))
    return messages, events


class _Schemas:
    """Two fresh schemas (partitioned, unpartitioned), remade before each timed run."""

    def __init__(self, server: str) -> None:
        self.admin = sa.create_engine(server, poolclass=sa.NullPool)
        self.server = server
        self.names: dict[str, str] = {}
        self.keyring = Keyring.generate()
        atexit.register(self.drop)

    def url(self, kind: str) -> str:
        sep = "&" if "?" in self.server else "?"
        return f"{self.server}{sep}options=-csearch_path%3D{self.names[kind]}"

    def drop(self) -> None:
        with self.admin.begin() as conn:
            for name in self.names.values():
                conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {name} CASCADE")
        self.names = {}

    def reset(self, kind: str) -> None:
        """Make a fresh schema of *kind* (``partitioned`` or ``plain``), dropping the old one."""
        old = self.names.pop(kind, None)
        name = f"bench_part_{uuid.uuid4().hex[:12]}"
        with self.admin.begin() as conn:
            if old is not None:
                conn.exec_driver_sql(f"DROP SCHEMA {old} CASCADE")
            conn.exec_driver_sql(f"CREATE SCHEMA {name}")
        self.names[kind] = name
        engine = sa.create_engine(self.url(kind), poolclass=sa.NullPool)
        try:
            upgrade(engine)
            if kind == "partitioned":
                # A partition for every month from the first, three ahead of NOW.
                partition.enable(engine, ahead_months=3, now=NOW)
                with engine.begin() as conn:
                    for k in range(MONTHS):
                        partition.ensure_partitions(conn, ahead_months=0, now=_month(k))
        finally:
            engine.dispose()

    def ingest(self, kind: str, messages: list[Message], events: list[Event]) -> None:
        with open_repository(self.url(kind), self.keyring, batch_size=BATCH_SIZE) as repo:
            report = repo.record_messages(messages)
            report += repo.record_events(events)
        assert report.inserted == len(messages) + len(events), report

    def analyze(self) -> None:
        for kind in self.names:
            engine = sa.create_engine(self.url(kind), poolclass=sa.NullPool)
            try:
                with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                    conn.exec_driver_sql("VACUUM ANALYZE messages")
                    conn.exec_driver_sql("VACUUM ANALYZE events")
            finally:
                engine.dispose()


def benchmarks() -> Sequence[Benchmark]:
    """The partition benchmarks (none without a reachable PostgreSQL server)."""
    server = _server()
    try:
        probe = sa.create_engine(server, poolclass=sa.NullPool)
        with probe.connect():
            pass
        probe.dispose()
    except sa.exc.OperationalError:
        return []
    n = int(os.environ.get(SIZE_ENV, "6000"))
    messages, events = build_history(n)
    schemas = _Schemas(server)
    repos: dict[str, Any] = {}

    def ingest(kind: str) -> None:
        schemas.ingest(kind, messages, events)

    # The harness runs setup, candidate, setup, baseline, ...: each setup makes a fresh
    # schema for the call that follows it. The last two leave both schemas filled.
    order = ["partitioned", "plain"]
    calls: list[int] = []

    def ingest_setup() -> None:
        schemas.reset(order[len(calls) % 2])
        calls.append(1)

    def kpis(kind: str, **window: Any) -> Any:
        if kind not in repos:
            repos[kind] = open_repository(schemas.url(kind), schemas.keyring)
        return repos[kind].kpis(("campaign_id", "variant"), **window)

    def prepare_reads() -> None:
        schemas.analyze()
        assert kpis("partitioned") == kpis("plain")

    month = {"since": _month(6), "until": _month(7)}

    def retention() -> dict[str, Any]:
        cutoff = _month(12)
        out: dict[str, Any] = {}
        for kind in ("partitioned", "plain"):
            store = repos[kind].store
            started = time.perf_counter()
            counts = store.privacy_store.delete_history(cutoff)
            out[f"purge_12_months_{kind}_s"] = round(time.perf_counter() - started, 3)
            out[f"purge_12_months_{kind}_rows"] = counts.messages + counts.events
            out[f"purge_12_months_{kind}_dropped"] = len(counts.dropped_partitions)
        for repo in repos.values():
            repo.close()
        repos.clear()
        # The conversion of a populated database: the unpartitioned schema's remaining
        # 12 months, converted in one transaction.
        started = time.perf_counter()
        report = partition.enable(schemas.url("plain"), ahead_months=3, now=NOW)
        out["enable_s"] = round(time.perf_counter() - started, 3)
        out["enable_rows"] = report.copied
        schemas.drop()
        return out

    ready: list[bool] = []

    def reads_setup() -> None:
        if not ready:
            prepare_reads()
            ready.append(True)

    items = len(messages) + len(events)
    return [
        Benchmark(
            name="partition.ingest",
            setup=ingest_setup,
            candidate=lambda: ingest("partitioned"),
            baseline=lambda: ingest("plain"),
            goal=Goal(text="<= 1.5x the unpartitioned ingest", max_ratio=1.5),
            repeats=2,
            items=items,
            extra=lambda: {"messages": len(messages), "events": len(events), "months": MONTHS},
        ),
        Benchmark(
            name="partition.kpis",
            setup=reads_setup,
            candidate=lambda: kpis("partitioned"),
            baseline=lambda: kpis("plain"),
            goal=Goal(text="<= 1.2x unpartitioned, whole history", max_ratio=1.2),
            repeats=5,
        ),
        Benchmark(
            name="partition.kpis_month",
            setup=reads_setup,
            candidate=lambda: kpis("partitioned", **month),
            baseline=lambda: kpis("plain", **month),
            goal=Goal(text="<= 1.0x unpartitioned, one month", max_ratio=1.0),
            repeats=5,
            extra=retention,
        ),
    ]


if __name__ == "__main__":
    main([benchmarks])
