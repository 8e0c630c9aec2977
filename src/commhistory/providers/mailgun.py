"""Mailgun webhooks (the JSON ``event-data`` format), signed with HMAC-SHA256.

Mailgun POSTs ``{"signature": {"timestamp", "token", "signature"}, "event-data":
{...}}``. ``signature`` is the hex HMAC-SHA256, under the account's *HTTP
webhook signing key*, of ``timestamp`` followed by ``token``. The adapter
refuses timestamps outside the tolerance window and tokens it has already seen
within that window (a :class:`~commhistory.providers.ReplayStore`).

The signature covers only the timestamp and the token, not the body: a captured
request can be replayed with a changed body (a new ``event-data.id``, so the
repository's dedupe sees no duplicate) within the window. Only the replay store
stops that, and the default one is per process: with several workers, give
them one shared store (``replay_store=``).

Events link by ``provider="mailgun"`` + the message's ``Message-Id`` header
(``event-data.message.headers.message-id``, without angle brackets); the
dedupe key is ``event-data.id``.

Mailgun's legacy webhooks (form-encoded posts with the signature fields in the
form) are not accepted: Mailgun made them read-only in April 2023 and retired
them later that year, and its current documentation describes only the JSON
format. A form-encoded request is refused with a :class:`~commhistory.SignatureError`
that says so.

Emails received through Mailgun routes (``forward()`` to a URL, or
``store(notify=...)``) are form posts signed by fields of the form: they have
their own adapter and provider name, :class:`MailgunInboundAdapter`
(``mailgun-inbound``).

.. versionadded:: 0.1.0
.. versionchanged:: 0.4.0
   Route posts (inbound email) through ``mailgun-inbound``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from email.utils import parseaddr
from typing import Any, ClassVar, Final
from urllib.parse import urlencode

from commhistory.errors import InvalidInputError, PayloadError, SignatureError
from commhistory.model import BounceClass, Event, EventType, Record
from commhistory.providers._shared import tagged, unknown_event
from commhistory.providers.base import (
    Attachment,
    InMemoryReplayStore,
    ReplayStore,
    WebhookAdapter,
    WebhookRequest,
    as_object,
    bounce_details,
    content_hash,
    decode_form,
    decode_json,
    decode_multipart,
    email_address,
    epoch,
    get_mapping,
    get_str,
    hmac_equal,
    mail_date,
    message_id_header,
    optional_email,
    require_str,
)
from commhistory.providers.registry import (
    ProviderSpec,
    SignedRequest,
    json_body,
    multipart_body,
    register_provider,
)

__all__ = [
    "EVENT_TYPES",
    "INBOUND_PROVIDER",
    "PROVIDER",
    "MailgunAdapter",
    "MailgunInboundAdapter",
    "mailgun_signature",
]

EVENT_TYPES: Final[Mapping[str, EventType]] = {
    "accepted": EventType.QUEUED,
    "delivered": EventType.DELIVERED,
    "failed": EventType.BOUNCED,  # "temporary" severity becomes DEFERRED
    "rejected": EventType.REJECTED,
    "opened": EventType.OPENED,
    "clicked": EventType.CLICKED,
    "unsubscribed": EventType.UNSUBSCRIBED,
    "complained": EventType.COMPLAINED,
}
"""Mailgun's ``event`` names; any other makes the event a dead letter."""

_SUPPRESSED: Final = frozenset({"suppress-bounce", "suppress-complaint", "suppress-unsubscribe"})
_FORM_TYPES: Final = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})


def mailgun_signature(signing_key: str, timestamp: str, token: str) -> str:
    """Compute Mailgun's webhook signature (hex HMAC-SHA256 of timestamp + token)."""
    data = (timestamp + token).encode("utf-8")
    return hmac.new(signing_key.encode("utf-8"), data, hashlib.sha256).hexdigest()


class MailgunAdapter(WebhookAdapter):
    """Verifies and parses Mailgun webhooks.

    Args:
        signing_key: The HTTP webhook signing key.
        replay_cache_size: How many recent tokens the default (in-process)
            replay store remembers.
        replay_store: Where used tokens are remembered; default: a new
            :class:`~commhistory.providers.InMemoryReplayStore` for this adapter.
            With several workers, give them all one shared store.
        **options: :class:`~commhistory.providers.base.WebhookAdapter` options.

    .. versionadded:: 0.1.0
    .. versionchanged:: 0.4.0
       ``replay_store``.
    """

    name: ClassVar[str] = "mailgun"

    def __init__(
        self,
        signing_key: str,
        *,
        replay_cache_size: int = 100_000,
        replay_store: ReplayStore | None = None,
        **options: Any,
    ):
        super().__init__(**options)
        secret: object = signing_key
        if not isinstance(secret, str) or not secret:
            raise InvalidInputError(field="signing_key", reason="must be a non-empty string")
        self._key = signing_key
        self.replay_store: ReplayStore = (
            InMemoryReplayStore(replay_cache_size) if replay_store is None else replay_store
        )

    def _verify(self, request: WebhookRequest) -> None:
        if request.content_type in _FORM_TYPES:
            raise SignatureError(
                "a form-encoded post is a legacy Mailgun webhook, which this adapter does"
                " not accept (Mailgun retired them in 2023): configure the current JSON"
                " webhooks (signature + event-data) instead; a route's forward or store post"
                " (an inbound email) goes to a mailgun-inbound adapter"
            )
        try:
            body = as_object(decode_json(request.body), field="<body>")
            block = get_mapping(body, "signature")
            timestamp = require_str(block, "timestamp")
            token = require_str(block, "token")
            signature = require_str(block, "signature")
        except PayloadError as exc:
            raise SignatureError(
                f"signature block unreadable ({exc.field}: {exc.reason})"
            ) from None
        if not hmac_equal(mailgun_signature(self._key, timestamp, token), signature.lower()):
            raise SignatureError("signature does not match (wrong webhook signing key)")
        try:
            signed_at = float(timestamp)
        except ValueError:
            raise SignatureError("signature.timestamp: not a number") from None
        self.check_timestamp(signed_at, what="signature.timestamp")
        self._check_replay(token, signed_at)

    def _check_replay(self, token: str, signed_at: float) -> None:
        # A token is refused while its timestamp is within the window; after
        # that the timestamp check refuses the request anyway.
        first = self.replay_store.remember(
            f"{self.name}:{token}", expires_at=signed_at + self.tolerance, now=self.clock()
        )
        if not first:
            raise SignatureError("signature.token was already used (a replayed request)")

    def _events(self, payload: Any, request: WebhookRequest) -> Sequence[Any]:
        body = as_object(payload, field="<body>")
        if "event-data" not in body:
            raise PayloadError(field="event-data", reason="required")
        return [body["event-data"]]

    def _parse_event(self, event: Any) -> list[Record]:
        item = as_object(event, field="event-data")
        name = require_str(item, "event")
        type_ = EVENT_TYPES.get(name)
        if type_ is None:
            raise unknown_event("event", name)
        severity = get_str(item, "severity")
        if type_ is EventType.BOUNCED and severity == "temporary":
            type_ = EventType.DEFERRED
        headers = get_mapping(get_mapping(item, "message"), "headers")
        message_id = get_str(headers, "message-id")
        if message_id is None:
            raise PayloadError(field="event-data.message.headers.message-id", reason="required")
        key = get_str(item, "id") or content_hash(item)
        event_id, provider_event_id = self.ids(key)
        status = get_mapping(item, "delivery-status")
        diagnostic = get_str(status, "description") or get_str(status, "message")
        status_code = bounce = None
        if type_ in (EventType.BOUNCED, EventType.DEFERRED):
            given = BounceClass.BLOCK if get_str(item, "reason") in _SUPPRESSED else None
            code = status.get("enhanced-code") or status.get("code")
            status_code, found = bounce_details(code, diagnostic, bounce=given)
            bounce = found if type_ is EventType.BOUNCED else None
        client = get_mapping(item, "client-info")
        return [
            Event(
                event_id=event_id,
                type=type_,
                occurred_at=epoch(item.get("timestamp"), field="event-data.timestamp"),
                provider=self.name,
                provider_message_id=message_id.strip().strip("<>"),
                provider_event_id=provider_event_id,
                address=optional_email(item.get("recipient")),
                status_code=status_code,
                bounce=bounce,
                reason=diagnostic or get_str(item, "reason"),
                url=get_str(item, "url") if type_ is EventType.CLICKED else None,
                user_agent=get_str(client, "user-agent"),
                ip=get_str(item, "ip"),
                metadata=tagged({"provider_raw": dict(item)}, item.get("tags"), "tags"),
            )
        ]


class _RouteForm(dict[str, Any]):
    """A route post's fields, with the attachments' metadata it carried."""

    __slots__ = ("files",)

    def __init__(self, fields: Mapping[str, Any], files: tuple[Attachment, ...]) -> None:
        super().__init__(fields)
        self.files = files


class MailgunInboundAdapter(MailgunAdapter):
    """Verifies and parses the posts of Mailgun routes (``forward()`` and ``store(notify=...)``).

    A route that forwards a received email to a URL, or stores it and notifies
    a URL, POSTs the parsed email as a form (``application/x-www-form-urlencoded``,
    or ``multipart/form-data`` when it has attachments) with ``timestamp``,
    ``token`` and ``signature`` among the fields: the same HMAC-SHA256 as
    Mailgun's webhooks, under the same signing key, with the same timestamp
    window and replay store.

    The email becomes an inbound :class:`~commhistory.Message` on the email
    channel. The sender is the address in ``from`` (else the envelope
    ``sender``), resolved through ``contact_resolver``; ``subject`` and
    ``body-plain`` (else ``stripped-text``) become the encrypted subject and
    body; ``sent_at`` is the ``Date`` header (a field, or in
    ``message-headers``), else the signed ``timestamp``. The message id is
    ``mailgun-inbound:<Message-Id>`` (a hash of the email when it has none).
    Attachments keep only their name, type and size: the files of a forward,
    or the ``attachments`` list of a store notification. ``provider_raw``
    keeps the other fields, never the bodies (``body-*``, ``stripped-*``).

    Args:
        signing_key: The HTTP webhook signing key.
        **options: :class:`MailgunAdapter` options; inbound emails need
            ``contact_resolver``. Mailgun retries a route post for hours: raise
            ``tolerance`` if your endpoint may be down longer than 5 minutes.

    .. versionadded:: 0.4.0
    """

    name: ClassVar[str] = "mailgun-inbound"

    def _form(self, request: WebhookRequest) -> _RouteForm:
        if request.content_type == "multipart/form-data":
            form = decode_multipart(request.body, request.headers.get("content-type", ""))
            return _RouteForm(form.as_form(), form.files)
        if request.content_type in ("application/x-www-form-urlencoded", ""):
            return _RouteForm(decode_form(request.body), ())
        raise PayloadError(
            field="Content-Type",
            reason="expected application/x-www-form-urlencoded or multipart/form-data",
        )

    def _verify(self, request: WebhookRequest) -> None:
        try:
            form = self._form(request)
            timestamp = require_str(form, "timestamp")
            token = require_str(form, "token")
            signature = require_str(form, "signature")
        except PayloadError as exc:
            raise SignatureError(
                f"signature fields unreadable ({exc.field}: {exc.reason})"
            ) from None
        if not hmac_equal(mailgun_signature(self._key, timestamp, token), signature.lower()):
            raise SignatureError("signature does not match (wrong webhook signing key)")
        try:
            signed_at = float(timestamp)
        except ValueError:
            raise SignatureError("timestamp: not a number") from None
        self.check_timestamp(signed_at, what="timestamp")
        self._check_replay(token, signed_at)

    def _decode(self, request: WebhookRequest) -> Any:
        return self._form(request)

    def _events(self, payload: Any, request: WebhookRequest) -> Sequence[Any]:
        if not payload:
            raise PayloadError(field="<body>", reason="no fields")
        return [payload]

    def _parse_event(self, event: Any) -> list[Record]:
        form: _RouteForm = event
        headers = _message_headers(form.get("message-headers"))
        given = _field(form, "from") or headers.get("from")
        if given:
            sender = email_address(parseaddr(given)[1], field="from")
        else:
            sender = email_address(_field(form, "sender"), field="sender")
        subject = _field(form, "subject") or headers.get("subject")
        body = _field(form, "body-plain") or _field(form, "stripped-text")
        message_id = message_id_header(_field(form, "Message-Id") or headers.get("message-id"))
        date = _field(form, "Date") or headers.get("date")
        sent_at = mail_date(date)
        if sent_at is None:
            stamp = _field(form, "timestamp")
            sent_at = (
                epoch(stamp, field="timestamp")
                if stamp
                else datetime.fromtimestamp(self.clock(), tz=UTC)
            )
        key = message_id or content_hash([sender, _field(form, "recipient"), subject, date, body])
        attachments = form.files or _stored_attachments(form.get("attachments"))
        raw = {
            k: v
            for k, v in form.items()
            if not k.startswith(_CONTENT_PREFIXES) and k not in _NOT_KEPT
        }
        return [
            self.inbound_email(
                sender=sender,
                key=key,
                provider_message_id=message_id,
                sent_at=sent_at,
                subject=subject,
                body=body,
                attachments=attachments,
                raw=raw,
            )
        ]


_CONTENT_PREFIXES: Final = ("body-", "stripped-")
"""Route fields with the email's content: never kept in ``provider_raw``."""

_NOT_KEPT: Final = frozenset({"signature", "token", "attachments"})


def _field(form: Mapping[str, Any], name: str) -> str | None:
    value = form.get(name)
    if isinstance(value, list):
        value = value[0] if value else None
    return value if isinstance(value, str) and value else None


def _message_headers(value: object) -> dict[str, str]:
    """``message-headers`` (a JSON list of ``[name, value]``) by lower-case name; first wins."""
    if isinstance(value, list):
        value = value[0] if value else None
    if not isinstance(value, str) or not value:
        return {}
    try:
        pairs = json.loads(value)
    except (ValueError, RecursionError):
        raise PayloadError(field="message-headers", reason="not JSON") from None
    if not isinstance(pairs, list):
        raise PayloadError(field="message-headers", reason="expected an array of [name, value]")
    out: dict[str, str] = {}
    for pair in pairs:
        if (
            isinstance(pair, list)
            and len(pair) == 2
            and isinstance(pair[0], str)
            and isinstance(pair[1], str)
        ):
            out.setdefault(pair[0].lower(), pair[1])
    return out


def _stored_attachments(value: object) -> tuple[Attachment, ...]:
    """A store notification's ``attachments``: a JSON list of ``{name, content-type, size}``."""
    if isinstance(value, list):
        value = value[0] if value else None
    if not isinstance(value, str) or not value:
        return ()
    try:
        items = json.loads(value)
    except (ValueError, RecursionError):
        raise PayloadError(field="attachments", reason="not JSON") from None
    if not isinstance(items, list):
        raise PayloadError(field="attachments", reason="expected an array")
    out: list[Attachment] = []
    for item in items:
        entry = as_object(item, field="attachments")
        size = entry.get("size")
        kind = entry.get("content-type")
        name = entry.get("name")
        out.append(
            Attachment(
                filename=name if isinstance(name, str) else None,
                content_type=kind.lower() if isinstance(kind, str) else "application/octet-stream",
                size=size if isinstance(size, int) and not isinstance(size, bool) else 0,
            )
        )
    return tuple(out)


def _from_secret(secret: str | None, /, **options: Any) -> MailgunAdapter:
    return MailgunAdapter(secret or "-", **options)


def _sign(events: Any, secret: Any, /, *, url: str, timestamp: float) -> SignedRequest:
    # events: the "event-data" object; secret: the signing key.
    stamp = str(int(timestamp))
    token = secrets.token_hex(25)
    payload = {
        "signature": {
            "timestamp": stamp,
            "token": token,
            "signature": mailgun_signature(str(secret), stamp, token),
        },
        "event-data": events,
    }
    headers = {"Content-Type": "application/json"}
    return SignedRequest(body=json_body(payload), headers=headers, url=url)


PROVIDER: Final = register_provider(
    ProviderSpec(adapter=MailgunAdapter, from_secret=_from_secret, signer=_sign)
)
"""Mailgun's entry in the provider registry.

``--secret`` and the test secret are the signing key.

.. versionadded:: 0.4.0
"""


def _inbound_from_secret(secret: str | None, /, **options: Any) -> MailgunInboundAdapter:
    return MailgunInboundAdapter(secret or "-", **options)


def _sign_inbound(events: Any, secret: Any, /, *, url: str, timestamp: float) -> SignedRequest:
    # events: the route's form fields; a (filename, type, bytes) value makes it multipart.
    stamp = str(int(timestamp))
    token = secrets.token_hex(25)
    fields = {
        **dict(events),
        "timestamp": stamp,
        "token": token,
        "signature": mailgun_signature(str(secret), stamp, token),
    }
    if any(isinstance(v, tuple) for v in fields.values()):
        boundary = "mg" + token[:24]
        body = multipart_body(fields, boundary=boundary)
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    else:
        body = urlencode(fields, doseq=True).encode("utf-8")
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
    return SignedRequest(body=body, headers=headers, url=url)


INBOUND_PROVIDER: Final = register_provider(
    ProviderSpec(
        adapter=MailgunInboundAdapter, from_secret=_inbound_from_secret, signer=_sign_inbound
    )
)
"""Mailgun routes' entry in the provider registry (``mailgun-inbound``).

``--secret`` and the test secret are the signing key; tests give the form fields.

.. versionadded:: 0.4.0
"""
