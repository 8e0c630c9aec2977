"""The repository contract: the same tests against memory, SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import pytest

from commhistory.convert import ParsedLine, dumps, read_records
from commhistory.crypto import Keyring
from commhistory.errors import (
    InvalidInputError,
    NormalizationError,
    NotFoundError,
    PayloadError,
)
from commhistory.facade import CommHistory, open_repository
from commhistory.model import (
    BounceClass,
    Channel,
    ConsentAction,
    ConsentEvent,
    ConsentMethod,
    Direction,
    Event,
    EventType,
    Message,
    Purpose,
)
from commhistory.store import (
    IngestReport,
    MemoryRepository,
    Repository,
    SQLRepository,
    TimelineEntry,
)
from tests.conftest import pg_variant_url

T0 = datetime(2026, 4, 1, 0, 0, tzinfo=UTC)
LINE_ID = "U" + "0123456789abcdef" * 2


def message(n: int | str, contact: str = "c1", **kw: Any) -> Message:
    fields: dict[str, Any] = {
        "message_id": f"m{n}",
        "channel": Channel.EMAIL,
        "direction": Direction.OUTBOUND,
        "contact_id": contact,
        "address": f"user{contact}@example.com",
        "sent_at": T0 + timedelta(minutes=int(str(n).strip("-x") or 0)),
        "purpose": Purpose.MARKETING,
        "campaign_id": "spring",
        "variant": "A",
        "subject": f"件名 {n}",
        "body": f"Dear customer {n}, body text",
        "provider": "sendgrid",
        "provider_message_id": f"sg-{n}",
        "metadata": {"segment": "vip", "n": str(n)},
    }
    fields.update(kw)
    return Message(**fields)


def event(n: int | str, message_id: str | None = "m1", **kw: Any) -> Event:
    fields: dict[str, Any] = {
        "event_id": f"e{n}",
        "type": EventType.DELIVERED,
        "occurred_at": T0 + timedelta(seconds=int(str(n).strip("-x") or 0)),
        "message_id": message_id,
    }
    fields.update(kw)
    return Event(**fields)


def full_event(n: int, message_id: str = "m1") -> Event:
    return event(
        n,
        message_id,
        type=EventType.BOUNCED,
        provider="sendgrid",
        provider_event_id=f"sg-ev-{n}",
        address="userc1@example.com",
        status_code="5.1.1",
        bounce=BounceClass.HARD,
        reason="550 5.1.1 <userc1@example.com>: user unknown",
        url="https://example.com/?t=secret",
        user_agent="Mozilla/5.0 (secret agent)",
        ip="203.0.113.9",
        machine=True,
        revenue=Decimal("4980.25"),
        currency="JPY",
        metadata={"raw": {"k": [1, 2]}},
    )


def consent(**kw: Any) -> ConsentEvent:
    fields: dict[str, Any] = {
        "contact_id": "c1",
        "channel": Channel.EMAIL,
        "purpose": Purpose.MARKETING,
        "action": ConsentAction.GRANT,
        "occurred_at": T0,
        "method": ConsentMethod.DOUBLE_OPT_IN,
        "source": "https://example.com/form?email=userc1@example.com",
        "ip": "198.51.100.7",
        "user_agent": "ConsentBrowser/1.0",
    }
    fields.update(kw)
    return ConsentEvent(**fields)


def parsed(records: list[Any]) -> list[ParsedLine]:
    return [ParsedLine(line=i, raw=dumps(r), record=r) for i, r in enumerate(records, 1)]


BACKENDS = [
    "memory",
    "sqlite",
    pytest.param("postgresql", marks=pytest.mark.postgres),
    pytest.param("postgresql-partitioned", marks=pytest.mark.postgres),
]


@pytest.fixture
def keyring() -> Keyring:
    return Keyring.generate()


@pytest.fixture(params=BACKENDS)
def repo(request: pytest.FixtureRequest, tmp_path: Path, keyring: Keyring) -> Iterator[Any]:
    """Every repository implementation, with a small batch size to exercise batching."""
    if request.param == "memory":
        with CommHistory(MemoryRepository(batch_size=3)) as mem:
            yield mem
        return
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'store.db'}"
    else:
        url = pg_variant_url(request, request.param)
    with open_repository(url, keyring, batch_size=3) as sql:
        yield sql


def test_implements_protocol(repo: CommHistory[Any]) -> None:
    assert isinstance(repo.store, Repository)


def test_round_trip_through_timeline(repo: CommHistory[Any]) -> None:
    m1 = message(1)
    m2 = message(2, channel=Channel.SMS, address="+819012345678", subject=None, metadata={})
    m0 = message(0, direction=Direction.INBOUND, provider=None, provider_message_id=None)
    events = [full_event(30), event(10), event(20, "m2", type=EventType.OPENED)]
    assert repo.record_messages([m1, m2, m0]) == IngestReport(inserted=3)
    assert repo.record_events(events) == IngestReport(inserted=3)

    timeline = repo.timeline("c1")

    assert [entry.message for entry in timeline] == [m0, m1, m2]
    assert timeline[0].events == ()
    assert timeline[1].events == (events[1], events[0])  # by occurred_at
    assert timeline[2].events == (events[2],)
    assert timeline[1].events[1].revenue == Decimal("4980.25")
    assert all(isinstance(e, TimelineEntry) for e in timeline)


def test_timeline_of_unknown_contact_is_not_found(repo: CommHistory[Any]) -> None:
    repo.record_messages([message(1)])
    with pytest.raises(NotFoundError) as info:
        repo.timeline("nobody")
    assert info.value.kind == "contact"
    assert info.value.identifier == "nobody"


def test_contact_with_only_consent_has_an_empty_timeline(repo: CommHistory[Any]) -> None:
    repo.record_consent([consent(contact_id="c9")])
    assert repo.timeline("c9") == []


def test_duplicate_messages_are_counted_not_stored(repo: CommHistory[Any]) -> None:
    m = message(1)
    same_provider_id = message(2, provider_message_id="sg-1")
    report = repo.record_messages([m, m, message(3), same_provider_id])  # within batches
    assert report == IngestReport(inserted=2, duplicates=2)
    again = repo.record_messages([m, message(3), message(4)])  # across calls
    assert again == IngestReport(inserted=1, duplicates=2)
    assert [e.message.message_id for e in repo.timeline("c1")] == ["m1", "m3", "m4"]


def test_duplicate_events_are_counted_not_stored(repo: CommHistory[Any]) -> None:
    repo.record_messages([message(1)])
    e1 = event(1, provider="sendgrid", provider_event_id="p1")
    retried = event(2, provider="sendgrid", provider_event_id="p1")  # same provider event
    other_provider = event(3, provider="ses", provider_event_id="p1")
    report = repo.record_events([e1, e1, retried, other_provider, event(4)])
    assert report == IngestReport(inserted=3, duplicates=2)
    assert repo.record_events([e1, event(4), event(5)]) == IngestReport(inserted=1, duplicates=2)
    (entry,) = repo.timeline("c1")
    assert [e.event_id for e in entry.events] == ["e1", "e3", "e4", "e5"]


def test_event_before_its_message_is_linked_when_it_arrives(repo: CommHistory[Any]) -> None:
    early = event(5, "m1", reason="queued before send", ip="192.0.2.1")
    by_provider = event(
        6, None, provider="sendgrid", provider_message_id="sg-1", type=EventType.OPENED
    )
    assert repo.record_events([early, by_provider]) == IngestReport(inserted=2)
    repo.record_messages([message(2)])
    assert repo.timeline("c1")[0].events == ()  # orphans are in no timeline

    report = repo.record_messages([message(1)])

    assert report == IngestReport(inserted=1, linked=2)
    entry = next(e for e in repo.timeline("c1") if e.message.message_id == "m1")
    assert entry.events == (early, attrs.evolve(by_provider, message_id="m1"))
    assert entry.events[0].ip == "192.0.2.1"
    # Linked events dedupe as before.
    assert repo.record_events([early]) == IngestReport(duplicates=1)


def test_event_names_its_message_by_provider_id(repo: CommHistory[Any]) -> None:
    repo.record_messages([message(1)])
    e = event(1, None, provider="sendgrid", provider_message_id="sg-1")
    assert repo.record_events([e]) == IngestReport(inserted=1)
    assert repo.timeline("c1")[0].events == (attrs.evolve(e, message_id="m1"),)


def test_ingest_links_event_and_message_of_the_same_batch(repo: CommHistory[Any]) -> None:
    lines = parsed([event(1, "m1"), message(1)])
    assert repo.ingest(lines, source="mixed.jsonl") == IngestReport(inserted=2)
    assert [e.event_id for e in repo.timeline("c1")[0].events] == ["e1"]


def _mixed_lines(tmp_path: Path) -> Path:
    good = [dumps(message(n, contact=f"c{n % 3}")) for n in range(1, 8)]
    events = [dumps(event(n, f"m{n % 7 + 1}")) for n in range(1, 12)]
    bad = [
        '{"kind": "message", "message_id": "bad1"}',
        "not json at all userx@example.com",
        '{"kind": "event", "event_id": "bad2", "type": "exploded", "message_id": "m1",'
        ' "occurred_at": "2026-04-01T00:00:00Z"}',
    ]
    lines = [*good[:4], bad[0], *events[:6], bad[1], *good[4:], *good[:2], *events, bad[2]]
    path = tmp_path / "input.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_ingest_totals_and_dead_letters(repo: Repository, tmp_path: Path) -> None:
    path = _mixed_lines(tmp_path)
    n_lines = len(path.read_text(encoding="utf-8").splitlines())

    report = repo.ingest(read_records(path), source="input.jsonl")

    assert report.total == n_lines
    assert report == IngestReport(inserted=7 + 11, duplicates=2 + 6, rejected=3, linked=3)
    again = repo.ingest(read_records(path), source="input.jsonl")
    assert again == IngestReport(duplicates=7 + 11 + 8, rejected=3)

    letters = repo.dead_letters(source="input.jsonl")
    assert len(letters) == 3  # kept once, however often the file is imported
    assert [d.line for d in letters] == [5, 12, n_lines]
    assert letters[1].raw == "not json at all userx@example.com"
    assert letters[1].field == "<line>"
    assert letters[2].field == "type"
    assert all(d.reason and d.source == "input.jsonl" for d in letters)
    assert "userx@example.com" not in repr(letters[1])
    assert repo.dead_letters(source="elsewhere") == []
    assert len(repo.dead_letters(limit=2)) == 2


def test_records_the_store_cannot_hold_are_rejected(repo: CommHistory[Any]) -> None:
    too_precise = event(1, revenue=Decimal("1.0000001"), currency="USD")
    report = repo.record_events([too_precise, event(2), "not a record"])  # type: ignore[list-item]
    assert report == IngestReport(inserted=1, rejected=2)
    letters = repo.dead_letters(source="record_events")
    assert [(d.line, d.field) for d in letters] == [(1, "revenue"), (3, "<record>")]
    assert '"event_id":"e1"' in letters[0].raw


@pytest.mark.parametrize("batch_size", [1, 2, 5, 100])
def test_totals_invariant_over_batch_sizes(
    repo: CommHistory[Any], batch_size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(repo.store, "_batch_size", batch_size)
    msgs = [message(n % 6) for n in range(1, 15)]  # m0..m5, many repeats
    evs = [event(n % 9, f"m{n % 7}") for n in range(1, 30)]  # m6 never arrives: orphans
    r1 = repo.record_messages(msgs)
    r2 = repo.record_events(evs)
    assert (r1.total, r2.total) == (len(msgs), len(evs))
    assert (r1.inserted, r2.inserted) == (6, 9)
    assert (r1.duplicates, r2.duplicates) == (len(msgs) - 6, len(evs) - 9)
    stored = sum(len(entry.events) for entry in repo.timeline("c1"))
    assert stored == 8  # e0..e8 except the one on m6 (an orphan)


def test_a_batch_that_fails_midway_leaves_nothing(repo: CommHistory[Any]) -> None:
    def stream() -> Iterator[Message]:
        for n in range(1, 6):  # batch size 3: m1-m3 commit, m4-m5 are in the failing batch
            yield message(n)
        raise RuntimeError("input stream broke")

    with pytest.raises(RuntimeError):
        repo.record_messages(stream())
    assert [e.message.message_id for e in repo.timeline("c1")] == ["m1", "m2", "m3"]
    assert repo.record_messages([message(4)]) == IngestReport(inserted=1)


def test_find_contacts_by_email_phone_and_line(repo: CommHistory[Any]) -> None:
    repo.record_messages(
        [
            message(1, contact="c1", address="taro@example.com"),
            message(2, contact="c2", address="taro@example.com"),
            message(3, contact="c3", channel=Channel.SMS, address="+819012345678"),
            message(4, contact="c4", channel=Channel.LINE, address=LINE_ID),
            message(5, contact="c5", channel=Channel.PUSH, address="device-token-1"),
        ]
    )
    assert repo.find_contacts(email="taro@EXAMPLE.com") == ["c1", "c2"]
    assert repo.find_contacts(phone="090-1234-5678") == ["c3"]
    assert repo.find_contacts(phone="+81 90 1234 5678") == ["c3"]
    assert repo.find_contacts(line_user_id=LINE_ID) == ["c4"]
    assert repo.find_contacts(email="hanako@example.com") == []
    with pytest.raises(InvalidInputError):
        repo.find_contacts()
    with pytest.raises(InvalidInputError):
        repo.find_contacts(email="taro@example.com", phone="+819012345678")
    with pytest.raises(NormalizationError) as info:
        repo.find_contacts(email="not-an-address")
    assert "not-an-address" not in str(info.value)


def test_consent_events_are_appended_once(repo: Any) -> None:
    c = consent()
    explicit = consent(
        consent_id="cons-1", action=ConsentAction.WITHDRAW, occurred_at=T0 + timedelta(days=1)
    )
    assert repo.record_consent([c, c, explicit]) == IngestReport(inserted=2, duplicates=1)
    assert repo.record_consent([consent(), explicit]) == IngestReport(duplicates=2)
    history = repo.consent_history("c1")
    assert [h.action for h in history] == [ConsentAction.GRANT, ConsentAction.WITHDRAW]
    assert history[0].consent_id is not None
    assert history[0].consent_id.startswith("sha256:")
    assert attrs.evolve(history[0], consent_id=None) == c
    assert history[1] == explicit


def test_reports_add_up() -> None:
    a = IngestReport(inserted=1, duplicates=2, rejected=3, linked=4)
    b = IngestReport(inserted=10, duplicates=20, rejected=30, linked=40)
    assert a + b == IngestReport(inserted=11, duplicates=22, rejected=33, linked=44)
    assert (a + b).total == 66
    with pytest.raises(InvalidInputError):
        IngestReport(inserted=-1)
    with pytest.raises(PayloadError):
        raise PayloadError(field="x", reason="y")


def test_closed_repository_refuses_work(repo: CommHistory[Any]) -> None:
    repo.close()
    with pytest.raises(Exception, match="closed"):
        repo.record_messages([message(1)])


def test_many_contacts_and_batches(repo: CommHistory[Any]) -> None:
    msgs = [message(n, contact=f"c{n % 11}") for n in range(40)]
    evs = [event(n, f"m{n % 40}") for n in range(120)]
    mixed = list(itertools.chain(msgs[:20], evs, msgs[20:]))
    report = repo.ingest(parsed(mixed), source="bulk")
    assert report == IngestReport(inserted=160, linked=report.linked)
    counted = 0
    for c in range(11):
        for entry in repo.timeline(f"c{c}"):
            assert all(e.message_id == entry.message.message_id for e in entry.events)
            counted += len(entry.events)
    assert counted == 120


def test_sql_repository_type(repo: CommHistory[Any]) -> None:
    assert isinstance(repo.store, MemoryRepository | SQLRepository)
