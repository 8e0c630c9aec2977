"""Unisender Go webhooks: batched events, authenticated by an MD5 ``auth`` field.

Unisender Go POSTs ``{"auth": ..., "events_by_user": [{"user_id", "project_id",
"events": [{"event_name", "event_data"}, ...]}]}``. ``auth`` is the hex MD5 of
the body *as sent* in which the ``auth`` value itself is replaced by the API
key of the user or project whose webhook it is: the adapter puts the key in
place of the value in the raw body and compares the digests in constant time,
so the check covers every byte of the body. Unisender Go signs no timestamp
and gives events no id: a captured request can only be sent again unchanged,
and its events are then duplicates (the dedupe key is a hash of the event).
A body sent gzip-compressed (the webhook's ``json_post_gzip`` format) is
decompressed first, within ``max_body_bytes``.

``transactional_email_status`` events map by ``event_data.status`` and, for
bounces, ``event_data.delivery_info.delivery_status``
(:data:`DELIVERY_STATUSES`). Events link by ``provider="unisender_go"`` +
``job_id`` (what ``email/send`` returns); the address is ``email``.
``event_time`` is UTC (``"YYYY-MM-DD HH:MM:SS"``, or ISO 8601 with an offset).
``transactional_spam_block`` events (an SMTP server or domain blocked) are not
about a message: each becomes a dead letter naming the event.

.. versionadded:: 0.4.0
"""

from __future__ import annotations

import hashlib
import json
import re
import zlib
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar, Final

from commhistory.errors import InvalidInputError, PayloadError, SignatureError
from commhistory.model import BounceClass, Event, EventType, Record
from commhistory.providers._shared import unknown_event
from commhistory.providers.base import (
    WebhookAdapter,
    WebhookRequest,
    as_object,
    bounce_details,
    content_hash,
    decode_json,
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

__all__ = [
    "DELIVERY_STATUSES",
    "PROVIDER",
    "STATUSES",
    "UnisenderGoAdapter",
    "unisender_go_auth",
]

STATUSES: Final[Mapping[str, EventType]] = {
    "sent": EventType.SENT,
    "delivered": EventType.DELIVERED,
    "opened": EventType.OPENED,
    "clicked": EventType.CLICKED,
    "unsubscribed": EventType.UNSUBSCRIBED,
    "subscribed": EventType.SUBSCRIBED,
    "spam": EventType.COMPLAINED,
    "soft_bounced": EventType.BOUNCED,  # err_will_retry: DEFERRED
    "hard_bounced": EventType.BOUNCED,
}
"""``event_data.status`` of ``transactional_email_status``; any other is a dead letter."""

DELIVERY_STATUSES: Final[Mapping[str, tuple[EventType, BounceClass | None]]] = {
    "err_will_retry": (EventType.DEFERRED, None),
    "err_user_unknown": (EventType.BOUNCED, BounceClass.HARD),
    "err_user_inactive": (EventType.BOUNCED, BounceClass.HARD),
    "err_mailbox_discarded": (EventType.BOUNCED, BounceClass.HARD),
    "err_domain_inactive": (EventType.BOUNCED, BounceClass.HARD),
    "err_unreachable": (EventType.BOUNCED, BounceClass.HARD),
    "err_mailbox_full": (EventType.BOUNCED, BounceClass.SOFT),
    "err_spam_rejected": (EventType.BOUNCED, BounceClass.BLOCK),
    "err_blacklisted": (EventType.BOUNCED, BounceClass.BLOCK),
    "err_too_large": (EventType.BOUNCED, BounceClass.BLOCK),
    "err_spam_skipped": (EventType.REJECTED, None),
    "err_unsubscribed": (EventType.REJECTED, None),
    "err_skip_letter": (EventType.REJECTED, None),
    "err_lost": (EventType.FAILED, None),
}
"""A bounce's ``delivery_info.delivery_status``: the event type and bounce class.

Addresses Unisender Go did not even try (already unsubscribed, on a stop list,
skipped as spam) are rejections, not bounces. Any other ``err_*`` value
(``err_delivery_failed``, ``err_destination_misconfigured``...) is a bounce
classified by the ``destination_response``.
"""

NOT_ABOUT_A_MESSAGE: Final = frozenset({"transactional_spam_block"})
"""Event names that are about Unisender Go's servers: dead letters naming the event."""

_EVENT_NAME: Final = "transactional_email_status"
_GZIP_MAGIC: Final = b"\x1f\x8b"
_TOO_LARGE: Final = "decompresses to more than"
_NAIVE_TIME: Final = re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(\.\d+)?")


def unisender_go_auth(body_with_key: bytes) -> str:
    """Return the ``auth`` value of a body whose ``auth`` field holds the API key (hex MD5).

    >>> from commhistory.providers.unisender_go import unisender_go_auth
    >>> unisender_go_auth(b'{"auth":"api_key","key":"value"}')
    '8c64386327f53722434f44021a7a0d40'
    """
    return hashlib.md5(body_with_key, usedforsecurity=False).hexdigest()


def _auth_pattern(value: str) -> re.Pattern[bytes]:
    return re.compile(rb'("auth"\s*:\s*")' + re.escape(value.encode("utf-8")) + rb'"')


class UnisenderGoAdapter(WebhookAdapter):
    """Verifies and parses Unisender Go webhooks.

    Args:
        api_key: The API key of the user or project the webhook was set with.
        **options: :class:`~commhistory.providers.base.WebhookAdapter` options.

    Raises:
        InvalidInputError: The API key is empty or not printable ASCII.

    .. versionadded:: 0.4.0
    """

    name: ClassVar[str] = "unisender_go"

    def __init__(self, api_key: str, **options: Any) -> None:
        super().__init__(**options)
        key: object = api_key
        if not isinstance(key, str) or not key or not key.isascii() or not key.isprintable():
            raise InvalidInputError(field="api_key", reason="must be a non-empty ASCII string")
        self._key = api_key

    def _body(self, request: WebhookRequest) -> bytes:
        """The JSON body, decompressed when it was sent gzip-compressed."""
        if not request.body.startswith(_GZIP_MAGIC):
            return request.body
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            data = inflater.decompress(request.body, self.max_body_bytes + 1)
        except zlib.error:
            raise PayloadError(field="<body>", reason="not valid gzip data") from None
        if len(data) > self.max_body_bytes:
            raise PayloadError(
                field="<body>",
                reason=f"{_TOO_LARGE} the limit of {self.max_body_bytes} bytes",
            )
        return data

    def _verify(self, request: WebhookRequest) -> None:
        try:
            body = self._body(request)
            given = require_str(as_object(decode_json(body), field="<body>"), "auth")
        except PayloadError as exc:
            if exc.reason.startswith(_TOO_LARGE):
                raise  # a decompression bomb is refused as too large (413), like a big body
            raise SignatureError(f"auth field unreadable ({exc.field}: {exc.reason})") from None
        with_key, found = _auth_pattern(given).subn(
            lambda m: m.group(1) + json.dumps(self._key)[1:-1].encode() + b'"', body, count=1
        )
        if not found:
            raise SignatureError("auth: the value is not a plain string in the body")
        if not hmac_equal(unisender_go_auth(with_key), given.lower()):
            raise SignatureError(
                "auth does not match the body (wrong API key, or the body was changed)"
            )

    def _decode(self, request: WebhookRequest) -> Any:
        return decode_json(self._body(request))

    def _events(self, payload: Any, request: WebhookRequest) -> Sequence[Any]:
        body = as_object(payload, field="<body>")
        users = body.get("events_by_user")
        if not isinstance(users, list):
            raise PayloadError(
                field="events_by_user", reason=f"expected an array, got {json_type(users)}"
            )
        events: list[Any] = []
        for user in users:
            found = as_object(user, field="events_by_user[]").get("events")
            if not isinstance(found, list):
                raise PayloadError(
                    field="events_by_user[].events",
                    reason=f"expected an array, got {json_type(found)}",
                )
            events.extend(found)
        return events

    def _parse_event(self, event: Any) -> list[Record]:
        item = as_object(event)
        name = require_str(item, "event_name")
        if name in NOT_ABOUT_A_MESSAGE:
            raise PayloadError(
                field="event_name",
                reason=f"{name!r} is not about a message (kept as a dead letter)",
            )
        data = get_mapping(item, "event_data")
        if not data:
            raise PayloadError(field="event_data", reason="required")
        job_id = get_str(data, "job_id")
        if job_id is None:
            raise PayloadError(field="event_data.job_id", reason="required")
        status = get_str(data, "status")
        if name != _EVENT_NAME:
            raise unknown_event("event_name", name)
        known = STATUSES.get(status or "")
        if known is None:
            raise unknown_event("event_data.status", status or "")
        type_ = known
        info = get_mapping(data, "delivery_info")
        response = get_str(info, "destination_response")
        delivery_status = get_str(info, "delivery_status")
        status_code: str | None = None
        bounce: BounceClass | None = None
        if type_ is EventType.BOUNCED:
            type_, given = DELIVERY_STATUSES.get(delivery_status or "", (EventType.BOUNCED, None))
            if type_ is EventType.BOUNCED:
                if given is None and status == "soft_bounced":
                    given = BounceClass.SOFT
                status_code, bounce = bounce_details(response, response, bounce=given)
            elif type_ is EventType.DEFERRED:
                status_code = enhanced_status(response, response)
        event_id, provider_event_id = self.ids(content_hash(item))
        metadata: dict[str, Any] = {"provider_raw": dict(item)}
        if data.get("event_time") in (None, ""):
            occurred_at = datetime.fromtimestamp(self.clock(), tz=UTC)
            metadata["time_source"] = "received"
        else:
            occurred_at = _event_time(data.get("event_time"))
        return [
            Event(
                event_id=event_id,
                type=type_,
                occurred_at=occurred_at,
                provider=self.name,
                provider_message_id=job_id,
                provider_event_id=provider_event_id,
                address=optional_email(data.get("email")),
                status_code=status_code,
                bounce=bounce,
                reason=response or delivery_status,
                url=get_str(data, "url") if type_ is EventType.CLICKED else None,
                user_agent=get_str(info, "user_agent"),
                ip=get_str(info, "ip"),
                metadata=metadata,
            )
        ]


def _event_time(value: object) -> datetime:
    """Read ``event_time``: UTC ``"YYYY-MM-DD HH:MM:SS"``, or ISO 8601 with an offset."""
    field = "event_data.event_time"
    if isinstance(value, str) and _NAIVE_TIME.fullmatch(value.strip()):
        try:
            return datetime.fromisoformat(value.strip()).replace(tzinfo=UTC)
        except ValueError:
            raise PayloadError(field=field, reason="not a valid date and time") from None
    return iso_time(value, field=field)


def _from_secret(secret: str | None, /, **options: Any) -> UnisenderGoAdapter:
    return UnisenderGoAdapter(secret or "-", **options)


def _sign(events: Any, secret: Any, /, *, url: str, timestamp: float) -> SignedRequest:
    # events: the body without "auth" ({"events_by_user": [...]}); secret: the API key.
    given: object = events
    if not isinstance(given, Mapping):
        raise InvalidInputError(field="events", reason="give the body object (events_by_user)")
    key = str(secret)
    placeholder = json_body({"auth": key, **{k: v for k, v in given.items() if k != "auth"}})
    digest = unisender_go_auth(placeholder)
    prefix = json_body({"auth": key})[:-1]  # '{"auth":"<key>"'
    body = json_body({"auth": digest})[:-1] + placeholder[len(prefix) :]
    headers = {"Content-Type": "application/json"}
    return SignedRequest(body=body, headers=headers, url=url)


PROVIDER: Final = register_provider(
    ProviderSpec(adapter=UnisenderGoAdapter, from_secret=_from_secret, signer=_sign)
)
"""Unisender Go's entry in the provider registry.

``--secret`` and the test secret are the API key.

.. versionadded:: 0.4.0
"""
