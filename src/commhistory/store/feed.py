"""What a write batch shows the batch feeds: :class:`~commhistory.store.protocol.StoredBatch`.

The store knows nothing of consent. After a batch is written, inside its
transaction, each repository calls the feeds installed with
``set_batch_feed`` with a view of the batch: its records, in memory, and two
lookups the consent rules need (the reactions the batch stored or linked, with
their messages; an address's latest deliveries and bounces). This module holds
that view for the SQL and the in-memory repository.

.. versionadded:: 0.4.0
"""

# SQL text here is built only from schema identifiers, placeholders and fixed
# event type names; every value is bound.
# ruff: noqa: S608

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING, Any, Final

import sqlalchemy as sa

from commhistory.model import (
    Activity,
    BounceClass,
    Channel,
    ConsentEvent,
    Direction,
    Event,
    EventType,
    Message,
    Purpose,
)
from commhistory.normalize.time import from_micros
from commhistory.store._backend import Row
from commhistory.store.batching import Batch
from commhistory.store.protocol import DeliveryOutcome

if TYPE_CHECKING:
    from commhistory.crypto import FieldCipher
    from commhistory.store.memory import MemoryState

__all__ = ["MemoryStoredBatch", "SQLStoredBatch"]

HISTORY_LIMIT: Final = 500
"""The most deliveries and bounces :meth:`deliveries` reads back for one address."""

_SELECT: Final = (
    "SELECT e.event_id, e.type, e.occurred_at, e.bounce, m.message_id, m.contact_id, "
    "m.channel, m.direction, m.purpose, m.sent_at, m.address FROM events e "
    "JOIN messages m ON m.message_id = e.message_id WHERE e.type IN ({types}) "
)


class _BatchRecords:
    """The batch's own records, shared by both views."""

    def __init__(self, batch: Batch, source: str) -> None:
        self._batch = batch
        self._source = source

    @property
    def source(self) -> str:
        """The source name given to ``ingest`` (or the method's name)."""
        return self._source

    @property
    def messages(self) -> Sequence[Message]:
        """The batch's messages, in input order."""
        return self._batch.messages

    @property
    def events(self) -> Sequence[Event]:
        """The batch's events, in input order."""
        return self._batch.events

    @property
    def consents(self) -> Sequence[ConsentEvent]:
        """The batch's consent events, in input order."""
        return self._batch.consents

    @property
    def activities(self) -> Sequence[Activity]:
        """The activities the batch stored now, in ``activity_id`` order."""
        return self._batch.stored_activities


class SQLStoredBatch(_BatchRecords):
    """A batch written by the SQL repository, seen inside its open transaction.

    Args:
        conn: The batch's connection.
        batch: The batch.
        source: Its source name.
        ph: The dialect's placeholder.
        select_in: The backend's ``select_in``.
        ciphers: ``ciphers(contact_ids)`` returning the contacts' field ciphers
            (erased contacts are missing).
        settled: Messages this batch stored whose only stored events are the
            batch's own (no orphan linked): :meth:`reactions` finds those events
            by their ids and does not look such a message's events up again.

    .. versionchanged:: 0.4.0
       *settled*.
    """

    def __init__(
        self,
        conn: sa.Connection,
        batch: Batch,
        source: str,
        *,
        ph: str,
        select_in: Callable[[sa.Connection, str, Collection[str]], list[Row]],
        ciphers: Callable[[Collection[str]], dict[str, FieldCipher]],
        settled: Collection[str] = (),
    ) -> None:
        super().__init__(batch, source)
        self._settled = settled
        self._conn = conn
        self._ph = ph
        self._select_in = select_in
        self._ciphers = ciphers
        self._known: dict[str, FieldCipher] = {}

    def _cipher(self, contact_id: str) -> FieldCipher | None:
        if contact_id not in self._known:
            self._known.update(self._ciphers({contact_id}))
        return self._known.get(contact_id)

    def reactions(self, types: Collection[EventType]) -> list[tuple[Event, Message]]:
        """See :meth:`~commhistory.store.protocol.StoredBatch.reactions`."""
        wanted = {t.value for t in types}
        if not wanted:
            return []
        select = _SELECT.format(types=", ".join(f"'{t}'" for t in sorted(wanted)))
        rows: dict[str, Row] = {}
        event_ids = [e.event_id for e in self.events if e.type.value in wanted]
        if event_ids:
            for r in self._select_in(self._conn, select + "AND e.event_id IN ({in})", event_ids):
                rows[r[0]] = r
        settled = self._settled
        message_ids = [m.message_id for m in self.messages if m.message_id not in settled]
        if message_ids:
            for r in self._select_in(
                self._conn, select + "AND m.message_id IN ({in})", message_ids
            ):
                rows[r[0]] = r
        if not rows:
            return []
        self._known.update(self._ciphers({r[5] for r in rows.values()}))
        out: list[tuple[Event, Message]] = []
        for r in rows.values():
            cipher = self._known.get(r[5])
            if cipher is None:
                continue
            address = cipher.decrypt_text(r[10], table="messages", column="address", row_id=r[4])
            out.append((_event(r), _message(r, address or "")))
        return out

    def deliveries(self, message: Message) -> list[DeliveryOutcome]:
        """See :meth:`~commhistory.store.protocol.StoredBatch.deliveries`."""
        ph = self._ph
        found = self._conn.exec_driver_sql(
            "SELECT e.occurred_at, e.event_id, e.type, e.bounce, m.message_id, m.address "
            "FROM events e JOIN messages m ON m.message_id = e.message_id "
            f"WHERE m.contact_id = {ph} AND m.channel = {ph} "
            "AND e.type IN ('bounced', 'delivered') "
            f"ORDER BY e.occurred_at DESC LIMIT {HISTORY_LIMIT}",
            (message.contact_id, message.channel.value),
        ).all()
        cipher = self._cipher(message.contact_id)
        out: list[DeliveryOutcome] = []
        if cipher is None:
            return out
        for t, eid, typ, bounce, mid, blob in found:
            addr = cipher.decrypt_text(blob, table="messages", column="address", row_id=mid)
            if addr == message.address:
                out.append(
                    (
                        from_micros(int(t)),
                        eid,
                        EventType(typ),
                        None if bounce is None else BounceClass(bounce),
                    )
                )
        return out


def _event(r: Sequence[Any]) -> Event:
    return Event(
        event_id=r[0],
        type=EventType(r[1]),
        occurred_at=from_micros(int(r[2])),
        bounce=None if r[3] is None else BounceClass(r[3]),
        message_id=r[4],
    )


def _message(r: Sequence[Any], address: str) -> Message:
    return Message(
        message_id=r[4],
        contact_id=r[5],
        channel=Channel(r[6]),
        direction=Direction(r[7]),
        purpose=Purpose(r[8]),
        sent_at=from_micros(int(r[9])),
        address=address,
    )


class MemoryStoredBatch(_BatchRecords):
    """A batch applied by the in-memory repository.

    Args:
        state: The repository's state, after the batch was applied.
        batch: The batch.
        source: Its source name.
    """

    def __init__(self, state: MemoryState, batch: Batch, source: str) -> None:
        super().__init__(batch, source)
        self._s = state

    def reactions(self, types: Collection[EventType]) -> list[tuple[Event, Message]]:
        """See :meth:`~commhistory.store.protocol.StoredBatch.reactions`."""
        s = self._s
        chosen: dict[str, Event] = {}
        for e in self.events:
            stored = s.events.get(e.event_id)
            if stored is not None and stored.type in types:
                chosen[stored.event_id] = stored
        message_ids = {m.message_id for m in self.messages}
        if message_ids:
            for e in s.events.values():
                if e.message_id in message_ids and e.type in types:
                    chosen[e.event_id] = e
        out: list[tuple[Event, Message]] = []
        for e in chosen.values():
            m = s.messages.get(e.message_id or "")
            if (
                m is not None
                and s.event_contact.get(e.event_id) is not None
                and m.contact_id not in s.erased
            ):
                out.append((e, m))
        return out

    def deliveries(self, message: Message) -> list[DeliveryOutcome]:
        """See :meth:`~commhistory.store.protocol.StoredBatch.deliveries`."""
        s = self._s
        out: list[DeliveryOutcome] = []
        for e in s.events.values():
            if e.type not in (EventType.BOUNCED, EventType.DELIVERED):
                continue
            other = s.messages.get(e.message_id or "")
            if (
                other is not None
                and other.contact_id == message.contact_id
                and other.channel is message.channel
                and other.address == message.address
            ):
                out.append((e.occurred_at, e.event_id, e.type, e.bounce))
        out.sort(reverse=True)
        return out[:HISTORY_LIMIT]
