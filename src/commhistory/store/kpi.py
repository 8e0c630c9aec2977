"""KPI storage: the aggregate the KPI rules read, on SQL and in memory.

:class:`KpiStore` is everything :mod:`commhistory.kpi` needs from a repository:
per-message counts (DESIGN section 5) summed per group, with each group's
local day number when a period is asked, and revenue micros per currency.
:class:`SQLKpiStore` and :class:`MemoryKpiStore` implement it; a repository
hands its own out as ``repo.kpi_store``. The kpi package validates arguments,
labels periods, merges days into weeks and months and builds the table.

The SQL implementation runs one aggregate query. The inner ``SELECT`` folds
``events`` per message in one pass over the covering index ``ix_events_kpi``:
each event becomes a flag code, OR-ed per message (``bit_or`` on PostgreSQL,
``group_concat`` of letters on SQLite); the outer one joins those rows to
``messages`` and sums the flags per group. Nothing personal is read, and no row
is decrypted.

* **Local days.** The database computes each message's local day number,
  ``floor((sent_at + offset(sent_at)) / 1 day)``, where the offset is a
  ``CASE`` over the zone's UTC-offset transitions between the first and last
  ``sent_at`` in range (found with :mod:`zoneinfo`, so DST zones are exact on
  both databases, with no time zone tables in SQLite).
* **Revenue per currency.** The inner query notes each message's conversion
  currency; the outer one groups by it. A message converting in two
  currencies (rare) is summed by a second, small query.

.. versionadded:: 0.4.0
   Moved here from ``commhistory.kpi.sql``; the kpi package keeps the rules.
"""

# SQL text here is built only from fixed column names, fixed type names and
# integers computed here; since/until are bound as parameters.
# ruff: noqa: S608

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, NamedTuple, Protocol
from zoneinfo import ZoneInfo

import attrs

from commhistory.model import BounceClass, Direction, Event, EventType, Message
from commhistory.normalize.time import to_micros

if TYPE_CHECKING:
    from commhistory.store.memory import MemoryState
    from commhistory.store.sql import SQLRepository

__all__ = [
    "COUNTS",
    "GROUP_KEYS",
    "REACTIONS",
    "KpiAggregate",
    "KpiQuery",
    "KpiRowData",
    "KpiStore",
    "MemoryKpiStore",
    "SQLKpiStore",
    "kpi_query",
    "local_day",
    "message_counts",
    "offset_segments",
]

GROUP_KEYS: Final = ("campaign_id", "variant", "channel", "provider", "purpose")
"""Message attributes a table can be grouped by."""

COUNTS: Final = (
    "sent",
    "delivered",
    "bounced",
    "hard_bounced",
    "failed",
    "unique_opens",
    "unique_clicks",
    "conversions",
    "unsubscribes",
    "complaints",
)
"""The count columns, in report order."""

REACTIONS: Final = frozenset(
    {
        EventType.OPENED,
        EventType.CLICKED,
        EventType.CONVERTED,
        EventType.UNSUBSCRIBED,
        EventType.COMPLAINED,
    }
)
"""Event types left out when flagged ``machine`` and ``exclude_machine`` is true."""

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_US: Final = timedelta(microseconds=1)
_DAY_US: Final = 86_400_000_000
_STEP_US: Final = 6 * 3_600_000_000
"""Offsets are sampled this often to find transitions (no zone has two within 6 h)."""
_REVENUE_SCALE: Final = 1_000_000


@attrs.frozen(kw_only=True)
class KpiQuery:
    """What to aggregate: already validated by the caller.

    Attributes:
        columns: Message columns to group by, each one of :data:`GROUP_KEYS`, in order.
        local_day: Also group by the local day number of ``sent_at`` in *zone*.
        zone: The time zone of the local days.
        since: Only messages sent at or after this aware datetime.
        until: Only messages sent before this aware datetime.
        exclude_machine: Leave out reaction events flagged ``machine``.

    .. versionadded:: 0.4.0
    """

    columns: tuple[str, ...] = ()
    local_day: bool = False
    zone: ZoneInfo = attrs.field(factory=lambda: ZoneInfo("UTC"))
    since: datetime | None = None
    until: datetime | None = None
    exclude_machine: bool = True


class KpiRowData(NamedTuple):
    """One partial aggregate; partials of the same group add up.

    Its fields, in order: ``group``, the values of the query's columns (text,
    ``None`` where unset); ``local_day``, the local day number (days since
    1970-01-01), or ``None`` when the query asks for no period; ``counts``,
    per-message counts in :data:`COUNTS` order; ``currency``, the currency of
    ``revenue_micros``, or ``None``; ``revenue_micros``, conversion revenue in
    millionths, or ``None``.
    """

    group: tuple[str | None, ...]
    local_day: int | None
    counts: tuple[int, ...]
    currency: str | None
    revenue_micros: int | None


@attrs.frozen(kw_only=True)
class KpiAggregate:
    """The port's answer: partial rows and the events no message claims.

    .. versionadded:: 0.4.0
    """

    rows: tuple[KpiRowData, ...] = ()
    unmatched_events: int = 0


class KpiStore(Protocol):
    """The storage port of the KPI engine.

    .. versionadded:: 0.4.0
    """

    def aggregate(self, query: KpiQuery) -> KpiAggregate:
        """Return the per-message counts of outbound messages summed per group.

        Rejected messages are not counted. Each message contributes to exactly
        one row's counts; its revenue is in a row of its currency (a message
        converting in several currencies adds zero-count rows for them).
        """
        ...


# ---------------------------------------------------------------------- time zones


def _offset_us(zone: ZoneInfo, utc_us: int) -> int:
    moment = _EPOCH + timedelta(microseconds=utc_us)
    offset = moment.astimezone(zone).utcoffset()
    assert offset is not None
    return offset // _US


def local_day(moment: datetime, zone: ZoneInfo) -> int:
    """Return the day number (days since 1970-01-01) of *moment*'s local date in *zone*."""
    utc_us = (moment - _EPOCH) // _US
    offset = moment.astimezone(zone).utcoffset()
    assert offset is not None  # a ZoneInfo always knows the offset of an instant
    return (utc_us + offset // _US) // _DAY_US


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


# ---------------------------------------------------------------------- SQL


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


_FLAG_CODES: Final = (
    # (name, event type, counts only human events when excluding machines, SQLite char, bit)
    ("o", "opened", True, "o", 16),
    ("c", "clicked", True, "c", 32),
    ("cv", "converted", True, "v", 64),
    ("u", "unsubscribed", True, "u", 128),
    ("cp", "complained", True, "p", 256),
    ("f", "failed", False, "F", 8),
    ("rj", "rejected", False, "R", 1),
)
"""The per-message flags folded from events: one code per event, OR-ed per message."""

_BOUNCE_SOFT: Final = ("B", 2)
_BOUNCE_HARD: Final = ("H", 4)


def _event_code(dialect: str, exclude_machine: bool) -> str:
    """One ``CASE`` per event giving its flag code, or NULL for events that set none."""
    pg = dialect == "postgresql"

    def code(char: str, bit: int) -> str:
        return str(bit) if pg else f"'{char}'"

    def human(value: str) -> str:
        return f"CASE WHEN machine THEN NULL ELSE {value} END" if exclude_machine else value

    whens = []
    for _name, kind, reaction, char, bit in _FLAG_CODES[:2]:
        whens.append(
            f"WHEN '{kind}' THEN {human(code(char, bit)) if reaction else code(char, bit)}"
        )
    # The most frequent type that sets no flag, early, so most events stop here.
    whens.append("WHEN 'delivered' THEN NULL")
    whens.append(
        f"WHEN 'bounced' THEN CASE WHEN bounce = 'hard' THEN {code(*_BOUNCE_HARD)} "
        f"ELSE {code(*_BOUNCE_SOFT)} END"
    )
    for _name, kind, reaction, char, bit in _FLAG_CODES[2:]:
        whens.append(
            f"WHEN '{kind}' THEN {human(code(char, bit)) if reaction else code(char, bit)}"
        )
    return f"CASE type {' '.join(whens)} END"


def _has(dialect: str, char: str, bit: int) -> str:
    """A condition on the joined per-message code ``e.k`` (NULL without events)."""
    if dialect == "postgresql":
        return f"((COALESCE(e.k, 0) & {bit}) <> 0)"
    return f"(instr(COALESCE(e.k, ''), '{char}') > 0)"


def kpi_query(
    *,
    keys: tuple[str, ...],
    local_day_sql: str | None,
    where: str,
    exclude_machine: bool,
    dialect: str = "sqlite",
) -> tuple[str, str]:
    """Build the KPI SQL: the main aggregate and the mixed-currency revenue query.

    Events are folded per message first, in one pass over ``events`` (which
    the covering index ``ix_events_kpi`` answers alone, in ``message_id``
    order): each event becomes a flag code, and the codes of a message are
    OR-ed (``bit_or`` of bits on PostgreSQL; on SQLite, which has no bitwise
    aggregate, ``group_concat`` of one-letter codes tested with ``instr``).
    Only then are the per-message rows joined to ``messages`` and summed per
    group.

    Args:
        keys: The grouping columns of ``messages``.
        local_day_sql: The local-day expression, when grouping by a period.
        where: The ``WHERE`` condition on ``messages m`` (with placeholders).
        exclude_machine: Leave out machine reactions.
        dialect: ``"sqlite"`` or ``"postgresql"``.

    Returns:
        ``(main_sql, mixed_currency_sql)``. The main query's columns are the
        keys, the local day (if any), the currency, the mixed-currency flag,
        the counts in :data:`COUNTS` order and the revenue micros.
    """
    agg = "bit_or" if dialect == "postgresql" else "group_concat"
    sep = "" if dialect == "postgresql" else ", ''"
    human = " AND NOT machine" if exclude_machine else ""
    conv = f"revenue_micros IS NOT NULL AND type = 'converted'{human}"
    inner = (
        f"SELECT message_id, {agg}({_event_code(dialect, exclude_machine)}{sep}) AS k, "
        f"SUM(CASE WHEN {conv} THEN revenue_micros END) AS rev, "
        f"MIN(CASE WHEN {conv} THEN currency END) AS cur_lo, "
        f"MAX(CASE WHEN {conv} THEN currency END) AS cur_hi "
        "FROM events GROUP BY message_id"
    )
    has = {name: _has(dialect, char, bit) for name, _k, _r, char, bit in _FLAG_CODES}
    b = f"({_has(dialect, *_BOUNCE_SOFT)} OR {_has(dialect, *_BOUNCE_HARD)})"
    hb = _has(dialect, *_BOUNCE_HARD)
    d = f"(NOT {b} AND NOT {has['f']})"

    def count(cond: str) -> str:
        return f"SUM(CASE WHEN {cond} THEN 1 ELSE 0 END)"

    failed = f"NOT {b} AND {has['f']}"
    opened = f"{d} AND ({has['o']} OR {has['c']})"

    group_cols = [f"m.{k}" for k in keys]
    if local_day_sql is not None:
        group_cols.append(local_day_sql)
    gsql = "".join(f"{c}, " for c in group_cols)
    mixed_flag = "CASE WHEN e.cur_lo <> e.cur_hi THEN 1 ELSE 0 END"
    joined = (
        f"FROM messages m LEFT JOIN ({inner}) e ON e.message_id = m.message_id "
        f"WHERE {where} AND NOT {has['rj']} "
    )
    main = (
        f"SELECT {gsql}e.cur_lo, {mixed_flag}, COUNT(*), {count(d)}, {count(b)}, {count(hb)}, "
        f"{count(failed)}, {count(opened)}, "
        + ", ".join(count(f"{d} AND {has[n]}") for n in ("c", "cv", "u", "cp"))
        + f", SUM(CASE WHEN {d} THEN e.rev END) "
        + joined
        + f"GROUP BY {gsql}e.cur_lo, {mixed_flag}"
    )
    x_conv = f"x.type = 'converted'{' AND NOT x.machine' if exclude_machine else ''}"
    mixed = (
        f"SELECT {gsql}x.currency, SUM(x.revenue_micros) "
        f"FROM messages m JOIN ({inner}) e ON e.message_id = m.message_id "
        "JOIN events x ON x.message_id = m.message_id "
        f"WHERE {where} AND NOT {has['rj']} AND {d} AND e.cur_lo <> e.cur_hi "
        f"AND {x_conv} AND x.revenue_micros IS NOT NULL AND x.currency IS NOT NULL "
        f"GROUP BY {gsql}x.currency"
    )
    return main, mixed


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


class SQLKpiStore(KpiStore):
    """:class:`KpiStore` over :class:`~commhistory.store.sql.SQLRepository`."""

    def __init__(self, repo: SQLRepository) -> None:
        self.repo = repo

    def aggregate(self, query: KpiQuery) -> KpiAggregate:
        """See :meth:`KpiStore.aggregate`."""
        columns = tuple(k for k in query.columns if k in GROUP_KEYS)
        repo = self.repo
        ph = repo.backend.ph
        where = "m.direction = 'outbound'"
        params: list[Any] = []
        if query.since is not None:
            where += f" AND m.sent_at >= {ph}"
            params.append(to_micros(query.since))
        if query.until is not None:
            where += f" AND m.sent_at < {ph}"
            params.append(to_micros(query.until))
        with repo.transaction(read=True) as conn:
            if repo.dialect == "postgresql":
                # The per-message aggregate sits on the build side of the join; a
                # parallel plan runs it once per process (measured: 1.5 s against
                # 0.9 s serial, 1M events). SET LOCAL ends with this transaction.
                conn.exec_driver_sql("SET LOCAL max_parallel_workers_per_gather = 0")
            unmatched = int(
                conn.exec_driver_sql(
                    "SELECT COUNT(*) FROM events WHERE contact_id IS NULL"
                ).scalar_one()
            )
            local_day_sql = None
            if query.local_day:
                lo, hi = conn.exec_driver_sql(
                    f"SELECT MIN(m.sent_at), MAX(m.sent_at) FROM messages m WHERE {where}",
                    tuple(params),
                ).one()
                if lo is None:
                    return KpiAggregate(unmatched_events=unmatched)
                local_day_sql = _local_day_sql(offset_segments(query.zone, int(lo), int(hi)))
            main, mixed = kpi_query(
                keys=columns,
                local_day_sql=local_day_sql,
                where=where,
                exclude_machine=query.exclude_machine,
                dialect=repo.dialect,
            )
            rows = conn.exec_driver_sql(main, tuple(params)).all()
            mixed_rows: Sequence[Any] = ()
            n_group = len(columns) + query.local_day
            if any(r[n_group + 1] for r in rows):
                mixed_rows = conn.exec_driver_sql(mixed, tuple(params)).all()

        ncounts = len(COUNTS)
        ncols = len(columns)

        def day(values: Sequence[Any]) -> int | None:
            return int(values[ncols]) if query.local_day else None

        out: list[KpiRowData] = []
        for r in rows:
            cur, is_mixed = r[n_group], r[n_group + 1]
            counts = tuple(int(c or 0) for c in r[n_group + 2 : n_group + 2 + ncounts])
            rev = r[n_group + 2 + ncounts]
            plain = cur is not None and rev is not None and not is_mixed
            out.append(
                KpiRowData(
                    group=tuple(_text(v) for v in r[:ncols]),
                    local_day=day(r),
                    counts=counts,
                    currency=cur if plain else None,
                    revenue_micros=int(rev) if plain else None,
                )
            )
        zeros = (0,) * ncounts
        for r in mixed_rows:
            out.append(
                KpiRowData(
                    group=tuple(_text(v) for v in r[:ncols]),
                    local_day=day(r),
                    counts=zeros,
                    currency=r[n_group],
                    revenue_micros=int(r[n_group + 1]),
                )
            )
        return KpiAggregate(rows=tuple(out), unmatched_events=unmatched)


# ---------------------------------------------------------------------- memory


def message_counts(
    events: Iterable[Event], exclude_machine: bool
) -> tuple[tuple[int, ...] | None, dict[str, int]]:
    """Return one message's counts in :data:`COUNTS` order and its revenue micros.

    ``None`` when the message was rejected (it was never sent).
    """
    seen: set[EventType] = set()
    hard = False
    revenue: dict[str, int] = {}
    for e in events:
        if exclude_machine and e.machine and e.type in REACTIONS:
            continue
        seen.add(e.type)
        if e.type is EventType.BOUNCED and e.bounce is BounceClass.HARD:
            hard = True
        if e.type is EventType.CONVERTED and e.revenue is not None and e.currency is not None:
            revenue[e.currency] = revenue.get(e.currency, 0) + int(e.revenue * _REVENUE_SCALE)
    if EventType.REJECTED in seen:
        return None, {}
    bounced = EventType.BOUNCED in seen
    failed = not bounced and EventType.FAILED in seen
    delivered = not bounced and not failed
    clicked = delivered and EventType.CLICKED in seen
    opened = clicked or (delivered and EventType.OPENED in seen)
    converted = delivered and EventType.CONVERTED in seen
    counts = (
        1,
        int(delivered),
        int(bounced),
        int(bounced and hard),
        int(failed),
        int(opened),
        int(clicked),
        int(converted),
        int(delivered and EventType.UNSUBSCRIBED in seen),
        int(delivered and EventType.COMPLAINED in seen),
    )
    return counts, (revenue if converted else {})


class MemoryKpiStore(KpiStore):
    """:class:`KpiStore` over :class:`~commhistory.store.memory.MemoryRepository`."""

    def __init__(self, state: MemoryState) -> None:
        self.s = state

    def aggregate(self, query: KpiQuery) -> KpiAggregate:
        """See :meth:`KpiStore.aggregate`."""
        messages: Mapping[str, Message] = self.s.messages
        per_message: dict[str, list[Event]] = {}
        unmatched = 0
        for e in self.s.events.values():
            if e.message_id is None or e.message_id not in messages:
                unmatched += 1
            else:
                per_message.setdefault(e.message_id, []).append(e)
        columns = tuple(k for k in query.columns if k in GROUP_KEYS)
        counts: dict[tuple[tuple[str | None, ...], int | None], list[int]] = {}
        revenue: dict[tuple[tuple[str | None, ...], int | None, str], int] = {}
        for mid, m in messages.items():
            if m.direction is not Direction.OUTBOUND:
                continue
            if query.since is not None and m.sent_at < query.since:
                continue
            if query.until is not None and m.sent_at >= query.until:
                continue
            mine, rev = message_counts(per_message.get(mid, ()), query.exclude_machine)
            if mine is None:
                continue
            group = tuple(_text(getattr(m, k)) for k in columns)
            day = local_day(m.sent_at, query.zone) if query.local_day else None
            have = counts.setdefault((group, day), [0] * len(COUNTS))
            for i, c in enumerate(mine):
                have[i] += c
            for cur, micros in rev.items():
                revenue[(group, day, cur)] = revenue.get((group, day, cur), 0) + micros
        rows = [KpiRowData(group, day, tuple(c), None, None) for (group, day), c in counts.items()]
        zeros = (0,) * len(COUNTS)
        rows.extend(
            KpiRowData(group, day, zeros, cur, micros)
            for (group, day, cur), micros in revenue.items()
        )
        return KpiAggregate(rows=tuple(rows), unmatched_events=unmatched)
