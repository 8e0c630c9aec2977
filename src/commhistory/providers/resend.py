"""Resend webhooks: one JSON event per request, signed by Svix (HMAC-SHA256).

Resend delivers webhooks through Svix (https://resend.com/docs/webhooks/verify-webhooks-requests).
Each request carries ``svix-id`` (the message id, the same when a failed
delivery is retried), ``svix-timestamp`` (epoch seconds) and
``svix-signature``: space-separated ``v1,<base64>`` signatures, each the
HMAC-SHA256 of ``"<svix-id>.<svix-timestamp>.<raw body>"`` under the
endpoint's signing secret (``whsec_`` followed by the base64 key), as
https://docs.svix.com/receiving/verifying-payloads/how-manual describes
(:func:`svix_signature`). One matching signature suffices (several appear
while a secret is rotated). The ``webhook-*`` spellings of the headers are
accepted too. The timestamp must be within the tolerance, and the same
``svix-id`` and timestamp are accepted once within it (a
:class:`~commhistory.providers.ReplayStore`; Svix's own retries carry a new
timestamp, so they pass).

The body is ``{"type", "created_at", "data"}``; ``type`` decides the event
(:data:`EVENT_TYPES`): ``email.sent`` and ``email.scheduled`` (queued),
``email.delivered``, ``email.delivery_delayed``, ``email.bounced`` (class from
``data.bounce.type`` and ``subType``, as for Amazon SES, on which Resend
sends), ``email.complained``, ``email.opened``, ``email.clicked``
(``data.click.link`` becomes the encrypted ``url``), ``email.failed`` and
``email.suppressed`` (Resend did not send). Contact and domain events and
inbound emails (``email.received``) are not about a sent message: they become
dead letters saying so, as does an unknown type.

Events link by ``provider="resend"`` + ``data.email_id`` (the ``id`` the send
API returned). The body carries no event id, so the dedupe key is a content
hash of the event, the same for Svix's retries. The time is the top-level
``created_at`` (ISO 8601), else the click's or open's ``timestamp``; an event
with neither is timed when it was received, marked
``metadata["time_source"] = "received"``.

.. versionadded:: 0.4.0
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar, Final

from commhistory.errors import InvalidInputError, PayloadError, SignatureError
from commhistory.model import BounceClass, Event, EventType, Record
from commhistory.providers._shared import unknown_event
from commhistory.providers.base import (
    InMemoryReplayStore,
    ReplayStore,
    WebhookAdapter,
    WebhookRequest,
    as_object,
    bounce_details,
    content_hash,
    enhanced_status,
    get_mapping,
    get_str,
    hmac_equal,
    iso_time,
    json_type,
    optional_email,
    require_str,
)
from commhistory.providers.registry import (
    ProviderSpec,
    SignedRequest,
    json_body,
    register_provider,
)
from commhistory.providers.ses import BOUNCE_CLASSES as SES_BOUNCE_CLASSES

__all__ = ["EVENT_TYPES", "PROVIDER", "ResendAdapter", "svix_signature"]

EVENT_TYPES: Final[Mapping[str, EventType]] = {
    "email.sent": EventType.QUEUED,
    "email.scheduled": EventType.QUEUED,
    "email.delivered": EventType.DELIVERED,
    "email.delivery_delayed": EventType.DEFERRED,
    "email.delivered_delayed": EventType.DEFERRED,  # the spelling of an older published sample
    "email.bounced": EventType.BOUNCED,
    "email.complained": EventType.COMPLAINED,
    "email.opened": EventType.OPENED,
    "email.clicked": EventType.CLICKED,
    "email.failed": EventType.FAILED,
    "email.suppressed": EventType.REJECTED,
}
"""Resend's event ``type`` values; any other makes a dead letter."""

_BOUNCE_TYPES: Final[Mapping[str, BounceClass]] = {
    "Permanent": BounceClass.HARD,
    "Transient": BounceClass.SOFT,
}
_NOT_MESSAGE_EVENTS: Final = ("contact.", "domain.")
_PREFIXES: Final = ("svix-", "webhook-")


def _secret_key(secret: str) -> bytes:
    value = secret.strip()
    if value.startswith("whsec_"):
        value = value[len("whsec_") :]
    try:
        key = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInputError(
            field="signing_secret", reason="expected whsec_ followed by base64"
        ) from None
    if not key:
        raise InvalidInputError(field="signing_secret", reason="the key is empty")
    return key


def svix_signature(signing_secret: str, msg_id: str, timestamp: str, body: bytes) -> str:
    """Compute a Svix signature: ``"v1,"`` + base64 HMAC-SHA256 of ``id.timestamp.body``.

    >>> from commhistory.providers.resend import svix_signature
    >>> svix_signature(
    ...     "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    ...     "msg_p5jXN8AQM9LWM0D4loKWxJek",
    ...     "1614265330",
    ...     b'{"test": 2432232314}',
    ... )
    'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE='

    Raises:
        InvalidInputError: ``field="signing_secret"``; not ``whsec_`` + base64.
    """
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_secret_key(signing_secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


class ResendAdapter(WebhookAdapter):
    """Verifies and parses Resend webhooks (Svix signatures).

    Args:
        signing_secret: The endpoint's signing secret (``whsec_...``).
        replay_store: Where seen ``svix-id`` + timestamp pairs are remembered;
            default: a new :class:`~commhistory.providers.InMemoryReplayStore`.
            With several workers, give them one shared store.
        **options: :class:`~commhistory.providers.base.WebhookAdapter` options.

    Raises:
        InvalidInputError: The secret is not ``whsec_`` followed by base64.

    .. versionadded:: 0.4.0
    """

    name: ClassVar[str] = "resend"

    def __init__(
        self, signing_secret: str, *, replay_store: ReplayStore | None = None, **options: Any
    ) -> None:
        super().__init__(**options)
        given: object = signing_secret
        if not isinstance(given, str):
            raise InvalidInputError(field="signing_secret", reason="must be a string")
        self._key = _secret_key(signing_secret)
        self.replay_store: ReplayStore = (
            InMemoryReplayStore() if replay_store is None else replay_store
        )

    def _header(self, request: WebhookRequest, name: str) -> str:
        for prefix in _PREFIXES:
            value = request.header(prefix + name)
            if value:
                return value.strip()
        raise SignatureError(f"missing header svix-{name}")

    def _verify(self, request: WebhookRequest) -> None:
        msg_id = self._header(request, "id")
        stamp = self._header(request, "timestamp")
        given = self._header(request, "signature")
        signed = f"{msg_id}.{stamp}.".encode() + request.body
        expected = hmac.new(self._key, signed, hashlib.sha256).digest()
        matched = False
        for entry in given.split():
            version, _, value = entry.partition(",")
            if version != "v1":
                continue
            try:
                candidate = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                continue
            matched = hmac_equal(expected, candidate) or matched
        if not matched:
            raise SignatureError(
                "no v1 signature matches (wrong signing secret, or the body was changed)"
            )
        try:
            signed_at = float(stamp)
        except ValueError:
            raise SignatureError("svix-timestamp: not a number") from None
        self.check_timestamp(signed_at, what="svix-timestamp")
        first = self.replay_store.remember(
            f"{self.name}:{msg_id}:{stamp}",
            expires_at=signed_at + self.tolerance,
            now=self.clock(),
        )
        if not first:
            raise SignatureError("svix-id and svix-timestamp were already used (a replay)")

    def _events(self, payload: Any, request: WebhookRequest) -> Sequence[Any]:
        if not isinstance(payload, dict):
            raise PayloadError(
                field="<body>", reason=f"expected an event object, got {json_type(payload)}"
            )
        return [payload]

    def _parse_event(self, event: Any) -> list[Record]:
        item = as_object(event)
        name = require_str(item, "type")
        if name.startswith(_NOT_MESSAGE_EVENTS) or name == "email.received":
            raise PayloadError(field="type", reason="not an event of a sent email: not recorded")
        type_ = EVENT_TYPES.get(name)
        if type_ is None:
            raise unknown_event("type", name)
        data = get_mapping(item, "data")
        message_id = get_str(data, "email_id")
        if message_id is None:
            raise PayloadError(field="data.email_id", reason="required")
        event_id, provider_event_id = self.ids(content_hash(item))
        metadata: dict[str, Any] = {"provider_raw": dict(item)}
        detail = get_mapping(
            data, {EventType.CLICKED: "click", EventType.OPENED: "open"}.get(type_, "-")
        )
        when = get_str(item, "created_at") or get_str(detail, "timestamp")
        if when is None:
            metadata["time_source"] = "received"
            occurred_at = datetime.fromtimestamp(self.clock(), tz=UTC)
        else:
            occurred_at = iso_time(when, field="created_at")
        reason = status_code = bounce = None
        if type_ is EventType.BOUNCED:
            details = get_mapping(data, "bounce")
            kind, sub = get_str(details, "type") or "", get_str(details, "subType") or ""
            reason = get_str(details, "message")
            given = SES_BOUNCE_CLASSES.get((kind, sub)) or _BOUNCE_TYPES.get(kind)
            status_code, bounce = bounce_details(None, reason, bounce=given)
        elif type_ in (EventType.FAILED, EventType.REJECTED, EventType.DEFERRED):
            for key in ("failed", "suppressed", "delivery_delayed"):
                part = get_mapping(data, key)
                reason = reason or get_str(part, "reason") or get_str(part, "message")
            status_code = enhanced_status(None, reason)
        to = data.get("to")
        address = to[0] if isinstance(to, list) and len(to) == 1 else to
        return [
            Event(
                event_id=event_id,
                type=type_,
                occurred_at=occurred_at,
                provider=self.name,
                provider_message_id=message_id,
                provider_event_id=provider_event_id,
                address=optional_email(address),
                status_code=status_code,
                bounce=bounce,
                reason=reason,
                url=get_str(detail, "link") if type_ is EventType.CLICKED else None,
                user_agent=get_str(detail, "userAgent"),
                ip=get_str(detail, "ipAddress"),
                metadata=metadata,
            )
        ]


def _from_secret(secret: str | None, /, **options: Any) -> ResendAdapter:
    placeholder = "whsec_" + base64.b64encode(b"parse-only-placeholder").decode("ascii")
    return ResendAdapter(secret or placeholder, **options)


def _sign(events: Any, secret: Any, /, *, url: str, timestamp: float) -> SignedRequest:
    # events: the event object; secret: the signing secret (whsec_...).
    body = json_body(events)
    msg_id = "msg_" + secrets.token_hex(12)
    stamp = str(int(timestamp))
    headers = {
        "Content-Type": "application/json",
        "svix-id": msg_id,
        "svix-timestamp": stamp,
        "svix-signature": svix_signature(str(secret), msg_id, stamp, body),
    }
    return SignedRequest(body=body, headers=headers, url=url)


PROVIDER: Final = register_provider(
    ProviderSpec(adapter=ResendAdapter, from_secret=_from_secret, signer=_sign)
)
"""Resend's entry in the provider registry.

``--secret`` and the test secret are the signing secret (``whsec_...``).

.. versionadded:: 0.4.0
"""
