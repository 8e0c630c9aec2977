"""Key rotation: re-wrap data keys (and re-encrypt keyring-keyed rows) under the current key.

The caller first makes a new key current and saves the keyring
(``keyring.rotate(); keyring.save(path)``), then calls :func:`rotate_keys`.
Work goes in batches, each its own transaction, selected by *state* (rows not
yet under the current key), so an interrupted rotation simply continues when
run again. Reads and writes keep working throughout: the old key still unwraps
what has not been re-wrapped yet.

.. versionadded:: 0.1.0
"""

# SQL text here is built only from schema identifiers, placeholders and integers;
# every value is bound as a parameter.
# ruff: noqa: S608

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Final

import attrs

from commhistory.crypto import FieldCipher, KeyProvider, derive_subkey, rewrap_data_key
from commhistory.crypto.fields import stored_bytes
from commhistory.errors import InvalidInputError
from commhistory.normalize.time import to_micros
from commhistory.store import schema
from commhistory.store._lru import Pending
from commhistory.store.batching import check_batch_size
from commhistory.store.layout import (
    ADDRESS_COLUMNS,
    DEAD_LETTER_PURPOSE,
    EVENT_SECRET_COLUMNS,
    EVIDENCE_COLUMNS,
    EVIDENCE_PURPOSE,
    ORPHAN_PURPOSE,
    address_row_id,
)

if TYPE_CHECKING:
    from commhistory.store.sql import SQLRepository

__all__ = ["RotationReport", "rotate_keys"]

_STEPS: Final = ("contacts", "orphan events", "dead letters", "consent evidence", "addresses")


@attrs.frozen(kw_only=True)
class RotationReport:
    """What a rotation run changed.

    Attributes:
        key_id: The current key everything was moved under.
        index_key_id: The blind-index key.
        rewrapped: Contact data keys re-wrapped under the current key.
        orphans: Orphan events re-encrypted under the current key's orphan subkey.
        dead_letters: Dead letters re-encrypted under the current key.
        evidence: Consent events of erased contacts whose retained evidence was
            re-encrypted under the current key's ``consent-evidence`` subkey.
        reindexed: Blind indexes recomputed under the index key (with ``reindex``).
        batches: Transactions committed.

    .. versionadded:: 0.1.0
    """

    key_id: str
    index_key_id: str
    rewrapped: int = 0
    orphans: int = 0
    dead_letters: int = 0
    evidence: int = 0
    reindexed: int = 0
    batches: int = 0


def rotate_keys(
    repo: SQLRepository,
    keyring: KeyProvider | None = None,
    *,
    batch_size: int = 1000,
    reindex: bool = False,
    progress: Callable[[str, int], None] | None = None,
) -> RotationReport:
    """Move every stored key-dependent value under the keyring's current keys.

    Re-wraps contact data keys not wrapped by the current key; re-encrypts
    orphan events, dead letters and the consent evidence retained after an
    erasure (all encrypted under keyring subkeys) likewise;
    with *reindex*, recomputes blind indexes not made with the index key.
    Field ciphertexts under contacts' data keys are untouched: the data keys
    themselves do not change.

    Args:
        repo: The repository.
        keyring: The key provider holding the new current key and the old keys
            (defaults to the repository's own).
        batch_size: Rows per transaction.
        reindex: Also recompute blind indexes after an index-key change.
        progress: Called after each batch with the step name and rows done in it.

    Returns:
        What was changed.

    Raises:
        KeyNotFoundError: A row is under a key the keyring no longer holds.
        StorageError: The database failed; committed batches stay done.
    """
    check_batch_size(batch_size)
    kr = repo.keyring if keyring is None else keyring
    if kr is not repo.keyring:
        raise InvalidInputError(
            field="keyring", reason="must be the keyring the repository was opened with"
        )
    repo.sync_key_metadata()
    counts = dict.fromkeys(_STEPS, 0)
    batches = 0
    steps: list[tuple[str, Callable[[SQLRepository, KeyProvider, int], int]]] = [
        ("contacts", _rewrap_contacts),
        (
            "orphan events",
            partial(
                _reencrypt,
                table="events",
                id_column="event_id",
                key_column="orphan_key_id",
                columns=EVENT_SECRET_COLUMNS,
                purpose=ORPHAN_PURPOSE,
                scope="contact_id IS NULL",
            ),
        ),
        (
            "dead letters",
            partial(
                _reencrypt,
                table="dead_letters",
                id_column="dead_letter_id",
                key_column="key_id",
                columns=("raw",),
                purpose=DEAD_LETTER_PURPOSE,
            ),
        ),
        # An erased contact's consent evidence is kept, until its retention
        # date, under a keyring subkey (its data key is gone); retiring that key
        # without this step would destroy evidence the law says to keep.
        (
            "consent evidence",
            partial(
                _reencrypt,
                table="consent_events",
                id_column="consent_id",
                key_column="evidence_key_id",
                columns=EVIDENCE_COLUMNS,
                purpose=EVIDENCE_PURPOSE,
            ),
        ),
    ]
    if reindex:
        steps.append(("addresses", _reindex_addresses))
    for name, step in steps:
        while True:
            done = step(repo, kr, batch_size)
            if not done:
                break
            batches += 1
            counts[name] += done
            if progress is not None:
                progress(name, counts[name])
    return RotationReport(
        key_id=kr.current_key_id,
        index_key_id=kr.index_key_id,
        rewrapped=counts["contacts"],
        orphans=counts["orphan events"],
        dead_letters=counts["dead letters"],
        evidence=counts["consent evidence"],
        reindexed=counts["addresses"],
        batches=batches,
    )


def _lock_clause(repo: SQLRepository, of: str | None = None) -> str:
    if repo.dialect != "postgresql":
        return ""
    return f" FOR UPDATE{f' OF {of}' if of else ''} SKIP LOCKED"


def _rewrap_contacts(repo: SQLRepository, kr: KeyProvider, limit: int) -> int:
    ph = repo.backend.ph
    current = kr.current_key_id
    with repo.transaction() as conn:
        rows = conn.exec_driver_sql(
            "SELECT contact_id, data_key, wrap_key_id FROM contacts "
            f"WHERE data_key IS NOT NULL AND wrap_key_id <> {ph} "
            f"ORDER BY contact_id LIMIT {int(limit)}{_lock_clause(repo)}",
            (current,),
        ).all()
        updates = [
            (
                rewrap_data_key(kr, stored_bytes(blob, "contacts.data_key"), contact_id=cid),
                current,
                cid,
                old,
            )
            for cid, blob, old in rows
        ]
        repo.backend.executemany(
            conn,
            f"UPDATE contacts SET data_key = {ph}, wrap_key_id = {ph} "
            f"WHERE contact_id = {ph} AND wrap_key_id = {ph}",
            updates,
        )
    return len(rows)


def _keyed(kr: KeyProvider, key_id: str, purpose: str) -> FieldCipher:
    return FieldCipher(derive_subkey(kr, key_id, purpose), key_ref=key_id)


def _reencrypt(
    repo: SQLRepository,
    kr: KeyProvider,
    limit: int,
    *,
    table: str,
    id_column: str,
    key_column: str,
    columns: tuple[str, ...],
    purpose: str,
    scope: str = "",
) -> int:
    """Re-encrypt one batch of rows whose *columns* are under a keyring subkey of *purpose*.

    Rows are those of *table* (within *scope*, a SQL condition) whose
    *key_column* names another key than the current one; each is decrypted
    under its own key's subkey and encrypted under the current key's.
    """
    ph = repo.backend.ph
    current = kr.current_key_id
    new = _keyed(kr, current, purpose)
    within = f"{scope} AND " if scope else ""
    with repo.transaction() as conn:
        rows = conn.exec_driver_sql(
            f"SELECT {id_column}, {key_column}, {', '.join(columns)} FROM {table} "
            f"WHERE {within}{key_column} <> {ph} "
            f"ORDER BY {id_column} LIMIT {int(limit)}{_lock_clause(repo)}",
            (current,),
        ).all()
        updates = []
        for row_id, old_id, *blobs in rows:
            old = _keyed(kr, old_id, purpose)
            values = []
            for column, blob in zip(columns, blobs, strict=True):
                plain = old.decrypt(
                    blob,
                    table=table, column=column, row_id=row_id,
                )  # fmt: skip
                values.append(new.encrypt(plain, table=table, column=column, row_id=row_id))
            updates.append((current, *values, row_id, old_id))
        sets = ", ".join(f"{c} = {ph}" for c in columns)
        repo.backend.executemany(
            conn,
            f"UPDATE {table} SET {key_column} = {ph}, {sets} "
            f"WHERE {id_column} = {ph} AND {key_column} = {ph}"
            + (f" AND {scope}" if scope else ""),
            updates,
        )
    return len(rows)


def _reindex_addresses(repo: SQLRepository, kr: KeyProvider, limit: int) -> int:
    ph = repo.backend.ph
    indexer = repo.indexer(kr.index_key_id)
    with repo.transaction() as conn:
        rows = conn.exec_driver_sql(
            "SELECT a.kind, a.blind_index, a.contact_id, a.index_key_id, a.address "
            "FROM addresses a JOIN contacts c ON c.contact_id = a.contact_id "
            f"WHERE a.index_key_id <> {ph} AND c.data_key IS NOT NULL "
            "ORDER BY a.contact_id, a.kind, a.blind_index "
            f"LIMIT {int(limit)}{_lock_clause(repo, 'a')}",
            (indexer.key_id,),
        ).all()
        if not rows:
            return 0
        pending = Pending()
        ciphers = repo.ciphers(conn, {r[2] for r in rows}, pending, create=False)
        now = to_micros(datetime.now(UTC))
        inserts = []
        deletes = []
        for kind, stored_index, cid, old_key, blob in rows:
            old_index = bytes(stored_index)
            cipher = ciphers[cid]
            address = cipher.decrypt_text(
                blob,
                table="addresses", column="address", row_id=address_row_id(kind, old_index),
            )  # fmt: skip
            assert address is not None
            new_index = indexer.index(kind, address)
            inserts.append(
                (
                    kind, new_index, cid, indexer.key_id,
                    cipher.encrypt(address, table="addresses", column="address",
                                   row_id=address_row_id(kind, new_index)),
                    now,
                )
            )  # fmt: skip
            deletes.append((kind, old_index, cid, old_key))
        repo.backend.executemany(
            conn,
            f"DELETE FROM addresses WHERE kind = {ph} AND blind_index = {ph} "
            f"AND contact_id = {ph} AND index_key_id = {ph}",
            deletes,
        )
        repo.backend.insert(conn, schema.addresses, ADDRESS_COLUMNS, inserts)
    repo.forget_cached_keys()  # the rows it remembered stored are gone
    return len(rows)
