from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

import commhistory as ch
from commhistory.cli import main

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture
def store_args(tmp_path: Path) -> list[str]:
    return ["--db", f"sqlite:///{tmp_path / 'h.db'}", "--keyring", str(tmp_path / "k.keyring")]


def test_init_creates_schema_and_private_keyring(
    tmp_path: Path, store_args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["init", *store_args]) == 0
    assert "schema at revision" in capsys.readouterr().out
    mode = stat.S_IMODE(os.stat(tmp_path / "k.keyring").st_mode)
    assert mode == 0o600
    assert ch.store.current_revision(f"sqlite:///{tmp_path / 'h.db'}") == ch.store.head_revision()


def test_environment_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COMMHISTORY_DB", f"sqlite:///{tmp_path / 'env.db'}")
    monkeypatch.setenv("COMMHISTORY_KEYRING", str(tmp_path / "env.keyring"))
    assert main(["init"]) == 0
    assert (tmp_path / "env.db").exists()
    assert (tmp_path / "env.keyring").exists()


def test_import_is_idempotent_and_reports(
    store_args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    path = str(EXAMPLES / "history.jsonl")
    assert main(["import", path, *store_args]) == 0
    assert "15 inserted, 0 duplicates, 0 rejected" in capsys.readouterr().out
    assert main(["import", path, *store_args, "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report == {
        "file": path,
        "total": 15,
        "inserted": 0,
        "duplicates": 15,
        "rejected": 0,
        "linked": 0,
    }


def test_import_keeps_bad_lines_as_dead_letters_and_exits_1(
    tmp_path: Path, store_args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "mixed.jsonl"
    lines = (EXAMPLES / "history.jsonl").read_text(encoding="utf-8").splitlines()[:4]
    path.write_text("\n".join([*lines, "{broken"]) + "\n", encoding="utf-8")
    assert main(["import", str(path), *store_args]) == 1
    assert "4 inserted, 0 duplicates, 1 rejected" in capsys.readouterr().out
    keyring = ch.Keyring.load(store_args[3])
    with ch.open_repository(store_args[1], keyring) as repo:
        (letter,) = repo.dead_letters()
    assert letter.raw == "{broken"
    assert letter.line == 5
    assert letter.source == "mixed.jsonl"


def test_import_csv_with_mapping(
    store_args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    maps = [
        "配信ID=message_id",
        "顧客ID=contact_id",
        "チャネル=channel",
        "方向=direction",
        "宛先=address",
        "キャンペーン=campaign_id",
        "件名=subject",
        "配信日時=sent_at",
        "プラン=metadata.plan",
    ]
    args = ["import", str(EXAMPLES / "legacy.csv"), *store_args, "--tz", "Asia/Tokyo"]
    for m in maps:
        args += ["--map", m]
    assert main(args) == 1
    assert "2 inserted, 0 duplicates, 1 rejected" in capsys.readouterr().out
    assert main(["timeline", "c-2001", *store_args, "--format", "json"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)
    assert entry["message"]["address"] == "suzuki@example.jp"
    assert entry["message"]["metadata"] == {"plan": "gold"}
    assert entry["message"]["sent_at"] == "2025-10-01T00:00:00Z"


def test_timeline_table_and_json(
    store_args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["import", str(EXAMPLES / "history.jsonl"), *store_args]) == 0
    capsys.readouterr()
    assert main(["timeline", "c-1001", *store_args, "--tz", "Asia/Tokyo"]) == 0
    table = capsys.readouterr().out
    assert "contact c-1001: 1 message (times in Asia/Tokyo)" in table
    assert "2026-04-01 09:00:00+09:00  -> email  Taro.Yamada@example.co.jp" in table
    assert "opened [machine]" in table
    assert "converted 4980 JPY" in table
    assert main(["timeline", "c-1003", *store_args, "--format", "json"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)
    assert [e["type"] for e in entry["events"]] == ["bounced"]
    assert entry["events"][0]["bounce"] == "hard"
    assert entry["events"][0]["message_id"] == "m-0002"


def test_timeline_errors(store_args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["timeline", "c-1001", *store_args]) == 2
    assert "no keyring" in capsys.readouterr().err
    assert main(["init", *store_args]) == 0
    assert main(["timeline", "nobody", *store_args]) == 2
    assert "contact 'nobody' not found" in capsys.readouterr().err


def test_rotate_keys_then_read_and_retire_old_key(
    store_args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["import", str(EXAMPLES / "history.jsonl"), *store_args]) == 0
    old = ch.Keyring.load(store_args[3]).current_key_id
    assert main(["rotate-keys", *store_args, "--reindex", "--batch-size", "2"]) == 0
    out = capsys.readouterr().out
    assert "4 data keys re-wrapped" in out
    assert "blind indexes recomputed" in out
    keyring = ch.Keyring.load(store_args[3])
    assert keyring.current_key_id != old
    keyring.retire(old)
    keyring.save(store_args[3], overwrite=True)
    assert main(["timeline", "c-1001", *store_args, "--format", "json"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)
    assert entry["message"]["subject"] == "春のセールのお知らせ"
    with ch.open_repository(store_args[1], keyring) as repo:
        assert repo.find_contacts(email="hanako@example.net") == ["c-1003"]
    assert main(["rotate-keys", *store_args, "--resume"]) == 0
    assert "0 data keys re-wrapped" in capsys.readouterr().out


def test_import_into_postgres(
    pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--db", pg_url, "--keyring", str(tmp_path / "k.keyring")]
    assert main(["import", str(EXAMPLES / "history.jsonl"), *args]) == 0
    assert "15 inserted" in capsys.readouterr().out
    assert main(["timeline", "c-1002", *args, "--format", "json"]) == 0
    entries = json.loads(capsys.readouterr().out)
    assert [e["message"]["message_id"] for e in entries] == ["m-0003", "m-0004"]


def test_import_batch_size_reaches_the_repository(
    store_args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import commhistory.cli.store as cli_store

    seen: list[int] = []
    real = ch.open_repository

    def spy(*args: object, **kwargs: object) -> ch.CommHistory[ch.SQLRepository]:
        repo = real(*args, **kwargs)  # type: ignore[arg-type]
        seen.append(repo.store._batch_size)
        return repo

    monkeypatch.setattr(cli_store, "open_repository", spy)
    path = str(EXAMPLES / "history.jsonl")
    assert main(["import", path, *store_args, "--batch-size", "3"]) == 0
    assert seen == [3]
    assert "15 inserted" in capsys.readouterr().out
