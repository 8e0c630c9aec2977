"""``commhistory partitions enable|ensure|status``: monthly partitions on PostgreSQL.

* ``enable`` converts ``messages`` and ``events`` of an unpartitioned database
  to monthly partitions, in one transaction (writers and readers wait while it
  copies; see :func:`commhistory.store.partition.enable`).
* ``ensure --ahead N`` creates the partitions of the current month and N after
  it, and gives a month with rows in the ``DEFAULT`` partition its own (run it
  from a scheduler).
* ``status`` lists the partitions.

None of them needs the keyring: they move rows without reading a personal field.
PostgreSQL only; SQLite is refused (exit 2).
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC

from commhistory.cli._exits import EXIT_OK
from commhistory.cli._store_options import add_store_options, database_url
from commhistory.normalize.time import from_micros
from commhistory.store import partition

__all__ = ["register"]

_AHEAD_DEFAULT = 3


def _ahead(value: str) -> int:
    try:
        months = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError("expected a whole number of months") from None
    if not 0 <= months <= 120:
        raise argparse.ArgumentTypeError("must be 0 to 120")
    return months


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``partitions`` command and its subcommands."""
    top = subparsers.add_parser(
        "partitions",
        help="monthly partitions of messages and events (PostgreSQL)",
        description="Partition messages and events by month on PostgreSQL, create the "
        "coming months' partitions, or list them. See docs/scaling.md.",
    )
    sub = top.add_subparsers(dest="partitions_command", metavar="SUBCOMMAND", required=True)
    for name, help_, description in (
        (
            "enable",
            "convert messages and events to monthly partitions (one transaction)",
            "Convert an unpartitioned database: both tables are locked, every row is "
            "copied into its month's partition, the unique keys into key tables. Needs "
            "the schema at revision 0012 or later (commhistory init) and the space of "
            "both tables twice while it runs.",
        ),
        (
            "ensure",
            "create the partitions of this month and --ahead months after it",
            "Create the partitions of the current month and --ahead months after it, and "
            "move rows that landed in the DEFAULT partition into their month's own. Safe "
            "to run again; does nothing on an unpartitioned database.",
        ),
    ):
        cmd = sub.add_parser(name, help=help_, description=description)
        cmd.add_argument(
            "--ahead",
            type=_ahead,
            default=_AHEAD_DEFAULT,
            metavar="N",
            help=f"months after the current one (default {_AHEAD_DEFAULT})",
        )
        cmd.add_argument(
            "--format", choices=("text", "json"), default="text", help="output format"
        )
        add_store_options(cmd)
        cmd.set_defaults(run=run_enable if name == "enable" else run_ensure)
    stat = sub.add_parser("status", help="list the partitions", description="List them.")
    stat.add_argument("--format", choices=("text", "json"), default="text", help="output format")
    add_store_options(stat)
    stat.set_defaults(run=run_status)


def _print_report(report: partition.PartitionReport, fmt: str) -> None:
    if fmt == "json":
        doc = {
            "created": list(report.created),
            "copied": report.copied,
            "moved": report.moved,
        }
        print(json.dumps(doc, indent=2))
        return
    print(f"created {len(report.created)} partition(s)", end="")
    if report.copied:
        print(f", copied {report.copied} row(s)", end="")
    if report.moved:
        print(f", moved {report.moved} row(s) out of DEFAULT", end="")
    print()
    for name in report.created:
        print(f"  {name}")


def run_enable(args: argparse.Namespace) -> int:
    """Convert the database to monthly partitions."""
    report = partition.enable(database_url(args), ahead_months=args.ahead)
    _print_report(report, args.format)
    return EXIT_OK


def run_ensure(args: argparse.Namespace) -> int:
    """Create the coming months' partitions."""
    report = partition.maintain(database_url(args), ahead_months=args.ahead)
    _print_report(report, args.format)
    return EXIT_OK


def _day(micros: int) -> str:
    return from_micros(micros).astimezone(UTC).date().isoformat()


def run_status(args: argparse.Namespace) -> int:
    """List the partitions of each partitioned table."""
    found = partition.status(database_url(args))
    if args.format == "json":
        doc = {
            table: {
                name: None if bound is None else [_day(bound[0]), _day(bound[1])]
                for name, bound in parts.items()
            }
            for table, parts in found.items()
        }
        print(json.dumps({"partitioned": bool(found), "tables": doc}, indent=2))
        return EXIT_OK
    if not found:
        print("not partitioned (messages and events are single tables)")
        return EXIT_OK
    for table, parts in found.items():
        months = sorted(b for b in parts.values() if b is not None)
        span = f"{_day(months[0][0])} to {_day(months[-1][1])}" if months else "no months"
        print(f"{table}: {len(months)} month(s), {span}, and DEFAULT")
    return EXIT_OK
