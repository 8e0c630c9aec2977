"""Mandrill (Mailchimp Transactional) webhooks: batched events in a form post, HMAC-SHA1 signed.

Mandrill POSTs ``application/x-www-form-urlencoded`` with one parameter,
``mandrill_events``: a JSON array of up to 1000 events. It signs each request
(https://mandrill.zendesk.com/hc/en-us/articles/360039232513-How-to-Authenticate-Webhook-Requests):
``X-Mandrill-Signature`` is the base64
HMAC-SHA1, under the webhook's key, of the webhook URL *exactly as configured
at Mandrill* followed by every POST parameter's name and value, sorted by
name, with no separator (:func:`mandrill_signature`). The adapter checks it
against the ``url`` it was given, else the request's URL; the signature has no
timestamp, so a captured request can be replayed, and a replay is stored once
(the dedupe keys below).

Message events (``event``; :data:`EVENT_TYPES`): ``send`` (the receiving
server accepted it: delivered), ``deferral``, ``hard_bounce`` / ``soft_bounce``
(reason: ``msg.diag``, else ``msg.bounce_description``), ``open``, ``click``
(``url`` becomes the encrypted ``url``), ``spam``, ``unsub`` and ``reject``
(Mandrill did not send). An open or click whose ``user_agent_parsed.type`` is
``robot`` is marked ``machine``. Sync events (``type`` ``blacklist`` /
``whitelist``, no message) and inbound messages (``event: inbound``) are not
recorded: each becomes a dead letter saying so; so does an unknown event name.

Events link by ``provider="mandrill"`` + ``msg._id`` (the ``_id`` the send API
returned per recipient). Mandrill's event ``_id`` is that message id, shared by
every event of the message, so the dedupe key is a content hash of the event.
The time is the event's ``ts`` (epoch seconds); ``msg.ts`` is when the message
was sent. An event without ``ts`` is timed when it was received, marked
``metadata["time_source"] = "received"``.

.. versionadded:: 0.4.0
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar, Final
from urllib.parse import urlencode

from commhistory.errors import InvalidInputError, PayloadError, SignatureError
from commhistory.model import BounceClass, Event, EventType, Record
from commhistory.providers._shared import tagged, unknown_event
from commhistory.providers.base import (
    WebhookAdapter,
    WebhookRequest,
    as_object,
    b64decode_signature,
    bounce_details,
    content_hash,
    decode_form,
    decode_json,
    enhanced_status,
    epoch,
    get_mapping,
    get_str,
    hmac_equal,
    json_type,
    optional_email,
)
from commhistory.providers.registry import ProviderSpec, SignedRequest, register_provider

__all__ = [
    "EVENT_TYPES",
    "PROVIDER",
    "SIGNATURE_HEADER",
    "MandrillAdapter",
    "decode_params",
    "mandrill_signature",
]

SIGNATURE_HEADER: Final = "X-Mandrill-Signature"

EVENT_TYPES: Final[Mapping[str, tuple[EventType, BounceClass | None]]] = {
    "send": (EventType.DELIVERED, None),
    "deferral": (EventType.DEFERRED, None),
    "hard_bounce": (EventType.BOUNCED, BounceClass.HARD),
    "soft_bounce": (EventType.BOUNCED, BounceClass.SOFT),
    "open": (EventType.OPENED, None),
    "click": (EventType.CLICKED, None),
    "spam": (EventType.COMPLAINED, None),
    "unsub": (EventType.UNSUBSCRIBED, None),
    "reject": (EventType.REJECTED, None),
}
"""Mandrill's message ``event`` names: the event type and, for bounces, the class."""

_PARAMETER: Final = "mandrill_events"
_PREFIX: Final = b"mandrill_events="
_ESCAPES: Final = re.compile(rb"(?:%[0-9A-Fa-f]{2})+")


def _unescape(run: re.Match[bytes]) -> bytes:
    return bytes.fromhex(run.group().replace(b"%", b"").decode("ascii"))


def decode_params(body: bytes) -> dict[str, Any]:
    """Decode a Mandrill form body exactly as the shared form decoder of the adapters does.

    Mandrill's body is one ASCII ``mandrill_events=<percent-encoded JSON>``
    pair; that is decoded in one pass (runs of escapes at once), several times
    faster than the standard library's form parser on a 1,000-event batch. Any
    other body goes through the shared decoder.

    Raises:
        PayloadError: The body is not UTF-8 form data.
    """
    if body.startswith(_PREFIX) and b"&" not in body and body.isascii():
        raw = body[len(_PREFIX) :].replace(b"+", b" ")
        return {_PARAMETER: _ESCAPES.sub(_unescape, raw).decode("utf-8", "replace")}
    return decode_form(body)


_SYNC_TYPES: Final = frozenset({"blacklist", "whitelist", "denylist", "allowlist"})


def mandrill_signature(key: str, url: str, params: Mapping[str, Any]) -> str:
    """Compute Mandrill's webhook signature.

    Args:
        key: The webhook's authentication key.
        url: The webhook URL exactly as configured at Mandrill.
        params: The POST parameters (a name given several times maps to the
            list of its values).

    Returns:
        The base64 HMAC-SHA1 of the URL followed by each parameter's name and
        value, sorted by name.
    """
    parts = [url]
    for name in sorted(params):
        values = params[name]
        for value in values if isinstance(values, list) else [values]:
            parts.append(f"{name}{value}")
    digest = hmac.new(key.encode("utf-8"), "".join(parts).encode("utf-8"), hashlib.sha1)
    return base64.b64encode(digest.digest()).decode("ascii")


class MandrillAdapter(WebhookAdapter):
    """Verifies and parses Mandrill (Mailchimp Transactional) webhooks.

    Args:
        webhook_key: The webhook's authentication key (Settings → Webhooks, or
            ``webhooks/info``).
        url: The webhook URL as configured at Mandrill, when it differs from
            the URL requests arrive at (a proxy in front); otherwise each
            request's ``url`` is used.
        **options: :class:`~commhistory.providers.base.WebhookAdapter` options.

    Raises:
        InvalidInputError: The key is empty.

    .. versionadded:: 0.4.0
    """

    name: ClassVar[str] = "mandrill"

    def __init__(self, webhook_key: str, *, url: str | None = None, **options: Any) -> None:
        super().__init__(**options)
        key: object = webhook_key
        if not isinstance(key, str) or not key:
            raise InvalidInputError(field="webhook_key", reason="must be a non-empty string")
        self._key = webhook_key
        self._url = url
        self._last: tuple[bytes, dict[str, Any]] | None = None

    def _verify(self, request: WebhookRequest) -> None:
        signature = request.header(SIGNATURE_HEADER)
        if not signature:
            raise SignatureError(f"missing header {SIGNATURE_HEADER}")
        url = self._url or request.url
        if not url:
            raise SignatureError("the webhook URL is unknown: Mandrill signs it (give url=)")
        b64decode_signature(signature, header=SIGNATURE_HEADER)
        try:
            params = self._params(request)
        except PayloadError as exc:
            raise SignatureError(f"body unreadable ({exc.reason})") from None
        if not hmac_equal(mandrill_signature(self._key, url, params), signature.strip()):
            raise SignatureError(
                "signature does not match (wrong webhook key, or the URL differs from the one"
                " configured at Mandrill, trailing slash and query string included)"
            )

    def _params(self, request: WebhookRequest) -> dict[str, Any]:
        # verify() and parse() of one request decode the same body: keep the last one.
        cached = self._last
        if cached is not None and cached[0] is request.body:
            return cached[1]
        params = decode_params(request.body)
        self._last = (request.body, params)
        return params

    def _decode(self, request: WebhookRequest) -> Any:
        params = self._params(request)
        value = params.get(_PARAMETER)
        if not isinstance(value, str):
            reason = "required" if value is None else "given more than once"
            raise PayloadError(field=_PARAMETER, reason=reason)
        return decode_json(value.encode("utf-8"))

    def _events(self, payload: Any, request: WebhookRequest) -> Sequence[Any]:
        if not isinstance(payload, list):
            raise PayloadError(
                field=_PARAMETER, reason=f"expected an array of events, got {json_type(payload)}"
            )
        return payload

    def _parse_event(self, event: Any) -> list[Record]:
        item = as_object(event)
        name = get_str(item, "event")
        if name is None:
            kind = get_str(item, "type")
            if kind in _SYNC_TYPES:
                raise PayloadError(
                    field="type", reason="sync events are about no message: not recorded"
                )
            raise PayloadError(field="event", reason="required")
        if name == "inbound":
            raise PayloadError(field="event", reason="inbound messages are not recorded")
        known = EVENT_TYPES.get(name)
        if known is None:
            raise unknown_event("event", name)
        type_, bounce_class = known
        msg = get_mapping(item, "msg")
        message_id = get_str(msg, "_id") or get_str(item, "_id")
        if message_id is None:
            raise PayloadError(field="msg._id", reason="required")
        event_id, provider_event_id = self.ids(content_hash(item))
        metadata: dict[str, Any] = tagged(
            {"provider_raw": dict(item)}, msg.get("tags"), "msg.tags"
        )
        if item.get("ts") is None:
            metadata["time_source"] = "received"
            occurred_at = datetime.fromtimestamp(self.clock(), tz=UTC)
        else:
            occurred_at = epoch(item["ts"], field="ts")
        reason = get_str(msg, "diag") or get_str(msg, "bounce_description")
        status_code = bounce = None
        if type_ is EventType.BOUNCED:
            status_code, bounce = bounce_details(None, get_str(msg, "diag"), bounce=bounce_class)
        elif type_ is EventType.DEFERRED:
            reason = _last_smtp_diag(msg) or reason
            status_code = enhanced_status(None, reason)
        agent = get_mapping(item, "user_agent_parsed")
        engagement = type_ in (EventType.OPENED, EventType.CLICKED)
        return [
            Event(
                event_id=event_id,
                type=type_,
                occurred_at=occurred_at,
                provider=self.name,
                provider_message_id=message_id,
                provider_event_id=provider_event_id,
                address=optional_email(msg.get("email")),
                status_code=status_code,
                bounce=bounce,
                reason=None if engagement else reason,
                url=get_str(item, "url") if type_ is EventType.CLICKED else None,
                user_agent=get_str(item, "user_agent"),
                ip=get_str(item, "ip"),
                machine=engagement and (get_str(agent, "type") or "").lower() == "robot",
                metadata=metadata,
            )
        ]


def _last_smtp_diag(msg: Mapping[str, Any]) -> str | None:
    attempts = msg.get("smtp_events")
    if not isinstance(attempts, list):
        return None
    for attempt in reversed(attempts):
        if isinstance(attempt, Mapping):
            found = get_str(attempt, "diag")
            if found:
                return found
    return None


def _from_secret(secret: str | None, /, **options: Any) -> MandrillAdapter:
    return MandrillAdapter(secret or "-", **options)


def _sign(events: Any, secret: Any, /, *, url: str, timestamp: float) -> SignedRequest:
    # events: the list of events; secret: the webhook key.
    params = {_PARAMETER: json.dumps(events, ensure_ascii=False, separators=(",", ":"))}
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        SIGNATURE_HEADER: mandrill_signature(str(secret), url, params),
    }
    return SignedRequest(body=urlencode(params).encode("ascii"), headers=headers, url=url)


PROVIDER: Final = register_provider(
    ProviderSpec(adapter=MandrillAdapter, from_secret=_from_secret, signer=_sign)
)
"""Mandrill's entry in the provider registry.

``--secret`` and the test secret are the webhook key; ``--url`` is the URL configured at
Mandrill.

.. versionadded:: 0.4.0
"""
