"""Postmark webhooks: one JSON record per request, protected by HTTP basic auth.

Postmark does not sign webhooks; configure the webhook URL with credentials
(``https://user:password@host/webhooks/postmark``) and give the same to the
adapter, which compares them in constant time and answers 401 otherwise.
Postmark's published IP ranges can be enforced in front of it as well.

The record's ``RecordType`` decides the event: ``Delivery``, ``Bounce``,
``SpamComplaint``, ``Open``, ``Click``, ``SubscriptionChange`` (by its
``SuppressionReason``: ``HardBounce`` is a hard bounce, ``SpamComplaint`` a
complaint, ``ManualSuppression`` an unsubscribe; ``SuppressSending: false`` a
resubscription). A record without any time field (``DeliveredAt``,
``BouncedAt``, ``ReceivedAt``, ``ChangedAt``) is timed when it was received,
marked ``metadata["time_source"] = "received"``. Events link by
``provider="postmark"`` + ``MessageID``. The dedupe key is the bounce ``ID``
for bounces and complaints, and a content hash for the others (Postmark gives
them no id).

The inbound webhook (an email received by the server's inbound stream) has no
``RecordType`` (or ``"Inbound"``) and carries ``FromFull``/``From``: it becomes
an inbound :class:`~commhistory.Message` on the email channel, id
``postmark:<MessageID>``. The sender (``FromFull.Email``, else the address in
``From``) is normalized, and its contact id comes from the adapter's
``contact_resolver`` (a :class:`~commhistory.providers.KeyedContactResolver`
gives a pseudonymous keyed hash, never the address). ``Subject`` and
``TextBody`` (else ``StrippedTextReply``) become the encrypted subject and
body; ``sent_at`` is the message's ``Date`` header, or the time received when
that is missing or unreadable. The raw record is kept in
``metadata["provider_raw"]`` without attachment contents (``Attachments[].Content``)
or ``RawEmail``: their names, types and sizes stay.

.. versionadded:: 0.1.0
.. versionchanged:: 0.3.0
   Inbound emails (the inbound webhook) become inbound messages.
.. versionchanged:: 0.4.0
   ``SubscriptionChange`` follows ``SuppressionReason``; a record with no time
   is timed on receipt instead of becoming a dead letter.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from email.utils import parseaddr
from typing import Any, ClassVar, Final

from commhistory.errors import InvalidInputError, PayloadError, SignatureError
from commhistory.model import (
    BounceClass,
    Channel,
    Direction,
    Event,
    EventType,
    Message,
    Purpose,
    Record,
)
from commhistory.providers._shared import tagged, unknown_event
from commhistory.providers.base import (
    WebhookAdapter,
    WebhookRequest,
    as_object,
    bounce_details,
    content_hash,
    email_address,
    get_mapping,
    get_str,
    hmac_equal,
    iso_time,
    mail_date,
    optional_email,
    require_str,
)
from commhistory.providers.registry import (
    ProviderSpec,
    SignedRequest,
    json_body,
    register_provider,
)

__all__ = ["BOUNCE_TYPES", "PROVIDER", "RECORD_TYPES", "SUPPRESSION_REASONS", "PostmarkAdapter"]

RECORD_TYPES: Final[Mapping[str, EventType]] = {
    "Delivery": EventType.DELIVERED,
    "Bounce": EventType.BOUNCED,
    "SpamComplaint": EventType.COMPLAINED,
    "Open": EventType.OPENED,
    "Click": EventType.CLICKED,
    "SubscriptionChange": EventType.UNSUBSCRIBED,  # SuppressSending false: SUBSCRIBED
}
"""Postmark's ``RecordType`` values; any other makes the record a dead letter."""

BOUNCE_TYPES: Final[Mapping[str, tuple[EventType, BounceClass | None]]] = {
    "HardBounce": (EventType.BOUNCED, BounceClass.HARD),
    "BadEmailAddress": (EventType.BOUNCED, BounceClass.HARD),
    "ManuallyDeactivated": (EventType.BOUNCED, BounceClass.HARD),
    "Unknown": (EventType.BOUNCED, None),
    "SoftBounce": (EventType.BOUNCED, BounceClass.SOFT),
    "Transient": (EventType.DEFERRED, None),
    "DnsError": (EventType.BOUNCED, BounceClass.SOFT),
    "Blocked": (EventType.BOUNCED, BounceClass.BLOCK),
    "SMTPApiError": (EventType.FAILED, None),
    "InboundError": (EventType.FAILED, None),
    "DMARCPolicy": (EventType.BOUNCED, BounceClass.BLOCK),
    "TemplateRenderingFailed": (EventType.FAILED, None),
    "SpamNotification": (EventType.BOUNCED, BounceClass.BLOCK),
    "SpamComplaint": (EventType.COMPLAINED, None),
    "VirusNotification": (EventType.BOUNCED, BounceClass.BLOCK),
    "Subscribe": (EventType.SUBSCRIBED, None),
    "Unsubscribe": (EventType.UNSUBSCRIBED, None),
}
"""Postmark bounce ``Type`` values: the event type and, for bounces, the class.

Any other ``Type`` makes the record a dead letter: an auto-reply
(``AutoResponder``), an ``AddressChange`` notice or a ``ChallengeVerification``
says nothing about the delivery, and a new type is kept until it is mapped.
"""

SUPPRESSION_REASONS: Final[Mapping[str, tuple[EventType, BounceClass | None]]] = {
    "HardBounce": (EventType.BOUNCED, BounceClass.HARD),
    "SpamComplaint": (EventType.COMPLAINED, None),
    "ManualSuppression": (EventType.UNSUBSCRIBED, None),
}
"""A ``SubscriptionChange``'s ``SuppressionReason``: what made Postmark stop sending.

A hard bounce suppresses the dead address for every purpose, a complaint
withdraws marketing consent; only a manual suppression (the recipient's
unsubscribe, or yours) is an unsubscribe. An unknown reason stays an unsubscribe.
"""

_TIME_FIELDS: Final = ("DeliveredAt", "BouncedAt", "ReceivedAt", "ChangedAt")
_DROPPED: Final = frozenset({"RawEmail"})
"""Inbound fields not kept in ``provider_raw`` (the whole MIME message)."""


def _inbound_raw(item: Mapping[str, Any]) -> dict[str, Any]:
    """The inbound record without attachment contents or the raw MIME message."""
    raw = {k: v for k, v in item.items() if k not in _DROPPED}
    attachments = raw.get("Attachments")
    if isinstance(attachments, list):
        raw["Attachments"] = [
            {k: v for k, v in a.items() if k != "Content"} if isinstance(a, Mapping) else a
            for a in attachments
        ]
    return raw


class PostmarkAdapter(WebhookAdapter):
    """Checks the basic-auth credentials of Postmark webhooks and parses them.

    Args:
        username: The user name in the webhook URL.
        password: The password in the webhook URL.
        **options: :class:`~commhistory.providers.base.WebhookAdapter` options;
            inbound emails need ``contact_resolver``. Inbound emails with
            attachments can be larger than the default ``max_body_bytes``.

    .. versionadded:: 0.1.0
    """

    name: ClassVar[str] = "postmark"
    auth_failure_status: ClassVar[int] = 401

    def __init__(self, username: str, password: str, **options: Any) -> None:
        super().__init__(**options)
        user: object = username
        secret: object = password
        if not isinstance(user, str) or not isinstance(secret, str) or not secret:
            raise InvalidInputError(field="password", reason="give a user name and a password")
        self._expected = f"{username}:{password}".encode()

    def _verify(self, request: WebhookRequest) -> None:
        header = request.header("Authorization")
        if not header:
            raise SignatureError("missing Authorization header (basic auth)")
        scheme, _, value = header.strip().partition(" ")
        if scheme.lower() != "basic":
            raise SignatureError("Authorization: expected the Basic scheme")
        try:
            given = base64.b64decode(value.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise SignatureError("Authorization: not valid base64") from None
        if not hmac_equal(self._expected, given):
            raise SignatureError("Authorization: wrong user name or password")

    def _events(self, payload: Any, request: WebhookRequest) -> Sequence[Any]:
        as_object(payload, field="<body>")
        return [payload]

    def _parse_event(self, event: Any) -> list[Record]:
        item = as_object(event)
        record_type = get_str(item, "RecordType")
        if record_type == "Inbound" or (
            record_type is None and ("FromFull" in item or "From" in item)
        ):
            return [self._inbound(item)]
        if record_type is None:
            raise PayloadError(field="RecordType", reason="required")
        known = RECORD_TYPES.get(record_type)
        if known is None:
            raise unknown_event("RecordType", record_type)
        type_ = known
        message_id = require_str(item, "MessageID")
        bounce: BounceClass | None = None
        status_code: str | None = None
        reason = get_str(item, "Description") or get_str(item, "Details")
        if record_type in ("Bounce", "SpamComplaint"):
            bounce_type = get_str(item, "Type") or ""
            known_bounce = BOUNCE_TYPES.get(bounce_type)
            if known_bounce is None and record_type == "Bounce":
                raise unknown_event("Type", bounce_type)
            type_, given = known_bounce or (EventType.COMPLAINED, None)
            if record_type == "SpamComplaint":
                type_ = EventType.COMPLAINED
            if type_ is EventType.BOUNCED:
                status_code, bounce = bounce_details(None, get_str(item, "Details"), bounce=given)
        if record_type == "SubscriptionChange":
            if item.get("SuppressSending") is False:
                type_ = EventType.SUBSCRIBED
            else:
                type_, bounce = SUPPRESSION_REASONS.get(
                    get_str(item, "SuppressionReason") or "", (EventType.UNSUBSCRIBED, None)
                )
        key = get_str(item, "ID") or content_hash(item)
        event_id, provider_event_id = self.ids(key)
        when = next((item[f] for f in _TIME_FIELDS if item.get(f)), None)
        metadata: dict[str, Any] = tagged({"provider_raw": dict(item)}, item.get("Tag"), "Tag")
        if when is None:
            # Postmark omitted the time (seen on bounces of Type "Unsubscribe"): use the
            # time of receipt and say so, rather than lose the record (an opt-out).
            occurred_at = datetime.fromtimestamp(self.clock(), tz=UTC)
            metadata["time_source"] = "received"
        else:
            occurred_at = iso_time(when, field="ReceivedAt")
        address = item.get("Recipient") or item.get("Email")
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
                url=get_str(item, "OriginalLink") if type_ is EventType.CLICKED else None,
                user_agent=get_str(item, "UserAgent"),
                ip=get_str(get_mapping(item, "Geo"), "IP"),
                metadata=metadata,
            )
        ]

    def _inbound(self, item: Mapping[str, Any]) -> Message:
        message_id = require_str(item, "MessageID")
        sender = get_mapping(item, "FromFull")
        if sender.get("Email") is not None:
            address = email_address(sender.get("Email"), field="FromFull.Email")
        else:
            given = get_str(item, "From")
            address = email_address(parseaddr(given)[1] if given else None, field="From")
        contact = self.resolve_contact(Channel.EMAIL, address)
        sent_at = mail_date(item.get("Date")) or datetime.fromtimestamp(self.clock(), tz=UTC)
        return Message(
            message_id=f"{self.name}:{message_id}",
            channel=Channel.EMAIL,
            direction=Direction.INBOUND,
            contact_id=contact,
            address=address,
            sent_at=sent_at,
            purpose=Purpose.SERVICE,
            subject=get_str(item, "Subject"),
            body=get_str(item, "TextBody") or get_str(item, "StrippedTextReply"),
            provider=self.name,
            provider_message_id=message_id,
            metadata={"provider_raw": _inbound_raw(item)},
        )


def _from_secret(secret: str | None, /, **options: Any) -> PostmarkAdapter:
    user, _, password = (secret or "-:-").partition(":")
    return PostmarkAdapter(user, password, **options)


def _sign(events: Any, secret: Any, /, *, url: str, timestamp: float) -> SignedRequest:
    # events: the record object; secret: "user:password".
    credentials = base64.b64encode(str(secret).encode("utf-8")).decode("ascii")
    headers = {"Content-Type": "application/json", "Authorization": f"Basic {credentials}"}
    return SignedRequest(body=json_body(events), headers=headers, url=url)


PROVIDER: Final = register_provider(
    ProviderSpec(adapter=PostmarkAdapter, from_secret=_from_secret, signer=_sign)
)
"""Postmark's entry in the provider registry.

``--secret`` and the test secret are ``user:password``.

.. versionadded:: 0.4.0
"""
