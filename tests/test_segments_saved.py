"""Saved segments: versions, snapshots, deltas, erasure, schema checks, the guarded view."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from commhistory import criteria as c
from commhistory.audit import Actor
from commhistory.contacts import AttributeDefinition
from commhistory.crypto import Keyring
from commhistory.errors import CriteriaSchemaError, NotFoundError, PermissionDenied
from commhistory.facade import CommHistory, open_repository
from commhistory.model import Channel, ConsentAction, ConsentEvent, ConsentMethod, Purpose

T0 = datetime(2026, 6, 1, tzinfo=UTC)


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def repo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CommHistory[Any]]:
    if request.param == "memory":
        r: CommHistory[Any] = CommHistory.in_memory()
    elif request.param == "sqlite":
        r = open_repository(f"sqlite:///{tmp_path / 's.db'}", Keyring.generate())
    else:
        r = open_repository(request.getfixturevalue("pg_url"), Keyring.generate())
    r.declare_attributes(
        [
            AttributeDefinition(name="tier", type="enum", values=("gold", "silver")),
            AttributeDefinition(name="full_name", type="str", personal=True),
        ]
    )
    try:
        yield r
    finally:
        r.close()


def _grant(repo: CommHistory[Any], cid: str, at: datetime) -> None:
    repo.record_consent(
        [
            ConsentEvent(
                contact_id=cid, channel=Channel.EMAIL, purpose=Purpose.MARKETING,
                action=ConsentAction.GRANT, occurred_at=at, method=ConsentMethod.WEB_FORM,
            )
        ]
    )  # fmt: skip


def test_versions_snapshots_deltas_and_erasure(repo: CommHistory[Any]) -> None:
    gold = c.attr("tier") == "gold"
    for cid in ("c1", "c2", "c3"):
        repo.set_attributes(cid, {"tier": "gold" if cid != "c3" else "silver"}, at=T0)
    v1 = repo.save_segment("vip", gold)
    assert (v1.name, v1.version) == ("vip", 1)
    assert repo.save_segment("vip", gold.to_dict()).version == 1  # unchanged: same version
    v2 = repo.save_segment("vip", gold & c.consent("email"))
    assert v2.version == 2
    assert [s.version for s in repo.segments("vip")] == [1, 2]

    first = repo.segment_snapshot("vip", version=1)
    assert first.size == 2
    repo.set_attributes("c2", {"tier": "silver"}, at=T0 + timedelta(days=1))
    repo.set_attributes("c3", {"tier": "gold"}, at=T0 + timedelta(days=1))
    repo.set_attributes("c4", {"tier": "gold"}, at=T0 + timedelta(days=1))
    second = repo.segment_snapshot("vip", version=1)
    d = repo.segment_delta("vip")
    assert (d.entered, d.left) == (("c3", "c4"), ("c2",))
    assert (d.before.snapshot_id, d.after.snapshot_id) == (first.snapshot_id, second.snapshot_id)

    # Erasure removes the contact from every snapshot: no delta brings it back.
    report = repo.erase_subject("c3")
    assert {i.what: i.count for i in report.destroyed}["segment_snapshots"] == 1
    assert repo.store.segment_store.snapshot_members(second.snapshot_id) == ["c1", "c4"]
    assert repo.segment_delta("vip").entered == ("c4",)
    assert "c3" not in repo.segment_members(c.all_())

    # A snapshot as a static list.
    from commhistory.segments import snapshot_list

    listed = snapshot_list(repo.store, first.snapshot_id)
    assert repo.segment_members(listed) == ["c1", "c2"]

    # The latest version (with consent) keeps nobody until a grant.
    assert repo.segment_snapshot("vip").size == 0
    _grant(repo, "c1", T0)
    assert repo.segment_snapshot("vip").size == 1


def test_missing_segments_and_snapshots(repo: CommHistory[Any]) -> None:
    with pytest.raises(NotFoundError):
        repo.segment_snapshot("nothing")
    repo.save_segment("one", c.all_())
    repo.segment_snapshot("one")
    with pytest.raises(NotFoundError):
        repo.segment_delta("one")
    with pytest.raises(NotFoundError):
        repo.store.segment_store.snapshot_members("no-such-id")


@pytest.mark.parametrize(
    ("tree", "path", "reason"),
    [
        ({"attribute": "age", "op": ">", "value": 3}, "$.attribute", "not a declared"),
        (
            {"all": [{"attribute": "full_name", "op": "is set"}]},
            "$.all[0].attribute",
            "personal",
        ),
        ({"attribute": "tier", "op": ">", "value": "gold"}, "$.op", "not an operator of enum"),
        (
            {"attribute": "tier", "op": "in", "value": ["gold", "platinum"]},
            "$.value[1]",
            "enum's values",
        ),
        (
            {"activity": "purchase", "where": [{"property": "sku", "op": "is set"}]},
            "$.activity",
            "not a declared activity",
        ),
    ],
)
def test_schema_errors_name_the_path(
    repo: CommHistory[Any], tree: dict[str, Any], path: str, reason: str
) -> None:
    with pytest.raises(CriteriaSchemaError) as info:
        repo.segment_count(tree)
    assert info.value.path == path
    assert reason in info.value.reason


def test_the_store_refuses_personal_and_undeclared_keys_itself(repo: CommHistory[Any]) -> None:
    repo.declare_activities({"purchase": ["sku"]})
    store = repo.store.segment_store
    with pytest.raises(CriteriaSchemaError, match="personal"):
        store.count(c.attr("full_name").is_set())
    with pytest.raises(CriteriaSchemaError, match=r"where\[0\]\.property"):
        store.count(c.activity("purchase", where=[c.PropertyFilter(key="note", op="is set")]))


def test_guarded_view_permissions_and_audit(repo: CommHistory[Any]) -> None:
    repo.set_attributes("c1", {"tier": "gold"}, at=T0)
    analyst = repo.as_actor(Actor("ana", ["analyst"]), purpose="campaign sizing")
    tree = c.attr("tier") == "gold"
    assert analyst.segment_count(tree) == 1
    assert analyst.segment_explain(tree).kept == 1
    assert analyst.segment_members(tree) == ["c1"]
    with pytest.raises(PermissionDenied):
        analyst.save_segment("gold", tree)
    actions = [e.action for e in repo.audit_log.entries()]
    assert "segment_members" in actions
    assert "segment_count" not in actions
