"""Masked addresses for messages stored before schema revision 0005.

Ingest stores each message's masked address (``messages.address_masked``, see
:mod:`commhistory.normalize.mask`). Rows written before that column existed
hold ``NULL``, so masked readers see their address withheld.
:func:`backfill_masks` decrypts those addresses with their contacts' data keys
and writes the masks, in batches, each its own transaction.

It is resumable by state: it only touches rows whose mask is still ``NULL`` on
a channel that has a mask (email, SMS, voice, LINE), so a run that was
interrupted continues when started again, and a run with nothing left to do
writes nothing. Erased contacts are skipped: their data key is gone and their
masks must stay deleted. On PostgreSQL each batch holds a share lock on the
contacts it masks, so an erasure running at the same time either waits for
the batch (and then deletes its masks) or goes first (and the batch skips the
contact).

.. versionadded:: 0.3.0
"""

# SQL text here is built only from schema identifiers, placeholders and integers;
# every value is bound as a parameter.
# ruff: noqa: S608

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Final

import attrs

from commhistory.model import ADDRESS_KINDS
from commhistory.normalize.mask import mask_address
from commhistory.store._lru import Pending
from commhistory.store.batching import check_batch_size

if TYPE_CHECKING:
    from commhistory.store.sql import SQLRepository

__all__ = ["MaskBackfillReport", "backfill_masks"]

_MASKED_CHANNELS: Final = tuple(sorted(channel.value for channel in ADDRESS_KINDS))
"""The channels whose addresses have a mask (the same ones that are blind-indexed)."""


@attrs.frozen(kw_only=True)
class MaskBackfillReport:
    """What a :func:`backfill_masks` run wrote.

    Attributes:
        masked: Messages whose masked address was written.
        batches: Transactions that wrote at least one mask.

    .. versionadded:: 0.3.0
    """

    masked: int = 0
    batches: int = 0


def backfill_masks(
    repo: SQLRepository,
    *,
    batch_size: int = 1000,
    progress: Callable[[int], None] | None = None,
) -> MaskBackfillReport:
    """Write the masked address of every message stored without one.

    Args:
        repo: The repository (its keyring must hold the keys that wrap the
            contacts' data keys).
        batch_size: Messages per transaction.
        progress: Called after each batch that wrote masks, with the total so far.

    Returns:
        How many masks were written, in how many batches.

    Raises:
        InvalidInputError: *batch_size* is not a positive integer.
        KeyNotFoundError: A data key is wrapped under a key the keyring no longer holds.
        DecryptionError: A stored address does not decrypt (tampered with).
        StorageError: The database failed; committed batches stay done.
    """
    check_batch_size(batch_size)
    after = ""
    masked = batches = 0
    while True:
        done, last = _backfill_batch(repo, after, batch_size)
        if last is None:
            break
        after = last
        if done:
            masked += done
            batches += 1
            if progress is not None:
                progress(masked)
    return MaskBackfillReport(masked=masked, batches=batches)


def _backfill_batch(repo: SQLRepository, after: str, limit: int) -> tuple[int, str | None]:
    """Mask the next batch of messages after the id *after*; return (written, last id seen)."""
    be = repo.backend
    ph = be.ph
    channels = ", ".join([ph] * len(_MASKED_CHANNELS))
    with repo.transaction() as conn:
        # Keyset order on the primary key: each batch starts where the last one ended.
        rows = conn.exec_driver_sql(
            "SELECT m.message_id, m.contact_id, m.channel, m.address FROM messages m "
            "JOIN contacts c ON c.contact_id = m.contact_id "
            f"WHERE m.message_id > {ph} AND m.address_masked IS NULL "
            f"AND c.data_key IS NOT NULL AND m.channel IN ({channels}) "
            f"ORDER BY m.message_id LIMIT {int(limit)}",
            (after, *_MASKED_CHANNELS),
        ).all()
        if not rows:
            return 0, None
        contact_ids = sorted({r[1] for r in rows})
        if repo.dialect == "postgresql":
            # An erasure takes its contact FOR UPDATE: wait for it, or make it wait.
            live = {
                r[0]
                for r in be.select_in(
                    conn,
                    "SELECT contact_id FROM contacts WHERE contact_id IN ({in}) "
                    "AND data_key IS NOT NULL ORDER BY contact_id FOR SHARE",
                    contact_ids,
                )
            }
        else:  # SQLite: write transactions are serialized (BEGIN IMMEDIATE)
            live = set(contact_ids)
        ciphers = repo.ciphers(conn, sorted(live), Pending(), create=False)
        updates = []
        for message_id, contact_id, channel, blob in rows:
            cipher = ciphers.get(contact_id)
            if cipher is None:  # erased meanwhile
                continue
            address = cipher.decrypt_text(
                blob, table="messages", column="address", row_id=message_id
            )
            updates.append((mask_address(channel, address or ""), message_id))
        written = be.executemany(
            conn,
            f"UPDATE messages SET address_masked = {ph} "
            f"WHERE message_id = {ph} AND address_masked IS NULL",
            updates,
        )
    return written, str(rows[-1][0])
