"""Segment commands: ``segment count|list|explain FILE.json`` and saved segments.

``count`` prints how many contacts a condition tree keeps; ``list`` prints
their contact ids (pseudonymous, one a line; audited as ``segment_members``);
``explain`` prints the tree, each node with how many contacts it keeps alone
and cumulatively. FILE is a JSON condition tree (see ``docs/segments.md``), a
YAML one when PyYAML is installed (``.yaml``/``.yml``), or ``-`` for standard
input. A tree that is not valid, or does not fit the declared attributes, is a
usage error (exit 2) naming the JSON path.

``save NAME FILE`` stores the tree as the next version of a saved segment;
``snapshot NAME`` stores its membership now (or ``--at``); ``delta NAME``
prints who entered and who left between its last two snapshots.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from commhistory.audit import Permission
from commhistory.cli._access import add_actor_options, resolve_access
from commhistory.cli._exits import EXIT_OK, CommandError
from commhistory.cli._store_options import add_store_options
from commhistory.cli._text import plural
from commhistory.cli.store import repository
from commhistory.criteria import Criteria, load_yaml, loads
from commhistory.normalize.time import parse_timestamp
from commhistory.store.segments import ExplainNode

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``segment count|list|explain|save|snapshot|delta``."""
    parser = subparsers.add_parser(
        "segment",
        help="count, list or explain a segment (a JSON condition tree); saved segments",
        description="Evaluate a segment's condition tree in the database: how many "
        "contacts it keeps, their (pseudonymous) ids, or the count of every condition.",
    )
    commands = parser.add_subparsers(dest="segment_command", metavar="ACTION")
    commands.required = True
    helps = {
        "count": "how many contacts the tree keeps",
        "list": "the contact ids the tree keeps, one a line (audited)",
        "explain": "the tree, each condition with how many contacts it keeps",
    }
    for name, text in helps.items():
        sub = commands.add_parser(name, help=text, description=text.capitalize() + ".")
        sub.add_argument("file", metavar="FILE", help="the condition tree (.json, .yaml, -)")
        _common(sub)
        sub.set_defaults(run=_RUNS[name])
    save = commands.add_parser(
        "save",
        help="save FILE as the next version of segment NAME",
        description="Save the tree of FILE as the next version of segment NAME (the same "
        "tree again keeps its version). Audited (segment.save).",
    )
    save.add_argument("name", metavar="NAME", help="the segment's name")
    save.add_argument("file", metavar="FILE", help="the condition tree (.json, .yaml, -)")
    _common(save, at=False)
    save.set_defaults(run=run_save)
    snap = commands.add_parser(
        "snapshot",
        help="store segment NAME's members now (or --at)",
        description="Evaluate saved segment NAME (its latest version, or --version) and store "
        "its members as a snapshot. Audited (segment.snapshot).",
    )
    snap.add_argument("name", metavar="NAME", help="the segment's name")
    snap.add_argument(
        "--version", type=int, default=None, help="a saved version (default: latest)"
    )
    _common(snap)
    snap.set_defaults(run=run_snapshot)
    delta = commands.add_parser(
        "delta",
        help="who entered and left NAME in its last snapshots",
        description="Print the contact ids that entered (+) and left (-) saved segment NAME "
        "between its last two snapshots. Audited (segment_delta).",
    )
    delta.add_argument("name", metavar="NAME", help="the segment's name")
    _common(delta, at=False)
    delta.set_defaults(run=run_delta)


def _common(sub: argparse.ArgumentParser, *, at: bool = True) -> None:
    if at:
        sub.add_argument(
            "--at", default=None, metavar="TIME", help="evaluate at this ISO 8601 instant"
        )
    sub.add_argument(
        "--format", choices=("text", "json"), default="text", help="output format (default text)"
    )
    add_store_options(sub)
    add_actor_options(sub)


def read_tree(path: str) -> Criteria:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise CommandError(f"{path}: cannot read ({exc.strerror or type(exc).__name__})") from exc
    if path.endswith((".yaml", ".yml")):
        try:
            return load_yaml(text)
        except ModuleNotFoundError as exc:
            raise CommandError("YAML segment files need PyYAML (pip install pyyaml)") from exc
    return loads(text)


def _at(args: argparse.Namespace) -> Any:
    value = getattr(args, "at", None)
    return None if value is None else parse_timestamp(value, field="--at")


def run_count(args: argparse.Namespace) -> int:
    """Print the segment's size."""
    tree, at = read_tree(args.file), _at(args)
    access = resolve_access(args)
    with repository(args, create=False) as repo:
        view = access.view(repo)
        n = (repo if view is None else view).segment_count(tree, at=at)
    print(json.dumps({"count": n}) if args.format == "json" else n)
    return EXIT_OK


def run_list(args: argparse.Namespace) -> int:
    """Print the segment's contact ids, one a line."""
    tree, at = read_tree(args.file), _at(args)
    access = resolve_access(args, audited=Permission.READ_HISTORY_MASKED)
    with repository(args, create=False) as repo:
        view = access.view(repo)
        ids = (repo if view is None else view).segment_members(tree, at=at)
    if args.format == "json":
        print(json.dumps({"count": len(ids), "contact_ids": ids}, indent=2))
    else:
        for cid in ids:
            print(cid)
    return EXIT_OK


def _node_json(node: ExplainNode) -> dict[str, Any]:
    return {
        "path": node.path,
        "condition": node.label,
        "kept": node.kept,
        "cumulative": node.cumulative,
        "children": [_node_json(c) for c in node.children],
    }


def run_explain(args: argparse.Namespace) -> int:
    """Print the tree with the counts of every node."""
    tree, at = read_tree(args.file), _at(args)
    access = resolve_access(args)
    with repository(args, create=False) as repo:
        view = access.view(repo)
        explained = (repo if view is None else view).segment_explain(tree, at=at)
    if args.format == "json":
        print(json.dumps(_node_json(explained), indent=2, ensure_ascii=False))
    else:
        print("\n".join(explained.lines()))
    return EXIT_OK


def run_save(args: argparse.Namespace) -> int:
    """Save a new version of a segment."""
    tree = read_tree(args.file)
    access = resolve_access(args, audited=Permission.WRITE_HISTORY)
    with repository(args, create=False) as repo:
        view = access.view(repo)
        saved = (repo if view is None else view).save_segment(args.name, tree)
    if args.format == "json":
        print(json.dumps({"name": saved.name, "version": saved.version}))
    else:
        print(f"segment {saved.name} version {saved.version}")
    return EXIT_OK


def run_snapshot(args: argparse.Namespace) -> int:
    """Store a membership snapshot of a saved segment."""
    access = resolve_access(args, audited=Permission.WRITE_HISTORY)
    with repository(args, create=False) as repo:
        view = access.view(repo)
        info = (repo if view is None else view).segment_snapshot(
            args.name, version=args.version, at=_at(args)
        )
    if args.format == "json":
        print(json.dumps({"snapshot_id": info.snapshot_id, "name": info.name,
                          "version": info.version, "size": info.size}))  # fmt: skip
    else:
        print(
            f"snapshot {info.snapshot_id} of {info.name} version {info.version}: "
            f"{plural(info.size, 'contact')}"
        )
    return EXIT_OK


def run_delta(args: argparse.Namespace) -> int:
    """Print who entered and who left between the last two snapshots."""
    access = resolve_access(args, audited=Permission.READ_HISTORY_MASKED)
    with repository(args, create=False) as repo:
        view = access.view(repo)
        d = (repo if view is None else view).segment_delta(args.name)
    if args.format == "json":
        print(json.dumps({"entered": list(d.entered), "left": list(d.left)}, indent=2))
    else:
        for cid in d.entered:
            print(f"+ {cid}")
        for cid in d.left:
            print(f"- {cid}")
    return EXIT_OK


_RUNS = {"count": run_count, "list": run_list, "explain": run_explain}
