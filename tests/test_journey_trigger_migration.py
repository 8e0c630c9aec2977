"""Migration 0016: the journey trigger marks added to a database with journeys, and removed."""

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

NEW = "journey_trigger_marks"


def test_0016_upgrades_an_existing_database_and_downgrades(migration_url: str) -> None:
    upgrade(migration_url, "0015")
    engine = create_engine(migration_url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO journey_definitions (journey_key, version, definition, saved_at) "
                "VALUES ('welcome', 1, '{}', 0)"
            )
        assert NEW not in sa.inspect(engine).get_table_names()
        assert upgrade(engine, "0016") == "0016"
        assert NEW in sa.inspect(engine).get_table_names()
        row = (
            "INSERT INTO journey_trigger_marks (journey_key, source, watermark, until, "
            "snapshot_id, updated_at) VALUES ('welcome', 'activity', 7, 0, NULL, 0)"
        )
        with engine.begin() as conn:
            conn.exec_driver_sql(row)
            diffs = compare_metadata(MigrationContext.configure(conn), metadata)
        with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
            conn.exec_driver_sql(row)  # one mark per journey and source
        if current_revision(engine) == head_revision():
            assert diffs == []
        with engine.begin() as conn:
            command.downgrade(_config(conn), "0015")
        assert NEW not in sa.inspect(engine).get_table_names()
        with engine.connect() as conn:
            count = conn.exec_driver_sql("SELECT COUNT(*) FROM journey_definitions")
            assert count.scalar_one() == 1
    finally:
        downgrade_to_base(engine)
        engine.dispose()
