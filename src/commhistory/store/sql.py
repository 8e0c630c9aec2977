"""The encrypted repository on SQLite and PostgreSQL.

:func:`open_sql_repository` opens one. Writes stream in batches, each one
transaction; personal fields are encrypted with the contact's data key before
they reach the database (see ``docs/storage.md``).

:class:`SQLRepository` is made of parts with one job each:
:mod:`~commhistory.store.sql_core` (units of work, caches, data keys, ciphers,
blind indexers), :mod:`~commhistory.store.sql_ingest` (batched writes) and
:mod:`~commhistory.store.sql_reads` (decrypted reads) build on it,
:mod:`~commhistory.store.sql_rows` turns rows back into records; this module
adds the storage ports and the lifecycle.

.. versionadded:: 0.1.0
"""

# SQL text here is built only from schema identifiers, placeholders and integers;
# every value is bound as a parameter.

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa

from commhistory._lifecycle import ClosesOnExit
from commhistory.crypto import (
    KeyProvider,
)
from commhistory.errors import (
    SchemaError,
)
from commhistory.store import migrate, partition
from commhistory.store._engine import create_engine, require_existing
from commhistory.store.activities import SQLActivityStore
from commhistory.store.analytics import SQLAnalyticsReader
from commhistory.store.attributes import SQLAttributeStore
from commhistory.store.audit import SQLAuditStore, SQLMaskedHistory
from commhistory.store.batching import (
    check_batch_size,
)
from commhistory.store.consent import SQLConsentStore
from commhistory.store.costs import SQLCostStore
from commhistory.store.dead_letters import SQLDeadLetterStore
from commhistory.store.journeys import SQLJourneyStore
from commhistory.store.kpi import SQLKpiStore
from commhistory.store.mask_backfill import backfill_masks
from commhistory.store.planning import SQLPlanningStore
from commhistory.store.privacy import SQLPrivacyStore
from commhistory.store.rotation import rotate_keys
from commhistory.store.segments import SQLSegmentStore
from commhistory.store.sql_ingest import SQLIngest
from commhistory.store.sql_reads import SQLReads

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime

    from commhistory.store.mask_backfill import MaskBackfillReport
    from commhistory.store.partition import PartitionReport
    from commhistory.store.rotation import RotationReport

__all__ = [
    "SQLRepository",
    "open_sql_repository",
]


class SQLRepository(SQLIngest, SQLReads, ClosesOnExit):
    """The encrypted :class:`~commhistory.store.protocol.Repository` on SQLite or PostgreSQL.

    Storage only: the facade :class:`~commhistory.CommHistory` (what
    :func:`~commhistory.open_repository` returns) adds consent, KPIs, privacy
    and access control on top. Open one with :func:`open_sql_repository`.

    Safe to share between threads (the web receivers do): each thread's calls
    run in that thread's own transaction and connection from the engine's pool,
    and the shared key caches lock themselves; see decision 14 in
    ``docs/design/decisions.md``. Processes each open their own (the database
    serializes their writes). An in-memory SQLite URL (``sqlite://``) gives
    each thread its own empty database: share a file or a server.

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
        super().__init__(engine, keyring, batch_size=batch_size, cache_size=cache_size)
        self._consent_store = SQLConsentStore(self)
        self._audit_store = SQLAuditStore(self)
        self._masked_history = SQLMaskedHistory(self)
        self._privacy_store = SQLPrivacyStore(self)
        self._kpi_store = SQLKpiStore(self)
        self._dead_letter_store = SQLDeadLetterStore(self)
        self._cost_store = SQLCostStore(self)
        self._activity_store = SQLActivityStore(self)
        self._attribute_store = SQLAttributeStore(self)
        self._planning_store = SQLPlanningStore(self)
        self._analytics_reader = SQLAnalyticsReader(self)
        self._segment_store = SQLSegmentStore(self)
        self._journey_store = SQLJourneyStore(self)

    def __repr__(self) -> str:
        return f"SQLRepository(dialect={self.dialect!r})"

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
        """The erasure, subject export and retention port (:mod:`commhistory.store.privacy`).

        .. versionadded:: 0.4.0
        """
        return self._privacy_store

    @property
    def kpi_store(self) -> SQLKpiStore:
        """The KPI aggregate storage port (:class:`~commhistory.store.kpi.SQLKpiStore`).

        .. versionadded:: 0.4.0
        """
        return self._kpi_store

    @property
    def activity_store(self) -> SQLActivityStore:
        """The activity storage port (:class:`~commhistory.store.activities.SQLActivityStore`).

        .. versionadded:: 0.4.0
        """
        return self._activity_store

    @property
    def attribute_store(self) -> SQLAttributeStore:
        """The contact attribute storage port (:class:`SQLAttributeStore`).

        .. versionadded:: 0.4.0
        """
        return self._attribute_store

    @property
    def planning_store(self) -> SQLPlanningStore:
        """The send planning storage port (:class:`SQLPlanningStore`).

        .. versionadded:: 0.4.0
        """
        return self._planning_store

    @property
    def dead_letter_store(self) -> SQLDeadLetterStore:
        """The dead-letter storage port (:class:`SQLDeadLetterStore`).

        .. versionadded:: 0.4.0
        """
        return self._dead_letter_store

    @property
    def cost_store(self) -> SQLCostStore:
        """The campaign cost storage port (:class:`~commhistory.store.costs.SQLCostStore`).

        .. versionadded:: 0.4.0
        """
        return self._cost_store

    @property
    def analytics_reader(self) -> SQLAnalyticsReader:
        """The analytics read port (:class:`~commhistory.store.analytics.SQLAnalyticsReader`).

        .. versionadded:: 0.4.0
        """
        return self._analytics_reader

    @property
    def segment_store(self) -> SQLSegmentStore:
        """The segment port (:class:`~commhistory.store.segments.SQLSegmentStore`).

        .. versionadded:: 0.4.0
        """
        return self._segment_store

    @property
    def journey_store(self) -> SQLJourneyStore:
        """The journey port (:class:`~commhistory.store.journeys.SQLJourneyStore`).

        .. versionadded:: 0.4.0
        """
        return self._journey_store

    # ------------------------------------------------------------------ consent and privacy

    def rotate_keys(
        self,
        *,
        batch_size: int = 1000,
        reindex: bool = False,
        progress: Callable[[str, int], None] | None = None,
    ) -> RotationReport:
        """Re-wrap data keys under the keyring's current key; see :func:`rotate_keys`.

        .. versionadded:: 0.4.0
        """
        return rotate_keys(self, batch_size=batch_size, reindex=reindex, progress=progress)

    def backfill_masks(self, *, batch_size: int = 1000) -> MaskBackfillReport:
        """Store masked addresses for messages stored before 0005; see :func:`backfill_masks`.

        .. versionadded:: 0.4.0
        """
        return backfill_masks(self, batch_size=batch_size)

    def ensure_partitions(
        self, *, ahead_months: int = 3, now: datetime | None = None
    ) -> PartitionReport:
        """Create the coming months' partitions; see :meth:`Repository.ensure_partitions`.

        .. versionadded:: 0.4.0
        """
        with self.transaction() as conn:
            return partition.ensure_partitions(conn, ahead_months=ahead_months, now=now)

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Dispose of the engine's connections and forget cached keys."""
        if not self._closed:
            self._closed = True
            self.forget_cached_keys()
            self._engine.dispose()


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
            (under a lock, so concurrent openers are safe), creating a missing
            SQLite file. With ``False`` a schema that is not current is an
            error, and a missing SQLite file is refused, never created.
        batch_size: Items written per transaction.

    Returns:
        The repository; use it as a context manager or call ``close()``.

    Raises:
        SchemaError: The schema is not current and *upgrade* is false, or the
            database holds a newer schema than this version knows.
        KeyNotFoundError: The database was written with another keyring.
        DatabaseNotFoundError: The database does not exist (a missing SQLite
            file with ``upgrade=False``, an unknown PostgreSQL database name).
        DatabaseUnavailableError: The database cannot be reached; the message
            names the file or host, port and database, and why.
        StorageError: The URL is unusable (every error above is one).

    .. versionadded:: 0.1.0
    .. versionchanged:: 0.4.0
       Connection failures raise :class:`~commhistory.errors.DatabaseUnavailableError`
       naming the cause; ``upgrade=False`` no longer creates a missing SQLite file.
    """
    check_batch_size(batch_size)
    if not upgrade:
        require_existing(url)
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
