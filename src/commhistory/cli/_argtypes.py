"""``argparse`` types: option values parsed and checked as the command line is read."""

from __future__ import annotations

import argparse
import os
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from commhistory.cli._exits import CommandError
from commhistory.errors import NormalizationError
from commhistory.normalize import normalize_phone


def time_zone(value: str) -> ZoneInfo:
    """``argparse`` type for an IANA time zone name such as ``Asia/Tokyo``."""
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise argparse.ArgumentTypeError(f"unknown time zone {value!r}") from None


def positive_int(value: str) -> int:
    """``argparse`` type for a whole number of at least 1 (a count, a limit, a batch size)."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def column_mapping(value: str) -> tuple[str, str]:
    """``argparse`` type for ``COLUMN=FIELD`` (an empty FIELD ignores the column)."""
    column, sep, field = value.partition("=")
    if not sep or not column.strip():
        raise argparse.ArgumentTypeError(f"expected COLUMN=FIELD, got {value!r}")
    return column.strip(), field.strip()


REGION_ENV = "COMMHISTORY_REGION"
"""The environment variable giving ``--region``'s default."""


def phone_region(value: str) -> str:
    """``argparse`` type for a phone region: an ISO 3166-1 alpha-2 code such as ``US``."""
    region = value.strip().upper()
    try:
        normalize_phone("+81 90 1234 5678", region)  # a valid number: only the region can fail
    except NormalizationError:
        raise argparse.ArgumentTypeError(
            f"unknown phone region {value!r}: expected an ISO 3166-1 alpha-2 code like JP, "
            "US or GB"
        ) from None
    return region


def add_region_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--region`` (default ``$COMMHISTORY_REGION``, else JP)."""
    parser.add_argument(
        "--region",
        type=phone_region,
        default=None,
        metavar="CC",
        help="region of phone numbers written without +country code, e.g. US or GB "
        f"(default ${REGION_ENV}, else JP)",
    )


def region_of(args: argparse.Namespace) -> str:
    """The phone region from ``--region``, ``$COMMHISTORY_REGION`` or ``JP``.

    Raises:
        CommandError: ``$COMMHISTORY_REGION`` is not a region code (a usage error).
    """
    if args.region:
        return str(args.region)
    env = os.environ.get(REGION_ENV, "").strip()
    try:
        return phone_region(env) if env else "JP"
    except argparse.ArgumentTypeError as exc:
        raise CommandError(f"${REGION_ENV}: {exc}") from None
