"""Mailtrap sending webhooks: batched events, signed with HMAC-SHA256.

Mailtrap POSTs its events either as JSON, ``{"events": [...]}``, or as JSON
Lines (one event object per line, ``Content-Type: application/jsonl``); the
payload format is chosen per webhook and both are read. Every request carries
``Mailtrap-Signature``: the hex HMAC-SHA256 of the raw body under the
webhook's *signing secret* (shown in the webhook's settings). Mailtrap signs no
timestamp: a captured request can only be sent again unchanged, and its events
are then duplicates (``event_id`` is the dedupe key). An unreadable line of a
JSON Lines body is a dead letter of its own; the other lines are kept.

Events link by ``provider="mailtrap"`` + ``message_id`` (the id the send API
returns in ``message_ids``); the address is ``email``.

Audit-log webhooks (``activity_log.*``) and inbound-message notifications
(``inbound.*``, which carry only ids: the message itself is fetched through the
API) are not about a sent message: each becomes a dead letter naming its event.

.. versionadded:: 0.4.0
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar, Final

from commhistory.errors import PayloadError
from commhistory.model import BounceClass, Event, EventType, Record
from commhistory.providers._shared import BodyHmac, hex_hmac_sha256, unknown_event
from commhistory.providers.base import (
    WebhookAdapter,
    WebhookRequest,
    as_object,
    bounce_details,
    content_hash,
    decode_json,
    enhanced_status,
    epoch,
    get_str,
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

__all__ = [
    "BLOCK_CATEGORIES",
    "EVENT_TYPES",
    "PROVIDER",
    "SIGNATURE_HEADER",
    "MailtrapAdapter",
    "mailtrap_signature",
]

SIGNATURE_HEADER: Final = "Mailtrap-Signature"

EVENT_TYPES: Final[Mapping[str, EventType]] = {
    "delivery": EventType.DELIVERED,
    "bounce": EventType.BOUNCED,
    "soft bounce": EventType.DEFERRED,  # Mailtrap retries; a final failure is a "bounce"
    "suspension": EventType.DEFERRED,  # held until the sending domain is verified
    "reject": EventType.REJECTED,
    "spam": EventType.COMPLAINED,
    "unsubscribe": EventType.UNSUBSCRIBED,
    "open": EventType.OPENED,
    "click": EventType.CLICKED,
}
"""Mailtrap's sending ``event`` names; any other makes the event a dead letter."""

BLOCK_CATEGORIES: Final = frozenset({"block", "blocked", "spam", "content", "badsender", "policy"})
"""``bounce_category`` values that are a block (the sender or the content, not the address);
other bounces are classified by their SMTP response."""

_NOT_ABOUT_A_MESSAGE: Final = ("activity_log.", "inbound.", "inbound_")


def mailtrap_signature(signing_secret: str, body: bytes) -> str:
    """Compute Mailtrap's ``Mailtrap-Signature`` for a body (hex HMAC-SHA256)."""
    return hex_hmac_sha256(signing_secret, body)


class _BadLine:
    """A JSON Lines line that is not a JSON object: parsed into a dead letter."""

    def __init__(self, text: str, error: PayloadError) -> None:
        self.text = text
        self.error = error

    def __str__(self) -> str:
        return self.text


class MailtrapAdapter(WebhookAdapter):
    """Verifies and parses Mailtrap sending webhooks (JSON or JSON Lines).

    Args:
        signing_secret: The webhook's signing secret.
        **options: :class:`~commhistory.providers.base.WebhookAdapter` options.

    Raises:
        InvalidInputError: The signing secret is empty.

    .. versionadded:: 0.4.0
    """

    name: ClassVar[str] = "mailtrap"

    def __init__(self, signing_secret: str, **options: Any) -> None:
        super().__init__(**options)
        self._signature = BodyHmac(signing_secret, SIGNATURE_HEADER)

    def _verify(self, request: WebhookRequest) -> None:
        self._signature.check(request)

    def _decode(self, request: WebhookRequest) -> Any:
        try:
            return decode_json(request.body)
        except PayloadError as exc:
            if "Extra data" not in exc.reason:
                raise
        # More than one JSON value: JSON Lines. Each line is decoded on its own so
        # that one bad line is one dead letter.
        lines: list[Any] = []
        for raw in request.body.decode("utf-8").splitlines():
            if not raw.strip():
                continue
            try:
                lines.append(json.loads(raw))
            except (json.JSONDecodeError, RecursionError) as exc:
                reason = f"invalid JSON line: {getattr(exc, 'msg', 'nested too deeply')}"
                lines.append(_BadLine(raw, PayloadError(field="<line>", reason=reason)))
        return lines

    def _events(self, payload: Any, request: WebhookRequest) -> Sequence[Any]:
        if isinstance(payload, list):  # JSON Lines
            return payload
        body = as_object(payload, field="<body>")
        if "events" not in body:
            if "event" in body:  # JSON Lines with a single line
                return [body]
            raise PayloadError(field="events", reason="required")
        events = body["events"]
        if not isinstance(events, list):
            raise PayloadError(
                field="events", reason=f"expected an array, got {json_type(events)}"
            )
        return events

    def _parse_event(self, event: Any) -> list[Record]:
        if isinstance(event, _BadLine):
            raise event.error
        item = as_object(event)
        name = require_str(item, "event")
        if name.startswith(_NOT_ABOUT_A_MESSAGE):
            raise PayloadError(
                field="event",
                reason=f"{name!r} is not about a sent message (kept as a dead letter)",
            )
        type_ = EVENT_TYPES.get(name)
        if type_ is None:
            raise unknown_event("event", name)
        message_id = require_str(item, "message_id")
        response = get_str(item, "response")
        code = item.get("response_code")
        status_code: str | None = None
        bounce: BounceClass | None = None
        if type_ is EventType.BOUNCED:
            category = (get_str(item, "bounce_category") or "").lower()
            given = BounceClass.BLOCK if category in BLOCK_CATEGORIES else None
            status_code, bounce = bounce_details(code, response, bounce=given)
        elif type_ is EventType.DEFERRED:
            get_str(item, "bounce_category")  # a malformed one is refused, as for a bounce
            status_code = enhanced_status(code, response)
        key = get_str(item, "event_id") or content_hash(item)
        event_id, provider_event_id = self.ids(key)
        metadata: dict[str, Any] = {"provider_raw": dict(item)}
        if item.get("timestamp") is None:
            occurred_at = datetime.fromtimestamp(self.clock(), tz=UTC)
            metadata["time_source"] = "received"
        else:
            occurred_at = epoch(item.get("timestamp"), field="timestamp")
        return [
            Event(
                event_id=event_id,
                type=type_,
                occurred_at=occurred_at,
                provider=self.name,
                provider_message_id=message_id,
                provider_event_id=provider_event_id,
                address=optional_email(item.get("email")),
                status_code=status_code,
                bounce=bounce,
                reason=response or get_str(item, "reason"),
                url=get_str(item, "url") if type_ is EventType.CLICKED else None,
                user_agent=get_str(item, "user_agent"),
                ip=get_str(item, "ip"),
                metadata=metadata,
            )
        ]


def _from_secret(secret: str | None, /, **options: Any) -> MailtrapAdapter:
    return MailtrapAdapter(secret or "-", **options)


def _sign(events: Any, secret: Any, /, *, url: str, timestamp: float) -> SignedRequest:
    # events: the {"events": [...]} object, or a list of events sent as JSON Lines;
    # secret: the signing secret.
    if isinstance(events, list):
        body = b"\n".join(json_body(event) for event in events) + b"\n"
        content_type = "application/jsonl"
    else:
        body, content_type = json_body(events), "application/json"
    headers = {
        "Content-Type": content_type,
        SIGNATURE_HEADER: mailtrap_signature(str(secret), body),
    }
    return SignedRequest(body=body, headers=headers, url=url)


PROVIDER: Final = register_provider(
    ProviderSpec(adapter=MailtrapAdapter, from_secret=_from_secret, signer=_sign)
)
"""Mailtrap's entry in the provider registry.

``--secret`` and the test secret are the webhook's signing secret. The test signer
sends an object as JSON and a list of events as JSON Lines.

.. versionadded:: 0.4.0
"""
