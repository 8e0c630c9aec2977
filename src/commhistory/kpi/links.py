"""Clicks per link: the links of each campaign, ranked by clicks, with their share.

A click's URL is encrypted (a query string or a path can carry a personal
token), so the store keeps each click's *link label* in the clear at ingest
(:func:`commhistory.normalize.link.link_label`: scheme, host and path with
identifier-like segments masked; no query string or fragment). Clicks are
counted per campaign and label in the database
(:meth:`KpiStore.link_clicks <commhistory.store.kpi.KpiStore.link_clicks>`),
with nothing decrypted, so a reader with ``read_metrics`` alone sees them.

These are click *events* (a contact clicking twice counts twice), unlike the
KPI table's ``unique_clicks`` (messages with a click). ``human_clicks`` leaves
out the clicks flagged ``machine`` (link scanners; see :mod:`commhistory.kpi.machine`).

.. versionadded:: 0.4.0
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import attrs

from commhistory.errors import InvalidInputError
from commhistory.kpi.metrics import check_range
from commhistory.store.kpi import KpiQuery
from commhistory.store.protocol import Repository

__all__ = ["LinkClicks", "link_clicks", "top_links"]


@attrs.frozen(kw_only=True)
class LinkClicks:
    """The clicks on one link of one campaign.

    Attributes:
        campaign_id: The campaign of the clicked messages (``None``: none).
        link: The link label (``https://host/path``).
        clicks: Click events on it, machine ones included.
        human_clicks: Click events not flagged ``machine``.
        share: This link's part of the campaign's clicks (human clicks when
            machine ones are excluded), from 0 to 1; ``None`` when the
            campaign has none.

    .. versionadded:: 0.4.0
    """

    campaign_id: str | None
    link: str
    clicks: int
    human_clicks: int
    share: float | None


def link_clicks(
    repo: Repository,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    exclude_machine: bool = True,
) -> tuple[LinkClicks, ...]:
    """Count the clicks per campaign and link, most clicked first within each campaign.

    Args:
        repo: The repository.
        since: Only clicks on messages sent at or after this aware datetime.
        until: Only clicks on messages sent before this aware datetime.
        exclude_machine: Rank and share by human clicks (the default), or by all.

    Returns:
        Every (campaign, link), campaigns in id order (``None`` last), links by
        clicks (descending) then label.

    Raises:
        InvalidInputError: A naive bound, or ``since`` after ``until``.
        StorageError: The database failed.
    """
    check_range(since, until)
    rows = repo.kpi_store.link_clicks(KpiQuery(since=since, until=until))
    totals: dict[str | None, int] = {}
    for r in rows:
        counted = r.human_clicks if exclude_machine else r.clicks
        totals[r.campaign_id] = totals.get(r.campaign_id, 0) + counted

    def order(r: LinkClicks) -> tuple[bool, str, int, str]:
        counted = r.human_clicks if exclude_machine else r.clicks
        return (r.campaign_id is None, r.campaign_id or "", -counted, r.link)

    result = [
        LinkClicks(
            campaign_id=r.campaign_id,
            link=r.link,
            clicks=r.clicks,
            human_clicks=r.human_clicks,
            share=(
                (r.human_clicks if exclude_machine else r.clicks) / totals[r.campaign_id]
                if totals[r.campaign_id]
                else None
            ),
        )
        for r in rows
    ]
    return tuple(sorted(result, key=order))


def top_links(links: Sequence[LinkClicks], top: int) -> tuple[LinkClicks, ...]:
    """Keep the first *top* links of each campaign (of :func:`link_clicks`' ordering).

    Raises:
        InvalidInputError: *top* is not a positive integer.
    """
    given: object = top
    if isinstance(given, bool) or not isinstance(given, int) or given < 1:
        raise InvalidInputError(field="top", reason="must be a positive integer")
    seen: dict[str | None, int] = {}
    kept = []
    for link in links:
        n = seen.get(link.campaign_id, 0)
        if n < top:
            kept.append(link)
        seen[link.campaign_id] = n + 1
    return tuple(kept)
