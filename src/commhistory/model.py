"""The canonical record model: one typed shape for every channel and provider.

Records are frozen :mod:`attrs` classes. They *validate* but do not *normalize*:
normalize input first (:func:`commhistory.normalize_email`,
:func:`commhistory.normalize_phone`, :func:`commhistory.normalize.parse_timestamp`),
or read canonical JSON lines through :mod:`commhistory.convert`, which does it
for you. A record that exists is therefore always canonical:

* every timestamp is timezone-aware and held in UTC;
* every id is a non-empty string;
* the address fits the channel: a normalized email for ``EMAIL``, E.164 for
  ``SMS`` and ``VOICE``, a LINE user id (``U`` + 32 hex digits) for ``LINE``;
* revenue is a :class:`~decimal.Decimal` with an ISO 4217 currency;
* personal fields (address, subject, body, reason, url, user agent, ip,
  metadata) are left out of ``repr()``.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final

import attrs

from commhistory._currencies import ISO_4217
from commhistory.errors import NormalizationError, PayloadError

__all__ = [
    "BounceClass",
    "Channel",
    "ConsentAction",
    "ConsentEvent",
    "ConsentMethod",
    "Direction",
    "Event",
    "EventType",
    "JSONValue",
    "Message",
    "Purpose",
    "Record",
    "check_address",
]

JSONValue = Any
"""A JSON-serialisable value (``None``, bool, int, float, str, list or dict of them)."""


class Channel(enum.StrEnum):
    """The medium a message travels on."""

    EMAIL = "email"
    SMS = "sms"
    LINE = "line"
    PUSH = "push"
    CHAT = "chat"
    VOICE = "voice"
    POSTAL = "postal"
    WEB = "web"


class Direction(enum.StrEnum):
    """Whether the business sent the message or received it."""

    OUTBOUND = "outbound"
    INBOUND = "inbound"


class Purpose(enum.StrEnum):
    """Why a message is sent; decides which consent it needs.

    ``MARKETING`` needs marketing consent; ``TRANSACTIONAL`` (receipts, password
    resets) and ``SERVICE`` (notices about an existing contract) do not, but
    still honour hard-bounce suppression.
    """

    MARKETING = "marketing"
    TRANSACTIONAL = "transactional"
    SERVICE = "service"


class EventType(enum.StrEnum):
    """What happened to a message, or how the customer reacted to it."""

    QUEUED = "queued"
    SENT = "sent"
    DEFERRED = "deferred"
    DELIVERED = "delivered"
    BOUNCED = "bounced"
    REJECTED = "rejected"
    FAILED = "failed"
    OPENED = "opened"
    CLICKED = "clicked"
    REPLIED = "replied"
    CONVERTED = "converted"
    COMPLAINED = "complained"
    UNSUBSCRIBED = "unsubscribed"
    SUBSCRIBED = "subscribed"
    UNKNOWN = "unknown"


class BounceClass(enum.StrEnum):
    """How permanent a bounce is (RFC 3463 classes, see :mod:`commhistory.normalize.smtp`)."""

    HARD = "hard"
    SOFT = "soft"
    BLOCK = "block"
    UNDETERMINED = "undetermined"


class ConsentAction(enum.StrEnum):
    """Whether a consent event grants or withdraws consent."""

    GRANT = "grant"
    WITHDRAW = "withdraw"


class ConsentMethod(enum.StrEnum):
    """How consent was given or withdrawn: part of the evidence."""

    WEB_FORM = "web_form"
    DOUBLE_OPT_IN = "double_opt_in"
    CHECKBOX = "checkbox"
    PAPER = "paper"
    VERBAL = "verbal"
    IMPORT = "import"
    UNSUBSCRIBE_LINK = "unsubscribe_link"
    ONE_CLICK = "one_click"
    SMS_KEYWORD = "sms_keyword"
    LINE_BLOCK = "line_block"
    COMPLAINT = "complaint"
    SUPPORT_REQUEST = "support_request"


# --------------------------------------------------------------------------- validators

_LINE_USER_ID: Final = re.compile(r"U[0-9a-f]{32}")
_STATUS_CODE: Final = re.compile(r"[245]\.\d{1,3}\.\d{1,3}")


def _to_utc(value: object) -> object:
    """Convert an aware datetime to UTC; anything else is left for the validator."""
    if isinstance(value, datetime) and value.utcoffset() is not None:
        return value.astimezone(UTC)
    return value


def _optional_to_utc(value: object) -> object:
    return None if value is None else _to_utc(value)


def _aware(_inst: object, attr: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, datetime):
        raise PayloadError(field=attr.name, reason=f"expected a datetime, got {_kind(value)}")
    if value.utcoffset() is None:
        raise NormalizationError(
            field=attr.name, reason="naive datetime; give a time zone offset or a default zone"
        )


def _optional_aware(inst: object, attr: attrs.Attribute[Any], value: object) -> None:
    if value is not None:
        _aware(inst, attr, value)


def _identifier(_inst: object, attr: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str):
        raise PayloadError(field=attr.name, reason=f"expected a string id, got {_kind(value)}")
    if not value.strip():
        raise PayloadError(field=attr.name, reason="must not be empty")


def _optional_identifier(inst: object, attr: attrs.Attribute[Any], value: object) -> None:
    if value is not None:
        _identifier(inst, attr, value)


def _optional_text(_inst: object, attr: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not isinstance(value, str):
        raise PayloadError(field=attr.name, reason=f"expected a string, got {_kind(value)}")


def _enum(cls: type[enum.Enum]) -> Any:
    def check(_inst: object, attr: attrs.Attribute[Any], value: object) -> None:
        if not isinstance(value, cls):
            allowed = ", ".join(str(m.value) for m in cls)
            raise PayloadError(field=attr.name, reason=f"expected one of: {allowed}")

    return check


def _optional_enum(cls: type[enum.Enum]) -> Any:
    inner = _enum(cls)

    def check(inst: object, attr: attrs.Attribute[Any], value: object) -> None:
        if value is not None:
            inner(inst, attr, value)

    return check


def _metadata(_inst: object, attr: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, Mapping):
        raise PayloadError(field=attr.name, reason=f"expected an object, got {_kind(value)}")
    for key in value:
        if not isinstance(key, str):
            raise PayloadError(field=attr.name, reason="keys must be strings")


def _kind(value: object) -> str:
    """Name a value's type without showing the value (it may be personal)."""
    return type(value).__name__


def check_address(channel: Channel, address: str, *, field: str = "address") -> None:
    """Check that *address* is the canonical form for *channel*.

    Args:
        channel: The channel the address is used on.
        address: The address, already normalized.
        field: The field name to report on failure.

    Raises:
        NormalizationError: The address is not in the canonical form for the channel.
    """
    # Imported here: the normalizers import this module's enums.
    from commhistory.normalize.email import normalize_email  # noqa: PLC0415
    from commhistory.normalize.phone import normalize_phone  # noqa: PLC0415

    if channel is Channel.EMAIL:
        try:
            canonical = normalize_email(address)
        except NormalizationError as exc:
            raise NormalizationError(field=field, reason=exc.reason) from None
        if canonical != address:
            raise NormalizationError(
                field=field, reason="email address is not normalized (use normalize_email)"
            )
    elif channel in (Channel.SMS, Channel.VOICE):
        if not address.startswith("+"):
            raise NormalizationError(
                field=field, reason="phone number must be E.164 (use normalize_phone)"
            )
        try:
            canonical = normalize_phone(address)
        except NormalizationError as exc:
            raise NormalizationError(field=field, reason=exc.reason) from None
        if canonical != address:
            raise NormalizationError(field=field, reason="phone number is not E.164")
    elif channel is Channel.LINE:
        if not _LINE_USER_ID.fullmatch(address):
            raise NormalizationError(
                field=field, reason="LINE user id must be 'U' followed by 32 hex digits"
            )
    elif not address.strip():
        raise NormalizationError(field=field, reason="must not be empty")


# --------------------------------------------------------------------------- records


@attrs.frozen(kw_only=True)
class Message:
    """One message sent to, or received from, a customer on one channel.

    Attributes:
        message_id: The business's own unique id for the message.
        channel: The channel it travels on.
        direction: Outbound (we sent it) or inbound (the customer sent it).
        contact_id: The business's id for the customer.
        address: Where it went or came from, canonical for the channel. Personal.
        sent_at: When it was handed to the provider (outbound) or received (inbound), UTC.
        purpose: Why it was sent; decides which consent it needs.
        campaign_id: The campaign it belongs to, if any.
        variant: The A/B variant, if any.
        subject: The subject line, if the channel has one. Personal.
        body: The text. Personal.
        provider: The sending provider's name (``"sendgrid"``), if any.
        provider_message_id: The provider's id for the message, used to link events.
        metadata: Host-defined JSON data. Treated as personal (encrypted at rest).

    .. versionadded:: 0.1.0
    """

    message_id: str = attrs.field(validator=_identifier)
    channel: Channel = attrs.field(validator=_enum(Channel))
    direction: Direction = attrs.field(validator=_enum(Direction))
    contact_id: str = attrs.field(validator=_identifier)
    address: str = attrs.field(repr=False, validator=_optional_text)
    sent_at: datetime = attrs.field(converter=_to_utc, validator=_aware)
    purpose: Purpose = attrs.field(default=Purpose.MARKETING, validator=_enum(Purpose))
    campaign_id: str | None = attrs.field(default=None, validator=_optional_identifier)
    variant: str | None = attrs.field(default=None, validator=_optional_identifier)
    subject: str | None = attrs.field(default=None, repr=False, validator=_optional_text)
    body: str | None = attrs.field(default=None, repr=False, validator=_optional_text)
    provider: str | None = attrs.field(default=None, validator=_optional_identifier)
    provider_message_id: str | None = attrs.field(default=None, validator=_optional_identifier)
    metadata: Mapping[str, JSONValue] = attrs.field(
        factory=dict, repr=False, hash=False, validator=_metadata
    )

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.address, str):
            raise PayloadError(field="address", reason="required")
        check_address(self.channel, self.address)


@attrs.frozen(kw_only=True)
class Event:
    """Something that happened to a message: delivery, bounce, open, click, reply, purchase.

    An event names its message by ``message_id``, or by ``provider`` together with
    ``provider_message_id`` (the way provider webhooks do). It may arrive before
    the message it belongs to; the repository links it when the message comes.

    Attributes:
        event_id: A unique id for the event.
        type: What happened.
        occurred_at: When it happened, UTC.
        message_id: The message's id, if known.
        provider: The provider that reported it.
        provider_message_id: The provider's id for the message.
        provider_event_id: The provider's id for this event (deduplicates retried webhooks).
        address: The recipient address as the provider reported it. Personal.
        status_code: The SMTP enhanced status code (``"5.1.1"``), for bounces and deferrals.
        bounce: The bounce class, for bounces.
        reason: The provider's diagnostic text. Personal (it often quotes the address).
        url: The clicked URL. Personal (links carry tokens).
        user_agent: The user agent of an open or click. Personal.
        ip: The IP address of an open or click. Personal.
        machine: True when the open or click was made by a machine (a privacy
            proxy or a link scanner), not a person.
        revenue: The amount of a conversion.
        currency: The ISO 4217 currency of ``revenue``.
        metadata: Host-defined JSON data. Treated as personal (encrypted at rest).

    .. versionadded:: 0.1.0
    """

    event_id: str = attrs.field(validator=_identifier)
    type: EventType = attrs.field(validator=_enum(EventType))
    occurred_at: datetime = attrs.field(converter=_to_utc, validator=_aware)
    message_id: str | None = attrs.field(default=None, validator=_optional_identifier)
    provider: str | None = attrs.field(default=None, validator=_optional_identifier)
    provider_message_id: str | None = attrs.field(default=None, validator=_optional_identifier)
    provider_event_id: str | None = attrs.field(default=None, validator=_optional_identifier)
    address: str | None = attrs.field(default=None, repr=False, validator=_optional_text)
    status_code: str | None = attrs.field(default=None)
    bounce: BounceClass | None = attrs.field(default=None, validator=_optional_enum(BounceClass))
    reason: str | None = attrs.field(default=None, repr=False, validator=_optional_text)
    url: str | None = attrs.field(default=None, repr=False, validator=_optional_text)
    user_agent: str | None = attrs.field(default=None, repr=False, validator=_optional_text)
    ip: str | None = attrs.field(default=None, repr=False, validator=_optional_text)
    machine: bool = attrs.field(default=False)
    revenue: Decimal | None = attrs.field(default=None)
    currency: str | None = attrs.field(default=None)
    metadata: Mapping[str, JSONValue] = attrs.field(
        factory=dict, repr=False, hash=False, validator=_metadata
    )

    @status_code.validator
    def _check_status_code(self, _attr: attrs.Attribute[Any], value: object) -> None:
        if value is None:
            return
        if not isinstance(value, str) or not _STATUS_CODE.fullmatch(value):
            raise NormalizationError(
                field="status_code", reason="expected an enhanced status code like '5.1.1'"
            )

    @machine.validator
    def _check_machine(self, _attr: attrs.Attribute[Any], value: object) -> None:
        if not isinstance(value, bool):
            raise PayloadError(field="machine", reason=f"expected a boolean, got {_kind(value)}")

    def __attrs_post_init__(self) -> None:
        if self.message_id is None and (self.provider is None or self.provider_message_id is None):
            raise PayloadError(
                field="message_id",
                reason="required, or give both provider and provider_message_id",
            )
        _check_money(self.revenue, self.currency)


def _check_money(revenue: object, currency: object) -> None:
    if revenue is None and currency is None:
        return
    if revenue is None:
        raise PayloadError(field="revenue", reason="currency given without revenue")
    if currency is None:
        raise PayloadError(field="currency", reason="required when revenue is given")
    if not isinstance(revenue, Decimal):
        raise PayloadError(field="revenue", reason=f"expected a Decimal, got {_kind(revenue)}")
    if not revenue.is_finite():
        raise NormalizationError(field="revenue", reason="must be a finite number")
    if not isinstance(currency, str) or currency not in ISO_4217:
        raise NormalizationError(
            field="currency", reason="expected an ISO 4217 code in upper case, like 'JPY'"
        )


@attrs.frozen(kw_only=True)
class ConsentEvent:
    """One grant or withdrawal of consent, kept with its evidence. Never updated in place.

    Attributes:
        contact_id: The customer.
        channel: The channel the consent covers.
        purpose: The purpose it covers (usually ``MARKETING``).
        action: Grant or withdraw.
        occurred_at: When the customer gave or withdrew it, UTC.
        method: How it was given or withdrawn.
        consent_id: A unique id for this event; derived from its content when absent.
        recorded_at: When the business recorded it (defaults to ``occurred_at``).
        source: Where it happened: a form URL, a form id, a keyword.
        notice_version: The version of the consent notice shown.
        notice_hash: A hash of the notice's wording.
        ip: The customer's IP address. Personal.
        user_agent: The customer's user agent. Personal.
        actor: Who recorded it (a staff or system id).
        metadata: Host-defined JSON data. Treated as personal (encrypted at rest).

    .. versionadded:: 0.1.0
    """

    contact_id: str = attrs.field(validator=_identifier)
    channel: Channel = attrs.field(validator=_enum(Channel))
    purpose: Purpose = attrs.field(validator=_enum(Purpose))
    action: ConsentAction = attrs.field(validator=_enum(ConsentAction))
    occurred_at: datetime = attrs.field(converter=_to_utc, validator=_aware)
    method: ConsentMethod = attrs.field(validator=_enum(ConsentMethod))
    consent_id: str | None = attrs.field(default=None, validator=_optional_identifier)
    recorded_at: datetime | None = attrs.field(
        default=None, converter=_optional_to_utc, validator=_optional_aware
    )
    source: str | None = attrs.field(default=None, validator=_optional_text)
    notice_version: str | None = attrs.field(default=None, validator=_optional_text)
    notice_hash: str | None = attrs.field(default=None, validator=_optional_text)
    ip: str | None = attrs.field(default=None, repr=False, validator=_optional_text)
    user_agent: str | None = attrs.field(default=None, repr=False, validator=_optional_text)
    actor: str | None = attrs.field(default=None, validator=_optional_text)
    metadata: Mapping[str, JSONValue] = attrs.field(
        factory=dict, repr=False, hash=False, validator=_metadata
    )


Record = Message | Event | ConsentEvent
"""Any canonical record."""
