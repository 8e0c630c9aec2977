"""SendGrid Inbound Parse: a received email becomes an encrypted inbound Message.

The form fields are those SendGrid documents for Inbound Parse posts (headers,
dkim, content-ids, to, from, text, html, sender_ip, spam_report, envelope,
attachments, subject, spam_score, attachment-info, charsets, SPF; ``email``
with "POST the raw, full MIME message"):
https://www.twilio.com/docs/sendgrid/for-developers/parsing-email/setting-up-the-inbound-parse-webhook#default-parameters
Signed requests (security policies):
https://www.twilio.com/docs/sendgrid/for-developers/parsing-email/securing-your-parse-webhooks
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commhistory.errors import PayloadError, SignatureError
from commhistory.model import Channel, Direction, Message, Purpose
from commhistory.providers import KeyedContactResolver, SendGridInboundAdapter, WebhookRequest
from commhistory.providers.registry import multipart_body
from commhistory.testing import sendgrid_keys, signed_webhook
from tests._webhook_props import parse_or_payload_error

FIELDS: dict[str, Any] = json.loads(
    (Path(__file__).parent / "payloads" / "sendgrid" / "inbound_parse.json").read_text()
)
KEYS = sendgrid_keys()
RESOLVER = KeyedContactResolver(b"g" * 32)
NOW = 1775002000.0
SENDER = "Taro.Yamada@example.com"
RECEIPT = ("receipt.txt", "text/plain", b"Order 1042 OK")


def adapter(**options: Any) -> SendGridInboundAdapter:
    options.setdefault("contact_resolver", RESOLVER)
    return SendGridInboundAdapter(KEYS.public_key, clock=lambda: NOW, **options)


def form(**changes: Any) -> dict[str, Any]:
    out: dict[str, Any] = {**FIELDS, "attachment1": RECEIPT}
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def parse(fields: dict[str, Any], **options: Any) -> Message:
    request = signed_webhook("sendgrid-inbound", fields, KEYS, timestamp=NOW).request()
    a = adapter(**options)
    a.verify(request)
    result = a.parse(request)
    assert not result.errors, [e.error for e in result.errors]
    [message] = result.records
    assert isinstance(message, Message)
    return message


def test_inbound_parse_post_becomes_an_inbound_message() -> None:
    message = parse(form())
    assert (message.channel, message.direction) == (Channel.EMAIL, Direction.INBOUND)
    assert message.purpose is Purpose.SERVICE
    assert message.address == SENDER
    assert message.contact_id == RESOLVER(Channel.EMAIL, SENDER)
    assert message.subject == "Re: Your order 1042"
    assert message.body == "Could you change the delivery date to Friday?\n\nTaro\n"
    assert message.message_id == "sendgrid-inbound:CAE4b+ZmD8n0X@mail.example.com"
    assert message.provider == "sendgrid-inbound"
    assert message.sent_at.isoformat() == "2026-04-01T00:15:00+00:00"  # Date, +09:00
    assert message.metadata["attachments"] == [
        {"filename": "receipt.txt", "content_type": "text/plain", "size": 13}
    ]
    raw = message.metadata["provider_raw"]
    assert raw["spam_score"] == "0.1"
    assert raw["SPF"] == "pass"
    assert not {"text", "html", "email"} & set(raw)
    assert "Order 1042 OK" not in json.dumps(message.metadata)  # attachment content


def test_signature_is_checked_over_the_multipart_body() -> None:
    signed = signed_webhook("sendgrid-inbound", form(), KEYS, timestamp=NOW)
    tampered = signed.body.replace(b"Friday", b"Monday")
    with pytest.raises(SignatureError):
        adapter().verify(WebhookRequest(body=tampered, headers=signed.headers))
    other = sendgrid_keys()
    with pytest.raises(SignatureError):
        SendGridInboundAdapter(other.public_key, clock=lambda: NOW).verify(signed.request())


def test_charsets_decode_the_fields() -> None:
    boundary = "b0undary"
    body = multipart_body(
        {
            "from": "taro@example.com",
            "subject": "=?ignored",  # replaced below
            "charsets": json.dumps({"subject": "iso-2022-jp", "text": "shift_jis"}),
        },
        boundary=boundary,
    )
    body = body.replace(b"=?ignored", "ご注文".encode("iso-2022-jp"))
    text_part = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="text"\r\n\r\n'.encode()
        + "日曜に届けてください".encode("shift_jis")
        + b"\r\n"
    )
    body = body.replace(f"--{boundary}--".encode(), text_part + f"--{boundary}--".encode())
    request = WebhookRequest(
        body=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    [message] = adapter().parse(request).records
    assert isinstance(message, Message)
    assert message.subject == "ご注文"
    assert message.body == "日曜に届けてください"


def test_raw_mime_mode_reads_the_email_field() -> None:
    mime = (
        "From: Taro <taro@example.com>\r\nSubject: raw\r\n"
        "Date: Wed, 01 Apr 2026 00:20:00 +0000\r\nMessage-ID: <raw-1@example.com>\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\nhello from raw\r\n"
    )
    message = parse(form(text=None, html=None, headers=None, attachment1=None, email=mime))
    assert message.body == "hello from raw\r\n"
    assert message.message_id == "sendgrid-inbound:raw-1@example.com"
    assert "email" not in message.metadata["provider_raw"]


def test_sender_falls_back_to_the_envelope_and_ids_to_a_hash() -> None:
    message = parse(form(**{"from": None, "headers": "Subject: x\n"}))
    assert message.address == "taro.yamada@example.com"  # envelope.from
    assert message.provider_message_id is None
    assert message.message_id.startswith("sendgrid-inbound:")
    assert len(message.message_id) == len("sendgrid-inbound:") + 64
    assert message.sent_at.isoformat() == "2026-04-01T00:06:40+00:00"  # received
    assert parse(form(**{"from": None, "headers": "Subject: x\n"})) == message  # stable


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"from": "no address here"}, "from"),
        ({"from": None, "headers": "", "envelope": "{not json"}, "envelope"),
        ({"from": None, "headers": "", "envelope": "[]"}, "envelope"),
        ({"from": None, "headers": "", "envelope": "{}"}, "envelope.from"),
    ],
)
def test_bad_posts_are_typed_errors(changes: dict[str, Any], field: str) -> None:
    request = signed_webhook("sendgrid-inbound", form(**changes), KEYS, timestamp=NOW).request()
    [error] = adapter().parse(request).errors
    assert error.error is not None
    assert error.error.field == field


@pytest.mark.parametrize(
    ("content_type", "field"),
    [
        ("application/json", "Content-Type"),
        ("multipart/form-data", "Content-Type"),  # no boundary
        ("multipart/form-data; boundary=zzz", "<body>"),  # no parts
    ],
)
def test_bodies_that_are_not_forms(content_type: str, field: str) -> None:
    with pytest.raises(PayloadError) as caught:
        adapter().parse(WebhookRequest(body=b"{}", headers={"Content-Type": content_type}))
    assert caught.value.field == field


@settings(max_examples=150, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(sorted(FIELDS)),
        st.text(st.characters(codec="utf-8"), max_size=40),
        max_size=8,
    )
)
def test_fuzzed_fields(changes: dict[str, str]) -> None:
    body = multipart_body({**FIELDS, **changes}, boundary="fuzz")
    parse_or_payload_error(
        adapter(), body, headers={"Content-Type": "multipart/form-data; boundary=fuzz"}
    )


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300))
def test_fuzzed_raw_bodies(body: bytes) -> None:
    parse_or_payload_error(
        adapter(), body, headers={"Content-Type": "multipart/form-data; boundary=fuzz"}
    )
    parse_or_payload_error(
        adapter(),
        b"--fuzz\r\n" + body,
        headers={"Content-Type": "multipart/form-data; boundary=fuzz"},
    )
