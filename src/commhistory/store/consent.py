"""Consent and suppression storage: the port the consent rules use, on SQL and in memory.

:class:`ConsentStore` is everything :mod:`commhistory.consent` needs from a
repository: the ledger's plain columns, address keys, suppression entries.
:class:`SQLConsentStore` and :class:`MemoryConsentStore` implement it; a
repository hands its own out as ``repo.consent_store``. Writes join the
transaction that is open (an ingest batch's, when the consent feed runs inside
one), so what a batch implies commits with it.

SQL statements are built from schema identifiers and placeholders; every value
is bound.

.. versionadded:: 0.4.0
   Moved here from ``commhistory.consent._data``; the consent package keeps the rules.
"""

# ruff: noqa: S608

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, NamedTuple, Protocol

import attrs

from commhistory.crypto import lookup_key_ids
from commhistory.model import (
    ADDRESS_KINDS,
    Channel,
    ConsentAction,
    ConsentEvent,
    ConsentMethod,
    Purpose,
    SuppressionEntry,
    SuppressionReason,
    consent_id_of,
)
from commhistory.normalize.time import from_micros, to_micros
from commhistory.store import schema
from commhistory.store.layout import CONSENT_COLUMNS

if TYPE_CHECKING:
    from commhistory.store.memory import MemoryState
    from commhistory.store.sql import SQLRepository

__all__ = [
    "BULK_THRESHOLD",
    "AddressKey",
    "ConsentRow",
    "ConsentStore",
    "MemoryConsentStore",
    "SQLConsentStore",
    "memory_digest",
]

BULK_THRESHOLD: Final = 2000
"""Above this many contact ids, bulk reads scan the channel instead of ``IN`` lists."""

SUPPRESSION_COLUMNS: Final = (
    "suppression_id", "kind", "blind_index", "index_key_id", "channel", "purpose", "reason",
    "cause_id", "since", "lifted_at", "lifted_by", "created_at",
)  # fmt: skip
_ENTRY_SELECT: Final = (
    "s.suppression_id, s.kind, s.blind_index, s.index_key_id, s.channel, s.purpose, "
    "s.reason, s.cause_id, s.since, s.lifted_at, s.lifted_by"
)


class AddressKey(NamedTuple):
    """An address as the store can match it: kind, keyed digest, and the key's id."""

    kind: str
    digest: bytes
    key_id: str


class ConsentRow(NamedTuple):
    """The plain columns of one ledger event."""

    contact_id: str
    action: ConsentAction
    occurred_at: datetime
    consent_id: str
    method: ConsentMethod


def _entry(r: Sequence[Any]) -> SuppressionEntry:
    return SuppressionEntry(
        suppression_id=r[0],
        kind=r[1],
        address_key=bytes(r[2]),
        index_key_id=r[3],
        channel=Channel(r[4]),
        purpose=None if r[5] is None else Purpose(r[5]),
        reason=SuppressionReason(r[6]),
        cause_id=r[7],
        since=from_micros(int(r[8])),
        lifted_at=None if r[9] is None else from_micros(int(r[9])),
        lifted_by=r[10],
    )


class ConsentStore(Protocol):
    """The storage port of consent, suppression and ``can_send``.

    Every method runs in the repository's current transaction when one is open
    (the ingest batch's, for the consent feed), else in one of its own.

    .. versionadded:: 0.4.0
    """

    def known(self, contact_ids: Iterable[str]) -> dict[str, datetime | None]:
        """Return the known contacts among *contact_ids*, each with its erasure time."""
        ...

    def erased(self) -> dict[str, datetime]:
        """Return every erased contact with its erasure time."""
        ...

    def consent_rows(
        self, contact_ids: Sequence[str] | None, channel: Channel, purpose: Purpose, at: datetime
    ) -> list[ConsentRow]:
        """Return the ledger rows for (channel, purpose) up to *at* (all contacts: ``None``)."""
        ...

    def latest_actions(
        self, contact_ids: Sequence[str] | None, channel: Channel, purpose: Purpose, at: datetime
    ) -> dict[str, tuple[int, bool, str]]:
        """Return each contact's deciding ledger row as ``(occurred_us, is_withdraw, id)``.

        The bulk path of ``filter_sendable``: plain values, no records built.
        """
        best: dict[str, tuple[int, bool, str]] = {}
        for r in self.consent_rows(contact_ids, channel, purpose, at):
            key = (to_micros(r.occurred_at), r.action is ConsentAction.WITHDRAW, r.consent_id)
            old = best.get(r.contact_id)
            if old is None or key > old:
                best[r.contact_id] = key
        return best

    def contact_keys(self, contact_ids: Sequence[str], kind: str) -> dict[str, list[AddressKey]]:
        """Return the address keys of each contact's addresses of *kind*."""
        ...

    def keys_of(self, kind: str, value: str) -> list[AddressKey]:
        """Return the keys a normalized address may be stored under (every index key)."""
        ...

    def entries(
        self, keys: Sequence[AddressKey], channel: Channel | None
    ) -> list[SuppressionEntry]:
        """Return the suppression entries on these addresses (on *channel*, or any)."""
        ...

    def contact_entries(
        self, contact_ids: Sequence[str] | None, channel: Channel, at: datetime
    ) -> dict[str, list[SuppressionEntry]]:
        """Return the entries on each contact's addresses for *channel* begun by *at*."""
        ...

    def add_entries(self, entries: Sequence[SuppressionEntry]) -> int:
        """Store entries (existing ids are skipped); return how many were new."""
        ...

    def lift(
        self,
        keys: Sequence[AddressKey],
        channel: Channel,
        reasons: Iterable[SuppressionReason],
        at: datetime,
        by: str,
    ) -> int:
        """Lift the entries of *reasons* begun by *at* on these addresses; return how many."""
        ...

    def append_consents(self, items: Sequence[ConsentEvent]) -> int:
        """Append evidence-free ledger events (fed from provider events); return how many."""
        ...


# ---------------------------------------------------------------------- SQL


class SQLConsentStore(ConsentStore):
    """:class:`ConsentStore` over :class:`~commhistory.store.sql.SQLRepository`."""

    def __init__(self, repo: SQLRepository) -> None:
        self.repo = repo
        self.ph = repo.backend.ph

    def known(self, contact_ids: Iterable[str]) -> dict[str, datetime | None]:
        """See :meth:`ConsentStore.known`."""
        with self.repo.transaction(read=True) as conn:
            rows = self.repo.backend.select_in(
                conn, "SELECT contact_id, erased_at FROM contacts WHERE contact_id IN ({in})",
                list(contact_ids),
            )  # fmt: skip
        return {r[0]: None if r[1] is None else from_micros(int(r[1])) for r in rows}

    def erased(self) -> dict[str, datetime]:
        """See :meth:`ConsentStore.erased`."""
        with self.repo.transaction(read=True) as conn:
            rows = conn.exec_driver_sql(
                "SELECT contact_id, erased_at FROM contacts WHERE erased_at IS NOT NULL"
            ).all()
        return {r[0]: from_micros(int(r[1])) for r in rows}

    def consent_rows(
        self, contact_ids: Sequence[str] | None, channel: Channel, purpose: Purpose, at: datetime
    ) -> list[ConsentRow]:
        """See :meth:`ConsentStore.consent_rows`."""
        ph = self.ph
        sql = (
            "SELECT contact_id, action, occurred_at, consent_id, method FROM consent_events "
            f"WHERE channel = {ph} AND purpose = {ph} AND occurred_at <= {ph}"
        )
        params = (channel.value, purpose.value, to_micros(at))
        with self.repo.transaction(read=True) as conn:
            if contact_ids is None:
                rows = [tuple(r) for r in conn.exec_driver_sql(sql, params)]
            else:
                rows = self.repo.backend.select_in(
                    conn, sql + " AND contact_id IN ({in})", contact_ids, extra=params
                )
        return [
            ConsentRow(
                r[0], ConsentAction(r[1]), from_micros(int(r[2])), r[3], ConsentMethod(r[4])
            )
            for r in rows
        ]

    def latest_actions(
        self, contact_ids: Sequence[str] | None, channel: Channel, purpose: Purpose, at: datetime
    ) -> dict[str, tuple[int, bool, str]]:
        """See :meth:`ConsentStore.latest_actions`."""
        ph = self.ph
        sql = (
            "SELECT contact_id, occurred_at, action, consent_id FROM consent_events "
            f"WHERE channel = {ph} AND purpose = {ph} AND occurred_at <= {ph}"
        )
        params = (channel.value, purpose.value, to_micros(at))
        with self.repo.transaction(read=True) as conn:
            if contact_ids is None:
                cur: Any = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
                try:
                    cur.execute(sql, params)
                    rows = cur.fetchall()
                finally:
                    cur.close()
            else:
                rows = self.repo.backend.select_in(
                    conn, sql + " AND contact_id IN ({in})", contact_ids, extra=params
                )
        best: dict[str, tuple[int, bool, str]] = {}
        get = best.get
        for cid, occ, action, consent_id in rows:
            key = (occ, action == "withdraw", consent_id)
            old = get(cid)
            if old is None or key > old:
                best[cid] = key
        return best

    def contact_keys(self, contact_ids: Sequence[str], kind: str) -> dict[str, list[AddressKey]]:
        """See :meth:`ConsentStore.contact_keys`."""
        with self.repo.transaction(read=True) as conn:
            rows = self.repo.backend.select_in(
                conn,
                "SELECT contact_id, kind, blind_index, index_key_id FROM addresses "
                f"WHERE kind = {self.ph} AND contact_id IN ({{in}})",
                contact_ids,
                extra=(kind,),
            )
        out: dict[str, list[AddressKey]] = {}
        for cid, k, bidx, kid in rows:
            out.setdefault(cid, []).append(AddressKey(k, bytes(bidx), kid))
        return out

    def keys_of(self, kind: str, value: str) -> list[AddressKey]:
        """See :meth:`ConsentStore.keys_of`."""
        keys = []
        # Retired keys' kept blind-index subkeys too: the opt-outs of erased
        # people can never be re-indexed under a new index key.
        for key_id in lookup_key_ids(self.repo.keyring):
            keys.append(AddressKey(kind, self.repo.indexer(key_id).index(kind, value), key_id))
        return keys

    def entries(
        self, keys: Sequence[AddressKey], channel: Channel | None
    ) -> list[SuppressionEntry]:
        """See :meth:`ConsentStore.entries`."""
        if not keys:
            return []
        ph = self.ph
        out: list[SuppressionEntry] = []
        by_kind: dict[str, list[bytes]] = {}
        for key in keys:
            by_kind.setdefault(key.kind, []).append(key.digest)
        with self.repo.transaction(read=True) as c:
            for kind, digests in by_kind.items():
                sql = f"SELECT {_ENTRY_SELECT} FROM suppressions s WHERE s.kind = {ph}"
                extra: tuple[Any, ...] = (kind,)
                if channel is not None:
                    sql += f" AND s.channel = {ph}"
                    extra += (channel.value,)
                rows = self.repo.backend.select_in(
                    c, sql + " AND s.blind_index IN ({in})", digests, extra=extra
                )
                out.extend(_entry(r) for r in rows)
        return out

    def contact_entries(
        self, contact_ids: Sequence[str] | None, channel: Channel, at: datetime
    ) -> dict[str, list[SuppressionEntry]]:
        """See :meth:`ConsentStore.contact_entries`."""
        ph = self.ph
        sql = (
            f"SELECT a.contact_id, {_ENTRY_SELECT} FROM suppressions s JOIN addresses a "
            "ON a.kind = s.kind AND a.blind_index = s.blind_index "
            f"WHERE s.channel = {ph} AND s.since <= {ph}"
        )
        params = (channel.value, to_micros(at))
        with self.repo.transaction(read=True) as conn:
            if contact_ids is None:
                rows = [tuple(r) for r in conn.exec_driver_sql(sql, params)]
            else:
                rows = self.repo.backend.select_in(
                    conn, sql + " AND a.contact_id IN ({in})", contact_ids, extra=params
                )
        out: dict[str, list[SuppressionEntry]] = {}
        for r in rows:
            out.setdefault(r[0], []).append(_entry(r[1:]))
        return out

    def add_entries(self, entries: Sequence[SuppressionEntry]) -> int:
        """See :meth:`ConsentStore.add_entries`."""
        if not entries:
            return 0
        now = to_micros(datetime.now(UTC))
        rows = [
            (
                e.suppression_id, e.kind, e.address_key, e.index_key_id, e.channel.value,
                None if e.purpose is None else e.purpose.value, e.reason.value, e.cause_id,
                to_micros(e.since), None if e.lifted_at is None else to_micros(e.lifted_at),
                e.lifted_by, now,
            )
            for e in entries
        ]  # fmt: skip
        with self.repo.transaction() as c:
            return self.repo.backend.insert(c, schema.suppressions, SUPPRESSION_COLUMNS, rows)

    def lift(
        self,
        keys: Sequence[AddressKey],
        channel: Channel,
        reasons: Iterable[SuppressionReason],
        at: datetime,
        by: str,
    ) -> int:
        """See :meth:`ConsentStore.lift`."""
        wanted = {r.value for r in reasons}
        with self.repo.transaction() as c:
            ids = [
                e.suppression_id
                for e in self.entries(keys, channel)
                if e.reason.value in wanted and e.lifted_at is None and e.since <= at
            ]
            if not ids:
                return 0
            ph = self.ph
            return self.repo.backend.executemany(
                c,
                f"UPDATE suppressions SET lifted_at = {ph}, lifted_by = {ph} "
                f"WHERE suppression_id = {ph} AND lifted_at IS NULL",
                [(to_micros(at), by, sid) for sid in ids],
            )

    def append_consents(self, items: Sequence[ConsentEvent]) -> int:
        """See :meth:`ConsentStore.append_consents`."""
        if not items:
            return 0
        rows = [
            (
                consent_id_of(c), c.contact_id, c.channel.value, c.purpose.value,
                c.action.value, c.method.value, to_micros(c.occurred_at),
                None if c.recorded_at is None else to_micros(c.recorded_at),
                c.notice_version, c.notice_hash, c.actor, None, None, None, None,
            )
            for c in items
        ]  # fmt: skip
        with self.repo.transaction() as c:
            return self.repo.backend.insert(c, schema.consent_events, CONSENT_COLUMNS, rows)


# ---------------------------------------------------------------------- memory


def memory_digest(kind: str, value: str) -> bytes:
    """The memory repository's stand-in for a blind index (an unkeyed hash)."""
    return hashlib.sha256(f"{kind}\x00{value}".encode()).digest()[:16]


class MemoryConsentStore(ConsentStore):
    """:class:`ConsentStore` over :class:`~commhistory.store.memory.MemoryRepository`."""

    def __init__(self, state: MemoryState) -> None:
        self.s = state

    def known(self, contact_ids: Iterable[str]) -> dict[str, datetime | None]:
        """See :meth:`ConsentStore.known`."""
        return {cid: self.s.erased.get(cid) for cid in contact_ids if cid in self.s.contacts}

    def erased(self) -> dict[str, datetime]:
        """See :meth:`ConsentStore.erased`."""
        return dict(self.s.erased)

    def consent_rows(
        self, contact_ids: Sequence[str] | None, channel: Channel, purpose: Purpose, at: datetime
    ) -> list[ConsentRow]:
        """See :meth:`ConsentStore.consent_rows`."""
        wanted = None if contact_ids is None else set(contact_ids)
        return [
            ConsentRow(c.contact_id, c.action, c.occurred_at, cid, c.method)
            for cid, c in self.s.consents.items()
            if c.channel is channel
            and c.purpose is purpose
            and c.occurred_at <= at
            and (wanted is None or c.contact_id in wanted)
        ]

    def contact_keys(self, contact_ids: Sequence[str], kind: str) -> dict[str, list[AddressKey]]:
        """See :meth:`ConsentStore.contact_keys`."""
        wanted = set(contact_ids)
        out: dict[str, list[AddressKey]] = {}
        for (k, value), cids in self.s.addresses.items():
            if k != kind:
                continue
            for cid in cids & wanted:
                out.setdefault(cid, []).append(AddressKey(k, memory_digest(k, value), "memory"))
        return out

    def keys_of(self, kind: str, value: str) -> list[AddressKey]:
        """See :meth:`ConsentStore.keys_of`."""
        return [AddressKey(kind, memory_digest(kind, value), "memory")]

    def entries(
        self, keys: Sequence[AddressKey], channel: Channel | None
    ) -> list[SuppressionEntry]:
        """See :meth:`ConsentStore.entries`."""
        wanted = {(k.kind, k.digest) for k in keys}
        return [
            e
            for e in self.s.suppressions.values()
            if (e.kind, e.address_key) in wanted and (channel is None or e.channel is channel)
        ]

    def contact_entries(
        self, contact_ids: Sequence[str] | None, channel: Channel, at: datetime
    ) -> dict[str, list[SuppressionEntry]]:
        """See :meth:`ConsentStore.contact_entries`."""
        kind = ADDRESS_KINDS.get(channel)
        if kind is None:
            return {}
        by_digest: dict[bytes, set[str]] = {}
        wanted = None if contact_ids is None else set(contact_ids)
        for (k, value), cids in self.s.addresses.items():
            if k == kind:
                hit = cids if wanted is None else cids & wanted
                if hit:
                    by_digest.setdefault(memory_digest(k, value), set()).update(hit)
        out: dict[str, list[SuppressionEntry]] = {}
        for e in self.s.suppressions.values():
            if e.channel is channel and e.since <= at and e.kind == kind:
                for cid in by_digest.get(e.address_key, ()):
                    out.setdefault(cid, []).append(e)
        return out

    def add_entries(self, entries: Sequence[SuppressionEntry]) -> int:
        """See :meth:`ConsentStore.add_entries`."""
        added = 0
        for e in entries:
            if e.suppression_id not in self.s.suppressions:
                self.s.suppressions[e.suppression_id] = e
                added += 1
        return added

    def lift(
        self,
        keys: Sequence[AddressKey],
        channel: Channel,
        reasons: Iterable[SuppressionReason],
        at: datetime,
        by: str,
    ) -> int:
        """See :meth:`ConsentStore.lift`."""
        wanted = set(reasons)
        lifted = 0
        for e in self.entries(keys, channel):
            if e.reason in wanted and e.lifted_at is None and e.since <= at:
                self.s.suppressions[e.suppression_id] = attrs.evolve(e, lifted_at=at, lifted_by=by)
                lifted += 1
        return lifted

    def append_consents(self, items: Sequence[ConsentEvent]) -> int:
        """See :meth:`ConsentStore.append_consents`."""
        added = 0
        for c in items:
            cid = consent_id_of(c)
            if cid not in self.s.consents:
                self.s.consents[cid] = attrs.evolve(c, consent_id=cid)
                self.s.contacts.add(c.contact_id)
                added += 1
        return added
