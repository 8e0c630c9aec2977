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

SendGrid Inbound Parse (emails received for your domain) has its own adapter
and provider name, :class:`SendGridInboundAdapter` (``sendgrid-inbound``):
another endpoint, another body (``multipart/form-data``), another key.

.. versionchanged:: 0.4.0
   Message ids containing dots, and ``sg_message_id`` values with no id, link
   to their message. Inbound Parse (``sendgrid-inbound``).

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import base64
import binascii
import email.parser
import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from email.utils import parseaddr
from typing import Any, ClassVar, Final

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from commhistory.errors import InvalidInputError, PayloadError, SignatureError
from commhistory.model import BounceClass, Event, EventType, Record
from commhistory.providers._shared import tagged, unknown_event
from commhistory.providers.base import (
    Attachment,
    MultipartForm,
    WebhookAdapter,
    WebhookRequest,
    as_object,
    b64decode_signature,
    bounce_details,
    content_hash,
    decode_multipart,
    email_address,
    enhanced_status,
    epoch,
    get_str,
    header_text,
    json_type,
    mail_date,
    message_id_header,
    mime_parts,
    optional_email,
    require_str,
)
from commhistory.providers.registry import (
    ProviderSpec,
    SignedRequest,
    json_body,
    multipart_body,
    register_provider,
)

__all__ = [
    "EVENT_TYPES",
    "INBOUND_PROVIDER",
    "PROVIDER",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "SendGridAdapter",
    "SendGridInboundAdapter",
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
"""SendGrid's ``event`` names; any other name makes the event a dead letter."""

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
        type_ = EVENT_TYPES.get(name)
        if type_ is None:
            raise unknown_event("event", name)
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
                metadata=tagged({"provider_raw": item}, item.get("category"), "category"),
            )
        ]


class SendGridInboundAdapter(SendGridAdapter):
    """Verifies and parses SendGrid Inbound Parse posts (emails received for your domain).

    Inbound Parse POSTs each received email as ``multipart/form-data``. With a
    security policy that signs requests, SendGrid signs with ECDSA P-256; the
    adapter verifies as for the signed Event Webhook (timestamp + raw body,
    the same headers), with the policy's public key. SendGrid's documentation
    of Parse security policies does not name the headers: check one real
    signed post (``commhistory verify-webhook``) before relying on it.

    The email becomes an inbound :class:`~commhistory.Message` on the email
    channel. The sender is the address in the ``from`` field (else the
    envelope's ``from``), resolved through ``contact_resolver``; ``subject`` and
    ``text`` become the encrypted subject and body, decoded with the charsets
    the ``charsets`` field names; ``sent_at`` is the ``Date`` in ``headers``
    (else the time received). The message id is
    ``sendgrid-inbound:<Message-ID>`` (a hash of the email when it has none).
    Attachments keep only their name, type and size (``metadata["attachments"]``).
    With *POST the raw, full MIME message* on, the ``email`` field is read
    instead. ``provider_raw`` keeps the other fields (envelope, spam score and
    report, SPF, DKIM...), never ``text``, ``html`` or ``email``.

    Args:
        public_key: The security policy's public key (base64 DER or PEM).
        **options: :class:`~commhistory.providers.base.WebhookAdapter` options;
            inbound emails need ``contact_resolver``. Emails with attachments
            can be larger than the default ``max_body_bytes`` (SendGrid posts
            up to 30 MB).

    .. versionadded:: 0.4.0
    """

    name: ClassVar[str] = "sendgrid-inbound"

    def _decode(self, request: WebhookRequest) -> Any:
        if request.content_type != "multipart/form-data":
            raise PayloadError(field="Content-Type", reason="expected multipart/form-data")
        return decode_multipart(request.body, request.headers.get("content-type", ""))

    def _events(self, payload: Any, request: WebhookRequest) -> Sequence[Any]:
        return [payload]

    def _parse_event(self, event: Any) -> list[Record]:
        form: MultipartForm = event
        charsets = _charsets(form.text("charsets"))
        fields = form.as_form(charsets)
        raw_mime = form.fields.get("email")
        attachments: tuple[Attachment, ...] = form.files
        body = _first(fields.get("text"))
        if raw_mime:
            headers, body, attachments = mime_parts(raw_mime[0][0])
        else:
            headers = email.parser.HeaderParser().parsestr(_first(fields.get("headers")) or "")
        given = _first(fields.get("from")) or header_text(headers.get("from"))
        if given:
            sender = email_address(parseaddr(given)[1], field="from")
        else:
            envelope = _envelope(_first(fields.get("envelope")))
            sender = email_address(envelope.get("from"), field="envelope.from")
        subject = _first(fields.get("subject")) or header_text(headers.get("subject"))
        message_id = message_id_header(header_text(headers.get("message-id")))
        date = header_text(headers.get("date"))
        key = message_id or content_hash([sender, _first(fields.get("to")), subject, date, body])
        raw = {k: v for k, v in fields.items() if k not in _CONTENT_FIELDS}
        return [
            self.inbound_email(
                sender=sender,
                key=key,
                provider_message_id=message_id,
                sent_at=mail_date(date) or datetime.fromtimestamp(self.clock(), tz=UTC),
                subject=subject,
                body=body,
                attachments=attachments,
                raw=raw,
            )
        ]


_CONTENT_FIELDS: Final = frozenset({"text", "html", "email"})
"""Inbound Parse fields with the email's content: never kept in ``provider_raw``."""


def _first(value: object) -> str | None:
    """A form field's (first) value."""
    if isinstance(value, list):
        value = value[0] if value else None
    return value if isinstance(value, str) and value else None


def _charsets(text: str | None) -> dict[str, str]:
    """The ``charsets`` field: each field's charset (``{}`` when absent or unreadable)."""
    try:
        value = json.loads(text) if text else {}
    except (ValueError, RecursionError):
        return {}
    if not isinstance(value, dict):
        return {}
    return {k: v for k, v in value.items() if isinstance(k, str) and isinstance(v, str)}


def _envelope(text: str | None) -> dict[str, Any]:
    try:
        value = json.loads(text) if text else {}
    except (ValueError, RecursionError):
        raise PayloadError(field="envelope", reason="not JSON") from None
    if not isinstance(value, dict):
        raise PayloadError(field="envelope", reason=f"expected an object, got {json_type(value)}")
    return value


def _from_secret(secret: str | None, /, **options: Any) -> SendGridAdapter:
    if secret is None:  # parse only: the adapter needs a key, any will do
        return SendGridAdapter(ec.generate_private_key(ec.SECP256R1()).public_key(), **options)
    return SendGridAdapter(secret, **options)


def _signing_key(secret: Any) -> ec.EllipticCurvePrivateKey:
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
    return key


def _signed(
    body: bytes, content_type: str, secret: Any, *, url: str, timestamp: float
) -> SignedRequest:
    stamp = str(int(timestamp))
    signature = _signing_key(secret).sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    headers = {
        "Content-Type": content_type,
        SIGNATURE_HEADER: base64.b64encode(signature).decode("ascii"),
        TIMESTAMP_HEADER: stamp,
    }
    return SignedRequest(body=body, headers=headers, url=url)


def _sign(events: Any, secret: Any, /, *, url: str, timestamp: float) -> SignedRequest:
    return _signed(json_body(events), "application/json", secret, url=url, timestamp=timestamp)


def _sign_inbound(events: Any, secret: Any, /, *, url: str, timestamp: float) -> SignedRequest:
    # events: the form fields (see multipart_body); secret: as for 'sendgrid'.
    boundary = (
        "xYzZY"
        + content_hash(
            [events, timestamp],
        )[:16]
    )
    body = multipart_body(dict(events), boundary=boundary)
    content_type = f"multipart/form-data; boundary={boundary}"
    return _signed(body, content_type, secret, url=url, timestamp=timestamp)


PROVIDER: Final = register_provider(
    ProviderSpec(adapter=SendGridAdapter, from_secret=_from_secret, signer=_sign)
)
"""SendGrid's entry in the provider registry.

``--secret`` is the public key; tests sign with :func:`commhistory.testing.sendgrid_keys`.

.. versionadded:: 0.4.0
"""


def _inbound_from_secret(secret: str | None, /, **options: Any) -> SendGridInboundAdapter:
    if secret is None:  # parse only: the adapter needs a key, any will do
        key = ec.generate_private_key(ec.SECP256R1()).public_key()
        return SendGridInboundAdapter(key, **options)
    return SendGridInboundAdapter(secret, **options)


INBOUND_PROVIDER: Final = register_provider(
    ProviderSpec(
        adapter=SendGridInboundAdapter, from_secret=_inbound_from_secret, signer=_sign_inbound
    )
)
"""SendGrid Inbound Parse's entry in the provider registry (``sendgrid-inbound``).

``--secret`` is the security policy's public key; tests sign with
:func:`commhistory.testing.sendgrid_keys` and give the form fields.

.. versionadded:: 0.4.0
"""
