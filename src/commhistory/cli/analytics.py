"""``commhistory export-analytics OUT``: pseudonymous facts for analytics engines.

Writes the history's non-personal facts (messages, events, activities,
campaign costs; contact ids as keyed pseudonyms; erased contacts left out)
under the directory ``OUT`` as a date-partitioned dataset: ``--format parquet``
(the default; needs the ``analytics`` extra, ``pip install
'commhistory[analytics]'``) or ``--format csv``. A manifest in ``OUT``
remembers how far the last export went: running the command again writes only
the rows stored after it, as new part files. ``OUT/erased_contacts.csv`` lists
the pseudonyms of every erased contact, for purging earlier copies. See
``docs/analytics.md``. With an actor, the guarded view checks ``read_metrics``.

.. versionadded:: 0.4.0
"""

from __future__ import annotations

import argparse
import json

from commhistory.cli._access import add_actor_options, resolve_access
from commhistory.cli._exits import EXIT_OK
from commhistory.cli._store_options import add_store_options
from commhistory.cli._text import plural
from commhistory.cli.store import repository
from commhistory.normalize.time import parse_timestamp

__all__ = ["register", "run_export"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``export-analytics`` command."""
    cmd = subparsers.add_parser(
        "export-analytics",
        help="export pseudonymous facts as a Parquet or CSV dataset (incremental)",
        description="Write messages, events, activities and costs without any personal "
        "field, contact ids replaced by keyed pseudonyms, as a date-partitioned dataset "
        "DuckDB or Spark read as is. Runs again write only rows stored since.",
    )
    cmd.add_argument("out", metavar="OUT", help="the output directory")
    cmd.add_argument(
        "--format",
        choices=("parquet", "csv"),
        default="parquet",
        help="file format (parquet needs pyarrow: the analytics extra)",
    )
    cmd.add_argument(
        "--since", default=None, metavar="WHEN", help="only rows at or after this time (UTC)"
    )
    cmd.add_argument(
        "--until",
        default=None,
        metavar="WHEN",
        help="only rows before this time (UTC); cannot move back between runs",
    )
    cmd.add_argument("--batch-size", type=int, default=50_000, metavar="N", help="rows per batch")
    cmd.add_argument("--report", choices=("text", "json"), default="text", help="summary format")
    add_store_options(cmd)
    add_actor_options(cmd)
    cmd.set_defaults(run=run_export)


def run_export(args: argparse.Namespace) -> int:
    """Export the facts stored since the last export into the directory."""
    since = (
        None
        if args.since is None
        else parse_timestamp(args.since, default_tz="UTC", field="since")
    )
    until = (
        None
        if args.until is None
        else parse_timestamp(args.until, default_tz="UTC", field="until")
    )
    access = resolve_access(args)
    with repository(args, create=False) as repo:
        view = access.view(repo)
        report = (repo if view is None else view).export_analytics(
            args.out, format=args.format, since=since, until=until, batch_size=args.batch_size
        )
    if args.report == "json":
        doc = {
            "run": report.run,
            "rows": dict(report.rows),
            "files": list(report.files),
            "erased": report.erased,
        }
        print(json.dumps(doc, indent=2))
    else:
        counts = ", ".join(f"{plural(n, 'row')} of {t}" for t, n in report.rows.items())
        print(
            f"run {report.run}: {counts}; {plural(len(report.files), 'file')} written; "
            f"{plural(report.erased, 'erased contact')} listed"
        )
    return EXIT_OK
