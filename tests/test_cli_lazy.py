"""Start-up: a command imports its own module only, and ``commhistory`` its names on use."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import commhistory
from commhistory import cli
from commhistory.cli import COMMAND_MODULES, build_parser

SRC = str(Path(commhistory.__file__).resolve().parent.parent)
HEAVY = ("sqlalchemy", "alembic", "cryptography", "commhistory.store", "commhistory.facade")


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def test_the_table_names_each_command_of_each_module() -> None:
    found: dict[str, str] = {}
    for name in cli._MODULES:
        parser = argparse.ArgumentParser(prog="commhistory")
        subparsers = parser.add_subparsers(dest="command")
        importlib.import_module(f"commhistory.cli.{name}").register(subparsers)
        for command in _commands(parser):
            assert command not in found, command
            found[command] = name
    assert found == dict(COMMAND_MODULES)
    assert list(_commands(build_parser())) == list(found)


@pytest.mark.parametrize("command", sorted(COMMAND_MODULES))
def test_a_command_parses_as_in_the_full_parser(command: str) -> None:
    alone = _commands(build_parser(command))
    assert set(alone) == {c for c, m in COMMAND_MODULES.items() if m == COMMAND_MODULES[command]}
    assert alone[command].format_help() == _commands(build_parser())[command].format_help()


def test_an_unknown_word_registers_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert set(_commands(build_parser("no-such-command"))) == set(COMMAND_MODULES)
    with pytest.raises(SystemExit) as exc:
        cli.main(["validat", "x.jsonl"])
    assert exc.value.code == 2
    assert "invalid choice: 'validat'" in capsys.readouterr().err


def test_version_is_read_when_asked(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out == f"commhistory {commhistory.__version__}\n"


def _run(code: str) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": SRC}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_validate_imports_no_storage_nor_crypto(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    path.write_text(
        '{"kind": "message", "message_id": "m1", "channel": "email", "direction": "outbound",'
        ' "contact_id": "c1", "address": "a@example.com", "sent_at": "2026-04-01T00:00:00Z"}\n'
        '{"kind": "contact", "contact_id": "c1", "attributes": {"plan": "gold"}}\n'
        '{"kind": "event", "event_id": "e1", "message_id": "m1", "type": "nope",'
        ' "occurred_at": "2026-04-01T00:00:00Z"}\n',
        encoding="utf-8",
    )
    result = _run(
        "import json, sys\n"
        "from commhistory.cli import main\n"
        f"code = main(['validate', {str(path)!r}])\n"
        f"heavy = sorted(m for m in sys.modules if m.startswith({HEAVY!r}))\n"
        "print(json.dumps({'code': code, 'heavy': heavy}))\n"
    )
    assert result == {"code": 1, "heavy": []}


def test_the_package_imports_its_names_on_use() -> None:
    result = _run(
        "import json, sys\n"
        "import commhistory as ch\n"
        f"before = sorted(m for m in sys.modules if m.startswith({HEAVY!r}))\n"
        "repo = ch.SQLRepository\n"
        "print(json.dumps({'before': before, 'after': 'sqlalchemy' in sys.modules,"
        " 'same': repo is sys.modules['commhistory.store'].SQLRepository}))\n"
    )
    assert result == {"before": [], "after": True, "same": True}


def test_every_public_name_resolves() -> None:
    for name in commhistory.__all__:
        assert getattr(commhistory, name) is not None, name
    assert set(commhistory.__all__) <= set(dir(commhistory))
    assert commhistory.kpi is sys.modules["commhistory.kpi"]
    with pytest.raises(AttributeError):
        _ = commhistory.no_such_name


def test_import_loads_no_journeys_segments_kpis_privacy_or_analytics(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    path.write_text(
        '{"kind": "message", "message_id": "m1", "channel": "email", "direction": "outbound",'
        ' "contact_id": "c1", "address": "a@example.com", "sent_at": "2026-04-01T00:00:00Z"}\n',
        encoding="utf-8",
    )
    args = ["import", str(path), "--db", f"sqlite:///{tmp_path / 'h.db'}"]
    args += ["--keyring", str(tmp_path / "keys")]
    unused = tuple(
        f"commhistory.{name}." for name in ("journeys", "segments", "kpi", "privacy", "analytics")
    )
    result = _run(
        "import json, sys\n"
        "from commhistory.cli import main\n"
        f"code = main({args!r})\n"
        f"loaded = sorted(m for m in sys.modules if (m + '.').startswith({unused!r}))\n"
        "print(json.dumps({'code': code, 'loaded': loaded}))\n"
    )
    assert result == {"code": 0, "loaded": []}


def test_the_facade_spells_the_journeys_trigger_age() -> None:
    from commhistory.facade.guarded import TRIGGER_MAX_AGE
    from commhistory.journeys.triggers import DEFAULT_MAX_AGE

    assert TRIGGER_MAX_AGE == DEFAULT_MAX_AGE
