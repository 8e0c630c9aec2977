"""``commhistory validate FILE``: check a history file against the canonical model.

Streams the file, prints each bad line as ``LINE: field: reason`` and a summary
(or one JSON document with ``--format json``). Exits 0 when every line is valid,
1 when some are not, 2 on usage or input errors.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from typing import Any, Final

from commhistory.cli._exits import EXIT_OK, EXIT_REJECTED
from commhistory.cli._inputs import add_input_options, input_records
from commhistory.cli._text import plural

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
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Validate the file; returns the exit code."""
    text = args.format == "text"
    valid: Counter[str] = Counter()
    invalid = 0
    errors: list[dict[str, Any]] = []
    with input_records(args, label="validating") as (lines, progress):
        for parsed in lines:
            if parsed.record is not None:
                valid[type(parsed.record).__name__] += 1
                continue
            invalid += 1
            assert parsed.error is not None
            if text:
                progress.close()
                print(f"{parsed.line}: {parsed.error.field}: {parsed.error.reason}")
            elif len(errors) < MAX_JSON_ERRORS:
                errors.append(
                    {
                        "line": parsed.line,
                        "field": parsed.error.field,
                        "reason": parsed.error.reason,
                    }
                )
    total = sum(valid.values()) + invalid
    counts = {
        "messages": valid["Message"],
        "events": valid["Event"],
        "consent": valid["ConsentEvent"],
        "activities": valid["Activity"],
    }
    if text:
        kinds = ", ".join(
            [
                plural(counts["messages"], "message"),
                plural(counts["events"], "event"),
                f"{counts['consent']:,} consent",
            ]
            + (
                [plural(counts["activities"], "activity", "activities")]
                if counts["activities"]
                else []
            )
        )
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
