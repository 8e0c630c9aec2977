"""KPI engine: a covering index for the per-message pass over events.

Adds ``ix_events_kpi`` on ``events (message_id, type, machine, bounce,
revenue_micros, currency)``: every column the KPI query reads from events, in
``message_id`` order, so the database folds events per message from the index
alone (an index-only scan on PostgreSQL), without sorting or visiting rows.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 12:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = ["message_id", "type", "machine", "bounce", "revenue_micros", "currency"]


def upgrade() -> None:
    """Apply this revision."""
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index("ix_events_kpi", _COLUMNS, unique=False)


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("ix_events_kpi")
