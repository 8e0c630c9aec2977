"""Monthly partitions on PostgreSQL: conversion, idempotency, maintenance, retention."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from commhistory import CommHistory, open_repository
from commhistory.cli import main
from commhistory.crypto import Keyring
from commhistory.errors import InvalidInputError, SchemaError, StorageError
from commhistory.model import EventType
from commhistory.normalize.time import to_micros
from commhistory.privacy import RetentionPolicy, purge
from commhistory.store import (
    IngestReport,
    MemoryRepository,
    SQLRepository,
    current_revision,
    downgrade_to_base,
    head_revision,
    partition,
    upgrade,
)
from tests.conftest import pg_variant_url
from tests.test_store_contract import event, full_event, message

# Three months of history: January to March 2026, "now" in mid-March.
JAN = datetime(2026, 1, 10, tzinfo=UTC)
FEB = datetime(2026, 2, 10, tzinfo=UTC)
MAR = datetime(2026, 3, 10, tzinfo=UTC)
NOW = datetime(2026, 3, 15, tzinfo=UTC)

pytestmark = pytest.mark.postgres


def _history(repo: CommHistory[Any]) -> None:
    """Messages and events in three months, an orphan, a late event in the next month."""
    repo.record_messages(
        [
            message(1, sent_at=JAN),
            message(2, contact="c2", sent_at=JAN + timedelta(days=1)),
            message(3, sent_at=FEB),
            message(4, contact="c2", sent_at=MAR),
        ]
    )
    repo.record_events(
        [
            full_event(1, "m1"),
            event(2, "m1", type=EventType.OPENED, occurred_at=JAN + timedelta(hours=1)),
            event(
                3,
                "m1",
                type=EventType.CLICKED,
                occurred_at=FEB + timedelta(days=3),
                url="https://shop.example/p/1",
            ),
            event(4, "m3", occurred_at=FEB + timedelta(minutes=1)),
            event(
                5,
                "m4",
                occurred_at=MAR + timedelta(minutes=1),
                provider="sendgrid",
                provider_event_id="sg-ev-5",
            ),
            event(6, "mx7", occurred_at=MAR),  # an orphan: its message comes later
        ]
    )


def _snapshot(repo: CommHistory[Any]) -> tuple[Any, ...]:
    return (
        repo.timeline("c1"),
        repo.timeline("c2"),
        repo.kpis(("campaign_id",)),
        _scalar(repo, "SELECT count(*) FROM messages"),
        _scalar(repo, "SELECT count(*) FROM events"),
    )


def _scalar(repo: CommHistory[Any], sql: str, *params: Any) -> Any:
    with repo.store.engine.connect() as conn:
        return conn.exec_driver_sql(sql, params).scalar()


@pytest.fixture
def pg(pg_url: str) -> Iterator[CommHistory[SQLRepository]]:
    with open_repository(pg_url, Keyring.generate(), batch_size=3) as repo:
        yield repo


def _enable(repo: CommHistory[SQLRepository], **kw: Any) -> partition.PartitionReport:
    report = partition.enable(repo.store.engine, now=NOW, **kw)
    repo.store.forget_history_caches()
    return report


# ------------------------------------------------------------------ conversion


def test_converting_a_populated_database_keeps_every_row_and_answer(
    pg: CommHistory[SQLRepository],
) -> None:
    _history(pg)
    before = _snapshot(pg)

    report = _enable(pg, ahead_months=2)

    assert report.copied == 4 + 6
    assert "events_y2026m01" in report.created
    assert "messages_y2026m05" in report.created  # two months ahead of March
    assert "messages_default" in report.created
    assert _snapshot(pg) == before
    assert _scalar(pg, "SELECT relkind FROM pg_class WHERE oid = to_regclass('events')") == "p"
    # Every row is in its month's partition, none in DEFAULT; the keys were copied.
    assert _scalar(pg, "SELECT count(*) FROM events_y2026m02") == 2
    assert _scalar(pg, "SELECT count(*) FROM events_default") == 0
    assert _scalar(pg, "SELECT count(*) FROM event_keys") == 6
    assert _scalar(pg, "SELECT count(*) FROM message_keys") == 4
    # Writing goes on as before: the orphan links when its message comes.
    assert pg.record_messages([message("x7", sent_at=MAR)]).linked == 1
    assert pg.timeline("c1")[-1].events[0].event_id == "e6"


def test_converting_twice_or_on_sqlite_is_refused(
    pg: CommHistory[SQLRepository], tmp_path: Path
) -> None:
    _enable(pg)
    with pytest.raises(StorageError, match="partitioned already"):
        _enable(pg)
    lite = sa.create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with pytest.raises(InvalidInputError, match="PostgreSQL"):
        partition.enable(lite)
    with pytest.raises(InvalidInputError, match="ahead_months"):
        partition.enable(pg.store.engine, ahead_months=-1)


# ------------------------------------------------------------------ idempotency


def test_a_key_is_unique_across_months(pg: CommHistory[SQLRepository]) -> None:
    _history(pg)
    _enable(pg)
    # The same message id, or provider pair, sent at a time in another month: a duplicate.
    again = [
        message(1, sent_at=MAR),
        message("x9", sent_at=FEB, provider="sendgrid", provider_message_id="sg-3"),
    ]
    assert pg.record_messages(again) == IngestReport(duplicates=2)
    # The same event id, or provider pair, in another month: a duplicate, even when the
    # batch is big enough to be copied without looking first.
    dup_events = [
        event(1, "m1", occurred_at=MAR),
        event("99", "m4", occurred_at=JAN, provider="sendgrid", provider_event_id="sg-ev-5"),
    ]
    fresh = [event(100 + n, "m4", occurred_at=MAR + timedelta(seconds=n)) for n in range(600)]
    url = pg.store.engine.url.render_as_string(hide_password=False)
    with open_repository(url, pg.store.keyring, batch_size=1000) as big:
        report = big.record_events(dup_events + fresh)
    assert report == IngestReport(inserted=600, duplicates=2)
    assert _scalar(pg, "SELECT count(*) FROM events WHERE event_id = 'e1'") == 1
    assert _scalar(pg, "SELECT count(*) FROM events") == 6 + 600
    # Raw SQL too: the trigger skips the row, as ON CONFLICT DO NOTHING would.
    with pg.store.engine.begin() as conn:
        skipped = conn.exec_driver_sql(
            "INSERT INTO events (event_id, type, occurred_at, machine) VALUES (%s, %s, %s, false)",
            ("e2", "opened", to_micros(MAR)),
        ).rowcount
    assert skipped == 0


def test_keys_never_change_and_deleting_a_row_frees_its_keys(
    pg: CommHistory[SQLRepository],
) -> None:
    _history(pg)
    _enable(pg)
    with pytest.raises(sa.exc.IntegrityError), pg.store.engine.begin() as conn:
        conn.exec_driver_sql(
            "UPDATE events SET occurred_at = %s WHERE event_id = 'e4'", (to_micros(MAR),)
        )
    with pg.store.engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM events WHERE event_id = 'e4'")
    assert _scalar(pg, "SELECT count(*) FROM event_keys WHERE event_id = 'e4'") == 0
    # As on an unpartitioned table: a deleted event stored again is new.
    assert pg.record_events([event(4, "m3", occurred_at=FEB)]).inserted == 1


# ------------------------------------------------------------------ maintenance


def test_ensure_partitions_creates_months_ahead_and_empties_default(
    pg: CommHistory[SQLRepository],
) -> None:
    _enable(pg, ahead_months=0)  # empty: March only, and DEFAULT
    # Rows of April land in DEFAULT: no insert fails for want of a partition.
    april = datetime(2026, 4, 2, tzinfo=UTC)
    pg.record_messages([message(1, sent_at=april)])
    pg.record_events([event(1, "m1", occurred_at=april, provider="sendgrid",
                            provider_event_id="sg-ev-1")])  # fmt: skip
    assert _scalar(pg, "SELECT count(*) FROM events_default") == 1

    report = pg.ensure_partitions(ahead_months=2, now=NOW)

    assert set(report.created) == {
        f"{t}_y2026m{m:02d}" for t in ("messages", "events") for m in (4, 5)
    }
    assert report.moved == 2
    assert _scalar(pg, "SELECT count(*) FROM events_default") == 0
    assert _scalar(pg, "SELECT count(*) FROM events_y2026m04") == 1
    # The moved rows kept their keys: storing them again is a duplicate.
    assert pg.record_events([event(1, "m1", occurred_at=april)]) == IngestReport(duplicates=1)
    assert pg.record_messages([message(1, sent_at=april)]) == IngestReport(duplicates=1)
    assert pg.ensure_partitions(ahead_months=2, now=NOW).created == ()  # idempotent


def test_ensure_partitions_is_a_no_op_without_partitions(
    pg: CommHistory[SQLRepository],
) -> None:
    assert pg.ensure_partitions(ahead_months=3) == partition.PartitionReport()
    with CommHistory(MemoryRepository()) as mem:
        assert mem.ensure_partitions(ahead_months=3) == partition.PartitionReport()


# ------------------------------------------------------------------ retention

HISTORY_VARIANTS = [
    "memory",
    "sqlite",
    "postgresql",
    "postgresql-partitioned",
]


@pytest.fixture(params=HISTORY_VARIANTS)
def any_repo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CommHistory[Any]]:
    if request.param == "memory":
        with CommHistory(MemoryRepository(batch_size=3)) as mem:
            yield mem
        return
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'h.db'}"
    else:
        url = pg_variant_url(request, request.param)
    with open_repository(url, Keyring.generate(), batch_size=3) as repo:
        if request.param == "postgresql-partitioned":
            # Months of the test data get their own partitions (the fixture made the
            # current month's): January and February are dropped whole below.
            with repo.store.transaction() as conn:
                for now in (JAN, FEB, MAR):
                    partition.ensure_partitions(conn, ahead_months=0, now=now)
        yield repo


def test_history_retention_deletes_by_each_rows_own_time(any_repo: CommHistory[Any]) -> None:
    _history(any_repo)
    cutoff = datetime(2026, 3, 1, tzinfo=UTC)
    policy = RetentionPolicy(history=NOW - cutoff)

    dry = purge(any_repo.store, policy, now=NOW)
    counts = {i.kind: i.count for i in dry.items}
    assert (counts["messages"], counts["events"]) == (3, 3)  # m1-m3; e2-e4
    assert len(any_repo.timeline("c1")) == 2  # a dry run deletes nothing

    done = purge(any_repo.store, policy, now=NOW, dry_run=False)

    assert {i.kind: i.count for i in done.items} == counts
    # What is left: March's message m4 with its event, and the March orphan.
    assert [e.message.message_id for e in any_repo.timeline("c2")] == ["m4"]
    assert any_repo.timeline("c1") == []
    assert any_repo.kpis().rows[0].sent == 1
    # A deleted event stored again is new (its keys went with it); a kept one is not.
    assert any_repo.record_events([event(4, "m3", occurred_at=FEB)]).inserted == 1
    assert any_repo.record_events([event(6, "mx7", occurred_at=MAR)]).duplicates == 1
    dropped = {p for i in done.items for p in i.dropped_partitions}
    if dropped:  # partitioned: January and February went whole
        assert dropped == {f"{t}_y2026m{m:02d}" for t in ("messages", "events") for m in (1, 2)}


def test_history_retention_drops_whole_months_on_partitions(
    pg_partitioned_url: str,
) -> None:
    with open_repository(pg_partitioned_url, Keyring.generate()) as repo:
        with repo.store.transaction() as conn:
            for now in (JAN, FEB, MAR):
                partition.ensure_partitions(conn, ahead_months=0, now=now)
        _history(repo)
        # Mid-February: January goes whole, February's rows before the 12th one by one.
        cutoff = datetime(2026, 2, 12, tzinfo=UTC)
        report = purge(repo.store, RetentionPolicy(history=NOW - cutoff), now=NOW, dry_run=False)
        items = {i.kind: i for i in report.items}
        assert items["messages"].dropped_partitions == ("messages_y2026m01",)
        assert items["events"].dropped_partitions == ("events_y2026m01",)
        assert (items["messages"].count, items["events"].count) == (3, 2)  # m1-m3; e2, e4
        assert _scalar(repo, "SELECT to_regclass('events_y2026m01')") is None
        assert _scalar(repo, "SELECT count(*) FROM events_y2026m02") == 1  # e3, Feb 13
        assert _scalar(repo, "SELECT count(*) FROM event_keys") == 4  # e1, e3, e5, e6
        assert _scalar(repo, "SELECT count(*) FROM message_keys") == 1


# ------------------------------------------------------------------ migration and CLI


def test_migration_0012_upgrades_a_populated_database_and_guards_its_downgrade(
    pg_url: str,
) -> None:
    engine = sa.create_engine(pg_url, poolclass=sa.NullPool)
    try:
        upgrade(engine, "0011")
        with engine.begin() as conn:  # a row written by the previous version
            conn.exec_driver_sql(
                "INSERT INTO events (event_id, type, occurred_at, machine) "
                "VALUES ('e1', 'opened', %s, false)",
                (to_micros(FEB),),
            )
        assert upgrade(engine) == head_revision()
        partition.enable(engine, now=NOW)
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM events_y2026m02").scalar() == 1
        # The triggers need the functions: the downgrade refuses, and nothing changes.
        with pytest.raises(SchemaError):
            downgrade_to_base(engine)
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()


def test_migration_0012_downgrades_an_unpartitioned_database(pg_url: str) -> None:
    engine = sa.create_engine(pg_url, poolclass=sa.NullPool)
    try:
        upgrade(engine)
        upgrade(engine)  # idempotent
        downgrade_to_base(engine)
        with engine.connect() as conn:
            assert (
                conn.exec_driver_sql(
                    "SELECT to_regprocedure('commhistory_claim_event_key()')"
                ).scalar()
                is None
            )
    finally:
        engine.dispose()


def test_cli_enables_ensures_and_lists_partitions(
    pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["init", "--db", pg_url, "--keyring", str(tmp_path / "k")]) == 0
    capsys.readouterr()
    assert main(["partitions", "status", "--db", pg_url]) == 0
    assert "not partitioned" in capsys.readouterr().out

    assert main(["partitions", "enable", "--ahead", "1", "--db", pg_url]) == 0
    assert "created 6 partition(s)" in capsys.readouterr().out  # 2 months + DEFAULT, twice
    assert main(["partitions", "ensure", "--ahead", "4", "--format", "json", "--db", pg_url]) == 0
    assert len(json.loads(capsys.readouterr().out)["created"]) == 6  # 3 more months, twice
    assert main(["partitions", "status", "--format", "json", "--db", pg_url]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["partitioned"] is True
    assert len(doc["tables"]["events"]) == 5 + 1
    assert main(["partitions", "enable", "--db", pg_url]) == 2  # twice: refused
    assert "partitioned already" in capsys.readouterr().err
    lite = f"sqlite:///{tmp_path / 'x.db'}"
    assert main(["init", "--db", lite, "--keyring", str(tmp_path / "k")]) == 0
    assert main(["partitions", "enable", "--db", lite]) == 2
    assert "PostgreSQL" in capsys.readouterr().err


def test_cli_purge_history_days_deletes_old_messages(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db, ring = f"sqlite:///{tmp_path / 'p.db'}", tmp_path / "p.keyring"
    keyring = Keyring.generate()
    keyring.save(ring)
    with open_repository(db, keyring) as repo:
        _history(repo)
    days = (datetime.now(UTC) - datetime(2026, 3, 1, tzinfo=UTC)).days
    args = ["purge", "--history-days", str(days), "--format", "json"]
    assert main([*args, "--db", db, "--keyring", str(ring)]) == 0
    items = {i["kind"]: i for i in json.loads(capsys.readouterr().out)["items"]}
    assert (items["messages"]["count"], items["events"]["count"]) == (3, 3)
    assert items["messages"]["dropped_partitions"] == []
    with open_repository(db, keyring) as repo:
        assert repo.timeline("c1") == []
