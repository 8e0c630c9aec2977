"""What the commands share: exit codes, option parsing helpers and the progress bar."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final, TextIO
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from commhistory.convert import KINDS, ParsedLine, read_records

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


def add_input_options(parser: argparse.ArgumentParser, *, file_help: str) -> None:
    """Add ``FILE`` and the options that say how to read it (``validate``, ``import``)."""
    parser.add_argument("file", metavar="FILE", help=file_help)
    parser.add_argument(
        "--map",
        dest="mapping",
        metavar="COLUMN=FIELD",
        type=column_mapping,
        action="append",
        default=[],
        help="CSV: read COLUMN as FIELD (FIELD may be metadata.KEY; empty ignores the column)",
    )
    parser.add_argument(
        "--tz",
        type=time_zone,
        default=None,
        metavar="ZONE",
        help="time zone for timestamps without an offset, e.g. Asia/Tokyo",
    )
    parser.add_argument(
        "--kind",
        choices=sorted(KINDS),
        default=None,
        help="CSV: the record kind of rows without a 'kind' column (default message)",
    )
    parser.add_argument(
        "--encoding", default="utf-8-sig", help="text encoding, e.g. cp932 (default utf-8)"
    )


@contextmanager
def input_records(
    args: argparse.Namespace, *, label: str
) -> Iterator[tuple[Iterator[ParsedLine], Progress]]:
    """Check the input options and stream the file's parsed lines with a progress bar.

    Yields:
        The parsed lines (read lazily) and the progress bar drawing as they are read.

    Raises:
        CommandError: The file is missing, ``--map`` is given for a non-CSV file, or
            the encoding is unknown.
    """
    path = args.file
    if not os.path.isfile(path):
        raise CommandError(f"no such file: {path}")
    mapping = dict(args.mapping)
    if mapping and not path.lower().endswith((".csv", ".tsv")):
        raise CommandError("--map applies to .csv files only")
    progress = Progress(os.path.getsize(path), label=label)
    lines = read_records(
        path,
        default_tz=args.tz,
        mapping=mapping,
        kind=args.kind,
        encoding=args.encoding,
        progress=progress.update,
    )
    try:
        yield lines, progress
    except LookupError:
        raise CommandError(f"unknown encoding {args.encoding!r}") from None
    finally:
        progress.close()


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
