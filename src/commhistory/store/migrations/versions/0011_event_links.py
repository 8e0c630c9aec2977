"""Per-link clicks: ``events.link``, the clicked URL's label in the clear.

Adds the nullable ``TEXT`` column ``link`` to ``events``. Ingest stores there
the label of each click's URL (:func:`commhistory.normalize.link.link_label`:
scheme, host and path, identifier-like path segments masked as ``*``, no query
string and no fragment), so the report counts clicks per link with a plain
``GROUP BY`` and without decrypting ``events.url``. Erasure sets it back to
``NULL``.

Rows stored before this revision keep ``NULL`` (their clicks still count in
the KPIs, under no link): the migration holds no keys, so it cannot decrypt
their URLs. A backfill would decrypt ``events.url`` per contact the way
``backfill-masks`` does for ``messages.address_masked``; there is none yet.

Revision ID: 0011
Revises: 0009
Create Date: 2026-12-04 18:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COMMENT = (
    "The clicked URL's label (scheme, host, path with identifier-like segments masked; "
    "no query or fragment), in the clear; NULL for other events, before migration 0011, "
    "and after erasure."
)


def upgrade() -> None:
    """Apply this revision."""
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("link", sa.Text(), nullable=True, comment=_COMMENT))


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_column("link")
