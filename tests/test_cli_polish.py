"""Issue 13 item 8: the command line's polish (help, plurals, zones, widths, pipes, JSON)."""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from commhistory.cli import build_parser, main
from commhistory.testing import sendgrid_keys, signed_webhook

PAYLOADS = Path(__file__).parent / "payloads"


def _walk(
    parser: argparse.ArgumentParser, name: str
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _walk(sub, f"{name} {sub_name}")


def test_every_command_has_a_description_and_every_option_help() -> None:
    missing: list[str] = []
    for name, parser in _walk(build_parser(), "commhistory"):
        if not parser.description:
            missing.append(f"{name}: no description")
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction | argparse._VersionAction):
                continue
            if isinstance(action, argparse._SubParsersAction):
                for choice in action._choices_actions:
                    if not choice.help:
                        missing.append(f"{name} {choice.dest}: no help line")
                continue
            if not action.help:
                label = "/".join(action.option_strings) or action.dest
                missing.append(f"{name} {label}: no help")
    assert missing == []


EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture
def store_args(tmp_path: Path) -> list[str]:
    return ["--db", f"sqlite:///{tmp_path / 'h.db'}", "--keyring", str(tmp_path / "k.keyring")]


def _one_message(tmp_path: Path) -> Path:
    lines = (EXAMPLES / "history.jsonl").read_text(encoding="utf-8").splitlines()
    message = next(line for line in lines if '"kind": "message"' in line)
    path = tmp_path / "one.jsonl"
    path.write_text(message + "\n", encoding="utf-8")
    return path


def test_counts_of_one_are_singular(
    tmp_path: Path, store_args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    path = _one_message(tmp_path)
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "1 record, 1 valid (1 message, 0 events, 0 consent), 0 invalid" in out
    assert main(["import", str(path), *store_args]) == 0
    assert "1 record: 1 inserted, 0 duplicates, 0 rejected" in capsys.readouterr().out
    assert main(["import", str(path), *store_args]) == 0
    assert "1 record: 0 inserted, 1 duplicate, 0 rejected" in capsys.readouterr().out
    assert main(["timeline", "c-1001", *store_args]) == 0
    assert "contact c-1001: 1 message " in capsys.readouterr().out
    assert main(["audit", "verify", *store_args]) == 0
    out = capsys.readouterr().out
    assert " entries," in out or " entry," in out
    assert main(["rotate-keys", *store_args]) == 0
    out = capsys.readouterr().out
    assert "1 data key re-wrapped" in out
    assert "in 1 batch" in out
    assert "1 batches" not in out


def test_timeline_with_tz_shows_the_offset_and_the_zone(
    tmp_path: Path, store_args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["import", str(_one_message(tmp_path)), *store_args]) == 0
    capsys.readouterr()
    assert main(["timeline", "c-1001", *store_args, "--tz", "Asia/Tokyo"]) == 0
    out = capsys.readouterr().out
    assert "(times in Asia/Tokyo)" in out
    times = re.findall(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\S*", out, flags=re.M)
    assert times
    assert all(t.endswith("+09:00") for t in times)
    assert main(["timeline", "c-1001", *store_args]) == 0
    out = capsys.readouterr().out
    assert "(times in UTC)" in out
    times = re.findall(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\S*", out, flags=re.M)
    assert times
    assert all(t.endswith("Z") for t in times)


def test_tables_are_at_most_100_columns_wide(
    tmp_path: Path,
    store_args: list[str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    bad = tmp_path / "bad.jsonl"
    long_id = "m-" + "x" * 150
    bad.write_text(
        json.dumps({"kind": "message", "message_id": long_id, "channel": "fax"}) + "\n",
        encoding="utf-8",
    )
    assert main(["import", str(bad), *store_args]) == 1
    purpose = "ticket 4711: " + "a long reason given by the privacy officer " * 4
    actor = ["--actor", "po-1", "--role", "privacy_officer", "--purpose", purpose]
    assert main(["export-subject", "c-1", *store_args, *actor, "--out", str(tmp_path / "x")]) in (
        0,
        2,
    )
    capsys.readouterr()
    assert main(["dead-letters", "list", *store_args]) == 0
    listed = capsys.readouterr().out
    assert main(["audit", "show", *store_args, "--format", "table"]) == 0
    audited = capsys.readouterr().out
    for out in (listed, audited):
        widest = max(len(line) for line in out.splitlines())
        assert widest <= 100, out
    assert "…" in audited  # the purpose is cut, the other columns kept
    assert "po-1" in audited


def test_broken_pipe_exits_quietly(
    store_args: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader (`head`) has gone
    stdout = io.TextIOWrapper(io.FileIO(write_end, "w"), encoding="utf-8")
    monkeypatch.setattr(sys, "stdout", stdout)
    code = main(["validate", str(EXAMPLES / "history.jsonl")])
    monkeypatch.undo()
    assert code == 141
    assert capsys.readouterr().err == ""
    stdout.write("later writes go to the null device\n")
    stdout.flush()  # no BrokenPipeError at exit either
    stdout.close()


def test_encoding_error_names_the_file_and_the_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sheet = tmp_path / "legacy.csv"
    sheet.write_bytes("message_id,contact_id\n配信,c-1\n".encode("cp932"))
    assert main(["validate", str(sheet)]) == 1
    err = capsys.readouterr().err
    assert str(sheet) in err
    assert "--encoding" in err
    assert main(["validate", str(sheet), "--encoding", "no-such-codec"]) == 2
    assert "--encoding" in capsys.readouterr().err


def test_json_from_init_and_rotate_keys(
    tmp_path: Path, store_args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["init", *store_args, "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc == {
        "revision": doc["revision"],
        "keyring": store_args[3],
        "keyring_created": True,
    }
    assert main(["import", str(_one_message(tmp_path)), *store_args]) == 0
    capsys.readouterr()
    assert main(["rotate-keys", *store_args, "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["rewrapped"] == 1
    assert doc["new_key"] == doc["key_id"]
    assert doc["backup"]
    assert doc["batches"] == 1


def test_json_from_the_webhook_commands(
    tmp_path: Path, store_args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    keys = sendgrid_keys()
    events = json.loads((PAYLOADS / "sendgrid" / "batch.json").read_text())
    hook = signed_webhook("sendgrid", events, keys)
    body = tmp_path / "body.json"
    body.write_bytes(hook.body)
    headers = [a for n, v in hook.headers.items() for a in ("--header", f"{n}: {v}")]
    common = ["--provider", "sendgrid", str(body), *headers, "--tolerance", "600"]
    verify = ["verify-webhook", *common, "--format", "json"]
    assert main([*verify, "--secret", keys.public_key]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "provider": "sendgrid",
        "valid": True,
        "reason": None,
    }
    assert main([*verify, "--secret", sendgrid_keys().public_key]) == 4
    doc = json.loads(capsys.readouterr().out)
    assert doc["valid"] is False
    assert "signature" in doc["reason"]
    ingest = ["ingest-webhook", *common, *store_args, "--format", "json"]
    assert main([*ingest, "--secret", keys.public_key]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["inserted"] == 12
    assert set(doc) == {"file", "total", "inserted", "duplicates", "rejected", "linked"}


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_rotate_keys_shows_batches_on_stderr(
    tmp_path: Path,
    store_args: list[str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert main(["import", str(EXAMPLES / "history.jsonl"), *store_args]) == 0
    capsys.readouterr()
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main(["rotate-keys", *store_args, "--batch-size", "1"]) == 0
    drawn = terminal.getvalue()
    assert "rotating keys: contacts" in drawn
    assert "batches done: 2" in drawn
    assert "\x1b[K" in drawn  # the bar's line is cleared at the end
