"""Consent and privacy commands: ``can-send``, ``export-subject``, ``erase-subject``, ``purge``.

Each takes ``--db`` and ``--keyring`` like the storage commands. ``can-send``
exits 0 when sending is allowed and 3 when it is not, so scripts can branch on
it; ``erase-subject`` asks for ``--yes`` because it cannot be undone.

Each also takes ``--actor``, ``--role``, ``--purpose`` (``--access-purpose`` on
``can-send``, whose ``--purpose`` is the message purpose) and ``--policy``: with
an actor the command goes through the guarded view (exit 6 when denied).
``purge`` goes through the guarded view's ``purge``: it needs ``erase_subject``
and is audited (action ``purge``; a dry run is checked, not audited).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final

from commhistory.audit import Permission
from commhistory.cli._access import Access, add_actor_options, resolve_access
from commhistory.cli._argtypes import add_region_option, region_of
from commhistory.cli._exits import EXIT_OK, CommandError
from commhistory.cli._store_options import add_store_options
from commhistory.cli._text import plural
from commhistory.cli.store import repository
from commhistory.errors import InvalidInputError
from commhistory.model import Channel, Purpose
from commhistory.normalize import normalize_phone
from commhistory.normalize.time import parse_timestamp
from commhistory.privacy import RetentionPolicy

if TYPE_CHECKING:
    from commhistory.facade import CommHistory
    from commhistory.privacy import PurgeReport, RetentionPolicy

__all__ = ["EXIT_REFUSED", "register"]

EXIT_REFUSED: Final = 3
"""``can-send``: sending is not allowed."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the consent and privacy commands."""
    can = subparsers.add_parser(
        "can-send",
        help="may this contact be messaged on a channel for a purpose? (exit 0 yes, 3 no)",
        description="Combine consent, suppression and purpose into one decision with its "
        "reasons. Exit 0 when allowed, 3 when not.",
    )
    can.add_argument("contact_id", metavar="CONTACT_ID", help="the contact's id")
    can.add_argument(
        "--channel",
        required=True,
        choices=[c.value for c in Channel],
        help="the channel of the send",
    )
    can.add_argument(
        "--purpose",
        required=True,
        choices=[p.value for p in Purpose],
        help="the message purpose (marketing needs consent)",
    )
    can.add_argument("--at", default=None, metavar="TIME", help="ISO 8601 instant with offset")
    can.add_argument("--address", default=None, help="decide for this address only")
    add_region_option(can)
    can.add_argument(
        "--format", choices=("text", "json"), default="text", help="output format (default text)"
    )
    add_store_options(can)
    add_actor_options(can, purpose_flag=False)
    can.set_defaults(run=run_can_send)

    export = subparsers.add_parser(
        "export-subject",
        help="everything held on a person as one JSON document (APPI / GDPR Art. 15, 20)",
        description="Write everything held on a contact, decrypted, as one JSON document, "
        "for a subject access or portability request. Audited (export_subject).",
    )
    export.add_argument("contact_id", metavar="CONTACT_ID", help="the contact's id")
    export.add_argument("--out", default=None, metavar="FILE", help="write here, not stdout")
    add_store_options(export)
    add_actor_options(export)
    export.set_defaults(run=run_export)

    erase = subparsers.add_parser(
        "erase-subject",
        help="crypto-shred a person's data (GDPR Art. 17); opt-outs and legal records kept",
        description="Destroy the contact's data key and blind indexes. Cannot be undone. "
        "Prints what was destroyed and what was kept, why and until when.",
    )
    erase.add_argument("contact_id", metavar="CONTACT_ID", help="the contact's id")
    erase.add_argument("--yes", action="store_true", help="confirm the irreversible erasure")
    erase.add_argument(
        "--format", choices=("text", "json"), default="text", help="output format (default text)"
    )
    add_store_options(erase)
    add_actor_options(erase)
    erase.set_defaults(run=run_erase)

    purge = subparsers.add_parser(
        "purge",
        help="delete records past their retention period (use --dry-run first)",
        description="Delete what the retention rules say is due: consent evidence kept "
        "past its period, and dead letters older than --dead-letter-days. --dry-run "
        "counts without deleting. Audited (purge).",
    )
    purge.add_argument("--dry-run", action="store_true", help="only show what is due")
    purge.add_argument(
        "--consent-months",
        type=int,
        default=1,
        metavar="N",
        help="months consent evidence is kept after sending stops (default 1)",
    )
    purge.add_argument(
        "--dead-letter-days",
        type=int,
        default=90,
        metavar="N",
        help="delete dead letters received more than N days ago (default 90)",
    )
    purge.add_argument(
        "--history-days",
        type=int,
        default=None,
        metavar="N",
        help="also delete messages sent and events that occurred more than N days ago "
        "(default: keep them); a partitioned PostgreSQL database drops whole months",
    )
    purge.add_argument(
        "--format", choices=("text", "json"), default="text", help="output format (default text)"
    )
    add_store_options(purge)
    add_actor_options(purge)
    purge.set_defaults(run=run_purge)


def run_can_send(args: argparse.Namespace) -> int:
    """Print the decision; exit 0 when allowed, 3 when not."""
    at = None if args.at is None else parse_timestamp(args.at, field="--at")
    address = args.address
    if address is not None and args.channel in ("sms", "voice", "whatsapp"):
        # E.164 first, in --region: the consent rules then read it the same in any region.
        address = normalize_phone(address, region_of(args))
    access = resolve_access(args)
    with repository(args, create=False) as repo:
        view = access.view(repo)
        decision = (repo if view is None else view).can_send(
            args.contact_id, args.channel, args.purpose, at, address=address
        )
    if args.format == "json":
        print(json.dumps(decision.to_dict(), ensure_ascii=False, indent=2))
    else:
        verdict = "allowed" if decision.allowed else "refused"
        print(
            f"{decision.contact_id} {decision.channel.value}/{decision.purpose.value}: {verdict}"
        )
        for reason in decision.reasons:
            print(f"  - {reason}")
    return EXIT_OK if decision.allowed else EXIT_REFUSED


def run_export(args: argparse.Namespace) -> int:
    """Write the subject's export document."""
    access = resolve_access(args, audited=Permission.EXPORT_SUBJECT)
    with repository(args, create=False) as repo:
        view = access.view(repo)
        doc = (repo if view is None else view).export_subject(args.contact_id)
    text = json.dumps(doc, ensure_ascii=False, indent=2)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        print(text)
    return EXIT_OK


def run_erase(args: argparse.Namespace) -> int:
    """Erase one contact and print the report."""
    if not args.yes:
        raise CommandError("erasure cannot be undone; pass --yes to confirm")

    access = resolve_access(args, audited=Permission.ERASE_SUBJECT)
    with repository(args, create=False) as repo:
        view = access.view(repo)
        report = (repo if view is None else view).erase_subject(args.contact_id)
    if args.format == "json":
        print(json.dumps(report.to_dict(), ensure_ascii=False, indent=2))
        return EXIT_OK
    state = "was already erased" if report.already_erased else "erased"
    print(f"contact {report.contact_id} {state} at {report.to_dict()['erased_at']}")
    print("destroyed:")
    for item in report.destroyed:
        print(f"  {item.what}: {item.count} ({item.why})")
    print("kept:")
    for item in report.kept:
        until = f", until {item.until.isoformat()}" if item.until else ""
        print(f"  {item.what}: {item.count} ({item.why}{until})")
    return EXIT_OK


def _purge(
    repo: CommHistory[Any], access: Access, policy: RetentionPolicy, *, dry_run: bool
) -> PurgeReport:
    """Purge, as the actor when one is given (``erase_subject``; a real purge is audited)."""
    view = access.view(repo)
    if view is None:
        return repo.purge(policy, dry_run=dry_run)
    return view.purge(policy, dry_run=dry_run)


def run_purge(args: argparse.Namespace) -> int:
    """Purge (or with --dry-run list) what is due."""
    try:
        policy = RetentionPolicy(
            consent_evidence_months=args.consent_months,
            dead_letters=timedelta(days=args.dead_letter_days),
            history=None if args.history_days is None else timedelta(days=args.history_days),
        )
    except InvalidInputError as exc:
        raise CommandError(str(exc)) from None
    access = resolve_access(args, audited=None if args.dry_run else Permission.ERASE_SUBJECT)
    with repository(args, create=False) as repo:
        report = _purge(repo, access, policy, dry_run=args.dry_run)
    if args.format == "json":
        print(
            json.dumps(
                {
                    "dry_run": report.dry_run,
                    "now": report.now.isoformat(),
                    "items": [
                        {
                            "kind": i.kind,
                            "count": i.count,
                            "rule": i.rule,
                            "dropped_partitions": list(i.dropped_partitions),
                        }
                        for i in report.items
                    ],
                },
                indent=2,
            )
        )
        return EXIT_OK
    verb = "due (dry run, nothing deleted)" if report.dry_run else "deleted"
    print(f"{plural(report.total, 'record')} {verb}:")
    for item in report.items:
        print(f"  {item.kind}: {item.count} ({item.rule})")
        if item.dropped_partitions:
            print(f"    dropped whole: {', '.join(item.dropped_partitions)}")
    return EXIT_OK
