"""``commhistory segment count|list|explain|save|snapshot|delta``."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from commhistory.cli import main
from commhistory.contacts import AttributeDefinition
from commhistory.crypto import Keyring
from commhistory.facade import open_repository
from commhistory.model import Channel, ConsentAction, ConsentEvent, ConsentMethod, Purpose

TREE = {
    "all": [
        {"attribute": "tier", "op": "in", "value": ["gold", "silver"]},
        {"consent": "email", "purpose": "marketing"},
    ]
}


@pytest.fixture
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    keyring = tmp_path / "k.keyring"
    ring = Keyring.generate()
    ring.save(keyring)
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("COMMHISTORY_DB", url)
    monkeypatch.setenv("COMMHISTORY_KEYRING", str(keyring))
    for name in ("COMMHISTORY_ACTOR", "COMMHISTORY_ROLES", "COMMHISTORY_POLICY"):
        monkeypatch.delenv(name, raising=False)
    at = datetime(2026, 5, 1, tzinfo=UTC)
    with open_repository(url, ring) as repo:
        repo.declare_attributes(
            [
                AttributeDefinition(name="tier", type="enum", values=("gold", "silver")),
                AttributeDefinition(name="full_name", type="str", personal=True),
            ]
        )
        for cid, tier in (("c1", "gold"), ("c2", "silver"), ("c3", "gold")):
            repo.set_attributes(cid, {"tier": tier, "full_name": "Taro Yamada"}, at=at)
        repo.record_consent(
            [
                ConsentEvent(
                    contact_id=cid, channel=Channel.EMAIL, purpose=Purpose.MARKETING,
                    action=ConsentAction.GRANT, occurred_at=at, method=ConsentMethod.WEB_FORM,
                )
                for cid in ("c1", "c2")
            ]
        )  # fmt: skip
    tree = tmp_path / "tree.json"
    tree.write_text(json.dumps(TREE), encoding="utf-8")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"all": [{"attribute": "full_name", "op": "is set"}]}))
    return {"tree": str(tree), "bad": str(bad)}


def test_count_list_explain(files: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["segment", "count", files["tree"]]) == 0
    assert capsys.readouterr().out.strip() == "2"
    assert main(["segment", "list", files["tree"]]) == 0
    out = capsys.readouterr().out
    assert out.split() == ["c1", "c2"]
    assert "Taro" not in out
    assert main(["segment", "explain", files["tree"]]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("all of 2  [kept 2, cumulative 2]")
    assert lines[1].strip().startswith('tier in ["gold", "silver"]  [kept 3, cumulative 3]')
    assert lines[2].strip() == "consent email/marketing  [kept 2, cumulative 2]"
    assert main(["segment", "explain", files["tree"], "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [ch["kept"] for ch in data["children"]] == [3, 2]
    assert main(["segment", "count", files["tree"], "--at", "2026-04-01T00:00:00Z"]) == 0
    assert capsys.readouterr().out.strip() == "0"


def test_bad_trees_exit_2_naming_the_path(
    files: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["segment", "count", files["bad"]]) == 2
    err = capsys.readouterr().err
    assert "$.all[0].attribute" in err
    assert "personal" in err


def test_saved_segment_snapshot_delta(
    files: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["segment", "save", "engaged", files["tree"]]) == 0
    assert "version 1" in capsys.readouterr().out
    assert main(["segment", "snapshot", "engaged"]) == 0
    assert "2 contacts" in capsys.readouterr().out
    assert main(["segment", "snapshot", "engaged", "--at", "2026-04-01T00:00:00Z"]) == 0
    capsys.readouterr()
    assert main(["segment", "delta", "engaged"]) == 0
    assert capsys.readouterr().out.split() == ["-", "c1", "-", "c2"]


def test_list_needs_read_history_masked(
    files: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["segment", "list", files["tree"], "--actor", "bob", "--role", "privacy_officer",
                 "--purpose", "check"])  # fmt: skip
    assert code == 0
    code = main(["segment", "count", files["tree"], "--actor", "bob", "--role",
                 "privacy_officer"])  # fmt: skip
    assert code == 6
