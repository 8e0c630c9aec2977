"""The core of the SQL repository: units of work, caches and key material.

:class:`SQLCore` is the part every other part of
:class:`~commhistory.store.sql.SQLRepository` builds on: the engine and
dialect backend, nesting transactions with ``after_commit`` and the batch hook
and feeds, and key material: it unwraps (and creates) per-contact data keys
inside the caller's transaction, caches them in a bounded LRU, derives keyring
subkey ciphers and blind indexers, and checks the keyring against the key ids
the database has seen.

.. versionadded:: 0.4.0
"""

# SQL text here is built only from schema identifiers, placeholders and integers;
# every value is bound as a parameter.
# ruff: noqa: S608

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from commhistory.crypto import (
    BlindIndexer,
    FieldCipher,
    KeyProvider,
    derive_subkey,
    new_data_key,
    unwrap_data_key,
    wrap_data_keys,
)
from commhistory.crypto.fields import stored_bytes
from commhistory.errors import (
    KeyNotFoundError,
    StorageError,
)
from commhistory.normalize.time import to_micros
from commhistory.store import schema
from commhistory.store._backend import Backend, backend_for
from commhistory.store._engine import READ
from commhistory.store._lru import LRU, Pending
from commhistory.store.batching import (
    check_batch_size,
)
from commhistory.store.layout import (
    DATA_KEY_REF,
)
from commhistory.store.protocol import (
    BatchFeed,
    BatchHook,
)

if TYPE_CHECKING:
    from commhistory.store.attributes import AttributeCodec

__all__ = ["SQLCore"]


def _storage_error(exc: BaseException) -> StorageError:
    reason = getattr(getattr(exc, "orig", exc), "sqlstate", None) or type(exc).__name__
    return StorageError(f"the database refused the operation ({reason})")


def _now_us() -> int:
    return to_micros(datetime.now(UTC))


class SQLCore:
    """Units of work, caches and key material of :class:`~commhistory.store.sql.SQLRepository`.

    Args: as :class:`~commhistory.store.sql.SQLRepository`.
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
        # Address rows ``(kind, blind index, contact)`` known stored: a bulk import
        # names each contact's address again and again, and writes its row once.
        self._addresses: LRU[tuple[str, bytes, str], bool] = LRU(cache_size * 16)
        self._keyed: dict[tuple[str, str], FieldCipher] = {}
        self._indexers: dict[str, BlindIndexer] = {}
        self._local = threading.local()
        self._closed = False
        # A hint only (look stored events up before a COPY); a stale value
        # costs a lookup or a fallback insert, never a wrong row.
        self._look_up_events = False
        self._look_up_activities = False
        # Replaced, never mutated: a batch iterates the dict it read, whatever
        # another thread installs meanwhile.
        self._feeds: dict[str, BatchFeed] = {}
        self._attribute_codec: AttributeCodec | None = None
        # Serializes filling _keyed and _indexers and replacing _feeds (the LRU
        # caches lock themselves).
        self._derive_lock = threading.Lock()

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

    def forget_history_caches(self) -> None:
        """Forget which contact each message belongs to (after messages were deleted).

        .. versionadded:: 0.4.0
        """
        self._message_contacts.clear()
        self._pair_messages.clear()

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
        with self._derive_lock:  # two installers must not lose one another's feed
            feeds = dict(self._feeds)
            if feed is None:
                feeds.pop(name, None)
            else:
                feeds[name] = feed
            self._feeds = feeds

    def set_attribute_codec(self, codec: AttributeCodec | None) -> None:
        """Install (or, with ``None``, remove) the check of contact attribute updates.

        See :meth:`Repository.set_attribute_codec`.

        .. versionadded:: 0.4.0
        """
        self._attribute_codec = codec

    def _forget_learned(self) -> None:
        self._ciphers.clear()
        self._message_contacts.clear()
        self._addresses.clear()
        self._pair_messages.clear()

    def keyed_cipher(self, key_id: str, purpose: str) -> FieldCipher:
        """Return the cipher of a keyring-derived subkey (orphan events, dead letters)."""
        cipher = self._keyed.get((key_id, purpose))
        if cipher is None:
            with self._derive_lock:
                cipher = self._keyed.get((key_id, purpose))
                if cipher is None:
                    cipher = FieldCipher(
                        derive_subkey(self._keyring, key_id, purpose), key_ref=key_id
                    )
                    self._keyed[(key_id, purpose)] = cipher
        return cipher

    def indexer(self, key_id: str | None = None) -> BlindIndexer:
        """Return the blind indexer of a keyring key (default: the index key)."""
        key_id = self._keyring.index_key_id if key_id is None else key_id
        indexer = self._indexers.get(key_id)
        if indexer is None:
            with self._derive_lock:
                indexer = self._indexers.get(key_id)
                if indexer is None:
                    indexer = BlindIndexer.from_provider(self._keyring, key_id)
                    self._indexers[key_id] = indexer
        return indexer

    def forget_cached_keys(self) -> None:
        """Drop every unwrapped data key and derived cipher held in memory.

        The address rows known stored are forgotten too: erasure and index-key
        rotation, which call this, delete such rows.
        """
        self._ciphers.clear()
        self._addresses.clear()
        with self._derive_lock:
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
        self,
        conn: sa.Connection,
        contact_ids: Iterable[str],
        pending: Pending,
        *,
        create: bool,
    ) -> dict[str, FieldCipher]:
        """Return the field ciphers of the contacts a write depends on, checked now.

        Every call reads the contacts' rows in the caller's transaction, cached
        key or not, and (PostgreSQL) locks them ``FOR KEY SHARE``, which an
        erasure's ``FOR UPDATE`` waits for. So a key cached before another
        process erased the contact is never used again: erased contacts are left
        out of the result, forgotten from the cache and added to
        ``pending.erased``, and the caller refuses their records. Missing contacts
        are created when *create* (``ON CONFLICT DO NOTHING``); when a racing
        writer stored one of them first, they are read back, so racing writers
        all use the data key that won. When every row is this call's, the keys
        just made are used as they are (no read-back, no unwrap).

        A contact checked by an earlier call in the same transaction (its cipher
        in ``pending.ciphers``, or in ``pending.erased``) is not read again: its
        row is locked until the transaction ends (SQLite: the write lock is held;
        PostgreSQL: ``FOR KEY SHARE``), so no erasure can have happened since.
        """
        out: dict[str, FieldCipher] = {}
        checked, erased = pending.ciphers, pending.erased
        ids = []
        for cid in dict.fromkeys(contact_ids):
            cipher = checked.get(cid)
            if cipher is not None:
                out[cid] = cipher
            elif cid not in erased:
                ids.append(cid)
        if not ids:
            return out
        found = self._contact_rows(conn, ids, lock=True)
        absent = [cid for cid in ids if cid not in found]
        created: dict[str, tuple[bytes, bytes]] = {}  # contact -> (data key, wrapped)
        if absent and create:
            kr = self._keyring
            now = _now_us()
            key_id = kr.current_key_id
            keys = {cid: new_data_key() for cid in absent}
            wrapped = wrap_data_keys(kr, keys)
            for cid, key in keys.items():
                created[cid] = (key, wrapped[cid])
            rows = [
                (cid, created[cid][1], key_id, now)
                for cid in sorted(absent)  # primary-key order: concurrent writers lock alike
            ]
            backend = self._backend
            write = backend.insert_new if backend.copies_new_rows else backend.insert
            columns = ("contact_id", "data_key", "wrap_key_id", "created_at")
            if write(conn, schema.contacts, columns, rows) == len(rows):
                # Every row is ours (none raced in): their keys need no read-back or unwrap.
                for cid, key in keys.items():
                    out[cid] = pending.ciphers[cid] = FieldCipher(key, key_ref=DATA_KEY_REF)
                pending.created.update(keys)
            else:  # a racing writer stored some: read back which keys won
                found.update(self._contact_rows(conn, absent, lock=True))
        for cid, blob in found.items():
            if blob is None:  # erased, possibly by another process since we cached its key
                pending.erased.add(cid)
                pending.ciphers.pop(cid, None)
                self._ciphers.discard(cid)
                continue
            cipher = pending.ciphers.get(cid) or self._ciphers.get(cid)
            if cipher is None:
                mine = created.get(cid)
                if mine is not None and stored_bytes(blob, "contacts.data_key") == mine[1]:
                    # The key this call created won (no racing writer): no need to unwrap it.
                    cipher = FieldCipher(mine[0], key_ref=DATA_KEY_REF)
                else:
                    cipher = self._unwrap(cid, blob)
                pending.ciphers[cid] = cipher
            out[cid] = cipher
        return out

    def _contact_rows(
        self, conn: sa.Connection, contact_ids: list[str], *, lock: bool
    ) -> dict[str, Any]:
        """Return ``{contact_id: wrapped data key or None when erased}``.

        With *lock*, the rows are locked as a write depending on them needs.
        """
        sql = "SELECT contact_id, data_key FROM contacts WHERE contact_id IN ({in})"
        rows = self._backend.select_in(
            conn, sql + self._backend.key_share if lock else sql, contact_ids
        )
        return dict(rows)

    def _unwrap(self, contact_id: str, blob: object) -> FieldCipher:
        """Return the field cipher of a contact's stored (wrapped) data key."""
        key = unwrap_data_key(
            self._keyring, stored_bytes(blob, "contacts.data_key"), contact_id=contact_id
        )
        return FieldCipher(key, key_ref=DATA_KEY_REF)

    def contact_cipher(self, conn: sa.Connection, contact_id: str) -> FieldCipher | None:
        """Return one contact's cipher, or ``None`` when the contact does not exist."""
        cached = self._ciphers.get(contact_id)
        if cached is not None:
            return cached
        found = self._contact_rows(conn, [contact_id], lock=False)
        if contact_id not in found:
            return None
        if found[contact_id] is None:
            raise StorageError(f"contact {contact_id!r} was erased; its data cannot be read")
        cipher = self._unwrap(contact_id, found[contact_id])
        self._ciphers.put(contact_id, cipher)
        return cipher
