"""Saved segments: definitions, membership snapshots and their contact ids.

Adds ``segment_definitions`` (name, version, the condition tree as canonical
JSON), ``segment_snapshots`` (which segment version was evaluated at which
instant, and when) and ``segment_snapshot_members`` (one row per contact id
of a snapshot, indexed by contact so erasure deletes a contact's rows). Nothing
personal is stored: trees name attributes and hold their plain values, and
snapshots hold pseudonymous contact ids.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04 20:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | Sequence[str] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "segment_definitions",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("definition", sa.Text(), nullable=False),
        sa.Column("saved_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", "version", name=op.f("pk_segment_definitions")),
        comment=(
            "Saved segment definitions (migration 0013): each version's condition tree as "
            "canonical JSON; attribute names, operators and values, never personal data."
        ),
    )
    op.create_table(
        "segment_snapshots",
        sa.Column("snapshot_id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("at", sa.BigInteger(), nullable=False),
        sa.Column("taken_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("snapshot_id", name=op.f("pk_segment_snapshots")),
        comment="Membership snapshots of saved segments (migration 0013).",
    )
    op.create_index(
        op.f("ix_segment_snapshots_name_taken_at"),
        "segment_snapshots",
        ["name", "taken_at"],
        unique=False,
    )
    op.create_table(
        "segment_snapshot_members",
        sa.Column("snapshot_id", sa.Text(), nullable=False),
        sa.Column("contact_id", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["snapshot_id"],
            ["segment_snapshots.snapshot_id"],
            name=op.f("fk_segment_snapshot_members_snapshot_id_segment_snapshots"),
        ),
        sa.PrimaryKeyConstraint(
            "snapshot_id", "contact_id", name=op.f("pk_segment_snapshot_members")
        ),
        comment=(
            "The contact ids of each snapshot (migration 0013); erasure deletes a contact's rows."
        ),
    )
    op.create_index(
        op.f("ix_segment_snapshot_members_contact_id"),
        "segment_snapshot_members",
        ["contact_id"],
        unique=False,
    )


def downgrade() -> None:
    """Revert this revision."""
    op.drop_index(
        op.f("ix_segment_snapshot_members_contact_id"), table_name="segment_snapshot_members"
    )
    op.drop_table("segment_snapshot_members")
    op.drop_index(op.f("ix_segment_snapshots_name_taken_at"), table_name="segment_snapshots")
    op.drop_table("segment_snapshots")
    op.drop_table("segment_definitions")
