"""Audit commands: ``audit verify`` and ``audit show``.

``audit verify`` checks the whole hash chain of the audit log and names the
first entry that was altered, removed, inserted or reordered. Exit codes:
0 the chain is intact, 5 it was tampered with (2 usage errors, as everywhere).
It prints the chain's head MAC: keep a copy elsewhere and compare, since
removing entries from the end leaves a shorter chain that still verifies.

``audit show [--contact ID] [--actor ID] [--action A,B] [--since T]`` lists
entries, oldest first, as text, an aligned table (``--format table``: time,
actor, roles, action, purpose, contact, outcome) or JSON lines: who (actor id
and roles), what (action, the permission it needed, contact and target ids),
why (the stated purpose) and the outcome. Entries hold ids only, never personal
values. The other commands write entries as the ``--actor`` named, or as the
operating-system user (``os:<user>``, role ``admin``); their purpose is
``--purpose``, or ``commhistory COMMAND``.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from typing import Final

from commhistory.audit import AuditEntry
from commhistory.cli._exits import EXIT_OK
from commhistory.cli._store_options import add_store_options, database_url
from commhistory.cli._text import plural, table
from commhistory.cli.store import load_keyring
from commhistory.errors import NormalizationError
from commhistory.facade import open_repository
from commhistory.normalize.time import parse_timestamp

__all__ = ["EXIT_TAMPERED", "register", "run_show", "run_verify"]

EXIT_TAMPERED: Final = 5
"""``audit verify``: the chain does not verify."""


def _when(value: str) -> datetime:
    try:
        return parse_timestamp(value, field="since")
    except NormalizationError as exc:
        raise argparse.ArgumentTypeError(f"{exc.reason} (use ISO 8601 with an offset)") from None


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``audit`` command and its ``verify`` and ``show`` subcommands."""
    audit = subparsers.add_parser(
        "audit",
        help="verify or show the tamper-evident audit log",
        description="Verify the audit log's hash chain or list its entries.",
    )
    sub = audit.add_subparsers(dest="audit_command", metavar="SUBCOMMAND", required=True)

    verify = sub.add_parser(
        "verify",
        help="check the whole chain; exit 5 when an entry was altered, removed or reordered",
        description="Check the audit log's whole hash chain and print its head MAC (keep "
        "a copy elsewhere: removing entries from the end leaves a shorter chain that still "
        "verifies). Exit 0 intact, 5 tampered.",
    )
    add_store_options(verify)
    verify.add_argument(
        "--format", choices=("text", "json"), default="text", help="output format (default text)"
    )
    verify.set_defaults(run=run_verify)

    show = sub.add_parser(
        "show",
        help="list audit entries, oldest first",
        description="List audit entries, oldest first: who (actor and roles), what "
        "(action, permission, contact and targets), why (purpose) and the outcome. Entries "
        "hold ids only, never personal values.",
    )
    add_store_options(show)
    show.add_argument("--contact", metavar="ID", default=None, help="entries about this contact")
    show.add_argument("--actor", metavar="ID", default=None, help="entries by this actor")
    show.add_argument(
        "--action",
        dest="actions",
        metavar="ACTION",
        action="append",
        default=None,
        help="entries of these actions, comma-separated or repeated "
        "(e.g. export_subject,erase_subject)",
    )
    show.add_argument(
        "--since",
        metavar="T",
        type=_when,
        default=None,
        help="entries recorded at or after T (ISO 8601 with an offset)",
    )
    show.add_argument(
        "--format",
        choices=("text", "table", "json"),
        default="text",
        help="text: one line per entry; table: aligned columns time, actor, roles, action, "
        "purpose, contact, outcome; json: one object per line",
    )
    show.set_defaults(run=run_show)


def run_verify(args: argparse.Namespace) -> int:
    """Verify the chain; 0 when intact, :data:`EXIT_TAMPERED` otherwise."""
    keyring = load_keyring(args, create=False)
    with open_repository(database_url(args), keyring, upgrade=False) as repo:
        report = repo.audit_log.verify_chain()
    if args.format == "json":
        print(
            json.dumps(
                {
                    "intact": report.intact,
                    "entries": report.entries,
                    "first_bad": report.first_bad,
                    "problem": report.problem,
                    "head": report.head,
                }
            )
        )
    elif report.intact:
        print(f"audit log intact: {plural(report.entries, 'entry')}, head {report.head}")
    else:
        print(f"audit log TAMPERED at entry {report.first_bad}: {report.problem}")
    return EXIT_OK if report.intact else EXIT_TAMPERED


def _line(entry: AuditEntry) -> str:
    parts = [
        f"{entry.seq:>6}",
        entry.recorded_at.isoformat(timespec="seconds"),
        f"{entry.actor_id} ({','.join(entry.roles)})",
        entry.action,
        entry.outcome,
    ]
    if entry.contact_id:
        parts.append(f"contact={entry.contact_id}")
    if entry.targets:
        parts.append(f"targets={','.join(entry.targets)}")
    if entry.permission:
        parts.append(f"permission={entry.permission}")
    parts.append(f"purpose={entry.purpose!r}")
    return "  ".join(parts)


_TABLE_HEADER: Final = ("time (UTC)", "actor", "roles", "action", "purpose", "contact", "outcome")


def _table(entries: list[AuditEntry]) -> str:
    """Aligned columns: who did what to whom, when, why, and how it ended."""
    rows = [
        (
            entry.recorded_at.strftime("%Y-%m-%d %H:%M:%S"),
            entry.actor_id,
            ",".join(entry.roles),
            entry.action,
            entry.purpose,
            entry.contact_id or "-",
            entry.outcome,
        )
        for entry in entries
    ]
    return table(
        _TABLE_HEADER,
        rows,
        flex=[_TABLE_HEADER.index(c) for c in ("purpose", "outcome", "roles", "actor")],
    )


def _split_actions(values: list[str] | None) -> list[str] | None:
    if values is None:
        return None
    return [a.strip() for value in values for a in value.split(",") if a.strip()]


def run_show(args: argparse.Namespace) -> int:
    """List entries matching the filters."""
    keyring = load_keyring(args, create=False)
    with open_repository(database_url(args), keyring, upgrade=False) as repo:
        entries = repo.audit_log.entries(
            contact_id=args.contact,
            actor_id=args.actor,
            since=args.since,
            actions=_split_actions(getattr(args, "actions", None)),
        )
    if args.format == "table":
        if entries:
            print(_table(entries))
        else:
            print("no audit entries match", file=sys.stderr)
        return EXIT_OK
    for entry in entries:
        if args.format == "json":
            print(
                json.dumps(
                    {
                        "seq": entry.seq,
                        "recorded_at": entry.recorded_at.isoformat(),
                        "actor_id": entry.actor_id,
                        "roles": list(entry.roles),
                        "action": entry.action,
                        "permission": entry.permission,
                        "contact_id": entry.contact_id,
                        "targets": list(entry.targets),
                        "purpose": entry.purpose,
                        "outcome": entry.outcome,
                        "key_id": entry.key_id,
                    }
                )
            )
        else:
            print(_line(entry))
    return EXIT_OK
