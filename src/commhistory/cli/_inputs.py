"""The input file of ``validate`` and ``import``: its options, and reading it."""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import attrs

from commhistory.cli._argtypes import (
    add_region_option,
    column_mapping,
    region_of,
    time_zone,
)
from commhistory.cli._exits import CommandError
from commhistory.cli._progress import Progress
from commhistory.convert import KINDS, ParsedLine, check_records, read_records


def add_input_options(parser: argparse.ArgumentParser, *, file_help: str) -> None:
    """Add ``FILE`` and the options that say how to read it (``validate``, ``import``)."""
    parser.add_argument("file", metavar="FILE", help=file_help)
    parser.add_argument(
        "--map",
        dest="mapping",
        metavar="COLUMN=FIELD",
        type=column_mapping,
        action="append",
        default=[],
        help="CSV: read COLUMN as FIELD (FIELD may be metadata.KEY; empty ignores the column)",
    )
    parser.add_argument(
        "--map-file",
        default=None,
        metavar="FILE",
        help="CSV: a JSON object {COLUMN: FIELD} kept with your export (--map adds to it)",
    )
    parser.add_argument(
        "--tz",
        type=time_zone,
        default=None,
        metavar="ZONE",
        help="time zone for timestamps without an offset, e.g. Asia/Tokyo",
    )
    parser.add_argument(
        "--kind",
        choices=sorted(KINDS),
        default=None,
        help="CSV: the record kind of rows without a 'kind' column (default message)",
    )
    parser.add_argument(
        "--encoding", default="utf-8-sig", help="text encoding, e.g. cp932 (default utf-8)"
    )
    add_region_option(parser)


@contextmanager
def input_records(
    args: argparse.Namespace, *, label: str, counts: dict[str, int] | None = None
) -> Iterator[tuple[Iterator[ParsedLine], Progress]]:
    """Check the input options and stream the file's parsed lines with a progress bar.

    With *counts* (``validate``), lines known to be valid without building their
    record are only counted there by record class name
    (:func:`~commhistory.convert.check_records`), not yielded.

    Yields:
        The parsed lines (read lazily) and the progress bar drawing as they are read.

    Raises:
        CommandError: The file is missing, ``--map`` is given for a non-CSV file, or
            the encoding is unknown.
    """
    path = args.file
    if not os.path.isfile(path):
        raise CommandError(f"no such file: {path}")
    mapping = {**load_map_file(args.map_file), **dict(args.mapping)}
    if mapping and not path.lower().endswith((".csv", ".tsv")):
        raise CommandError("--map applies to .csv files only")
    region = region_of(args)
    progress = Progress(os.path.getsize(path), label=label)
    read = read_records if counts is None else functools.partial(check_records, counts=counts)
    lines = read(
        path,
        default_tz=args.tz,
        mapping=mapping,
        kind=args.kind,
        encoding=args.encoding,
        progress=progress.update,
        region=region,
    )
    undecodable = _Count()
    try:
        yield _noting_undecodable(lines, undecodable), progress
    except LookupError:
        raise CommandError(f"--encoding: unknown encoding {args.encoding!r}") from None
    finally:
        progress.close()
    if undecodable.lines:
        first = undecodable.first
        print(
            f"{path}: {undecodable.lines} line(s) cannot be decoded as {args.encoding} "
            f"(the first: line {first}); give the file's encoding with --encoding, "
            "e.g. --encoding cp932 for a sheet saved by older Japanese Excel",
            file=sys.stderr,
        )


@attrs.define
class _Count:
    lines: int = 0
    first: int = 0


def _noting_undecodable(lines: Iterator[ParsedLine], count: _Count) -> Iterator[ParsedLine]:
    """Pass the lines on, counting those that are not text in the given encoding."""
    for parsed in lines:
        error = parsed.error
        if error is not None and error.reason.startswith("cannot be decoded as"):
            count.lines += 1
            count.first = count.first or parsed.line
        yield parsed


def load_map_file(path: str | None) -> dict[str, str]:
    """Read a ``--map-file``: a JSON object of column names to fields.

    Raises:
        CommandError: The file is missing or is not such an object.
    """
    if path is None:
        return {}
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except OSError as exc:
        raise CommandError(f"--map-file: cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise CommandError(f"--map-file: {path} is not JSON: {exc}") from None
    if not isinstance(doc, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in doc.items()
    ):
        raise CommandError(f"--map-file: {path} must hold an object of COLUMN: FIELD strings")
    return dict(doc)
