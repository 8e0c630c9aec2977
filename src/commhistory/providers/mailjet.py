"""Mailjet Event API (event tracking webhooks), protected by HTTP basic auth.

Mailjet signs nothing; its documentation
(https://dev.mailjet.com/email/guides/webhooks/, and
https://github.com/mailjet/api-documentation/blob/master/guides/_event-api.md)
recommends an HTTPS URL with basic-auth credentials in it
(``https://user:password@host/webhooks/mailjet``), which Mailjet sends as
``Authorization: Basic``. The adapter compares them in constant time and
answers 401 otherwise.

Mailjet POSTs one JSON event per request, or, with the callback's
``Version`` set to 2 (grouped events), a JSON array of the events of the last
second, of mixed types; both are accepted. ``event`` decides the type
(:data:`EVENT_TYPES`): ``sent`` means the receiving server accepted the
message (delivered); ``open``; ``click`` (``url`` becomes the encrypted
``url``); ``bounce`` (hard when ``hard_bounce`` is true, a block when
``error_related_to`` is ``spam``, soft otherwise; ``error_related_to`` and
``error`` become the reason); ``blocked`` (Mailjet did not send: a rejection);
``spam`` (a complaint, with the feedback loop's ``source``) and ``unsub``. An
event name the table does not know becomes a dead letter.

Events link by ``provider="mailjet"`` + ``MessageID`` (the number the send API
returned, as a string), else the deprecated ``mj_message_id``. Mailjet gives
events no id, so the dedupe key is a content hash of the event. The time is
``time`` (epoch seconds); an event without it is timed when it was received,
marked ``metadata["time_source"] = "received"``.

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

__all__ = ["EVENT_TYPES", "PROVIDER", "MailjetAdapter"]

EVENT_TYPES: Final[Mapping[str, EventType]] = {
    "sent": EventType.DELIVERED,
    "open": EventType.OPENED,
    "click": EventType.CLICKED,
    "bounce": EventType.BOUNCED,
    "blocked": EventType.REJECTED,
    "spam": EventType.COMPLAINED,
    "unsub": EventType.UNSUBSCRIBED,
}
"""Mailjet's ``event`` names; any other name makes a dead letter."""


def _reason(item: Mapping[str, Any]) -> str | None:
    related, error = get_str(item, "error_related_to"), get_str(item, "error")
    if related and error:
        return f"{related}: {error}"
    return error or related or get_str(item, "smtp_reply") or get_str(item, "source")


class MailjetAdapter(WebhookAdapter):
    """Checks the basic-auth credentials of Mailjet Event API requests and parses them.

    Args:
        username: The user name in the event callback URL.
        password: The password in the event callback URL.
        **options: :class:`~commhistory.providers.base.WebhookAdapter` options.

    Raises:
        InvalidInputError: No password is given.

    .. versionadded:: 0.4.0
    """

    name: ClassVar[str] = "mailjet"
    auth_failure_status: ClassVar[int] = 401

    def __init__(self, username: str, password: str, **options: Any) -> None:
        super().__init__(**options)
        self._credentials = HttpCredentials.of(username, password, None)

    def _verify(self, request: WebhookRequest) -> None:
        self._credentials.check(request)

    def _events(self, payload: Any, request: WebhookRequest) -> Sequence[Any]:
        return one_or_many(payload)

    def _parse_event(self, event: Any) -> list[Record]:
        item = as_object(event)
        name = require_str(item, "event")
        type_ = EVENT_TYPES.get(name)
        if type_ is None:
            raise unknown_event("event", name)
        message_id = get_str(item, "MessageID") or get_str(item, "mj_message_id")
        if message_id is None:
            raise PayloadError(field="MessageID", reason="required")
        event_id, provider_event_id = self.ids(content_hash(item))
        metadata: dict[str, Any] = {"provider_raw": dict(item)}
        tagged(metadata, item.get("customcampaign"), "customcampaign")
        if item.get("time") is None:
            metadata["time_source"] = "received"
            occurred_at = datetime.fromtimestamp(self.clock(), tz=UTC)
        else:
            occurred_at = epoch(item["time"], field="time")
        reason = _reason(item) if type_ is not EventType.CLICKED else None
        status_code = bounce = None
        if type_ is EventType.BOUNCED:
            given = BounceClass.SOFT
            if item.get("hard_bounce") is True:
                given = BounceClass.HARD
            elif get_str(item, "error_related_to") == "spam":
                given = BounceClass.BLOCK
            status_code, bounce = bounce_details(None, get_str(item, "smtp_reply"), bounce=given)
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
                url=get_str(item, "url") if type_ is EventType.CLICKED else None,
                user_agent=get_str(item, "agent"),
                ip=get_str(item, "ip"),
                metadata=metadata,
            )
        ]


def _from_secret(secret: str | None, /, **options: Any) -> MailjetAdapter:
    user, password, _ = split_secret(secret)
    return MailjetAdapter(user or "", password or "", **options)


def _sign(events: Any, secret: Any, /, *, url: str, timestamp: float) -> SignedRequest:
    # events: one event object, or an array (grouped events); secret: "user:password".
    user, password, _ = split_secret(str(secret))
    headers = {
        "Content-Type": "application/json",
        "Authorization": HttpCredentials.of(user, password, None).header(),
    }
    return SignedRequest(body=json_body(events), headers=headers, url=url)


PROVIDER: Final = register_provider(
    ProviderSpec(adapter=MailjetAdapter, from_secret=_from_secret, signer=_sign)
)
"""Mailjet's entry in the provider registry.

``--secret`` and the test secret are ``user:password``.

.. versionadded:: 0.4.0
"""
