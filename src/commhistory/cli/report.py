"""``commhistory report``: KPIs from the repository as a table, JSON, CSV or an HTML report.

With ``--actor`` (see :func:`commhistory.cli._access.resolve_access`) the KPIs are
read through the guarded view: the actor needs ``read_metrics`` (exit 6 when denied).
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, time
from pathlib import Path
from zoneinfo import ZoneInfo

from commhistory.cli._access import add_actor_options, resolve_access
from commhistory.cli._argtypes import positive_int, time_zone
from commhistory.cli._exits import EXIT_OK, CommandError
from commhistory.cli._store_options import add_store_options
from commhistory.cli.store import repository
from commhistory.kpi import JOURNEY_KEYS
from commhistory.kpi.metrics import GROUP_KEYS, PERIODS, RATES, check_by
from commhistory.kpi.report import (
    build_report,
    render_csv,
    render_html,
    render_json,
    render_table,
)

__all__ = ["parse_bound", "register", "run"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``report`` command."""
    parser = subparsers.add_parser(
        "report",
        help="KPIs per campaign, variant, channel or period, with A/B verdicts",
        description="Compute the KPIs of DESIGN section 5 in the database. Human-only "
        "opens and clicks by default (--all-events to count machine ones).",
    )
    add_store_options(parser)
    parser.add_argument(
        "--by",
        default="campaign_id,variant",
        metavar="KEYS",
        help="comma-separated grouping keys: "
        f"{', '.join((*GROUP_KEYS, *JOURNEY_KEYS, *PERIODS))} "
        "(default campaign_id,variant)",
    )
    parser.add_argument(
        "--since", metavar="WHEN", help="messages sent at or after (ISO date/time)"
    )
    parser.add_argument("--until", metavar="WHEN", help="messages sent before (ISO date/time)")
    parser.add_argument(
        "--tz",
        type=time_zone,
        default=ZoneInfo("UTC"),
        metavar="ZONE",
        help="time zone of periods and of --since/--until without an offset (default UTC)",
    )
    parser.add_argument(
        "--format",
        choices=("table", "json", "csv", "html"),
        default="table",
        help="output format (default table)",
    )
    parser.add_argument("--out", metavar="FILE", help="write here instead of standard output")
    parser.add_argument(
        "--all-events", action="store_true", help="count machine opens and scanner clicks too"
    )
    parser.add_argument(
        "--metric",
        choices=sorted(RATES),
        default="click_rate",
        help="the rate A/B tests compare (default click_rate)",
    )
    parser.add_argument(
        "--period",
        choices=PERIODS,
        default="day",
        help="period of the HTML report's rates-over-time chart (default day)",
    )
    parser.add_argument(
        "--top-links",
        type=positive_int,
        default=10,
        metavar="N",
        help="links per campaign in the HTML and JSON reports, most clicked first (default 10)",
    )
    add_actor_options(parser)
    parser.set_defaults(run=run)


def parse_bound(value: str | None, zone: ZoneInfo, *, field: str) -> datetime | None:
    """Parse ``--since``/``--until``: an ISO date or date-time; no offset means *zone*.

    Raises:
        CommandError: The value is not an ISO date or date-time.
    """
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise CommandError(f"--{field}: expected an ISO date or date-time") from None
    if len(value) <= 10:
        parsed = datetime.combine(parsed.date(), time())
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=zone)
    return parsed


def run(args: argparse.Namespace) -> int:
    """Compute and print (or write) the report."""
    by = check_by(tuple(k.strip() for k in str(args.by).split(",") if k.strip()))
    zone: ZoneInfo = args.tz
    since = parse_bound(args.since, zone, field="since")
    until = parse_bound(args.until, zone, field="until")
    access = resolve_access(args)
    with repository(args, create=False) as repo:
        view = access.view(repo)
        data = build_report(
            repo if view is None else view,
            by=by,
            since=since,
            until=until,
            tz=zone.key,
            exclude_machine=not args.all_events,
            period=args.period,
            metric=args.metric,
            top_links_per_campaign=args.top_links,
        )
    if args.format == "table":
        text = render_table(data.main)
        if data.ab:
            text += "\n\nA/B tests (" + args.metric.replace("_", " ") + "):\n"
            text += "\n".join(f"  {cid or '(no campaign)'}: {r.verdict}" for cid, r in data.ab)
    elif args.format == "json":
        text = render_json(data.main, ab=data.ab, links=data.links)
    elif args.format == "csv":
        text = render_csv(data.main)
    else:
        text = render_html(data)
    if args.out:
        Path(args.out).write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return EXIT_OK
