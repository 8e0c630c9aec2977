"""Twilio Programmable Messaging: SMS status callbacks and inbound SMS.

Twilio POSTs ``application/x-www-form-urlencoded`` parameters and signs them in
``X-Twilio-Signature``: base64 HMAC-SHA1, under the account's auth token, of
the full URL Twilio called (with its query string) followed by every POST
parameter's name and value, sorted by name. The adapter therefore needs the
URL as Twilio saw it (behind a proxy, give the public URL). Like Twilio's own
libraries, it also accepts the URL with the scheme's default port added or
removed. Twilio signs no timestamp, so there is no staleness check; retried
callbacks are deduplicated instead.

Webhooks with a JSON body (Event Streams webhook sinks) are signed another
way, since a JSON body has no parameters: Twilio appends a ``bodySHA256``
query parameter, the hex SHA-256 of the raw body, to the URL, and signs that
URL alone. The adapter checks the signature over the URL, then that
``bodySHA256`` is the hash of the body it received. A request whose URL carries
``bodySHA256``, or whose content type is JSON, is verified this way.

* A status callback (``MessageStatus``) becomes an :class:`~commhistory.Event`
  linked by ``provider="twilio"`` + ``MessageSid``. Twilio gives it no time
  and no event id: ``occurred_at`` is when it was received and the dedupe key
  is a hash of ``MessageSid``, ``MessageStatus`` and ``ErrorCode``.
* An inbound SMS becomes an inbound :class:`~commhistory.Message`. When its
  whole body is a standard opt-out (``STOP``...) or opt-in (``START``...)
  keyword, the repository derives the consent change and the suppression from
  that message when it is stored (:mod:`commhistory.consent.suppression`).
  When only Twilio's ``OptOutType`` parameter (Advanced Opt-Out) or one of
  the adapter's extra keywords says so, the adapter adds the
  :class:`~commhistory.ConsentEvent` itself (method ``sms_keyword``, SMS
  marketing).
* The channel of an inbound message is its sender's: ``From: whatsapp:+31...``
  is :attr:`~commhistory.Channel.WHATSAPP` (its keywords change WhatsApp
  consent, never SMS consent), ``rcs:+31...`` is SMS (see
  :func:`sender_channel`), a bare number is SMS.
* A JSON body is an array of Event Streams CloudEvents (or one of them).
  ``com.twilio.messaging.message.<status>`` becomes an event like a status
  callback, timed by ``data.timestamp``;
  ``com.twilio.messaging.inbound-message.received`` becomes an inbound message
  like an inbound SMS (``data.optOutType`` playing ``OptOutType``'s part); the
  sink's test event produces nothing. Both keep the form callbacks' ids, so a
  message reported both ways is stored once.

Twilio Voice status callbacks (and voice webhooks) are signed the same way and
are told apart by ``CallSid``: each becomes the call's
:class:`~commhistory.Message` on :attr:`~commhistory.Channel.VOICE` (id
``twilio:<CallSid>``, repeated by every callback of the call, so it is stored
once; the customer is ``From`` of an inbound call and ``To`` of an outbound
one, resolved like an inbound SMS sender) and one :class:`~commhistory.Event`
per ``CallStatus`` (see :data:`CALL_STATUS_TYPES`), timed by ``Timestamp``.
A ``completed`` event keeps ``CallDuration`` as ``metadata["duration_seconds"]``.
See ``docs/providers/voice.md``.

.. versionadded:: 0.1.0
.. versionchanged:: 0.3.0
   JSON-bodied webhooks signed with ``bodySHA256`` (Event Streams).
.. versionchanged:: 0.4.0
   Inbound WhatsApp messages are on the WhatsApp channel, not SMS; Voice
   status callbacks become voice messages and call events.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar, Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from commhistory.consent import sms_keyword
from commhistory.errors import InvalidInputError, PayloadError, SignatureError
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
    Record,
)
from commhistory.providers._shared import unknown_event
from commhistory.providers.base import (
    WebhookAdapter,
    WebhookRequest,
    as_object,
    content_hash,
    decode_form,
    decode_json,
    get_mapping,
    get_str,
    hmac_equal,
    iso_time,
    json_type,
    mail_date,
    phone_address,
    require_str,
)
from commhistory.providers.registry import (
    ProviderSpec,
    SignedRequest,
    json_body,
    register_provider,
)

__all__ = [
    "BODY_HASH_PARAMETER",
    "BOUNCE_BY_ERROR",
    "CALL_DIRECTIONS",
    "CALL_STATUS_TYPES",
    "INBOUND_EVENT_TYPE",
    "OPT_IN_KEYWORDS",
    "OPT_OUT_KEYWORDS",
    "PROVIDER",
    "SIGNATURE_HEADER",
    "STATUS_EVENT_PREFIX",
    "STATUS_TYPES",
    "TEST_EVENT_TYPE",
    "WHATSAPP_PREFIX",
    "TwilioAdapter",
    "sender_channel",
    "twilio_body_hash",
    "twilio_body_url",
    "twilio_signature",
]

SIGNATURE_HEADER: Final = "X-Twilio-Signature"

BODY_HASH_PARAMETER: Final = "bodySHA256"
"""The query parameter carrying the hex SHA-256 of a JSON body."""

STATUS_EVENT_PREFIX: Final = "com.twilio.messaging.message."
"""Event Streams types of outbound message status changes (``...delivered``)."""

INBOUND_EVENT_TYPE: Final = "com.twilio.messaging.inbound-message.received"
"""The Event Streams type of an inbound message."""

TEST_EVENT_TYPE: Final = "com.twilio.eventstreams.test-event"
WHATSAPP_PREFIX: Final = "whatsapp:"
"""How Twilio writes a WhatsApp address (``whatsapp:+14155238886``)."""
"""The event Twilio sends to test a sink; it produces no records."""

STATUS_TYPES: Final[Mapping[str, EventType]] = {
    "accepted": EventType.QUEUED,
    "scheduled": EventType.QUEUED,
    "queued": EventType.QUEUED,
    "sending": EventType.SENT,
    "sent": EventType.SENT,
    "delivered": EventType.DELIVERED,
    "undelivered": EventType.BOUNCED,
    "failed": EventType.FAILED,
    "read": EventType.OPENED,
    "canceled": EventType.REJECTED,
}
"""Twilio's ``MessageStatus`` values (lower case); any other makes the callback a dead letter."""

BOUNCE_BY_ERROR: Final[Mapping[str, BounceClass]] = {
    "30003": BounceClass.SOFT,  # unreachable destination handset
    "30004": BounceClass.BLOCK,  # message blocked
    "30005": BounceClass.HARD,  # unknown destination handset
    "30006": BounceClass.HARD,  # landline or unreachable carrier
    "30007": BounceClass.BLOCK,  # carrier filtering
    "30008": BounceClass.UNDETERMINED,  # unknown error
    "21610": BounceClass.BLOCK,  # recipient replied STOP earlier
    "21614": BounceClass.HARD,  # not a mobile number
}
"""Bounce classes of an ``undelivered`` message by Twilio ``ErrorCode``."""

CALL_STATUS_TYPES: Final[Mapping[str, EventType]] = {
    "queued": EventType.QUEUED,
    "initiated": EventType.QUEUED,
    "ringing": EventType.RINGING,
    "in-progress": EventType.ANSWERED,
    "answered": EventType.ANSWERED,
    "completed": EventType.COMPLETED,
    "busy": EventType.BUSY,
    "no-answer": EventType.NO_ANSWER,
    "failed": EventType.FAILED,
    "canceled": EventType.REJECTED,
}
"""Twilio Voice ``CallStatus`` values (lower case); any other makes the callback a dead letter.

``canceled`` (the call was ended through the API before it was answered) is
``REJECTED``: the call never reached the customer.

.. versionadded:: 0.4.0
"""

CALL_DIRECTIONS: Final[Mapping[str, Direction]] = {
    "inbound": Direction.INBOUND,
    "outbound-api": Direction.OUTBOUND,
    "outbound-dial": Direction.OUTBOUND,
}
"""Twilio Voice ``Direction`` values.

.. versionadded:: 0.4.0
"""

OPT_OUT_KEYWORDS: Final = frozenset(
    {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"}
)
"""Bodies (trimmed, case-insensitive) that withdraw SMS consent (Twilio's defaults)."""

OPT_IN_KEYWORDS: Final = frozenset({"START", "YES", "UNSTOP"})
"""Bodies (trimmed, case-insensitive) that grant SMS consent again."""


def twilio_signature(auth_token: str, url: str, params: Mapping[str, Any]) -> str:
    """Compute Twilio's ``X-Twilio-Signature`` for a URL and its POST parameters.

    Args:
        auth_token: The account's auth token.
        url: The full URL, with the query string.
        params: The POST parameters; a list value is a repeated parameter.
            Empty for a JSON-bodied request (whose URL carries ``bodySHA256``).

    Returns:
        The base64 HMAC-SHA1 signature.
    """
    parts = [url]
    for key in sorted(params):
        value = params[key]
        values = value if isinstance(value, list) else [value]
        parts.extend(f"{key}{v}" for v in sorted(str(v) for v in values))
    mac = hmac.new(auth_token.encode("utf-8"), "".join(parts).encode("utf-8"), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode("ascii")


def twilio_body_hash(body: bytes) -> str:
    """Return the ``bodySHA256`` value of a raw body: its SHA-256, in lower-case hex.

    .. versionadded:: 0.3.0
    """
    return hashlib.sha256(body).hexdigest()


def twilio_body_url(url: str, body: bytes) -> str:
    """Return *url* with ``bodySHA256`` appended, the URL Twilio signs for a JSON body.

    Args:
        url: The webhook URL as configured at Twilio.
        body: The raw JSON body.

    .. versionadded:: 0.3.0
    """
    return _with_body_hash(url, twilio_body_hash(body))


def _with_body_hash(url: str, digest: str) -> str:
    parts = urlsplit(url)
    pair = f"{BODY_HASH_PARAMETER}={digest}"
    return urlunsplit(parts._replace(query=f"{parts.query}&{pair}" if parts.query else pair))


def _body_hashes(url: str | None) -> list[str]:
    """The ``bodySHA256`` values in a URL's query string."""
    if not url or BODY_HASH_PARAMETER not in url:
        return []
    try:
        query = urlsplit(url).query
    except ValueError:
        return []
    return [v for k, v in parse_qsl(query, keep_blank_values=True) if k == BODY_HASH_PARAMETER]


def _is_json_type(content_type: str) -> bool:
    return content_type == "application/json" or content_type.endswith("+json")


def _url_variants(url: str) -> Iterable[str]:
    """The URL as given, then with the default port added or removed."""
    yield url
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return
    default = {"https": 443, "http": 80}.get(parts.scheme)
    if default is None or parts.hostname is None:
        return
    host = parts.hostname
    userinfo = parts.netloc.rpartition("@")[0]
    prefix = f"{userinfo}@" if userinfo else ""
    if port is None:
        yield urlunsplit(parts._replace(netloc=f"{prefix}{host}:{default}"))
    elif port == default:
        yield urlunsplit(parts._replace(netloc=f"{prefix}{host}"))


class _CloudEvent(dict[str, Any]):
    """An Event Streams event from a JSON body (tells it apart from form parameters)."""

    __slots__ = ()


class TwilioAdapter(WebhookAdapter):
    """Verifies and parses Twilio SMS status callbacks and inbound SMS.

    Form-encoded callbacks and JSON-bodied Event Streams deliveries are both
    accepted; see the module documentation for how each is verified.

    Args:
        auth_token: The account's auth token (the HMAC key).
        url: The public URL Twilio calls, when every request arrives at the
            same one; otherwise each request's ``url`` is used. For JSON
            bodies, give it without ``bodySHA256``: the hash of each body is
            appended to it.
        region: The region for phone numbers without a country code.
        opt_out_keywords: Bodies that withdraw SMS marketing consent.
        opt_in_keywords: Bodies that grant it again.
        **options: :class:`~commhistory.providers.base.WebhookAdapter` options;
            inbound SMS needs ``contact_resolver``.

    .. versionadded:: 0.1.0
    """

    name: ClassVar[str] = "twilio"

    def __init__(
        self,
        auth_token: str,
        *,
        url: str | None = None,
        region: str = "JP",
        opt_out_keywords: Iterable[str] = OPT_OUT_KEYWORDS,
        opt_in_keywords: Iterable[str] = OPT_IN_KEYWORDS,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        secret: object = auth_token
        if not isinstance(secret, str) or not secret:
            raise InvalidInputError(field="auth_token", reason="must be a non-empty string")
        self._token = auth_token
        self._url = url
        self._region = region
        self._opt_out = frozenset(k.strip().upper() for k in opt_out_keywords)
        self._opt_in = frozenset(k.strip().upper() for k in opt_in_keywords)

    # ------------------------------------------------------------------ verification

    def _verify(self, request: WebhookRequest) -> None:
        signature = request.header(SIGNATURE_HEADER)
        if not signature:
            raise SignatureError(f"missing header {SIGNATURE_HEADER}")
        url = self._url or request.url
        if not url:
            raise SignatureError("the request URL is needed to verify Twilio signatures")
        if (
            _body_hashes(request.url)
            or _body_hashes(self._url)
            or _is_json_type(request.content_type)
        ):
            self._verify_body_hash(request, url, signature.strip())
            return
        try:
            params = decode_form(request.body)
        except PayloadError as exc:
            raise SignatureError(f"the body cannot be read as form data ({exc.reason})") from None
        self._check_signature(url, params, signature.strip())

    def _verify_body_hash(self, request: WebhookRequest, url: str, signature: str) -> None:
        """The JSON rule: the URL with ``bodySHA256`` is signed; the hash covers the body."""
        actual = twilio_body_hash(request.body)
        given = _body_hashes(url)
        appended = not given
        if appended and self._url is not None:
            given = _body_hashes(request.url)  # Twilio appended it to the configured URL
        if len(given) > 1:
            raise SignatureError(f"{BODY_HASH_PARAMETER}: given more than once in the URL")
        if appended:
            # Without a bodySHA256 to read, sign over the body's own hash: a match
            # then proves the body too.
            url = _with_body_hash(url, given[0] if given else actual)
        self._check_signature(url, {}, signature)
        if given and not hmac_equal(actual, given[0].lower()):
            raise SignatureError(
                f"{BODY_HASH_PARAMETER} does not match the body (the body was altered, or"
                " re-encoded before it reached the adapter: pass the raw bytes)"
            )

    def _check_signature(self, url: str, params: Mapping[str, Any], signature: str) -> None:
        for candidate in _url_variants(url):
            if hmac_equal(twilio_signature(self._token, candidate, params), signature):
                return
        raise SignatureError(
            "signature does not match (wrong auth token, or the URL differs from the one"
            " Twilio called: check the scheme, host, port and query string)"
        )

    # ------------------------------------------------------------------ decoding

    def _decode(self, request: WebhookRequest) -> Any:
        body = request.body
        if (
            _is_json_type(request.content_type)
            or _body_hashes(request.url)
            or body.lstrip()[:1] in (b"[", b"{")
        ):
            payload = decode_json(body)
            if isinstance(payload, list):
                items = payload
            elif isinstance(payload, dict):
                items = [payload]
            else:
                raise PayloadError(
                    field="<body>",
                    reason=f"expected an event or an array of events, got {json_type(payload)}",
                )
            return [_CloudEvent(item) if isinstance(item, dict) else item for item in items]
        return decode_form(body)

    def _events(self, payload: Any, request: WebhookRequest) -> Sequence[Any]:
        if isinstance(payload, list):
            return payload
        if not payload:
            raise PayloadError(field="<body>", reason="no parameters")
        return [payload]

    # ------------------------------------------------------------------ parsing

    def _parse_event(self, event: Any) -> list[Record]:
        if isinstance(event, _CloudEvent):
            return self._cloud_event(event)
        if type(event) is not dict:  # an element of a JSON array that is not an object
            as_object(event)
        item: Mapping[str, Any] = event
        sid = get_str(item, "MessageSid") or get_str(item, "SmsSid")
        if sid is None and "CallSid" in item:
            return self._call(item)
        if sid is None:
            raise PayloadError(field="MessageSid", reason="required")
        status = get_str(item, "MessageStatus") or get_str(item, "SmsStatus") or ""
        raw = {"provider_raw": dict(item)}
        if status == "received" or (not get_str(item, "MessageStatus") and "Body" in item):
            return self._inbound(
                sid,
                sender=item.get("From"),
                sender_field="From",
                body=get_str(item, "Body") or "",
                opt_out_type=get_str(item, "OptOutType"),
                received=self._now(),
                raw=raw,
            )
        return [
            self._status(
                sid,
                status=status,
                error_code=get_str(item, "ErrorCode"),
                to=get_str(item, "To"),
                occurred_at=self._now(),
                raw=raw,
            )
        ]

    def _cloud_event(self, item: Mapping[str, Any]) -> list[Record]:
        kind = require_str(item, "type")
        if kind == TEST_EVENT_TYPE:
            return []
        if "data" not in item:
            raise PayloadError(field="data", reason="required")
        data = get_mapping(item, "data")
        sid = get_str(data, "messageSid")
        if sid is None:
            raise PayloadError(field="data.messageSid", reason="required")
        when = data.get("timestamp") or item.get("time")
        occurred_at = iso_time(when, field="data.timestamp")
        raw = {"provider_raw": dict(item)}
        if kind == INBOUND_EVENT_TYPE:
            return self._inbound(
                sid,
                sender=data.get("from"),
                sender_field="data.from",
                body=get_str(data, "body") or "",
                opt_out_type=get_str(data, "optOutType"),
                received=occurred_at,
                raw=raw,
            )
        if kind.startswith(STATUS_EVENT_PREFIX):
            status = kind.removeprefix(STATUS_EVENT_PREFIX)
        else:
            status = (get_str(data, "messageStatus") or "").lower()
        return [
            self._status(
                sid,
                status=status,
                error_code=get_str(data, "errorCode"),
                to=get_str(data, "to"),
                occurred_at=occurred_at,
                raw=raw,
            )
        ]

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), tz=UTC)

    def _call(self, item: Mapping[str, Any]) -> list[Record]:
        """A Voice status callback (or a voice webhook): the call's message and its event."""
        sid = require_str(item, "CallSid")
        status = require_str(item, "CallStatus").strip().lower()
        given = require_str(item, "Direction").strip().lower()
        direction = CALL_DIRECTIONS.get(given)
        if direction is None:
            allowed = ", ".join(sorted(CALL_DIRECTIONS))
            raise PayloadError(field="Direction", reason=f"expected one of: {allowed}")
        # The customer is the caller of an inbound call and the callee of an outbound one.
        party = "From" if direction is Direction.INBOUND else "To"
        address = phone_address(item.get(party), field=party, region=self._region)
        contact = self.resolve_contact(Channel.VOICE, address)
        occurred_at = mail_date(item.get("Timestamp")) or self._now()
        raw = dict(item)
        metadata: dict[str, Any] = {"provider_raw": raw}
        type_ = CALL_STATUS_TYPES.get(status)
        if type_ is None:
            raise unknown_event("CallStatus", status)
        if type_ is EventType.COMPLETED:
            duration = get_str(item, "CallDuration")
            if duration is not None:
                if not duration.isdigit() or len(duration) > 9:
                    raise PayloadError(field="CallDuration", reason="expected whole seconds")
                metadata["duration_seconds"] = int(duration)
        error_code = get_str(item, "ErrorCode")
        # One key per call and status: a retried callback is a duplicate.
        event_id, provider_event_id = self.ids(content_hash(["call", sid, status]))
        message = Message(
            message_id=f"{self.name}:{sid}",
            channel=Channel.VOICE,
            direction=direction,
            contact_id=contact,
            address=address,
            sent_at=occurred_at,
            purpose=Purpose.SERVICE,
            provider=self.name,
            provider_message_id=sid,
            metadata={"call_direction": given},
        )
        event = Event(
            event_id=event_id,
            type=type_,
            occurred_at=occurred_at,
            provider=self.name,
            provider_message_id=sid,
            provider_event_id=provider_event_id,
            address=address,
            reason=f"twilio error {error_code}" if error_code else None,
            metadata=metadata,
        )
        return [message, event]

    def _status(
        self,
        sid: str,
        *,
        status: str,
        error_code: str | None,
        to: str | None,
        occurred_at: datetime,
        raw: Mapping[str, Any],
    ) -> Event:
        type_ = STATUS_TYPES.get(status)
        if type_ is None:
            raise unknown_event("MessageStatus", status)
        # The same key for a form callback and an Event Streams event: one fact, one record.
        key = content_hash([sid, status, error_code])
        event_id, provider_event_id = self.ids(key)
        bounce = None
        if type_ is EventType.BOUNCED:
            bounce = BOUNCE_BY_ERROR.get(error_code or "", BounceClass.UNDETERMINED)
        address = None
        if to is not None:
            try:
                address = phone_address(to, field="To", region=self._region)
            except PayloadError:
                address = None  # a WhatsApp or short-code address; the raw event keeps it
        return Event(
            event_id=event_id,
            type=type_,
            occurred_at=occurred_at,
            provider=self.name,
            provider_message_id=sid,
            provider_event_id=provider_event_id,
            address=address,
            bounce=bounce,
            reason=f"twilio error {error_code}" if error_code else None,
            metadata=raw,
        )

    def _inbound(
        self,
        sid: str,
        *,
        sender: object,
        sender_field: str,
        body: str,
        opt_out_type: str | None,
        received: datetime,
        raw: Mapping[str, Any],
    ) -> list[Record]:
        channel = sender_channel(sender)
        address = phone_address(sender, field=sender_field, region=self._region)
        contact = self.resolve_contact(channel, address)
        records: list[Record] = [
            Message(
                message_id=f"{self.name}:{sid}",
                channel=channel,
                direction=Direction.INBOUND,
                contact_id=contact,
                address=address,
                sent_at=received,
                purpose=Purpose.SERVICE,
                body=body,
                provider=self.name,
                provider_message_id=sid,
                metadata=raw,
            )
        ]
        action, keyword = self._keyword_action(opt_out_type, body)
        if action is not None and (channel is not Channel.SMS or sms_keyword(body) is None):
            # An SMS whose body is itself a standard keyword needs no consent record
            # here: the repository derives the consent change (and the
            # suppression) from the inbound message when it is stored. A WhatsApp
            # keyword is also recorded here, on WhatsApp; the repository's feed then
            # adds only the WhatsApp suppression (it does not withdraw twice).
            records.append(
                ConsentEvent(
                    consent_id=f"{self.name}:{sid}:consent",
                    contact_id=contact,
                    channel=channel,
                    purpose=Purpose.MARKETING,
                    action=action,
                    occurred_at=received,
                    method=ConsentMethod.SMS_KEYWORD,
                    source=f"sms_keyword:{keyword}",
                    metadata=raw,
                )
            )
        return records

    def _keyword_action(
        self, opt_out_type: str | None, body: str
    ) -> tuple[ConsentAction | None, str]:
        opt = (opt_out_type or "").upper()
        if opt == "STOP":
            return ConsentAction.WITHDRAW, opt
        if opt == "START":
            return ConsentAction.GRANT, opt
        word = body.strip().upper()
        if word in self._opt_out:
            return ConsentAction.WITHDRAW, word
        if word in self._opt_in:
            return ConsentAction.GRANT, word
        return None, ""


def sender_channel(sender: object) -> Channel:
    """Return the channel of an inbound message by its Twilio sender address.

    ``whatsapp:+31...`` is WhatsApp. ``rcs:+31...`` (RCS business messaging) is
    SMS: it reaches the same phone number through the carrier, Twilio falls back
    from RCS to SMS on the same sender, and a STOP there opts the number out of
    both, so it shares SMS's consent and suppression. Anything else is SMS.

    .. versionadded:: 0.4.0
    """
    text = sender.strip().lower() if isinstance(sender, str) else ""
    if text.startswith(WHATSAPP_PREFIX):
        return Channel.WHATSAPP
    return Channel.SMS


def _from_secret(secret: str | None, /, **options: Any) -> TwilioAdapter:
    return TwilioAdapter(secret or "-", **options)


def _sign(events: Any, secret: Any, /, *, url: str, timestamp: float) -> SignedRequest:
    # events: a dict of POST parameters (a form post), or a list of Event Streams
    # events (JSON, signed with the bodySHA256 rule: POST to the returned url).
    if isinstance(events, list):
        body = json_body(events)
        signed_url = twilio_body_url(url, body)
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: twilio_signature(str(secret), signed_url, {}),
        }
        return SignedRequest(body=body, headers=headers, url=signed_url)
    params = dict(events)
    body = urlencode(params, doseq=True).encode("utf-8")
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        SIGNATURE_HEADER: twilio_signature(str(secret), url, params),
    }
    return SignedRequest(body=body, headers=headers, url=url)


PROVIDER: Final = register_provider(
    ProviderSpec(adapter=TwilioAdapter, from_secret=_from_secret, signer=_sign)
)
"""Twilio's entry in the provider registry.

``--secret`` and the test secret are the auth token.

.. versionadded:: 0.4.0
"""
