"""The encrypted repository on SQLite and PostgreSQL.

:func:`open_sql_repository` opens one. Writes stream in batches, each one
transaction; personal fields are encrypted with the contact's data key before
they reach the database (see ``docs/storage.md``).

.. versionadded:: 0.1.0
"""

# SQL text here is built only from schema identifiers, placeholders and integers;
# every value is bound as a parameter.
# ruff: noqa: S608

from __future__ import annotations

import hashlib
import hmac
import random
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self, TypeVar

import attrs
import sqlalchemy as sa

from commhistory.crypto import (
    BlindIndexer,
    FieldCipher,
    KeyProvider,
    NoncePool,
    RowSealer,
    derive_subkey,
    lookup_key_ids,
    new_data_key,
    unwrap_data_key,
    wrap_data_key,
)
from commhistory.errors import (
    KeyNotFoundError,
    NotFoundError,
    SchemaError,
    StorageError,
)
from commhistory.model import (
    ADDRESS_KINDS,
    BounceClass,
    Channel,
    ConsentAction,
    ConsentEvent,
    ConsentMethod,
    Direction,
    Event,
    EventType,
    Message,
    Purpose,
)
from commhistory.normalize.mask import mask_address
from commhistory.normalize.time import EPOCH, from_micros, to_micros
from commhistory.store import migrate, schema
from commhistory.store._backend import Backend, Row, backend_for
from commhistory.store._engine import READ, create_engine
from commhistory.store._lru import LRU, Pending
from commhistory.store.audit import SQLAuditStore, SQLMaskedHistory
from commhistory.store.batching import (
    Batch,
    batches,
    check_batch_size,
    load_metadata,
    one_criterion,
)
from commhistory.store.consent import SQLConsentStore
from commhistory.store.feed import SQLStoredBatch
from commhistory.store.kpi import SQLKpiStore
from commhistory.store.layout import (
    ADDRESS_COLUMNS,
    CONSENT_COLUMNS,
    DATA_KEY_REF,
    DEAD_LETTER_COLUMNS,
    DEAD_LETTER_PURPOSE,
    EVENT_COLUMNS,
    EVENT_SECRET_COLUMNS,
    FINGERPRINT_PURPOSE,
    MESSAGE_COLUMNS,
    MESSAGE_WRITE_COLUMNS,
    ORPHAN_PURPOSE,
    address_row_id,
)
from commhistory.store.masks import backfill_masks
from commhistory.store.privacy import SQLPrivacyStore
from commhistory.store.protocol import (
    BatchFeed,
    BatchHook,
    BatchOutcome,
    DeadLetter,
    IngestReport,
    TimelineEntry,
)
from commhistory.store.rotation import rotate_keys

if TYPE_CHECKING:
    from commhistory.convert import ParsedLine
    from commhistory.store.masks import MaskBackfillReport
    from commhistory.store.rotation import RotationReport

__all__ = [
    "SQLRepository",
    "open_sql_repository",
]

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


class SQLRepository:
    """The encrypted :class:`~commhistory.store.protocol.Repository` on SQLite or PostgreSQL.

    Storage only: the facade :class:`~commhistory.CommHistory` (what
    :func:`~commhistory.open_repository` returns) adds consent, KPIs, privacy
    and access control on top. Open one with :func:`open_sql_repository`. Not
    safe to share between threads;
    open one per thread or process (the database serializes their writes).

    Args:
        engine: An engine set up as :func:`~commhistory.open_repository` sets
            it up (SQLite pragmas and write locks matter).
        keyring: The key provider.
        batch_size: Items per write transaction.
        cache_size: Contacts whose unwrapped data keys are kept in memory (each
            costs about 2.5 KB; a miss costs one unwrap, about 7 µs). Four times as
            many message-to-contact links are cached. Memory stays bounded however
            large the input.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        engine: sa.Engine,
        keyring: KeyProvider,
        *,
        batch_size: int = 5000,
        cache_size: int = 2048,
    ) -> None:
        self._engine = engine
        self._keyring = keyring
        self._batch_size = check_batch_size(batch_size)
        self._backend: Backend = backend_for(engine)
        self._dbapi_error: type[Exception] = engine.dialect.loaded_dbapi.Error
        self._ciphers: LRU[str, FieldCipher] = LRU(cache_size)
        self._message_contacts: LRU[str, str] = LRU(cache_size * 4)
        self._pair_messages: LRU[tuple[str, str], tuple[str, str]] = LRU(cache_size * 4)
        self._keyed: dict[tuple[str, str], FieldCipher] = {}
        self._indexers: dict[str, BlindIndexer] = {}
        self._local = threading.local()
        self._closed = False
        self._look_up_events = False
        self._feeds: dict[str, BatchFeed] = {}
        self._consent_store = SQLConsentStore(self)
        self._audit_store = SQLAuditStore(self)
        self._masked_history = SQLMaskedHistory(self)
        self._privacy_store = SQLPrivacyStore(self, _consent_from_row)
        self._kpi_store = SQLKpiStore(self)

    # ------------------------------------------------------------------ plumbing

    @property
    def engine(self) -> sa.Engine:
        """The SQLAlchemy engine (for KPI queries and tests)."""
        return self._engine

    @property
    def keyring(self) -> KeyProvider:
        """The key provider."""
        return self._keyring

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self._backend.name

    @property
    def backend(self) -> Backend:
        """The database-specific bulk SQL."""
        return self._backend

    def __repr__(self) -> str:
        return f"SQLRepository(dialect={self.dialect!r})"

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError("the repository is closed")

    @contextmanager
    def transaction(self, *, read: bool = False) -> Iterator[sa.Connection]:
        """Run one transaction; database errors become :class:`StorageError`.

        Transactions nest: inside an open ``transaction()`` of this repository
        (in the same thread), a nested call joins the outer transaction instead
        of opening a second one, so everything commits or rolls back together.
        Every repository method runs in ``transaction()``, so

        .. code-block:: python

            with repo.transaction():
                repo.record_messages(messages)
                repo.record_events(events)

        stores both or neither. A joined write batch is not retried on a
        deadlock (the outer transaction is already aborted); the error is
        raised and the outer transaction rolls back.

        Args:
            read: A read-only transaction (on SQLite: deferred, not ``IMMEDIATE``).
                Ignored when joining an outer transaction.

        Raises:
            StorageError: The database failed; the transaction was rolled back;
                or a write was asked for inside a read-only transaction.

        .. versionchanged:: 0.3.0
           Nested calls join the outer transaction.
        """
        self._check_open()
        local = self._local
        outer: sa.Connection | None = getattr(local, "conn", None)
        if outer is not None:
            if not read and local.read:
                raise StorageError("a write cannot join a read-only transaction")
            if not read:
                local.joined_write = True
            try:
                yield outer
            except (sa.exc.SQLAlchemyError, self._dbapi_error) as exc:
                raise _storage_error(exc) from exc
            return
        after: list[Callable[[], object]] = []
        try:
            with self._engine.connect() as plain:
                conn = plain.execution_options(**READ) if read else plain
                with conn.begin():
                    local.conn, local.read, local.joined_write = conn, read, False
                    local.after = after
                    try:
                        yield conn
                    except BaseException:
                        if local.joined_write:
                            # Caches learned by joined batches were never committed.
                            self._forget_learned()
                        raise
                    finally:
                        local.conn = None
        except (sa.exc.SQLAlchemyError, self._dbapi_error) as exc:
            raise _storage_error(exc) from exc
        for call in after:
            call()

    def after_commit(self, call: Callable[[], object]) -> None:
        """Run *call* once the current transaction has committed (at once when none is open).

        Work that must see committed data, or must not run inside the
        transaction (a SQLite WAL checkpoint after an erasure), goes here, so it
        also waits for an outer transaction the current one joined. Nothing
        runs if the transaction rolls back.

        .. versionadded:: 0.3.0
        """
        if self.in_transaction:
            self._local.after.append(call)
        else:
            call()

    @property
    def in_transaction(self) -> bool:
        """Whether this thread is inside :meth:`transaction` of this repository."""
        return getattr(self._local, "conn", None) is not None

    @contextmanager
    def batch_hook(self, hook: BatchHook) -> Iterator[None]:
        """Call *hook* inside every write batch's transaction, before it commits.

        While the block runs (in this thread), each batch written by
        ``record_messages``, ``record_events``, ``record_consent`` or ``ingest``
        calls ``hook(outcome)`` with a :class:`BatchOutcome`, after the batch
        feeds ran. What the hook writes through this repository joins the
        batch's transaction, so it commits with the batch or not at all; an
        exception from the hook rolls the batch back and propagates. The guarded
        view uses this to write one audit entry per batch, atomically with it.

        Args:
            hook: Called once per batch (retried batches call it again).

        .. versionadded:: 0.3.0
        .. versionchanged:: 0.4.0
           The hook receives only the outcome; it writes through the repository.
        """
        local = self._local
        previous: BatchHook | None = getattr(local, "hook", None)
        local.hook = hook
        try:
            yield
        finally:
            local.hook = previous

    def set_batch_feed(self, name: str, feed: BatchFeed | None) -> None:
        """Install (or, with ``None``, remove) a batch feed; see :meth:`Repository.set_batch_feed`.

        .. versionadded:: 0.4.0
        """
        if feed is None:
            self._feeds.pop(name, None)
        else:
            self._feeds[name] = feed

    @property
    def consent_store(self) -> SQLConsentStore:
        """The consent and suppression storage port (:class:`SQLConsentStore`).

        .. versionadded:: 0.4.0
        """
        return self._consent_store

    @property
    def audit_store(self) -> SQLAuditStore:
        """The audit log storage port (:class:`~commhistory.store.audit.SQLAuditStore`).

        .. versionadded:: 0.4.0
        """
        return self._audit_store

    @property
    def masked_history(self) -> SQLMaskedHistory:
        """Plain-column history reads (:class:`~commhistory.store.audit.SQLMaskedHistory`).

        .. versionadded:: 0.4.0
        """
        return self._masked_history

    @property
    def privacy_store(self) -> SQLPrivacyStore:
        """The erasure, subject export and retention storage port (:class:`SQLPrivacyStore`).

        .. versionadded:: 0.4.0
        """
        return self._privacy_store

    @property
    def kpi_store(self) -> SQLKpiStore:
        """The KPI aggregate storage port (:class:`SQLKpiStore`).

        .. versionadded:: 0.4.0
        """
        return self._kpi_store

    def _forget_learned(self) -> None:
        self._ciphers.clear()
        self._message_contacts.clear()
        self._pair_messages.clear()

    def keyed_cipher(self, key_id: str, purpose: str) -> FieldCipher:
        """Return the cipher of a keyring-derived subkey (orphan events, dead letters)."""
        cipher = self._keyed.get((key_id, purpose))
        if cipher is None:
            cipher = FieldCipher(derive_subkey(self._keyring, key_id, purpose), key_ref=key_id)
            self._keyed[(key_id, purpose)] = cipher
        return cipher

    def indexer(self, key_id: str | None = None) -> BlindIndexer:
        """Return the blind indexer of a keyring key (default: the index key)."""
        key_id = self._keyring.index_key_id if key_id is None else key_id
        indexer = self._indexers.get(key_id)
        if indexer is None:
            indexer = BlindIndexer.from_provider(self._keyring, key_id)
            self._indexers[key_id] = indexer
        return indexer

    def forget_cached_keys(self) -> None:
        """Drop every unwrapped data key and derived cipher held in memory."""
        self._ciphers.clear()
        self._keyed.clear()
        self._indexers.clear()

    def sync_key_metadata(self) -> None:
        """Check the keyring against the key ids this database has seen, and record it.

        Raises:
            KeyNotFoundError: The database was written under keys none of which
                this keyring holds (the wrong keyring); names one of them.
        """
        kr = self._keyring
        ids = set(kr.key_ids())
        with self.transaction(read=True) as conn:
            rows = conn.exec_driver_sql(
                "SELECT key_id, is_current, is_index FROM key_metadata"
            ).all()
        known = {r[0]: (bool(r[1]), bool(r[2])) for r in rows}
        if known and not ids & known.keys():
            stored = next((k for k, (cur, _) in known.items() if cur), min(known))
            hint = "the database was written with another keyring"
            try:
                kr.root_key(stored)
            except KeyNotFoundError as exc:  # a retired key says so
                hint = exc.hint or hint
            raise KeyNotFoundError(stored, hint=hint)
        wanted = {k: (k == kr.current_key_id, k == kr.index_key_id) for k in ids}
        stale = {k for k, flags in known.items() if flags != (False, False) and k not in ids}
        if all(known.get(k) == flags for k, flags in wanted.items()) and not stale:
            return
        now = _now_us()
        ph = self._backend.ph
        with self.transaction() as conn:
            conn.exec_driver_sql(
                f"UPDATE key_metadata SET is_current = {ph}, is_index = {ph}, updated_at = {ph}",
                (False, False, now),
            )
            for key_id, (current, index) in wanted.items():
                conn.exec_driver_sql(
                    f"INSERT INTO key_metadata "
                    f"(key_id, first_seen_at, updated_at, is_current, is_index) "
                    f"VALUES ({ph}, {ph}, {ph}, {ph}, {ph}) ON CONFLICT (key_id) DO UPDATE "
                    "SET is_current = excluded.is_current, is_index = excluded.is_index, "
                    "updated_at = excluded.updated_at",
                    (key_id, now, now, current, index),
                )

    # ------------------------------------------------------------------ data keys

    def ciphers(
        self, conn: sa.Connection, contact_ids: Iterable[str], pending: Pending, *, create: bool
    ) -> dict[str, FieldCipher]:
        """Return the field ciphers of contacts, creating missing contacts when *create*.

        New contacts are inserted with ``ON CONFLICT DO NOTHING`` and their keys
        read back, so racing writers all use the data key that won.
        """
        out: dict[str, FieldCipher] = {}
        missing: list[str] = []
        for cid in contact_ids:
            cipher = pending.ciphers.get(cid) or self._ciphers.get(cid)
            if cipher is None:
                missing.append(cid)
            else:
                out[cid] = cipher
        if not missing:
            return out
        found = self._load_ciphers(conn, missing)
        absent = [cid for cid in missing if cid not in found]
        if absent and create:
            kr = self._keyring
            now = _now_us()
            key_id = kr.current_key_id
            rows = [
                (cid, wrap_data_key(kr, new_data_key(), contact_id=cid), key_id, now)
                for cid in absent
            ]
            self._backend.insert(
                conn,
                schema.contacts,
                ("contact_id", "data_key", "wrap_key_id", "created_at"),
                rows,
            )
            found.update(self._load_ciphers(conn, absent))
        pending.ciphers.update(found)
        out.update(found)
        return out

    def _load_ciphers(self, conn: sa.Connection, contact_ids: list[str]) -> dict[str, FieldCipher]:
        rows = self._backend.select_in(
            conn,
            "SELECT contact_id, data_key FROM contacts WHERE contact_id IN ({in})",
            contact_ids,
        )
        out: dict[str, FieldCipher] = {}
        kr = self._keyring
        for cid, blob in rows:
            if blob is None:
                raise StorageError(f"contact {cid!r} was erased; its data cannot be written")
            out[cid] = FieldCipher(
                unwrap_data_key(kr, bytes(blob), contact_id=cid), key_ref=DATA_KEY_REF
            )
        return out

    def contact_cipher(self, conn: sa.Connection, contact_id: str) -> FieldCipher | None:
        """Return one contact's cipher, or ``None`` when the contact does not exist."""
        pending = Pending()
        found = self.ciphers(conn, [contact_id], pending, create=False)
        self._ciphers.update(pending.ciphers)
        return found.get(contact_id)

    # ------------------------------------------------------------------ writes

    def record_messages(self, items: Iterable[Message]) -> IngestReport:
        """Store messages; see :meth:`Repository.record_messages`."""
        return self._write(batches(items, self._batch_size), "record_messages")

    def record_events(self, items: Iterable[Event]) -> IngestReport:
        """Store events; see :meth:`Repository.record_events`."""
        return self._write(batches(items, self._batch_size), "record_events")

    def record_consent(self, items: Iterable[ConsentEvent]) -> IngestReport:
        """Append consent events; see :meth:`Repository.record_consent`."""
        return self._write(batches(items, self._batch_size), "record_consent")

    def ingest(self, lines: Iterable[ParsedLine], *, source: str) -> IngestReport:
        """Store parsed lines; see :meth:`Repository.ingest`."""
        return self._write(batches(lines, self._batch_size, parsed=True), source)

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
            self._message_contacts.update(pending.messages)
            self._pair_messages.update(pending.pairs)
            report += part
        return report

    def _write_batch(
        self, conn: sa.Connection, batch: Batch, source: str, pending: Pending
    ) -> tuple[IngestReport, tuple[str, ...]]:
        inserted = duplicates = linked = 0
        changed: list[str] = []
        if batch.messages:
            ins, dup, linked = self._write_messages(conn, batch, pending)
            inserted += ins
            duplicates += dup
        if batch.events:
            ins = self._write_events(conn, batch, pending)
            inserted += ins
            duplicates += len(batch.events) - ins
        if batch.consents:
            ins, dup = self._write_consents(conn, batch, pending)
            inserted += ins
            duplicates += dup
            changed.extend(c.contact_id for c in batch.consents)
        if self._feeds:
            stored = SQLStoredBatch(
                conn,
                batch,
                source,
                ph=self._backend.ph,
                select_in=self._backend.select_in,
                ciphers=lambda ids: self.ciphers(conn, ids, pending, create=False),
            )
            for feed in self._feeds.values():
                changed.extend(feed(stored))
        if batch.rejects:
            self._write_dead_letters(conn, batch, source)
        report = IngestReport(
            inserted=inserted, duplicates=duplicates, rejected=len(batch.rejects), linked=linked
        )
        return report, tuple(sorted(set(changed)))

    def _existing_messages(
        self, conn: sa.Connection, items: list[Message]
    ) -> tuple[set[str], set[tuple[str, str]]]:
        be = self._backend
        ids = {m.message_id for m in items}
        found_ids = {
            r[0]
            for r in be.select_in(
                conn, "SELECT message_id FROM messages WHERE message_id IN ({in})", ids
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
        self, conn: sa.Connection, batch: Batch, pending: Pending
    ) -> tuple[int, int, int]:
        found_ids, found_pairs = self._existing_messages(conn, batch.messages)
        fresh: list[tuple[Message, bytes | None]] = []
        for m, meta in zip(batch.messages, batch.message_meta, strict=True):
            pair = (m.provider, m.provider_message_id)
            if m.message_id in found_ids or pair in found_pairs:
                continue
            found_ids.add(m.message_id)
            if pair[0] is not None and pair[1] is not None:
                found_pairs.add(pair)  # type: ignore[arg-type]
            fresh.append((m, meta))
        if not fresh:
            return 0, len(batch.messages), 0
        ciphers = self.ciphers(conn, {m.contact_id for m, _ in fresh}, pending, create=True)
        rows: list[Row] = []
        addresses: dict[tuple[str, bytes, str], Row] = {}
        indexer = self.indexer()
        index_key_id = indexer.key_id
        now = _now_us()
        for m, meta in fresh:
            mid = m.message_id
            cid = m.contact_id
            enc = ciphers[cid].encrypt
            address = m.address
            channel = m.channel
            rows.append(
                (
                    mid, cid, channel.value, m.direction.value, m.purpose.value,
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
            kind = ADDRESS_KINDS.get(channel)
            if kind is not None:
                bidx = indexer.index(kind, address)
                key = (kind, bidx, cid)
                if key not in addresses:
                    addresses[key] = (
                        kind, bidx, cid, index_key_id,
                        enc(address, table="addresses", column="address",
                            row_id=address_row_id(kind, bidx)),
                        now,
                    )  # fmt: skip
        inserted = self._backend.insert(conn, schema.messages, MESSAGE_WRITE_COLUMNS, rows)
        self._backend.insert(conn, schema.addresses, ADDRESS_COLUMNS, list(addresses.values()))
        for m, _ in fresh:
            pending.messages[m.message_id] = m.contact_id
            if m.provider is not None and m.provider_message_id is not None:
                pending.pairs[(m.provider, m.provider_message_id)] = (m.message_id, m.contact_id)
        linked = self._link_orphans(conn, [m for m, _ in fresh], pending)
        return inserted, len(batch.messages) - inserted, linked

    def _link_orphans(self, conn: sa.Connection, fresh: list[Message], pending: Pending) -> int:
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
        ciphers = self.ciphers(conn, {r[3] for r in found}, pending, create=False)
        updates: list[Row] = []
        for event_id, okid, mid, cid, *secrets_ in found:
            orphan = self.keyed_cipher(okid, ORPHAN_PURPOSE)
            enc = ciphers[cid].encrypt
            values = []
            for column, blob in zip(EVENT_SECRET_COLUMNS, secrets_, strict=True):
                plain = orphan.decrypt(
                    None if blob is None else bytes(blob),
                    table="events", column=column, row_id=event_id,
                )  # fmt: skip
                values.append(
                    None
                    if plain is None
                    else enc(plain, table="events", column=column, row_id=event_id)
                )
            updates.append((mid, cid, *values, event_id))
        sets = ", ".join(f"{c} = {be.ph}" for c in EVENT_SECRET_COLUMNS)
        return be.executemany(
            conn,
            f"UPDATE events SET message_id = {be.ph}, contact_id = {be.ph}, "
            f"orphan_key_id = NULL, {sets} WHERE event_id = {be.ph} AND contact_id IS NULL",
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

    def _write_events(self, conn: sa.Connection, batch: Batch, pending: Pending) -> int:
        be = self._backend
        events = batch.events
        metas = batch.event_meta
        revenues = batch.event_revenue
        if be.copies_new_rows:
            events, metas, revenues = self._new_events(conn, events, metas, revenues)
            if not events:
                return 0
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
        for cid in contacts - ciphers.keys():  # the message's contact was erased
            raise StorageError(f"contact {cid!r} has no data key")
        rows = self._event_rows(events, metas, revenues, by_id, by_pair, ciphers)
        if not be.copies_new_rows:
            return be.insert(conn, schema.events, EVENT_COLUMNS, list(rows))
        inserted = be.insert_new(conn, schema.events, EVENT_COLUMNS, rows)
        if inserted < len(events):  # stored already: look them up first next time
            self._look_up_events = True
        return inserted

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
                e.type.value, (e.occurred_at - EPOCH) // _US_DELTA, e.status_code,
                None if bounce is None else bounce.value, e.machine,
                None if rev is None else str(e.revenue), rev, e.currency, okid,
                *seal(eid, (e.address, e.reason, e.url, e.user_agent, e.ip, meta), nonces),
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
        for c, cid_, meta in zip(
            batch.consents, batch.consent_ids, batch.consent_meta, strict=True
        ):
            if cid_ in existing:
                continue
            existing.add(cid_)
            fresh.append((c, cid_, meta))
        if not fresh:
            return 0, len(batch.consents)
        ciphers = self.ciphers(conn, {c.contact_id for c, _, _ in fresh}, pending, create=True)
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
        return inserted, len(batch.consents) - inserted

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

    # ------------------------------------------------------------------ reads

    def timeline(self, contact_id: str) -> list[TimelineEntry]:
        """Return a contact's decrypted timeline; see :meth:`Repository.timeline`."""
        ph = self._backend.ph
        with self.transaction(read=True) as conn:
            row = conn.exec_driver_sql(
                f"SELECT data_key FROM contacts WHERE contact_id = {ph}", (contact_id,)
            ).first()
            if row is None:
                raise NotFoundError(kind="contact", identifier=contact_id)
            if row[0] is None:  # erased: nothing can be decrypted
                return []
            cipher = self.contact_cipher(conn, contact_id)
            assert cipher is not None
            # Plain DB-API rows: two indexed queries, no per-row SQLAlchemy work.
            cur: Any = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
            try:
                cur.execute(
                    f"SELECT {', '.join(MESSAGE_COLUMNS)} FROM messages "
                    f"WHERE contact_id = {ph} ORDER BY sent_at, message_id",
                    (contact_id,),
                )
                message_rows = cur.fetchall()
                cur.execute(
                    f"SELECT {', '.join(EVENT_COLUMNS)} FROM events "
                    f"WHERE contact_id = {ph} ORDER BY occurred_at, event_id",
                    (contact_id,),
                )
                event_rows = cur.fetchall()
            finally:
                cur.close()
        event_from_row = _event_decoder(cipher)
        message_from_row = _message_decoder(cipher)
        by_message: dict[str, list[Event]] = {}
        for r in event_rows:
            event = event_from_row(r)
            by_message.setdefault(r[1], []).append(event)
        return [
            TimelineEntry(message=message_from_row(r), events=tuple(by_message.get(r[0], ())))
            for r in message_rows
        ]

    def consent_history(self, contact_id: str) -> list[ConsentEvent]:
        """Return a contact's consent events, decrypted, in time order.

        Args:
            contact_id: The contact.

        Returns:
            The consent events ordered by ``occurred_at`` (then consent id).

        Raises:
            NotFoundError: The contact is unknown.
        """
        ph = self._backend.ph
        with self.transaction(read=True) as conn:
            cipher = self.contact_cipher(conn, contact_id)
            if cipher is None:
                raise NotFoundError(kind="contact", identifier=contact_id)
            rows = conn.exec_driver_sql(
                f"SELECT {', '.join(CONSENT_COLUMNS)} FROM consent_events "
                f"WHERE contact_id = {ph} ORDER BY occurred_at, consent_id",
                (contact_id,),
            ).all()
        return [_consent_from_row(r, cipher.decrypt) for r in rows]

    def find_contacts(
        self,
        *,
        email: str | None = None,
        phone: str | None = None,
        line_user_id: str | None = None,
    ) -> list[str]:
        """Find contacts by address; see :meth:`Repository.find_contacts`."""
        kind, value = one_criterion(email, phone, line_user_id)
        # Every key the keyring holds: rows indexed before an index-key change
        # stay findable until --reindex has recomputed them.
        wanted: dict[bytes, set[str]] = {}
        for key_id in lookup_key_ids(self._keyring):
            wanted.setdefault(self.indexer(key_id).index(kind, value), set()).add(key_id)
        ph = self._backend.ph
        with self.transaction(read=True) as conn:
            rows = self._backend.select_in(
                conn,
                "SELECT contact_id, blind_index, index_key_id FROM addresses "
                f"WHERE kind = {ph} AND blind_index IN ({{in}})",
                list(wanted),
                extra=(kind,),
            )
        return sorted({cid for cid, bidx, kid in rows if kid in wanted.get(bytes(bidx), ())})

    def dead_letters(
        self, *, source: str | None = None, limit: int | None = None
    ) -> list[DeadLetter]:
        """Return decrypted dead letters; see :meth:`Repository.dead_letters`."""
        ph = self._backend.ph
        sql = f"SELECT {', '.join(DEAD_LETTER_COLUMNS)} FROM dead_letters"
        params: list[Any] = []
        if source is not None:
            sql += f" WHERE source = {ph}"
            params.append(source)
        sql += " ORDER BY received_at, source, line, dead_letter_id"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        with self.transaction(read=True) as conn:
            rows = conn.exec_driver_sql(sql, tuple(params)).all()
        out = []
        for dl_id, _fp, received, src, line, field, reason, key_id, raw in rows:
            cipher = self.keyed_cipher(key_id, DEAD_LETTER_PURPOSE)
            text = cipher.decrypt_text(
                bytes(raw), table="dead_letters", column="raw", row_id=dl_id
            )
            out.append(
                DeadLetter(
                    id=dl_id,
                    received_at=from_micros(received),
                    source=src,
                    line=line,
                    field=field,
                    reason=reason,
                    raw=text or "",
                )
            )
        return out

    # ------------------------------------------------------------------ consent and privacy

    def rotate_keys(self, *, batch_size: int = 1000, reindex: bool = False) -> RotationReport:
        """Re-wrap data keys under the keyring's current key; see :func:`rotate_keys`.

        .. versionadded:: 0.4.0
        """
        return rotate_keys(self, batch_size=batch_size, reindex=reindex)

    def backfill_masks(self, *, batch_size: int = 1000) -> MaskBackfillReport:
        """Store masked addresses for messages stored before 0005; see :func:`backfill_masks`.

        .. versionadded:: 0.4.0
        """
        return backfill_masks(self, batch_size=batch_size)

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Dispose of the engine's connections and forget cached keys."""
        if not self._closed:
            self._closed = True
            self.forget_cached_keys()
            self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# ---------------------------------------------------------------------- row decoding

Decrypt = Callable[..., bytes | None]
_R = TypeVar("_R", Message, Event, ConsentEvent)


def _text(decrypt: Decrypt, blob: Any, table: str, column: str, row_id: str) -> str | None:
    if blob is None:
        return None
    data = decrypt(bytes(blob), table=table, column=column, row_id=row_id)
    return None if data is None else data.decode("utf-8")


def _meta(decrypt: Decrypt, blob: Any, table: str, row_id: str) -> dict[str, Any]:
    if blob is None:
        return {}
    return load_metadata(decrypt(bytes(blob), table=table, column="metadata", row_id=row_id))


def _builder(cls: type[_R]) -> Callable[..., _R]:
    """Make a function that rebuilds *cls* from all its fields, skipping validators.

    Everything stored was validated on the way in (and ciphertexts authenticate),
    so validating again, which re-normalizes every address, would only cost time
    on the read path. The builder takes every field by keyword, so a field added
    to the model and not read back here fails loudly (``TypeError``) in the tests.
    """
    names = [f.name for f in attrs.fields(cls)]
    lines = [f"def build(*, {', '.join(names)}):", "    record = new(cls)"]
    lines += [f"    set_(record, {name!r}, {name})" for name in names]
    lines.append("    return record")
    namespace: dict[str, Any] = {"new": object.__new__, "set_": object.__setattr__, "cls": cls}
    exec("\n".join(lines), namespace)  # noqa: S102 - code built from attrs field names only
    builder: Callable[..., _R] = namespace["build"]
    return builder


_build_message = _builder(Message)
_build_event = _builder(Event)
_CHANNELS: Final = {m.value: m for m in Channel}
_DIRECTIONS: Final = {m.value: m for m in Direction}
_PURPOSES: Final = {m.value: m for m in Purpose}
_EVENT_TYPES: Final = {m.value: m for m in EventType}
_BOUNCES: Final = {m.value: m for m in BounceClass}


def _metadata(text: str | None) -> dict[str, Any]:
    return {} if text is None else load_metadata(text.encode("utf-8"))


def _message_decoder(cipher: FieldCipher) -> Callable[[Row], Message]:
    """Return a function turning ``messages`` rows of one contact into records."""
    address = cipher.text_opener("messages", "address")
    subject = cipher.text_opener("messages", "subject")
    body = cipher.text_opener("messages", "body")
    metadata = cipher.text_opener("messages", "metadata")

    def decode(r: Row) -> Message:
        mid = r[0]
        return _build_message(
            message_id=mid,
            contact_id=r[1],
            channel=_CHANNELS[r[2]],
            direction=_DIRECTIONS[r[3]],
            purpose=_PURPOSES[r[4]],
            campaign_id=r[5],
            variant=r[6],
            provider=r[7],
            provider_message_id=r[8],
            sent_at=from_micros(r[9]),
            address=address(r[10], mid) or "",
            subject=subject(r[11], mid),
            body=body(r[12], mid),
            metadata=_metadata(metadata(r[13], mid)),
        )

    return decode


def _event_decoder(cipher: FieldCipher) -> Callable[[Row], Event]:
    """Return a function turning ``events`` rows of one contact into records."""
    address = cipher.text_opener("events", "address")
    reason = cipher.text_opener("events", "reason")
    url = cipher.text_opener("events", "url")
    user_agent = cipher.text_opener("events", "user_agent")
    ip = cipher.text_opener("events", "ip")
    metadata = cipher.text_opener("events", "metadata")

    def decode(r: Row) -> Event:
        eid = r[0]
        return _build_event(
            event_id=eid,
            message_id=r[1],
            provider=r[3],
            provider_message_id=r[4],
            provider_event_id=r[5],
            type=_EVENT_TYPES[r[6]],
            occurred_at=from_micros(r[7]),
            status_code=r[8],
            bounce=None if r[9] is None else _BOUNCES[r[9]],
            machine=bool(r[10]),
            revenue=None if r[11] is None else Decimal(r[11]),
            currency=r[13],
            address=address(r[15], eid),
            reason=reason(r[16], eid),
            url=url(r[17], eid),
            user_agent=user_agent(r[18], eid),
            ip=ip(r[19], eid),
            metadata=_metadata(metadata(r[20], eid)),
        )

    return decode


def _consent_from_row(r: Row, decrypt: Decrypt) -> ConsentEvent:
    rid = r[0]
    return ConsentEvent(
        consent_id=rid,
        contact_id=r[1],
        channel=Channel(r[2]),
        purpose=Purpose(r[3]),
        action=ConsentAction(r[4]),
        method=ConsentMethod(r[5]),
        occurred_at=from_micros(r[6]),
        recorded_at=None if r[7] is None else from_micros(r[7]),
        notice_version=r[8],
        notice_hash=r[9],
        actor=r[10],
        source=None if r[11] is None else _text(decrypt, r[11], "consent_events", "source", rid),
        ip=None if r[12] is None else _text(decrypt, r[12], "consent_events", "ip", rid),
        user_agent=None
        if r[13] is None
        else _text(decrypt, r[13], "consent_events", "user_agent", rid),
        metadata=_meta(decrypt, r[14], "consent_events", rid),
    )


# ---------------------------------------------------------------------- opening


def open_sql_repository(
    url: str,
    keyring: KeyProvider,
    *,
    upgrade: bool = True,
    batch_size: int = 5000,
) -> SQLRepository:
    """Open the encrypted repository at a database URL.

    Args:
        url: ``sqlite:///path/to/file.db`` or ``postgresql://user@host/db``
            (``postgresql://`` uses psycopg 3).
        keyring: The key provider (usually a :class:`~commhistory.Keyring`).
        upgrade: Bring the schema to the newest revision when it is behind
            (under a lock, so concurrent openers are safe). With ``False`` a
            schema that is not current is an error.
        batch_size: Items written per transaction.

    Returns:
        The repository; use it as a context manager or call ``close()``.

    Raises:
        SchemaError: The schema is not current and *upgrade* is false, or the
            database holds a newer schema than this version knows.
        KeyNotFoundError: The database was written with another keyring.
        StorageError: The database cannot be reached or the URL is unusable.

    .. versionadded:: 0.1.0
    """
    check_batch_size(batch_size)
    engine = create_engine(url)
    try:
        head = migrate.head_revision()
        current = migrate.current_revision(engine)
        if current != head:
            if current is not None and current not in migrate.known_revisions():
                raise SchemaError(
                    f"the database schema is at revision {current}, which this version "
                    f"does not know (newest: {head}); upgrade commhistory"
                )
            if not upgrade:
                raise SchemaError(
                    f"the database schema is at revision {current or 'none'}, this version "
                    f"needs {head}; run `commhistory init` or open with upgrade=True"
                )
            migrate.upgrade(engine)
        repo = SQLRepository(engine, keyring, batch_size=batch_size)
        repo.sync_key_metadata()
    except BaseException:
        engine.dispose()
        raise
    return repo
