"""Activity commands: ``declare-activities`` and ``activities``.

``declare-activities NAME[=KEY,KEY...] ...`` declares the activity names the
host records, each with its property keys stored in the clear; with no names
it lists the declarations. They are kept in the database, so ``import`` checks
activity lines against them. ``activities CONTACT_ID`` shows a contact's
activities, properties decrypted (needs ``read_personal``; audited).

Both take ``--db``, ``--keyring`` and the actor options, like ``timeline``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from commhistory.audit import Permission
from commhistory.cli._access import add_actor_options, resolve_access
from commhistory.cli._argtypes import time_zone
from commhistory.cli._exits import EXIT_OK, CommandError
from commhistory.cli._store_options import add_store_options
from commhistory.cli._text import plural, when
from commhistory.cli.report import parse_bound
from commhistory.cli.store import repository
from commhistory.contacts import ActivityCatalog
from commhistory.convert import unstructure
from commhistory.store import ActivityEntry


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the activity commands."""
    declare = subparsers.add_parser(
        "declare-activities",
        help="declare the activity names you record and their plain property keys",
        description="Declare activity names, each with the property keys stored in the "
        "clear (to filter on): 'purchase=sku,category page_view=url_path signup'. Every "
        "other property is personal and encrypted. Declaring a name again replaces its "
        "plain keys. With no names, list the declarations.",
    )
    declare.add_argument(
        "names",
        nargs="*",
        metavar="NAME[=KEY,...]",
        help="an activity name, with its plain property keys after '='",
    )
    add_store_options(declare)
    declare.add_argument(
        "--format", choices=("text", "json"), default="text", help="output format (default text)"
    )
    add_actor_options(declare)
    declare.set_defaults(run=run_declare)

    show = subparsers.add_parser(
        "activities",
        help="show a contact's activities (purchases, page views...), decrypted",
        description="Show a contact's activities in time order, properties decrypted, "
        "with the message each one's revenue is attributed to.",
    )
    show.add_argument("contact_id", metavar="CONTACT_ID", help="the contact's id")
    add_store_options(show)
    show.add_argument(
        "--name", action="append", dest="names", metavar="NAME", help="only this name (repeat)"
    )
    show.add_argument("--since", metavar="WHEN", help="at or after (ISO date/time)")
    show.add_argument("--until", metavar="WHEN", help="before (ISO date/time)")
    show.add_argument(
        "--tz",
        type=time_zone,
        default=None,
        metavar="ZONE",
        help="show times (and read --since/--until without an offset) in this zone",
    )
    show.add_argument(
        "--format",
        choices=("table", "json"),
        default="table",
        help="table: one line per activity; json: canonical records (default table)",
    )
    add_actor_options(show)
    show.set_defaults(run=run_activities)


def parse_names(values: list[str]) -> dict[str, list[str]]:
    """Parse ``NAME[=KEY,KEY]`` arguments into ``{name: plain keys}``.

    Raises:
        CommandError: A name is given twice.
    """
    out: dict[str, list[str]] = {}
    for value in values:
        name, _, keys = value.partition("=")
        name = name.strip()
        if name in out:
            raise CommandError(f"{name!r} is given twice")
        out[name] = [k.strip() for k in keys.split(",") if k.strip()]
    return out


def run_declare(args: argparse.Namespace) -> int:
    """Declare activity names (needs ``write_history``), or list them."""
    access = resolve_access(args)
    declared = parse_names(args.names)
    with repository(args, create=bool(declared)) as repo:
        view = access.view(repo)
        target: Any = repo if view is None else view
        catalog: ActivityCatalog = (
            target.declare_activities(declared) if declared else target.activity_catalog()
        )
    names = {name: sorted(keys) for name, keys in sorted(catalog.names.items())}
    if args.format == "json":
        print(json.dumps(names, indent=2))
        return EXIT_OK
    print(f"{plural(len(names), 'activity name')} declared")
    for name, keys in names.items():
        print(f"  {name}: plain {', '.join(keys) if keys else '(none)'}")
    return EXIT_OK


def run_activities(args: argparse.Namespace) -> int:
    """Show one contact's activities (needs ``read_personal``; audited)."""
    access = resolve_access(args, audited=Permission.READ_PERSONAL)
    zone: Any = args.tz
    since = parse_bound(args.since, zone or time_zone("UTC"), field="since")
    until = parse_bound(args.until, zone or time_zone("UTC"), field="until")
    with repository(args, create=False) as repo:
        view = access.view(repo)
        target: Any = repo if view is None else view
        entries: list[ActivityEntry] = target.activities(
            args.contact_id, names=args.names, since=since, until=until
        )
    if args.format == "json":
        doc = [{**unstructure(e.activity), "attributed_message_id": e.message_id} for e in entries]
        print(json.dumps(doc, ensure_ascii=False, indent=2))
        return EXIT_OK
    print(f"contact {args.contact_id}: {plural(len(entries), 'activity', 'activities')}")
    for entry in entries:
        a = entry.activity
        parts = [when(a.occurred_at, zone), a.name]
        if a.revenue is not None:
            parts.append(f"{a.revenue} {a.currency}")
        if entry.message_id is not None:
            parts.append(f"<- {entry.message_id}")
        if a.properties:
            parts.append(json.dumps(a.properties, ensure_ascii=False, sort_keys=True))
        parts.append(f"[{a.activity_id}]")
        print("  ".join(parts))
    return EXIT_OK
