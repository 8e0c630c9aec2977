"""``commhistory audit verify`` and ``audit show`` (exit 0 intact, 5 tampered)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from commhistory.audit import Actor
from commhistory.cli import audit as audit_cli
from commhistory.cli.audit import EXIT_TAMPERED
from commhistory.crypto import Keyring
from commhistory.errors import PermissionDenied
from commhistory.facade import open_repository
from tests.test_audit_log import drop_guards
from tests.test_consent_support import msg


def _run(argv: list[str]) -> int:
    # The command is registered here directly until cli/__init__ lists it.
    parser = argparse.ArgumentParser(prog="commhistory")
    audit_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    code: int = args.run(args)
    return code


@pytest.fixture
def store(tmp_path: Path) -> list[str]:
    url = f"sqlite:///{tmp_path / 'h.db'}"
    keyring = Keyring.generate()
    keyring.save(tmp_path / "k.keyring")
    with open_repository(url, keyring) as repo:
        repo.record_messages([msg("m1", "c1"), msg("m2", "c2")])
        officer = repo.as_actor(Actor("po-1", ["privacy_officer"]), purpose="request 7")
        officer.timeline("c1")
        officer.export_subject("c2")
        analyst = repo.as_actor(Actor("an-1", ["analyst"]), purpose="report")
        with pytest.raises(PermissionDenied):
            analyst.timeline("c2")
    return ["--db", url, "--keyring", str(tmp_path / "k.keyring")]


def test_verify_intact(store: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["audit", "verify", *store]) == 0
    assert "intact: 3 entries" in capsys.readouterr().out
    assert _run(["audit", "verify", *store, "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["intact"] is True
    assert report["entries"] == 3
    assert len(report["head"]) == 64


@pytest.mark.parametrize(
    ("sql", "first_bad"),
    [
        ("UPDATE audit_log SET actor_id = 'nobody' WHERE seq = 2", 2),
        ("DELETE FROM audit_log WHERE seq = 1", 1),
        (
            "INSERT INTO audit_log SELECT 4, recorded_at, actor_id, roles, action, permission, "
            "contact_id, targets, purpose, outcome, key_id, mac, mac FROM audit_log WHERE seq = 3",
            4,
        ),
        ("UPDATE audit_log SET seq = 1000 - seq WHERE seq IN (2, 3);"
         "UPDATE audit_log SET seq = 1000 - seq + CASE seq WHEN 998 THEN 1 ELSE -1 END "
         "WHERE seq > 900", 2),
    ],
    ids=["modify", "delete", "insert", "reorder"],
)  # fmt: skip
def test_verify_tampered(
    store: list[str], capsys: pytest.CaptureFixture[str], sql: str, first_bad: int
) -> None:
    engine = sa.create_engine(store[1])
    with engine.begin() as conn:
        drop_guards(conn)
        for statement in sql.split(";"):
            conn.exec_driver_sql(statement)
    engine.dispose()
    assert _run(["audit", "verify", *store]) == EXIT_TAMPERED
    assert f"TAMPERED at entry {first_bad}" in capsys.readouterr().out
    assert _run(["audit", "verify", *store, "--format", "json"]) == EXIT_TAMPERED
    assert json.loads(capsys.readouterr().out)["first_bad"] == first_bad


def test_show_filters(store: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["audit", "show", *store]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    assert "po-1 (privacy_officer)" in lines[0]
    assert "denied" in lines[2]
    assert _run(["audit", "show", *store, "--contact", "c2", "--format", "json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["actor_id"], r["action"], r["outcome"]) for r in rows] == [
        ("po-1", "export_subject", "ok"),
        ("an-1", "timeline", "denied"),
    ]
    assert _run(["audit", "show", *store, "--actor", "an-1"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1
    assert _run(["audit", "show", *store, "--since", "2999-01-01T00:00:00+00:00"]) == 0
    assert capsys.readouterr().out == ""


def test_show_rejects_naive_since(store: list[str]) -> None:
    with pytest.raises(SystemExit) as info:
        _run(["audit", "show", *store, "--since", "2026-01-01T00:00:00"])
    assert info.value.code == 2


def test_show_action_filter_and_table(
    store: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    # What a privacy officer asks: who exported or erased whom, when, why.
    url, keyring = store[1], Keyring.load(store[3])
    with open_repository(url, keyring) as repo:
        repo.erase_subject("c1")  # the Python API, no view: audited as api:<user>
    assert _run(["audit", "show", *store, "--action", "export_subject,erase_subject"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert "po-1 (privacy_officer)  export_subject  ok  contact=c2" in lines[0]
    assert "(admin)  erase_subject  ok  contact=c1" in lines[1]
    argv = ["audit", "show", *store, "--action", "export_subject", "--action", "erase_subject"]
    assert _run([*argv, "--format", "json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["action"], r["contact_id"], r["roles"]) for r in rows] == [
        ("export_subject", "c2", ["privacy_officer"]),
        ("erase_subject", "c1", ["admin"]),
    ]
    assert {"recorded_at", "actor_id", "purpose", "outcome"} <= set(rows[0])
    assert _run([*argv, "--format", "table"]) == 0
    header, first, second = capsys.readouterr().out.splitlines()
    assert header.split() == [
        "time", "(UTC)", "actor", "roles", "action", "purpose", "contact", "outcome",
    ]  # fmt: skip
    assert first.split()[2:] == ["po-1", "privacy_officer", "export_subject", "request", "7",
                                 "c2", "ok"]  # fmt: skip
    assert second.split()[3:] == ["admin", "erase_subject", "commhistory", "api", "c1", "ok"]
    assert second.split()[2].startswith("api:")
    # Columns line up: every field starts where its header does.
    assert first.index("export_subject") == header.index("action") == second.index("erase")
    assert _run(["audit", "show", *store, "--action", "purge", "--format", "table"]) == 0
    out, err = capsys.readouterr()
    assert (out, err) == ("", "no audit entries match\n")
