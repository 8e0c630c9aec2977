"""``commhistory costs add|import|list``: campaign costs, for cost and ROI in reports.

* ``add`` records one cost: ``--id``, ``--campaign``, ``--amount``,
  ``--currency`` and its period, either ``--period`` (a day ``2024-05-01``, an
  ISO week ``2024-W18`` or a month ``2024-05``, the labels ``report`` uses) or
  ``--from``/``--until`` (``--until`` exclusive, as in ``report``); dates and
  times without an offset are in ``--tz``. ``--channel`` and ``--variant``
  narrow the cost to one channel or variant.
* ``import FILE`` records the costs of a JSON lines file, one object a line
  (``cost_id``, ``campaign_id``, ``amount`` as a string, ``currency``,
  ``starts_at``, ``ends_at``, optional ``channel`` and ``variant``). The file
  is checked whole first: one bad line refuses the file, naming the line and
  the field, and nothing is stored.
* ``list`` prints the recorded costs (``--campaign`` for one campaign).

Recording a cost id again with the same values is a duplicate (re-running an
import changes nothing); with other values it is refused. With an actor, the
guarded view checks ``write_history`` (add, import, audited) or
``read_metrics`` (list).

.. versionadded:: 0.4.0
"""

from __future__ import annotations

import argparse
import json
from datetime import date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from commhistory.cli._access import add_actor_options, resolve_access
from commhistory.cli._argtypes import time_zone
from commhistory.cli._exits import EXIT_OK, CommandError
from commhistory.cli._store_options import add_store_options
from commhistory.cli._text import plural, table
from commhistory.cli.store import repository
from commhistory.errors import InvalidInputError, PayloadError
from commhistory.kpi import Cost
from commhistory.kpi.report import period_start
from commhistory.normalize.time import format_timestamp, parse_timestamp
from commhistory.store import IngestReport

__all__ = ["cost_from_json", "period_bounds", "register"]

_FIELDS = frozenset(
    {"cost_id", "campaign_id", "amount", "currency", "starts_at", "ends_at", "channel", "variant"}
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``costs`` command and its subcommands."""
    top = subparsers.add_parser(
        "costs",
        help="record and list campaign costs (for cost and ROI in reports)",
        description="Record what campaigns cost, per campaign and optionally per channel or "
        "variant, over a period; `commhistory report` then shows cost, ROI, cost per "
        "conversion and revenue per recipient.",
    )
    sub = top.add_subparsers(dest="costs_command", metavar="SUBCOMMAND", required=True)

    add = sub.add_parser(
        "add",
        help="record one cost",
        description="Record one cost. The same --id with the same values again is a "
        "duplicate; with other values it is refused.",
    )
    add.add_argument("--id", required=True, dest="cost_id", help="the cost's unique id")
    add.add_argument("--campaign", required=True, help="the campaign id")
    add.add_argument("--amount", required=True, help="the amount, e.g. 1800 or 12.50")
    add.add_argument("--currency", required=True, help="ISO 4217 code, e.g. JPY")
    add.add_argument("--channel", default=None, help="only this channel's cost, e.g. email")
    add.add_argument("--variant", default=None, help="only this variant's cost")
    add.add_argument(
        "--period", default=None, metavar="LABEL", help="2024-05-01, 2024-W18 or 2024-05"
    )
    add.add_argument("--from", dest="start", default=None, metavar="WHEN", help="period start")
    add.add_argument("--until", default=None, metavar="WHEN", help="period end (exclusive)")
    add.add_argument(
        "--tz",
        type=time_zone,
        default=ZoneInfo("UTC"),
        metavar="ZONE",
        help="zone of --period and of --from/--until without an offset (default UTC)",
    )
    add.add_argument("--format", choices=("text", "json"), default="text", help="output format")
    add_store_options(add)
    add_actor_options(add)
    add.set_defaults(run=run_add)

    imp = sub.add_parser(
        "import",
        help="record the costs of a JSON lines file",
        description="Record the costs of a JSON lines file, one object a line. A bad line "
        "refuses the whole file (nothing is stored); re-importing a file changes nothing.",
    )
    imp.add_argument("file", metavar="FILE", help="the .jsonl file")
    imp.add_argument(
        "--tz",
        type=time_zone,
        default=None,
        metavar="ZONE",
        help="zone of timestamps without an offset (default: such timestamps are an error)",
    )
    imp.add_argument("--format", choices=("text", "json"), default="text", help="output format")
    add_store_options(imp)
    add_actor_options(imp)
    imp.set_defaults(run=run_import)

    lst = sub.add_parser("list", help="list the recorded costs", description="List costs.")
    lst.add_argument("--campaign", default=None, help="only this campaign's costs")
    lst.add_argument("--format", choices=("table", "json"), default="table", help="output format")
    add_store_options(lst)
    add_actor_options(lst)
    lst.set_defaults(run=run_list)


def period_bounds(label: str, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """Return ``[start, end)`` of a period label (day, ISO week or month) in *zone*.

    Raises:
        CommandError: The label is none of ``2024-05-01``, ``2024-W18``, ``2024-05``.
    """
    kind = "week" if "-W" in label else "day" if label.count("-") == 2 else "month"
    try:
        first = period_start(kind, label)
    except ValueError:
        raise CommandError(
            "--period: expected a day (2024-05-01), ISO week (2024-W18) or month (2024-05)"
        ) from None
    if kind == "day":
        after = first + timedelta(days=1)
    elif kind == "week":
        after = first + timedelta(days=7)
    else:
        after = date(first.year + first.month // 12, first.month % 12 + 1, 1)
    return _midnight(first, zone), _midnight(after, zone)


def _midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(), tzinfo=zone)


def _when(value: str, zone: ZoneInfo, option: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise CommandError(f"{option}: expected an ISO date or date-time") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=zone)


def _amount(value: object, *, field: str = "amount") -> Decimal:
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise PayloadError(field=field, reason="expected a decimal number as a string")
    try:
        return Decimal(str(value).strip())
    except InvalidOperation:
        raise PayloadError(field=field, reason="not a decimal number") from None


def cost_from_json(data: object, *, default_tz: ZoneInfo | None = None) -> Cost:
    """Build a :class:`~commhistory.kpi.Cost` from one JSON object of ``costs import``.

    Raises:
        InvalidInputError: A field is missing, unknown or invalid (named).
    """
    if not isinstance(data, dict):
        raise PayloadError(field="<line>", reason="expected a JSON object")
    unknown = sorted(k for k in data if k not in _FIELDS)
    if unknown:
        raise PayloadError(field="<line>", reason=f"{len(unknown)} unknown field(s)")
    for name in ("cost_id", "campaign_id", "amount", "currency", "starts_at", "ends_at"):
        if data.get(name) is None:
            raise PayloadError(field=name, reason="required")
    fields: dict[str, Any] = dict(data)
    fields["amount"] = _amount(data["amount"])
    for name in ("starts_at", "ends_at"):
        raw = data[name]
        if not isinstance(raw, str):
            raise PayloadError(field=name, reason="expected an ISO 8601 string")
        fields[name] = parse_timestamp(raw, default_tz=default_tz, field=name)
    return Cost(**fields)


def _report(report: IngestReport, fmt: str) -> None:
    if fmt == "json":
        print(json.dumps({"inserted": report.inserted, "duplicates": report.duplicates}))
    else:
        print(
            f"{plural(report.inserted, 'cost')} recorded, "
            f"{plural(report.duplicates, 'duplicate')} (already recorded)"
        )


def run_add(args: argparse.Namespace) -> int:
    """Record one cost."""
    zone: ZoneInfo = args.tz
    if args.period is not None:
        if args.start is not None or args.until is not None:
            raise CommandError("give --period, or --from and --until, not both")
        starts, ends = period_bounds(args.period, zone)
    elif args.start is not None and args.until is not None:
        starts = _when(args.start, zone, "--from")
        ends = _when(args.until, zone, "--until")
    else:
        raise CommandError("give the period: --period LABEL, or --from and --until")
    cost = Cost(
        cost_id=args.cost_id,
        campaign_id=args.campaign,
        amount=_amount(args.amount),
        currency=args.currency,
        starts_at=starts,
        ends_at=ends,
        channel=args.channel,
        variant=args.variant,
    )
    access = resolve_access(args)
    with repository(args, create=False) as repo:
        view = access.view(repo)
        report = (repo if view is None else view).record_costs([cost])
    _report(report, args.format)
    return EXIT_OK


def run_import(args: argparse.Namespace) -> int:
    """Record the costs of a JSON lines file, all or nothing."""
    costs: list[Cost] = []
    path = Path(args.file)
    with path.open(encoding="utf-8-sig") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                costs.append(cost_from_json(json.loads(line), default_tz=args.tz))
            except json.JSONDecodeError:
                raise CommandError(f"{path.name}, line {number}: not a JSON object") from None
            except InvalidInputError as exc:
                raise CommandError(
                    f"{path.name}, line {number}: {exc.field}: {exc.reason}; nothing was stored"
                ) from None
    access = resolve_access(args)
    with repository(args, create=False) as repo:
        view = access.view(repo)
        report = (repo if view is None else view).record_costs(costs)
    _report(report, args.format)
    return EXIT_OK


def _json(cost: Cost) -> dict[str, Any]:
    return {
        "cost_id": cost.cost_id,
        "campaign_id": cost.campaign_id,
        "channel": None if cost.channel is None else cost.channel.value,
        "variant": cost.variant,
        "amount": format(cost.amount, "f"),
        "currency": cost.currency,
        "starts_at": format_timestamp(cost.starts_at),
        "ends_at": format_timestamp(cost.ends_at),
    }


def run_list(args: argparse.Namespace) -> int:
    """List the recorded costs."""
    access = resolve_access(args)
    with repository(args, create=False) as repo:
        view = access.view(repo)
        costs = (repo if view is None else view).costs(campaign_id=args.campaign)
    if args.format == "json":
        print(json.dumps([_json(c) for c in costs], ensure_ascii=False, indent=2))
        return EXIT_OK
    if not costs:
        print("no costs")
        return EXIT_OK
    rows = [
        (
            c.cost_id,
            c.campaign_id,
            "-" if c.channel is None else c.channel.value,
            c.variant or "-",
            f"{c.currency} {format(c.amount, ',f')}",
            format_timestamp(c.starts_at),
            format_timestamp(c.ends_at),
        )
        for c in costs
    ]
    print(
        table(
            ("ID", "CAMPAIGN", "CHANNEL", "VARIANT", "AMOUNT", "FROM (UTC)", "UNTIL (UTC)"),
            rows,
            flex=[1, 0],
        )
    )
    print(plural(len(costs), "cost"))
    return EXIT_OK
