"""``--region`` and ``$COMMHISTORY_REGION``: national US and UK numbers; default JP (issue 13).

Also runs exactly the ``examples/legacy.csv`` command that docs/cli.md shows.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

import commhistory as ch
from commhistory.cli import main
from commhistory.convert import read_records
from commhistory.errors import NormalizationError

ROOT = Path(__file__).resolve().parent.parent
US = "(415) 555-2671"
UK = "020 7946 0018"


def _sheet(tmp_path: Path, number: str) -> Path:
    path = tmp_path / "phones.csv"
    path.write_text(
        "message_id,contact_id,channel,direction,address,sent_at\n"
        f'm1,c1,sms,outbound,"{number}",2026-04-01T00:00:00Z\n',
        encoding="utf-8",
    )
    return path


def test_read_records_takes_a_region(tmp_path: Path) -> None:
    (jp,) = read_records(_sheet(tmp_path, US))
    assert jp.error is not None  # the default stays JP
    (us,) = read_records(_sheet(tmp_path, US), region="US")
    assert isinstance(us.record, ch.Message)
    assert us.record.address == "+14155552671"
    (gb,) = read_records(_sheet(tmp_path, UK), region="GB")
    assert isinstance(gb.record, ch.Message)
    assert gb.record.address == "+442079460018"
    (jp2,) = read_records(_sheet(tmp_path, "090-1234-5678"))
    assert isinstance(jp2.record, ch.Message)
    assert jp2.record.address == "+819012345678"


def test_read_records_region_applies_to_jsonl_events(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    path.write_text(
        json.dumps(
            {
                "kind": "event",
                "event_id": "e1",
                "message_id": "m1",
                "type": "delivered",
                "occurred_at": "2026-04-01T00:00:00Z",
                "address": UK,
            }
        )
        + "\n",
        encoding="utf-8",
    )
    (parsed,) = read_records(path, region="GB")
    assert isinstance(parsed.record, ch.Event)
    assert parsed.record.address == "+442079460018"


def test_read_records_refuses_an_unknown_region(tmp_path: Path) -> None:
    with pytest.raises(NormalizationError) as info:
        list(read_records(_sheet(tmp_path, US), region="XX"))
    assert info.value.field == "region"


@pytest.mark.parametrize(("number", "region"), [(US, "US"), (UK, "GB"), (UK, "gb")])
def test_validate_accepts_national_numbers_with_region(
    number: str, region: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = str(_sheet(tmp_path, number))
    if number == US:
        assert main(["validate", path]) == 1  # JP by default
        assert "2: address:" in capsys.readouterr().out
    assert main(["validate", path, "--region", region]) == 0
    assert "1 valid" in capsys.readouterr().out


def test_region_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = str(_sheet(tmp_path, US))
    monkeypatch.setenv("COMMHISTORY_REGION", "US")
    assert main(["validate", path]) == 0
    assert main(["validate", path, "--region", "GB"]) == 1  # the option wins
    monkeypatch.setenv("COMMHISTORY_REGION", "nowhere")
    assert main(["validate", path]) == 2
    assert "COMMHISTORY_REGION" in capsys.readouterr().err


def test_unknown_region_option_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["validate", str(_sheet(tmp_path, US)), "--region", "XX"])
    assert info.value.code == 2
    assert "unknown phone region" in capsys.readouterr().err


def test_import_and_can_send_with_region(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = ["--db", f"sqlite:///{tmp_path / 'h.db'}", "--keyring", str(tmp_path / "k.keyring")]
    path = str(_sheet(tmp_path, US))
    assert main(["import", path, *store, "--region", "US"]) == 0
    assert "1 inserted" in capsys.readouterr().out
    keyring = ch.Keyring.load(tmp_path / "k.keyring")
    with ch.open_repository(f"sqlite:///{tmp_path / 'h.db'}", keyring) as repo:
        (entry,) = repo.timeline("c1")
    assert entry.message.address == "+14155552671"
    can = ["can-send", "c1", "--channel", "sms", "--purpose", "transactional", *store]
    assert main([*can, "--address", US, "--region", "US"]) == 0
    assert main([*can, "--address", US]) == 2  # not a JP number
    assert "phone: not a valid number" in capsys.readouterr().err


def _documented_legacy_commands() -> list[tuple[list[str], list[str]]]:
    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    blocks = re.findall(
        r"```console\n(\$ commhistory validate examples/legacy\.csv.*?)```", text, re.S
    )
    return [_command_and_output(block) for block in blocks]


def _command_and_output(block: str) -> tuple[list[str], list[str]]:
    lines = block.splitlines()
    command: list[str] = []
    while lines:
        line = lines.pop(0).removeprefix("$ ").strip()
        command.append(line.removesuffix("\\").strip())
        if not line.endswith("\\"):
            break
    argv = shlex.split(" ".join(command))
    assert argv[0] == "commhistory"
    return argv[1:], lines


def test_the_documented_legacy_csv_command_runs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    documented = _documented_legacy_commands()
    assert len(documented) == 2  # the --map options, then the same mapping as --map-file
    assert documented[0][0].count("--map") == 9
    assert "--map-file" in documented[1][0]
    monkeypatch.chdir(ROOT)
    for argv, expected in documented:
        assert main(argv) == 1  # one line of the example is bad on purpose
        assert capsys.readouterr().out.splitlines() == expected


# A Twilio incoming-message webhook whose From is written nationally (the field names are
# Twilio's: https://www.twilio.com/docs/messaging/guides/webhook-request).
_TWILIO_US = (
    "AccountSid=AC0123456789abcdef0123456789abcdef&ApiVersion=2010-04-01"
    "&MessageSid=SM22222222222222222222222222222222&SmsSid=SM22222222222222222222222222222222"
    "&SmsStatus=received&From=(415)%20555-2671&To=%2B14155550100&Body=hello&NumMedia=0"
    "&NumSegments=1&FromCountry=US&ToCountry=US"
)


def test_webhook_commands_take_a_region(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COMMHISTORY_CONTACT_KEY", "00" * 32)
    monkeypatch.delenv("COMMHISTORY_REGION", raising=False)
    body = tmp_path / "twilio.txt"
    body.write_text(_TWILIO_US, encoding="ascii")
    parse = ["parse-webhook", "--provider", "twilio", str(body)]
    assert main(parse) == 1  # not a JP number
    assert "From:" in capsys.readouterr().err
    assert main([*parse, "--region", "US"]) == 0
    (record,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert (record["kind"], record["address"]) == ("message", "+14155552671")
    monkeypatch.setenv("COMMHISTORY_REGION", "US")
    assert main(parse) == 0
    capsys.readouterr()
    # A provider that reads no phone numbers takes the option and ignores it.
    sendgrid = tmp_path / "sendgrid.json"
    sendgrid.write_text("[]", encoding="utf-8")
    assert main(["parse-webhook", "--provider", "sendgrid", str(sendgrid), "--region", "GB"]) == 0
    capsys.readouterr()

    monkeypatch.delenv("COMMHISTORY_REGION")
    db = f"sqlite:///{tmp_path / 'h.db'}"
    store = ["--db", db, "--keyring", str(tmp_path / "k.keyring")]
    ingest = ["ingest-webhook", "--provider", "twilio", str(body), *store]
    assert main(ingest) == 1  # a dead letter under JP
    assert "1 rejected" in capsys.readouterr().out
    assert main([*ingest, "--region", "US"]) == 0
    assert "1 inserted" in capsys.readouterr().out
    keyring = ch.Keyring.load(tmp_path / "k.keyring")
    with ch.open_repository(db, keyring) as repo:
        (entry,) = repo.timeline(record["contact_id"])
    assert entry.message.address == "+14155552671"
    monkeypatch.setenv("COMMHISTORY_REGION", "nowhere")
    assert main(ingest) == 2
    assert "COMMHISTORY_REGION" in capsys.readouterr().err
