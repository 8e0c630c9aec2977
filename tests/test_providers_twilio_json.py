"""Twilio JSON-bodied webhooks (Event Streams): the bodySHA256 signing rule and parsing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commhistory.errors import PayloadError, SignatureError
from commhistory.facade import CommHistory
from commhistory.model import (
    BounceClass,
    Channel,
    ConsentAction,
    ConsentEvent,
    Direction,
    Event,
    EventType,
    Message,
)
from commhistory.providers import KeyedContactResolver, TwilioAdapter, WebhookRequest
from commhistory.providers.twilio import twilio_body_hash, twilio_body_url, twilio_signature
from commhistory.testing import signed_webhook
from tests._webhook_props import JSON, parse_or_payload_error

PAYLOADS = Path(__file__).parent / "payloads" / "twilio"
EVENTS: list[dict[str, Any]] = json.loads((PAYLOADS / "event_streams.json").read_text())
TOKEN = "0123456789abcdef0123456789abcdef"
URL = "https://hooks.example.jp/twilio/events"
NOW = 1775002000.0
RESOLVER = KeyedContactResolver(b"k" * 32)

# Twilio's published JSON-body example (the request-validation test vector every
# Twilio SDK ships): token 12345, the URL with bodySHA256, the expected signature.
DOC_TOKEN = "12345"
DOC_BODY = b'{"property": "value", "boolean": true}'
DOC_HASH = "0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620"
DOC_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
DOC_SIGNED_URL = f"{DOC_URL}&bodySHA256={DOC_HASH}"
DOC_SIGNATURE = "a9nBmqA0ju/hNViExpshrM61xv4="


def adapter(**options: Any) -> TwilioAdapter:
    return TwilioAdapter(TOKEN, clock=lambda: NOW, contact_resolver=RESOLVER, **options)


def doc_request(
    *, body: bytes = DOC_BODY, url: str | None = DOC_SIGNED_URL, signature: str = DOC_SIGNATURE
) -> WebhookRequest:
    headers = {"Content-Type": "application/json", "X-Twilio-Signature": signature}
    return WebhookRequest(body=body, headers=headers, url=url)


# ------------------------------------------------------------------ the signing rule


def test_published_example_hash_url_and_signature() -> None:
    assert twilio_body_hash(DOC_BODY) == DOC_HASH
    assert twilio_body_url(DOC_URL, DOC_BODY) == DOC_SIGNED_URL
    assert twilio_signature(DOC_TOKEN, DOC_SIGNED_URL, {}) == DOC_SIGNATURE


def test_published_example_verifies() -> None:
    TwilioAdapter(DOC_TOKEN).verify(doc_request())
    # Also with the default port written out, as Twilio's SDKs accept.
    port_url = DOC_SIGNED_URL.replace("mycompany.com", "mycompany.com:443")
    TwilioAdapter(DOC_TOKEN).verify(doc_request(url=port_url))


def test_configured_url_gets_the_request_hash_appended() -> None:
    # The host configured the URL without bodySHA256; Twilio appended it to the call.
    TwilioAdapter(DOC_TOKEN, url=DOC_URL).verify(doc_request())
    # Without any request URL, the body's own hash stands in (and proves the body).
    TwilioAdapter(DOC_TOKEN, url=DOC_URL).verify(doc_request(url=None))


def test_altered_body_is_refused_even_with_a_valid_url_signature() -> None:
    altered = DOC_BODY.replace(b"value", b"forged")
    with pytest.raises(SignatureError, match="bodySHA256 does not match the body"):
        TwilioAdapter(DOC_TOKEN).verify(doc_request(body=altered))
    with pytest.raises(SignatureError, match="signature does not match"):
        TwilioAdapter(DOC_TOKEN, url=DOC_URL).verify(doc_request(body=altered, url=None))


@pytest.mark.parametrize(
    ("token", "url"),
    [
        ("54321", DOC_SIGNED_URL),
        (DOC_TOKEN, DOC_SIGNED_URL.replace("bar=2", "bar=3")),
        (DOC_TOKEN, DOC_SIGNED_URL.replace("https:", "http:")),
        (DOC_TOKEN, DOC_SIGNED_URL.replace(DOC_HASH, DOC_HASH.replace("0a", "0b", 1))),
    ],
)
def test_refused_when_the_token_or_signed_url_changes(token: str, url: str) -> None:
    with pytest.raises(SignatureError, match="signature does not match"):
        TwilioAdapter(token).verify(doc_request(url=url))


def test_json_body_is_not_accepted_under_the_form_rule() -> None:
    # A JSON body signed as if it were a form post with no parameters (URL alone,
    # no bodySHA256) must not verify: the body would then be covered by nothing.
    signature = twilio_signature(DOC_TOKEN, DOC_URL, {})
    with pytest.raises(SignatureError, match="signature does not match"):
        TwilioAdapter(DOC_TOKEN).verify(doc_request(url=DOC_URL, signature=signature))


def test_repeated_body_hash_parameter_is_refused() -> None:
    twice = f"{DOC_SIGNED_URL}&bodySHA256={DOC_HASH}"
    with pytest.raises(SignatureError, match="more than once"):
        TwilioAdapter(DOC_TOKEN).verify(doc_request(url=twice))


def test_kit_signs_json_bodies_with_the_body_hash_rule() -> None:
    webhook = signed_webhook("twilio", EVENTS, TOKEN, url=URL)
    assert webhook.headers["Content-Type"] == "application/json"
    query = dict(parse_qsl(webhook.url.partition("?")[2]))
    assert query["bodySHA256"] == twilio_body_hash(webhook.body)
    assert webhook.path == f"/twilio/events?bodySHA256={query['bodySHA256']}"
    adapter().verify(webhook.request())
    adapter(url=URL).verify(webhook.request())
    with pytest.raises(SignatureError):
        adapter().verify(signed_webhook("twilio", EVENTS, "other-token", url=URL).request())


# ------------------------------------------------------------------ parsing


def parse(events: list[Any]) -> list[Any]:
    request = signed_webhook("twilio", events, TOKEN, url=URL).request()
    a = adapter()
    a.verify(request)
    return list(a.parse(request).lines)


def test_event_streams_batch_mapping() -> None:
    lines = parse(EVENTS)
    assert [line.error for line in lines] == [None, None, None]  # the test event: nothing
    delivered, bounced, inbound = (line.record for line in lines)
    assert isinstance(delivered, Event)
    assert (delivered.type, delivered.address) == (EventType.DELIVERED, "+819012345678")
    assert delivered.provider_message_id == "SM11111111111111111111111111111111"
    assert delivered.occurred_at.isoformat() == "2026-04-01T09:00:05+00:00"
    assert delivered.metadata["provider_raw"]["id"] == "EZ11111111111111111111111111111111"
    assert isinstance(bounced, Event)
    assert (bounced.type, bounced.bounce) == (EventType.BOUNCED, BounceClass.HARD)
    assert bounced.reason == "twilio error 30005"
    assert isinstance(inbound, Message)
    assert (inbound.direction, inbound.channel) == (Direction.INBOUND, Channel.SMS)
    assert inbound.address == "+819012345678"
    assert inbound.body == "Hello, what time do you open?"
    assert inbound.contact_id == RESOLVER(Channel.SMS, "+819012345678")
    assert inbound.message_id == "twilio:SM33333333333333333333333333333333"


def test_opt_out_type_of_an_inbound_event_becomes_consent() -> None:
    event = json.loads(json.dumps(EVENTS[2]))
    event["data"] |= {"body": "please stop texting me", "optOutType": "STOP"}
    message, consent = (line.record for line in parse([event]))
    assert isinstance(message, Message)
    assert isinstance(consent, ConsentEvent)
    assert consent.action is ConsentAction.WITHDRAW
    assert consent.contact_id == message.contact_id


def test_same_fact_by_form_callback_and_event_streams_is_stored_once() -> None:
    form = dict(parse_qsl((PAYLOADS / "status_delivered.txt").read_text()))
    inbound_form = dict(parse_qsl((PAYLOADS / "inbound.txt").read_text()))
    repo = CommHistory.in_memory()
    a = adapter()
    for params in (form, inbound_form):
        first = a.handle(signed_webhook("twilio", params, TOKEN, url=URL).request(), repo)
        assert first.report.inserted == 1
    outcome = a.handle(
        signed_webhook("twilio", [EVENTS[0], EVENTS[2]], TOKEN, url=URL).request(), repo
    )
    assert (outcome.report.inserted, outcome.report.duplicates) == (0, 2)


def test_retry_is_a_duplicate() -> None:
    repo = CommHistory.in_memory()
    request = signed_webhook("twilio", EVENTS, TOKEN, url=URL).request()
    assert adapter().handle(request, repo).report.inserted == 3
    assert adapter().handle(request, repo).report.duplicates == 3


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda e: e.pop("type"), "type"),
        (lambda e: e.pop("data"), "data"),
        (lambda e: e.update(data=[1]), "data"),
        (lambda e: e["data"].pop("messageSid"), "data.messageSid"),
        (lambda e: e["data"].update(timestamp="yesterday"), "data.timestamp"),
        (lambda e: e["data"].update(to=None, timestamp=None) or e.pop("time"), "data.timestamp"),
    ],
)
def test_bad_event_is_a_dead_letter_naming_the_field(change: Any, field: str) -> None:
    broken = json.loads(json.dumps(EVENTS[0]))
    change(broken)
    repo = CommHistory.in_memory()
    request = signed_webhook("twilio", [broken, EVENTS[1]], TOKEN, url=URL).request()
    outcome = adapter().handle(request, repo)
    assert (outcome.report.inserted, outcome.report.rejected) == (1, 1)
    [letter] = repo.dead_letters(source="webhook:twilio")
    assert letter.field == field


def test_inbound_without_resolver_is_dead_lettered() -> None:
    repo = CommHistory.in_memory()
    request = signed_webhook("twilio", [EVENTS[2]], TOKEN, url=URL).request()
    outcome = TwilioAdapter(TOKEN, clock=lambda: NOW).handle(request, repo)
    assert outcome.report.rejected == 1
    [letter] = repo.dead_letters()
    assert letter.field == "contact_id"


def test_a_json_body_that_is_not_events_is_one_dead_letter() -> None:
    repo = CommHistory.in_memory()
    webhook = signed_webhook("twilio", [], TOKEN, url=URL)
    body = b'"just a string"'
    request = WebhookRequest(
        body=body,
        headers={
            "Content-Type": "application/json",
            "X-Twilio-Signature": twilio_signature(TOKEN, twilio_body_url(URL, body), {}),
        },
        url=twilio_body_url(URL, body),
    )
    assert webhook.body == b"[]"
    outcome = adapter().handle(request, repo)
    assert outcome.dead_lettered
    [letter] = repo.dead_letters()
    assert letter.field == "<body>"
    with pytest.raises(PayloadError, match="array of events"):
        adapter().parse(request)


_FUZZ = adapter()
_JSON_HEADERS = {"Content-Type": "application/json"}


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_bytes(body: bytes) -> None:
    parse_or_payload_error(_FUZZ, body, headers=_JSON_HEADERS)


@settings(max_examples=200, deadline=None)
@given(JSON)
def test_fuzz_json(value: object) -> None:
    parse_or_payload_error(_FUZZ, json.dumps(value).encode(), headers=_JSON_HEADERS)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(EVENTS[:3]),
    st.sampled_from(["type", "time", "data", "id"]),
    st.sampled_from(["messageSid", "timestamp", "to", "from", "body", "errorCode", "optOutType"]),
    JSON,
)
def test_fuzz_wrong_types(event: dict[str, Any], top: str, key: str, value: object) -> None:
    changed = json.loads(json.dumps(event))
    changed[top] = value
    parse_or_payload_error(_FUZZ, json.dumps([changed]).encode(), headers=_JSON_HEADERS)
    changed = json.loads(json.dumps(event))
    changed["data"][key] = value
    parse_or_payload_error(_FUZZ, json.dumps([changed]).encode(), headers=_JSON_HEADERS)
