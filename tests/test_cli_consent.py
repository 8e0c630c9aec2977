"""The consent and privacy commands, run through their own parser."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from commhistory.cli import consent as cli_consent
from commhistory.cli import store as cli_store
from commhistory.cli._exits import CommandError
from commhistory.crypto import Keyring
from commhistory.facade import open_repository
from commhistory.model import BounceClass, EventType
from tests.test_consent_support import at, ev, msg


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="commhistory")
    sub = parser.add_subparsers(dest="command")
    cli_consent.register(sub)
    args = parser.parse_args(argv)
    code: int = args.run(args)
    return code


@pytest.fixture
def store(tmp_path: Path) -> list[str]:
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    keyring = Keyring.generate()
    path = tmp_path / "k.keyring"
    keyring.save(path)
    with open_repository(db, keyring) as repo:
        repo.consent.grant("c1", "email", "marketing", method="web_form", occurred_at=at(0))
        repo.record_messages([msg("m1", "c1", day=1), msg("m2", "c2", day=1)])
        repo.record_events([ev("e1", "m2", EventType.BOUNCED, day=1.1, bounce=BounceClass.HARD)])
    assert cli_store is not None
    return ["--db", db, "--keyring", str(path)]


def test_can_send_exit_codes_and_json(
    store: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(["can-send", "c1", "--channel", "email", "--purpose", "marketing", *store]) == 0
    assert "allowed" in capsys.readouterr().out
    code = _run(
        [
            "can-send",
            "c2",
            "--channel",
            "email",
            "--purpose",
            "transactional",
            "--format",
            "json",
            *store,
        ]
    )
    assert code == cli_consent.EXIT_REFUSED
    doc = json.loads(capsys.readouterr().out)
    assert doc["allowed"] is False
    assert doc["suppressions"][0]["reason"] == "hard_bounce"
    past = ["can-send", "c1", "--channel", "email", "--purpose", "marketing"]
    assert _run([*past, "--at", "2026-03-01T00:00:00+09:00", *store]) == 3


def test_export_erase_and_purge(
    store: list[str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "c1.json"
    assert _run(["export-subject", "c1", "--out", str(out), *store]) == 0
    assert json.loads(out.read_text())["addresses"][0]["address"] == "c1@example.com"
    with pytest.raises(CommandError, match="--yes"):
        _run(["erase-subject", "c1", *store])
    assert _run(["erase-subject", "c1", "--yes", "--format", "json", *store]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["already_erased"] is False
    assert "example.com" not in json.dumps(report)
    assert _run(["erase-subject", "c1", "--yes", *store]) == 0
    assert "already erased" in capsys.readouterr().out
    assert _run(["purge", "--dry-run", "--format", "json", *store]) == 0
    assert json.loads(capsys.readouterr().out)["dry_run"] is True
    assert _run(["purge", *store]) == 0
    assert "deleted" in capsys.readouterr().out
