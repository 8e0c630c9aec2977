"""Per-message outcomes: KPIs read ``messages`` instead of grouping ``events``.

Adds four columns to ``messages``:

* ``outcomes`` (``INTEGER NOT NULL DEFAULT 0``): bits folded from the message's
  events (:class:`commhistory.store.kpi.Outcome`): rejected, bounced, hard
  bounce, failed; opened, clicked, converted, unsubscribed, complained, each
  once for any such event and once for one not flagged ``machine``; and
  "conversions in several currencies".
* ``conversion_currency``, ``conversion_revenue_micros`` and
  ``human_revenue_micros``: the currency and the sums of the message's
  conversion revenue (all, and not flagged ``machine``), when its conversions
  with revenue are in one currency.

The upgrade backfills them from the events already stored, in SQL (no key is
needed: every column read is plain), with the same fold that ingest runs
(:func:`commhistory.store.kpi.refresh_outcomes`); this file keeps its own copy
of that text so that it never changes with the library. The downgrade drops
the columns; nothing else is lost.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 17:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OUTCOMES_COMMENT = (
    "Bits folded from the message's events (commhistory.store.kpi.Outcome): 1 rejected, "
    "2 bounced, 4 hard bounce, 8 failed, 16 opened, 32 clicked, 64 converted, "
    "128 unsubscribed, 256 complained, the same five reactions by a non-machine event "
    "512 to 8192, 16384 conversions in several currencies."
)
_CURRENCY_COMMENT = (
    "The currency of the message's conversions with revenue, when they have one; "
    "NULL without any, or with several (outcomes bit 16384)."
)
_REVENUE_COMMENT = (
    "Sum of the revenue micros of the message's conversions in conversion_currency "
    "(machine ones included)."
)
_HUMAN_REVENUE_COMMENT = (
    "Sum of the revenue micros of the message's conversions not flagged machine, "
    "in conversion_currency."
)

# (bit, event type, extra condition): Outcome at revision 0008.
_FLAGS = (
    (1, "rejected", ""),
    (2, "bounced", ""),
    (4, "bounced", " AND bounce = 'hard'"),
    (8, "failed", ""),
    (16, "opened", ""),
    (32, "clicked", ""),
    (64, "converted", ""),
    (128, "unsubscribed", ""),
    (256, "complained", ""),
    (512, "opened", " AND NOT machine"),
    (1024, "clicked", " AND NOT machine"),
    (2048, "converted", " AND NOT machine"),
    (4096, "unsubscribed", " AND NOT machine"),
    (8192, "complained", " AND NOT machine"),
)
_MIXED = 16384


def _backfill_sql() -> str:
    flags = " | ".join(
        f"MAX(CASE WHEN type = '{kind}'{extra} THEN {bit} ELSE 0 END)"
        for bit, kind, extra in _FLAGS
    )
    money = "type = 'converted' AND revenue_micros IS NOT NULL AND currency IS NOT NULL"
    cur = f"(CASE WHEN {money} THEN currency END)"
    one = f"MIN{cur} = MAX{cur}"
    mixed = f"CASE WHEN MIN{cur} <> MAX{cur} THEN {_MIXED} ELSE 0 END"
    select = (
        f"COALESCE({flags} | {mixed}, 0), "
        f"CASE WHEN {one} THEN MIN{cur} END, "
        f"CASE WHEN {one} THEN SUM(CASE WHEN {money} THEN revenue_micros END) END, "
        f"CASE WHEN {one} THEN SUM(CASE WHEN {money} AND NOT machine "
        "THEN revenue_micros END) END"
    )
    return (
        "UPDATE messages SET (outcomes, conversion_currency, conversion_revenue_micros, "
        f"human_revenue_micros) = (SELECT {select} FROM events "
        "WHERE events.message_id = messages.message_id) "
        "WHERE EXISTS (SELECT 1 FROM events WHERE events.message_id = messages.message_id)"
    )


def upgrade() -> None:
    """Apply this revision: add the columns, then fold the stored events into them."""
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "outcomes",
                sa.Integer(),
                nullable=False,
                server_default=sa.text("0"),
                comment=_OUTCOMES_COMMENT,
            )
        )
        batch_op.add_column(
            sa.Column("conversion_currency", sa.Text(), nullable=True, comment=_CURRENCY_COMMENT)
        )
        batch_op.add_column(
            sa.Column(
                "conversion_revenue_micros",
                sa.BigInteger(),
                nullable=True,
                comment=_REVENUE_COMMENT,
            )
        )
        batch_op.add_column(
            sa.Column(
                "human_revenue_micros",
                sa.BigInteger(),
                nullable=True,
                comment=_HUMAN_REVENUE_COMMENT,
            )
        )
    op.execute(_backfill_sql())


def downgrade() -> None:
    """Revert this revision: drop the columns (they are derived from ``events``)."""
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_column("human_revenue_micros")
        batch_op.drop_column("conversion_revenue_micros")
        batch_op.drop_column("conversion_currency")
        batch_op.drop_column("outcomes")
