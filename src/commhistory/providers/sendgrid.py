"""SendGrid Event Webhook: batched JSON events, signed with ECDSA P-256.

SendGrid POSTs a JSON array of events. With *Signed Event Webhook* enabled it
adds ``X-Twilio-Email-Event-Webhook-Signature`` (base64 DER ECDSA signature,
SHA-256) over the ``X-Twilio-Email-Event-Webhook-Timestamp`` header's value
followed by the raw body. The verification key is the public key SendGrid
shows in its settings (base64 DER, or PEM).

Events link to their message by ``provider="sendgrid"`` and the
``X-Message-Id`` the send API returned (:func:`message_id_of`). SendGrid's
``sg_message_id`` is that id followed by a dot and the id of the filter node
that processed the message (``.filter...``, ``.recvd-...``). The id itself may
contain dots (``14c5d75ce93.dfd.64b469``), so it ends where the node part
begins, not at the first dot. An event whose ``sg_message_id`` has no id
before the node part, or that has none, is linked through ``smtp-id``, whose
local part (before ``@``) is the same id on SendGrid's hosts. The dedupe key
is ``sg_event_id`` (a content hash when absent).

.. versionchanged:: 0.4.0
   Message ids containing dots, and ``sg_message_id`` values with no id, link
   to their message.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Final

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from commhistory.errors import InvalidInputError, PayloadError, SignatureError
from commhistory.model import BounceClass, Event, EventType, Record
from commhistory.providers.base import (
    WebhookAdapter,
    WebhookRequest,
    as_object,
    b64decode_signature,
    bounce_details,
    content_hash,
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
    "EVENT_TYPES",
    "PROVIDER",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "SendGridAdapter",
    "load_public_key",
    "message_id_of",
]

SIGNATURE_HEADER: Final = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER: Final = "X-Twilio-Email-Event-Webhook-Timestamp"

EVENT_TYPES: Final[Mapping[str, EventType]] = {
    "processed": EventType.QUEUED,
    "deferred": EventType.DEFERRED,
    "delivered": EventType.DELIVERED,
    "bounce": EventType.BOUNCED,
    "blocked": EventType.BOUNCED,
    "dropped": EventType.REJECTED,
    "open": EventType.OPENED,
    "click": EventType.CLICKED,
    "spamreport": EventType.COMPLAINED,
    "unsubscribe": EventType.UNSUBSCRIBED,
    "group_unsubscribe": EventType.UNSUBSCRIBED,
    "group_resubscribe": EventType.SUBSCRIBED,
}
"""SendGrid's ``event`` names; any other name becomes ``UNKNOWN``."""

_BOUNCE_TYPES: Final[Mapping[str, BounceClass]] = {
    # SendGrid's bounce "type": "blocked" is a block, "bounce" is decided by the code.
    "blocked": BounceClass.BLOCK,
}


_NODE_PART: Final = re.compile(r"(?:^|\.)(?:filter|recvd)", re.IGNORECASE)
"""Where the filter node's part of ``sg_message_id`` begins (``.filter0001...``,
``.filterdrecv-...``, ``.recvd-...``), or a value that is only a node part."""

_SENDGRID_HOSTS: Final = re.compile(r"(?:^ismtpd|\.sendgrid\.net$)", re.IGNORECASE)


def message_id_of(sg_message_id: str | None, smtp_id: str | None) -> str | None:
    """Return the ``X-Message-Id`` an event belongs to, or ``None`` when it has none.

    >>> from commhistory.providers.sendgrid import message_id_of
    >>> message_id_of("14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0", None)
    '14c5d75ce93.dfd.64b469'
    >>> message_id_of("filter0001p1las1-2718-5A1B2C3D-7.0", "<LRzXl_NHSt@ismtpd-555>")
    'LRzXl_NHSt'

    Args:
        sg_message_id: The event's ``sg_message_id``.
        smtp_id: The event's ``smtp-id`` (``<id@ismtpd...>``).

    .. versionadded:: 0.4.0
    """
    if sg_message_id:
        found = _NODE_PART.search(sg_message_id)
        head = sg_message_id if found is None else sg_message_id[: found.start()]
        if head:
            return head
    if not smtp_id:
        return None
    bare = smtp_id.strip().strip("<>").strip()
    local, at, host = bare.rpartition("@")
    if at and local and _SENDGRID_HOSTS.search(host):
        return local
    return bare or None


def load_public_key(key: str | bytes | ec.EllipticCurvePublicKey) -> ec.EllipticCurvePublicKey:
    """Load SendGrid's verification key (base64 DER as shown in its settings, or PEM).

    Raises:
        InvalidInputError: ``field="public_key"``; not an EC public key.
    """
    if isinstance(key, ec.EllipticCurvePublicKey):
        return key
    data = key.encode("ascii", errors="replace") if isinstance(key, str) else key
    try:
        if b"-----BEGIN" in data:
            loaded = serialization.load_pem_public_key(data)
        else:
            loaded = serialization.load_der_public_key(base64.b64decode(data, validate=True))
    except (ValueError, TypeError, binascii.Error, UnsupportedAlgorithm):
        raise InvalidInputError(field="public_key", reason="not a valid public key") from None
    if not isinstance(loaded, ec.EllipticCurvePublicKey):
        raise InvalidInputError(field="public_key", reason="not an elliptic-curve public key")
    return loaded


class SendGridAdapter(WebhookAdapter):
    """Verifies and parses SendGrid Event Webhook requests.

    Args:
        public_key: The verification key from SendGrid's Event Webhook settings
            (base64 DER or PEM), or a loaded key.
        **options: :class:`~commhistory.providers.base.WebhookAdapter` options
            (``max_body_bytes``, ``tolerance``, ``clock``, ``contact_resolver``).

    Raises:
        InvalidInputError: The key cannot be loaded.

    .. versionadded:: 0.1.0
    """

    name: ClassVar[str] = "sendgrid"

    def __init__(self, public_key: str | bytes | ec.EllipticCurvePublicKey, **options: Any):
        super().__init__(**options)
        self._key = load_public_key(public_key)

    def _verify(self, request: WebhookRequest) -> None:
        signature = request.header(SIGNATURE_HEADER)
        timestamp = request.header(TIMESTAMP_HEADER)
        if not signature:
            raise SignatureError(f"missing header {SIGNATURE_HEADER}")
        if not timestamp:
            raise SignatureError(f"missing header {TIMESTAMP_HEADER}")
        try:
            signed_at = float(timestamp)
        except ValueError:
            raise SignatureError(f"{TIMESTAMP_HEADER}: not a number") from None
        der = b64decode_signature(signature, header=SIGNATURE_HEADER)
        try:
            self._key.verify(der, timestamp.encode() + request.body, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            raise SignatureError(
                "signature does not match the body and timestamp (wrong public key,"
                " or the body was changed)"
            ) from None
        self.check_timestamp(signed_at, what=TIMESTAMP_HEADER)

    def _events(self, payload: Any, request: WebhookRequest) -> Sequence[Any]:
        if not isinstance(payload, list):
            raise PayloadError(
                field="<body>", reason=f"expected an array of events, got {json_type(payload)}"
            )
        return payload

    def _parse_event(self, event: Any) -> list[Record]:
        # The hot path of a batch. Each string field is read inline when it is a
        # non-empty str (what get_str would return unchanged), and through
        # get_str otherwise, so errors and their order are get_str's.
        item = as_object(event)
        get = item.get
        name = get("event")
        if type(name) is not str or not name:
            name = require_str(item, "event")
        type_ = EVENT_TYPES.get(name, EventType.UNKNOWN)
        sg_message_id = get("sg_message_id")
        if type(sg_message_id) is not str or not sg_message_id:
            sg_message_id = get_str(item, "sg_message_id")
        provider_message_id = message_id_of(sg_message_id, None)
        if provider_message_id is None:
            provider_message_id = message_id_of(None, get_str(item, "smtp-id"))
            if provider_message_id is None:
                raise PayloadError(field="sg_message_id", reason="required")
        key = get("sg_event_id")
        if type(key) is not str or not key:
            key = get_str(item, "sg_event_id") or content_hash(item)
        event_id, provider_event_id = self.ids(key)
        occurred_at = epoch(get("timestamp"), field="timestamp")
        reason = get("reason")
        if type(reason) is not str or not reason:
            reason = get_str(item, "reason") or get_str(item, "response")
        status_code = bounce = None
        if type_ is EventType.BOUNCED:
            given = _BOUNCE_TYPES.get(name) or _BOUNCE_TYPES.get(get_str(item, "type") or "")
            status_code, bounce = bounce_details(get("status"), reason, bounce=given)
        elif type_ is EventType.DEFERRED:
            # A deferral has no bounce class, so only its code is read; a malformed
            # "type" is still refused, as for a bounce.
            get_str(item, "type")
            status_code = enhanced_status(get("status"), reason)
        address = optional_email(get("email"))
        url = None
        if type_ is EventType.CLICKED:
            url = get("url")
            if type(url) is not str or not url:
                url = get_str(item, "url")
        user_agent = get("useragent")
        if type(user_agent) is not str or not user_agent:
            user_agent = get_str(item, "useragent")
        ip = get("ip")
        if type(ip) is not str or not ip:
            ip = get_str(item, "ip")
        return [
            Event(
                event_id=event_id,
                type=type_,
                occurred_at=occurred_at,
                provider=self.name,
                provider_message_id=provider_message_id,
                provider_event_id=provider_event_id,
                address=address,
                status_code=status_code,
                bounce=bounce,
                reason=reason,
                url=url,
                user_agent=user_agent,
                ip=ip,
                machine=get("sg_machine_open") is True,
                metadata={"provider_raw": item},
            )
        ]


def _from_secret(secret: str | None, /, **options: Any) -> SendGridAdapter:
    if secret is None:  # parse only: the adapter needs a key, any will do
        return SendGridAdapter(ec.generate_private_key(ec.SECP256R1()).public_key(), **options)
    return SendGridAdapter(secret, **options)


def _sign(events: Any, secret: Any, /, *, url: str, timestamp: float) -> SignedRequest:
    # secret: a commhistory.testing.SendGridKeys, an EC private key, or its PEM.
    key: object = getattr(secret, "private_key", secret)
    if isinstance(key, str | bytes):
        key = serialization.load_pem_private_key(
            key.encode() if isinstance(key, str) else key, password=None
        )
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise InvalidInputError(
            field="secret", reason="give a SendGridKeys or an EC private key for 'sendgrid'"
        )
    body = json_body(events)
    stamp = str(int(timestamp))
    signature = key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: base64.b64encode(signature).decode("ascii"),
        TIMESTAMP_HEADER: stamp,
    }
    return SignedRequest(body=body, headers=headers, url=url)


PROVIDER: Final = register_provider(
    ProviderSpec(adapter=SendGridAdapter, from_secret=_from_secret, signer=_sign)
)
"""SendGrid's entry in the provider registry.

``--secret`` is the public key; tests sign with :func:`commhistory.testing.sendgrid_keys`.

.. versionadded:: 0.4.0
"""
