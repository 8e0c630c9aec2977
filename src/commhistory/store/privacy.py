"""Privacy storage: the port erasure, subject export and retention use, on SQL and in memory.

:class:`PrivacyStore` is everything :mod:`commhistory.privacy` needs from a
repository: what is held on a contact, crypto-shredding a contact, the
addresses and retained consent evidence an export shows, and the records
retention may delete. :class:`SQLPrivacyStore` and :class:`MemoryPrivacyStore`
implement it; a repository hands its own out as ``repo.privacy_store``. Writes
join the transaction that is open, so a whole erasure (with its suppression
entries, written through ``repo.consent_store``) commits or rolls back together.

The rules (what is kept after an erasure and for how long, which consent
events are superseded) stay in :mod:`commhistory.privacy`.

SQL statements are built from schema identifiers and placeholders; every value
is bound.

.. versionadded:: 0.4.0
   Moved here from ``commhistory.privacy``; the privacy package keeps the rules.
"""

# ruff: noqa: S608

from __future__ import annotations

import copy
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, NamedTuple, Protocol

import attrs
import sqlalchemy as sa

from commhistory.errors import NotFoundError
from commhistory.model import ConsentEvent
from commhistory.normalize.mask import mask_address
from commhistory.normalize.time import from_micros, to_micros
from commhistory.store import partition
from commhistory.store.layout import (
    CONSENT_COLUMNS,
    EVIDENCE_COLUMNS,
    EVIDENCE_PURPOSE,
    address_row_id,
)
from commhistory.store.sql_rows import consent_from_row

if TYPE_CHECKING:
    from commhistory.store.memory import MemoryState
    from commhistory.store.sql import SQLRepository

__all__ = [
    "ContactHoldings",
    "HistoryCounts",
    "LedgerRow",
    "MemoryPrivacyStore",
    "PrivacyStore",
    "SQLPrivacyStore",
    "ShredCounts",
    "SubjectAddress",
]


@attrs.frozen(kw_only=True)
class ContactHoldings:
    """What the store holds on one contact, counted before an erasure.

    Attributes:
        erased_at: When the contact was erased, or ``None``.
        messages: Its messages.
        events: Its events.
        consent_events: Its consent events (retained evidence included).
        retained_until: For an erased contact, the latest ``retain_until`` of its
            retained consent evidence (``None`` when none is left, or not erased).
    """

    erased_at: datetime | None
    messages: int
    events: int
    consent_events: int
    retained_until: datetime | None = None


@attrs.frozen(kw_only=True)
class ShredCounts:
    """What :meth:`PrivacyStore.shred_contact` destroyed.

    Attributes:
        addresses: Address (blind-index) rows deleted.
        masked_addresses: Masked addresses deleted from the contact's messages.
        attributes: Contact attribute rows deleted (plain and personal, every version).
        segment_snapshots: Segment snapshot rows the contact was removed from.

    .. versionchanged:: 0.4.0
       ``segment_snapshots``.
    """

    addresses: int
    masked_addresses: int
    attributes: int = 0
    segment_snapshots: int = 0


@attrs.frozen(kw_only=True)
class HistoryCounts:
    """Messages and events before a retention cutoff (counted, or deleted).

    Attributes:
        messages: Messages sent before the cutoff.
        events: Events that occurred before it.
        dropped_partitions: The month partitions dropped whole (partitioned
            PostgreSQL only; empty elsewhere and when only counting).

    .. versionadded:: 0.4.0
    """

    messages: int
    events: int
    dropped_partitions: tuple[str, ...] = ()


class SubjectAddress(NamedTuple):
    """One of a contact's addresses, decrypted."""

    kind: str
    address: str


class LedgerRow(NamedTuple):
    """The plain columns of one consent event, as retention weighs it."""

    consent_id: str
    contact_id: str
    channel: str
    purpose: str
    occurred_us: int
    action: str


class PrivacyStore(Protocol):
    """The storage port of erasure, subject export and retention.

    Every method runs in the repository's current transaction when one is open,
    else in one of its own.

    .. versionadded:: 0.4.0
    """

    def holdings(self, contact_id: str) -> ContactHoldings:
        """Count what is held on a contact, locking its row against a concurrent erasure.

        Raises:
            NotFoundError: No such contact (``kind="contact"``).
        """
        ...

    def shred_contact(
        self, contact_id: str, *, at: datetime, evidence_until: datetime
    ) -> ShredCounts:
        """Crypto-shred a contact in one transaction.

        Destroys its data key (every ciphertext of it becomes unreadable),
        deletes its address rows, its attribute rows (plain and personal, with
        their history) and the masked addresses of its messages, keeps
        its consent evidence readable under the keyring's ``consent-evidence``
        subkey until *evidence_until*, and marks it erased at *at*. Personal
        bytes are overwritten where the backend allows (SQLite ``secure_delete``
        and a WAL checkpoint after the commit).
        """
        ...

    def created_at(self, contact_id: str) -> datetime | None:
        """Return when the contact was first stored (``None`` when not recorded)."""
        ...

    def subject_addresses(self, contact_id: str) -> list[SubjectAddress]:
        """Return the contact's addresses, decrypted (none once erased)."""
        ...

    def retained_consents(self, contact_id: str) -> list[ConsentEvent]:
        """Return an erased contact's kept consent events, evidence decrypted, in time order."""
        ...

    def consent_ledger(self) -> list[LedgerRow]:
        """Return the consent events of every contact not erased, as plain values."""
        ...

    def last_outbound(self) -> dict[tuple[str, str, str], int]:
        """Return the latest outbound ``sent_at`` (µs) per (contact, channel, purpose)."""
        ...

    def expired_evidence(self, now: datetime) -> list[str]:
        """Return the consent ids of erased contacts' evidence whose retention ended by *now*."""
        ...

    def count_dead_letters(self, before: datetime) -> int:
        """Return how many dead letters were received before *before*."""
        ...

    def delete_consents(self, consent_ids: Sequence[str]) -> int:
        """Delete consent events (with any retained evidence); return how many."""
        ...

    def delete_dead_letters(self, before: datetime) -> int:
        """Delete the dead letters received before *before*; return how many."""
        ...

    def count_history(self, before: datetime) -> HistoryCounts:
        """Count the messages sent and the events that occurred before *before*.

        .. versionadded:: 0.4.0
        """
        ...

    def delete_history(self, before: datetime) -> HistoryCounts:
        """Delete the messages sent and the events that occurred before *before*.

        Each row goes by its own timestamp: an event after the cutoff is kept
        even when its message is deleted (its message's outcomes were folded
        when it was stored). On a partitioned PostgreSQL database
        (:mod:`commhistory.store.partition`) a month wholly before the cutoff
        is dropped as a partition, the rest deleted row by row.

        Returns:
            What was deleted, with the partitions dropped.

        .. versionadded:: 0.4.0
        """
        ...


# ---------------------------------------------------------------------- SQL

_WAL_BUSY_MS: Final = 1000
"""How long the post-erasure checkpoint waits for other readers before giving up."""


class SQLPrivacyStore(PrivacyStore):
    """:class:`PrivacyStore` over :class:`~commhistory.store.sql.SQLRepository`.

    Args:
        repo: The repository.
    """

    def __init__(self, repo: SQLRepository) -> None:
        self.repo = repo
        self.ph = repo.backend.ph

    def _count(self, conn: sa.Connection, table: str, contact_id: str) -> int:
        return int(
            conn.exec_driver_sql(
                f"SELECT COUNT(*) FROM {table} WHERE contact_id = {self.ph}", (contact_id,)
            ).scalar_one()
        )

    def holdings(self, contact_id: str) -> ContactHoldings:
        """See :meth:`PrivacyStore.holdings`."""
        ph = self.ph
        lock = " FOR UPDATE" if self.repo.dialect == "postgresql" else ""
        with self.repo.transaction() as conn:
            row = conn.exec_driver_sql(
                f"SELECT data_key, erased_at FROM contacts WHERE contact_id = {ph}{lock}",
                (contact_id,),
            ).first()
            if row is None:
                raise NotFoundError(kind="contact", identifier=contact_id)
            until = None
            if row[1] is not None:
                until = conn.exec_driver_sql(
                    f"SELECT MAX(retain_until) FROM consent_events WHERE contact_id = {ph}",
                    (contact_id,),
                ).scalar()
            return ContactHoldings(
                erased_at=None if row[1] is None else from_micros(int(row[1])),
                messages=self._count(conn, "messages", contact_id),
                events=self._count(conn, "events", contact_id),
                consent_events=self._count(conn, "consent_events", contact_id),
                retained_until=None if until is None else from_micros(int(until)),
            )

    def shred_contact(
        self, contact_id: str, *, at: datetime, evidence_until: datetime
    ) -> ShredCounts:
        """See :meth:`PrivacyStore.shred_contact`."""
        repo, ph = self.repo, self.ph
        try:
            with repo.transaction() as conn:
                cipher = repo.contact_cipher(conn, contact_id)
                if cipher is None:
                    raise NotFoundError(kind="contact", identifier=contact_id)
                key_id = repo.keyring.current_key_id
                keeper = repo.keyed_cipher(key_id, EVIDENCE_PURPOSE)
                cols = ", ".join(EVIDENCE_COLUMNS)
                updates = []
                for cid, *blobs in conn.exec_driver_sql(
                    f"SELECT consent_id, {cols} FROM consent_events WHERE contact_id = {ph}",
                    (contact_id,),
                ):
                    values = []
                    for column, blob in zip(EVIDENCE_COLUMNS, blobs, strict=True):
                        plain = cipher.decrypt(
                            blob,
                            table="consent_events", column=column, row_id=cid,
                        )  # fmt: skip
                        values.append(
                            keeper.encrypt(
                                plain, table="consent_events", column=column, row_id=cid
                            )
                        )
                    updates.append((*values, key_id, to_micros(evidence_until), cid))
                sets = ", ".join(f"{c} = {ph}" for c in EVIDENCE_COLUMNS)
                repo.backend.executemany(
                    conn,
                    f"UPDATE consent_events SET {sets}, evidence_key_id = {ph}, "
                    f"retain_until = {ph} WHERE consent_id = {ph}",
                    updates,
                )
                with self._overwriting(conn):
                    addresses = conn.exec_driver_sql(
                        f"DELETE FROM addresses WHERE contact_id = {ph}", (contact_id,)
                    ).rowcount
                    masked = conn.exec_driver_sql(
                        "UPDATE messages SET address_masked = NULL "
                        f"WHERE contact_id = {ph} AND address_masked IS NOT NULL",
                        (contact_id,),
                    ).rowcount
                    attributes = repo.attribute_store.delete_contact(contact_id)
                    snapshots = repo.segment_store.forget_contact(contact_id)
                    conn.exec_driver_sql(  # a click's link label is plain: it goes too
                        "UPDATE events SET link = NULL "
                        f"WHERE contact_id = {ph} AND link IS NOT NULL",
                        (contact_id,),
                    )
                    conn.exec_driver_sql(
                        "UPDATE contacts SET data_key = NULL, wrap_key_id = NULL, "
                        f"erased_at = {ph} WHERE contact_id = {ph}",
                        (to_micros(at), contact_id),
                    )
        finally:
            repo.forget_cached_keys()
        if repo.dialect == "sqlite":
            # After the commit, also of an outer transaction this one joined (a
            # guarded erasure commits with its audit entry): a checkpoint cannot
            # take frames that are not committed yet.
            repo.after_commit(self._truncate_wal)
        return ShredCounts(
            addresses=int(addresses),
            masked_addresses=int(masked),
            attributes=attributes,
            segment_snapshots=snapshots,
        )

    @contextmanager
    def _overwriting(self, conn: sa.Connection) -> Iterator[None]:
        """On SQLite, overwrite deleted and replaced content with zeros (``secure_delete``).

        The masked addresses and plain attribute values are plain text: without
        it, their bytes could stay in the page's free space. Restored afterwards, since the
        connection goes back to the pool.
        """
        if self.repo.dialect != "sqlite":
            yield
            return
        before = int(conn.exec_driver_sql("PRAGMA secure_delete").scalar_one())
        conn.exec_driver_sql("PRAGMA secure_delete = ON")
        try:
            yield
        finally:
            conn.exec_driver_sql(f"PRAGMA secure_delete = {before}")

    def _truncate_wal(self) -> None:
        """Checkpoint and truncate SQLite's WAL, best-effort, so no frame keeps an erased mask.

        Frames written before the erasure still hold the old pages (masked
        addresses in the clear) until the WAL is reset. When another connection is
        reading, the checkpoint gives up after :data:`_WAL_BUSY_MS`; those frames
        are then overwritten by later writes instead. The erasure itself is
        already committed, so a failure here is not an error.
        """
        try:
            raw = self.repo.engine.raw_connection()
        except sa.exc.SQLAlchemyError:  # pragma: no cover - the erasure just used it
            return
        try:
            driver: Any = raw.driver_connection
            timeout = int(driver.execute("PRAGMA busy_timeout").fetchone()[0])
            driver.execute(f"PRAGMA busy_timeout = {_WAL_BUSY_MS}")
            try:
                driver.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            finally:
                driver.execute(f"PRAGMA busy_timeout = {timeout}")
        except sqlite3.Error:  # pragma: no cover - busy readers; not an error
            pass
        finally:
            raw.close()

    def created_at(self, contact_id: str) -> datetime | None:
        """See :meth:`PrivacyStore.created_at`."""
        with self.repo.transaction(read=True) as conn:
            created = conn.exec_driver_sql(
                f"SELECT created_at FROM contacts WHERE contact_id = {self.ph}", (contact_id,)
            ).scalar()
        return None if created is None else from_micros(int(created))

    def subject_addresses(self, contact_id: str) -> list[SubjectAddress]:
        """See :meth:`PrivacyStore.subject_addresses`."""
        with self.repo.transaction(read=True) as conn:
            rows = conn.exec_driver_sql(
                f"SELECT kind, blind_index, address FROM addresses WHERE contact_id = {self.ph} "
                "ORDER BY kind, created_at",
                (contact_id,),
            ).all()
            cipher = self.repo.contact_cipher(conn, contact_id) if rows else None
        out = []
        for kind, bidx, blob in rows:
            assert cipher is not None
            text = cipher.decrypt_text(
                blob, table="addresses", column="address",
                row_id=address_row_id(kind, bytes(bidx)),
            )  # fmt: skip
            out.append(SubjectAddress(kind, text or ""))
        return out

    def retained_consents(self, contact_id: str) -> list[ConsentEvent]:
        """See :meth:`PrivacyStore.retained_consents`."""
        with self.repo.transaction(read=True) as conn:
            rows = conn.exec_driver_sql(
                f"SELECT {', '.join(CONSENT_COLUMNS)}, evidence_key_id FROM consent_events "
                f"WHERE contact_id = {self.ph} ORDER BY occurred_at, consent_id",
                (contact_id,),
            ).all()
        out = []
        for r in rows:
            key_id = r[-1]
            if key_id is None:
                continue
            keeper = self.repo.keyed_cipher(key_id, EVIDENCE_PURPOSE)
            out.append(consent_from_row(tuple(r[:-1]), keeper.decrypt))
        return out

    def consent_ledger(self) -> list[LedgerRow]:
        """See :meth:`PrivacyStore.consent_ledger`."""
        with self.repo.transaction(read=True) as conn:
            return [
                LedgerRow(r[0], r[1], r[2], r[3], int(r[4]), r[5])
                for r in conn.exec_driver_sql(
                    "SELECT c.consent_id, c.contact_id, c.channel, c.purpose, c.occurred_at, "
                    "c.action FROM consent_events c "
                    "JOIN contacts k ON k.contact_id = c.contact_id WHERE k.erased_at IS NULL"
                )
            ]

    def last_outbound(self) -> dict[tuple[str, str, str], int]:
        """See :meth:`PrivacyStore.last_outbound`."""
        with self.repo.transaction(read=True) as conn:
            return {
                (r[0], r[1], r[2]): int(r[3])
                for r in conn.exec_driver_sql(
                    "SELECT contact_id, channel, purpose, MAX(sent_at) FROM messages "
                    "WHERE direction = 'outbound' GROUP BY contact_id, channel, purpose"
                )
            }

    def expired_evidence(self, now: datetime) -> list[str]:
        """See :meth:`PrivacyStore.expired_evidence`."""
        with self.repo.transaction(read=True) as conn:
            return [
                r[0]
                for r in conn.exec_driver_sql(
                    "SELECT consent_id FROM consent_events "
                    f"WHERE retain_until IS NOT NULL AND retain_until <= {self.ph}",
                    (to_micros(now),),
                )
            ]

    def count_dead_letters(self, before: datetime) -> int:
        """See :meth:`PrivacyStore.count_dead_letters`."""
        with self.repo.transaction(read=True) as conn:
            return int(
                conn.exec_driver_sql(
                    f"SELECT COUNT(*) FROM dead_letters WHERE received_at < {self.ph}",
                    (to_micros(before),),
                ).scalar_one()
            )

    def delete_consents(self, consent_ids: Sequence[str]) -> int:
        """See :meth:`PrivacyStore.delete_consents`."""
        with self.repo.transaction() as conn:
            return self.repo.backend.executemany(
                conn,
                f"DELETE FROM consent_events WHERE consent_id = {self.ph}",
                [(cid,) for cid in consent_ids],
            )

    def delete_dead_letters(self, before: datetime) -> int:
        """See :meth:`PrivacyStore.delete_dead_letters`."""
        with self.repo.transaction() as conn:
            return int(
                conn.exec_driver_sql(
                    f"DELETE FROM dead_letters WHERE received_at < {self.ph}",
                    (to_micros(before),),
                ).rowcount
            )

    def count_history(self, before: datetime) -> HistoryCounts:
        """See :meth:`PrivacyStore.count_history`."""
        cutoff = to_micros(before)
        with self.repo.transaction(read=True) as conn:
            counts = [
                int(
                    conn.exec_driver_sql(
                        f"SELECT COUNT(*) FROM {table} WHERE {column} < {self.ph}", (cutoff,)
                    ).scalar_one()
                )
                for table, column in (("messages", "sent_at"), ("events", "occurred_at"))
            ]
        return HistoryCounts(messages=counts[0], events=counts[1])

    def delete_history(self, before: datetime) -> HistoryCounts:
        """See :meth:`PrivacyStore.delete_history`."""
        cutoff = to_micros(before)
        with self.repo.transaction() as conn:
            counted = [
                int(
                    conn.exec_driver_sql(
                        f"SELECT COUNT(*) FROM {table} WHERE {column} < {self.ph}", (cutoff,)
                    ).scalar_one()
                )
                for table, column in (("messages", "sent_at"), ("events", "occurred_at"))
            ]
            dropped = partition.delete_before(conn, cutoff).dropped
        self.repo.forget_history_caches()
        return HistoryCounts(messages=counted[0], events=counted[1], dropped_partitions=dropped)


# ---------------------------------------------------------------------- memory


def _redact(record: Any, **values: Any) -> Any:
    clone = copy.copy(record)
    for name, value in values.items():
        object.__setattr__(clone, name, value)
    return clone


class MemoryPrivacyStore(PrivacyStore):
    """:class:`PrivacyStore` over :class:`~commhistory.store.memory.MemoryRepository`.

    Nothing is encrypted in memory: shredding blanks the personal fields of the
    contact's messages and events instead, and keeps its consent events as they are.
    """

    def __init__(self, state: MemoryState) -> None:
        self.s = state

    def _consent_ids(self, contact_id: str) -> list[str]:
        return [cid for cid, c in self.s.consents.items() if c.contact_id == contact_id]

    def holdings(self, contact_id: str) -> ContactHoldings:
        """See :meth:`PrivacyStore.holdings`."""
        s = self.s
        if contact_id not in s.contacts:
            raise NotFoundError(kind="contact", identifier=contact_id)
        consent_ids = self._consent_ids(contact_id)
        erased_at = s.erased.get(contact_id)
        until = None
        if erased_at is not None:
            until = max((s.retained[c] for c in consent_ids if c in s.retained), default=None)
        return ContactHoldings(
            erased_at=erased_at,
            messages=sum(1 for m in s.messages.values() if m.contact_id == contact_id),
            events=sum(1 for c in s.event_contact.values() if c == contact_id),
            consent_events=len(consent_ids),
            retained_until=until,
        )

    def shred_contact(
        self, contact_id: str, *, at: datetime, evidence_until: datetime
    ) -> ShredCounts:
        """See :meth:`PrivacyStore.shred_contact`."""
        s = self.s
        if contact_id not in s.contacts:
            raise NotFoundError(kind="contact", identifier=contact_id)
        addresses = 0
        for (kind, value), cids in list(s.addresses.items()):
            if contact_id in cids:
                addresses += 1
                cids.discard(contact_id)
                if not cids:
                    del s.addresses[(kind, value)]
        message_ids = [mid for mid, m in s.messages.items() if m.contact_id == contact_id]
        mine = [s.messages[mid] for mid in message_ids]
        masked = sum(1 for m in mine if mask_address(m.channel, m.address))
        for mid in message_ids:
            s.messages[mid] = _redact(
                s.messages[mid], address="", subject=None, body=None, metadata={}
            )
        for eid in [eid for eid, c in s.event_contact.items() if c == contact_id]:
            s.events[eid] = _redact(
                s.events[eid],
                address=None,
                reason=None,
                url=None,
                user_agent=None,
                ip=None,
                metadata={},
            )
        attributes = 0
        for key in [k for k in s.attributes if k[0] == contact_id]:
            attributes += len(s.attributes.pop(key))
        snapshots = 0
        for _info, ids in s.segment_snapshots.values():
            if contact_id in ids:
                ids.discard(contact_id)
                snapshots += 1
        for cid in self._consent_ids(contact_id):
            s.retained[cid] = evidence_until
        s.erased[contact_id] = at
        return ShredCounts(
            addresses=addresses,
            masked_addresses=masked,
            attributes=attributes,
            segment_snapshots=snapshots,
        )

    def created_at(self, contact_id: str) -> datetime | None:
        """See :meth:`PrivacyStore.created_at` (not recorded in memory: ``None``)."""
        return None

    def subject_addresses(self, contact_id: str) -> list[SubjectAddress]:
        """See :meth:`PrivacyStore.subject_addresses`."""
        return [
            SubjectAddress(kind, value)
            for (kind, value), cids in sorted(self.s.addresses.items())
            if contact_id in cids
        ]

    def retained_consents(self, contact_id: str) -> list[ConsentEvent]:
        """See :meth:`PrivacyStore.retained_consents` (in memory: every one still held)."""
        return sorted(
            (c for c in self.s.consents.values() if c.contact_id == contact_id),
            key=lambda c: (c.occurred_at, c.consent_id or ""),
        )

    def consent_ledger(self) -> list[LedgerRow]:
        """See :meth:`PrivacyStore.consent_ledger`."""
        erased = self.s.erased
        return [
            LedgerRow(
                cid,
                c.contact_id,
                c.channel.value,
                c.purpose.value,
                to_micros(c.occurred_at),
                c.action.value,
            )
            for cid, c in self.s.consents.items()
            if c.contact_id not in erased
        ]

    def last_outbound(self) -> dict[tuple[str, str, str], int]:
        """See :meth:`PrivacyStore.last_outbound`."""
        out: dict[tuple[str, str, str], int] = {}
        for m in self.s.messages.values():
            if m.direction.value == "outbound":
                key = (m.contact_id, m.channel.value, m.purpose.value)
                out[key] = max(out.get(key, 0), to_micros(m.sent_at))
        return out

    def expired_evidence(self, now: datetime) -> list[str]:
        """See :meth:`PrivacyStore.expired_evidence`."""
        return [cid for cid, until in self.s.retained.items() if until <= now]

    def count_dead_letters(self, before: datetime) -> int:
        """See :meth:`PrivacyStore.count_dead_letters`."""
        return sum(1 for d in self.s.dead_letters if d.received_at < before)

    def delete_consents(self, consent_ids: Sequence[str]) -> int:
        """See :meth:`PrivacyStore.delete_consents`."""
        deleted = 0
        for cid in consent_ids:
            if self.s.consents.pop(cid, None) is not None:
                deleted += 1
            self.s.retained.pop(cid, None)
        return deleted

    def delete_dead_letters(self, before: datetime) -> int:
        """See :meth:`PrivacyStore.delete_dead_letters`."""
        kept = [d for d in self.s.dead_letters if d.received_at >= before]
        deleted = len(self.s.dead_letters) - len(kept)
        self.s.dead_letters[:] = kept
        return deleted

    def count_history(self, before: datetime) -> HistoryCounts:
        """See :meth:`PrivacyStore.count_history`."""
        return HistoryCounts(
            messages=sum(1 for m in self.s.messages.values() if m.sent_at < before),
            events=sum(1 for e in self.s.events.values() if e.occurred_at < before),
        )

    def delete_history(self, before: datetime) -> HistoryCounts:
        """See :meth:`PrivacyStore.delete_history`."""
        s = self.s
        gone_messages = [mid for mid, m in s.messages.items() if m.sent_at < before]
        for mid in gone_messages:
            m = s.messages.pop(mid)
            if m.provider is not None and m.provider_message_id is not None:
                s.pairs.pop((m.provider, m.provider_message_id), None)
        gone_events = [eid for eid, e in s.events.items() if e.occurred_at < before]
        for eid in gone_events:
            e = s.events.pop(eid)
            s.event_contact.pop(eid, None)
            s.orphans.discard(eid)
            if e.provider is not None and e.provider_event_id is not None:
                s.provider_events.discard((e.provider, e.provider_event_id))
        return HistoryCounts(messages=len(gone_messages), events=len(gone_events))
