"""Migration 0020: ``ix_events_message_id`` dropped (``ix_events_kpi`` serves it), and back.

On SQLite, PostgreSQL and partitioned PostgreSQL; and every query that looks
events up by ``message_id`` still reads through an index.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from commhistory.store import (
    current_revision,
    downgrade_to_base,
    head_revision,
    partition,
    upgrade,
)
from commhistory.store._engine import create_engine
from commhistory.store.kpi import refresh_outcomes_sql
from commhistory.store.migrate import _config
from commhistory.store.schema import metadata
from tests.conftest import pg_variant_url

NAME = "ix_events_message_id"


def _message_id_indexes(engine: sa.Engine) -> int:
    """Indexes on ``events (message_id)`` alone, partitions' included."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            return sum(
                1
                for (name,) in conn.exec_driver_sql(
                    "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'events'"
                )
                if [r[2] for r in conn.exec_driver_sql(f"PRAGMA index_info('{name}')")]
                == ["message_id"]
            )
        return int(
            conn.exec_driver_sql(
                "SELECT COUNT(*) FROM pg_indexes WHERE schemaname = current_schema() "
                "AND tablename LIKE 'events%%' AND indexdef LIKE '%%USING btree (message_id)'"
            ).scalar_one()
        )


def _event(conn: sa.Connection) -> None:
    conn.exec_driver_sql(
        "INSERT INTO contacts (contact_id, data_key, wrap_key_id, created_at) "
        "VALUES ('c1', NULL, NULL, 0)"
    )
    conn.exec_driver_sql(
        "INSERT INTO events (event_id, message_id, contact_id, type, occurred_at, machine, "
        "stored_seq) VALUES ('e1', 'm1', 'c1', 'opened', 0, false, 7)"
    )


def test_0020_upgrades_an_existing_database_and_downgrades(migration_url: str) -> None:
    upgrade(migration_url, "0019")
    engine = create_engine(migration_url)
    try:
        with engine.begin() as conn:
            _event(conn)
        assert _message_id_indexes(engine) == 1
        assert upgrade(engine, "0020") == "0020"
        assert _message_id_indexes(engine) == 0
        assert NAME not in {str(i["name"]) for i in sa.inspect(engine).get_indexes("events")}
        with engine.begin() as conn:
            diffs = compare_metadata(MigrationContext.configure(conn), metadata)
        if current_revision(engine) == head_revision():
            assert diffs == []
        with engine.begin() as conn:
            command.downgrade(_config(conn), "0019")
        assert _message_id_indexes(engine) == 1
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT message_id FROM events").scalar_one() == "m1"
    finally:
        downgrade_to_base(engine)
        engine.dispose()


@pytest.mark.postgres
def test_0020_on_a_database_partitioned_before_it(pg_url: str) -> None:
    """Partitioned at 0019 (when partitions got the index too): dropped everywhere, and back."""
    upgrade(pg_url, "0019")
    engine = sa.create_engine(pg_url, poolclass=sa.NullPool)
    try:
        partition.enable(engine, ahead_months=1)
        with engine.begin() as conn:
            # What enable() made before this revision: the index on every partition.
            conn.exec_driver_sql(f"CREATE INDEX IF NOT EXISTS {NAME} ON events (message_id)")
            _event(conn)
        partitions = _message_id_indexes(engine)
        assert partitions >= 3  # the partitioned table's, and one a partition
        assert upgrade(engine, "0020") == "0020"
        assert _message_id_indexes(engine) == 0
        with engine.begin() as conn:
            command.downgrade(_config(conn), "0019")
        assert _message_id_indexes(engine) == partitions
        assert upgrade(engine, "0020") == "0020"
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT message_id FROM events").scalar_one() == "m1"
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql", "postgresql-partitioned"])
def head_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sa.Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'plan.db'}"
        upgrade(url)
    else:
        url = pg_variant_url(request, request.param)
        if request.param == "postgresql":
            upgrade(url)
    engine = create_engine(url)
    try:
        yield engine
    finally:
        engine.dispose()


# The statements that look events up by message id (orphan linking, the outcome
# recomputation, the journeys' message events, the KPIs' mixed-currency revenue).
_BY_MESSAGE = (
    "SELECT e.event_id FROM events e JOIN messages m ON m.message_id = e.message_id "
    "WHERE e.contact_id IS NULL AND e.message_id IN ('m1', 'm2')",
    refresh_outcomes_sql("message_id IN ('m1', 'm2')"),
    "SELECT message_id, type, occurred_at FROM events WHERE type IN ('opened', 'clicked') "
    "AND occurred_at >= 0 AND occurred_at <= 10 AND message_id IN ('m1', 'm2')",
    "SELECT m.campaign_id, x.currency, SUM(x.revenue_micros) FROM messages m "
    "JOIN events x ON x.message_id = m.message_id WHERE m.outcomes >= 16384 "
    "AND x.type = 'converted' GROUP BY m.campaign_id, x.currency",
)


@pytest.mark.parametrize("sql", _BY_MESSAGE)
def test_lookups_by_message_id_read_through_an_index(head_engine: sa.Engine, sql: str) -> None:
    with head_engine.begin() as conn:
        if head_engine.dialect.name == "sqlite":
            plan = " ".join(
                str(r[-1]) for r in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}").all()
            )
            assert "ix_events_kpi" in plan
            assert "SCAN e " not in f"{plan} "
            assert "SCAN events " not in f"{plan} "
        else:
            # Empty tables: the planner would scan them; ask whether an index can serve.
            conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
            plan = " ".join(str(r[0]) for r in conn.exec_driver_sql(f"EXPLAIN {sql}").all())
            assert "Seq Scan on events" not in plan  # nor on a partition, events_...
            assert re.search(
                r"Index (Only )?Scan using \S+ on events|Bitmap Index Scan on \S*events", plan
            ), plan
