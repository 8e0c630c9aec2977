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
import importlib
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Final

from commhistory.cli._exits import EXIT_DENIED, EXIT_USAGE, CommandError
from commhistory.errors import CommHistoryError, PermissionDenied

__all__ = ["COMMAND_MODULES", "build_parser", "main"]

_MODULES: Final = (
    "validate",
    "store",
    "attributes",
    "activities",
    "webhook",
    "report",
    "demo",
    "consent",
    "plan",
    "audit",
    "dead_letters",
    "costs",
    "analytics",
    "crm",
    "journey",
    "partitions",
    "segment",
)
"""The command modules under :mod:`commhistory.cli`, in the order of ``--help``."""

COMMAND_MODULES: Final[Mapping[str, str]] = {
    "validate": "validate",
    "init": "store",
    "import": "store",
    "timeline": "store",
    "rotate-keys": "store",
    "backfill-masks": "store",
    "attributes": "attributes",
    "declare-activities": "activities",
    "activities": "activities",
    "parse-webhook": "webhook",
    "ingest-webhook": "webhook",
    "verify-webhook": "webhook",
    "report": "report",
    "demo": "demo",
    "can-send": "consent",
    "export-subject": "consent",
    "erase-subject": "consent",
    "purge": "consent",
    "plan-send": "plan",
    "audit": "audit",
    "dead-letters": "dead_letters",
    "costs": "costs",
    "export-analytics": "analytics",
    "crm-import": "crm",
    "journey": "journey",
    "partitions": "partitions",
    "segment": "segment",
}
"""Each command's module: a run imports the module of its command only.

Importing every command module costs more start-up than many commands' work
(SQLAlchemy, Alembic, cryptography, the providers; ``validate`` needs none of
them). ``tests/test_cli_lazy.py`` checks this table against the commands the
modules register.
"""


class _VersionAction(argparse.Action):
    """``--version``: the package's version, read only when asked for."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS) -> None:
        super().__init__(
            option_strings,
            dest,
            nargs=0,
            default=argparse.SUPPRESS,
            help="show program's version number and exit",
        )

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        import commhistory  # noqa: PLC0415 - the version is read only for --version

        print(f"commhistory {commhistory.__version__}")  # as argparse's "version"
        parser.exit()


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Build the argument parser.

    Args:
        command: Register only the module of this command, when it names one
            (:data:`COMMAND_MODULES`); by default, or for any other word, every
            command is registered (``--help`` lists them all).
    """
    parser = argparse.ArgumentParser(
        prog="commhistory",
        description="Capture, protect and measure a business's communication history.",
    )
    parser.add_argument("--version", action=_VersionAction)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    only = COMMAND_MODULES.get(command) if command is not None else None
    for name in _MODULES if only is None else (only,):
        importlib.import_module(f"{__name__}.{name}").register(subparsers)
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
    if argv is None:
        argv = sys.argv[1:]
    # The command is the first argument: the top-level options take no value and
    # end the run (--help, --version); with one first, every command is registered.
    parser = build_parser(argv[0] if argv else None)
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
