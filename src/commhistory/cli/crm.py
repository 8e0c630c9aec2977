"""``crm-import``: contacts, attributes and opt-outs from a HubSpot or Salesforce CSV export.

``commhistory crm-import --preset hubspot contacts.csv`` declares the
preset's attributes, stores each row as a contact update (personal values
encrypted) and each true opt-out column as a consent withdrawal, and keeps a
refused row as a dead letter. ``--map-file F`` uses a mapping file instead
of a preset (see ``docs/crm.md``).

Incremental: the newest last-modified time committed is kept in a state file
(``--state``; for a SQLite database, ``<database file>.crm-state.json`` by
default), one watermark per CRM, written after each committed batch. A rerun
reads rows modified at or after it; ``--full`` ignores it.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterable
from contextlib import AbstractContextManager
from datetime import datetime
from pathlib import Path
from typing import Any

from commhistory.audit import Permission
from commhistory.cli._access import add_actor_options, resolve_access
from commhistory.cli._exits import EXIT_OK, EXIT_REJECTED, CommandError
from commhistory.cli._store_options import add_store_options, database_url
from commhistory.cli._text import plural
from commhistory.cli.store import repository
from commhistory.contacts.attributes import AttributeSchema
from commhistory.contacts.crm import PRESETS, CrmMapping, import_rows, read_export
from commhistory.convert import ParsedLine
from commhistory.normalize.time import parse_timestamp

__all__ = ["load_state", "register", "save_state", "state_path"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``crm-import``."""
    parser = subparsers.add_parser(
        "crm-import",
        help="import contacts, attributes and opt-outs from a HubSpot or Salesforce export",
        description="Import a CRM contacts export (CSV): attributes (personal ones "
        "encrypted), opt-outs as consent withdrawals, bad rows as dead letters. "
        "Incremental: rows modified before the kept watermark are skipped.",
    )
    parser.add_argument("file", metavar="FILE", help="the CSV export")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--preset", choices=PRESETS, help="a shipped mapping")
    source.add_argument("--map-file", metavar="F", help="a JSON mapping file")
    parser.add_argument(
        "--state",
        default=None,
        metavar="PATH",
        help="the watermark file (default for SQLite: <database>.crm-state.json)",
    )
    parser.add_argument("--full", action="store_true", help="ignore the watermark")
    parser.add_argument(
        "--region", default="JP", help="region of national phone numbers (default JP)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=500, help="rows per transaction (default 500)"
    )
    parser.add_argument(
        "--encoding", default="utf-8-sig", help="file encoding (default utf-8-sig)"
    )
    parser.add_argument(
        "--format", choices=("text", "json"), default="text", help="output format (default text)"
    )
    add_store_options(parser)
    add_actor_options(parser)
    parser.set_defaults(run=run)


def state_path(args: argparse.Namespace) -> Path | None:
    """The watermark file: ``--state``, else next to a SQLite database file, else none."""
    if args.state:
        return Path(args.state)
    url = database_url(args)
    prefix = "sqlite:///"
    if url.startswith(prefix) and ":memory:" not in url:
        return Path(url[len(prefix) :] + ".crm-state.json")
    return None


def load_state(path: Path | None) -> dict[str, str]:
    """Read the watermarks (``{crm: ISO time}``); empty when the file does not exist.

    Raises:
        CommandError: The file is not a JSON object of strings.
    """
    if path is None or not path.exists():
        return {}
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        raise CommandError(f"{path}: not a JSON state file") from None
    if not isinstance(obj, dict) or not all(isinstance(v, str) for v in obj.values()):
        raise CommandError(f"{path}: expected {{crm: time}}")
    return obj


def save_state(path: Path, state: dict[str, str]) -> None:
    """Write the watermarks atomically (a temporary file, then a rename)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


class _Target:
    """A guarded view's audited calls, in the facade's transactions."""

    def __init__(self, view: Any, repo: Any) -> None:
        self._view = view
        self._repo = repo

    def declare_attributes(self, schema: AttributeSchema) -> AttributeSchema:
        result: AttributeSchema = self._view.declare_attributes(schema)
        return result

    def ingest(self, lines: Iterable[ParsedLine], *, source: str) -> Any:
        return self._view.ingest(lines, source=source)

    def transaction(self, *, read: bool = False) -> AbstractContextManager[object]:
        result: AbstractContextManager[object] = self._repo.transaction(read=read)
        return result


def run(args: argparse.Namespace) -> int:
    """Import the export; exit 1 when rows were refused (kept as dead letters)."""
    if args.batch_size < 1:
        raise CommandError("--batch-size must be at least 1")
    mapping = CrmMapping.preset(args.preset) if args.preset else CrmMapping.load(args.map_file)
    path = state_path(args)
    state = load_state(path)
    since: datetime | None = None
    if not args.full and mapping.crm in state:
        since = parse_timestamp(state[mapping.crm], field="state")

    def keep(watermark: datetime) -> None:
        if path is not None:
            state[mapping.crm] = watermark.isoformat().replace("+00:00", "Z")
            save_state(path, state)

    access = resolve_access(args, audited=Permission.WRITE_HISTORY)
    with (
        open(args.file, encoding=args.encoding, newline="") as handle,
        repository(args, create=False) as repo,
    ):
        view = access.view(repo)
        target: Any = repo if view is None else _Target(view, repo)
        report = import_rows(
            target,
            mapping,
            read_export(handle),
            source=os.path.basename(args.file),
            since=since,
            batch_size=args.batch_size,
            region=args.region,
            on_commit=keep,
        )
    watermark = None if report.watermark is None else report.watermark.isoformat()
    if args.format == "json":
        doc = {
            "crm": mapping.crm,
            "rows": report.rows,
            "imported": report.imported,
            "skipped": report.skipped,
            "rejected": report.rejected,
            "withdrawals": report.withdrawals,
            "watermark": watermark,
            "errors": [
                {"line": e.line, "column": e.field, "reason": e.reason} for e in report.errors
            ],
        }
        print(json.dumps(doc, indent=2, ensure_ascii=False))
    else:
        print(
            f"{args.file}: {plural(report.rows, 'row')}: {report.imported} imported, "
            f"{report.skipped} skipped (before the watermark), {report.rejected} rejected; "
            f"{plural(report.withdrawals, 'opt-out')}; watermark {watermark or 'none'}"
        )
        for e in report.errors[:10]:
            print(f"  line {e.line}: {e.field}: {e.reason}")
    return EXIT_REJECTED if report.rejected else EXIT_OK
