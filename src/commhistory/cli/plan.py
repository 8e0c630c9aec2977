"""``commhistory plan-send``: who to message now, later, or not, for a segment or a list.

The candidates are a segment (``plan-send SEGMENT.json``: a condition tree, as
``commhistory segment count`` reads it, evaluated at the plan's instant) or
contact ids (``--contacts FILE``: one per line; ``-`` for standard input; blank
lines and lines starting with ``#`` are skipped). It plans the send with
:func:`commhistory.segments.planning.plan_send` and prints one row per
candidate: its id, ``send``, ``defer`` or ``exclude``, the reason and, for a
deferred send, when. Only contact ids are printed, never an address, so the
command needs ``read_history_masked`` and is not audited (nothing is
decrypted). ``--config`` names a JSON file of caps, quiet hours and zones
(see ``docs/planning.md``).

.. versionadded:: 0.4.0
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING

from commhistory.cli._access import add_actor_options, resolve_access
from commhistory.cli._exits import EXIT_OK, CommandError
from commhistory.cli._store_options import add_store_options
from commhistory.cli._text import plural, table
from commhistory.cli.segment import read_tree
from commhistory.cli.store import repository
from commhistory.criteria import Criteria
from commhistory.model import Channel, Purpose
from commhistory.normalize.time import parse_timestamp
from commhistory.segments.planning import PlanConfig, load_plan_config

if TYPE_CHECKING:
    from commhistory.segments.planning import SendPlan

__all__ = ["read_ids", "register", "run_plan_send"]

_COLUMNS = ("contact_id", "decision", "reason", "until")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``plan-send`` command."""
    plan = subparsers.add_parser(
        "plan-send",
        help="split contacts into send now, deferred and excluded (consent, caps, quiet hours)",
        description="Plan a send to a segment's members or a list of contacts: consent and "
        "suppression always apply; frequency caps and quiet hours come from --config, in "
        "each contact's zone. Prints contact ids only.",
    )
    plan.add_argument(
        "segment",
        nargs="?",
        default=None,
        metavar="SEGMENT",
        help="a segment's condition tree (.json, or .yaml with PyYAML) whose members are "
        "the candidates",
    )
    plan.add_argument(
        "--contacts",
        default=None,
        metavar="FILE",
        help="or: candidate contact ids, one per line ('-' for standard input)",
    )
    plan.add_argument(
        "--channel", required=True, choices=[c.value for c in Channel], help="the channel"
    )
    plan.add_argument(
        "--purpose", required=True, choices=[p.value for p in Purpose], help="the purpose"
    )
    plan.add_argument(
        "--at", default=None, metavar="TIME", help="plan for this ISO 8601 instant (default now)"
    )
    plan.add_argument(
        "--config",
        default=None,
        metavar="FILE",
        help="JSON file of frequency caps, quiet hours and zones (see docs/planning.md)",
    )
    plan.add_argument(
        "--format",
        choices=("table", "json", "csv"),
        default="table",
        help="output format (default table)",
    )
    add_store_options(plan)
    add_actor_options(plan, purpose_flag=False)
    plan.set_defaults(run=run_plan_send)


def read_ids(lines: Iterable[str]) -> list[str]:
    """The contact ids of a candidates file: stripped, blank and ``#`` lines skipped."""
    out = []
    for line in lines:
        text = line.strip()
        if text and not text.startswith("#"):
            out.append(text)
    return out


def _candidates(path: str) -> list[str]:
    if path == "-":
        return read_ids(sys.stdin)
    with open(path, encoding="utf-8") as fh:
        return read_ids(fh)


def run_plan_send(args: argparse.Namespace) -> int:
    """Plan the send and print it (ids only)."""
    at = None if args.at is None else parse_timestamp(args.at, field="--at")
    config = PlanConfig() if args.config is None else load_plan_config(args.config)
    if (args.segment is None) == (args.contacts is None):
        raise CommandError("give a SEGMENT file or --contacts FILE (one of them)")
    ids: list[str] | Criteria
    if args.segment is not None:
        ids = read_tree(args.segment)
    else:
        ids = _candidates(args.contacts)
        if not ids:
            raise CommandError(f"{args.contacts}: no contact ids")
    access = resolve_access(args)
    with repository(args, create=False) as repo:
        view = access.view(repo)
        if view is None:
            plan = repo.plan_send(
                ids, channel=args.channel, purpose=args.purpose, at=at, config=config,
                addresses=False,
            )  # fmt: skip
        else:
            plan = view.plan_send(
                ids, channel=args.channel, purpose=args.purpose, at=at, config=config,
                addresses=False,
            )  # fmt: skip
    _print(plan, args.format)
    return EXIT_OK


def _print(plan: SendPlan, fmt: str) -> None:
    if fmt == "json":
        print(json.dumps(plan.to_dict(), ensure_ascii=False, indent=2))
        return
    rows = plan.rows()
    if fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(_COLUMNS)
        for row in rows:
            writer.writerow([row[c] or "" for c in _COLUMNS])
        return
    counts = plan.counts()
    summary = ", ".join(f"{name} {n}" for name, n in counts.items() if n)
    print(
        f"{plan.channel.value}/{plan.purpose.value} at {plan.at.isoformat()}: "
        f"{plural(len(rows), 'contact')} ({summary or 'none'})"
    )
    print(
        table(
            _COLUMNS,
            [[row[c] or "-" for c in _COLUMNS] for row in rows],
            flex=[0],
        )
    )
