"""Postmark webhooks: basic auth, record types and bounce types."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commhistory.errors import SignatureError
from commhistory.facade import CommHistory
from commhistory.model import BounceClass, Event, EventType
from commhistory.providers import WebhookRequest
from commhistory.providers.postmark import PostmarkAdapter
from commhistory.testing import signed_webhook
from tests._webhook_props import JSON, parse_or_payload_error

RECORDS = json.loads(
    (Path(__file__).parent / "payloads" / "postmark" / "records.json").read_text()
)
ADAPTER = PostmarkAdapter("hooks", "correct horse battery staple")
CREDENTIALS = "hooks:correct horse battery staple"


def parse(name: str) -> Event:
    request = signed_webhook("postmark", RECORDS[name], CREDENTIALS).request()
    ADAPTER.verify(request)
    [record] = ADAPTER.parse(request).records
    assert isinstance(record, Event)
    return record


@pytest.mark.parametrize(
    "header",
    [
        None,
        "Bearer abc",
        "Basic %%%",
        "Basic " + base64.b64encode(b"hooks:wrong").decode(),
    ],
)
def test_bad_credentials(header: str | None) -> None:
    headers = {} if header is None else {"Authorization": header}
    with pytest.raises(SignatureError):
        ADAPTER.verify(WebhookRequest(body=b"{}", headers=headers))
    assert ADAPTER.auth_failure_status == 401


def test_mapping() -> None:
    delivery = parse("delivery")
    assert (delivery.type, delivery.address) == (EventType.DELIVERED, "taro@example.com")
    assert delivery.provider_message_id == "883953f4-6105-42a2-a16a-77a8eac79483"
    bounce = parse("bounce")
    assert (bounce.type, bounce.bounce, bounce.status_code) == (
        EventType.BOUNCED,
        BounceClass.HARD,
        "5.1.1",
    )
    assert bounce.provider_event_id == "4323372036854775807"
    assert parse("complaint").type is EventType.COMPLAINED
    opened = parse("open")
    assert (opened.type, opened.ip) == (EventType.OPENED, "192.0.2.10")
    assert parse("click").url == "https://shop.example/item/1"
    assert parse("subscription").type is EventType.UNSUBSCRIBED


def test_content_hash_dedupes_retries() -> None:
    repo = CommHistory.in_memory()
    request = signed_webhook("postmark", RECORDS["open"], CREDENTIALS).request()
    assert ADAPTER.handle(request, repo).report.inserted == 1
    assert ADAPTER.handle(request, repo).report.duplicates == 1


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_bytes(body: bytes) -> None:
    parse_or_payload_error(ADAPTER, body)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(RECORDS)), st.sampled_from(sorted(RECORDS["bounce"])), JSON)
def test_fuzz_wrong_types(name: str, key: str, value: object) -> None:
    changed = dict(RECORDS[name])
    changed[key] = value
    parse_or_payload_error(ADAPTER, json.dumps(changed).encode())


# Issue 14, bugs 2 and 3. Postmark's SubscriptionChange webhook
# (https://postmarkapp.com/developer/webhooks/subscription-change-webhook) publishes this
# record, whose SuppressionReason is one of HardBounce, SpamComplaint, ManualSuppression.
def subscription_change(reason: str) -> dict[str, object]:
    return {
        "RecordType": "SubscriptionChange",
        "MessageID": "00000000-0000-0000-0000-000000000000",
        "ServerID": 23,
        "MessageStream": "outbound",
        "ChangedAt": "2020-02-01T10:53:34.416071Z",
        "Recipient": "bounced-address@wildbit.com",
        "Origin": "Recipient",
        "SuppressSending": True,
        "SuppressionReason": reason,
        "Tag": "my-tag",
        "Metadata": {"example": "value", "example_2": "value"},
    }


def parse_record(record: dict[str, object]) -> Event:
    request = signed_webhook("postmark", record, CREDENTIALS).request()
    [event] = ADAPTER.parse(request).records
    assert isinstance(event, Event)
    return event


@pytest.mark.parametrize(
    ("reason", "expected", "bounce"),
    [
        ("HardBounce", EventType.BOUNCED, BounceClass.HARD),
        ("SpamComplaint", EventType.COMPLAINED, None),
        ("ManualSuppression", EventType.UNSUBSCRIBED, None),
    ],
)
def test_subscription_change_follows_its_suppression_reason(
    reason: str, expected: EventType, bounce: BounceClass | None
) -> None:
    event = parse_record(subscription_change(reason))
    assert (event.type, event.bounce) == (expected, bounce)


def test_subscription_change_hard_bounce_suppresses_the_address_for_every_purpose() -> None:
    from commhistory.model import Channel, Purpose
    from commhistory.testing import make_message

    repo = CommHistory.in_memory()
    message = make_message(
        provider="postmark",
        provider_message_id="00000000-0000-0000-0000-000000000000",
        address="bounced-address@wildbit.com",
        purpose=Purpose.TRANSACTIONAL,
    )
    repo.record_messages([message])
    request = signed_webhook("postmark", subscription_change("HardBounce"), CREDENTIALS)
    ADAPTER.handle(request.request(), repo)
    [entry] = repo.suppression.entries(Channel.EMAIL, "bounced-address@wildbit.com")
    assert entry.purpose is None  # every purpose, not one
    assert entry.reason.value == "hard_bounce"
    assert repo.consent_history(message.contact_id) == []  # no invented unsubscribe


# Postmark's bounce webhook (https://postmarkapp.com/developer/webhooks/bounce-webhook) with
# Type "Unsubscribe" (TypeCode 16, https://postmarkapp.com/developer/api/bounce-api#bounce-types)
# and, as seen in the wild, no BouncedAt.
UNSUBSCRIBE_BOUNCE: dict[str, object] = {
    "ID": 4323372036854775807,
    "Type": "Unsubscribe",
    "RecordType": "Bounce",
    "TypeCode": 16,
    "Tag": "Invitation",
    "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
    "Details": "Unsubscribe request",
    "Email": "john@example.com",
    "From": "sender@example.com",
    "Inactive": True,
    "DumpAvailable": False,
    "CanActivate": True,
    "Subject": "Test subject",
    "ServerID": 1234,
    "MessageStream": "outbound",
    "Name": "Unsubscribe request",
    "Description": "Unsubscribe request",
}


def test_bounce_without_time_is_timed_on_receipt_and_kept() -> None:
    adapter = PostmarkAdapter("hooks", "correct horse battery staple", clock=lambda: 1775002000.0)
    request = signed_webhook("postmark", UNSUBSCRIBE_BOUNCE, CREDENTIALS).request()
    result = adapter.parse(request)
    assert result.errors == []
    [event] = result.records
    assert isinstance(event, Event)
    assert event.type is EventType.UNSUBSCRIBED
    assert event.occurred_at.timestamp() == 1775002000.0
    assert event.metadata["time_source"] == "received"
    assert "time_source" not in parse("bounce").metadata


@pytest.mark.parametrize(
    ("field", "record"),
    [
        # Bounce types that say nothing about delivery (an auto-reply, an
        # address-change notice, a challenge) and a type Postmark may add later.
        ("Type", {**RECORDS["bounce"], "Type": "AutoResponder"}),
        ("Type", {**RECORDS["bounce"], "Type": "ChallengeVerification"}),
        ("Type", {**RECORDS["bounce"], "Type": "Teleported"}),
        ("RecordType", {**RECORDS["delivery"], "RecordType": "Teleported"}),
    ],
)
def test_unmapped_types_are_dead_letters_naming_them(
    field: str, record: dict[str, object]
) -> None:
    repo = CommHistory.in_memory()
    outcome = ADAPTER.handle(signed_webhook("postmark", record, CREDENTIALS).request(), repo)
    assert (outcome.report.inserted, outcome.report.rejected) == (0, 1)
    [letter] = repo.list_dead_letters(source="webhook:postmark")
    assert f"unknown event type {record[field]!r}" in letter.reason
    assert letter.field == field
