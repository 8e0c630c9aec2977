"""Migration 0019: the covering index of the consent ledger's latest state, added and removed."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from commhistory.store import current_revision, downgrade_to_base, head_revision, upgrade
from commhistory.store._engine import create_engine
from commhistory.store.migrate import _config
from commhistory.store.schema import metadata

NAME = "ix_consent_events_channel_purpose_contact_id_occurred_at_action"


def _indexes(engine: sa.Engine) -> set[str]:
    return {str(i["name"]) for i in sa.inspect(engine).get_indexes("consent_events")}


def test_0019_upgrades_an_existing_database_and_downgrades(migration_url: str) -> None:
    upgrade(migration_url, "0018")
    engine = create_engine(migration_url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO contacts (contact_id, data_key, wrap_key_id, created_at) "
                "VALUES ('c1', NULL, NULL, 0)"
            )
            conn.exec_driver_sql(
                "INSERT INTO consent_events (consent_id, contact_id, channel, purpose, action, "
                "method, occurred_at) VALUES ('k1', 'c1', 'email', 'marketing', 'grant', "
                "'web_form', 5)"
            )
        assert NAME not in _indexes(engine)
        assert upgrade(engine, "0019") == "0019"
        assert NAME in _indexes(engine)
        with engine.begin() as conn:
            diffs = compare_metadata(MigrationContext.configure(conn), metadata)
        if current_revision(engine) == head_revision():
            assert diffs == []
        with engine.begin() as conn:
            command.downgrade(_config(conn), "0018")
        assert NAME not in _indexes(engine)
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT COUNT(*) FROM consent_events").scalar_one() == 1
    finally:
        downgrade_to_base(engine)
        engine.dispose()
