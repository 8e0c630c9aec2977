"""Batched, atomic, idempotent ingest into the SQL repository.

:class:`SQLIngest` is the write part of :class:`~commhistory.store.sql.SQLRepository`:
it splits input into batches, writes each batch in one transaction (retried on a
deadlock), dedupes messages, events and consent events, encrypts personal fields
under each contact's data key, links orphan events, runs the batch feeds and the
batch hook, and keeps rejected lines as dead letters.

.. versionadded:: 0.4.0
"""

# SQL text here is built only from schema identifiers, placeholders and integers;
# every value is bound as a parameter.
# ruff: noqa: S608

from __future__ import annotations

import hashlib
import hmac
import random
import secrets
import time
from collections.abc import Collection, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Final

import sqlalchemy as sa

from commhistory.crypto import (
    FieldCipher,
    NoncePool,
    RowSealer,
    derive_subkey,
)
from commhistory.errors import (
    StorageError,
)
from commhistory.model import (
    ADDRESS_KINDS,
    ConsentEvent,
    Event,
    EventType,
    Message,
)
from commhistory.normalize.link import link_label
from commhistory.normalize.mask import mask_address
from commhistory.normalize.time import EPOCH, to_micros
from commhistory.store import schema
from commhistory.store._backend import Row
from commhistory.store._lru import Pending
from commhistory.store.activities import sql_write_activities
from commhistory.store.attributes import sql_apply
from commhistory.store.batching import (
    Batch,
    BatchedWrites,
)
from commhistory.store.feed import SQLStoredBatch
from commhistory.store.kpi import (
    NO_OUTCOMES,
    OUTCOME_COLUMNS,
    OutcomeValues,
    fold_outcomes,
    refresh_outcomes,
)
from commhistory.store.layout import (
    ADDRESS_COLUMNS,
    CONSENT_COLUMNS,
    DEAD_LETTER_COLUMNS,
    DEAD_LETTER_PURPOSE,
    EVENT_SECRET_COLUMNS,
    EVENT_WRITE_COLUMNS,
    FINGERPRINT_PURPOSE,
    MESSAGE_WRITE_COLUMNS,
    ORPHAN_PURPOSE,
    address_row_id,
)
from commhistory.store.protocol import (
    BatchHook,
    BatchOutcome,
    IngestReport,
)
from commhistory.store.sql_core import SQLCore

if TYPE_CHECKING:
    pass

__all__ = ["SQLIngest"]

_US_DELTA: Final = timedelta(microseconds=1)

_BATCH_ATTEMPTS: Final = 5
"""How often a batch is tried when the database aborts it to break a deadlock."""

_LOOKUP_BELOW: Final = 500
"""Batches of at most this many events look up which are stored before writing (PostgreSQL).

Larger batches are copied straight into ``events`` and look up first only after
a batch met stored events: a bulk import of new events skips the lookups (about
a tenth of the cost of writing), a re-import or a retried webhook does not fail
a ``COPY`` (and log a unique violation on the server) for each batch.
"""

_RETRYABLE_SQLSTATES: Final = frozenset({"40001", "40P01"})  # serialization failure, deadlock


def _retryable(exc: StorageError) -> bool:
    """Whether the database aborted the transaction only to resolve a conflict."""
    orig = getattr(exc.__cause__, "orig", exc.__cause__)
    return getattr(orig, "sqlstate", None) in _RETRYABLE_SQLSTATES


def _storage_error(exc: BaseException) -> StorageError:
    reason = getattr(getattr(exc, "orig", exc), "sqlstate", None) or type(exc).__name__
    return StorageError(f"the database refused the operation ({reason})")


def _now_us() -> int:
    return to_micros(datetime.now(UTC))


class SQLIngest(SQLCore, BatchedWrites):
    """The write part of :class:`~commhistory.store.sql.SQLRepository`."""

    def _write(self, parts: Iterable[Batch], source: str) -> IngestReport:
        report = IngestReport()
        joined = self.in_transaction
        hook: BatchHook | None = getattr(self._local, "hook", None)
        for batch in parts:
            for attempt in range(1, _BATCH_ATTEMPTS + 1):
                pending = Pending()
                try:
                    with self.transaction() as conn:
                        part, changed = self._write_batch(conn, batch, source, pending)
                        if hook is not None:
                            hook(BatchOutcome(source=source, report=part, changed=changed))
                except StorageError as exc:
                    # Nothing of the batch was committed: forget what it taught us.
                    self._ciphers.clear()
                    if joined or attempt == _BATCH_ATTEMPTS or not _retryable(exc):
                        raise
                    time.sleep(random.uniform(0.01, 0.05) * attempt)  # noqa: S311 - jitter
                    continue
                except BaseException:
                    self._ciphers.clear()
                    raise
                break
            # Inside an outer transaction these are learned early; the outer
            # transaction forgets them all if it rolls back.
            self._ciphers.update(pending.ciphers)
            self._addresses.update(pending.addresses)
            self._message_contacts.update(pending.messages)
            self._pair_messages.update(pending.pairs)
            report += part
        return report

    def _write_batch(
        self, conn: sa.Connection, batch: Batch, source: str, pending: Pending
    ) -> tuple[IngestReport, tuple[str, ...]]:
        inserted = duplicates = linked = 0
        changed: list[str] = []
        touched: set[str] = set()  # messages whose outcomes this batch may change
        # Messages stored with the outcomes of this batch's events, folded in memory:
        # {message id: how many of the batch's events name it}.
        predicted: dict[str, int] = {}
        # Messages this batch stored whose only events are the batch's (for the feeds).
        settled: set[str] = set()
        if batch.messages:
            ins, dup, linked = self._write_messages(
                conn, batch, pending, touched, predicted=predicted, settled=settled
            )
            inserted += ins
            duplicates += dup
        if batch.events:
            ins, refused = self._write_events(conn, batch, pending, touched, predicted)
            inserted += ins
            duplicates += len(batch.events) - ins - refused
        if touched:
            refresh_outcomes(conn, self._backend, touched)
        if batch.consents:
            ins, dup = self._write_consents(conn, batch, pending)
            inserted += ins
            duplicates += dup
            changed.extend(
                c.contact_id for c in batch.consents if c.contact_id not in pending.erased
            )
        if batch.activities:
            ins, dup = sql_write_activities(self, conn, batch, pending)
            inserted += ins
            duplicates += dup
        if batch.contact_changes:
            ins, dup = self._write_contacts(conn, batch, pending)
            inserted += ins
            duplicates += dup
        feeds = self._feeds  # one snapshot: set_batch_feed replaces the dict
        if feeds:
            stored = SQLStoredBatch(
                conn,
                batch,
                source,
                ph=self._backend.ph,
                select_in=self._backend.select_in,
                ciphers=lambda ids: self.ciphers(conn, ids, pending, create=False),
                settled=settled,
            )
            for feed in feeds.values():
                changed.extend(feed(stored))
        if batch.rejects:
            self._write_dead_letters(conn, batch, source)
        report = IngestReport(
            inserted=inserted, duplicates=duplicates, rejected=len(batch.rejects), linked=linked
        )
        return report, tuple(sorted(set(changed)))

    def _existing_messages(
        self, conn: sa.Connection, items: list[Message]
    ) -> tuple[dict[str, tuple[str, str, str]], set[tuple[str, str]]]:
        """Return the stored messages among *items*: ``{id: identity}`` and provider pairs.

        A message's identity is ``(contact_id, channel, direction)``; a repeated
        id whose identity differs is a conflict, not a duplicate. The send time
        is not part of it: the same message may arrive in two formats that time
        it differently (a Twilio form callback and its Event Streams event).
        """
        be = self._backend
        ids = {m.message_id for m in items}
        found_ids = {
            r[0]: (r[1], r[2], r[3])
            for r in be.select_in(
                conn,
                "SELECT message_id, contact_id, channel, direction FROM messages "
                "WHERE message_id IN ({in})",
                ids,
            )
        }
        pairs = {
            (m.provider, m.provider_message_id)
            for m in items
            if m.provider is not None and m.provider_message_id is not None
        }
        found_pairs: set[tuple[str, str]] = set()
        if pairs:
            found_pairs = {
                (r[0], r[1])
                for r in be.select_pairs(
                    conn,
                    "SELECT m.provider, m.provider_message_id FROM _pairs p JOIN messages m "
                    "ON m.provider = p.a AND m.provider_message_id = p.b",
                    pairs,
                )
            }
        return found_ids, found_pairs

    def _write_messages(
        self,
        conn: sa.Connection,
        batch: Batch,
        pending: Pending,
        touched: set[str],
        *,
        predicted: dict[str, int],
        settled: set[str],
    ) -> tuple[int, int, int]:
        """Write a batch's new messages; return ``(inserted, duplicates, linked orphans)``.

        A new message named by events of the same batch is written with the
        outcomes of those events folded in memory (:func:`fold_outcomes`), and
        noted in *predicted* with their number; :meth:`_write_events` checks that
        exactly those events were stored, else the message goes to *touched*
        (recomputed in SQL), as do messages whose orphans were linked.

        The new messages whose orphans were not linked go to *settled*: until the
        transaction ends, their only stored events are those the batch writes
        (concurrent writers keep theirs as orphans, and link under the lock this
        transaction holds once it linked).
        """
        found_ids, found_pairs = self._existing_messages(conn, batch.messages)
        fresh: list[tuple[Message, bytes | None]] = []
        lines: list[int | None] = []
        conflicts = 0
        for m, meta, line in zip(
            batch.messages, batch.message_meta, batch.message_lines, strict=True
        ):
            pair = (m.provider, m.provider_message_id)
            stored = found_ids.get(m.message_id)
            if stored is not None:
                if stored != _identity(m):
                    batch.conflict(m, line)
                    conflicts += 1
                continue
            if pair in found_pairs:
                continue
            found_ids[m.message_id] = _identity(m)
            if pair[0] is not None and pair[1] is not None:
                found_pairs.add(pair)  # type: ignore[arg-type]
            fresh.append((m, meta))
            lines.append(line)
        if not fresh:
            return 0, len(batch.messages) - conflicts, 0
        ciphers = self.ciphers(conn, {m.contact_id for m, _ in fresh}, pending, create=True)
        refused = conflicts
        if pending.erased:
            kept = []
            for (m, meta), line in zip(fresh, lines, strict=True):
                if m.contact_id in pending.erased:
                    batch.refuse_erased(m, line)
                    refused += 1
                    pending.refused.add(m.message_id)
                    if m.provider is not None and m.provider_message_id is not None:
                        pending.refused.add((m.provider, m.provider_message_id))
                else:
                    kept.append((m, meta))
            fresh = kept
            if not fresh:
                return 0, len(batch.messages) - refused, 0
        outcomes = self._predict_outcomes(batch, fresh, predicted) if batch.events else None
        rows: list[Row] = []
        addresses: dict[tuple[str, bytes, str], Row] = {}
        known = self._addresses  # rows stored by earlier batches: not written again
        indexer = self.indexer()
        index_key_id = indexer.key_id
        now = _now_us()
        for m, meta in fresh:
            mid = m.message_id
            cid = m.contact_id
            # One encrypt() a field: a contact rarely has two messages in one batch, so a
            # row sealer (built per cipher) would not pay for itself here.
            enc = ciphers[cid].encrypt
            address = m.address
            channel = m.channel
            rows.append(
                (
                    mid, cid, channel._value_, m.direction._value_, m.purpose._value_,
                    m.campaign_id, m.variant, m.provider, m.provider_message_id,
                    (m.sent_at - EPOCH) // _US_DELTA,
                    enc(address, table="messages", column="address", row_id=mid),
                    None if m.subject is None
                    else enc(m.subject, table="messages", column="subject", row_id=mid),
                    None if m.body is None
                    else enc(m.body, table="messages", column="body", row_id=mid),
                    None if meta is None
                    else enc(meta, table="messages", column="metadata", row_id=mid),
                    mask_address(channel, address),
                )
            )  # fmt: skip
            if outcomes is not None:
                rows[-1] += outcomes.get(mid, NO_OUTCOMES)
            kind = ADDRESS_KINDS.get(channel)
            if kind is not None:
                bidx = indexer.index(kind, address)
                key = (kind, bidx, cid)
                if key not in addresses and key not in known:
                    addresses[key] = (
                        kind, bidx, cid, index_key_id,
                        enc(address, table="addresses", column="address",
                            row_id=address_row_id(kind, bidx)),
                        now,
                    )  # fmt: skip
        be = self._backend
        address_rows = list(addresses.values())
        columns = MESSAGE_WRITE_COLUMNS if outcomes is None else _MESSAGE_OUTCOME_COLUMNS
        if be.copies_new_rows:
            # The messages were looked up above, and the address rows of contacts this
            # transaction created cannot be stored yet: copied straight into their
            # tables, in primary-key order. A row a concurrent writer stored meanwhile
            # sends its list through insert(), which skips it; other address rows may
            # well be stored (a contact's address seen by another process) and go
            # through insert() at once.
            rows.sort(key=_first)
            created = pending.created
            new_rows = sorted((r for r in address_rows if r[2] in created), key=_first_three)
            address_rows = [r for r in address_rows if r[2] not in created]
            inserted = be.insert_new(conn, schema.messages, columns, rows)
            if new_rows:
                be.insert_new(conn, schema.addresses, ADDRESS_COLUMNS, new_rows)
        else:
            inserted = be.insert(conn, schema.messages, columns, rows)
        be.insert(conn, schema.addresses, ADDRESS_COLUMNS, address_rows)
        if inserted < len(rows):
            # A concurrent writer stored one of them meanwhile: its row, not ours, is
            # what the events update; recompute them all in SQL.
            predicted.clear()
            mine: list[Message] = []
        else:
            mine = [m for m, _ in fresh]
        pending.addresses.update(dict.fromkeys(addresses, True))
        for m, _ in fresh:
            pending.messages[m.message_id] = m.contact_id
            if m.provider is not None and m.provider_message_id is not None:
                pending.pairs[(m.provider, m.provider_message_id)] = (m.message_id, m.contact_id)
        linked = self._link_orphans(conn, [m for m, _ in fresh], pending, touched)
        settled.update(m.message_id for m in mine if m.message_id not in touched)
        return inserted, len(batch.messages) - inserted - refused, linked

    @staticmethod
    def _predict_outcomes(
        batch: Batch, fresh: list[tuple[Message, bytes | None]], predicted: dict[str, int]
    ) -> dict[str, OutcomeValues] | None:
        """Fold the outcomes of the *fresh* messages from the batch's events naming them.

        An event names a message as :meth:`_resolve` will find it: by
        ``message_id``, or by provider pair when it has none. Fills *predicted*
        with each such message's number of events; returns the folded column
        values, or ``None`` when no event names a fresh message.
        """
        ids = {m.message_id for m, _ in fresh}
        pairs = {
            (m.provider, m.provider_message_id): m.message_id
            for m, _ in fresh
            if m.provider is not None and m.provider_message_id is not None
        }
        groups: dict[str, list[tuple[str, str | None, bool, int | None, str | None]]] = {}
        for e, rev in zip(batch.events, batch.event_revenue, strict=True):
            mid = e.message_id
            if mid is None:
                mid = pairs.get((e.provider, e.provider_message_id))  # type: ignore[arg-type]
                if mid is None:
                    continue
            elif mid not in ids:
                continue
            bounce = e.bounce
            item = (
                e.type._value_, None if bounce is None else bounce._value_, e.machine, rev,
                e.currency,
            )  # fmt: skip
            found = groups.get(mid)
            if found is None:
                groups[mid] = [item]
            else:
                found.append(item)
        if not groups:
            return None
        folded: dict[str, OutcomeValues] = {}
        for mid, items in groups.items():
            values = fold_outcomes(items)
            if values is not None:  # else left to refresh_outcomes, which fails alike
                folded[mid] = values
                predicted[mid] = len(items)
        return folded

    def _link_orphans(
        self, conn: sa.Connection, fresh: list[Message], pending: Pending, touched: set[str]
    ) -> int:
        """Link the stored orphan events of *fresh* messages; add those to *touched*."""
        be = self._backend
        be.lock_linking(conn)
        cols = ", ".join(f"e.{c}" for c in EVENT_SECRET_COLUMNS)
        found = be.select_in(
            conn,
            f"SELECT e.event_id, e.orphan_key_id, m.message_id, m.contact_id, {cols} "
            "FROM events e JOIN messages m ON m.message_id = e.message_id "
            "WHERE e.contact_id IS NULL AND e.message_id IN ({in})",
            [m.message_id for m in fresh],
        )
        pairs = {
            (m.provider, m.provider_message_id)
            for m in fresh
            if m.provider is not None and m.provider_message_id is not None
        }
        if pairs:
            found += be.select_pairs(
                conn,
                f"SELECT e.event_id, e.orphan_key_id, m.message_id, m.contact_id, {cols} "
                "FROM _pairs p JOIN events e ON e.provider = p.a "
                "AND e.provider_message_id = p.b "
                "JOIN messages m ON m.provider = p.a AND m.provider_message_id = p.b "
                "WHERE e.contact_id IS NULL AND e.message_id IS NULL",
                pairs,
            )
        if not found:
            return 0
        touched.update(r[2] for r in found)
        ciphers = self.ciphers(conn, {r[3] for r in found}, pending, create=False)
        updates: list[Row] = []
        for event_id, okid, mid, cid, *secrets_ in found:
            if cid not in ciphers:  # erased meanwhile: its orphans stay unlinked
                continue
            orphan = self.keyed_cipher(okid, ORPHAN_PURPOSE)
            enc = ciphers[cid].encrypt
            values = []
            for column, blob in zip(EVENT_SECRET_COLUMNS, secrets_, strict=True):
                plain = orphan.decrypt(
                    blob,
                    table="events", column=column, row_id=event_id,
                )  # fmt: skip
                values.append(
                    None
                    if plain is None
                    else enc(plain, table="events", column=column, row_id=event_id)
                )
            updates.append((mid, cid, *values, event_id))
        if not updates:
            return 0
        sets = ", ".join(f"{c} = {be.ph}" for c in EVENT_SECRET_COLUMNS)
        # Linked now: exportable from now on, so the analytics watermark must see it
        # as stored now (stored_seq), whatever its occurred_at.
        seq = be.stored_seq(conn)
        return be.executemany(
            conn,
            f"UPDATE events SET message_id = {be.ph}, contact_id = {be.ph}, "
            f"orphan_key_id = NULL, stored_seq = {seq}, {sets} "
            f"WHERE event_id = {be.ph} AND contact_id IS NULL",
            updates,
        )

    def _resolve(
        self, conn: sa.Connection, events: list[Event], pending: Pending
    ) -> tuple[dict[str, str], dict[tuple[str, str], tuple[str, str]]]:
        """Find the contact of each event's message: by id, or by provider pair."""
        by_id: dict[str, str] = {}
        by_pair: dict[tuple[str, str], tuple[str, str]] = {}
        want_ids: set[str] = set()
        want_pairs: set[tuple[str, str]] = set()
        cache_ids = self._message_contacts
        cache_pairs = self._pair_messages
        for e in events:
            mid = e.message_id
            if mid is not None:
                if mid in by_id:
                    continue
                cid = pending.messages.get(mid) or cache_ids.get(mid)
                if cid is None:
                    want_ids.add(mid)
                else:
                    by_id[mid] = cid
            else:
                pair = (e.provider, e.provider_message_id)
                if pair in by_pair:
                    continue
                hit = pending.pairs.get(pair) or cache_pairs.get(pair)  # type: ignore[arg-type]
                if hit is None:
                    want_pairs.add(pair)  # type: ignore[arg-type]
                else:
                    by_pair[pair] = hit  # type: ignore[index]
        self._lookup_messages(
            conn,
            want_ids=want_ids,
            want_pairs=want_pairs,
            by_id=by_id,
            by_pair=by_pair,
            pending=pending,
        )
        return by_id, by_pair

    def _lookup_messages(
        self,
        conn: sa.Connection,
        *,
        want_ids: set[str],
        want_pairs: set[tuple[str, str]],
        by_id: dict[str, str],
        by_pair: dict[tuple[str, str], tuple[str, str]],
        pending: Pending,
    ) -> None:
        be = self._backend
        if want_ids:
            for mid, cid in be.select_in(
                conn,
                "SELECT message_id, contact_id FROM messages WHERE message_id IN ({in})",
                want_ids,
            ):
                by_id[mid] = cid
                pending.messages[mid] = cid
        if want_pairs:
            for prov, pmid, mid, cid in be.select_pairs(
                conn,
                "SELECT m.provider, m.provider_message_id, m.message_id, m.contact_id "
                "FROM _pairs p JOIN messages m "
                "ON m.provider = p.a AND m.provider_message_id = p.b",
                want_pairs,
            ):
                by_pair[(prov, pmid)] = (mid, cid)
                pending.pairs[(prov, pmid)] = (mid, cid)

    def _write_events(
        self,
        conn: sa.Connection,
        batch: Batch,
        pending: Pending,
        touched: set[str],
        predicted: dict[str, int],
    ) -> tuple[int, int]:
        """Write a batch's events; return ``(inserted, refused)`` (erased contacts).

        The stored messages the written events name are added to *touched*,
        except those of *predicted* (written with these events' outcomes) that
        got exactly the events they were folded from.
        """
        written: dict[str, int] = {}
        inserted, refused, sent = self._write_event_rows(conn, batch, pending, written)
        if not predicted:
            touched.update(written)
        elif inserted < sent:  # some were stored already: which ones, only SQL knows
            touched.update(written)
            touched.update(predicted)
        else:
            get = predicted.get
            touched.update(mid for mid, n in written.items() if get(mid) != n)
            touched.update(mid for mid, n in predicted.items() if written.get(mid) != n)
        return inserted, refused

    def _write_event_rows(
        self,
        conn: sa.Connection,
        batch: Batch,
        pending: Pending,
        written: dict[str, int],
    ) -> tuple[int, int, int]:
        """Write a batch's events; return ``(inserted, refused, sent to the database)``.

        Counts in *written* the events sent for each stored message they name.
        """
        be = self._backend
        events = batch.events
        metas = batch.event_meta
        revenues = batch.event_revenue
        if be.copies_new_rows:
            events, metas, revenues = self._new_events(conn, events, metas, revenues)
            if not events:
                return 0, 0, 0
        by_id, by_pair = self._resolve(conn, events, pending)
        unresolved_ids = {e.message_id for e in events if e.message_id is not None} - by_id.keys()
        unresolved_pairs = {
            (e.provider or "", e.provider_message_id or "")  # both set: the model checks
            for e in events
            if e.message_id is None
        } - by_pair.keys()
        if unresolved_ids or unresolved_pairs:
            # Orphans ahead. Under the linking lock, look again: a message committed
            # by another process since is seen now, and one committed later will
            # find these orphans when it links (PostgreSQL; SQLite is serial anyway).
            be.lock_linking(conn)
            self._lookup_messages(
                conn,
                want_ids=unresolved_ids,
                want_pairs=unresolved_pairs,
                by_id=by_id,
                by_pair=by_pair,
                pending=pending,
            )
        contacts = set(by_id.values()) | {cid for _, cid in by_pair.values()}
        ciphers = self.ciphers(conn, contacts, pending, create=False) if contacts else {}
        refused = 0
        if contacts - ciphers.keys() or pending.refused:  # some contacts were erased
            events, metas, revenues, refused = self._refuse_erased(
                conn,
                batch,
                (events, metas, revenues),
                by_id=by_id,
                by_pair=by_pair,
                live=ciphers.keys(),
                batch_refused=pending.refused,
            )
            if not events:
                return 0, refused, 0
        for e in events:
            mid = e.message_id
            if mid is not None:
                if mid not in by_id:
                    continue
            else:
                hit = by_pair.get((e.provider, e.provider_message_id))  # type: ignore[arg-type]
                if hit is None:
                    continue
                mid = hit[0]
            written[mid] = written.get(mid, 0) + 1
        rows = self._event_rows(events, metas, revenues, by_id, by_pair, ciphers)
        if not be.copies_new_rows:
            inserted = be.insert(conn, schema.events, EVENT_WRITE_COLUMNS, list(rows))
            return inserted, refused, len(events)
        inserted = be.insert_new(conn, schema.events, EVENT_WRITE_COLUMNS, rows)
        if inserted < len(events):  # stored already: look them up first next time
            self._look_up_events = True
        return inserted, refused, len(events)

    def _refuse_erased(
        self,
        conn: sa.Connection,
        batch: Batch,
        columns: tuple[list[Event], list[bytes | None], list[int | None]],
        *,
        by_id: dict[str, str],
        by_pair: dict[tuple[str, str], tuple[str, str]],
        live: Collection[str],
        batch_refused: Collection[str | tuple[str, str]],
    ) -> tuple[list[Event], list[bytes | None], list[int | None], int]:
        """Split off the events of erased contacts: stored ones are duplicates, new ones refused.

        Returns the events to write (with their metadata and revenue) and how
        many were refused, each kept as a dead letter holding only its ids.
        """
        events, metas, revenues = columns
        keep_e: list[Event] = []
        keep_m: list[bytes | None] = []
        keep_r: list[int | None] = []
        gone: list[Event] = []
        for e, meta, rev in zip(events, metas, revenues, strict=True):
            if e.message_id is not None:
                cid = by_id.get(e.message_id)
                named: str | tuple[str, str] = e.message_id
            else:
                named = (e.provider or "", e.provider_message_id or "")
                hit = by_pair.get(named)
                cid = None if hit is None else hit[1]
            if named in batch_refused:  # its message was refused just now
                gone.append(e)
            elif cid is None or cid in live:  # an orphan, or a live contact's
                keep_e.append(e)
                keep_m.append(meta)
                keep_r.append(rev)
            else:
                gone.append(e)
        if not gone:
            return keep_e, keep_m, keep_r, 0
        stored = {
            k[0]
            for k in self._backend.existing_keys(
                conn, schema.events, ("event_id",), [(e.event_id,) for e in gone]
            )
        }
        stored_pairs = self._backend.existing_keys(
            conn,
            schema.events,
            ("provider", "provider_event_id"),
            [
                (e.provider, e.provider_event_id)
                for e in gone
                if e.provider is not None and e.provider_event_id is not None
            ],
        )
        line_of = dict(zip((e.event_id for e in batch.events), batch.event_lines, strict=True))
        refused = 0
        seen: set[str] = set()
        for e in gone:
            if (
                e.event_id in stored
                or (e.provider, e.provider_event_id) in stored_pairs
                or e.event_id in seen
            ):
                continue  # a duplicate of what was stored before the erasure
            seen.add(e.event_id)
            batch.refuse_erased(e, line_of.get(e.event_id))
            refused += 1
        return keep_e, keep_m, keep_r, refused

    def _new_events(
        self,
        conn: sa.Connection,
        events: list[Event],
        metas: list[bytes | None],
        revenues: list[int | None],
    ) -> tuple[list[Event], list[bytes | None], list[int | None]]:
        """Return the events of a batch to write, in ``event_id`` order.

        What ``INSERT ... SELECT ... ORDER BY event_id ON CONFLICT DO NOTHING``
        would keep: an event whose id or ``(provider, provider_event_id)`` comes
        earlier in ``event_id`` order in the batch is a duplicate and left out
        (among equal ids, the first in the input stays). When the batch is small,
        or the previous batch met stored events, the events already stored are
        looked up and left out too; otherwise they are not looked for, and
        :meth:`Backend.insert_new` skips them when its ``COPY`` meets them.
        """
        order = sorted(range(len(events)), key=lambda i: events[i].event_id)
        ids = [events[i].event_id for i in order]
        pairs = [
            (e.provider, e.provider_event_id)
            for e in (events[i] for i in order)
            if e.provider is not None and e.provider_event_id is not None
        ]
        found_ids: set[str] = set()
        found_pairs: set[tuple[Any, ...]] = set()
        if self._look_up_events or len(events) <= _LOOKUP_BELOW:
            be = self._backend
            found_ids = {
                k[0]
                for k in be.existing_keys(conn, schema.events, ("event_id",), [(i,) for i in ids])
            }
            found_pairs = be.existing_keys(
                conn, schema.events, ("provider", "provider_event_id"), pairs
            )
            self._look_up_events = bool(found_ids or found_pairs)
        if (
            not found_ids
            and not found_pairs
            and len(set(ids)) == len(ids)
            and len(set(pairs)) == len(pairs)
        ):  # the common case: nothing to leave out
            return (
                [events[i] for i in order],
                [metas[i] for i in order],
                [revenues[i] for i in order],
            )
        keep_e: list[Event] = []
        keep_m: list[bytes | None] = []
        keep_r: list[int | None] = []
        for i in order:
            e = events[i]
            pair = (e.provider, e.provider_event_id)
            if e.event_id in found_ids or pair in found_pairs:
                continue
            found_ids.add(e.event_id)
            if pair[0] is not None and pair[1] is not None:
                found_pairs.add(pair)
            keep_e.append(e)
            keep_m.append(metas[i])
            keep_r.append(revenues[i])
        return keep_e, keep_m, keep_r

    def _event_rows(  # noqa: PLR0917 - private, called once
        self,
        events: list[Event],
        metas: list[bytes | None],
        revenues: list[int | None],
        by_id: dict[str, str],
        by_pair: dict[tuple[str, str], tuple[str, str]],
        ciphers: dict[str, FieldCipher],
    ) -> Iterator[Row]:
        """Yield the events' rows, personal fields encrypted, as they are written."""
        orphan_key_id = self._keyring.current_key_id
        nonces = NoncePool()  # this batch's nonces, dropped with it
        table, columns = "events", EVENT_SECRET_COLUMNS
        orphan = self.keyed_cipher(orphan_key_id, ORPHAN_PURPOSE).row_sealer(table, columns)
        sealers: dict[str, RowSealer] = {}
        for e, meta, rev in zip(events, metas, revenues, strict=True):
            eid = e.event_id
            mid = e.message_id
            if mid is not None:
                cid = by_id.get(mid)
            else:
                hit = by_pair.get((e.provider, e.provider_message_id))  # type: ignore[arg-type]
                if hit is None:
                    cid = None
                else:
                    mid, cid = hit
            if cid is None:
                seal = orphan
                okid: str | None = orphan_key_id
            else:
                found = sealers.get(cid)
                if found is None:
                    found = sealers[cid] = ciphers[cid].row_sealer(table, columns)
                seal = found
                okid = None
            bounce = e.bounce
            yield (
                eid, mid, cid, e.provider, e.provider_message_id, e.provider_event_id,
                e.type._value_, (e.occurred_at - EPOCH) // _US_DELTA, e.status_code,
                None if bounce is None else bounce._value_, e.machine,
                None if rev is None else str(e.revenue), rev, e.currency, okid,
                *seal(eid, (e.address, e.reason, e.url, e.user_agent, e.ip, meta), nonces),
                link_label(e.url) if e.type is EventType.CLICKED else None,
            )  # fmt: skip

    def _write_consents(
        self, conn: sa.Connection, batch: Batch, pending: Pending
    ) -> tuple[int, int]:
        existing = {
            r[0]
            for r in self._backend.select_in(
                conn,
                "SELECT consent_id FROM consent_events WHERE consent_id IN ({in})",
                set(batch.consent_ids),
            )
        }
        fresh: list[tuple[ConsentEvent, str, bytes | None]] = []
        lines: list[int | None] = []
        for c, cid_, meta, line in zip(
            batch.consents, batch.consent_ids, batch.consent_meta, batch.consent_lines, strict=True
        ):
            if cid_ in existing:
                continue
            existing.add(cid_)
            fresh.append((c, cid_, meta))
            lines.append(line)
        if not fresh:
            return 0, len(batch.consents)
        ciphers = self.ciphers(conn, {c.contact_id for c, _, _ in fresh}, pending, create=True)
        refused = 0
        if pending.erased:
            kept = []
            for (c, rid, meta), line in zip(fresh, lines, strict=True):
                if c.contact_id in pending.erased:
                    batch.refuse_erased(c, line)
                    refused += 1
                else:
                    kept.append((c, rid, meta))
            fresh = kept
            if not fresh:
                return 0, len(batch.consents) - refused
        rows: list[Row] = []
        for c, rid, meta in fresh:
            enc = ciphers[c.contact_id].encrypt
            rows.append(
                (
                    rid, c.contact_id, c.channel.value, c.purpose.value, c.action.value,
                    c.method.value, to_micros(c.occurred_at),
                    None if c.recorded_at is None else to_micros(c.recorded_at),
                    c.notice_version, c.notice_hash, c.actor,
                    enc(c.source, table="consent_events", column="source", row_id=rid),
                    enc(c.ip, table="consent_events", column="ip", row_id=rid),
                    enc(c.user_agent, table="consent_events", column="user_agent", row_id=rid),
                    enc(meta, table="consent_events", column="metadata", row_id=rid),
                )
            )  # fmt: skip
        inserted = self._backend.insert(conn, schema.consent_events, CONSENT_COLUMNS, rows)
        return inserted, len(batch.consents) - inserted - refused

    def _write_contacts(
        self, conn: sa.Connection, batch: Batch, pending: Pending
    ) -> tuple[int, int]:
        """Store the batch's contact attribute updates; refuse those of erased contacts."""
        statuses = sql_apply(self, conn, batch.contact_changes, pending, on_erased="skip")
        inserted = duplicates = 0
        for status, update, line in zip(
            statuses, batch.contact_updates, batch.contact_lines, strict=True
        ):
            if status == "changed":
                inserted += 1
            elif status == "unchanged":
                duplicates += 1
            else:
                batch.refuse_erased(update, line)
        return inserted, duplicates

    def _write_dead_letters(self, conn: sa.Connection, batch: Batch, source: str) -> None:
        kr = self._keyring
        key_id = kr.current_key_id
        cipher = self.keyed_cipher(key_id, DEAD_LETTER_PURPOSE)
        fp_key = derive_subkey(kr, kr.index_key_id, FINGERPRINT_PURPOSE)
        now = _now_us()
        rows: list[Row] = []
        for line, field, reason, raw in batch.rejects:
            dl_id = secrets.token_hex(16)
            fingerprint = hmac.new(
                fp_key,
                b"\x00".join((source.encode(), str(line).encode(), raw.encode())),
                hashlib.sha256,
            ).digest()[:16]
            rows.append(
                (
                    dl_id, fingerprint, now, source, line, field, reason, key_id,
                    cipher.encrypt(raw, table="dead_letters", column="raw", row_id=dl_id),
                )
            )  # fmt: skip
        self._backend.insert(conn, schema.dead_letters, DEAD_LETTER_COLUMNS, rows)


_MESSAGE_OUTCOME_COLUMNS: Final = (*MESSAGE_WRITE_COLUMNS, *OUTCOME_COLUMNS)
"""A new message's columns when the batch's events give it outcomes (folded in memory)."""

_first: Final = itemgetter(0)
_first_three: Final = itemgetter(0, 1, 2)


def _identity(m: Message) -> tuple[str, str, str]:
    """The plain fields that make a repeated message id the same message."""
    return (m.contact_id, m.channel.value, m.direction.value)
