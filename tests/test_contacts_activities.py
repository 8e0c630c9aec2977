"""The activity rules: declarations, the plain-property guard, the parser, attribution."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import commhistory as ch
from commhistory.contacts import (
    ActivityCatalog,
    admit,
    attribute,
    check_window,
    parse_declarations,
)
from commhistory.convert import ParsedLine, dumps, loads, structure
from commhistory.normalize import PersonalKind, personal_kind
from commhistory.store.activities import ClickRow
from tests.strategies_records import activities

T0 = datetime(2026, 4, 1, 12, 0, tzinfo=UTC)


def activity(**kw: Any) -> ch.Activity:
    fields: dict[str, Any] = {
        "activity_id": "a1",
        "contact_id": "c1",
        "name": "purchase",
        "occurred_at": T0,
        "revenue": Decimal("4980"),
        "currency": "JPY",
        "properties": {"sku": "SKU-1", "note": "gift wrap"},
    }
    fields.update(kw)
    return ch.Activity(**fields)


# --------------------------------------------------------------------------- the record


def test_activity_line_round_trips_and_normalizes_name_and_time() -> None:
    line = json.dumps(
        {
            "kind": "activity",
            "activity_id": "a1",
            "contact_id": "c1",
            "name": " Purchase ",
            "occurred_at": "2026-04-01T21:00:00+09:00",
            "revenue": "4980",
            "currency": "JPY",
            "properties": {"sku": "SKU-1", "note": "gift wrap"},
        }
    )
    record = loads(line)
    assert record == activity()
    assert loads(dumps(record)) == record
    assert "gift wrap" not in repr(record)


@pytest.mark.parametrize(
    ("change", "field", "error"),
    [
        ({"name": "Buy Now!"}, "name", ch.PayloadError),
        ({"name": 7}, "name", ch.PayloadError),
        ({"activity_id": ""}, "activity_id", ch.PayloadError),
        ({"occurred_at": "2026-04-01T09:00:00"}, "occurred_at", ch.NormalizationError),
        ({"currency": None}, "currency", ch.PayloadError),
        ({"currency": "yen"}, "currency", ch.NormalizationError),
        ({"revenue": "1e400"}, "revenue", ch.NormalizationError),
        ({"properties": ["sku"]}, "properties", ch.PayloadError),
        ({"metadata": {}}, "metadata", ch.PayloadError),
    ],
)
def test_bad_activity_lines_name_the_field(
    change: dict[str, Any], field: str, error: type[ch.InvalidInputError]
) -> None:
    obj: dict[str, Any] = {
        "kind": "activity",
        "activity_id": "a1",
        "contact_id": "c1",
        "name": "purchase",
        "occurred_at": "2026-04-01T09:00:00Z",
        "revenue": "4980",
        "currency": "JPY",
    }
    obj.update(change)
    obj = {k: v for k, v in obj.items() if v is not None}
    with pytest.raises(error) as info:
        structure(obj)
    assert info.value.field == field


def test_unknown_key_points_at_properties() -> None:
    with pytest.raises(ch.PayloadError, match="properties"):
        loads('{"kind":"activity","activity_id":"a","contact_id":"c","name":"x",'
              '"occurred_at":"2026-04-01T09:00:00Z","sku":"1"}')  # fmt: skip


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=8,
)


@given(
    st.fixed_dictionaries(
        {"kind": st.just("activity")},
        optional={
            "activity_id": _json,
            "contact_id": _json,
            "name": _json | st.sampled_from(["purchase", "page_view", "X"]),
            "occurred_at": _json | st.just("2026-04-01T09:00:00Z"),
            "revenue": _json | st.just("12.5"),
            "currency": _json | st.just("JPY"),
            "properties": _json,
        },
    )
)
def test_random_activity_objects_raise_only_typed_errors(obj: dict[str, Any]) -> None:
    with contextlib.suppress(ch.InvalidInputError):
        record = structure(obj)
        assert loads(dumps(record)) == record


@given(activities())
def test_every_activity_round_trips(record: ch.Activity) -> None:
    assert loads(dumps(record)) == record


# --------------------------------------------------------------------------- declarations


def test_declarations_take_a_mapping_or_names() -> None:
    assert parse_declarations({"purchase": ["sku", "category"], "signup": None}) == {
        "purchase": frozenset({"sku", "category"}),
        "signup": frozenset(),
    }
    assert parse_declarations(["page_view"]) == {"page_view": frozenset()}


@pytest.mark.parametrize(
    ("declared", "field"),
    [
        ({}, "activities"),
        ("purchase", "activities"),
        ({"Purchase": []}, "name"),
        ({"purchase": "sku"}, "purchase.plain_keys"),
        ({"purchase": ["sku", "bad key"]}, "purchase.plain_keys"),
        ({"purchase": [3]}, "purchase.plain_keys"),
    ],
)
def test_bad_declarations_are_refused(declared: Any, field: str) -> None:
    with pytest.raises(ch.InvalidInputError) as info:
        parse_declarations(declared)
    assert info.value.field == field


# --------------------------------------------------------------------------- the guard


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("taro@example.com", "an email address"),
        ("contact: Taro.Yamada+shop@example.co.jp please", "an email address"),
        ("090-1234-5678", "a phone number"),
        ("09012345678", "a phone number"),
        ("+81 90 1234 5678", "a phone number"),
        ("call +1 212 555 1234", "a phone number"),
        ("U4af4980629abcdef0123456789abcdef", "a LINE user id"),
        ("SKU-12345", None),
        ("4901234567894", None),  # a JAN barcode
        ("1234567890", None),
        ("2026-04-01 09:00:00", None),
        ("/products/shoes?size=27", None),
        ("@mention", None),
    ],
)
def test_personal_kind(text: str, kind: str | None) -> None:
    found = personal_kind(text)
    assert (None if found is None else found.phrase) == kind


@given(st.text(max_size=80))
def test_personal_kind_never_fails(text: str) -> None:
    assert personal_kind(text) in {None, *PersonalKind}


CATALOG = ActivityCatalog({"purchase": frozenset({"sku", "qty"}), "signup": frozenset()})


def test_catalog_accepts_declared_activities_whatever_their_personal_properties() -> None:
    CATALOG.check(activity(properties={"sku": "SKU-1", "qty": 2, "email": "a@example.com"}))
    CATALOG.check(activity(name="signup", properties={"phone": "090-1234-5678"}))


@pytest.mark.parametrize(
    ("record", "error", "field"),
    [
        (activity(name="refund"), ch.UnknownActivityError, "name"),
        (activity(properties={"sku": "taro@example.com"}), ch.PersonalDataError, "properties.sku"),
        (activity(properties={"sku": "090-1234-5678"}), ch.PersonalDataError, "properties.sku"),
        (activity(properties={"sku": ["a", "b"]}), ch.InvalidInputError, "properties.sku"),
        (activity(properties={"sku": "x" * 256}), ch.InvalidInputError, "properties.sku"),
    ],
)
def test_catalog_refusals_are_typed_and_name_the_field(
    record: ch.Activity, error: type[ch.InvalidInputError], field: str
) -> None:
    with pytest.raises(error) as info:
        CATALOG.check(record)
    assert info.value.field == field
    assert "example.com" not in str(info.value)
    assert "1234" not in str(info.value)


def test_admit_turns_refusals_into_error_lines_keeping_the_raw_text() -> None:
    good = activity(activity_id="ok")
    bad = activity(activity_id="bad", name="refund")
    message_line = ParsedLine(
        line=3, raw="{}", record=None, error=ch.PayloadError(field="x", reason="y")
    )
    calls: list[int] = []

    def catalog() -> ActivityCatalog:
        calls.append(1)
        return CATALOG

    lines = [
        ParsedLine(line=1, raw=dumps(good), record=good),
        ParsedLine(line=2, raw=None, record=bad),
        message_line,
    ]
    out = list(admit(lines, catalog))
    assert out[0] is lines[0]
    assert out[1].record is None
    assert out[1].raw == dumps(bad)
    assert isinstance(out[1].error, ch.UnknownActivityError)
    assert out[2] is message_line
    assert calls == [1]  # read once, at the first activity


# --------------------------------------------------------------------------- attribution


def click(
    message_id: str,
    at: datetime,
    *,
    sent: datetime | None = None,
    contact_id: str = "c1",
    machine: bool = False,
) -> ClickRow:
    return ClickRow(
        contact_id=contact_id,
        message_id=message_id,
        clicked_at=at,
        sent_at=sent or at - timedelta(hours=1),
        machine=machine,
    )


WEEK = timedelta(days=7)


def test_the_latest_human_click_in_the_window_wins() -> None:
    clicks = [
        click("m-old", T0 - timedelta(days=3)),
        click("m-new", T0 - timedelta(hours=1)),
        click("m-scanner", T0 - timedelta(minutes=5), machine=True),
        click("m-other", T0 - timedelta(minutes=1), contact_id="c2"),
        click("m-after", T0 + timedelta(seconds=1)),
    ]
    assert attribute(activity(), clicks, WEEK) == "m-new"


def test_window_ends_are_included() -> None:
    assert attribute(activity(), [click("m1", T0 - WEEK)], WEEK) == "m1"
    assert attribute(activity(), [click("m1", T0)], WEEK) == "m1"
    assert (
        attribute(activity(), [click("m1", T0 - WEEK - timedelta(microseconds=1))], WEEK) is None
    )


def test_ties_go_to_the_later_sent_message_then_the_greater_id() -> None:
    at = T0 - timedelta(hours=2)
    early, late = T0 - timedelta(days=2), T0 - timedelta(days=1)
    assert (
        attribute(activity(), [click("mb", at, sent=late), click("ma", at, sent=early)], WEEK)
        == "mb"
    )
    assert (
        attribute(activity(), [click("ma", at, sent=late), click("mb", at, sent=late)], WEEK)
        == "mb"
    )


def test_no_revenue_no_attribution() -> None:
    free = activity(revenue=None, currency=None)
    assert attribute(free, [click("m1", T0 - timedelta(hours=1))], WEEK) is None


@pytest.mark.parametrize("window", [timedelta(0), timedelta(days=-1), 7, "7d"])
def test_window_must_be_a_positive_timedelta(window: object) -> None:
    with pytest.raises(ch.InvalidInputError) as info:
        check_window(window)
    assert info.value.field == "attribution_window"
    assert check_window(None) is None
