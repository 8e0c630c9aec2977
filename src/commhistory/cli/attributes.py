"""Contact attribute commands: ``attributes declare FILE`` and ``attributes show CONTACT``.

``declare`` reads a schema file (``{"attributes": [{"name": ..., "type": ...,
"personal": ...}, ...]}``, see ``docs/contacts.md``) and stores the
declarations in the database, so ``import`` can then read ``contact`` lines
without any Python code. Declaring again is harmless; changing an attribute's
type or personal flag needs ``--allow-changes``. It needs ``write_history`` and
is audited (``attributes.declare``).

``show`` prints a contact's attributes. With ``--masked``, or for an actor
without ``read_personal``, personal values are withheld (nothing decrypted,
not audited); otherwise they are decrypted and the read is audited.
``--history`` lists every version with its period; ``--at`` the values in
force at an instant.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from commhistory.audit import Permission
from commhistory.cli._access import add_actor_options, resolve_access
from commhistory.cli._exits import EXIT_OK
from commhistory.cli._store_options import add_store_options
from commhistory.cli._text import plural
from commhistory.cli.store import repository
from commhistory.contacts import AttributeSchema, json_value
from commhistory.normalize.time import parse_timestamp

if TYPE_CHECKING:
    from commhistory.store.attributes import AttributeVersion

__all__ = ["register"]

WITHHELD = "<personal>"
"""What ``show`` prints in place of a personal value it does not decrypt."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``attributes declare`` and ``attributes show``."""
    parser = subparsers.add_parser(
        "attributes",
        help="declare contact attributes, show a contact's attributes",
        description="Contact attributes: a declared schema (plain values filterable, "
        "personal ones encrypted), values with their history.",
    )
    commands = parser.add_subparsers(dest="attributes_command", metavar="ACTION")
    commands.required = True

    declare = commands.add_parser(
        "declare",
        help="store the attribute declarations of a JSON schema file (idempotent)",
        description="Store the declarations of FILE in the database. Declaring again is "
        "harmless; changing an attribute's type or personal flag needs --allow-changes. "
        "Audited (attributes.declare).",
    )
    declare.add_argument("file", metavar="FILE", help='the schema: {"attributes": [...]}')
    declare.add_argument(
        "--allow-changes",
        action="store_true",
        help="allow changing a declared attribute's type or personal flag",
    )
    declare.add_argument(
        "--format", choices=("text", "json"), default="text", help="output format (default text)"
    )
    add_store_options(declare)
    add_actor_options(declare)
    declare.set_defaults(run=run_declare)

    show = commands.add_parser(
        "show",
        help="a contact's attributes (personal ones withheld with --masked)",
        description="Show a contact's current attributes, those in force --at an instant, "
        "or with --history every version. Personal values are decrypted (audited) unless "
        "--masked, or the actor lacks read_personal.",
    )
    show.add_argument("contact_id", metavar="CONTACT_ID", help="the contact's id")
    show.add_argument("--at", default=None, metavar="TIME", help="ISO 8601 instant with offset")
    show.add_argument("--history", action="store_true", help="every version with its period")
    show.add_argument(
        "--masked", action="store_true", help="withhold personal values (nothing decrypted)"
    )
    show.add_argument(
        "--format", choices=("text", "json"), default="text", help="output format (default text)"
    )
    add_store_options(show)
    add_actor_options(show)
    show.set_defaults(run=run_show)


def run_declare(args: argparse.Namespace) -> int:
    """Declare the file's attributes and print the whole schema."""
    schema = AttributeSchema.load(args.file)
    access = resolve_access(args, audited=Permission.WRITE_HISTORY)
    with repository(args, create=False) as repo:
        view = access.view(repo)
        target = repo if view is None else view
        declared = target.declare_attributes(schema, allow_changes=args.allow_changes)
    if args.format == "json":
        print(json.dumps(declared.to_json(), ensure_ascii=False, indent=2))
        return EXIT_OK
    print(f"{plural(len(declared), 'attribute')} declared:")
    for d in declared:
        kind = d.type.value + (f" ({', '.join(d.values)})" if d.values else "")
        print(f"  {d.name}: {kind}{', personal' if d.personal else ''}")
    return EXIT_OK


def run_show(args: argparse.Namespace) -> int:
    """Print a contact's attributes, masked for actors without ``read_personal``."""
    at = None if args.at is None else parse_timestamp(args.at, field="--at")
    access = resolve_access(args, audited=None if args.masked else Permission.READ_PERSONAL)
    masked = args.masked or not access.allows(Permission.READ_PERSONAL)
    if masked and not args.masked:
        actor = access.actor.id if access.actor is not None else "?"
        print(
            f"showing masked attributes: actor {actor!r} lacks permission "
            f"{Permission.READ_PERSONAL.value!r}",
            file=sys.stderr,
        )
    with repository(args, create=False) as repo:
        view = access.view(repo)
        target: Any = repo if view is None else view
        if args.history:
            versions: list[AttributeVersion] = (
                target.masked_attribute_history(args.contact_id)
                if masked
                else target.attribute_history(args.contact_id)
            )
        else:
            values = (
                target.masked_attributes(args.contact_id, at=at)
                if masked
                else target.attributes(args.contact_id, at=at)
            )
    if args.history:
        return _print_history(args, versions, masked=masked)
    shown = {
        name: WITHHELD if (masked and value is None) else json_value(value)
        for name, value in values.items()
    }
    if args.format == "json":
        print(json.dumps({"contact_id": args.contact_id, "attributes": shown}, indent=2,
                         ensure_ascii=False))  # fmt: skip
        return EXIT_OK
    print(f"contact {args.contact_id}: {plural(len(shown), 'attribute')}")
    for name in sorted(shown):
        print(f"  {name}: {_text(shown[name])}")
    return EXIT_OK


def _print_history(
    args: argparse.Namespace, versions: list[AttributeVersion], *, masked: bool
) -> int:
    rows = [
        {
            "name": v.name,
            "value": WITHHELD if (masked and v.personal) else json_value(v.value),
            "valid_from": json_value(v.valid_from),
            "valid_to": json_value(v.valid_to),
        }
        for v in versions
    ]
    if args.format == "json":
        print(json.dumps({"contact_id": args.contact_id, "history": rows}, indent=2,
                         ensure_ascii=False))  # fmt: skip
        return EXIT_OK
    print(f"contact {args.contact_id}: {plural(len(rows), 'version')}")
    for r in rows:
        until = r["valid_to"] or "now"
        print(f"  {r['name']}: {_text(r['value'])}  [{r['valid_from']} .. {until})")
    return EXIT_OK


def _text(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
