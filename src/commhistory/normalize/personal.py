"""The one guard for values stored in the clear: does this text hold personal data?

Plain attributes (:mod:`commhistory.contacts.attributes`) and plain activity
properties (:mod:`commhistory.contacts.activities`) are stored unencrypted so
SQL can filter them. :func:`personal_kind` is the single rule both apply
before storing one: a value that holds an email address, a phone number or a
LINE user id anywhere in its text is refused (declare the field personal and
it is encrypted instead).

The rule, in order:

* **email address**: ``local@domain.tld`` anywhere in the text, where the
  last label of the domain starts with a letter and has at least two
  characters (``taro+shop@example.co.jp``, ``user@例え.jp``); ``abc@def``,
  ``@mention`` and ``2@1.99`` are not addresses;
* **LINE user id**: ``U`` and 32 lower-case hex digits, not part of a longer
  word;
* **phone number**: text with at least 7 digits is given to libphonenumber's
  matcher (leniency ``VALID``): an international number anywhere
  (``+81 90 1234 5678``, ``+1 212 555 1234``, ``+14155552671``) or a national
  one in *region* (``090-1234-5678`` in ``JP``, ``(212) 555-1234`` in ``US``).
  Dates, times, postcodes (``150-0002``), prices, barcodes
  (``4901234567894``) and other digit strings that are not valid numbers
  pass.

Answers for values up to :data:`CACHED_LENGTH` characters are cached (plain
values repeat: a catalogue's SKUs, a tier; see :func:`commhistory.normalize.cache_info`
and :func:`~commhistory.normalize.clear_caches`), and text with fewer than 7
digits never reaches the matcher, which costs tens of microseconds a call.

.. versionadded:: 0.4.0
"""

from __future__ import annotations

import enum
import functools
import re
from typing import Final

import phonenumbers

__all__ = ["CACHED_LENGTH", "CACHE_SIZE", "PersonalKind", "personal_kind"]

CACHE_SIZE: Final = 16_384
"""How many distinct ``(text, region)`` pairs :func:`personal_kind` remembers."""

CACHED_LENGTH: Final = 256
"""Values longer than this many characters are checked every time, not remembered.

Plain values that repeat are short (SKUs, tiers, paths); the bound keeps the cache
at a few megabytes whatever the host stores.
"""

_PHONE_DIGITS: Final = 7
"""Text with fewer digits than this cannot hold a phone number (the matcher is skipped)."""

_EMAIL: Final = re.compile(
    r"[^\s@<>()\[\],;:\"]+@[\w-]+(?:\.[\w-]+)*\.[^\W\d_][\w-]+",
)
"""An address anywhere in the text; the top-level label starts with a letter (any script)."""

_LINE_USER_ID: Final = re.compile(r"(?<![0-9A-Za-z])U[0-9a-f]{32}(?![0-9A-Za-z])")

_NOT_DIGITS: Final = re.compile(r"\D+")
_ASCII_DIGITS: Final = b"0123456789"


def _digits(text: str) -> int:
    """How many digits *text* holds (any script's: full-width digits count)."""
    if text.isascii():  # bytes.translate deletes in C: twice as fast as the regex
        return len(text) - len(text.encode("ascii").translate(None, _ASCII_DIGITS))
    return len(_NOT_DIGITS.sub("", text))


class PersonalKind(enum.StrEnum):
    """The kind of personal identifier :func:`personal_kind` found.

    .. versionadded:: 0.4.0
    """

    EMAIL = "email"
    PHONE = "phone"
    LINE_USER_ID = "line_user_id"

    @property
    def phrase(self) -> str:
        """This kind in words, as error reasons say it (``"an email address"``)."""
        return _PHRASES[self]


_PHRASES: Final = {
    PersonalKind.EMAIL: "an email address",
    PersonalKind.PHONE: "a phone number",
    PersonalKind.LINE_USER_ID: "a LINE user id",
}


def personal_kind(text: str, region: str = "JP") -> PersonalKind | None:
    """Say which kind of personal identifier *text* holds, if any (see the module rule).

    Args:
        text: The value that would be stored in the clear.
        region: The region national phone numbers are read in (ISO 3166 code).

    Returns:
        The first kind found (email, then LINE user id, then phone), or ``None``.

    .. versionadded:: 0.4.0
    """
    if len(text) <= CACHED_LENGTH:
        return _cached(text, region)
    return _find(text, region)


def _find(text: str, region: str) -> PersonalKind | None:
    if len(text) < _PHONE_DIGITS and "@" not in text:
        return None  # too short for a phone number or a LINE user id
    if "@" in text and _EMAIL.search(text):
        return PersonalKind.EMAIL
    if "U" in text and _LINE_USER_ID.search(text):
        return PersonalKind.LINE_USER_ID
    if _digits(text) >= _PHONE_DIGITS:
        matcher = phonenumbers.PhoneNumberMatcher(
            text, region, leniency=phonenumbers.Leniency.VALID
        )
        if matcher.has_next():
            return PersonalKind.PHONE
    return None


_cached: Final = functools.lru_cache(maxsize=CACHE_SIZE)(_find)
"""Answers for values up to :data:`CACHED_LENGTH` characters (see ``normalize.cache_info``)."""
