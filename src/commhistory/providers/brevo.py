"""Brevo (formerly Sendinblue) transactional email webhooks, protected by basic auth or a token.

Brevo signs nothing. Its documented protections
(https://developers.brevo.com/docs/secured-webhooks) are a user name and
password in the webhook URL (``https://user:password@host/webhooks/brevo``,
sent as ``Authorization: Basic``) or a token Brevo sends as
``Authorization: Bearer <token>`` (the webhook's ``auth`` object,
``{"type": "bearer", "token": ...}``). The adapter compares whichever it was
given in constant time and answers 401 otherwise; Brevo's published IP
ranges can be enforced in front of it as well.

Brevo POSTs one JSON event per request; a webhook created with ``batched: true``
(https://developers.brevo.com/docs/batch-webhooks) POSTs a JSON array of up to
500 events every 5 minutes. Both are accepted. The event's ``event`` decides the type
(:data:`EVENT_TYPES`, after https://developers.brevo.com/docs/transactional-webhooks):
``request`` (sent), ``delivered``, ``hard_bounce`` / ``soft_bounce`` (with the
receiving server's ``reason``), ``blocked`` and ``invalid_email`` (Brevo did
not send), ``deferred``, ``error``, ``spam`` (a complaint), ``opened`` /
``unique_opened``, ``proxy_open`` / ``unique_proxy_open`` (opens by a privacy
proxy such as Apple Mail Privacy Protection: marked ``machine``), ``click``
(``link`` becomes the encrypted ``url``) and ``unsubscribed``. An event name
the table does not know becomes a dead letter.

Events link by ``provider="brevo"`` + ``message-id`` without angle brackets
(the ``messageId`` Brevo's send API returns, ``<...@smtp-relay.mailin.fr>``).
Brevo gives events no id of their own (``id`` is the webhook's), so the dedupe
key is a content hash of the event. The time is ``ts_event`` (epoch seconds,
UTC), else ``ts_epoch`` (documented as milliseconds, shown in seconds in
Brevo's own example: a value above 10^11 is read as milliseconds), else
``ts``; ``date`` is in Brevo's local time (CET/CEST) and is not used. An event
with none of them is timed when it was received, marked
``metadata["time_source"] = "received"``.

.. versionadded:: 0.4.0
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar, Final

from commhistory.errors import PayloadError
from commhistory.model import BounceClass, Event, EventType, Record
from commhistory.providers._shared import (
    HttpCredentials,
    one_or_many,
    split_secret,
    tagged,
    unknown_event,
)
from commhistory.providers.base import (
    WebhookAdapter,
    WebhookRequest,
    as_object,
    bounce_details,
    content_hash,
    enhanced_status,
    epoch,
    get_str,
    optional_email,
    require_str,
)
from commhistory.providers.registry import (
    ProviderSpec,
    SignedRequest,
    json_body,
    register_provider,
)

__all__ = ["EVENT_TYPES", "MACHINE_OPENS", "PROVIDER", "BrevoAdapter"]

EVENT_TYPES: Final[Mapping[str, tuple[EventType, BounceClass | None]]] = {
    "request": (EventType.SENT, None),
    "sent": (EventType.SENT, None),
    "delivered": (EventType.DELIVERED, None),
    "hard_bounce": (EventType.BOUNCED, BounceClass.HARD),
    "soft_bounce": (EventType.BOUNCED, BounceClass.SOFT),
    "blocked": (EventType.REJECTED, None),
    "invalid_email": (EventType.REJECTED, None),
    "deferred": (EventType.DEFERRED, None),
    "error": (EventType.FAILED, None),
    "spam": (EventType.COMPLAINED, None),
    "opened": (EventType.OPENED, None),
    "unique_opened": (EventType.OPENED, None),
    "proxy_open": (EventType.OPENED, None),
    "unique_proxy_open": (EventType.OPENED, None),
    "click": (EventType.CLICKED, None),
    "unsubscribed": (EventType.UNSUBSCRIBED, None),
}
"""Brevo's ``event`` names: the event type and, for bounces, the class.

The camel-case names of Brevo's webhook settings (``hardBounce``,
``uniqueOpened``...) are accepted as the same events. Any other name makes a
dead letter.
"""

MACHINE_OPENS: Final = frozenset({"proxy_open", "unique_proxy_open"})
"""The opens Brevo reports as made by a privacy proxy (``machine=True``)."""

_CAMEL: Final[Mapping[str, str]] = {
    "hardBounce": "hard_bounce",
    "softBounce": "soft_bounce",
    "invalid": "invalid_email",
    "uniqueOpened": "unique_opened",
    "proxyOpen": "proxy_open",
    "uniqueProxyOpen": "unique_proxy_open",
    "clicked": "click",
}
_MILLIS_ABOVE: Final = 10**11  # epoch seconds reach 10^11 in the year 5138


class BrevoAdapter(WebhookAdapter):
    """Checks the credentials of Brevo transactional webhooks and parses them.

    Args:
        username: The user name in the webhook URL (basic auth).
        password: The password in the webhook URL (basic auth).
        token: The bearer token of the webhook's ``auth`` setting.
        **options: :class:`~commhistory.providers.base.WebhookAdapter` options.

    Raises:
        InvalidInputError: Neither a password nor a token is given.

    .. versionadded:: 0.4.0
    """

    name: ClassVar[str] = "brevo"
    auth_failure_status: ClassVar[int] = 401

    def __init__(
        self,
        username: str | None = None,
        password: str | None = None,
        *,
        token: str | None = None,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self._credentials = HttpCredentials.of(username, password, token)

    def _verify(self, request: WebhookRequest) -> None:
        self._credentials.check(request)

    def _events(self, payload: Any, request: WebhookRequest) -> Sequence[Any]:
        return one_or_many(payload)

    def _parse_event(self, event: Any) -> list[Record]:
        item = as_object(event)
        given = require_str(item, "event")
        name = _CAMEL.get(given, given)
        known = EVENT_TYPES.get(name)
        if known is None:
            raise unknown_event("event", given)
        type_, bounce_class = known
        message_id = require_str(item, "message-id").strip().strip("<>").strip()
        if not message_id:
            raise PayloadError(field="message-id", reason="required")
        event_id, provider_event_id = self.ids(content_hash(item))
        metadata: dict[str, Any] = tagged({"provider_raw": dict(item)}, item.get("tags"), "tags")
        occurred_at = self._time(item, metadata)
        reason = get_str(item, "reason")
        status_code = bounce = None
        if type_ is EventType.BOUNCED:
            status_code, bounce = bounce_details(None, reason, bounce=bounce_class)
        elif type_ in (EventType.DEFERRED, EventType.REJECTED, EventType.FAILED):
            status_code = enhanced_status(None, reason)
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
                reason=reason,
                url=get_str(item, "link") if type_ is EventType.CLICKED else None,
                user_agent=get_str(item, "user_agent"),
                ip=get_str(item, "ip"),
                machine=name in MACHINE_OPENS,
                metadata=metadata,
            )
        ]

    def _time(self, item: Mapping[str, Any], metadata: dict[str, Any]) -> datetime:
        if item.get("ts_event") is not None:
            return epoch(item["ts_event"], field="ts_event")
        stamp = item.get("ts_epoch")
        if stamp is not None:
            millis = isinstance(stamp, int | float) and stamp > _MILLIS_ABOVE
            return epoch(stamp, field="ts_epoch", millis=millis)
        if item.get("ts") is not None:
            return epoch(item["ts"], field="ts")
        metadata["time_source"] = "received"
        return datetime.fromtimestamp(self.clock(), tz=UTC)


def _from_secret(secret: str | None, /, **options: Any) -> BrevoAdapter:
    user, password, token = split_secret(secret)
    return BrevoAdapter(user, password, token=token, **options)


def _sign(events: Any, secret: Any, /, *, url: str, timestamp: float) -> SignedRequest:
    # events: one event object, or an array (a batched webhook); secret: "user:password"
    # or "Bearer TOKEN".
    headers = {
        "Content-Type": "application/json",
        "Authorization": HttpCredentials.from_secret(str(secret)).header(),
    }
    return SignedRequest(body=json_body(events), headers=headers, url=url)


PROVIDER: Final = register_provider(
    ProviderSpec(adapter=BrevoAdapter, from_secret=_from_secret, signer=_sign)
)
"""Brevo's entry in the provider registry.

``--secret`` and the test secret are ``user:password``, or ``Bearer TOKEN`` for a token.

.. versionadded:: 0.4.0
"""
