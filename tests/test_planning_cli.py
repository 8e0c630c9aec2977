"""``commhistory plan-send``: ids only, three formats, config errors naming the path."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from commhistory.cli import main
from commhistory.crypto import Keyring
from commhistory.facade import open_repository
from commhistory.model import (
    Channel,
    ConsentAction,
    ConsentEvent,
    ConsentMethod,
    Direction,
    Message,
    Purpose,
)

T0 = datetime(2026, 3, 1, tzinfo=UTC)
AT = "2026-03-10T23:30:00+09:00"  # inside Japanese quiet hours
PHONES = {"a": "+819011110001", "b": "+819011110002", "c": "+819011110003"}


@pytest.fixture
def store(tmp_path: Path) -> list[str]:
    db = f"sqlite:///{tmp_path / 'plan.db'}"
    keyring = Keyring.generate()
    path = tmp_path / "k.keyring"
    keyring.save(path)
    with open_repository(db, keyring) as repo:
        repo.record_messages(
            Message(
                message_id=f"m{c}",
                channel=Channel.SMS,
                direction=Direction.OUTBOUND,
                contact_id=c,
                address=phone,
                sent_at=T0,
                purpose=Purpose.TRANSACTIONAL,
            )
            for c, phone in PHONES.items()
        )
        repo.record_consent(
            ConsentEvent(
                contact_id=c,
                channel=Channel.SMS,
                purpose=Purpose.MARKETING,
                action=ConsentAction.GRANT,
                occurred_at=T0,
                method=ConsentMethod.WEB_FORM,
            )
            for c in ("a", "b")
        )
        repo.record_messages(
            [
                Message(
                    message_id="recent",
                    channel=Channel.SMS,
                    direction=Direction.OUTBOUND,
                    contact_id="b",
                    address=PHONES["b"],
                    sent_at=T0 + timedelta(days=9),
                    purpose=Purpose.MARKETING,
                )
            ]
        )
    return ["--db", db, "--keyring", str(path)]


def _ids(tmp_path: Path, *ids: str) -> str:
    path = tmp_path / "ids.txt"
    path.write_text("# candidates\n" + "\n".join(ids) + "\n\n")
    return str(path)


def _no_personal(text: str) -> None:
    for phone in PHONES.values():
        assert phone not in text
        assert phone[3:] not in text


def test_plan_send_json_with_a_config(
    store: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "caps.json"
    config.write_text(
        json.dumps(
            {
                "profile": "japan_default",
                "caps": [{"channel": "sms", "purpose": "marketing", "limit": 1, "days": 7}],
            }
        )
    )
    argv = ["plan-send", "--contacts", _ids(tmp_path, "a", "b", "c", "zz")]
    argv += ["--channel", "sms", "--purpose", "marketing", "--at", AT]
    code = main([*argv, "--config", str(config), "--format", "json", *store])
    out = capsys.readouterr().out
    assert code == 0
    doc = json.loads(out)
    assert doc["send"] == []
    assert doc["deferred"] == [
        {"contact_id": "a", "until": "2026-03-10T23:00:00+00:00", "reason": "quiet_hours"}
    ]
    assert doc["excluded"] == [
        {"contact_id": "b", "reason": "frequency_cap"},
        {"contact_id": "c", "reason": "no_consent"},
        {"contact_id": "zz", "reason": "no_consent"},
    ]
    assert doc["counts"]["deferred"] == 1
    _no_personal(out)


def test_plan_send_csv_and_table_from_stdin(
    store: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    argv = ["plan-send", "--contacts", "-", "--channel", "sms", "--purpose", "marketing"]
    monkeypatch.setattr("sys.stdin", io.StringIO("a\nc\n"))
    assert main([*argv, "--at", AT, "--format", "csv", *store]) == 0
    out = capsys.readouterr().out
    rows = list(csv.DictReader(io.StringIO(out)))
    assert rows == [
        {"contact_id": "a", "decision": "send", "reason": "", "until": ""},
        {"contact_id": "c", "decision": "exclude", "reason": "no_consent", "until": ""},
    ]
    monkeypatch.setattr("sys.stdin", io.StringIO("a\nc\n"))
    assert main([*argv, "--at", AT, *store]) == 0
    out = capsys.readouterr().out
    assert "send 1" in out
    assert "no_consent 1" in out
    assert out.splitlines()[1].split() == ["contact_id", "decision", "reason", "until"]
    _no_personal(out)


def test_plan_send_errors(
    store: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"quiet_hours": [{"channel": "sms", "purpose": "marketing",
                                                "start": "21:00", "end": "8"}]}))  # fmt: skip
    argv = ["plan-send", "--contacts", _ids(tmp_path, "a"), "--channel", "sms"]
    argv += ["--purpose", "marketing"]
    assert main([*argv, "--config", str(bad), *store]) == 2
    assert "quiet_hours[0].end" in capsys.readouterr().err
    assert main([*argv, "--at", "2026-03-10T23:30:00", *store]) == 2
    assert "--at" in capsys.readouterr().err
    empty = _ids(tmp_path)
    assert main(["plan-send", "--contacts", empty, "--channel", "sms", "--purpose",
                 "marketing", *store]) == 2  # fmt: skip
    assert "no contact ids" in capsys.readouterr().err


def test_plan_send_needs_masked_history_only(
    store: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["plan-send", "--contacts", _ids(tmp_path, "a"), "--channel", "sms"]
    argv += ["--purpose", "marketing", "--at", AT, "--format", "json"]
    assert main([*argv, "--actor", "ana", "--role", "analyst", *store]) == 0
    assert json.loads(capsys.readouterr().out)["send"] == [{"contact_id": "a"}]
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"roles": {"intern": []}}))
    code = main([*argv, "--actor", "i", "--role", "intern", "--policy", str(policy), *store])
    assert code == 6
