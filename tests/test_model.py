"""The record model's validation contract: which error, naming which field, saying why.

Every validator of :class:`Message`, :class:`Event` and :class:`ConsentEvent` is
pinned here by its error type, ``field`` and ``reason``, together with the order
in which fields are checked (the first bad field in declaration order is the one
reported, and the cross-field checks come after every per-field check).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commhistory import model
from commhistory.errors import InvalidInputError, NormalizationError, PayloadError
from commhistory.model import (
    BounceClass,
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

WHEN = datetime(2026, 4, 1, 9, 30, tzinfo=UTC)
JST = timezone(timedelta(hours=9))

MESSAGE: dict[str, Any] = {
    "message_id": "m-1",
    "channel": Channel.EMAIL,
    "direction": Direction.OUTBOUND,
    "contact_id": "c-1",
    "address": "taro@example.com",
    "sent_at": WHEN,
}
EVENT: dict[str, Any] = {
    "event_id": "e-1",
    "type": EventType.DELIVERED,
    "occurred_at": WHEN,
    "message_id": "m-1",
}
CONSENT: dict[str, Any] = {
    "contact_id": "c-1",
    "channel": Channel.EMAIL,
    "purpose": Purpose.MARKETING,
    "action": ConsentAction.GRANT,
    "occurred_at": WHEN,
    "method": ConsentMethod.WEB_FORM,
}

Factory = Callable[..., object]
BUILD: dict[str, tuple[Factory, dict[str, Any]]] = {
    "message": (Message, MESSAGE),
    "event": (Event, EVENT),
    "consent": (ConsentEvent, CONSENT),
}


class _Text(str):
    """A str subclass: accepted wherever a string is."""


class _Moment(datetime):
    """A datetime subclass: accepted wherever a datetime is."""


def _allowed(cls: type[Any]) -> str:
    return "expected one of: " + ", ".join(str(member.value) for member in cls)


NAIVE = "naive datetime; give a time zone offset or a default zone"
STATUS = "expected an enhanced status code like '5.1.1'"

# (record, field, bad value, error type, reason)
CASES: list[tuple[str, str, object, type[InvalidInputError], str]] = [
    # ---- Message
    ("message", "message_id", 7, PayloadError, "expected a string id, got int"),
    ("message", "message_id", None, PayloadError, "expected a string id, got NoneType"),
    ("message", "message_id", b"m", PayloadError, "expected a string id, got bytes"),
    ("message", "message_id", "", PayloadError, "must not be empty"),
    ("message", "message_id", " \t\u3000", PayloadError, "must not be empty"),
    ("message", "message_id", _Text("  "), PayloadError, "must not be empty"),
    ("message", "channel", "email", PayloadError, _allowed(Channel)),
    ("message", "channel", Direction.OUTBOUND, PayloadError, _allowed(Channel)),
    ("message", "channel", None, PayloadError, _allowed(Channel)),
    ("message", "direction", "outbound", PayloadError, _allowed(Direction)),
    ("message", "contact_id", 1.5, PayloadError, "expected a string id, got float"),
    ("message", "contact_id", "   ", PayloadError, "must not be empty"),
    ("message", "address", 42, PayloadError, "expected a string, got int"),
    ("message", "address", None, PayloadError, "required"),
    ("message", "sent_at", "2026-04-01T00:00:00Z", PayloadError, "expected a datetime, got str"),
    ("message", "sent_at", None, PayloadError, "expected a datetime, got NoneType"),
    ("message", "sent_at", 1775001600, PayloadError, "expected a datetime, got int"),
    ("message", "sent_at", datetime(2026, 4, 1), NormalizationError, NAIVE),
    ("message", "purpose", "marketing", PayloadError, _allowed(Purpose)),
    ("message", "purpose", None, PayloadError, _allowed(Purpose)),
    ("message", "campaign_id", "", PayloadError, "must not be empty"),
    ("message", "campaign_id", 3, PayloadError, "expected a string id, got int"),
    ("message", "variant", " ", PayloadError, "must not be empty"),
    ("message", "variant", ["a"], PayloadError, "expected a string id, got list"),
    ("message", "subject", 3, PayloadError, "expected a string, got int"),
    ("message", "subject", b"s", PayloadError, "expected a string, got bytes"),
    ("message", "body", {"text": "x"}, PayloadError, "expected a string, got dict"),
    ("message", "provider", "", PayloadError, "must not be empty"),
    ("message", "provider", True, PayloadError, "expected a string id, got bool"),
    ("message", "provider_message_id", "\n", PayloadError, "must not be empty"),
    ("message", "metadata", None, PayloadError, "expected an object, got NoneType"),
    ("message", "metadata", [("a", 1)], PayloadError, "expected an object, got list"),
    ("message", "metadata", {1: "x"}, PayloadError, "keys must be strings"),
    ("message", "metadata", {"a": 1, None: 2}, PayloadError, "keys must be strings"),
    # ---- Event
    ("event", "event_id", 7, PayloadError, "expected a string id, got int"),
    ("event", "event_id", None, PayloadError, "expected a string id, got NoneType"),
    ("event", "event_id", "", PayloadError, "must not be empty"),
    ("event", "event_id", "\u2003", PayloadError, "must not be empty"),
    ("event", "type", "delivered", PayloadError, _allowed(EventType)),
    ("event", "type", BounceClass.HARD, PayloadError, _allowed(EventType)),
    ("event", "type", None, PayloadError, _allowed(EventType)),
    ("event", "occurred_at", "2026-04-01", PayloadError, "expected a datetime, got str"),
    ("event", "occurred_at", None, PayloadError, "expected a datetime, got NoneType"),
    ("event", "occurred_at", datetime(2026, 4, 1), NormalizationError, NAIVE),
    ("event", "message_id", "", PayloadError, "must not be empty"),
    ("event", "message_id", 9, PayloadError, "expected a string id, got int"),
    ("event", "provider", " ", PayloadError, "must not be empty"),
    ("event", "provider_message_id", 1, PayloadError, "expected a string id, got int"),
    ("event", "provider_event_id", "", PayloadError, "must not be empty"),
    ("event", "address", 5, PayloadError, "expected a string, got int"),
    ("event", "status_code", "550", NormalizationError, STATUS),
    ("event", "status_code", "5.1.1 ", NormalizationError, STATUS),
    ("event", "status_code", "6.1.1", NormalizationError, STATUS),
    ("event", "status_code", "5.1234.1", NormalizationError, STATUS),
    ("event", "status_code", 511, NormalizationError, STATUS),
    ("event", "status_code", b"5.1.1", NormalizationError, STATUS),
    ("event", "bounce", "hard", PayloadError, _allowed(BounceClass)),
    ("event", "bounce", EventType.BOUNCED, PayloadError, _allowed(BounceClass)),
    ("event", "reason", 550, PayloadError, "expected a string, got int"),
    ("event", "url", b"https://x", PayloadError, "expected a string, got bytes"),
    ("event", "user_agent", ["UA"], PayloadError, "expected a string, got list"),
    ("event", "ip", 3232235777, PayloadError, "expected a string, got int"),
    ("event", "machine", 1, PayloadError, "expected a boolean, got int"),
    ("event", "machine", None, PayloadError, "expected a boolean, got NoneType"),
    ("event", "machine", "true", PayloadError, "expected a boolean, got str"),
    ("event", "metadata", "x", PayloadError, "expected an object, got str"),
    ("event", "metadata", {("a",): 1}, PayloadError, "keys must be strings"),
    # ---- ConsentEvent
    ("consent", "contact_id", 7, PayloadError, "expected a string id, got int"),
    ("consent", "contact_id", "", PayloadError, "must not be empty"),
    ("consent", "channel", "sms", PayloadError, _allowed(Channel)),
    ("consent", "purpose", Channel.EMAIL, PayloadError, _allowed(Purpose)),
    ("consent", "action", "grant", PayloadError, _allowed(ConsentAction)),
    ("consent", "occurred_at", 0, PayloadError, "expected a datetime, got int"),
    ("consent", "occurred_at", datetime(2026, 4, 1), NormalizationError, NAIVE),
    ("consent", "method", "web_form", PayloadError, _allowed(ConsentMethod)),
    ("consent", "consent_id", "", PayloadError, "must not be empty"),
    ("consent", "consent_id", 5, PayloadError, "expected a string id, got int"),
    ("consent", "recorded_at", "now", PayloadError, "expected a datetime, got str"),
    ("consent", "recorded_at", datetime(2026, 4, 2), NormalizationError, NAIVE),
    ("consent", "source", 5, PayloadError, "expected a string, got int"),
    ("consent", "notice_version", 2, PayloadError, "expected a string, got int"),
    ("consent", "notice_hash", b"h", PayloadError, "expected a string, got bytes"),
    ("consent", "ip", 1, PayloadError, "expected a string, got int"),
    ("consent", "user_agent", 1, PayloadError, "expected a string, got int"),
    ("consent", "actor", 1, PayloadError, "expected a string, got int"),
    ("consent", "metadata", (), PayloadError, "expected an object, got tuple"),
    ("consent", "metadata", {2: 1}, PayloadError, "keys must be strings"),
]


def _expect(
    kind: str,
    overrides: Mapping[str, object],
    error: type[InvalidInputError],
    field: str,
    reason: str,
) -> None:
    factory, base = BUILD[kind]
    with pytest.raises(InvalidInputError) as info:
        factory(**{**base, **overrides})
    assert type(info.value) is error
    assert (info.value.field, info.value.reason) == (field, reason)
    assert str(info.value) == f"{field}: {reason}"


@pytest.mark.parametrize(
    ("kind", "field", "value", "error", "reason"),
    CASES,
    ids=[f"{k}.{f}-{i}" for i, (k, f, *_rest) in enumerate(CASES)],
)
def test_each_bad_field_is_named_with_its_reason(
    kind: str, field: str, value: object, error: type[InvalidInputError], reason: str
) -> None:
    _expect(kind, {field: value}, error, field, reason)


def test_every_validated_field_has_a_pinned_case() -> None:
    pinned = {(kind, field) for kind, field, *_rest in CASES}
    classes: dict[str, type[Message | Event | ConsentEvent]] = {
        "message": Message,
        "event": Event,
        "consent": ConsentEvent,
    }
    for kind, cls in classes.items():
        for attribute in attrs.fields(cls):
            if (kind, attribute.name) in {("event", "revenue"), ("event", "currency")}:
                continue  # checked together, see test_money_checks
            assert (kind, attribute.name) in pinned, (kind, attribute.name)


# --------------------------------------------------------------------------- addresses


@pytest.mark.parametrize(
    ("channel", "address", "error", "reason"),
    [
        (
            Channel.EMAIL,
            "Taro@EXAMPLE.com",
            NormalizationError,
            "email address is not normalized (use normalize_email)",
        ),
        (Channel.EMAIL, "no-at-sign", NormalizationError, "missing '@'"),
        (Channel.EMAIL, "", NormalizationError, "must not be empty"),
        (
            Channel.SMS,
            "09012345678",
            NormalizationError,
            "phone number must be E.164 (use normalize_phone)",
        ),
        (
            Channel.VOICE,
            "0312345678",
            NormalizationError,
            "phone number must be E.164 (use normalize_phone)",
        ),
        (
            Channel.LINE,
            "U123",
            NormalizationError,
            "LINE user id must be 'U' followed by 32 hex digits",
        ),
        (Channel.PUSH, "  ", NormalizationError, "must not be empty"),
        (Channel.POSTAL, "", NormalizationError, "must not be empty"),
    ],
)
def test_message_address_must_be_canonical_for_its_channel(
    channel: Channel, address: str, error: type[InvalidInputError], reason: str
) -> None:
    _expect("message", {"channel": channel, "address": address}, error, "address", reason)


@pytest.mark.parametrize(
    ("channel", "address"),
    [
        (Channel.EMAIL, "taro@example.com"),
        (Channel.SMS, "+819012345678"),
        (Channel.VOICE, "+819012345678"),
        (Channel.LINE, "U" + "0123456789abcdef" * 2),
        (Channel.PUSH, "device-token-1"),
        (Channel.WEB, "session 1"),
    ],
)
def test_canonical_addresses_are_accepted(channel: Channel, address: str) -> None:
    message = Message(**{**MESSAGE, "channel": channel, "address": address})
    assert message.address == address


def test_event_address_is_not_checked_against_a_channel() -> None:
    event = Event(**{**EVENT, "address": "Not An Address"})
    assert event.address == "Not An Address"


# --------------------------------------------------------------------------- cross-field checks


def test_event_needs_a_message_id_or_the_provider_pair() -> None:
    reason = "required, or give both provider and provider_message_id"
    _expect("event", {"message_id": None}, PayloadError, "message_id", reason)
    _expect(
        "event", {"message_id": None, "provider": "sendgrid"}, PayloadError, "message_id", reason
    )
    _expect(
        "event",
        {"message_id": None, "provider_message_id": "x"},
        PayloadError,
        "message_id",
        reason,
    )
    event = Event(**{**EVENT, "message_id": None, "provider": "sg", "provider_message_id": "x"})
    assert event.message_id is None


@pytest.mark.parametrize(
    ("revenue", "currency", "error", "field", "reason"),
    [
        (None, "JPY", PayloadError, "revenue", "currency given without revenue"),
        (Decimal(100), None, PayloadError, "currency", "required when revenue is given"),
        (100, "JPY", PayloadError, "revenue", "expected a Decimal, got int"),
        (100.5, "JPY", PayloadError, "revenue", "expected a Decimal, got float"),
        (Decimal("NaN"), "JPY", NormalizationError, "revenue", "must be a finite number"),
        (Decimal("Infinity"), "JPY", NormalizationError, "revenue", "must be a finite number"),
        (
            Decimal(1),
            "jpy",
            NormalizationError,
            "currency",
            "expected an ISO 4217 code in upper case, like 'JPY'",
        ),
        (
            Decimal(1),
            "XXY",
            NormalizationError,
            "currency",
            "expected an ISO 4217 code in upper case, like 'JPY'",
        ),
        (
            Decimal(1),
            392,
            NormalizationError,
            "currency",
            "expected an ISO 4217 code in upper case, like 'JPY'",
        ),
    ],
)
def test_money_checks(
    revenue: object,
    currency: object,
    error: type[InvalidInputError],
    field: str,
    reason: str,
) -> None:
    _expect("event", {"revenue": revenue, "currency": currency}, error, field, reason)


def test_valid_money_is_kept() -> None:
    event = Event(**{**EVENT, "type": EventType.CONVERTED})
    assert (event.revenue, event.currency) == (None, None)
    event = Event(**{**EVENT, "revenue": Decimal("1200"), "currency": "JPY"})
    assert (event.revenue, event.currency) == (Decimal("1200"), "JPY")


# --------------------------------------------------------------------------- order of checks


def test_first_bad_field_in_declaration_order_is_reported() -> None:
    _expect(
        "event",
        {"event_id": "", "type": "x", "occurred_at": None},
        PayloadError,
        "event_id",
        "must not be empty",
    )
    _expect(
        "event",
        {"type": "x", "occurred_at": datetime(2026, 4, 1), "machine": 0},
        PayloadError,
        "type",
        _allowed(EventType),
    )
    _expect(
        "event",
        {"status_code": "550", "bounce": "hard"},
        NormalizationError,
        "status_code",
        STATUS,
    )
    _expect(
        "event",
        {"machine": 0, "metadata": []},
        PayloadError,
        "machine",
        "expected a boolean, got int",
    )
    _expect(
        "message",
        {"address": 5, "sent_at": "x"},
        PayloadError,
        "address",
        "expected a string, got int",
    )


def test_field_checks_come_before_cross_field_checks() -> None:
    # A missing message id or a bad address is only reported once every field is valid.
    _expect(
        "event",
        {"message_id": None, "metadata": None},
        PayloadError,
        "metadata",
        "expected an object, got NoneType",
    )
    _expect(
        "event",
        {"revenue": 5, "machine": None},
        PayloadError,
        "machine",
        "expected a boolean, got NoneType",
    )
    _expect(
        "message",
        {"address": None, "subject": 1},
        PayloadError,
        "subject",
        "expected a string, got int",
    )
    _expect(
        "message",
        {"address": "Not@Normalized.COM", "sent_at": datetime(2026, 4, 1)},
        NormalizationError,
        "sent_at",
        NAIVE,
    )
    # Between the two cross-field checks of an event, the message link comes first.
    _expect(
        "event",
        {"message_id": None, "revenue": 5, "currency": "JPY"},
        PayloadError,
        "message_id",
        "required, or give both provider and provider_message_id",
    )


# (record, field, a bad value, its error's field) for a property over many bad fields.
BAD: dict[str, list[tuple[str, object]]] = {
    "message": [
        ("message_id", ""),
        ("channel", "email"),
        ("direction", None),
        ("contact_id", 3),
        ("address", 3),
        ("sent_at", datetime(2026, 1, 1)),
        ("purpose", "marketing"),
        ("campaign_id", " "),
        ("variant", 1),
        ("subject", 1),
        ("body", b""),
        ("provider", ""),
        ("provider_message_id", 0),
        ("metadata", {0: 0}),
    ],
    "event": [
        ("event_id", None),
        ("type", "opened"),
        ("occurred_at", "2026"),
        ("message_id", ""),
        ("provider", 1),
        ("provider_message_id", " "),
        ("provider_event_id", 2),
        ("address", 1),
        ("status_code", "5.1"),
        ("bounce", "soft"),
        ("reason", 1),
        ("url", 1),
        ("user_agent", 1),
        ("ip", 1),
        ("machine", "no"),
        ("metadata", []),
    ],
    "consent": [
        ("contact_id", ""),
        ("channel", None),
        ("purpose", "x"),
        ("action", "grant"),
        ("occurred_at", datetime(2026, 1, 1)),
        ("method", None),
        ("consent_id", ""),
        ("recorded_at", 5),
        ("source", 1),
        ("notice_version", 1),
        ("notice_hash", 1),
        ("ip", 1),
        ("user_agent", 1),
        ("actor", 1),
        ("metadata", None),
    ],
}


@given(data=st.data())
def test_any_set_of_bad_fields_reports_the_first_declared(data: st.DataObject) -> None:
    kind = data.draw(st.sampled_from(sorted(BAD)))
    choices = BAD[kind]
    picked = data.draw(st.sets(st.integers(0, len(choices) - 1), min_size=1))
    factory, base = BUILD[kind]
    overrides = dict(choices[i] for i in picked)
    first = choices[min(picked)][0]
    with pytest.raises(InvalidInputError) as info:
        factory(**{**base, **overrides})
    assert info.value.field == first
    # The same error as when that field alone is bad.
    with pytest.raises(InvalidInputError) as alone:
        factory(**{**base, first: overrides[first]})
    assert type(info.value) is type(alone.value)
    assert info.value.reason == alone.value.reason


# --------------------------------------------------------------------------- accepted values


def test_times_are_converted_to_utc() -> None:
    local = datetime(2026, 4, 1, 18, 30, tzinfo=JST)
    message = Message(**{**MESSAGE, "sent_at": local})
    assert message.sent_at == local
    assert message.sent_at.tzinfo is UTC
    assert message.sent_at.hour == 9
    event = Event(**{**EVENT, "occurred_at": local})
    assert event.occurred_at.tzinfo is UTC
    consent = ConsentEvent(**{**CONSENT, "occurred_at": local, "recorded_at": local})
    assert consent.occurred_at.tzinfo is UTC
    assert consent.recorded_at is not None
    assert consent.recorded_at.tzinfo is UTC
    assert ConsentEvent(**CONSENT).recorded_at is None


def test_utc_times_are_kept_as_given() -> None:
    assert Event(**EVENT).occurred_at is WHEN
    assert Message(**MESSAGE).sent_at is WHEN


def test_subclasses_of_str_and_datetime_are_accepted() -> None:
    moment = _Moment(2026, 4, 1, tzinfo=UTC)
    event = Event(
        event_id=_Text("e-1"),
        type=EventType.BOUNCED,
        occurred_at=moment,
        provider=_Text("sg"),
        provider_message_id=_Text("p"),
        address=_Text("x"),
        status_code=_Text("5.1.1"),
        bounce=BounceClass.HARD,
        reason=_Text("r"),
    )
    assert event.event_id == "e-1"
    assert event.occurred_at == moment
    message = Message(**{**MESSAGE, "message_id": _Text("m"), "subject": _Text("s")})
    assert message.subject == "s"


def test_any_mapping_with_string_keys_is_metadata() -> None:
    class Frozen(Mapping[str, object]):
        def __init__(self, data: dict[str, object]) -> None:
            self._data = data

        def __getitem__(self, key: str) -> object:
            return self._data[key]

        def __iter__(self) -> Any:
            return iter(self._data)

        def __len__(self) -> int:
            return len(self._data)

    metadata = Frozen({"a": 1})
    assert Event(**{**EVENT, "metadata": metadata}).metadata is metadata
    assert Event(**EVENT).metadata == {}


def test_a_full_event_is_accepted() -> None:
    event = Event(
        event_id="sendgrid:ev1",
        type=EventType.BOUNCED,
        occurred_at=WHEN,
        message_id=None,
        provider="sendgrid",
        provider_message_id="abc",
        provider_event_id="ev1",
        address="taro@example.com",
        status_code="5.1.1",
        bounce=BounceClass.HARD,
        reason="550 5.1.1 user unknown",
        url=None,
        user_agent="Mozilla/5.0",
        ip="203.0.113.1",
        machine=True,
        metadata={"provider_raw": {"event": "bounce"}},
    )
    assert event.machine is True
    assert event.status_code == "5.1.1"


def test_records_are_frozen_and_hide_personal_fields() -> None:
    event = Event(**{**EVENT, "address": "taro@example.com", "ip": "203.0.113.9"})
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        event.event_id = "other"  # type: ignore[misc]
    text = repr(event) + repr(Message(**{**MESSAGE, "subject": "secret subject"}))
    assert "taro@example.com" not in text
    assert "203.0.113.9" not in text
    assert "secret subject" not in text


def test_evolve_validates_again() -> None:
    event = Event(**EVENT)
    with pytest.raises(PayloadError) as info:
        attrs.evolve(event, machine=1)  # type: ignore[arg-type]
    assert (info.value.field, info.value.reason) == ("machine", "expected a boolean, got int")


def test_disabling_attrs_validators_skips_field_checks_only() -> None:
    # attrs' global switch turns off the per-field checks, as attrs documents;
    # the cross-field checks (message link, money, message address) still run.
    with attrs.validators.disabled():
        event = Event(**{**EVENT, "machine": 1, "type": "opened"})
        assert event.machine == 1
        with pytest.raises(PayloadError) as info:
            Event(**{**EVENT, "message_id": None})
        assert info.value.field == "message_id"
        with pytest.raises(PayloadError) as info:
            Message(**{**MESSAGE, "address": None})
        assert (info.value.field, info.value.reason) == ("address", "required")
    assert not attrs.validators.get_disabled()


# --------------------------------------------------------------------------- fast pass


def test_slow_path_checks_every_field_in_declaration_order() -> None:
    # Each record's validator falls back to these per-field checks; a field left
    # out of them would go unchecked whenever the fast pass declines.
    for cls, checks, together in (
        (Message, model._MESSAGE_CHECKS, set()),
        (Event, model._EVENT_CHECKS, {"revenue", "currency"}),
        (ConsentEvent, model._CONSENT_CHECKS, set()),
    ):
        declared = [a.name for a in attrs.fields(cls) if a.name not in together]
        assert [name for name, _check in checks] == declared


_ANY: st.SearchStrategy[object] = st.sampled_from(
    [
        None,
        "",
        " ",
        "x",
        "5.1.1",
        "550",
        _Text("t"),
        _Text(" "),
        0,
        1,
        True,
        False,
        1.5,
        b"x",
        [],
        {},
        {"k": 1},
        {1: 1},
        WHEN,
        datetime(2026, 4, 1),
        datetime(2026, 4, 1, tzinfo=JST),
        _Moment(2026, 4, 1, tzinfo=UTC),
        Channel.EMAIL,
        EventType.OPENED,
        BounceClass.SOFT,
        Decimal(1),
    ]
)


def _error_of(call: Callable[[], object]) -> tuple[type[Exception], str, str] | None:
    try:
        call()
    except InvalidInputError as exc:
        return type(exc), exc.field, exc.reason
    return None


@settings(max_examples=400)
@given(data=st.data())
def test_fast_pass_agrees_with_the_per_field_checks(data: st.DataObject) -> None:
    kind = data.draw(st.sampled_from(sorted(BAD)))
    factory, base = BUILD[kind]
    checks = {"message": model._MESSAGE_CHECKS, "event": model._EVENT_CHECKS}.get(
        kind, model._CONSENT_CHECKS
    )
    # A message's address is also checked against its channel: pinned above.
    names = [name for name, _check in checks if (kind, name) != ("message", "address")]
    changed = data.draw(st.sets(st.sampled_from(names), max_size=4))
    kwargs = {**base, **{name: data.draw(_ANY, label=name) for name in sorted(changed)}}
    got = _error_of(lambda: factory(**kwargs))
    expected = _error_of(lambda: model._run_checks(_Fields(kwargs), checks))
    if expected is not None:
        # The first failing per-field check decides, whatever the fast pass thought.
        assert got == expected
    elif got is not None:
        # Every field is fine on its own: only a cross-field check may refuse.
        assert got[1] in {"message_id", "revenue", "currency"}


class _Fields:
    """Attribute access over keyword arguments, converted as the records convert them."""

    def __init__(self, values: Mapping[str, object]) -> None:
        for name, value in values.items():
            if name in {"sent_at", "occurred_at", "recorded_at"}:
                value = model._optional_to_utc(value)  # noqa: PLW2901
            setattr(self, name, value)

    def __getattr__(self, name: str) -> object:
        defaults = {"purpose": Purpose.MARKETING, "machine": False, "metadata": {}}
        return defaults.get(name)
