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

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Final

from commhistory.errors import InvalidInputError, PayloadError, SignatureError
from commhistory.model import BounceClass, Event, EventType, Record
from commhistory.providers.base import (
    InMemoryReplayStore,
    ReplayStore,
    WebhookAdapter,
    WebhookRequest,
    as_object,
    bounce_details,
    content_hash,
    decode_json,
    epoch,
    get_mapping,
    get_str,
    hmac_equal,
    optional_email,
    require_str,
)
from commhistory.providers.registry import (
    ProviderSpec,
    SignedRequest,
    json_body,
    register_provider,
)

__all__ = ["EVENT_TYPES", "PROVIDER", "MailgunAdapter", "mailgun_signature"]

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
"""Mailgun's ``event`` names; any other becomes ``UNKNOWN``."""

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
                " webhooks (signature + event-data) instead"
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
        type_ = EVENT_TYPES.get(name, EventType.UNKNOWN)
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
                metadata={"provider_raw": dict(item)},
            )
        ]


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
