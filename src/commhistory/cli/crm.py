"""``crm-import``: contacts, attributes and opt-outs from HubSpot or Salesforce.

``commhistory crm-import --preset hubspot contacts.csv`` declares the
preset's attributes, stores each row as a contact update (personal values
encrypted) and each true opt-out column as a consent withdrawal, and keeps a
refused row as a dead letter. ``--map-file F`` uses a mapping file instead
of a preset (see ``docs/crm.md``).

Incremental: the newest last-modified time committed is kept in a state file
(``--state``; for a SQLite database, ``<database file>.crm-state.json`` by
default), one watermark per CRM, written after each committed batch. A rerun
reads rows modified at or after it; ``--full`` ignores it, ``--since`` replaces it.

``commhistory crm-import --api hubspot`` (or ``--api salesforce``) reads the
CRM's REST API instead of a file, page by page, committing each page before
the next; the credentials come from the environment (``COMMHISTORY_HUBSPOT_TOKEN``,
``COMMHISTORY_SALESFORCE_*``: see ``docs/crm.md``) and are never printed. The
API's watermark is kept as ``<crm>:api`` in the same state file.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterable
from contextlib import AbstractContextManager, ExitStack
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
from commhistory.contacts.crm import (
    PRESETS,
    CrmMapping,
    CrmSource,
    ExportSource,
    import_source,
)
from commhistory.contacts.crm_api import API_NAMES, source_from_env
from commhistory.convert import ParsedLine
from commhistory.normalize.time import parse_timestamp

__all__ = ["load_state", "register", "save_state", "state_path"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``crm-import``."""
    parser = subparsers.add_parser(
        "crm-import",
        help="import contacts, attributes and opt-outs from a HubSpot or Salesforce export or API",
        description="Import a CRM's contacts from its export (CSV) or its REST API: "
        "attributes (personal ones encrypted), opt-outs as consent withdrawals, bad rows "
        "as dead letters. Incremental: rows modified before the kept watermark are skipped.",
    )
    parser.add_argument("file", metavar="FILE", nargs="?", help="the CSV export (not with --api)")
    parser.add_argument(
        "--api",
        choices=API_NAMES,
        help="read the CRM's REST API instead of a file (credentials from the environment)",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--preset", choices=PRESETS, help="a shipped mapping (with --api: the API's; the default)"
    )
    source.add_argument("--map-file", metavar="F", help="a JSON mapping file")
    parser.add_argument(
        "--state",
        default=None,
        metavar="PATH",
        help="the watermark file (default for SQLite: <database>.crm-state.json)",
    )
    parser.add_argument("--full", action="store_true", help="ignore the watermark")
    parser.add_argument(
        "--since",
        metavar="TIME",
        help="read rows modified at or after TIME (ISO 8601) instead of the kept watermark",
    )
    parser.add_argument(
        "--region", default="JP", help="region of national phone numbers (default JP)"
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=500,
        help="rows per transaction (default 500; an API page is split into batches this big)",
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


def _mapping(args: argparse.Namespace) -> CrmMapping:
    if args.map_file:
        return CrmMapping.load(args.map_file)
    if args.api:
        preset = args.preset or args.api
        if preset != args.api:
            raise CommandError(f"--preset {preset} does not read the {args.api} API")
        return CrmMapping.preset(preset, api=True)
    if not args.preset:
        raise CommandError("give --preset or --map-file")
    return CrmMapping.preset(args.preset)


def run(args: argparse.Namespace) -> int:
    """Import the export or the API; exit 1 when rows were refused (kept as dead letters)."""
    if args.batch_size < 1:
        raise CommandError("--batch-size must be at least 1")
    if (args.file is None) == (args.api is None):
        raise CommandError("give either FILE or --api")
    mapping = _mapping(args)
    key = f"{mapping.crm}:api" if args.api else mapping.crm
    path = state_path(args)
    state = load_state(path)
    since: datetime | None = None
    if args.since:
        since = parse_timestamp(args.since, field="--since")
    elif not args.full and key in state:
        since = parse_timestamp(state[key], field="state")

    def keep(watermark: datetime) -> None:
        if path is not None:
            state[key] = watermark.isoformat().replace("+00:00", "Z")
            save_state(path, state)

    access = resolve_access(args, audited=Permission.WRITE_HISTORY)
    label = args.file or f"{args.api} api"
    with ExitStack() as stack:
        crm_source: CrmSource
        if args.api:
            crm_source = source_from_env(args.api, os.environ)
        else:
            handle = stack.enter_context(open(args.file, encoding=args.encoding, newline=""))
            crm_source = ExportSource(handle, name=os.path.basename(args.file))
        repo = stack.enter_context(repository(args, create=False))
        view = access.view(repo)
        target: Any = repo if view is None else _Target(view, repo)
        report = import_source(
            target,
            mapping,
            crm_source,
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
                {"line": e.line, "column": e.field, "reason": e.reason}
                | ({"record": e.record} if e.record is not None else {})
                for e in report.errors
            ],
        }
        print(json.dumps(doc, indent=2, ensure_ascii=False))
    else:
        print(
            f"{label}: {plural(report.rows, 'row')}: {report.imported} imported, "
            f"{report.skipped} skipped (before the watermark), {report.rejected} rejected; "
            f"{plural(report.withdrawals, 'opt-out')}; watermark {watermark or 'none'}"
        )
        for e in report.errors[:10]:
            where = f"line {e.line}" if e.record is None else f"row {e.line} (record {e.record})"
            print(f"  {where}: {e.field}: {e.reason}")
    return EXIT_REJECTED if report.rejected else EXIT_OK
