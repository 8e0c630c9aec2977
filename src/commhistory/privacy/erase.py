"""Erasure by crypto-shredding: the person becomes unreadable and unfindable, KPIs stay.

:func:`erase_subject` (``repo.erase_subject``), in one transaction:

* destroys the contact's wrapped data key, so every ciphertext of that contact
  (addresses, subjects, bodies, event details, consent evidence) can never be
  decrypted again, in the database or in any backup of it;
* deletes the contact's blind-index rows, so no lookup by address finds them;
* deletes the masked addresses of the contact's messages
  (``messages.address_masked``, kept in the clear for masked reads);
* adds an ``erasure`` suppression (marketing) on each of their addresses, kept
  as a keyed hash only, and keeps existing opt-out and bounce entries, which
  are address-level already: an opt-out must keep being honoured;
* keeps consent evidence for its retention period (see
  :mod:`commhistory.privacy.retention`), re-encrypted under the keyring's
  ``consent-evidence`` subkey, until ``retain_until``;
* keeps the plain, aggregate-safe columns of messages and events (ids,
  channel, campaign, variant, times, types, bounce class, revenue), so KPI
  reports are identical before and after.

Erasing twice is harmless (the second report says ``already_erased``).

.. versionadded:: 0.1.0
"""

# ruff: noqa: S608

from __future__ import annotations

import copy
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Final

import attrs
import sqlalchemy as sa

from commhistory.consent.keys import suppression_id
from commhistory.consent.records import _iso
from commhistory.errors import NotFoundError
from commhistory.model import (
    Channel,
    ConsentEvent,
    Purpose,
    SuppressionEntry,
    SuppressionReason,
)
from commhistory.normalize.mask import mask_address
from commhistory.normalize.time import from_micros, to_micros
from commhistory.privacy.retention import RetentionPolicy
from commhistory.store.consent import AddressKey, memory_digest
from commhistory.store.layout import EVIDENCE_COLUMNS, EVIDENCE_PURPOSE
from commhistory.store.memory import MemoryRepository

__all__ = ["EVIDENCE_PURPOSE", "ErasureItem", "ErasureReport", "erase_subject"]


CHANNELS_OF_KIND: Final[dict[str, tuple[Channel, ...]]] = {
    "email": (Channel.EMAIL,),
    "phone": (Channel.SMS, Channel.VOICE),
    "line": (Channel.LINE,),
}


@attrs.frozen(kw_only=True)
class ErasureItem:
    """One kind of data an erasure destroyed or kept.

    Attributes:
        what: The data (``"data_key"``, ``"addresses"``, ``"consent_evidence"``...).
        count: How many records.
        why: Why it was destroyed or kept.
        until: For kept data under a retention period, when it is due for purging.
    """

    what: str
    count: int
    why: str
    until: datetime | None = None


@attrs.frozen(kw_only=True)
class ErasureReport:
    """What :func:`erase_subject` did.

    Attributes:
        contact_id: The contact erased.
        erased_at: When it was erased (the first time), UTC.
        already_erased: True when the contact had been erased before this call.
        destroyed: What was made unreadable or deleted.
        kept: What was kept, why, and until when.

    .. versionadded:: 0.1.0
    """

    contact_id: str
    erased_at: datetime
    already_erased: bool
    destroyed: tuple[ErasureItem, ...]
    kept: tuple[ErasureItem, ...]

    def to_dict(self) -> dict[str, Any]:
        """Return the report as a JSON-ready dict."""

        def item(i: ErasureItem) -> dict[str, Any]:
            out: dict[str, Any] = {"what": i.what, "count": i.count, "why": i.why}
            if i.until is not None:
                out["until"] = _iso(i.until)
            return out

        return {
            "contact_id": self.contact_id,
            "erased_at": _iso(self.erased_at),
            "already_erased": self.already_erased,
            "destroyed": [item(i) for i in self.destroyed],
            "kept": [item(i) for i in self.kept],
        }


def erase_subject(
    repo: Any,
    contact_id: str,
    *,
    policy: RetentionPolicy | None = None,
    now: datetime | None = None,
) -> ErasureReport:
    """Erase a person (GDPR Art. 17, APPI Art. 35) by crypto-shredding their data key.

    Args:
        repo: A SQL or memory repository.
        contact_id: The contact.
        policy: The retention policy that dates the kept consent evidence.
        now: The erasure time (default: now).

    Returns:
        What was destroyed and what was kept, why and until when.

    Raises:
        NotFoundError: No such contact (``kind="contact"``).
        StorageError: The database failed; nothing was changed.
    """
    policy = policy or RetentionPolicy()
    t = (now or datetime.now(UTC)).astimezone(UTC)
    if isinstance(repo, MemoryRepository):
        return _erase_memory(repo, contact_id, policy, t)
    return _erase_sql(repo, contact_id, policy, t)


def _entries_for(keys: list[AddressKey], contact_id: str, at: datetime) -> list[SuppressionEntry]:
    out = []
    cause = f"erasure:{contact_id}"
    for key in keys:
        for channel in CHANNELS_OF_KIND.get(key.kind, ()):
            out.append(
                SuppressionEntry(
                    suppression_id=suppression_id(
                        key, channel, Purpose.MARKETING, SuppressionReason.ERASURE, cause
                    ),
                    kind=key.kind,
                    channel=channel,
                    purpose=Purpose.MARKETING,
                    reason=SuppressionReason.ERASURE,
                    since=at,
                    cause_id=cause,
                    address_key=key.digest,
                    index_key_id=key.key_id,
                )
            )
    return out


def _report(
    contact_id: str,
    erased_at: datetime,
    *,
    already: bool,
    counts: dict[str, int],
    until: datetime | None,
) -> ErasureReport:
    destroyed = (
        ErasureItem(
            what="data_key",
            count=counts.get("data_key", 0),
            why="crypto-shredded: every ciphertext of the contact is unreadable, backups too",
        ),
        ErasureItem(
            what="addresses",
            count=counts.get("addresses", 0),
            why="blind-index rows deleted: no lookup by address finds the contact",
        ),
        ErasureItem(
            what="message_content",
            count=counts.get("messages", 0),
            why="addresses, subjects, bodies and metadata unreadable (under the destroyed key)",
        ),
        ErasureItem(
            what="masked_addresses",
            count=counts.get("masked", 0),
            why="the masked addresses kept in the clear for masked reads are deleted",
        ),
        ErasureItem(
            what="event_details",
            count=counts.get("events", 0),
            why="addresses, reasons, URLs, user agents and IPs unreadable",
        ),
    )
    kept = (
        ErasureItem(
            what="aggregate_columns",
            count=counts.get("messages", 0) + counts.get("events", 0),
            why="ids, channel, campaign, variant, times, event types, bounce class and revenue "
            "are not personal on their own and keep KPI reports identical",
        ),
        ErasureItem(
            what="suppression",
            count=counts.get("suppression", 0),
            why="opt-outs and bounces must keep being honoured; kept as keyed hashes of the "
            "addresses only, with an 'erasure' entry against re-import",
        ),
        ErasureItem(
            what="consent_evidence",
            count=counts.get("consent", 0),
            why="legal retention of consent records (Specified Electronic Mail Act); "
            "re-encrypted under the keyring's consent-evidence key, purged when due",
            until=until,
        ),
        ErasureItem(
            what="dead_letters",
            count=0,
            why="rejected input is not attributed to contacts; it expires under the "
            "dead-letter retention policy",
        ),
    )
    return ErasureReport(
        contact_id=contact_id,
        erased_at=erased_at,
        already_erased=already,
        destroyed=destroyed,
        kept=kept,
    )


def _erase_sql(
    repo: Any, contact_id: str, policy: RetentionPolicy, now: datetime
) -> ErasureReport:
    be = repo.backend
    ph = be.ph
    lock = " FOR UPDATE" if repo.dialect == "postgresql" else ""
    data = repo.consent_store
    try:
        with repo.transaction() as conn:
            row = conn.exec_driver_sql(
                f"SELECT data_key, erased_at FROM contacts WHERE contact_id = {ph}{lock}",
                (contact_id,),
            ).first()
            if row is None:
                raise NotFoundError(kind="contact", identifier=contact_id)
            counts = {
                "messages": _count(conn, "messages", ph, contact_id),
                "events": _count(conn, "events", ph, contact_id),
                "consent": _count(conn, "consent_events", ph, contact_id),
            }
            if row[1] is not None:
                until = conn.exec_driver_sql(
                    f"SELECT MAX(retain_until) FROM consent_events WHERE contact_id = {ph}",
                    (contact_id,),
                ).scalar()
                return _report(
                    contact_id,
                    from_micros(int(row[1])),
                    already=True,
                    counts=counts,
                    until=None if until is None else from_micros(int(until)),
                )
            cipher = repo.contact_cipher(conn, contact_id)
            keys = [
                AddressKey(r[0], bytes(r[1]), r[2])
                for r in conn.exec_driver_sql(
                    "SELECT kind, blind_index, index_key_id FROM addresses "
                    f"WHERE contact_id = {ph}",
                    (contact_id,),
                )
            ]
            entries = _entries_for(keys, contact_id, now)
            data.add_entries(entries)
            counts["suppression"] = len(data.entries(keys, None))
            until = policy.consent_until(now)
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
                        None if blob is None else bytes(blob),
                        table="consent_events", column=column, row_id=cid,
                    )  # fmt: skip
                    values.append(
                        keeper.encrypt(plain, table="consent_events", column=column, row_id=cid)
                    )
                updates.append((*values, key_id, to_micros(until), cid))
            sets = ", ".join(f"{c} = {ph}" for c in EVIDENCE_COLUMNS)
            be.executemany(
                conn,
                f"UPDATE consent_events SET {sets}, evidence_key_id = {ph}, retain_until = {ph} "
                f"WHERE consent_id = {ph}",
                updates,
            )
            counts["addresses"] = len(keys)
            with _overwriting(conn, repo.dialect):
                conn.exec_driver_sql(
                    f"DELETE FROM addresses WHERE contact_id = {ph}", (contact_id,)
                )
                counts["masked"] = conn.exec_driver_sql(
                    "UPDATE messages SET address_masked = NULL "
                    f"WHERE contact_id = {ph} AND address_masked IS NOT NULL",
                    (contact_id,),
                ).rowcount
                conn.exec_driver_sql(
                    f"UPDATE contacts SET data_key = NULL, wrap_key_id = NULL, erased_at = {ph} "
                    f"WHERE contact_id = {ph}",
                    (to_micros(now), contact_id),
                )
            counts["data_key"] = 1
    finally:
        repo.forget_cached_keys()
    if repo.dialect == "sqlite":
        # After the commit, also of an outer transaction this one joined (a
        # guarded erasure commits with its audit entry): a checkpoint cannot
        # take frames that are not committed yet.
        repo.after_commit(lambda: _truncate_wal(repo))
    return _report(
        contact_id, now, already=False, counts=counts, until=until if counts["consent"] else None
    )


@contextmanager
def _overwriting(conn: Any, dialect: str) -> Iterator[None]:
    """On SQLite, overwrite deleted and replaced content with zeros (``secure_delete``).

    The masked addresses are plain text: without it, the bytes of an erased
    mask could stay in the page's free space. Restored afterwards, since the
    connection goes back to the pool.
    """
    if dialect != "sqlite":
        yield
        return
    before = int(conn.exec_driver_sql("PRAGMA secure_delete").scalar_one())
    conn.exec_driver_sql("PRAGMA secure_delete = ON")
    try:
        yield
    finally:
        conn.exec_driver_sql(f"PRAGMA secure_delete = {before}")


_WAL_BUSY_MS: Final = 1000
"""How long the post-erasure checkpoint waits for other readers before giving up."""


def _truncate_wal(repo: Any) -> None:
    """Checkpoint and truncate SQLite's WAL, best-effort, so no frame keeps an erased mask.

    Frames written before the erasure still hold the old pages (masked
    addresses in the clear) until the WAL is reset. When another connection is
    reading, the checkpoint gives up after :data:`_WAL_BUSY_MS`; those frames
    are then overwritten by later writes instead. The erasure itself is
    already committed, so a failure here is not an error.
    """
    try:
        raw = repo.engine.raw_connection()
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


def _count(conn: Any, table: str, ph: str, contact_id: str) -> int:
    return int(
        conn.exec_driver_sql(
            f"SELECT COUNT(*) FROM {table} WHERE contact_id = {ph}", (contact_id,)
        ).scalar_one()
    )


def memory_retain_until(repo: MemoryRepository) -> dict[str, datetime]:
    """The retained consent ids of erased contacts in a memory repository, with due dates."""
    return repo._s.retained


def _redact(record: Any, **values: Any) -> Any:
    clone = copy.copy(record)
    for name, value in values.items():
        object.__setattr__(clone, name, value)
    return clone


def _erase_memory(
    repo: MemoryRepository, contact_id: str, policy: RetentionPolicy, now: datetime
) -> ErasureReport:
    s = repo._s
    state = repo._s
    if contact_id not in s.contacts:
        raise NotFoundError(kind="contact", identifier=contact_id)
    message_ids = {mid for mid, m in s.messages.items() if m.contact_id == contact_id}
    event_ids = [eid for eid, c in s.event_contact.items() if c == contact_id]
    consent_ids = [cid for cid, c in s.consents.items() if c.contact_id == contact_id]
    counts = {"messages": len(message_ids), "events": len(event_ids), "consent": len(consent_ids)}
    if contact_id in state.erased:
        until = max((state.retained[c] for c in consent_ids if c in state.retained), default=None)
        return _report(
            contact_id, state.erased[contact_id], already=True, counts=counts, until=until
        )
    keys = []
    for (kind, value), cids in list(s.addresses.items()):
        if contact_id in cids:
            keys.append(AddressKey(kind, memory_digest(kind, value), "memory"))
            cids.discard(contact_id)
            if not cids:
                del s.addresses[(kind, value)]
    for e in _entries_for(keys, contact_id, now):
        state.suppressions.setdefault(e.suppression_id, e)
    counts["masked"] = sum(
        1 for mid in message_ids if mask_address(s.messages[mid].channel, s.messages[mid].address)
    )
    for mid in message_ids:
        s.messages[mid] = _redact(
            s.messages[mid], address="", subject=None, body=None, metadata={}
        )
    for eid in event_ids:
        s.events[eid] = _redact(
            s.events[eid],
            address=None,
            reason=None,
            url=None,
            user_agent=None,
            ip=None,
            metadata={},
        )
    until = policy.consent_until(now)
    for cid in consent_ids:
        state.retained[cid] = until
    state.erased[contact_id] = now
    counts["addresses"] = len(keys)
    counts["data_key"] = 1
    wanted = {(k.kind, k.digest) for k in keys}
    counts["suppression"] = sum(
        1 for e in state.suppressions.values() if (e.kind, e.address_key) in wanted
    )
    return _report(
        contact_id, now, already=False, counts=counts, until=until if consent_ids else None
    )


def read_retained(repo: Any, contact_id: str) -> list[ConsentEvent]:
    """Read an erased contact's retained consent events, evidence decrypted, in time order.

    Args:
        repo: A SQL repository.
        contact_id: The erased contact.

    Returns:
        The events still kept (none once purged).
    """
    from commhistory.store.layout import CONSENT_COLUMNS  # noqa: PLC0415
    from commhistory.store.sql import _consent_from_row  # noqa: PLC0415

    ph = repo.backend.ph
    with repo.transaction(read=True) as conn:
        rows = conn.exec_driver_sql(
            f"SELECT {', '.join(CONSENT_COLUMNS)}, evidence_key_id FROM consent_events "
            f"WHERE contact_id = {ph} ORDER BY occurred_at, consent_id",
            (contact_id,),
        ).all()
    out = []
    for r in rows:
        key_id = r[-1]
        if key_id is None:
            continue
        keeper = repo.keyed_cipher(key_id, EVIDENCE_PURPOSE)
        out.append(_consent_from_row(tuple(r[:-1]), keeper.decrypt))
    return out
