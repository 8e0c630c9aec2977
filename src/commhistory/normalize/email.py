"""Email addresses: validated syntax, one canonical spelling per mailbox.

:func:`normalize_email` checks an address with :mod:`email_validator` (syntax
only, no DNS) and returns the spelling commhistory stores, indexes and compares:

* surrounding whitespace is stripped;
* the domain is lower-cased and IDNA-mapped, and kept in its **Unicode** form,
  so ``taro@例え.jp`` and ``taro@XN--R8JZ45G.JP`` both become ``taro@例え.jp``;
* the local part keeps its case (RFC 5321 lets a server treat ``Taro`` and
  ``taro`` as different mailboxes); only Unicode NFC normalization is applied;
* nothing provider-specific is folded: no Gmail dot or ``+tag`` removal.

A plain ASCII address (letters, digits, ``_+-`` and dots before the ``@``; lower-case
letter-digit-hyphen labels after it, a letters-only top-level domain) is checked by
:func:`_fast_ascii` without the library: for those, the library's rules reduce to a
few exact ones (lengths, label shape, special-use names) and its result to the
address with its domain lower-cased. Anything else goes through email-validator.

Results are cached in a bounded LRU (:data:`CACHE_SIZE` entries), failures
included, so a file that repeats the same addresses pays for each one once. The
canonical spellings it returned are remembered too (as many again), so checking
that a result is canonical (:func:`~commhistory.normalize.is_normalized_email`, which every
:class:`~commhistory.Message` does) costs no second validation.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import functools
import re
from collections import OrderedDict
from typing import Final

from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email

from commhistory.errors import NormalizationError

__all__ = ["CACHE_SIZE", "MAX_LENGTH", "is_normalized_email", "normalize_email"]

CACHE_SIZE: Final = 32_768
"""How many distinct inputs (valid or not) :func:`normalize_email` remembers."""

MAX_LENGTH: Final = 320
"""Inputs longer than this many characters (before stripping) are refused unread.

RFC 5321 limits a path to 254 octets; the margin leaves room for whitespace.
"""

_FIELD: Final = "email"

_CANONICAL: Final[OrderedDict[str, None]] = OrderedDict()
"""Results of :func:`_normalize`, oldest first: known fixed points (at most CACHE_SIZE)."""


def _remember(canonical: str) -> str:
    """Note *canonical* as a known fixed point; forget the oldest beyond the bound."""
    _CANONICAL[canonical] = None
    if len(_CANONICAL) > CACHE_SIZE:
        _CANONICAL.popitem(last=False)
    return canonical


_FAST_LOCAL: Final = re.compile(r"[A-Za-z0-9_+\-]+(?:\.[A-Za-z0-9_+\-]+)*")
"""Local parts the fast path takes: dot-atoms of a subset of RFC 5322 ``atext``."""

_FAST_DOMAIN: Final = re.compile(r"(?:[a-z0-9](?:[a-z0-9\-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}")
"""Lower-cased domains the fast path takes: LDH labels of at most 63, a letters-only TLD."""

_SPECIAL_USE: Final = tuple(SPECIAL_USE_DOMAIN_NAMES)
_SPECIAL_SUFFIXES: Final = tuple(f".{d}" for d in _SPECIAL_USE)


def _fast_ascii(text: str) -> str | None:
    """Return what email-validator would make of a plain ASCII address, or ``None``.

    ``None`` means "not certain": the caller asks email-validator. A string is
    only returned for an address whose whole check is the rules below, which are
    email-validator's (2.x, ``strict=True``) for such addresses: at most 254
    characters, a dot-atom local part of at most 64, a domain of at most 253
    whose labels are letters, digits and inner hyphens (no ``--`` anywhere, so no
    Punycode and no reserved ``ab--`` label), a letters-only top-level domain and
    no special-use name (``.test``, ``.local``, ...). Its result is then the
    local part unchanged and the domain lower-cased (UTS #46 maps ASCII letters
    to lower case and changes nothing else of these).
    (``tests/test_normalize_email.py`` checks the agreement under Hypothesis.)
    """
    if len(text) > 254 or not text.isascii():
        return None
    local, sep, domain = text.partition("@")
    if not sep or len(local) > 64 or len(domain) > 253 or "--" in domain:
        return None
    domain = domain.lower()
    if _FAST_LOCAL.fullmatch(local) is None or _FAST_DOMAIN.fullmatch(domain) is None:
        return None
    if domain in _SPECIAL_USE or domain.endswith(_SPECIAL_SUFFIXES):
        return None
    return f"{local}@{domain}"


@functools.lru_cache(maxsize=CACHE_SIZE)
def _normalize(value: str) -> str | NormalizationError:
    """Normalize one address, returning (not raising) the error so it is cached too."""
    text = value.strip()
    if not text:
        return NormalizationError(field=_FIELD, reason="must not be empty")
    if "<" in text or ">" in text:
        return NormalizationError(
            field=_FIELD,
            reason="display names and angle brackets are not accepted; give the bare address",
        )
    if "@" not in text:
        return NormalizationError(field=_FIELD, reason="missing '@'")
    fast = _fast_ascii(text)
    if fast is not None:
        return _remember(fast)
    try:
        validated = validate_email(text, check_deliverability=False, strict=True)
    except EmailNotValidError as exc:
        # The library's message quotes parts of the address: keep only a category.
        return NormalizationError(field=_FIELD, reason=_reason(str(exc)))
    return _remember(validated.normalized)


def _reason(message: str) -> str:
    """Turn an email-validator message into a value-free reason."""
    lowered = message.lower()
    if "too long" in lowered:
        return "too long"
    if "after the @-sign" in lowered or "domain" in lowered:
        return "invalid domain"
    if "before the @-sign" in lowered or "local part" in lowered:
        return "invalid local part"
    return "invalid email address syntax"


def normalize_email(value: str) -> str:
    """Return the canonical form of an email address.

    The result is a fixed point: ``normalize_email(normalize_email(x)) ==
    normalize_email(x)``.

    Args:
        value: An address such as ``" Taro@Example.COM "``. Display-name forms
            (``"Taro <taro@example.com>"``), quoted local parts, IP-literal
            domains and special-use domains (``.test``, ``.local``, ...) are
            refused.

    Returns:
        The address with its domain lower-cased in Unicode (IDNA) form and its
        local part unchanged, e.g. ``"Taro@example.com"``.

    Raises:
        NormalizationError: ``field="email"``; the value is not a string, is
            empty, too long or not a valid address. The reason never quotes
            the address.

    .. versionadded:: 0.1.0
    """
    if not isinstance(value, str):
        raise NormalizationError(
            field=_FIELD, reason=f"expected a string, got {type(value).__name__}"
        )
    if len(value) > MAX_LENGTH:
        raise NormalizationError(field=_FIELD, reason="too long")
    result = _normalize(str(value))
    if isinstance(result, str):
        return result
    raise NormalizationError(field=result.field, reason=result.reason)


def is_normalized_email(value: str) -> bool:
    """Return whether *value* is the canonical form of an email address.

    The same as ``normalize_email(value) == value`` (``False`` when it does not
    normalize), but a result :func:`normalize_email` returned recently is known
    canonical (normalizing is a fixed point) and is not validated again.

    .. versionadded:: 0.4.0
    """
    if value in _CANONICAL:
        return True
    try:
        return normalize_email(value) == value
    except NormalizationError:
        return False
