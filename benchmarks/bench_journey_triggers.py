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
* **Baseline**: the host doing it by hand: the stored-at bound, one ``SELECT``
  of the ``signup`` rows stored since its own last bound, and ``enroll`` for each
  (into a journey of another key, same definition); no wake read, no marks.

Both see the signups of both setups since their last call (about 200 a call).
Goal: the run costs at most 1.5x the hand-written logic (ratio <= 1.5).
SQLite only: on a shared PostgreSQL database the stored-at bound waits for the
other sessions' transactions.

Run: ``python -m benchmarks journey_triggers``.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from benchmarks._harness import Benchmark, Goal, main
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


def _setup(url: str) -> list[Benchmark]:
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

    def baseline() -> None:
        with store.transaction() as conn:
            bound = int(conn.exec_driver_sql("SELECT value FROM stored_seq").scalar_one()) + 1
            rows = conn.exec_driver_sql(
                "SELECT activity_id, contact_id, occurred_at, plain_properties FROM activities "
                "WHERE name = 'signup' AND stored_seq >= ? AND stored_seq < ? "
                "ORDER BY occurred_at, activity_id",
                (clock.last_bound, bound),
            ).all()
            for aid, cid, at, props in rows:
                when = datetime.fromtimestamp(at / 1_000_000, UTC)
                enroll(store, by_hand, cid, aid, when, properties=json.loads(props or "{}"))
        clock.last_bound = bound

    return [
        Benchmark(
            name="journey_triggers.sqlite.run",
            candidate=candidate,
            baseline=baseline,
            setup=clock.setup,
            goal=Goal(text="<= 1.5x the hand-written reads + enroll", max_ratio=1.5),
            repeats=5,
            items=2 * NEW,
        )
    ]


def benchmarks() -> list[Benchmark]:
    """Build the trigger benchmark on SQLite."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-triggers-"))
    return _setup(f"sqlite:///{tmp / 'triggers.db'}")


if __name__ == "__main__":
    sys.exit(main([benchmarks]))
