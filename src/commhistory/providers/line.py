"""LINE Messaging API webhooks: follow, unfollow, message, postback.

LINE POSTs ``{"destination": ..., "events": [...]}`` and signs the raw body in
``X-Line-Signature``: base64 HMAC-SHA256 under the channel secret. LINE signs
no timestamp; redeliveries carry the same ``webhookEventId`` and are
deduplicated by it.

* ``follow`` (a friend added or unblocked the account) grants, and
  ``unfollow`` (blocked) withdraws, marketing consent on LINE
  (:class:`~commhistory.ConsentEvent`, method ``line_block``).
* ``message`` becomes an inbound :class:`~commhistory.Message` (the text for
  text messages; other types keep their type in ``metadata``).
* ``postback`` (a button tapped) becomes an inbound message whose body is the
  postback ``data``.
* Any other event type (``join``, ``memberJoined``, ``unsend``...) becomes a
  dead letter naming the type (the raw event kept whole, never dropped).

.. versionchanged:: 0.4.0
   Another event type is a dead letter instead of an ``UNKNOWN`` event.

Every item needs a contact id: configure a ``contact_resolver``.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Final

from commhistory.errors import InvalidInputError, PayloadError, SignatureError
from commhistory.model import (
    Channel,
    ConsentAction,
    ConsentEvent,
    ConsentMethod,
    Direction,
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
    epoch,
    get_mapping,
    get_str,
    hmac_equal,
    json_type,
    line_address,
    require_str,
)
from commhistory.providers.registry import (
    ProviderSpec,
    SignedRequest,
    json_body,
    register_provider,
)

__all__ = ["CONSENT_EVENTS", "PROVIDER", "SIGNATURE_HEADER", "LineAdapter", "line_signature"]

SIGNATURE_HEADER: Final = "X-Line-Signature"

CONSENT_EVENTS: Final[Mapping[str, ConsentAction]] = {
    "follow": ConsentAction.GRANT,
    "unfollow": ConsentAction.WITHDRAW,
}
"""LINE event types that change consent."""

_INBOUND: Final = frozenset({"message", "postback"})


def line_signature(channel_secret: str, body: bytes) -> str:
    """Compute LINE's ``X-Line-Signature`` for a body (base64 HMAC-SHA256)."""
    mac = hmac.new(channel_secret.encode("utf-8"), body, hashlib.sha256)
    return base64.b64encode(mac.digest()).decode("ascii")


class LineAdapter(WebhookAdapter):
    """Verifies and parses LINE Messaging API webhooks.

    Args:
        channel_secret: The channel secret (the HMAC key).
        **options: :class:`~commhistory.providers.base.WebhookAdapter` options;
            ``contact_resolver`` is needed for every LINE item.

    .. versionadded:: 0.1.0
    """

    name: ClassVar[str] = "line"

    def __init__(self, channel_secret: str, **options: Any) -> None:
        super().__init__(**options)
        secret: object = channel_secret
        if not isinstance(secret, str) or not secret:
            raise InvalidInputError(field="channel_secret", reason="must be a non-empty string")
        self._secret = channel_secret

    def _verify(self, request: WebhookRequest) -> None:
        signature = request.header(SIGNATURE_HEADER)
        if not signature:
            raise SignatureError(f"missing header {SIGNATURE_HEADER}")
        if not hmac_equal(line_signature(self._secret, request.body), signature.strip()):
            raise SignatureError(
                "signature does not match the body (wrong channel secret, or the body was"
                " changed on the way)"
            )

    def _events(self, payload: Any, request: WebhookRequest) -> Sequence[Any]:
        body = as_object(payload, field="<body>")
        events = body.get("events")
        if not isinstance(events, list):
            raise PayloadError(
                field="events", reason=f"expected an array, got {json_type(events)}"
            )
        return events

    def _parse_event(self, event: Any) -> list[Record]:
        item = as_object(event)
        kind = require_str(item, "type")
        if kind not in CONSENT_EVENTS and kind not in _INBOUND:
            raise unknown_event("type", kind)
        key = get_str(item, "webhookEventId") or content_hash(item)
        record_id, _ = self.ids(key)
        occurred_at = epoch(item.get("timestamp"), field="timestamp", millis=True)
        raw = {"provider_raw": dict(item)}
        source = get_mapping(item, "source")
        user = line_address(source.get("userId"), field="source.userId")
        contact = self.resolve_contact(Channel.LINE, user)
        action = CONSENT_EVENTS.get(kind)
        if action is not None:
            return [
                ConsentEvent(
                    consent_id=record_id,
                    contact_id=contact,
                    channel=Channel.LINE,
                    purpose=Purpose.MARKETING,
                    action=action,
                    occurred_at=occurred_at,
                    method=ConsentMethod.LINE_BLOCK,
                    source=f"line:{kind}",
                    metadata=raw,
                )
            ]
        if kind == "postback":
            body = get_str(get_mapping(item, "postback"), "data")
            provider_message_id = f"postback:{key}"
        else:
            message = get_mapping(item, "message")
            provider_message_id = get_str(message, "id") or f"event:{key}"
            body = get_str(message, "text") if message.get("type") == "text" else None
        return [
            Message(
                message_id=f"{self.name}:{provider_message_id}",
                channel=Channel.LINE,
                direction=Direction.INBOUND,
                contact_id=contact,
                address=user,
                sent_at=occurred_at,
                purpose=Purpose.SERVICE,
                body=body,
                provider=self.name,
                provider_message_id=provider_message_id,
                metadata=raw,
            )
        ]


def _from_secret(secret: str | None, /, **options: Any) -> LineAdapter:
    return LineAdapter(secret or "-", **options)


def _sign(events: Any, secret: Any, /, *, url: str, timestamp: float) -> SignedRequest:
    # events: a list of events, or the whole body; secret: the channel secret.
    payload = events if isinstance(events, Mapping) else {"destination": "U0", "events": events}
    body = json_body(payload)
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: line_signature(str(secret), body),
    }
    return SignedRequest(body=body, headers=headers, url=url)


PROVIDER: Final = register_provider(
    ProviderSpec(adapter=LineAdapter, from_secret=_from_secret, signer=_sign)
)
"""LINE's entry in the provider registry.

``--secret`` and the test secret are the channel secret.

.. versionadded:: 0.4.0
"""
