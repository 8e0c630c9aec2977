"""Journey triggers from the stored history, wakes on behaviour, segment exits.

On memory, SQLite and PostgreSQL: activity, event, segment and date triggers
enroll once per triggering record (a repeated or retried run enrolls nobody
twice), new behaviour wakes enrollments waiting at a branch, and leaving a
saved segment ends a journey whose goal it is.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from commhistory.contacts import AttributeDefinition
from commhistory.crypto import Keyring
from commhistory.errors import InvalidInputError, NotFoundError
from commhistory.facade import CommHistory, open_repository
from commhistory.journeys import Journey, SendIntent, Status
from commhistory.journeys.engine import due, enrollment_id
from commhistory.journeys.triggers import WAKE_KEY, anniversary, run_triggers
from commhistory.model import (
    Activity,
    Channel,
    ConsentAction,
    ConsentEvent,
    ConsentMethod,
    Direction,
    Event,
    EventType,
    Message,
    Purpose,
)
from commhistory.store.journeys import TriggerMark
from tests._journeys import BACKENDS, cli_store, open_history, reachable, sql_target

# Contacts whose sends journey_due hands out get an address and marketing consent through
# tests._journeys.reachable: records of LONG_AGO (2025), older than any run's max_age, so
# the consent grant is never read as new behaviour by a wake and the woken counts stay the
# ones the tests mean.
EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "journeys"
UTC = dt.UTC
T0 = dt.datetime(2026, 3, 2, 1, 0, tzinfo=UTC)
MIN = dt.timedelta(minutes=1)
HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)
TOKYO = ZoneInfo("Asia/Tokyo")


@pytest.fixture(params=BACKENDS)
def repo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CommHistory[Any]]:
    with open_history(request, tmp_path, postgres="pg_database_url") as history:
        yield history


def _journey(path: str, **changes: Any) -> Journey:
    data = Journey.load(EXAMPLES / path).to_dict()
    data.update(changes)
    return Journey.from_dict(data)


def _row(repo: CommHistory[Any], key: str, trigger: str) -> Any:
    return repo.store.journey_store.enrollment(enrollment_id(key, trigger))


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
                campaign_id="spring",
            )
        ]
    )
    assert repo.record_journey_send(intent.key, at=at) is True


def _activity(aid: str, contact: str, name: str, at: dt.datetime, **props: Any) -> Activity:
    return Activity(
        activity_id=aid, contact_id=contact, name=name, occurred_at=at, properties=props
    )


# --- activity triggers ------------------------------------------------------------------


def test_activity_trigger_enrolls_once_with_plain_properties(repo: CommHistory[Any]) -> None:
    cart = _journey("cart_abandonment.json")
    reachable(repo, ["c1", "c2"])
    reachable(repo, ["c1", "c2"], Channel.LINE)  # c2 never clicks: the LINE nudge
    repo.declare_activities({"cart_abandoned": ["cart_id"], "purchase": ["cart_id"]})
    repo.record_activities(
        [
            _activity("ab-1", "c1", "cart_abandoned", T0, cart_id="cart-9", note="secret"),
            _activity("ab-2", "c2", "cart_abandoned", T0 + MIN, cart_id="cart-3"),
            _activity("p-0", "c3", "purchase", T0, cart_id="cart-1"),  # another name
        ]
    )
    report = repo.run_journey_triggers([cart], T0 + 5 * MIN)
    assert report.enrolled == {"cart-abandonment": 2}
    first = _row(repo, "cart-abandonment", "ab-1")
    assert (first.contact_id, first.entered_at) == ("c1", T0)
    assert dict(first.entry_properties) == {"cart_id": "cart-9"}  # the plain ones only
    again = repo.run_journey_triggers([cart], T0 + 6 * MIN)
    assert again.enrolled == {}
    assert again.read == {}
    # The cart's purchase ends c1's journey through the entry properties (match goal).
    nudges = {i.contact_id: i for i in repo.journey_due(T0 + HOUR + MIN)}
    assert set(nudges) == {"c1", "c2"}
    for intent in nudges.values():
        _send(repo, intent, T0 + HOUR + MIN)
    repo.record_activities([_activity("p-1", "c1", "purchase", T0 + 2 * HOUR, cart_id="cart-9")])
    [line] = repo.journey_due(T0 + 3 * DAY)
    assert line.contact_id == "c2"
    assert _row(repo, "cart-abandonment", "ab-1").status == Status.GOAL.value


def test_activity_trigger_properties_filter_and_reentry(repo: CommHistory[Any]) -> None:
    repo.declare_activities({"signup": ["plan"]})
    journey = _journey(
        "welcome.json",
        trigger={"type": "activity", "name": "signup", "properties": {"plan": "pro"}},
    )
    repo.record_activities(
        [
            _activity("s1", "c1", "signup", T0, plan="pro"),
            _activity("s2", "c2", "signup", T0, plan="free"),
            _activity("s3", "c1", "signup", T0 + MIN, plan="pro"),  # once: kept out
        ]
    )
    report = repo.run_journey_triggers([journey], T0 + HOUR)
    assert report.read == {"welcome": 2}
    assert report.enrolled == {"welcome": 1}
    assert report.kept_out == {"welcome": 1}
    assert _row(repo, "welcome", "s2") is None


def test_a_retried_run_enrolls_nobody_twice(repo: CommHistory[Any]) -> None:
    journey = _journey("welcome.json", reentry="always")
    reachable(repo, [f"c{i}" for i in range(7)])
    repo.declare_activities({"signup": []})
    repo.record_activities([_activity(f"s{i}", f"c{i}", "signup", T0 + i * MIN) for i in range(7)])
    store = repo.store.journey_store
    # Batches of 3: a crash after the batches committed and before the mark moved
    # is the same as the mark put back where it was; the rerun reads everything again.
    first = run_triggers(repo.store, [journey], T0 + HOUR, batch_size=3)
    assert first.enrolled == {"welcome": 7}
    store.save_trigger_marks("welcome", {"activity": TriggerMark()}, at=T0)
    store.save_trigger_marks(WAKE_KEY, {"behaviour": TriggerMark()}, at=T0)
    again = run_triggers(repo.store, [journey], T0 + HOUR, batch_size=3)
    assert again.read == {"welcome": 7}
    assert again.enrolled == {}
    assert again.kept_out == {}
    assert len(repo.journey_due(T0 + HOUR)) == 7


def test_late_rows_are_read_by_the_next_run_and_future_ones_wait(repo: CommHistory[Any]) -> None:
    journey = _journey("welcome.json", reentry="always")
    repo.declare_activities({"signup": []})
    repo.run_journey_triggers([journey], T0)
    repo.record_activities(
        [
            _activity("late", "c1", "signup", T0 - HOUR),  # stored after the run, timed before
            _activity("future", "c2", "signup", T0 + 3 * HOUR),  # after the next run's now
            _activity("old", "c3", "signup", T0 - 2 * DAY),  # older than max_age
        ]
    )
    report = repo.run_journey_triggers([journey], T0 + HOUR)
    assert report.enrolled == {"welcome": 1}
    assert _row(repo, "welcome", "late").entered_at == T0 - HOUR
    assert _row(repo, "welcome", "future") is None
    later = repo.run_journey_triggers([journey], T0 + 4 * HOUR)
    assert later.enrolled == {"welcome": 1}
    assert _row(repo, "welcome", "future") is not None
    assert _row(repo, "welcome", "old") is None
    with pytest.raises(InvalidInputError, match="now"):
        repo.run_journey_triggers([journey], T0)  # earlier than the last run


# --- event triggers -----------------------------------------------------------------------


def test_event_trigger_filters_campaign_channel_and_machine(repo: CommHistory[Any]) -> None:
    journey = Journey.from_dict(
        {
            "key": "clicked-spring",
            "version": 1,
            "trigger": {"type": "event", "event": "clicked", "campaign": "spring",
                        "channel": "email"},
            "reentry": "always",
            "steps": [{"type": "send", "id": "thanks", "template": "t", "channel": "email"}],
        }
    )  # fmt: skip
    messages = [
        Message(
            message_id=f"m{i}", channel=channel, direction=Direction.OUTBOUND,
            contact_id=f"c{i}", address=f"c{i}@example.com" if channel is Channel.EMAIL
            else "+819012345678", sent_at=T0, campaign_id=campaign,
        )
        for i, (channel, campaign) in enumerate(
            [(Channel.EMAIL, "spring"), (Channel.EMAIL, "autumn"), (Channel.SMS, "spring"),
             (Channel.EMAIL, "spring")]
        )
    ]  # fmt: skip
    repo.record_messages(messages)
    repo.record_events(
        [
            Event(event_id="k0", type=EventType.CLICKED, occurred_at=T0 + MIN, message_id="m0"),
            Event(event_id="k1", type=EventType.CLICKED, occurred_at=T0 + MIN, message_id="m1"),
            Event(event_id="k2", type=EventType.CLICKED, occurred_at=T0 + MIN, message_id="m2"),
            Event(event_id="k3", type=EventType.CLICKED, occurred_at=T0 + MIN, message_id="m3",
                  machine=True),
            Event(event_id="o0", type=EventType.OPENED, occurred_at=T0 + MIN, message_id="m0"),
        ]
    )  # fmt: skip
    report = repo.run_journey_triggers([journey], T0 + HOUR)
    assert report.enrolled == {"clicked-spring": 1}
    assert _row(repo, "clicked-spring", "k0").contact_id == "c0"
    assert repo.run_journey_triggers([journey], T0 + HOUR).enrolled == {}


# --- date triggers ------------------------------------------------------------------------


def _birthdays(repo: CommHistory[Any]) -> Journey:
    repo.declare_attributes([AttributeDefinition(name="birth_date", type="date")])
    repo.set_attributes("leap", {"birth_date": "2000-02-29"}, at=T0)
    repo.set_attributes("march", {"birth_date": "1990-03-01"}, at=T0)
    repo.set_attributes("june", {"birth_date": "1985-06-15"}, at=T0)
    return _journey("birthday.json")


def test_birthday_in_tokyo_and_29_february(repo: CommHistory[Any]) -> None:
    journey = _birthdays(repo)
    reachable(repo, ["leap", "march"], Channel.SMS)  # the coupon goes by SMS

    def tokyo(_contact: str) -> ZoneInfo:
        return TOKYO

    def run(at: dt.datetime) -> dict[str, int]:
        return dict(repo.run_journey_triggers([journey], at, zone_of=tokyo).enrolled)

    # 2027 is a common year: 29 February's birthday is on the 28th, 09:00 in Tokyo.
    fire = dt.datetime(2027, 2, 28, 9, 0, tzinfo=TOKYO)
    assert run(fire - MIN) == {}
    assert run(fire) == {"birthday-coupon": 1}
    row = _row(repo, "birthday-coupon", "date:birth_date:2027-02-28:leap")
    assert (row.contact_id, row.entered_at) == ("leap", fire.astimezone(UTC))
    assert run(fire + HOUR) == {}  # ran again: nobody twice
    march = dt.datetime(2027, 3, 1, 9, 0, tzinfo=TOKYO)
    assert run(march - MIN) == {}
    assert run(march + MIN) == {"birthday-coupon": 1}
    assert _row(repo, "birthday-coupon", "date:birth_date:2027-03-01:march") is not None
    # 2028 is a leap year: on the 29th itself, not on the 28th.
    assert run(dt.datetime(2028, 2, 28, 12, 0, tzinfo=TOKYO)) == {}
    assert run(dt.datetime(2028, 2, 29, 9, 0, tzinfo=TOKYO)) == {"birthday-coupon": 1}
    assert _row(repo, "birthday-coupon", "date:birth_date:2028-02-29:leap") is not None
    leap = dt.datetime(2028, 2, 29, 9, 0, tzinfo=TOKYO).astimezone(UTC)
    coupons = {(i.contact_id, i.due_at) for i in repo.journey_due(leap)}
    assert coupons == {("leap", fire.astimezone(UTC)), ("march", march.astimezone(UTC)),
                       ("leap", leap)}  # fmt: skip


def test_date_trigger_with_an_offset_and_not_annual(repo: CommHistory[Any]) -> None:
    repo.declare_attributes([AttributeDefinition(name="renews_on", type="date")])
    repo.set_attributes("c1", {"renews_on": "2026-04-10"}, at=T0)
    journey = Journey.from_dict(
        {
            "key": "renewal",
            "version": 1,
            "trigger": {"type": "date", "attribute": "renews_on", "offset_days": -7,
                        "at": "10:00"},
            "steps": [{"type": "send", "id": "remind", "template": "r", "channel": "email"}],
        }
    )  # fmt: skip
    fire = dt.datetime(2026, 4, 3, 10, 0, tzinfo=UTC)
    assert repo.run_journey_triggers([journey], fire - MIN).enrolled == {}
    assert repo.run_journey_triggers([journey], fire).enrolled == {"renewal": 1}
    assert _row(repo, "renewal", "date:renews_on:2026-04-03:c1") is not None
    bad = Journey.from_dict(
        {**journey.to_dict(), "key": "bad", "trigger": {"type": "date", "attribute": "nope"}}
    )
    with pytest.raises(InvalidInputError, match="attribute"):
        repo.run_journey_triggers([bad], fire)


def test_anniversary_of_29_february() -> None:
    leap = dt.date(2000, 2, 29)
    assert anniversary(leap, 2027) == dt.date(2027, 2, 28)
    assert anniversary(leap, 2028) == dt.date(2028, 2, 29)
    assert anniversary(dt.date(1990, 3, 1), 2027) == dt.date(2027, 3, 1)


# --- segments: entry triggers, exit goals ---------------------------------------------------


def test_segment_entry_enrolls_and_leaving_the_segment_ends_the_journey(
    repo: CommHistory[Any],
) -> None:
    repo.declare_attributes(
        [AttributeDefinition(name="tier", type="enum", values=("gold", "silver"))]
    )
    repo.set_attributes("c1", {"tier": "silver"}, at=T0)
    repo.set_attributes("c2", {"tier": "gold"}, at=T0)
    reachable(repo, ["c1", "c2"])
    repo.save_segment("gold", {"attribute": "tier", "op": "=", "value": "gold"})
    journey = Journey.from_dict(
        {
            "key": "gold-welcome",
            "version": 1,
            "trigger": {"type": "segment", "segment": "gold"},
            "steps": [
                {"type": "send", "id": "hello", "template": "gold-1", "channel": "email",
                 "next": "wait"},
                {"type": "wait", "id": "wait", "delay": "3d", "next": "perks"},
                {"type": "send", "id": "perks", "template": "gold-2", "channel": "email"},
            ],
            "goals": [{"type": "segment_exit", "segment": "gold"}],
        }
    )  # fmt: skip
    first = repo.run_journey_triggers([journey], T0 + HOUR)
    assert first.enrolled == {}  # the first run's snapshot is the baseline (c2 was gold)
    assert len(first.snapshots) == 1
    repo.set_attributes("c1", {"tier": "gold"}, at=T0 + 2 * HOUR)
    t1 = T0 + 3 * HOUR
    second = repo.run_journey_triggers([journey], t1)
    assert second.enrolled == {"gold-welcome": 1}
    [snap] = second.snapshots
    row = _row(repo, "gold-welcome", f"segment:gold:{snap}:c1")
    assert (row.contact_id, row.entered_at) == ("c1", t1)
    assert repo.run_journey_triggers([journey], t1).enrolled == {}  # same instant: same snapshot
    # A crash after the snapshot and before the mark moved: the retry, later, reads the
    # entry from the same snapshot again and derives the same trigger id.
    store = repo.store.journey_store
    store.save_trigger_marks(
        "gold-welcome", {"segment": TriggerMark(snapshot_id=first.snapshots[0])}, at=t1
    )
    retried = repo.run_journey_triggers([journey], t1 + MIN)
    assert (retried.read, retried.enrolled, retried.kept_out) == ({"gold-welcome": 1}, {}, {})
    [hello] = repo.journey_due(t1)
    _send(repo, hello, t1)
    assert list(repo.journey_due(t1 + HOUR)) == []  # waiting three days
    assert _row(repo, "gold-welcome", f"segment:gold:{snap}:c1").wake_at == t1 + 3 * DAY
    # c1 leaves the segment; the next run's snapshot observes it and wakes the enrollment.
    repo.set_attributes("c1", {"tier": "silver"}, at=t1 + DAY)
    t2 = t1 + DAY + HOUR
    third = repo.run_journey_triggers([journey], t2)
    assert third.woken >= 1
    assert repo.store.journey_store.left_segment_at("c1", "gold", after=t1, until=t2) == t2
    assert repo.store.journey_store.left_segment_at("c2", "gold", after=t1, until=t2) is None
    assert _row(repo, "gold-welcome", f"segment:gold:{snap}:c1").wake_at == t2
    ended_it = repo.journey_due(t2 + 5 * DAY)
    assert (list(ended_it), ended_it.skipped) == ([], ())  # no perks: the goal ended it
    ended = _row(repo, "gold-welcome", f"segment:gold:{snap}:c1")
    assert (ended.status, ended.since) == (Status.LEFT_SEGMENT.value, t2)


def test_a_segment_trigger_needs_a_saved_segment(repo: CommHistory[Any]) -> None:
    journey = Journey.from_dict(
        {
            "key": "nowhere",
            "version": 1,
            "trigger": {"type": "segment", "segment": "missing"},
            "steps": [{"type": "send", "id": "s", "template": "t", "channel": "email"}],
        }
    )
    with pytest.raises(NotFoundError):
        repo.run_journey_triggers([journey], T0)
    # A goal naming a segment never saved is never met; the wakes go on.
    goal = _journey("welcome.json", goals=[{"type": "segment_exit", "segment": "missing"}])
    repo.enroll(goal, "c1", "t1", at=T0)
    assert repo.run_journey_triggers([goal], T0 + MIN).woken == 0


# --- wakes --------------------------------------------------------------------------------


def test_an_open_wakes_the_branch_without_the_recheck(repo: CommHistory[Any]) -> None:
    journey = _journey("welcome.json")
    reachable(repo, ["c1"])
    repo.declare_activities({"signup": []})
    repo.record_activities([_activity("s1", "c1", "signup", T0)])
    repo.run_journey_triggers([journey], T0)
    [hello] = due(repo.store, T0, recheck=None)
    _send(repo, hello, T0)
    assert list(due(repo.store, T0 + 2 * DAY, recheck=None)) == []  # at the branch until its end
    row = _row(repo, "welcome", "s1")
    assert (row.step_id, row.wake_at) == ("opened-hello", T0 + 5 * DAY)
    opened = T0 + 2 * DAY + 10 * MIN
    repo.record_events(
        [Event(event_id="open-1", type=EventType.OPENED, occurred_at=opened, message_id=hello.key)]
    )
    report = repo.run_journey_triggers([journey], opened + MIN)
    assert report.woken == 1
    assert _row(repo, "welcome", "s1").wake_at == opened
    [tips] = due(repo.store, opened + MIN, recheck=None)
    assert (tips.step_id, tips.due_at) == ("tips", opened)


def test_a_consent_withdrawal_ends_the_series_and_wakes_it(repo: CommHistory[Any]) -> None:
    journey = _journey("welcome.json")  # goal: unsubscribe on email
    reachable(repo, ["c1"])  # granted in 2025: the withdrawal below is the only wake
    repo.declare_activities({"signup": []})
    repo.record_activities([_activity("s1", "c1", "signup", T0)])
    repo.run_journey_triggers([journey], T0)
    [hello] = due(repo.store, T0, recheck=None)
    _send(repo, hello, T0)
    due(repo.store, T0 + 2 * DAY, recheck=None)
    withdrawn = T0 + 2 * DAY + HOUR
    repo.record_consent(
        [
            ConsentEvent(
                contact_id="c1", channel=Channel.EMAIL, purpose=Purpose.MARKETING,
                action=ConsentAction.WITHDRAW, occurred_at=withdrawn,
                method=ConsentMethod.WEB_FORM,
            )
        ]
    )  # fmt: skip
    assert repo.run_journey_triggers([journey], withdrawn + MIN).woken == 1
    after = due(repo.store, withdrawn + MIN, recheck=None)
    assert (list(after), after.skipped) == ([], ())  # ended by the goal, not refused
    row = _row(repo, "welcome", "s1")
    assert (row.status, row.since) == (Status.UNSUBSCRIBED.value, withdrawn)


def test_bad_arguments_are_typed_errors(repo: CommHistory[Any]) -> None:
    journey = _journey("welcome.json")
    with pytest.raises(InvalidInputError, match="now"):
        repo.run_journey_triggers([journey], dt.datetime(2026, 3, 2))
    with pytest.raises(InvalidInputError, match="journeys"):
        repo.run_journey_triggers([journey, _journey("welcome.json", version=2)], T0)
    with pytest.raises(InvalidInputError, match="batch_size"):
        repo.run_journey_triggers([journey], T0, batch_size=0)


# --- the CLI --------------------------------------------------------------------------------


def test_cli_triggers_enrolls_and_reports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from commhistory.cli import main

    url, ring = cli_store(tmp_path, monkeypatch)
    with open_repository(url, ring) as repo:
        repo.declare_activities({"signup": []})
        repo.record_activities([_activity("s1", "c1", "signup", T0)])
    file = str(EXAMPLES / "welcome.json")
    assert main(["journey", "triggers", file, "--at", "2026-03-02T01:05:00Z"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "welcome: read 1, enrolled 1, kept out 0"
    args = ["journey", "triggers", file, "--at", "2026-03-02T01:06:00Z", "--format", "json"]
    assert main(args) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["journeys"] == [{"journey": "welcome", "read": 0, "enrolled": 0, "kept_out": 0}]
    assert main(["journey", "triggers", file, "--zone", "Mars/Base"]) == 2


# --- the date prefilter keeps every contact that fires (fast path = reference) ----------------


@settings(max_examples=60, deadline=None)
@given(
    born=st.dates(min_value=dt.date(1948, 1, 1), max_value=dt.date(2030, 12, 31)),
    offset=st.integers(min_value=-366, max_value=366),
    annual=st.booleans(),
    start=st.datetimes(
        min_value=dt.datetime(2027, 1, 1),
        max_value=dt.datetime(2029, 12, 31),
        timezones=st.just(UTC),
    ),
    hours=st.integers(min_value=1, max_value=72),
    zone=st.sampled_from(["Asia/Tokyo", "Pacific/Kiritimati", "Pacific/Pago_Pago", "UTC"]),
)
def test_date_trigger_fires_exactly_when_the_reference_says(
    born: dt.date, offset: int, annual: bool, start: dt.datetime, hours: int, zone: str
) -> None:
    end = start + dt.timedelta(hours=hours)
    tz = ZoneInfo(zone)
    at = dt.time(9, 0)
    expected = set()
    for year in range(born.year, 2032) if annual else [born.year]:
        day = (anniversary(born, year) if annual else born) + dt.timedelta(days=offset)
        fire = dt.datetime.combine(day, at, tzinfo=tz).astimezone(UTC)
        if start < fire <= end:
            expected.add(fire)
    journey = Journey.from_dict(
        {
            "key": "dates",
            "version": 1,
            "trigger": {"type": "date", "attribute": "d", "offset_days": offset,
                        "annual": annual, "at": "09:00"},
            "reentry": "always",
            "steps": [{"type": "send", "id": "s", "template": "t", "channel": "email"}],
        }
    )  # fmt: skip
    with CommHistory.in_memory() as repo:
        reachable(repo, ["c1"])  # else planning skips every send and got is always empty
        repo.declare_attributes([AttributeDefinition(name="d", type="date")])
        repo.set_attributes("c1", {"d": born.isoformat()}, at=T0)
        max_age = dt.timedelta(hours=hours)
        run_triggers(repo.store, [journey], start, max_age=max_age, wake=False)
        store = repo.store.journey_store
        store.save_trigger_marks("dates", {"date": TriggerMark(until=start)}, at=start)
        run_triggers(
            repo.store, [journey], end, max_age=max_age, zone_of=lambda _c: tz, wake=False
        )
        got = {i.due_at for i in repo.journey_due(end, dry_run=True) if i.due_at > start}
    assert got == expected


# --- left_segment_at: the SQL window query equals a reference over the snapshots ---------------


@pytest.fixture(scope="module")
def two_repos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[CommHistory[Any]]]:
    path = tmp_path_factory.mktemp("left") / "left.db"
    with (
        open_repository(f"sqlite:///{path}", Keyring.generate()) as sql,
        CommHistory.in_memory() as memory,
    ):
        yield [sql, memory]


@settings(max_examples=40, deadline=None)
@given(
    shots=st.lists(
        st.tuples(st.integers(0, 20), st.booleans()), max_size=8, unique_by=lambda s: s[0]
    ),
    after=st.integers(0, 20),
    span=st.integers(0, 20),
)
def test_left_segment_at_equals_the_reference(
    two_repos: list[CommHistory[Any]], shots: list[tuple[int, bool]], after: int, span: int
) -> None:
    name = f"seg-{uuid.uuid4().hex[:8]}"
    for repo in two_repos:
        for hour, inside in shots:
            members = ["c1", "c2"] if inside else ["c2"]
            repo.store.segment_store.save_snapshot(name, 1, T0 + hour * HOUR, members)
    # The reference: by at, the first snapshot in the window
    # without c1 whose predecessor held it.
    expected = None
    ordered = sorted(shots)
    lo, hi = T0 + after * HOUR, T0 + (after + span) * HOUR
    for k in range(1, len(ordered)):
        (hour, inside), (_h, before) = ordered[k], ordered[k - 1]
        if before and not inside and lo <= T0 + hour * HOUR <= hi:
            expected = T0 + hour * HOUR
            break
    for repo in two_repos:
        got = repo.store.journey_store.left_segment_at("c1", name, after=lo, until=hi)
        assert got == expected


# --- two workers at once ------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return sql_target(request, tmp_path, postgres="pg_database_url")


def test_concurrent_runs_enroll_each_trigger_once(target: str) -> None:
    keyring = Keyring.generate()
    journey = _journey("welcome.json", reentry="always")
    with open_repository(target, keyring) as setup:
        reachable(setup, [f"c{i}" for i in range(10)])
        setup.declare_activities({"signup": []})
        setup.record_activities(
            [_activity(f"s{i:02d}", f"c{i % 10}", "signup", T0 + i * MIN) for i in range(40)]
        )
    errors: list[BaseException] = []
    barrier = threading.Barrier(3)

    def worker() -> None:
        try:
            with open_repository(target, keyring) as mine:
                barrier.wait()
                run_triggers(mine.store, [journey], T0 + HOUR, batch_size=7)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with open_repository(target, keyring) as check:
        intents = check.journey_due(T0 + HOUR)
    assert len(intents) == len({i.enrollment_id for i in intents}) == 40


# --- the wake read by stored_seq range equals the full read ----------------------------------


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    runs=st.lists(
        st.lists(st.tuples(st.integers(0, 3), st.integers(-30, 40)), max_size=4),
        min_size=1,
        max_size=6,
    ),
)
def test_the_wake_feed_reads_what_the_full_behaviour_read_does(
    repo: CommHistory[Any], runs: list[list[tuple[int, int]]]
) -> None:
    """Per run, rows stored just before it (some timed after its ``now``, some late):
    the ``stored_seq`` range read with the ``pending`` mark finds the same instants as
    :meth:`behaviour_since`, which reads every row."""
    store = repo.store.journey_store
    tag = uuid.uuid4().hex[:8]
    repo.declare_activities({"visit": []})
    after: TriggerMark | None = None
    pending: int | None = None
    for n, rows in enumerate(runs):
        now = T0 + n * 10 * MIN
        repo.record_activities(
            [
                _activity(f"v{n}-{k}-{tag}", f"c{c}-{tag}", "visit", now + minutes * MIN)
                for k, (c, minutes) in enumerate(rows)
            ]
        )
        bound = store.stored_bound()
        window = {"before": bound, "since": now - HOUR, "until": now}
        feed = store.wake_feed(after=after, pending=pending, **window)
        full = store.behaviour_since(after=after, **window)
        assert dict(feed.instants) == full
        after = TriggerMark(watermark=max(bound, after.watermark if after else 0), until=now)
        pending = feed.pending
