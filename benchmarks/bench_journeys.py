"""``journey_due(now)`` over a store of journey enrollments against hand-written SQL.

The store holds ``$COMMHISTORY_BENCH_JOURNEY_ENROLLMENTS`` enrollments
(default 50,000; ``--full``: 1,000,000, the issue's size) on one five-step
journey (:data:`JOURNEY`: send ``hello``, wait two days, branch on "opened
``hello`` within three days" to ``tips`` or ``reminder``, both sends; goals: a
``purchase`` activity, an email unsubscribe). The rows are loaded directly with
bulk SQL (untimed), as a store looks after weeks of traffic:

* 40 % ended (completed), 10 % waiting for the host to record a handed-out
  send (``wake_at`` NULL), the rest waiting with ``wake_at`` later than
  :data:`NOW` (the end of a wait, the next hourly look at a branch);
* ``$COMMHISTORY_BENCH_JOURNEY_DUE_SHARE`` of them (default 1 %, ``--due-share``)
  have ``wake_at`` in the five minutes before :data:`NOW`, as a scheduler
  calling ``due`` every minute or few finds them (with the branch's hourly
  re-check, about 1 % of a population that mostly waits at branches wakes
  per minute). Of those: 15 % just entered (``hello`` is due), 15 % had
  ``hello`` recorded (they move on to the wait), 15 % end their wait (to the
  branch: a third opened ``hello`` and get ``tips``, the rest stay), 45 % are
  at the branch's hourly look (10 % opened: ``tips``; the deadline passed for
  about a seventh: ``reminder``; the rest stay), 10 % had ``reminder`` or
  ``tips`` recorded (they complete); one in 50 purchased and one in 50
  unsubscribed after entering (goals: they end, nothing is handed out);
* every enrollment past ``hello`` has its intents in ``journey_intents``
  (recorded, the message id being the key); a third of the ended ones and
  some of the waking ones have an ``opened`` event on ``hello``;
* the waking contacts are reachable for send planning: an email address (an
  old transactional message) and a marketing consent grant on email, stored
  through the public API (untimed), so ``due``'s send planning gate lets
  every send go and the candidate hands out what the baseline claims.

``journey_due.<db>`` times the public :meth:`CommHistory.journey_due` at
:data:`NOW`, end to end (it screens the intents with send planning, one
``plan_send`` per batch, and claims them), against a hand-written
baseline of the same job in the same run, alternating: one ``SELECT`` of the
waking rows joined to what the journey looks at (the ``hello`` intent, the
current step's intent, the first open, purchase and unsubscribe), the next
position computed in straight Python for this one journey (no send planning), then one
``UPDATE ... FROM`` the new values with the revision check ``RETURNING`` the
rows moved and one multi-row ``INSERT ... ON CONFLICT DO NOTHING RETURNING``
of the intent keys, in one transaction. Before each timed run the waking rows
are put back and the intents claimed at :data:`NOW` deleted (untimed; on
PostgreSQL followed by ``VACUUM``). Both must claim the same intents and leave
the same rows (``same_answer``). Goal: at most 1.5x the baseline.
``journey_due_1s.<db>`` times the same call again for the issue's absolute goal:
at most 1 s (meant at ``--full``; reported at any size).

``journey_due_idle.<db>`` times ``journey_due`` when nothing is due (just
before the waking rows' window): one search of the ``(status, wake_at)``
index. Goal: at most 20 ms.

Run: ``python -m benchmarks.bench_journeys [--full] [--enrollments N] [--due-share F]``.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from benchmarks._harness import Benchmark, Goal, main
from benchmarks.bench_can_send import _fresh_pg_schema, postgres_reachable
from commhistory.crypto import Keyring
from commhistory.facade import CommHistory, open_repository
from commhistory.journeys import Journey, intent_key
from commhistory.journeys.engine import enrollment_id
from commhistory.model import (
    Channel,
    ConsentAction,
    ConsentEvent,
    ConsentMethod,
    Direction,
    Message,
    Purpose,
)
from commhistory.normalize.time import to_micros
from commhistory.store import SQLRepository

ENROLLMENTS_ENV = "COMMHISTORY_BENCH_JOURNEY_ENROLLMENTS"
SHARE_ENV = "COMMHISTORY_BENCH_JOURNEY_DUE_SHARE"
FULL = 1_000_000
GOAL = Goal(text="<= 1.5x hand-written SQL of the same job", max_ratio=1.5)
SECONDS_GOAL = Goal(text="<= 1 s (the issue's goal at 1M enrollments)", max_seconds=1.0)
IDLE_GOAL = Goal(text="<= 20 ms with nothing due", max_seconds=0.02)
NOW = datetime(2026, 6, 10, 3, 0, tzinfo=UTC)
IDLE = NOW - timedelta(minutes=10)
"""Before every waking row's ``wake_at``: nothing is due."""

JOURNEY = Journey.from_dict(
    {
        "key": "bench-welcome",
        "version": 1,
        "trigger": {"type": "activity", "name": "signup"},
        "steps": [
            {"type": "send", "id": "hello", "template": "w1", "channel": "email",
             "next": "wait-2d"},
            {"type": "wait", "id": "wait-2d", "delay": "2d", "next": "opened-hello"},
            {"type": "branch", "id": "opened-hello",
             "condition": {"event": "opened", "of_step": "hello"}, "within": "3d",
             "then": "tips", "otherwise": "reminder"},
            {"type": "send", "id": "reminder", "template": "w2", "channel": "email"},
            {"type": "send", "id": "tips", "template": "w3", "channel": "email"},
        ],
        "goals": [{"type": "activity", "activity": "purchase"},
                  {"type": "unsubscribe", "channel": "email"}],
    }
)  # fmt: skip
"""The benchmark's journey: five steps, two goals."""

US = 1
MINUTE = 60_000_000 * US
HOUR = 60 * MINUTE
DAY = 24 * HOUR
NOW_US = to_micros(NOW)


def enrollment_count() -> int:
    """Enrollments in the store: ``$COMMHISTORY_BENCH_JOURNEY_ENROLLMENTS`` or 50,000."""
    return int(os.environ.get(ENROLLMENTS_ENV, "50000"))


def due_share() -> float:
    """The share of enrollments waking at :data:`NOW` (default 0.01)."""
    return float(os.environ.get(SHARE_ENV, "0.01"))


def _dump(value: dict[str, int]) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _key(eid: str, step: str) -> str:
    return intent_key(JOURNEY, eid, step, 1)


class Population:
    """The rows to load, built from the enrollment index alone (deterministic)."""

    def __init__(self, n: int, share: float) -> None:
        self.n = n
        self.share = share
        self.enrollments: list[tuple[Any, ...]] = []
        self.intents: list[tuple[Any, ...]] = []
        self.events: list[tuple[Any, ...]] = []
        self.activities: list[tuple[Any, ...]] = []
        self.contacts: list[tuple[Any, ...]] = []
        self.messages: list[tuple[Any, ...]] = []
        self.waking: list[tuple[Any, ...]] = []
        """The waking rows as loaded: step, since, status, visits, wake_at, revision, id."""
        self.reachable: list[str] = []
        """The waking contacts, given an address and consent (send planning lets them)."""
        threshold = int(share * 1_000_000)
        for i in range(n):
            self._one(i, (i * 7919) % 1_000_000 < threshold)

    def _one(self, i: int, waking: bool) -> None:
        cid = f"c{i:07d}"
        eid = enrollment_id(JOURNEY.key, f"signup-{i}")
        visits = {"hello": 1}
        status = "active"
        recorded: list[tuple[str, int]] = []  # intents recorded (step, at)
        claimed: str | None = None  # an intent handed out, not recorded
        opened: int | None = None
        if waking:
            wake = NOW_US - (i % 300) * 1_000_000
            kind = i % 20
            if kind < 3:  # just entered: hello is due
                entered = since = wake
            elif kind < 6:  # hello recorded: on to the wait
                entered = since = wake - 10 * MINUTE
                recorded.append(("hello", wake))
            elif kind < 9:  # the wait ends: to the branch
                since = wake - 2 * DAY
                entered = since - HOUR
                recorded.append(("hello", since))
                visits["wait-2d"] = 1
                if i % 3 == 0:
                    opened = since + 5 * HOUR
            elif kind < 18:  # the branch's hourly look, or its deadline
                since = NOW_US - (i * 104729) % (3 * DAY + 12 * HOUR)
                entered = since - 2 * DAY - HOUR
                recorded.append(("hello", since - 2 * DAY))
                visits["wait-2d"] = visits["opened-hello"] = 1
                if since + 3 * DAY <= NOW_US:
                    wake = since + 3 * DAY
                elif i % 10 == 0:
                    opened = since + (NOW_US - since) // 2
            else:  # reminder or tips recorded: it completes
                step = "reminder" if kind == 18 else "tips"
                since = wake - 10 * MINUTE
                entered = since - 5 * DAY
                recorded += [("hello", entered), (step, wake)]
                visits["wait-2d"] = visits["opened-hello"] = visits[step] = 1
            step_id: str | None = (
                "hello" if kind < 6
                else "wait-2d" if kind < 9
                else "opened-hello" if kind < 18
                else "reminder" if kind == 18
                else "tips"
            )  # fmt: skip
            if i % 50 == 1:
                self.activities.append((f"p{i}", cid, "purchase", (entered + NOW_US) // 2))
            elif i % 50 == 2:
                self._unsubscribe(i, cid, eid, (entered + NOW_US) // 2)
        else:
            bucket = i % 10
            entered = NOW_US - (i * 7) % (20 * DAY) - 6 * DAY
            if bucket < 4:
                step_id, since, status, wake = None, entered + 5 * DAY, "completed", None
                visits.update({"wait-2d": 1, "opened-hello": 1, "tips": 1})
                recorded += [("hello", entered), ("tips", entered + 3 * DAY)]
                opened = entered + HOUR if i % 3 == 0 else None
            elif bucket == 4:
                step_id, since, wake, claimed = "hello", entered, None, "hello"
            elif bucket < 7:
                step_id, since = "wait-2d", NOW_US - (i * 13) % (2 * DAY)
                wake = since + 2 * DAY
                visits["wait-2d"] = 1
                recorded.append(("hello", since))
            else:
                step_id, since = "opened-hello", NOW_US - (i * 13) % (3 * DAY)
                wake = min(since + 3 * DAY, NOW_US + 1 + (i * 31) % HOUR)
                visits.update({"wait-2d": 1, "opened-hello": 1})
                recorded.append(("hello", since - 2 * DAY))
        row = (
            eid, JOURNEY.key, JOURNEY.version, cid, f"signup-{i}", entered, "{}",
            step_id, since, status, _dump(visits), wake, 0,
        )  # fmt: skip
        self.enrollments.append(row)
        if waking:
            self.waking.append((step_id, since, status, _dump(visits), wake, 0, eid))
            self.reachable.append(cid)
        for step, at in recorded:
            key = _key(eid, step)
            self.intents.append((key, eid, step, at, at, "sent", key))
        if claimed is not None:
            self.intents.append((_key(eid, claimed), eid, claimed, entered, None, None, None))
        if opened is not None:
            self.events.append((f"o{i}", _key(eid, "hello"), cid, "opened", opened))

    def drop_loaded(self) -> None:
        """Forget the rows once loaded (keep the waking rows, to put them back)."""
        self.enrollments, self.intents, self.events = [], [], []
        self.activities, self.contacts, self.messages = [], [], []
        self.reachable = []

    def _unsubscribe(self, i: int, cid: str, eid: str, at: int) -> None:
        key = _key(eid, "hello")
        self.contacts.append((cid, at - DAY))
        self.messages.append((key, cid, "email", "outbound", "marketing", at - HOUR, b"x"))
        self.events.append((f"u{i}", key, cid, "unsubscribed", at))


_TABLES: dict[str, tuple[str, ...]] = {
    "journey_enrollments": (
        "enrollment_id", "journey_key", "version", "contact_id", "trigger_id", "entered_at",
        "entry_properties", "step_id", "since", "status", "visits", "wake_at", "revision",
    ),
    "journey_intents": (
        "intent_key", "enrollment_id", "step_id", "issued_at", "recorded_at", "outcome",
        "message_id",
    ),
    "events": ("event_id", "message_id", "contact_id", "type", "occurred_at"),
    "activities": ("activity_id", "contact_id", "name", "occurred_at"),
    "contacts": ("contact_id", "created_at"),
    "messages": (
        "message_id", "contact_id", "channel", "direction", "purpose", "sent_at", "address",
    ),
}  # fmt: skip


def _chunks(rows: Sequence[tuple[Any, ...]], size: int) -> Iterator[Sequence[tuple[Any, ...]]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def load(repo: CommHistory[SQLRepository], population: Population) -> None:
    """Bulk-load the rows (COPY on PostgreSQL, executemany on SQLite)."""
    store = repo.store
    repo.save_journey(JOURNEY)
    tables = {
        "contacts": population.contacts,
        "messages": population.messages,
        "journey_enrollments": population.enrollments,
        "journey_intents": population.intents,
        "events": [(*r, False) for r in population.events],
        "activities": population.activities,
    }
    with store.transaction() as conn:
        for table, rows in tables.items():
            columns = list(_TABLES[table])
            if table == "events":
                columns.append("machine")
            if store.dialect == "postgresql":
                raw: Any = conn.connection.driver_connection
                with (
                    raw.cursor() as cur,
                    cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy,
                ):
                    for row in rows:
                        copy.write_row(row)
            else:
                marks = ", ".join(["?"] * len(columns))
                sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"
                for chunk in _chunks(rows, 50_000):
                    conn.exec_driver_sql(sql, list(chunk))
    long_ago = NOW - timedelta(days=400)
    for chunk in _chunks([(c,) for c in population.reachable], 5000):
        repo.record_messages(
            Message(
                message_id=f"old-{cid}",
                channel=Channel.EMAIL,
                direction=Direction.OUTBOUND,
                contact_id=cid,
                address=f"{cid}@example.com",
                sent_at=long_ago,
                purpose=Purpose.TRANSACTIONAL,
            )
            for (cid,) in chunk
        )
        repo.record_consent(
            ConsentEvent(
                contact_id=cid,
                channel=Channel.EMAIL,
                purpose=Purpose.MARKETING,
                action=ConsentAction.GRANT,
                occurred_at=long_ago,
                method=ConsentMethod.WEB_FORM,
            )
            for (cid,) in chunk
        )
    with store.transaction() as conn:
        conn.exec_driver_sql("ANALYZE")


# ------------------------------------------------------------------ the baseline

BASELINE_SELECT = """
SELECT w.enrollment_id, w.contact_id, w.step_id, w.since, w.visits, w.revision, w.entered_at,
       w.hello_message, w.current_at,
       (SELECT MIN(o.occurred_at) FROM events o
         WHERE o.message_id = w.hello_message AND o.type = 'opened'
           AND o.occurred_at >= w.entered_at AND o.occurred_at <= {ph}),
       (SELECT MIN(a.occurred_at) FROM activities a
         WHERE a.contact_id = w.contact_id AND a.name = 'purchase'
           AND a.occurred_at >= w.entered_at AND a.occurred_at <= {ph}),
       (SELECT MIN(u.occurred_at) FROM events u JOIN messages m ON m.message_id = u.message_id
         WHERE u.contact_id = w.contact_id AND u.type = 'unsubscribed' AND m.channel = 'email'
           AND u.occurred_at >= w.entered_at AND u.occurred_at <= {ph})
FROM (
  SELECT e.enrollment_id, e.contact_id, e.step_id, e.since, e.visits, e.revision,
         e.entered_at, e.wake_at,
         (SELECT h.message_id FROM journey_intents h WHERE h.enrollment_id = e.enrollment_id
            AND h.step_id = 'hello' AND h.outcome = 'sent') AS hello_message,
         (SELECT c.recorded_at FROM journey_intents c WHERE c.enrollment_id = e.enrollment_id
            AND c.step_id = e.step_id) AS current_at
  FROM journey_enrollments e
  WHERE e.status = 'active' AND e.wake_at <= {ph}
) w
ORDER BY w.wake_at, w.enrollment_id
"""

PG_MOVE = (
    "UPDATE journey_enrollments AS e SET step_id = v.step_id, since = v.since, "
    "status = v.status, visits = v.visits, wake_at = v.wake_at, revision = e.revision + 1 "
    "FROM unnest(%s::text[], %s::int4[], %s::text[], %s::int8[], %s::text[], %s::text[], "
    "%s::int8[]) AS v(enrollment_id, revision, step_id, since, status, visits, wake_at) "
    "WHERE e.enrollment_id = v.enrollment_id AND e.revision = v.revision "
    "RETURNING e.enrollment_id"
)
PG_CLAIM = (
    "INSERT INTO journey_intents (intent_key, enrollment_id, step_id, issued_at) "
    "SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::int8[]) "
    "ON CONFLICT DO NOTHING RETURNING intent_key"
)
SQLITE_MOVE = (
    "WITH v(enrollment_id, revision, step_id, since, status, visits, wake_at) AS "
    "(VALUES {values}) "
    "UPDATE journey_enrollments SET step_id = v.step_id, since = v.since, status = v.status, "
    "visits = v.visits, wake_at = v.wake_at, revision = journey_enrollments.revision + 1 "
    "FROM v WHERE journey_enrollments.enrollment_id = v.enrollment_id "
    "AND journey_enrollments.revision = v.revision RETURNING journey_enrollments.enrollment_id"
)
SQLITE_CLAIM = (
    "INSERT INTO journey_intents (intent_key, enrollment_id, step_id, issued_at) "
    "VALUES {values} ON CONFLICT DO NOTHING RETURNING intent_key"
)
NEXT = {"hello": "wait-2d", "wait-2d": "opened-hello", "reminder": None, "tips": None}
SENDS = frozenset({"hello", "reminder", "tips"})


def walk(row: Sequence[Any], now: int) -> tuple[tuple[Any, ...], str | None]:
    """The benchmark journey's next position for one selected row, by hand, in microseconds.

    Returns:
        The new ``(enrollment_id, revision, step_id, since, status, visits,
        wake_at)`` and the step whose intent is due, if any.
    """
    eid, _cid, step, since, visits_text, revision, _entered = row[:7]
    _hello_message, current_at, opened, purchase, unsub = row[7:]
    goal: tuple[int, str] | None = None
    if purchase is not None:
        goal = (purchase, "goal")
    if unsub is not None and (goal is None or unsub < goal[0]):
        goal = (unsub, "unsubscribed")
    horizon = now if goal is None else goal[0]
    visits = json.loads(visits_text)
    start = step
    due: str | None = None
    wake: int | None = None
    while step is not None and since <= horizon:
        if step in SENDS:
            sent = current_at if step == start else None
            if sent is None or sent > horizon:
                due = step if goal is None else None
                wake = None if due is not None else sent
                break
            step, since = NEXT[step], max(since, sent)
        elif step == "wait-2d":
            end = since + 2 * DAY
            if end > horizon:
                wake = end
                break
            step, since = "opened-hello", end
        else:
            deadline = since + 3 * DAY
            seen = opened if opened is not None and opened <= min(deadline, horizon) else None
            if seen is not None:
                step, since = "tips", max(since, seen)
            elif deadline <= horizon:
                step, since = "reminder", deadline
            else:
                wake = min(deadline, now + HOUR)
                break
        if step is not None:
            visits[step] = visits.get(step, 0) + 1
    status = "active"
    if step is None:
        status, wake = "completed", None
    elif goal is not None:
        step, since, status, wake, due = None, goal[0], goal[1], None, None
    return (eid, revision, step, since, status, _dump(visits), wake), due


# ------------------------------------------------------------------ the benchmark

_OPEN: dict[tuple[str, int, float], tuple[CommHistory[SQLRepository], Population, str]] = {}
"""The filled databases, by backend, size and share."""


class JourneyBench:
    """One database: filled once at the first setup, reset before every timed run."""

    def __init__(self, backend: str, n: int, share: float) -> None:
        self.backend = backend
        self.n = n
        self.share = share
        self.repo: CommHistory[SQLRepository] | None = None
        self.population: Population | None = None
        self.url = ""
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.candidate_keys: set[str] = set()
        self.baseline_keys: set[str] = set()
        self.candidate_rows: list[tuple[Any, ...]] = []
        self.baseline_rows: list[tuple[Any, ...]] = []
        self.dirty = False

    def _open(self) -> None:
        if self.repo is not None:
            return
        shared = _OPEN.get((self.backend, self.n, self.share))
        if shared is None:
            if self.backend == "sqlite":
                self._tmp = tempfile.TemporaryDirectory()
                url = f"sqlite:///{Path(self._tmp.name) / 'journeys.db'}"
            else:
                url = _fresh_pg_schema()
            repo = open_repository(url, Keyring.generate())
            population = Population(self.n, self.share)
            load(repo, population)
            population.drop_loaded()
            shared = _OPEN[(self.backend, self.n, self.share)] = (repo, population, url)
        self.repo, self.population, self.url = shared

    def setup(self) -> None:
        """Fill the database once; put the waking rows back and drop the claims of a run."""
        self._open()
        assert self.repo is not None
        assert self.population is not None
        store = self.repo.store
        if _dirty.get(id(store)):
            ph = store.backend.ph
            with store.transaction() as conn:
                conn.exec_driver_sql(
                    f"DELETE FROM journey_intents WHERE issued_at = {ph}", (NOW_US,)
                )
                conn.exec_driver_sql(
                    f"UPDATE journey_enrollments SET step_id = {ph}, since = {ph}, "
                    f"status = {ph}, visits = {ph}, wake_at = {ph}, revision = {ph} "
                    f"WHERE enrollment_id = {ph}",
                    self.population.waking,
                )
            if self.url.startswith("postgresql"):
                import psycopg

                with psycopg.connect(self.url, autocommit=True) as raw:
                    raw.execute("VACUUM (ANALYZE) journey_enrollments, journey_intents")
            _dirty[id(store)] = False

    def _after(self) -> list[tuple[Any, ...]]:
        assert self.repo is not None
        assert self.population is not None
        ids = [r[-1] for r in self.population.waking]
        with self.repo.store.transaction(read=True) as conn:
            return sorted(
                self.repo.store.backend.select_in(
                    conn,
                    "SELECT enrollment_id, step_id, since, status, visits, wake_at, revision "
                    "FROM journey_enrollments WHERE enrollment_id IN ({in})",
                    ids,
                )
            )

    def candidate(self) -> None:
        """The public call: claim what is due at NOW."""
        assert self.repo is not None
        _dirty[id(self.repo.store)] = True
        self.candidate_keys = {i.key for i in self.repo.journey_due(NOW)}

    def baseline(self) -> None:
        """The same job, hand-written for this journey."""
        assert self.repo is not None
        store = self.repo.store
        _dirty[id(store)] = True
        ph = store.backend.ph
        with store.transaction() as conn:
            rows = conn.exec_driver_sql(
                BASELINE_SELECT.replace("{ph}", ph), (NOW_US,) * 4
            ).fetchall()
            moves: list[tuple[Any, ...]] = []
            due: dict[str, tuple[str, str]] = {}
            for row in rows:
                move, step = walk(row, NOW_US)
                moves.append(move)
                if step is not None:
                    due[row[0]] = (_key(row[0], step), step)
            moves.sort()
            if store.dialect == "postgresql":
                columns = [list(c) for c in zip(*moves, strict=True)]
                conn.exec_driver_sql("SET LOCAL enable_hashjoin = off")
                won = {r[0] for r in conn.exec_driver_sql(PG_MOVE, tuple(columns))}
            else:
                won = set()
                for chunk in _chunks(moves, 500):
                    marks = ", ".join(["(?,?,?,?,?,?,?)"] * len(chunk))
                    sql = SQLITE_MOVE.replace("{values}", marks)
                    params = tuple(v for m in chunk for v in m)
                    won.update(r[0] for r in conn.exec_driver_sql(sql, params))
            claims = sorted((k, eid, step, NOW_US) for eid, (k, step) in due.items() if eid in won)
            keys: set[str] = set()
            if claims and store.dialect == "postgresql":
                columns = [list(c) for c in zip(*claims, strict=True)]
                keys.update(r[0] for r in conn.exec_driver_sql(PG_CLAIM, tuple(columns)))
            elif claims:
                for chunk in _chunks(claims, 500):
                    marks = ", ".join(["(?,?,?,?)"] * len(chunk))
                    sql = SQLITE_CLAIM.replace("{values}", marks)
                    params = tuple(v for c in chunk for v in c)
                    keys.update(r[0] for r in conn.exec_driver_sql(sql, params))
        self.baseline_keys = keys

    def extra(self) -> dict[str, Any]:
        """Sizes, and whether both claimed the same intents and left the same rows."""
        assert self.population is not None
        self.setup()
        self.candidate()
        candidate_rows = self._after()
        self.setup()
        self.baseline()
        baseline_rows = self._after()
        self.setup()
        return {
            "enrollments": self.n,
            "waking": len(self.population.waking),
            "intents": len(self.candidate_keys),
            "same_answer": self.candidate_keys == self.baseline_keys
            and candidate_rows == baseline_rows,
        }

    def idle(self) -> None:
        """``journey_due`` when nothing is due."""
        assert self.repo is not None
        assert len(self.repo.journey_due(IDLE)) == 0


_dirty: dict[int, bool] = {}
"""Whether a run changed a database since it was last reset."""


def benchmarks() -> list[Benchmark]:
    """The journey benchmarks (SQLite, and PostgreSQL when reachable)."""
    n = enrollment_count()
    share = due_share()
    backends = ["sqlite"] + (["postgres"] if postgres_reachable() else [])
    out = []
    for backend in backends:
        bench = JourneyBench(backend, n, share)
        waking = int(n * share)
        out.append(
            Benchmark(
                name=f"journey_due.{backend}",
                candidate=bench.candidate,
                baseline=bench.baseline,
                setup=bench.setup,
                goal=GOAL,
                repeats=3,
                extra=bench.extra,
                items=waking,
            )
        )
        out.append(
            Benchmark(
                name=f"journey_due_1s.{backend}",
                candidate=bench.candidate,
                setup=bench.setup,
                goal=SECONDS_GOAL,
                repeats=3,
                items=waking,
            )
        )
        out.append(
            Benchmark(
                name=f"journey_due_idle.{backend}",
                candidate=bench.idle,
                setup=bench.setup,
                goal=IDLE_GOAL,
                repeats=5,
            )
        )
    return out


if __name__ == "__main__":
    args = sys.argv[1:]
    if "--full" in args:
        args.remove("--full")
        os.environ[ENROLLMENTS_ENV] = str(FULL)
    for flag, env in (("--enrollments", ENROLLMENTS_ENV), ("--due-share", SHARE_ENV)):
        if flag in args:
            i = args.index(flag)
            os.environ[env] = args[i + 1]
            del args[i : i + 2]
    sys.exit(main([benchmarks], args))
