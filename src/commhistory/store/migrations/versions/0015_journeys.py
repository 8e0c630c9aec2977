"""Journeys: definitions, enrollments and the send intents ``due()`` claimed.

Adds ``journey_definitions`` (key, version, the JSON definition; a stored
version is never changed), ``journey_enrollments`` (one row per contact and
triggering record: where the contact stands, and ``wake_at``, when ``due()``
next looks at it; ``UNIQUE (journey_key, trigger_id)`` so a retried trigger
enrolls once; an index on ``(status, wake_at)`` for ``due()``) and
``journey_intents`` (one row per send intent handed out: inserting the key is
the claim; the host's record of the send fills ``recorded_at``, ``outcome``
and ``message_id``). Nothing personal is stored: pseudonymous contact ids,
template keys and plain entry properties.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-04 21:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | Sequence[str] | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "journey_definitions",
        sa.Column("journey_key", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("definition", sa.Text(), nullable=False),
        sa.Column("saved_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("journey_key", "version", name=op.f("pk_journey_definitions")),
        comment=(
            "Journey definitions (migration 0015): each version's JSON form; a stored version "
            "is never changed. Template keys, durations and activity names, never personal data."
        ),
    )
    op.create_table(
        "journey_enrollments",
        sa.Column("enrollment_id", sa.Text(), nullable=False),
        sa.Column("journey_key", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("contact_id", sa.Text(), nullable=False),
        sa.Column("trigger_id", sa.Text(), nullable=False),
        sa.Column("entered_at", sa.BigInteger(), nullable=False),
        sa.Column("entry_properties", sa.Text(), nullable=False),
        sa.Column("step_id", sa.Text(), nullable=True),
        sa.Column("since", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("visits", sa.Text(), nullable=False),
        sa.Column("wake_at", sa.BigInteger(), nullable=True),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("enrollment_id", name=op.f("pk_journey_enrollments")),
        sa.UniqueConstraint(
            "journey_key", "trigger_id", name=op.f("uq_journey_enrollments_journey_key_trigger_id")
        ),
        comment=(
            "Journey enrollments (migration 0015): where each contact stands in a journey "
            "version and when due() next looks at it (wake_at); plain entry properties only. "
            "Erasure deletes a contact's rows."
        ),
    )
    op.create_index(
        op.f("ix_journey_enrollments_status_wake_at"),
        "journey_enrollments",
        ["status", "wake_at"],
        unique=False,
    )
    op.create_index(
        op.f("ix_journey_enrollments_contact_id_journey_key"),
        "journey_enrollments",
        ["contact_id", "journey_key"],
        unique=False,
    )
    op.create_table(
        "journey_intents",
        sa.Column("intent_key", sa.Text(), nullable=False),
        sa.Column("enrollment_id", sa.Text(), nullable=False),
        sa.Column("step_id", sa.Text(), nullable=False),
        sa.Column("issued_at", sa.BigInteger(), nullable=False),
        sa.Column("recorded_at", sa.BigInteger(), nullable=True),
        sa.Column("outcome", sa.Text(), nullable=True),
        sa.Column("message_id", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("intent_key", name=op.f("pk_journey_intents")),
        comment=(
            "Journey send intents claimed by due() (migration 0015): inserting the key is the "
            "claim, so no step is handed out twice; recorded_at/outcome when the host recorded "
            "the send (sent or skipped) and the message it sent."
        ),
    )
    op.create_index(
        op.f("ix_journey_intents_enrollment_id"),
        "journey_intents",
        ["enrollment_id"],
        unique=False,
    )


def downgrade() -> None:
    """Revert this revision."""
    op.drop_index(op.f("ix_journey_intents_enrollment_id"), table_name="journey_intents")
    op.drop_table("journey_intents")
    op.drop_index(
        op.f("ix_journey_enrollments_contact_id_journey_key"), table_name="journey_enrollments"
    )
    op.drop_index(op.f("ix_journey_enrollments_status_wake_at"), table_name="journey_enrollments")
    op.drop_table("journey_enrollments")
    op.drop_table("journey_definitions")
