"""Journeys: the reason a send intent was skipped by send planning.

Adds ``journey_intents.reason`` (nullable text): when ``due()`` skips a step
because send planning refused it (``no_consent``, ``suppressed``, ``erased``,
``missing_address``, or ``frequency_cap``/``quiet_hours`` under
``when_blocked: skip``), the intent is recorded as ``skipped`` with that
reason. A reason code, never personal data.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-04 22:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | Sequence[str] | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision."""
    with op.batch_alter_table("journey_intents") as batch:
        batch.add_column(sa.Column("reason", sa.Text(), nullable=True))


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table("journey_intents") as batch:
        batch.drop_column("reason")
