"""How commands word and lay out their output: counts, times and tables."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Sequence
from datetime import datetime, tzinfo
from typing import Final

TABLE_WIDTH: Final = 100
"""The widest a table is by default (``$COLUMNS`` overrides it)."""


def _plural_of(word: str) -> str:
    if word.endswith(("s", "x", "ch", "sh")):
        return word + "es"
    if word.endswith("y") and word[-2:-1] not in ("a", "e", "i", "o", "u"):
        return word[:-1] + "ies"
    return word + "s"


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    """``1 message``, ``2 messages``, ``0 messages`` (with thousands separators).

    >>> plural(1, "message"), plural(1234, "batch"), plural(0, "masked address")
    ('1 message', '1,234 batches', '0 masked addresses')
    >>> plural(2, "entry"), plural(3, "blind index")
    ('2 entries', '3 blind indexes')
    """
    if count == 1:
        return f"{count:,} {singular}"
    return f"{count:,} {plural_form or _plural_of(singular)}"


def when(moment: datetime, tz: tzinfo | None) -> str:
    """A time to the second, always with its zone: ``Z`` for UTC, else the offset.

    >>> from datetime import timezone
    >>> from zoneinfo import ZoneInfo
    >>> t = datetime(2024, 5, 1, 1, 2, 3, tzinfo=timezone.utc)
    >>> when(t, None), when(t, ZoneInfo("Asia/Tokyo"))
    ('2024-05-01 01:02:03Z', '2024-05-01 10:02:03+09:00')
    """
    if tz is None:
        return moment.strftime("%Y-%m-%d %H:%M:%S") + "Z"
    shown = moment.astimezone(tz)
    offset = shown.strftime("%z")
    return shown.strftime("%Y-%m-%d %H:%M:%S") + f"{offset[:3]}:{offset[3:]}"


def table_width() -> int:
    """The widest a table may be: ``$COLUMNS`` when set to a number, else 100."""
    try:
        return max(40, int(os.environ.get("COLUMNS", "")))
    except ValueError:
        return TABLE_WIDTH


def table(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    flex: Sequence[int],
    width: int | None = None,
) -> str:
    """Aligned columns, two spaces apart, no wider than *width* (default :func:`table_width`).

    When the table is too wide, the *flex* columns give way, the first as far as
    needed (down to the width of its header, at least 8) before the next: the
    last column wraps onto continuation lines, any other is cut with ``…``.
    The other columns keep their width (ids, times); JSON output has every value
    in full.

    >>> print(table(("id", "reason"), [("1", "a b c d e f g h i j")], flex=[1], width=12))
    id  reason
    1   a b c d
        e f g h
        i j
    """
    limit = table_width() if width is None else width
    cells = [list(header), *[[" ".join(str(c).split()) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for column in flex:
        excess = sum(widths) + 2 * (len(widths) - 1) - limit
        if excess <= 0:
            break
        widths[column] = max(widths[column] - excess, len(header[column]), 8)
    last = len(header) - 1
    out: list[str] = []
    for row in cells:
        shown = [
            text if len(text) <= w or i == last else text[: w - 1] + "…"
            for i, (text, w) in enumerate(zip(row, widths, strict=True))
        ]
        pieces = textwrap.wrap(shown[last], widths[last], break_long_words=True) or [""]
        shown[last] = pieces[0]
        out.append("  ".join(c.ljust(w) for c, w in zip(shown, widths, strict=True)).rstrip())
        indent = sum(widths[:last]) + 2 * last
        out.extend(" " * indent + piece for piece in pieces[1:])
    return "\n".join(out)
