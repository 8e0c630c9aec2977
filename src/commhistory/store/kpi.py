"""KPI storage: the aggregate the KPI rules read, on SQL and in memory.

:class:`KpiStore` is everything :mod:`commhistory.kpi` needs from a repository:
per-message counts (DESIGN section 5) summed per group, with each group's
local day number when a period is asked, and revenue micros per currency.
:class:`SQLKpiStore` and :class:`MemoryKpiStore` implement it; a repository
hands its own out as ``repo.kpi_store``. The kpi package validates arguments,
labels periods, merges days into weeks and months and builds the table.

The SQL implementation reads ``messages`` alone. Ingest keeps, on each
message, what its events say happened (:class:`Outcome` bits in ``outcomes``,
and the conversion revenue in ``conversion_currency``,
``conversion_revenue_micros`` and ``human_revenue_micros``; schema revision
0008), recomputed from the message's stored events in the transaction that
writes them or links them (:func:`refresh_outcomes`). One aggregate query
counts the messages per group and combination of bits, and sums their
revenue; the rules run once per combination (:func:`outcome_counts`). No
event is grouped, nothing personal is read, and no row is decrypted.

* **Local days.** The database computes each message's local day number,
  ``floor((sent_at + offset(sent_at)) / 1 day)``, where the offset is a
  ``CASE`` over the zone's UTC-offset transitions between the first and last
  ``sent_at`` in range (found with :mod:`zoneinfo`, so DST zones are exact on
  both databases, with no time zone tables in SQLite).
* **Revenue per currency.** The query groups by each message's conversion
  currency. A message converting in two currencies (rare, flagged
  :attr:`Outcome.MIXED_CURRENCY`) is summed from its events by a second,
  small query.
* **Events deleted.** The library never deletes events (retention keeps
  them: they carry the KPIs). A host that deletes ``events`` rows itself
  calls :meth:`SQLKpiStore.rebuild_outcomes` to make the KPIs forget them;
  until then each message keeps the outcomes it had.

.. versionadded:: 0.4.0
   Moved here from ``commhistory.kpi.sql``; the kpi package keeps the rules.
.. versionchanged:: 0.4.0
   KPIs read per-message outcome columns kept at ingest instead of grouping events.
"""

# SQL text here is built only from fixed column names, fixed type names and
# integers computed here; since/until are bound as parameters.
# ruff: noqa: S608

from __future__ import annotations

import enum
import itertools
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, NamedTuple, Protocol
from zoneinfo import ZoneInfo

import attrs
import sqlalchemy as sa

from commhistory.model import BounceClass, Direction, Event, EventType, Message
from commhistory.normalize.link import link_label
from commhistory.normalize.time import to_micros
from commhistory.store._backend import Backend

if TYPE_CHECKING:
    from commhistory.store.memory import MemoryState
    from commhistory.store.sql import SQLRepository

__all__ = [
    "COUNTS",
    "GROUP_KEYS",
    "JOURNEY_KEYS",
    "NO_OUTCOMES",
    "OUTCOME_COLUMNS",
    "REACTIONS",
    "JourneyLink",
    "KpiAggregate",
    "KpiQuery",
    "KpiRowData",
    "KpiStore",
    "LinkClickRow",
    "MemoryKpiStore",
    "Outcome",
    "OutcomeValues",
    "SQLKpiStore",
    "fold_outcomes",
    "group_values",
    "journey_selected",
    "kpi_query",
    "local_day",
    "message_counts",
    "offset_segments",
    "outcome_counts",
    "outcome_select",
    "refresh_outcomes",
    "refresh_outcomes_sql",
]

GROUP_KEYS: Final = ("campaign_id", "variant", "channel", "provider", "purpose")
"""Message attributes a table can be grouped by."""

JOURNEY_KEYS: Final = ("journey", "journey_version", "step")
"""The journey grouping keys, the journey key, version and send step of the intent a
message was recorded for (``journey_intents.message_id``, outcome ``sent``).

Grouping by any of them, or filtering by a journey, counts only such messages; a
message recorded for two intents counts once for each.

.. versionadded:: 0.4.0
"""

_JOURNEY_SQL: Final = {
    "journey": "je.journey_key",
    "journey_version": "je.version",
    "step": "ji.step_id",
}
_JOURNEY_JOIN: Final = (
    " JOIN journey_intents ji ON ji.message_id = m.message_id AND ji.outcome = 'sent'"
    " JOIN journey_enrollments je ON je.enrollment_id = ji.enrollment_id"
)

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
        journey: Only messages recorded for an intent of this journey key.
        journey_version: Only those of this journey version (with ``journey``).

    Columns may also be :data:`JOURNEY_KEYS`.

    .. versionadded:: 0.4.0
    .. versionchanged:: 0.4.0
       ``journey``, ``journey_version`` and the :data:`JOURNEY_KEYS` columns.
    """

    columns: tuple[str, ...] = ()
    local_day: bool = False
    zone: ZoneInfo = attrs.field(factory=lambda: ZoneInfo("UTC"))
    since: datetime | None = None
    until: datetime | None = None
    exclude_machine: bool = True
    journey: str | None = None
    journey_version: int | None = None

    @property
    def by_journey(self) -> bool:
        """Whether the query reads the journey intents (a journey column or filter)."""
        return self.journey is not None or any(k in JOURNEY_KEYS for k in self.columns)


class JourneyLink(NamedTuple):
    """A message recorded for a journey intent: ``(message_id, journey, version, step)``.

    What :func:`commhistory.kpi.compute` groups held messages by for :data:`JOURNEY_KEYS`
    (a repository reads it from ``journey_intents``).

    .. versionadded:: 0.4.0
    """

    message_id: str
    journey: str
    version: int
    step: str


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


class LinkClickRow(NamedTuple):
    """Clicks on one link of one campaign: ``(campaign_id, link, clicks, human_clicks)``.

    ``link`` is the click's link label (:func:`commhistory.normalize.link.link_label`);
    ``clicks`` counts every click event, ``human_clicks`` those not flagged ``machine``.

    .. versionadded:: 0.4.0
    """

    campaign_id: str | None
    link: str
    clicks: int
    human_clicks: int


class KpiStore(Protocol):
    """The storage port of the KPI engine.

    .. versionadded:: 0.4.0
    """

    def link_clicks(self, query: KpiQuery) -> tuple[LinkClickRow, ...]:
        """Return the click events per campaign and link label.

        Counts click events (not messages) of outbound messages sent in the
        query's range, by the message's campaign and the event's link label;
        clicks without a label (another scheme, stored before schema revision
        0011, or erased) are left out. ``columns``, ``local_day`` and
        ``exclude_machine`` are ignored: both counts are returned.

        .. versionadded:: 0.4.0
        """
        ...

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


class Outcome(enum.IntFlag):
    """The bits of ``messages.outcomes``: what a message's events say happened to it.

    Ingest keeps them (with the conversion revenue columns) in the same
    transaction as the events, folded from every stored event of the message
    (:func:`refresh_outcomes`), so a KPI query reads one row per message and
    no event. The reaction bits come twice: set by any such event, and by one
    not flagged ``machine`` (``HUMAN_*``), for ``exclude_machine``.

    The values are part of the schema (migration 0008 backfills them): never
    renumber one.

    .. versionadded:: 0.4.0
    """

    REJECTED = 1
    BOUNCED = 2
    HARD_BOUNCED = 4
    FAILED = 8
    OPENED = 16
    CLICKED = 32
    CONVERTED = 64
    UNSUBSCRIBED = 128
    COMPLAINED = 256
    HUMAN_OPENED = 512
    HUMAN_CLICKED = 1024
    HUMAN_CONVERTED = 2048
    HUMAN_UNSUBSCRIBED = 4096
    HUMAN_COMPLAINED = 8192
    MIXED_CURRENCY = 16384
    """Conversions with revenue in more than one currency (machine ones included):
    the revenue columns are then NULL and a query sums those messages' events."""


_OUTCOME_EVENTS: Final = (
    # (bit, event type, extra condition on the event)
    (Outcome.REJECTED, "rejected", ""),
    (Outcome.BOUNCED, "bounced", ""),
    (Outcome.HARD_BOUNCED, "bounced", " AND bounce = 'hard'"),
    (Outcome.FAILED, "failed", ""),
    (Outcome.OPENED, "opened", ""),
    (Outcome.CLICKED, "clicked", ""),
    (Outcome.CONVERTED, "converted", ""),
    (Outcome.UNSUBSCRIBED, "unsubscribed", ""),
    (Outcome.COMPLAINED, "complained", ""),
    (Outcome.HUMAN_OPENED, "opened", " AND NOT machine"),
    (Outcome.HUMAN_CLICKED, "clicked", " AND NOT machine"),
    (Outcome.HUMAN_CONVERTED, "converted", " AND NOT machine"),
    (Outcome.HUMAN_UNSUBSCRIBED, "unsubscribed", " AND NOT machine"),
    (Outcome.HUMAN_COMPLAINED, "complained", " AND NOT machine"),
)

OUTCOME_COLUMNS: Final = (
    "outcomes",
    "conversion_currency",
    "conversion_revenue_micros",
    "human_revenue_micros",
)
"""The columns of ``messages`` that :func:`refresh_outcomes` computes, in its order."""


def outcome_select() -> str:
    """Return the select list folding one message's ``events`` into :data:`OUTCOME_COLUMNS`.

    Every aggregate is over the events of one message (the caller's ``FROM
    events WHERE message_id = ...``). The same text works on SQLite and
    PostgreSQL: a flag is ``MAX`` of 0 or its bit, combined with ``|``;
    revenue is kept only when every conversion with revenue is in one
    currency. Migration 0008 runs a copy of this text to backfill.
    """
    flags = " | ".join(
        f"MAX(CASE WHEN type = '{kind}'{extra} THEN {int(bit)} ELSE 0 END)"
        for bit, kind, extra in _OUTCOME_EVENTS
    )
    money = "type = 'converted' AND revenue_micros IS NOT NULL AND currency IS NOT NULL"
    cur = f"(CASE WHEN {money} THEN currency END)"
    one = f"MIN{cur} = MAX{cur}"
    mixed = f"CASE WHEN MIN{cur} <> MAX{cur} THEN {int(Outcome.MIXED_CURRENCY)} ELSE 0 END"
    return (
        f"COALESCE({flags} | {mixed}, 0), "
        f"CASE WHEN {one} THEN MIN{cur} END, "
        f"CASE WHEN {one} THEN SUM(CASE WHEN {money} THEN revenue_micros END) END, "
        f"CASE WHEN {one} THEN SUM(CASE WHEN {money} AND NOT machine "
        "THEN revenue_micros END) END"
    )


OutcomeValues = tuple[int, str | None, int | None, int | None]
"""A message's values of :data:`OUTCOME_COLUMNS`."""

NO_OUTCOMES: Final[OutcomeValues] = (0, None, None, None)
"""What :func:`outcome_select` gives a message without events (the columns' defaults)."""

_ANY_BITS: Final = {kind: int(bit) for bit, kind, extra in _OUTCOME_EVENTS if not extra}
_HUMAN_BITS: Final = {
    kind: int(bit) for bit, kind, extra in _OUTCOME_EVENTS if extra == " AND NOT machine"
}
_HARD_BIT: Final = int(Outcome.HARD_BOUNCED)
_INT64: Final = 2**63


def fold_outcomes(
    events: Iterable[tuple[str, str | None, bool, int | None, str | None]],
) -> OutcomeValues | None:
    """Fold one message's events into :data:`OUTCOME_COLUMNS` in memory, as :func:`outcome_select`.

    The same rules as the SQL text: each event sets its type's bit, and its
    ``HUMAN_*`` bit when not ``machine``; a hard bounce sets ``HARD_BOUNCED``;
    conversions with revenue and a currency are summed when they share one
    currency, and flag :attr:`Outcome.MIXED_CURRENCY` (revenue NULL) when not.
    Ingest uses it for the messages a batch stores together with their events,
    instead of recomputing them with an ``UPDATE`` (:func:`refresh_outcomes`).

    Args:
        events: ``(type, bounce, machine, revenue_micros, currency)`` of each
            event, as stored (enum values).

    Returns:
        The column values, or ``None`` when a sum leaves the 64-bit range (the
        caller leaves such a message to :func:`refresh_outcomes`, which fails
        as the database does).

    .. versionadded:: 0.4.0
    """
    bits = 0
    currency: str | None = None
    mixed = False
    total = 0
    human: int | None = None
    any_bits, human_bits = _ANY_BITS, _HUMAN_BITS
    for kind, bounce, machine, micros, cur in events:
        bits |= any_bits.get(kind, 0)
        if not machine:
            bits |= human_bits.get(kind, 0)
        if kind == "bounced" and bounce == "hard":
            bits |= _HARD_BIT
        if kind == "converted" and micros is not None and cur is not None:
            if currency is None:
                currency = cur
            elif cur != currency:
                mixed = True
            total += micros
            if not machine:
                human = micros if human is None else human + micros
            if not -_INT64 <= total < _INT64 or not -_INT64 <= (human or 0) < _INT64:
                return None  # SQLite's SUM fails on the way, PostgreSQL's on storing
    if mixed:
        return (bits | int(Outcome.MIXED_CURRENCY), None, None, None)
    if currency is None:
        return (bits, None, None, None)
    return (bits, currency, total, human)


def refresh_outcomes_sql(where: str) -> str:
    """Return the ``UPDATE`` that recomputes :data:`OUTCOME_COLUMNS` of the messages *where* picks.

    Args:
        where: A condition on ``messages`` (bare column names), e.g. an ``IN`` list.
    """
    return (
        f"UPDATE messages SET ({', '.join(OUTCOME_COLUMNS)}) = "
        f"(SELECT {outcome_select()} FROM events WHERE events.message_id = messages.message_id) "
        f"WHERE {where}"
    )


def refresh_outcomes(conn: sa.Connection, backend: Backend, message_ids: Iterable[str]) -> None:
    """Recompute the outcome columns of *message_ids* from their stored events.

    Called by ingest in the batch's transaction, after the batch's events are
    written and its orphans linked, for every message they name: the result is
    the fold of every event stored for the message, so a retried (duplicate)
    event changes nothing and an event that arrived before its message counts
    once it is linked. On PostgreSQL the rows are first locked in id order
    (``FOR NO KEY UPDATE``), so the ``UPDATE``, a later statement with a fresh
    snapshot, sees the events a concurrent writer committed meanwhile; and JIT
    compilation is off for the rest of the transaction.

    Args:
        conn: The connection, inside the writing transaction.
        backend: The database's bulk SQL.
        message_ids: Ids of stored messages (unknown ids are ignored).
    """
    ids = sorted(set(message_ids))
    if not ids:
        return
    if backend.name == "postgresql":
        # During a bulk load the statistics of events lag, the planner expects
        # hundreds of events per message, and JIT compiled this small UPDATE for
        # longer than it ran (0.9 s against 0.04 s per 1,000 messages).
        conn.exec_driver_sql("SET LOCAL jit = off")
        backend.select_in(
            conn,
            "SELECT COUNT(*) FROM (SELECT 1 FROM messages WHERE message_id IN ({in}) "
            "ORDER BY message_id FOR NO KEY UPDATE) AS locked",
            ids,
        )
    backend.execute_in(conn, refresh_outcomes_sql("message_id IN ({in})"), ids)


def outcome_counts(outcomes: int, exclude_machine: bool) -> tuple[int, ...] | None:
    """Return a message's counts in :data:`COUNTS` order from its :class:`Outcome` bits.

    ``None`` when the message was rejected (it was never sent). The rules are
    those of :func:`message_counts`, which folds the events themselves.

    Args:
        outcomes: The message's ``outcomes`` column.
        exclude_machine: Count only reactions not flagged ``machine``.
    """
    o = Outcome(outcomes)
    if Outcome.REJECTED in o:
        return None
    bounced = Outcome.BOUNCED in o
    failed = not bounced and Outcome.FAILED in o
    delivered = not bounced and not failed
    if exclude_machine:
        opened, clicked, converted, unsubscribed, complained = (
            Outcome.HUMAN_OPENED,
            Outcome.HUMAN_CLICKED,
            Outcome.HUMAN_CONVERTED,
            Outcome.HUMAN_UNSUBSCRIBED,
            Outcome.HUMAN_COMPLAINED,
        )
    else:
        opened, clicked, converted, unsubscribed, complained = (
            Outcome.OPENED,
            Outcome.CLICKED,
            Outcome.CONVERTED,
            Outcome.UNSUBSCRIBED,
            Outcome.COMPLAINED,
        )
    return (
        1,
        int(delivered),
        int(bounced),
        int(bounced and Outcome.HARD_BOUNCED in o),
        int(failed),
        int(delivered and bool(o & (opened | clicked))),
        int(delivered and clicked in o),
        int(delivered and converted in o),
        int(delivered and unsubscribed in o),
        int(delivered and complained in o),
    )


def kpi_query(
    *,
    keys: tuple[str, ...],
    local_day_sql: str | None,
    where: str,
    exclude_machine: bool,
    joins: str = "",
) -> tuple[str, str]:
    """Build the KPI SQL: the main aggregate and the mixed-currency revenue query.

    The main query reads ``messages`` alone and counts messages per group,
    :class:`Outcome` bits and conversion currency, summing their conversion
    revenue: a message's outcome bits decide all its counts
    (:func:`outcome_counts`), and few distinct combinations occur, so the
    database only groups rows and the rules run once per combination.
    Only messages flagged :attr:`Outcome.MIXED_CURRENCY` (rare) have their
    revenue summed from their events, by the second query.

    Args:
        keys: The grouping columns of ``messages``, or :data:`JOURNEY_KEYS`
            (read through ``joins``).
        local_day_sql: The local-day expression, when grouping by a period.
        where: The ``WHERE`` condition on ``messages m`` (with placeholders).
        exclude_machine: Count only reactions not flagged ``machine``.
        joins: Joins after ``messages m`` (the journey intents, ``ji`` and ``je``).

    Returns:
        ``(main_sql, mixed_currency_sql)``. The main query's columns are the
        keys, the local day (if any), the outcome bits, the currency, the
        number of messages and their revenue micros; the mixed-currency
        query's are the keys, the local day, a currency and its revenue micros.
    """
    revenue = "m.human_revenue_micros" if exclude_machine else "m.conversion_revenue_micros"
    group_cols = [_JOURNEY_SQL.get(k, f"m.{k}") for k in keys]
    if local_day_sql is not None:
        group_cols.append(local_day_sql)
    gsql = "".join(f"{c}, " for c in group_cols)
    main = (
        f"SELECT {gsql}m.outcomes, m.conversion_currency, COUNT(*), SUM({revenue}) "
        f"FROM messages m{joins} WHERE {where} "
        f"GROUP BY {gsql}m.outcomes, m.conversion_currency"
    )
    o = "m.outcomes"
    human = " AND NOT x.machine" if exclude_machine else ""
    mixed = (
        f"SELECT {gsql}x.currency, SUM(x.revenue_micros) "
        f"FROM messages m{joins} JOIN events x ON x.message_id = m.message_id "
        f"WHERE {where} AND ({o} & {int(Outcome.MIXED_CURRENCY)}) <> 0 "
        f"AND ({o} & {int(Outcome.REJECTED | Outcome.BOUNCED | Outcome.FAILED)}) = 0 "
        f"AND x.type = 'converted'{human} "
        "AND x.revenue_micros IS NOT NULL AND x.currency IS NOT NULL "
        f"GROUP BY {gsql}x.currency"
    )
    return main, mixed


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


class SQLKpiStore(KpiStore):
    """:class:`KpiStore` over :class:`~commhistory.store.sql.SQLRepository`."""

    def __init__(self, repo: SQLRepository) -> None:
        self.repo = repo

    def rebuild_outcomes(self) -> int:
        """Recompute every message's outcome columns from the events stored now.

        Ingest keeps them up to date; call this after deleting or editing
        ``events`` rows outside the library (for instance under a retention
        policy of your own), when the KPIs should forget those events.
        Without it, a message keeps the outcomes its deleted events gave it.

        Returns:
            The number of messages updated (every message).

        Raises:
            StorageError: The database failed.

        .. versionadded:: 0.4.0
        """
        with self.repo.transaction() as conn:
            result = conn.exec_driver_sql(refresh_outcomes_sql("1 = 1"))
            return int(result.rowcount)

    def link_clicks(self, query: KpiQuery) -> tuple[LinkClickRow, ...]:
        """See :meth:`KpiStore.link_clicks`: one ``GROUP BY`` on the plain ``events.link``."""
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
        sql = (
            "SELECT m.campaign_id, e.link, COUNT(*), "
            "SUM(CASE WHEN e.machine THEN 0 ELSE 1 END) "
            "FROM events e JOIN messages m ON m.message_id = e.message_id "
            f"WHERE e.type = 'clicked' AND e.link IS NOT NULL AND {where} "
            "GROUP BY m.campaign_id, e.link"
        )
        with repo.transaction(read=True) as conn:
            rows = conn.exec_driver_sql(sql, tuple(params)).all()
        return tuple(LinkClickRow(_text(r[0]), str(r[1]), int(r[2]), int(r[3] or 0)) for r in rows)

    def aggregate(self, query: KpiQuery) -> KpiAggregate:
        """See :meth:`KpiStore.aggregate`."""
        columns = tuple(k for k in query.columns if k in GROUP_KEYS or k in JOURNEY_KEYS)
        repo = self.repo
        ph = repo.backend.ph
        where = "m.direction = 'outbound'"
        params: list[Any] = []
        joins = _JOURNEY_JOIN if query.by_journey else ""
        if query.journey is not None:
            where += f" AND je.journey_key = {ph}"
            params.append(query.journey)
            if query.journey_version is not None:
                where += f" AND je.version = {ph}"
                params.append(query.journey_version)
        if query.since is not None:
            where += f" AND m.sent_at >= {ph}"
            params.append(to_micros(query.since))
        if query.until is not None:
            where += f" AND m.sent_at < {ph}"
            params.append(to_micros(query.until))
        with repo.transaction(read=True) as conn:
            unmatched = int(
                conn.exec_driver_sql(
                    "SELECT COUNT(*) FROM events WHERE contact_id IS NULL"
                ).scalar_one()
            )
            local_day_sql = None
            if query.local_day:
                lo, hi = conn.exec_driver_sql(
                    f"SELECT MIN(m.sent_at), MAX(m.sent_at) FROM messages m{joins} WHERE {where}",
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
                joins=joins,
            )
            rows = conn.exec_driver_sql(main, tuple(params)).all()
            n_group = len(columns) + query.local_day
            mixed_rows: Sequence[Any] = ()
            if any(int(r[n_group]) & Outcome.MIXED_CURRENCY for r in rows):
                mixed_rows = conn.exec_driver_sql(mixed, tuple(params)).all()

        ncols = len(columns)

        def day(values: Sequence[Any]) -> int | None:
            return int(values[ncols]) if query.local_day else None

        rules: dict[int, tuple[int, ...] | None] = {}
        out: list[KpiRowData] = []
        for r in rows:
            bits = int(r[n_group])
            if bits not in rules:
                rules[bits] = outcome_counts(bits, query.exclude_machine)
            one = rules[bits]
            if one is None:  # rejected: never sent
                continue
            cur, n, rev = r[n_group + 1], int(r[n_group + 2]), r[n_group + 3]
            plain = cur is not None and rev is not None and one[1] == 1  # delivered
            out.append(
                KpiRowData(
                    group=tuple(_text(v) for v in r[:ncols]),
                    local_day=day(r),
                    counts=tuple(c * n for c in one),
                    currency=cur if plain else None,
                    revenue_micros=int(rev) if plain else None,
                )
            )
        zeros = (0,) * len(COUNTS)
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

    def link_clicks(self, query: KpiQuery) -> tuple[LinkClickRow, ...]:
        """See :meth:`KpiStore.link_clicks` (labels computed from the events' URLs)."""
        messages: Mapping[str, Message] = self.s.messages
        counts: dict[tuple[str | None, str], list[int]] = {}
        for e in self.s.events.values():
            m = messages.get(e.message_id) if e.message_id is not None else None
            if m is None or m.direction is not Direction.OUTBOUND:
                continue
            if e.type is not EventType.CLICKED:
                continue
            if query.since is not None and m.sent_at < query.since:
                continue
            if query.until is not None and m.sent_at >= query.until:
                continue
            link = link_label(e.url)
            if link is None:
                continue
            have = counts.setdefault((m.campaign_id, link), [0, 0])
            have[0] += 1
            have[1] += 0 if e.machine else 1
        return tuple(LinkClickRow(cid, link, c, h) for (cid, link), (c, h) in counts.items())

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
        columns = tuple(k for k in query.columns if k in GROUP_KEYS or k in JOURNEY_KEYS)
        links = self._journey_links(query) if query.by_journey else None
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
            day = local_day(m.sent_at, query.zone) if query.local_day else None
            for link in (None,) if links is None else links.get(mid, ()):
                group = group_values(m, columns, link)
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

    def _journey_links(self, query: KpiQuery) -> dict[str, list[JourneyLink]]:
        """The journey links of the messages, as the SQL join finds them (the query's filter)."""
        journeys = self.s.journeys
        out: dict[str, list[JourneyLink]] = {}
        for intent in journeys.intents.values():
            if intent.outcome != "sent" or intent.message_id is None:
                continue
            row = journeys.enrollments.get(intent.enrollment_id)
            if row is None:
                continue
            link = JourneyLink(intent.message_id, row.journey_key, row.version, intent.step_id)
            if journey_selected(link, query):
                out.setdefault(intent.message_id, []).append(link)
        return out


def journey_selected(link: JourneyLink, query: KpiQuery) -> bool:
    """Whether a journey link passes the query's ``journey`` and ``journey_version`` filter.

    .. versionadded:: 0.4.0
    """
    if query.journey is not None and link.journey != query.journey:
        return False
    return query.journey_version is None or link.version == query.journey_version


def group_values(
    m: Message, columns: Sequence[str], link: JourneyLink | None
) -> tuple[str | None, ...]:
    """A message's values of the grouping columns (journey ones from its ``link``), as text.

    .. versionadded:: 0.4.0
    """
    out: list[str | None] = []
    for k in columns:
        if k in JOURNEY_KEYS:
            assert link is not None
            out.append(
                link.journey if k == "journey" else link.step if k == "step" else str(link.version)
            )
        else:
            out.append(_text(getattr(m, k)))
    return tuple(out)
