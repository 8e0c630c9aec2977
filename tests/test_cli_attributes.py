"""``commhistory attributes declare|show``, ``import`` of contact lines, ``validate --schema``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from commhistory.cli import main
from commhistory.crypto import Keyring
from commhistory.facade import open_repository

SCHEMA: dict[str, list[dict[str, Any]]] = {
    "attributes": [
        {"name": "tier", "type": "enum", "values": ["gold", "silver", "bronze"]},
        {"name": "spend", "type": "decimal"},
        {"name": "full_name", "type": "str", "personal": True},
    ]
}
LINES = [
    {
        "kind": "contact",
        "contact_id": "c1",
        "attributes": {"tier": "gold", "spend": "120.50", "full_name": "Taro Yamada"},
        "at": "2026-04-01T09:00:00+09:00",
    },
    {
        "kind": "contact",
        "contact_id": "c1",
        "attributes": {"tier": "silver"},
        "at": "2026-05-01T09:00:00+09:00",
    },
    {
        "kind": "contact",
        "contact_id": "c2",
        "attributes": {"tier": "diamond"},
        "at": "2026-04-01T09:00:00+09:00",
    },
]


@pytest.fixture
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    keyring = tmp_path / "k.keyring"
    Keyring.generate().save(keyring)
    monkeypatch.setenv("COMMHISTORY_DB", f"sqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.setenv("COMMHISTORY_KEYRING", str(keyring))
    for name in ("COMMHISTORY_ACTOR", "COMMHISTORY_ROLES", "COMMHISTORY_POLICY"):
        monkeypatch.delenv(name, raising=False)
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps(SCHEMA), encoding="utf-8")
    crm = tmp_path / "crm.jsonl"
    crm.write_text("".join(json.dumps(line) + "\n" for line in LINES), encoding="utf-8")
    return {"schema": str(schema), "crm": str(crm), "keyring": str(keyring)}


def test_declare_import_show(files: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["init"]) == 0
    assert main(["attributes", "declare", files["schema"]]) == 0
    assert "3 attributes declared" in capsys.readouterr().out
    assert main(["attributes", "declare", files["schema"], "--format", "json"]) == 0
    declared = json.loads(capsys.readouterr().out)["attributes"]
    assert sorted(d["name"] for d in declared) == ["full_name", "spend", "tier"]
    assert {"name": "full_name", "type": "str", "personal": True} in declared

    assert main(["import", files["crm"]]) == 1  # the diamond tier is a dead letter
    capsys.readouterr()

    assert main(["attributes", "show", "c1", "--format", "json"]) == 0
    shown = json.loads(capsys.readouterr().out)["attributes"]
    assert shown == {"tier": "silver", "spend": "120.5", "full_name": "Taro Yamada"}

    assert main(["attributes", "show", "c1", "--at", "2026-04-15T00:00:00Z", "--masked"]) == 0
    out = capsys.readouterr().out
    assert "tier: gold" in out
    assert "full_name: <personal>" in out
    assert "Taro" not in out

    analyst = ["--actor", "ann", "--role", "analyst", "--purpose", "review"]
    assert main(["attributes", "show", "c1", "--history", *analyst]) == 0
    captured = capsys.readouterr()
    assert "lacks permission 'read_personal'" in captured.err
    assert "Taro" not in captured.out
    assert "tier: gold  [2026-04-01T00:00:00Z .. 2026-05-01T00:00:00Z)" in captured.out

    assert main(["attributes", "declare", files["schema"], *analyst]) == 6
    assert main(["attributes", "show", "nobody"]) == 2


def test_type_change_needs_allow_changes(files: dict[str, str]) -> None:
    assert main(["init"]) == 0
    assert main(["attributes", "declare", files["schema"]]) == 0
    changed = Path(files["schema"]).with_name("changed.json")
    changed.write_text(
        json.dumps({"attributes": [{"name": "spend", "type": "str"}]}), encoding="utf-8"
    )
    assert main(["attributes", "declare", str(changed)]) == 2
    assert main(["attributes", "declare", str(changed), "--allow-changes"]) == 0


def test_validate_with_a_schema(files: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", files["crm"]]) == 0
    assert "3 contact updates" in capsys.readouterr().out
    assert main(["validate", files["crm"], "--schema", files["schema"]]) == 1
    out = capsys.readouterr().out
    assert "3: attributes.tier: not an allowed value" in out
    assert main(["validate", files["crm"], "--schema", files["schema"], "--format", "json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["by_kind"]["contacts"] == 2
    assert doc["errors"] == [
        {"line": 3, "field": "attributes.tier", "reason": doc["errors"][0]["reason"]}
    ]


def test_imported_personal_attributes_are_encrypted(files: dict[str, str], tmp_path: Path) -> None:
    assert main(["init"]) == 0
    assert main(["attributes", "declare", files["schema"]]) == 0
    assert main(["import", files["crm"]]) == 1
    blobs = [p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("cli.db")]
    assert not any(b"Taro Yamada" in blob for blob in blobs)
    keyring = Keyring.load(files["keyring"])
    with open_repository(f"sqlite:///{tmp_path / 'cli.db'}", keyring) as repo:
        assert repo.attributes("c1")["full_name"] == "Taro Yamada"
