"""The README's promises hold: its Python session runs, and its quickstart commands exist."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import commhistory as ch
from commhistory.contacts import AttributeDefinition
from commhistory.segments.planning import SendPlan

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


def _blocks() -> list[str]:
    """The README's Python blocks: the session, then the segment and send plan."""
    blocks: list[str] = re.findall(r"```python\n(.*?)```", README, re.S)
    assert len(blocks) == 2
    return blocks


def test_python_session_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code = _blocks()[0]
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
    code = _blocks()[0]
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    first = (tmp_path / "commhistory.keyring").read_bytes()
    with pytest.raises(ch.KeyringExistsError, match=r"commhistory\.keyring"):
        exec(compile(code, "README.md", "exec"), {})
    assert (tmp_path / "commhistory.keyring").read_bytes() == first
    keyring = ch.Keyring.load(tmp_path / "commhistory.keyring")
    with ch.open_repository("sqlite:///commhistory.db", keyring) as repo:
        assert repo.find_contacts(email="Taro@EXAMPLE.com") == ["c1"]


def test_segment_and_send_plan_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    session, segment = _blocks()
    monkeypatch.chdir(tmp_path)
    exec(compile(session, "README.md", "exec"), {})
    keyring = ch.Keyring.load(tmp_path / "commhistory.keyring")
    with ch.open_repository("sqlite:///commhistory.db", keyring) as repo:
        repo.declare_attributes(
            [AttributeDefinition(name="tier", type="enum", values=("gold", "silver"))]
        )
        repo.declare_activities(["purchase"])
        repo.set_attributes("c1", {"tier": "gold"})
        repo.record_events(
            [
                ch.Event(
                    event_id="e-open",
                    message_id="m1",
                    type=ch.EventType.OPENED,
                    occurred_at=datetime.now(UTC) - timedelta(days=1),
                )
            ]
        )
        scope: dict[str, object] = {"repo": repo}
        exec(compile(segment, "README.md", "exec"), scope)
        plan = scope["plan"]
        assert isinstance(plan, SendPlan)
        assert repo.segment_count(scope["tree"]) == 1  # type: ignore[arg-type]
        # c1 gave no SMS marketing consent: excluded, whatever the segment says.
        assert plan.counts()["no_consent"] == 1
        assert plan.send == ()
