"""Masked forms of normalized addresses: enough to recognise one, not enough to use it.

The store keeps the masked form of each message address in the clear
(``messages.address_masked``), so a reader without ``read_personal`` sees
``t***@example.com`` without anything being decrypted (see ``docs/access.md``):

* email: the first character of the local part, ``***``, then the domain;
* phone (E.164): the country code, the first two national digits, ``****`` and
  the last four (``+81 90-****-5678``); ``+CC ****`` for national numbers
  shorter than eight digits;
* LINE user id: its first character, ``***`` and its last four.

Other channels' addresses (push tokens, chat handles, postal addresses, web
identifiers) have no masked form: :func:`mask_address` returns ``None`` and
they stay withheld.

This module imports neither the store nor the audit package, so both can use
it. The masks are re-exported from :mod:`commhistory.audit`.

.. versionadded:: 0.3.0
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Final

import phonenumbers

__all__ = ["mask_address", "mask_email", "mask_line_user_id", "mask_phone"]

_COUNTRY_CODES: Final[frozenset[str]] = frozenset(
    str(code) for code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE
)
"""Every country calling code the numbering plan knows (1 to 3 digits, prefix-free)."""

_CANONICAL_E164: Final = re.compile(r"\+[1-9][0-9]{2,14}")
"""``+`` and 3 to 15 ASCII digits: the shape ``normalize_phone`` returns."""


def mask_email(address: str) -> str:
    """Mask a normalized email address: the first character of the local part, then ``***``.

    >>> from commhistory.audit import mask_email
    >>> mask_email("taro@example.com")
    't***@example.com'

    Args:
        address: A normalized address (``local@domain``).

    Returns:
        The masked form; ``***`` alone when there is no ``@``.
    """
    local, sep, domain = address.rpartition("@")
    if not sep or not local:
        return "***"
    return f"{local[0]}***@{domain}"


def _masked_number(country_code: str, national: str) -> str:
    if len(national) < 8:
        return f"+{country_code} ****"
    return f"+{country_code} {national[:2]}-****-{national[-4:]}"


def _country_code(digits: str) -> str | None:
    # Country calling codes are prefix-free, so at most one of these is a code.
    for length in (1, 2, 3):
        if digits[:length] in _COUNTRY_CODES:
            return digits[:length]
    return None


def _mask_phone_parsed(number: str) -> str:
    """The mask through :func:`phonenumbers.parse` (any spelling; slow)."""
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        return "***"
    national = phonenumbers.national_significant_number(parsed)
    return _masked_number(str(parsed.country_code), national)


def mask_phone(number: str) -> str:
    """Mask an E.164 number: country code, first two and last four national digits.

    A canonical E.164 string (``+`` and digits, as
    :func:`~commhistory.normalize.normalize_phone` returns) is masked without
    parsing: its country code is found by prefix (country codes are
    prefix-free) and the rest is the national significant number, so the result
    is the one :func:`phonenumbers.parse` would give for every valid number.
    Any other spelling is parsed.

    >>> from commhistory.audit import mask_phone
    >>> mask_phone("+819012345678")
    '+81 90-****-5678'

    Args:
        number: An E.164 number (``+819012345678``).

    Returns:
        The masked form; ``+CC ****`` when the national number is shorter than
        eight digits, ``***`` when the number cannot be read.
    """
    if _CANONICAL_E164.fullmatch(number):
        digits = number[1:]
        code = _country_code(digits)
        if code is not None and len(digits) - len(code) >= 2:
            return _masked_number(code, digits[len(code) :])
    return _mask_phone_parsed(number)


def mask_line_user_id(user_id: str) -> str:
    """Mask a LINE user id: its first character and last four.

    >>> from commhistory.audit import mask_line_user_id
    >>> mask_line_user_id("U" + "0123456789abcdef" * 2)
    'U***cdef'

    Args:
        user_id: A LINE user id (``U`` and 32 hex digits).

    Returns:
        The masked form; ``***`` when the id is shorter than nine characters.
    """
    if len(user_id) < 9:
        return "***"
    return f"{user_id[0]}***{user_id[-4:]}"


_MASKS: Final[Mapping[str, Callable[[str], str]]] = {
    "email": mask_email,
    "sms": mask_phone,
    "voice": mask_phone,
    "whatsapp": mask_phone,
    "line": mask_line_user_id,
}
"""The mask of each channel's addresses, by channel value (other channels have none)."""


def mask_address(channel: str, address: str) -> str | None:
    """Mask a message address, already normalized for its channel.

    >>> from commhistory.audit import mask_address
    >>> mask_address("sms", "+819012345678")
    '+81 90-****-5678'
    >>> mask_address("postal", "1-2-3 Chiyoda, Tokyo") is None
    True

    Args:
        channel: The message's channel (a :class:`~commhistory.model.Channel`
            or its value).
        address: The address, normalized for the channel.

    Returns:
        The masked form for email, SMS, voice, WhatsApp and LINE; ``None`` (withheld) for
        every other channel and for an empty address.
    """
    mask = _MASKS.get(channel)
    if mask is None or not address:
        return None
    return mask(address)
