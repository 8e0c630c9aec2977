"""SES email receiving: ``Received`` notifications become inbound email messages.

The two payloads are Amazon's published examples (the SNS action notification,
with ``content``, and the S3 action "alert" notification, without), trimmed of
their DKIM-Signature header:
https://docs.aws.amazon.com/ses/latest/dg/receiving-email-notifications-examples.html
The fields are described at
https://docs.aws.amazon.com/ses/latest/dg/receiving-email-notifications-contents.html
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings

from commhistory.crypto import Keyring
from commhistory.facade import CommHistory, open_repository
from commhistory.model import Channel, Direction, Message, Purpose
from commhistory.providers import KeyedContactResolver
from commhistory.providers.ses import SesAdapter
from commhistory.store import MemoryRepository
from commhistory.testing import signed_webhook, sns_test_signer
from tests._webhook_props import JSON, parse_or_payload_error

PAYLOADS = Path(__file__).parent / "payloads" / "ses"
SNS_ACTION: dict[str, Any] = json.loads((PAYLOADS / "received_sns_action.json").read_text())
S3_ALERT: dict[str, Any] = json.loads((PAYLOADS / "received_s3_alert.json").read_text())
SIGNER = sns_test_signer()
NOW = 1775002000.0
RESOLVER = KeyedContactResolver(b"r" * 32)

MULTIPART = (
    "From: =?UTF-8?B?5bGx55Sw?= <Taro@Example.COM>\r\n"
    "To: support@example.jp\r\n"
    "Subject: order\r\n"
    "Date: Wed, 01 Apr 2026 09:15:00 +0900\r\n"
    "Message-ID: <abc@example.com>\r\n"
    "MIME-Version: 1.0\r\n"
    'Content-Type: multipart/mixed; boundary="b1"\r\n'
    "\r\n"
    "--b1\r\n"
    "Content-Type: text/plain; charset=ISO-2022-JP\r\n"
    "Content-Transfer-Encoding: 7bit\r\n"
    "\r\n"
    "\x1b$B$3$s$K$A$O\x1b(B\r\n"
    "--b1\r\n"
    'Content-Type: application/pdf; name="invoice.pdf"\r\n'
    'Content-Disposition: attachment; filename="invoice.pdf"\r\n'
    "Content-Transfer-Encoding: base64\r\n"
    "\r\n" + base64.b64encode(b"%PDF-1.4 twelve").decode() + "\r\n--b1--\r\n"
)


def adapter(**options: Any) -> SesAdapter:
    options.setdefault("certificate_fetcher", SIGNER.fetch)
    options.setdefault("contact_resolver", RESOLVER)
    return SesAdapter([SIGNER.topic_arn], clock=lambda: NOW, **options)


def parse(notification: dict[str, Any], **options: Any) -> Message:
    request = signed_webhook("ses", notification, SIGNER, timestamp=NOW).request()
    a = adapter(**options)
    a.verify(request)
    result = a.parse(request)
    assert not result.errors, [e.error for e in result.errors]
    [message] = result.records
    assert isinstance(message, Message)
    return message


def changed(base: dict[str, Any], **fields: Any) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(json.dumps(base))
    out.update(fields)
    return out


def test_published_sns_action_example_is_an_inbound_message() -> None:
    message = parse(SNS_ACTION)
    assert (message.channel, message.direction) == (Channel.EMAIL, Direction.INBOUND)
    assert message.purpose is Purpose.SERVICE
    assert message.address == "sender@example.com"
    assert message.contact_id == RESOLVER(Channel.EMAIL, "sender@example.com")
    assert message.message_id == "ses:d6iitobk75ur44p8kdnnp7g2n800"
    assert message.provider_message_id == "d6iitobk75ur44p8kdnnp7g2n800"
    assert message.subject == "Example subject"
    assert message.body == "Example content\r\n"
    assert message.sent_at.isoformat() == "2015-09-11T20:32:32+00:00"  # the Date header
    raw = message.metadata["provider_raw"]
    assert "content" not in raw["notification"]  # the email itself is not kept twice
    assert raw["notification"]["receipt"]["spamVerdict"] == {"status": "PASS"}
    assert "attachments" not in message.metadata


def test_published_alert_example_has_no_body() -> None:
    message = parse(S3_ALERT)
    assert message.subject == "Example subject"
    assert message.body is None
    assert message.address == "sender@example.com"  # From, not the VERP mail.source


def test_mime_content_body_charset_and_attachment_metadata() -> None:
    message = parse(changed(SNS_ACTION, content=MULTIPART))
    assert message.body is not None
    assert message.body.strip() == "こんにちは"
    assert message.metadata["attachments"] == [
        {"filename": "invoice.pdf", "content_type": "application/pdf", "size": 15}
    ]
    assert "PDF-1.4" not in json.dumps(message.metadata)  # the content, never


def test_base64_encoded_content() -> None:
    note = changed(SNS_ACTION, content=base64.b64encode(SNS_ACTION["content"].encode()).decode())
    note["receipt"]["action"]["encoding"] = "BASE64"
    assert parse(note).body == "Example content\r\n"


def test_sender_falls_back_to_the_envelope_source() -> None:
    note = changed(SNS_ACTION)
    del note["mail"]["commonHeaders"]["from"]
    assert parse(note).address == "61967230-7A45-4A9D-BEC9-87CBCF2211C9@example.com"


def test_no_date_header_uses_the_receipt_time() -> None:
    note = changed(SNS_ACTION)
    del note["mail"]["commonHeaders"]["date"]
    assert parse(note).sent_at.isoformat() == "2015-09-11T20:32:33.936000+00:00"


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda n: n["mail"].pop("messageId"), "Message.mail.messageId"),
        (
            lambda n: n["mail"]["commonHeaders"].update({"from": ["not an address"]}),
            "Message.mail.commonHeaders.from",
        ),
        (lambda n: n.update({"content": 12}), "Message.content"),
        (lambda n: n["receipt"]["action"].update({"encoding": "BASE64"}), "Message.content"),
    ],
)
def test_bad_notifications_are_typed_errors(mutate: Any, field: str) -> None:
    note = changed(SNS_ACTION)
    mutate(note)
    request = signed_webhook("ses", note, SIGNER, timestamp=NOW).request()
    [error] = adapter().parse(request).errors
    assert error.error is not None
    assert error.error.field == field


@pytest.fixture(
    params=["memory", "sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def repo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CommHistory[Any]]:
    if request.param == "memory":
        with CommHistory(MemoryRepository()) as mem:
            yield mem
        return
    url = (
        f"sqlite:///{tmp_path / 's.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    with open_repository(url, Keyring.generate()) as sql:
        yield sql


def test_stored_once_and_encrypted_fields_read_back(repo: CommHistory[Any]) -> None:
    a = adapter()
    note = changed(SNS_ACTION, content=MULTIPART)
    request = signed_webhook("ses", note, SIGNER, timestamp=NOW).request()
    assert a.handle(request, repo).report.inserted == 1
    assert a.handle(request, repo).report.duplicates == 1  # an SNS retry
    [entry] = repo.timeline(RESOLVER(Channel.EMAIL, "sender@example.com"))
    assert entry.message.body is not None
    assert entry.message.body.strip() == "こんにちは"
    assert entry.message.metadata["attachments"][0]["filename"] == "invoice.pdf"


@settings(max_examples=150, deadline=None)
@given(JSON)
def test_fuzzed_received_notifications(value: Any) -> None:
    for key in ("mail", "receipt", "content"):
        note = changed(SNS_ACTION, **{key: value})
        envelope = SIGNER.notification(note, timestamp=NOW)
        parse_or_payload_error(adapter(), json.dumps(envelope).encode())


@settings(max_examples=100, deadline=None)
@given(JSON)
def test_fuzzed_mail_fields(value: Any) -> None:
    for key in ("commonHeaders", "source", "timestamp", "messageId"):
        note = changed(SNS_ACTION)
        note["mail"][key] = value
        body = json.dumps(SIGNER.notification(note, timestamp=NOW)).encode()
        parse_or_payload_error(adapter(), body)
