"""Host activities: the ``activities`` table and the ``activity_names`` registry.

``activity_names`` holds the activity names the host declared, each with the
JSON array of its property keys that are stored in the clear.

``activities`` holds what contacts did outside messages (a purchase, a page
view): plain ids, name, time, revenue (exact decimal text and ``BIGINT``
millionths, as on ``events``), the declared-plain properties as JSON text
(``plain_properties``), every other property encrypted with the contact's data
key (``properties``), and the message an activity's revenue is attributed to.
Indexed for segment queries by contact, name and time.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 17:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "activity_names",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("plain_keys", sa.Text(), nullable=False),
        sa.Column("declared_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_activity_names")),
        comment=(
            "The activity names the host declared (migration 0007), each with the JSON "
            "array of its property keys stored in the clear."
        ),
    )
    op.create_table(
        "activities",
        sa.Column("activity_id", sa.Text(), nullable=False),
        sa.Column("contact_id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("occurred_at", sa.BigInteger(), nullable=False),
        sa.Column("revenue", sa.Text(), nullable=True),
        sa.Column("revenue_micros", sa.BigInteger(), nullable=True),
        sa.Column("currency", sa.Text(), nullable=True),
        sa.Column("plain_properties", sa.Text(), nullable=True),
        sa.Column("properties", sa.LargeBinary(), nullable=True),
        sa.Column("attributed_message_id", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("activity_id", name=op.f("pk_activities")),
        comment=(
            "What contacts did outside messages (migration 0007): plain_properties holds "
            "the keys declared plain as JSON; properties the others, encrypted."
        ),
    )
    with op.batch_alter_table("activities", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_activities_contact_id_name_occurred_at"),
            ["contact_id", "name", "occurred_at"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_activities_name_occurred_at"), ["name", "occurred_at"], unique=False
        )


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table("activities", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_activities_name_occurred_at"))
        batch_op.drop_index(batch_op.f("ix_activities_contact_id_name_occurred_at"))
    op.drop_table("activities")
    op.drop_table("activity_names")
