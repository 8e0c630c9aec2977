"""Mailtrap sending webhooks: Mailtrap-Signature, JSON and JSON Lines bodies, the event map.

Source: https://docs.mailtrap.io/email-api-smtp/advanced/webhooks (mailtrap/mailtrap-docs,
email-api-smtp/advanced/webhooks.md): the payload examples of every sending event and of
an audit-log event (tests/payloads/mailtrap/events.json, "published"), the two payload
formats (JSON with an "events" array, JSON Lines), and "Webhook signature verification"
(Mailtrap-Signature: hex HMAC-SHA256 of the raw body under the webhook's signing secret,
whatever the format). Soft bounces are retried and suspensions wait for the sending
domain's verification (https://docs.mailtrap.io/email-api-smtp/analytics/statuses-and-events).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commhistory.errors import InvalidInputError, PayloadError, SignatureError
from commhistory.facade import CommHistory
from commhistory.model import BounceClass, Channel, Event, EventType, Purpose
from commhistory.providers import MailtrapAdapter, WebhookRequest
from commhistory.providers.mailtrap import EVENT_TYPES, SIGNATURE_HEADER
from commhistory.testing import make_message, signed_webhook
from tests._esp import unknown_is_dead_lettered
from tests._webhook_props import JSON, parse_or_payload_error

EVENTS = json.loads((Path(__file__).parent / "payloads" / "mailtrap" / "events.json").read_text())
PUBLISHED: dict[str, Any] = EVENTS["published"]
SHAPED: dict[str, Any] = EVENTS["shaped"]
ALL = {**PUBLISHED, **SHAPED}
SECRET = "0123456789abcdef0123456789abcdef"  # 32 hex characters, like Mailtrap's
NOW = 1775002000.0
ADAPTER = MailtrapAdapter(SECRET, clock=lambda: NOW)


def parse(name: str) -> Event:
    request = signed_webhook("mailtrap", {"events": [ALL[name]]}, SECRET).request()
    ADAPTER.verify(request)
    result = ADAPTER.parse(request)
    assert result.errors == []
    [record] = result.records
    assert isinstance(record, Event)
    return record


# --------------------------------------------------------------------------- signature


def test_signature_is_the_documented_hmac_of_the_raw_body() -> None:
    body = json.dumps({"events": [PUBLISHED["delivery"]]}, indent=2).encode()
    signature = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    ADAPTER.verify(WebhookRequest(body=body, headers={SIGNATURE_HEADER: signature}))
    with pytest.raises(SignatureError, match="does not match"):
        ADAPTER.verify(WebhookRequest(body=body + b"\n", headers={SIGNATURE_HEADER: signature}))


@pytest.mark.parametrize(
    ("headers", "message"),
    [({}, "missing header Mailtrap-Signature"), ({SIGNATURE_HEADER: "ab" * 32}, "does not match")],
)
def test_refused_signatures(headers: dict[str, str], message: str) -> None:
    with pytest.raises(SignatureError, match=message):
        ADAPTER.verify(WebhookRequest(body=b'{"events": []}', headers=headers))


def test_other_secret_and_empty_secret() -> None:
    hook = signed_webhook("mailtrap", {"events": [PUBLISHED["open"]]}, SECRET)
    with pytest.raises(SignatureError):
        MailtrapAdapter("f" * 32).verify(hook.request())
    with pytest.raises(InvalidInputError, match="signing_secret"):
        MailtrapAdapter("")


# --------------------------------------------------------------------------- mapping


def test_published_examples() -> None:
    delivery = parse("delivery")
    assert (delivery.type, delivery.address, delivery.provider) == (
        EventType.DELIVERED,
        "receiver@example.com",
        "mailtrap",
    )
    assert delivery.provider_message_id == "1df37d17-0286-4d8b-8edf-bc4ec5be86e6"
    assert delivery.event_id == "mailtrap:bede7236-2284-43d6-a953-1fdcafd0fdbc"
    assert delivery.occurred_at.timestamp() == 1728669700
    bounce = parse("bounce")
    assert (bounce.type, bounce.bounce, bounce.reason) == (
        EventType.BOUNCED,
        BounceClass.BLOCK,  # bounce_category "spam": the content, not the address
        "[CS01] Message rejected due to local policy",
    )
    soft = parse("soft bounce")
    assert (soft.type, soft.status_code, soft.bounce) == (EventType.DEFERRED, "4.7.1", None)
    assert parse("spam").type is EventType.COMPLAINED
    suspension = parse("suspension")
    assert (suspension.type, suspension.reason) == (
        EventType.DEFERRED,
        "Your account has reached its daily sending limit.",
    )
    reject = parse("reject")
    assert (reject.type, reject.reason) == (
        EventType.REJECTED,
        "Recipient in suppression list. Reason: unsubscription",
    )
    opened = parse("open")
    assert (opened.type, opened.ip) == (EventType.OPENED, "127.138.158.185")
    clicked = parse("click")
    assert (clicked.type, clicked.url, clicked.user_agent) == (
        EventType.CLICKED,
        "https://mailtrap.io/email-api",
        "Mozilla/5.0 (Windows NT x.y; Win64; x64)",
    )
    assert parse("unsubscribe").type is EventType.UNSUBSCRIBED
    hard = parse("hard_bounce")
    assert (hard.bounce, hard.status_code) == (BounceClass.HARD, "5.1.1")


def test_every_documented_event_is_mapped() -> None:
    documented = {"delivery", "open", "click", "unsubscribe", "spam", "soft bounce", "bounce"}
    assert set(EVENT_TYPES) == documented | {"suspension", "reject"}


def test_json_lines_body_and_a_bad_line() -> None:
    events = [
        dict(PUBLISHED["delivery"], event_id="e-1"),
        dict(PUBLISHED["open"], event_id="e-2"),
        dict(PUBLISHED["click"], event_id="e-3"),
    ]
    hook = signed_webhook("mailtrap", events, SECRET)
    assert hook.headers["Content-Type"] == "application/jsonl"
    ADAPTER.verify(hook.request())
    result = ADAPTER.parse(hook.request())
    assert [r.type for r in result.records if isinstance(r, Event)] == [
        EventType.DELIVERED,
        EventType.OPENED,
        EventType.CLICKED,
    ]
    lines = hook.body.split(b"\n")
    lines[1] = b'{"event": "open", "message_id": '  # cut off
    broken = WebhookRequest(body=b"\n".join(lines), headers=hook.headers)
    result = ADAPTER.parse(broken)
    assert len(result.records) == 2
    [error] = result.errors
    assert isinstance(error.error, PayloadError)
    assert (error.line, error.error.field) == (2, "<line>")
    single = signed_webhook("mailtrap", [PUBLISHED["spam"]], SECRET)  # one line: one object
    [record] = ADAPTER.parse(single.request()).records
    assert isinstance(record, Event)
    assert record.type is EventType.COMPLAINED


def test_audit_log_and_inbound_notifications_are_dead_letters() -> None:
    inbound = {
        "event": "inbound.message_received",
        "event_id": "x",
        "timestamp": 1735830138,
        "inbox_id": 7,
        "message_id": "m-1",
    }
    body = {"events": [PUBLISHED["audit_login"], inbound, PUBLISHED["delivery"]]}
    outcome = ADAPTER.handle(
        signed_webhook("mailtrap", body, SECRET).request(), CommHistory.in_memory()
    )
    assert (outcome.report.inserted, outcome.report.rejected) == (1, 2)
    reasons = [e.error.reason for e in outcome.result.errors if isinstance(e.error, PayloadError)]
    assert "activity_log.user.login" in reasons[0]
    assert "inbound.message_received" in reasons[1]


def test_unknown_event_is_a_dead_letter_and_untimed_event_is_timed_on_receipt() -> None:
    future = dict(PUBLISHED["delivery"], event="teleported")
    unknown_is_dead_lettered(ADAPTER, "mailtrap", {"events": [future]}, SECRET, "teleported")
    untimed = dict(PUBLISHED["delivery"])
    del untimed["timestamp"]
    [record] = ADAPTER.parse(
        signed_webhook("mailtrap", {"events": [untimed]}, SECRET).request()
    ).records
    assert isinstance(record, Event)
    assert record.type is EventType.DELIVERED
    assert record.occurred_at.timestamp() == NOW
    assert record.metadata["time_source"] == "received"


def test_a_retry_is_a_duplicate_and_a_hard_bounce_suppresses() -> None:
    repo = CommHistory.in_memory()
    message = make_message(
        provider="mailtrap",
        provider_message_id="5b0c4f8e-6a43-4f0e-9d3c-2f6b7e000001",
        address="nobody@example.net",
        purpose=Purpose.MARKETING,
    )
    repo.record_messages([message])
    request = signed_webhook("mailtrap", {"events": [SHAPED["hard_bounce"]]}, SECRET).request()
    assert ADAPTER.handle(request, repo).report.inserted == 1
    assert ADAPTER.handle(request, repo).report.duplicates == 1
    [entry] = repo.suppression.entries(Channel.EMAIL, "nobody@example.net")
    assert entry.reason.value == "hard_bounce"


@pytest.mark.parametrize(
    ("body", "field"),
    [(b'{"data": []}', "events"), (b'{"events": {}}', "events"), (b"3", "<body>")],
)
def test_bodies_of_the_wrong_shape(body: bytes, field: str) -> None:
    with pytest.raises(PayloadError) as caught:
        ADAPTER.parse(WebhookRequest(body=body))
    assert caught.value.field == field


def test_an_empty_body_array_has_no_events() -> None:
    assert ADAPTER.parse(WebhookRequest(body=b"[]")).lines == ()


# --------------------------------------------------------------------------- fuzz


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_bytes(body: bytes) -> None:
    parse_or_payload_error(ADAPTER, body)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=40), max_size=4))
def test_fuzz_json_lines(lines: list[str]) -> None:
    parse_or_payload_error(ADAPTER, "\n".join(lines).encode())


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(sorted(ALL)),
    st.sampled_from(
        [
            "event",
            "timestamp",
            "message_id",
            "email",
            "event_id",
            "response",
            "response_code",
            "bounce_category",
            "reason",
            "url",
            "ip",
            "user_agent",
        ]
    ),
    JSON,
)
def test_fuzz_wrong_types(name: str, key: str, value: object) -> None:
    changed = dict(ALL[name])
    changed[key] = value
    parse_or_payload_error(ADAPTER, json.dumps({"events": [changed]}).encode())
    parse_or_payload_error(
        ADAPTER, json.dumps(changed).encode() + b"\n" + json.dumps(changed).encode()
    )
