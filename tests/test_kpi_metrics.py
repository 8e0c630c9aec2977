"""KPI definitions by hand: each metric of DESIGN section 5 on a small, known history."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from commhistory.errors import InvalidInputError
from commhistory.kpi import compute
from commhistory.model import BounceClass, Channel, Direction, Event, EventType, Message

T0 = datetime(2024, 5, 1, 12, tzinfo=UTC)


def msg(n: int, **kw: Any) -> Message:
    values: dict[str, Any] = {
        "message_id": f"m{n}",
        "channel": Channel.LINE,
        "direction": Direction.OUTBOUND,
        "contact_id": f"c{n}",
        "address": "U" + "ab" * 16,
        "sent_at": T0,
        "campaign_id": "spring",
        "variant": "A",
    }
    values.update(kw)
    return Message(**values)


_counter = iter(range(10**6))


def ev(n: int, kind: EventType, **kw: Any) -> Event:
    return Event(
        event_id=f"e{next(_counter)}",
        type=kind,
        occurred_at=T0 + timedelta(minutes=5),
        message_id=f"m{n}",
        **kw,
    )


OPEN, C, B, F, R = (
    EventType.OPENED,
    EventType.CLICKED,
    EventType.BOUNCED,
    EventType.FAILED,
    EventType.REJECTED,
)


def worked_example() -> tuple[list[Message], list[Event]]:
    """Ten messages; the expected numbers are derived in the comments."""
    messages = [msg(i) for i in range(10)] + [msg(10, direction=Direction.INBOUND)]
    events = [
        ev(0, R),  # m0 rejected: not sent
        ev(1, B, bounce=BounceClass.HARD),  # m1 hard bounce
        ev(2, B, bounce=BounceClass.SOFT),  # m2 soft bounce ...
        ev(2, OPEN),  # ... its open does not count (not delivered)
        ev(3, F),  # m3 failed
        ev(4, OPEN),  # m4 opened three times: one unique open
        ev(4, OPEN),
        ev(4, OPEN),
        ev(5, C),  # m5 clicked without an open: counts as opened and clicked
        ev(6, OPEN, machine=True),  # m6 machine open only: not opened by default
        ev(7, OPEN),  # m7 opened, clicked, converted twice, unsubscribed
        ev(7, C),
        ev(7, EventType.CONVERTED, revenue=Decimal("1980"), currency="JPY"),
        ev(7, EventType.CONVERTED, revenue=Decimal("3000"), currency="JPY"),
        ev(7, EventType.UNSUBSCRIBED),
        ev(8, EventType.CONVERTED, revenue=Decimal("9.99"), currency="USD"),  # m8
        ev(8, EventType.COMPLAINED),
        ev(9, C, machine=True),  # m9 scanner click only
        Event(  # an orphan: reported, not counted
            event_id="orphan", type=OPEN, occurred_at=T0, message_id="unknown"
        ),
    ]
    return messages, events


def test_worked_example_by_hand() -> None:
    messages, events = worked_example()
    table = compute(messages, events, by="campaign_id")
    row = table.row(campaign_id="spring")
    assert (row.sent, row.bounced, row.hard_bounced, row.failed, row.delivered) == (9, 2, 1, 1, 6)
    # delivered: m4 m5 m6 m7 m8 m9; human opens m4 m5 m7; human clicks m5 m7
    assert (row.unique_opens, row.unique_clicks) == (3, 2)
    assert (row.conversions, row.unsubscribes, row.complaints) == (2, 1, 1)
    assert row.revenue == {"JPY": Decimal("4980"), "USD": Decimal("9.99")}
    assert row.delivery_rate == 6 / 9
    assert row.bounce_rate == 2 / 9
    assert row.open_rate == 3 / 6
    assert row.click_rate == 2 / 6
    assert row.click_to_open_rate == 2 / 3
    assert row.conversion_rate == 2 / 6
    assert row.unsubscribe_rate == 1 / 6
    assert row.complaint_rate == 1 / 6
    assert table.unmatched_events == 1


def test_machine_events_count_on_request() -> None:
    messages, events = worked_example()
    row = compute(messages, events, exclude_machine=False).total()
    assert (row.unique_opens, row.unique_clicks) == (5, 3)  # + m6 open, + m9 click


def test_retried_webhooks_change_nothing() -> None:
    messages, events = worked_example()
    once = compute(messages, events, by="variant")
    twice = compute(messages, events + events, by="variant")
    assert once == twice


def test_rates_are_none_without_denominator() -> None:
    table = compute([msg(0)], [ev(0, B)])
    row = table.total()
    assert row.delivered == 0
    assert row.open_rate is None
    assert row.click_to_open_rate is None
    assert row.to_dict()["conversion_rate"] is None
    assert row.bounce_rate == 1.0


def test_json_shape() -> None:
    messages, events = worked_example()
    data = compute(messages, events, by=("campaign_id", "variant")).to_dict()
    (row,) = data["rows"]
    assert row["campaign_id"] == "spring"
    assert row["revenue"] == {"JPY": "4980", "USD": "9.99"}
    assert row["open_rate"] == 0.5
    assert data["unmatched_events"] == 1


def test_periods_in_a_time_zone() -> None:
    late = datetime(2024, 5, 31, 16, tzinfo=UTC)  # 2024-06-01 01:00 in Tokyo
    messages = [msg(0, sent_at=late), msg(1, sent_at=late - timedelta(hours=2))]
    utc = compute(messages, [], by="month")
    tokyo = compute(messages, [], by="month", tz="Asia/Tokyo")
    assert [(r.group["month"], r.sent) for r in utc] == [("2024-05", 2)]
    assert [(r.group["month"], r.sent) for r in tokyo] == [("2024-05", 1), ("2024-06", 1)]
    weeks = compute(messages, [], by="week", tz="Asia/Tokyo")
    assert [r.group["week"] for r in weeks] == ["2024-W22"]


def test_since_until_is_half_open() -> None:
    messages = [msg(0), msg(1, sent_at=T0 + timedelta(hours=1))]
    table = compute(messages, [], since=T0, until=T0 + timedelta(hours=1))
    assert table.total().sent == 1


def test_events_by_provider_id_find_their_message() -> None:
    m = msg(0, provider="sendgrid", provider_message_id="sg-1")
    e = Event(
        event_id="x",
        type=C,
        occurred_at=T0,
        provider="sendgrid",
        provider_message_id="sg-1",
    )
    assert compute([m], [e]).total().unique_clicks == 1


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"by": "country"}, "by"),
        ({"by": ("day", "month")}, "by"),
        ({"by": ("variant", "variant")}, "by"),
        ({"tz": "Mars/Olympus"}, "tz"),
        ({"tz": ""}, "tz"),
        ({"since": T0, "until": T0 - timedelta(seconds=1)}, "since"),
        ({"since": datetime(2024, 1, 1)}, "since"),
    ],
)
def test_bad_input_is_a_clear_error(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        compute([], [], **kwargs)
    assert info.value.field == field


def test_unknown_rate_and_row() -> None:
    table = compute([msg(0)], [], by="variant")
    with pytest.raises(InvalidInputError):
        table.row(variant="Z")
    with pytest.raises(InvalidInputError):
        table.total().rate("happiness")
    assert table.total().rate("delivery_rate") == 1.0
