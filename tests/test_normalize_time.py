from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from commhistory.errors import NormalizationError
from commhistory.normalize import format_timestamp, parse_timestamp
from tests.strategies import aware_datetimes, epoch_numbers, timestamp_spellings, zones

APRIL_1_UTC = datetime(2026, 4, 1, tzinfo=UTC)  # 2026-04-01T09:00+09:00
APRIL_1_EPOCH = 1_775_001_600


@pytest.mark.parametrize(
    "value",
    [
        "2026-04-01T09:00:00+09:00",
        "2026-04-01T00:00:00Z",
        "2026-04-01T00:00:00z",
        "2026-04-01T00:00Z",
        "2026-04-01 00:00:00+00:00",
        "20260401T000000Z",
        "2026-03-31T20:00:00-04:00",
        "  2026-04-01T00:00:00Z\n",
        APRIL_1_EPOCH,
        float(APRIL_1_EPOCH),
        APRIL_1_EPOCH * 1000,
        str(APRIL_1_EPOCH),
        f"{APRIL_1_EPOCH}000",
        f"{APRIL_1_EPOCH}.0",
        datetime(2026, 4, 1, 9, tzinfo=ZoneInfo("Asia/Tokyo")),
    ],
)
def test_aware_spellings(value: str | int | float | datetime) -> None:
    parsed = parse_timestamp(value)
    assert parsed == APRIL_1_UTC
    assert parsed.tzinfo is UTC


@pytest.mark.parametrize(
    "value",
    [
        "2026/04/01 09:00",
        "2026/4/1 9:00",
        "2026/04/01 09:00:00",
        "2026-04-01 09:00:00",
        "2026-4-1 9:00",
        "2026-04-01T09:00",
        datetime(2026, 4, 1, 9),
    ],
)
def test_naive_spellings_need_a_default_zone(value: str | datetime) -> None:
    with pytest.raises(NormalizationError, match="no time zone") as info:
        parse_timestamp(value, field="sent_at")
    assert info.value.field == "sent_at"
    assert parse_timestamp(value, default_tz="Asia/Tokyo") == APRIL_1_UTC
    assert parse_timestamp(value, default_tz=timezone(timedelta(hours=9))) == APRIL_1_UTC


def test_default_zone_is_ignored_when_an_offset_is_given() -> None:
    value = "2026-04-01T00:00:00Z"
    assert parse_timestamp(value, default_tz="America/New_York") == APRIL_1_UTC


def test_bare_dates_and_fractions() -> None:
    assert parse_timestamp("2026/04/01", default_tz="UTC") == APRIL_1_UTC
    assert parse_timestamp("2026-04-01", default_tz=UTC) == APRIL_1_UTC
    expected = APRIL_1_UTC.replace(microsecond=250_000)
    assert parse_timestamp("2026/04/01 09:00:00.25", default_tz="Asia/Tokyo") == expected
    assert parse_timestamp(f"{APRIL_1_EPOCH}.25") == expected
    assert parse_timestamp(APRIL_1_EPOCH * 1000 + 250) == expected


def test_epoch_unit_rule() -> None:
    threshold = 10**11
    assert parse_timestamp(threshold - 1) == datetime(5138, 11, 16, 9, 46, 39, tzinfo=UTC)
    assert parse_timestamp(threshold) == datetime(1973, 3, 3, 9, 46, 40, tzinfo=UTC)
    assert parse_timestamp(0) == datetime(1970, 1, 1, tzinfo=UTC)
    assert parse_timestamp(-86400) == datetime(1969, 12, 31, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "reason_part"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("yesterday", "not an ISO 8601"),
        ("2026-13-01T00:00:00Z", "not an ISO 8601"),
        ("2026/02/30 09:00", "calendar"),
        ("2026/04/01 25:00", "calendar"),
        ("20260401", "ambiguous"),
        ("1" * 70, "too long"),
        (10**20, "out of range"),
        (-(10**20), "out of range"),
        (1e300, "out of range"),
        (float("nan"), "finite"),
        (float("inf"), "finite"),
        ("9" * 40, "out of range"),
        ("0001-01-01T00:00:00+01:00", "out of range"),
        ("9999-12-31T23:00:00-05:00", "out of range"),
        (True, "bool"),
        (False, "bool"),
        (None, "got NoneType"),
        (date(2026, 4, 1), "got date"),
        (b"2026-04-01T00:00:00Z", "got bytes"),
    ],
)
def test_rejects(value: object, reason_part: str) -> None:
    with pytest.raises(NormalizationError) as info:
        parse_timestamp(value, default_tz="UTC")  # type: ignore[arg-type]
    assert info.value.field == "timestamp"
    assert reason_part in info.value.reason


@pytest.mark.parametrize("zone", ["Mars/Olympus", "../etc/passwd", "", 9])
def test_unknown_default_zone(zone: object) -> None:
    with pytest.raises(NormalizationError) as info:
        parse_timestamp("2026/04/01 09:00", default_tz=zone)  # type: ignore[arg-type]
    assert info.value.field == "default_tz"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (APRIL_1_UTC, "2026-04-01T00:00:00Z"),
        (datetime(2026, 4, 1, 9, tzinfo=ZoneInfo("Asia/Tokyo")), "2026-04-01T00:00:00Z"),
        (APRIL_1_UTC.replace(microsecond=250_000), "2026-04-01T00:00:00.250000Z"),
        (APRIL_1_UTC.replace(microsecond=1), "2026-04-01T00:00:00.000001Z"),
        (datetime(99, 1, 2, tzinfo=UTC), "0099-01-02T00:00:00Z"),
    ],
)
def test_format(value: datetime, expected: str) -> None:
    assert format_timestamp(value) == expected
    assert parse_timestamp(expected) == value


@pytest.mark.parametrize(
    "value",
    [datetime(2026, 4, 1), date(2026, 4, 1), "2026-04-01T00:00:00Z", None],
)
def test_format_rejects(value: object) -> None:
    with pytest.raises(NormalizationError) as info:
        format_timestamp(value)  # type: ignore[arg-type]
    assert info.value.field == "timestamp"


@given(aware_datetimes())
def test_round_trip(moment: datetime) -> None:
    text = format_timestamp(moment)
    parsed = parse_timestamp(text)
    # Compare in UTC: Python's == across zones is False for a wall time that a
    # DST change makes ambiguous (fold=1), even when both name the same instant.
    assert parsed == moment.astimezone(UTC)
    assert parsed.tzinfo is UTC
    assert format_timestamp(parsed) == text
    assert text.endswith("Z")


@given(aware_datetimes())
def test_idempotent_on_datetimes(moment: datetime) -> None:
    once = parse_timestamp(moment)
    assert parse_timestamp(once) == once
    assert parse_timestamp(format_timestamp(once)) == once


@given(timestamp_spellings(), zones())
def test_spellings_parse_and_are_idempotent(text: str, zone: ZoneInfo) -> None:
    once = parse_timestamp(text, default_tz=zone)
    assert once.tzinfo is UTC
    assert parse_timestamp(once) == once
    assert parse_timestamp(format_timestamp(once)) == once


@given(epoch_numbers())
def test_epochs(value: float) -> None:
    parsed = parse_timestamp(value)
    assert datetime(1970, 1, 1, tzinfo=UTC) <= parsed <= datetime(2100, 1, 2, tzinfo=UTC)
    assert parse_timestamp(format_timestamp(parsed)) == parsed


@given(st.one_of(st.text(), st.integers(), st.floats()))
def test_arbitrary_values_only_raise_normalization_error(value: str | float) -> None:
    try:
        parsed = parse_timestamp(value, default_tz="Asia/Tokyo", field="occurred_at")
    except NormalizationError as exc:
        error_field = exc.field
    else:
        assert parsed.tzinfo is UTC
        return
    assert error_field == "occurred_at"
