"""What the commands share: exit codes, option parsing helpers and the progress bar."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Final, TextIO
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

EXIT_OK: Final = 0
EXIT_REJECTED: Final = 1
EXIT_USAGE: Final = 2


class CommandError(Exception):
    """A command cannot run as asked; printed as one line, without a traceback."""

    def __init__(self, message: str, *, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


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


class Progress:
    """A one-line progress bar on a terminal; silent when the stream is not one.

    Args:
        total: The amount of work (bytes of the input file), or 0 when unknown.
        label: What is being done.
        stream: Where to draw (standard error by default).
        enabled: Force drawing on or off (default: only on a terminal).
    """

    WIDTH: Final = 30

    def __init__(
        self,
        total: int,
        *,
        label: str,
        stream: TextIO | None = None,
        enabled: bool | None = None,
    ) -> None:
        self.total = total
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self._last = 0.0
        self._drawn = False

    def update(self, done: int) -> None:
        """Redraw for *done* units of work, at most ten times a second."""
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < 0.1 and done < self.total:
            return
        self._last = now
        if self.total > 0:
            fraction = min(done / self.total, 1.0)
            filled = int(fraction * self.WIDTH)
            bar = "#" * filled + "-" * (self.WIDTH - filled)
            text = f"\r{self.label} [{bar}] {fraction:4.0%}"
        else:
            text = f"\r{self.label} {done:,}"
        self.stream.write(text)
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        """Clear the bar's line."""
        if self.enabled and self._drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


DEFAULT_DB: Final = "sqlite:///commhistory.db"
DEFAULT_KEYRING: Final = "commhistory.keyring"


def add_store_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--db`` and ``--keyring`` with their environment defaults."""
    parser.add_argument(
        "--db",
        default=None,
        metavar="URL",
        help=f"database URL (default $COMMHISTORY_DB, else {DEFAULT_DB})",
    )
    parser.add_argument(
        "--keyring",
        default=None,
        metavar="PATH",
        help=f"keyring file (default $COMMHISTORY_KEYRING, else {DEFAULT_KEYRING})",
    )


def database_url(args: argparse.Namespace) -> str:
    """The database URL from ``--db``, ``$COMMHISTORY_DB`` or the default."""
    import os  # noqa: PLC0415

    return str(args.db or os.environ.get("COMMHISTORY_DB") or DEFAULT_DB)


def keyring_path(args: argparse.Namespace) -> str:
    """The keyring path from ``--keyring``, ``$COMMHISTORY_KEYRING`` or the default."""
    import os  # noqa: PLC0415

    return str(args.keyring or os.environ.get("COMMHISTORY_KEYRING") or DEFAULT_KEYRING)
