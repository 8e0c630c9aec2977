"""Mailgun routes: forwarded and stored emails become encrypted inbound Messages.

The fields are those Mailgun documents for a route's forward() post
(signature, timestamp, token, subject, sender, from, recipient,
message-headers, body-plain, body-html, stripped-text, stripped-html,
stripped-signature, attachment-count, attachment-x, content-id-map, and the
MIME headers as fields):
https://documentation.mailgun.com/docs/mailgun/user-manual/receive-forward-store/receive-http
and for a store(notify=...) post (domain, message-url, attachments as JSON):
https://documentation.mailgun.com/docs/mailgun/user-manual/receive-forward-store/store-retreive
The signature is the webhooks' (hex HMAC-SHA256 of timestamp + token):
https://documentation.mailgun.com/docs/mailgun/user-manual/webhooks/securing-webhooks
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commhistory.errors import SignatureError
from commhistory.model import Channel, Direction, Message, Purpose
from commhistory.providers import KeyedContactResolver, MailgunInboundAdapter, WebhookRequest
from commhistory.providers.mailgun import mailgun_signature
from commhistory.testing import signed_webhook
from tests._webhook_props import parse_or_payload_error

ROUTES: dict[str, dict[str, str]] = json.loads(
    (Path(__file__).parent / "payloads" / "mailgun" / "routes.json").read_text()
)
FORWARD = ROUTES["forward"]
STORED = ROUTES["store_notify"]
KEY = "key-0123456789abcdef0123456789abcdef"
RESOLVER = KeyedContactResolver(b"m" * 32)
NOW = 1775002000.0
SENDER = "Taro.Yamada@example.com"
INVOICE = ("invoice.pdf", "application/pdf", b"%PDF-1.4 twenty bytes")


def adapter(**options: Any) -> MailgunInboundAdapter:
    options.setdefault("contact_resolver", RESOLVER)
    return MailgunInboundAdapter(KEY, clock=lambda: NOW, **options)


def changed(base: dict[str, Any], **fields: Any) -> dict[str, Any]:
    out = dict(base)
    for key, value in fields.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def parse(fields: dict[str, Any], **options: Any) -> Message:
    request = signed_webhook("mailgun-inbound", fields, KEY, timestamp=NOW).request()
    a = adapter(**options)
    a.verify(request)
    result = a.parse(request)
    assert not result.errors, [e.error for e in result.errors]
    [message] = result.records
    assert isinstance(message, Message)
    return message


def test_forwarded_email_becomes_an_inbound_message() -> None:
    message = parse(FORWARD)
    assert (message.channel, message.direction) == (Channel.EMAIL, Direction.INBOUND)
    assert message.purpose is Purpose.SERVICE
    assert message.address == SENDER
    assert message.contact_id == RESOLVER(Channel.EMAIL, SENDER)
    assert message.subject == "Re: Your order 1042"
    assert message.body == FORWARD["body-plain"]  # the whole text, quotes included
    assert message.message_id == "mailgun-inbound:CAE4b+ZmD8n0X@mail.example.com"
    assert message.provider == "mailgun-inbound"
    assert message.sent_at.isoformat() == "2026-04-01T00:15:00+00:00"
    raw = message.metadata["provider_raw"]
    assert raw["recipient"] == "support@mg.example.jp"
    assert not [k for k in raw if k.startswith(("body-", "stripped-"))]
    assert not {"signature", "token"} & set(raw)


def test_multipart_forward_keeps_attachment_metadata_only() -> None:
    message = parse(changed(FORWARD, **{"attachment-1": INVOICE}))
    assert message.metadata["attachments"] == [
        {"filename": "invoice.pdf", "content_type": "application/pdf", "size": 21}
    ]
    assert "PDF-1.4" not in json.dumps(message.metadata)


def test_store_notification_attachments_and_headers() -> None:
    message = parse(STORED)
    assert message.message_id == "mailgun-inbound:CAE4b+ZmD8n0X@mail.example.com"  # headers
    assert message.sent_at.isoformat() == "2026-04-01T00:15:00+00:00"
    assert message.metadata["attachments"] == [
        {"filename": "invoice.pdf", "content_type": "application/pdf", "size": 20480}
    ]
    assert "attachments" not in message.metadata["provider_raw"]
    assert message.metadata["provider_raw"]["message-url"].startswith("https://")


def test_fallbacks_sender_body_time_and_id() -> None:
    bare = changed(
        FORWARD,
        **{
            "from": None,
            "body-plain": None,
            "Message-Id": None,
            "Date": None,
            "message-headers": None,
        },
    )
    message = parse(bare)
    assert message.address == "taro.yamada@example.com"  # the envelope sender
    assert message.body == "Could you change the delivery date to Friday?"  # stripped-text
    assert message.sent_at.isoformat() == "2026-04-01T00:06:40+00:00"  # the signed timestamp
    assert message.provider_message_id is None
    assert parse(bare).message_id == message.message_id  # a stable hash


def test_signature_timestamp_and_replay() -> None:
    request = signed_webhook("mailgun-inbound", FORWARD, KEY, timestamp=NOW).request()
    a = adapter()
    a.verify(request)
    with pytest.raises(SignatureError, match="already used"):
        a.verify(request)
    with pytest.raises(SignatureError, match="does not match"):
        MailgunInboundAdapter("another-key", clock=lambda: NOW).verify(request)
    old = signed_webhook("mailgun-inbound", FORWARD, KEY, timestamp=NOW - 3600).request()
    with pytest.raises(SignatureError, match="too old"):
        adapter().verify(old)
    with pytest.raises(SignatureError, match="unreadable"):
        adapter().verify(WebhookRequest(body=urlencode(FORWARD).encode()))


def test_published_signature_rule() -> None:
    # timestamp + token, HMAC-SHA256 under the signing key, hex (Mailgun's documented rule).
    stamp, token = "1775002000", "a" * 50
    fields = {**FORWARD, "timestamp": stamp, "token": token}
    fields["signature"] = mailgun_signature(KEY, stamp, token)
    body = urlencode(fields).encode()
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    adapter().verify(WebhookRequest(body=body, headers=form))


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"from": "nobody"}, "from"),
        ({"from": None, "message-headers": None, "sender": None}, "sender"),
        ({"message-headers": "{not json"}, "message-headers"),
        ({"message-headers": "{}"}, "message-headers"),
    ],
)
def test_bad_posts_are_typed_errors(changes: dict[str, Any], field: str) -> None:
    request = signed_webhook(
        "mailgun-inbound", changed(FORWARD, **changes), KEY, timestamp=NOW
    ).request()
    [error] = adapter().parse(request).errors
    assert error.error is not None
    assert error.error.field == field


def test_bad_store_attachments_are_a_typed_error() -> None:
    request = signed_webhook(
        "mailgun-inbound", changed(STORED, attachments="[1]"), KEY, timestamp=NOW
    ).request()
    [error] = adapter().parse(request).errors
    assert error.error is not None
    assert error.error.field == "attachments"


@settings(max_examples=150, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(sorted({*FORWARD, *STORED})),
        st.text(st.characters(codec="utf-8"), max_size=40),
        max_size=8,
    )
)
def test_fuzzed_fields(changes: dict[str, str]) -> None:
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    body = urlencode({**STORED, **changes}).encode()
    parse_or_payload_error(adapter(), body, headers=form)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200))
def test_fuzzed_bodies(body: bytes) -> None:
    parse_or_payload_error(adapter(), body)
    parse_or_payload_error(
        adapter(), body, headers={"Content-Type": "multipart/form-data; boundary=x"}
    )
