"""Canonical JSON lines in and out, and the streaming file reader.

One record a line; its ``kind`` (``message``, ``event``, ``consent``, ``activity``,
``contact``) says which (see :doc:`/model`). Reading *normalizes* what the record model
only validates:

* addresses to their canonical form for the channel (:func:`~commhistory.normalize_email`,
  :func:`~commhistory.normalize_phone`, LINE user ids);
* timestamps from ISO 8601 with an offset, epoch seconds or epoch milliseconds to
  UTC (naive ones need ``default_tz``);
* a bounce's class from its SMTP status code or diagnostic text when not given.

Writing emits UTC ISO 8601 timestamps, enum values, decimal strings, and leaves
out fields that are unset. ``loads(dumps(r)) == r`` for every valid record.

Structuring first tries a fast path built once per record class and default time
zone: each field that needs converting (enums, timestamps, amounts, metadata) gets
its hook, every other value goes straight to the record, whose validator checks
it (once). When that fails for any reason, the line is structured again through
a private, configured :mod:`cattrs` converter with detailed validation, whose
errors are translated into :class:`~commhistory.PayloadError` or
:class:`~commhistory.NormalizationError` naming the field: both paths accept the
same lines, build equal records, and a bad line's error is the detailed path's.
Canonical JSON lines are decoded with ``orjson`` when it is installed (the
``fast`` extra), else with the standard library; the two accept the same lines.

.. versionchanged:: 0.4.0
   The fast structuring path, and ``orjson`` when installed.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import codecs
import csv
import decimal
import functools
import io
import json
import math
import os
import re
import types
import typing
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, date, datetime, tzinfo
from decimal import Decimal, DecimalException
from pathlib import Path
from typing import IO, Any, Final, Literal

import attrs
import cattrs
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError

from commhistory.errors import InvalidInputError, NormalizationError, PayloadError
from commhistory.model import (
    MAX_ID_LENGTH,
    Activity,
    BounceClass,
    Channel,
    ConsentAction,
    ConsentEvent,
    ConsentMethod,
    ContactUpdate,
    Direction,
    Event,
    EventType,
    Message,
    Purpose,
    Record,
)
from commhistory.normalize import (
    classify_bounce,
    format_timestamp,
    normalize_email,
    normalize_line_user_id,
    normalize_phone,
    parse_smtp_reply,
    parse_timestamp,
)

_orjson_loads: Callable[[str | bytes], Any] | None
try:
    import orjson as _orjson
except ImportError:  # pragma: no cover - the optional "fast" extra
    _orjson_loads = None
else:
    _orjson_loads = _orjson.loads

__all__ = [
    "KINDS",
    "MAX_CELL_LENGTH",
    "MAX_NESTING",
    "FileFormat",
    "ParsedLine",
    "check_records",
    "dumps",
    "loads",
    "read_records",
    "reparse",
    "structure",
    "unstructure",
    "write_records",
]

KINDS: Final[
    Mapping[
        str,
        type[Message] | type[Event] | type[ConsentEvent] | type[Activity] | type[ContactUpdate],
    ]
] = {
    "message": Message,
    "event": Event,
    "consent": ConsentEvent,
    "activity": Activity,
    "contact": ContactUpdate,
}
"""The ``kind`` of each canonical record type.

.. versionchanged:: 0.4.0
   ``activity`` (:class:`~commhistory.Activity`) and ``contact``: a
   :class:`~commhistory.model.ContactUpdate` (contact attributes).
"""

_KIND_OF: Final = {cls: kind for kind, cls in KINDS.items()}
_ENUMS: Final = (BounceClass, Channel, ConsentAction, ConsentMethod, Direction, EventType, Purpose)

FileFormat = Literal["jsonl", "csv"]
"""The file formats :func:`read_records` understands."""

MAX_NESTING: Final = 64
"""How deeply arrays and objects may nest inside ``metadata``.

.. versionadded:: 0.4.0
"""

MAX_CELL_LENGTH: Final = 131_072
"""The most characters one CSV cell may hold (the ``csv`` module's default limit).

.. versionadded:: 0.4.0
"""

_KIND_NAMES: Final = ", ".join(KINDS)
_MAPPINGS: Final = frozenset({"metadata", "properties", "attributes"})
"""The fields holding host-defined JSON objects (left out of a line when empty)."""
_MAX_DECIMAL_LENGTH: Final = 64
_SURROGATE: Final = re.compile("[\ud800-\udfff]")
_PLAIN_KEY: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")


def _key_name(key: object) -> str | None:
    """An unknown or repeated key's name when it is safe to show (identifier-like), else None.

    A key is arbitrary text and may be personal (an address typed into a header),
    so only plain identifier-like names are ever echoed in errors and dead letters.
    """
    if isinstance(key, str) and _PLAIN_KEY.fullmatch(key):
        return key
    return None


# --------------------------------------------------------------------------- converter


def _structure_str(value: object, _type: object) -> str:
    if isinstance(value, str):
        return value
    raise PayloadError(field="<value>", reason=f"expected a string, got {_json_type(value)}")


def _structure_bool(value: object, _type: object) -> bool:
    if isinstance(value, bool):
        return value
    raise PayloadError(field="<value>", reason=f"expected true or false, got {_json_type(value)}")


def _structure_decimal(value: object, _type: object) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        raise PayloadError(
            field="<value>", reason=f"expected a decimal string, got {_json_type(value)}"
        )
    # str() of a float is its shortest round-tripping form: 4980.5 -> "4980.5".
    text = str(value).strip()
    if len(text) > _MAX_DECIMAL_LENGTH:
        raise NormalizationError(
            field="<value>", reason=f"longer than {_MAX_DECIMAL_LENGTH} characters"
        )
    try:
        amount = Decimal(text)
    except DecimalException:
        raise NormalizationError(field="<value>", reason="not a decimal number") from None
    if not amount.is_finite():
        raise NormalizationError(field="<value>", reason="must be a finite number")
    _check_storable_amount(amount)
    return amount


_MICRO: Final = Decimal("1e-6")
_MONEY: Final = decimal.Context(
    prec=40, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN, traps=[decimal.InvalidOperation]
)
_INT64_MAX: Final = 2**63 - 1


def _check_storable_amount(amount: Decimal) -> None:
    """Refuse an amount storage cannot hold exactly (millionths in a signed 64-bit integer).

    The same limits as the store's ``revenue_micros``, checked when a line is read,
    so ``validate`` refuses what ``import`` would.
    """
    if amount and amount.adjusted() >= 13:  # |amount| >= 10**13: over 2**63 millionths
        raise NormalizationError(field="<value>", reason="too large to store")
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -6 and _MONEY.quantize(amount, _MICRO) != amount:
        raise NormalizationError(
            field="<value>", reason="more than 6 decimal places cannot be stored"
        )
    if abs(int(_MONEY.scaleb(amount, 6))) > _INT64_MAX:
        raise NormalizationError(field="<value>", reason="too large to store")


def _structure_mapping(value: object, _type: object) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise PayloadError(field="<value>", reason=f"expected an object, got {_json_type(value)}")
    _check_json_value(value)
    return dict(value)


def _check_json_value(value: object, *, field: str = "<value>") -> None:
    """Check that *value* is JSON that storage can serialize exactly as it was read.

    Strings and keys must be valid Unicode (no lone surrogates), numbers finite,
    keys strings, and arrays and objects nested at most :data:`MAX_NESTING` deep.
    Iterative, so hostile nesting cannot exhaust the stack.

    Raises:
        PayloadError: The value is not storable JSON (the reason names why, never the value).
    """
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if item is None or isinstance(item, bool | int):
            continue
        if isinstance(item, str):
            if not item.isascii() and _SURROGATE.search(item):
                raise PayloadError(
                    field=field, reason="a string contains a lone surrogate (not valid Unicode)"
                )
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise PayloadError(field=field, reason="NaN and Infinity are not JSON numbers")
        elif isinstance(item, Mapping | list | tuple):
            if depth >= MAX_NESTING:
                raise PayloadError(field=field, reason=f"nested more than {MAX_NESTING} levels")
            if isinstance(item, Mapping):
                for key in item:
                    if not isinstance(key, str):
                        raise PayloadError(field=field, reason="keys must be strings")
                    if not key.isascii() and _SURROGATE.search(key):
                        raise PayloadError(
                            field=field,
                            reason="a key contains a lone surrogate (not valid Unicode)",
                        )
                stack.extend((v, depth + 1) for v in item.values())
            else:
                stack.extend((v, depth + 1) for v in item)
        else:
            raise PayloadError(field=field, reason=f"not a JSON value ({_json_type(item)})")


def _enum_hook(cls: type[Any]) -> Callable[[object, object], Any]:
    members = {m.value: m for m in cls}
    allowed = ", ".join(members)

    def structure_enum(value: object, _type: object) -> Any:
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            member = members.get(value.strip().lower())
            if member is not None:
                return member
        raise PayloadError(field="<value>", reason=f"expected one of: {allowed}")

    return structure_enum


def _datetime_hook(default_tz: tzinfo | str | None) -> Callable[[object, object], datetime]:
    def structure_datetime(value: object, _type: object) -> datetime:
        if isinstance(value, bool) or not isinstance(value, str | int | float | datetime):
            raise PayloadError(
                field="<value>", reason=f"expected a timestamp, got {_json_type(value)}"
            )
        return parse_timestamp(value, default_tz=default_tz, field="<value>")

    return structure_datetime


@functools.lru_cache(maxsize=8)
def _converter(default_tz: tzinfo | str | None) -> cattrs.Converter:
    """The private converter for one default time zone (cached: building one costs)."""
    converter = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    converter.register_structure_hook(str, _structure_str)
    converter.register_structure_hook(bool, _structure_bool)
    converter.register_structure_hook(Decimal, _structure_decimal)
    converter.register_structure_hook_func(lambda t: t == Mapping[str, Any], _structure_mapping)
    converter.register_structure_hook(datetime, _datetime_hook(default_tz))
    for enum_cls in _ENUMS:
        converter.register_structure_hook(enum_cls, _enum_hook(enum_cls))
    return converter


# --------------------------------------------------------------------------- the fast path
#
# One builder per record class and default zone: the fields that need converting
# (enums, timestamps, amounts, metadata) go through the same hooks as above; every
# other value goes to the record as it is, and the record's validator checks it.
# Any failure sends the record through the detailed converter instead, so errors
# are the detailed path's; the builders never accept what it refuses
# (tests/test_convert_fast.py compares the two).

_Builder = Callable[[dict[str, Any]], Record]
_Hook = Callable[[object, object], Any]


def _fast_enum_hook(cls: type[Any]) -> _Hook:
    """An exact member value, else what :func:`_enum_hook` makes of it."""
    members = {m.value: m for m in cls}
    general = _enum_hook(cls)

    def structure_enum_fast(value: object, _type: object) -> Any:
        member = members.get(value) if type(value) is str else None
        return general(value, _type) if member is None else member

    return structure_enum_fast


def _fast_datetime_hook(default_tz: tzinfo | str | None) -> _Hook:
    """A canonical UTC timestamp by the stdlib parser alone, else :func:`_datetime_hook`'s way."""
    general = _datetime_hook(default_tz)
    fromisoformat = datetime.fromisoformat

    def structure_datetime_fast(value: object, _type: object) -> datetime:
        if type(value) is str and value[10:11] == "T" and len(value) <= _MAX_TIMESTAMP:
            try:
                parsed = fromisoformat(value)
            except ValueError:
                pass
            else:
                if parsed.tzinfo is UTC:
                    return parsed  # what parse_timestamp returns for it
        return general(value, _type)

    return structure_datetime_fast


_MAX_TIMESTAMP: Final = 64  # longer timestamp strings are refused (normalize/time.py)


def _field_hook(tp: object, default_tz: tzinfo | str | None) -> _Hook | None:
    """The hook converting a value of the (non-optional) field type *tp*; None for as-is."""
    if tp is str or tp is bool:
        return None  # the record's validator checks the type
    if tp is datetime:
        return _fast_datetime_hook(default_tz)
    if tp is Decimal:
        return _structure_decimal
    if tp == Mapping[str, Any]:
        return _structure_mapping
    if tp in _ENUMS:
        return _fast_enum_hook(tp)
    raise TypeError(f"no fast structuring hook for {tp!r}")  # a new field type: add it


def _builder(cls: type[Record], default_tz: tzinfo | str | None) -> _Builder:
    """Generate the fast builder of *cls*: one line per field that needs converting."""
    hints = typing.get_type_hints(cls)
    namespace: dict[str, Any] = {"cls": cls}
    lines = ["def build(data):"]
    for field in attrs.fields(cls):
        tp = hints[field.name]
        if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
            (tp,) = (a for a in typing.get_args(tp) if a is not type(None))
        hook = _field_hook(tp, default_tz)
        if hook is not None:
            namespace[f"hook_{field.name}"] = hook
            lines += [
                f"    value = data.get({field.name!r})",
                "    if value is not None:",
                f"        data[{field.name!r}] = hook_{field.name}(value, None)",
            ]
    lines.append("    return cls(**data)")
    exec("\n".join(lines), namespace)  # noqa: S102 - code built from field names only
    build: _Builder = namespace["build"]
    return build


@functools.lru_cache(maxsize=8)
def _builders(default_tz: tzinfo | str | None) -> Mapping[str, _Builder]:
    """The fast builders of each kind for one default time zone (cached)."""
    return {kind: _builder(cls, default_tz) for kind, cls in KINDS.items()}


# --------------------------------------------------------------------------- certainly valid
#
# ``validate`` needs to know whether a line is valid, not its record. For the two
# kinds that make up most of a history (messages and events), a check of the
# decoded object says "certainly valid" for the canonical, common shape without
# building anything: exact enum values, plain ASCII ids, canonical UTC
# timestamps, email addresses (normalized once per distinct address), text
# fields, no metadata. Anything else (another channel, a bounce to classify,
# revenue, metadata, other spellings) answers "not sure" and the line is
# structured as usual. The checks look at an object decoded from a line without
# a backslash and without lone surrogates, so none of its strings holds one. The
# check never says valid for a line structure() would refuse
# (tests/test_import_fast.py compares the two).

_Check = Callable[[object], bool]


def _plain_id(value: object) -> bool:
    """Whether *value* is certainly a valid id: a non-blank ASCII string without NUL, short."""
    return (
        type(value) is str
        and value.isascii()
        and len(value) <= MAX_ID_LENGTH
        and "\x00" not in value
        and value != ""
        and not value.isspace()
    )


def _optional_plain_id(value: object) -> bool:
    return value is None or _plain_id(value)


def _text(value: object) -> bool:
    """Whether *value* is an optional text field (lone surrogates: see :func:`_check_jsonl`)."""
    return value is None or type(value) is str


def _utc_timestamp(value: object) -> bool:
    """Whether *value* is a timestamp the fast structuring hook reads as it is (UTC)."""
    if type(value) is not str or value[10:11] != "T" or len(value) > _MAX_TIMESTAMP:
        return False
    try:
        return datetime.fromisoformat(value).tzinfo is UTC
    except ValueError:
        return False


def _one_of(values: Iterable[str], *, optional: bool = False) -> _Check:
    allowed = frozenset(values)
    return lambda value: (value is None and optional) or (type(value) is str and value in allowed)


def _no_metadata(value: object) -> bool:
    return value is None or (type(value) is dict and not value)


def _is_none(value: object) -> bool:
    return value is None


def _is_bool(value: object) -> bool:
    return value is None or value is True or value is False


def _is_kind(_value: object) -> bool:
    return True  # the caller chose the check by it


# Per field of the line: whether its value is certainly fine. A key without a
# check (unknown, or one whose value is normalized, derived or checked against
# another field) makes the line "not sure".
_MESSAGE_CHECKS: Final[Mapping[str, _Check]] = {
    "kind": _is_kind,
    "message_id": _plain_id,
    "channel": lambda value: value == "email",
    "direction": _one_of(d.value for d in Direction),
    "contact_id": _plain_id,
    "address": lambda value: type(value) is str,  # normalized below
    "sent_at": _utc_timestamp,
    "purpose": _one_of((p.value for p in Purpose), optional=True),
    "campaign_id": _optional_plain_id,
    "variant": _optional_plain_id,
    "subject": _text,
    "body": _text,
    "provider": _optional_plain_id,
    "provider_message_id": _optional_plain_id,
    "metadata": _no_metadata,
}
_MESSAGE_REQUIRED: Final = frozenset(
    {"message_id", "channel", "direction", "contact_id", "address", "sent_at"}
)
_EVENT_CHECKS: Final[Mapping[str, _Check]] = {
    "kind": _is_kind,
    "event_id": _plain_id,
    # A bounce's class and status code may be derived from its diagnostic text.
    "type": _one_of(t.value for t in EventType if t is not EventType.BOUNCED),
    "occurred_at": _utc_timestamp,
    "message_id": _plain_id,
    "provider": _optional_plain_id,
    "provider_message_id": _optional_plain_id,
    "provider_event_id": _optional_plain_id,
    "address": _is_none,
    "status_code": _is_none,
    "bounce": _is_none,
    "reason": _is_none,
    "url": _text,
    "user_agent": _text,
    "ip": _text,
    "machine": _is_bool,
    "revenue": _is_none,
    "currency": _is_none,
    "metadata": _no_metadata,
}
_EVENT_REQUIRED: Final = frozenset({"event_id", "type", "occurred_at", "message_id"})


def _strings_if_valid(obj: dict[str, Any], checks: Mapping[str, _Check]) -> int:
    """The keys and string values of *obj* when each field passes its check, else -1."""
    strings = len(obj)
    for key, value in obj.items():
        check = checks.get(key)
        if check is None or not check(value):
            return -1
        strings += type(value) is str
    return strings


def _message_certainly_valid(obj: dict[str, Any]) -> int:
    """How many strings *obj* holds if it is certainly a valid message (see above), else -1."""
    strings = _strings_if_valid(obj, _MESSAGE_CHECKS)
    if strings < 0 or not obj.keys() >= _MESSAGE_REQUIRED:
        return -1
    try:
        normalize_email(obj["address"])  # what structuring does (once per distinct address)
    except InvalidInputError:
        return -1
    return strings


def _event_certainly_valid(obj: dict[str, Any]) -> int:
    """How many strings *obj* holds if it is certainly a valid event (see above), else -1."""
    strings = _strings_if_valid(obj, _EVENT_CHECKS)
    return strings if obj.keys() >= _EVENT_REQUIRED else -1


_set: Final = object.__setattr__  # what the records' own (frozen) __init__ uses
_new: Final = object.__new__
_DIRECTION_OF: Final = {d.value: d for d in Direction}
_PURPOSE_OF: Final = {p.value: p for p in Purpose}
_EVENT_TYPE_OF: Final = {t.value: t for t in EventType}
_fromisoformat: Final = datetime.fromisoformat
_MESSAGE_PLAIN: Final = (
    "campaign_id", "variant", "subject", "body", "provider", "provider_message_id",
)  # fmt: skip
_EVENT_PLAIN: Final = (
    "provider", "provider_message_id", "provider_event_id", "address", "status_code", "bounce",
    "reason", "url", "user_agent", "ip",
)  # fmt: skip


def _trusted_message(obj: dict[str, Any]) -> Message:
    """The :class:`Message` :func:`structure` builds of *obj*, which a check vouched for.

    Every field is set as the record's ``__init__`` sets it, with the values
    structuring gives it; the validators are not run again (the check covered them).
    """
    record: Message = _new(Message)
    _set(record, "message_id", obj["message_id"])
    _set(record, "channel", Channel.EMAIL)
    _set(record, "direction", _DIRECTION_OF[obj["direction"]])
    _set(record, "contact_id", obj["contact_id"])
    _set(record, "address", normalize_email(obj["address"]))
    _set(record, "sent_at", _fromisoformat(obj["sent_at"]))
    purpose = obj.get("purpose")
    _set(record, "purpose", Purpose.MARKETING if purpose is None else _PURPOSE_OF[purpose])
    get = obj.get
    for name in _MESSAGE_PLAIN:
        _set(record, name, get(name))
    _set(record, "metadata", {})
    return record


def _trusted_event(obj: dict[str, Any]) -> Event:
    """The :class:`Event` :func:`structure` builds of *obj*, which a check vouched for.

    As :func:`_trusted_message`.
    """
    record: Event = _new(Event)
    _set(record, "event_id", obj["event_id"])
    _set(record, "type", _EVENT_TYPE_OF[obj["type"]])
    _set(record, "occurred_at", _fromisoformat(obj["occurred_at"]))
    _set(record, "message_id", obj["message_id"])
    get = obj.get
    for name in _EVENT_PLAIN:
        _set(record, name, get(name))
    _set(record, "machine", get("machine") is True)
    _set(record, "revenue", None)
    _set(record, "currency", None)
    _set(record, "metadata", {})
    return record


_CERTAINLY_VALID: Final[
    Mapping[str, tuple[Callable[[dict[str, Any]], int], str, Callable[[dict[str, Any]], Record]]]
] = {
    "message": (_message_certainly_valid, Message.__name__, _trusted_message),
    "event": (_event_certainly_valid, Event.__name__, _trusted_event),
}
"""Per kind: the check, the record class name :func:`check_records` counts under, and
the builder of the record (trusting the check).

A check returns the number of keys and string values of an object it vouches
for: a line without a backslash holding twice as many quotes has no repeated key
(which the standard library refuses and a faster decoder would let pass).
"""


# One check per shape (the keys of a line, in order), generated once: the same
# field checks as _MESSAGE_CHECKS / _EVENT_CHECKS, inlined, so a line costs no
# call per field. tests/test_import_fast.py compares it with the checks above.
_ID = (
    "(type({v}) is str and {v}.isascii() and len({v}) <= _MAX_ID and '\\x00' not in {v}"
    " and {v} != '' and not {v}.isspace())"
)
_INLINE: Final[Mapping[str, Mapping[str, str]]] = {
    "message": {
        "kind": "{v} == 'message'",
        "message_id": _ID,
        "channel": "{v} == 'email'",
        "direction": "(type({v}) is str and {v} in _DIRECTIONS)",
        "contact_id": _ID,
        "address": "type({v}) is str",
        "sent_at": "type({v}) is str and {v}[10:11] == 'T' and len({v}) <= _MAX_TIMESTAMP",
        "purpose": "({v} is None or (type({v}) is str and {v} in _PURPOSES))",
        "campaign_id": "({v} is None or " + _ID + ")",
        "variant": "({v} is None or " + _ID + ")",
        "subject": "({v} is None or type({v}) is str)",
        "body": "({v} is None or type({v}) is str)",
        "provider": "({v} is None or " + _ID + ")",
        "provider_message_id": "({v} is None or " + _ID + ")",
        "metadata": "({v} is None or (type({v}) is dict and not {v}))",
    },
    "event": {
        "kind": "{v} == 'event'",
        "event_id": _ID,
        "type": "(type({v}) is str and {v} in _EVENT_TYPES)",
        "occurred_at": "type({v}) is str and {v}[10:11] == 'T' and len({v}) <= _MAX_TIMESTAMP",
        "message_id": _ID,
        "provider": "({v} is None or " + _ID + ")",
        "provider_message_id": "({v} is None or " + _ID + ")",
        "provider_event_id": "({v} is None or " + _ID + ")",
        "address": "{v} is None",
        "status_code": "{v} is None",
        "bounce": "{v} is None",
        "reason": "{v} is None",
        "url": "({v} is None or type({v}) is str)",
        "user_agent": "({v} is None or type({v}) is str)",
        "ip": "({v} is None or type({v}) is str)",
        "machine": "({v} is None or {v} is True or {v} is False)",
        "revenue": "{v} is None",
        "currency": "{v} is None",
        "metadata": "({v} is None or (type({v}) is dict and not {v}))",
    },
}
"""Per kind and field: the check of :data:`_MESSAGE_CHECKS` / :data:`_EVENT_CHECKS`
as an expression of the value ``{v}`` (timestamps: the cheap part; ``fromisoformat``
follows)."""
_ALWAYS_STR: Final = frozenset(
    {"kind", "message_id", "event_id", "contact_id", "channel", "direction", "type", "address"}
    | {"sent_at", "occurred_at"}
)  # the fields whose check passes for a string only
_TIMESTAMPS: Final = frozenset({"sent_at", "occurred_at"})
_REQUIRED_OF: Final = {"message": _MESSAGE_REQUIRED, "event": _EVENT_REQUIRED}
_NAMESPACE: Final[dict[str, object]] = {
    "_MAX_ID": MAX_ID_LENGTH,
    "_MAX_TIMESTAMP": _MAX_TIMESTAMP,
    "_DIRECTIONS": frozenset(d.value for d in Direction),
    "_PURPOSES": frozenset(p.value for p in Purpose),
    "_EVENT_TYPES": frozenset(t.value for t in EventType if t is not EventType.BOUNCED),
    "_fromisoformat": datetime.fromisoformat,
    "_UTC": UTC,
    "_normalize_email": normalize_email,
    "_InvalidInputError": InvalidInputError,
    # What the builders use: the values of _trusted_message / _trusted_event.
    "_new": object.__new__,
    "Message": Message,
    "Event": Event,
    "_EMAIL": Channel.EMAIL,
    "_MARKETING": Purpose.MARKETING,
    "_DIRECTION_OF": {d.value: d for d in Direction},
    "_PURPOSE_OF": {p.value: p for p in Purpose},
    "_EVENT_TYPE_OF": {t.value: t for t in EventType},
    # A record's slots, set as its frozen __init__ does (object.__setattr__ finds the
    # same descriptors by name).
    **{
        f"_set_{cls.__name__}_{f.name}": cls.__dict__[f.name].__set__
        for cls in (Message, Event)
        for f in attrs.fields(cls)
    },
}

_ShapeCheck = tuple[Callable[[dict[str, Any]], int], str, Callable[[dict[str, Any]], Record]]
_SHAPES: Final[dict[tuple[Any, ...], _ShapeCheck]] = {}
_MAX_SHAPES: Final = 4096
"""Shapes remembered (a file has a handful; a hostile one cannot grow the table past this)."""


def _shape_check(keys: tuple[Any, ...]) -> _ShapeCheck | None:
    """The check of objects with these keys, in this order (``None``: never certainly valid).

    Generated code, equal to :data:`_CERTAINLY_VALID`'s check of the kind whose
    fields the keys are: ``-1``, or the number of keys and string values.
    """
    found = _SHAPES.get(keys)
    if found is not None:
        return found
    check = _compile_shape(keys)
    # Only shapes of known fields are remembered: lines of other shapes (which take
    # the general path anyway) cannot crowd them out.
    if check is not None and len(_SHAPES) < _MAX_SHAPES:
        _SHAPES[keys] = check
    return check


def _compile_shape(keys: tuple[Any, ...]) -> _ShapeCheck | None:
    for kind, inline in _INLINE.items():
        if "kind" in keys and set(keys) <= inline.keys() and set(keys) >= _REQUIRED_OF[kind]:
            break
    else:
        return None
    names = [f"v{i}" for i in range(len(keys))]
    conditions = [inline[key].format(v=name) for key, name in zip(keys, names, strict=True)]
    strings = [f"(type({n}) is str)" for k, n in zip(keys, names, strict=True)]
    constant = len(keys) + sum(k in _ALWAYS_STR for k in keys)
    counted = [s for k, s in zip(keys, strings, strict=True) if k not in _ALWAYS_STR]
    body = [
        "def check(obj):",
        f"    {', '.join(names)}, = obj.values()",
        f"    if not ({' and '.join(conditions)}):",
        "        return -1",
    ]
    for key, name in zip(keys, names, strict=True):
        if key in _TIMESTAMPS:
            body += [
                "    try:",
                f"        if _fromisoformat({name}).tzinfo is not _UTC:",
                "            return -1",
                "    except ValueError:",
                "        return -1",
            ]
        elif key == "address" and kind == "message":
            body += [
                "    try:",
                f"        _normalize_email({name})  # once per distinct address",
                "    except _InvalidInputError:",
                "        return -1",
            ]
    body.append(f"    return {' + '.join([str(constant), *counted])}")
    body += _builder_code(kind, dict(zip(keys, names, strict=True)))
    namespace = dict(_NAMESPACE)
    exec("\n".join(body), namespace)  # noqa: S102 - code built above from fixed parts
    return namespace["check"], _CERTAINLY_VALID[kind][1], namespace["build"]  # type: ignore[return-value]


def _builder_code(kind: str, value_of: Mapping[str, str]) -> list[str]:
    """The code of ``build(obj)``: :func:`_trusted_message` or :func:`_trusted_event`, per shape.

    The values are unpacked once and each slot is set through its descriptor.
    *value_of* names the variable holding each key's value.
    """
    cls = Message if kind == "message" else Event
    given = {key: value_of.get(key) for key in (f.name for f in attrs.fields(cls))}
    code: dict[str, str] = {}
    if kind == "message":
        purpose = given["purpose"]
        code = {
            "channel": "_EMAIL",
            "direction": f"_DIRECTION_OF[{given['direction']}]",
            "address": f"_normalize_email({given['address']})",
            "sent_at": f"_fromisoformat({given['sent_at']})",
            "purpose": "_MARKETING"
            if purpose is None
            else f"_MARKETING if {purpose} is None else _PURPOSE_OF[{purpose}]",
        }
    else:
        machine = given["machine"]
        code = {
            "type": f"_EVENT_TYPE_OF[{given['type']}]",
            "occurred_at": f"_fromisoformat({given['occurred_at']})",
            "machine": "False" if machine is None else f"{machine} is True",
            "revenue": "None",
            "currency": "None",
        }
    code["metadata"] = "{}"
    lines = [
        "",
        "def build(obj):",
        f"    {', '.join(value_of.values())}, = obj.values()",
        f"    record = _new({cls.__name__})",
    ]
    for field, value in given.items():
        lines.append(f"    _set_{cls.__name__}_{field}(record, {code.get(field, value)})")
    lines.append("    return record")
    return lines


_OUT: Final = cattrs.Converter()
_OUT.register_unstructure_hook(datetime, format_timestamp)
_OUT.register_unstructure_hook(Decimal, str)
_OUT.register_unstructure_hook(date, date.isoformat)


def _json_type(value: object) -> str:
    """Name a value's JSON type without showing the value (it may be personal)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float | Decimal):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, list | tuple):
        return "array"
    return type(value).__name__


def _translate(exc: BaseException, cls: type) -> InvalidInputError:
    """Turn a cattrs validation failure into our error naming the field."""
    if isinstance(exc, ClassValidationError):
        # Report one failure: an unknown key first (often a misspelt field, which
        # also shows up as a missing one), else the first in field order.
        inner = sorted(exc.exceptions, key=lambda e: not isinstance(e, ForbiddenExtraKeysError))
        if inner:
            return _translate_leaf(inner[0], cls)
    return _translate_leaf(exc, cls)


def _translate_leaf(exc: BaseException, cls: type) -> InvalidInputError:
    field = None
    for note in getattr(exc, "__notes__", ()):
        name = getattr(note, "name", None)
        if isinstance(name, str):
            field = name
            break
    if isinstance(exc, ClassValidationError):
        return _translate(exc, cls)
    if isinstance(exc, ForbiddenExtraKeysError):
        names = sorted(name for name in map(_key_name, exc.extra_fields) if name is not None)
        custom = "properties" if cls is Activity else "metadata"
        if len(names) == len(exc.extra_fields):
            return PayloadError(
                field=names[0], reason=f"unknown key; put custom data in {custom!r}"
            )
        return PayloadError(
            field="<record>",
            reason=f"an unknown key (its name is not shown); put custom data in {custom!r}",
        )
    if isinstance(exc, InvalidInputError):
        if exc.field == "<value>" and field is not None:
            return type(exc)(field=field, reason=exc.reason)
        return exc
    if isinstance(exc, KeyError) and field is not None:
        return PayloadError(field=field, reason="required")
    name = field or "<record>"
    return PayloadError(field=name, reason=f"invalid value ({type(exc).__name__})")


# --------------------------------------------------------------------------- normalizing


_CHANNELS: Final[Mapping[str, Channel]] = {c.value: c for c in Channel}


def _normalize_address(channel: object, address: object, region: str = "JP") -> object:
    """Bring a message's address to the canonical form of its channel."""
    if not isinstance(address, str) or not isinstance(channel, str):
        return address  # the model reports the types
    channel = _CHANNELS.get(channel) or _CHANNELS.get(channel.strip().lower())
    if channel is None:
        return address  # the converter reports the channel
    try:
        if channel is Channel.EMAIL:
            return normalize_email(address)
        if channel in (Channel.SMS, Channel.VOICE, Channel.WHATSAPP):
            return normalize_phone(address, region)
        if channel is Channel.LINE:
            return normalize_line_user_id(address)
    except InvalidInputError as exc:
        raise NormalizationError(field="address", reason=exc.reason) from None
    return address.strip()


def _normalize_event_address(address: object, region: str = "JP") -> object:
    """Normalize an event's address by its shape (events carry no channel)."""
    if not isinstance(address, str):
        return address
    text = address.strip()
    try:
        if "@" in text:
            return normalize_email(text)
        if text[:1] == "U" and len(text) == 33:
            return normalize_line_user_id(text)
        if text[:1] == "+" or text[:1].isdigit():
            return normalize_phone(text, region)
    except InvalidInputError as exc:
        raise NormalizationError(field="address", reason=exc.reason) from None
    return text


def _prepare(
    kind: str, data: dict[str, Any], *, source: Mapping[str, Any], region: str = "JP"
) -> None:
    """Normalize fields that depend on each other, in place, before structuring.

    *source* is the object *data* was taken from (with its explicit nulls).
    """
    if kind == "message":
        if "address" in data:
            data["address"] = _normalize_address(data.get("channel"), data["address"], region)
    elif kind == "event":
        if data.get("address") is not None:
            data["address"] = _normalize_event_address(data["address"], region)
        _derive_bounce(data, source)
    elif kind == "activity":
        name = data.get("name")
        if isinstance(name, str):
            data["name"] = name.strip().lower()


def _explicit_null(source: Mapping[str, Any], key: str) -> bool:
    return key in source and source[key] is None


def _derive_bounce(data: dict[str, Any], source: Mapping[str, Any]) -> None:
    """Fill an event's status code and bounce class from its diagnostic when absent.

    An explicit null in *source* says "unknown, do not derive".
    """
    reason = data.get("reason")
    status = data.get("status_code")
    if status is None and isinstance(reason, str) and not _explicit_null(source, "status_code"):
        enhanced = parse_smtp_reply(reason).enhanced
        if enhanced is not None:
            data["status_code"] = status = enhanced
    if (
        data.get("type") == EventType.BOUNCED.value
        and data.get("bounce") is None
        and not _explicit_null(source, "bounce")
        and (status is None or isinstance(status, str))
    ):
        data["bounce"] = classify_bounce(status, reason if isinstance(reason, str) else None).value


# --------------------------------------------------------------------------- public API


def structure(
    obj: Mapping[str, Any], *, default_tz: tzinfo | str | None = None, region: str = "JP"
) -> Record:
    """Build a canonical record from a decoded JSON object.

    Args:
        obj: The object; its ``kind`` key says which record it is.
        default_tz: The zone for naive timestamps (a :class:`~datetime.tzinfo` or an
            IANA name such as ``"Asia/Tokyo"``); without it naive timestamps are an error.
        region: The ISO 3166-1 alpha-2 region of phone numbers written without a
            ``+`` country code (``"US"``, ``"GB"``; default ``"JP"``).

    .. versionchanged:: 0.4.0
       The *region* argument.

    Returns:
        A :class:`~commhistory.Message`, :class:`~commhistory.Event`,
        :class:`~commhistory.ConsentEvent` or :class:`~commhistory.Activity`.

    Raises:
        PayloadError: A key is unknown or missing, or a value has the wrong type.
        NormalizationError: A value (address, timestamp, status code, currency) is invalid.
    """
    kind = obj.get("kind") if type(obj) is dict else None
    if type(kind) is str:
        build = _builders(default_tz).get(kind)
        if build is not None:
            data = {
                key: value for key, value in obj.items() if key != "kind" and value is not None
            }
            try:
                _prepare(kind, data, source=obj, region=region)
                return build(data)
            except Exception:  # noqa: S110 - the detailed path says what is wrong
                pass
    return _structure_detailed(obj, default_tz=default_tz, region=region)


def _structure_detailed(
    obj: Mapping[str, Any], *, default_tz: tzinfo | str | None, region: str
) -> Record:
    """:func:`structure` through the detailed converter: slower, and says what is wrong."""
    if not isinstance(obj, Mapping):
        raise PayloadError(field="<record>", reason=f"expected an object, got {_json_type(obj)}")
    kind = obj.get("kind")
    if kind is None:
        raise PayloadError(field="kind", reason=f"required: one of {_KIND_NAMES}")
    cls = KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise PayloadError(field="kind", reason=f"expected one of: {_KIND_NAMES}")
    data = {key: value for key, value in obj.items() if key != "kind" and value is not None}
    # An explicit null says "unknown, do not derive": it keeps a record without a
    # derived status code or bounce class the same through dumps() and loads().
    _prepare(kind, data, source=obj, region=region)
    try:
        return _converter(default_tz).structure(data, cls)
    except InvalidInputError:
        raise
    except (ClassValidationError, ForbiddenExtraKeysError) as exc:
        raise _translate(exc, cls) from None


def unstructure(record: Record) -> dict[str, Any]:
    """Turn a record into a JSON-ready dict: ``kind`` first, unset fields left out."""
    cls = type(record)
    kind = _KIND_OF.get(cls)
    if kind is None:
        raise TypeError(f"not a canonical record: {cls.__name__}")
    out: dict[str, Any] = {"kind": kind}
    for field in attrs.fields(cls):
        value = getattr(record, field.name)
        if value is None or (field.name in _MAPPINGS and not value):
            continue
        if field.name == "machine" and value is False:
            continue
        out[field.name] = _OUT.unstructure(value)
    if isinstance(record, Event):
        # Say "unknown" where reading the line back would otherwise derive a value.
        if (
            record.status_code is None
            and record.reason is not None
            and parse_smtp_reply(record.reason).enhanced is not None
        ):
            out["status_code"] = None
        if record.type is EventType.BOUNCED and record.bounce is None:
            out["bounce"] = None
    return out


def loads(
    line: str | bytes, *, default_tz: tzinfo | str | None = None, region: str = "JP"
) -> Record:
    """Parse one canonical JSON line into a record.

    *default_tz* and *region* are as in :func:`structure`.

    Raises:
        PayloadError: The line is not a JSON object or does not fit the model.
        NormalizationError: A value in it is invalid.
    """
    return structure(_decode(line), default_tz=default_tz, region=region)


def _decode(line: str | bytes) -> Any:
    """Decode one JSON line: with ``orjson`` when it can, else with :func:`_decode_std`.

    ``orjson`` differs from :mod:`json` on a few inputs: it keeps the last of
    repeated keys, reads integers past 64 bits as floats, refuses ``NaN``, lone
    surrogates and a BOM. So its result is used only for a line without a
    backslash, starting with ``{``, holding no float, whose decoded strings (keys
    included) are as many as its quoted strings (a repeated key would be missing);
    any other line, and every error, goes to the standard library.
    """
    if _orjson_loads is not None and type(line) is str and line[:1] == "{" and "\\" not in line:
        try:
            obj = _orjson_loads(line)
        except ValueError:
            pass
        else:
            if type(obj) is dict:
                # The keys and string values, when no value is a float or a container.
                kinds = [*map(type, obj.values())]
                if dict in kinds or list in kinds or float in kinds:
                    strings = _strings_without_floats(obj)
                else:
                    strings = len(kinds) + kinds.count(str)
                if strings * 2 == line.count('"'):
                    return obj
    return _decode_std(line)


def _strings_without_floats(obj: dict[str, Any]) -> int:
    """Count the keys and string values in *obj*, nested ones included; -1 if it holds a float.

    Also -1 past :data:`MAX_NESTING` levels (the standard library then says why).
    """
    count = 0
    stack: list[tuple[Any, int]] = [(obj, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_NESTING:
            return -1
        if type(item) is dict:
            count += len(item)
            values: Iterable[Any] = item.values()
        else:
            values = item
        for value in values:
            kind = type(value)
            if kind is str:
                count += 1
            elif kind is dict or kind is list:
                stack.append((value, depth + 1))
            elif kind is float:
                return -1
    return count


def _decode_std(line: str | bytes) -> Any:
    """Decode one JSON line with the standard library, refusing repeated keys."""
    try:
        if type(line) is str and line[:1] != "\ufeff":
            return _STD_DECODER.decode(line)  # what json.loads does, minus a decoder a call
        return json.loads(line, object_pairs_hook=_unique_keys)
    except InvalidInputError:
        raise
    except json.JSONDecodeError as exc:
        # exc.msg describes the syntax problem without quoting the document.
        raise PayloadError(
            field="<line>", reason=f"invalid JSON: {exc.msg} at column {exc.colno}"
        ) from None
    except UnicodeDecodeError:
        raise PayloadError(field="<line>", reason="not valid UTF-8") from None
    except RecursionError:
        raise PayloadError(
            field="<line>", reason=f"invalid JSON: nested more than {MAX_NESTING} levels"
        ) from None
    except ValueError:
        # Python refuses to convert integers of more than 4,300 digits.
        raise PayloadError(
            field="<line>", reason="invalid JSON: a number has too many digits"
        ) from None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Build a JSON object, refusing a key that appears twice (the last would win silently)."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                name = _key_name(key)
                if name is None:
                    raise PayloadError(
                        field="<line>", reason="a key appears more than once in an object"
                    )
                raise PayloadError(field="<line>", reason=f"duplicate key {name!r}")
            seen.add(key)
    return obj


_STD_DECODER: Final = json.JSONDecoder(object_pairs_hook=_unique_keys)


def dumps(record: Record) -> str:
    """Serialize a record as one canonical JSON line (no trailing newline)."""
    return json.dumps(unstructure(record), ensure_ascii=False, separators=(",", ":"))


@attrs.frozen(kw_only=True)
class ParsedLine:
    """One line of an input file: the record it holds, or why it holds none.

    Attributes:
        line: The 1-based line number (for CSV, the row's first line in the file).
        raw: The line's raw text, kept for dead letters. Personal: kept out of
            ``repr()``. ``None`` when a valid record was not read from a line of text
            (a webhook adapter builds records from decoded JSON and spares the
            serialization): a store that must keep it serializes the record.
        record: The canonical record, when the line is valid.
        error: Why the line is invalid, when it is not.
    """

    line: int
    raw: str | None = attrs.field(repr=False)
    record: Record | None = None
    error: InvalidInputError | None = None

    @property
    def ok(self) -> bool:
        """Whether the line holds a valid record."""
        return self.record is not None


_set_line: Final = ParsedLine.__dict__["line"].__set__
_set_raw: Final = ParsedLine.__dict__["raw"].__set__
_set_record: Final = ParsedLine.__dict__["record"].__set__
_set_error: Final = ParsedLine.__dict__["error"].__set__


def _valid_line(number: int, raw: str, record: Record) -> ParsedLine:
    """``ParsedLine(line=number, raw=raw, record=record)``, its slots set directly."""
    parsed: ParsedLine = _new(ParsedLine)
    _set_line(parsed, number)
    _set_raw(parsed, raw)
    _set_record(parsed, record)
    _set_error(parsed, None)
    return parsed


def read_records(
    path: str | os.PathLike[str],
    *,
    format: FileFormat | None = None,
    default_tz: tzinfo | str | None = None,
    mapping: Mapping[str, str] | None = None,
    kind: str | None = None,
    encoding: str = "utf-8-sig",
    progress: Callable[[int], None] | None = None,
    region: str = "JP",
) -> Iterator[ParsedLine]:
    """Stream the records of a canonical ``.jsonl`` file or a legacy ``.csv`` sheet.

    Lines are read one at a time, so memory does not grow with the file. Blank
    lines are skipped; every other line yields exactly one :class:`ParsedLine`,
    valid or not, so nothing is silently dropped. Lines are decoded one by one:
    a line that is not valid in *encoding* is rejected on its own and the rest
    of the file is still read. A CSV cell longer than :data:`MAX_CELL_LENGTH`
    characters, or a quoted cell never closed, rejects the line it starts on and
    reading resumes on the next line.

    Args:
        path: The file.
        format: ``"jsonl"`` or ``"csv"``; by default taken from the file's suffix.
        default_tz: The zone for naive timestamps (legacy sheets rarely carry offsets).
        mapping: CSV only: ``{column: field}`` renames a column to a record field,
            ``{column: "metadata.key"}`` puts it in ``metadata``,
            ``{column: "attributes.name"}`` in a ``contact`` row's attributes,
            ``{column: ""}`` ignores it. Unmapped columns must already be field names.
        kind: CSV only: the record kind of rows without a ``kind`` column
            (default ``"message"``).
        encoding: The file's text encoding (``"cp932"`` for Shift_JIS sheets).
        progress: Called with the number of bytes read so far, now and then.
        region: The ISO 3166-1 alpha-2 region of phone numbers written without a
            ``+`` country code (``"US"``, ``"GB"``; default ``"JP"``).

    Raises:
        NormalizationError: ``field="region"``: *region* is not a region code.
        PayloadError: The format is unknown, a ``utf-16`` or ``utf-32`` file has no
            byte order mark, or a CSV header is unusable or undecodable (these
            concern the whole file, not one line).
        LookupError: The encoding is unknown.
        OSError: The file cannot be opened.
    """
    path = Path(path)
    fmt = format or _format_of(path)
    if kind is not None and kind not in KINDS:
        raise PayloadError(field="kind", reason=f"expected one of: {_KIND_NAMES}")
    _check_region(region)
    codec = codecs.lookup(encoding)
    with path.open("rb") as handle:
        _check_byte_order_mark(handle, codec.name, encoding)
        text = io.TextIOWrapper(handle, encoding=encoding, errors=_MARK_ERRORS, newline="")
        try:
            if fmt == "jsonl" and codec.name in _UTF8:
                yield from _read_jsonl_utf8(handle, default_tz, progress, encoding, region)
            elif fmt == "jsonl":
                yield from _read_jsonl(text, default_tz, handle, progress, encoding, region)
            else:
                yield from _read_csv(
                    text, default_tz, mapping or {}, kind, handle, progress, encoding, region
                )
        except UnicodeError:
            raise PayloadError(
                field="<file>", reason=f"cannot be decoded as {encoding}; pass the encoding"
            ) from None


def check_records(
    path: str | os.PathLike[str],
    *,
    counts: dict[str, int],
    format: FileFormat | None = None,
    default_tz: tzinfo | str | None = None,
    mapping: Mapping[str, str] | None = None,
    kind: str | None = None,
    encoding: str = "utf-8-sig",
    progress: Callable[[int], None] | None = None,
    region: str = "JP",
) -> Iterator[ParsedLine]:
    """:func:`read_records` for checking a file: certainly valid lines are only counted.

    A canonical ``.jsonl`` line holding a message or an event of the common,
    canonical shape (exact enum values, plain ids, UTC timestamps, an email
    address, no metadata or revenue) is known to be valid without building its
    record: it is counted in *counts* under its record class name (``"Message"``,
    ``"Event"``) and not yielded. Every other line is yielded exactly as
    :func:`read_records` yields it, valid or not. So the valid lines are those
    counted plus the yielded lines holding a record, and the errors are
    :func:`read_records`'s, line for line.

    Args:
        path: The file.
        counts: Valid lines not yielded, by record class name (added to).
        format: As for :func:`read_records`, as are the other arguments.
        default_tz: The zone for naive timestamps.
        mapping: CSV only: ``{column: field}``.
        kind: CSV only: the record kind of rows without a ``kind`` column.
        encoding: The file's text encoding.
        progress: Called with the number of bytes read so far, now and then.
        region: The region national phone numbers are read in.

    Raises:
        PayloadError: As :func:`read_records`.
        LookupError: The encoding is unknown.
        OSError: The file cannot be opened.

    .. versionadded:: 0.4.0
    """
    fmt = format or _format_of(Path(path))
    if fmt != "jsonl":
        yield from read_records(
            path, format=fmt, default_tz=default_tz, mapping=mapping, kind=kind,
            encoding=encoding, progress=progress, region=region,
        )  # fmt: skip
        return
    if kind is not None and kind not in KINDS:
        raise PayloadError(field="kind", reason=f"expected one of: {_KIND_NAMES}")
    _check_region(region)
    codec = codecs.lookup(encoding)
    with Path(path).open("rb") as handle:
        _check_byte_order_mark(handle, codec.name, encoding)
        text = io.TextIOWrapper(handle, encoding=encoding, errors=_MARK_ERRORS, newline="")
        try:
            if codec.name in _UTF8:
                yield from _read_jsonl_utf8(handle, default_tz, progress, encoding, region, counts)
            else:
                yield from _read_jsonl(
                    text, default_tz, handle, progress, encoding, region, counts
                )
        except UnicodeError:
            raise PayloadError(
                field="<file>", reason=f"cannot be decoded as {encoding}; pass the encoding"
            ) from None


_MARK_ERRORS: Final = "commhistory.mark-undecodable"


def _mark_undecodable(exc: UnicodeError) -> tuple[str, int]:
    """Decode each undecodable byte as a lone surrogate (U+DC00 + byte).

    A strict decoder never produces a lone surrogate, so one in decoded text marks
    a line that was not valid in its encoding; that line alone is rejected.
    """
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    bad = exc.object[exc.start : exc.end]
    return "".join(chr(0xDC00 + byte) for byte in bad), exc.end


codecs.register_error(_MARK_ERRORS, _mark_undecodable)

_BOMS: Final = {
    "utf-16": (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE),
    "utf-32": (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE),
}


def _check_byte_order_mark(handle: IO[bytes], codec: str, encoding: str) -> None:
    """Refuse a ``utf-16``/``utf-32`` file without a BOM: its byte order is unknown."""
    boms = _BOMS.get(codec)
    if boms is None:
        return
    head = handle.read(4)
    handle.seek(0)
    if head and not head.startswith(boms):
        raise PayloadError(
            field="<file>",
            reason=f"{encoding} without a byte order mark; pass {codec}-le or {codec}-be",
        )


def _undecodable(text: str) -> bool:
    """Whether decoded text holds bytes that were not valid in the file's encoding."""
    return not text.isascii() and _SURROGATE.search(text) is not None


def _shown(text: str) -> str:
    r"""Text with each undecodable byte written as ``\xNN`` (a dead letter's raw text)."""
    return _SURROGATE.sub(lambda m: f"\\x{ord(m.group()) - 0xDC00:02x}", text)


def _format_of(path: Path) -> FileFormat:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if suffix in (".csv", ".tsv"):
        return "csv"
    raise PayloadError(
        field="<file>", reason=f"unknown file type {suffix or '(none)'!r}; expected .jsonl or .csv"
    )


_PROGRESS_EVERY: Final = 4096


def _check_region(region: str) -> None:
    """Refuse a phone region phonenumbers does not know (``NormalizationError``, field region)."""
    normalize_phone("+81 90 1234 5678", region)  # a valid number: only the region can fail


def _read_jsonl(  # noqa: PLR0917 - private; arguments mirror read_records
    text: IO[str],
    default_tz: tzinfo | str | None,
    handle: IO[bytes],
    progress: Callable[[int], None] | None,
    encoding: str,
    region: str,
    counts: dict[str, int] | None = None,
) -> Iterator[ParsedLine]:
    """Read JSON lines: each non-blank line's record, or why it holds none (:func:`_line`)."""
    for number, raw in enumerate(text, start=1):
        if progress is not None and number % _PROGRESS_EVERY == 0:
            progress(handle.tell())
        parsed = _line(number, raw.rstrip("\r\n"), counts, default_tz, encoding, region)
        if parsed is not None:
            yield parsed
    if progress is not None:
        progress(handle.tell())


def _line(  # noqa: PLR0917 - private; arguments mirror read_records
    number: int,
    line: str,
    counts: dict[str, int] | None,
    default_tz: tzinfo | str | None,
    encoding: str,
    region: str,
) -> ParsedLine | None:
    """One line of text (without its line ending): its parsed line, or ``None``.

    A line a shape check (:func:`_shape_check`) vouches for is built by its
    trusted builder, or only counted in *counts* when given
    (:func:`check_records`; ``None`` is returned). Only a line without lone
    surrogates (orjson refuses a line holding one; without orjson they are looked
    for first) and without a backslash (so no escape can make one) is checked;
    its quotes must be twice the strings the check counted (no repeated key,
    which the standard library refuses and orjson lets pass). Every other line
    goes to :func:`_slow_line`.
    """
    if line[:1] == "{" and "\\" not in line:
        fast_loads = _orjson_loads
        try:
            if fast_loads is not None:
                obj = fast_loads(line)  # refuses a line holding a lone surrogate
            elif line.isascii() or _SURROGATE.search(line) is None:
                obj = _STD_DECODER.decode(line)
            else:
                obj = None
        except Exception:
            obj = None
        if type(obj) is dict:
            keys = tuple(obj)
            found = _SHAPES.get(keys) or _shape_check(keys)
            if found is not None and found[0](obj) * 2 == line.count('"'):
                if counts is None:
                    return _valid_line(number, line, found[2](obj))
                counts[found[1]] = counts.get(found[1], 0) + 1
                return None
    return _slow_line(number, line, default_tz, encoding, region)


def _slow_line(
    number: int, line: str, default_tz: tzinfo | str | None, encoding: str, region: str
) -> ParsedLine | None:
    """A line no check vouched for, structured in full (``None``: a blank line).

    A line holding undecodable bytes is rejected before it is parsed.
    """
    if not line or (line[0].isspace() and not line.strip()):
        return None  # blank
    if not line.isascii() and _SURROGATE.search(line) is not None:
        error = PayloadError(
            field="<line>", reason=f"cannot be decoded as {encoding}; pass the encoding"
        )
        return ParsedLine(line=number, raw=_shown(line), error=error)
    try:
        record = loads(line, default_tz=default_tz, region=region)
    except InvalidInputError as exc:
        return ParsedLine(line=number, raw=line, error=exc)
    return ParsedLine(line=number, raw=line, record=record)


_CHUNK: Final = 1 << 20
"""Bytes read at a time by :func:`_read_jsonl_utf8`."""
_UTF8: Final = frozenset({"utf-8", "utf-8-sig"})
"""The codecs (:func:`codecs.lookup` names) :func:`_read_jsonl_utf8` reads."""


def _read_jsonl_utf8(  # noqa: PLR0917 - private; arguments mirror read_records
    handle: IO[bytes],
    default_tz: tzinfo | str | None,
    progress: Callable[[int], None] | None,
    encoding: str,
    region: str,
    counts: dict[str, int] | None = None,
) -> Iterator[ParsedLine]:
    r""":func:`_read_jsonl` for a UTF-8 file, read in chunks of bytes, to the same lines.

    The lines are the text reader's: ``\n``, ``\r\n`` and ``\r`` end a line
    (:meth:`bytes.splitlines` splits at those only, and a chunk is cut after its
    last ``\n``, so no ``\r\n`` is split), numbered alike; a ``utf-8-sig`` file's
    byte order mark is skipped, as its decoder does. With orjson, a line starting
    with ``{`` and without a backslash is decoded from its bytes (orjson refuses
    bytes that are not UTF-8, as it refuses lone surrogates in text); a line a
    shape check vouches for is not decoded to text unless its record is built.
    Every other line is decoded to text (undecodable bytes marked, as the text
    reader does) and read as :func:`_read_jsonl` reads it.
    """
    fast_loads = _orjson_loads
    shapes = _SHAPES
    mark = _MARK_ERRORS
    number = 0
    rest = b""
    if codecs.lookup(encoding).name == "utf-8-sig" and handle.read(3) != codecs.BOM_UTF8:
        handle.seek(0)
    while True:
        chunk = handle.read(_CHUNK)
        if chunk:
            cut = chunk.rfind(b"\n") + 1
            if not cut:
                rest += chunk
                continue
            block = rest + chunk[:cut] if rest else chunk[:cut]
            rest = chunk[cut:]
        elif rest:
            block, rest = rest, b""
        else:
            break
        plain = b"\\" not in block
        for line in block.splitlines():
            number += 1
            if fast_loads is None or line[:1] != b"{" or not (plain or b"\\" not in line):
                parsed = _line(
                    number, line.decode("utf-8", mark), counts, default_tz, encoding, region
                )
                if parsed is not None:
                    yield parsed
                continue
            try:
                obj = fast_loads(line)
            except Exception:
                obj = None
            if type(obj) is dict:
                keys = tuple(obj)
                found = shapes.get(keys) or _shape_check(keys)
                if found is not None and found[0](obj) * 2 == line.count(b'"'):
                    if counts is None:
                        yield _valid_line(number, line.decode(), found[2](obj))
                    else:
                        counts[found[1]] = counts.get(found[1], 0) + 1
                    continue
            # orjson would answer as it did on the line's text: structure it in full.
            parsed = _slow_line(number, line.decode("utf-8", mark), default_tz, encoding, region)
            if parsed is not None:
                yield parsed
        if progress is not None:
            progress(handle.tell() - len(rest))


_CSV_FIELDS: Final = frozenset(
    {"kind"} | {f.name for cls in KINDS.values() for f in attrs.fields(cls)} - _MAPPINGS
)
_TRUE: Final = frozenset({"true", "1", "yes", "y", "t"})
_FALSE: Final = frozenset({"false", "0", "no", "n", "f", ""})


def _read_csv(  # noqa: PLR0917 - private; arguments mirror read_records
    text: IO[str],
    default_tz: tzinfo | str | None,
    mapping: Mapping[str, str],
    kind: str | None,
    handle: IO[bytes],
    progress: Callable[[int], None] | None,
    encoding: str,
    region: str,
) -> Iterator[ParsedLine]:
    sample = text.readline()
    if _undecodable(sample):
        raise PayloadError(
            field="<header>", reason=f"cannot be decoded as {encoding}; pass the encoding"
        )
    dialect: type[csv.Dialect] = (
        csv.excel_tab if sample.count("\t") > sample.count(",") else csv.excel
    )
    try:
        header = next(csv.reader([sample], dialect), None)
    except csv.Error:
        header = None
    if not header:
        raise PayloadError(field="<header>", reason="the CSV file has no header row")
    columns = _csv_columns(header, mapping)
    lines = _Lines(text, first=2)  # the header was line 1
    rows = csv.reader(lines, dialect)
    while True:
        lines.start_row()
        try:
            row = next(rows)
        except StopIteration:
            break
        except csv.Error as exc:
            yield _csv_reject(lines, _csv_error_reason(exc))
            rows = csv.reader(lines, dialect)
            continue
        number = lines.row_start
        if progress is not None and number % _PROGRESS_EVERY == 0:
            progress(handle.tell())
        if lines.ended_in_quotes:
            yield _csv_reject(lines, "a quoted cell opened on this line is never closed")
            rows = csv.reader(lines, dialect)
            continue
        if not any(cell.strip() for cell in row):
            continue
        if any(_undecodable(line) for line in lines.row):
            error = PayloadError(
                field="<line>", reason=f"cannot be decoded as {encoding}; pass the encoding"
            )
            yield ParsedLine(
                line=number, raw=_shown("".join(lines.row).rstrip("\r\n")), error=error
            )
            continue
        raw = _csv_raw(row, dialect)
        try:
            obj = _csv_object(row, columns, kind)
            yield ParsedLine(
                line=number, raw=raw, record=structure(obj, default_tz=default_tz, region=region)
            )
        except InvalidInputError as exc:
            yield ParsedLine(line=number, raw=raw, error=exc)
    if progress is not None:
        progress(handle.tell())


def _csv_columns(header: list[str], mapping: Mapping[str, str]) -> list[str]:
    columns = [_map_column(col.strip(), mapping) for col in header]
    seen: set[str] = set()
    for col in columns:
        if not col:
            continue
        if col in seen:
            raise PayloadError(field=col, reason="more than one column maps to this field")
        if col not in _CSV_FIELDS and not col.startswith(
            ("metadata.", "properties.", "attributes.")
        ):
            raise PayloadError(
                field=col,
                reason="unknown column; map it to a field with --map COLUMN=FIELD, "
                "to metadata with COLUMN=metadata.KEY, or ignore it with COLUMN=",
            )
        seen.add(col)
    return columns


def _csv_error_reason(exc: csv.Error) -> str:
    """Say why the csv module refused a row, in our words (its messages never quote data)."""
    if "field larger than field limit" in str(exc):
        return f"a cell is longer than {MAX_CELL_LENGTH} characters"
    return f"not a valid CSV row ({exc})"


def _csv_reject(lines: _Lines, reason: str) -> ParsedLine:
    """Reject the first line of the row being read and read its other lines again.

    An unclosed quote or an oversized cell would otherwise swallow the lines that
    follow; only the line it starts on is rejected, and reading resumes after it.
    """
    first, rest = lines.row[0], lines.row[1:]
    lines.replay(rest)
    error = PayloadError(field="<row>", reason=reason)
    return ParsedLine(line=lines.row_start, raw=_shown(first.rstrip("\r\n")), error=error)


class _Lines:
    """The lines ``csv.reader`` reads, remembering those of the row being read.

    Lines handed back with :meth:`replay` are read again, so a row the reader
    could not finish is rejected on its first line and the rest re-read.
    """

    def __init__(self, text: IO[str], *, first: int) -> None:
        self._text = iter(text)
        self._pending: deque[str] = deque()
        self._next = first  # the number of the next line handed out
        self.row: list[str] = []
        self.row_start = first
        self.ended_in_quotes = False

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        line = self._pending.popleft() if self._pending else next(self._text, None)
        if line is None:
            # The reader asks for more of a row only while inside a quoted cell.
            self.ended_in_quotes = bool(self.row)
            raise StopIteration
        if not self.row:
            self.row_start = self._next
        self.row.append(line)
        self._next += 1
        return line

    def start_row(self) -> None:
        """Forget the lines of the previous row."""
        self.row = []
        self.ended_in_quotes = False

    def replay(self, lines: list[str]) -> None:
        """Hand *lines* out again, first of all."""
        self._pending.extendleft(reversed(lines))
        self._next -= len(lines)


def _map_column(column: str, mapping: Mapping[str, str]) -> str:
    return mapping.get(column, column).strip()


def _csv_raw(row: list[str], dialect: type[csv.Dialect]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, dialect, lineterminator="").writerow(row)
    return buffer.getvalue()


def _csv_object(row: list[str], columns: list[str], kind: str | None) -> dict[str, Any]:
    if len(row) > len(columns):
        raise PayloadError(field="<row>", reason=f"{len(row)} cells for {len(columns)} columns")
    obj: dict[str, Any] = {}
    metadata: dict[str, str] = {}
    properties: dict[str, str] = {}
    attributes: dict[str, str] = {}
    for column, cell in zip(columns, row, strict=False):
        value = cell.strip()
        if not column or value == "":
            continue
        if column.startswith("metadata."):
            metadata[column.removeprefix("metadata.")] = value
        elif column.startswith("properties."):
            properties[column.removeprefix("properties.")] = value
        elif column.startswith("attributes."):
            # Cells are text: the declared schema converts them (``"42"`` to 42).
            attributes[column.removeprefix("attributes.")] = value
        elif column == "machine":
            obj[column] = _csv_bool(column, value)
        else:
            obj[column] = value
    if metadata:
        obj["metadata"] = metadata
    if properties:
        obj["properties"] = properties
    if attributes:
        obj["attributes"] = attributes
    obj.setdefault("kind", kind or "message")
    return obj


def _csv_bool(column: str, value: str) -> bool:
    folded = value.lower()
    if folded in _TRUE:
        return True
    if folded in _FALSE:
        return False
    raise PayloadError(field=column, reason="expected true/false, yes/no or 1/0")


def write_records(records: Iterable[Record], out: IO[str]) -> int:
    """Write records as canonical JSON lines to a text stream; returns how many."""
    count = 0
    for record in records:
        out.write(dumps(record))
        out.write("\n")
        count += 1
    return count


def reparse(
    raw: str,
    *,
    line: int,
    format: FileFormat = "jsonl",
    header: str | None = None,
    default_tz: tzinfo | str | None = None,
    mapping: Mapping[str, str] | None = None,
    kind: str | None = None,
    region: str = "JP",
) -> ParsedLine:
    """Parse one kept raw line again, through the reader :func:`read_records` uses.

    Replaying a dead letter after the mapping, the time zone or the code was
    fixed: the line is read exactly as it would be in a file of its format.

    Args:
        raw: The line's raw text (a dead letter's ``raw``).
        line: The line number to report (the dead letter's).
        format: ``"jsonl"``, or ``"csv"`` for a row of a CSV sheet.
        header: CSV only: the sheet's header row (a CSV row means nothing without it).
        default_tz: The zone for naive timestamps.
        mapping: CSV only: ``{column: field}``, as for :func:`read_records`.
        kind: CSV only: the record kind of rows without a ``kind`` column.
        region: The region national phone numbers are read in.

    Returns:
        The parsed line: its record, or why it holds none. A blank line, or a CSV
        row without a header, is an error line.

    Raises:
        PayloadError: The CSV header is unusable (it concerns every row).

    .. versionadded:: 0.4.0
    """
    if kind is not None and kind not in KINDS:
        raise PayloadError(field="kind", reason=f"expected one of: {_KIND_NAMES}")
    if format == "csv" and header is None:
        error = PayloadError(field="<row>", reason="a CSV row needs its header; pass the header")
        return ParsedLine(line=line, raw=raw, error=error)
    text = raw if format == "jsonl" else f"{header}\n{raw}"
    handle = io.BytesIO()
    stream = io.StringIO(text + "\n", newline="")
    if format == "jsonl":
        parsed = list(_read_jsonl(stream, default_tz, handle, None, "utf-8", region))
    else:
        parsed = list(
            _read_csv(stream, default_tz, mapping or {}, kind, handle, None, "utf-8", region)
        )
    if len(parsed) != 1:
        error = PayloadError(
            field="<line>",
            reason="blank" if not parsed else f"holds {len(parsed)} rows, expected one",
        )
        return ParsedLine(line=line, raw=raw, error=error)
    return attrs.evolve(parsed[0], line=line, raw=raw)
