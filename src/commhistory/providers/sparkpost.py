"""SparkPost event webhooks: batches of ``msys`` events, protected by basic auth or OAuth 2.0.

SparkPost signs nothing. A webhook's ``auth_type``
(https://developers.sparkpost.com/api/webhooks/) is ``basic`` (the
``auth_credentials`` user name and password, sent as ``Authorization:
Basic``) or ``oauth2`` (SparkPost fetches an access token from your
authorization server and sends it as ``Authorization: Bearer``). The adapter
checks basic credentials or a fixed token in constant time, or hands a bearer
token to a ``token_validator`` of yours (your authorization server's tokens
expire and rotate); it answers 401 otherwise.

A request is a JSON array of ``{"msys": {"<class>_event": {...}}}`` objects
(``message_event``, ``track_event``, ``unsubscribe_event``, ``gen_event``...).
The webhook test SparkPost sends when a webhook is created or validated,
``[{"msys": {}}]``, carries no event and gives no record. Each event's
``type`` decides the event type (:data:`EVENT_TYPES`); the bounce class comes
from SparkPost's ``bounce_class`` code (:data:`BOUNCE_CLASSES`, after
https://support.sparkpost.com/docs/deliverability/bounce-classification-codes),
the enhanced status code from the reason text. Relay (inbound), A/B test,
ingest and SMS events, and types the table does not know, become dead letters.

Events link by ``provider="sparkpost"`` + ``message_id`` (what the
transmissions API reports per recipient); the dedupe key is SparkPost's
``event_id``, unique per event, so a retried batch is a duplicate. The time is
``timestamp`` (epoch seconds, as a string or number, or ISO 8601); an event
without one is timed when received, marked ``metadata["time_source"] =
"received"``.

.. versionadded:: 0.4.0
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar, Final

from commhistory.errors import InvalidInputError, PayloadError, SignatureError
from commhistory.model import BounceClass, Event, EventType, Record
from commhistory.providers._shared import HttpCredentials, split_secret, tagged, unknown_event
from commhistory.providers.base import (
    WebhookAdapter,
    WebhookRequest,
    as_object,
    bounce_details,
    content_hash,
    enhanced_status,
    epoch,
    get_mapping,
    get_str,
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

__all__ = ["BOUNCE_CLASSES", "EVENT_TYPES", "PROVIDER", "SparkPostAdapter"]

EVENT_TYPES: Final[Mapping[str, EventType]] = {
    "injection": EventType.QUEUED,
    "delivery": EventType.DELIVERED,
    "bounce": EventType.BOUNCED,
    "out_of_band": EventType.BOUNCED,
    "delay": EventType.DEFERRED,
    "policy_rejection": EventType.REJECTED,
    "generation_rejection": EventType.REJECTED,
    "generation_failure": EventType.FAILED,
    "spam_complaint": EventType.COMPLAINED,
    "open": EventType.OPENED,
    "initial_open": EventType.OPENED,
    "amp_open": EventType.OPENED,
    "amp_initial_open": EventType.OPENED,
    "click": EventType.CLICKED,
    "amp_click": EventType.CLICKED,
    "list_unsubscribe": EventType.UNSUBSCRIBED,
    "link_unsubscribe": EventType.UNSUBSCRIBED,
}
"""SparkPost's event ``type`` values; any other makes a dead letter."""

BOUNCE_CLASSES: Final[Mapping[str, BounceClass]] = {
    "10": BounceClass.HARD,  # invalid recipient
    "30": BounceClass.HARD,  # generic bounce, no recipient
    "90": BounceClass.HARD,  # unsubscribe
    **dict.fromkeys(("20", "21", "22", "23", "24", "40", "60", "70", "100"), BounceClass.SOFT),
    **dict.fromkeys(("50", "51", "52", "53", "54"), BounceClass.BLOCK),
    "25": BounceClass.BLOCK,  # admin failure: SparkPost's own policy refused it
    "80": BounceClass.UNDETERMINED,  # a subscribe request
}
"""SparkPost's ``bounce_class`` codes; ``1`` (undetermined) and unknown codes are
classified from the SMTP reply instead."""

_NOT_MESSAGE_EVENTS: Final = frozenset(
    {"relay_event", "relay_message", "ab_test_event", "ingest_event", "sms_status_event"}
)
_ENGAGEMENT: Final = frozenset({EventType.OPENED, EventType.CLICKED, EventType.UNSUBSCRIBED})


class SparkPostAdapter(WebhookAdapter):
    """Checks the credentials of SparkPost event webhooks and parses their batches.

    Args:
        username: The ``auth_credentials`` user name (``auth_type: basic``).
        password: The ``auth_credentials`` password.
        token: A fixed bearer token to accept.
        token_validator: Called with a bearer token (``auth_type: oauth2``);
            returns whether your authorization server issued it.
        **options: :class:`~commhistory.providers.base.WebhookAdapter` options.

    Raises:
        InvalidInputError: No password, token or validator is given.

    .. versionadded:: 0.4.0
    """

    name: ClassVar[str] = "sparkpost"
    auth_failure_status: ClassVar[int] = 401

    def __init__(
        self,
        username: str | None = None,
        password: str | None = None,
        *,
        token: str | None = None,
        token_validator: Callable[[str], bool] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        if token_validator is not None and not callable(token_validator):
            raise InvalidInputError(field="token_validator", reason="must be callable")
        self._validator = token_validator
        self._credentials: HttpCredentials | None = None
        if password or token or token_validator is None:
            self._credentials = HttpCredentials.of(username, password, token)

    def _verify(self, request: WebhookRequest) -> None:
        header = (request.header("Authorization") or "").strip()
        scheme, _, value = header.partition(" ")
        if self._validator is not None and scheme.lower() == "bearer" and value.strip():
            if self._validator(value.strip()):
                return
            if self._credentials is None or not self._credentials.token:
                raise SignatureError("Authorization: the token validator refused the token")
        if self._credentials is None:
            raise SignatureError("Authorization: expected an OAuth 2.0 bearer token")
        self._credentials.check(request)

    def _events(self, payload: Any, request: WebhookRequest) -> Sequence[Any]:
        if not isinstance(payload, list):
            raise PayloadError(
                field="<body>", reason=f"expected an array of events, got {json_type(payload)}"
            )
        # The webhook test, [{"msys": {}}], carries no event: nothing to keep.
        return [
            item
            for item in payload
            if not (
                isinstance(item, dict) and isinstance(item.get("msys"), dict) and not item["msys"]
            )
        ]

    def _parse_event(self, event: Any) -> list[Record]:
        wrapper = get_mapping(as_object(event), "msys")
        if len(wrapper) != 1:
            raise PayloadError(field="msys", reason="expected exactly one event class")
        [(kind, body)] = wrapper.items()
        if kind in _NOT_MESSAGE_EVENTS:
            raise PayloadError(
                field="msys", reason=f"{kind} events are not about sent messages: not recorded"
            )
        item = as_object(body, field="msys.<event>")
        name = require_str(item, "type")
        type_ = EVENT_TYPES.get(name)
        if type_ is None:
            raise unknown_event("type", name)
        message_id = require_str(item, "message_id")
        event_id, provider_event_id = self.ids(get_str(item, "event_id") or content_hash(item))
        metadata: dict[str, Any] = tagged(
            {"provider_raw": dict(item)}, item.get("rcpt_tags"), "rcpt_tags"
        )
        occurred_at = self._time(item, metadata)
        reason = get_str(item, "raw_reason") or get_str(item, "reason")
        status_code = bounce = None
        if type_ is EventType.BOUNCED:
            given = BOUNCE_CLASSES.get(get_str(item, "bounce_class") or "")
            status_code, bounce = bounce_details(get_str(item, "error_code"), reason, bounce=given)
        elif type_ in (EventType.DEFERRED, EventType.REJECTED, EventType.FAILED):
            status_code = enhanced_status(get_str(item, "error_code"), reason)
        engagement = type_ in _ENGAGEMENT
        return [
            Event(
                event_id=event_id,
                type=type_,
                occurred_at=occurred_at,
                provider=self.name,
                provider_message_id=message_id,
                provider_event_id=provider_event_id,
                address=optional_email(item.get("raw_rcpt_to") or item.get("rcpt_to")),
                status_code=status_code,
                bounce=bounce,
                reason=reason if not engagement else None,
                url=get_str(item, "target_link_url") if type_ is EventType.CLICKED else None,
                user_agent=get_str(item, "user_agent") if engagement else None,
                ip=get_str(item, "ip_address") if engagement else None,
                metadata=metadata,
            )
        ]

    def _time(self, item: Mapping[str, Any], metadata: dict[str, Any]) -> datetime:
        value = item.get("timestamp")
        if value is None or value == "":
            metadata["time_source"] = "received"
            return datetime.fromtimestamp(self.clock(), tz=UTC)
        if isinstance(value, str) and "T" in value:
            return iso_time(value, field="timestamp")
        return epoch(value, field="timestamp")


def _from_secret(secret: str | None, /, **options: Any) -> SparkPostAdapter:
    user, password, token = split_secret(secret)
    return SparkPostAdapter(user, password, token=token, **options)


def _sign(events: Any, secret: Any, /, *, url: str, timestamp: float) -> SignedRequest:
    # events: the batch (an array of {"msys": {...}}); secret: "user:password" or "Bearer TOKEN".
    headers = {
        "Content-Type": "application/json",
        "Authorization": HttpCredentials.from_secret(str(secret)).header(),
        "X-MessageSystems-Batch-ID": content_hash(events)[:32],
    }
    return SignedRequest(body=json_body(events), headers=headers, url=url)


PROVIDER: Final = register_provider(
    ProviderSpec(adapter=SparkPostAdapter, from_secret=_from_secret, signer=_sign)
)
"""SparkPost's entry in the provider registry.

``--secret`` and the test secret are ``user:password``, or ``Bearer TOKEN``.

.. versionadded:: 0.4.0
"""
