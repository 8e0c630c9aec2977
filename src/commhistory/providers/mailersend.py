"""MailerSend webhooks: one JSON activity per request, signed with HMAC-SHA256.

MailerSend POSTs ``{"type": "activity.<name>", "created_at": ..., "data": {...}}``
and adds a ``Signature`` header: the hex HMAC-SHA256 of the raw body under the
webhook's *signing secret* (shown when the webhook is created). The signature
covers the whole body but no timestamp: a captured request can be sent again
unchanged, and is then counted as a duplicate (same ``data.id``); it cannot be
changed without breaking the signature.

Two payload shapes are read, both documented by MailerSend:

* the "fat" shape (``data.object == "activity"``): the message id is
  ``data.email.message.id``, the recipient ``data.email.recipient.email``, and
  the event's details are in ``data.morph`` (``recipient_bounce`` with its
  ``reason``, ``click`` with its ``url`` and ``ip``, ``open`` with its ``ip``,
  ``recipient_unsubscribe`` with its ``readable_reason``);
* the flat shape: ``data.message_id``, the recipient in ``data.recipient``
  (or ``data.email`` when it is a string) and details in ``data.meta``
  (``bounce_reason``, ``bounce_code``, ``url``, ``ip``...).

Events link by ``provider="mailersend"`` + the message id (what the send API
returns as ``X-Message-Id``); the dedupe key is ``data.id``, the activity's
id. The time is ``data.created_at``, else the webhook's ``created_at``; an
activity with neither is timed when it was received, marked
``metadata["time_source"] = "received"``.

``activity.*`` names map through :data:`ACTIVITY_TYPES`; an activity MailerSend
adds later is a dead letter naming it, the raw event kept whole. Webhook
types that are not about a message (``sender_identity.verified``, ``maintenance.start``,
``bulk_email.completed``...) have no message to link to: each becomes a dead
letter naming its type, kept for inspection.

.. versionadded:: 0.4.0
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar, Final

from commhistory.errors import PayloadError
from commhistory.model import BounceClass, Event, EventType, Record
from commhistory.providers._shared import BodyHmac, hex_hmac_sha256, tagged, unknown_event
from commhistory.providers.base import (
    WebhookAdapter,
    WebhookRequest,
    as_object,
    bounce_details,
    content_hash,
    enhanced_status,
    get_mapping,
    get_str,
    iso_time,
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
    "ACTIVITY_TYPES",
    "PROVIDER",
    "SIGNATURE_HEADER",
    "MailerSendAdapter",
    "mailersend_signature",
]

SIGNATURE_HEADER: Final = "Signature"

ACTIVITY_TYPES: Final[Mapping[str, tuple[EventType, BounceClass | None]]] = {
    "activity.sent": (EventType.SENT, None),
    "activity.delivered": (EventType.DELIVERED, None),
    "activity.soft_bounced": (EventType.BOUNCED, BounceClass.SOFT),
    "activity.hard_bounced": (EventType.BOUNCED, BounceClass.HARD),
    "activity.deferred": (EventType.DEFERRED, None),
    "activity.opened": (EventType.OPENED, None),
    "activity.opened_unique": (EventType.OPENED, None),
    "activity.clicked": (EventType.CLICKED, None),
    "activity.clicked_unique": (EventType.CLICKED, None),
    "activity.unsubscribed": (EventType.UNSUBSCRIBED, None),
    "activity.spam_complaint": (EventType.COMPLAINED, None),
}
"""MailerSend's activity ``type`` values: the event type and, for bounces, the class.

Any other ``activity.*`` value (the survey events among them: a survey answer is
no delivery outcome) makes the event a dead letter naming it.
"""

_ACTIVITY_PREFIX: Final = "activity."


def mailersend_signature(signing_secret: str, body: bytes) -> str:
    """Compute MailerSend's ``Signature`` header for a body (hex HMAC-SHA256).

    >>> from commhistory.providers.mailersend import mailersend_signature
    >>> len(mailersend_signature("secret", b"{}"))
    64
    """
    return hex_hmac_sha256(signing_secret, body)


def _details(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    # MailerSend sends an empty "meta" as [] (a PHP empty array): read it as {}.
    if data.get(key) == []:
        return {}
    return get_mapping(data, key)


class MailerSendAdapter(WebhookAdapter):
    """Verifies and parses MailerSend webhooks.

    Args:
        signing_secret: The webhook's signing secret.
        **options: :class:`~commhistory.providers.base.WebhookAdapter` options.

    Raises:
        InvalidInputError: The signing secret is empty.

    .. versionadded:: 0.4.0
    """

    name: ClassVar[str] = "mailersend"

    def __init__(self, signing_secret: str, **options: Any) -> None:
        super().__init__(**options)
        self._signature = BodyHmac(signing_secret, SIGNATURE_HEADER)

    def _verify(self, request: WebhookRequest) -> None:
        self._signature.check(request)

    def _events(self, payload: Any, request: WebhookRequest) -> Sequence[Any]:
        as_object(payload, field="<body>")
        return [payload]

    def _parse_event(self, event: Any) -> list[Record]:
        item = as_object(event)
        name = require_str(item, "type")
        if not name.startswith(_ACTIVITY_PREFIX):
            raise PayloadError(
                field="type", reason=f"{name!r} is not about a message (kept as a dead letter)"
            )
        known = ACTIVITY_TYPES.get(name)
        if known is None:
            raise unknown_event("type", name)
        type_, given = known
        data = get_mapping(item, "data")
        if not data:
            raise PayloadError(field="data", reason="required")
        email = data.get("email")
        id_field = "data.message_id"
        if isinstance(email, Mapping):  # the fat shape
            id_field = "data.email.message.id"
            message_id = get_str(get_mapping(email, "message"), "id")
            address = get_mapping(email, "recipient").get("email")
            details = _details(data, "morph")
        else:
            message_id = get_str(data, "message_id")
            address = data.get("recipient") or email
            details = _details(data, "meta")
        if message_id is None:
            raise PayloadError(field=id_field, reason="required")
        reason = (
            get_str(details, "readable_reason")
            or get_str(details, "reason")
            or get_str(details, "bounce_reason")
        )
        status_code: str | None = None
        bounce: BounceClass | None = None
        code = details.get("bounce_code")
        if type_ is EventType.BOUNCED:
            status_code, bounce = bounce_details(code, reason, bounce=given)
        elif type_ is EventType.DEFERRED:
            status_code = enhanced_status(code, reason)
        key = get_str(data, "id") or content_hash(item)
        event_id, provider_event_id = self.ids(key)
        metadata: dict[str, Any] = {"provider_raw": dict(item)}
        if isinstance(email, Mapping):  # the fat shape
            tagged(metadata, email.get("tags"), "data.email.tags")
        else:
            tagged(metadata, data.get("tags"), "data.tags")
        if data.get("created_at") not in (None, ""):
            occurred_at = iso_time(data["created_at"], field="data.created_at")
        elif item.get("created_at") not in (None, ""):
            occurred_at = iso_time(item["created_at"], field="created_at")
        else:
            occurred_at = datetime.fromtimestamp(self.clock(), tz=UTC)
            metadata["time_source"] = "received"
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
                url=get_str(details, "url") if type_ is EventType.CLICKED else None,
                user_agent=get_str(details, "user_agent"),
                ip=get_str(details, "ip"),
                metadata=metadata,
            )
        ]


def _from_secret(secret: str | None, /, **options: Any) -> MailerSendAdapter:
    return MailerSendAdapter(secret or "-", **options)


def _sign(events: Any, secret: Any, /, *, url: str, timestamp: float) -> SignedRequest:
    # events: the webhook object ({"type", "created_at", "data"}); secret: the signing secret.
    body = json_body(events)
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: mailersend_signature(str(secret), body),
    }
    return SignedRequest(body=body, headers=headers, url=url)


PROVIDER: Final = register_provider(
    ProviderSpec(adapter=MailerSendAdapter, from_secret=_from_secret, signer=_sign)
)
"""MailerSend's entry in the provider registry.

``--secret`` and the test secret are the webhook's signing secret.

.. versionadded:: 0.4.0
"""
