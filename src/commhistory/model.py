"""The canonical record model: one typed shape for every channel and provider.

Records are frozen :mod:`attrs` classes. They *validate* but do not *normalize*:
normalize input first (:func:`commhistory.normalize_email`,
:func:`commhistory.normalize_phone`, :func:`commhistory.normalize.parse_timestamp`),
or read canonical JSON lines through :mod:`commhistory.convert`, which does it
for you. A record that exists is therefore always canonical:

* every timestamp is timezone-aware and held in UTC;
* every id is a non-empty string of at most ``MAX_ID_LENGTH`` (255) characters, without
  a NUL character (PostgreSQL cannot store one in text) or a lone surrogate;
* no text field holds a lone surrogate (it cannot be encoded as UTF-8);
* the address fits the channel: a normalized email for ``EMAIL``, E.164 for
  ``SMS`` and ``VOICE``, a LINE user id (``U`` + 32 hex digits) for ``LINE``;
* revenue is a :class:`~decimal.Decimal` with an ISO 4217 currency;
* personal fields (address, subject, body, reason, url, user agent, ip, consent
  source, metadata, activity properties) are left out of ``repr()``.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import enum
import hashlib
import re
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Final

import attrs

from commhistory._currencies import ISO_4217
from commhistory.errors import NormalizationError, PayloadError
from commhistory.normalize.email import is_normalized_email, normalize_email
from commhistory.normalize.phone import is_normalized_phone, normalize_phone

# Re-exported: the bounce classes live with the SMTP normalizer that assigns them,
# below this module, and are part of the record model's public surface.
from commhistory.normalize.smtp import BounceClass
from commhistory.normalize.time import to_micros

__all__ = [
    "ACTIVITY_NAME",
    "ADDRESS_KINDS",
    "MAX_ID_LENGTH",
    "Activity",
    "BounceClass",
    "Channel",
    "ConsentAction",
    "ConsentEvent",
    "ConsentMethod",
    "ContactUpdate",
    "Direction",
    "Event",
    "EventType",
    "JSONValue",
    "Message",
    "Purpose",
    "Record",
    "SuppressionEntry",
    "SuppressionReason",
    "check_address",
    "check_attribute_name",
    "consent_id_of",
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
    WHATSAPP = "whatsapp"
    """WhatsApp messages; the address is the E.164 phone number. Consent and
    suppression are its own, not SMS's.

    .. versionadded:: 0.4.0
    """


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
    """What happened to a message, or how the customer reacted to it.

    The call events (``RINGING`` ... ``BUSY``) are the progress of a
    :attr:`Channel.VOICE` message (a phone call); a call that could not be
    placed at all is ``FAILED``, as for any message. The KPIs count none of
    the call events: a call is ``sent`` when it is outbound and not
    ``REJECTED``, and ``failed`` with a ``FAILED`` event (see :doc:`/kpi`).

    .. versionchanged:: 0.4.0
       ``RINGING``, ``ANSWERED``, ``COMPLETED``, ``NO_ANSWER`` and ``BUSY``.
    """

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
    RINGING = "ringing"
    """A call is ringing at the callee (or was offered to the business, inbound)."""
    ANSWERED = "answered"
    """A call was answered (connected)."""
    COMPLETED = "completed"
    """An answered call ended; the event's metadata has ``duration_seconds``."""
    NO_ANSWER = "no_answer"
    """A call rang and nobody answered it."""
    BUSY = "busy"
    """The callee's line was busy."""


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
#
# Each record has ONE attrs validator, on its last field (attrs runs validators
# after every field is set, and only while attrs.validators are enabled). It
# first tries a fast pass that only answers "certainly valid" for the common
# shapes (exact ``str``, ``datetime`` in UTC, enum members, ``None``...), and
# otherwise runs the per-field checks below in declaration order, so the first
# bad field is reported with its own check's error (type, field and reason are
# pinned by tests/test_model.py). Cross-field checks run after, in
# __attrs_post_init__.

MAX_ID_LENGTH: Final = 255
"""The most characters an id or other short plain-text field may have.

Ids, campaign ids, variants, provider names and the consent notice fields are
stored in the clear and indexed; PostgreSQL refuses an index entry over about
2,700 bytes, and 255 characters of UTF-8 stay well below it.

.. versionadded:: 0.4.0
"""

_LINE_USER_ID: Final = re.compile(r"U[0-9a-f]{32}")
_SURROGATE: Final = re.compile("[\ud800-\udfff]")
_NOT_PLAIN: Final = re.compile("[\x00\ud800-\udfff]")
_STATUS_CODE: Final = re.compile(r"[245]\.\d{1,3}\.\d{1,3}")
_status_code_match: Final = _STATUS_CODE.fullmatch

_Check = Callable[[str, object], None]


def _to_utc(value: object) -> object:
    """Convert an aware datetime to UTC; anything else is left for the validator."""
    if type(value) is datetime and value.tzinfo is UTC:
        return value  # what astimezone(UTC) would return
    if isinstance(value, datetime) and value.utcoffset() is not None:
        return value.astimezone(UTC)
    return value


def _optional_to_utc(value: object) -> object:
    return None if value is None else _to_utc(value)


def _aware(field: str, value: object) -> None:
    if not isinstance(value, datetime):
        raise PayloadError(field=field, reason=f"expected a datetime, got {_kind(value)}")
    if value.utcoffset() is None:
        raise NormalizationError(
            field=field, reason="naive datetime; give a time zone offset or a default zone"
        )


def _optional_aware(field: str, value: object) -> None:
    if value is not None:
        _aware(field, value)


def _plain(value: str) -> bool:
    """Whether *value* is certainly storable as plain text: short, ASCII, no NUL."""
    return len(value) <= MAX_ID_LENGTH and value.isascii() and "\x00" not in value


def _clean(value: str) -> bool:
    """Whether *value* is certainly free of lone surrogates (encodable as UTF-8)."""
    return value.isascii() or _SURROGATE.search(value) is None


def _check_plain(field: str, value: str) -> None:
    if len(value) > MAX_ID_LENGTH:
        raise PayloadError(field=field, reason=f"longer than {MAX_ID_LENGTH} characters")
    found = _NOT_PLAIN.search(value)
    if found is not None:
        if found.group() == "\x00":
            raise PayloadError(field=field, reason="contains a NUL character")
        raise PayloadError(field=field, reason="contains a lone surrogate (not valid Unicode)")


def _identifier(field: str, value: object) -> None:
    if not isinstance(value, str):
        raise PayloadError(field=field, reason=f"expected a string id, got {_kind(value)}")
    if not value.strip():
        raise PayloadError(field=field, reason="must not be empty")
    _check_plain(field, value)


def _optional_identifier(field: str, value: object) -> None:
    if value is not None:
        _identifier(field, value)


def _optional_text(field: str, value: object) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        raise PayloadError(field=field, reason=f"expected a string, got {_kind(value)}")
    if not _clean(value):
        raise PayloadError(field=field, reason="contains a lone surrogate (not valid Unicode)")


def _optional_plain_text(field: str, value: object) -> None:
    _optional_text(field, value)
    if value is not None:
        assert isinstance(value, str)
        _check_plain(field, value)


def _enum(cls: type[enum.Enum]) -> _Check:
    def check(field: str, value: object) -> None:
        if not isinstance(value, cls):
            allowed = ", ".join(str(m.value) for m in cls)
            raise PayloadError(field=field, reason=f"expected one of: {allowed}")

    return check


def _optional_enum(cls: type[enum.Enum]) -> _Check:
    inner = _enum(cls)

    def check(field: str, value: object) -> None:
        if value is not None:
            inner(field, value)

    return check


def _status_code(field: str, value: object) -> None:
    if value is None:
        return
    if not isinstance(value, str) or not _STATUS_CODE.fullmatch(value):
        raise NormalizationError(
            field=field, reason="expected an enhanced status code like '5.1.1'"
        )


def _boolean(field: str, value: object) -> None:
    if not isinstance(value, bool):
        raise PayloadError(field=field, reason=f"expected a boolean, got {_kind(value)}")


def _metadata(field: str, value: object) -> None:
    if not isinstance(value, Mapping):
        raise PayloadError(field=field, reason=f"expected an object, got {_kind(value)}")
    for key in value:
        if not isinstance(key, str):
            raise PayloadError(field=field, reason="keys must be strings")
        if not _clean(key):
            raise PayloadError(
                field=field, reason="a key contains a lone surrogate (not valid Unicode)"
            )


def _run_checks(record: object, checks: tuple[tuple[str, _Check], ...]) -> None:
    """Run per-field checks in order: the first bad field raises."""
    for name, check in checks:
        check(name, getattr(record, name))


def _plain_metadata(value: object) -> bool:
    """Whether *value* is certainly valid metadata (a dict with str keys)."""
    if type(value) is not dict:
        return False
    for key in value:
        if type(key) is not str or not (key.isascii() or _SURROGATE.search(key) is None):
            return False
    return True


def _text_ok(value: object) -> bool:
    """Whether *value* is certainly a valid optional text field."""
    return value is None or (type(value) is str and _clean(value))


def _plain_text_ok(value: object) -> bool:
    """Whether *value* is certainly a valid optional short plain-text field."""
    return value is None or (type(value) is str and _plain(value))


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
    if channel is Channel.EMAIL:
        if is_normalized_email(address):
            return
        try:
            canonical = normalize_email(address)
        except NormalizationError as exc:
            raise NormalizationError(field=field, reason=exc.reason) from None
        if canonical != address:
            raise NormalizationError(
                field=field, reason="email address is not normalized (use normalize_email)"
            )
    elif channel in (Channel.SMS, Channel.VOICE, Channel.WHATSAPP):
        if not address.startswith("+"):
            raise NormalizationError(
                field=field, reason="phone number must be E.164 (use normalize_phone)"
            )
        if is_normalized_phone(address):
            return
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

    message_id: str
    channel: Channel
    direction: Direction
    contact_id: str
    address: str = attrs.field(repr=False)
    sent_at: datetime = attrs.field(converter=_to_utc)
    purpose: Purpose = Purpose.MARKETING
    campaign_id: str | None = None
    variant: str | None = None
    subject: str | None = attrs.field(default=None, repr=False)
    body: str | None = attrs.field(default=None, repr=False)
    provider: str | None = None
    provider_message_id: str | None = None
    metadata: Mapping[str, JSONValue] = attrs.field(factory=dict, repr=False, hash=False)

    @metadata.validator
    def _validate(self, _attr: attrs.Attribute[Any], metadata: object) -> None:
        # The only attrs validator, on the last field: checks every field.
        message_id: object = self.message_id
        contact_id: object = self.contact_id
        sent_at: object = self.sent_at
        campaign_id: object = self.campaign_id
        variant: object = self.variant
        provider: object = self.provider
        provider_message_id: object = self.provider_message_id
        if not (
            type(message_id) is str
            and message_id.strip()
            and _plain(message_id)
            and type(self.channel) is Channel
            and type(self.direction) is Direction
            and type(contact_id) is str
            and contact_id.strip()
            and _plain(contact_id)
            and _text_ok(self.address)
            and type(sent_at) is datetime
            and sent_at.tzinfo is UTC
            and type(self.purpose) is Purpose
            and (
                campaign_id is None
                or (type(campaign_id) is str and campaign_id.strip() and _plain(campaign_id))
            )
            and (variant is None or (type(variant) is str and variant.strip() and _plain(variant)))
            and _text_ok(self.subject)
            and _text_ok(self.body)
            and (
                provider is None
                or (type(provider) is str and provider.strip() and _plain(provider))
            )
            and (
                provider_message_id is None
                or (
                    type(provider_message_id) is str
                    and provider_message_id.strip()
                    and _plain(provider_message_id)
                )
            )
            and _plain_metadata(metadata)
        ):
            _run_checks(self, _MESSAGE_CHECKS)

    def __attrs_post_init__(self) -> None:
        address: object = self.address
        if not isinstance(address, str):
            raise PayloadError(field="address", reason="required")
        check_address(self.channel, address)


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

    event_id: str
    type: EventType
    occurred_at: datetime = attrs.field(converter=_to_utc)
    message_id: str | None = None
    provider: str | None = None
    provider_message_id: str | None = None
    provider_event_id: str | None = None
    address: str | None = attrs.field(default=None, repr=False)
    status_code: str | None = None
    bounce: BounceClass | None = None
    reason: str | None = attrs.field(default=None, repr=False)
    url: str | None = attrs.field(default=None, repr=False)
    user_agent: str | None = attrs.field(default=None, repr=False)
    ip: str | None = attrs.field(default=None, repr=False)
    machine: bool = False
    revenue: Decimal | None = None
    currency: str | None = None
    metadata: Mapping[str, JSONValue] = attrs.field(factory=dict, repr=False, hash=False)

    @metadata.validator
    def _validate(self, _attr: attrs.Attribute[Any], metadata: object) -> None:
        # The only attrs validator, on the last field: checks every field.
        event_id: object = self.event_id
        occurred_at: object = self.occurred_at
        message_id: object = self.message_id
        provider: object = self.provider
        provider_message_id: object = self.provider_message_id
        provider_event_id: object = self.provider_event_id
        status_code: object = self.status_code
        bounce: object = self.bounce
        machine: object = self.machine
        if not (
            type(event_id) is str
            and event_id.strip()
            and _plain(event_id)
            and type(self.type) is EventType
            and type(occurred_at) is datetime
            and occurred_at.tzinfo is UTC
            and (
                message_id is None
                or (type(message_id) is str and message_id.strip() and _plain(message_id))
            )
            and (
                provider is None
                or (type(provider) is str and provider.strip() and _plain(provider))
            )
            and (
                provider_message_id is None
                or (
                    type(provider_message_id) is str
                    and provider_message_id.strip()
                    and _plain(provider_message_id)
                )
            )
            and (
                provider_event_id is None
                or (
                    type(provider_event_id) is str
                    and provider_event_id.strip()
                    and _plain(provider_event_id)
                )
            )
            and _text_ok(self.address)
            and (
                status_code is None
                or (type(status_code) is str and _status_code_match(status_code) is not None)
            )
            and (bounce is None or type(bounce) is BounceClass)
            and _text_ok(self.reason)
            and _text_ok(self.url)
            and _text_ok(self.user_agent)
            and _text_ok(self.ip)
            and (machine is True or machine is False)
            and _plain_metadata(metadata)
        ):
            _run_checks(self, _EVENT_CHECKS)

    def __attrs_post_init__(self) -> None:
        if self.message_id is None and (self.provider is None or self.provider_message_id is None):
            raise PayloadError(
                field="message_id",
                reason="required, or give both provider and provider_message_id",
            )
        if self.revenue is not None or self.currency is not None:
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
        source: Where it happened: a form URL, a form id, a keyword. Personal (a form
            URL may carry the customer's address).
        notice_version: The version of the consent notice shown.
        notice_hash: A hash of the notice's wording.
        ip: The customer's IP address. Personal.
        user_agent: The customer's user agent. Personal.
        actor: Who recorded it (a staff or system id).
        metadata: Host-defined JSON data. Treated as personal (encrypted at rest).

    .. versionadded:: 0.1.0
    """

    contact_id: str
    channel: Channel
    purpose: Purpose
    action: ConsentAction
    occurred_at: datetime = attrs.field(converter=_to_utc)
    method: ConsentMethod
    consent_id: str | None = None
    recorded_at: datetime | None = attrs.field(default=None, converter=_optional_to_utc)
    source: str | None = attrs.field(default=None, repr=False)
    notice_version: str | None = None
    notice_hash: str | None = None
    ip: str | None = attrs.field(default=None, repr=False)
    user_agent: str | None = attrs.field(default=None, repr=False)
    actor: str | None = None
    metadata: Mapping[str, JSONValue] = attrs.field(factory=dict, repr=False, hash=False)

    @metadata.validator
    def _validate(self, _attr: attrs.Attribute[Any], metadata: object) -> None:
        # The only attrs validator, on the last field: checks every field.
        contact_id: object = self.contact_id
        occurred_at: object = self.occurred_at
        consent_id: object = self.consent_id
        recorded_at: object = self.recorded_at
        if not (
            type(contact_id) is str
            and contact_id.strip()
            and _plain(contact_id)
            and type(self.channel) is Channel
            and type(self.purpose) is Purpose
            and type(self.action) is ConsentAction
            and type(occurred_at) is datetime
            and occurred_at.tzinfo is UTC
            and type(self.method) is ConsentMethod
            and (
                consent_id is None
                or (type(consent_id) is str and consent_id.strip() and _plain(consent_id))
            )
            and (
                recorded_at is None
                or (type(recorded_at) is datetime and recorded_at.tzinfo is UTC)
            )
            and _text_ok(self.source)
            and _plain_text_ok(self.notice_version)
            and _plain_text_ok(self.notice_hash)
            and _text_ok(self.ip)
            and _text_ok(self.user_agent)
            and _plain_text_ok(self.actor)
            and _plain_metadata(metadata)
        ):
            _run_checks(self, _CONSENT_CHECKS)


# The per-field checks of each record, in declaration order: the slow path of its
# validator. (An event's revenue and currency are checked together, after them.)
_MESSAGE_CHECKS: Final[tuple[tuple[str, _Check], ...]] = (
    ("message_id", _identifier),
    ("channel", _enum(Channel)),
    ("direction", _enum(Direction)),
    ("contact_id", _identifier),
    ("address", _optional_text),  # None is refused after every field check
    ("sent_at", _aware),
    ("purpose", _enum(Purpose)),
    ("campaign_id", _optional_identifier),
    ("variant", _optional_identifier),
    ("subject", _optional_text),
    ("body", _optional_text),
    ("provider", _optional_identifier),
    ("provider_message_id", _optional_identifier),
    ("metadata", _metadata),
)
_EVENT_CHECKS: Final[tuple[tuple[str, _Check], ...]] = (
    ("event_id", _identifier),
    ("type", _enum(EventType)),
    ("occurred_at", _aware),
    ("message_id", _optional_identifier),
    ("provider", _optional_identifier),
    ("provider_message_id", _optional_identifier),
    ("provider_event_id", _optional_identifier),
    ("address", _optional_text),
    ("status_code", _status_code),
    ("bounce", _optional_enum(BounceClass)),
    ("reason", _optional_text),
    ("url", _optional_text),
    ("user_agent", _optional_text),
    ("ip", _optional_text),
    ("machine", _boolean),
    ("metadata", _metadata),
)
_CONSENT_CHECKS: Final[tuple[tuple[str, _Check], ...]] = (
    ("contact_id", _identifier),
    ("channel", _enum(Channel)),
    ("purpose", _enum(Purpose)),
    ("action", _enum(ConsentAction)),
    ("occurred_at", _aware),
    ("method", _enum(ConsentMethod)),
    ("consent_id", _optional_identifier),
    ("recorded_at", _optional_aware),
    ("source", _optional_text),
    ("notice_version", _optional_plain_text),
    ("notice_hash", _optional_plain_text),
    ("ip", _optional_text),
    ("user_agent", _optional_text),
    ("actor", _optional_plain_text),
    ("metadata", _metadata),
)

# --------------------------------------------------------------------------- activities

ACTIVITY_NAME: Final = re.compile(r"[a-z][a-z0-9_]{0,63}")
"""What an activity name looks like: lower case, digits and ``_``, at most 64 characters.

.. versionadded:: 0.4.0
"""


def _activity_name(field: str, value: object) -> None:
    if not isinstance(value, str):
        raise PayloadError(field=field, reason=f"expected a string, got {_kind(value)}")
    if not ACTIVITY_NAME.fullmatch(value):
        raise PayloadError(
            field=field,
            reason="expected a lower-case name of letters, digits and '_' (at most 64), "
            "like 'purchase'",
        )


@attrs.frozen(kw_only=True)
class Activity:
    """Something a contact did outside a message: a purchase, a page view, a signup.

    The host declares the names it records and which property keys are plain
    (see :doc:`/activities`); the record itself only checks the shape.

    Attributes:
        activity_id: The host's unique id for it: retried imports are duplicates.
        contact_id: The contact who did it.
        name: What they did, one of the host's declared names (``"purchase"``).
        occurred_at: When, UTC.
        revenue: The amount, for activities that earn (a purchase).
        currency: The ISO 4217 currency of ``revenue``.
        properties: Host-defined JSON data. Keys the host declared plain are
            stored in the clear (to filter on); every other key is personal and
            encrypted with the contact's key. Left out of ``repr()``.

    .. versionadded:: 0.4.0
    """

    activity_id: str
    contact_id: str
    name: str
    occurred_at: datetime = attrs.field(converter=_to_utc)
    revenue: Decimal | None = None
    currency: str | None = None
    properties: Mapping[str, JSONValue] = attrs.field(factory=dict, repr=False, hash=False)

    @properties.validator
    def _validate(self, _attr: attrs.Attribute[Any], properties: object) -> None:
        # The only attrs validator, on the last field: checks every field.
        activity_id: object = self.activity_id
        contact_id: object = self.contact_id
        name: object = self.name
        occurred_at: object = self.occurred_at
        if not (
            type(activity_id) is str
            and activity_id.strip()
            and _plain(activity_id)
            and type(contact_id) is str
            and contact_id.strip()
            and _plain(contact_id)
            and type(name) is str
            and ACTIVITY_NAME.fullmatch(name) is not None
            and type(occurred_at) is datetime
            and occurred_at.tzinfo is UTC
            and _plain_metadata(properties)
        ):
            _run_checks(self, _ACTIVITY_CHECKS)

    def __attrs_post_init__(self) -> None:
        if self.revenue is not None or self.currency is not None:
            _check_money(self.revenue, self.currency)


_ACTIVITY_CHECKS: Final[tuple[tuple[str, _Check], ...]] = (
    ("activity_id", _identifier),
    ("contact_id", _identifier),
    ("name", _activity_name),
    ("occurred_at", _aware),
    ("properties", _metadata),
)

# --------------------------------------------------------------------------- contact attributes

_ATTRIBUTE_NAME: Final = re.compile(r"[a-z][a-z0-9_]{0,62}")
_ATTRIBUTE_SCALARS: Final = (str, bool, int, float, Decimal, date)


def check_attribute_name(name: object, *, field: str = "attributes") -> str:
    """Check a contact attribute's name: lower-case letters, digits and ``_``, 1 to 63 long.

    Raises:
        PayloadError: The name is not of that form (named only when safe to show).

    .. versionadded:: 0.4.0
    """
    if not isinstance(name, str):
        raise PayloadError(field=field, reason=f"an attribute name is a {_kind(name)}")
    if not _ATTRIBUTE_NAME.fullmatch(name):
        shown = name if len(name) <= 63 and name.isascii() and name.isprintable() else None
        what = f"attribute name {shown!r}" if shown and "@" not in shown else "an attribute name"
        raise PayloadError(
            field=field,
            reason=f"{what} must be lower-case letters, digits and '_', starting with a letter",
        )
    return name


def _check_attribute_value(name: str, value: object) -> None:
    field = f"attributes.{name}"
    if value is None or isinstance(value, _ATTRIBUTE_SCALARS):
        if isinstance(value, datetime) and value.utcoffset() is None:
            raise NormalizationError(field=field, reason="naive datetime; give an offset")
        if isinstance(value, str) and not _clean(value):
            raise PayloadError(field=field, reason="contains a lone surrogate (not valid Unicode)")
        return
    if isinstance(value, list | tuple):
        for item in value:
            if not isinstance(item, str):
                raise PayloadError(
                    field=field, reason=f"a list may hold only strings, not {_kind(item)}"
                )
            if not _clean(item):
                raise PayloadError(
                    field=field, reason="contains a lone surrogate (not valid Unicode)"
                )
        return
    raise PayloadError(field=field, reason=f"unsupported value type {_kind(value)}")


def _attribute_map(value: object) -> object:
    """Freeze the attributes given: a plain dict copy, lists as tuples."""
    if not isinstance(value, Mapping):
        return value
    return {k: tuple(v) if isinstance(v, list) else v for k, v in value.items()}


@attrs.frozen(kw_only=True)
class ContactUpdate:
    """New values of some of a contact's attributes, from a moment on.

    The attributes are checked against the host's declared schema when stored
    (:mod:`commhistory.contacts`), not here: a record only holds what was given.
    ``None`` as a value unsets the attribute.

    Attributes:
        contact_id: The contact.
        attributes: ``{name: value}``; values are ``None``, ``str``, ``int``,
            ``float``, ``bool``, :class:`~decimal.Decimal`, :class:`~datetime.date`,
            aware :class:`~datetime.datetime` or a list of strings (as read from
            JSON: strings for dates and decimals are converted by the schema).
            May be personal: kept out of ``repr()``.
        at: When the values took effect, UTC.

    .. versionadded:: 0.4.0
    """

    contact_id: str
    attributes: Mapping[str, Any] = attrs.field(converter=_attribute_map, repr=False, hash=False)
    at: datetime = attrs.field(converter=_to_utc)

    @at.validator
    def _validate(self, _attr: attrs.Attribute[Any], at: object) -> None:
        _identifier("contact_id", self.contact_id)
        attributes: object = self.attributes
        if not isinstance(attributes, Mapping):
            raise PayloadError(
                field="attributes", reason=f"expected an object, got {_kind(attributes)}"
            )
        if not attributes:
            raise PayloadError(field="attributes", reason="must name at least one attribute")
        for name, value in attributes.items():
            check_attribute_name(name)
            _check_attribute_value(name, value)
        _aware("at", at)


Record = Message | Event | ConsentEvent | Activity | ContactUpdate
"""Any canonical record.

.. versionchanged:: 0.4.0
   :class:`Activity` and :class:`ContactUpdate` too.
"""


# ---------------------------------------------------------------------- suppression


class SuppressionReason(enum.StrEnum):
    """Why an address is suppressed.

    .. versionadded:: 0.1.0
    """

    HARD_BOUNCE = "hard_bounce"
    SOFT_BOUNCE_LIMIT = "soft_bounce_limit"
    COMPLAINT = "complaint"
    UNSUBSCRIBE = "unsubscribe"
    SMS_KEYWORD = "sms_keyword"
    LINE_UNFOLLOW = "line_unfollow"
    MANUAL = "manual"
    ERASURE = "erasure"


@attrs.frozen(kw_only=True)
class SuppressionEntry:
    """One address-level suppression: the address is known only by its keyed blind index.

    Attributes:
        suppression_id: The entry's id (derived from its cause, so feeding twice is a no-op).
        kind: The address kind: ``"email"``, ``"phone"`` or ``"line"``.
        channel: The channel it applies to.
        purpose: The purpose it applies to; ``None`` for every purpose.
        reason: Why.
        since: When it started (the cause's time), UTC.
        cause_id: The event, message or consent id that caused it, if any.
        lifted_at: When it was lifted, if it was.
        lifted_by: What lifted it (a message id, consent id or ``"manual"``).
        address_key: The blind index of the address. Not shown in ``repr()``.
        index_key_id: The keyring key the blind index was computed under.

    .. versionadded:: 0.1.0
    .. versionchanged:: 0.4.0
       Defined in :mod:`commhistory.model` (the store returns it); still exported by
       :mod:`commhistory.consent`.
    """

    suppression_id: str
    kind: str
    channel: Channel
    purpose: Purpose | None
    reason: SuppressionReason
    since: datetime
    cause_id: str | None = None
    lifted_at: datetime | None = None
    lifted_by: str | None = None
    address_key: bytes = attrs.field(default=b"", repr=False)
    index_key_id: str = ""

    def active_at(self, at: datetime) -> bool:
        """Whether the entry is in force at *at*."""
        return self.since <= at and (self.lifted_at is None or self.lifted_at > at)

    def covers(self, purpose: Purpose) -> bool:
        """Whether the entry applies to messages of *purpose*."""
        return self.purpose is None or self.purpose is purpose

    def describe(self) -> str:
        """A human-readable, personal-data-free sentence about the entry."""
        scope = "all purposes" if self.purpose is None else self.purpose.value
        cause = f", cause {self.cause_id}" if self.cause_id else ""
        since = self.since.isoformat().replace("+00:00", "Z")
        return (
            f"{self.kind} address suppressed on {self.channel.value} ({scope}) since "
            f"{since}: {self.reason.value}{cause}"
        )


ADDRESS_KINDS: Final[Mapping[Channel, str]] = {
    Channel.EMAIL: "email",
    Channel.SMS: "phone",
    Channel.VOICE: "phone",
    Channel.LINE: "line",
    Channel.WHATSAPP: "phone",
}
"""The blind-index kind of a message address, by channel (other channels are not indexed)."""


def consent_id_of(item: ConsentEvent) -> str:
    """Return the consent event's id, derived from its content when it has none.

    The derived id hashes only the non-personal fields (not ip, user agent,
    source or metadata), so the id reveals nothing that is stored encrypted.

    .. versionadded:: 0.4.0
    """
    if item.consent_id is not None:
        return item.consent_id
    parts = (
        item.contact_id,
        item.channel.value,
        item.purpose.value,
        item.action.value,
        str(to_micros(item.occurred_at)),
        item.method.value,
        "" if item.recorded_at is None else str(to_micros(item.recorded_at)),
        item.notice_version or "",
        item.notice_hash or "",
        item.actor or "",
    )
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()
    return f"sha256:{digest[:32]}"
