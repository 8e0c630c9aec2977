"""Normalizers: one canonical spelling for every address, timestamp and status code.

Normalize input *before* building records; records validate but never
normalize. Every function here raises
:class:`~commhistory.errors.NormalizationError` naming the field and the
reason, and never quotes the value.

* :func:`normalize_email`, :func:`normalize_phone`: cached (bounded LRU, see
  :func:`cache_info`), fixed points: ``f(f(x)) == f(x)``;
  :func:`is_normalized_email`, :func:`is_normalized_phone` check that a value is
  already canonical, without normalizing again what they just returned.
* :func:`normalize_line_user_id`: LINE user ids.
* :func:`personal_kind`: whether a value that would be stored in the clear holds
  an email address, a phone number or a LINE user id (the one guard of plain
  attributes and plain activity properties).
* :func:`parse_timestamp`, :func:`format_timestamp`: aware UTC datetimes in
  and out.
* :func:`parse_smtp_reply`, :func:`classify_bounce`: SMTP codes and bounce classes.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import functools

from commhistory.normalize import email as _email
from commhistory.normalize import link as _link
from commhistory.normalize import personal as _personal
from commhistory.normalize import phone as _phone
from commhistory.normalize.email import is_normalized_email, normalize_email
from commhistory.normalize.line import normalize_line_user_id
from commhistory.normalize.personal import PersonalKind, personal_kind
from commhistory.normalize.phone import is_normalized_phone, normalize_phone
from commhistory.normalize.smtp import SmtpReply, classify_bounce, parse_smtp_reply
from commhistory.normalize.time import format_timestamp, parse_timestamp

__all__ = [
    "PersonalKind",
    "SmtpReply",
    "cache_info",
    "classify_bounce",
    "clear_caches",
    "format_timestamp",
    "is_normalized_email",
    "is_normalized_phone",
    "normalize_email",
    "normalize_line_user_id",
    "normalize_phone",
    "parse_smtp_reply",
    "parse_timestamp",
    "personal_kind",
]


def cache_info() -> dict[str, functools._CacheInfo]:
    """Return the LRU statistics of the cached normalizers.

    Returns:
        ``{"email": ..., "phone": ..., "personal": ...}``, each a
        :func:`functools.lru_cache` ``CacheInfo`` (hits, misses, maxsize, currsize);
        ``personal`` is :func:`personal_kind`'s.

    .. versionadded:: 0.1.0
    .. versionchanged:: 0.4.0
       ``personal``.
    """
    return {
        "email": _email._normalize.cache_info(),
        "phone": _phone._normalize.cache_info(),
        "personal": _personal._cached.cache_info(),
    }


def clear_caches() -> None:
    """Empty the caches of the normalizers, of link labels and of :func:`personal_kind`.

    .. versionadded:: 0.1.0
    """
    _email._normalize.cache_clear()
    _phone._normalize.cache_clear()
    _email._CANONICAL.clear()
    _phone._CANONICAL.clear()
    _link._label.cache_clear()
    _personal._cached.cache_clear()
