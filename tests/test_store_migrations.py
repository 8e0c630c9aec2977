"""Alembic migrations: upgrade from empty, match the metadata, downgrade to base."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from commhistory.crypto import Keyring
from commhistory.errors import DatabaseNotFoundError, SchemaError
from commhistory.facade import open_repository
from commhistory.model import BounceClass, Channel, Direction, Event, EventType, Message
from commhistory.store import current_revision, downgrade_to_base, head_revision, upgrade
from commhistory.store._engine import create_engine
from commhistory.store.kpi import OUTCOME_COLUMNS, Outcome
from commhistory.store.migrate import _config
from commhistory.store.schema import metadata

TABLES = {
    "activities",
    "activity_names",
    "addresses",
    "attribute_definitions",
    "audit_log",
    "campaign_costs",
    "consent_events",
    "contact_attributes",
    "contacts",
    "dead_letters",
    "events",
    "journey_definitions",
    "journey_enrollments",
    "journey_intents",
    "journey_trigger_marks",
    "key_metadata",
    "messages",
    "stored_seq",
    "segment_definitions",
    "segment_snapshot_members",
    "segment_snapshots",
    "suppressions",
}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'migrate.db'}"
    pg: str = request.getfixturevalue("pg_url")
    return pg


def _tables(engine: sa.Engine) -> set[str]:
    return set(sa.inspect(engine).get_table_names())


def test_upgrade_from_empty_matches_metadata_and_downgrades(url: str) -> None:
    engine = create_engine(url)
    try:
        assert current_revision(engine) is None
        assert _tables(engine) == set()

        assert upgrade(engine) == head_revision()

        assert current_revision(engine) == head_revision()
        assert _tables(engine) == TABLES | {"alembic_version"}
        with engine.connect() as conn:
            diffs = compare_metadata(MigrationContext.configure(conn), metadata)
        assert diffs == []
        assert upgrade(engine) == head_revision()  # idempotent

        downgrade_to_base(engine)

        assert current_revision(engine) is None
        assert _tables(engine) == {"alembic_version"}
    finally:
        engine.dispose()


def test_upgrade_by_url(url: str) -> None:
    upgrade(url)
    assert current_revision(url) == head_revision()


def test_partial_index_on_orphans_exists(url: str) -> None:
    upgrade(url)
    engine = create_engine(url)
    try:
        names = {ix["name"] for ix in sa.inspect(engine).get_indexes("events")}
    finally:
        engine.dispose()
    assert {"ix_events_orphans", "ix_events_contact_id_occurred_at"} <= names


def test_open_without_upgrade_names_the_fix(url: str) -> None:
    # A missing SQLite file is not created (DatabaseNotFoundError); an empty
    # PostgreSQL database has no schema (SchemaError). Both name the fix.
    with pytest.raises((SchemaError, DatabaseNotFoundError), match="commhistory init"):
        open_repository(url, Keyring.generate(), upgrade=False)
    with open_repository(url, Keyring.generate()) as repo:  # upgrades
        assert repo.store.dialect in ("sqlite", "postgresql")
    assert current_revision(url) == head_revision()


def test_unknown_newer_revision_is_a_schema_error(url: str) -> None:
    upgrade(url)
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("UPDATE alembic_version SET version_num = 'ffff'")
    finally:
        engine.dispose()
    with pytest.raises(SchemaError, match="does not know"):
        open_repository(url, Keyring.generate())


def test_postgres_isolation_uses_its_own_schema(pg_url: str) -> None:
    upgrade(pg_url)
    engine = create_engine(pg_url)
    try:
        with engine.connect() as conn:
            schema = conn.exec_driver_sql("SELECT current_schema()").scalar_one()
            tables = set(
                conn.exec_driver_sql(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                    (schema,),
                ).scalars()
            )
    finally:
        engine.dispose()
    assert schema.startswith("t_")
    assert tables == TABLES | {"alembic_version"}


def test_offline_mode_emits_sql() -> None:
    cfg = _config()
    cfg.set_main_option("sqlalchemy.url", "postgresql+psycopg://nobody@localhost/none")
    out = io.StringIO()
    cfg.output_buffer = out
    command.upgrade(cfg, "head", sql=True)
    sql = out.getvalue()
    assert "CREATE TABLE events" in sql
    assert "WHERE contact_id IS NULL" in sql


def _messages_shape(engine: sa.Engine) -> dict[str, Any]:
    inspector = sa.inspect(engine)
    return {
        "columns": [
            (c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns("messages")
        ],
        "pk": inspector.get_pk_constraint("messages")["constrained_columns"],
        "indexes": sorted(
            (ix["name"], tuple(ix["column_names"])) for ix in inspector.get_indexes("messages")
        ),
        "unique": sorted(
            (uq["name"], tuple(uq["column_names"]))
            for uq in inspector.get_unique_constraints("messages")
        ),
        "fks": sorted(
            (fk["name"], tuple(fk["constrained_columns"]), fk["referred_table"])
            for fk in inspector.get_foreign_keys("messages")
        ),
    }


def test_0005_adds_address_masked_and_downgrades_without_losing_rows(url: str) -> None:
    upgrade(url, "0004")
    engine = create_engine(url)
    row = (
        "m1", "c1", "email", "outbound", "marketing", "sp", "A", "sendgrid", "sg-1", 1, b"\x01",
    )  # fmt: skip
    columns = (
        "message_id, contact_id, channel, direction, purpose, campaign_id, variant, provider, "
        "provider_message_id, sent_at, address"
    )
    ph = ", ".join(["?" if engine.dialect.name == "sqlite" else "%s"] * len(row))
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO contacts (contact_id, data_key, wrap_key_id, created_at) "
                "VALUES ('c1', NULL, NULL, 0)"
            )
            conn.exec_driver_sql(f"INSERT INTO messages ({columns}) VALUES ({ph})", row)
        before = _messages_shape(engine)
        assert "address_masked" not in [c[0] for c in before["columns"]]

        assert upgrade(engine, "0005") == "0005"

        after = _messages_shape(engine)
        assert ("address_masked", "TEXT", True) in after["columns"]
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT address_masked FROM messages").all() == [(None,)]
            diffs = compare_metadata(MigrationContext.configure(conn), metadata)
        if current_revision(engine) == head_revision():
            assert diffs == []

        with engine.connect() as conn:
            command.downgrade(_config(conn), "0004")
            conn.commit()

        assert current_revision(engine) == "0004"
        assert _messages_shape(engine) == before
        with engine.connect() as conn:
            kept = conn.exec_driver_sql(f"SELECT {columns} FROM messages").all()
        assert [tuple(r[:-1]) for r in kept] == [row[:-1]]
        assert bytes(kept[0][-1]) == row[-1]
    finally:
        engine.dispose()


def _outcomes(engine: sa.Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.exec_driver_sql(
                f"SELECT message_id, {', '.join(OUTCOME_COLUMNS)} FROM messages "
                "ORDER BY message_id"
            )
        ]


def _history() -> tuple[list[Message], list[Event]]:
    """Messages with events of every kind: machine ones, revenue in one and two currencies."""
    sent = datetime(2024, 5, 1, tzinfo=UTC)
    at = sent + timedelta(minutes=1)
    messages = [
        Message(
            message_id=f"m{i}", channel=Channel.EMAIL, direction=Direction.OUTBOUND,
            contact_id=f"c{i % 3}", address="someone@example.com", sent_at=sent,
            provider="sg", provider_message_id=f"p{i}",
        )
        for i in range(12)
    ]  # fmt: skip
    # Call progress events change no outcome: leave them out so each message meets many kinds.
    calls = {EventType.RINGING, EventType.ANSWERED, EventType.COMPLETED, EventType.NO_ANSWER}
    kinds = [k for k in EventType if k not in calls | {EventType.BUSY}]
    events = []
    for j in range(60):
        kind = kinds[j % len(kinds)]
        money: dict[str, Any] = {}
        if kind is EventType.CONVERTED:
            money = {"revenue": Decimal(100 + j), "currency": ("JPY", "USD")[j // 15 % 2]}
        ref: dict[str, Any] = (
            {"message_id": f"m{j % 12}"}
            if j % 5
            else {"provider": "sg", "provider_message_id": f"p{j % 12}"}
        )
        events.append(
            Event(
                event_id=f"e{j}",
                type=kind,
                occurred_at=at,
                machine=j % 4 == 0,
                bounce=BounceClass.HARD if kind is EventType.BOUNCED and j % 2 else None,
                **ref,
                **money,
            )
        )  # fmt: skip
    events += [
        Event(event_id="lost", type=EventType.OPENED, message_id="nowhere", occurred_at=at),
        Event(event_id="usd", type=EventType.CONVERTED, message_id="m1", occurred_at=at,
              revenue=Decimal("1.5"), currency="USD"),
        Event(event_id="jpy", type=EventType.CONVERTED, message_id="m1", occurred_at=at,
              revenue=Decimal("150"), currency="JPY", machine=True),
    ]  # fmt: skip
    return messages, events


def test_0008_backfills_outcomes_as_ingest_keeps_them_and_downgrades(url: str) -> None:
    # What ingest keeps: a repository at head stores a history, events first for
    # half the messages (orphans linked later), then every event again (retries).
    messages, events = _history()
    repo = open_repository(url, Keyring.generate())
    try:
        repo.record_events(events[::2])
        repo.record_messages(messages)
        repo.record_events(events)
        repo.record_events(events[:10])
    finally:
        repo.close()
    engine = create_engine(url)
    try:
        kept = _outcomes(engine)
        assert any(r[1] & Outcome.MIXED_CURRENCY for r in kept)
        assert any(r[2] is not None for r in kept)  # and some in a single currency
        assert len({r[1] for r in kept}) > 5
        previous = ScriptDirectory.from_config(_config()).get_revision("0008").down_revision
        assert isinstance(previous, str)

        with engine.connect() as conn:
            command.downgrade(_config(conn), previous)
            conn.commit()

        shape = _messages_shape(engine)
        assert not {c[0] for c in shape["columns"]} & set(OUTCOME_COLUMNS)
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT COUNT(*) FROM messages").scalar_one() == 12
            assert conn.exec_driver_sql("SELECT COUNT(*) FROM events").scalar_one() == 63

        assert upgrade(engine, "0008") == "0008"  # the backfill, from events alone

        assert _outcomes(engine) == kept
        with engine.connect() as conn:
            diffs = compare_metadata(MigrationContext.configure(conn), metadata)
        if current_revision(engine) == head_revision():
            assert diffs == []
    finally:
        engine.dispose()


def test_0006_adds_contact_attributes_and_downgrades_without_losing_rows(url: str) -> None:
    upgrade(url, "0005")
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO contacts (contact_id, data_key, wrap_key_id, created_at) "
                "VALUES ('c1', NULL, NULL, 0)"
            )
        assert {"contact_attributes", "attribute_definitions"}.isdisjoint(_tables(engine))

        assert upgrade(engine, "0006") == "0006"

        assert {"contact_attributes", "attribute_definitions"} <= _tables(engine)
        inspector = sa.inspect(engine)
        indexes = {i["name"] for i in inspector.get_indexes("contact_attributes")}
        assert {
            f"ix_contact_attributes_current_{c}" for c in ("text", "int", "micros", "date", "ts")
        } <= indexes
        pk = inspector.get_pk_constraint("contact_attributes")["constrained_columns"]
        assert pk == ["contact_id", "name", "valid_from"]
        ph = "?" if engine.dialect.name == "sqlite" else "%s"
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO contact_attributes (contact_id, name, valid_from, value_type, "
                f"value_text, recorded_at) VALUES ({ph}, {ph}, {ph}, {ph}, {ph}, {ph})",
                ("c1", "tier", 1, "enum", "gold", 1),
            )
            diffs = compare_metadata(MigrationContext.configure(conn), metadata)
        if current_revision(engine) == head_revision():
            assert diffs == []

        with engine.connect() as conn:
            command.downgrade(_config(conn), "0005")
            conn.commit()

        assert current_revision(engine) == "0005"
        assert {"contact_attributes", "attribute_definitions"}.isdisjoint(_tables(engine))
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT contact_id FROM contacts").all() == [("c1",)]
    finally:
        engine.dispose()


def test_0014_adds_stored_seq_backfills_zero_and_new_rows_get_more(url: str) -> None:
    messages, events = _history()
    keyring = Keyring.generate()
    with open_repository(url, keyring) as repo:
        repo.record_messages(messages[:6])
        repo.record_events(events[:20])
    engine = create_engine(url)
    tables = ("messages", "events", "activities", "campaign_costs")
    try:
        with engine.connect() as conn:
            orphans = {
                r[0]
                for r in conn.exec_driver_sql(
                    "SELECT event_id FROM events WHERE contact_id IS NULL"
                )
            }
            command.downgrade(_config(conn), "0013")
            conn.commit()
        assert orphans
        assert "stored_seq" not in {c[0] for c in _messages_shape(engine)["columns"]}
        assert "stored_seq" not in _tables(engine)

        assert upgrade(engine, "0014") == "0014"

        with engine.connect() as conn:
            for table in tables:
                stamps = conn.exec_driver_sql(f"SELECT DISTINCT stored_seq FROM {table}").all()
                assert stamps in ([], [(0,)]), table
            assert conn.exec_driver_sql("SELECT id, value FROM stored_seq").all() == [(1, 0)]
            diffs = compare_metadata(MigrationContext.configure(conn), metadata)
        if current_revision(engine) == head_revision():
            assert diffs == []
        with open_repository(url, keyring) as repo:
            bound = repo.store.analytics_reader.stored_seq_bound()
            assert bound > 0
            repo.record_messages(messages[6:])
            repo.record_events(events[20:])
        with engine.connect() as conn:
            old = conn.exec_driver_sql(
                "SELECT count(*) FROM messages WHERE stored_seq = 0"
            ).scalar_one()
            new = conn.exec_driver_sql(
                "SELECT min(stored_seq), count(*) FROM messages WHERE stored_seq <> 0"
            ).one()
            linked = conn.exec_driver_sql(
                "SELECT event_id FROM events WHERE stored_seq = 0 ORDER BY event_id"
            ).all()
        # events linked to their message before keep 0; the orphans among them were
        # linked by the later messages, so they are exportable now: stamped again
        assert {r[0] for r in linked} == {e.event_id for e in events[:20]} - orphans
        assert old == 6
        assert new[1] == len(messages) - 6
        assert new[0] >= bound
    finally:
        engine.dispose()
