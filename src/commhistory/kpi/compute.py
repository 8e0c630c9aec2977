"""The in-memory KPI engine: :func:`compute` over records you hold.

It implements DESIGN section 5 directly, one message at a time, and is the
reference the store engines (:mod:`commhistory.store.kpi`) are tested against.

.. versionadded:: 0.2.0
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from commhistory.kpi.metrics import (
    GROUP_KEYS,
    PERIODS,
    Accumulator,
    KpiTable,
    check_by,
    check_range,
    check_tz,
    period_label,
)
from commhistory.model import BounceClass, Direction, Event, EventType, Message

__all__ = ["REACTIONS", "compute", "local_day"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_DAY_US = 86_400_000_000
_REVENUE_SCALE = 1_000_000

REACTIONS = frozenset(
    {
        EventType.OPENED,
        EventType.CLICKED,
        EventType.CONVERTED,
        EventType.UNSUBSCRIBED,
        EventType.COMPLAINED,
    }
)
"""Event types left out when flagged ``machine`` and ``exclude_machine`` is true."""


def local_day(moment: datetime, zone: ZoneInfo) -> int:
    """Return the day number (days since 1970-01-01) of *moment*'s local date in *zone*."""
    utc_us = (moment - _EPOCH) // _US
    offset = moment.astimezone(zone).utcoffset()
    assert offset is not None  # a ZoneInfo always knows the offset of an instant
    return (utc_us + offset // _US) // _DAY_US


def _micros(amount: Decimal) -> int:
    return int(amount * _REVENUE_SCALE)


def compute(
    messages: Iterable[Message],
    events: Iterable[Event],
    *,
    by: str | Iterable[str] = (),
    since: datetime | None = None,
    until: datetime | None = None,
    tz: str | ZoneInfo = "UTC",
    exclude_machine: bool = True,
) -> KpiTable:
    """Compute KPIs (DESIGN section 5) from messages and events held in memory.

    Events find their message by ``message_id``, or, without one, by
    ``provider`` and ``provider_message_id``; events that find none are counted
    in :attr:`KpiTable.unmatched_events` and nowhere else. Repeated message or
    event ids (and repeated provider event ids) count once, as in a repository.

    Args:
        messages: The messages (inbound ones are ignored).
        events: Their events, in any order.
        by: Grouping keys: any of ``campaign_id``, ``variant``, ``channel``,
            ``provider``, ``purpose`` and at most one of ``day``, ``week``, ``month``.
        since: Only messages sent at or after this aware datetime.
        until: Only messages sent before this aware datetime.
        tz: The IANA time zone periods are computed in.
        exclude_machine: Leave out reactions flagged ``machine`` (the default).

    Returns:
        The table, one row per group with at least one sent message.

    Raises:
        InvalidInputError: Unknown or repeated grouping keys, an unknown zone,
            naive bounds, or ``since`` after ``until``.

    Example:
        >>> from datetime import datetime, UTC
        >>> from commhistory import Channel, Direction, Event, EventType, Message
        >>> from commhistory.kpi import compute
        >>> m = Message(message_id="m1", channel=Channel.SMS, direction=Direction.OUTBOUND,
        ...             contact_id="c1", address="+819012345678",
        ...             sent_at=datetime(2024, 5, 1, tzinfo=UTC), campaign_id="spring")
        >>> e = Event(event_id="e1", type=EventType.CLICKED, message_id="m1",
        ...           occurred_at=datetime(2024, 5, 1, 0, 5, tzinfo=UTC))
        >>> row = compute([m], [e], by="campaign_id").row(campaign_id="spring")
        >>> (row.sent, row.delivered, row.unique_opens, row.unique_clicks, row.click_rate)
        (1, 1, 1, 1, 1.0)
    """
    keys = check_by(by)
    zone = check_tz(tz)
    check_range(since, until)
    period = next((k for k in keys if k in PERIODS), None)

    by_id: dict[str, Message] = {}
    by_pair: dict[tuple[str, str], str] = {}
    for m in messages:
        pair = (m.provider, m.provider_message_id)
        if m.message_id in by_id or pair in by_pair:
            continue
        by_id[m.message_id] = m
        if m.provider is not None and m.provider_message_id is not None:
            by_pair[(m.provider, m.provider_message_id)] = m.message_id

    per_message: dict[str, list[Event]] = {}
    seen_ids: set[str] = set()
    seen_provider: set[tuple[str, str]] = set()
    unmatched = 0
    for e in events:
        if e.event_id in seen_ids:
            continue
        if e.provider is not None and e.provider_event_id is not None:
            pe = (e.provider, e.provider_event_id)
            if pe in seen_provider:
                continue
            seen_provider.add(pe)
        seen_ids.add(e.event_id)
        if e.message_id is not None:
            mid: str | None = e.message_id if e.message_id in by_id else None
        else:
            mid = by_pair.get((e.provider, e.provider_message_id))  # type: ignore[arg-type]
        if mid is None:
            unmatched += 1
            continue
        per_message.setdefault(mid, []).append(e)

    acc = Accumulator(keys)
    for mid, m in by_id.items():
        if m.direction is not Direction.OUTBOUND:
            continue
        if since is not None and m.sent_at < since:
            continue
        if until is not None and m.sent_at >= until:
            continue
        counts, revenue = _message_counts(per_message.get(mid, ()), exclude_machine)
        if counts is None:
            continue
        key = tuple(_key_value(m, k, period, zone) for k in keys)
        acc.add(key, counts, revenue)
    return acc.table(unmatched_events=unmatched, exclude_machine=exclude_machine, tz=zone.key)


def _key_value(m: Message, key: str, period: str | None, zone: ZoneInfo) -> str | None:
    if key in GROUP_KEYS:
        value = getattr(m, key)
        return None if value is None else str(value)
    assert period is not None
    return period_label(period, local_day(m.sent_at, zone))


def _message_counts(
    events: Iterable[Event], exclude_machine: bool
) -> tuple[list[int] | None, dict[str, int]]:
    """Return one message's counts in :data:`~commhistory.kpi.metrics.COUNTS` order.

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
            revenue[e.currency] = revenue.get(e.currency, 0) + _micros(e.revenue)
    if EventType.REJECTED in seen:
        return None, {}
    bounced = EventType.BOUNCED in seen
    failed = not bounced and EventType.FAILED in seen
    delivered = not bounced and not failed
    clicked = delivered and EventType.CLICKED in seen
    opened = clicked or (delivered and EventType.OPENED in seen)
    converted = delivered and EventType.CONVERTED in seen
    counts = [
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
    ]
    return counts, (revenue if converted else {})
