"""``commhistory demo``: a realistic history, encrypted in SQLite, measured and reported."""

from __future__ import annotations

import argparse
from pathlib import Path

from commhistory.cli._exits import EXIT_OK, CommandError
from commhistory.cli._progress import Progress
from commhistory.cli._text import plural
from commhistory.cli.store import format_timeline
from commhistory.demo import run_demo
from commhistory.kpi.report import render_table

__all__ = ["register", "run"]


DEFAULT_DB = "commhistory-demo.db"
"""The demo's database file, in the working directory."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``demo`` command."""
    parser = subparsers.add_parser(
        "demo",
        help="generate a seeded synthetic history, store it encrypted, print KPIs, write HTML",
        description="Generates a shop's history (email, SMS, LINE; three A/B campaigns), "
        "records it encrypted in a new SQLite file, prints the KPIs with A/B verdicts and "
        "one customer's timeline, and writes the HTML report.",
    )
    parser.add_argument(
        "--db",
        default=None,
        metavar="FILE",
        help=f"SQLite file to create (default {DEFAULT_DB}, replaced on every run)",
    )
    parser.add_argument(
        "--keyring", default=None, metavar="PATH", help="keyring to create (default DB.keyring)"
    )
    parser.add_argument(
        "--out", default="commhistory-demo.html", metavar="FILE", help="HTML report to write"
    )
    parser.add_argument(
        "--contacts",
        type=int,
        default=10_000,
        metavar="N",
        help="how many synthetic contacts (default 10000)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=2024,
        help="random seed: the same seed gives the same history (default 2024)",
    )
    parser.add_argument(
        "--force", action="store_true", help="replace an existing --db file and its keyring"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo."""
    if args.contacts < 1:
        raise CommandError("--contacts must be at least 1")
    # The default files are the demo's own, so a second run simply replaces them;
    # a file the user named is only replaced with --force.
    replace = args.force or args.db is None
    db = Path(args.db or DEFAULT_DB)
    keyring = Path(args.keyring) if args.keyring else db.with_name(db.name + ".keyring")
    for path in (db, keyring, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        if path.exists():
            if not replace:
                raise CommandError(f"{path} exists; use --force to replace it")
            path.unlink()
    progress = Progress(args.contacts, label="recording")
    try:
        result = run_demo(
            db,
            keyring_path=keyring,
            html_path=Path(args.out),
            contacts=args.contacts,
            seed=args.seed,
            progress=lambda done, _total: progress.update(done),
        )
    finally:
        progress.close()
    print(
        f"Recorded {plural(result.messages, 'message')} and {plural(result.events, 'event')} "
        f"in {db} (encrypted; keyring {keyring}); {plural(result.machine_events, 'event')} "
        "flagged as machine opens or scanner clicks.\n"
    )
    print("KPIs by campaign and variant (human events only, periods in Asia/Tokyo):")
    print(render_table(result.table))
    print("\nA/B verdicts (click rate):")
    for cid, ab in result.ab:
        print(f"  {cid}: {ab.verdict}")
    print(f"\nTimeline of {result.contact_id}:")
    print(format_timeline(result.contact_id, result.timeline, tz=None))
    print(f"\nHTML report: {result.html_path}")
    print(f"Try: commhistory report --db sqlite:///{db} --keyring {keyring} --by channel,week")
    return EXIT_OK
