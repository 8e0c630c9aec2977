"""Webhook dead letters replayed through their provider's adapter (memory, SQLite, PostgreSQL).

The story: SendGrid sends an event type the installed adapter does not map; it is
kept as a dead letter naming the provider and the adapter's version. After an
upgrade that maps it, ``replay`` hands the kept event to the new adapter (no
signature check: it was verified on receipt) and the event is stored, once, however
often replay runs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

import commhistory as ch
from commhistory import CommHistory, open_repository
from commhistory.audit import Actor
from commhistory.cli import main
from commhistory.convert import ParsedLine
from commhistory.errors import NotFoundError, PayloadError, PermissionDenied
from commhistory.facade.dead_letters import AdapterResolver
from commhistory.model import Channel, Direction, Event, EventType, Record
from commhistory.providers import KeyedContactResolver, SendGridAdapter, SendGridInboundAdapter
from commhistory.providers.sendgrid import EVENT_TYPES
from commhistory.store import MemoryRepository
from commhistory.store.dead_letters import WebhookLetter
from commhistory.testing import make_message, sendgrid_keys, signed_webhook
from tests.test_providers_sendgrid_inbound import FIELDS, RECEIPT

BACKENDS = ["memory", "sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
NOW = 1775002000.0
SG_MESSAGE_ID = "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0"
DELIVERED = {
    "sg_message_id": SG_MESSAGE_ID,
    "email": "taro@example.com",
    "timestamp": 1775001605,
    "event": "delivered",
    "sg_event_id": "ev-delivered-1",
}
FUTURE = {**DELIVERED, "event": "machine_open", "sg_event_id": "ev-machine-open-1"}
"""An event type this SendGrid adapter does not map (made up for the test)."""
INBOUND = {**FIELDS, "attachment1": RECEIPT}
"""A SendGrid Inbound Parse post with a binary-safe attachment (multipart)."""


class UpgradedSendGrid(SendGridAdapter):
    """SendGrid's adapter after an upgrade that maps ``machine_open`` as a machine open."""

    version: ClassVar[str] = "99.0"

    def _parse_event(self, event: Any) -> list[Record]:
        if isinstance(event, dict) and event.get("event") == "machine_open":
            event = {**event, "event": "open", "sg_machine_open": True}
        return super()._parse_event(event)


@pytest.fixture(params=BACKENDS)
def repo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "memory":
        with CommHistory(MemoryRepository(batch_size=2)) as mem:
            yield mem
        return
    url = f"sqlite:///{tmp_path / 'api.db'}"
    if request.param == "postgresql":
        url = request.getfixturevalue("pg_url")
    with open_repository(url, ch.Keyring.generate(), batch_size=2) as sql:
        yield sql


def _receive(repo: Any, events: Any, adapter: type[SendGridAdapter] = SendGridAdapter) -> Any:
    keys = sendgrid_keys()
    request = signed_webhook("sendgrid", events, keys, timestamp=NOW).request()
    return adapter(keys.public_key, clock=lambda: NOW).handle(request, repo)


def _keyring(path: Path) -> ch.Keyring:
    keyring = ch.Keyring.generate()
    keyring.save(path)
    return keyring


def _events(repo: Any, contact_id: str) -> list[Event]:
    return [e for entry in repo.timeline(contact_id) for e in entry.events]


def test_unknown_event_is_kept_with_its_provider_and_adapter_version(repo: Any) -> None:
    outcome = _receive(repo, [DELIVERED, FUTURE])
    assert (outcome.report.inserted, outcome.report.rejected) == (1, 1)
    [letter] = repo.dead_letters(source="webhook:sendgrid")
    kept = WebhookLetter.loads(letter.raw)
    assert kept is not None
    assert (kept.provider, kept.part, kept.event) == ("sendgrid", "event", 2)
    assert kept.adapter_version == SendGridAdapter.version
    assert kept.payload == FUTURE
    # The plain columns name the type, never the payload.
    assert "machine_open" in letter.reason
    assert "taro@example.com" not in letter.reason


def test_replayed_through_an_upgraded_adapter_the_event_is_stored_exactly_once(
    repo: Any,
) -> None:
    message = make_message(provider="sendgrid", provider_message_id="14c5d75ce93.dfd.64b469")
    repo.record_messages([message])
    _receive(repo, [DELIVERED, FUTURE])
    assert [e.type for e in _events(repo, message.contact_id)] == [EventType.DELIVERED]
    keys = sendgrid_keys()
    upgraded = UpgradedSendGrid(keys.public_key)

    first = repo.replay_dead_letters(adapters={"sendgrid": upgraded}.get)
    assert (first.letters, first.parsed, first.failed, first.unresolved) == (1, 1, 0, 0)
    assert (first.stored.inserted, first.stored.rejected) == (1, 0)
    assert repo.dead_letters() == []
    second = repo.replay_dead_letters(adapters={"sendgrid": upgraded}.get)
    assert (second.letters, second.parsed, second.stored.inserted) == (0, 0, 0)

    events = _events(repo, message.contact_id)
    assert sorted(e.type for e in events) == sorted([EventType.DELIVERED, EventType.OPENED])
    [opened] = [e for e in events if e.type is EventType.OPENED]
    assert opened.machine
    # The provider retries the same webhook to the upgraded receiver: a duplicate.
    again = _receive(repo, [DELIVERED, FUTURE], adapter=UpgradedSendGrid)
    assert (again.report.inserted, again.report.duplicates) == (0, 2)
    assert len(_events(repo, message.contact_id)) == 2


def test_the_same_letter_replayed_twice_in_a_race_still_stores_one_event(repo: Any) -> None:
    # Two replays that both read the letter before either deleted it: the second
    # ingest of the event is a duplicate (deterministic ids), not a second event.
    _receive(repo, [FUTURE])
    [letter] = repo.dead_letters()
    kept = WebhookLetter.loads(letter.raw)
    assert kept is not None
    adapter = UpgradedSendGrid(sendgrid_keys().public_key)
    lines = adapter.reparse_dead_letter(kept)
    one = repo.ingest(lines, source="webhook:sendgrid")
    two = repo.replay_dead_letters(adapters=lambda name: adapter)
    assert (one.inserted, two.parsed, two.stored.inserted, two.stored.duplicates) == (1, 1, 0, 1)


def test_a_letter_the_adapter_still_cannot_map_stays_with_the_new_reason(repo: Any) -> None:
    _receive(repo, [{**FUTURE, "event": "brand_new_event"}])
    [before] = repo.list_dead_letters()
    report = repo.replay_dead_letters(adapters=lambda name: UpgradedSendGrid(PUBLIC_KEY))
    assert (report.parsed, report.failed, report.stored.inserted) == (0, 1, 0)
    [after] = repo.list_dead_letters()
    assert after.id == before.id
    assert "brand_new_event" in after.reason


def test_without_an_adapter_webhook_letters_are_left_untouched(repo: Any) -> None:
    _receive(repo, [FUTURE])
    [before] = repo.list_dead_letters()

    def unregistered(name: str) -> SendGridAdapter:
        raise NotFoundError(kind="provider", identifier=name)

    resolvers: list[AdapterResolver | None] = [None, lambda name: None, unregistered]
    for adapters in resolvers:
        report = repo.replay_dead_letters(adapters=adapters)
        assert (report.letters, report.unresolved, report.failed, report.parsed) == (1, 1, 0, 0)
    [after] = repo.list_dead_letters()
    # Not re-read as a canonical line: the reason is the adapter's, unchanged.
    assert (after.field, after.reason) == (before.field, before.reason)


def test_a_whole_body_letter_is_parsed_again_as_receipt_would(repo: Any) -> None:
    class LenientSendGrid(UpgradedSendGrid):
        """An adapter that takes one bare event object as a batch of one."""

        def _events(self, payload: Any, request: ch.providers.WebhookRequest) -> Any:
            return [payload] if isinstance(payload, dict) else super()._events(payload, request)

    outcome = _receive(repo, FUTURE)  # a bare object, not SendGrid's array
    assert outcome.dead_lettered
    [letter] = repo.dead_letters()
    kept = WebhookLetter.loads(letter.raw)
    assert kept is not None
    assert (kept.part, kept.event, kept.content_type) == ("body", None, "application/json")
    assert json.loads(kept.body()) == FUTURE
    # The installed adapter still refuses the body as a whole: the letter stays.
    same = repo.replay_dead_letters(adapters=lambda name: SendGridAdapter(PUBLIC_KEY))
    assert (same.failed, same.parsed) == (1, 0)
    assert repo.list_dead_letters()[0].field == "<body>"
    report = repo.replay_dead_letters(adapters=lambda name: LenientSendGrid(PUBLIC_KEY))
    assert (report.parsed, report.stored.inserted) == (1, 1)
    assert repo.dead_letters() == []


def test_a_canonical_line_from_a_webhook_source_is_replayed_as_one(repo: Any) -> None:
    # What the store refused from a webhook batch is kept as a canonical line, not
    # a WebhookLetter: replay reads it as import does and never asks for an adapter.
    naive = (
        '{"kind":"message","message_id":"m-1","contact_id":"c-1","channel":"email",'
        '"direction":"outbound","purpose":"marketing","address":"taro@example.jp",'
        '"sent_at":"2025-10-01T09:00:00"}'
    )
    error = PayloadError(field="sent_at", reason="no time zone")
    repo.ingest([ParsedLine(line=1, raw=naive, error=error)], source="webhook:sendgrid")
    assert WebhookLetter.loads(naive) is None

    def no_adapter(name: str) -> None:
        raise AssertionError(name)

    report = repo.replay_dead_letters(default_tz="UTC", adapters=no_adapter)
    assert (report.parsed, report.stored.inserted, report.unresolved) == (1, 1, 0)


def test_the_guarded_view_needs_write_history_to_replay(repo: Any) -> None:
    _receive(repo, [FUTURE])
    analyst = repo.as_actor(Actor("staff-1", ["analyst"]), purpose="triage")
    with pytest.raises(PermissionDenied):
        analyst.replay_dead_letters(adapters=lambda name: UpgradedSendGrid(PUBLIC_KEY))
    assert len(repo.list_dead_letters()) == 1
    operator = repo.as_actor(Actor("ops-1", ["operator"]), purpose="replay")
    report = operator.replay_dead_letters(adapters=lambda name: UpgradedSendGrid(PUBLIC_KEY))
    assert (report.parsed, report.stored.inserted) == (1, 1)
    assert [e.action for e in repo.audit_log.entries()][-1] == "replay_dead_letters"


PUBLIC_KEY = sendgrid_keys().public_key


# ------------------------------------------------------------------ the letter itself


def test_letters_round_trip_and_refuse_other_text() -> None:
    event = WebhookLetter(
        provider="sendgrid", adapter_version="1", part="event", event=3, payload={"a": [1]}
    )
    assert WebhookLetter.loads(event.dumps()) == event
    body = WebhookLetter.of_body(
        b"\xff\x00binary", provider="x", adapter_version="1", content_type="multipart/form-data"
    )
    assert body.encoding == "base64"
    assert WebhookLetter.loads(body.dumps()) == body
    assert body.body() == b"\xff\x00binary"
    for text in ("", "{broken", '{"kind":"event"}', '{"commhistory_webhook_letter":2}', "[1]"):
        assert WebhookLetter.loads(text) is None


def test_an_adapter_refuses_another_providers_letter() -> None:
    letter = WebhookLetter(provider="postmark", adapter_version="1", part="event", payload={})
    with pytest.raises(PayloadError, match="postmark"):
        SendGridAdapter(PUBLIC_KEY).reparse_dead_letter(letter)


def test_an_event_that_is_not_plain_json_is_kept_with_its_body(repo: Any) -> None:
    # SendGrid Inbound Parse hands the parser a multipart form, not JSON: the letter
    # keeps the whole body (base64 when binary) and the event's number. Without a
    # contact resolver the inbound message is a dead letter; replayed through an
    # adapter that has one, it is stored.
    keys = sendgrid_keys()
    request = signed_webhook("sendgrid-inbound", INBOUND, keys, timestamp=NOW).request()
    bare = SendGridInboundAdapter(keys.public_key, clock=lambda: NOW)
    outcome = bare.handle(request, repo)
    assert (outcome.report.inserted, outcome.report.rejected) == (0, 1)
    [letter] = repo.dead_letters()
    kept = WebhookLetter.loads(letter.raw)
    assert kept is not None
    assert (kept.provider, kept.part, kept.event) == ("sendgrid-inbound", "body", 1)
    assert kept.content_type == request.header("content-type")
    assert kept.body() == request.body
    resolver = KeyedContactResolver(b"g" * 32)
    with_resolver = SendGridInboundAdapter(keys.public_key, contact_resolver=resolver)
    report = repo.replay_dead_letters(adapters={"sendgrid-inbound": with_resolver}.get)
    assert (report.parsed, report.stored.inserted) == (1, 1)
    contact = resolver(Channel.EMAIL, "Taro.Yamada@example.com")
    assert contact is not None
    [entry] = repo.timeline(contact)
    assert entry.message.direction is Direction.INBOUND
    assert repo.dead_letters() == []


# ------------------------------------------------------------------ the command line


def test_cli_replay_uses_the_registered_adapter(tmp_path: Path, capsys: Any) -> None:
    """A letter an older adapter could not map is stored by the installed one."""

    class OldSendGrid(SendGridAdapter):
        """SendGrid's adapter before ``delivered`` was mapped."""

        version: ClassVar[str] = "0.1.0"

        def _parse_event(self, event: Any) -> list[Record]:
            if isinstance(event, dict) and event.get("event") == "delivered":
                raise PayloadError(field="event", reason="unknown event type 'delivered'")
            return super()._parse_event(event)

    assert "delivered" in EVENT_TYPES
    db, keyring = tmp_path / "h.db", tmp_path / "k.keyring"
    store = ["--db", f"sqlite:///{db}", "--keyring", str(keyring)]
    message = make_message(provider="sendgrid", provider_message_id="14c5d75ce93.dfd.64b469")
    with open_repository(f"sqlite:///{db}", _keyring(keyring)) as repo:
        repo.record_messages([message])
        _receive(repo, [DELIVERED], adapter=OldSendGrid)
        [letter] = repo.list_dead_letters()
        assert letter.source == "webhook:sendgrid"
    capsys.readouterr()
    assert main(["dead-letters", "replay", *store, "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert (doc["parsed"], doc["inserted"], doc["webhook_without_adapter"]) == (1, 1, 0)
    assert main(["dead-letters", "replay", *store, "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert (doc["letters"], doc["inserted"]) == (0, 0)
    with open_repository(f"sqlite:///{db}", ch.Keyring.load(keyring)) as repo:
        assert repo.dead_letters() == []
        [entry] = repo.timeline(message.contact_id)
        assert [e.type for e in entry.events] == [EventType.DELIVERED]


def test_cli_replay_leaves_letters_of_an_unregistered_provider(
    tmp_path: Path, capsys: Any
) -> None:
    db, keyring = tmp_path / "h.db", tmp_path / "k.keyring"
    store = ["--db", f"sqlite:///{db}", "--keyring", str(keyring)]
    letter = WebhookLetter(provider="acme", adapter_version="1", part="event", payload={"x": 1})
    with open_repository(f"sqlite:///{db}", _keyring(keyring)) as repo:
        error = PayloadError(field="type", reason="unknown event type")
        repo.ingest(
            [ch.convert.ParsedLine(line=1, raw=letter.dumps(), error=error)], source="webhook:acme"
        )
    capsys.readouterr()
    assert main(["dead-letters", "replay", *store]) == 0
    captured = capsys.readouterr()
    assert "unknown provider 'acme'" in captured.err
    assert "1 webhook dead letter left as they are" in captured.err
