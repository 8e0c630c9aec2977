"""Postmark inbound webhook: an inbound email becomes an encrypted inbound Message."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commhistory.crypto import Keyring
from commhistory.errors import SignatureError
from commhistory.facade import CommHistory, open_repository
from commhistory.model import Channel, Direction, Message, Purpose
from commhistory.providers import KeyedContactResolver, PostmarkAdapter
from commhistory.store import Repository
from commhistory.testing import signed_webhook
from tests._webhook_props import JSON, parse_or_payload_error

PAYLOADS = Path(__file__).parent / "payloads" / "postmark"
INBOUND: dict[str, Any] = json.loads((PAYLOADS / "inbound.json").read_text())
CREDENTIALS = "hooks:correct horse battery staple"
RESOLVER = KeyedContactResolver(b"postmark-inbound-test-key")
NOW = 1775002000.0
SENDER = "Taro.Yamada@example.com"  # FromFull.Email, domain normalized, local part kept


def adapter(**options: Any) -> PostmarkAdapter:
    options.setdefault("contact_resolver", RESOLVER)
    return PostmarkAdapter("hooks", "correct horse battery staple", clock=lambda: NOW, **options)


def parse(record: dict[str, Any], **options: Any) -> Message:
    request = signed_webhook("postmark", record, CREDENTIALS).request()
    a = adapter(**options)
    a.verify(request)
    [message] = a.parse(request).records
    assert isinstance(message, Message)
    return message


def changed(**fields: Any) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(json.dumps(INBOUND))
    for key, value in fields.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def test_inbound_email_becomes_an_inbound_message() -> None:
    message = parse(INBOUND)
    assert (message.channel, message.direction) == (Channel.EMAIL, Direction.INBOUND)
    assert message.purpose is Purpose.SERVICE
    assert message.address == SENDER
    assert message.subject == "Re: Your order 1042"
    assert message.body is not None
    assert message.body.startswith("Could you change the delivery date to Friday?")
    assert message.message_id == "postmark:22c74902-a0c1-4511-804f-341342852c90"
    assert message.provider_message_id == "22c74902-a0c1-4511-804f-341342852c90"
    assert message.sent_at.isoformat() == "2026-04-01T09:15:00+00:00"  # +09:00 honoured


def test_contact_is_the_keyed_pseudonym_never_the_address() -> None:
    message = parse(INBOUND)
    assert message.contact_id == RESOLVER(Channel.EMAIL, SENDER)
    assert message.contact_id.startswith("c_")
    for part in ("taro", "yamada", "example"):
        assert part not in message.contact_id.lower()
    other = KeyedContactResolver(b"another-key-0123456789")
    assert parse(INBOUND, contact_resolver=other).contact_id != message.contact_id


def test_raw_record_is_kept_without_attachment_contents() -> None:
    raw = parse(changed(RawEmail="MIME-Version: 1.0\r\n...")).metadata["provider_raw"]
    assert isinstance(raw, dict)
    assert raw["Attachments"] == [
        {"Name": "receipt.txt", "ContentType": "text/plain", "ContentLength": 13}
    ]
    assert "RawEmail" not in raw
    assert raw["MailboxHash"] == "ticket-456"


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"FromFull": None}, "Taro.Yamada@example.com"),
        ({"FromFull": None, "From": "Taro <taro@example.com>"}, "taro@example.com"),
        ({"RecordType": "Inbound"}, SENDER),
    ],
)
def test_sender_fallbacks(fields: dict[str, Any], expected: str) -> None:
    assert parse(changed(**fields)).address == expected


@pytest.mark.parametrize(
    ("date", "expected"),
    [
        ("Wed, 1 Apr 2026 09:15:00 -0000", "2026-04-01T09:15:00+00:00"),
        ("Wed, 01 Apr 2026 05:15:00 -0400", "2026-04-01T09:15:00+00:00"),
        ("2026-04-01T09:15:00Z", "2026-04-01T09:15:00+00:00"),
        ("Wed, 1 Apr 2026 09:15:00", "2026-04-01T00:06:40+00:00"),  # no zone: received time
        ("next Tuesday", "2026-04-01T00:06:40+00:00"),
        (None, "2026-04-01T00:06:40+00:00"),
    ],
)
def test_date_or_received_time(date: str | None, expected: str) -> None:
    assert parse(changed(Date=date)).sent_at.isoformat() == expected


def test_text_body_falls_back_to_the_stripped_reply() -> None:
    message = parse(changed(TextBody=""))
    assert message.body == "Could you change the delivery date to Friday?"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"MessageID": None}, "MessageID"),
        ({"FromFull": {"Email": "not an address", "Name": ""}}, "FromFull.Email"),
        ({"FromFull": None, "From": "Taro"}, "From"),
        ({"FromFull": "taro@example.com"}, "FromFull"),
        ({"Subject": {"a": 1}}, "Subject"),
    ],
)
def test_bad_inbound_is_a_dead_letter_naming_the_field(fields: dict[str, Any], field: str) -> None:
    repo = CommHistory.in_memory()
    request = signed_webhook("postmark", changed(**fields), CREDENTIALS).request()
    outcome = adapter().handle(request, repo)
    assert outcome.report.rejected == 1
    [letter] = repo.dead_letters(source="webhook:postmark")
    assert letter.field == field


def test_without_resolver_the_email_is_kept_as_a_dead_letter() -> None:
    repo = CommHistory.in_memory()
    request = signed_webhook("postmark", INBOUND, CREDENTIALS).request()
    outcome = PostmarkAdapter("hooks", "correct horse battery staple").handle(request, repo)
    assert outcome.report.rejected == 1
    [letter] = repo.dead_letters()
    assert letter.field == "contact_id"


def test_credentials_still_required() -> None:
    request = signed_webhook("postmark", INBOUND, "hooks:wrong").request()
    with pytest.raises(SignatureError, match="wrong user name or password"):
        adapter().verify(request)


def test_outbound_record_without_record_type_is_still_refused() -> None:
    repo = CommHistory.in_memory()
    record = {"MessageID": "m1", "Recipient": "taro@example.com"}
    adapter().handle(signed_webhook("postmark", record, CREDENTIALS).request(), repo)
    [letter] = repo.dead_letters()
    assert letter.field == "RecordType"


@pytest.fixture(params=["sqlite", "postgres"])
def sql_repository(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CommHistory[Any]]:
    url = (
        f"sqlite:///{tmp_path / 'inbound.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    with open_repository(url, Keyring.generate()) as repo:
        yield repo


def test_stored_once_and_read_back_decrypted(sql_repository: Repository) -> None:
    request = signed_webhook("postmark", INBOUND, CREDENTIALS).request()
    first = adapter().handle(request, sql_repository)
    retry = adapter().handle(request, sql_repository)
    assert (first.report.inserted, retry.report.duplicates) == (1, 1)
    [entry] = sql_repository.timeline(RESOLVER(Channel.EMAIL, SENDER))
    assert entry.message.subject == "Re: Your order 1042"
    assert entry.message.address == SENDER


def test_no_plaintext_in_the_sqlite_file(tmp_path: Path) -> None:
    db = tmp_path / "scan.db"
    with open_repository(f"sqlite:///{db}", Keyring.generate()) as repo:
        adapter().handle(signed_webhook("postmark", INBOUND, CREDENTIALS).request(), repo)
        blobs = [p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("scan.db")]
    blobs += [p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("scan.db")]
    assert any(blobs)
    for value in ("Taro.Yamada", "Your order 1042", "delivery date", "ticket-456", "receipt"):
        assert not any(value.encode() in blob for blob in blobs), value


_FUZZ = adapter()


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(INBOUND)), JSON)
def test_fuzz_wrong_types(key: str, value: object) -> None:
    record = json.loads(json.dumps(INBOUND))
    record[key] = value
    parse_or_payload_error(_FUZZ, json.dumps(record).encode())


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["Email", "Name", "MailboxHash"]), JSON, max_size=3))
def test_fuzz_sender(sender: dict[str, object]) -> None:
    record = json.loads(json.dumps(INBOUND))
    record["FromFull"] = sender
    parse_or_payload_error(_FUZZ, json.dumps(record).encode())


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_fuzz_date(date: str) -> None:
    # Any Date text gives a message (received time when unreadable), never an error.
    record = json.loads(json.dumps(INBOUND))
    record["Date"] = date
    request = signed_webhook("postmark", record, CREDENTIALS).request()
    [message] = _FUZZ.parse(request).records
    assert isinstance(message, Message)
    assert message.sent_at.tzinfo is not None
