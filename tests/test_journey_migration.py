"""Migration 0015: the journey tables added to a database with history, and removed."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from commhistory.store import current_revision, downgrade_to_base, head_revision, upgrade
from commhistory.store._engine import create_engine
from commhistory.store.migrate import _config
from commhistory.store.schema import metadata

NEW = {"journey_definitions", "journey_enrollments", "journey_intents"}


def test_0015_upgrades_an_existing_database_and_downgrades(migration_url: str) -> None:
    upgrade(migration_url, "0014")
    engine = create_engine(migration_url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO contacts (contact_id, data_key, wrap_key_id, created_at) "
                "VALUES ('c1', NULL, NULL, 0)"
            )
        assert NEW.isdisjoint(sa.inspect(engine).get_table_names())
        assert upgrade(engine, "0015") == "0015"
        assert set(sa.inspect(engine).get_table_names()) >= NEW
        row = (
            "INSERT INTO journey_enrollments (enrollment_id, journey_key, version, contact_id, "
            "trigger_id, entered_at, entry_properties, step_id, since, status, visits, wake_at, "
            "revision) VALUES ('{id}', 'welcome', 1, 'c1', 't1', 0, '{{}}', 'hello', 0, "
            "'active', '{{}}', 0, 0)"
        )
        with engine.begin() as conn:
            conn.exec_driver_sql(row.format(id="e1"))
            diffs = compare_metadata(MigrationContext.configure(conn), metadata)
        with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
            conn.exec_driver_sql(row.format(id="e2"))  # the same trigger enrolls once
        if current_revision(engine) == head_revision():
            assert diffs == []
        with engine.begin() as conn:
            command.downgrade(_config(conn), "0014")
        assert NEW.isdisjoint(sa.inspect(engine).get_table_names())
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT COUNT(*) FROM contacts").scalar_one() == 1
    finally:
        downgrade_to_base(engine)
        engine.dispose()
