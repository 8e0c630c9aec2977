"""The declared attribute schema: declarations, typing of values, typed refusals."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from commhistory.contacts import (
    AttributeDefinition,
    AttributeSchema,
    AttributeType,
    looks_personal,
    merge_declarations,
)
from commhistory.convert import dumps, loads, read_records
from commhistory.errors import (
    AttributeEnumError,
    AttributeSchemaError,
    AttributeTypeError,
    AttributeValueError,
    InvalidInputError,
    PayloadError,
    PersonalValueError,
    UnknownAttributeError,
)
from commhistory.model import ContactUpdate
from tests.strategies import aware_datetimes, email_addresses, jp_mobile_numbers

T = AttributeType


def define(name: str, kind: AttributeType, **kw: Any) -> AttributeDefinition:
    return AttributeDefinition(name=name, type=kind, **kw)


SCHEMA = AttributeSchema(
    [
        define("tier", T.ENUM, values=("gold", "silver", "bronze")),
        define("region", T.STR),
        define("visits", T.INT),
        define("spend", T.DECIMAL),
        define("vip", T.BOOL),
        define("signup", T.DATE),
        define("last_seen", T.DATETIME),
        define("tags", T.LIST),
        define("full_name", T.STR, personal=True),
        define("birth_date", T.DATE, personal=True),
    ]
)


# ---------------------------------------------------------------------- declarations


def test_schema_round_trips_through_json(tmp_path: Path) -> None:
    doc = SCHEMA.to_json()
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    assert AttributeSchema.load(path) == SCHEMA
    assert AttributeSchema.from_json(doc["attributes"]) == SCHEMA
    assert SCHEMA.names == tuple(sorted(d.name for d in SCHEMA))


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        ({"name": "Tier", "type": "str"}, "lower-case"),
        ({"name": "tier", "type": "colour"}, "type must be one of"),
        ({"name": "tier", "type": "enum"}, "at least one allowed value"),
        ({"name": "tier", "type": "enum", "values": ["a", "a"]}, "repeat"),
        ({"name": "tier", "type": "str", "values": ["a"]}, "only an enum"),
        ({"name": "tier"}, "type is required"),
        ({"name": "tier", "type": "str", "colour": 1}, "unknown key"),
        ({"name": "tier", "type": "str", "personal": "yes"}, "boolean"),
        ({"name": "tier", "type": "enum", "values": ["taro@example.com"]}, "looks like"),
    ],
)
def test_malformed_declarations_are_typed_errors(doc: dict[str, Any], reason: str) -> None:
    with pytest.raises(AttributeSchemaError) as info:
        AttributeDefinition.from_json(doc)
    assert reason in info.value.reason
    assert info.value.field.startswith("schema.")


def test_a_name_declared_twice_is_refused() -> None:
    with pytest.raises(AttributeSchemaError, match="more than once"):
        AttributeSchema([define("a", T.STR), define("a", T.INT)])


def test_schema_file_that_is_not_json(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text("{nope", encoding="utf-8")
    with pytest.raises(AttributeSchemaError, match="invalid JSON"):
        AttributeSchema.load(path)


def test_redeclaring_is_idempotent_and_type_changes_need_allow_changes() -> None:
    assert merge_declarations(SCHEMA, list(SCHEMA)) == []
    wider = define("tier", T.ENUM, values=("gold", "silver", "bronze", "platinum"))
    assert merge_declarations(SCHEMA, [wider]) == [wider]
    with pytest.raises(AttributeSchemaError, match="needs allow_changes") as info:
        merge_declarations(SCHEMA, [define("visits", T.STR)])
    assert info.value.attribute == "visits"
    with pytest.raises(AttributeSchemaError, match="personal"):
        merge_declarations(SCHEMA, [define("region", T.STR, personal=True)])
    changed = define("visits", T.DECIMAL)
    assert merge_declarations(SCHEMA, [changed], allow_changes=True) == [changed]


# ---------------------------------------------------------------------- typed refusals


@pytest.mark.parametrize(
    ("values", "error", "attribute"),
    [
        ({"colour": "red"}, UnknownAttributeError, "colour"),
        ({"visits": "many"}, AttributeTypeError, "visits"),
        ({"visits": True}, AttributeTypeError, "visits"),
        ({"visits": 2**63}, AttributeTypeError, "visits"),
        ({"spend": "1.0000001"}, AttributeTypeError, "spend"),
        ({"spend": float("nan")}, AttributeTypeError, "spend"),
        ({"vip": "maybe"}, AttributeTypeError, "vip"),
        ({"signup": "2026-02-30"}, AttributeTypeError, "signup"),
        ({"signup": datetime(2026, 1, 1, tzinfo=UTC)}, AttributeTypeError, "signup"),
        ({"last_seen": "2026-01-01T00:00:00"}, AttributeTypeError, "last_seen"),
        ({"last_seen": datetime(2026, 1, 1)}, AttributeTypeError, "last_seen"),
        ({"tags": "a,b"}, AttributeTypeError, "tags"),
        ({"tags": ["a", 1]}, AttributeTypeError, "tags"),
        ({"tier": "diamond"}, AttributeEnumError, "tier"),
        ({"region": "taro@example.com"}, PersonalValueError, "region"),
        ({"region": "call 090-1234-5678"}, PersonalValueError, "region"),
        ({"tags": ["ok", "+81 90 1234 5678"]}, PersonalValueError, "tags"),
    ],
)
def test_refusals_name_the_attribute_and_never_the_value(
    values: dict[str, Any], error: type[AttributeValueError], attribute: str
) -> None:
    with pytest.raises(error) as info:
        SCHEMA.values_of(values)
    assert info.value.attribute == attribute
    assert info.value.field == f"attributes.{attribute}"
    for value in values.values():
        if isinstance(value, str) and len(value) > 3:
            assert value not in str(info.value)
    assert isinstance(info.value, InvalidInputError)


def test_personal_attributes_take_personal_looking_values() -> None:
    [v] = SCHEMA.values_of({"full_name": "Taro taro@example.com 090-1234-5678"})
    assert v.personal
    assert v.type == "str"


def test_text_forms_are_typed() -> None:
    typed = {
        v.name: v.value
        for v in SCHEMA.values_of(
            {
                "visits": " 42 ",
                "spend": "12.50",
                "vip": "Yes",
                "signup": "2026-04-01",
                "last_seen": "2026-04-01T09:00:00+09:00",
                "tags": ["a", "b"],
                "tier": "gold",
                "region": "13",
            }
        )
    }
    assert typed == {
        "visits": 42,
        "spend": Decimal("12.5"),
        "vip": True,
        "signup": date(2026, 4, 1),
        "last_seen": datetime(2026, 4, 1, tzinfo=UTC),
        "tags": ("a", "b"),
        "tier": "gold",
        "region": "13",
    }


def test_none_unsets() -> None:
    [v] = SCHEMA.values_of({"tier": None})
    assert v.value is None


@pytest.mark.parametrize(
    "text", ["2026-04", "10000-20000", "JP-13", "plan 2026", "1234567", "abc@def", "12.50"]
)
def test_codes_and_bands_are_not_personal(text: str) -> None:
    assert not looks_personal(text)


# ---------------------------------------------------------------------- Hypothesis


@given(st.integers(min_value=-(2**63) + 1, max_value=2**63 - 1))
def test_ints_and_their_text_coerce_to_the_same_value(n: int) -> None:
    d = SCHEMA["visits"]
    assert d.coerce(n) == d.coerce(str(n)) == n


@given(
    st.decimals(
        allow_nan=False, allow_infinity=False, places=6, min_value=-(10**12), max_value=10**12
    )
)
def test_decimals_keep_their_value_whatever_the_spelling(value: Decimal) -> None:
    d = SCHEMA["spend"]
    typed = d.coerce(value)
    assert typed == value
    assert d.coerce(str(value)) == typed
    assert d.coerce(str(typed)) == typed  # the stored text reads back the same
    assert isinstance(typed, Decimal)


@given(st.dates())
def test_dates_round_trip_through_iso_text(day: date) -> None:
    assert SCHEMA["signup"].coerce(day.isoformat()) == day


@given(aware_datetimes(min_year=1900, max_year=2200))
def test_datetimes_are_utc_and_equal(moment: datetime) -> None:
    typed = SCHEMA["last_seen"].coerce(moment)
    assert isinstance(typed, datetime)
    assert typed.tzinfo is UTC
    assert typed == moment.astimezone(UTC)
    assert SCHEMA["last_seen"].coerce(moment.isoformat()) == typed


@given(email_addresses())
def test_email_addresses_are_refused_in_plain_text(address: str) -> None:
    with pytest.raises(PersonalValueError):
        SCHEMA["region"].coerce(f"contact: {address}")


@given(jp_mobile_numbers())
def test_phone_numbers_are_refused_in_plain_lists(number: str) -> None:
    with pytest.raises(PersonalValueError):
        SCHEMA["tags"].coerce(["x", number])


@given(st.one_of(st.floats(), st.booleans(), st.lists(st.integers()), st.none(), st.text()))
def test_any_value_is_typed_or_refused_with_a_typed_error(value: object) -> None:
    for d in SCHEMA:
        if value is None:
            assert d.coerce(value) is None
            continue
        failed: AttributeValueError | None = None
        try:
            d.coerce(value)
        except AttributeValueError as exc:
            failed = exc
        assert failed is None or failed.attribute == d.name


@given(st.text(min_size=1, max_size=40))
def test_unknown_names_are_refused_without_echoing_unsafe_ones(name: str) -> None:
    assume(name not in SCHEMA)
    with pytest.raises(UnknownAttributeError) as info:
        SCHEMA.values_of({name: 1})
    assert info.value.attribute == name or info.value.attribute == "<name>"


# ---------------------------------------------------------------------- canonical JSON


def test_contact_lines_round_trip() -> None:
    line = (
        '{"kind":"contact","contact_id":"c1","attributes":{"tier":"gold","visits":3,'
        '"tags":["a"],"region":null},"at":"2026-04-01T09:00:00+09:00"}'
    )
    record = loads(line)
    assert isinstance(record, ContactUpdate)
    assert record.at == datetime(2026, 4, 1, tzinfo=UTC)
    assert record.attributes == {"tier": "gold", "visits": 3, "tags": ("a",), "region": None}
    assert loads(dumps(record)) == record
    assert "gold" not in repr(record)


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ('{"kind":"contact","contact_id":"c1","attributes":{},"at":"2026-04-01T00:00:00Z"}',
         "attributes"),
        ('{"kind":"contact","contact_id":"c1","attributes":{"a":{"b":1}},'
         '"at":"2026-04-01T00:00:00Z"}', "attributes.a"),
        ('{"kind":"contact","contact_id":"c1","attributes":{"A":1},"at":"2026-04-01T00:00:00Z"}',
         "attributes"),
        ('{"kind":"contact","contact_id":"c1","attributes":{"a":1}}', "at"),
        ('{"kind":"contact","attributes":{"a":1},"at":"2026-04-01T00:00:00Z"}', "contact_id"),
    ],
)  # fmt: skip
def test_malformed_contact_lines_name_the_field(line: str, field: str) -> None:
    with pytest.raises(PayloadError) as info:
        loads(line)
    assert info.value.field == field


def test_contact_rows_from_csv(tmp_path: Path) -> None:
    sheet = tmp_path / "crm.csv"
    sheet.write_text(
        "customer,tier,spend,at\nc1,gold,12.50,2026-04-01T00:00:00Z\n", encoding="utf-8"
    )
    mapping = {"customer": "contact_id", "tier": "attributes.tier", "spend": "attributes.spend"}
    [row] = list(read_records(sheet, mapping=mapping, kind="contact"))
    assert row.error is None
    record = row.record
    assert isinstance(record, ContactUpdate)
    assert record.attributes == {"tier": "gold", "spend": "12.50"}
    assert {v.name: v.value for v in SCHEMA.validate(record)} == {
        "tier": "gold",
        "spend": Decimal("12.5"),
    }


def test_naive_at_is_refused_in_records() -> None:
    with pytest.raises(InvalidInputError):
        ContactUpdate(contact_id="c1", attributes={"a": 1}, at=datetime(2026, 1, 1))
    moment = datetime(2026, 1, 1, 9, tzinfo=timezone(timedelta(hours=9)))
    assert ContactUpdate(contact_id="c1", attributes={"a": 1}, at=moment).at.tzinfo is UTC


@pytest.mark.parametrize(
    "text", ["1.0000000000000000000000000000001", "12345678901234", "1e13", "0.0000001"]
)
def test_decimals_are_never_rounded_silently(text: str) -> None:
    with pytest.raises(AttributeTypeError):
        SCHEMA["spend"].coerce(text)
