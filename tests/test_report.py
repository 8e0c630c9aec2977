"""Report rendering and ``commhistory report``, on a small demo database."""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
from pathlib import Path

import pytest

from commhistory.cli import demo as demo_cmd
from commhistory.cli import report as report_cmd
from commhistory.cli._exits import CommandError
from commhistory.crypto import Keyring
from commhistory.demo import generate, run_demo
from commhistory.errors import InvalidInputError
from commhistory.kpi import compute
from commhistory.kpi.machine import mark_machine
from commhistory.kpi.report import render_csv, render_json, render_table


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="commhistory")
    sub = parser.add_subparsers(dest="command")
    report_cmd.register(sub)
    demo_cmd.register(sub)
    return parser


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    where = tmp_path_factory.mktemp("demo")
    db, keyring = where / "demo.db", where / "demo.keyring"
    run_demo(db, keyring_path=keyring, html_path=where / "demo.html", contacts=800)
    return db, keyring


def _report(demo_db: tuple[Path, Path], *argv: str) -> int:
    db, keyring = demo_db
    args = _parser().parse_args(
        ["report", "--db", f"sqlite:///{db}", "--keyring", str(keyring), *argv]
    )
    code: int = args.run(args)
    return code


def test_report_json_matches_memory_engine(
    demo_db: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert _report(demo_db, "--format", "json", "--by", "campaign_id,variant") == 0
    data = json.loads(capsys.readouterr().out)
    messages, events = [], []
    for m, evs in generate(contacts=800):
        messages.append(m)
        events.extend(mark_machine(evs, messages=[m]))
    expected = compute(messages, events, by=("campaign_id", "variant"))
    assert data["rows"] == expected.to_dict()["rows"]
    row = data["rows"][0]
    assert set(row) >= {"campaign_id", "variant", "sent", "revenue", "open_rate", "complaint_rate"}
    assert data["unmatched_events"] == 2
    assert {t["campaign_id"] for t in data["ab_tests"]} == {
        "line-coupon",
        "sms-reminder",
        "spring-sale",
    }


def test_report_table_csv_and_html(
    demo_db: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _report(demo_db, "--by", "channel") == 0
    text = capsys.readouterr().out
    assert "email" in text
    assert "total" in text
    assert "A/B tests" in text
    assert _report(demo_db, "--format", "csv", "--by", "week", "--tz", "Asia/Tokyo") == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert rows[0]["week"].startswith("2024-W")
    assert "revenue_JPY" in rows[0]
    out = tmp_path / "r.html"
    assert _report(demo_db, "--format", "html", "--out", str(out)) == 0
    page = out.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert "<svg" in page
    # Self-contained: nothing is fetched (the clicked links are shown as text only).
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page)
    assert "url(" not in page
    assert "@import" not in page
    assert "<script" not in page
    assert "<h2>Clicks per link</h2>" in page


def test_all_events_counts_machine_opens(
    demo_db: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _report(demo_db, "--format", "json", "--by", "channel")
    human = {r["channel"]: r for r in json.loads(capsys.readouterr().out)["rows"]}
    _report(demo_db, "--format", "json", "--by", "channel", "--all-events")
    every = {r["channel"]: r for r in json.loads(capsys.readouterr().out)["rows"]}
    assert every["email"]["unique_opens"] > human["email"]["unique_opens"]
    assert every["email"]["unique_clicks"] > human["email"]["unique_clicks"]
    assert every["line"] == human["line"]


def test_report_bad_input(demo_db: tuple[Path, Path]) -> None:
    with pytest.raises(InvalidInputError):
        _report(demo_db, "--by", "country")
    with pytest.raises(InvalidInputError):
        _report(demo_db, "--since", "2024-05-01", "--until", "2024-04-01")
    with pytest.raises(CommandError):
        _report(demo_db, "--since", "yesterday")


def test_since_until_in_local_time(
    demo_db: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _report(demo_db, "--format", "json", "--by", "campaign_id", "--tz", "Asia/Tokyo",
            "--since", "2024-04-10", "--until", "2024-04-17")  # fmt: skip
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert [r["campaign_id"] for r in rows] == ["line-coupon"]


def test_renderers_on_an_empty_table() -> None:
    table = compute([], [], by="variant")
    assert "total" not in render_table(table)
    assert json.loads(render_json(table))["rows"] == []
    assert render_csv(table).splitlines()[0].startswith("variant,sent")


def test_demo_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "d.db"
    html = tmp_path / "d.html"
    argv = ["demo", "--db", str(db), "--out", str(html), "--contacts", "300"]
    args = _parser().parse_args(argv)
    assert args.run(args) == 0
    out = capsys.readouterr().out
    assert "A/B verdicts" in out
    assert "Timeline of cust-00000" in out
    assert html.exists()
    assert Keyring.load(tmp_path / "d.db.keyring").key_ids()
    with pytest.raises(CommandError):
        args.run(args)  # exists: refuses without --force
    args = _parser().parse_args([*argv, "--force"])
    assert args.run(args) == 0


def test_demo_is_deterministic_and_stores_no_plaintext(demo_db: tuple[Path, Path]) -> None:
    first = [(m.message_id, len(e)) for m, e in generate(contacts=200, seed=7)]
    assert first == [(m.message_id, len(e)) for m, e in generate(contacts=200, seed=7)]
    assert b"customer1@example.com" not in demo_db[0].read_bytes()


def test_demo_defaults_are_replaced_on_every_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The quickstart runs `commhistory demo` as it is; running it twice must work.
    monkeypatch.chdir(tmp_path)
    args = _parser().parse_args(["demo", "--contacts", "200"])
    assert args.run(args) == 0
    first = Keyring.load(tmp_path / "commhistory-demo.db.keyring").current_key_id
    assert args.run(args) == 0
    second = Keyring.load(tmp_path / "commhistory-demo.db.keyring").current_key_id
    assert first != second  # a new demo database and keyring, not a mix of two
    assert (tmp_path / "commhistory-demo.html").exists()
    capsys.readouterr()


def test_text_table_stays_within_100_columns_and_keeps_every_column() -> None:
    pairs = list(generate(contacts=400, seed=7))
    messages = [m for m, _ in pairs]
    events = [e for _, evs in pairs for e in evs]
    table = compute(messages, events, by=("campaign_id", "variant", "channel"))
    wide = render_table(table, width=10_000)
    narrow = render_table(table)
    assert max(len(line) for line in wide.splitlines()[:-1]) > 100  # one line is too wide
    assert max(len(line) for line in narrow.splitlines()) <= 100
    for header in ("sent", "deliv%", "click%", "CTOR%", "conv%", "revenue"):
        assert header in narrow
    # Every row appears in every block, its grouping columns repeated.
    blocks = narrow.split("\n\n")
    assert len(blocks) >= 2
    assert all(block.count("total") == 1 for block in blocks)
