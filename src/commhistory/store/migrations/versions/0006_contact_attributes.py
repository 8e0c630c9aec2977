"""Contact attributes: ``attribute_definitions`` and ``contact_attributes``.

``attribute_definitions`` holds the host's declared schema (name, type,
personal flag, an enum's allowed values). ``contact_attributes`` holds each
value of each attribute of each contact over ``[valid_from, valid_to)``; plain
values in the typed column of their type, personal ones encrypted in
``value_secret``. Partial indexes on ``(name, value_*)`` over the current rows
(``valid_to IS NULL``) serve filters such as "current tier is gold".

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 17:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_CURRENT = "valid_to IS NULL"
_INDEXED = ("value_text", "value_int", "value_micros", "value_date", "value_ts")


def _index_name(column: str) -> str:
    return f"ix_contact_attributes_current_{column.removeprefix('value_')}"


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "attribute_definitions",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("personal", sa.Boolean(), nullable=False),
        sa.Column("allowed", sa.Text(), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("declared_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_attribute_definitions")),
        comment=(
            "The host's declared contact attributes: type, personal flag, an enum's "
            "allowed values (a JSON array)."
        ),
    )
    op.create_table(
        "contact_attributes",
        sa.Column("contact_id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("valid_from", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("valid_to", sa.BigInteger(), nullable=True),
        sa.Column("value_type", sa.Text(), nullable=False),
        sa.Column("value_text", sa.Text(), nullable=True),
        sa.Column("value_int", sa.BigInteger(), nullable=True),
        sa.Column("value_micros", sa.BigInteger(), nullable=True),
        sa.Column("value_bool", sa.Boolean(), nullable=True),
        sa.Column("value_date", sa.Text(), nullable=True),
        sa.Column("value_ts", sa.BigInteger(), nullable=True),
        sa.Column("value_secret", sa.LargeBinary(), nullable=True),
        sa.Column("recorded_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["contacts.contact_id"],
            name=op.f("fk_contact_attributes_contact_id_contacts"),
        ),
        sa.PrimaryKeyConstraint(
            "contact_id", "name", "valid_from", name=op.f("pk_contact_attributes")
        ),
        comment=(
            "Contact attribute values over [valid_from, valid_to) (valid_to NULL: current). "
            "Plain values in the typed column of their type; personal ones encrypted in "
            "value_secret under the contact's data key."
        ),
    )
    with op.batch_alter_table("contact_attributes", schema=None) as batch_op:
        for column in _INDEXED:
            batch_op.create_index(
                _index_name(column),
                ["name", column],
                unique=False,
                sqlite_where=sa.text(_CURRENT),
                postgresql_where=sa.text(_CURRENT),
            )


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table("contact_attributes", schema=None) as batch_op:
        for column in _INDEXED:
            batch_op.drop_index(
                _index_name(column),
                sqlite_where=sa.text(_CURRENT),
                postgresql_where=sa.text(_CURRENT),
            )
    op.drop_table("contact_attributes")
    op.drop_table("attribute_definitions")
