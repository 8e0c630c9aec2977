"""Where communication history is kept: the repository protocol and its implementations.

* :class:`Repository`: the storage protocol every store implements (ingest,
  reads, key material, units of work, and the ports the domain packages use);
* :class:`SQLRepository` / :func:`open_sql_repository`: encrypted, on SQLite or PostgreSQL;
* :class:`MemoryRepository`: in memory, for tests;
* :func:`rotate_keys`: move stored keys under the keyring's current key;
* :func:`backfill_masks`: write the masked addresses of messages stored before
  schema revision 0005;
* :mod:`~commhistory.store.migrate`: schema migrations (Alembic, shipped in the package);
* :mod:`~commhistory.store.partition`: monthly partitions of ``messages`` and
  ``events`` on PostgreSQL (opt-in; :class:`PartitionReport`).

The store is the only package that speaks SQL. It knows nothing of the domain
packages above it: consent, KPIs, privacy and audit reach it through the typed
ports, and the facade (:class:`commhistory.CommHistory`, what
:func:`commhistory.open_repository` returns) composes them. See
``docs/storage.md`` and ``docs/design/architecture.md``.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from commhistory.store.activities import ActivityEntry, ActivityStore
from commhistory.store.mask_backfill import MaskBackfillReport, backfill_masks
from commhistory.store.memory import MemoryRepository, MemoryState
from commhistory.store.migrate import current_revision, downgrade_to_base, head_revision, upgrade
from commhistory.store.partition import PartitionReport
from commhistory.store.protocol import (
    BatchFeed,
    BatchHook,
    BatchOutcome,
    DeadLetter,
    HistoryWriter,
    IngestReport,
    Repository,
    StoredBatch,
    TimelineEntry,
)
from commhistory.store.rotation import RotationReport, rotate_keys
from commhistory.store.sql import SQLRepository, open_sql_repository

__all__ = [
    "ActivityEntry",
    "ActivityStore",
    "BatchFeed",
    "BatchHook",
    "BatchOutcome",
    "DeadLetter",
    "HistoryWriter",
    "IngestReport",
    "MaskBackfillReport",
    "MemoryRepository",
    "MemoryState",
    "PartitionReport",
    "Repository",
    "RotationReport",
    "SQLRepository",
    "StoredBatch",
    "TimelineEntry",
    "backfill_masks",
    "current_revision",
    "downgrade_to_base",
    "head_revision",
    "open_sql_repository",
    "rotate_keys",
    "upgrade",
]
