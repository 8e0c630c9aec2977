"""The fast reading path and the detailed one accept the same lines, build the same records.

:func:`commhistory.convert.structure` first tries a generated builder per record
class, and on any failure structures the line again through the detailed
:mod:`cattrs` converter, whose error is the one reported. :func:`loads` decodes
with :mod:`orjson` when it is installed and the line is one it reads exactly as
the standard library does. These tests compare both ways on valid records, on
records with mutated fields and on hostile JSON text: the fast path never
accepts what the detailed path refuses, never builds a different record, and the
errors are the detailed path's (field and reason).

Set ``COMMHISTORY_TEST_NO_ORJSON=1`` to run the whole suite on the standard
library decoder only (tests/conftest.py).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import email_validator
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import commhistory as ch
from commhistory import convert
from commhistory.convert import dumps, loads, read_records, structure
from commhistory.errors import InvalidInputError
from commhistory.model import Record
from commhistory.normalize import (
    cache_info,
    clear_caches,
    is_normalized_email,
    is_normalized_phone,
    normalize_email,
    normalize_phone,
)
from tests.strategies_records import records
from tests.test_fuzz_inputs import JSON_VALUES, hostile_lines

SETTINGS = settings(
    deadline=None,
    max_examples=300,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

HAS_ORJSON = convert._orjson_loads is not None


@pytest.fixture(params=["orjson", "stdlib"])
def decoder(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Read with orjson (when installed), then with the standard library only."""
    if request.param == "orjson" and not HAS_ORJSON:
        pytest.skip("orjson is not installed (the 'fast' extra)")
    if request.param == "stdlib":
        monkeypatch.setattr(convert, "_orjson_loads", None)
    return str(request.param)


def _outcome(call: Any, *args: Any, **kwargs: Any) -> object:
    """A call's record, or its error as (type, field, reason)."""
    try:
        return call(*args, **kwargs)
    except InvalidInputError as exc:
        return (type(exc).__name__, exc.field, exc.reason)


def _fast(obj: dict[str, Any], default_tz: str | None = None) -> Record | None:
    """The fast builder's record for *obj*, or None where it gives up."""
    kind = obj.get("kind")
    if not isinstance(kind, str) or kind not in convert.KINDS:
        return None
    build = convert._builders(default_tz)[kind]
    data = {k: v for k, v in obj.items() if k != "kind" and v is not None}
    try:
        convert._prepare(kind, data, source=obj, region="JP")
        return build(data)
    except Exception:
        return None


def _same_records(a: object, b: object) -> None:
    assert type(a) is type(b)
    assert a == b
    assert dumps(a) == dumps(b)  # type: ignore[arg-type]
    for name in ("sent_at", "occurred_at", "recorded_at"):
        when = getattr(a, name, None)
        if isinstance(when, datetime):
            assert when.tzinfo is getattr(b, name).tzinfo


# Values a field may be given instead of its own: JSON of every type, and the
# spellings the detailed path normalizes (enums in other cases, other timestamps).
SPELLINGS = st.sampled_from(
    [
        " EMAIL ",
        "Outbound",
        "OPENED",
        "marketing ",
        "2026-04-01T09:00:00+09:00",
        "2026-04-01T00:00:00z",
        "2026-04-01T00:00:00",
        "2026/04/01 09:00",
        " 2026-04-01T00:00:00Z",
        "2026-04-01T00:00:00.123456Z",
        "20260401",
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59-01:00",
        "2026-04-01T00:00:00+00:00" + " " * 60,
        1775000000,
        1775000000123,
        1775000000.5,
        "1775000000",
        "4980.50",
        "1e3",
        "JPY",
        "jpy",
        "5.1.1",
        "550 5.1.1 user unknown",
        " Taro@Example.COM ",
        "090-1234-5678",
        "+81 90 1234 5678",
        "U" + "a" * 32,
        "bounced",
        "hard",
        True,
        False,
        0,
        "",
        " ",
        {},
        [],
    ]
)
FIELDS = sorted(
    {"kind", "metadata"}
    | {f for cls in convert.KINDS.values() for f in (a.name for a in cls.__attrs_attrs__)}
)


@st.composite
def mutated_objects(draw: st.DrawFn) -> dict[str, Any]:
    """A valid record's JSON object with some fields replaced, dropped, nulled or added."""
    obj: dict[str, Any] = json.loads(dumps(draw(records())))
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        field = draw(st.sampled_from([*obj, *FIELDS, "unknown_key"]))
        action = draw(st.sampled_from(["replace", "spelling", "drop", "null"]))
        if action == "drop":
            obj.pop(field, None)
        elif action == "null":
            obj[field] = None
        elif action == "spelling":
            obj[field] = draw(SPELLINGS)
        else:
            obj[field] = draw(JSON_VALUES)
    return obj


@SETTINGS
@given(obj=mutated_objects(), default_tz=st.sampled_from([None, "Asia/Tokyo"]))
def test_fast_builder_accepts_only_what_the_detailed_path_accepts(
    obj: dict[str, Any], default_tz: str | None
) -> None:
    detailed = _outcome(convert._structure_detailed, obj, default_tz=default_tz, region="JP")
    fast = _fast(obj, default_tz)
    if fast is not None:
        assert isinstance(detailed, Record), detailed
        _same_records(fast, detailed)
    public = _outcome(structure, obj, default_tz=default_tz)
    if isinstance(detailed, tuple):
        assert public == detailed  # the same error type, field and reason
    else:
        _same_records(public, detailed)


@SETTINGS
@given(record=records())
def test_valid_records_take_the_fast_path(record: Record) -> None:
    obj = json.loads(dumps(record))
    fast = _fast(obj)
    assert fast is not None
    _same_records(fast, record)


@SETTINGS
@given(obj=mutated_objects(), ensure_ascii=st.booleans())
def test_loads_gives_the_detailed_outcome_on_both_decoders(
    obj: dict[str, Any], ensure_ascii: bool
) -> None:
    line = json.dumps(obj, ensure_ascii=ensure_ascii)
    expected = _outcome(convert._structure_detailed, obj, default_tz=None, region="JP")
    saved = convert._orjson_loads
    for orjson in (saved, None):
        convert._orjson_loads = orjson
        try:
            got = _outcome(loads, line)
        finally:
            convert._orjson_loads = saved
        if isinstance(expected, tuple):
            assert got == expected
        else:
            _same_records(got, expected)


def _typed(value: object) -> list[object]:
    """A value as a flat list of typed tokens (1 and 1.0, True and 1 differ); iterative."""
    tokens: list[object] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            tokens.append(("object", len(item)))
            for key, inner in reversed(item.items()):
                stack += [inner, ("key", key)]
        elif isinstance(item, list):
            tokens.append(("array", len(item)))
            stack += reversed(item)
        elif isinstance(item, tuple):
            tokens.append(item)
        else:
            tokens.append((type(item).__name__, repr(item)))
    return tokens


def _decoded(call: Any, line: str) -> object:
    try:
        return _typed(call(line))
    except InvalidInputError as exc:
        return (type(exc).__name__, exc.field, exc.reason)


@pytest.mark.skipif(not HAS_ORJSON, reason="orjson is not installed (the 'fast' extra)")
@SETTINGS
@given(data=hostile_lines() | st.builds(json.dumps, JSON_VALUES))
def test_orjson_decodes_exactly_as_the_standard_library(data: bytes | str) -> None:
    line = data.decode("utf-8", "surrogateescape") if isinstance(data, bytes) else data
    assert _decoded(convert._decode, line) == _decoded(convert._decode_std, line)


@pytest.mark.parametrize(
    "line",
    [
        '{"kind":"event","event_id":"e","event_id":"f"}',  # a repeated key: orjson keeps "f"
        '{"kind":"event","metadata":{"a":1,"a":2}}',  # repeated inside metadata
        '{"kind":"event","event_id" :"e","event_id":"f"}',  # spaced before its colon
        '{"kind":"event","metadata":{"n":18446744073709551616}}',  # a float to orjson
        '{"kind":"event","revenue":18446744073709551616}',
        '{"kind":"event","revenue":1.5,"metadata":[]}',
        '{"kind":"event","metadata":{"n":1e400}}',  # infinity to json, an error to orjson
        '{"kind":"event","metadata":{"n":NaN}}',
        '{"kind":"event","reason":"a \\"quoted\\" word"}',
        '{"kind":"event","reason":"\\ud800"}',
        '\ufeff{"kind":"event"}',
        '{"kind":"event"} x',
        "[1, 2]",
        '"text"',
        "",
    ],
)
def test_lines_orjson_reads_differently_are_decoded_by_the_standard_library(line: str) -> None:
    assert _decoded(convert._decode, line) == _decoded(convert._decode_std, line)
    assert _decoded(convert._decode_std, line) == _decoded(_json_loads, line)


def _json_loads(line: str) -> object:
    """What loads() decoded with before the fast path: json.loads with the key check."""
    try:
        return json.loads(line, object_pairs_hook=convert._unique_keys)
    except InvalidInputError:
        raise
    except json.JSONDecodeError as exc:
        raise ch.PayloadError(
            field="<line>", reason=f"invalid JSON: {exc.msg} at column {exc.colno}"
        ) from None


def test_a_repeated_key_is_refused_on_both_decoders(decoder: str) -> None:
    line = '{"kind":"message","message_id":"m-1","message_id":"m-2"}'
    with pytest.raises(ch.PayloadError) as info:
        loads(line)
    assert (info.value.field, info.value.reason) == ("<line>", "duplicate key 'message_id'")


GOOD = (
    '{"kind":"message","message_id":"m-1","channel":"email","direction":"outbound",'
    '"contact_id":"c-1","address":" Taro@Example.COM ","sent_at":"2026-04-01T09:00:00+09:00",'
    '"subject":"春のご案内","metadata":{"plan":"gold","n":[1,2.5,{"x":null}]}}'
)


def test_read_records_gives_the_same_lines_on_both_decoders(tmp_path: Path, decoder: str) -> None:
    path = tmp_path / "in.jsonl"
    lines = [
        GOOD,
        GOOD.replace('"m-1"', '"m-2"').replace('"email"', '"EMAIL"'),
        GOOD.replace('"outbound"', '"sideways"'),
        GOOD.replace('"sent_at":"2026-04-01T09:00:00+09:00"', '"sent_at":"2026-04-01 09:00"'),
        GOOD.replace('"plan"', '"extra":1,"plan"').replace('"c-1"', "17"),
        '{"kind":"event","event_id":"e-1","type":"bounced","occurred_at":"2026-04-02T00:00:00Z",'
        '"message_id":"m-1","reason":"550 5.1.1 unknown user"}',
        '{"kind":"event","event_id":"e-2","type":"opened","occurred_at":1775000000}',
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    got = [
        (p.line, p.record, None if p.error is None else (p.error.field, p.error.reason))
        for p in read_records(path)
    ]
    bounce = got[5][1]
    assert isinstance(bounce, ch.Event)
    assert (bounce.status_code, bounce.bounce) == ("5.1.1", ch.BounceClass.HARD)
    assert [error for _, _, error in got] == [
        None,
        None,
        ("direction", "expected one of: outbound, inbound"),
        (
            "sent_at",
            "no time zone offset; give one or a default zone",
        ),
        ("contact_id", "expected a string, got number"),
        None,
        ("message_id", "required, or give both provider and provider_message_id"),
    ]
    message = got[0][1]
    assert isinstance(message, ch.Message)
    assert message.address == "Taro@example.com"
    assert message.metadata == {"plan": "gold", "n": [1, 2.5, {"x": None}]}


def test_each_distinct_address_is_validated_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading normalizes an address once; the record's check does not validate it again."""
    import commhistory.normalize.email as email_module

    calls: list[str] = []
    real = email_validator.validate_email

    def counting(value: str, **kwargs: Any) -> Any:
        calls.append(value)
        return real(value, **kwargs)

    monkeypatch.setattr(email_module, "validate_email", counting)
    clear_caches()
    for n in range(30):
        line = GOOD.replace('"m-1"', f'"m-{n}"').replace("Taro@", f"Taro{n % 3}@")
        assert isinstance(loads(line), ch.Message)
    assert cache_info()["email"].misses == 3  # one per distinct address
    assert calls == []  # plain ASCII addresses take the fast path, without the library
    clear_caches()
    for n in range(30):
        line = GOOD.replace('"m-1"', f'"m-{n}"').replace("Taro@", f"Jörg{n % 3}@")
        assert isinstance(loads(line), ch.Message)
    assert len(calls) == 3  # one per distinct address, none for the canonical forms
    assert cache_info()["email"].misses == 3


def test_a_known_canonical_form_skips_validation_but_is_still_checked() -> None:
    clear_caches()
    assert normalize_email(" Hanako@EXAMPLE.jp") == "Hanako@example.jp"
    assert is_normalized_email("Hanako@example.jp")
    assert cache_info()["email"].misses == 1
    assert not is_normalized_email("Hanako@EXAMPLE.jp")
    assert not is_normalized_email("not an address")
    assert normalize_phone("090-1234-5678") == "+819012345678"
    assert is_normalized_phone("+819012345678")
    assert not is_normalized_phone("090-1234-5678")
    assert not is_normalized_phone("+81")
    with pytest.raises(ch.NormalizationError, match="not normalized"):
        ch.Message(
            message_id="m",
            channel=ch.Channel.EMAIL,
            direction=ch.Direction.OUTBOUND,
            contact_id="c",
            address="Hanako@EXAMPLE.jp",
            sent_at=datetime(2026, 4, 1, tzinfo=UTC),
        )
