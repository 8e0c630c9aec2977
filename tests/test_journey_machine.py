"""The journey step machine on a simulated clock: the three worked journeys, and its laws."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commhistory.journeys import (
    ActivityGoal,
    Enrollment,
    Journey,
    Position,
    RecordedBehaviour,
    SendIntent,
    Status,
    advance,
    intent_key,
    next_local_time,
)
from commhistory.model import Channel, EventType

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "journeys"
TOKYO = ZoneInfo("Asia/Tokyo")
UTC = dt.UTC
T0 = dt.datetime(2026, 3, 2, 1, 0, tzinfo=UTC)  # 10:00 in Tokyo


def _journey(name: str) -> Journey:
    return Journey.load(EXAMPLES / f"{name}.json")


class Clock:
    """One enrollment driven by a simulated clock and a host that records what it sends."""

    def __init__(
        self, journey: Journey, *, entered_at: dt.datetime = T0, properties: Any = None
    ) -> None:
        self.journey = journey
        self.enrollment = Enrollment(
            enrollment_id="enr-1",
            contact_id="c-1",
            entered_at=entered_at,
            entry_properties=properties or {},
        )
        self.position = Position.start(journey, self.enrollment)
        self.history = RecordedBehaviour()

    def tick(self, now: dt.datetime) -> list[SendIntent]:
        result = advance(
            self.journey, self.enrollment, self.position, now=now, zone=TOKYO, history=self.history
        )
        self.position = result.position
        return list(result.intents)

    def send(self, intent: SendIntent, at: dt.datetime | None = None) -> None:
        self.history.record_send(intent.key, at or intent.due_at)


# --- the welcome series ----------------------------------------------------------------


def test_welcome_opened_goes_straight_to_tips() -> None:
    clock = Clock(_journey("welcome"))
    [hello] = clock.tick(T0)
    assert (hello.step_id, hello.template, hello.due_at) == ("hello", "welcome-1", T0)
    assert clock.tick(T0) == [hello]  # not recorded yet: due again, same key
    clock.send(hello)
    clock.history.events.append((hello.key, EventType.OPENED, T0 + dt.timedelta(hours=5)))
    assert clock.tick(T0 + dt.timedelta(days=1)) == []
    assert clock.position.step_id == "wait-2d"
    [tips] = clock.tick(T0 + dt.timedelta(days=2))
    assert tips.step_id == "tips"
    assert tips.due_at == T0 + dt.timedelta(days=2)  # opened before the branch: at once
    clock.send(tips)
    assert clock.tick(T0 + dt.timedelta(days=3)) == []
    assert clock.position.status is Status.COMPLETED


def test_welcome_not_opened_sends_the_reminder_after_the_timeout() -> None:
    clock = Clock(_journey("welcome"))
    [hello] = clock.tick(T0)
    clock.send(hello)
    assert clock.tick(T0 + dt.timedelta(days=4, hours=23)) == []
    [reminder] = clock.tick(T0 + dt.timedelta(days=5))
    assert reminder.step_id == "reminder"
    assert reminder.due_at == T0 + dt.timedelta(days=5)
    clock.send(reminder)
    [tips] = clock.tick(T0 + dt.timedelta(days=20))
    assert tips.due_at == T0 + dt.timedelta(days=9)


def test_an_open_of_another_message_does_not_take_the_branch() -> None:
    clock = Clock(_journey("welcome"))
    [hello] = clock.tick(T0)
    clock.send(hello)
    clock.history.events.append(("jrn_other", EventType.OPENED, T0 + dt.timedelta(hours=1)))
    [reminder] = clock.tick(T0 + dt.timedelta(days=5))
    assert reminder.step_id == "reminder"


def test_unsubscribe_ends_the_welcome_series() -> None:
    clock = Clock(_journey("welcome"))
    [hello] = clock.tick(T0)
    clock.send(hello)
    clock.history.unsubscribes.append((Channel.EMAIL, T0 + dt.timedelta(days=1)))
    assert clock.tick(T0 + dt.timedelta(days=30)) == []
    assert clock.position.status is Status.UNSUBSCRIBED
    assert clock.position.since == T0 + dt.timedelta(days=1)


def test_an_unsubscribe_on_another_channel_does_not_end_it() -> None:
    clock = Clock(_journey("welcome"))
    [hello] = clock.tick(T0)
    clock.send(hello)
    clock.history.unsubscribes.append((Channel.SMS, T0 + dt.timedelta(days=1)))
    assert [intent.step_id for intent in clock.tick(T0 + dt.timedelta(days=5))] == ["reminder"]


# --- cart abandonment --------------------------------------------------------------------


def test_cart_purchase_of_the_same_cart_ends_it() -> None:
    clock = Clock(_journey("cart_abandonment"), properties={"cart_id": "cart-9"})
    assert clock.tick(T0 + dt.timedelta(minutes=59)) == []
    [nudge] = clock.tick(T0 + dt.timedelta(hours=1))
    clock.send(nudge)
    clock.history.activities.append(
        ("purchase", {"cart_id": "cart-7"}, T0 + dt.timedelta(hours=2))
    )
    clock.history.activities.append(
        ("purchase", {"cart_id": "cart-9"}, T0 + dt.timedelta(hours=3))
    )
    assert clock.tick(T0 + dt.timedelta(days=3)) == []
    assert clock.position.status is Status.GOAL
    assert clock.position.since == T0 + dt.timedelta(hours=3)


def test_cart_purchase_of_another_cart_does_not_end_it() -> None:
    clock = Clock(_journey("cart_abandonment"), properties={"cart_id": "cart-9"})
    [nudge] = clock.tick(T0 + dt.timedelta(hours=1))
    clock.send(nudge)
    clock.history.activities.append(
        ("purchase", {"cart_id": "cart-7"}, T0 + dt.timedelta(hours=2))
    )
    [line] = clock.tick(T0 + dt.timedelta(days=3))
    assert line.channel is Channel.LINE
    assert line.due_at == T0 + dt.timedelta(days=1, hours=1)


def test_cart_clicked_nudge_ends_without_the_line_message() -> None:
    clock = Clock(_journey("cart_abandonment"), properties={"cart_id": "cart-9"})
    [nudge] = clock.tick(T0 + dt.timedelta(hours=1))
    clock.send(nudge)
    clock.history.events.append((nudge.key, EventType.CLICKED, T0 + dt.timedelta(hours=4)))
    assert clock.tick(T0 + dt.timedelta(days=3)) == []
    assert clock.position.status is Status.COMPLETED


def test_a_goal_before_a_due_send_withdraws_it() -> None:
    clock = Clock(_journey("cart_abandonment"), properties={"cart_id": "cart-9"})
    clock.history.activities.append(
        ("purchase", {"cart_id": "cart-9"}, T0 + dt.timedelta(minutes=30))
    )
    assert clock.tick(T0 + dt.timedelta(hours=2)) == []
    assert clock.position.status is Status.GOAL


# --- birthday coupon in Asia/Tokyo -----------------------------------------------------------


def test_birthday_reminder_waits_six_days_then_until_ten_local() -> None:
    birthday_9am = dt.datetime(2026, 7, 14, 9, 0, tzinfo=TOKYO).astimezone(UTC)
    clock = Clock(_journey("birthday"), entered_at=birthday_9am)
    [coupon] = clock.tick(birthday_9am)
    assert coupon.channel is Channel.SMS
    clock.send(coupon, birthday_9am + dt.timedelta(minutes=2))
    [reminder] = clock.tick(birthday_9am + dt.timedelta(days=10))
    local = reminder.due_at.astimezone(TOKYO)
    assert (local.date(), local.time()) == (dt.date(2026, 7, 20), dt.time(10, 0))


def test_birthday_purchase_ends_it() -> None:
    birthday_9am = dt.datetime(2026, 7, 14, 9, 0, tzinfo=TOKYO).astimezone(UTC)
    clock = Clock(_journey("birthday"), entered_at=birthday_9am)
    [coupon] = clock.tick(birthday_9am)
    clock.send(coupon)
    clock.history.activities.append(("purchase", {}, birthday_9am + dt.timedelta(days=1)))
    assert clock.tick(birthday_9am + dt.timedelta(days=10)) == []
    assert clock.position.status is Status.GOAL


# --- local times ------------------------------------------------------------------------


def test_next_local_time_is_strictly_later() -> None:
    ten = dt.datetime(2026, 1, 5, 10, 0, tzinfo=TOKYO).astimezone(UTC)
    assert next_local_time(ten, dt.time(10, 0), TOKYO) == ten + dt.timedelta(days=1)
    assert next_local_time(ten - dt.timedelta(seconds=1), dt.time(10, 0), TOKYO) == ten


def test_next_local_time_across_a_dst_gap() -> None:
    new_york = ZoneInfo("America/New_York")
    before = dt.datetime(2026, 3, 8, 1, 0, tzinfo=new_york).astimezone(UTC)
    got = next_local_time(before, dt.time(2, 30), new_york)  # 02:30 does not exist that day
    assert got > before
    assert got - before <= dt.timedelta(hours=3)


@given(
    st.datetimes(
        min_value=dt.datetime(2000, 1, 1),
        max_value=dt.datetime(2090, 1, 1),
        timezones=st.just(UTC),
    ),
    st.times(),
    st.sampled_from(["Asia/Tokyo", "America/New_York", "Europe/London", "Australia/Lord_Howe"]),
)
def test_next_local_time_is_the_first_later_match(
    after: dt.datetime, at: dt.time, zone_name: str
) -> None:
    zone = ZoneInfo(zone_name)
    got = next_local_time(after, at.replace(microsecond=0, tzinfo=None), zone)
    assert got > after
    assert got - after <= dt.timedelta(days=1, hours=3)


# --- laws -------------------------------------------------------------------------------


def test_keys_depend_on_every_part() -> None:
    journey = _journey("welcome")
    base = intent_key(journey, "e", "hello", 1)
    assert base == intent_key(journey, "e", "hello", 1)
    assert (
        len(
            {
                base,
                intent_key(journey, "f", "hello", 1),
                intent_key(journey, "e", "tips", 1),
                intent_key(journey, "e", "hello", 2),
            }
        )
        == 4
    )


def test_a_naive_now_is_refused() -> None:
    clock = Clock(_journey("welcome"))
    with pytest.raises(ValueError, match="timezone-aware"):
        clock.tick(dt.datetime(2026, 1, 1))


_LOOPING = {
    "key": "loop",
    "version": 1,
    "trigger": {"type": "activity", "name": "signup"},
    "steps": [
        {"type": "send", "id": "ping", "template": "t", "channel": "email", "next": "pause"},
        {"type": "wait", "id": "pause", "delay": "2d", "next": "check"},
        {
            "type": "branch",
            "id": "check",
            "condition": {"event": "clicked", "of_step": "ping"},
            "within": "1d",
            "otherwise": "ping",
        },
    ],
    "goals": [{"type": "activity", "activity": "purchase"}],
}


def _run(
    journey: Journey, history: RecordedBehaviour, ticks: list[dt.datetime]
) -> tuple[list[str], Position]:
    """Drive one enrollment over ``ticks``; the host records each intent at its due time."""
    enrollment = Enrollment(enrollment_id="e", contact_id="c", entered_at=T0)
    position = Position.start(journey, enrollment)
    issued: list[str] = []
    for now in ticks:
        while True:
            result = advance(journey, enrollment, position, now=now, zone=TOKYO, history=history)
            position = result.position
            if not result.intents:
                break
            [intent] = result.intents
            assert intent.due_at <= now
            issued.append(intent.key)
            history.record_send(intent.key, intent.due_at)
    return issued, position


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.integers(1, 24 * 30), min_size=1, max_size=12),
    st.lists(st.integers(0, 24 * 30), max_size=3),
    st.sampled_from(["welcome", "cart_abandonment", "birthday", "loop"]),
)
def test_how_often_the_clock_ticks(hours: list[int], purchases: list[int], name: str) -> None:
    """Ticking often or once gives the same walk; a goal only cuts it short.

    Without a goal met, the intents and the end position do not depend on the
    ticks (the host records each send at its due time). With a purchase goal met,
    a run sends a prefix of the goal-free run's sends, each due before the goal,
    and a clock that ticks more often sends at least what a rarer one sends.
    """
    journey = Journey.from_dict(_LOOPING) if name == "loop" else _journey(name)
    end = T0 + dt.timedelta(days=31)
    ticks = [*sorted({T0 + dt.timedelta(hours=h) for h in hours}), end]

    def history(with_purchases: bool) -> RecordedBehaviour:
        recorded = RecordedBehaviour()
        if with_purchases:
            for hour in purchases:
                recorded.activities.append(("purchase", {}, T0 + dt.timedelta(hours=hour)))
        return recorded

    free_fine, free_fine_end = _run(journey, history(False), ticks)
    free_coarse, free_coarse_end = _run(journey, history(False), [end])
    assert free_fine == free_coarse
    assert free_fine_end == free_coarse_end
    assert len(set(free_fine)) == len(free_fine)  # no step is ever issued twice

    fine, _ = _run(journey, history(True), ticks)
    coarse, _ = _run(journey, history(True), [end])
    assert fine == free_fine[: len(fine)]
    assert coarse == fine[: len(coarse)]
    if purchases and any(
        isinstance(goal, ActivityGoal) and not goal.match for goal in journey.goals
    ):
        goal_at = T0 + dt.timedelta(hours=min(purchases))
        due = history_of(journey, fine, ticks, purchases)
        assert all(at <= goal_at for at in due.values())
    else:
        assert fine == free_fine


def history_of(
    journey: Journey, keys: list[str], ticks: list[dt.datetime], purchases: list[int]
) -> dict[str, dt.datetime]:
    """The due instants of ``keys`` in a rerun over ``ticks`` with the purchases."""
    recorded = RecordedBehaviour()
    for hour in purchases:
        recorded.activities.append(("purchase", {}, T0 + dt.timedelta(hours=hour)))
    _run(journey, recorded, ticks)
    return {key: recorded.sends[key] for key in keys}


def test_the_loop_resends_with_a_new_key_each_visit() -> None:
    journey = Journey.from_dict(_LOOPING)
    issued, position = _run(journey, RecordedBehaviour(), [T0 + dt.timedelta(days=10)])
    # ping at 0, 3, 6, 9 days (2d wait + 1d branch timeout between visits)
    assert len(issued) == 4
    assert len(set(issued)) == 4
    assert position.visits["ping"] == 4


def test_the_examples_are_the_documented_ones() -> None:
    # The docs page literal-includes these files; the JSON must stay readable as is.
    for path in EXAMPLES.glob("*.json"):
        assert Journey.from_dict(json.loads(path.read_text(encoding="utf-8"))).key
