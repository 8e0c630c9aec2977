"""The ingest hook: feed suppression and consent from each stored batch.

Called by the repositories inside the batch's unit of work (the SQL
transaction), so a batch and what it implies are stored together or not at all.
"""

# ruff: noqa: S608

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

import sqlalchemy as sa

from commhistory.consent._data import MemoryConsentData, SQLConsentData
from commhistory.consent.suppression import SOFT_BOUNCE_LIMIT, apply_feed, signals
from commhistory.model import (
    BounceClass,
    Channel,
    Direction,
    Event,
    EventType,
    Message,
    Purpose,
)
from commhistory.store._common import Batch, from_micros

__all__ = ["feed_memory", "feed_sql"]

INTERESTING: Final = frozenset(
    {EventType.BOUNCED, EventType.COMPLAINED, EventType.UNSUBSCRIBED, EventType.SUBSCRIBED}
)
_TYPES: Final = tuple(sorted(t.value for t in INTERESTING))
Outcome = tuple[datetime, str, EventType, BounceClass | None]


def _inbound(batch: Batch) -> list[Message]:
    return [
        m for m in batch.messages if m.direction is Direction.INBOUND and m.channel is Channel.SMS
    ]


def _needed(batch: Batch) -> bool:
    return any(e.type in INTERESTING for e in batch.events) or bool(batch.messages)


def feed_sql(repo: Any, conn: sa.Connection, batch: Batch, pending: Any) -> list[str]:
    """Feed from a batch just written by a :class:`~commhistory.store.sql.SQLRepository`.

    Returns:
        The ids of what changed (see :func:`~commhistory.consent.suppression.apply_feed`).
    """
    if not _needed(batch):
        return []
    data = SQLConsentData(repo)
    be = repo.backend
    types = ", ".join(f"'{t}'" for t in _TYPES)
    select = (
        "SELECT e.event_id, e.type, e.occurred_at, e.bounce, m.message_id, m.contact_id, "
        "m.channel, m.direction, m.purpose, m.sent_at, m.address FROM events e "
        f"JOIN messages m ON m.message_id = e.message_id WHERE e.type IN ({types}) "
    )
    rows: dict[str, tuple[Any, ...]] = {}
    event_ids = [e.event_id for e in batch.events if e.type in INTERESTING]
    if event_ids:
        for r in be.select_in(conn, select + "AND e.event_id IN ({in})", event_ids):
            rows[r[0]] = r
    message_ids = [m.message_id for m in batch.messages]
    if message_ids:
        for r in be.select_in(conn, select + "AND m.message_id IN ({in})", message_ids):
            rows[r[0]] = r
    inbound = _inbound(batch)
    if not rows and not inbound:
        return []
    ciphers = repo.ciphers(conn, {r[5] for r in rows.values()}, pending, create=False)
    pairs = []
    for r in rows.values():
        cipher = ciphers.get(r[5])
        if cipher is None:
            continue
        address = cipher.decrypt_text(
            bytes(r[10]), table="messages", column="address", row_id=r[4]
        )
        pairs.append((_event(r), _message(r, address or "")))

    def outcomes(m: Message) -> list[Outcome]:
        ph = be.ph
        found = conn.exec_driver_sql(
            "SELECT e.occurred_at, e.event_id, e.type, e.bounce, m.message_id, m.address "
            "FROM events e JOIN messages m ON m.message_id = e.message_id "
            f"WHERE m.contact_id = {ph} AND m.channel = {ph} "
            "AND e.type IN ('bounced', 'delivered') ORDER BY e.occurred_at DESC LIMIT 500",
            (m.contact_id, m.channel.value),
        ).all()
        cipher = ciphers.get(m.contact_id)
        out: list[Outcome] = []
        for t, eid, typ, bounce, mid, blob in found:
            if cipher is None:
                continue
            addr = cipher.decrypt_text(bytes(blob), table="messages", column="address", row_id=mid)
            if addr == m.address:
                out.append(
                    (
                        from_micros(int(t)),
                        eid,
                        EventType(typ),
                        None if bounce is None else BounceClass(bounce),
                    )
                )
        return out

    return apply_feed(
        data,
        signals(pairs, inbound),
        conn=conn,
        outcomes=outcomes,
        soft_bounce_limit=getattr(repo, "soft_bounce_limit", SOFT_BOUNCE_LIMIT),
    )


def _event(r: tuple[Any, ...]) -> Event:
    return Event(
        event_id=r[0],
        type=EventType(r[1]),
        occurred_at=from_micros(int(r[2])),
        bounce=None if r[3] is None else BounceClass(r[3]),
        message_id=r[4],
    )


def _message(r: tuple[Any, ...], address: str) -> Message:
    return Message(
        message_id=r[4],
        contact_id=r[5],
        channel=Channel(r[6]),
        direction=Direction(r[7]),
        purpose=Purpose(r[8]),
        sent_at=from_micros(int(r[9])),
        address=address,
    )


def feed_memory(repo: Any, batch: Batch) -> list[str]:
    """Feed from a batch just applied by a :class:`~commhistory.store.memory.MemoryRepository`."""
    if not _needed(batch):
        return []
    data = MemoryConsentData(repo)
    s = data.s
    chosen: dict[str, Event] = {}
    for e in batch.events:
        stored = s.events.get(e.event_id)
        if stored is not None and stored.type in INTERESTING:
            chosen[stored.event_id] = stored
    message_ids = {m.message_id for m in batch.messages}
    if message_ids:
        for e in s.events.values():
            if e.message_id in message_ids and e.type in INTERESTING:
                chosen[e.event_id] = e
    pairs = []
    for e in chosen.values():
        m = s.messages.get(e.message_id or "")
        if m is not None and s.event_contact.get(e.event_id) is not None:
            pairs.append((e, m))
    inbound = _inbound(batch)
    if not pairs and not inbound:
        return []

    def outcomes(m: Message) -> list[Outcome]:
        out: list[Outcome] = []
        for e in s.events.values():
            if e.type not in (EventType.BOUNCED, EventType.DELIVERED):
                continue
            other = s.messages.get(e.message_id or "")
            if (
                other is not None
                and other.contact_id == m.contact_id
                and other.channel is m.channel
                and other.address == m.address
            ):
                out.append((e.occurred_at, e.event_id, e.type, e.bounce))
        return out

    return apply_feed(
        data,
        signals(pairs, inbound),
        outcomes=outcomes,
        soft_bounce_limit=getattr(repo, "soft_bounce_limit", SOFT_BOUNCE_LIMIT),
    )
