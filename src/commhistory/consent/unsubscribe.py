"""One-click unsubscribe (RFC 8058): signed tokens, the two headers, and the POST handler.

Gmail and Yahoo require bulk senders to offer one-click unsubscribe: a
``List-Unsubscribe`` header with an HTTPS URL and ``List-Unsubscribe-Post:
List-Unsubscribe=One-Click``. The mail client then POSTs the body
``List-Unsubscribe=One-Click`` to the URL, and the sender must stop.

Tokens carry the contact, channel, purpose and (optionally) message id
*encrypted* (AES-256-GCM under the keyring's ``token-enc`` subkey) and are
signed with HMAC-SHA256 under the ``token`` subkey, so they reveal nothing in
clear and cannot be forged or altered::

    tokens = UnsubscribeTokens(keyring)
    token = tokens.issue("c1", "email", "marketing", message_id="m1")
    headers = list_unsubscribe_headers("https://example.com/u", token,
                                       mailto="unsubscribe@example.com")

    # in the web handler of https://example.com/u/<token>
    result = handle_unsubscribe(repo, tokens, method=request.method, token=token,
                                body=request.body, content_type=request.content_type)

A GET never unsubscribes (link scanners follow links): it returns
``unsubscribed=False`` so the page can offer a button that POSTs.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
from datetime import UTC, datetime, timedelta
from typing import Final, Protocol
from urllib.parse import parse_qs, quote

import attrs
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from commhistory.consent.ledger import ConsentLedger, coerce, when
from commhistory.crypto import KeyProvider, derive_subkey
from commhistory.errors import CryptoError, NotFoundError, PayloadError, SignatureError
from commhistory.model import Channel, ConsentEvent, ConsentMethod, Purpose

__all__ = [
    "ONE_CLICK_BODY",
    "ConsentHolder",
    "UnsubscribeClaim",
    "UnsubscribeResult",
    "UnsubscribeTokens",
    "handle_unsubscribe",
    "list_unsubscribe_headers",
]

ONE_CLICK_BODY: Final = "List-Unsubscribe=One-Click"
"""The POST body (and ``List-Unsubscribe-Post`` value) RFC 8058 specifies."""

_VERSION: Final = "u1"
_MAC_SIZE: Final = 16
_NONCE_SIZE: Final = 12


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise SignatureError("unsubscribe token is malformed") from None
    if _b64(data) != text:  # only the canonical encoding: one token, one spelling
        raise SignatureError("unsubscribe token is malformed")
    return data


@attrs.frozen(kw_only=True)
class UnsubscribeClaim:
    """What a verified token says.

    Attributes:
        contact_id: The contact.
        channel: The channel to unsubscribe from.
        purpose: The purpose to unsubscribe from.
        message_id: The message the link was in, if given.
        issued_at: When the token was issued, UTC.
        nonce: The token's unique nonce (hex); the recorded withdrawal's id derives from it.
    """

    contact_id: str
    channel: Channel
    purpose: Purpose
    message_id: str | None
    issued_at: datetime
    nonce: str


@attrs.frozen(kw_only=True)
class UnsubscribeResult:
    """The outcome of an unsubscribe request.

    Attributes:
        unsubscribed: Whether a withdrawal is recorded (``False`` for a GET).
        claim: The verified token's content.
        consent_id: The recorded withdrawal's id.
        reason: Why nothing was recorded, for a GET or a body that is not one-click.
    """

    unsubscribed: bool
    claim: UnsubscribeClaim
    consent_id: str | None = None
    reason: str | None = None


class UnsubscribeTokens:
    """Issues and verifies unsubscribe tokens under a keyring.

    Args:
        keyring: The key provider; tokens use subkeys of its current key and
            verify under any key it still holds.

    .. versionadded:: 0.1.0
    """

    def __init__(self, keyring: KeyProvider) -> None:
        self._keyring = keyring
        self._keys: dict[str, tuple[bytes, AESGCM]] = {}

    def __repr__(self) -> str:
        return "UnsubscribeTokens()"

    def _key(self, key_id: str) -> tuple[bytes, AESGCM]:
        found = self._keys.get(key_id)
        if found is None:
            mac = derive_subkey(self._keyring, key_id, "token")
            enc = AESGCM(derive_subkey(self._keyring, key_id, "token-enc"))
            found = (mac, enc)
            self._keys[key_id] = found
        return found

    def issue(
        self,
        contact_id: str,
        channel: Channel | str,
        purpose: Purpose | str = Purpose.MARKETING,
        *,
        message_id: str | None = None,
        issued_at: datetime | None = None,
    ) -> str:
        """Return a URL-safe token for one contact, channel and purpose.

        Raises:
            PayloadError: Unknown channel or purpose, or an empty contact id.
        """
        given: object = contact_id  # callers may pass anything
        if not isinstance(given, str) or not given.strip():
            raise PayloadError(field="contact_id", reason="must be a non-empty string")
        ch = coerce(Channel, channel, "channel")
        pu = coerce(Purpose, purpose, "purpose")
        t = when(issued_at, "issued_at")
        payload = json.dumps(
            {"c": contact_id, "ch": ch.value, "p": pu.value, "m": message_id,
             "t": int(t.timestamp())},
            separators=(",", ":"),
        ).encode()  # fmt: skip
        key_id = self._keyring.current_key_id
        mac_key, aead = self._key(key_id)
        nonce = os.urandom(_NONCE_SIZE)
        head = f"{_VERSION}.{key_id}."
        body = _b64(nonce + aead.encrypt(nonce, payload, head.encode()))
        tag = hmac.new(mac_key, (head + body).encode(), hashlib.sha256).digest()[:_MAC_SIZE]
        return f"{head}{body}.{_b64(tag)}"

    def verify(
        self, token: str, *, max_age: timedelta | None = None, now: datetime | None = None
    ) -> UnsubscribeClaim:
        """Check a token's signature and return what it says.

        Args:
            token: The token from the URL.
            max_age: Refuse tokens older than this (default: no limit).
            now: The current time (for tests).

        Raises:
            SignatureError: Malformed, altered, signed under a key this keyring
                does not hold (a foreign token), or too old.
        """
        if not isinstance(token, str):
            raise SignatureError("unsubscribe token is malformed")
        parts = token.split(".")
        if len(parts) != 4 or parts[0] != _VERSION:
            raise SignatureError("unsubscribe token is malformed")
        _, key_id, body, tag = parts
        try:
            mac_key, aead = self._key(key_id)
        except CryptoError as exc:
            raise SignatureError("unsubscribe token is signed under an unknown key") from exc
        head = f"{_VERSION}.{key_id}."
        expected = hmac.new(mac_key, (head + body).encode(), hashlib.sha256).digest()[:_MAC_SIZE]
        if not hmac.compare_digest(expected, _unb64(tag)):
            raise SignatureError("unsubscribe token signature does not verify")
        raw = _unb64(body)
        try:
            payload = json.loads(aead.decrypt(raw[:_NONCE_SIZE], raw[_NONCE_SIZE:], head.encode()))
            claim = UnsubscribeClaim(
                contact_id=str(payload["c"]),
                channel=Channel(payload["ch"]),
                purpose=Purpose(payload["p"]),
                message_id=payload["m"],
                issued_at=datetime.fromtimestamp(int(payload["t"]), UTC),
                nonce=raw[:_NONCE_SIZE].hex(),
            )
        except (InvalidTag, ValueError, KeyError, TypeError):
            raise SignatureError("unsubscribe token content does not verify") from None
        if max_age is not None and when(now, "now") - claim.issued_at > max_age:
            raise SignatureError("unsubscribe token has expired")
        return claim


def list_unsubscribe_headers(
    url_base: str, token: str, *, mailto: str | None = None
) -> dict[str, str]:
    """Build the RFC 8058 headers for one message.

    Args:
        url_base: The HTTPS endpoint; the token is appended as a path segment.
        token: From :meth:`UnsubscribeTokens.issue`.
        mailto: An optional ``mailto:`` address offered as well (RFC 2369).

    Returns:
        ``{"List-Unsubscribe": "<https://...>, <mailto:...>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}``.

    Raises:
        PayloadError: *url_base* is not an HTTPS URL (RFC 8058 requires HTTPS).
    """
    given: object = url_base
    if not isinstance(given, str) or not given.startswith("https://"):
        raise PayloadError(field="url_base", reason="must be an https:// URL (RFC 8058)")
    links = [f"<{url_base.rstrip('/')}/{quote(token, safe='')}>"]
    if mailto:
        links.append(f"<mailto:{mailto}?subject=unsubscribe>")
    return {"List-Unsubscribe": ", ".join(links), "List-Unsubscribe-Post": ONE_CLICK_BODY}


def is_one_click(body: bytes | str | None, content_type: str | None = None) -> bool:
    """Whether a POST body carries ``List-Unsubscribe=One-Click``.

    Accepts ``application/x-www-form-urlencoded`` and ``multipart/form-data``
    (RFC 8058 allows both).
    """
    if body is None:
        return False
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    if content_type and content_type.lower().startswith("multipart/form-data"):
        return 'name="List-Unsubscribe"' in text and "One-Click" in text
    return "One-Click" in parse_qs(text.strip()).get("List-Unsubscribe", [])


class ConsentHolder(Protocol):
    """What :func:`handle_unsubscribe` needs: a ledger and a contact's consent history.

    The facade (:class:`~commhistory.CommHistory`) and its guarded view are both.

    .. versionadded:: 0.4.0
    """

    @property
    def consent(self) -> ConsentLedger:
        """The consent ledger."""
        ...

    def consent_history(self, contact_id: str) -> list[ConsentEvent]:
        """A contact's consent events (raises ``NotFoundError`` for an unknown contact)."""
        ...


def handle_unsubscribe(
    repo: ConsentHolder,
    tokens: UnsubscribeTokens,
    *,
    method: str,
    token: str,
    body: bytes | str | None = None,
    content_type: str | None = None,
    now: datetime | None = None,
) -> UnsubscribeResult:
    """Handle a request to the unsubscribe URL.

    A POST with the one-click body records a withdrawal (method ``one_click``)
    at once; repeating it records nothing new. A GET verifies the token but
    never unsubscribes.

    Args:
        repo: The repository facade (``open_repository(...)``) or its guarded view.
        tokens: The token verifier.
        method: The HTTP method.
        token: The token from the URL.
        body: The request body.
        content_type: The request's content type.
        now: When the request arrived (default: now).

    Returns:
        What happened.

    Raises:
        SignatureError: The token is malformed, altered or foreign.
    """
    claim = tokens.verify(token)
    if method.upper() != "POST":
        return UnsubscribeResult(
            unsubscribed=False, claim=claim, reason="only a POST unsubscribes (RFC 8058)"
        )
    if not is_one_click(body, content_type):
        return UnsubscribeResult(
            unsubscribed=False, claim=claim, reason=f"the POST body is not {ONE_CLICK_BODY}"
        )
    consent_id = f"one-click:{claim.nonce}"
    if not _recorded(repo, claim.contact_id, consent_id):
        repo.consent.withdraw(
            claim.contact_id, claim.channel, claim.purpose, method=ConsentMethod.ONE_CLICK,
            occurred_at=when(now, "now"), consent_id=consent_id, actor="commhistory:one-click",
            source=None if claim.message_id is None else f"message:{claim.message_id}",
        )  # fmt: skip
    return UnsubscribeResult(unsubscribed=True, claim=claim, consent_id=consent_id)


def _recorded(repo: ConsentHolder, contact_id: str, consent_id: str) -> bool:
    try:
        history = repo.consent_history(contact_id)
    except NotFoundError:
        return False
    return any(e.consent_id == consent_id for e in history)
