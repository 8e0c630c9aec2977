"""Send planning over a segment: its members are the candidates, read at the plan's instant."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from commhistory import criteria as c
from commhistory.cli import main
from commhistory.contacts import AttributeDefinition, AttributeType
from commhistory.crypto import Keyring
from commhistory.errors import CriteriaSchemaError
from commhistory.facade import CommHistory, open_repository
from commhistory.model import ConsentAction
from commhistory.segments.planning import ExclusionReason, PlanConfig, SegmentCandidates
from tests.test_planning_rules import BACKENDS, T0, consent, reasons, repo, seed, sent

__all__ = ["BACKENDS", "repo"]  # the three-store fixture, shared with the rules' tests

AT = T0 + timedelta(hours=3)


def _history(repo: CommHistory[Any]) -> None:
    repo.declare_attributes(
        [AttributeDefinition(name="tier", type=AttributeType.ENUM, values=("gold", "silver"))]
    )
    seed(repo, ["g1", "g2", "g3", "s1"])
    for contact in ("g1", "g2", "g3"):
        repo.set_attributes(contact, {"tier": "gold"}, at=T0 - timedelta(days=1))
    repo.set_attributes("s1", {"tier": "silver"}, at=T0 - timedelta(days=1))
    repo.record_consent([consent("g3", action=ConsentAction.WITHDRAW, at=T0)])
    repo.record_messages([sent("g2", T0 + timedelta(hours=1))])  # a recent marketing email


def test_a_segment_plans_like_its_members(repo: CommHistory[Any]) -> None:
    _history(repo)
    gold = c.attr("tier") == "gold"
    caps = [{"channel": "email", "purpose": "marketing", "limit": 1, "days": 7}]
    config = PlanConfig.from_dict({"caps": caps})
    by_tree = repo.plan_send(gold, channel="email", purpose="marketing", at=AT, config=config)
    members = repo.segment_members(gold, at=AT)
    by_ids = repo.plan_send(members, channel="email", purpose="marketing", at=AT, config=config)
    assert members == ["g1", "g2", "g3"]
    assert (
        reasons(by_tree)
        == reasons(by_ids)
        == {
            "g1": "send",
            "g2": ExclusionReason.FREQUENCY_CAP.value,
            "g3": ExclusionReason.NO_CONSENT.value,
        }
    )
    # The JSON form is the same segment.
    by_json = repo.plan_send(
        gold.to_dict(), channel="email", purpose="marketing", at=AT, config=config
    )
    assert reasons(by_json) == reasons(by_tree)


def test_the_segment_is_read_at_the_plans_instant(repo: CommHistory[Any]) -> None:
    _history(repo)
    repo.set_attributes("s1", {"tier": "gold"}, at=AT + timedelta(days=1))
    gold = c.attr("tier") == "gold"
    before = repo.plan_send(gold, channel="email", purpose="marketing", at=AT)
    after = repo.plan_send(gold, channel="email", purpose="marketing", at=AT + timedelta(days=2))
    assert "s1" not in reasons(before)
    assert reasons(after)["s1"] == "send"


def test_a_segment_cannot_bypass_consent(repo: CommHistory[Any]) -> None:
    _history(repo)
    only_g3 = c.in_list(["g3"])
    plan = repo.plan_send(only_g3, channel="email", purpose="marketing", at=AT)
    assert reasons(plan) == {"g3": ExclusionReason.NO_CONSENT.value}


def test_a_tree_naming_an_undeclared_attribute_is_refused(repo: CommHistory[Any]) -> None:
    _history(repo)
    with pytest.raises(CriteriaSchemaError) as caught:
        repo.plan_send(c.attr("colour") == "red", channel="email", purpose="marketing", at=AT)
    assert "colour" in str(caught.value) or caught.value.path.startswith("$")


def test_segment_candidates_is_a_candidate_source(repo: CommHistory[Any]) -> None:
    _history(repo)
    source = SegmentCandidates(c.attr("tier") == "silver")
    plan = repo.plan_send(source, channel="email", purpose="marketing", at=AT)
    assert reasons(plan) == {"s1": "send"}


# ------------------------------------------------------------------ the CLI


@pytest.fixture
def cli_store(tmp_path: Path) -> list[str]:
    db = f"sqlite:///{tmp_path / 'seg.db'}"
    keyring = Keyring.generate()
    path = tmp_path / "k.keyring"
    keyring.save(path)
    with open_repository(db, keyring) as facade:
        _history(facade)
    return ["--db", db, "--keyring", str(path)]


def test_cli_plan_send_takes_a_segment_file(
    tmp_path: Path, cli_store: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    segment = tmp_path / "gold.json"
    segment.write_text((c.attr("tier") == "gold").to_json(), encoding="utf-8")
    code = main(
        ["plan-send", str(segment), "--channel", "email", "--purpose", "marketing",
         "--at", AT.isoformat(), "--format", "csv", *cli_store]
    )  # fmt: skip
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "contact_id,decision,reason,until"
    rows = {line.split(",")[0]: line.split(",")[1:3] for line in lines[1:]}
    assert rows == {"g1": ["send", ""], "g2": ["send", ""], "g3": ["exclude", "no_consent"]}
    assert "@" not in "".join(lines)  # ids only, never an address


def test_cli_plan_send_needs_exactly_one_source(
    tmp_path: Path, cli_store: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    segment = tmp_path / "gold.json"
    segment.write_text((c.attr("tier") == "gold").to_json(), encoding="utf-8")
    ids = tmp_path / "ids.txt"
    ids.write_text("g1\n", encoding="utf-8")
    base = ["--channel", "email", "--purpose", "marketing", *cli_store]
    assert main(["plan-send", *base]) == 2
    assert main(["plan-send", str(segment), "--contacts", str(ids), *base]) == 2
    assert "one of them" in capsys.readouterr().err
