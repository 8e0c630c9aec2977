"""The stored-at sequence: ``stored_seq`` on the tables the analytics export appends.

Adds ``stored_seq BIGINT NOT NULL DEFAULT 0`` to ``messages``, ``events``,
``activities`` and ``campaign_costs``: when the row was stored (or, for an
orphan event, linked to its message), so the analytics export's watermark
follows the order rows were *stored* in, not their own times, and a row stored
late with an old time is still exported by the next run.

* PostgreSQL: the column defaults to the writing transaction's id
  (``pg_current_xact_id()``, 64 bits, never wraps). The export reads only
  rows of transactions older than every transaction still running
  (``pg_snapshot_xmin(pg_current_snapshot())``), so a row committed after a run
  has an id at or above that run's bound.
* SQLite: writers are serialized, so a counter is enough: the one-row table
  ``stored_seq`` holds the last value taken; each insert into one of the four
  tables takes the next value, inside the writing transaction.

Rows stored before this revision get 0 (backfilled by the column default: an
instant change on both databases): they were stored before any later row.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-04 19:40:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | Sequence[str] | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("messages", "events", "activities", "campaign_costs")
_COMMENT = (
    "The stored-at sequence (migration 0014): when the row was stored or last became "
    "exportable, for the analytics export's watermark. SQLite: the stored_seq counter, "
    "taken once per insert; PostgreSQL: the writing transaction's id. 0 before 0014."
)
_XID = "(pg_current_xact_id()::text::bigint)"


def upgrade() -> None:
    """Apply this revision."""
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(
                sa.Column(
                    "stored_seq", sa.BigInteger(), nullable=False, server_default="0",
                    comment=_COMMENT,
                )
            )  # fmt: skip
    op.create_table(
        "stored_seq",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stored_seq")),
        comment=(
            "The last stored-at sequence value taken on SQLite (one row, id 1); inserts "
            "into messages, events, activities and campaign_costs take the next one."
        ),
    )
    op.execute("INSERT INTO stored_seq (id, value) VALUES (1, 0)")
    if op.get_context().dialect.name == "postgresql":
        for table in TABLES:
            op.execute(f"ALTER TABLE {table} ALTER COLUMN stored_seq SET DEFAULT {_XID}")


def downgrade() -> None:
    """Revert this revision."""
    op.drop_table("stored_seq")
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("stored_seq")
