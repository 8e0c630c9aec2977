"""Audit by default (issue 13 item 5): the facade records its changes without a guarded view.

Erasure, subject export, key rotation, a real purge and consent and suppression
changes write one entry as the facade's default actor (``api:<process user>``,
or ``default_actor=``), in the change's own transaction; through a guarded view
they write the view's entry only; reads are audited only through a view.
"""

from __future__ import annotations

import getpass
from collections.abc import Iterator
from pathlib import Path

import pytest

from commhistory.audit import Actor, Outcome
from commhistory.crypto import Keyring
from commhistory.errors import InvalidInputError, NotFoundError, StorageError
from commhistory.facade import CommHistory, open_repository
from commhistory.privacy import RetentionPolicy
from commhistory.store import SQLRepository
from tests.test_audit_atomic import _break_audit_log
from tests.test_consent_support import msg


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def repo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CommHistory[SQLRepository]]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'default.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    with open_repository(url, Keyring.generate()) as r:
        r.record_messages([msg("m1", "c1"), msg("m2", "c2")])
        yield r


def _actions(repo: CommHistory[SQLRepository]) -> list[tuple[str, str, str, str | None]]:
    return [(e.actor_id, e.action, e.outcome, e.contact_id) for e in repo.audit_log.entries()]


API = f"api:{getpass.getuser()}"


def test_api_erasure_without_a_view_leaves_an_entry(repo: CommHistory[SQLRepository]) -> None:
    repo.erase_subject("c1")
    (entry,) = repo.audit_log.entries()
    assert (entry.actor_id, entry.roles, entry.action, entry.outcome, entry.contact_id) == (
        API,
        ("admin",),
        "erase_subject",
        Outcome.OK,
        "c1",
    )
    assert (entry.permission, entry.purpose) == ("erase_subject", "commhistory api")
    assert repo.audit_log.verify_chain().intact


def test_every_change_and_export_is_audited_reads_are_not(
    repo: CommHistory[SQLRepository],
) -> None:
    repo.timeline("c1")
    repo.consent_history("c1")
    repo.find_contacts(email="c1@example.com")
    repo.consent.status("c1", "email", "marketing")
    repo.consent.history("c1")
    assert repo.audit_log.entries() == []
    granted = repo.consent.grant("c1", "email", "marketing", method="web_form")
    repo.consent.withdraw("c1", "email", "marketing", method="support_request")
    added = repo.suppression.add("email", "c2@example.com", cause_id="ticket-1")
    assert repo.suppression.lift("email", "c2@example.com") == 1
    repo.export_subject("c2")
    repo.purge(RetentionPolicy(), dry_run=True)  # a dry run deletes nothing: not audited
    repo.purge(RetentionPolicy(), dry_run=False)
    repo.rotate_keys()
    with pytest.raises(NotFoundError):
        repo.erase_subject("nobody")
    assert _actions(repo) == [
        (API, "consent.grant", "ok", "c1"),
        (API, "consent.withdraw", "ok", "c1"),
        (API, "suppression.add", "ok", None),
        (API, "suppression.lift", "ok", None),
        (API, "export_subject", "ok", "c2"),
        (API, "purge", "ok", None),
        (API, "rotate_keys", "ok", None),
        (API, "erase_subject", "failed:NotFoundError", "nobody"),
    ]
    entries = repo.audit_log.entries()
    assert entries[0].targets == (granted.consent_id,)
    assert entries[2].targets == (added.suppression_id,)
    assert repo.audit_log.verify_chain().intact


def test_a_view_writes_its_own_entry_only(repo: CommHistory[SQLRepository]) -> None:
    view = repo.as_actor(Actor("po-1", ["privacy_officer"]), purpose="request 12")
    view.consent.grant("c1", "email", "marketing", method="web_form")
    view.export_subject("c1")
    view.erase_subject("c1")
    assert _actions(repo) == [
        ("po-1", "consent.grant", "ok", "c1"),
        ("po-1", "export_subject", "ok", "c1"),
        ("po-1", "erase_subject", "ok", "c1"),
    ]


def test_an_api_erasure_whose_entry_cannot_be_written_is_rolled_back(
    repo: CommHistory[SQLRepository],
) -> None:
    _break_audit_log(repo)
    with pytest.raises(StorageError):
        repo.erase_subject("c1")
    with pytest.raises(StorageError):
        repo.consent.grant("c1", "email", "marketing", method="web_form")
    with pytest.raises(StorageError):
        repo.suppression.add("email", "c2@example.com", cause_id="ticket-1")
    # Nothing was kept without its entry.
    assert repo.timeline("c1")[0].message.address == "c1@example.com"
    assert repo.consent.history("c1") == []
    assert repo.suppression.for_contact("c2") == []


def test_the_default_actor_and_purpose_are_configurable(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'conf.db'}"
    with open_repository(url, Keyring.generate()) as opened:
        opened.record_messages([msg("m1", "c1")])
        repo = CommHistory(
            opened.store, default_actor=Actor("svc-crm", ["crm_sync"]), default_purpose="crm sync"
        )
        assert repo.default_actor == Actor("svc-crm", ["crm_sync"])
        repo.consent.grant("c1", "email", "marketing", method="web_form")
        (entry,) = repo.audit_log.entries()
        assert (entry.actor_id, entry.roles, entry.purpose) == (
            "svc-crm",
            ("crm_sync",),
            "crm sync",
        )
        # The facade records, it does not check: a role with no known permission still acts.
        assert entry.outcome == Outcome.OK
    with pytest.raises(InvalidInputError):
        CommHistory(opened.store, default_purpose=" ")
    with pytest.raises(InvalidInputError):
        CommHistory(opened.store, default_actor="svc")  # type: ignore[arg-type]


def test_the_in_memory_facade_audits_too() -> None:
    repo = CommHistory.in_memory()
    repo.record_messages([msg("m1", "c1")])
    repo.erase_subject("c1")
    assert [e.action for e in repo.audit_log.entries()] == ["erase_subject"]
