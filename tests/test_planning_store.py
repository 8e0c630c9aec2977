"""The planning port: SQL (SQLite, PostgreSQL) and memory agree on random histories."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from commhistory.contacts import AttributeDefinition, AttributeType
from commhistory.crypto import Keyring
from commhistory.facade import CommHistory, open_repository
from commhistory.model import Channel, Direction, Message, Purpose
from commhistory.store import MemoryRepository
from commhistory.store.consent import BULK_THRESHOLD
from commhistory.store.planning import MAX_THRESHOLDS

T0 = datetime(2026, 2, 1, tzinfo=UTC)
SQL_BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
ZONE_VALUES = ["Asia/Tokyo", "America/New_York", "Not/A_Zone", "UTC"]
CONTACTS = [f"c{i}" for i in range(5)]
_prefixes = itertools.count()

MESSAGES = st.lists(
    st.tuples(
        st.sampled_from(CONTACTS),
        st.sampled_from([Channel.EMAIL, Channel.SMS]),
        st.sampled_from(list(Purpose)),
        st.sampled_from(list(Direction)),
        st.integers(0, 10 * 24 * 60),  # minutes after T0
        st.integers(0, 2),  # which of the contact's addresses
    ),
    max_size=25,
)
ZONES = st.lists(
    st.tuples(st.sampled_from(CONTACTS), st.sampled_from(ZONE_VALUES), st.integers(0, 10)),
    max_size=8,
)
INSTANT = st.integers(0, 11 * 24 * 60).map(lambda m: T0 + timedelta(minutes=m))


@pytest.fixture(params=SQL_BACKENDS)
def sql(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CommHistory[Any]]:
    target = (
        f"sqlite:///{tmp_path / 'agree.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    with open_repository(target, Keyring.generate()) as repo:
        repo.declare_attributes([AttributeDefinition(name="tz", type=AttributeType.STR)])
        yield repo


def _address(prefix: str, contact: str, channel: Channel, which: int) -> str:
    if channel is Channel.EMAIL:
        return f"{prefix}{contact}-{which}@example.com"
    number = (int(prefix.strip("p_") or 0) * 50 + CONTACTS.index(contact) * 3 + which) % 10**7
    return f"+81901{number:07d}"


def _fill(
    repo: CommHistory[Any],
    prefix: str,
    messages: list[tuple[str, Channel, Purpose, Direction, int, int]],
    zones: list[tuple[str, str, int]],
) -> None:
    repo.record_messages(
        Message(
            message_id=f"{prefix}m{i}",
            channel=channel,
            direction=direction,
            contact_id=prefix + contact,
            address=_address(prefix, contact, channel, which),
            sent_at=T0 + timedelta(minutes=minutes),
            purpose=purpose,
        )
        for i, (contact, channel, purpose, direction, minutes, which) in enumerate(messages)
    )
    for contact, value, day in zones:
        repo.set_attributes(prefix + contact, {"tz": value}, at=T0 + timedelta(days=day))


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    messages=MESSAGES,
    zones=ZONES,
    since=st.lists(INSTANT, min_size=1, max_size=MAX_THRESHOLDS + 3),
    until=INSTANT,
    zone_at=INSTANT,
    channel=st.sampled_from([Channel.EMAIL, Channel.SMS, Channel.PUSH]),
    purpose=st.sampled_from(list(Purpose)),
    padded=st.booleans(),
)
def test_sql_and_memory_planning_stores_agree(
    sql: CommHistory[Any],
    messages: list[tuple[str, Channel, Purpose, Direction, int, int]],
    zones: list[tuple[str, str, int]],
    since: list[datetime],
    until: datetime,
    zone_at: datetime,
    channel: Channel,
    purpose: Purpose,
    padded: bool,
) -> None:
    prefix = f"p{next(_prefixes)}_"
    memory: CommHistory[Any] = CommHistory(MemoryRepository())
    memory.declare_attributes([AttributeDefinition(name="tz", type=AttributeType.STR)])
    for repo in (memory, sql):
        _fill(repo, prefix, messages, zones)
    ids = [prefix + c for c in CONTACTS] + [f"{prefix}unknown"]
    if padded:  # past the bulk threshold: the SQL store joins to the id list or scans
        ids += [f"{prefix}pad{i}" for i in range(BULK_THRESHOLD + 1)]
    mine, theirs = memory.store.planning_store, sql.store.planning_store
    counts = mine.send_counts(ids, channel, purpose, since, until)
    assert sql_counts(theirs, ids, channel, purpose, since, until) == counts
    # Ids given twice are counted once (the id list joined is distinct).
    assert sql_counts(theirs, ids + ids[:3], channel, purpose, since, until) == counts
    for decrypt in (True, False):
        assert theirs.addresses(ids, channel, decrypt=decrypt) == mine.addresses(
            ids, channel, decrypt=decrypt
        )
    # The contacts' ciphers cached by the writes above, then none: the data keys
    # unwrapped by the read itself give the same addresses.
    sql.store._ciphers.clear()
    some = ids[:3]
    assert theirs.addresses(some, channel, decrypt=True) == mine.addresses(
        some, channel, decrypt=True
    )
    assert theirs.addresses(ids, channel, decrypt=True) == mine.addresses(
        ids, channel, decrypt=True
    )
    assert theirs.zones(ids, "tz", zone_at) == mine.zones(ids, "tz", zone_at)
    # The thresholds (a HAVING in SQL) keep exactly the contacts past one of them.
    at_least = [1 + i % 3 for i in range(len(since))]
    past = sql_counts(theirs, ids, channel, purpose, since, until, at_least=at_least)
    assert past == mine.send_counts(ids, channel, purpose, since, until, at_least=at_least)
    assert past == {
        cid: c
        for cid, c in counts.items()
        if any(n >= k for n, k in zip(c, at_least, strict=True))
    }
    # Skipping a value leaves out exactly the contacts holding it.
    every = mine.zones(ids, "tz", zone_at)
    for skip in {*every.values(), "Asia/Tokyo"}:
        kept = {cid: z for cid, z in every.items() if z != skip}
        assert theirs.zones(ids, "tz", zone_at, skip=skip) == kept
        assert mine.zones(ids, "tz", zone_at, skip=skip) == kept
    # And the memory answer is the obvious one.
    for cid in ids[:6]:
        expected = tuple(
            sum(
                1
                for (c, ch, pu, d, minutes, _w) in messages
                if prefix + c == cid
                and ch is channel
                and pu is purpose
                and d is Direction.OUTBOUND
                and s <= T0 + timedelta(minutes=minutes) <= until
            )
            for s in since
        )
        assert counts.get(cid, tuple(0 for _ in since)) == expected


def sql_counts(store: Any, *args: Any, **kwargs: Any) -> dict[str, tuple[int, ...]]:
    out: dict[str, tuple[int, ...]] = store.send_counts(*args, **kwargs)
    return out
