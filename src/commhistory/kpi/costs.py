"""Campaign costs in KPI tables: which row a cost belongs to, and ROI.

:func:`attribute_costs` adds costs (summed by the store's
:class:`~commhistory.store.costs.CostStore`, or in memory by
:func:`~commhistory.store.costs.total_costs`) to a :class:`KpiTable`. Both
engines (:func:`commhistory.kpi.compute` and ``repo.kpis``) call it with the
same totals, so they give the same numbers. The figures themselves are
properties of :class:`~commhistory.kpi.KpiRow`: ``cost``, ``roi``,
``cost_per_conversion`` and ``revenue_per_recipient``.

The rules (nothing is ever split or allocated):

* **Level.** A cost is shown at the level it was recorded at and above, never
  below. A cost recorded for a campaign (no channel, no variant) is in the row of
  its campaign when the table is grouped by ``campaign_id`` (or a period), but in
  no row of a table grouped by ``channel`` or ``variant``: it goes to
  :attr:`KpiTable.unattributed_cost`, which :meth:`KpiTable.total` includes.
  A cost recorded per channel adds up into its campaign's row; a table grouped by
  ``provider`` or ``purpose`` shows no cost in its rows (costs have neither).
* **Period.** In a table grouped by ``day``, ``week`` or ``month``, a cost is in
  a row only when its whole period lies in that one period (in the table's time
  zone); a cost for May is in the row of May, and in no row of a daily table.
* **Range.** With ``since``/``until``, a cost counts when its period lies inside
  ``[since, until)``. One that straddles a bound is counted nowhere and only
  counted in :attr:`KpiTable.costs_outside_range`.
* **Groups without messages.** A table has rows only for groups with sent
  messages; the cost of a campaign (or channel, variant, period) that sent
  nothing in range is unattributed.
* **Currencies** are never mixed: costs, ROI and cost per conversion are per
  currency; ROI is ``None`` for a currency whose cost is unknown or zero.

.. versionadded:: 0.4.0
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import attrs

from commhistory.kpi.metrics import (
    PERIODS,
    KpiRow,
    KpiTable,
    check_tz,
    micros_to_decimal,
    period_label,
)
from commhistory.store.costs import CostTotal
from commhistory.store.kpi import local_day

__all__ = ["attribute_costs", "cost_key"]

_LAST = timedelta(microseconds=1)
_COST_KEYS = ("campaign_id", "channel", "variant")


def cost_key(
    total: CostTotal, by: tuple[str, ...], zone: ZoneInfo
) -> tuple[str | None, ...] | None:
    """Return the group key a cost belongs to in a table grouped *by*, or ``None``.

    ``None`` when the cost was recorded above the table's level (no channel in
    a table grouped by channel), for a key costs do not have (provider,
    purpose), or over a period longer than one of the table's periods.
    """
    out: list[str | None] = []
    for key in by:
        if key in PERIODS:
            first = period_label(key, local_day(total.starts_at, zone))
            last = period_label(key, local_day(total.ends_at - _LAST, zone))
            if first != last:
                return None
            out.append(first)
        elif key in _COST_KEYS:
            value = getattr(total, key)
            if value is None:
                return None
            out.append(value)
        else:
            return None
    return tuple(out)


def _inside(total: CostTotal, since: datetime | None, until: datetime | None) -> bool:
    return (since is None or total.starts_at >= since) and (
        until is None or total.ends_at <= until
    )


def attribute_costs(
    table: KpiTable,
    totals: Iterable[CostTotal],
    *,
    since: datetime | None = None,
    until: datetime | None = None,
) -> KpiTable:
    """Return *table* with the costs of *totals* in its rows (see the rules above).

    Args:
        table: The KPI table, computed over ``[since, until)``.
        totals: Costs summed per campaign, channel, variant, currency and period;
            those not overlapping ``[since, until)`` are ignored.
        since: The table's lower bound.
        until: The table's upper bound.

    Returns:
        The table with ``cost`` in its rows, ``unattributed_cost``,
        ``costs_outside_range`` and ``has_costs`` set. The table itself when no
        cost overlaps the range.
    """
    index = {tuple(r.group.get(k) for k in table.by): i for i, r in enumerate(table.rows)}
    per_row: dict[int, dict[str, int]] = {}
    unattributed: dict[str, int] = {}
    outside = 0
    seen = False
    zone = check_tz(table.tz)
    for total in totals:
        overlaps = (since is None or total.ends_at > since) and (
            until is None or total.starts_at < until
        )
        if not overlaps:
            continue
        seen = True
        if not _inside(total, since, until):
            outside += total.costs
            continue
        key = cost_key(total, table.by, zone)
        i = None if key is None else index.get(key)
        bucket = unattributed if i is None else per_row.setdefault(i, {})
        bucket[total.currency] = bucket.get(total.currency, 0) + total.micros
    if not seen:
        return table
    rows = list(table.rows)
    for i, micros in per_row.items():
        rows[i] = _with_cost(rows[i], micros)
    return attrs.evolve(
        table,
        rows=tuple(rows),
        unattributed_cost=_decimals(unattributed),
        costs_outside_range=outside,
        has_costs=True,
    )


def _decimals(micros: dict[str, int]) -> dict[str, Decimal]:
    return {cur: micros_to_decimal(m) for cur, m in sorted(micros.items())}


def _with_cost(row: KpiRow, micros: dict[str, int]) -> KpiRow:
    return attrs.evolve(row, cost=_decimals(micros))
