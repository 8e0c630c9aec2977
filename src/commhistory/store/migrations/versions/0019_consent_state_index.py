"""Send planning and segments: a covering index for the consent ledger's latest state.

Adds ``ix_consent_events_channel_purpose_contact_id_occurred_at_action`` on
``consent_events (channel, purpose, contact_id, occurred_at, action)``: every
column the latest-state read of one channel and purpose uses, in contact
order, so the database groups the ledger per contact from the index alone
(no sort, no visit of the rows and their encrypted evidence). The send
screen of ``plan_send`` and the segment conditions ``consent`` and
``suppressed`` read it.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-04 22:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0019"
down_revision: str | Sequence[str] | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NAME = "ix_consent_events_channel_purpose_contact_id_occurred_at_action"
_COLUMNS = ["channel", "purpose", "contact_id", "occurred_at", "action"]


def upgrade() -> None:
    """Apply this revision."""
    with op.batch_alter_table("consent_events", schema=None) as batch_op:
        batch_op.create_index(NAME, _COLUMNS, unique=False)


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table("consent_events", schema=None) as batch_op:
        batch_op.drop_index(NAME)
