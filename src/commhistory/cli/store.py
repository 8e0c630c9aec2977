"""Storage commands: ``init``, ``import``, ``timeline``, ``rotate-keys`` and ``backfill-masks``.

Each takes ``--db`` (default ``$COMMHISTORY_DB``, else ``sqlite:///commhistory.db``)
and ``--keyring`` (default ``$COMMHISTORY_KEYRING``, else ``commhistory.keyring``).
``init`` and ``import`` create the keyring (mode 0600) when it is absent; the
other commands need an existing one, since a new keyring cannot read old data.

``import``, ``timeline`` and ``rotate-keys`` also take ``--actor``, ``--role``,
``--purpose`` and ``--policy`` (see :func:`commhistory.cli._access.resolve_access`):
with an actor they go through the repository's guarded view, so permissions are
checked (exit 6 when denied) and audited operations are logged. ``timeline``
shows the masked timeline to an actor without ``read_personal``, or with
``--masked``.
"""

from __future__ import annotations

import argparse
import enum
import json
import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, tzinfo
from typing import IO, TYPE_CHECKING, Any, Final

import attrs

from commhistory.audit import Permission
from commhistory.cli._access import add_actor_options, resolve_access
from commhistory.cli._argtypes import positive_int, time_zone
from commhistory.cli._exits import EXIT_OK, EXIT_REJECTED, CommandError
from commhistory.cli._inputs import add_input_options, input_records
from commhistory.cli._progress import Progress
from commhistory.cli._store_options import add_store_options, database_url, keyring_path
from commhistory.cli._text import plural, when
from commhistory.contacts import admit
from commhistory.convert import unstructure
from commhistory.crypto import Keyring
from commhistory.facade import CommHistory, open_repository
from commhistory.model import Event
from commhistory.store import (
    IngestReport,
    RotationReport,
    SQLRepository,
    TimelineEntry,
    current_revision,
    upgrade,
)

if TYPE_CHECKING:
    from commhistory.audit import MaskedEntry, MaskedEvent, MaskedMessage
    from commhistory.convert import ParsedLine
    from commhistory.model import Message


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the storage commands."""
    init = subparsers.add_parser(
        "init",
        help="create or upgrade the schema and create the keyring if absent",
        description="Create or upgrade the database schema to the newest revision and "
        "create the keyring (mode 0600) if absent. The database is reached first: when it "
        "cannot be, nothing is written. An existing keyring is never replaced.",
    )
    add_store_options(init)
    init.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="json: one object with revision, keyring and keyring_created (default text)",
    )
    init.set_defaults(run=run_init)

    imp = subparsers.add_parser(
        "import",
        help="store a .jsonl or .csv history file; bad lines become dead letters",
        description="Store every record of the file. Duplicates are counted, not stored "
        "again; invalid lines are kept as dead letters. Exit 1 when any line was rejected.",
    )
    add_input_options(imp, file_help="a .jsonl (canonical) or .csv file")
    add_store_options(imp)
    imp.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="text: rejected lines and a summary line; json: one summary object (default text)",
    )
    imp.add_argument(
        "--batch-size",
        type=positive_int,
        default=5000,
        metavar="N",
        help="records per transaction (default 5000)",
    )
    imp.add_argument(
        "--errors",
        dest="errors_file",
        metavar="FILE",
        default=None,
        help="write every rejected line as a JSON line (line, field, reason; no content)",
    )
    add_actor_options(imp)
    imp.set_defaults(run=run_import)

    timeline = subparsers.add_parser(
        "timeline",
        help="show a contact's messages and events, decrypted, in time order",
        description="Show a contact's timeline. With --masked, or for an actor without "
        "read_personal, personal values are withheld and nothing is decrypted.",
    )
    timeline.add_argument("contact_id", metavar="CONTACT_ID", help="the contact's id")
    add_store_options(timeline)
    timeline.add_argument(
        "--format",
        choices=("table", "json"),
        default="table",
        help="table: one block per message; json: canonical records (default table)",
    )
    timeline.add_argument(
        "--tz", type=time_zone, default=None, metavar="ZONE", help="show times in this zone"
    )
    timeline.add_argument(
        "--masked",
        action="store_true",
        help="withhold addresses, subjects and bodies; decrypt nothing (not audited)",
    )
    add_actor_options(timeline)
    timeline.set_defaults(run=run_timeline)

    rotate = subparsers.add_parser(
        "rotate-keys",
        help="make a new key current and re-wrap every data key under it",
        description="Adds a new keyring key, saves the keyring, then re-wraps the "
        "contacts' data keys in batches. Safe to interrupt and run again with --resume.",
    )
    add_store_options(rotate)
    rotate.add_argument(
        "--reindex",
        action="store_true",
        help="also make the new key the blind-index key and recompute every blind index",
    )
    rotate.add_argument(
        "--resume",
        action="store_true",
        help="do not add a key; finish re-wrapping under the current one",
    )
    rotate.add_argument(
        "--batch-size",
        type=positive_int,
        default=1000,
        metavar="N",
        help="rows per transaction (default 1000)",
    )
    rotate.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="json: one object with the new key, the backup and the counts (default text)",
    )
    add_actor_options(rotate)
    rotate.set_defaults(run=run_rotate)

    backfill = subparsers.add_parser(
        "backfill-masks",
        help="store the masked addresses of messages imported before schema revision 0005",
        description="Decrypts the address of every message stored without a masked form "
        "and stores the mask (t***@example.com), in batches; erased contacts are skipped. "
        "Safe to interrupt and run again.",
    )
    add_store_options(backfill)
    backfill.add_argument(
        "--batch-size",
        type=positive_int,
        default=1000,
        metavar="N",
        help="messages per transaction (default 1000)",
    )
    backfill.set_defaults(run=run_backfill_masks)


def load_keyring(args: argparse.Namespace, *, create: bool) -> Keyring:
    """Load the keyring, creating it (mode 0600) when absent and *create* is true.

    Before a new keyring is written the database is reached (a SQLite file is
    created then, as ``init`` and ``import`` may): a database that cannot be
    reached raises and leaves no keyring behind. Without *create*, a missing
    SQLite file is refused rather than created.
    """
    path = keyring_path(args)
    if os.path.exists(path):
        return Keyring.load(path)
    if not create:
        raise CommandError(f"no keyring at {path}; run 'commhistory init' or pass --keyring")
    current_revision(database_url(args))  # DatabaseUnavailableError before any file is written
    keyring = Keyring.generate()
    _save_new_keyring(keyring, path)
    return keyring


def _save_new_keyring(keyring: Keyring, path: str) -> None:
    keyring.save(path)  # exclusive: never replaces a keyring made meanwhile
    print(
        f"created keyring {path} (keep it safe: without it the data cannot be read)",
        file=sys.stderr,
    )


@contextmanager
def repository(args: argparse.Namespace, *, create: bool) -> Iterator[CommHistory[SQLRepository]]:
    """Open the repository named by the arguments."""
    keyring = load_keyring(args, create=create)
    with open_repository(database_url(args), keyring, upgrade=create) as repo:
        yield repo


def run_init(args: argparse.Namespace) -> int:
    """Create or upgrade the schema, and the keyring if absent.

    The schema comes first: a database that cannot be reached raises before the
    keyring (or, for SQLite in a missing folder, any file) is written.
    """
    path = keyring_path(args)
    new_keyring = None if os.path.exists(path) else Keyring.generate()
    if new_keyring is None:
        Keyring.load(path)  # a keyring that cannot be read stops init before the schema
    revision = upgrade(database_url(args))
    if new_keyring is not None:
        _save_new_keyring(new_keyring, path)
    if getattr(args, "format", "text") == "json":
        doc = {"revision": revision, "keyring": path, "keyring_created": new_keyring is not None}
        print(json.dumps(doc, indent=2))
    else:
        print(f"schema at revision {revision}; keyring {path}")
    return EXIT_OK


def run_import(args: argparse.Namespace) -> int:
    """Store a history file (as the actor, when one is given: needs ``write_history``)."""
    access = resolve_access(args)
    keyring = load_keyring(args, create=True)
    with (
        input_records(args, label="importing") as (lines, _progress),
        open_repository(
            database_url(args), keyring, upgrade=True, batch_size=args.batch_size
        ) as repo,
    ):
        view = access.view(repo)
        target = repo if view is None else view
        with _rejected_lines(args.errors_file) as rejected:
            # Activities refused by the declarations are shown like lines that do not parse.
            admitted = admit(lines, target.activity_catalog)
            report = target.ingest(
                _noting_rejects(admitted, rejected), source=os.path.basename(args.file)
            )
    if args.format == "text":
        _print_rejects(rejected, report)
    _print_report(args.file, report, args.format)
    return EXIT_REJECTED if report.rejected else EXIT_OK


SHOWN_REJECTS: Final = 10
"""How many rejected lines ``import`` prints (``--errors FILE`` writes them all)."""


@attrs.define
class _Rejects:
    """The rejected lines of an import: the first few kept, all counted, all written."""

    shown: list[tuple[int, str, str]] = attrs.Factory(list)
    count: int = 0
    out: IO[str] | None = None


@contextmanager
def _rejected_lines(path: str | None) -> Iterator[_Rejects]:
    if path is None:
        yield _Rejects()
        return
    with open(path, "w", encoding="utf-8") as out:
        yield _Rejects(out=out)


def _noting_rejects(lines: Iterable[ParsedLine], rejects: _Rejects) -> Iterator[ParsedLine]:
    """Pass the lines on, noting each line that does not parse (never its content)."""
    for parsed in lines:
        if parsed.error is not None:
            rejects.count += 1
            item = (parsed.line, parsed.error.field, parsed.error.reason)
            if len(rejects.shown) < SHOWN_REJECTS:
                rejects.shown.append(item)
            if rejects.out is not None:
                doc = {"line": item[0], "field": item[1], "reason": item[2]}
                rejects.out.write(json.dumps(doc, ensure_ascii=False) + "\n")
        yield parsed


def _print_rejects(rejects: _Rejects, report: IngestReport) -> None:
    """Print the first rejected lines as ``LINE: field: reason``, as ``validate`` does."""
    for line, field, reason in rejects.shown:
        print(f"{line}: {field}: {reason}")
    more = rejects.count - len(rejects.shown)
    if more > 0:
        print(f"... and {plural(more, 'more rejected line')} (--errors FILE writes them all)")
    refused = report.rejected - rejects.count
    if refused > 0:
        print(
            f"{plural(refused, 'record')} refused by the store "
            "(see 'commhistory dead-letters list')"
        )


def _print_report(path: str, report: IngestReport, fmt: str) -> None:
    if fmt == "json":
        print(
            json.dumps(
                {
                    "file": path,
                    "total": report.total,
                    "inserted": report.inserted,
                    "duplicates": report.duplicates,
                    "rejected": report.rejected,
                    "linked": report.linked,
                },
                indent=2,
            )
        )
        return
    print(
        f"{path}: {plural(report.total, 'record')}: {report.inserted:,} inserted, "
        f"{plural(report.duplicates, 'duplicate')}, {report.rejected:,} rejected "
        f"(kept as dead letters), {plural(report.linked, 'waiting event')} linked"
    )


def run_timeline(args: argparse.Namespace) -> int:
    """Show one contact's timeline, masked for actors without ``read_personal``."""
    access = resolve_access(args, audited=None if args.masked else Permission.READ_PERSONAL)
    with repository(args, create=False) as repo:
        view = access.view(repo)
        masked: list[MaskedEntry] | None = None
        if view is None:
            if args.masked:
                masked = repo.masked_timeline(args.contact_id)
            else:
                entries = repo.timeline(args.contact_id)
        elif args.masked or not view.allows(Permission.READ_PERSONAL):
            if not args.masked and view.allows(Permission.READ_HISTORY_MASKED):
                print(
                    f"showing the masked timeline: actor {view.actor.id!r} lacks "
                    f"permission {Permission.READ_PERSONAL.value!r}",
                    file=sys.stderr,
                )
            masked = view.masked_timeline(args.contact_id)
        else:
            entries = view.timeline(args.contact_id)
    if masked is not None:
        if args.format == "json":
            print(json.dumps([_masked_json(e) for e in masked], ensure_ascii=False, indent=2))
        else:
            print(format_masked_timeline(args.contact_id, masked, tz=args.tz))
        return EXIT_OK
    if args.format == "json":
        doc = [
            {
                "message": unstructure(entry.message),
                "events": [unstructure(event) for event in entry.events],
            }
            for entry in entries
        ]
        print(json.dumps(doc, ensure_ascii=False, indent=2))
    else:
        print(format_timeline(args.contact_id, entries, tz=args.tz))
    return EXIT_OK


def format_timeline(contact_id: str, entries: list[TimelineEntry], *, tz: tzinfo | None) -> str:
    """Render a timeline as a plain-text table (one block per message)."""
    lines = [f"contact {contact_id}: {plural(len(entries), 'message')}{_zone_note(tz)}"]
    for entry in entries:
        msg = entry.message
        lines.append("")
        lines.append(_message_line(msg, msg.address, tz))
        if msg.subject:
            lines.append(f"{_pad(tz)}subject: {_clip(msg.subject)}")
        if msg.body:
            lines.append(f"{_pad(tz)}body:    {_clip(msg.body)}")
        for event in entry.events:
            lines.append(f"{_when(event.occurred_at, tz)}     {_describe(event)}")
    return "\n".join(lines)


def _message_line(msg: Message | MaskedMessage, address: str, tz: tzinfo | None) -> str:
    """A message's header line: time, direction, channel, address, purpose, campaign, id."""
    arrow = "->" if msg.direction.value == "outbound" else "<-"
    campaign = f" {msg.campaign_id}" if msg.campaign_id else ""
    variant = f"/{msg.variant}" if msg.variant else ""
    return (
        f"{_when(msg.sent_at, tz)}  {arrow} {msg.channel.value:<6} {address}"
        f"  [{msg.purpose.value}{campaign}{variant}] {msg.message_id}"
    )


def _masked_json(entry: MaskedEntry) -> dict[str, Any]:
    def plain(_inst: object, _field: object, value: Any) -> Any:
        if isinstance(value, datetime):
            return value.isoformat()
        if isinstance(value, enum.Enum):
            return value.value
        return value

    return {
        "masked": True,
        "message": attrs.asdict(entry.message, value_serializer=plain),
        "events": [attrs.asdict(e, value_serializer=plain) for e in entry.events],
    }


def format_masked_timeline(
    contact_id: str, entries: list[MaskedEntry], *, tz: tzinfo | None
) -> str:
    """Render a masked timeline like :func:`format_timeline`, personal values withheld."""
    lines = [
        f"contact {contact_id}: {plural(len(entries), 'message')}{_zone_note(tz)} "
        "(masked: personal values withheld)"
    ]
    for entry in entries:
        msg = entry.message
        address = msg.address if msg.address is not None else "(address withheld)"
        lines.append("")
        lines.append(_message_line(msg, address, tz))
        if msg.has_subject:
            lines.append(f"{_pad(tz)}subject: (withheld)")
        if msg.has_body:
            lines.append(f"{_pad(tz)}body:    (withheld)")
        for event in entry.events:
            lines.append(f"{_when(event.occurred_at, tz)}     {_describe_masked(event)}")
    return "\n".join(lines)


def _describe_masked(event: MaskedEvent) -> str:
    parts = [event.type.value]
    if event.bounce is not None:
        parts.append(
            f"({event.bounce.value}{' ' + event.status_code if event.status_code else ''})"
        )
    if event.machine:
        parts.append("[machine]")
    if event.revenue is not None:
        parts.append(f"{event.revenue} {event.currency}")
    return " ".join(parts)


def _when(moment: datetime, tz: tzinfo | None) -> str:
    return when(moment, tz)


def _pad(tz: tzinfo | None) -> str:
    """The indent of a message's detail lines: the width of a time, and two spaces."""
    return " " * (len(when(datetime(2000, 1, 1, tzinfo=UTC), tz)) + 2)


def _zone_note(tz: tzinfo | None) -> str:
    """``(times in Asia/Tokyo)``, or ``(times in UTC)`` without ``--tz``."""
    return f" (times in {'UTC' if tz is None else getattr(tz, 'key', None) or str(tz)})"


def _clip(text: str, width: int = 60) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _describe(event: Event) -> str:
    parts = [event.type.value]
    if event.bounce is not None:
        parts.append(
            f"({event.bounce.value}{' ' + event.status_code if event.status_code else ''})"
        )
    if event.machine:
        parts.append("[machine]")
    if event.url:
        parts.append(_clip(event.url, 50))
    if event.revenue is not None:
        parts.append(f"{event.revenue} {event.currency}")
    return " ".join(parts)


def run_rotate(args: argparse.Namespace) -> int:
    """Rotate the keyring's current key and re-wrap data keys under it.

    With an actor, ``manage_keys`` is checked before the keyring is touched; a
    denied actor changes nothing and the denial is audited.
    """
    access = resolve_access(args, audited=Permission.MANAGE_KEYS)
    keyring = load_keyring(args, create=False)
    path = keyring_path(args)
    new_id: str | None = None
    backup: str | None = None
    if not args.resume and access.allows(Permission.MANAGE_KEYS):
        new_id = keyring.rotate(index=args.reindex)
        backup = str(keyring.save(path, overwrite=True))
        print(
            f"new current key {new_id} saved to {path} (previous keyring kept as {backup})",
            file=sys.stderr,
        )
    progress = Progress(0, label="rotating keys")
    batches = 0

    def step_done(step: str, rows: int) -> None:
        nonlocal batches
        batches += 1
        progress.label = f"rotating keys: {step} {rows:,} rows; batches done:"
        progress.update(batches)

    try:
        with open_repository(database_url(args), keyring, upgrade=False) as repo:
            view = access.view(repo)
            # A denied actor gets PermissionDenied from the view, audited, before anything runs.
            target = repo if view is None else view
            report = target.rotate_keys(
                batch_size=args.batch_size, reindex=args.reindex, progress=step_done
            )
    finally:
        progress.close()
    if args.format == "json":
        doc = {"new_key": new_id, "backup": backup, **attrs.asdict(report)}
        print(json.dumps(doc, indent=2))
    else:
        print(_rotation_summary(report))
    return EXIT_OK


def _rotation_summary(report: RotationReport) -> str:
    text = (
        f"current key {report.key_id}: {plural(report.rewrapped, 'data key')} re-wrapped, "
        f"{plural(report.orphans, 'waiting event')}, "
        f"{plural(report.dead_letters, 'dead letter')} and "
        f"{plural(report.evidence, 'retained consent evidence record')} re-encrypted "
        f"in {plural(report.batches, 'batch')}"
    )
    if report.reindexed:
        text += (
            f"; {plural(report.reindexed, 'blind index')} recomputed under {report.index_key_id}"
        )
    return text


def run_backfill_masks(args: argparse.Namespace) -> int:
    """Store the masked addresses of messages stored without one."""
    with repository(args, create=False) as repo:
        report = repo.backfill_masks(batch_size=args.batch_size)
    print(f"{plural(report.masked, 'masked address')} stored in {plural(report.batches, 'batch')}")
    return EXIT_OK
