"""``commhistory dead-letters list|show|replay|purge``: the input that could not be stored.

* ``list`` prints each letter's id, received time, source, line, field and
  reason; never its raw content.
* ``show ID`` prints one letter with its raw line, decrypted. For an actor
  without ``read_personal`` the raw line is withheld (and nothing decrypted);
  with ``read_personal`` the read is audited.
* ``replay`` parses the kept raw lines again through the reader ``validate``
  and ``import`` use (with ``--tz``, ``--map``, ``--kind``, and for CSV rows
  the sheet's header from ``--header`` or ``--header-from FILE``), stores what
  now parses and removes those letters; lines that still fail stay, with their
  new reason. Webhook letters go through their provider's adapter from the
  registry (``commhistory.providers.get_provider``), as ``ingest-webhook``
  builds it, without re-checking the signature (checked on receipt). A second
  replay stores nothing twice. Exit 1 when some still fail.
* ``purge --before DATE`` deletes the letters received before DATE
  (``--dry-run`` only counts them).

With an actor (``--actor``/``--role``/``--purpose``), the guarded view checks
``read_history_masked`` (list, masked show), ``read_personal`` (show),
``write_history`` (replay) and ``erase_subject`` (purge).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from typing import TYPE_CHECKING, Any

from commhistory.audit import Permission
from commhistory.cli._access import add_actor_options, resolve_access
from commhistory.cli._argtypes import (
    add_region_option,
    column_mapping,
    positive_int,
    region_of,
    time_zone,
)
from commhistory.cli._exits import EXIT_OK, EXIT_REJECTED, CommandError
from commhistory.cli._store_options import add_store_options
from commhistory.cli._text import plural, table
from commhistory.cli.store import load_keyring, repository
from commhistory.cli.webhook import replay_adapters
from commhistory.convert import KINDS
from commhistory.errors import NormalizationError
from commhistory.normalize.time import parse_timestamp
from commhistory.store.dead_letters import info_of

if TYPE_CHECKING:
    from commhistory.facade.dead_letters import ReplayReport
    from commhistory.store import DeadLetter
    from commhistory.store.dead_letters import DeadLetterInfo

__all__ = ["register"]

WITHHELD = "(withheld: needs read_personal)"
"""What ``show`` prints instead of the raw line for an actor without ``read_personal``."""


def _date(value: str) -> datetime:
    try:
        return parse_timestamp(value, default_tz="UTC", field="before")
    except NormalizationError as exc:
        raise argparse.ArgumentTypeError(
            f"{exc.reason} (use an ISO 8601 date or time, e.g. 2024-01-31)"
        ) from None


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``dead-letters`` command and its subcommands."""
    top = subparsers.add_parser(
        "dead-letters",
        help="list, show, replay or purge the input lines that could not be stored",
        description="Dead letters are the input lines import and the webhooks rejected, "
        "kept encrypted with why. List them, show one, replay them after fixing the "
        "mapping or the code, or purge old ones.",
    )
    sub = top.add_subparsers(dest="dead_letters_command", metavar="SUBCOMMAND", required=True)

    lst = sub.add_parser(
        "list",
        help="list ids, received time, source, line, field and reason (no raw content)",
        description="List the dead letters, oldest first: id, received time (UTC), source, "
        "line, field and reason. Never the raw content, so nothing is decrypted.",
    )
    lst.add_argument("--source", default=None, help="only the letters of this source (file)")
    lst.add_argument("--limit", type=positive_int, default=None, metavar="N", help="at most N")
    lst.add_argument("--format", choices=("table", "json"), default="table", help="output format")
    add_store_options(lst)
    add_actor_options(lst)
    lst.set_defaults(run=run_list)

    show = sub.add_parser(
        "show",
        help="show one letter with its raw line (withheld without read_personal)",
        description="Show one dead letter and its raw line, decrypted. For an actor "
        "without read_personal the raw line is withheld; with it the read is audited.",
    )
    show.add_argument("id", metavar="ID", help="the dead letter's id (from list)")
    show.add_argument("--format", choices=("text", "json"), default="text", help="output format")
    add_store_options(show)
    add_actor_options(show)
    show.set_defaults(run=run_show)

    replay = sub.add_parser(
        "replay",
        help="parse the kept lines again and store what now parses, once",
        description="Parse the kept raw lines again (as validate and import read them) and "
        "store what now parses; those letters are removed, so a second replay stores "
        "nothing twice. Webhook letters are parsed again by their provider's adapter "
        "(the installed version; the signature was checked on receipt). Lines that still "
        "fail stay, with their new reason. Exit 1 when some still fail.",
    )
    replay.add_argument("ids", metavar="ID", nargs="*", help="these letters (default: all)")
    replay.add_argument("--source", default=None, help="only the letters of this source (file)")
    replay.add_argument(
        "--tz",
        type=time_zone,
        default=None,
        metavar="ZONE",
        help="time zone for timestamps without an offset, e.g. Asia/Tokyo",
    )
    replay.add_argument(
        "--map",
        dest="mapping",
        metavar="COLUMN=FIELD",
        type=column_mapping,
        action="append",
        default=[],
        help="CSV: read COLUMN as FIELD (as for import)",
    )
    replay.add_argument(
        "--kind", choices=sorted(KINDS), default=None, help="CSV: the kind of rows without one"
    )
    header = replay.add_mutually_exclusive_group()
    header.add_argument(
        "--header", default=None, metavar="ROW", help="CSV: the sheet's header row"
    )
    header.add_argument(
        "--header-from",
        default=None,
        metavar="FILE",
        help="CSV: take the header row from the first line of FILE (the original sheet)",
    )
    replay.add_argument(
        "--encoding", default="utf-8-sig", help="the encoding of --header-from (default utf-8)"
    )
    replay.add_argument("--format", choices=("text", "json"), default="text", help="output")
    add_region_option(replay)
    add_store_options(replay)
    add_actor_options(replay)
    replay.set_defaults(run=run_replay)

    purge = sub.add_parser(
        "purge",
        help="delete the letters received before a date",
        description="Delete the dead letters received before DATE (UTC when no offset). "
        "`commhistory purge --dead-letter-days N` applies the same by age.",
    )
    purge.add_argument(
        "--before", type=_date, required=True, metavar="DATE", help="e.g. 2024-01-31"
    )
    purge.add_argument("--dry-run", action="store_true", help="only count them")
    add_store_options(purge)
    add_actor_options(purge)
    purge.set_defaults(run=run_purge)


def _info_json(info: DeadLetterInfo) -> dict[str, Any]:
    return {
        "id": info.id,
        "received_at": info.received_at.isoformat(),
        "source": info.source,
        "line": info.line,
        "field": info.field,
        "reason": info.reason,
    }


def run_list(args: argparse.Namespace) -> int:
    """List dead letters, without their raw content."""
    access = resolve_access(args)
    with repository(args, create=False) as repo:
        view = access.view(repo)
        target = repo if view is None else view
        letters = target.list_dead_letters(source=args.source, limit=args.limit)
    if args.format == "json":
        print(json.dumps([_info_json(i) for i in letters], ensure_ascii=False, indent=2))
        return EXIT_OK
    if not letters:
        print("no dead letters")
        return EXIT_OK
    rows = [
        (
            i.id,
            i.received_at.strftime("%Y-%m-%d %H:%M:%S"),
            i.source,
            "-" if i.line is None else str(i.line),
            f"{i.field}: {i.reason}",
        )
        for i in letters
    ]
    print(table(("ID", "RECEIVED (UTC)", "SOURCE", "LINE", "FIELD: REASON"), rows, flex=[4, 2]))
    print(plural(len(letters), "dead letter"))
    return EXIT_OK


def run_show(args: argparse.Namespace) -> int:
    """Show one dead letter: decrypted with ``read_personal``, raw withheld without it."""
    access = resolve_access(args, audited=Permission.READ_PERSONAL)
    raw: str | None
    with repository(args, create=False) as repo:
        view = access.view(repo)
        if view is not None and not view.allows(Permission.READ_PERSONAL):
            print(
                f"raw line withheld: actor {view.actor.id!r} lacks permission "
                f"{Permission.READ_PERSONAL.value!r}",
                file=sys.stderr,
            )
            info, raw = view.masked_dead_letter(args.id), None
        else:
            letter: DeadLetter = (
                repo.dead_letter(args.id) if view is None else view.dead_letter(args.id)
            )
            info, raw = info_of(letter), letter.raw
    if args.format == "json":
        doc = _info_json(info) | {"raw": raw, "withheld": raw is None}
        print(json.dumps(doc, ensure_ascii=False, indent=2))
        return EXIT_OK
    print(f"id:       {info.id}")
    print(f"received: {info.received_at.isoformat()}")
    print(f"source:   {info.source}")
    print(f"line:     {'-' if info.line is None else info.line}")
    print(f"field:    {info.field}")
    print(f"reason:   {info.reason}")
    print(f"raw:      {WITHHELD if raw is None else raw}")
    return EXIT_OK


def _header(args: argparse.Namespace) -> str | None:
    if args.header_from is None:
        return str(args.header) if args.header is not None else None
    try:
        with open(args.header_from, encoding=args.encoding, newline="") as fh:
            first = fh.readline().rstrip("\r\n")
    except LookupError:
        raise CommandError(f"--encoding: unknown encoding {args.encoding!r}") from None
    except UnicodeDecodeError:
        raise CommandError(
            f"{args.header_from}: cannot be decoded as {args.encoding}; give the file's "
            "encoding with --encoding (e.g. --encoding cp932)"
        ) from None
    if not first.strip():
        raise CommandError(f"{args.header_from}: the first line is not a header row")
    return first


def run_replay(args: argparse.Namespace) -> int:
    """Replay dead letters (as the actor, when one is given: needs ``write_history``)."""
    access = resolve_access(args)
    if args.ids and args.source is not None:
        raise CommandError("give dead letter ids or --source, not both")
    header = _header(args)
    keyring = load_keyring(args, create=False)
    with repository(args, create=False) as repo:
        view = access.view(repo)
        target = repo if view is None else view
        report = target.replay_dead_letters(
            args.ids or None,
            source=args.source,
            default_tz=args.tz,
            mapping=dict(args.mapping),
            kind=args.kind,
            header=header,
            region=region_of(args),
            adapters=replay_adapters(args, keyring, target),
        )
    _print_replay(report, args.format)
    return EXIT_REJECTED if report.failed or report.stored.rejected else EXIT_OK


def _print_replay(report: ReplayReport, fmt: str) -> None:
    stored = report.stored
    if fmt == "json":
        doc = {
            "letters": report.letters,
            "parsed": report.parsed,
            "still_failing": report.failed,
            "skipped_csv_without_header": report.skipped,
            "webhook_without_adapter": report.unresolved,
            "inserted": stored.inserted,
            "duplicates": stored.duplicates,
            "rejected": stored.rejected,
            "linked": stored.linked,
        }
        print(json.dumps(doc, indent=2))
        return
    now_parse = "now parses" if report.parsed == 1 else "now parse"
    still_fail = "still fails" if report.failed == 1 else "still fail"
    print(
        f"{plural(report.letters, 'dead letter')}: {report.parsed:,} {now_parse} "
        f"({stored.inserted:,} inserted, {plural(stored.duplicates, 'duplicate')}, "
        f"{stored.rejected:,} rejected again), {report.failed:,} {still_fail} "
        "(kept with their new reason)"
    )
    if report.unresolved:
        print(
            f"{plural(report.unresolved, 'webhook dead letter')} left as they are: no adapter "
            "is registered for their provider",
            file=sys.stderr,
        )
    if report.skipped:
        print(
            f"{plural(report.skipped, 'CSV row')} skipped: pass the sheet's header with "
            "--header or --header-from FILE",
            file=sys.stderr,
        )


def run_purge(args: argparse.Namespace) -> int:
    """Delete (or count) the dead letters received before ``--before``."""
    access = resolve_access(args, audited=None if args.dry_run else Permission.ERASE_SUBJECT)
    with repository(args, create=False) as repo:
        view = access.view(repo)
        target = repo if view is None else view
        count = target.purge_dead_letters(args.before, dry_run=args.dry_run)
    when = args.before.isoformat()
    if args.dry_run:
        print(f"{plural(count, 'dead letter')} received before {when} would be deleted (dry run)")
    else:
        print(f"{plural(count, 'dead letter')} received before {when} deleted")
    return EXIT_OK
