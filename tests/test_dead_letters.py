"""Dead letters you can see: list, show, replay and purge, through the CLI and the Python API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import commhistory as ch
from commhistory import CommHistory, open_repository
from commhistory.audit import Actor, Policy
from commhistory.cli import main
from commhistory.convert import read_records
from commhistory.errors import NotFoundError, PermissionDenied
from commhistory.store import MemoryRepository

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
LEGACY = EXAMPLES / "legacy.csv"
LEGACY_MAP = [
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
BACKENDS = ["memory", "sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]

NAIVE = (
    '{"kind":"message","message_id":"m-1","contact_id":"c-1","channel":"email",'
    '"direction":"outbound","purpose":"marketing","address":"taro@example.jp",'
    '"sent_at":"2025-10-01T09:00:00"}'
)


def _maps() -> list[str]:
    return [arg for m in LEGACY_MAP for arg in ("--map", m)]


@pytest.fixture
def store_args(tmp_path: Path) -> list[str]:
    return ["--db", f"sqlite:///{tmp_path / 'h.db'}", "--keyring", str(tmp_path / "k.keyring")]


@pytest.fixture(params=BACKENDS)
def repo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "memory":
        with CommHistory(MemoryRepository(batch_size=2)) as mem:
            yield mem
        return
    url = f"sqlite:///{tmp_path / 'api.db'}"
    if request.param == "postgresql":
        url = request.getfixturevalue("pg_url")
    with open_repository(url, ch.Keyring.generate(), batch_size=2) as sql:
        yield sql


def _jsonl(tmp_path: Path) -> Path:
    path = tmp_path / "mixed.jsonl"
    path.write_text(f"{NAIVE}\n{{broken\n", encoding="utf-8")
    return path


# ---------------------------------------------------------------------- Python API


def test_list_get_replay_twice_and_purge(repo: Any, tmp_path: Path) -> None:
    report = repo.ingest(read_records(_jsonl(tmp_path)), source="mixed.jsonl")
    assert report.rejected == 2
    listed = repo.list_dead_letters()
    assert [(d.line, d.field) for d in listed] == [(1, "sent_at"), (2, "<line>")]
    assert not hasattr(listed[0], "raw")
    assert repo.list_dead_letters(source="other") == []
    assert len(repo.list_dead_letters(limit=1)) == 1
    letter = repo.dead_letter(listed[0].id)
    assert letter.raw == NAIVE
    assert repo.masked_dead_letter(listed[0].id).reason == listed[0].reason
    with pytest.raises(NotFoundError):
        repo.dead_letter("nope")

    first = repo.replay_dead_letters(default_tz="Asia/Tokyo")
    assert (first.letters, first.parsed, first.failed) == (2, 1, 1)
    assert first.stored.inserted == 1
    (left,) = repo.list_dead_letters()
    assert left.line == 2
    second = repo.replay_dead_letters(default_tz="Asia/Tokyo")
    assert (second.letters, second.parsed, second.stored.inserted) == (1, 0, 0)
    (entry,) = repo.timeline("c-1")
    assert entry.message.sent_at == datetime(2025, 10, 1, 0, 0, tzinfo=UTC)

    later = datetime.now(UTC) + timedelta(minutes=1)
    assert repo.purge_dead_letters(later, dry_run=True) == 1
    assert len(repo.list_dead_letters()) == 1
    assert repo.purge_dead_letters(later) == 1
    assert repo.list_dead_letters() == []


def test_replay_keeps_a_still_failing_line_with_its_new_reason(repo: Any, tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(NAIVE.replace('"marketing"', '"bogus"') + "\n", encoding="utf-8")
    repo.ingest(read_records(path), source="bad.jsonl")
    (before,) = repo.list_dead_letters()
    assert before.field == "sent_at"
    report = repo.replay_dead_letters([before.id], default_tz="UTC")
    assert (report.parsed, report.failed) == (0, 1)
    (after,) = repo.list_dead_letters()
    assert after.id == before.id
    assert after.field == "purpose"
    with pytest.raises(NotFoundError):
        repo.replay_dead_letters(["nope"])


def test_replay_csv_rows_with_the_header_and_a_fixed_mapping(repo: Any) -> None:
    mapping = dict(m.split("=", 1) for m in LEGACY_MAP)
    assert repo.ingest(read_records(LEGACY, mapping=mapping), source="legacy.csv").rejected == 3
    skipped = repo.replay_dead_letters(mapping=mapping, default_tz="Asia/Tokyo")
    assert (skipped.skipped, skipped.parsed) == (3, 0)
    header = LEGACY.read_text(encoding="utf-8").splitlines()[0]
    for _ in range(2):
        repo.replay_dead_letters(mapping=mapping, default_tz="Asia/Tokyo", header=header)
    assert [e.message.message_id for e in repo.timeline("c-2001")] == ["d-1"]
    (left,) = repo.list_dead_letters()
    assert (left.line, left.field) == (4, "address")


def test_guarded_show_needs_read_personal_and_replay_needs_write_history(
    repo: Any, tmp_path: Path
) -> None:
    repo.ingest(read_records(_jsonl(tmp_path)), source="mixed.jsonl")
    analyst = repo.as_actor(Actor("staff-1", ["analyst"]), purpose="triage")
    listed = analyst.list_dead_letters()
    assert len(listed) == 2
    assert analyst.masked_dead_letter(listed[0].id).id == listed[0].id
    with pytest.raises(PermissionDenied):
        analyst.dead_letter(listed[0].id)
    with pytest.raises(PermissionDenied):
        analyst.replay_dead_letters()
    officer = repo.as_actor(Actor("dpo-1", ["privacy_officer"]), purpose="check a line")
    assert officer.dead_letter(listed[0].id).raw == NAIVE
    entries = [e for e in repo.audit_log.entries() if e.action == "dead_letter"]
    assert entries[-1].targets == (listed[0].id,)
    operator = repo.as_actor(Actor("ops-1", ["operator"]), purpose="replay")
    assert operator.replay_dead_letters(default_tz="UTC").parsed == 1


def test_guarded_replay_of_a_consent_line_needs_manage_consent(repo: Any, tmp_path: Path) -> None:
    path = tmp_path / "consent.jsonl"
    line = (
        '{"kind":"consent","contact_id":"c-9","channel":"email","purpose":"marketing",'
        '"action":"grant","method":"web_form","occurred_at":"2025-10-01T09:00:00"}'
    )
    path.write_text(line + "\n", encoding="utf-8")
    repo.ingest(read_records(path), source="consent.jsonl")
    assert len(repo.list_dead_letters()) == 1
    policy = Policy({"writer": ["write_history"]})
    writer = repo.as_actor(Actor("bot-1", ["writer"]), purpose="replay", policy=policy)
    with pytest.raises(PermissionDenied):
        writer.replay_dead_letters(default_tz="UTC")
    operator = repo.as_actor(Actor("ops-1", ["operator"]), purpose="replay")
    assert operator.replay_dead_letters(default_tz="UTC").stored.inserted == 1


# ---------------------------------------------------------------------- command line


def test_import_prints_rejected_lines_and_writes_errors_file(
    tmp_path: Path, store_args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    errors = tmp_path / "errors.jsonl"
    args = ["import", str(LEGACY), *store_args, *_maps(), "--errors", str(errors)]
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "2: sent_at: no time zone offset" in out
    assert "4: address: " in out
    assert "0 inserted, 0 duplicates, 3 rejected" in out
    docs = [json.loads(line) for line in errors.read_text(encoding="utf-8").splitlines()]
    assert [d["line"] for d in docs] == [2, 3, 4]
    assert set(docs[0]) == {"line", "field", "reason"}
    assert "example.jp" not in errors.read_text(encoding="utf-8")


def test_import_shows_only_the_first_ten_rejected_lines(
    tmp_path: Path, store_args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "many.jsonl"
    path.write_text("".join(f"{{broken {i}\n" for i in range(12)), encoding="utf-8")
    assert main(["import", str(path), *store_args]) == 1
    out = capsys.readouterr().out
    assert "10: <line>: invalid JSON" in out
    assert "11: <line>" not in out
    assert "... and 2 more rejected lines" in out


def test_cli_list_show_replay_twice_purge(
    tmp_path: Path, store_args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["import", str(LEGACY), *store_args, *_maps()]) == 1
    capsys.readouterr()
    assert main(["dead-letters", "list", *store_args, "--format", "json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(d["line"], d["field"]) for d in listed] == [
        (2, "sent_at"),
        (3, "sent_at"),
        (4, "address"),
    ]
    assert all("raw" not in d for d in listed)
    assert main(["dead-letters", "list", *store_args]) == 0
    table = capsys.readouterr().out
    # Long reasons wrap within 100 columns: compare the words.
    assert "legacy.csv 2 sent_at: no time zone offset" in " ".join(table.split())
    assert "suzuki" not in table

    first = listed[0]["id"]
    assert main(["dead-letters", "show", first, *store_args]) == 0
    assert "suzuki@example.jp" in capsys.readouterr().out

    replay = ["dead-letters", "replay", *store_args, "--tz", "Asia/Tokyo", *_maps()]
    assert main([*replay, "--format", "json"]) == 0
    skipped = json.loads(capsys.readouterr().out)
    assert skipped["skipped_csv_without_header"] == 3
    assert main([*replay, "--header-from", str(LEGACY)]) == 1
    out = capsys.readouterr().out
    assert "3 dead letters: 2 now parse (2 inserted" in out
    assert "1 still fail" in out
    assert main([*replay, "--header-from", str(LEGACY), "--format", "json"]) == 1
    again = json.loads(capsys.readouterr().out)
    assert (again["letters"], again["inserted"], again["duplicates"]) == (1, 0, 0)
    assert main(["timeline", "c-2002", *store_args, "--format", "json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 1

    assert main(["dead-letters", "list", *store_args, "--format", "json"]) == 0
    (left,) = json.loads(capsys.readouterr().out)
    assert (left["line"], left["field"]) == (4, "address")
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    assert main(["dead-letters", "purge", "--before", tomorrow, "--dry-run", *store_args]) == 0
    assert "1 dead letter " in capsys.readouterr().out
    assert main(["dead-letters", "purge", "--before", tomorrow, *store_args]) == 0
    assert "1 dead letter " in capsys.readouterr().out
    assert main(["dead-letters", "list", *store_args]) == 0
    assert "no dead letters" in capsys.readouterr().out


def test_cli_show_withholds_raw_for_an_actor_without_read_personal(
    tmp_path: Path, store_args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["import", str(LEGACY), *store_args, *_maps()]) == 1
    capsys.readouterr()
    assert main(["dead-letters", "list", *store_args, "--format", "json"]) == 0
    first = json.loads(capsys.readouterr().out)[0]["id"]
    analyst = ["--actor", "staff-1", "--role", "analyst"]
    assert main(["dead-letters", "show", first, *store_args, *analyst]) == 0
    captured = capsys.readouterr()
    assert "suzuki" not in captured.out
    assert "withheld" in captured.out
    assert "lacks permission 'read_personal'" in captured.err
    officer = ["--actor", "dpo-1", "--role", "privacy_officer", "--purpose", "check a row"]
    assert main(["dead-letters", "show", first, *store_args, *officer, "--format", "json"]) == 0
    assert "suzuki@example.jp" in json.loads(capsys.readouterr().out)["raw"]
    assert main(["dead-letters", "replay", *store_args, *analyst]) == 6
    assert main(["audit", "show", *store_args, "--format", "json"]) == 0
    actions = [json.loads(line)["action"] for line in capsys.readouterr().out.splitlines()]
    assert "dead_letter" in actions
    assert main(["dead-letters", "show", "nope", *store_args]) == 2
