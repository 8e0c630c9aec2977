"""Masked reads: ``messages.address_masked``, the masked address in the clear.

Adds the nullable ``TEXT`` column ``address_masked`` to ``messages``. Ingest
stores the masked form of each message's address there (``t***@example.com``,
``+81 90-****-5678``, ``U***cdef``; ``NULL`` for channels without a mask), so
a reader without ``read_personal`` sees it without any decryption. Erasure
sets it back to ``NULL``.

Rows stored before this revision keep ``NULL`` until
:func:`commhistory.store.backfill_masks` (``commhistory backfill-masks``)
decrypts their addresses and writes the masks; the migration itself holds no
keys, so it cannot compute them.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25 09:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COMMENT = (
    "The address masked at ingest (first character and domain, country code and "
    "2 + last 4 digits, or first and last 4 characters), in the clear; NULL when the "
    "channel has no mask, before a backfill, and after erasure."
)


def upgrade() -> None:
    """Apply this revision."""
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("address_masked", sa.Text(), nullable=True, comment=_COMMENT)
        )


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_column("address_masked")
