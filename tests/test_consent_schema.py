"""Migration 0002 (suppressions, consent evidence columns) matches the schema and reverts."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from commhistory.store import current_revision, head_revision, upgrade
from commhistory.store._engine import create_engine
from commhistory.store.migrate import _config
from commhistory.store.schema import metadata


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'migrate.db'}"
    pg: str = request.getfixturevalue("pg_url")
    return pg


def test_head_matches_metadata_and_0002_downgrades_to_0001(url: str) -> None:
    engine = create_engine(url)
    try:
        upgrade(engine)
        assert current_revision(engine) == head_revision()
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), metadata) == []
        assert "suppressions" in sa.inspect(engine).get_table_names()
        columns = {c["name"] for c in sa.inspect(engine).get_columns("consent_events")}
        assert {"evidence_key_id", "retain_until"} <= columns

        with engine.connect() as conn:
            command.downgrade(_config(conn), "0001")
            conn.commit()
        inspector = sa.inspect(engine)
        assert "suppressions" not in inspector.get_table_names()
        columns = {c["name"] for c in inspector.get_columns("consent_events")}
        assert "retain_until" not in columns
        assert current_revision(engine) == "0001"

        upgrade(engine)  # and up again
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()
