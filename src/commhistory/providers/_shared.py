"""Helpers several provider modules share: HTTP credentials and unknown event names.

Private (the registry skips modules whose name starts with ``_``): provider
modules import it, users do not.

* :class:`HttpCredentials`: the basic-auth user and password, or the bearer
  token, that providers which sign nothing (Brevo, Mailjet, SparkPost) send
  in the ``Authorization`` header, compared in constant time;
* :func:`provider_tags`: the sender's tags or categories of a provider event,
  as one list of strings for ``metadata["provider_tags"]``;
* :class:`BodyHmac`: a signing secret checked as the hex HMAC-SHA256 of the body in one
  header (MailerSend, Mailtrap);
* :func:`one_or_many`: a body that is one event object or an array of them (Brevo, Mailjet);
* :func:`unknown_event`: the error for an event name the adapter's table does
  not know, so that the event is kept whole as a dead letter instead of being
  dropped or guessed at. This is the rule of every adapter: none produces
  ``EventType.UNKNOWN``.

.. versionadded:: 0.4.0
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Sequence
from typing import Any, Final

import attrs

from commhistory.errors import InvalidInputError, PayloadError, SignatureError
from commhistory.normalize import personal_kind
from commhistory.providers.base import WebhookRequest, hmac_equal, json_type

__all__ = [
    "TAGS_KEY",
    "BodyHmac",
    "HttpCredentials",
    "hex_hmac_sha256",
    "one_or_many",
    "provider_tags",
    "split_secret",
    "tagged",
    "unknown_event",
]

_PLAIN_NAME: Final = re.compile(r"[A-Za-z][A-Za-z0-9_.:-]{0,39}")


def unknown_event(field: str, name: str) -> PayloadError:
    """Return the error that makes an event with an unmapped name a dead letter.

    The name is quoted only when it looks like an event name (a short word)
    and holds nothing personal (:func:`~commhistory.normalize.personal_kind`:
    a LINE user id or a ``tel:`` number is a short word too); anything else may
    be personal data and is not repeated, since the reason is stored in the clear.

    Args:
        field: The field that holds the name (``"event"``, ``"type"``).
        name: The provider's event name.
    """
    plain = _PLAIN_NAME.fullmatch(name) and personal_kind(name) is None
    shown = f" {name!r}" if plain else ""
    return PayloadError(
        field=field,
        reason=f"unknown event type{shown}: kept as a dead letter until it is mapped",
    )


TAGS_KEY: Final = "provider_tags"
"""The metadata key of the sender's tags or categories of a provider event.

.. versionadded:: 0.4.0
"""


def provider_tags(value: object, *, field: str, skip_prefixes: tuple[str, ...] = ()) -> list[str]:
    """Return a provider's tags or categories as a list of strings, in order, each once.

    A tag is one string (Postmark ``Tag``), a list of them (SendGrid
    ``category``, Mailgun ``tags``), or an object of names to a value or a list
    of values (SES ``mail.tags``), each pair given as ``"name=value"``.
    Blank tags are left out; so are names starting with one of
    *skip_prefixes* (the tags a provider adds itself, such as SES's ``ses:``).

    Tags stay in metadata, encrypted like the rest of it: providers differ on
    whether they may hold personal data (SendGrid asks senders to keep it out of
    categories; Resend suggests tagging an email with a customer id).

    Args:
        value: The provider's field (``None`` when absent).
        field: The field's name, for the error.
        skip_prefixes: Tag names to leave out.

    Raises:
        PayloadError: The field or a tag has another JSON type.
    """
    if value is None:
        return []
    pairs: list[str] = []
    if isinstance(value, str):
        pairs = [value]
    elif isinstance(value, list):
        pairs = [_tag(item, field) for item in value]
    elif isinstance(value, dict):
        for name, given in value.items():
            if str(name).startswith(skip_prefixes):
                continue
            values = given if isinstance(given, list) else [given]
            pairs.extend(f"{name}={_tag(item, field)}" for item in values)
    else:
        raise PayloadError(
            field=field, reason="expected a string, a list of strings or an object of them"
        )
    return list(dict.fromkeys(tag.strip() for tag in pairs if tag.strip()))


def tagged(
    metadata: dict[str, Any], value: object, field: str, *, skip: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Add the tags in *value* (see :func:`provider_tags`) to *metadata*, when there are any.

    Returns:
        *metadata* itself.
    """
    tags = provider_tags(value, field=field, skip_prefixes=skip)
    if tags:
        metadata[TAGS_KEY] = tags
    return metadata


def _tag(item: object, field: str) -> str:
    if not isinstance(item, str):
        raise PayloadError(field=field, reason="expected tags as strings")
    return item


def split_secret(secret: str | None) -> tuple[str | None, str | None, str | None]:
    """Split ``--secret`` into ``(user, password, token)``.

    ``"Bearer TOKEN"`` is a token, anything else ``user:password``; ``None`` (a
    parse-only adapter) gives placeholder basic-auth credentials.
    """
    if secret is None:
        return "-", "-", None
    scheme, _, rest = secret.strip().partition(" ")
    if scheme.lower() == "bearer" and rest.strip():
        return None, None, rest.strip()
    user, _, password = secret.partition(":")
    return user, password, None


def _basic(user: str, password: str) -> bytes:
    return f"{user}:{password}".encode()


@attrs.frozen(kw_only=True)
class HttpCredentials:
    """What the provider puts in the ``Authorization`` header: basic auth or a bearer token.

    Build it with :meth:`from_secret` (the command line's ``--secret``) or
    directly. At least one of the two must be given; when both are, either is
    accepted.

    Attributes:
        basic: ``user:password`` (as bytes) expected in ``Authorization: Basic``.
        token: The token expected in ``Authorization: Bearer``.
    """

    basic: bytes | None = attrs.field(default=None, repr=False)
    token: str | None = attrs.field(default=None, repr=False)

    def __attrs_post_init__(self) -> None:
        if not self.basic and not self.token:
            raise InvalidInputError(
                field="password", reason="give a user name and a password, or a token"
            )

    @classmethod
    def of(cls, username: str | None, password: str | None, token: str | None) -> HttpCredentials:
        """Return the credentials from a user name and password and/or a token.

        Raises:
            InvalidInputError: Neither a password nor a token is given, or a
                value is not a string.
        """
        for name, value in (("username", username), ("password", password), ("token", token)):
            given: object = value
            if given is not None and not isinstance(given, str):
                raise InvalidInputError(field=name, reason="must be a string")
        basic = _basic(username or "", password) if password else None
        return cls(basic=basic, token=token or None)

    @classmethod
    def from_secret(cls, secret: str | None) -> HttpCredentials:
        """Read ``--secret``: ``"user:password"``, or ``"Bearer TOKEN"`` for a token.

        ``None`` (a parse-only adapter) gives placeholder credentials.

        Raises:
            InvalidInputError: The secret has no password and is no token.
        """
        return cls.of(*split_secret(secret))

    def header(self) -> str:
        """Return the ``Authorization`` header value these credentials send (for test signers)."""
        if self.basic:
            return "Basic " + base64.b64encode(self.basic).decode("ascii")
        return f"Bearer {self.token}"

    def check(self, request: WebhookRequest) -> None:
        """Refuse a request whose ``Authorization`` header does not carry these credentials.

        Raises:
            SignatureError: The header is missing, of another scheme, unreadable
                or wrong (never quoting what was given).
        """
        header = request.header("Authorization")
        if not header:
            raise SignatureError("missing Authorization header (basic auth or bearer token)")
        scheme, _, value = header.strip().partition(" ")
        kind = scheme.lower()
        if kind == "basic" and self.basic:
            try:
                given = base64.b64decode(value.strip(), validate=True)
            except (binascii.Error, ValueError):
                raise SignatureError("Authorization: not valid base64") from None
            if not hmac_equal(self.basic, given):
                raise SignatureError("Authorization: wrong user name or password")
            return
        if kind == "bearer" and self.token:
            if not hmac_equal(self.token, value.strip()):
                raise SignatureError("Authorization: wrong bearer token")
            return
        expected = " or ".join(
            name for name, on in (("Basic", self.basic), ("Bearer", self.token)) if on
        )
        raise SignatureError(f"Authorization: expected the {expected} scheme")


def hex_hmac_sha256(secret: str, body: bytes) -> str:
    """The hex HMAC-SHA256 of *body* under *secret* (UTF-8)."""
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


class BodyHmac:
    """A webhook signing secret, checked as the hex HMAC-SHA256 of the body in *header*.

    Raises:
        InvalidInputError: The secret is empty or not a string (``field="signing_secret"``).
    """

    def __init__(self, signing_secret: str, header: str) -> None:
        secret: object = signing_secret
        if not isinstance(secret, str) or not secret:
            raise InvalidInputError(field="signing_secret", reason="must be a non-empty string")
        self._secret = signing_secret
        self._header = header

    def check(self, request: WebhookRequest) -> None:
        """Refuse *request* unless its header holds the body's signature.

        Raises:
            SignatureError: The header is missing or does not match the body.
        """
        given = request.header(self._header)
        if not given:
            raise SignatureError(f"missing header {self._header}")
        if not hmac_equal(hex_hmac_sha256(self._secret, request.body), given.strip().lower()):
            raise SignatureError(
                "signature does not match the body (wrong signing secret, or the body was changed)"
            )


def one_or_many(payload: Any) -> Sequence[Any]:
    """The events of a body that is one event object or an array of them.

    Raises:
        PayloadError: The body is neither (``field="<body>"``).
    """
    if isinstance(payload, list):
        return payload
    if not isinstance(payload, dict):
        raise PayloadError(
            field="<body>",
            reason=f"expected an event object or an array of them, got {json_type(payload)}",
        )
    return [payload]
