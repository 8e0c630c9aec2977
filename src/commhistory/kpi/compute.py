"""The in-memory KPI engine: :func:`compute` over records you hold.

It applies DESIGN section 5 one message at a time, with the same per-message
rules (:func:`commhistory.store.kpi.message_counts`) as the in-memory store; the
SQL engine applies them to the outcome bits ingest keeps on each message
(:func:`commhistory.store.kpi.outcome_counts`) and is tested against this one.

.. versionadded:: 0.2.0
.. versionchanged:: 0.4.0
   ``costs``: campaign costs, ROI and cost per conversion.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from zoneinfo import ZoneInfo

from commhistory.kpi.costs import attribute_costs
from commhistory.kpi.metrics import (
    PERIODS,
    Accumulator,
    KpiTable,
    check_by,
    check_journey,
    check_range,
    check_tz,
    period_label,
)
from commhistory.model import Direction, Event, Message
from commhistory.store.costs import Cost, check_costs, total_costs
from commhistory.store.kpi import (
    REACTIONS,
    JourneyLink,
    KpiQuery,
    group_values,
    journey_selected,
    local_day,
    message_counts,
)

__all__ = ["REACTIONS", "compute", "local_day"]


def compute(
    messages: Iterable[Message],
    events: Iterable[Event],
    *,
    by: str | Iterable[str] = (),
    since: datetime | None = None,
    until: datetime | None = None,
    tz: str | ZoneInfo = "UTC",
    exclude_machine: bool = True,
    costs: Iterable[Cost] = (),
    journey_links: Iterable[JourneyLink] = (),
    journey: str | None = None,
    journey_version: int | None = None,
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
        costs: Campaign costs to show with the rows (see :mod:`commhistory.kpi.costs`);
            a repeated ``cost_id`` counts once, as in a repository.
        journey_links: Which messages were recorded for which journey step (what
            a repository reads from ``journey_intents``); needed to group by
            ``journey``, ``journey_version`` or ``step`` or to filter by journey.
        journey: Only the messages linked to this journey key.
        journey_version: Only those linked to this version of ``journey``.

    Returns:
        The table, one row per group with at least one sent message.

    Raises:
        InvalidInputError: Unknown or repeated grouping keys, an unknown zone,
            naive bounds, or ``since`` after ``until``; a cost that is not a
            :class:`~commhistory.kpi.Cost`, or a ``cost_id`` repeated with other values.

    .. versionchanged:: 0.4.0
       ``journey_links``, ``journey`` and ``journey_version``.

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
    check_journey(journey, journey_version)
    period = next((k for k in keys if k in PERIODS), None)
    columns = tuple(k for k in keys if k not in PERIODS)
    selection = KpiQuery(journey=journey, journey_version=journey_version, columns=columns)
    links: dict[str, list[JourneyLink]] | None = None
    if selection.by_journey:
        links = {}
        for link in journey_links:
            if journey_selected(link, selection):
                links.setdefault(link.message_id, []).append(link)

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
        counts, revenue = message_counts(per_message.get(mid, ()), exclude_machine)
        if counts is None:
            continue
        label = None if period is None else period_label(period, local_day(m.sent_at, zone))
        targets: tuple[JourneyLink | None, ...] = (
            (None,) if links is None else tuple(links.get(mid, ()))
        )
        for target in targets:
            values = iter(group_values(m, columns, target))
            key = tuple(label if k in PERIODS else next(values) for k in keys)
            acc.add(key, counts, revenue)
    table = acc.table(unmatched_events=unmatched, exclude_machine=exclude_machine, tz=zone.key)
    totals = total_costs(check_costs(costs), since=since, until=until)
    return attribute_costs(table, totals, since=since, until=until)
