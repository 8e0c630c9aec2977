"""``argparse`` types: option values parsed and checked as the command line is read."""

from __future__ import annotations

import argparse
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


def time_zone(value: str) -> ZoneInfo:
    """``argparse`` type for an IANA time zone name such as ``Asia/Tokyo``."""
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise argparse.ArgumentTypeError(f"unknown time zone {value!r}") from None


def column_mapping(value: str) -> tuple[str, str]:
    """``argparse`` type for ``COLUMN=FIELD`` (an empty FIELD ignores the column)."""
    column, sep, field = value.partition("=")
    if not sep or not column.strip():
        raise argparse.ArgumentTypeError(f"expected COLUMN=FIELD, got {value!r}")
    return column.strip(), field.strip()
