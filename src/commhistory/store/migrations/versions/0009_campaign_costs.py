"""Campaign costs: the ``campaign_costs`` table, for cost, ROI and cost per conversion.

One row per cost id: the campaign, optionally one channel and/or one variant,
the period ``[starts_at, ends_at)`` (``BIGINT`` microseconds, UTC), the amount
as exact decimal text and as ``amount_micros`` (millionths, summed in SQL), its
ISO 4217 currency and when it was recorded. Nothing personal; every column is
plain. Index ``(campaign_id, starts_at)``.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04 17:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COMMENT = (
    "Campaign costs (migration 0009): money spent on a campaign, or on one channel "
    "or variant of it, over [starts_at, ends_at); all plain, nothing personal."
)


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "campaign_costs",
        sa.Column("cost_id", sa.Text(), nullable=False),
        sa.Column("campaign_id", sa.Text(), nullable=False),
        sa.Column("channel", sa.Text(), nullable=True),
        sa.Column("variant", sa.Text(), nullable=True),
        sa.Column("starts_at", sa.BigInteger(), nullable=False),
        sa.Column("ends_at", sa.BigInteger(), nullable=False),
        sa.Column("amount", sa.Text(), nullable=False),
        sa.Column("amount_micros", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.Text(), nullable=False),
        sa.Column("recorded_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("cost_id", name=op.f("pk_campaign_costs")),
        comment=_COMMENT,
    )
    with op.batch_alter_table("campaign_costs", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_campaign_costs_campaign_id_starts_at"),
            ["campaign_id", "starts_at"],
            unique=False,
        )


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table("campaign_costs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_campaign_costs_campaign_id_starts_at"))
    op.drop_table("campaign_costs")
