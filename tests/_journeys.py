"""Helpers of the journey tests: contacts that send planning lets a send go to."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from commhistory import Keyring, open_repository
from commhistory.facade import CommHistory
from commhistory.model import (
    Channel,
    ConsentAction,
    ConsentEvent,
    ConsentMethod,
    Direction,
    Message,
    Purpose,
)

LONG_AGO = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)

BACKENDS = ["memory", "sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
"""The stores a journey test runs on: the ``params`` of its ``repo`` fixture."""


def sql_target(request: pytest.FixtureRequest, tmp_path: Path, *, postgres: str = "pg_url") -> str:
    """The database URL of a SQL backend parameter: a new SQLite file, or a PostgreSQL fixture's.

    ``postgres="pg_database_url"`` gives a database of its own, for tests whose reads
    wait for every transaction running in their database.
    """
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'journeys.db'}"
    url: str = request.getfixturevalue(postgres)
    return url


def cli_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Keyring]:
    """A SQLite file and keyring the CLI finds through its environment, acting as nobody.

    Returns the database URL and the keys, for the test to fill the store first.
    """
    keyring = tmp_path / "k.keyring"
    ring = Keyring.generate()
    ring.save(keyring)
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("COMMHISTORY_DB", url)
    monkeypatch.setenv("COMMHISTORY_KEYRING", str(keyring))
    for name in ("COMMHISTORY_ACTOR", "COMMHISTORY_ROLES", "COMMHISTORY_POLICY"):
        monkeypatch.delenv(name, raising=False)
    return url, ring


@contextlib.contextmanager
def open_history(
    request: pytest.FixtureRequest, tmp_path: Path, *, postgres: str = "pg_url"
) -> Iterator[CommHistory[Any]]:
    """The store of a :data:`BACKENDS` parameter: memory, or a new SQL store."""
    if request.param == "memory":
        with CommHistory.in_memory() as memory:
            yield memory
        return
    with open_repository(
        sql_target(request, tmp_path, postgres=postgres), Keyring.generate()
    ) as sql:
        yield sql


def address(cid: str, channel: Channel) -> str:
    """A contact's address on a channel (email, LINE user id or a Japanese mobile number)."""
    if channel is Channel.EMAIL:
        return f"{cid}@example.com"
    digest = hashlib.sha256(cid.encode()).hexdigest()
    if channel is Channel.LINE:
        return "U" + digest[:32]
    return f"+81901{int(digest[:12], 16) % 10**7:07d}"


def with_address(repo: CommHistory[Any], contacts: Iterable[str], channel: Channel) -> None:
    """Give contacts an address on the channel: an old transactional message to it."""
    repo.record_messages(
        Message(
            message_id=f"old-{channel.value}-{cid}",
            channel=channel,
            direction=Direction.OUTBOUND,
            contact_id=cid,
            address=address(cid, channel),
            sent_at=LONG_AGO,
            purpose=Purpose.TRANSACTIONAL,
        )
        for cid in contacts
    )


def consent(
    cid: str,
    channel: Channel,
    at: dt.datetime = LONG_AGO,
    action: ConsentAction = ConsentAction.GRANT,
) -> ConsentEvent:
    """A marketing consent event of a contact on a channel."""
    return ConsentEvent(
        contact_id=cid,
        channel=channel,
        purpose=Purpose.MARKETING,
        action=action,
        occurred_at=at,
        method=ConsentMethod.WEB_FORM,
    )


def reachable(
    repo: CommHistory[Any], contacts: Iterable[str], channel: Channel = Channel.EMAIL
) -> None:
    """Contacts send planning lets a marketing send go to: an address and consent."""
    ids = list(contacts)
    with_address(repo, ids, channel)
    repo.record_consent(consent(cid, channel) for cid in ids)
