"""How big a history is on disk, how fast it goes in, how long ``repo.kpis`` takes.

Not a ratio benchmark: a probe whose figures feed ``docs/scaling.md``. For each
backend (SQLite in a temporary file; PostgreSQL in a fresh schema of
``$COMMHISTORY_TEST_POSTGRES_URL``, dropped at the end) it stores the history
of :mod:`benchmarks._data` (``--events`` events, five per message, one contact
per 100 events, three encrypted personal fields per event) through the public
API and prints:

* the wall time of ``repo.record_messages`` and ``repo.record_events`` (one
  call each, batches of 5,000) and the rate in rows per second;
* the wall time of ``repo.kpis(("campaign_id", "variant"))`` (best of three);
* the storage: the SQLite file size (after a checkpoint of the WAL) and, where
  SQLite has the ``dbstat`` table, bytes per table with its indexes; on
  PostgreSQL ``pg_total_relation_size`` per table (heap, indexes and TOAST,
  after ``VACUUM ANALYZE``); each also per event and per message.

Run: ``python -m benchmarks.scaling_probe --events 200000`` (``--backend
sqlite`` or ``postgres`` for one of them).
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

import psycopg

from benchmarks import _data
from benchmarks.bench_ingest_postgres import server_url
from commhistory.crypto import Keyring
from commhistory.facade import CommHistory, open_repository
from commhistory.store import SQLRepository

BATCH_SIZE: Final = 5000
TABLES: Final = ("contacts", "addresses", "messages", "events")


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def _load(repo: CommHistory[SQLRepository], spec: _data.HistorySpec) -> dict[str, float]:
    msg_s, _ = _timed(lambda: repo.record_messages(_data.messages(spec)))
    ev_s, report = _timed(lambda: repo.record_events(_data.events(spec)))
    if report.inserted != spec.n_events:
        raise RuntimeError(f"stored {report.inserted} events of {spec.n_events}")
    kpi_s = min(_timed(lambda: repo.kpis(("campaign_id", "variant")))[0] for _ in range(3))
    return {"messages_s": msg_s, "events_s": ev_s, "kpis_s": kpi_s}


def _sqlite_sizes(path: Path) -> dict[str, int]:
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        try:
            rows = conn.execute(
                "SELECT coalesce(m.tbl_name, d.name), sum(d.pgsize) FROM dbstat d "
                "LEFT JOIN sqlite_master m ON m.name = d.name GROUP BY 1"
            ).fetchall()
        except sqlite3.OperationalError:  # dbstat not compiled in
            rows = []
    finally:
        conn.close()
    sizes = {str(name): int(size) for name, size in rows if name in TABLES}
    sizes["total (file)"] = path.stat().st_size
    return sizes


def probe_sqlite(spec: _data.HistorySpec, keyring: Keyring) -> dict[str, Any]:
    """Store *spec* in a fresh SQLite file; return times and sizes."""
    workdir = Path(tempfile.mkdtemp(prefix="commhistory-scaling-"))
    try:
        path = workdir / "history.db"
        with open_repository(f"sqlite:///{path}", keyring, batch_size=BATCH_SIZE) as repo:
            times = _load(repo, spec)
        return {"times": times, "sizes": _sqlite_sizes(path)}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def probe_postgres(spec: _data.HistorySpec, keyring: Keyring) -> dict[str, Any]:
    """Store *spec* in a fresh PostgreSQL schema; return times and sizes."""
    url = server_url()
    schema = f"scaling_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        sep = "&" if "?" in url else "?"
        sa_url = f"{url}{sep}options={quote(f'-csearch_path={schema}', safe='')}"
        with open_repository(sa_url, keyring, batch_size=BATCH_SIZE) as repo:
            times = _load(repo, spec)
        with psycopg.connect(url, autocommit=True, options=f"-csearch_path={schema}") as conn:
            conn.execute("VACUUM ANALYZE")
            sizes: dict[str, int] = {}
            for table in TABLES:
                row = conn.execute(
                    "SELECT pg_total_relation_size(%s::regclass)", (f"{schema}.{table}",)
                ).fetchone()
                assert row is not None
                sizes[table] = int(row[0])
            row = conn.execute(
                "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relkind = 'r'",
                (schema,),
            ).fetchone()
            assert row is not None
            sizes["total (schema)"] = int(row[0])
        return {"times": times, "sizes": sizes}
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def report(backend: str, spec: _data.HistorySpec, result: dict[str, Any]) -> str:
    """Format one backend's figures as text."""
    t = result["times"]
    lines = [
        f"{backend}: {spec.n_events:,} events, {spec.n_messages:,} messages, "
        f"<= {spec.n_contacts:,} contacts (revision {_data.source_revision()})",
        f"  record_messages  {t['messages_s']:8.1f} s  "
        f"{spec.n_messages / t['messages_s']:10,.0f} messages/s",
        f"  record_events    {t['events_s']:8.1f} s  "
        f"{spec.n_events / t['events_s']:10,.0f} events/s",
        f"  kpis (best of 3) {t['kpis_s']:8.3f} s",
        f"  {'table':<16}{'MB':>10}{'B/event':>10}{'B/message':>11}",
    ]
    for name, size in result["sizes"].items():
        lines.append(
            f"  {name:<16}{size / 1e6:10.1f}{size / spec.n_events:10.0f}"
            f"{size / spec.n_messages:11.0f}"
        )
    return "\n".join(lines)


def run(argv: list[str] | None = None) -> None:
    """Parse the arguments, run the probe and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both")
    args = parser.parse_args(argv)
    spec = _data.HistorySpec.for_events(args.events, n_contacts=max(1, args.events // 100))
    keyring = Keyring.generate()
    probes = {"sqlite": probe_sqlite, "postgres": probe_postgres}
    for backend, probe in probes.items():
        if args.backend in (backend, "both"):
            print(report(backend, spec, probe(spec, keyring)), flush=True)


if __name__ == "__main__":
    run()
