"""The storage side of consent and suppression, for the SQL and the in-memory repository.

Everything that reads or writes tables lives here, behind one small interface
(:class:`ConsentData`), so the ledger, the suppression list and ``can_send``
hold only the rules. SQL statements are built from schema identifiers and
placeholders; every value is bound.
"""

# ruff: noqa: S608

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, Final, NamedTuple

import sqlalchemy as sa

from commhistory.consent._records import SuppressionEntry, SuppressionReason
from commhistory.crypto import lookup_key_ids
from commhistory.errors import PayloadError
from commhistory.model import Channel, ConsentAction, ConsentEvent, ConsentMethod, Purpose
from commhistory.store import schema
from commhistory.store._common import ADDRESS_KINDS, consent_id_of, from_micros, to_micros
from commhistory.store.memory import MemoryRepository
from commhistory.store.sql import CONSENT_COLUMNS, SQLRepository

__all__ = ["AddressKey", "ConsentData", "ConsentRow", "data_for", "kind_of"]

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


def kind_of(channel: Channel) -> str | None:
    """The blind-index kind of a channel's addresses (``None``: not address-indexed)."""
    return ADDRESS_KINDS.get(channel)


def normalize_address(channel: Channel, address: str) -> tuple[str, str]:
    """Return ``(kind, normalized address)`` for a channel.

    Raises:
        PayloadError: The channel has no indexed addresses.
        NormalizationError: The address is invalid for the channel.
    """
    from commhistory.normalize import (  # noqa: PLC0415
        normalize_email,
        normalize_line_user_id,
        normalize_phone,
    )

    kind = kind_of(channel)
    if kind is None:
        raise PayloadError(field="channel", reason="channel has no address-level suppression")
    if not isinstance(address, str):
        raise PayloadError(field="address", reason="expected a string")
    if kind == "email":
        return kind, normalize_email(address)
    if kind == "phone":
        return kind, normalize_phone(address)
    return kind, normalize_line_user_id(address)


def suppression_id(
    key: AddressKey,
    channel: Channel,
    purpose: Purpose | None,
    reason: SuppressionReason,
    cause_id: str | None,
) -> str:
    """Derive a suppression entry's id from its content (idempotent feeding)."""
    parts = (
        key.kind,
        key.digest.hex(),
        channel.value,
        "*" if purpose is None else purpose.value,
        reason.value,
        cause_id or "",
    )
    return "sup:" + hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


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


class ConsentData:
    """What consent, suppression and ``can_send`` need from a repository (the storage role).

    Methods taking ``conn`` accept the connection of an open transaction (SQL
    only, used by the ingest hook); without it they run their own.
    """

    def known(self, contact_ids: Iterable[str]) -> dict[str, datetime | None]:
        """Return the known contacts among *contact_ids*, each with its erasure time."""
        raise NotImplementedError

    def erased(self) -> dict[str, datetime]:
        """Return every erased contact with its erasure time."""
        raise NotImplementedError

    def consent_rows(
        self, contact_ids: Sequence[str] | None, channel: Channel, purpose: Purpose, at: datetime
    ) -> list[ConsentRow]:
        """Return the ledger rows for (channel, purpose) up to *at* (all contacts: ``None``)."""
        raise NotImplementedError

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
        raise NotImplementedError

    def keys_of(self, kind: str, value: str) -> list[AddressKey]:
        """Return the keys a normalized address may be stored under (every index key)."""
        raise NotImplementedError

    def entries(
        self, keys: Sequence[AddressKey], channel: Channel | None, conn: Any = None
    ) -> list[SuppressionEntry]:
        """Return the suppression entries on these addresses (on *channel*, or any)."""
        raise NotImplementedError

    def contact_entries(
        self, contact_ids: Sequence[str] | None, channel: Channel, at: datetime
    ) -> dict[str, list[SuppressionEntry]]:
        """Return the entries on each contact's addresses for *channel* begun by *at*."""
        raise NotImplementedError

    def add_entries(self, entries: Sequence[SuppressionEntry], conn: Any = None) -> int:
        """Store entries (existing ids are skipped); return how many were new."""
        raise NotImplementedError

    def lift(  # noqa: PLR0917 - private storage interface
        self,
        keys: Sequence[AddressKey],
        channel: Channel,
        reasons: Iterable[SuppressionReason],
        at: datetime,
        by: str,
        conn: Any = None,
    ) -> int:
        """Lift the entries of *reasons* begun by *at* on these addresses; return how many."""
        raise NotImplementedError

    def append_consents(self, items: Sequence[ConsentEvent], conn: Any = None) -> int:
        """Append evidence-free ledger events (fed from provider events); return how many."""
        raise NotImplementedError


# ---------------------------------------------------------------------- SQL


class SQLConsentData(ConsentData):
    """:class:`ConsentData` over :class:`~commhistory.store.sql.SQLRepository`."""

    def __init__(self, repo: SQLRepository) -> None:
        self.repo = repo
        self.ph = repo.backend.ph

    def _read(self, conn: Any) -> Any:
        if conn is not None:
            return _Given(conn)
        return self.repo.transaction(read=True)

    def _write(self, conn: Any) -> Any:
        if conn is not None:
            return _Given(conn)
        return self.repo.transaction()

    def known(self, contact_ids: Iterable[str]) -> dict[str, datetime | None]:
        """See :meth:`ConsentData.known`."""
        with self.repo.transaction(read=True) as conn:
            rows = self.repo.backend.select_in(
                conn, "SELECT contact_id, erased_at FROM contacts WHERE contact_id IN ({in})",
                list(contact_ids),
            )  # fmt: skip
        return {r[0]: None if r[1] is None else from_micros(int(r[1])) for r in rows}

    def erased(self) -> dict[str, datetime]:
        """See :meth:`ConsentData.erased`."""
        with self.repo.transaction(read=True) as conn:
            rows = conn.exec_driver_sql(
                "SELECT contact_id, erased_at FROM contacts WHERE erased_at IS NOT NULL"
            ).all()
        return {r[0]: from_micros(int(r[1])) for r in rows}

    def consent_rows(
        self, contact_ids: Sequence[str] | None, channel: Channel, purpose: Purpose, at: datetime
    ) -> list[ConsentRow]:
        """See :meth:`ConsentData.consent_rows`."""
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
        """See :meth:`ConsentData.latest_actions`."""
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
        """See :meth:`ConsentData.contact_keys`."""
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
        """See :meth:`ConsentData.keys_of`."""
        keys = []
        # Retired keys' kept blind-index subkeys too: the opt-outs of erased
        # people can never be re-indexed under a new index key.
        for key_id in lookup_key_ids(self.repo.keyring):
            keys.append(AddressKey(kind, self.repo.indexer(key_id).index(kind, value), key_id))
        return keys

    def entries(
        self, keys: Sequence[AddressKey], channel: Channel | None, conn: Any = None
    ) -> list[SuppressionEntry]:
        """See :meth:`ConsentData.entries`."""
        if not keys:
            return []
        ph = self.ph
        out: list[SuppressionEntry] = []
        by_kind: dict[str, list[bytes]] = {}
        for key in keys:
            by_kind.setdefault(key.kind, []).append(key.digest)
        with self._read(conn) as c:
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
        """See :meth:`ConsentData.contact_entries`."""
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

    def add_entries(self, entries: Sequence[SuppressionEntry], conn: Any = None) -> int:
        """See :meth:`ConsentData.add_entries`."""
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
        with self._write(conn) as c:
            return self.repo.backend.insert(c, schema.suppressions, SUPPRESSION_COLUMNS, rows)

    def lift(  # noqa: PLR0917 - private storage interface
        self,
        keys: Sequence[AddressKey],
        channel: Channel,
        reasons: Iterable[SuppressionReason],
        at: datetime,
        by: str,
        conn: Any = None,
    ) -> int:
        """See :meth:`ConsentData.lift`."""
        wanted = {r.value for r in reasons}
        with self._write(conn) as c:
            ids = [
                e.suppression_id
                for e in self.entries(keys, channel, conn=c)
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

    def append_consents(self, items: Sequence[ConsentEvent], conn: Any = None) -> int:
        """See :meth:`ConsentData.append_consents`."""
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
        with self._write(conn) as c:
            return self.repo.backend.insert(c, schema.consent_events, CONSENT_COLUMNS, rows)


class _Given:
    """A context manager yielding an already open connection."""

    def __init__(self, conn: sa.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sa.Connection:
        return self.conn

    def __exit__(self, *exc: object) -> None:
        return None


# ---------------------------------------------------------------------- memory


class MemoryPrivacyState:
    """Suppression entries and erasures of a :class:`MemoryRepository`."""

    def __init__(self) -> None:
        self.entries: dict[str, SuppressionEntry] = {}
        self.erased: dict[str, datetime] = {}
        self.retained: dict[str, datetime] = {}
        """Consent ids of erased contacts, with the date their evidence is due."""


def memory_state(repo: MemoryRepository) -> MemoryPrivacyState:
    """Return (creating it once) the privacy state kept alongside a memory repository."""
    state: MemoryPrivacyState | None = getattr(repo, "_privacy_state", None)
    if state is None:
        state = MemoryPrivacyState()
        repo._privacy_state = state  # type: ignore[attr-defined]
    return state


def memory_digest(kind: str, value: str) -> bytes:
    """The memory repository's stand-in for a blind index (an unkeyed hash)."""
    return hashlib.sha256(f"{kind}\x00{value}".encode()).digest()[:16]


class MemoryConsentData(ConsentData):
    """:class:`ConsentData` over :class:`~commhistory.store.memory.MemoryRepository`."""

    def __init__(self, repo: MemoryRepository) -> None:
        self.repo = repo
        self.s = repo._s
        self.state = memory_state(repo)

    def known(self, contact_ids: Iterable[str]) -> dict[str, datetime | None]:
        """See :meth:`ConsentData.known`."""
        return {cid: self.state.erased.get(cid) for cid in contact_ids if cid in self.s.contacts}

    def erased(self) -> dict[str, datetime]:
        """See :meth:`ConsentData.erased`."""
        return dict(self.state.erased)

    def consent_rows(
        self, contact_ids: Sequence[str] | None, channel: Channel, purpose: Purpose, at: datetime
    ) -> list[ConsentRow]:
        """See :meth:`ConsentData.consent_rows`."""
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
        """See :meth:`ConsentData.contact_keys`."""
        wanted = set(contact_ids)
        out: dict[str, list[AddressKey]] = {}
        for (k, value), cids in self.s.addresses.items():
            if k != kind:
                continue
            for cid in cids & wanted:
                out.setdefault(cid, []).append(AddressKey(k, memory_digest(k, value), "memory"))
        return out

    def keys_of(self, kind: str, value: str) -> list[AddressKey]:
        """See :meth:`ConsentData.keys_of`."""
        return [AddressKey(kind, memory_digest(kind, value), "memory")]

    def entries(
        self, keys: Sequence[AddressKey], channel: Channel | None, conn: Any = None
    ) -> list[SuppressionEntry]:
        """See :meth:`ConsentData.entries`."""
        wanted = {(k.kind, k.digest) for k in keys}
        return [
            e
            for e in self.state.entries.values()
            if (e.kind, e.address_key) in wanted and (channel is None or e.channel is channel)
        ]

    def contact_entries(
        self, contact_ids: Sequence[str] | None, channel: Channel, at: datetime
    ) -> dict[str, list[SuppressionEntry]]:
        """See :meth:`ConsentData.contact_entries`."""
        kind = kind_of(channel)
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
        for e in self.state.entries.values():
            if e.channel is channel and e.since <= at and e.kind == kind:
                for cid in by_digest.get(e.address_key, ()):
                    out.setdefault(cid, []).append(e)
        return out

    def add_entries(self, entries: Sequence[SuppressionEntry], conn: Any = None) -> int:
        """See :meth:`ConsentData.add_entries`."""
        added = 0
        for e in entries:
            if e.suppression_id not in self.state.entries:
                self.state.entries[e.suppression_id] = e
                added += 1
        return added

    def lift(  # noqa: PLR0917 - private storage interface
        self,
        keys: Sequence[AddressKey],
        channel: Channel,
        reasons: Iterable[SuppressionReason],
        at: datetime,
        by: str,
        conn: Any = None,
    ) -> int:
        """See :meth:`ConsentData.lift`."""
        import attrs  # noqa: PLC0415

        wanted = set(reasons)
        lifted = 0
        for e in self.entries(keys, channel):
            if e.reason in wanted and e.lifted_at is None and e.since <= at:
                self.state.entries[e.suppression_id] = attrs.evolve(e, lifted_at=at, lifted_by=by)
                lifted += 1
        return lifted

    def append_consents(self, items: Sequence[ConsentEvent], conn: Any = None) -> int:
        """See :meth:`ConsentData.append_consents`."""
        import attrs  # noqa: PLC0415

        added = 0
        for c in items:
            cid = consent_id_of(c)
            if cid not in self.s.consents:
                self.s.consents[cid] = attrs.evolve(c, consent_id=cid)
                self.s.contacts.add(c.contact_id)
                added += 1
        return added


def data_for(repo: object) -> ConsentData:
    """Return the :class:`ConsentData` of a repository.

    Raises:
        PayloadError: The repository is neither SQL nor in-memory.
    """
    if isinstance(repo, SQLRepository):
        return SQLConsentData(repo)
    if isinstance(repo, MemoryRepository):
        return MemoryConsentData(repo)
    raise PayloadError(
        field="repository",
        reason=f"consent needs a SQL or memory repository, not {type(repo).__name__}",
    )
