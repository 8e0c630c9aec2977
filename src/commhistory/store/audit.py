"""Audit storage: the ports the audit package uses, on SQL and in memory.

* :class:`AuditStore`: where the audit chain's rows live. Appends run under a
  writer lock (SQLite: the write lock of ``BEGIN IMMEDIATE``; PostgreSQL: a
  transaction-level advisory lock, :data:`AUDIT_LOCK_KEY`, taken before the
  chain head is read), so concurrent writers extend one chain. The
  ``audit_log`` table is append-only (triggers, migration 0004). The store also
  names the key provider that authenticates its entries.
* :class:`MaskedHistory`: a contact's history read from plain columns only
  (ids, channel, times, the masked address...): no data key is unwrapped.

:class:`SQLAuditStore`, :class:`MemoryAuditStore`, :class:`SQLMaskedHistory`
and :class:`MemoryMaskedHistory` implement them; a repository hands its own out
as ``repo.audit_store`` and ``repo.masked_history``. The chain rules (entry
building, HMACs, verification) stay in :mod:`commhistory.audit.log`.

SQL statements are built from schema identifiers and placeholders; every value
is bound.

.. versionadded:: 0.4.0
   Moved here from ``commhistory.audit.log`` and ``commhistory.audit.masked``.
"""

# ruff: noqa: S608

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, NamedTuple, Protocol

import sqlalchemy as sa

from commhistory.crypto import KeyProvider, Keyring
from commhistory.errors import NotFoundError
from commhistory.model import BounceClass, Channel, Direction, EventType, Purpose
from commhistory.normalize.mask import mask_address
from commhistory.normalize.time import from_micros
from commhistory.store import schema

if TYPE_CHECKING:
    from commhistory.store.memory import MemoryState
    from commhistory.store.sql import SQLRepository

__all__ = [
    "AUDIT_COLUMNS",
    "AUDIT_LOCK_KEY",
    "GENESIS_MAC",
    "AuditStore",
    "MaskedHistory",
    "MemoryAuditStore",
    "MemoryMaskedHistory",
    "PlainEvent",
    "PlainMessage",
    "SQLAuditStore",
    "SQLMaskedHistory",
]

AUDIT_LOCK_KEY: Final = 0x636F_6D6D_6175_6469
"""The PostgreSQL advisory lock id writers hold while extending the chain."""

GENESIS_MAC: Final = bytes(32)
"""The ``prev_mac`` of the first entry."""

AUDIT_COLUMNS: Final = tuple(c.name for c in schema.audit_log.columns)
"""The columns of an audit row, in table order."""

AuditRow = dict[str, Any]
"""One audit row: :data:`AUDIT_COLUMNS` to values (``prev_mac`` and ``mac`` as bytes)."""


class AuditStore(Protocol):
    """Where the audit chain's rows live: appends under a writer lock, reads in order.

    .. versionadded:: 0.3.0
    .. versionchanged:: 0.4.0
       Moved to the store; :attr:`keyring` and :attr:`shares_transactions` added.
    """

    @property
    def keyring(self) -> KeyProvider:
        """The key provider whose ``"audit"`` subkeys authenticate this store's entries."""
        ...

    @property
    def shares_transactions(self) -> bool:
        """Whether an append inside the repository's ``transaction()`` commits with it."""
        ...

    def append(self, build: Callable[[int, bytes], AuditRow]) -> AuditRow:
        """Lock, read the head, insert ``build(next_seq, head_mac)`` and return it."""
        ...

    def rows(
        self, *, contact_id: str | None, actor_id: str | None, since: int | None
    ) -> Iterable[AuditRow]:
        """Yield rows in ``seq`` order, filtered (*since* in epoch microseconds)."""
        ...


_HEAD_SQL: Final = "SELECT seq, mac FROM audit_log ORDER BY seq DESC LIMIT 1"
_INSERT_COLUMNS: Final = ", ".join(AUDIT_COLUMNS)


class SQLAuditStore:
    """:class:`AuditStore` over the ``audit_log`` table of an SQL repository.

    Appends join the repository's open transaction, so an audited operation
    and its entry commit together.
    """

    def __init__(self, repo: SQLRepository) -> None:
        self.repo = repo
        self._postgres = repo.dialect == "postgresql"
        marks = ", ".join([repo.backend.ph] * len(AUDIT_COLUMNS))
        # Table and column names come from the schema, values are bound: plain
        # driver SQL here skips SQLAlchemy's per-statement work on the hot path.
        self._insert = "INSERT INTO audit_log (" + _INSERT_COLUMNS + ") VALUES (" + marks + ")"

    def __repr__(self) -> str:
        return f"SQLAuditStore(dialect={self.repo.dialect!r})"

    @property
    def keyring(self) -> KeyProvider:
        """The repository's keyring."""
        return self.repo.keyring

    @property
    def shares_transactions(self) -> bool:
        """``True``: appends join the repository's open transaction."""
        return True

    def append(self, build: Callable[[int, bytes], AuditRow]) -> AuditRow:
        """See :meth:`AuditStore.append`."""
        with self.repo.transaction() as conn:
            # The driver's cursor: an audited read pays for these three
            # statements, so they skip SQLAlchemy's per-statement work.
            cur: Any = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
            try:
                if self._postgres:
                    cur.execute("SELECT pg_advisory_xact_lock(%s)", (AUDIT_LOCK_KEY,))
                cur.execute(_HEAD_SQL)
                head = cur.fetchone()
                seq, prev = (
                    (1, GENESIS_MAC) if head is None else (int(head[0]) + 1, bytes(head[1]))
                )
                row = build(seq, prev)
                cur.execute(self._insert, tuple(row[name] for name in AUDIT_COLUMNS))
            finally:
                cur.close()
        return row

    def rows(
        self, *, contact_id: str | None, actor_id: str | None, since: int | None
    ) -> Iterable[AuditRow]:
        """See :meth:`AuditStore.rows`."""
        t = schema.audit_log
        cols = [
            sa.type_coerce(t.c[name], sa.BigInteger()) if name == "recorded_at" else t.c[name]
            for name in AUDIT_COLUMNS
        ]
        query = sa.select(*cols).order_by(t.c.seq)
        if contact_id is not None:
            query = query.where(t.c.contact_id == contact_id)
        if actor_id is not None:
            query = query.where(t.c.actor_id == actor_id)
        if since is not None:
            query = query.where(sa.type_coerce(t.c.recorded_at, sa.BigInteger()) >= since)
        with self.repo.transaction(read=True) as conn:
            result = conn.execute(query).all()
        for r in result:
            row = dict(zip(AUDIT_COLUMNS, r, strict=True))
            # A MAC stored as text was written outside commhistory: keep its bytes
            # so verification reports the entry as altered instead of failing.
            row["prev_mac"] = _binary(row["prev_mac"])
            row["mac"] = _binary(row["mac"])
            yield row


class MemoryAuditStore:
    """:class:`AuditStore` held in a list, serialized by a lock.

    Args:
        keyring: The key provider that authenticates the entries (default: a
            generated one, as an in-memory repository holds no keyring).
    """

    def __init__(self, keyring: KeyProvider | None = None) -> None:
        self._keyring: KeyProvider = Keyring.generate() if keyring is None else keyring
        self.table: list[AuditRow] = []
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"MemoryAuditStore(entries={len(self.table)})"

    @property
    def keyring(self) -> KeyProvider:
        """The key provider given, or the one generated for this store."""
        return self._keyring

    @property
    def shares_transactions(self) -> bool:
        """``False``: memory transactions roll nothing back, the log included."""
        return False

    def append(self, build: Callable[[int, bytes], AuditRow]) -> AuditRow:
        """See :meth:`AuditStore.append`."""
        with self._lock:
            head = self.table[-1] if self.table else None
            seq, prev = (1, GENESIS_MAC) if head is None else (head["seq"] + 1, head["mac"])
            row = build(seq, prev)
            self.table.append(dict(row))
        return row

    def rows(
        self, *, contact_id: str | None, actor_id: str | None, since: int | None
    ) -> Iterable[AuditRow]:
        """See :meth:`AuditStore.rows`."""
        for row in sorted(self.table, key=lambda r: r["seq"]):
            if contact_id is not None and row["contact_id"] != contact_id:
                continue
            if actor_id is not None and row["actor_id"] != actor_id:
                continue
            if since is not None and row["recorded_at"] < since:
                continue
            yield dict(row)


# ---------------------------------------------------------------------- masked history


class PlainMessage(NamedTuple):
    """The plain columns of a message: nothing that needs a data key."""

    message_id: str
    channel: Channel
    direction: Direction
    contact_id: str
    sent_at: datetime
    purpose: Purpose
    campaign_id: str | None
    variant: str | None
    provider: str | None
    has_subject: bool
    has_body: bool
    address_masked: str | None


class PlainEvent(NamedTuple):
    """The plain columns of an event: nothing that needs a data key."""

    event_id: str
    message_id: str | None
    type: EventType
    occurred_at: datetime
    status_code: str | None
    bounce: BounceClass | None
    machine: bool
    revenue: str | None
    currency: str | None


class MaskedHistory(Protocol):
    """A contact's history from plain columns only: no data key is unwrapped.

    .. versionadded:: 0.4.0
    """

    def plain_history(self, contact_id: str) -> tuple[list[PlainMessage], list[PlainEvent]]:
        """Return a contact's messages (by ``sent_at``, id) and events (by ``occurred_at``, id).

        Both are empty for an erased contact.

        Raises:
            NotFoundError: The contact is unknown.
        """
        ...


_MESSAGE_SQL: Final = (
    "SELECT message_id, channel, direction, contact_id, sent_at, purpose, campaign_id, "
    "variant, provider, subject IS NOT NULL, body IS NOT NULL, address_masked FROM messages "
    "WHERE contact_id = {ph} ORDER BY sent_at, message_id"
)
_EVENT_SQL: Final = (
    "SELECT event_id, message_id, type, occurred_at, status_code, bounce, machine, revenue, "
    "currency FROM events WHERE contact_id = {ph} ORDER BY occurred_at, event_id"
)


class SQLMaskedHistory:
    """:class:`MaskedHistory` over an SQL repository: plain columns, nothing decrypted."""

    def __init__(self, repo: SQLRepository) -> None:
        self.repo = repo
        ph = repo.backend.ph
        self._messages = _MESSAGE_SQL.format(ph=ph)
        self._events = _EVENT_SQL.format(ph=ph)

    def __repr__(self) -> str:
        return f"SQLMaskedHistory(dialect={self.repo.dialect!r})"

    def plain_history(self, contact_id: str) -> tuple[list[PlainMessage], list[PlainEvent]]:
        """See :meth:`MaskedHistory.plain_history`."""
        c = schema.contacts
        with self.repo.transaction(read=True) as conn:
            row = conn.execute(
                sa.select(c.c.data_key.is_(None)).where(c.c.contact_id == contact_id)
            ).first()
            if row is None:
                raise NotFoundError(kind="contact", identifier=contact_id)
            if row[0]:  # erased
                return [], []
            # Plain DB-API rows, as the repository's own timeline reads them; only
            # plain columns are selected, so nothing here can decrypt.
            cur: Any = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
            try:
                cur.execute(self._messages, (contact_id,))
                message_rows = cur.fetchall()
                cur.execute(self._events, (contact_id,))
                event_rows = cur.fetchall()
            finally:
                cur.close()
        messages = [
            PlainMessage(
                message_id=r[0],
                channel=Channel(r[1]),
                direction=Direction(r[2]),
                contact_id=r[3],
                sent_at=from_micros(int(r[4])),
                purpose=Purpose(r[5]),
                campaign_id=r[6],
                variant=r[7],
                provider=r[8],
                has_subject=bool(r[9]),
                has_body=bool(r[10]),
                address_masked=r[11],
            )
            for r in message_rows
        ]
        events = [
            PlainEvent(
                event_id=r[0],
                message_id=r[1],
                type=EventType(r[2]),
                occurred_at=from_micros(int(r[3])),
                status_code=r[4],
                bounce=None if r[5] is None else BounceClass(r[5]),
                machine=bool(r[6]),
                revenue=r[7],
                currency=r[8],
            )
            for r in event_rows
        ]
        return messages, events


class MemoryMaskedHistory:
    """:class:`MaskedHistory` over a memory repository's state (kept in the clear).

    The masked address is computed here with
    :func:`~commhistory.normalize.mask.mask_address`, as ingest stores it on SQL.
    """

    def __init__(self, state: MemoryState, check_open: Callable[[], None] | None = None) -> None:
        self.s = state
        self._check_open = check_open

    def plain_history(self, contact_id: str) -> tuple[list[PlainMessage], list[PlainEvent]]:
        """See :meth:`MaskedHistory.plain_history`."""
        if self._check_open is not None:
            self._check_open()
        s = self.s
        if contact_id not in s.contacts:
            raise NotFoundError(kind="contact", identifier=contact_id)
        if contact_id in s.erased:
            return [], []
        messages = [
            PlainMessage(
                message_id=m.message_id,
                channel=m.channel,
                direction=m.direction,
                contact_id=m.contact_id,
                sent_at=m.sent_at,
                purpose=m.purpose,
                campaign_id=m.campaign_id,
                variant=m.variant,
                provider=m.provider,
                has_subject=m.subject is not None,
                has_body=m.body is not None,
                address_masked=mask_address(m.channel, m.address),
            )
            for m in sorted(
                (m for m in s.messages.values() if m.contact_id == contact_id),
                key=lambda m: (m.sent_at, m.message_id),
            )
        ]
        events = [
            PlainEvent(
                event_id=e.event_id,
                message_id=e.message_id,
                type=e.type,
                occurred_at=e.occurred_at,
                status_code=e.status_code,
                bounce=e.bounce,
                machine=e.machine,
                revenue=None if e.revenue is None else str(e.revenue),
                currency=e.currency,
            )
            for e in sorted(
                (s.events[eid] for eid, cid in s.event_contact.items() if cid == contact_id),
                key=lambda e: (e.occurred_at, e.event_id),
            )
        ]
        return messages, events


def _binary(value: object) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    return str(value).encode("utf-8", "surrogatepass")
