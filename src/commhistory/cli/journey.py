"""``commhistory journey validate|due|triggers|stats|replay``.

``validate``: the file is JSON (or YAML, ``.yaml``/``.yml``, when PyYAML is
installed). A valid definition prints its key, version, trigger and the step
graph (``--format json`` prints the normalised definition, which reads back to
the same journey); an invalid one prints the JSON path and the reason and
exits with 2.

``due``: claims the journey sends due now (or ``--at``) in the store, through
send planning (consent and suppression always; caps, quiet hours and zones from
``--config``, a plan configuration file as ``plan-send`` reads), and prints
one line each on standard output: the intent key, the contact id and the
template key. What planning held back goes to standard error, one line each:
``deferred KEY CONTACT TEMPLATE until UNTIL (REASON)`` and ``skipped KEY
CONTACT TEMPLATE (REASON)``. ``--format json`` prints one object with
``at``, ``intents``, ``deferred`` and ``skipped``. ``--dry-run`` claims nothing.

``triggers``: runs :func:`~commhistory.journeys.triggers.run_triggers` for the
journey files given (the live versions) at now (or ``--at``) and prints, per
journey, how many triggering records were read, enrolled and kept out.

``stats`` and ``replay``: numbers per journey and step, and a dry run of a
stored history (see :doc:`/journeys`).

.. versionadded:: 0.4.0
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from commhistory.cli._access import add_actor_options, resolve_access
from commhistory.cli._exits import EXIT_OK
from commhistory.cli._store_options import add_store_options
from commhistory.cli.store import repository
from commhistory.errors import InvalidInputError
from commhistory.journeys import BranchStep, Journey, SendStep, WaitStep, format_duration
from commhistory.journeys.replay import render_replay
from commhistory.journeys.stats import render_stats
from commhistory.kpi.metrics import check_tz
from commhistory.normalize.time import parse_timestamp
from commhistory.segments.planning import load_plan_config

__all__ = ["describe", "register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``journey`` command and its subcommands."""
    top = subparsers.add_parser(
        "journey",
        help="check journey definitions (step and trigger mail)",
        description="Work with journey definitions: a trigger, steps, re-entry and goals.",
    )
    sub = top.add_subparsers(dest="journey_command", metavar="SUBCOMMAND", required=True)
    validate = sub.add_parser(
        "validate",
        help="check a journey definition",
        description="Check a journey definition whole: fields, step references, "
        "reachability and loops without a wait. Exits with 2 naming the JSON path "
        "of the first problem.",
    )
    validate.add_argument("file", type=Path, metavar="FILE", help="the definition (.json, .yaml)")
    validate.add_argument(
        "--format", choices=("text", "json"), default="text", help="output format"
    )
    validate.set_defaults(run=_run_validate)
    due = sub.add_parser(
        "due",
        help="claim and print the journey sends due now (or --at)",
        description="Advance the stored enrollments to now (or --at, a simulated clock) and "
        "claim the sends due that send planning lets go: each is printed once, as its "
        "intent key, contact id and template key; record the send with its key. Sends "
        "refused by planning are recorded as skipped; sends held by quiet hours or caps are "
        "deferred or skipped as the journey says (both listed on standard error). "
        "--dry-run claims nothing.",
    )
    due.add_argument(
        "--config",
        default=None,
        metavar="FILE",
        help="JSON file of frequency caps, quiet hours and zones (see docs/planning.md)",
    )
    due.add_argument("--at", default=None, metavar="TIME", help="an ISO 8601 instant")
    due.add_argument("--limit", type=int, default=None, help="look at most at N enrollments")
    due.add_argument("--dry-run", action="store_true", help="claim and store nothing")
    due.add_argument("--format", choices=("text", "json"), default="text", help="output format")
    add_store_options(due)
    add_actor_options(due)
    due.set_defaults(run=_run_due)
    register_stats(sub)
    register_replay(sub)
    triggers = sub.add_parser(
        "triggers",
        help="enroll the contacts the journeys' triggers name since the last run",
        description="Read what was stored since each journey's last run (activities, "
        "message events, segment entries, date attributes) and enroll the contacts its "
        "trigger names, once per triggering record; then wake the enrollments whose "
        "contacts did something new. Prints one line per journey: read, enrolled, kept "
        "out by the re-entry policy.",
    )
    triggers.add_argument(
        "files", type=Path, nargs="+", metavar="FILE", help="the live journey definitions"
    )
    triggers.add_argument("--at", default=None, metavar="TIME", help="an ISO 8601 instant")
    triggers.add_argument(
        "--zone", default="UTC", metavar="ZONE", help="the contacts' IANA zone (date triggers)"
    )
    triggers.add_argument(
        "--max-age-hours",
        type=float,
        default=24.0,
        metavar="H",
        help="nothing older than this fires a trigger (default 24)",
    )
    triggers.add_argument("--no-wake", action="store_true", help="do not wake enrollments")
    triggers.add_argument(
        "--format", choices=("text", "json"), default="text", help="output format"
    )
    add_store_options(triggers)
    add_actor_options(triggers)
    triggers.set_defaults(run=_run_triggers)


def describe(journey: Journey) -> list[str]:
    """The human summary ``journey validate`` prints: the header, then one line a step."""
    trigger = type(journey.trigger).__name__.removesuffix("Trigger").lower()
    lines = [
        f"{journey.key} v{journey.version}: valid; trigger {trigger}, "
        f"{len(journey.steps)} steps, re-entry {journey.reentry.value}, "
        f"{len(journey.goals)} goals"
    ]
    for step in journey.steps:
        start = "*" if step.id == journey.start else " "
        if isinstance(step, SendStep):
            detail = f"send {step.template} ({step.channel.value}, {step.purpose.value})"
            edges = f"-> {step.next or 'end'}"
        elif isinstance(step, WaitStep):
            parts = []
            if step.delay is not None:
                parts.append(format_duration(step.delay))
            if step.until_time is not None:
                parts.append(f"until {step.until_time:%H:%M}")
            if step.until_allowed:
                parts.append("until allowed")
            detail = "wait " + ", ".join(parts)
            edges = f"-> {step.next or 'end'}"
        else:
            assert isinstance(step, BranchStep)
            what = step.condition.activity or (
                step.condition.event.value if step.condition.event else "?"
            )
            of = f" of {step.condition.of_step}" if step.condition.of_step else ""
            detail = f"branch on {what}{of} within {format_duration(step.within)}"
            edges = f"-> yes: {step.then or 'end'}, no: {step.otherwise or 'end'}"
        lines.append(f" {start} {step.id}: {detail} {edges}")
    return lines


def _run_validate(args: argparse.Namespace) -> int:
    journey = Journey.load(args.file)
    if args.format == "json":
        json.dump(journey.to_dict(), sys.stdout, ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
    else:
        print("\n".join(describe(journey)))
    return EXIT_OK


def _run_due(args: argparse.Namespace) -> int:
    at = None if args.at is None else parse_timestamp(args.at, field="--at")
    config = None if args.config is None else load_plan_config(args.config)
    access = resolve_access(args)
    with repository(args, create=False) as repo:
        view = access.view(repo)
        result = (repo if view is None else view).journey_due(
            at, config=config, limit=args.limit, dry_run=args.dry_run
        )
    if args.format == "json":
        json.dump(result.to_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return EXIT_OK
    for intent in result:
        print(f"{intent.key} {intent.contact_id} {intent.template}")
    for held in result.deferred:
        i = held.intent
        print(
            f"deferred {i.key} {i.contact_id} {i.template} until {held.until.isoformat()} "
            f"({held.reason.value})",
            file=sys.stderr,
        )
    for skip in result.skipped:
        i = skip.intent
        print(
            f"skipped {i.key} {i.contact_id} {i.template} ({skip.reason.value})", file=sys.stderr
        )
    return EXIT_OK


# --- journey stats (KPIs per journey and step) -------------------------------------------


def register_stats(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``journey stats FILE``: per-step numbers of the stored enrollments and messages."""
    stats = sub.add_parser(
        "stats",
        help="print a journey's numbers per step (entered, sent, exits, message KPIs)",
        description="Count the stored enrollments of the journey version in FILE: entered, "
        "active, completed, ended by a goal or an unsubscribe; per step the times entered, "
        "the enrollments standing there, the intents sent, skipped and pending, and the "
        "KPIs of the messages recorded for them (delivered, opened, clicked, converted). "
        "--at counts only what happened by then. Writes nothing.",
    )
    stats.add_argument("file", type=Path, metavar="FILE", help="the definition (.json, .yaml)")
    stats.add_argument("--at", default=None, metavar="TIME", help="an ISO 8601 instant")
    stats.add_argument("--format", choices=("text", "json"), default="text", help="output format")
    add_store_options(stats)
    add_actor_options(stats)
    stats.set_defaults(run=_run_stats)


def _run_stats(args: argparse.Namespace) -> int:

    journey = Journey.load(args.file)
    at = None if args.at is None else parse_timestamp(args.at, field="--at")
    access = resolve_access(args)
    with repository(args, create=False) as repo:
        view = access.view(repo)
        stats = (repo if view is None else view).journey_stats(journey, at=at)
    if args.format == "json":
        json.dump(stats.to_dict(), sys.stdout, ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
    else:
        print(render_stats(stats))
    return EXIT_OK


# --- journey replay (dry run over a stored history) -----------------------------------------


def register_replay(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``journey replay FILE --from T1 --to T2``: a dry run over the stored history."""
    replay = sub.add_parser(
        "replay",
        help="replay the stored history of a window against a journey, writing nothing",
        description="Find the journey's triggers (activities or message events) stored "
        "between --from and --to, simulate the enrollments and the steps on a simulated "
        "clock (each send screened by send planning as journey due screens it, with --config, "
        "and taken as sent when let go; goals and branches read from the stored activities "
        "and events) and print the sends, skips and deferrals per step (--intents: each "
        "of them). Writes nothing.",
    )
    replay.add_argument("file", type=Path, metavar="FILE", help="the definition (.json, .yaml)")
    replay.add_argument(
        "--from", dest="since", required=True, metavar="TIME", help="the window's start"
    )
    replay.add_argument(
        "--to", dest="until", required=True, metavar="TIME", help="the window's end (inclusive)"
    )
    replay.add_argument(
        "--tz",
        default=None,
        metavar="ZONE",
        help="the contacts' time zone (default: the --config zones, else UTC)",
    )
    replay.add_argument(
        "--config",
        default=None,
        metavar="FILE",
        help="JSON file of frequency caps, quiet hours and zones, as journey due reads it",
    )
    replay.add_argument("--intents", action="store_true", help="list every simulated send")
    replay.add_argument("--format", choices=("text", "json"), default="text", help="output format")
    add_store_options(replay)
    add_actor_options(replay)
    replay.set_defaults(run=_run_replay)


def _run_replay(args: argparse.Namespace) -> int:

    journey = Journey.load(args.file)
    since = parse_timestamp(args.since, field="--from")
    until = parse_timestamp(args.until, field="--to")
    zone = None if args.tz is None else check_tz(args.tz)
    config = None if args.config is None else load_plan_config(args.config)
    access = resolve_access(args)
    with repository(args, create=False) as repo:
        view = access.view(repo)
        report = (repo if view is None else view).journey_replay(
            journey,
            since=since,
            until=until,
            zone_of=None if zone is None else (lambda _contact: zone),
            config=config,
        )
    if args.format == "json":
        json.dump(report.to_dict(intents=args.intents), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(render_replay(report, intents=args.intents))
    return EXIT_OK


def _run_triggers(args: argparse.Namespace) -> int:
    at = None if args.at is None else parse_timestamp(args.at, field="--at")
    try:
        zone = ZoneInfo(args.zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInputError(field="--zone", reason="not a known IANA time zone") from None
    if not args.max_age_hours > 0:
        raise InvalidInputError(field="--max-age-hours", reason="must be positive")
    journeys = [Journey.load(path) for path in args.files]
    access = resolve_access(args)
    with repository(args, create=False) as repo:
        view = access.view(repo)
        report = (repo if view is None else view).run_journey_triggers(
            journeys,
            at,
            zone_of=lambda _contact: zone,
            max_age=dt.timedelta(hours=args.max_age_hours),
            wake=not args.no_wake,
        )
    rows = [
        {
            "journey": j.key,
            "read": report.read.get(j.key, 0),
            "enrolled": report.enrolled.get(j.key, 0),
            "kept_out": report.kept_out.get(j.key, 0),
        }
        for j in journeys
    ]
    if args.format == "json":
        json.dump({"journeys": rows, "woken": report.woken}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        for row in rows:
            print(
                f"{row['journey']}: read {row['read']}, enrolled {row['enrolled']}, "
                f"kept out {row['kept_out']}"
            )
        print(f"new behaviour: {report.woken} contacts")
    return EXIT_OK
