"""The SQL KPI engine: DESIGN section 5 as aggregates run by SQLite or PostgreSQL.

One query does the work. The inner ``SELECT`` folds each message's events into
flags (``MAX(CASE ...)``), grouped by message; the outer one sums the flags per
group. Nothing personal is read, and no row is decrypted.

Two things are added up in Python afterwards, exactly, because counts per
message are additive across any partition of the messages:

* **Periods in a time zone.** The database computes each message's local day
  number, ``floor((sent_at + offset(sent_at)) / 1 day)``, where the offset is a
  ``CASE`` over the zone's UTC-offset transitions between the first and last
  ``sent_at`` in range (found with :mod:`zoneinfo`, so DST zones are exact on
  both databases, with no time zone tables in SQLite). Python labels the day
  as a day, ISO week or month and merges the days of one week or month.
* **Revenue per currency.** The inner query notes each message's conversion
  currency; the outer one groups by it. A message converting in two
  currencies (rare) is summed by a second, small query.

.. versionadded:: 0.2.0
"""

# SQL text here is built only from fixed column names, fixed type names and
# integers computed here; since/until are bound as parameters.
# ruff: noqa: S608

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final
from zoneinfo import ZoneInfo

from commhistory.kpi.metrics import (
    COUNTS,
    GROUP_KEYS,
    PERIODS,
    Accumulator,
    KpiTable,
    check_by,
    check_range,
    check_tz,
    period_label,
)

if TYPE_CHECKING:
    from commhistory.store.sql import SQLRepository

__all__ = ["kpi_query", "offset_segments", "repository_kpis"]

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_US: Final = timedelta(microseconds=1)
_DAY_US: Final = 86_400_000_000
_STEP_US: Final = 6 * 3_600_000_000
"""Offsets are sampled this often to find transitions (no zone has two within 6 h)."""


def _offset_us(zone: ZoneInfo, utc_us: int) -> int:
    moment = _EPOCH + timedelta(microseconds=utc_us)
    offset = moment.astimezone(zone).utcoffset()
    assert offset is not None
    return offset // _US


def offset_segments(zone: ZoneInfo, lo_us: int, hi_us: int) -> list[tuple[int, int]]:
    """Return the zone's UTC offsets over ``[lo_us, hi_us]`` as ``(start_us, offset_us)``.

    The first segment starts at *lo_us*; each later one at the exact
    microsecond its offset takes effect.

    Args:
        zone: The time zone.
        lo_us: The first instant, microseconds since the epoch.
        hi_us: The last instant.

    Returns:
        The segments in time order (one for a zone without transitions in range).
    """
    segments = [(lo_us, _offset_us(zone, lo_us))]
    at = lo_us
    while at < hi_us:
        nxt = min(at + _STEP_US, hi_us)
        if _offset_us(zone, nxt) != segments[-1][1]:
            # Bisect for the first microsecond with the new offset.
            a, b = at, nxt
            while b - a > 1:
                mid = (a + b) // 2
                if _offset_us(zone, mid) == segments[-1][1]:
                    a = mid
                else:
                    b = mid
            segments.append((b, _offset_us(zone, b)))
        at = nxt
    return segments


def _floor_div(expr: str, divisor: int) -> str:
    # Both databases truncate integer division toward zero; floor it for times before 1970.
    return (
        f"(CASE WHEN {expr} >= 0 THEN ({expr}) / {divisor} "
        f"ELSE -((-({expr}) - 1) / {divisor}) - 1 END)"
    )


def _local_day_sql(segments: list[tuple[int, int]]) -> str:
    if len(segments) == 1:
        offset = f"{int(segments[0][1])}"
    else:
        whens = " ".join(
            f"WHEN m.sent_at < {int(start)} THEN {int(prev[1])}"
            for prev, (start, _) in itertools.pairwise(segments)
        )
        offset = f"(CASE {whens} ELSE {int(segments[-1][1])} END)"
    return _floor_div(f"(m.sent_at + {offset})", _DAY_US)


def kpi_query(
    *,
    keys: tuple[str, ...],
    local_day_sql: str | None,
    where: str,
    exclude_machine: bool,
) -> tuple[str, str]:
    """Build the KPI SQL: the main aggregate and the mixed-currency revenue query.

    Args:
        keys: The non-period grouping keys (message columns).
        local_day_sql: The local-day expression, when grouping by a period.
        where: The ``WHERE`` condition on ``messages m`` (with placeholders).
        exclude_machine: Leave out machine reactions.

    Returns:
        ``(main_sql, mixed_currency_sql)``. The main query's columns are the
        keys, the local day (if any), the currency, the mixed-currency flag,
        the counts in :data:`~commhistory.kpi.metrics.COUNTS` order and the
        revenue micros.
    """
    human = "NOT e.machine" if exclude_machine else "TRUE"

    def flag(cond: str) -> str:
        return f"MAX(CASE WHEN {cond} THEN 1 ELSE 0 END)"

    conv = f"e.type = 'converted' AND {human}"
    group_cols = [f"m.{k}" for k in keys]
    if local_day_sql is not None:
        group_cols.append(f"{local_day_sql}")
    inner_cols = [f"{c} AS g{i}" for i, c in enumerate(group_cols)]
    flags = [
        ("rj", "e.type = 'rejected'"),
        ("b", "e.type = 'bounced'"),
        ("hb", "e.type = 'bounced' AND e.bounce = 'hard'"),
        ("f", "e.type = 'failed'"),
        ("o", f"e.type = 'opened' AND {human}"),
        ("c", f"e.type = 'clicked' AND {human}"),
        ("cv", conv),
        ("u", f"e.type = 'unsubscribed' AND {human}"),
        ("cp", f"e.type = 'complained' AND {human}"),
    ]
    inner = (
        "SELECT m.message_id AS mid, "
        + "".join(f"{c}, " for c in inner_cols)
        + "".join(f"{flag(cond)} AS {name}, " for name, cond in flags)
        + f"SUM(CASE WHEN {conv} THEN e.revenue_micros END) AS rev, "
        f"MIN(CASE WHEN {conv} THEN e.currency END) AS cur_lo, "
        f"MAX(CASE WHEN {conv} THEN e.currency END) AS cur_hi "
        "FROM messages m LEFT JOIN events e ON e.message_id = m.message_id "
        f"WHERE {where} "
        "GROUP BY m.message_id" + "".join(f", {c}" for c in group_cols)
    )
    g = [f"g{i}" for i in range(len(group_cols))]
    d = "(b = 0 AND f = 0)"
    outer_keys = "".join(f"{x}, " for x in g)
    main = (
        f"SELECT {outer_keys}cur_lo, CASE WHEN cur_lo <> cur_hi THEN 1 ELSE 0 END AS mixed, "
        "COUNT(*), "
        f"SUM(CASE WHEN {d} THEN 1 ELSE 0 END), "
        "SUM(b), SUM(hb), "
        "SUM(CASE WHEN b = 0 THEN f ELSE 0 END), "
        f"SUM(CASE WHEN {d} AND (o = 1 OR c = 1) THEN 1 ELSE 0 END), "
        f"SUM(CASE WHEN {d} THEN c ELSE 0 END), "
        f"SUM(CASE WHEN {d} THEN cv ELSE 0 END), "
        f"SUM(CASE WHEN {d} THEN u ELSE 0 END), "
        f"SUM(CASE WHEN {d} THEN cp ELSE 0 END), "
        f"SUM(CASE WHEN {d} THEN rev END) "
        f"FROM ({inner}) pm WHERE rj = 0 "
        f"GROUP BY {outer_keys}cur_lo, CASE WHEN cur_lo <> cur_hi THEN 1 ELSE 0 END"
    )
    mixed = (
        f"SELECT {''.join(f'pm.{x}, ' for x in g)}e.currency, SUM(e.revenue_micros) "
        f"FROM ({inner}) pm JOIN events e ON e.message_id = pm.mid "
        f"WHERE pm.rj = 0 AND pm.b = 0 AND pm.f = 0 AND pm.cur_lo <> pm.cur_hi "
        f"AND {conv} AND e.currency IS NOT NULL "
        f"GROUP BY {''.join(f'pm.{x}, ' for x in g)}e.currency"
    )
    return main, mixed


def repository_kpis(
    repo: SQLRepository,
    *,
    by: str | Iterable[str] = (),
    since: datetime | None = None,
    until: datetime | None = None,
    tz: str | ZoneInfo = "UTC",
    exclude_machine: bool = True,
) -> KpiTable:
    """Compute KPIs in the database; the same table :func:`commhistory.kpi.compute` gives.

    Args:
        repo: The repository.
        by: Grouping keys (see :func:`commhistory.kpi.compute`).
        since: Only messages sent at or after this aware datetime.
        until: Only messages sent before this aware datetime.
        tz: The IANA time zone periods are computed in.
        exclude_machine: Leave out reactions flagged ``machine``.

    Returns:
        The table.

    Raises:
        InvalidInputError: Bad grouping keys, zone or range.
        StorageError: The database failed.
    """
    keys = check_by(by)
    zone = check_tz(tz)
    check_range(since, until)
    period = next((k for k in keys if k in PERIODS), None)
    columns = tuple(k for k in keys if k in GROUP_KEYS)
    ph = repo.backend.ph
    where = "m.direction = 'outbound'"
    params: list[Any] = []
    if since is not None:
        where += f" AND m.sent_at >= {ph}"
        params.append((since - _EPOCH) // _US)
    if until is not None:
        where += f" AND m.sent_at < {ph}"
        params.append((until - _EPOCH) // _US)
    acc = Accumulator(keys)
    with repo.transaction(read=True) as conn:
        unmatched = int(
            conn.exec_driver_sql(
                "SELECT COUNT(*) FROM events WHERE contact_id IS NULL"
            ).scalar_one()
        )
        local_day_sql = None
        if period is not None:
            lo, hi = conn.exec_driver_sql(
                f"SELECT MIN(m.sent_at), MAX(m.sent_at) FROM messages m WHERE {where}",
                tuple(params),
            ).one()
            if lo is None:
                return acc.table(
                    unmatched_events=unmatched, exclude_machine=exclude_machine, tz=zone.key
                )
            local_day_sql = _local_day_sql(offset_segments(zone, int(lo), int(hi)))
        main, mixed = kpi_query(
            keys=columns, local_day_sql=local_day_sql, where=where, exclude_machine=exclude_machine
        )
        rows = conn.exec_driver_sql(main, tuple(params)).all()
        mixed_rows: Sequence[Any] = ()
        if any(r[len(columns) + (period is not None) + 1] for r in rows):
            mixed_rows = conn.exec_driver_sql(mixed, tuple(params)).all()

    n_group = len(columns) + (period is not None)
    ncounts = len(COUNTS)

    def key_of(values: tuple[Any, ...]) -> tuple[str | None, ...]:
        out: list[str | None] = []
        it = iter(values)
        for k in keys:
            if k in PERIODS:
                out.append(period_label(k, int(values[-1])))
            else:
                v = next(it)
                out.append(None if v is None else str(v))
        return tuple(out)

    for r in rows:
        group = tuple(r[:n_group])
        cur, is_mixed = r[n_group], r[n_group + 1]
        counts = [int(c or 0) for c in r[n_group + 2 : n_group + 2 + ncounts]]
        rev = r[n_group + 2 + ncounts]
        revenue = {cur: int(rev)} if cur is not None and rev is not None and not is_mixed else None
        acc.add(key_of(group), counts, revenue)
    zeros = [0] * ncounts
    for r in mixed_rows:
        acc.add(key_of(tuple(r[:n_group])), zeros, {r[n_group]: int(r[n_group + 1])})
    return acc.table(unmatched_events=unmatched, exclude_machine=exclude_machine, tz=zone.key)
