"""The machine-open and scanner-click classifier: each rule, and what it leaves alone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from commhistory.kpi import compute
from commhistory.kpi.machine import MachineRules, classify, mark_machine
from commhistory.model import Channel, Direction, Event, EventType, Message

SENT = datetime(2024, 4, 1, 9, tzinfo=UTC)
PERSON_UA = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15"


def ev(kind: EventType, seconds: float = 3600, n: int = 0, **kw: Any) -> Event:
    return Event(
        event_id=f"e{n}-{kind}-{seconds}",
        type=kind,
        occurred_at=SENT + timedelta(seconds=seconds),
        message_id="m1",
        **kw,
    )


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (ev(EventType.OPENED, metadata={"sg_machine_open": True}), "provider_flag"),
        (ev(EventType.OPENED, user_agent="Mozilla/5.0", ip="17.58.1.2"), "apple_mpp"),
        (ev(EventType.CLICKED, metadata={"http_method": "HEAD"}), "head_request"),
        (ev(EventType.CLICKED, user_agent="python-requests/2.31"), "scanner_user_agent"),
        (ev(EventType.CLICKED, user_agent="Mozilla/5.0 Barracuda Sentinel"), "scanner_user_agent"),
        (ev(EventType.CLICKED, seconds=4, user_agent=PERSON_UA), "fast_click"),
    ],
)
def test_each_rule(event: Event, reason: str) -> None:
    assert classify(event, delivered_at=SENT) == reason


@pytest.mark.parametrize(
    "event",
    [
        ev(EventType.OPENED, user_agent=PERSON_UA, ip="17.58.1.2"),  # Apple IP, real client
        ev(EventType.OPENED, user_agent="Mozilla/5.0", ip="203.0.113.9"),  # generic, not Apple
        ev(EventType.OPENED, user_agent="Mozilla/5.0", ip="not an ip"),
        ev(EventType.CLICKED, seconds=45, user_agent=PERSON_UA),
        ev(EventType.CLICKED, metadata={"sg_machine_open": False}),
        ev(EventType.CONVERTED, user_agent="curl/8.0"),  # only opens and clicks
    ],
)
def test_people_are_left_alone(event: Event) -> None:
    assert classify(event, delivered_at=SENT) is None


def test_rules_are_configurable() -> None:
    rules = MachineRules(apple_proxy_networks=("198.51.100.0/24",), fast_click_seconds=60)
    mpp = ev(EventType.OPENED, user_agent="Mozilla/5.0", ip="198.51.100.20")
    assert classify(mpp, rules=rules) == "apple_mpp"
    assert classify(ev(EventType.CLICKED, seconds=45), delivered_at=SENT, rules=rules) == (
        "fast_click"
    )


def test_mark_machine_finds_bursts_and_keeps_order() -> None:
    delivered = ev(EventType.DELIVERED, seconds=1)
    burst = [
        ev(EventType.CLICKED, seconds=600 + k * 0.5, n=k, url=f"https://x.example/{k}")
        for k in range(3)
    ]
    person = ev(EventType.CLICKED, seconds=4000, n=9, url="https://x.example/0")
    out = mark_machine([delivered, *burst, person])
    assert [e.event_id for e in out] == [delivered.event_id, *(b.event_id for b in burst),
                                         person.event_id]  # fmt: skip
    assert [e.machine for e in out] == [False, True, True, True, False]
    assert {e.metadata["machine_reason"] for e in out[1:4]} == {"click_burst"}


def test_mark_machine_uses_sent_at_without_a_delivery_event() -> None:
    message = Message(
        message_id="m1",
        channel=Channel.LINE,
        direction=Direction.OUTBOUND,
        contact_id="c1",
        address="U" + "ef" * 16,
        sent_at=SENT,
    )
    fast = ev(EventType.CLICKED, seconds=2, url="https://x.example/")
    (flagged,) = mark_machine([fast], messages=[message])
    assert flagged.machine
    assert flagged.metadata["machine_reason"] == "fast_click"
    table = compute([message], [flagged])
    assert table.total().unique_clicks == 0
    assert compute([message], [flagged], exclude_machine=False).total().unique_clicks == 1
