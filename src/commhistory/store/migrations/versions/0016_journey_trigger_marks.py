"""Journey trigger marks: how far each journey's triggers have read the stored history.

Adds ``journey_trigger_marks``: one row per journey key and source
(``activity``, ``event``, ``segment``, ``date``, and the behaviour feeds that
wake enrollments under the reserved key ``*``). ``watermark`` is the
stored-at sequence bound (``stored_seq``, migration 0014) every row read
before was below, ``until`` the latest instant read (microseconds), and
``snapshot_id`` the last segment snapshot consumed. A run of
``commhistory.journeys.triggers.run_triggers`` reads after the mark and
moves it when it has enrolled what it read; enrollments are idempotent per
triggering record, so a run repeated after a crash enrolls nobody twice.
Nothing personal is stored.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-04 22:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | Sequence[str] | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "journey_trigger_marks",
        sa.Column("journey_key", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("watermark", sa.BigInteger(), nullable=False),
        sa.Column("until", sa.BigInteger(), nullable=True),
        sa.Column("snapshot_id", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("journey_key", "source", name=op.f("pk_journey_trigger_marks")),
        comment=(
            "How far each journey's triggers read the stored history (migration 0016): the "
            "stored_seq bound, the latest instant and the last segment snapshot consumed, "
            "per journey key and source ('*': the feeds that wake enrollments)."
        ),
    )


def downgrade() -> None:
    """Revert this revision."""
    op.drop_table("journey_trigger_marks")
