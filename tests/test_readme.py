"""The README's promises hold: its Python session runs, and its quickstart commands exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import commhistory as ch

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


def test_python_session_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (code,) = re.findall(r"```python\n(.*?)```", README, re.S)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    keyring = ch.Keyring.load(tmp_path / "commhistory.keyring")
    with ch.open_repository("sqlite:///commhistory.db", keyring) as repo:
        assert repo.find_contacts(email="Taro@EXAMPLE.com") == ["c1"]
        assert repo.find_contacts(email="taro@example.com") == []  # local part case kept
        (entry,) = repo.timeline("c1")
    assert entry.message.address == "Taro@example.com"
    assert [e.type for e in entry.events] == [ch.EventType.DELIVERED]


def test_quickstart_is_exactly_two_commands() -> None:
    section = README.split("## Quickstart", 1)[1].split("##", 1)[0]
    (block,) = re.findall(r"```console\n(.*?)```", section, re.S)
    commands = block.strip().splitlines()
    assert commands == [
        "python -m pip install -e . && commhistory demo",
        "python -m pip install nox && nox -s tests",
    ]


def test_python_session_run_twice_keeps_the_first_keyring(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (code,) = re.findall(r"```python\n(.*?)```", README, re.S)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    first = (tmp_path / "commhistory.keyring").read_bytes()
    with pytest.raises(ch.KeyringExistsError, match=r"commhistory\.keyring"):
        exec(compile(code, "README.md", "exec"), {})
    assert (tmp_path / "commhistory.keyring").read_bytes() == first
    keyring = ch.Keyring.load(tmp_path / "commhistory.keyring")
    with ch.open_repository("sqlite:///commhistory.db", keyring) as repo:
        assert repo.find_contacts(email="Taro@EXAMPLE.com") == ["c1"]
