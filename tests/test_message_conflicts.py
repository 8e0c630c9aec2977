"""A message id repeated with different content is kept as a dead letter, not a duplicate.

Issue 12, item 9: a message id seen again with another contact, channel,
direction or send time used to count as a duplicate, silently dropping the new
version. Identical repeats (retried webhooks, re-imported files) stay duplicates.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from commhistory.crypto import Keyring
from commhistory.facade import CommHistory, open_repository
from commhistory.model import Channel, Direction
from commhistory.store import MemoryRepository
from commhistory.store.batching import CONFLICT_REASON
from tests.test_consent_support import at, msg


@pytest.fixture(
    params=["memory", "sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def repo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CommHistory[Any]]:
    if request.param == "memory":
        with CommHistory(MemoryRepository()) as mem:
            yield mem
        return
    url = (
        f"sqlite:///{tmp_path / 'c.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    with open_repository(url, Keyring.generate()) as sql:
        yield sql


def test_a_changed_message_under_a_stored_id_is_a_dead_letter(repo: CommHistory[Any]) -> None:
    first = msg("m1", "c1", day=1)
    repo.record_messages([first])
    same = repo.record_messages([first])
    assert (same.inserted, same.duplicates, same.rejected) == (0, 1, 0)

    # The same message timed differently (another delivery format) is the same message.
    retimed = attrs.evolve(first, sent_at=at(2))
    other_contact = attrs.evolve(first, contact_id="c2", address="c2@example.com")
    other_channel = attrs.evolve(first, channel=Channel.SMS, address="+819012345678")
    inbound = attrs.evolve(first, direction=Direction.INBOUND)
    report = repo.record_messages([retimed, other_contact, other_channel, inbound])
    assert (report.inserted, report.duplicates, report.rejected) == (0, 1, 3)
    letters = repo.dead_letters(source="record_messages")
    assert [d.field for d in letters] == ["message_id"] * 3
    assert {d.reason for d in letters} == {CONFLICT_REASON}
    assert any('"contact_id":"c2"' in d.raw for d in letters)  # the new version is kept
    # The stored message is the first one, unchanged.
    (entry,) = repo.timeline("c1")
    assert entry.message.sent_at == first.sent_at
    assert repo.find_contacts(email="c2@example.com") == []


def test_a_repeat_inside_one_batch_is_compared_too(repo: CommHistory[Any]) -> None:
    first = msg("m1", "c1", day=1)
    other = attrs.evolve(first, contact_id="c9", address="c9@example.com")
    report = repo.record_messages([first, first, other])
    assert (report.inserted, report.duplicates, report.rejected) == (1, 1, 1)


def test_a_source_name_any_database_refuses_is_made_storable(repo: CommHistory[Any]) -> None:
    """A file name with undecodable bytes (lone surrogates) or a NUL still keeps its letters."""
    from commhistory.convert import ParsedLine
    from commhistory.errors import PayloadError

    bad = ParsedLine(line=1, raw="{", error=PayloadError(field="<line>", reason="not JSON"))
    report = repo.ingest([bad], source="caf\udce9\x00.jsonl")
    assert report.rejected == 1
    (letter,) = repo.dead_letters()
    assert letter.source == "caf?\ufffd.jsonl"
    assert letter.reason == "not JSON"
