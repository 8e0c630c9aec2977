"""Initial schema: contacts, addresses, messages, events, consent events, dead letters, keys.

Timestamps are BIGINT microseconds since the Unix epoch (UTC); see docs/storage.md.

Revision ID: 0001
Revises: 
Create Date: 2026-11-23 06:54:43.196383
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0001'
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table('contacts',
    sa.Column('contact_id', sa.Text(), nullable=False),
    sa.Column('data_key', sa.LargeBinary(), nullable=True),
    sa.Column('wrap_key_id', sa.Text(), nullable=True),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.Column('erased_at', sa.BigInteger(), nullable=True),
    sa.PrimaryKeyConstraint('contact_id', name=op.f('pk_contacts')),
    comment='One row per contact: its data key, wrapped under a keyring key.'
    )
    with op.batch_alter_table('contacts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_contacts_wrap_key_id'), ['wrap_key_id'], unique=False)

    op.create_table('dead_letters',
    sa.Column('dead_letter_id', sa.Text(), nullable=False),
    sa.Column('fingerprint', sa.LargeBinary(), nullable=False),
    sa.Column('received_at', sa.BigInteger(), nullable=False),
    sa.Column('source', sa.Text(), nullable=False),
    sa.Column('line', sa.Integer(), nullable=True),
    sa.Column('field', sa.Text(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('key_id', sa.Text(), nullable=False),
    sa.Column('raw', sa.LargeBinary(), nullable=False),
    sa.PrimaryKeyConstraint('dead_letter_id', name=op.f('pk_dead_letters')),
    sa.UniqueConstraint('fingerprint', name=op.f('uq_dead_letters_fingerprint')),
    comment='Rejected input: raw text encrypted under the dead-letter subkey of key_id.'
    )
    with op.batch_alter_table('dead_letters', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_dead_letters_received_at'), ['received_at'], unique=False)

    op.create_table('events',
    sa.Column('event_id', sa.Text(), nullable=False),
    sa.Column('message_id', sa.Text(), nullable=True),
    sa.Column('contact_id', sa.Text(), nullable=True),
    sa.Column('provider', sa.Text(), nullable=True),
    sa.Column('provider_message_id', sa.Text(), nullable=True),
    sa.Column('provider_event_id', sa.Text(), nullable=True),
    sa.Column('type', sa.Text(), nullable=False),
    sa.Column('occurred_at', sa.BigInteger(), nullable=False),
    sa.Column('status_code', sa.Text(), nullable=True),
    sa.Column('bounce', sa.Text(), nullable=True),
    sa.Column('machine', sa.Boolean(), nullable=False),
    sa.Column('revenue', sa.Text(), nullable=True),
    sa.Column('revenue_micros', sa.BigInteger(), nullable=True),
    sa.Column('currency', sa.Text(), nullable=True),
    sa.Column('orphan_key_id', sa.Text(), nullable=True),
    sa.Column('address', sa.LargeBinary(), nullable=True),
    sa.Column('reason', sa.LargeBinary(), nullable=True),
    sa.Column('url', sa.LargeBinary(), nullable=True),
    sa.Column('user_agent', sa.LargeBinary(), nullable=True),
    sa.Column('ip', sa.LargeBinary(), nullable=True),
    sa.Column('metadata', sa.LargeBinary(), nullable=True),
    sa.PrimaryKeyConstraint('event_id', name=op.f('pk_events')),
    sa.UniqueConstraint('provider', 'provider_event_id', name=op.f('uq_events_provider_provider_event_id')),
    comment="Events. contact_id is NULL while the message is unknown (an orphan, encrypted under the keyring's orphan subkey of orphan_key_id)."
    )
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_events_contact_id_occurred_at'), ['contact_id', 'occurred_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_events_message_id'), ['message_id'], unique=False)
        batch_op.create_index('ix_events_orphans', ['provider', 'provider_message_id', 'message_id'], unique=False, sqlite_where=sa.text('contact_id IS NULL'), postgresql_where=sa.text('contact_id IS NULL'))

    op.create_table('key_metadata',
    sa.Column('key_id', sa.Text(), nullable=False),
    sa.Column('first_seen_at', sa.BigInteger(), nullable=False),
    sa.Column('updated_at', sa.BigInteger(), nullable=False),
    sa.Column('is_current', sa.Boolean(), nullable=False),
    sa.Column('is_index', sa.Boolean(), nullable=False),
    sa.PrimaryKeyConstraint('key_id', name=op.f('pk_key_metadata')),
    comment='Keyring key ids this database has seen (ids only, never key material).'
    )
    op.create_table('addresses',
    sa.Column('kind', sa.Text(), nullable=False),
    sa.Column('blind_index', sa.LargeBinary(), nullable=False),
    sa.Column('contact_id', sa.Text(), nullable=False),
    sa.Column('index_key_id', sa.Text(), nullable=False),
    sa.Column('address', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['contact_id'], ['contacts.contact_id'], name=op.f('fk_addresses_contact_id_contacts')),
    sa.PrimaryKeyConstraint('kind', 'blind_index', 'contact_id', name=op.f('pk_addresses')),
    comment="Blind indexes of contacts' addresses: lookups by (kind, blind_index)."
    )
    with op.batch_alter_table('addresses', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_addresses_contact_id'), ['contact_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_addresses_index_key_id'), ['index_key_id'], unique=False)

    op.create_table('consent_events',
    sa.Column('consent_id', sa.Text(), nullable=False),
    sa.Column('contact_id', sa.Text(), nullable=False),
    sa.Column('channel', sa.Text(), nullable=False),
    sa.Column('purpose', sa.Text(), nullable=False),
    sa.Column('action', sa.Text(), nullable=False),
    sa.Column('method', sa.Text(), nullable=False),
    sa.Column('occurred_at', sa.BigInteger(), nullable=False),
    sa.Column('recorded_at', sa.BigInteger(), nullable=True),
    sa.Column('notice_version', sa.Text(), nullable=True),
    sa.Column('notice_hash', sa.Text(), nullable=True),
    sa.Column('actor', sa.Text(), nullable=True),
    sa.Column('source', sa.LargeBinary(), nullable=True),
    sa.Column('ip', sa.LargeBinary(), nullable=True),
    sa.Column('user_agent', sa.LargeBinary(), nullable=True),
    sa.Column('metadata', sa.LargeBinary(), nullable=True),
    sa.ForeignKeyConstraint(['contact_id'], ['contacts.contact_id'], name=op.f('fk_consent_events_contact_id_contacts')),
    sa.PrimaryKeyConstraint('consent_id', name=op.f('pk_consent_events')),
    comment='Append-only consent ledger; source, ip, user agent and metadata encrypted.'
    )
    with op.batch_alter_table('consent_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_consent_events_contact_id_occurred_at'), ['contact_id', 'occurred_at'], unique=False)

    op.create_table('messages',
    sa.Column('message_id', sa.Text(), nullable=False),
    sa.Column('contact_id', sa.Text(), nullable=False),
    sa.Column('channel', sa.Text(), nullable=False),
    sa.Column('direction', sa.Text(), nullable=False),
    sa.Column('purpose', sa.Text(), nullable=False),
    sa.Column('campaign_id', sa.Text(), nullable=True),
    sa.Column('variant', sa.Text(), nullable=True),
    sa.Column('provider', sa.Text(), nullable=True),
    sa.Column('provider_message_id', sa.Text(), nullable=True),
    sa.Column('sent_at', sa.BigInteger(), nullable=False),
    sa.Column('address', sa.LargeBinary(), nullable=False),
    sa.Column('subject', sa.LargeBinary(), nullable=True),
    sa.Column('body', sa.LargeBinary(), nullable=True),
    sa.Column('metadata', sa.LargeBinary(), nullable=True),
    sa.ForeignKeyConstraint(['contact_id'], ['contacts.contact_id'], name=op.f('fk_messages_contact_id_contacts')),
    sa.PrimaryKeyConstraint('message_id', name=op.f('pk_messages')),
    sa.UniqueConstraint('provider', 'provider_message_id', name=op.f('uq_messages_provider_provider_message_id')),
    comment='Messages; address, subject, body and metadata encrypted.'
    )
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_messages_contact_id_sent_at'), ['contact_id', 'sent_at'], unique=False)



def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_messages_contact_id_sent_at'))

    op.drop_table('messages')
    with op.batch_alter_table('consent_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_consent_events_contact_id_occurred_at'))

    op.drop_table('consent_events')
    with op.batch_alter_table('addresses', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_addresses_index_key_id'))
        batch_op.drop_index(batch_op.f('ix_addresses_contact_id'))

    op.drop_table('addresses')
    op.drop_table('key_metadata')
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_index('ix_events_orphans', sqlite_where=sa.text('contact_id IS NULL'), postgresql_where=sa.text('contact_id IS NULL'))
        batch_op.drop_index(batch_op.f('ix_events_message_id'))
        batch_op.drop_index(batch_op.f('ix_events_contact_id_occurred_at'))

    op.drop_table('events')
    with op.batch_alter_table('dead_letters', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_dead_letters_received_at'))

    op.drop_table('dead_letters')
    with op.batch_alter_table('contacts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_contacts_wrap_key_id'))

    op.drop_table('contacts')
