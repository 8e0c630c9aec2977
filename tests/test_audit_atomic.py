"""An audited operation and its audit entry commit together, or neither does."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from commhistory.audit import Actor, AuditLog, Outcome
from commhistory.crypto import Keyring
from commhistory.errors import NotFoundError, StorageError
from commhistory.facade import CommHistory, open_repository
from commhistory.model import BounceClass, EventType
from commhistory.store import SQLRepository
from tests.test_consent_support import ev, msg


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def repo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CommHistory[SQLRepository]]:
    """A SQL repository on each database, batches of two."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'atomic.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    with open_repository(url, Keyring.generate(), batch_size=2) as r:
        yield r


def _break_audit_log(repo: CommHistory[SQLRepository]) -> None:
    """Make every audit append fail in the database (the table is gone)."""
    with repo.store.transaction() as conn:
        conn.exec_driver_sql("ALTER TABLE audit_log RENAME TO audit_log_moved")


def test_a_change_is_undone_when_its_entry_cannot_be_written(
    repo: CommHistory[SQLRepository],
) -> None:
    repo.record_messages([msg("m1", "c1")])
    view = repo.as_actor(Actor("dpo-1", ["privacy_officer"]), purpose="ticket 9")
    _break_audit_log(repo)
    with pytest.raises(StorageError):
        view.consent.grant("c1", "email", "marketing", method="web_form")
    with pytest.raises(StorageError):
        view.erase_subject("c1")
    # Neither change was kept without its entry.
    assert repo.consent.history("c1") == []
    assert repo.timeline("c1")[0].message.address == "c1@example.com"


def test_a_personal_read_is_refused_when_its_entry_cannot_be_written(
    repo: CommHistory[SQLRepository],
) -> None:
    repo.record_messages([msg("m1", "c1")])
    view = repo.as_actor(Actor("dpo-1", ["privacy_officer"]), purpose="ticket 9")
    _break_audit_log(repo)
    with pytest.raises(StorageError):
        view.timeline("c1")


def test_audited_reads_and_changes_share_the_chain(repo: CommHistory[SQLRepository]) -> None:
    repo.record_messages([msg("m1", "c1"), msg("m2", "c1")])
    view = repo.as_actor(Actor("dpo-1", ["privacy_officer"]), purpose="ticket 9")
    assert len(view.timeline("c1")) == 2
    view.consent.withdraw("c1", "email", "marketing", method="support_request")
    with pytest.raises(NotFoundError):
        view.timeline("nobody")
    log = repo.audit_log
    entries = log.entries()
    assert [(e.action, e.outcome) for e in entries] == [
        ("timeline", Outcome.OK),
        ("consent.withdraw", Outcome.OK),
        ("timeline", "failed:NotFoundError"),
    ]
    assert entries[0].targets == ("m1", "m2")
    assert log.verify_chain().intact


def test_guarded_ingest_writes_one_entry_per_batch(repo: CommHistory[SQLRepository]) -> None:
    view = repo.as_actor(Actor("svc-import", ["operator"]), purpose="nightly import")
    view.record_messages([msg("m1", "c1"), msg("m2", "c2"), msg("m3", "c3")])  # two batches
    view.record_events(
        [
            ev("e1", "m1", EventType.DELIVERED),
            ev("e2", "m2", EventType.BOUNCED, bounce=BounceClass.HARD),
        ]
    )
    view.consent.grant("c3", "email", "marketing", method="web_form")
    log = repo.audit_log
    entries = log.entries()
    assert [e.action for e in entries] == [
        "record_messages",
        "record_messages",
        "record_events",
        "consent.grant",
    ]
    assert all(e.actor_id == "svc-import" and e.purpose == "nightly import" for e in entries)
    (bounced,) = repo.suppression.for_contact("c2")
    assert entries[2].targets == (bounced.suppression_id,)
    assert entries[0].targets == entries[1].targets == ()
    assert log.verify_chain().intact
    # An auditor asking about c3 finds the consent change.
    assert [e.action for e in log.entries(contact_id="c3")] == ["consent.grant"]


def test_guarded_ingest_stores_nothing_it_cannot_audit(repo: CommHistory[SQLRepository]) -> None:
    view = repo.as_actor(Actor("svc-import", ["operator"]), purpose="nightly import")
    _break_audit_log(repo)
    with pytest.raises(StorageError):
        view.record_messages([msg("m1", "c1"), msg("m2", "c1")])
    with pytest.raises(NotFoundError):
        repo.timeline("c1")


def test_memory_repository_gets_one_entry_per_write() -> None:
    repo = CommHistory.in_memory(batch_size=2)
    log = AuditLog.in_memory(Keyring.generate())
    view = repo.as_actor(Actor("svc", ["operator"]), purpose="test", audit=log)
    view.record_messages([msg("m1", "c1"), msg("m2", "c2"), msg("m3", "c3")])
    assert [e.action for e in log.entries()] == ["record_messages"]
    assert log.verify_chain().intact


def test_concurrent_guarded_writers_and_readers_keep_one_chain(
    repo: CommHistory[SQLRepository],
) -> None:
    url = str(repo.store.engine.url.render_as_string(hide_password=False))
    keyring = repo.store.keyring
    repo.record_messages([msg("seed", "c0")])
    errors: list[BaseException] = []
    writers, readers, reads = 3, 2, 10

    def write(n: int) -> None:
        try:
            with open_repository(url, keyring, batch_size=2) as r:
                view = r.as_actor(Actor(f"w{n}", ["operator"]), purpose="load")
                # Overlapping contacts: writers race to create the same ones.
                view.record_messages([msg(f"w{n}-m{i}", f"c{i % 3}") for i in range(6)])
        except BaseException as exc:
            errors.append(exc)

    def read(n: int) -> None:
        try:
            with open_repository(url, keyring) as r:
                view = r.as_actor(Actor(f"r{n}", ["privacy_officer"]), purpose="load")
                for _ in range(reads):
                    view.timeline("c0")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    threads += [threading.Thread(target=read, args=(n,)) for n in range(readers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    report = repo.audit_log.verify_chain()
    assert report.intact
    assert report.entries == writers * 3 + readers * reads  # three batches per writer
    assert len(repo.timeline("c1")) == writers * 2


def test_guarded_erasure_truncates_the_sqlite_wal_after_commit(tmp_path: Path) -> None:
    # The erasure empties the WAL once committed, so no frame keeps an erased
    # mask; under a guarded view the commit is the view's, after the audit entry.
    path = tmp_path / "wal.db"
    with open_repository(f"sqlite:///{path}", Keyring.generate()) as repo:
        repo.record_messages([msg("m1", "c1"), msg("m2", "c2")])
        view = repo.as_actor(Actor("dpo-1", ["privacy_officer"]), purpose="request 7")
        view.erase_subject("c1")
        wal = path.with_name(path.name + "-wal")
        assert not wal.exists() or wal.stat().st_size == 0
        assert repo.audit_log.entries()[-1].action == "erase_subject"
