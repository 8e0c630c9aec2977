"""Drop ``ix_events_message_id``: ``ix_events_kpi`` starts with ``message_id`` and serves it.

``ix_events_kpi`` (migration 0003) indexes ``events (message_id, type, machine,
bounce, revenue_micros, currency)``; every lookup of events by ``message_id``
(orphan linking, the outcome recomputation, the suppression feed, journeys,
KPIs' mixed-currency revenue) is served by its leading column, on SQLite and
PostgreSQL alike. The single-column index only cost every event insert one more
index entry (and a partitioned database one more index per partition).

The statements use ``IF EXISTS`` / ``IF NOT EXISTS``: on PostgreSQL with
``messages`` and ``events`` partitioned (:mod:`commhistory.store.partition`),
dropping the partitioned index drops it on every partition, and a database
partitioned by this version never had it. The downgrade creates it again
(on a partitioned table, on every partition).

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-05 01:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0020"
down_revision: str | Sequence[str] | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NAME = "ix_events_message_id"


def upgrade() -> None:
    """Apply this revision."""
    op.execute(f"DROP INDEX IF EXISTS {NAME}")


def downgrade() -> None:
    """Revert this revision."""
    op.execute(f"CREATE INDEX IF NOT EXISTS {NAME} ON events (message_id)")
