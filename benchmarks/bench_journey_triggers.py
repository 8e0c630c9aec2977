"""Journey triggers: one run of ``run_triggers`` against the same logic written by hand.

What is measured (``journey_triggers.sqlite.run``):

* **Data (untimed)**: 300,000 ``page_view`` activities of 50,000 contacts
  (``$COMMHISTORY_BENCH_TRIGGER_ROWS``), all within the last day, written straight
  into ``activities``; before every timed call, 100 new ``signup`` activities of
  new contacts are recorded through ``repo.record_activities``.
* **Candidate**: ``run_triggers(repo.store, [welcome], now)``: the signups stored
  since its last run are read after its mark and enrolled (each through
  ``enroll``), the wake feed is read (every activity and event of the last day
  not read before, grouped per contact) and the marks are stored.
* **Baseline**: the host doing it by hand: the stored-at bound (the backend's, as
  the analytics export takes it), one ``SELECT``
  of the ``signup`` rows stored since its own last bound, and ``enroll`` for each
  (into a journey of another key, same definition); no wake read, no marks.

Both see the signups of both setups since their last call (about 200 a call).
Goal: the run costs at most 1.5x the hand-written logic (ratio <= 1.5).
``journey_triggers.postgres.run`` does the same on PostgreSQL when the server
answers (``$COMMHISTORY_TEST_POSTGRES_URL``), in a database of its own (the
stored-at bound waits for the transactions of its database only); the rows are
loaded with one ``INSERT ... SELECT`` from ``generate_series``.

Run: ``python -m benchmarks journey_triggers``.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import tempfile
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from benchmarks._harness import Benchmark, Goal, main
from benchmarks.bench_can_send import URL_ENV, postgres_reachable
from commhistory.crypto import Keyring
from commhistory.facade import CommHistory, open_repository
from commhistory.journeys import Journey
from commhistory.journeys.engine import enroll
from commhistory.journeys.triggers import run_triggers
from commhistory.model import Activity
from commhistory.store import SQLRepository

ROWS: Final = int(os.environ.get("COMMHISTORY_BENCH_TRIGGER_ROWS", "300000"))
NEW: Final = 100
T0: Final = datetime(2026, 3, 2, tzinfo=UTC)
WELCOME: Final = Path(__file__).resolve().parent.parent / "examples" / "journeys" / "welcome.json"


def _load(repo: CommHistory[SQLRepository]) -> None:
    base = int((T0 - timedelta(days=1)).timestamp() * 1_000_000)
    step = 86_400_000_000 // ROWS
    if repo.store.dialect == "postgresql":
        with repo.store.transaction() as conn:
            conn.exec_driver_sql(
                "INSERT INTO activities (activity_id, contact_id, name, occurred_at) "
                "SELECT 'pv' || i, 'c' || (i %% 50000), 'page_view', "
                "%s::int8 + i::int8 * %s::int8 "
                "FROM generate_series(0, %s - 1) AS i",
                (base, step, ROWS),
            )
        with repo.store.transaction() as conn:
            conn.exec_driver_sql("ANALYZE activities")
        return
    rows = [(f"pv{i}", f"c{i % 50_000}", "page_view", base + i * step) for i in range(ROWS)]
    with repo.store.transaction() as conn:
        raw: Any = conn.connection.driver_connection
        cur = raw.cursor()
        cur.executemany(
            "INSERT INTO activities (activity_id, contact_id, name, occurred_at) "
            "VALUES (?, ?, ?, ?)",
            rows,
        )
        cur.close()
        conn.exec_driver_sql("ANALYZE")


class _Clock:
    """The simulated clock and the rows both callables consume."""

    def __init__(self, repo: CommHistory[SQLRepository]) -> None:
        self.repo = repo
        self.tick = 0
        self.last_bound = 0

    @property
    def now(self) -> datetime:
        return T0 + timedelta(minutes=self.tick)

    def setup(self) -> None:
        self.tick += 1
        self.repo.record_activities(
            Activity(
                activity_id=f"s{self.tick}-{i}",
                contact_id=f"n{self.tick}-{i}",
                name="signup",
                occurred_at=self.now - timedelta(seconds=1 + i),
            )
            for i in range(NEW)
        )


def _setup(url: str, backend: str) -> list[Benchmark]:
    repo = open_repository(url, Keyring.generate())
    repo.declare_activities({"signup": [], "page_view": []})
    _load(repo)
    welcome = Journey.load(WELCOME)
    by_hand = Journey.from_dict({**welcome.to_dict(), "key": "welcome-by-hand"})
    clock = _Clock(repo)
    store = repo.store
    run_triggers(store, [welcome], T0)  # the first run sets the marks

    def candidate() -> None:
        run_triggers(store, [welcome], clock.now)

    ph = store.backend.ph

    def baseline() -> None:
        with store.transaction() as conn:
            # The stored-at bound as the analytics export takes it (SQLite: the counter).
            bound = store.backend.stored_seq_bound(conn)
            rows = conn.exec_driver_sql(
                "SELECT activity_id, contact_id, occurred_at, plain_properties FROM activities "
                f"WHERE name = 'signup' AND stored_seq >= {ph} AND stored_seq < {ph} "
                "ORDER BY occurred_at, activity_id",
                (clock.last_bound, bound),
            ).all()
            for aid, cid, at, props in rows:
                when = datetime.fromtimestamp(at / 1_000_000, UTC)
                enroll(store, by_hand, cid, aid, when, properties=json.loads(props or "{}"))
        clock.last_bound = bound

    return [
        Benchmark(
            name=f"journey_triggers.{backend}.run",
            candidate=candidate,
            baseline=baseline,
            setup=clock.setup,
            goal=Goal(text="<= 1.5x the hand-written reads + enroll", max_ratio=1.5),
            repeats=5,
            items=2 * NEW,
        )
    ]


def _fresh_pg_database() -> str:
    """A database of its own, dropped at exit.

    The stored-at bound waits for this database's transactions only, so other
    sessions on the shared server hold nothing back.
    """
    import psycopg

    base = os.environ.get(URL_ENV) or "postgresql://postgres@127.0.0.1:5432/test"
    base = base.replace("postgresql+psycopg://", "postgresql://")
    name = f"bench_trig_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    atexit.register(_drop_pg_database, base, name)
    head, _, query = base.partition("?")
    return head.rsplit("/", 1)[0] + f"/{name}" + (f"?{query}" if query else "")


def _drop_pg_database(base: str, name: str) -> None:
    import psycopg

    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def benchmarks() -> list[Benchmark]:
    """Build the trigger benchmark on SQLite, and on PostgreSQL when reachable."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-triggers-"))
    out = _setup(f"sqlite:///{tmp / 'triggers.db'}", "sqlite")
    if postgres_reachable():
        out += _setup(_fresh_pg_database(), "postgres")
    return out


if __name__ == "__main__":
    sys.exit(main([benchmarks]))
