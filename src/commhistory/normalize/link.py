"""Link labels: a clicked URL reduced to where it leads, with nothing personal left in it.

A click event's URL is encrypted (``events.url``): a query string, a fragment
or a path segment can carry a personal token (``?email=...``, ``/reset/9f2c...``).
Ingest stores each click's *link label* in the clear instead (``events.link``,
schema revision 0011), so the report counts clicks per link with a plain
``GROUP BY`` and without decrypting anything:

* scheme and host, lower-cased; the port when given; no user information;
* the path, with every segment that looks like an identifier replaced by
  ``*``: one holding ``@``, one with five or more digits, or one of 16 or more
  characters mixing letters and digits (a token);
* no query string and no fragment; at most :data:`MAX_LINK` characters.

A URL that is not ``http``/``https`` (``mailto:``, ``tel:``), or has no host,
gets no label (``None``): its address is the personal part.

.. versionadded:: 0.4.0
"""

from __future__ import annotations

import functools
import re
from typing import Final
from urllib.parse import urlsplit

__all__ = ["MAX_LINK", "link_label"]

MAX_LINK: Final = 200
"""The longest label kept; longer ones are cut and end in ``...``."""

_DIGITS: Final = re.compile(r"[0-9]{5,}")
_TOKEN: Final = re.compile(r"(?=.*[A-Za-z])(?=.*[0-9])[A-Za-z0-9_\-=.~%]{16,}")


def _segment(segment: str) -> str:
    if "@" in segment or "%40" in segment.lower() or _DIGITS.search(segment):
        return "*"
    if _TOKEN.fullmatch(segment):
        return "*"
    return segment


def link_label(url: str | None) -> str | None:
    """Reduce a clicked URL to its label: scheme, host and masked path.

    >>> from commhistory.normalize.link import link_label
    >>> link_label("https://Shop.example/sale/shoes?utm_source=mail&uid=42#top")
    'https://shop.example/sale/shoes'
    >>> link_label("https://shop.example/u/taro@example.com/orders/1234567")
    'https://shop.example/u/*/orders/*'
    >>> link_label("mailto:taro@example.com") is None
    True

    Args:
        url: The clicked URL, or ``None``.

    Returns:
        The label (``https://host/path``; the path is ``/`` when empty), or
        ``None`` when *url* is ``None``, not ``http``/``https`` or has no host.
    """
    if not url:
        return None
    # The label keeps nothing after the first "?" or "#" (query and fragment are
    # dropped, and the host and path end there), so it is computed once per distinct
    # beginning: a campaign's clicks share a few links that differ in their query.
    url = url.strip()
    end = len(url) + 1
    return _label(url[: min(url.find("?") % end, url.find("#") % end)])


@functools.lru_cache(maxsize=4096)
def _label(url: str) -> str | None:
    """:func:`link_label` of a stripped URL (here without its query and fragment; cached)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        port = parts.port
    except ValueError:  # a malformed port or IPv6 literal
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not host:
        return None
    netloc = f"[{host.lower()}]" if ":" in host else host.lower()
    if port is not None:
        netloc = f"{netloc}:{port}"
    path = "/".join(_segment(s) for s in parts.path.split("/")) or "/"
    if not path.startswith("/"):
        path = "/" + path
    label = f"{scheme}://{netloc}{path}"
    if len(label) > MAX_LINK:
        label = label[: MAX_LINK - 3] + "..."
    return label
