"""Monthly partitions (PostgreSQL, opt-in): the key-claiming trigger functions.

Adds nothing to SQLite and changes no table. On PostgreSQL it creates the
PL/pgSQL functions that :mod:`commhistory.store.partition` attaches as
triggers when ``commhistory partitions enable`` converts ``messages`` and
``events`` to monthly partitions:

* ``commhistory_claim_{message,event}_key()`` (``BEFORE INSERT``): claim the
  row's id and provider pair in ``message_keys`` / ``event_keys`` with
  ``ON CONFLICT DO NOTHING``; skip the row (``RETURN NULL``) when another row
  holds either, as ``ON CONFLICT DO NOTHING`` would on an unpartitioned table.
* ``commhistory_release_{message,event}_key()`` (``AFTER DELETE``): delete the
  row's keys, unless ``commhistory.keep_keys`` is ``on`` (rows moved between
  partitions keep theirs).
* ``commhistory_keep_{message,event}_key()`` (``BEFORE UPDATE OF`` the keys):
  refuse to change an id, a provider pair or the partition timestamp.

The key tables are created by the conversion, not here; the functions name
them unqualified, so they resolve in the schema of the session's
``search_path``. The downgrade drops the functions; it refuses while the
tables are partitioned (the triggers depend on the functions).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04 19:45:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLES = (
    # (singular, key table, id column, provider id column, partition key)
    ("message", "message_keys", "message_id", "provider_message_id", "sent_at"),
    ("event", "event_keys", "event_id", "provider_event_id", "occurred_at"),
)


def _functions(singular: str, keys: str, id_col: str, pid_col: str, ts: str) -> list[str]:
    return [
        f"""CREATE OR REPLACE FUNCTION commhistory_claim_{singular}_key() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO {keys} ({id_col}, provider, {pid_col}, {ts})
    VALUES (NEW.{id_col}, NEW.provider, NEW.{pid_col}, NEW.{ts})
    ON CONFLICT DO NOTHING;
    IF FOUND THEN
        RETURN NEW;
    END IF;
    RETURN NULL;
END
$$""",
        f"""CREATE OR REPLACE FUNCTION commhistory_release_{singular}_key() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF coalesce(current_setting('commhistory.keep_keys', true), '') <> 'on' THEN
        DELETE FROM {keys} WHERE {id_col} = OLD.{id_col};
    END IF;
    RETURN NULL;
END
$$""",
        f"""CREATE OR REPLACE FUNCTION commhistory_keep_{singular}_key() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.{id_col} IS DISTINCT FROM OLD.{id_col}
       OR NEW.provider IS DISTINCT FROM OLD.provider
       OR NEW.{pid_col} IS DISTINCT FROM OLD.{pid_col}
       OR NEW.{ts} IS DISTINCT FROM OLD.{ts} THEN
        RAISE EXCEPTION 'the keys of a partitioned {singular} row never change'
            USING ERRCODE = '23514';
    END IF;
    RETURN NEW;
END
$$""",
    ]


def upgrade() -> None:
    """Apply this revision (PostgreSQL only)."""
    if op.get_context().dialect.name != "postgresql":
        return
    for spec in _TABLES:
        for statement in _functions(*spec):
            op.execute(statement)


def downgrade() -> None:
    """Revert this revision (PostgreSQL only; refused while the tables are partitioned)."""
    if op.get_context().dialect.name != "postgresql":
        return
    for singular, *_ in _TABLES:
        for kind in ("claim", "release", "keep"):
            # RESTRICT: fails (and the downgrade with it) while a trigger uses the function.
            op.execute(f"DROP FUNCTION IF EXISTS commhistory_{kind}_{singular}_key() RESTRICT")
