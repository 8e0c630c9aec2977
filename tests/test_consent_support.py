"""Shared fixtures and builders for the consent and privacy tests."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from commhistory.crypto import Keyring
from commhistory.facade import CommHistory, open_repository
from commhistory.model import BounceClass, Channel, Direction, Event, EventType, Message, Purpose

T0 = datetime(2026, 4, 1, tzinfo=UTC)


def at(days: float) -> datetime:
    return T0 + timedelta(days=days)


def make_repo(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    if kind == "memory":
        yield CommHistory.in_memory()
        return
    url = (
        f"sqlite:///{tmp_path / 'c.db'}" if kind == "sqlite" else request.getfixturevalue("pg_url")
    )
    with open_repository(url, Keyring.generate()) as repo:
        yield repo


def msg(
    n: str,
    contact: str = "c1",
    *,
    channel: Channel = Channel.EMAIL,
    address: str | None = None,
    day: float = 0,
    purpose: Purpose = Purpose.MARKETING,
    direction: Direction = Direction.OUTBOUND,
    body: str | None = None,
    campaign: str = "spring",
) -> Message:
    if address is None:
        address = {
            Channel.EMAIL: f"{contact}@example.com",
            Channel.SMS: "+819012345678",
            Channel.LINE: "U" + "0123456789abcdef" * 2,
        }[channel]
    return Message(
        message_id=n, channel=channel, direction=direction, contact_id=contact,
        address=address, sent_at=at(day), purpose=purpose, campaign_id=campaign,
        variant="A", body=body, subject=None if channel is not Channel.EMAIL else "subj",
    )  # fmt: skip


def ev(
    n: str,
    message_id: str,
    type_: EventType,
    *,
    day: float = 0.1,
    bounce: BounceClass | None = None,
) -> Event:
    return Event(
        event_id=n, message_id=message_id, type=type_, occurred_at=at(day), bounce=bounce,
        status_code="5.1.1" if bounce is BounceClass.HARD else None,
    )  # fmt: skip


@pytest.fixture(
    params=["memory", "sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def repo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """A repository of each kind: in memory, SQLite, PostgreSQL (isolated schema)."""
    yield from make_repo(request.param, tmp_path, request)


def test_builders_make_valid_records() -> None:
    assert msg("m1", channel=Channel.SMS).address.startswith("+81")
    assert ev("e1", "m1", EventType.DELIVERED).occurred_at == at(0.1)
