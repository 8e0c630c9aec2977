"""``commhistory validate FILE``: check a history file against the canonical model.

Streams the file, prints each bad line as ``LINE: field: reason`` and a summary
(or one JSON document with ``--format json``). Exits 0 when every line is valid,
1 when some are not, 2 on usage or input errors. With ``--schema FILE`` the
attributes of ``contact`` lines are also checked against that attribute schema
(without it, only their shape is: the declared schema lives in the database).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from typing import TYPE_CHECKING, Any, Final

from commhistory.cli._exits import EXIT_OK, EXIT_REJECTED
from commhistory.cli._inputs import add_input_options, input_records
from commhistory.cli._text import plural
from commhistory.errors import InvalidInputError
from commhistory.model import ContactUpdate

if TYPE_CHECKING:
    from commhistory.contacts import AttributeSchema

MAX_JSON_ERRORS: Final = 1000
"""How many line errors ``--format json`` lists before it only counts them."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``validate`` command."""
    parser = subparsers.add_parser(
        "validate",
        help="check a .jsonl or .csv history file against the record model",
        description=(
            "Check every line of a canonical .jsonl file or a legacy .csv sheet. "
            "Bad lines are reported as 'LINE: field: reason'."
        ),
    )
    add_input_options(parser, file_help="a .jsonl (canonical) or .csv file")
    parser.add_argument(
        "--format", choices=("text", "json"), default="text", help="output format (default text)"
    )
    parser.add_argument(
        "--schema",
        default=None,
        metavar="FILE",
        help="check contact lines' attributes against this attribute schema (JSON)",
    )
    parser.set_defaults(run=run)


def _load_schema(path: str) -> AttributeSchema:
    # Imported here: the contacts package brings the store (SQLAlchemy), which
    # checking a file does not otherwise need.
    from commhistory.contacts import AttributeSchema  # noqa: PLC0415 - start-up

    return AttributeSchema.load(path)


def run(args: argparse.Namespace) -> int:
    """Validate the file; returns the exit code."""
    text = args.format == "text"
    valid: Counter[str] = Counter()
    invalid = 0
    errors: list[dict[str, Any]] = []
    schema = None if args.schema is None else _load_schema(args.schema)
    fast: dict[str, int] = {}  # lines known valid without building their records
    with input_records(args, label="validating", counts=fast) as (lines, progress):
        for parsed in lines:
            error = parsed.error
            if parsed.record is not None:
                if schema is None or not isinstance(parsed.record, ContactUpdate):
                    valid[type(parsed.record).__name__] += 1
                    continue
                try:
                    schema.validate(parsed.record)
                except InvalidInputError as exc:
                    error = exc
                else:
                    valid["ContactUpdate"] += 1
                    continue
            invalid += 1
            assert error is not None
            if text:
                progress.close()
                print(f"{parsed.line}: {error.field}: {error.reason}")
            elif len(errors) < MAX_JSON_ERRORS:
                errors.append({"line": parsed.line, "field": error.field, "reason": error.reason})
    valid.update(fast)
    total = sum(valid.values()) + invalid
    counts = {
        "messages": valid["Message"],
        "events": valid["Event"],
        "consent": valid["ConsentEvent"],
        "activities": valid["Activity"],
        "contacts": valid["ContactUpdate"],
    }
    if text:
        parts = [
            plural(counts["messages"], "message"),
            plural(counts["events"], "event"),
            f"{counts['consent']:,} consent",
        ]
        if counts["activities"]:
            parts.append(plural(counts["activities"], "activity", "activities"))
        if counts["contacts"]:
            parts.append(plural(counts["contacts"], "contact update"))
        kinds = ", ".join(parts)
        print(
            f"{args.file}: {plural(total, 'record')}, {total - invalid:,} valid ({kinds}), "
            f"{invalid:,} invalid",
            file=sys.stdout,
        )
    else:
        summary = {
            "file": args.file,
            "records": total,
            "valid": total - invalid,
            "invalid": invalid,
            "by_kind": counts,
            "errors": errors,
            "errors_truncated": invalid > len(errors),
        }
        print(json.dumps(summary, ensure_ascii=False, indent=2))
    return EXIT_REJECTED if invalid else EXIT_OK
