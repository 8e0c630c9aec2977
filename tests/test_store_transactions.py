"""Nested transactions join the outer one; batch hooks run inside each batch's transaction."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from commhistory.crypto import Keyring
from commhistory.errors import NotFoundError, StorageError
from commhistory.facade import CommHistory, open_repository
from commhistory.model import BounceClass, EventType
from commhistory.store import BatchOutcome, SQLRepository
from tests.conftest import pg_variant_url
from tests.test_consent_support import ev, msg


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgresql", marks=pytest.mark.postgres),
        pytest.param("postgresql-partitioned", marks=pytest.mark.postgres),
    ]
)
def repo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CommHistory[SQLRepository]]:
    """An empty SQL repository on each database, with small batches."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'tx.db'}"
    else:
        url = pg_variant_url(request, request.param)
    with open_repository(url, Keyring.generate(), batch_size=2) as r:
        yield r


class AbortError(Exception):
    """Raised by a test to abort a transaction."""


def inside(repo: CommHistory[SQLRepository]) -> bool:
    """Whether the repository is in a transaction (a call, so type checkers don't narrow it)."""
    return repo.in_transaction


def abort(repo: CommHistory[SQLRepository], body: Callable[[], object]) -> None:
    """Run *body* in a transaction, then abort it."""
    with repo.transaction():
        body()
        raise AbortError


def test_nested_writes_commit_together(repo: CommHistory[SQLRepository]) -> None:
    with repo.transaction():
        assert inside(repo)
        repo.record_messages([msg("m1", "c1"), msg("m2", "c1"), msg("m3", "c2")])
        repo.record_events([ev("e1", "m1", EventType.DELIVERED)])
    assert not inside(repo)
    assert [e.message.message_id for e in repo.timeline("c1")] == ["m1", "m2"]
    assert repo.timeline("c1")[0].events[0].event_id == "e1"


def test_nested_writes_roll_back_together(repo: CommHistory[SQLRepository]) -> None:
    reports = []

    def write() -> None:
        # Three batches of two: all of them are undone, not only the last.
        reports.append(repo.record_messages([msg(f"m{i}", "c1") for i in range(5)]))

    with pytest.raises(AbortError):
        abort(repo, write)
    assert reports[0].inserted == 5
    with pytest.raises(NotFoundError):
        repo.timeline("c1")


def test_rolled_back_contacts_get_a_fresh_key(repo: CommHistory[SQLRepository]) -> None:
    # The first attempt creates c1's data key inside a transaction that rolls
    # back; a cached copy of that key would encrypt the retry's rows with a key
    # the database never stored, and the timeline could not be read.
    with pytest.raises(AbortError):
        abort(repo, lambda: repo.record_messages([msg("m1", "c1", body="first try")]))
    repo.record_messages([msg("m1", "c1", body="second try")])
    repo.record_events([ev("e1", "m1", EventType.OPENED)])
    (entry,) = repo.timeline("c1")
    assert entry.message.body == "second try"
    assert [e.event_id for e in entry.events] == ["e1"]


def test_a_write_cannot_join_a_read(repo: CommHistory[SQLRepository]) -> None:
    with (
        pytest.raises(StorageError, match="read-only transaction"),
        repo.transaction(read=True),
    ):
        repo.record_messages([msg("m1", "c1")])
    with pytest.raises(NotFoundError):
        repo.timeline("c1")


def test_database_errors_inside_a_joined_call_are_storage_errors(
    repo: CommHistory[SQLRepository],
) -> None:
    def nested() -> None:
        with repo.store.transaction() as conn, repo.store.transaction() as inner:
            assert inner is conn
            inner.exec_driver_sql("SELECT * FROM no_such_table")

    with pytest.raises(StorageError):
        nested()
    assert not inside(repo)


def test_batch_hook_sees_every_batch_and_what_changed(repo: CommHistory[SQLRepository]) -> None:
    seen: list[BatchOutcome] = []
    repo.record_messages([msg("m1", "c1"), msg("m2", "c2")])
    with repo.batch_hook(seen.append):
        repo.record_events(
            [
                ev("e1", "m1", EventType.DELIVERED),
                ev("e2", "m2", EventType.BOUNCED, bounce=BounceClass.HARD),
                ev("e3", "m1", EventType.OPENED),
            ]
        )
        repo.consent.grant("c1", "email", "marketing", method="web_form")
    repo.record_events([ev("e4", "m1", EventType.CLICKED)])  # the hook is gone
    assert [o.source for o in seen] == ["record_events", "record_events", "record_consent"]
    assert [o.report.inserted for o in seen] == [2, 1, 1]
    (bounced,) = repo.suppression.for_contact("c2")
    assert seen[0].changed == (bounced.suppression_id,)
    assert seen[1].changed == ()
    assert seen[2].changed == ("c1",)
    # Ids only: no address anywhere in what the hook was given.
    assert "example.com" not in repr(seen)


def test_batch_hook_failure_rolls_back_its_batch_only(repo: CommHistory[SQLRepository]) -> None:
    calls = 0

    def hook(outcome: BatchOutcome) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise AbortError

    with pytest.raises(AbortError), repo.batch_hook(hook):
        repo.record_messages([msg(f"m{i}", "c1") for i in range(4)])
    # The first batch committed before the hook failed on the second.
    assert [e.message.message_id for e in repo.timeline("c1")] == ["m0", "m1"]


def test_batch_hook_writes_commit_with_the_batch(repo: CommHistory[SQLRepository]) -> None:
    def hook(outcome: BatchOutcome) -> None:
        assert inside(repo)
        # A repository call in the hook joins the batch's transaction.
        repo.suppression.add("email", "blocked@example.com")

    def write() -> None:
        with repo.batch_hook(hook):
            repo.record_messages([msg("m1", "c1")])

    with pytest.raises(AbortError):
        abort(repo, write)
    assert not repo.suppression.check("email", "blocked@example.com")


def test_after_commit_waits_for_the_outer_transaction(repo: CommHistory[SQLRepository]) -> None:
    ran: list[str] = []
    repo.after_commit(lambda: ran.append("now"))
    assert ran == ["now"]
    with repo.transaction():
        with repo.transaction():
            repo.after_commit(lambda: ran.append("inner"))
        assert ran == ["now"]  # the inner block ended, but nothing committed yet
    assert ran == ["now", "inner"]
    with pytest.raises(AbortError):
        abort(repo, lambda: repo.after_commit(lambda: ran.append("rolled back")))
    assert ran == ["now", "inner"]
