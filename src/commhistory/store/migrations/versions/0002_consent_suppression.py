"""Consent and privacy: the suppression list; consent evidence kept after an erasure.

Adds the ``suppressions`` table (address-level, keyed by blind index) and two
columns to ``consent_events``: ``evidence_key_id`` (the keyring key whose
``consent-evidence`` subkey encrypts the evidence of an erased contact) and
``retain_until`` (when that evidence is due for purging).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 09:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0002'
down_revision: str | Sequence[str] | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table('suppressions',
    sa.Column('suppression_id', sa.Text(), nullable=False),
    sa.Column('kind', sa.Text(), nullable=False),
    sa.Column('blind_index', sa.LargeBinary(), nullable=False),
    sa.Column('index_key_id', sa.Text(), nullable=False),
    sa.Column('channel', sa.Text(), nullable=False),
    sa.Column('purpose', sa.Text(), nullable=True),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('cause_id', sa.Text(), nullable=True),
    sa.Column('since', sa.BigInteger(), nullable=False),
    sa.Column('lifted_at', sa.BigInteger(), nullable=True),
    sa.Column('lifted_by', sa.Text(), nullable=True),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('suppression_id', name=op.f('pk_suppressions')),
    comment='Address-level suppression: a keyed blind index of the address (never the address), the scope (channel, purpose or NULL for all), reason and cause.'
    )
    with op.batch_alter_table('suppressions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_suppressions_kind_blind_index'), ['kind', 'blind_index'], unique=False)
        batch_op.create_index(batch_op.f('ix_suppressions_channel_since'), ['channel', 'since'], unique=False)

    with op.batch_alter_table('consent_events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('evidence_key_id', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('retain_until', sa.BigInteger(), nullable=True))
        batch_op.create_index(batch_op.f('ix_consent_events_channel_purpose_occurred_at'), ['channel', 'purpose', 'occurred_at'], unique=False)


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table('consent_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_consent_events_channel_purpose_occurred_at'))
        batch_op.drop_column('retain_until')
        batch_op.drop_column('evidence_key_id')

    with op.batch_alter_table('suppressions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_suppressions_channel_since'))
        batch_op.drop_index(batch_op.f('ix_suppressions_kind_blind_index'))

    op.drop_table('suppressions')
