"""Postal webhooks: one JSON event per request, signed with the server's RSA key.

Postal (the self-hosted mail server, postalserver.io) POSTs an envelope
``{"event", "timestamp", "uuid", "payload"}``. Every request is signed with
the installation's private signing key (RSA PKCS#1 v1.5) over the raw body:

* ``X-Postal-Signature-256``: base64 RSA-SHA256, what Postal 3 sends and what
  the adapter checks when present;
* ``X-Postal-Signature``: base64 RSA-SHA1, kept by Postal for older receivers
  and the only header older installations send. The adapter accepts it only
  when no SHA-256 signature is given, and refuses it with ``require_sha256=True``.

The verification key is the installation's public key: its JSON Web Key Set
(``/.well-known/jwks.json``, where ``X-Postal-Signature-KID`` picks the key),
one JWK, a PEM public key, or the base64 DER key Postal publishes in its DNS
``TXT`` record (``p=...``). Postal signs no timestamp for the adapter to check:
a captured request can only be sent again unchanged, and is then a duplicate
(its ``uuid`` is the dedupe key, the same on every retry).

Events link by ``provider="postal"`` + the ``Message-ID`` header of the message
(``message.message_id``, without angle brackets); the address is the envelope
recipient ``message.to``. Status events on *incoming* messages (Postal
delivering mail to your own endpoints) become dead letters: they are not
about mail to a customer, and must not suppress your own inbound address. An
event name the adapter does not map is a dead letter naming it, the raw event
kept whole.
Events that are not about a message (``DomainDNSError``, ``SendLimitApproaching``,
``SendLimitExceeded``) become dead letters naming the event.

.. versionadded:: 0.4.0
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar, Final

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

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
    enhanced_status,
    epoch,
    get_mapping,
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

__all__ = [
    "EVENT_TYPES",
    "KID_HEADER",
    "PROVIDER",
    "SHA1_HEADER",
    "SHA256_HEADER",
    "PostalAdapter",
    "load_postal_keys",
]

SHA256_HEADER: Final = "X-Postal-Signature-256"
SHA1_HEADER: Final = "X-Postal-Signature"
KID_HEADER: Final = "X-Postal-Signature-KID"

EVENT_TYPES: Final[Mapping[str, EventType]] = {
    "MessageSent": EventType.DELIVERED,
    "MessageDelayed": EventType.DEFERRED,
    "MessageDeliveryFailed": EventType.BOUNCED,
    "MessageHeld": EventType.REJECTED,
    "MessageBounced": EventType.BOUNCED,
    "MessageLinkClicked": EventType.CLICKED,
    "MessageLoaded": EventType.OPENED,
}
"""Postal's message events; any other event makes a dead letter."""

NOT_ABOUT_A_MESSAGE: Final = frozenset(
    {"DomainDNSError", "SendLimitApproaching", "SendLimitExceeded"}
)
"""Postal events about the server or its domains: dead letters naming the event."""

PostalKeys = Mapping[str | None, rsa.RSAPublicKey]
"""Verification keys by key id (``None``: a key without one, tried for any id)."""


def _b64url_int(value: object, *, field: str) -> int:
    if not isinstance(value, str) or not value:
        raise InvalidInputError(field=field, reason="required in an RSA JWK")
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        raise InvalidInputError(field=field, reason="not base64url") from None
    return int.from_bytes(raw, "big")


def _from_jwk(jwk: Mapping[str, Any]) -> tuple[str | None, rsa.RSAPublicKey]:
    if jwk.get("kty") != "RSA":
        raise InvalidInputError(field="public_key", reason="the JWK is not an RSA key")
    numbers = rsa.RSAPublicNumbers(
        _b64url_int(jwk.get("e"), field="public_key.e"),
        _b64url_int(jwk.get("n"), field="public_key.n"),
    )
    try:
        key = numbers.public_key()
    except ValueError:
        raise InvalidInputError(field="public_key", reason="not a valid RSA key") from None
    kid = jwk.get("kid")
    return (kid if isinstance(kid, str) and kid else None), key


def load_postal_keys(key: str | bytes | rsa.RSAPublicKey | Mapping[str, Any]) -> PostalKeys:
    """Load Postal's verification key(s).

    Args:
        key: A loaded RSA public key; a PEM public key; the base64 DER key of
            Postal's DNS record (``p=...``, with or without the ``p=``); one
            JWK; or the JSON Web Key Set from ``/.well-known/jwks.json`` (as JSON
            text or a decoded mapping).

    Returns:
        The keys by key id.

    Raises:
        InvalidInputError: ``field="public_key"``; no RSA public key can be read.
    """
    if isinstance(key, rsa.RSAPublicKey):
        return {None: key}
    if isinstance(key, Mapping):
        document: Any = key
    else:
        text = key.decode("utf-8", errors="replace") if isinstance(key, bytes) else key
        text = text.strip()
        if text.startswith("{"):
            try:
                document = json.loads(text)
            except (json.JSONDecodeError, RecursionError):
                raise InvalidInputError(field="public_key", reason="not valid JSON") from None
        else:
            return {None: _from_pem_or_der(text)}
    if not isinstance(document, Mapping):
        raise InvalidInputError(field="public_key", reason="expected a JWK or a JWK set")
    found = document.get("keys") if "keys" in document else [document]
    if not isinstance(found, list) or not found:
        raise InvalidInputError(field="public_key", reason="the JWK set has no keys")
    keys: dict[str | None, rsa.RSAPublicKey] = {}
    for item in found:
        if isinstance(item, Mapping) and item.get("kty") == "RSA":
            kid, loaded = _from_jwk(item)
            keys[kid] = loaded
    if not keys:
        raise InvalidInputError(field="public_key", reason="the JWK set has no RSA key")
    return keys


def _from_pem_or_der(text: str) -> rsa.RSAPublicKey:
    try:
        if "-----BEGIN" in text:
            loaded = serialization.load_pem_public_key(text.encode("ascii", errors="replace"))
        else:
            value = text.removeprefix("p=").strip().rstrip(";")
            der = base64.b64decode("".join(value.split()), validate=True)
            loaded = serialization.load_der_public_key(der)
    except (ValueError, TypeError, binascii.Error, UnsupportedAlgorithm):
        raise InvalidInputError(field="public_key", reason="not a valid public key") from None
    if not isinstance(loaded, rsa.RSAPublicKey):
        raise InvalidInputError(field="public_key", reason="not an RSA public key")
    return loaded


class PostalAdapter(WebhookAdapter):
    """Verifies and parses Postal webhooks.

    Args:
        public_key: The installation's public key or key set (see
            :func:`load_postal_keys`).
        require_sha256: Refuse requests signed only with RSA-SHA1
            (``X-Postal-Signature``); set it once every installation is Postal 3.
        **options: :class:`~commhistory.providers.base.WebhookAdapter` options.

    Raises:
        InvalidInputError: The key cannot be read.

    .. versionadded:: 0.4.0
    """

    name: ClassVar[str] = "postal"

    def __init__(
        self,
        public_key: str | bytes | rsa.RSAPublicKey | Mapping[str, Any],
        *,
        require_sha256: bool = False,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self._keys = load_postal_keys(public_key)
        self.require_sha256 = require_sha256

    def _verify(self, request: WebhookRequest) -> None:
        algorithm: hashes.HashAlgorithm
        strong = request.header(SHA256_HEADER)
        weak = request.header(SHA1_HEADER)
        if strong:
            header, value, algorithm = SHA256_HEADER, strong, hashes.SHA256()
        elif weak and not self.require_sha256:
            # Postal before 3 signs with SHA1withRSA only; verifying it is all they allow.
            header, value, algorithm = SHA1_HEADER, weak, hashes.SHA1()  # noqa: S303
        elif weak:
            raise SignatureError(
                f"only {SHA1_HEADER} (RSA-SHA1) was sent and require_sha256 is set;"
                f" Postal 3 sends {SHA256_HEADER}"
            )
        else:
            raise SignatureError(f"missing header {SHA256_HEADER} (or {SHA1_HEADER})")
        signature = b64decode_signature(value, header=header)
        kid = request.header(KID_HEADER)
        keys = [self._keys[kid]] if kid in self._keys else list(self._keys.values())
        for key in keys:
            try:
                key.verify(signature, request.body, padding.PKCS1v15(), algorithm)
            except InvalidSignature:
                continue
            return
        raise SignatureError(
            f"{header} does not match the body (wrong public key, or the body was changed)"
        )

    def _events(self, payload: Any, request: WebhookRequest) -> Sequence[Any]:
        as_object(payload, field="<body>")
        return [payload]

    def _parse_event(self, event: Any) -> list[Record]:
        item = as_object(event)
        name = require_str(item, "event")
        if name in NOT_ABOUT_A_MESSAGE:
            raise PayloadError(
                field="event", reason=f"{name!r} is not about a message (kept as a dead letter)"
            )
        body = get_mapping(item, "payload")
        if not body:
            raise PayloadError(field="payload", reason="required")
        known = EVENT_TYPES.get(name)
        if known is None:
            raise unknown_event("event", name)
        type_ = known
        message = get_mapping(body, "original_message" if name == "MessageBounced" else "message")
        message_id = get_str(message, "message_id")
        if message_id is None or not message_id.strip().strip("<>").strip():
            raise PayloadError(field="payload.message.message_id", reason="required")
        if get_str(message, "direction") == "incoming":  # delivery to your own endpoint
            raise PayloadError(
                field="payload.message.direction",
                reason="an incoming message's delivery to your endpoint (kept as a dead letter)",
            )
        output = get_str(body, "output")
        details = get_str(body, "details")
        status_code: str | None = None
        bounce: BounceClass | None = None
        if type_ is EventType.BOUNCED:
            status_code, bounce = bounce_details(output, output or details)
        elif type_ is EventType.DEFERRED:
            status_code = enhanced_status(output, output or details)
        key = get_str(item, "uuid") or content_hash(item)
        event_id, provider_event_id = self.ids(key)
        metadata: dict[str, Any] = {"provider_raw": dict(item)}
        tagged(metadata, message.get("tag"), "payload.message.tag")
        if body.get("timestamp") is not None:
            occurred_at = epoch(body.get("timestamp"), field="payload.timestamp")
        elif item.get("timestamp") is not None:
            occurred_at = epoch(item.get("timestamp"), field="timestamp")
        else:
            occurred_at = datetime.fromtimestamp(self.clock(), tz=UTC)
            metadata["time_source"] = "received"
        return [
            Event(
                event_id=event_id,
                type=type_,
                occurred_at=occurred_at,
                provider=self.name,
                provider_message_id=message_id.strip().strip("<>").strip(),
                provider_event_id=provider_event_id,
                address=optional_email(message.get("to")),
                status_code=status_code,
                bounce=bounce,
                reason=details if type_ is not EventType.DELIVERED else None,
                url=get_str(body, "url") if type_ is EventType.CLICKED else None,
                user_agent=get_str(body, "user_agent"),
                ip=get_str(body, "ip_address"),
                metadata=metadata,
            )
        ]


def _from_secret(secret: str | None, /, **options: Any) -> PostalAdapter:
    if secret is None:  # parse only: the adapter needs a key, any will do
        throwaway = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return PostalAdapter(throwaway.public_key(), **options)
    return PostalAdapter(secret, **options)


def _sign(events: Any, secret: Any, /, *, url: str, timestamp: float) -> SignedRequest:
    # events: the envelope ({"event", "timestamp", "uuid", "payload"});
    # secret: an RSA private key or its PEM (Postal's signing.key).
    key: object = secret
    if isinstance(key, str | bytes):
        try:
            key = serialization.load_pem_private_key(
                key.encode() if isinstance(key, str) else key, password=None
            )
        except (ValueError, TypeError, UnsupportedAlgorithm):
            key = None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise InvalidInputError(
            field="secret", reason="give an RSA private key (or its PEM) for 'postal'"
        )
    body = json_body(events)
    sha256 = key.sign(body, padding.PKCS1v15(), hashes.SHA256())
    sha1 = key.sign(body, padding.PKCS1v15(), hashes.SHA1())  # noqa: S303
    headers = {
        "Content-Type": "application/json",
        SHA256_HEADER: base64.b64encode(sha256).decode("ascii"),
        SHA1_HEADER: base64.b64encode(sha1).decode("ascii"),
    }
    return SignedRequest(body=body, headers=headers, url=url)


PROVIDER: Final = register_provider(
    ProviderSpec(adapter=PostalAdapter, from_secret=_from_secret, signer=_sign)
)
"""Postal's entry in the provider registry.

``--secret`` is the public key (PEM, base64 DER, a JWK or the JWK set); tests sign
with an RSA private key or its PEM.

.. versionadded:: 0.4.0
"""
