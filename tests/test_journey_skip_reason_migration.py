"""Migration 0017: ``journey_intents.reason`` added to a database with intents, and removed."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from commhistory.store import current_revision, downgrade_to_base, head_revision, upgrade
from commhistory.store._engine import create_engine
from commhistory.store.migrate import _config
from commhistory.store.schema import metadata


def _columns(engine: sa.Engine) -> set[str]:
    return {c["name"] for c in sa.inspect(engine).get_columns("journey_intents")}


def test_0017_adds_the_skip_reason_and_downgrades(migration_url: str) -> None:
    upgrade(migration_url, "0016")
    engine = create_engine(migration_url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO journey_intents (intent_key, enrollment_id, step_id, issued_at, "
                "recorded_at, outcome, message_id) VALUES ('jrn_1', 'e1', 'hello', 0, 5, "
                "'sent', 'm1')"
            )
        assert "reason" not in _columns(engine)
        assert upgrade(engine, "0017") == "0017"
        assert "reason" in _columns(engine)
        with engine.begin() as conn:
            kept = conn.exec_driver_sql(
                "SELECT outcome, message_id, reason FROM journey_intents"
            ).one()
            assert tuple(kept) == ("sent", "m1", None)
            conn.exec_driver_sql(
                "INSERT INTO journey_intents (intent_key, enrollment_id, step_id, issued_at, "
                "recorded_at, outcome, reason) VALUES ('jrn_2', 'e1', 'tips', 0, 5, "
                "'skipped', 'no_consent')"
            )
            diffs = compare_metadata(MigrationContext.configure(conn), metadata)
        if current_revision(engine) == head_revision():
            assert diffs == []
        with engine.begin() as conn:
            command.downgrade(_config(conn), "0016")
        assert "reason" not in _columns(engine)
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT COUNT(*) FROM journey_intents").scalar_one() == 2
    finally:
        downgrade_to_base(engine)
        engine.dispose()
