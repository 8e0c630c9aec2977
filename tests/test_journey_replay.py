"""Dry-run replay of a stored history against a journey, on memory, SQLite and PostgreSQL.

The expected sends are worked out by hand from the welcome series
(``examples/journeys/welcome.json``: hello at entry, wait 2 days, a branch on
hello's open within 3 days, else a reminder and 4 more days, then tips; an
email unsubscribe ends it; a contact enters once).
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from commhistory.audit import Actor, Policy
from commhistory.contacts import AttributeDefinition
from commhistory.errors import InvalidInputError, NotFoundError, PermissionDenied
from commhistory.facade import CommHistory, open_repository
from commhistory.journeys import Journey, SendIntent
from commhistory.journeys.engine import enrollment_id
from commhistory.journeys.gate import DeferredIntent, SkippedIntent
from commhistory.journeys.machine import intent_key
from commhistory.journeys.replay import replay
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
from tests._journeys import BACKENDS, cli_store, consent, open_history, reachable, with_address

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "journeys"
UTC = dt.UTC
T0 = dt.datetime(2026, 3, 2, 1, 0, tzinfo=UTC)
DAY = dt.timedelta(days=1)
HOUR = dt.timedelta(hours=1)
SINCE = dt.datetime(2026, 3, 1, tzinfo=UTC)
UNTIL = dt.datetime(2026, 3, 20, tzinfo=UTC)


@pytest.fixture(params=BACKENDS)
def repo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CommHistory[Any]]:
    with open_history(request, tmp_path) as history:
        yield history


def _signup(n: int, contact: str, at: dt.datetime) -> Activity:
    return Activity(activity_id=f"s{n}", contact_id=contact, name="signup", occurred_at=at)


def _message(message_id: str, contact: str, at: dt.datetime, **kw: Any) -> Message:
    return Message(
        message_id=message_id,
        channel=Channel.EMAIL,
        direction=Direction.OUTBOUND,
        contact_id=contact,
        address=f"{contact}@example.com",
        sent_at=at,
        **kw,
    )


def _history(repo: CommHistory[Any]) -> tuple[Journey, str]:
    """The stored history; returns the journey and the key c1's hello was sent under live.

    * c1 signs up at T0 (s1) and again at T0+2d (s3: kept out, once ever). Its
      hello was sent live under the key a replay derives too, and opened at T0+5h.
    * c2 signs up at T0+1d and unsubscribes from a newsletter at T0+1d12h.
    * c3 signed up before the window (not a trigger).
    * c4 signs up at 03-19 12:00, late in the window.
    * c5 signs up at T0+3d and never opens anything.

    Every contact can receive email (an address and marketing consent since 2025,
    ``tests._journeys.reachable``), so send planning lets every send go; the old
    message giving the address is outside the window and has no events.
    """
    journey = Journey.load(EXAMPLES / "welcome.json")
    reachable(repo, ["c1", "c2", "c3", "c4", "c5"], Channel.EMAIL)
    repo.declare_activities({"signup": []})
    repo.record_messages([_message("news-2", "c2", T0, campaign_id="news")])
    repo.record_activities(
        [
            _signup(1, "c1", T0),
            _signup(2, "c2", T0 + DAY),
            _signup(3, "c1", T0 + 2 * DAY),
            _signup(0, "c3", dt.datetime(2026, 2, 27, tzinfo=UTC)),
            _signup(4, "c4", dt.datetime(2026, 3, 19, 12, tzinfo=UTC)),
            _signup(5, "c5", T0 + 3 * DAY),
        ]
    )
    # c1 went through the live engine once: its hello was sent under the intent key.
    repo.enroll(journey, "c1", "s1", at=T0)
    [hello] = repo.journey_due(T0)
    repo.record_messages([_message(hello.key, "c1", T0)])
    repo.record_journey_send(hello.key, at=T0)
    repo.record_events(
        [
            Event(event_id="o1", type=EventType.OPENED, occurred_at=T0 + 5 * HOUR,
                  message_id=hello.key),
            Event(event_id="u2", type=EventType.UNSUBSCRIBED, occurred_at=T0 + DAY + 12 * HOUR,
                  message_id="news-2"),
        ]
    )  # fmt: skip
    return journey, hello.key


def _state(repo: CommHistory[Any]) -> tuple[Any, ...]:
    store = repo.store.journey_store
    counts = store.journey_counts("welcome", 1)
    return (counts, repo.journey_due(UNTIL, dry_run=True))


def test_replay_of_the_welcome_series(repo: CommHistory[Any]) -> None:
    journey, live_key = _history(repo)
    before = _state(repo)
    report = repo.journey_replay(journey, since=SINCE, until=UNTIL)
    assert _state(repo) == before  # nothing written
    assert (report.triggers, report.enrolled, report.kept_out) == (5, 4, 1)
    assert report.statuses == {"active": 1, "completed": 2, "unsubscribed": 1}
    assert [(s.step_id, s.sends, s.contacts) for s in report.steps] == [
        ("hello", 4, 4),
        ("reminder", 1, 1),
        ("tips", 2, 2),
    ]
    assert [(i.due_at, i.step_id, i.contact_id) for i in report.intents] == [
        (T0, "hello", "c1"),
        (T0 + DAY, "hello", "c2"),  # then unsubscribed at T0+1d12h
        (T0 + 2 * DAY, "tips", "c1"),  # opened hello before the branch began
        (T0 + 3 * DAY, "hello", "c5"),
        (T0 + 8 * DAY, "reminder", "c5"),  # 2 days' wait + the branch's 3 days
        (T0 + 12 * DAY, "tips", "c5"),  # 4 more days
        (dt.datetime(2026, 3, 19, 12, tzinfo=UTC), "hello", "c4"),  # then waits past the end
    ]
    # The keys are those a live run hands out: c1's hello is the key it was sent under.
    assert report.intents[0].key == live_key
    assert report.intents[0].enrollment_id == enrollment_id("welcome", "s1")
    assert replay(repo.store, journey, since=SINCE, until=UNTIL) == report  # deterministic


def test_a_shorter_window_cuts_triggers_and_sends(repo: CommHistory[Any]) -> None:
    journey, _ = _history(repo)
    report = repo.journey_replay(journey, since=T0 + DAY, until=T0 + 9 * DAY)
    # s2 (c2), s3 (c1, its first signup is outside: enters now), s5 (c5).
    assert (report.triggers, report.enrolled, report.kept_out) == (3, 3, 0)
    assert [(i.due_at, i.step_id, i.contact_id) for i in report.intents] == [
        (T0 + DAY, "hello", "c2"),
        (T0 + 2 * DAY, "hello", "c1"),  # a new enrollment (s3): its hello was never opened
        (T0 + 3 * DAY, "hello", "c5"),
        (T0 + 7 * DAY, "reminder", "c1"),
        (T0 + 8 * DAY, "reminder", "c5"),
    ]
    assert report.statuses == {"active": 2, "unsubscribed": 1}


def test_an_event_trigger(repo: CommHistory[Any]) -> None:
    journey = Journey.from_dict(
        {
            "key": "clicked-spring",
            "version": 1,
            "trigger": {"type": "event", "event": "clicked", "campaign": "spring"},
            "reentry": "always",
            "steps": [{"type": "send", "id": "thanks", "template": "t", "channel": "sms"}],
        }
    )
    reachable(repo, ["c1"], Channel.SMS)  # a mobile number and SMS marketing consent
    repo.record_messages(
        [
            _message("m1", "c1", T0, campaign_id="spring"),
            _message("m2", "c2", T0, campaign_id="summer"),
        ]
    )
    repo.record_events(
        [
            Event(event_id="k1", type=EventType.CLICKED, occurred_at=T0 + HOUR, message_id="m1"),
            Event(event_id="k2", type=EventType.CLICKED, occurred_at=T0 + HOUR, message_id="m2"),
            Event(event_id="k3", type=EventType.CLICKED, occurred_at=T0 + DAY, message_id="m1"),
            Event(event_id="k4", type=EventType.OPENED, occurred_at=T0 + DAY, message_id="m1"),
        ]
    )
    report = repo.journey_replay(journey, since=SINCE, until=UNTIL)
    assert [(i.due_at, i.contact_id) for i in report.intents] == [
        (T0 + HOUR, "c1"),
        (T0 + DAY, "c1"),
    ]
    assert report.skipped == ()
    assert report.statuses == {"completed": 2}


def _screened_history(repo: CommHistory[Any]) -> Journey:
    """Five contacts sign up at T0 (01:00 UTC); what send planning lets go differs.

    * r1: an address and consent: every send goes.
    * r2: an address, never consent: every send is skipped (``no_consent``).
    * r3: an address, consent from T0+1d: hello skipped, reminder and tips go.
    * r4: consent, no address: every send is skipped (``missing_address``).
    * r5: an address and consent, withdrawn at T0+3d: hello goes, then the
      withdrawal ends the journey (its unsubscribe goal), as in ``due``.

    Nobody opens hello, so each walk is hello (T0), reminder (T0+5d), tips (T0+9d).
    """
    journey = Journey.load(EXAMPLES / "welcome.json")
    reachable(repo, ["r1", "r5"], Channel.EMAIL)
    with_address(repo, ["r2", "r3"], Channel.EMAIL)
    repo.record_consent(
        [
            consent("r3", Channel.EMAIL, at=T0 + DAY),
            consent("r4", Channel.EMAIL),
            consent("r5", Channel.EMAIL, at=T0 + 3 * DAY, action=ConsentAction.WITHDRAW),
        ]
    )
    repo.declare_activities({"signup": []})
    repo.record_activities([_signup(n, f"r{n}", T0) for n in range(1, 6)])
    return journey


def test_replay_screens_each_send_as_due_does(repo: CommHistory[Any]) -> None:
    journey = _screened_history(repo)
    report = repo.journey_replay(journey, since=SINCE, until=UNTIL)
    assert report.statuses == {"completed": 4, "unsubscribed": 1}
    assert [(s.step_id, s.sends, s.contacts, s.skipped, s.deferred) for s in report.steps] == [
        ("hello", 2, 2, 3, 0),
        ("reminder", 2, 2, 2, 0),
        ("tips", 2, 2, 2, 0),
    ]
    assert sorted((i.due_at, i.step_id, i.contact_id) for i in report.intents) == [
        (T0, "hello", "r1"),
        (T0, "hello", "r5"),
        (T0 + 5 * DAY, "reminder", "r1"),
        (T0 + 5 * DAY, "reminder", "r3"),
        (T0 + 9 * DAY, "tips", "r1"),
        (T0 + 9 * DAY, "tips", "r3"),
    ]
    skipped = sorted(
        (k.intent.due_at, k.intent.step_id, k.intent.contact_id, k.reason.value)
        for k in report.skipped
    )
    assert skipped == [
        (T0, "hello", "r2", "no_consent"),
        (T0, "hello", "r3", "no_consent"),
        (T0, "hello", "r4", "missing_address"),
        (T0 + 5 * DAY, "reminder", "r2", "no_consent"),
        (T0 + 5 * DAY, "reminder", "r4", "missing_address"),
        (T0 + 9 * DAY, "tips", "r2", "no_consent"),
        (T0 + 9 * DAY, "tips", "r4", "missing_address"),
    ]
    data = report.to_dict()
    assert {k["reason"] for k in data["skipped"]} == {"no_consent", "missing_address"}
    # The live engine, called at each of those instants, does the same.
    for signup in range(1, 6):
        repo.enroll(journey, f"r{signup}", f"s{signup}", at=T0)
    live: list[SendIntent] = []
    refused: list[SkippedIntent] = []
    for now in (T0, T0 + 5 * DAY, T0 + 9 * DAY):
        result = repo.journey_due(now)
        live.extend(result)
        refused.extend(result.skipped)
        for intent in result:
            repo.record_journey_send(intent.key, at=now)
    assert sorted(i.key for i in live) == sorted(i.key for i in report.intents)
    assert sorted((k.intent.key, k.reason) for k in refused) == sorted(
        (k.intent.key, k.reason) for k in report.skipped
    )


def test_replay_defers_or_skips_in_quiet_hours(repo: CommHistory[Any]) -> None:
    """Quiet hours 22:00-08:00 UTC: r1's sends, due at 01:00, wait until 08:00, or skip.

    Deferred: hello goes at T0+7h (08:00), so the 2-day wait and 3-day branch end at
    08:00 on 03-07 (reminder, not quiet) and tips 4 days later, at 08:00 again. r3's
    hello is skipped at 01:00 (no consent yet: no wait fixes that), so its walk stays
    on 01:00 and its reminder, due at 01:00 on 03-07, is deferred to 08:00.
    """
    _screened_history(repo)
    quiet = PlanConfig(
        quiet_hours=[QuietHours(channel="email", purpose="marketing", start=dt.time(22),
                                end=dt.time(8))]
    )  # fmt: skip
    welcome = Journey.load(EXAMPLES / "welcome.json")
    report = repo.journey_replay(welcome, since=SINCE, until=UNTIL, config=quiet)
    mine = [(i.due_at, i.step_id) for i in report.intents if i.contact_id == "r1"]
    assert mine == [
        (T0, "hello"),  # due at 01:00 (its due instant stays), sent at 08:00
        (T0 + 5 * DAY + 7 * HOUR, "reminder"),
        (T0 + 9 * DAY + 7 * HOUR, "tips"),
    ]
    held = sorted(
        (d.until, d.intent.step_id, d.intent.contact_id, d.reason.value) for d in report.deferred
    )
    assert held == [
        (T0 + 7 * HOUR, "hello", "r1", "quiet_hours"),
        (T0 + 7 * HOUR, "hello", "r5", "quiet_hours"),
        (T0 + 5 * DAY + 7 * HOUR, "reminder", "r3", "quiet_hours"),
    ]  # r2 and r4 are refused for good (skipped), whatever the hour
    assert (report.step("hello").deferred, report.step("reminder").deferred) == (2, 1)
    r3 = [(i.due_at, i.step_id) for i in report.intents if i.contact_id == "r3"]
    assert r3 == [(T0 + 5 * DAY, "reminder"), (T0 + 9 * DAY + 7 * HOUR, "tips")]
    skipping = Journey.from_dict({**welcome.to_dict(), "key": "welcome-skip",
                                  "when_blocked": "skip"})  # fmt: skip
    report = repo.journey_replay(skipping, since=SINCE, until=UNTIL, config=quiet)
    assert report.intents == ()  # every send is due at 01:00, in quiet hours
    reasons = {(k.intent.contact_id, k.intent.step_id): k.reason.value for k in report.skipped}
    assert reasons[("r1", "hello")] == reasons[("r1", "tips")] == "quiet_hours"
    assert reasons[("r2", "hello")] == "no_consent"
    assert [(s.sends, s.skipped, s.deferred) for s in report.steps] == [
        (0, 5, 0),
        (0, 4, 0),  # r5 unsubscribed (withdrew) before its reminder
        (0, 4, 0),
    ]


def test_replay_defers_a_capped_send_to_the_next_midnight(repo: CommHistory[Any]) -> None:
    """A cap of one marketing email a day; q1 got a promotion at 00:30 on T0's day.

    hello, due at T0 (01:00), is capped: deferred to the next midnight (03-03 00:00)
    and sent then; the wait and the branch run from there (reminder 03-08 00:00, tips
    03-12 00:00), on days with no stored marketing message. The live engine agrees.
    """
    journey = Journey.load(EXAMPLES / "welcome.json")
    reachable(repo, ["q1"], Channel.EMAIL)
    promo_at = T0 - 30 * dt.timedelta(minutes=1)
    repo.record_messages([_message("promo", "q1", promo_at, purpose=Purpose.MARKETING)])
    repo.declare_activities({"signup": []})
    repo.record_activities([_signup(1, "q1", T0)])
    cap = PlanConfig(caps=[FrequencyCap(channel="email", purpose="marketing", limit=1, days=1)])
    report = repo.journey_replay(journey, since=SINCE, until=UNTIL, config=cap)
    midnight = dt.datetime(2026, 3, 3, tzinfo=UTC)
    assert [(d.intent.step_id, d.until, d.reason.value) for d in report.deferred] == [
        ("hello", midnight, "frequency_cap")
    ]
    assert [(i.due_at, i.step_id) for i in report.intents] == [
        (T0, "hello"),
        (midnight + 5 * DAY, "reminder"),
        (midnight + 9 * DAY, "tips"),
    ]
    repo.enroll(journey, "q1", "s1", at=T0)
    first = repo.journey_due(T0, config=cap)
    assert first.counts() == {"send": 0, "deferred": 1, "skipped": 0}
    live: list[SendIntent] = []
    for now in (midnight, midnight + 5 * DAY, midnight + 9 * DAY):
        for intent in repo.journey_due(now, config=cap):
            live.append(intent)
            repo.record_journey_send(intent.key, at=now)
    assert [i.key for i in live] == [i.key for i in report.intents]


def test_refusals(repo: CommHistory[Any]) -> None:
    journey = Journey.load(EXAMPLES / "birthday.json")
    with pytest.raises(InvalidInputError, match="attribute"):  # birth_date is not declared
        repo.journey_replay(journey, since=SINCE, until=UNTIL)
    welcome = Journey.load(EXAMPLES / "welcome.json")
    with pytest.raises(InvalidInputError, match="since"):
        repo.journey_replay(welcome, since=UNTIL, until=SINCE)
    with pytest.raises(InvalidInputError, match="until"):
        repo.journey_replay(welcome, since=SINCE, until=dt.datetime(2026, 3, 2))


def test_the_guarded_view_needs_read_history_masked(repo: CommHistory[Any]) -> None:
    journey, _ = _history(repo)
    analyst = repo.as_actor(Actor(id="ann", roles=("analyst",)), purpose="ticket 1")
    assert analyst.journey_replay(journey, since=SINCE, until=UNTIL).enrolled == 4
    metrics_only = Policy({"reporter": ["read_metrics"]})
    nobody = repo.as_actor(Actor("rex", ["reporter"]), purpose="ticket 2", policy=metrics_only)
    with pytest.raises(PermissionDenied):
        nobody.journey_replay(journey, since=SINCE, until=UNTIL)


def test_cli_replay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from commhistory.cli import main

    url, ring = cli_store(tmp_path, monkeypatch)
    with open_repository(url, ring) as repo:
        _history(repo)
    window = ["--from", "2026-03-01T00:00:00Z", "--to", "2026-03-20T00:00:00Z"]
    file = str(EXAMPLES / "welcome.json")
    assert main(["journey", "replay", file, *window]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:3] == [
        "welcome v1 replayed 2026-03-01T00:00:00Z .. 2026-03-20T00:00:00Z",
        "triggers 5, enrolled 4, kept out by re-entry 1",
        "at the end: active 1, completed 2, unsubscribed 1",
    ]
    assert [line.split() for line in out[3:]] == [
        ["step", "template", "sends", "contacts", "skipped", "deferred"],
        ["hello", "welcome-1", "4", "4", "0", "0"],
        ["reminder", "welcome-reminder", "1", "1", "0", "0"],
        ["tips", "welcome-tips", "2", "2", "0", "0"],
    ]
    assert main(["journey", "replay", file, *window, "--intents", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [(i["due_at"], i["step"], i["contact_id"]) for i in data["intents"]][-2:] == [
        ("2026-03-14T01:00:00Z", "tips", "c5"),
        ("2026-03-19T12:00:00Z", "hello", "c4"),
    ]
    assert main(["journey", "replay", file, *window, "--intents"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1].split()[:4] == ["2026-03-19T12:00:00Z", "hello", "welcome-1", "c4"]
    # Quiet hours 22:00-08:00 UTC (defer): the hellos due at 01:00 wait until 08:00
    # (c1, c2, c5); c4's at 12:00 goes at once. The rest is due at 08:00, not quiet.
    config = tmp_path / "plan.json"
    config.write_text(
        json.dumps({"quiet_hours": [{"channel": "email", "purpose": "marketing",
                                     "start": "22:00", "end": "08:00"}]})
    )  # fmt: skip
    assert main(["journey", "replay", file, *window, "--config", str(config)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split() for line in out[4:]] == [
        ["hello", "welcome-1", "4", "4", "0", "3"],
        ["reminder", "welcome-reminder", "1", "1", "0", "0"],
        ["tips", "welcome-tips", "2", "2", "0", "0"],
    ]


# --- the replay walks as the live engine does ----------------------------------------------


CONSENT_MODES = ("none", "always", "later", "withdrawn")
"""Per contact: no consent, consent since 2025, consent granted or withdrawn hours later."""


@st.composite
def signups(draw: st.DrawFn) -> list[tuple[int, int | None, int | None, str, int]]:
    """Per contact: signup hour after T0, hours to an open of hello, hours to an
    unsubscribe, its consent mode and the hours after signup a ``later`` grant or a
    ``withdrawn`` withdrawal comes."""
    return draw(
        st.lists(
            st.tuples(
                st.integers(0, 72),
                st.none() | st.integers(1, 130),
                st.none() | st.integers(1, 240),
                st.sampled_from(CONSENT_MODES),
                st.integers(0, 200),
            ),
            min_size=1,
            max_size=4,
        )
    )


QUIET = PlanConfig(
    quiet_hours=[QuietHours(channel="email", purpose="marketing", start=dt.time(22),
                            end=dt.time(6))]
)  # fmt: skip


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    plan=signups(),
    config=st.sampled_from([None, QUIET]),
    when_blocked=st.sampled_from(["defer", "skip"]),
)
def test_replay_sends_what_the_live_engine_sent(
    repo: CommHistory[Any],
    plan: list[tuple[int, int | None, int | None, str, int]],
    config: PlanConfig | None,
    when_blocked: str,
) -> None:
    """A live run (due every hour, each send recorded when handed out) and its replay agree.

    Both screen every send through send planning: the same sends go, the same are
    skipped with the same reasons, the same are deferred. Every instant of the history
    falls on a whole hour, so an hourly ``due`` sees each one when it happens, as the
    replay's clock does.
    """
    base = Journey.load(EXAMPLES / "welcome.json")
    journey = Journey.from_dict(
        {**base.to_dict(), "key": f"welcome-{when_blocked}", "when_blocked": when_blocked}
    )
    tag = uuid.uuid4().hex[:8]  # one example's records apart from the last one's
    end = T0 + 12 * DAY
    activities, messages, events, ledger = [], [], [], []
    for n, (start, opened, unsubscribed, mode, after) in enumerate(plan):
        contact, trigger, at = f"c{n}-{tag}", f"s{n}-{tag}", T0 + start * HOUR
        activities.append(Activity(activity_id=trigger, contact_id=contact, name="signup",
                                   occurred_at=at))  # fmt: skip
        hello = intent_key(journey, enrollment_id(journey.key, trigger), "hello", 1)
        messages.append(_message(hello, contact, at))  # also the contact's address
        for kind, hours in ((EventType.OPENED, opened), (EventType.UNSUBSCRIBED, unsubscribed)):
            if hours is not None:
                events.append(Event(event_id=f"{kind.value}-{n}-{tag}", type=kind,
                                    occurred_at=at + hours * HOUR, message_id=hello))  # fmt: skip
        if mode in ("always", "withdrawn"):
            ledger.append(consent(contact, Channel.EMAIL))
        if mode == "later":
            ledger.append(consent(contact, Channel.EMAIL, at=at + after * HOUR))
        if mode == "withdrawn":
            ledger.append(consent(contact, Channel.EMAIL, at=at + after * HOUR,
                                  action=ConsentAction.WITHDRAW))  # fmt: skip
    repo.declare_activities({"signup": []})
    repo.record_activities(activities)
    repo.record_messages(messages)
    repo.record_events(events)
    repo.record_consent(ledger)
    for activity in activities:
        repo.enroll(journey, activity.contact_id, activity.activity_id, at=activity.occurred_at)
    live: list[SendIntent] = []
    skipped: list[SkippedIntent] = []
    deferred: list[DeferredIntent] = []
    now = T0
    while now <= end:
        result = repo.journey_due(now, config=config)
        skipped.extend(result.skipped)
        deferred.extend(result.deferred)
        for intent in result:
            live.append(intent)
            repo.record_journey_send(intent.key, at=now)
        now += HOUR
    report = repo.journey_replay(journey, since=T0, until=end, config=config)
    mine = {a.contact_id for a in activities}
    assert sorted((i.due_at, i.key, i.step_id) for i in live if i.contact_id in mine) == [
        (i.due_at, i.key, i.step_id) for i in report.intents if i.contact_id in mine
    ]

    def held(items: Iterable[SkippedIntent | DeferredIntent]) -> list[tuple[Any, ...]]:
        return sorted(
            (h.intent.due_at, h.intent.key, h.reason, getattr(h, "until", None))
            for h in items
            if h.intent.contact_id in mine
        )

    assert held(skipped) == held(report.skipped)
    assert held(deferred) == held(report.deferred)


# --- segment-entry and date triggers: the live triggers and their replay ------------------------

T1 = dt.datetime(2027, 2, 26, tzinfo=UTC)
"""2027 is a common year: a 29 February birthday fires on the 28th."""
ZONES = (ZoneInfo("UTC"), ZoneInfo("Asia/Tokyo"), ZoneInfo("America/New_York"))
"""Whole-hour offsets: 09:00 local is a whole hour in UTC, when an hourly run looks."""
BIRTHDAYS = ("02-26", "02-27", "02-28", "02-29", "03-01")


@st.composite
def contacts(draw: st.DrawFn) -> list[tuple[str, int, int, list[int]]]:
    """Per contact: a birthday (month-day), a birth year, its zone, and the hours after T1
    at which it flips in or out of the gold tier (it starts silver)."""
    return draw(
        st.lists(
            st.tuples(
                st.sampled_from(BIRTHDAYS),
                st.sampled_from([1988, 2000]),  # 2000 is a leap year
                st.integers(0, len(ZONES) - 1),
                st.lists(st.integers(0, 90), max_size=4, unique=True).map(sorted),
            ),
            min_size=1,
            max_size=3,
        )
    )


@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    people=contacts(),
    kind=st.sampled_from(["date", "segment"]),
    reentry=st.sampled_from(["once", "periodic", "always"]),
)
def test_replay_of_segment_and_date_triggers_sends_what_live_runs_sent(
    repo: CommHistory[Any],
    people: list[tuple[str, int, int, list[int]]],
    kind: str,
    reentry: str,
) -> None:
    """Hourly ``run_triggers`` then ``due`` (each send recorded) and the replay agree.

    Date: each contact's birthday at 09:00 in its zone, over four days around
    28 February of a common year. Segment: contacts flip in and out of a saved
    segment; each run snapshots it, and the replay reads those snapshots.
    """
    tag = uuid.uuid4().hex[:8]
    segment = f"gold-{tag}"
    repo.declare_attributes(
        [
            AttributeDefinition(name="birth_date", type="date"),
            AttributeDefinition(name="tier", type="enum", values=("gold", "silver")),
        ]
    )
    repo.save_segment(segment, {"attribute": "tier", "op": "=", "value": "gold"})
    trigger: dict[str, Any] = (
        {"type": "date", "attribute": "birth_date", "annual": True, "at": "09:00"}
        if kind == "date"
        else {"type": "segment", "segment": segment}
    )
    journey = Journey.from_dict(
        {
            "key": f"{kind}-{tag}",
            "version": 1,
            "trigger": trigger,
            "reentry": reentry,
            **({"reentry_days": 1} if reentry == "periodic" else {}),
            "steps": [
                {"type": "send", "id": "hello", "template": "t-1", "channel": "email",
                 "next": "wait"},
                {"type": "wait", "id": "wait", "delay": "1d", "next": "again"},
                {"type": "send", "id": "again", "template": "t-2", "channel": "email"},
            ],
        }
    )  # fmt: skip
    ids = [f"p{n}-{tag}" for n in range(len(people))]
    reachable(repo, ids)
    zone = {cid: ZONES[z] for cid, (_d, _y, z, _f) in zip(ids, people, strict=True)}
    flips: dict[int, list[str]] = {}
    for cid, (day, year, _z, hours) in zip(ids, people, strict=True):
        repo.set_attributes(cid, {"birth_date": f"{year}-{day}", "tier": "silver"},
                            at=T1 - DAY)  # fmt: skip
        for hour in hours:
            flips.setdefault(hour, []).append(cid)

    def zone_of(contact: str) -> ZoneInfo:
        return zone.get(contact, ZONES[0])

    gold: set[str] = set()
    live: list[SendIntent] = []
    end = T1 + 4 * DAY
    now, hour = T1, 0
    while now <= end:
        for cid in flips.get(hour, []):
            gold ^= {cid}
            repo.set_attributes(cid, {"tier": "gold" if cid in gold else "silver"}, at=now)
        # No wakes: the journey has no branch or goal (and the wake marks are shared).
        repo.run_journey_triggers([journey], now, zone_of=zone_of, wake=False)
        for intent in repo.journey_due(now):
            live.append(intent)
            repo.record_journey_send(intent.key, at=now)
        now += HOUR
        hour += 1
    report = repo.journey_replay(journey, since=T1, until=end, zone_of=zone_of)
    mine = set(ids)
    expected = sorted((i.due_at, i.key, i.step_id) for i in live if i.contact_id in mine)
    assert expected == [(i.due_at, i.key, i.step_id) for i in report.intents
                        if i.contact_id in mine]  # fmt: skip
    if kind == "date":  # every contact's birthday falls in the window, once
        hellos = {i.contact_id for i in report.intents if i.step_id == "hello"}
        assert hellos & mine == mine


def test_replay_of_a_segment_needs_a_snapshot_at_or_before_since(repo: CommHistory[Any]) -> None:
    repo.declare_attributes(
        [AttributeDefinition(name="tier", type="enum", values=("gold", "silver"))]
    )
    repo.save_segment("gold", {"attribute": "tier", "op": "=", "value": "gold"})
    journey = Journey.from_dict(
        {
            "key": "gold",
            "version": 1,
            "trigger": {"type": "segment", "segment": "gold"},
            "steps": [{"type": "send", "id": "hello", "template": "t", "channel": "email"}],
        }
    )
    repo.set_attributes("c1", {"tier": "gold"}, at=T1)
    repo.run_journey_triggers([journey], T1 + HOUR)  # the first snapshot, after since
    with pytest.raises(InvalidInputError, match="snapshot"):
        repo.journey_replay(journey, since=T1, until=T1 + DAY)
    assert repo.journey_replay(journey, since=T1 + HOUR, until=T1 + DAY).triggers == 0
    missing = Journey.from_dict(
        {**journey.to_dict(), "trigger": {"type": "segment", "segment": "nope"}}
    )
    with pytest.raises(NotFoundError):
        repo.journey_replay(missing, since=T1, until=T1 + DAY)
