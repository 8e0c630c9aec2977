"""Migration 0018: the ``stored_seq`` indexes, added to a database with history, and removed.

Also: an incremental analytics scan reads through the index (SQLite's plan), a
full one does not, and partitioning on PostgreSQL keeps the indexes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from commhistory.store import current_revision, downgrade_to_base, head_revision, upgrade
from commhistory.store._engine import create_engine
from commhistory.store.migrate import _config
from commhistory.store.schema import metadata

TABLES = ("messages", "events", "activities", "campaign_costs")
NAMES = {f"ix_{t}_stored_seq" for t in TABLES}


def _indexes(engine: sa.Engine) -> set[str]:
    inspector = sa.inspect(engine)
    found = {str(ix["name"]) for t in TABLES for ix in inspector.get_indexes(t)}
    return found & NAMES


def test_0018_upgrades_an_existing_database_and_downgrades(migration_url: str) -> None:
    upgrade(migration_url, "0017")
    engine = create_engine(migration_url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO contacts (contact_id, data_key, wrap_key_id, created_at) "
                "VALUES ('c1', NULL, NULL, 0)"
            )
            conn.exec_driver_sql(
                "INSERT INTO events (event_id, contact_id, type, occurred_at, machine, "
                "stored_seq) VALUES ('e1', 'c1', 'opened', 0, false, 7)"
            )
        assert _indexes(engine) == set()
        assert upgrade(engine, "0018") == "0018"
        assert _indexes(engine) == NAMES
        with engine.begin() as conn:
            diffs = compare_metadata(MigrationContext.configure(conn), metadata)
        if current_revision(engine) == head_revision():
            assert diffs == []
        with engine.begin() as conn:
            command.downgrade(_config(conn), "0017")
        assert _indexes(engine) == set()
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT stored_seq FROM events").scalar_one() == 7
    finally:
        downgrade_to_base(engine)
        engine.dispose()


def test_an_incremental_scan_reads_through_the_index_a_full_one_does_not(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'plan.db'}"
    upgrade(url)
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO contacts (contact_id, data_key, wrap_key_id, created_at) "
                "VALUES ('c1', NULL, NULL, 0)"
            )
        from commhistory.store.analytics import _SELECT

        sql, order, ident, seq = _SELECT["events"]
        incremental = f"{sql} AND {seq} >= ? AND {seq} < ? ORDER BY {order}, {ident}"
        full = f"{sql} AND +{seq} < ? ORDER BY {order}, {ident}"
        with engine.connect() as conn:
            plans = [
                " ".join(
                    str(r[-1])
                    for r in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {q}", params).all()
                )
                for q, params in ((incremental, (1, 2)), (full, (2,)))
            ]
        assert "ix_events_stored_seq" in plans[0]
        assert "ix_events_stored_seq" not in plans[1]
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_partitioned_tables_keep_the_indexes(pg_partitioned_url: str) -> None:
    engine = sa.create_engine(pg_partitioned_url, poolclass=sa.NullPool)
    try:
        assert _indexes(engine) == NAMES
    finally:
        engine.dispose()
