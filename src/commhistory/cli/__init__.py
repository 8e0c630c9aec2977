"""The ``commhistory`` command line.

Each command lives in its own module under :mod:`commhistory.cli` and exposes
``register(subparsers)``, which adds its parser and sets ``run`` as the handler.
Handlers return the exit code:

* 0: success;
* 1: some records were rejected (kept as dead letters, or reported);
* 2: usage or input error (bad option, missing file, unknown time zone);
* 3: ``can-send``: the send is not allowed;
* 4: ``verify-webhook``: the signature does not verify;
* 5: ``audit verify``: the audit log was tampered with;
* 6: permission denied: the ``--actor`` lacks the permission the command needs
  (the denial is in the audit log), or an actor is required and none was given;
* 141: the reader of standard output went away (``commhistory ... | head``);
  nothing is printed.

Errors from commhistory are printed as one line without a traceback; they never
contain personal data, so they are safe in logs.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Final

from commhistory import __version__
from commhistory.cli import (
    activities,
    analytics,
    attributes,
    audit,
    consent,
    costs,
    crm,
    dead_letters,
    demo,
    journey,
    partitions,
    plan,
    report,
    segment,
    store,
    validate,
    webhook,
)
from commhistory.cli._exits import EXIT_DENIED, EXIT_USAGE, CommandError
from commhistory.errors import CommHistoryError, PermissionDenied

__all__ = ["build_parser", "main"]

_COMMANDS = (
    validate,
    store,
    attributes,
    activities,
    webhook,
    report,
    demo,
    consent,
    plan,
    audit,
    dead_letters,
    costs,
    analytics,
    crm,
    journey,
    partitions,
    segment,
)


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every command registered."""
    parser = argparse.ArgumentParser(
        prog="commhistory",
        description="Capture, protect and measure a business's communication history.",
    )
    parser.add_argument("--version", action="version", version=f"commhistory {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _COMMANDS:
        module.register(subparsers)
    return parser


EXIT_BROKEN_PIPE: Final = 141
"""The reader of standard output closed it (128 + SIGPIPE, as a shell reports it)."""


def _silence_stdout() -> None:
    """Point standard output at the null device, so Python's final flush cannot fail.

    The recipe of the Python documentation (``signal``, "Note on SIGPIPE").
    """
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return  # not a real file (a test's capture): nothing will flush to a pipe
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code.

    Args:
        argv: The arguments (default: ``sys.argv[1:]``).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        code: int = args.run(args)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
    except BrokenPipeError:
        # The reader went away (`commhistory ... | head`): stop quietly.
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except CommandError as exc:
        print(f"commhistory {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except PermissionDenied as exc:
        # Names the actor and the permission; the guarded view has audited it.
        print(f"commhistory {args.command}: permission denied: {exc}", file=sys.stderr)
        return EXIT_DENIED
    except CommHistoryError as exc:
        print(f"commhistory {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        # OSError's str() names the file and the system's reason; no record content.
        print(f"commhistory {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"commhistory {args.command}: interrupted", file=sys.stderr)
        return 130
    return code
