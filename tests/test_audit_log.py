"""The audit log: one HMAC chain, verified; tampering in the database is caught."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from commhistory.audit import AuditLog, Outcome
from commhistory.crypto import Keyring
from commhistory.errors import InvalidInputError
from commhistory.facade import CommHistory, open_repository
from commhistory.store import SQLRepository


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, Keyring]:
    """A database URL (SQLite file or isolated PostgreSQL schema) and its keyring."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'audit.db'}"
    else:
        url = str(request.getfixturevalue("pg_url"))
    return url, Keyring.generate()


@pytest.fixture
def repo(db: tuple[str, Keyring]) -> Iterator[CommHistory[SQLRepository]]:
    url, keyring = db
    with open_repository(url, keyring) as r:
        yield r


def _fill(log: AuditLog, n: int = 5) -> None:
    for i in range(n):
        log.append(
            actor_id=f"staff-{i % 2}",
            roles=["analyst"],
            action="timeline",
            purpose="ticket 42",
            outcome=Outcome.OK,
            permission="read_personal",
            contact_id=f"c{i}",
            targets=[f"m{i}"],
        )


def drop_guards(conn: sa.Connection) -> None:
    """Drop the append-only triggers, as someone with full database access could."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("DROP TRIGGER IF EXISTS audit_log_append_only ON audit_log")
        conn.exec_driver_sql("DROP TRIGGER IF EXISTS audit_log_no_truncate ON audit_log")
    else:
        conn.exec_driver_sql("DROP TRIGGER IF EXISTS audit_log_no_update")
        conn.exec_driver_sql("DROP TRIGGER IF EXISTS audit_log_no_delete")


def _exec(repo: CommHistory[SQLRepository], sql: str, **params: Any) -> None:
    with repo.store.engine.begin() as conn:
        drop_guards(conn)
        conn.execute(sa.text(sql), params)


@pytest.mark.parametrize(
    "sql", ["UPDATE audit_log SET outcome = 'ok'", "DELETE FROM audit_log WHERE seq = 1"]
)
def test_the_database_refuses_changes(repo: CommHistory[SQLRepository], sql: str) -> None:
    log = repo.audit_log
    _fill(log, 2)
    with pytest.raises(sa.exc.DBAPIError), repo.store.engine.begin() as conn:
        conn.exec_driver_sql(sql)
    assert log.verify_chain().intact
    assert log.verify_chain().entries == 2


def test_entries_chain_and_verify(repo: CommHistory[SQLRepository]) -> None:
    log = repo.audit_log
    assert log.verify_chain().intact
    assert log.verify_chain().entries == 0
    _fill(log)
    report = log.verify_chain()
    assert report.intact
    assert report.entries == 5
    assert report.first_bad is None
    entries = log.entries()
    assert [e.seq for e in entries] == [1, 2, 3, 4, 5]
    assert report.head == entries[-1].mac
    assert entries[0].actor_id == "staff-0"
    assert entries[0].roles == ("analyst",)
    assert entries[0].targets == ("m0",)
    assert entries[0].recorded_at.tzinfo is not None


def test_filters(repo: CommHistory[SQLRepository]) -> None:
    log = repo.audit_log
    _fill(log)
    log.append(
        actor_id="staff-9", roles=["admin"], action="find_contacts", purpose="p",
        outcome=Outcome.OK, targets=["c3", "c4"],
    )  # fmt: skip
    assert [e.seq for e in log.entries(actor_id="staff-1")] == [2, 4]
    assert [e.seq for e in log.entries(contact_id="c3")] == [4, 6]
    future = datetime.now(UTC) + timedelta(days=1)
    assert log.entries(since=future) == []
    assert len(log.entries(since=datetime(2000, 1, 1, tzinfo=UTC))) == 6
    with pytest.raises(InvalidInputError) as info:
        log.entries(since=datetime(2000, 1, 1))
    assert info.value.field == "since"


def test_append_rejects_empty_fields(repo: CommHistory[SQLRepository]) -> None:
    log = repo.audit_log
    with pytest.raises(InvalidInputError) as info:
        log.append(actor_id="", roles=["a"], action="x", purpose="p", outcome="ok")
    assert info.value.field == "actor_id"
    with pytest.raises(InvalidInputError) as info:
        log.append(actor_id="a", roles=["a"], action="x", purpose="", outcome="ok")
    assert info.value.field == "purpose"
    assert log.verify_chain().entries == 0


def test_another_keyring_cannot_verify(
    db: tuple[str, Keyring], repo: CommHistory[SQLRepository]
) -> None:
    _fill(repo.audit_log)
    other = AuditLog(Keyring.generate(), repo.audit_log._store)
    report = other.verify_chain()
    assert not report.intact
    assert report.first_bad == 1


# ---------------------------------------------------------------------- tampering


def test_modified_row_is_named(repo: CommHistory[SQLRepository]) -> None:
    log = repo.audit_log
    _fill(log)
    _exec(repo, "UPDATE audit_log SET outcome = 'denied' WHERE seq = 3")
    report = log.verify_chain()
    assert not report.intact
    assert report.first_bad == 3
    assert report.problem is not None
    assert "altered" in report.problem


@pytest.mark.parametrize(
    ("column", "value"),
    [("actor_id", "someone-else"), ("contact_id", "c9"), ("targets", '["m9"]'),
     ("purpose", "other"), ("action", "kpis"), ("recorded_at", 0)],
)  # fmt: skip
def test_every_authenticated_column_counts(
    repo: CommHistory[SQLRepository], column: str, value: Any
) -> None:
    log = repo.audit_log
    _fill(log)
    _exec(repo, f"UPDATE audit_log SET {column} = :v WHERE seq = 2", v=value)
    assert log.verify_chain().first_bad == 2


def test_deleted_row_is_named(repo: CommHistory[SQLRepository]) -> None:
    log = repo.audit_log
    _fill(log)
    _exec(repo, "DELETE FROM audit_log WHERE seq = 2")
    report = log.verify_chain()
    assert not report.intact
    assert report.first_bad == 2
    assert report.problem is not None
    assert "missing" in report.problem


def test_deleted_and_renumbered_rows_are_named(repo: CommHistory[SQLRepository]) -> None:
    log = repo.audit_log
    _fill(log)
    _exec(repo, "DELETE FROM audit_log WHERE seq = 2")
    for seq in (3, 4, 5):
        _exec(repo, "UPDATE audit_log SET seq = :n WHERE seq = :o", n=seq - 1, o=seq)
    report = log.verify_chain()
    assert not report.intact
    assert report.first_bad == 2


def test_inserted_row_is_named(repo: CommHistory[SQLRepository]) -> None:
    log = repo.audit_log
    _fill(log)
    # A forger copies row 5 as row 6 (a replay) and fabricates row 7.
    _exec(
        repo,
        "INSERT INTO audit_log SELECT seq + 1, recorded_at, actor_id, roles, action, "
        "permission, contact_id, targets, purpose, outcome, key_id, prev_mac, mac "
        "FROM audit_log WHERE seq = 5",
    )
    assert log.verify_chain().first_bad == 6


def test_inserted_row_in_the_middle_is_named(repo: CommHistory[SQLRepository]) -> None:
    log = repo.audit_log
    _fill(log)
    for seq in (5, 4, 3):  # make room at 3
        _exec(repo, "UPDATE audit_log SET seq = :n WHERE seq = :o", n=seq + 1, o=seq)
    _exec(
        repo,
        "INSERT INTO audit_log SELECT 3, recorded_at, actor_id, roles, action, "
        "permission, contact_id, targets, purpose, 'ok', key_id, mac, mac "
        "FROM audit_log WHERE seq = 2",
    )
    report = log.verify_chain()
    assert not report.intact
    assert report.first_bad == 3


def test_reordered_rows_are_named(repo: CommHistory[SQLRepository]) -> None:
    log = repo.audit_log
    _fill(log)
    _exec(repo, "UPDATE audit_log SET seq = 100 WHERE seq = 2")
    _exec(repo, "UPDATE audit_log SET seq = 2 WHERE seq = 4")
    _exec(repo, "UPDATE audit_log SET seq = 4 WHERE seq = 100")
    report = log.verify_chain()
    assert not report.intact
    assert report.first_bad == 2


def test_truncated_tail_changes_the_head(repo: CommHistory[SQLRepository]) -> None:
    log = repo.audit_log
    _fill(log)
    head = log.verify_chain().head
    _exec(repo, "DELETE FROM audit_log WHERE seq = 5")
    report = log.verify_chain()
    assert report.intact  # a shorter chain is still a chain...
    assert report.head != head  # ...but its head no longer matches a copy kept elsewhere


# ---------------------------------------------------------------------- concurrency


def test_concurrent_writers_keep_one_chain(db: tuple[str, Keyring]) -> None:
    url, keyring = db
    open_repository(url, keyring).close()  # migrate once
    writers, per_writer = 4, 15
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            with open_repository(url, keyring) as r:
                log = r.audit_log
                for i in range(per_writer):
                    log.append(
                        actor_id=f"w{n}", roles=["operator"], action="export_subject",
                        purpose="load", outcome=Outcome.OK, contact_id=f"c{i}",
                    )  # fmt: skip
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with open_repository(url, keyring) as r:
        report = r.audit_log.verify_chain()
    assert report.intact
    assert report.entries == writers * per_writer


# ---------------------------------------------------------------------- in memory


def test_in_memory_log_chains_and_detects_changes() -> None:
    log = AuditLog.in_memory(Keyring.generate())
    _fill(log, 3)
    assert log.verify_chain().intact
    table = log._store.table  # type: ignore[attr-defined]
    table[1]["outcome"] = "denied"
    assert log.verify_chain().first_bad == 2
    table[1]["outcome"] = Outcome.OK
    assert log.verify_chain().intact
    del table[0]
    assert log.verify_chain().first_bad == 1
