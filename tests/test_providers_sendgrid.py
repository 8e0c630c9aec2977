"""SendGrid Event Webhook: the published signature example, mapping, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commhistory.errors import InvalidInputError, PayloadError, SignatureError
from commhistory.facade import CommHistory
from commhistory.model import BounceClass, Event, EventType
from commhistory.providers import SendGridAdapter, WebhookRequest
from commhistory.providers.sendgrid import SIGNATURE_HEADER, TIMESTAMP_HEADER
from commhistory.testing import sendgrid_keys, signed_webhook
from tests._webhook_props import JSON, mutate_keys, parse_or_payload_error

PAYLOADS = Path(__file__).parent / "payloads" / "sendgrid"

# SendGrid's published verification example (sendgrid-python's event webhook tests).
PUBLISHED_KEY = (
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE83T4O/n84iotIvIW4mdBgQ/7dAfSmpqIM8kF9mN1flpVKS3GRqe62"
    "gw+2fNNRaINXvVpiglSI8eNEc6wEA3F+g=="
)
PUBLISHED_SIGNATURE = (
    "MEUCIGHQVtGj+Y3LkG9fLcxf3qfI10QysgDWmMOVmxG0u6ZUAiEAyBiXDWzM+uOe5W0JuG+luQAbPIqHh89M15TluLt"
    "EZtM="
)
PUBLISHED_TIMESTAMP = "1600112502"
OTHER_KEY = (
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEqTxd43gyp8IOEto2LdIfjRQrIbsd4SXZkLW6jDutdhXSJCWHw8REntlo7"
    "aNDthvj+y7GjUuFDb/R1NGe1OPzpA=="
)
NOW = 1775002000.0


def published_request(**changes: object) -> WebhookRequest:
    body = (PAYLOADS / "published_example.json").read_bytes()
    headers = {SIGNATURE_HEADER: PUBLISHED_SIGNATURE, TIMESTAMP_HEADER: PUBLISHED_TIMESTAMP}
    fields: dict[str, object] = {"body": body, "headers": headers}
    fields.update(changes)
    return WebhookRequest(**fields)  # type: ignore[arg-type]


def at_published_time(key: str = PUBLISHED_KEY, **options: object) -> SendGridAdapter:
    return SendGridAdapter(key, clock=lambda: 1600112502.0 + 10, **options)


def test_published_example_verifies() -> None:
    at_published_time().verify(published_request())


def test_published_example_parses() -> None:
    [record] = at_published_time().parse(published_request()).records
    assert isinstance(record, Event)
    assert record.type is EventType.REJECTED
    assert record.provider == "sendgrid"
    assert record.provider_message_id == "LRzXl_NHStOGhQ4kofSm_A"
    assert record.provider_event_id == "ZHJvcC0xMDk5NDkxOS1MUnpYbF9OSFN0T0doUTRrb2ZTbV9BLTA"
    assert record.event_id == "sendgrid:" + record.provider_event_id
    assert record.address == "hello@world.com"
    assert record.metadata["provider_raw"]["event"] == "dropped"


def test_published_example_refused_with_another_key() -> None:
    with pytest.raises(SignatureError, match="does not match"):
        at_published_time(OTHER_KEY).verify(published_request())


def test_published_example_refused_when_body_changes() -> None:
    body = (PAYLOADS / "published_example.json").read_bytes().replace(b"dropped", b"dropper")
    with pytest.raises(SignatureError):
        at_published_time().verify(published_request(body=body))


def test_published_example_refused_when_timestamp_changes() -> None:
    headers = {SIGNATURE_HEADER: PUBLISHED_SIGNATURE, TIMESTAMP_HEADER: "1600112503"}
    with pytest.raises(SignatureError):
        at_published_time().verify(published_request(headers=headers))


def test_published_example_is_stale_today() -> None:
    adapter = SendGridAdapter(PUBLISHED_KEY, clock=lambda: NOW)
    with pytest.raises(SignatureError, match="too old"):
        adapter.verify(published_request())


def test_future_timestamp_refused_and_window_configurable() -> None:
    adapter = SendGridAdapter(PUBLISHED_KEY, clock=lambda: 1600112502.0 - 301)
    with pytest.raises(SignatureError, match="future"):
        adapter.verify(published_request())
    SendGridAdapter(PUBLISHED_KEY, clock=lambda: 1600112502.0 - 301, tolerance=400).verify(
        published_request()
    )


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "missing header X-Twilio-Email-Event-Webhook-Signature"),
        ({SIGNATURE_HEADER: PUBLISHED_SIGNATURE}, "missing header X-Twilio-Email-Event"),
        ({SIGNATURE_HEADER: "%%%", TIMESTAMP_HEADER: PUBLISHED_TIMESTAMP}, "base64"),
        ({SIGNATURE_HEADER: PUBLISHED_SIGNATURE, TIMESTAMP_HEADER: "soon"}, "not a number"),
        ({SIGNATURE_HEADER: "AAAA", TIMESTAMP_HEADER: PUBLISHED_TIMESTAMP}, "does not match"),
    ],
)
def test_bad_headers(headers: dict[str, str], message: str) -> None:
    with pytest.raises(SignatureError, match=message):
        at_published_time().verify(published_request(headers=headers))


def test_pem_key_and_bad_key() -> None:
    keys = sendgrid_keys()
    from cryptography.hazmat.primitives import serialization

    pem = keys.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    webhook = signed_webhook("sendgrid", [], keys, timestamp=NOW)
    SendGridAdapter(pem, clock=lambda: NOW).verify(webhook.request())
    with pytest.raises(InvalidInputError, match="public_key"):
        SendGridAdapter("not a key")


def batch_adapter() -> tuple[SendGridAdapter, WebhookRequest]:
    keys = sendgrid_keys()
    events = json.loads((PAYLOADS / "batch.json").read_text())
    webhook = signed_webhook("sendgrid", events, keys, timestamp=NOW)
    return SendGridAdapter(keys.public_key, clock=lambda: NOW), webhook.request()


def test_batch_mapping() -> None:
    adapter, request = batch_adapter()
    adapter.verify(request)
    records = adapter.parse(request).records
    assert all(isinstance(r, Event) for r in records)
    events = {r.provider_event_id: r for r in records if isinstance(r, Event)}
    expected = {
        "ev-processed-1": EventType.QUEUED,
        "ev-delivered-1": EventType.DELIVERED,
        "ev-open-1": EventType.OPENED,
        "ev-click-1": EventType.CLICKED,
        "ev-bounce-1": EventType.BOUNCED,
        "ev-blocked-1": EventType.BOUNCED,
        "ev-deferred-1": EventType.DEFERRED,
        "ev-dropped-1": EventType.REJECTED,
        "ev-spam-1": EventType.COMPLAINED,
        "ev-unsub-1": EventType.UNSUBSCRIBED,
        "ev-gunsub-1": EventType.UNSUBSCRIBED,
        "ev-gresub-1": EventType.SUBSCRIBED,
    }
    assert {k: v.type for k, v in events.items()} == expected
    assert events["ev-processed-1"].address == "Taro@example.com"  # domain lower-cased
    assert events["ev-open-1"].machine is True
    assert events["ev-click-1"].url == "https://shop.example/p?utm=x"
    assert events["ev-click-1"].ip == "203.0.113.9"
    bounce = events["ev-bounce-1"]
    assert (bounce.bounce, bounce.status_code) == (BounceClass.HARD, "5.1.1")
    assert events["ev-blocked-1"].bounce is BounceClass.BLOCK
    assert events["ev-deferred-1"].status_code == "4.4.1"
    assert events["ev-deferred-1"].bounce is None
    # The X-Message-Id has dots; it ends where ".filter0001..." begins.
    assert {e.provider_message_id for e in events.values()} == {"14c5d75ce93.dfd.64b469"}


def test_handle_stores_and_retry_is_duplicate() -> None:
    adapter, request = batch_adapter()
    repo = CommHistory.in_memory()
    first = adapter.handle(request, repo)
    assert (first.report.inserted, first.report.rejected) == (12, 0)
    again = adapter.handle(request, repo)
    assert (again.report.inserted, again.report.duplicates) == (0, 12)


def test_unmapped_event_name_is_a_dead_letter_naming_it() -> None:
    keys = sendgrid_keys()
    events = json.loads((PAYLOADS / "batch.json").read_text())
    future = {**events[1], "event": "brand_new_event", "sg_event_id": "ev-new-1"}
    request = signed_webhook("sendgrid", [events[1], future], keys, timestamp=NOW).request()
    repo = CommHistory.in_memory()
    outcome = SendGridAdapter(keys.public_key, clock=lambda: NOW).handle(request, repo)
    # The known event is stored; the unmapped one is kept whole, not as an UNKNOWN event.
    assert (outcome.report.inserted, outcome.report.rejected) == (1, 1)
    [letter] = repo.list_dead_letters(source="webhook:sendgrid")
    assert "unknown event type 'brand_new_event'" in letter.reason
    assert (letter.field, letter.line) == ("event", 2)


def test_event_without_id_gets_stable_content_hash() -> None:
    keys = sendgrid_keys()
    event = {"event": "delivered", "timestamp": 1775001605, "sg_message_id": "abc.def"}
    adapter = SendGridAdapter(keys.public_key, clock=lambda: NOW)
    one = adapter.parse(signed_webhook("sendgrid", [event], keys, timestamp=NOW).request())
    two = adapter.parse(signed_webhook("sendgrid", [event], keys, timestamp=NOW + 5).request())
    assert one.records == two.records
    [record] = one.records
    assert isinstance(record, Event)
    assert record.provider_event_id is not None
    assert len(record.provider_event_id) == 64


def test_bad_events_become_errors_others_kept() -> None:
    keys = sendgrid_keys()
    good = {
        "event": "delivered",
        "timestamp": 1775001605,
        "sg_message_id": "a.b",
        "sg_event_id": "1",
    }
    events = [good, "oops", {"event": "open"}, {**good, "timestamp": "yesterday"}, 42]
    adapter = SendGridAdapter(keys.public_key, clock=lambda: NOW)
    result = adapter.parse(signed_webhook("sendgrid", events, keys, timestamp=NOW).request())
    assert len(result.records) == 1
    fields = [line.error.field for line in result.errors if line.error is not None]
    assert fields == ["<event>", "sg_message_id", "timestamp", "<event>"]
    repo = CommHistory.in_memory()
    report = repo.ingest(result.lines, source=adapter.source)
    assert (report.inserted, report.rejected) == (1, 4)
    letters = repo.dead_letters(source="webhook:sendgrid")
    assert len(letters) == 4
    assert '"open"' in letters[1].raw


def test_size_limit() -> None:
    keys = sendgrid_keys()
    adapter = SendGridAdapter(keys.public_key, clock=lambda: NOW, max_body_bytes=100)
    webhook = signed_webhook("sendgrid", [{"event": "x" * 200}], keys, timestamp=NOW)
    with pytest.raises(PayloadError, match="limit"):
        adapter.verify(webhook.request())
    with pytest.raises(PayloadError, match="limit"):
        adapter.parse(webhook.request())


def test_unparseable_verified_body_is_dead_lettered() -> None:
    keys = sendgrid_keys()
    adapter = SendGridAdapter(keys.public_key, clock=lambda: NOW)
    webhook = signed_webhook("sendgrid", {"not": "a list"}, keys, timestamp=NOW)
    repo = CommHistory.in_memory()
    outcome = adapter.handle(webhook.request(), repo)
    assert outcome.dead_lettered
    assert outcome.report.rejected == 1
    [letter] = repo.dead_letters()
    assert letter.source == "webhook:sendgrid"
    assert letter.field == "<body>"


def test_forged_request_stores_nothing() -> None:
    keys, other = sendgrid_keys(), sendgrid_keys()
    adapter = SendGridAdapter(keys.public_key, clock=lambda: NOW)
    webhook = signed_webhook("sendgrid", [{"event": "open"}], other, timestamp=NOW)
    repo = CommHistory.in_memory()
    with pytest.raises(SignatureError):
        adapter.handle(webhook.request(), repo)
    assert repo.dead_letters() == []


_FUZZ_ADAPTER = SendGridAdapter(PUBLISHED_KEY)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_bytes(body: bytes) -> None:
    parse_or_payload_error(_FUZZ_ADAPTER, body)


@settings(max_examples=300, deadline=None)
@given(JSON)
def test_fuzz_json(value: object) -> None:
    parse_or_payload_error(_FUZZ_ADAPTER, json.dumps(value).encode())


_TEMPLATE = json.loads((PAYLOADS / "batch.json").read_text())


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(_TEMPLATE), st.sampled_from(sorted(_TEMPLATE[4])), JSON)
def test_fuzz_wrong_types(event: dict[str, object], key: str, value: object) -> None:
    body = json.dumps([mutate_keys(event, value, key)]).encode()
    parse_or_payload_error(_FUZZ_ADAPTER, body)


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=1, max_value=2000))
def test_truncated_json(cut: int) -> None:
    body = (PAYLOADS / "batch.json").read_bytes()[:cut]
    parse_or_payload_error(_FUZZ_ADAPTER, body)


# Issue 14, bug 1. SendGrid's Event Webhook Reference
# (https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/event) gives every
# delivery event "smtp-id": "<14c5d75ce93.dfd.64b469@ismtpd-555>"; its glossary
# (https://sendgrid.com/docs/Glossary/message_id.html) shows an sg_message_id as
# "<X-Message-Id>.filter0905p1mdw1-4434-59E0C6FF-3.0", and the X-Message-ID page
# (https://www.twilio.com/docs/sendgrid/glossary/x-message-id) says to correlate events by
# the X-Message-Id the send returned. Older events carry only the filter part.
SENDGRID_DOCS_EVENTS = [
    {
        "email": "example@test.com",
        "timestamp": 1513299569,
        "smtp-id": "<14c5d75ce93.dfd.64b469@ismtpd-555>",
        "event": "processed",
        "category": "cat facts",
        "sg_event_id": "docs-processed",
        "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0",
    },
    {
        "email": "example@test.com",
        "timestamp": 1513299569,
        "smtp-id": "<14c5d75ce93.dfd.64b469@ismtpd-555>",
        "event": "dropped",
        "category": "cat facts",
        "sg_event_id": "docs-dropped",
        "sg_message_id": "filter0001p1las1-16648-5515E0B88-0.0",
        "reason": "Bounced Address",
        "status": "5.0.0",
    },
    {
        "email": "example@test.com",
        "timestamp": 1513299569,
        "event": "delivered",
        "sg_event_id": "docs-delivered",
        "sg_message_id": "XBg2anf2TqCy6WXKQFhieQ.filter0905p1mdw1-4434-59E0C6FF-3.0",
    },
    {
        "email": "example@test.com",
        "timestamp": 1513299569,
        "event": "open",
        "sg_event_id": "docs-open",
        "sg_message_id": "Z8lsd2gSTByHHa_0JKMXKA.recvd-5d4d4d5b5f-qwe5x-1-5FD2A6B2-27.0",
    },
]


def test_message_ids_with_dots_and_filter_only_ids_link_to_the_message() -> None:
    keys = sendgrid_keys()
    adapter = SendGridAdapter(keys.public_key, clock=lambda: NOW)
    webhook = signed_webhook("sendgrid", SENDGRID_DOCS_EVENTS, keys, timestamp=NOW)
    result = adapter.parse(webhook.request())
    assert result.errors == []
    ids = {
        r.provider_event_id: r.provider_message_id for r in result.records if isinstance(r, Event)
    }
    assert ids == {
        "docs-processed": "14c5d75ce93.dfd.64b469",
        "docs-dropped": "14c5d75ce93.dfd.64b469",
        "docs-delivered": "XBg2anf2TqCy6WXKQFhieQ",
        "docs-open": "Z8lsd2gSTByHHa_0JKMXKA",
    }


def test_dropped_and_processed_events_link_to_the_stored_message() -> None:
    from commhistory.testing import make_message

    keys = sendgrid_keys()
    adapter = SendGridAdapter(keys.public_key, clock=lambda: NOW)
    repo = CommHistory.in_memory()
    message = make_message(provider="sendgrid", provider_message_id="14c5d75ce93.dfd.64b469")
    repo.record_messages([message])
    webhook = signed_webhook("sendgrid", SENDGRID_DOCS_EVENTS[:2], keys, timestamp=NOW)
    outcome = adapter.handle(webhook.request(), repo)
    assert (outcome.report.inserted, outcome.report.rejected) == (2, 0)
    [entry] = repo.timeline(message.contact_id)
    assert {e.type for e in entry.events} == {EventType.QUEUED, EventType.REJECTED}
