"""Where communication history is kept: the repository protocol and its implementations.

* :class:`Repository`: the protocol every store implements;
* :class:`SQLRepository` / :func:`open_repository`: encrypted, on SQLite or PostgreSQL;
* :class:`MemoryRepository`: in memory, for tests;
* :func:`rotate_keys`: move stored keys under the keyring's current key;
* :func:`backfill_masks`: write the masked addresses of messages stored before
  schema revision 0005;
* :mod:`~commhistory.store.migrate`: schema migrations (Alembic, shipped in the package).

See ``docs/storage.md``.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from commhistory.store.masks import MaskBackfillReport, backfill_masks
from commhistory.store.memory import MemoryRepository
from commhistory.store.migrate import current_revision, downgrade_to_base, head_revision, upgrade
from commhistory.store.protocol import (
    BatchOutcome,
    DeadLetter,
    IngestReport,
    Repository,
    TimelineEntry,
)
from commhistory.store.rotation import RotationReport, rotate_keys
from commhistory.store.sql import SQLRepository, open_repository

__all__ = [
    "BatchOutcome",
    "DeadLetter",
    "IngestReport",
    "MaskBackfillReport",
    "MemoryRepository",
    "Repository",
    "RotationReport",
    "SQLRepository",
    "TimelineEntry",
    "backfill_masks",
    "current_revision",
    "downgrade_to_base",
    "head_revision",
    "open_repository",
    "rotate_keys",
    "upgrade",
]
