"""Batched ``due(now)`` against the per-enrollment reference path, on memory, SQLite, PostgreSQL.

``due`` reads a batch of waking enrollments, reads the behaviour their walks
ask about for the whole batch, screens the batch's intents through send
planning (:mod:`commhistory.journeys.gate`), and writes the batch's moves and
claims with one statement each. :func:`_reference_due` is the path it replaced:
every question to the store (:class:`StoredBehaviour`), one transaction per
enrollment, the same gate. Random histories (some contacts never reachable,
some withdrawing marketing consent, with or without quiet hours and a cap)
driven through both, tick by tick, must hand out, defer and skip the same
intents and leave the same rows.
"""

from __future__ import annotations

import datetime as dt
import random
import sqlite3
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from commhistory.crypto import Keyring
from commhistory.errors import InvalidInputError, NotFoundError
from commhistory.facade import CommHistory, open_repository
from commhistory.journeys import Enrollment, Journey, Position, SendIntent, Status, advance, gate
from commhistory.journeys.engine import StoredBehaviour, _wake_at, due, enrollment_id
from commhistory.journeys.gate import DeferredIntent, DueResult, SkippedIntent
from commhistory.model import (
    Activity,
    Channel,
    ConsentAction,
    Direction,
    Event,
    EventType,
    Message,
    Purpose,
)
from commhistory.segments.planning import FrequencyCap, PlanConfig, QuietHours
from commhistory.store.journeys import EnrollmentMove, EnrollmentRow, IntentRow
from commhistory.store.protocol import Repository
from tests._journeys import BACKENDS, consent, open_history, reachable, sql_target

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "journeys"
UTC = dt.UTC
T0 = dt.datetime(2026, 3, 2, 1, 0, tzinfo=UTC)
HOUR = dt.timedelta(hours=1)
TOKYO = ZoneInfo("Asia/Tokyo")

LOOP = Journey.from_dict(
    {
        "key": "loop",
        "version": 1,
        "trigger": {"type": "activity", "name": "signup"},
        "reentry": "always",
        "steps": [
            {"type": "send", "id": "a", "template": "t-a", "channel": "email", "next": "w"},
            {"type": "wait", "id": "w", "delay": "1h", "until_time": "10:00", "next": "b"},
            {"type": "branch", "id": "b", "condition": {"activity": "browse"}, "within": "2d",
             "then": "c", "otherwise": "d"},
            {"type": "send", "id": "c", "template": "t-c", "channel": "email", "next": "w2"},
            {"type": "wait", "id": "w2", "delay": "1d", "next": "e"},
            {"type": "branch", "id": "e", "condition": {"event": "clicked"}, "within": "1d",
             "otherwise": "a"},
            {"type": "send", "id": "d", "template": "t-d", "channel": "email"},
        ],
        "goals": [{"type": "unsubscribe"}, {"type": "activity", "activity": "purchase"}],
    }
)  # fmt: skip
"""A journey with a loop (a second visit of a send step), ``until_time``, an
activity branch and a branch on any send of the enrollment."""


def _journeys() -> list[Journey]:
    return [
        Journey.load(EXAMPLES / "welcome.json"),
        Journey.load(EXAMPLES / "cart_abandonment.json"),
        LOOP,
    ]


def _zone(contact_id: str) -> ZoneInfo:
    return TOKYO if contact_id.endswith(("0", "2", "4")) else ZoneInfo("UTC")


GATED = PlanConfig(
    quiet_hours=[QuietHours(channel="email", purpose="marketing", start=dt.time(22),
                            end=dt.time(7))],
    caps=[FrequencyCap(channel="email", purpose="marketing", limit=2, days=1)],
    default_zone="Asia/Tokyo",
)  # fmt: skip
"""Quiet hours and a cap on email, so some sends are deferred."""


def _reference_due(
    repo: Repository,
    now: dt.datetime,
    *,
    config: PlanConfig | None = None,
    zone_of: Callable[[str], ZoneInfo] | None = None,
) -> DueResult:
    """The per-enrollment path ``due`` had before batches (the reference), with the gate."""
    store = repo.journey_store
    rows = store.waking(now)
    zone_for = gate.zones(repo, config, [r.contact_id for r in rows], now, zone_of=zone_of)
    walked: list[tuple[EnrollmentRow, Journey, tuple[SendIntent, ...], EnrollmentRow]] = []
    for row in rows:
        text = store.definition(row.journey_key, row.version)
        assert text is not None
        journey = Journey.loads(text)
        enrollment = Enrollment(
            enrollment_id=row.enrollment_id,
            contact_id=row.contact_id,
            entered_at=row.entered_at,
            entry_properties=dict(row.entry_properties),
        )
        zone = zone_for(row.contact_id)
        allowed = gate.allowed(config, zone)
        history = StoredBehaviour(repo, row.contact_id)
        position = Position(
            step_id=row.step_id, since=row.since, status=Status(row.status), visits=row.visits
        )
        moved = advance(
            journey, enrollment, position, now=now, zone=zone, history=history, allowed=allowed
        )
        wake = _wake_at(
            journey, enrollment, moved, now=now, zone=zone, history=history, recheck=HOUR,
            allowed=allowed,
        )  # fmt: skip
        new = moved.position
        stored = attrs.evolve(
            row,
            step_id=new.step_id,
            since=new.since,
            status=new.status.value,
            visits=dict(new.visits),
            wake_at=wake,
        )
        walked.append((row, journey, moved.intents, stored))
    split = gate.screen(
        repo, now, [(j, i) for _, j, intents, _ in walked for i in intents], config=config,
        zone_of=zone_for,
    )  # fmt: skip
    out: list[SendIntent] = []
    deferred: list[DeferredIntent] = []
    skipped: list[SkippedIntent] = []
    for _, _, intents, moved_row in walked:
        verdicts = [split.verdict(i.key) for i in intents]
        held = [v for v in verdicts if isinstance(v, DeferredIntent)]
        # a deferred send stays at its step and wakes when it may go
        wake = min(v.until for v in held) if held else moved_row.wake_at
        with repo.transaction():
            if not store.move(attrs.evolve(moved_row, wake_at=wake)):
                continue
            deferred.extend(held)
            claimed = set(
                store.claim(
                    [
                        IntentRow(
                            key=i.key, enrollment_id=i.enrollment_id, step_id=i.step_id,
                            issued_at=now,
                        )
                        for i, v in zip(intents, verdicts, strict=True)
                        if not isinstance(v, DeferredIntent)
                    ]
                )
            )  # fmt: skip
            for v in verdicts:
                if isinstance(v, SkippedIntent) and v.intent.key in claimed:
                    store.record(v.intent.key, now, "skipped", None, reason=v.reason.value)
                    skipped.append(v)
        out.extend(
            i for i, v in zip(intents, verdicts, strict=True) if v is i and i.key in claimed
        )
    return DueResult(now, out, deferred, skipped)


def _rows(repo: CommHistory[Any], scenario: _Scenario) -> list[tuple[Any, ...]]:
    store = repo.store.journey_store
    journeys = _journeys()
    ids = sorted({enrollment_id(journeys[j].key, t) for j, _, t, _, _ in scenario.enrolls})
    enrollments = [
        (r.enrollment_id, r.step_id, r.since, r.status, dict(r.visits), r.wake_at)
        for r in (store.enrollment(i) for i in ids)
        if r is not None
    ]
    intents = sorted(
        (i.key, i.step_id, i.issued_at, i.recorded_at, i.outcome, i.message_id, i.reason)
        for i in store.intents_of(ids)
    )
    return [*enrollments, *intents]


class _Scenario:
    """Random enrollments, sends, behaviour and ticks from one seed, applied to a repository."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        rng = self.rng
        self.contacts = [f"c{i}" for i in range(rng.randint(3, 8))]
        self.enrolls: list[tuple[int, str, str, dt.datetime, dict[str, str]]] = []
        for n, cid in enumerate(self.contacts):
            for j in range(len(_journeys())):
                if rng.random() < 0.7:
                    at = T0 + dt.timedelta(minutes=rng.randint(0, 3 * 24 * 60))
                    cart = {"cart_id": f"cart-{rng.randint(1, 3)}"} if j == 1 else {}
                    self.enrolls.append((j, cid, f"trig-{n}-{j}", at, cart))
        ticks = sorted(
            T0 + dt.timedelta(minutes=rng.randint(0, 16 * 24 * 60))
            for _ in range(rng.randint(6, 14))
        )
        self.ticks = [*ticks, T0 + dt.timedelta(days=20)]
        # send planning: most contacts reachable on email and LINE, some withdraw
        # consent on one of them later (a goal of the journeys sending for that
        # purpose, and a refusal of the gate)
        self.reachable = [cid for cid in self.contacts if rng.random() < 0.85]
        self.withdrawals = [
            (cid, rng.choice([Channel.EMAIL, Channel.LINE]),
             rng.choice([Purpose.MARKETING, Purpose.MARKETING, Purpose.TRANSACTIONAL]),
             T0 + dt.timedelta(minutes=rng.randint(0, 12 * 24 * 60)))
            for cid in self.reachable
            if rng.random() < 0.3
        ]  # fmt: skip
        self.plans: dict[str, tuple[str, float, list[tuple[str, float]]]] = {}

    def plan(self, intent: SendIntent) -> tuple[str, float, list[tuple[str, float]]]:
        """What the host and the contact do about an intent (the same for both repositories)."""
        found = self.plans.get(intent.key)
        if found is None:
            rng = self.rng
            outcome = rng.choice(["sent", "sent", "sent", "skipped", "later"])
            delay = rng.uniform(0, 3)
            reactions = [
                (kind, rng.uniform(0, 72))
                for kind in ("opened", "clicked", "unsubscribed")
                if rng.random() < (0.05 if kind == "unsubscribed" else 0.4)
            ]
            found = self.plans[intent.key] = (outcome, delay, reactions)
        return found


class _Driver:
    """Applies a scenario to one repository, with one ``due`` implementation."""

    def __init__(
        self,
        repo: CommHistory[Any],
        scenario: _Scenario,
        run_due: Callable[[dt.datetime], DueResult],
    ) -> None:
        self.repo = repo
        self.scenario = scenario
        self.run_due = run_due
        self.pending: list[tuple[SendIntent, dt.datetime]] = []
        repo.declare_activities(
            {"purchase": ["cart_id"], "cart_abandoned": ["cart_id"], "browse": [], "signup": []}
        )
        journeys = _journeys()
        for j, cid, trigger, at, entry in scenario.enrolls:
            repo.enroll(journeys[j], cid, trigger, at=at, properties=entry)
        reachable(repo, scenario.reachable)
        reachable(repo, scenario.reachable, Channel.LINE)
        repo.record_consent(
            attrs.evolve(consent(cid, Channel.EMAIL), purpose=Purpose.TRANSACTIONAL)
            for cid in scenario.reachable
        )
        if scenario.withdrawals:
            repo.record_consent(
                attrs.evolve(consent(cid, channel, at, ConsentAction.WITHDRAW), purpose=purpose)
                for cid, channel, purpose, at in scenario.withdrawals
            )
        rng = random.Random(len(scenario.enrolls))
        activities = []
        for n, cid in enumerate(scenario.contacts):
            for k in range(rng.randint(0, 3)):
                name = rng.choice(["purchase", "browse", "browse"])
                props: dict[str, str] = {}
                if name == "purchase":
                    props = {"cart_id": f"cart-{rng.randint(1, 3)}"}
                    if rng.random() < 0.5:
                        props["note"] = "encrypted"  # not declared plain: stored encrypted
                at = T0 + dt.timedelta(minutes=rng.randint(0, 12 * 24 * 60))
                activities.append(
                    Activity(
                        activity_id=f"act-{n}-{k}", contact_id=cid, name=name, occurred_at=at,
                        properties=props,
                    )
                )  # fmt: skip
        if activities:
            repo.record_activities(activities)

    def tick(self, now: dt.datetime) -> DueResult:
        """Record what is due to be recorded, then call ``due``; return its intents."""
        still = []
        for intent, at in self.pending:
            if at <= now:
                self._record(intent, at)
            else:
                still.append((intent, at))
        self.pending = still
        intents = self.run_due(now)
        for intent in intents:
            outcome, delay, _ = self.scenario.plan(intent)
            at = now + dt.timedelta(hours=delay)
            if outcome == "later":
                self.pending.append((intent, now + dt.timedelta(hours=20 + delay)))
            elif at <= now + HOUR:
                self._record(intent, at)
            else:
                self.pending.append((intent, at))
        return intents

    def _record(self, intent: SendIntent, at: dt.datetime) -> None:
        outcome, _, reactions = self.scenario.plan(intent)
        if outcome == "skipped":
            self.repo.record_journey_send(intent.key, at=at, outcome="skipped")
            return
        if intent.channel is Channel.EMAIL:
            self.repo.record_messages(
                [
                    Message(
                        message_id=intent.key, channel=intent.channel,
                        direction=Direction.OUTBOUND, contact_id=intent.contact_id,
                        address=f"{intent.contact_id}@example.com", sent_at=at,
                        purpose=intent.purpose,
                    )
                ]
            )  # fmt: skip
            events = [
                Event(
                    event_id=f"{kind}-{intent.key}", type=EventType(kind),
                    occurred_at=at + dt.timedelta(hours=hours), message_id=intent.key,
                )
                for kind, hours in reactions
            ]  # fmt: skip
            if events:
                self.repo.record_events(events)
        self.repo.record_journey_send(intent.key, at=at)


@contextmanager
def _two_repositories(backend: str, postgres_url: str | None) -> Iterator[tuple[Any, Any]]:
    if backend == "memory":
        with CommHistory.in_memory() as a, CommHistory.in_memory() as b:
            yield a, b
        return
    keyring = Keyring.generate()
    if backend == "sqlite":
        with (
            tempfile.TemporaryDirectory() as tmp,
            open_repository(f"sqlite:///{tmp}/a.db", keyring) as a,
            open_repository(f"sqlite:///{tmp}/b.db", keyring) as b,
        ):
            yield a, b
        return
    assert postgres_url is not None
    import sqlalchemy as sa

    names = [f"t_{uuid.uuid4().hex[:16]}" for _ in range(2)]
    admin = sa.create_engine(postgres_url, poolclass=sa.NullPool)
    with admin.begin() as conn:
        for name in names:
            conn.exec_driver_sql(f"CREATE SCHEMA {name}")
    sep = "&" if "?" in postgres_url else "?"
    urls = [f"{postgres_url}{sep}options=-csearch_path%3D{name}" for name in names]
    try:
        with open_repository(urls[0], keyring) as a, open_repository(urls[1], keyring) as b:
            yield a, b
    finally:
        with admin.begin() as conn:
            for name in names:
                conn.exec_driver_sql(f"DROP SCHEMA {name} CASCADE")
        admin.dispose()


def _same_walks(
    backend: str, seed: int, batch_size: int, config: PlanConfig | None, postgres_url: str | None
) -> None:
    scenario_a, scenario_b = _Scenario(seed), _Scenario(seed)
    zone_of = _zone if config is None else None  # with a configuration: its zones
    with _two_repositories(backend, postgres_url) as (a, b):
        batched = _Driver(
            a,
            scenario_a,
            lambda now: due(a.store, now, config=config, zone_of=zone_of, batch_size=batch_size),
        )
        reference = _Driver(
            b, scenario_b, lambda now: _reference_due(b.store, now, config=config, zone_of=zone_of)
        )
        handed = 0
        for now in scenario_a.ticks:
            got = batched.tick(now)
            want = reference.tick(now)
            assert got == want, now
            assert _rows(a, scenario_a) == _rows(b, scenario_b), now
            handed += len(got) + len(got.deferred) + len(got.skipped)
        assert handed > 0 or not scenario_a.enrolls


SIZES = st.sampled_from([1, 2, 3, 5000])
CONFIGS = st.sampled_from([None, GATED])


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32), batch_size=SIZES, config=CONFIGS)
def test_batched_due_equals_the_reference_in_memory(
    seed: int, batch_size: int, config: PlanConfig | None
) -> None:
    _same_walks("memory", seed, batch_size, config, None)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32), batch_size=SIZES, config=CONFIGS)
def test_batched_due_equals_the_reference_on_sqlite(
    seed: int, batch_size: int, config: PlanConfig | None
) -> None:
    _same_walks("sqlite", seed, batch_size, config, None)


@pytest.mark.postgres
@settings(
    max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(seed=st.integers(0, 2**32), batch_size=SIZES, config=CONFIGS)
def test_batched_due_equals_the_reference_on_postgresql(
    postgres_url: str, seed: int, batch_size: int, config: PlanConfig | None
) -> None:
    _same_walks("postgresql", seed, batch_size, config, postgres_url)


# --- batches spanning several chunks ---------------------------------------------------

SQL_BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def repo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CommHistory[Any]]:
    with open_history(request, tmp_path) as history:
        yield history


@pytest.fixture
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return sql_target(request, tmp_path)


def test_batches_spanning_several_chunks_hand_out_each_step_once_in_wake_order(
    repo: CommHistory[Any],
) -> None:
    welcome = Journey.load(EXAMPLES / "welcome.json")
    for i in range(11):
        repo.enroll(welcome, f"c{i:02d}", f"t{i}", at=T0 + i * dt.timedelta(minutes=1))
    reachable(repo, [f"c{i:02d}" for i in range(11) if i != 6])  # c06: no consent
    dry = due(repo.store, T0 + HOUR, dry_run=True, batch_size=3)
    assert [i.contact_id for i in dry] == [f"c{i:02d}" for i in range(11) if i != 6]
    assert [s.intent.contact_id for s in dry.skipped] == ["c06"]
    first = due(repo.store, T0 + HOUR, limit=5, batch_size=2)
    assert [i.contact_id for i in first] == [f"c{i:02d}" for i in range(5)]
    rest = due(repo.store, T0 + HOUR, batch_size=4)
    assert [i.contact_id for i in rest] == [f"c{i:02d}" for i in range(5, 11) if i != 6]
    assert [*first, *rest] == list(dry)  # the same intents, keys and all
    assert [*first.skipped, *rest.skipped] == list(dry.skipped)
    skip = repo.store.journey_store.intent(dry.skipped[0].intent.key)
    assert skip is not None
    assert (skip.outcome, skip.reason) == ("skipped", "no_consent")
    assert list(due(repo.store, T0 + HOUR, batch_size=4)) == []
    with pytest.raises(InvalidInputError, match="batch_size"):
        due(repo.store, T0, batch_size=0)


def test_a_skip_recorded_in_one_batch_is_walked_on_at_the_next_call(
    repo: CommHistory[Any],
) -> None:
    """A recorded skip wakes its enrollment at ``now``; the same call does not walk it again."""
    welcome = Journey.load(EXAMPLES / "welcome.json")
    repo.enroll(welcome, "c0", "t0", at=T0)
    repo.enroll(welcome, "c1", "t1", at=T0 + dt.timedelta(minutes=1))
    reachable(repo, ["c1"])  # c0: no consent, its first send is skipped
    result = due(repo.store, T0 + HOUR, batch_size=1)
    assert [i.contact_id for i in result] == ["c1"]
    assert [(s.intent.contact_id, s.reason.value) for s in result.skipped] == [
        ("c0", "no_consent")
    ]
    row = repo.store.journey_store.enrollment(enrollment_id("welcome", "t0"))
    assert row is not None
    assert (row.step_id, row.wake_at) == ("hello", T0 + HOUR)  # still at the send step
    assert list(due(repo.store, T0 + HOUR, batch_size=1)) == []
    row = repo.store.journey_store.enrollment(enrollment_id("welcome", "t0"))
    assert row is not None
    assert row.step_id == "wait-2d"  # the skipped step counts as done


def test_a_missing_journey_version_is_named(repo: CommHistory[Any]) -> None:
    welcome = Journey.load(EXAMPLES / "welcome.json")
    repo.enroll(welcome, "c1", "t1", at=T0)
    row = repo.store.journey_store.enrollment(enrollment_id("welcome", "t1"))
    assert row is not None
    stray = attrs.evolve(row, enrollment_id="enr_stray", trigger_id="t-stray", version=9)
    repo.store.journey_store.insert_enrollment(stray)
    with pytest.raises(NotFoundError, match="welcome@9"):
        due(repo.store, T0)


@pytest.mark.parametrize("target", SQL_BACKENDS, indirect=True)
def test_concurrent_batched_due_never_hands_out_a_step_twice(target: str) -> None:
    welcome = Journey.load(EXAMPLES / "welcome.json")
    contacts = [f"c{i:02d}" for i in range(60)]
    keyring = Keyring.generate()
    with open_repository(target, keyring) as setup:
        for cid in contacts:
            setup.enroll(welcome, cid, f"signup-{cid}", at=T0)
        reachable(setup, contacts)
    results: list[list[str]] = [[], [], []]
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(results))

    def worker(slot: int) -> None:
        try:
            with open_repository(target, keyring) as mine:
                barrier.wait()
                for _ in range(3):
                    results[slot].extend(i.key for i in due(mine.store, T0, batch_size=7))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(len(results))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    handed = [key for keys in results for key in keys]
    assert len(handed) == len(set(handed)) == len(contacts)


def test_a_stale_batch_claims_nothing_it_did_not_move(repo: CommHistory[Any]) -> None:
    """A batch whose rows another caller moved in between stores and claims none of them."""
    welcome = Journey.load(EXAMPLES / "welcome.json")
    for i in range(4):
        repo.enroll(welcome, f"c{i}", f"t{i}", at=T0)
    reachable(repo, [f"c{i}" for i in range(4)])
    store = repo.store.journey_store
    rows = store.waking(T0)
    assert len(due(repo.store, T0, batch_size=2)) == 4  # another caller moves them all
    stale = [
        EnrollmentMove(r.enrollment_id, r.revision, r.step_id, r.since, r.status, r.visits, None)
        for r in rows
    ]
    assert store.move_many(stale) == []


def test_a_goal_matched_on_encrypted_properties_is_read_decrypted(repo: CommHistory[Any]) -> None:
    """A batch reads plain properties only; a match on an encrypted one asks the store."""
    cart = Journey.load(EXAMPLES / "cart_abandonment.json")
    repo.declare_activities({"purchase": [], "cart_abandoned": []})  # cart_id stored encrypted
    repo.enroll(cart, "c1", "abandon-1", at=T0, properties={"cart_id": "cart-9"})
    repo.enroll(cart, "c2", "abandon-2", at=T0, properties={"cart_id": "cart-3"})
    reachable(repo, ["c1", "c2"])
    repo.record_activities(
        [
            Activity(activity_id="p1", contact_id="c1", name="purchase",
                     occurred_at=T0 + dt.timedelta(minutes=30), properties={"cart_id": "cart-9"}),
            Activity(activity_id="p2", contact_id="c2", name="purchase",
                     occurred_at=T0 + dt.timedelta(minutes=30), properties={"cart_id": "cart-7"}),
        ]
    )  # fmt: skip
    [nudge] = due(repo.store, T0 + HOUR, batch_size=2)
    assert nudge.contact_id == "c2"  # c1 bought the cart it abandoned
    row = repo.store.journey_store.enrollment(enrollment_id("cart-abandonment", "abandon-1"))
    assert row is not None
    assert (row.status, row.since) == (Status.GOAL.value, T0 + dt.timedelta(minutes=30))


def test_consent_withdrawals_reads_withdrawals_in_the_window_only(repo: CommHistory[Any]) -> None:
    """The batch read of the ledger: withdrawals only, of the channels and purposes asked."""
    withdraw = ConsentAction.WITHDRAW
    repo.record_consent(
        [
            consent("c1", Channel.EMAIL),  # a grant: not read
            consent("c1", Channel.EMAIL, T0 + HOUR, withdraw),
            consent("c1", Channel.LINE, T0 + HOUR, withdraw),  # another channel
            attrs.evolve(
                consent("c2", Channel.EMAIL, T0 + HOUR, withdraw), purpose=Purpose.TRANSACTIONAL
            ),
            consent("c2", Channel.EMAIL, T0 + 3 * HOUR, withdraw),  # after the window
            consent("c3", Channel.EMAIL, T0 + HOUR, withdraw),  # another contact
        ]
    )
    found = repo.store.journey_store.consent_withdrawals(
        ["c1", "c2"],
        [Channel.EMAIL],
        [Purpose.MARKETING, Purpose.TRANSACTIONAL],
        after=T0,
        until=T0 + 2 * HOUR,
    )
    assert sorted((w.contact_id, w.channel, w.purpose, w.occurred_at) for w in found) == [
        ("c1", "email", "marketing", T0 + HOUR),
        ("c2", "email", "transactional", T0 + HOUR),
    ]
    assert (
        repo.store.journey_store.consent_withdrawals(
            ["c1"], [Channel.EMAIL], [Purpose.MARKETING], after=T0 + 2 * HOUR, until=T0 + 3 * HOUR
        )
        == []
    )


def test_record_skips_is_record_of_each_skip(repo: CommHistory[Any]) -> None:
    """One write for a batch's skips: what ``record(key, at, "skipped", ...)`` of each does."""
    welcome = Journey.load(EXAMPLES / "welcome.json")
    for i in range(3):
        repo.enroll(welcome, f"c{i}", f"t{i}", at=T0)
    store = repo.store.journey_store
    a, b, c = (enrollment_id("welcome", f"t{i}") for i in range(3))
    claims = [("k1", a), ("k2", a), ("k3", b), ("k4", c)]
    assert sorted(
        store.claim(
            [IntentRow(key=k, enrollment_id=e, step_id="s", issued_at=T0) for k, e in claims]
        )
    ) == ["k1", "k2", "k3", "k4"]
    assert store.record("k3", T0, "sent", "m3")  # recorded already: left alone
    ended = store.enrollment(c)
    assert ended is not None
    store.move(attrs.evolve(ended, step_id=None, status=Status.GOAL.value, wake_at=None))
    before = {e: store.enrollment(e) for e in (a, b, c)}
    at = T0 + HOUR
    skips = [("k2", "quiet_hours"), ("k1", "no_consent"), ("k3", "suppressed"), ("k4", "erased")]
    assert sorted(store.record_skips([*skips, ("k-unknown", "erased")], at)) == ["k1", "k2", "k4"]
    assert store.record_skips([("k1", "erased")], at) == []  # the first record stands
    got = {k: store.intent(k) for k in ("k1", "k2", "k3", "k4")}
    for key, reason in (("k1", "no_consent"), ("k2", "quiet_hours"), ("k4", "erased")):
        intent = got[key]
        assert intent is not None
        assert (intent.recorded_at, intent.outcome, intent.message_id, intent.reason) == (
            at, "skipped", None, reason
        )  # fmt: skip
    k3 = got["k3"]
    assert k3 is not None
    assert (k3.outcome, k3.message_id, k3.reason) == ("sent", "m3", None)
    woken, kept, done = (store.enrollment(e) for e in (a, b, c))
    assert woken is not None
    assert before[a] is not None
    # two skips recorded: woken at ``at``, two revisions on, as two record() calls leave it
    assert (woken.wake_at, woken.revision) == (at, before[a].revision + 2)
    assert kept == before[b]  # its intent was recorded before
    assert done == before[c]  # ended: not woken


@pytest.mark.postgres
def test_batch_reads_put_the_planner_setting_back(pg_url: str) -> None:
    """The reads by value switch sequential scans off for their statement alone."""
    with open_repository(pg_url, Keyring.generate()) as repo:
        store = repo.store
        with store.transaction(read=True) as conn:
            assert store.journey_store.intents_of(["enr_x"]) == []
            assert (
                store.journey_store.activity_times(["c1"], ["purchase"], after=T0, until=T0) == []
            )
            assert conn.exec_driver_sql("SHOW enable_seqscan").scalar_one() == "on"


def test_batch_reads_fit_a_low_sqlite_variable_limit(tmp_path: Path) -> None:
    """An ``IN`` list never has more values than the connection's variable limit allows."""
    welcome = Journey.load(EXAMPLES / "welcome.json")
    with open_repository(f"sqlite:///{tmp_path / 'low.db'}", Keyring.generate()) as repo:
        for i in range(30):
            repo.enroll(welcome, f"c{i:02d}", f"t{i}", at=T0)
        store = repo.store.journey_store
        ids = [enrollment_id("welcome", f"t{i}") for i in range(30)]
        store.claim(
            [
                IntentRow(key=f"k{i}", enrollment_id=e, step_id="s", issued_at=T0)
                for i, e in enumerate(ids)
            ]
        )
        with repo.store.transaction(read=True) as conn:
            raw: Any = conn.connection.driver_connection
            raw.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 12)
            found = store.intents_of([*ids, *(f"enr_none{i}" for i in range(40))])
            raw.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 32766)
    assert sorted(i.key for i in found) == sorted(f"k{i}" for i in range(30))
