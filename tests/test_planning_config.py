"""Planning configuration: typed, frozen, loadable, errors naming the path; the clock rules."""

from __future__ import annotations

import json
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from commhistory.errors import InvalidInputError, PlanConfigError
from commhistory.model import Channel, Purpose
from commhistory.segments.planning import (
    JAPAN_DEFAULT,
    FrequencyCap,
    PlanConfig,
    QuietAction,
    QuietHours,
    load_plan_config,
)

GOOD = {
    "profile": "japan_default",
    "caps": [{"channel": "email", "purpose": "marketing", "limit": 2, "days": 7}],
    "quiet_hours": [
        {
            "channel": "email",
            "purpose": "marketing",
            "start": "22:00",
            "end": "07:30",
            "action": "drop",
        },
    ],
    "zone_attribute": "time_zone",
    "default_zone": "Asia/Tokyo",
}


def test_a_document_loads_onto_its_profile(tmp_path: Path) -> None:
    path = tmp_path / "caps.json"
    path.write_text(json.dumps(GOOD))
    config = load_plan_config(path)
    assert config.caps == (
        FrequencyCap(channel=Channel.EMAIL, purpose=Purpose.MARKETING, limit=2, days=7),
    )
    assert config.quiet_hours[:2] == JAPAN_DEFAULT.quiet_hours
    assert config.quiet_hours[2].action is QuietAction.DROP
    assert config.quiet_hours[2].end == time(7, 30)
    assert config.zone_attribute == "time_zone"
    assert PlanConfig.from_dict(config.to_dict()) == config
    assert PlanConfig.from_dict({}) == PlanConfig()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        config.default_zone = "UTC"  # type: ignore[misc]


def test_japan_default_holds_marketing_sms_and_line_only() -> None:
    assert JAPAN_DEFAULT.default_zone == "Asia/Tokyo"
    assert JAPAN_DEFAULT.caps == ()
    held = {(q.channel, q.purpose, q.start, q.end, q.action) for q in JAPAN_DEFAULT.quiet_hours}
    assert held == {
        (Channel.SMS, Purpose.MARKETING, time(21), time(8), QuietAction.DEFER),
        (Channel.LINE, Purpose.MARKETING, time(21), time(8), QuietAction.DEFER),
    }
    assert JAPAN_DEFAULT.quiet_for(Channel.SMS, Purpose.TRANSACTIONAL) == ()
    assert JAPAN_DEFAULT.quiet_for(Channel.EMAIL, Purpose.MARKETING) == ()


def _with(path: list[str | int], value: object) -> dict[str, object]:
    doc: dict[str, object] = json.loads(json.dumps(GOOD))
    target: Any = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return doc


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ([], "<config>"),
        ({"consent": False}, "consent"),
        ({"profile": "france"}, "profile"),
        ({"caps": {}}, "caps"),
        (_with(["caps", 0, "limit"], "2"), "caps[0].limit"),
        (_with(["caps", 0, "limit"], 0), "caps[0].limit"),
        (_with(["caps", 0, "limit"], True), "caps[0].limit"),
        (_with(["caps", 0, "days"], 1.5), "caps[0].days"),
        (_with(["caps", 0, "channel"], "fax"), "caps[0].channel"),
        (_with(["caps", 0, "purpose"], "spam"), "caps[0].purpose"),
        (_with(["caps", 0, "every"], 3), "caps[0].every"),
        (_with(["caps", 0], "2 per week"), "caps[0]"),
        ({"caps": [{"channel": "email", "purpose": "marketing", "limit": 1}]}, "caps[0].days"),
        (_with(["quiet_hours", 0, "start"], "25:00"), "quiet_hours[0].start"),
        (_with(["quiet_hours", 0, "start"], "9pm"), "quiet_hours[0].start"),
        (_with(["quiet_hours", 0, "end"], "22:00"), "quiet_hours[0].end"),
        (_with(["quiet_hours", 0, "end"], "07:30+09:00"), "quiet_hours[0].end"),
        (_with(["quiet_hours", 0, "action"], "later"), "quiet_hours[0].action"),
        (_with(["default_zone"], "Mars/Olympus"), "default_zone"),
        (_with(["zone_attribute"], ""), "zone_attribute"),
        (_with(["zone_attribute"], 3), "zone_attribute"),
    ],
)
def test_errors_name_the_path(doc: object, field: str) -> None:
    with pytest.raises(PlanConfigError) as info:
        PlanConfig.from_dict(doc)
    assert info.value.field == field
    assert isinstance(info.value, InvalidInputError)


def test_json_errors_and_direct_construction() -> None:
    with pytest.raises(PlanConfigError) as info:
        PlanConfig.from_json("{not json")
    assert info.value.field == "<config>"
    with pytest.raises(InvalidInputError) as err:
        FrequencyCap(channel="email", purpose="marketing", limit=-1, days=7)
    assert err.value.field == "limit"
    with pytest.raises(InvalidInputError) as err:
        QuietHours(channel="sms", purpose="marketing", start=time(8), end=time(8))
    assert err.value.field == "end"
    with pytest.raises(PlanConfigError):
        PlanConfig(caps=("2 per week",))  # type: ignore[arg-type]


# ---------------------------------------------------------------------- the clock rules

ZONES = st.sampled_from(
    ["Asia/Tokyo", "America/New_York", "Europe/London", "Australia/Lord_Howe", "America/Santiago"]
)
CHANGES = [  # DST changes of 2026 in ZONES (about the hour, UTC)
    datetime(2026, m, d, h, tzinfo=UTC)
    for m, d, h in ((3, 8, 7), (11, 1, 6), (3, 29, 1), (10, 25, 1), (4, 4, 15), (10, 3, 15),
                    (4, 5, 3), (9, 6, 4))
]  # fmt: skip
INSTANTS = st.one_of(
    st.datetimes(
        min_value=datetime(2025, 1, 1), max_value=datetime(2027, 12, 31), timezones=st.just(UTC)
    ),
    st.builds(
        lambda t, m: t + timedelta(minutes=m),
        st.sampled_from(CHANGES),
        st.integers(-26 * 60, 26 * 60),
    ),
)
CLOCK = st.times().map(lambda t: t.replace(second=0, microsecond=0))


@given(at=INSTANTS, zone=ZONES, start=CLOCK, end=CLOCK)
def test_next_allowed_is_the_first_free_instant(
    at: datetime, zone: str, start: time, end: time
) -> None:
    if start == end:
        return
    z = ZoneInfo(zone)
    rule = QuietHours(channel="sms", purpose="marketing", start=start, end=end)
    local = at.astimezone(z).time()
    if not rule.quiet(local):
        return
    out = rule.next_allowed(at, z)
    assert out > at
    assert out - at <= timedelta(hours=25, minutes=1)
    assert not rule.quiet(out.astimezone(z).time())
    # Every minute before it is still quiet (no earlier free instant was skipped).
    step = at + timedelta(minutes=1)
    while step < out:
        assert rule.quiet(step.astimezone(z).time())
        step += timedelta(minutes=1)


@given(at=INSTANTS, zone=ZONES, days=st.integers(1, 60))
def test_cap_windows_start_at_local_midnight(at: datetime, zone: str, days: int) -> None:
    z = ZoneInfo(zone)
    cap = FrequencyCap(channel="email", purpose="marketing", limit=1, days=days)
    start = cap.window_start(at, z)
    assert start <= at
    first = at.astimezone(z).date() - timedelta(days=days - 1)
    local = start.astimezone(z)
    # Local midnight, or the first instant of the day when a DST change skips midnight.
    assert local.date() == first
    before = (start - timedelta(microseconds=1)).astimezone(z)
    assert before.date() < first


def test_a_skipped_wall_clock_time_gives_the_instant_of_the_change() -> None:
    ny = ZoneInfo("America/New_York")
    # 2026-03-08 02:00 EST -> 03:00 EDT (07:00 UTC): 02:30 does not exist that day.
    rule = QuietHours(channel="sms", purpose="marketing", start=time(21), end=time(2, 30))
    at = datetime(2026, 3, 8, 6, 0, tzinfo=UTC)  # 01:00 EST, quiet
    assert rule.next_allowed(at, ny) == datetime(2026, 3, 8, 7, 0, tzinfo=UTC)
    # Santiago skips midnight (2026-09-06 00:00 -04 -> 01:00 -03): the day starts at the change.
    santiago = ZoneInfo("America/Santiago")
    cap = FrequencyCap(channel="email", purpose="marketing", limit=1, days=1)
    noon = datetime(2026, 9, 6, 15, tzinfo=UTC)
    assert cap.window_start(noon, santiago) == datetime(2026, 9, 6, 4, tzinfo=UTC)


def test_a_repeated_wall_clock_time_counts_when_it_comes_round_again() -> None:
    ny = ZoneInfo("America/New_York")
    # 2026-11-01 02:00 EDT -> 01:00 EST (06:00 UTC): 01:00-01:59 happens twice.
    rule = QuietHours(channel="sms", purpose="marketing", start=time(21), end=time(1, 30))
    at = datetime(2026, 11, 1, 6, 10, tzinfo=UTC)  # 01:10 EST, the second pass
    assert rule.next_allowed(at, ny) == datetime(2026, 11, 1, 6, 30, tzinfo=UTC)
    first_pass = datetime(2026, 11, 1, 5, 10, tzinfo=UTC)  # 01:10 EDT
    assert rule.next_allowed(first_pass, ny) == datetime(2026, 11, 1, 5, 30, tzinfo=UTC)
