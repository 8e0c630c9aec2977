"""Helpers several provider modules share: HTTP credentials and unknown event names.

Private (the registry skips modules whose name starts with ``_``): provider
modules import it, users do not.

* :class:`HttpCredentials`: the basic-auth user and password, or the bearer
  token, that providers which sign nothing (Brevo, Mailjet, SparkPost) send
  in the ``Authorization`` header, compared in constant time;
* :func:`unknown_event`: the error for an event name the adapter's table does
  not know, so that the event is kept whole as a dead letter instead of being
  dropped or guessed at. This is the rule of every adapter: none produces
  ``EventType.UNKNOWN``.

.. versionadded:: 0.4.0
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Final

import attrs

from commhistory.errors import InvalidInputError, PayloadError, SignatureError
from commhistory.providers.base import WebhookRequest, hmac_equal

__all__ = ["HttpCredentials", "split_secret", "unknown_event"]

_PLAIN_NAME: Final = re.compile(r"[A-Za-z][A-Za-z0-9_.:-]{0,39}")


def unknown_event(field: str, name: str) -> PayloadError:
    """Return the error that makes an event with an unmapped name a dead letter.

    The name is quoted only when it looks like an event name (a short word);
    anything else may be personal data and is not repeated.

    Args:
        field: The field that holds the name (``"event"``, ``"type"``).
        name: The provider's event name.
    """
    shown = f" {name!r}" if _PLAIN_NAME.fullmatch(name) else ""
    return PayloadError(
        field=field,
        reason=f"unknown event type{shown}: kept as a dead letter until it is mapped",
    )


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
