from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import commhistory as ch
from commhistory.cli import main
from commhistory.cli._progress import Progress

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"commhistory {ch.__version__}"


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().err


def test_shipped_example_is_valid(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(EXAMPLES / "history.jsonl")]) == 0
    out = capsys.readouterr().out
    assert "15 records, 15 valid (5 messages, 7 events, 3 consent), 0 invalid" in out


def test_bad_lines_are_reported_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "h.jsonl"
    good = (EXAMPLES / "history.jsonl").read_text(encoding="utf-8").splitlines()[2]
    path.write_text(
        "\n".join([good, '{"kind": "event"}', "garbage", good.replace("email", "fax", 1)]) + "\n",
        encoding="utf-8",
    )
    assert main(["validate", str(path)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "2: event_id: required"
    assert out[1].startswith("3: <line>: invalid JSON")
    assert out[2].startswith("4: channel: expected one of: email, sms")
    assert out[3].endswith("4 records, 1 valid (1 message, 0 events, 0 consent), 3 invalid")
    assert "Taro" not in "\n".join(out)


def test_json_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "h.jsonl"
    path.write_text('{"kind": "consent"}\n', encoding="utf-8")
    assert main(["validate", str(path), "--format", "json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["records"] == 1
    assert report["invalid"] == 1
    assert report["errors"] == [{"line": 1, "field": "contact_id", "reason": "required"}]
    assert report["errors_truncated"] is False


def test_csv_with_map_and_tz(capsys: pytest.CaptureFixture[str]) -> None:
    args = [
        "validate",
        str(EXAMPLES / "legacy.csv"),
        "--tz",
        "Asia/Tokyo",
        "--map",
        "配信ID=message_id",
        "--map",
        "顧客ID=contact_id",
        "--map",
        "チャネル=channel",
        "--map",
        "方向=direction",
        "--map",
        "宛先=address",
        "--map",
        "キャンペーン=campaign_id",
        "--map",
        "件名=subject",
        "--map",
        "配信日時=sent_at",
        "--map",
        "プラン=metadata.plan",
    ]
    assert main(args) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("4: address: ")
    assert "3 records, 2 valid" in out[-1]


def test_csv_naive_dates_without_tz(capsys: pytest.CaptureFixture[str]) -> None:
    path = str(EXAMPLES / "legacy.csv")
    maps = [
        "配信ID=message_id",
        "顧客ID=contact_id",
        "チャネル=channel",
        "方向=direction",
        "宛先=address",
        "キャンペーン=campaign_id",
        "件名=subject",
        "配信日時=sent_at",
        "プラン=",
    ]
    args = ["validate", path]
    for m in maps:
        args += ["--map", m]
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "2: sent_at: " in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["validate", "missing.jsonl"], "no such file"),
        (["validate", str(EXAMPLES / "history.jsonl"), "--map", "a=b"], "--map applies"),
        (["validate", str(EXAMPLES / "legacy.csv")], "unknown column"),
        (["validate", str(EXAMPLES / "history.jsonl"), "--encoding", "nope"], "unknown encoding"),
    ],
)
def test_input_errors_exit_2(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(args) == 2
    assert message in capsys.readouterr().err


def test_bad_time_zone_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["validate", "x.jsonl", "--tz", "Mars/Olympus"])
    assert info.value.code == 2
    assert "unknown time zone" in capsys.readouterr().err


def test_progress_bar_draws_on_a_terminal_only() -> None:
    stream = io.StringIO()
    bar = Progress(100, label="validating", stream=stream, enabled=True)
    bar.update(50)
    bar.update(100)
    bar.close()
    text = stream.getvalue()
    assert "validating [" in text
    assert "100%" in text
    quiet = io.StringIO()
    Progress(100, label="x", stream=quiet).update(100)  # StringIO is not a terminal
    assert quiet.getvalue() == ""


def test_console_script_and_module_entry_points() -> None:
    exe = shutil.which("commhistory")
    commands = [[sys.executable, "-m", "commhistory"]]
    if exe:
        commands.append([exe])
    for command in commands:
        result = subprocess.run(
            [*command, "validate", str(EXAMPLES / "history.jsonl"), "--format", "json"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["valid"] == 15


def test_a_map_file_reads_the_sheet_like_the_map_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    examples = Path(__file__).resolve().parent.parent / "examples"
    sheet = str(examples / "legacy.csv")
    maps = json.loads((examples / "legacy.map.json").read_text(encoding="utf-8"))
    by_options = [arg for column, field in maps.items() for arg in ("--map", f"{column}={field}")]
    assert main(["validate", sheet, "--tz", "Asia/Tokyo", *by_options]) == 1
    expected = capsys.readouterr().out
    file_args = ["--map-file", str(examples / "legacy.map.json")]
    assert main(["validate", sheet, "--tz", "Asia/Tokyo", *file_args]) == 1
    assert capsys.readouterr().out == expected
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]", encoding="utf-8")
    assert main(["validate", sheet, "--map-file", str(bad)]) == 2
    assert "must hold an object" in capsys.readouterr().err
