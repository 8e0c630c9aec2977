"""KPIs over a repository: DESIGN section 5 from the store's aggregate port.

:func:`repository_kpis` validates the arguments, asks the repository's
:class:`~commhistory.store.kpi.KpiStore` for per-message counts summed per
group (on SQL, one aggregate query in the database; see
:mod:`commhistory.store.kpi`), labels each local day as a day, ISO week or
month, merges the days of one week or month, and builds the
:class:`~commhistory.kpi.metrics.KpiTable` that :func:`commhistory.kpi.compute`
gives for the same records. Counts per message are additive across any
partition of the messages, so the merge is exact.

.. versionadded:: 0.2.0
.. versionchanged:: 0.4.0
   Moved from ``commhistory.kpi.sql``; the SQL lives in :mod:`commhistory.store.kpi`.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from zoneinfo import ZoneInfo

from commhistory.kpi.costs import attribute_costs
from commhistory.kpi.metrics import (
    GROUP_KEYS,
    PERIODS,
    Accumulator,
    KpiTable,
    check_by,
    check_journey,
    check_range,
    check_tz,
    period_label,
)
from commhistory.store.kpi import JOURNEY_KEYS, KpiQuery, KpiRowData
from commhistory.store.protocol import Repository

__all__ = ["repository_kpis"]


def repository_kpis(
    repo: Repository,
    *,
    by: str | Iterable[str] = (),
    since: datetime | None = None,
    until: datetime | None = None,
    tz: str | ZoneInfo = "UTC",
    exclude_machine: bool = True,
    costs: bool = True,
    journey: str | None = None,
    journey_version: int | None = None,
) -> KpiTable:
    """Compute KPIs through the repository's KPI port, equal to :func:`~commhistory.kpi.compute`.

    Args:
        repo: The repository.
        by: Grouping keys (see :func:`commhistory.kpi.compute`).
        since: Only messages sent at or after this aware datetime.
        until: Only messages sent before this aware datetime.
        tz: The IANA time zone periods are computed in.
        exclude_machine: Leave out reactions flagged ``machine``.
        costs: Add the campaign costs the repository's cost port sums (one
            ``GROUP BY`` in SQL); see :mod:`commhistory.kpi.costs`.
        journey: Only the messages recorded for an intent of this journey
            (``journey_intents``); grouping by ``journey``, ``journey_version``
            or ``step`` reads the same link.
        journey_version: Only those of this version of ``journey``.

    Returns:
        The table.

    .. versionchanged:: 0.4.0
       ``costs``; ``journey``, ``journey_version`` and the journey grouping keys.

    Raises:
        InvalidInputError: Bad grouping keys, zone or range.
        StorageError: The database failed.
    """
    keys = check_by(by)
    zone = check_tz(tz)
    check_range(since, until)
    check_journey(journey, journey_version)
    period = next((k for k in keys if k in PERIODS), None)
    columns = tuple(k for k in keys if k in GROUP_KEYS or k in JOURNEY_KEYS)
    result = repo.kpi_store.aggregate(
        KpiQuery(
            columns=columns,
            local_day=period is not None,
            zone=zone,
            since=since,
            until=until,
            exclude_machine=exclude_machine,
            journey=journey,
            journey_version=journey_version,
        )
    )

    def key_of(row: KpiRowData) -> tuple[str | None, ...]:
        out: list[str | None] = []
        it = iter(row.group)
        for k in keys:
            if k in PERIODS:
                assert row.local_day is not None
                out.append(period_label(k, row.local_day))
            else:
                out.append(next(it))
        return tuple(out)

    acc = Accumulator(keys)
    for row in result.rows:
        revenue = (
            None
            if row.currency is None or row.revenue_micros is None
            else {row.currency: row.revenue_micros}
        )
        acc.add(key_of(row), row.counts, revenue)
    table = acc.table(
        unmatched_events=result.unmatched_events, exclude_machine=exclude_machine, tz=zone.key
    )
    if not costs:
        return table
    totals = repo.cost_store.totals(since=since, until=until)
    return attribute_costs(table, totals, since=since, until=until)
