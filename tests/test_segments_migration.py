"""Migration 0013: the saved-segment tables added to a database with history, and removed."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from commhistory.store import current_revision, downgrade_to_base, head_revision, upgrade
from commhistory.store._engine import create_engine
from commhistory.store.migrate import _config
from commhistory.store.schema import metadata

NEW = {"segment_definitions", "segment_snapshots", "segment_snapshot_members"}


def test_0013_upgrades_an_existing_database_and_downgrades(migration_url: str) -> None:
    upgrade(migration_url, "0012")
    engine = create_engine(migration_url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO contacts (contact_id, data_key, wrap_key_id, created_at) "
                "VALUES ('c1', NULL, NULL, 0)"
            )
        assert NEW.isdisjoint(sa.inspect(engine).get_table_names())
        assert upgrade(engine, "0013") == "0013"
        assert set(sa.inspect(engine).get_table_names()) >= NEW
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO segment_snapshots (snapshot_id, name, version, at, taken_at) "
                "VALUES ('s1', 'vip', 1, 0, 0)"
            )
            conn.exec_driver_sql(
                "INSERT INTO segment_snapshot_members (snapshot_id, contact_id) "
                "VALUES ('s1', 'c1')"
            )
            diffs = compare_metadata(MigrationContext.configure(conn), metadata)
        if current_revision(engine) == head_revision():
            assert diffs == []
        with engine.begin() as conn:
            cfg = _config(conn)
            command.downgrade(cfg, "0012")
        assert NEW.isdisjoint(sa.inspect(engine).get_table_names())
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT COUNT(*) FROM contacts").scalar_one() == 1
    finally:
        downgrade_to_base(engine)
        engine.dispose()
