"""Unisender Go webhooks: the MD5 ``auth`` field, the status map, gzip bodies.

Source: Unisender Go's Web API reference, https://godocs.unisender.ru/web-api-ref (webhooks:
the callback format with its example, ``tests/payloads/unisender_go/events.json``
"published": a ``transactional_email_status`` and a ``transactional_spam_block`` event;
``auth`` is "the MD5 hash of the string body of the message in which the auth value is
replaced by the API key of the user or project"; ``event_time`` is UTC; the statuses sent,
delivered, opened, hard_bounced, soft_bounced, spam, clicked, unsubscribed, subscribed; the
``delivery_status`` codes; the ``json_post_gzip`` event format). The "shaped" events are that
example with the other documented statuses and delivery codes.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commhistory.errors import InvalidInputError, PayloadError, SignatureError
from commhistory.facade import CommHistory
from commhistory.model import BounceClass, Channel, Event, EventType, Purpose
from commhistory.providers import UnisenderGoAdapter, WebhookRequest
from commhistory.providers.unisender_go import STATUSES, unisender_go_auth
from commhistory.testing import make_message, signed_webhook
from tests._esp import unknown_is_dead_lettered
from tests._webhook_props import JSON, parse_or_payload_error

EVENTS = json.loads(
    (Path(__file__).parent / "payloads" / "unisender_go" / "events.json").read_text()
)
PUBLISHED: dict[str, Any] = EVENTS["published"]
SHAPED: dict[str, Any] = EVENTS["shaped"]
API_KEY = "6ar3kqs1m9yk3p9bqmw3mh7fqi5e6rijkcgb5cuo"
NOW = 1775002000.0
ADAPTER = UnisenderGoAdapter(API_KEY, clock=lambda: NOW)


def body_of(*events: dict[str, Any]) -> dict[str, Any]:
    return {"events_by_user": [dict(PUBLISHED, events=list(events))]}


def parse(name: str) -> Event:
    request = signed_webhook("unisender_go", body_of(SHAPED[name]), API_KEY).request()
    ADAPTER.verify(request)
    result = ADAPTER.parse(request)
    assert result.errors == []
    [record] = result.records
    assert isinstance(record, Event)
    return record


# --------------------------------------------------------------------------- auth


def test_the_auth_vector() -> None:
    # The body with the API key in "auth" hashes to the auth value that is sent; checked
    # here with hashlib, independently of the adapter.
    with_key = b'{"auth":"api_key","key":"value"}'
    assert unisender_go_auth(with_key) == hashlib.md5(with_key).hexdigest()
    assert unisender_go_auth(with_key) == "8c64386327f53722434f44021a7a0d40"
    sent = b'{"auth":"8c64386327f53722434f44021a7a0d40","key":"value"}'
    adapter = UnisenderGoAdapter("api_key")
    adapter.verify(WebhookRequest(body=sent))
    with pytest.raises(SignatureError, match="auth does not match"):
        UnisenderGoAdapter("another_key").verify(WebhookRequest(body=sent))


def test_the_check_covers_the_body_as_sent() -> None:
    # Spacing and key order are Unisender Go's; the digest is over those exact bytes.
    text = json.dumps({"auth": API_KEY, **body_of(SHAPED["delivered"])}, indent=1)
    digest = hashlib.md5(text.encode()).hexdigest()
    sent = text.replace(API_KEY, digest, 1).encode()
    ADAPTER.verify(WebhookRequest(body=sent))
    changed = sent.replace(b"taro@example.com", b"jiro@example.com")
    with pytest.raises(SignatureError, match="does not match"):
        ADAPTER.verify(WebhookRequest(body=changed))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not json", "auth field unreadable"),
        (b'{"events_by_user": []}', "auth field unreadable \\(auth: required\\)"),
        (b'{"auth": 5}', "not a plain string"),
        (b'{"auth": "a\\u0062c"}', "not a plain string"),
    ],
)
def test_refused_bodies(body: bytes, message: str) -> None:
    with pytest.raises(SignatureError, match=message):
        ADAPTER.verify(WebhookRequest(body=body))


def test_unusable_api_keys() -> None:
    for key in ("", "ключ", "a\nb"):
        with pytest.raises(InvalidInputError, match="api_key"):
            UnisenderGoAdapter(key)


def test_gzip_body_is_verified_and_parsed_after_decompression() -> None:
    hook = signed_webhook("unisender_go", body_of(SHAPED["clicked"]), API_KEY)
    request = WebhookRequest(body=gzip.compress(hook.body), headers=hook.headers)
    ADAPTER.verify(request)
    [event] = ADAPTER.parse(request).records
    assert isinstance(event, Event)
    assert event.type is EventType.CLICKED
    small = UnisenderGoAdapter(API_KEY, max_body_bytes=len(hook.body) - 1)
    bomb = WebhookRequest(body=gzip.compress(hook.body))
    with pytest.raises(PayloadError, match="decompresses to more than"):
        small.verify(bomb)  # too large (413), not a signature failure
    with pytest.raises(PayloadError, match="decompresses to more than"):
        small.parse(bomb)
    junk = WebhookRequest(body=b"\x1f\x8b" + b"junk")
    with pytest.raises(PayloadError, match="not valid gzip"):
        ADAPTER.parse(junk)
    with pytest.raises(SignatureError, match="not valid gzip"):
        ADAPTER.verify(junk)


# --------------------------------------------------------------------------- mapping


def test_published_example() -> None:
    request = signed_webhook("unisender_go", {"events_by_user": [PUBLISHED]}, API_KEY).request()
    ADAPTER.verify(request)
    result = ADAPTER.parse(request)
    [sent] = result.records
    assert isinstance(sent, Event)
    assert (sent.type, sent.address, sent.provider_message_id) == (
        EventType.SENT,
        "recipient.email@example.com",
        "1a3Q2V-0000OZ-S0",
    )
    assert sent.occurred_at.isoformat() == "2015-11-30T15:09:42+00:00"  # UTC
    assert (sent.user_agent, sent.ip) == (
        PUBLISHED["events"][0]["event_data"]["delivery_info"]["user_agent"],
        "111.111.111.111",
    )
    [block] = result.errors  # the spam block is about a server, not a message
    assert isinstance(block.error, PayloadError)
    assert block.error.field == "event_name"
    assert "transactional_spam_block" in block.error.reason


def test_statuses_and_delivery_codes() -> None:
    assert parse("delivered").type is EventType.DELIVERED
    hard = parse("hard_bounced")
    assert (hard.type, hard.bounce, hard.status_code) == (
        EventType.BOUNCED,
        BounceClass.HARD,
        "5.1.1",
    )
    retry = parse("soft_retry")
    assert (retry.type, retry.bounce, retry.status_code) == (EventType.DEFERRED, None, "4.7.1")
    full = parse("soft_full")
    assert (full.type, full.bounce) == (EventType.BOUNCED, BounceClass.SOFT)
    skipped = parse("unsubscribed_skip")
    assert (skipped.type, skipped.bounce, skipped.reason) == (
        EventType.REJECTED,
        None,
        "err_unsubscribed",
    )
    opened = parse("opened")
    assert (opened.type, opened.occurred_at.isoformat()) == (
        EventType.OPENED,
        "2026-04-01T09:05:00+00:00",
    )
    clicked = parse("clicked")
    assert (clicked.type, clicked.url) == (EventType.CLICKED, "https://shop.example/item/1")
    assert parse("unsubscribed").type is EventType.UNSUBSCRIBED
    assert parse("spam").type is EventType.COMPLAINED
    assert parse("subscribed").type is EventType.SUBSCRIBED
    documented = {"sent", "delivered", "opened", "hard_bounced", "soft_bounced", "spam"}
    assert set(STATUSES) == documented | {"clicked", "unsubscribed", "subscribed"}


def test_unknown_status_is_a_dead_letter_and_untimed_event_is_timed_on_receipt() -> None:
    future = json.loads(json.dumps(SHAPED["delivered"]))
    future["event_data"]["status"] = "teleported"
    unknown_is_dead_lettered(ADAPTER, "unisender_go", body_of(future), API_KEY, "teleported")
    event = json.loads(json.dumps(SHAPED["delivered"]))
    del event["event_data"]["event_time"]
    request = signed_webhook("unisender_go", body_of(event), API_KEY).request()
    [record] = ADAPTER.parse(request).records
    assert isinstance(record, Event)
    assert record.type is EventType.DELIVERED
    assert record.occurred_at.timestamp() == NOW
    assert record.metadata["time_source"] == "received"


def test_a_retry_is_a_duplicate_and_a_hard_bounce_suppresses() -> None:
    repo = CommHistory.in_memory()
    message = make_message(
        provider="unisender_go",
        provider_message_id="1bS4mX-0001aB-C2",
        address="nobody@example.net",
        purpose=Purpose.TRANSACTIONAL,
    )
    repo.record_messages([message])
    request = signed_webhook("unisender_go", body_of(SHAPED["hard_bounced"]), API_KEY).request()
    assert ADAPTER.handle(request, repo).report.inserted == 1
    # Unisender Go retries with the same events (and may add retry_count): still duplicates.
    retried = signed_webhook(
        "unisender_go", {**body_of(SHAPED["hard_bounced"]), "retry_count": 1}, API_KEY
    ).request()
    assert ADAPTER.handle(retried, repo).report.duplicates == 1
    [entry] = repo.suppression.entries(Channel.EMAIL, "nobody@example.net")
    assert entry.reason.value == "hard_bounce"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"auth": "x"}, "events_by_user"),
        ({"events_by_user": [{}]}, "events_by_user[].events"),
        ({"events_by_user": ["x"]}, "events_by_user[]"),
    ],
)
def test_bodies_of_the_wrong_shape(body: dict[str, Any], field: str) -> None:
    with pytest.raises(PayloadError) as caught:
        ADAPTER.parse(WebhookRequest(body=json.dumps(body).encode()))
    assert caught.value.field == field


# --------------------------------------------------------------------------- fuzz


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_bytes(body: bytes) -> None:
    parse_or_payload_error(ADAPTER, body)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(sorted(SHAPED)),
    st.sampled_from(
        ["job_id", "email", "status", "event_time", "url", "delivery_info", "metadata"]
    ),
    JSON,
)
def test_fuzz_wrong_types_in_event_data(name: str, key: str, value: object) -> None:
    event = json.loads(json.dumps(SHAPED[name]))
    event["event_data"][key] = value
    parse_or_payload_error(ADAPTER, json.dumps(body_of(event)).encode())


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(sorted(SHAPED)),
    st.sampled_from(["event_name", "event_data"]),
    st.sampled_from(["delivery_status", "destination_response", "user_agent", "ip"]),
    JSON,
)
def test_fuzz_wrong_types_in_the_event(name: str, key: str, info_key: str, value: object) -> None:
    event = json.loads(json.dumps(SHAPED[name]))
    info = event["event_data"].get("delivery_info")
    if isinstance(info, dict):
        info[info_key] = value
    parse_or_payload_error(ADAPTER, json.dumps(body_of(event)).encode())
    event[key] = value
    parse_or_payload_error(ADAPTER, json.dumps(body_of(event)).encode())
