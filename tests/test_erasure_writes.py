"""Erasure is per record and authoritative: later writes for an erased contact are refused.

Issue 12, items 1 and 2. A record of an erased contact is refused on its own
(a rejection counted in the report, kept as a dead letter holding only its ids),
never its whole batch; a webhook batch that mentions an erased contact is
answered 2xx; and a writer that cached the contact's key before another process
erased it writes nothing more for it: no address, no blind index, no mask.
"""

from __future__ import annotations

import json
import multiprocessing
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
import pytest

from commhistory.cli import main
from commhistory.convert import ParsedLine, dumps
from commhistory.crypto import Keyring
from commhistory.facade import CommHistory, open_repository
from commhistory.model import (
    Channel,
    ConsentAction,
    ConsentEvent,
    ConsentMethod,
    Event,
    EventType,
    Message,
    Purpose,
)
from commhistory.store import MemoryRepository, SQLRepository
from commhistory.store.batching import ERASED_REASON
from tests.conftest import pg_variant_url
from tests.test_consent_support import at, ev, msg

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
BACKENDS = [
    "memory",
    "sqlite",
    pytest.param("postgresql", marks=pytest.mark.postgres),
    pytest.param("postgresql-partitioned", marks=pytest.mark.postgres),
]


@pytest.fixture(params=BACKENDS)
def repo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CommHistory[Any]]:
    if request.param == "memory":
        with CommHistory(MemoryRepository(batch_size=4)) as mem:
            yield mem
        return
    url = (
        f"sqlite:///{tmp_path / 'erase.db'}"
        if request.param == "sqlite"
        else pg_variant_url(request, request.param)
    )
    with open_repository(url, Keyring.generate(), batch_size=4) as sql:
        yield sql


def _consent(contact: str, day: float) -> ConsentEvent:
    return ConsentEvent(
        contact_id=contact,
        channel=Channel.EMAIL,
        purpose=Purpose.MARKETING,
        action=ConsentAction.GRANT,
        method=ConsentMethod.WEB_FORM,
        occurred_at=at(day),
    )


def test_an_erased_contact_is_refused_per_record(repo: CommHistory[Any]) -> None:
    repo.record_messages([msg("m1", "c1", day=1), msg("m2", "c2", day=1)])
    repo.record_events([ev("e1", "m1", EventType.DELIVERED, day=1.1)])
    repo.erase_subject("c1")

    mixed: list[Message | Event | ConsentEvent] = [
        msg("m3", "c1", day=2, body="after the erasure"),  # new message: refused
        ev("e2", "m1", EventType.OPENED, day=2),  # new event of an erased message: refused
        ev("e3", "m3", EventType.DELIVERED, day=2),  # names the refused message: refused
        _consent("c1", 2),  # consent of an erased contact: refused
        msg("m4", "c2", day=2),  # another contact's: stored
        ev("e4", "m2", EventType.DELIVERED, day=2),  # stored
        ev("e1", "m1", EventType.DELIVERED, day=1.1),  # stored before the erasure: duplicate
        msg("m1", "c1", day=1),  # stored before the erasure: duplicate
    ]
    report = repo.ingest(_parsed(mixed), source="after-erasure.jsonl")
    assert (report.inserted, report.duplicates, report.rejected) == (2, 2, 4)
    letters = repo.dead_letters(source="after-erasure.jsonl")
    assert [(d.line, d.field, d.reason) for d in letters] == [
        (line, "contact_id", ERASED_REASON) for line in (1, 2, 3, 4)
    ]
    for d in letters:
        kept = json.loads(d.raw)
        assert "address" not in kept
        assert "after the erasure" not in d.raw
        assert "c1@example.com" not in d.raw
    # Nothing of c1 came back; c2's records are all there.
    assert repo.find_contacts(email="c1@example.com") == []
    assert repo.timeline("c1") == []
    assert [e.message.message_id for e in repo.timeline("c2")] == ["m2", "m4"]
    assert [x.event_id for x in repo.timeline("c2")[0].events] == ["e4"]
    # A second delivery of the same batch counts the same way (idempotent).
    again = repo.ingest(_parsed(mixed), source="after-erasure.jsonl")
    assert (again.inserted, again.duplicates, again.rejected) == (0, 4, 4)


def test_record_calls_refuse_per_record_too(repo: CommHistory[Any]) -> None:
    repo.record_messages([msg("m1", "c1", day=1)])
    repo.erase_subject("c1")
    report = repo.record_messages([msg("m2", "c1", day=2), msg("m3", "c2", day=2)])
    assert (report.inserted, report.duplicates, report.rejected) == (1, 0, 1)
    events = repo.record_events([ev("e1", "m1", EventType.CLICKED, day=2)])
    assert (events.inserted, events.rejected) == (0, 1)
    consents = repo.record_consent([_consent("c1", 3), _consent("c2", 3)])
    assert (consents.inserted, consents.rejected) == (1, 1)


def _parsed(records: list[Message | Event | ConsentEvent]) -> list[ParsedLine]:
    return [ParsedLine(line=n, raw=dumps(r), record=r) for n, r in enumerate(records, 1)]


def test_reimporting_a_file_after_an_erasure_keeps_the_other_contacts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The issue's command sequence: import, erase-subject, import again."""
    args = ["--db", f"sqlite:///{tmp_path / 'h.db'}", "--keyring", str(tmp_path / "k.keyring")]
    path = str(EXAMPLES / "history.jsonl")
    assert main(["import", path, *args]) == 0
    assert main(["erase-subject", "c-1001", "--yes", *args]) == 0
    capsys.readouterr()
    assert main(["import", path, *args]) == 0  # everything there already: duplicates
    assert "0 rejected" in capsys.readouterr().out
    # A line for the erased contact that was never stored is refused alone, exit 1.
    extra = tmp_path / "more.jsonl"
    late = {
        "kind": "message", "message_id": "m-late", "channel": "email", "direction": "outbound",
        "contact_id": "c-1001", "address": "late@example.com", "sent_at": "2026-05-01T00:00:00Z",
    }  # fmt: skip
    other = dict(late, message_id="m-other", contact_id="c-9999", address="o@example.com")
    extra.write_text(json.dumps(late) + "\n" + json.dumps(other) + "\n", encoding="utf-8")
    assert main(["import", str(extra), *args]) == 1
    out = capsys.readouterr().out
    assert "1 inserted" in out
    assert "1 rejected" in out


def test_a_webhook_batch_mentioning_an_erased_contact_is_answered_2xx(tmp_path: Path) -> None:
    pytest.importorskip("starlette")
    from starlette.applications import Starlette
    from starlette.routing import Mount
    from starlette.testclient import TestClient

    from commhistory.providers import SendGridAdapter
    from commhistory.testing import sendgrid_keys, signed_webhook
    from commhistory.web.starlette import webhook_app

    now = 1775002000.0
    keys = sendgrid_keys()
    sent = datetime.fromtimestamp(now, UTC) - timedelta(hours=1)
    with open_repository(f"sqlite:///{tmp_path / 'web.db'}", Keyring.generate()) as repo:
        repo.record_messages(
            [
                attrs.evolve(msg("m1", "c1"), provider="sendgrid", provider_message_id="sgone"),
                attrs.evolve(msg("m2", "c2"), provider="sendgrid", provider_message_id="sgtwo"),
            ]
        )
        repo.erase_subject("c1")
        events = [
            {"email": "c1@example.com", "timestamp": int(sent.timestamp()) + n, "event": kind,
             "sg_event_id": f"ev-{n}", "sg_message_id": f"{pmid}.filter0001.1.2.0"}
            for n, (kind, pmid) in enumerate(
                [("delivered", "sgone"), ("open", "sgone"), ("delivered", "sgtwo")]
            )
        ]  # fmt: skip
        url = "http://testserver/webhooks/sendgrid"
        request = signed_webhook("sendgrid", events, keys, url=url, timestamp=now)
        app = Starlette(
            routes=[
                Mount(
                    "/webhooks",
                    app=webhook_app([SendGridAdapter(keys.public_key, clock=lambda: now)], repo),
                )
            ]
        )
        client = TestClient(app)
        for _ in range(2):  # the provider's retry gets the same answer
            answer = client.post(request.path, content=request.body, headers=dict(request.headers))
            assert answer.status_code == 200, answer.text
        assert [e.type for e in repo.timeline("c2")[0].events] == [EventType.DELIVERED]
        assert answer.json()["rejected"] == 2


# ---------------------------------------------------------------------- across processes


def _url(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'shared.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.mark.parametrize(
    "kind", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def test_a_key_cached_before_another_process_erased_the_contact_writes_nothing(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = _url(kind, tmp_path, request)
    keyring = Keyring.generate()
    with open_repository(url, keyring) as writer, open_repository(url, keyring) as eraser:
        writer.record_messages([msg("m1", "c1", day=1)])  # the writer now caches c1's key
        eraser.erase_subject("c1")
        late = msg("m2", "c1", day=2, address="new-address@example.com")
        report = writer.record_messages([late, msg("m3", "c2", day=2)])
        assert (report.inserted, report.rejected) == (1, 1)
        for repo in (writer, eraser):
            assert repo.find_contacts(email="new-address@example.com") == []
        assert _traces_of("c1", eraser.store) == (0, 0)


def _traces_of(contact_id: str, store: SQLRepository) -> tuple[int, int]:
    """``(address rows, masked addresses)`` left for a contact."""
    ph = store.backend.ph
    with store.transaction(read=True) as conn:
        addresses = conn.exec_driver_sql(
            f"SELECT COUNT(*) FROM addresses WHERE contact_id = {ph}", (contact_id,)
        ).scalar_one()
        masks = conn.exec_driver_sql(
            f"SELECT COUNT(*) FROM messages WHERE contact_id = {ph} "
            "AND address_masked IS NOT NULL",
            (contact_id,),
        ).scalar_one()
    return int(addresses), int(masks)


def _write_for_a_while(url: str, keyring_path: str, start: Any, rounds: int) -> None:
    """A separate process: write batches for c1 and c2, c1 with a new address each time."""
    keyring = Keyring.load(keyring_path)
    with open_repository(url, keyring, batch_size=50) as repo:
        repo.record_messages([msg("w0", "c1", day=1)])  # cache c1's key
        start.set()
        for n in range(1, rounds + 1):
            repo.record_messages(
                [
                    msg(f"w{n}", "c1", day=1 + n / 1000, address=f"w{n}@example.com"),
                    msg(f"o{n}", "c2", day=1 + n / 1000),
                ]
            )


@pytest.mark.parametrize(
    "kind", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def test_no_mask_or_blind_index_is_written_after_an_erasure_commits_in_another_process(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = _url(kind, tmp_path, request)
    keyring = Keyring.generate()
    keyring_path = str(tmp_path / "shared.keyring")
    keyring.save(keyring_path)
    rounds = 150
    with open_repository(url, keyring) as repo:
        repo.record_messages([msg("seed", "c1", day=0)])
        ctx = multiprocessing.get_context("spawn")
        start = ctx.Event()
        writer = ctx.Process(target=_write_for_a_while, args=(url, keyring_path, start, rounds))
        writer.start()
        try:
            assert start.wait(60), "the writer did not start"
            repo.erase_subject("c1")
        finally:
            writer.join(120)
        assert writer.exitcode == 0
        # Whatever the writer stored before the erasure was erased with it; whatever it
        # tried after was refused. No address, blind index or mask of c1 survives.
        assert _traces_of("c1", repo.store) == (0, 0)
        assert all(
            repo.find_contacts(email=f"w{n}@example.com") == [] for n in range(1, rounds + 1)
        )
        assert len(repo.timeline("c2")) == rounds
