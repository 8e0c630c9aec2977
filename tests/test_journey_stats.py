"""KPIs per journey and step, through the KPI engine, on memory, SQLite and PostgreSQL.

A worked history (the welcome series, four contacts, a simulated clock) is
counted by hand; random histories check that the journey dimension of the KPI
engine gives the same table in memory (``compute`` with the links), in the
memory repository and in SQL, and that both stores count enrollments alike.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from commhistory.audit import Actor
from commhistory.crypto import Keyring
from commhistory.errors import InvalidInputError, PermissionDenied
from commhistory.facade import CommHistory, open_repository
from commhistory.journeys import Journey, SendIntent
from commhistory.journeys.engine import enrollment_id
from commhistory.journeys.machine import intent_key
from commhistory.journeys.stats import journey_stats, render_stats
from commhistory.kpi import JourneyLink, compute
from commhistory.model import Channel, Direction, Event, EventType, Message
from commhistory.store import SQLRepository
from commhistory.store.journeys import EnrollmentRow, IntentRow
from tests._journeys import BACKENDS, cli_store, consent, open_history, reachable, with_address
from tests.conftest import pg_variant_url
from tests.test_kpi_engines import histories

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "journeys"
UTC = dt.UTC
T0 = dt.datetime(2026, 3, 2, 1, 0, tzinfo=UTC)
DAY = dt.timedelta(days=1)
HOUR = dt.timedelta(hours=1)


@pytest.fixture(params=BACKENDS)
def repo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CommHistory[Any]]:
    with open_history(request, tmp_path) as history:
        yield history


def _send(repo: CommHistory[Any], intent: SendIntent, at: dt.datetime) -> None:
    repo.record_messages(
        [
            Message(
                message_id=intent.key,
                channel=intent.channel,
                direction=Direction.OUTBOUND,
                contact_id=intent.contact_id,
                address=f"{intent.contact_id}@example.com",
                sent_at=at,
                purpose=intent.purpose,
            )
        ]
    )
    assert repo.record_journey_send(intent.key, at=at)


def _event(n: int, kind: EventType, message_id: str, at: dt.datetime) -> Event:
    return Event(event_id=f"ev-{n}", type=kind, occurred_at=at, message_id=message_id)


def _welcome_history(repo: CommHistory[Any]) -> Journey:
    """Four contacts walk the welcome series (see the module docstring of each step).

    * c1: hello sent at T0, opened, clicked and converted; tips sent at T0+3d: completed.
    * c2: hello sent, not opened; the reminder at T0+5d bounced; now waits 4 days.
    * c3: hello skipped by send planning (no marketing consent at T0: recorded as
      ``skipped``, reason ``no_consent``); c3 consents at T0+1d, so the reminder is
      handed out, not recorded.
    * c4: enrolled an hour later, hello sent, unsubscribed from it at T0+1d.
    * An unrelated campaign message with an open counts in no journey number.

    c1, c2 and c4 can receive email (an address and marketing consent, from 2025:
    ``tests._journeys.reachable``); c3 has the address only. The old transactional
    message that gives each address is linked to no intent, so no journey number
    counts it.
    """
    journey = Journey.load(EXAMPLES / "welcome.json")
    reachable(repo, ["c1", "c2", "c4"], Channel.EMAIL)
    with_address(repo, ["c3"], Channel.EMAIL)
    repo.record_consent([consent("c3", Channel.EMAIL, at=T0 + DAY)])
    for n, contact in enumerate(("c1", "c2", "c3"), 1):
        repo.enroll(journey, contact, f"signup-{n}", at=T0)
    repo.enroll(journey, "c4", "signup-4", at=T0 + HOUR)
    first = repo.journey_due(T0)
    hello = {i.contact_id: i for i in first}
    assert sorted(hello) == ["c1", "c2"]
    [refused] = first.skipped  # recorded by due itself, never handed out
    assert (refused.intent.contact_id, refused.intent.step_id) == ("c3", "hello")
    assert refused.reason.value == "no_consent"
    _send(repo, hello["c1"], T0)
    _send(repo, hello["c2"], T0)
    [hello4] = repo.journey_due(T0 + HOUR)
    _send(repo, hello4, T0 + HOUR)
    key1 = hello["c1"].key
    repo.record_events(
        [
            _event(1, EventType.OPENED, key1, T0 + 5 * HOUR),
            _event(2, EventType.CLICKED, key1, T0 + 6 * HOUR),
            _event(3, EventType.CONVERTED, key1, T0 + 7 * HOUR),
            _event(4, EventType.UNSUBSCRIBED, hello4.key, T0 + DAY),
        ]
    )
    [tips] = repo.journey_due(T0 + 2 * DAY + 10 * HOUR)
    assert (tips.contact_id, tips.step_id) == ("c1", "tips")
    _send(repo, tips, T0 + 3 * DAY)
    reminders = {i.contact_id: i for i in repo.journey_due(T0 + 5 * DAY)}
    assert sorted(reminders) == ["c2", "c3"]
    _send(repo, reminders["c2"], T0 + 5 * DAY)
    repo.record_events([_event(5, EventType.BOUNCED, reminders["c2"].key, T0 + 5 * DAY + HOUR)])
    quiet = repo.journey_due(T0 + 6 * DAY)  # c2 moves on to wait-4d
    assert quiet.counts() == {"send": 0, "deferred": 0, "skipped": 0}
    repo.record_messages(
        [
            Message(
                message_id="newsletter-1",
                channel=journey.send_steps[0].channel,
                direction=Direction.OUTBOUND,
                contact_id="c1",
                address="c1@example.com",
                sent_at=T0,
                campaign_id="news",
            )
        ]
    )
    repo.record_events([_event(6, EventType.OPENED, "newsletter-1", T0 + HOUR)])
    return journey


def _counts(stats: Any) -> dict[str, tuple[Any, ...]]:
    return {
        s.step_id: (s.entered, s.active, s.issued, s.sent, s.skipped, s.pending, dict(s.exits))
        for s in stats.steps
    }


def test_worked_welcome_numbers_per_journey_and_step(repo: CommHistory[Any]) -> None:
    journey = _welcome_history(repo)
    stats = repo.journey_stats(journey)
    assert (stats.entered, stats.active, stats.completed, stats.goal) == (4, 2, 1, 0)
    assert (stats.unsubscribed, stats.left_segment) == (1, 0)
    assert (stats.issued, stats.sent, stats.skipped) == (7, 5, 1)
    # step: (entered, active here, issued, sent, skipped, pending, exits after its send)
    assert _counts(stats) == {
        "hello": (4, 0, 4, 3, 1, 0, {"unsubscribed": 1}),
        "wait-2d": (4, 0, 0, 0, 0, 0, {}),
        "opened-hello": (3, 0, 0, 0, 0, 0, {}),
        "reminder": (2, 1, 2, 1, 0, 1, {}),
        "wait-4d": (1, 1, 0, 0, 0, 0, {}),
        "tips": (1, 0, 1, 1, 0, 0, {"completed": 1}),
    }
    assert stats.exits_before_send == {}
    # c3's hello was skipped by send planning in due, which stored why.
    refused = repo.store.journey_store.intent(
        intent_key(journey, enrollment_id("welcome", "signup-3"), "hello", 1)
    )
    assert refused is not None
    assert (refused.outcome, refused.reason, refused.message_id) == ("skipped", "no_consent", None)
    hello = stats.step("hello").messages
    assert hello is not None
    assert (hello.sent, hello.delivered, hello.unique_opens, hello.unique_clicks) == (3, 3, 1, 1)
    assert (hello.conversions, hello.unsubscribes) == (1, 1)
    reminder = stats.step("reminder").messages
    assert reminder is not None
    assert (reminder.sent, reminder.bounced, reminder.delivered) == (1, 1, 0)
    assert stats.step("wait-2d").messages is None
    m = stats.messages  # the newsletter and its open are in no journey number
    assert (m.sent, m.delivered, m.unique_opens, m.unique_clicks, m.conversions) == (5, 4, 1, 1, 1)
    # The same numbers through the facade's KPI table, grouped by step.
    table = repo.kpis(by="step", journey="welcome", journey_version=1, costs=False)
    assert [(r.group["step"], r.sent) for r in table] == [
        ("hello", 3),
        ("reminder", 1),
        ("tips", 1),
    ]
    whole = repo.kpis(by=("journey", "journey_version"), costs=False)
    assert [dict(r.group) for r in whole] == [{"journey": "welcome", "journey_version": "1"}]
    assert whole.rows[0].sent == 5


def test_stats_as_of_an_instant(repo: CommHistory[Any]) -> None:
    journey = _welcome_history(repo)
    stats = journey_stats(repo.store, journey, at=T0 + 2 * DAY + 12 * HOUR)
    # c1 completed only at T0+3d: active then; c4 had unsubscribed at T0+1d.
    assert (stats.entered, stats.active, stats.completed, stats.unsubscribed) == (4, 3, 0, 1)
    assert (stats.issued, stats.sent, stats.skipped) == (5, 3, 1)  # tips issued, not sent yet
    tips = stats.step("tips")
    assert (tips.issued, tips.sent, tips.pending) == (1, 0, 1)
    # Every active enrollment moved after that instant: none is placed at a step.
    assert sum(s.active for s in stats.steps) == 0
    hello = stats.step("hello").messages
    assert hello is not None
    assert (hello.sent, hello.unique_opens, hello.unsubscribes) == (3, 1, 1)
    assert stats.messages.sent == 3  # the tips and reminder messages were sent later
    before = journey_stats(repo.store, journey, at=T0 - HOUR)
    assert (before.entered, before.issued, before.messages.sent) == (0, 0, 0)
    with pytest.raises(InvalidInputError, match="at"):
        journey_stats(repo.store, journey, at=dt.datetime(2026, 3, 2))


def test_another_version_counts_apart(repo: CommHistory[Any]) -> None:
    journey = _welcome_history(repo)
    v2 = Journey.from_dict({**journey.to_dict(), "version": 2})
    stats = repo.journey_stats(v2)
    assert (stats.entered, stats.issued, stats.messages.sent) == (0, 0, 0)
    assert [s.entered for s in stats.steps] == [0] * 6


def test_render_and_json(repo: CommHistory[Any]) -> None:
    journey = _welcome_history(repo)
    stats = repo.journey_stats(journey)
    text = render_stats(stats)
    lines = text.splitlines()
    assert lines[0] == "welcome v1"
    assert lines[1] == ("entered 4: active 2, completed 1, goal 0, unsubscribed 1, left segment 0")
    header = lines[3].split()
    assert header[:4] == ["step", "kind", "entered", "active"]
    hello = dict(zip(header, lines[4].split(), strict=True))
    assert hello == {
        "step": "hello", "kind": "send", "entered": "4", "active": "0", "sent": "3",
        "skipped": "1", "pending": "0", "delivered": "3", "opened": "1", "clicked": "1",
        "converted": "1", "goal": "0", "unsub": "1",
    }  # fmt: skip
    assert lines[5].split() == ["wait-2d", "wait", "4", "0", "0", "0", "0", "0", "0"]
    data = json.loads(json.dumps(stats.to_dict()))
    assert data["entered"] == 4
    assert data["steps"][0]["messages"]["unique_clicks"] == 1
    assert data["steps"][0]["exits"] == {
        "completed": 0,
        "goal": 0,
        "unsubscribed": 1,
        "left_segment": 0,
    }
    assert "messages" not in data["steps"][1]


def test_journey_filter_is_checked(repo: CommHistory[Any]) -> None:
    with pytest.raises(InvalidInputError, match="journey_version"):
        repo.kpis(journey_version=1)
    with pytest.raises(InvalidInputError, match="journey"):
        repo.kpis(journey="")
    with pytest.raises(InvalidInputError, match="journey_version"):
        repo.kpis(journey="welcome", journey_version=0)


def test_the_guarded_view_needs_read_metrics(repo: CommHistory[Any]) -> None:
    journey = _welcome_history(repo)
    analyst = repo.as_actor(Actor(id="ann", roles=("analyst",)), purpose="ticket 1")
    assert analyst.journey_stats(journey).entered == 4
    officer = repo.as_actor(Actor(id="pat", roles=("privacy_officer",)), purpose="ticket 2")
    with pytest.raises(PermissionDenied):
        officer.journey_stats(journey)


def test_cli_stats_text_and_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from commhistory.cli import main

    url, ring = cli_store(tmp_path, monkeypatch)
    with open_repository(url, ring) as repo:
        _welcome_history(repo)
    file = str(EXAMPLES / "welcome.json")
    assert main(["journey", "stats", file]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].startswith("entered 4: active 2, completed 1")
    assert (
        main(["journey", "stats", file, "--at", "2026-03-04T13:00:00Z", "--format", "json"]) == 0
    )
    data = json.loads(capsys.readouterr().out)
    assert (data["at"], data["active"], data["completed"]) == ("2026-03-04T13:00:00Z", 3, 0)
    assert [s["step"] for s in data["steps"]][:2] == ["hello", "wait-2d"]


# --- random histories: the journey dimension, three engines, one answer -------------------


@pytest.fixture(params=["sqlite", "postgresql", "postgresql-partitioned"])
def sql_repo(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[CommHistory[SQLRepository]]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'kpi.db'}"
    else:
        url = pg_variant_url(request, request.param)
    repo = open_repository(url, Keyring.generate())
    try:
        yield repo
    finally:
        repo.close()


def _clear(repo: CommHistory[SQLRepository]) -> None:
    with repo.store.transaction() as conn:
        for table in (
            "journey_intents",
            "journey_enrollments",
            "events",
            "messages",
            "addresses",
            "consent_events",
            "contacts",
        ):
            conn.exec_driver_sql(f"DELETE FROM {table}")
    repo.store.forget_cached_keys()
    repo.store._message_contacts.clear()
    repo.store._pair_messages.clear()


BASE = dt.datetime(2024, 1, 1, tzinfo=UTC)
seconds = st.integers(0, 40 * 86_400).map(lambda s: BASE + dt.timedelta(seconds=s))


@st.composite
def walks(draw: st.DrawFn) -> tuple[list[EnrollmentRow], list[IntentRow]]:
    """Random enrollments of two journeys (two versions) and intents linking messages."""
    rows = []
    for n in range(draw(st.integers(0, 6))):
        entered = draw(seconds)
        status = draw(st.sampled_from(["active", "completed", "goal", "unsubscribed"]))
        step = draw(st.sampled_from(["a", "b", "w"])) if status == "active" else None
        rows.append(
            EnrollmentRow(
                enrollment_id=f"enr{n}",
                journey_key=draw(st.sampled_from(["j1", "j2"])),
                version=draw(st.integers(1, 2)),
                contact_id=f"c{draw(st.integers(0, 3))}",
                trigger_id=f"t{n}",
                entered_at=entered,
                step_id=step,
                since=entered + dt.timedelta(seconds=draw(st.integers(0, 9 * 86_400))),
                status=status,
                visits=draw(st.dictionaries(st.sampled_from(["a", "b", "w"]), st.integers(0, 3))),
                wake_at=None,
            )
        )
    intents = []
    for n in range(draw(st.integers(0, 12)) if rows else 0):
        row = draw(st.sampled_from(rows))
        issued = row.entered_at + dt.timedelta(seconds=draw(st.integers(0, 5 * 86_400)))
        outcome = draw(st.sampled_from([None, "sent", "sent", "skipped"]))
        recorded = (
            None if outcome is None else issued + dt.timedelta(hours=draw(st.integers(0, 90)))
        )
        intents.append(
            IntentRow(
                key=f"k{n}",
                enrollment_id=row.enrollment_id,
                step_id=draw(st.sampled_from(["a", "b"])),
                issued_at=issued,
                recorded_at=recorded,
                outcome=outcome,
                message_id=f"m{draw(st.integers(0, 11))}" if outcome == "sent" else None,
            )
        )
    return rows, intents


def _store_walks(
    repo: CommHistory[Any], rows: list[EnrollmentRow], intents: list[IntentRow]
) -> None:
    store = repo.store.journey_store
    for row in rows:
        assert store.insert_enrollment(row)
    for intent in intents:
        store.claim([IntentRow(key=intent.key, enrollment_id=intent.enrollment_id,
                               step_id=intent.step_id, issued_at=intent.issued_at)])  # fmt: skip
        if intent.outcome is not None:
            assert intent.recorded_at is not None
            store.record(intent.key, intent.recorded_at, intent.outcome, intent.message_id)


journey_queries: st.SearchStrategy[dict[str, Any]] = st.fixed_dictionaries(
    {
        "by": st.lists(
            st.sampled_from(["journey", "journey_version", "step", "campaign_id", "channel"]),
            unique=True,
            max_size=3,
        ).flatmap(
            lambda keys: st.sampled_from([None, "day", "month"]).map(
                lambda p: tuple(keys) + (() if p is None else (p,))
            )
        ),
        "journey": st.sampled_from([None, "j1", "j2"]),
        "tz": st.sampled_from(["UTC", "Asia/Tokyo", "America/New_York"]),
        "exclude_machine": st.booleans(),
    }
).flatmap(
    lambda q: st.sampled_from([None, 1, 2] if q["journey"] else [None]).map(
        lambda v: {**q, "journey_version": v}
    )
)


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    history=histories(),
    walk=walks(),
    query=journey_queries,
    at=st.none() | seconds,
)
def test_journey_kpis_and_counts_agree_on_every_engine(
    sql_repo: CommHistory[SQLRepository],
    history: tuple[list[Message], list[Event]],
    walk: tuple[list[EnrollmentRow], list[IntentRow]],
    query: dict[str, Any],
    at: dt.datetime | None,
) -> None:
    messages, events = history
    rows, intents = walk
    _clear(sql_repo)
    memory = CommHistory.in_memory()
    for repo in (sql_repo, memory):
        repo.record_messages(messages)
        repo.record_events(events)
        _store_walks(repo, rows, intents)
    by_id = {r.enrollment_id: r for r in rows}
    links = [
        JourneyLink(i.message_id, by_id[i.enrollment_id].journey_key,
                    by_id[i.enrollment_id].version, i.step_id)
        for i in intents
        if i.outcome == "sent" and i.message_id is not None
    ]  # fmt: skip
    if query["journey"] is None and not {"journey", "journey_version", "step"} & set(query["by"]):
        query = {**query, "by": ("step", *query["by"])}  # always read the journey link
    expected = compute(messages, events, journey_links=links, **query)
    assert sql_repo.kpis(**query, costs=False) == expected
    assert memory.kpis(**query, costs=False) == expected
    for key, version in (("j1", 1), ("j1", 2), ("j2", 1)):
        sql_counts = sql_repo.store.journey_store.journey_counts(key, version, at=at)
        mem_counts = memory.store.journey_store.journey_counts(key, version, at=at)
        assert sql_counts == mem_counts
        mine = [r for r in rows if (r.journey_key, r.version) == (key, version)]
        entered = [r for r in mine if at is None or r.entered_at <= at]
        assert sum(sql_counts.statuses.values()) == len(entered)


def test_the_html_report_shows_messages_per_journey_step(repo: CommHistory[Any]) -> None:
    from commhistory.kpi.report import build_report, render_html

    plain = render_html(build_report(repo))
    assert "Journeys: messages per step" not in plain  # nothing recorded for a journey yet
    _welcome_history(repo)
    data = build_report(repo)
    assert data.journeys is not None
    assert [(r.group["step"], r.sent, r.unique_opens) for r in data.journeys] == [
        ("hello", 3, 1),
        ("reminder", 1, 0),
        ("tips", 1, 0),
    ]
    html = render_html(data)
    section = html.split("<h2>Journeys: messages per step</h2>")[1].split("<h2>")[0]
    assert section.count("<tr>") == 4  # the header and three steps
    assert ">welcome<" in section
    assert ">reminder<" in section
    assert build_report(repo, journey_steps=False).journeys is None
