"""MailerSend webhooks: the Signature header, both payload shapes, the activity map.

Sources: https://developers.mailersend.com/api/v1/webhooks.html (event list, the
"activity.sent" examples in the fat shape and the flat shape, the survey and
maintenance examples, and the "Security" section: ``Signature`` is
``hash_hmac('sha256', $requestContent, $signingSecret)``). The other activities in
tests/payloads/mailersend/activities.json are shaped like those examples, with the
``morph`` objects MailerSend sends (``recipient_bounce``, ``click``, ``open``,
``recipient_unsubscribe``, ``spam_complaint``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commhistory.errors import InvalidInputError, PayloadError, SignatureError
from commhistory.facade import CommHistory
from commhistory.model import BounceClass, Channel, Event, EventType, Purpose
from commhistory.providers import MailerSendAdapter, WebhookRequest
from commhistory.providers.mailersend import ACTIVITY_TYPES, mailersend_signature
from commhistory.testing import make_message, signed_webhook
from tests._esp import unknown_is_dead_lettered
from tests._webhook_props import JSON, parse_or_payload_error

ACTIVITIES = json.loads(
    (Path(__file__).parent / "payloads" / "mailersend" / "activities.json").read_text()
)
SECRET = "ms-signing-secret"
NOW = 1775002000.0
ADAPTER = MailerSendAdapter(SECRET, clock=lambda: NOW)


def parse(name: str) -> Event:
    request = signed_webhook("mailersend", ACTIVITIES[name], SECRET).request()
    ADAPTER.verify(request)
    result = ADAPTER.parse(request)
    assert result.errors == []
    [record] = result.records
    assert isinstance(record, Event)
    return record


# --------------------------------------------------------------------------- signature


def test_signature_is_the_documented_hmac_of_the_raw_body() -> None:
    # The documented recipe, computed here independently of the adapter, over a body
    # with MailerSend's escaped slashes (the signature covers the bytes as sent).
    body = json.dumps(ACTIVITIES["sent_fat"]).replace("/", "\\/").encode()
    expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert mailersend_signature(SECRET, body) == expected
    request = WebhookRequest(body=body, headers={"signature": expected})
    ADAPTER.verify(request)
    [event] = ADAPTER.parse(request).records
    assert isinstance(event, Event)
    assert event.provider_message_id == "5fc0d003f718c90162341852"


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "missing header Signature"),
        ({"Signature": "00" * 32}, "signature does not match"),
        ({"Signature": "not hex at all"}, "signature does not match"),
    ],
)
def test_refused_signatures(headers: dict[str, str], message: str) -> None:
    body = json.dumps(ACTIVITIES["delivered"]).encode()
    with pytest.raises(SignatureError, match=message):
        ADAPTER.verify(WebhookRequest(body=body, headers=headers))


def test_changed_body_and_other_secret_are_refused() -> None:
    hook = signed_webhook("mailersend", ACTIVITIES["delivered"], SECRET)
    changed = WebhookRequest(body=hook.body.replace(b"taro", b"jiro"), headers=hook.headers)
    with pytest.raises(SignatureError):
        ADAPTER.verify(changed)
    with pytest.raises(SignatureError):
        MailerSendAdapter("another-secret").verify(hook.request())
    with pytest.raises(InvalidInputError, match="signing_secret"):
        MailerSendAdapter("")


# --------------------------------------------------------------------------- mapping


def test_published_fat_and_flat_sent_examples() -> None:
    fat = parse("sent_fat")
    assert (fat.type, fat.address, fat.provider) == (
        EventType.SENT,
        "test@mailersend.com",
        "mailersend",
    )
    assert fat.provider_message_id == "5fc0d003f718c90162341852"
    assert fat.event_id == "mailersend:5fc0d006b42c3e16e1774882"
    assert fat.occurred_at.isoformat() == "2020-11-27T10:08:06.258000+00:00"
    flat = parse("sent_flat")
    assert (flat.type, flat.address) == (EventType.SENT, "test@mailersend.com")
    assert flat.provider_message_id == "6892766ae78995a317577aa1"
    assert flat.provider_event_id == "6892766a5b66e2daf3dc9155"
    # The flat example has no data.created_at: the webhook's own created_at times it.
    assert flat.occurred_at.isoformat() == "2025-08-05T21:23:54+00:00"
    assert "time_source" not in fat.metadata


def test_an_activity_without_any_time_is_timed_on_receipt_and_marked() -> None:
    untimed = json.loads(json.dumps(ACTIVITIES["sent_flat"]))
    del untimed["created_at"]
    event = parse_record(untimed)
    assert event.occurred_at.timestamp() == NOW
    assert event.metadata["time_source"] == "received"


def test_bounces_deferrals_and_engagement() -> None:
    hard = parse("hard_bounced")
    assert (hard.type, hard.bounce, hard.status_code) == (
        EventType.BOUNCED,
        BounceClass.HARD,
        "5.1.1",
    )
    assert hard.reason == "550 5.1.1 Host or domain name not found"
    soft = parse("soft_bounced")
    assert (soft.type, soft.bounce, soft.address) == (
        EventType.BOUNCED,
        BounceClass.SOFT,
        "full@example.org",
    )
    assert soft.reason == "Mailbox full"
    deferred = parse("deferred")
    assert (deferred.type, deferred.bounce, deferred.status_code) == (
        EventType.DEFERRED,
        None,
        "4.7.0",
    )
    opened = parse("opened")
    assert (opened.type, opened.ip, opened.url) == (EventType.OPENED, "192.0.2.10", None)
    clicked = parse("clicked")
    assert (clicked.type, clicked.url) == (EventType.CLICKED, "https://shop.example/item/1")
    unsubscribed = parse("unsubscribed")
    assert (unsubscribed.type, unsubscribed.reason) == (
        EventType.UNSUBSCRIBED,
        "I get too many emails",
    )
    assert parse("spam_complaint").type is EventType.COMPLAINED


def test_every_documented_activity_is_mapped() -> None:
    documented = {
        "activity.sent", "activity.delivered", "activity.soft_bounced",
        "activity.hard_bounced", "activity.deferred", "activity.opened",
        "activity.opened_unique", "activity.clicked", "activity.clicked_unique",
        "activity.unsubscribed", "activity.spam_complaint",
    }  # fmt: skip
    assert set(ACTIVITY_TYPES) == documented
    # The survey activities are documented but are no delivery outcome: dead letters.
    for name in ("activity.survey_opened", "activity.survey_submitted"):
        survey = dict(ACTIVITIES["delivered"], type=name)
        unknown_is_dead_lettered(ADAPTER, "mailersend", survey, SECRET, name)


def test_unknown_activity_and_non_message_webhooks_are_dead_letters() -> None:
    future = dict(ACTIVITIES["delivered"], type="activity.teleported")
    unknown_is_dead_lettered(ADAPTER, "mailersend", future, SECRET, "activity.teleported")
    repo = CommHistory.in_memory()
    hook = signed_webhook("mailersend", ACTIVITIES["maintenance_start"], SECRET)
    outcome = ADAPTER.handle(hook.request(), repo)
    assert outcome.report.rejected == 1
    [error] = outcome.result.errors
    assert isinstance(error.error, PayloadError)
    assert error.error.field == "type"
    assert "maintenance.start" in error.error.reason


def parse_record(activity: dict[str, object]) -> Event:
    [record] = ADAPTER.parse(signed_webhook("mailersend", activity, SECRET).request()).records
    assert isinstance(record, Event)
    return record


def test_a_retry_is_a_duplicate_and_a_hard_bounce_suppresses() -> None:
    repo = CommHistory.in_memory()
    message = make_message(
        provider="mailersend",
        provider_message_id="660a7a255f010335ed070002",
        address="nobody@example.net",
        purpose=Purpose.TRANSACTIONAL,
    )
    repo.record_messages([message])
    request = signed_webhook("mailersend", ACTIVITIES["hard_bounced"], SECRET).request()
    assert ADAPTER.handle(request, repo).report.inserted == 1
    assert ADAPTER.handle(request, repo).report.duplicates == 1
    [entry] = repo.suppression.entries(Channel.EMAIL, "nobody@example.net")
    assert entry.reason.value == "hard_bounce"


def test_missing_message_id_is_a_dead_letter_naming_the_field() -> None:
    broken = {"type": "activity.opened", "data": {"id": "x", "created_at": "2026-04-01T00:00:00Z"}}
    result = ADAPTER.parse(signed_webhook("mailersend", broken, SECRET).request())
    [error] = result.errors
    assert isinstance(error.error, PayloadError)
    assert error.error.field == "data.message_id"
    fat = json.loads(json.dumps(ACTIVITIES["opened"]))
    del fat["data"]["email"]["message"]
    [error] = ADAPTER.parse(signed_webhook("mailersend", fat, SECRET).request()).errors
    assert isinstance(error.error, PayloadError)
    assert error.error.field == "data.email.message.id"


# --------------------------------------------------------------------------- fuzz


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_bytes(body: bytes) -> None:
    parse_or_payload_error(ADAPTER, body)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(sorted(ACTIVITIES)),
    st.sampled_from(["type", "data", "created_at"]),
    JSON,
)
def test_fuzz_wrong_types_at_the_top(name: str, key: str, value: object) -> None:
    changed = dict(ACTIVITIES[name])
    changed[key] = value
    parse_or_payload_error(ADAPTER, json.dumps(changed).encode())


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(sorted(ACTIVITIES)),
    st.sampled_from(
        ["id", "created_at", "email", "message_id", "recipient", "morph", "meta", "object"]
    ),
    JSON,
)
def test_fuzz_wrong_types_in_data(name: str, key: str, value: object) -> None:
    changed = json.loads(json.dumps(ACTIVITIES[name]))
    if isinstance(changed.get("data"), dict):
        changed["data"][key] = value
    parse_or_payload_error(ADAPTER, json.dumps(changed).encode())
