"""Access control: each built-in role against each operation, denials and audit entries."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import pytest
import sqlalchemy as sa

from commhistory.audit import (
    BUILTIN_ROLES,
    Actor,
    AuditLog,
    Outcome,
    Permission,
    Policy,
)
from commhistory.crypto import Keyring
from commhistory.errors import InvalidInputError, NotFoundError, PermissionDenied
from commhistory.facade import CommHistory, GuardedRepository, open_repository
from commhistory.kpi import Cost
from commhistory.model import EventType
from commhistory.store import SQLRepository
from tests.test_consent_support import ev, msg

P = Permission


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def repo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CommHistory[SQLRepository]]:
    """A SQL repository with two contacts' history."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'access.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    with open_repository(url, Keyring.generate()) as r:
        r.consent.grant("c1", "email", "marketing", method="web_form", ip="198.51.100.7")
        r.record_messages([msg("m1", "c1", body="hidden body text"), msg("m2", "c2")])
        r.record_events([ev("e1", "m1", EventType.DELIVERED, day=0.1)])
        yield r


Op = tuple[str, Permission, bool, Callable[[GuardedRepository], Any]]

COST = Cost(
    cost_id="k1",
    campaign_id="spring",
    amount=Decimal("100"),
    currency="JPY",
    starts_at=datetime(2024, 5, 1, tzinfo=UTC),
    ends_at=datetime(2024, 5, 2, tzinfo=UTC),
)

# (action, permission needed, audited when allowed, call)
OPERATIONS: list[Op] = [
    ("kpis", P.READ_METRICS, False, lambda v: v.kpis(by="campaign_id")),
    ("costs", P.READ_METRICS, False, lambda v: v.costs()),
    ("can_send", P.READ_HISTORY_MASKED, False, lambda v: v.can_send("c1", "email", "marketing")),
    (
        "can_send.address",
        P.READ_PERSONAL,
        True,
        lambda v: v.can_send("c1", "email", "marketing", address="c1@example.com"),
    ),
    (
        "filter_sendable",
        P.READ_HISTORY_MASKED,
        False,
        lambda v: v.filter_sendable(["c1", "c2"], "email", "marketing"),
    ),
    (
        "consent.status",
        P.READ_HISTORY_MASKED,
        False,
        lambda v: v.consent.status("c1", "email", "marketing"),
    ),
    (
        "suppression.check",
        P.READ_PERSONAL,
        True,
        lambda v: v.suppression.check("email", "c1@example.com"),
    ),
    ("masked_timeline", P.READ_HISTORY_MASKED, False, lambda v: v.masked_timeline("c1")),
    ("timeline", P.READ_PERSONAL, True, lambda v: v.timeline("c1")),
    ("consent_history", P.READ_PERSONAL, True, lambda v: v.consent_history("c1")),
    ("consent.history", P.READ_PERSONAL, True, lambda v: v.consent.history("c1")),
    ("find_contacts", P.READ_PERSONAL, True, lambda v: v.find_contacts(email="c1@example.com")),
    ("dead_letters", P.READ_PERSONAL, True, lambda v: v.dead_letters()),
    ("suppression.for_contact", P.READ_PERSONAL, True, lambda v: v.suppression.for_contact("c1")),
    (
        "suppression.entries",
        P.READ_PERSONAL,
        True,
        lambda v: v.suppression.entries("email", "c1@example.com"),
    ),
    ("record_messages", P.WRITE_HISTORY, True, lambda v: v.record_messages([msg("m9", "c1")])),
    ("record_costs", P.WRITE_HISTORY, True, lambda v: v.record_costs([COST])),
    (
        "record_events",
        P.WRITE_HISTORY,
        True,
        lambda v: v.record_events([ev("e9", "m1", EventType.OPENED, day=0.2)]),
    ),
    (
        "consent.grant",
        P.MANAGE_CONSENT,
        True,
        lambda v: v.consent.grant("c2", "email", "marketing", method="web_form"),
    ),
    (
        "consent.withdraw",
        P.MANAGE_CONSENT,
        True,
        lambda v: v.consent.withdraw("c2", "email", "marketing", method="web_form"),
    ),
    (
        "suppression.add",
        P.MANAGE_CONSENT,
        True,
        lambda v: v.suppression.add("email", "x@example.com"),
    ),
    (
        "suppression.lift",
        P.MANAGE_CONSENT,
        True,
        lambda v: v.suppression.lift("email", "x@example.com"),
    ),
    ("export_subject", P.EXPORT_SUBJECT, True, lambda v: v.export_subject("c1")),
    ("rotate_keys", P.MANAGE_KEYS, True, lambda v: v.rotate_keys()),
    ("backfill_masks", P.MANAGE_KEYS, True, lambda v: v.backfill_masks()),
    ("purge", P.ERASE_SUBJECT, True, lambda v: v.purge(dry_run=False)),
    ("purge.dry_run", P.ERASE_SUBJECT, False, lambda v: v.purge()),
    ("erase_subject", P.ERASE_SUBJECT, True, lambda v: v.erase_subject("c2")),  # keep last
]

EXPECTED: dict[str, set[Permission]] = {
    "analyst": {P.READ_METRICS, P.READ_HISTORY_MASKED},
    "operator": {P.READ_METRICS, P.READ_HISTORY_MASKED, P.WRITE_HISTORY, P.MANAGE_CONSENT},
    "privacy_officer": {
        P.READ_HISTORY_MASKED,
        P.READ_PERSONAL,
        P.MANAGE_CONSENT,
        P.EXPORT_SUBJECT,
        P.ERASE_SUBJECT,
    },
    "admin": set(Permission),
}


def test_builtin_roles_are_as_documented() -> None:
    assert {k: set(v) for k, v in BUILTIN_ROLES.items()} == EXPECTED


def test_every_permission_has_an_operation() -> None:
    assert {op[1] for op in OPERATIONS} == set(Permission)


@pytest.mark.parametrize("role", sorted(EXPECTED))
def test_each_role_against_each_operation(repo: CommHistory[SQLRepository], role: str) -> None:
    log = repo.audit_log
    view = repo.as_actor(Actor("staff-1", [role]), purpose="table test")
    for action, permission, audited, call in OPERATIONS:
        before = len(log.entries())
        if permission in EXPECTED[role]:
            call(view)
            after = log.entries()
            if audited:
                assert len(after) == before + 1, action
                entry = after[-1]
                assert (entry.action, entry.outcome) == (action, Outcome.OK)
                assert entry.permission == permission
                assert entry.actor_id == "staff-1"
                assert entry.roles == (role,)
                assert entry.purpose == "table test"
            else:
                assert len(after) == before, action
        else:
            with pytest.raises(PermissionDenied) as info:
                call(view)
            assert info.value.permission == permission, action
            assert info.value.actor == "staff-1"
            entry = log.entries()[-1]
            assert len(log.entries()) == before + 1, action
            assert (entry.action, entry.outcome, entry.permission) == (
                action,
                Outcome.DENIED,
                permission,
            )
    assert log.verify_chain().intact


def test_denied_write_changes_nothing(repo: CommHistory[SQLRepository]) -> None:
    view = repo.as_actor(Actor("a-1", ["analyst"]), purpose="p")
    with pytest.raises(PermissionDenied):
        view.record_messages([msg("m7", "c1")])
    with pytest.raises(PermissionDenied):
        view.erase_subject("c1")
    assert [e.message.message_id for e in repo.timeline("c1")] == ["m1"]


def test_audit_entries_hold_ids_not_personal_values(repo: CommHistory[SQLRepository]) -> None:
    view = repo.as_actor(Actor("po-1", ["privacy_officer"]), purpose="request 7")
    view.timeline("c1")
    view.find_contacts(email="c1@example.com")
    view.export_subject("c1")
    view.consent_history("c1")
    # (The fixture's own consent grant is audited too, as the facade's default actor.)
    entries = repo.audit_log.entries(actor_id="po-1")
    assert [e.action for e in entries] == [
        "timeline",
        "find_contacts",
        "export_subject",
        "consent_history",
    ]
    assert entries[0].contact_id == "c1"
    assert entries[0].targets == ("m1",)
    assert entries[1].targets == ("c1",)
    with repo.store.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT * FROM audit_log")).all()
    text = repr(rows)
    for personal in ("example.com", "198.51.100.7", "hidden body", "+8190"):
        assert personal not in text


def test_failed_operation_is_audited_as_failed(repo: CommHistory[SQLRepository]) -> None:
    view = repo.as_actor(Actor("po-1", ["privacy_officer"]), purpose="p")
    with pytest.raises(NotFoundError):
        view.export_subject("nobody")
    entry = repo.audit_log.entries()[-1]
    assert entry.outcome == "failed:NotFoundError"
    assert entry.contact_id == "nobody"


def test_plain_repository_checks_nothing_and_audits_only_changes_and_exports(
    repo: CommHistory[SQLRepository],
) -> None:
    before = len(repo.audit_log.entries())
    assert repo.timeline("c1")  # a read without a bound actor: not audited
    assert len(repo.audit_log.entries()) == before
    assert repo.export_subject("c1")["messages"]  # audited as the default actor
    entry = repo.audit_log.entries()[-1]
    assert (entry.action, entry.outcome, entry.contact_id) == ("export_subject", "ok", "c1")
    assert entry.actor_id == repo.default_actor.id
    assert entry.actor_id.startswith("api:")


def test_view_exposes_no_backdoor(repo: CommHistory[SQLRepository]) -> None:
    view = repo.as_actor(Actor("a-1", ["analyst"]), purpose="p")
    for name in ("engine", "keyring", "backend", "transaction", "_repo_engine"):
        assert not hasattr(view, name)
    with view as same:
        assert same is view
    assert repo.timeline("c1")  # leaving the view does not close the repository
    assert "staff" not in repr(view)
    assert view.allows("read_metrics")
    assert not view.allows(P.READ_PERSONAL)


# ---------------------------------------------------------------------- policy


def test_host_defined_role() -> None:
    policy = Policy({"support": ["read_history_masked", P.MANAGE_CONSENT]})
    actor = Actor("s-1", ["support"])
    assert policy.permissions_of(actor) == {P.READ_HISTORY_MASKED, P.MANAGE_CONSENT}
    assert policy.allows(actor, "manage_consent")
    assert not policy.allows(actor, P.READ_PERSONAL)
    assert "analyst" in policy.roles


def test_host_may_redefine_or_drop_builtin_roles() -> None:
    narrowed = Policy({"analyst": ["read_metrics"]})
    assert narrowed.permissions_of(Actor("a", ["analyst"])) == {P.READ_METRICS}
    bare = Policy({"auditor": []}, builtin=False)
    assert set(bare.roles) == {"auditor"}


def test_roles_union() -> None:
    actor = Actor("x", ["analyst", "operator"])
    assert Policy().permissions_of(actor) == EXPECTED["analyst"] | EXPECTED["operator"]


def test_policy_errors() -> None:
    with pytest.raises(InvalidInputError) as info:
        Policy({"support": ["read_everything"]})
    assert info.value.field == "roles.support"
    with pytest.raises(InvalidInputError) as info:
        Policy({"Bad Role": []})
    assert info.value.field == "roles"
    with pytest.raises(InvalidInputError) as info:
        Policy().allows(Actor("a", ["admin"]), "nope")
    assert info.value.field == "permission"


def test_actor_errors() -> None:
    with pytest.raises(InvalidInputError) as info:
        Actor("", ["admin"])
    assert info.value.field == "id"
    with pytest.raises(InvalidInputError) as info:
        Actor("a", [])
    assert info.value.field == "roles"
    assert Actor("a", "admin").roles == ("admin",)
    assert Actor("a", ["operator", "admin", "admin"]).roles == ("admin", "operator")


def test_unknown_role_and_bad_purpose_are_refused(repo: CommHistory[SQLRepository]) -> None:
    with pytest.raises(InvalidInputError) as info:
        repo.as_actor(Actor("a", ["ghost"]), purpose="p")
    assert info.value.field == "roles"
    assert "ghost" in str(info.value)
    with pytest.raises(InvalidInputError) as info:
        repo.as_actor(Actor("a", ["admin"]), purpose="  ")
    assert info.value.field == "purpose"


def test_memory_repository_takes_an_explicit_log() -> None:
    mem = CommHistory.in_memory()
    mem.record_messages([msg("m1", "c1")])
    log = AuditLog.in_memory(Keyring.generate())
    view = mem.as_actor(Actor("a", ["admin"]), purpose="p", audit=log)
    assert [e.message.message_id for e in view.timeline("c1")] == ["m1"]
    with pytest.raises(InvalidInputError):
        view.rotate_keys()
    # The refused key operation is audited as a failure.
    assert [(e.action, e.outcome) for e in log.entries()] == [
        ("timeline", "ok"),
        ("rotate_keys", "failed:InvalidInputError"),
    ]
    assert log.verify_chain().intact


# ---------------------------------------------------------------------- repo.as_actor


def test_repo_as_actor_on_sql(repo: CommHistory[SQLRepository]) -> None:
    view = repo.as_actor(Actor("a-1", ["analyst"]), purpose="weekly report")
    assert isinstance(view, GuardedRepository)
    assert view.kpis(by="campaign_id").rows
    with pytest.raises(PermissionDenied):
        view.timeline("c1")
    entries = repo.audit_log.entries(actor_id="a-1")
    assert [(e.action, e.outcome, e.purpose) for e in entries] == [
        ("timeline", Outcome.DENIED, "weekly report")
    ]


def test_repo_as_actor_on_memory_shares_one_log() -> None:
    mem = CommHistory.in_memory()
    mem.record_messages([msg("m1", "c1")])
    first = mem.as_actor(Actor("a", ["admin"]), purpose="p")
    second = mem.as_actor(Actor("b", ["analyst"]), purpose="q")
    first.timeline("c1")
    with pytest.raises(PermissionDenied):
        second.export_subject("c1")
    log = first.audit_log
    assert second.audit_log is log
    assert [(e.actor_id, e.outcome) for e in log.entries()] == [
        ("a", Outcome.OK),
        ("b", Outcome.DENIED),
    ]
    assert log.verify_chain().intact


def test_consent_lines_in_an_ingest_need_manage_consent(repo: CommHistory[SQLRepository]) -> None:
    from commhistory.convert import ParsedLine

    grant = repo.consent_history("c1")[0]
    policy = Policy({"loader": ["write_history"]})
    view = repo.as_actor(Actor("svc-1", ["loader"]), purpose="import", policy=policy)
    lines = [
        ParsedLine(line=1, raw=None, record=msg("m7", "c2")),
        ParsedLine(line=2, raw=None, record=attrs.evolve(grant, consent_id="other-1")),
    ]
    with pytest.raises(PermissionDenied) as info:
        view.ingest(lines, source="file.jsonl")
    assert info.value.permission == P.MANAGE_CONSENT
    # The batch holding the consent line stored nothing.
    assert [e.message.message_id for e in repo.timeline("c2")] == ["m2"]
    assert len(repo.consent_history("c1")) == 1
    last = repo.audit_log.entries()[-1]
    assert (last.action, last.outcome, last.permission) == ("ingest", "denied", "manage_consent")
    # Messages alone are fine.
    assert view.ingest(lines[:1], source="file.jsonl").inserted == 1
