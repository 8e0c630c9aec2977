"""The activity commands: declare, validate, import, show."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from commhistory.cli import main

LINES = [
    {"kind": "activity", "activity_id": "a1", "contact_id": "c1", "name": "purchase",
     "occurred_at": "2026-04-01T21:00:00+09:00", "revenue": "4980", "currency": "JPY",
     "properties": {"sku": "SKU-1", "gift_message": "for Hanako"}},
    {"kind": "activity", "activity_id": "a2", "contact_id": "c1", "name": "page_view",
     "occurred_at": "2026-04-01T20:00:00+09:00", "properties": {"url_path": "/shoes"}},
    {"kind": "activity", "activity_id": "a3", "contact_id": "c1", "name": "refund",
     "occurred_at": "2026-04-02T09:00:00+09:00"},
    {"kind": "activity", "activity_id": "a4", "contact_id": "c1", "name": "purchase",
     "occurred_at": "2026-04-02T09:00:00+09:00", "revenue": "10", "currency": "JPY",
     "properties": {"sku": "hanako@example.com"}},
]  # fmt: skip


@pytest.fixture
def store_args(tmp_path: Path) -> list[str]:
    return ["--db", f"sqlite:///{tmp_path / 'cli.db'}", "--keyring", str(tmp_path / "k")]


@pytest.fixture
def history(tmp_path: Path) -> str:
    path = tmp_path / "acts.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in LINES) + "\n", encoding="utf-8")
    return str(path)


def test_declare_import_and_show(
    store_args: list[str], history: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["declare-activities", "purchase=sku,category", "page_view=url_path",
                 "signup", *store_args]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "3 activity names declared" in out
    assert "  purchase: plain category, sku" in out

    assert main(["validate", history]) == 0
    assert "4 valid (0 messages, 0 events, 0 consent, 4 activities)" in capsys.readouterr().out

    assert main(["import", history, *store_args]) == 1
    out = capsys.readouterr().out
    assert "2 inserted" in out
    assert "3: name: not a declared activity name" in out
    assert "4: properties.sku: the value looks like an email address" in out
    assert "hanako@example.com" not in out
    assert main(["dead-letters", "list", *store_args, "--format", "json"]) == 0
    fields = sorted(d["field"] for d in json.loads(capsys.readouterr().out))
    assert fields == ["name", "properties.sku"]

    assert main(["activities", "c1", *store_args, "--tz", "Asia/Tokyo"]) == 0
    shown = capsys.readouterr().out.splitlines()
    assert shown[0] == "contact c1: 2 activities"
    assert shown[1].startswith("2026-04-01 20:00:00+09:00  page_view")
    assert "4980 JPY" in shown[2]
    assert "for Hanako" in shown[2]

    assert main(["activities", "c1", *store_args, "--name", "purchase", "--format", "json"]) == 0
    (doc,) = json.loads(capsys.readouterr().out)
    assert doc["activity_id"] == "a1"
    assert doc["attributed_message_id"] is None

    assert main(["declare-activities", *store_args, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["page_view"] == ["url_path"]


def test_declare_refuses_bad_names(
    store_args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["declare-activities", "Bad Name", *store_args]) == 2
    assert "name:" in capsys.readouterr().err
    assert main(["declare-activities", "a", "a=x", *store_args]) == 2
