"""Where the store is: the ``--db`` and ``--keyring`` options and their defaults."""

from __future__ import annotations

import argparse
import os
from typing import Final

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
    return str(args.db or os.environ.get("COMMHISTORY_DB") or DEFAULT_DB)


def keyring_path(args: argparse.Namespace) -> str:
    """The keyring path from ``--keyring``, ``$COMMHISTORY_KEYRING`` or the default."""
    return str(args.keyring or os.environ.get("COMMHISTORY_KEYRING") or DEFAULT_KEYRING)
