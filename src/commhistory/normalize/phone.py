"""Phone numbers: E.164, checked against the numbering plan.

:func:`normalize_phone` parses a number with :mod:`phonenumbers` in a default
region (Japan unless told otherwise), refuses numbers that cannot exist in that
plan, and returns E.164: ``"090-1234-5678"`` becomes ``"+819012345678"``.
Full-width digits, hyphens, spaces, brackets, a ``tel:`` URI and a leading
``+81`` (with or without the trunk ``0``) are all understood.

Results are cached in a bounded LRU (:data:`CACHE_SIZE` entries), failures
included. The E.164 numbers it returned are remembered too (as many again), so
checking that a number is E.164 (:func:`~commhistory.normalize.is_normalized_phone`, which every
:class:`~commhistory.Message` on a phone channel does) costs no second parse.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from typing import Final

import phonenumbers

from commhistory.errors import NormalizationError

__all__ = ["CACHE_SIZE", "MAX_LENGTH", "is_normalized_phone", "normalize_phone"]

CACHE_SIZE: Final = 32_768
"""How many distinct ``(value, region)`` pairs :func:`normalize_phone` remembers."""

MAX_LENGTH: Final = 64
"""Inputs longer than this many characters are refused unread."""

_FIELD: Final = "phone"

_CANONICAL: Final[OrderedDict[str, None]] = OrderedDict()
"""Results of :func:`_normalize`, oldest first: known fixed points (at most CACHE_SIZE)."""


def _remember(canonical: str) -> str:
    """Note *canonical* as a known fixed point; forget the oldest beyond the bound."""
    _CANONICAL[canonical] = None
    if len(_CANONICAL) > CACHE_SIZE:
        _CANONICAL.popitem(last=False)
    return canonical


_REGIONS: Final = frozenset(phonenumbers.SUPPORTED_REGIONS)

_PARSE_REASONS: Final = {
    phonenumbers.NumberParseException.INVALID_COUNTRY_CODE: "unknown country calling code",
    phonenumbers.NumberParseException.NOT_A_NUMBER: "not a phone number",
    phonenumbers.NumberParseException.TOO_SHORT_AFTER_IDD: "too short",
    phonenumbers.NumberParseException.TOO_SHORT_NSN: "too short",
    phonenumbers.NumberParseException.TOO_LONG: "too long",
}


@functools.lru_cache(maxsize=CACHE_SIZE)
def _normalize(value: str, region: str) -> str | NormalizationError:
    """Normalize one number, returning (not raising) the error so it is cached too."""
    if not value or value.isspace():
        return NormalizationError(field=_FIELD, reason="must not be empty")
    try:
        number = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException as exc:
        reason = _PARSE_REASONS.get(exc.error_type, "not a phone number")
        return NormalizationError(field=_FIELD, reason=reason)
    if number.extension:
        return NormalizationError(field=_FIELD, reason="extensions are not supported")
    if not phonenumbers.is_valid_number(number):
        return NormalizationError(field=_FIELD, reason="not a valid number in its numbering plan")
    formatted: str = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return _remember(formatted)


def normalize_phone(value: str, region: str = "JP") -> str:
    """Return a phone number in E.164 form.

    The result is a fixed point in every region: ``normalize_phone(
    normalize_phone(x, r)) == normalize_phone(x, r)``, because an E.164 number
    carries its country code.

    Args:
        value: A number as people write it: ``"090-1234-5678"``,
            ``"+81 90 1234 5678"``, or the same in full-width digits.
        region: The ISO 3166-1 alpha-2 region (upper case) that numbers
            without a ``+`` country code belong to.

    Returns:
        The E.164 number, e.g. ``"+819012345678"``.

    Raises:
        NormalizationError: ``field="region"`` when *region* is not a region
            :mod:`phonenumbers` knows; ``field="phone"`` when the value is not
            a string, is empty or too long, has an extension, or is not a
            valid number. The reason never quotes the number.

    .. versionadded:: 0.1.0
    """
    if region not in _REGIONS:  # also refuses a non-string
        raise NormalizationError(
            field="region", reason="expected a supported ISO 3166-1 alpha-2 code like 'JP'"
        )
    if not isinstance(value, str):
        raise NormalizationError(
            field=_FIELD, reason=f"expected a string, got {type(value).__name__}"
        )
    if len(value) > MAX_LENGTH:
        raise NormalizationError(field=_FIELD, reason="too long")
    result = _normalize(str(value), region)
    if isinstance(result, str):
        return result
    raise NormalizationError(field=result.field, reason=result.reason)


def is_normalized_phone(value: str) -> bool:
    """Return whether *value* is a phone number in E.164 form.

    The same as ``normalize_phone(value) == value`` (``False`` when it does not
    normalize), but a result :func:`normalize_phone` returned recently is known
    canonical (normalizing is a fixed point in every region) and is not parsed again.

    .. versionadded:: 0.4.0
    """
    if value in _CANONICAL:
        return True
    try:
        return normalize_phone(value) == value
    except NormalizationError:
        return False
