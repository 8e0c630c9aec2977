"""Twilio Programmable Messaging: SMS status callbacks and inbound SMS.

Twilio POSTs ``application/x-www-form-urlencoded`` parameters and signs them in
``X-Twilio-Signature``: base64 HMAC-SHA1, under the account's auth token, of
the full URL Twilio called (with its query string) followed by every POST
parameter's name and value, sorted by name. The adapter therefore needs the
URL as Twilio saw it (behind a proxy, give the public URL). Like Twilio's own
libraries, it also accepts the URL with the scheme's default port added or
removed. Twilio signs no timestamp, so there is no staleness check; retried
callbacks are deduplicated instead.

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

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar, Final
from urllib.parse import urlsplit, urlunsplit

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
from commhistory.providers.base import (
    WebhookAdapter,
    WebhookRequest,
    content_hash,
    decode_form,
    get_str,
    hmac_equal,
    phone_address,
)

__all__ = [
    "BOUNCE_BY_ERROR",
    "OPT_IN_KEYWORDS",
    "OPT_OUT_KEYWORDS",
    "SIGNATURE_HEADER",
    "STATUS_TYPES",
    "TwilioAdapter",
    "twilio_signature",
]

SIGNATURE_HEADER: Final = "X-Twilio-Signature"

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
"""Twilio's ``MessageStatus`` values; any other becomes ``UNKNOWN``."""

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


class TwilioAdapter(WebhookAdapter):
    """Verifies and parses Twilio SMS status callbacks and inbound SMS.

    Args:
        auth_token: The account's auth token (the HMAC key).
        url: The public URL Twilio calls, when every request arrives at the
            same one; otherwise each request's ``url`` is used.
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

    def _verify(self, request: WebhookRequest) -> None:
        signature = request.header(SIGNATURE_HEADER)
        if not signature:
            raise SignatureError(f"missing header {SIGNATURE_HEADER}")
        url = self._url or request.url
        if not url:
            raise SignatureError("the request URL is needed to verify Twilio signatures")
        try:
            params = decode_form(request.body)
        except PayloadError as exc:
            raise SignatureError(f"the body cannot be read as form data ({exc.reason})") from None
        for candidate in _url_variants(url):
            if hmac_equal(twilio_signature(self._token, candidate, params), signature.strip()):
                return
        raise SignatureError(
            "signature does not match (wrong auth token, or the URL differs from the one"
            " Twilio called: check the scheme, host, port and query string)"
        )

    def _decode(self, request: WebhookRequest) -> Any:
        return decode_form(request.body)

    def _events(self, payload: Any, request: WebhookRequest) -> Sequence[Any]:
        if not payload:
            raise PayloadError(field="<body>", reason="no parameters")
        return [payload]

    def _parse_event(self, event: Any) -> list[Record]:
        item: Mapping[str, Any] = event
        sid = get_str(item, "MessageSid") or get_str(item, "SmsSid")
        if sid is None:
            raise PayloadError(field="MessageSid", reason="required")
        status = get_str(item, "MessageStatus") or get_str(item, "SmsStatus") or ""
        if status == "received" or (not get_str(item, "MessageStatus") and "Body" in item):
            return self._inbound(item, sid)
        return [self._status(item, sid, status)]

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), tz=UTC)

    def _status(self, item: Mapping[str, Any], sid: str, status: str) -> Event:
        type_ = STATUS_TYPES.get(status, EventType.UNKNOWN)
        error_code = get_str(item, "ErrorCode")
        key = content_hash([sid, status, error_code])
        event_id, provider_event_id = self.ids(key)
        bounce = None
        if type_ is EventType.BOUNCED:
            bounce = BOUNCE_BY_ERROR.get(error_code or "", BounceClass.UNDETERMINED)
        to = get_str(item, "To")
        address = None
        if to is not None:
            try:
                address = phone_address(to, field="To", region=self._region)
            except PayloadError:
                address = None  # a WhatsApp or short-code address; the raw event keeps it
        return Event(
            event_id=event_id,
            type=type_,
            occurred_at=self._now(),
            provider=self.name,
            provider_message_id=sid,
            provider_event_id=provider_event_id,
            address=address,
            bounce=bounce,
            reason=f"twilio error {error_code}" if error_code else None,
            metadata={"provider_raw": dict(item)},
        )

    def _inbound(self, item: Mapping[str, Any], sid: str) -> list[Record]:
        sender = phone_address(item.get("From"), field="From", region=self._region)
        contact = self.resolve_contact(Channel.SMS, sender)
        body = get_str(item, "Body") or ""
        received = self._now()
        records: list[Record] = [
            Message(
                message_id=f"{self.name}:{sid}",
                channel=Channel.SMS,
                direction=Direction.INBOUND,
                contact_id=contact,
                address=sender,
                sent_at=received,
                purpose=Purpose.SERVICE,
                body=body,
                provider=self.name,
                provider_message_id=sid,
                metadata={"provider_raw": dict(item)},
            )
        ]
        action, keyword = self._keyword_action(item, body)
        if action is not None and sms_keyword(body) is None:
            # A body that is itself a standard keyword needs no consent record
            # here: the repository derives the consent change (and the
            # suppression) from the inbound message when it is stored.
            records.append(
                ConsentEvent(
                    consent_id=f"{self.name}:{sid}:consent",
                    contact_id=contact,
                    channel=Channel.SMS,
                    purpose=Purpose.MARKETING,
                    action=action,
                    occurred_at=received,
                    method=ConsentMethod.SMS_KEYWORD,
                    source=f"sms_keyword:{keyword}",
                    metadata={"provider_raw": dict(item)},
                )
            )
        return records

    def _keyword_action(
        self, item: Mapping[str, Any], body: str
    ) -> tuple[ConsentAction | None, str]:
        opt = (get_str(item, "OptOutType") or "").upper()
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
