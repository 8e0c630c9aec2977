"""LINE user ids: ``U`` followed by 32 lower-case hexadecimal digits.

LINE issues user ids in exactly that form, and its APIs compare them as
opaque strings, so :func:`normalize_line_user_id` only strips surrounding
whitespace: it does not change case, and refuses an id with upper-case hex
digits rather than guess.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import re
from typing import Final

from commhistory.errors import NormalizationError

__all__ = ["normalize_line_user_id"]

_FIELD: Final = "line_user_id"
_LINE_USER_ID: Final = re.compile(r"U[0-9a-f]{32}")
_LOOSE: Final = re.compile(r"[Uu][0-9a-fA-F]{32}")


def normalize_line_user_id(value: str) -> str:
    """Return a LINE user id, checked.

    Args:
        value: The id, e.g. ``"U4af4980629..."`` (33 characters), possibly
            surrounded by whitespace.

    Returns:
        The id without surrounding whitespace.

    Raises:
        NormalizationError: ``field="line_user_id"``; the value is not a
            string, or is not ``U`` followed by 32 lower-case hex digits.

    .. versionadded:: 0.1.0
    """
    if not isinstance(value, str):
        raise NormalizationError(
            field=_FIELD, reason=f"expected a string, got {type(value).__name__}"
        )
    text = value.strip()
    if _LINE_USER_ID.fullmatch(text):
        return str(text)
    if _LOOSE.fullmatch(text):
        raise NormalizationError(
            field=_FIELD, reason="LINE user ids are 'U' and lower-case hex; the case was changed"
        )
    raise NormalizationError(field=_FIELD, reason="expected 'U' followed by 32 hex digits")
