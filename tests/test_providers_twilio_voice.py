"""Twilio Voice status callbacks: the call becomes a voice message, each status a call event.

The payloads follow Twilio's documented status callback parameters (CallSid,
CallStatus, Direction, From, To, CallDuration, Timestamp in RFC 2822,
CallbackSource, SequenceNumber):
https://www.twilio.com/docs/voice/api/call-resource#statuscallback and
https://www.twilio.com/docs/usage/webhooks/voice-webhooks#call-status-callbacks
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commhistory.crypto import Keyring
from commhistory.errors import SignatureError
from commhistory.facade import CommHistory, open_repository
from commhistory.model import Channel, Direction, Event, EventType, Message, Purpose
from commhistory.providers import KeyedContactResolver, TwilioAdapter, WebhookRequest
from commhistory.providers.twilio import CALL_STATUS_TYPES
from commhistory.store import MemoryRepository
from commhistory.testing import signed_webhook
from tests._webhook_props import parse_or_payload_error

PAYLOADS = Path(__file__).parent / "payloads" / "twilio"
TOKEN = "0123456789abcdef0123456789abcdef"
URL = "https://hooks.example.jp/twilio/voice-status"
NOW = 1775002000.0  # 2026-04-01T00:06:40Z
RESOLVER = KeyedContactResolver(b"v" * 32)
CUSTOMER = "+819012345678"


def adapter(**options: Any) -> TwilioAdapter:
    options.setdefault("contact_resolver", RESOLVER)
    return TwilioAdapter(TOKEN, clock=lambda: NOW, **options)


def load(name: str, **changes: str | None) -> dict[str, str]:
    params = dict(parse_qsl((PAYLOADS / name).read_text()))
    for key, value in changes.items():
        if value is None:
            params.pop(key, None)
        else:
            params[key] = value
    return params


def parse(params: dict[str, str], **options: Any) -> list[Any]:
    request = signed_webhook("twilio", params, TOKEN, url=URL).request()
    a = adapter(**options)
    a.verify(request)
    result = a.parse(request)
    assert not result.errors, [e.error for e in result.errors]
    return result.records


def test_completed_outbound_call_is_a_voice_message_and_a_completed_event() -> None:
    message, event = parse(load("voice_completed.txt"))
    assert isinstance(message, Message)
    assert isinstance(event, Event)
    assert (message.channel, message.direction) == (Channel.VOICE, Direction.OUTBOUND)
    assert message.purpose is Purpose.SERVICE
    assert message.address == CUSTOMER  # the callee (To), not the business's number
    assert message.contact_id == RESOLVER(Channel.VOICE, CUSTOMER)
    assert message.message_id == "twilio:CA0123456789abcdef0123456789abcdef"
    assert message.provider_message_id == "CA0123456789abcdef0123456789abcdef"
    assert message.metadata == {"call_direction": "outbound-api"}
    assert event.type is EventType.COMPLETED
    assert event.provider_message_id == message.provider_message_id
    assert event.occurred_at.isoformat() == "2026-04-01T00:10:00+00:00"  # Timestamp
    assert event.metadata["duration_seconds"] == 42
    assert event.metadata["provider_raw"]["SequenceNumber"] == "3"


def test_inbound_call_customer_is_the_caller() -> None:
    message, event = parse(load("voice_inbound_ringing.txt"))
    assert message.direction is Direction.INBOUND
    assert message.address == "+819087654321"  # From
    assert message.contact_id == RESOLVER(Channel.VOICE, "+819087654321")
    assert event.type is EventType.RINGING
    assert "duration_seconds" not in event.metadata
    # No Timestamp: timed when received.
    assert event.occurred_at.isoformat() == "2026-04-01T00:06:40+00:00"


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("queued", EventType.QUEUED),
        ("initiated", EventType.QUEUED),
        ("ringing", EventType.RINGING),
        ("in-progress", EventType.ANSWERED),
        ("completed", EventType.COMPLETED),
        ("busy", EventType.BUSY),
        ("no-answer", EventType.NO_ANSWER),
        ("failed", EventType.FAILED),
        ("canceled", EventType.REJECTED),
        ("Busy", EventType.BUSY),
    ],
)
def test_call_status_mapping(status: str, expected: EventType) -> None:
    _, event = parse(load("voice_completed.txt", CallStatus=status))
    assert event.type is expected
    assert set(CALL_STATUS_TYPES.values()) >= {
        EventType.RINGING,
        EventType.ANSWERED,
        EventType.COMPLETED,
        EventType.NO_ANSWER,
        EventType.BUSY,
        EventType.FAILED,
    }


@pytest.mark.parametrize("direction", ["outbound-api", "outbound-dial"])
def test_outbound_directions(direction: str) -> None:
    message, _ = parse(load("voice_completed.txt", Direction=direction))
    assert message.direction is Direction.OUTBOUND
    assert message.metadata["call_direction"] == direction


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"Direction": None}, "Direction"),
        ({"Direction": "sideways"}, "Direction"),
        ({"CallStatus": None}, "CallStatus"),
        ({"To": "client:alice"}, "To"),  # a Twilio Client leg has no phone number
        ({"To": None}, "To"),
        ({"CallDuration": "forty"}, "CallDuration"),
        ({"CallDuration": "-3"}, "CallDuration"),
    ],
)
def test_malformed_callbacks_are_typed_errors(changes: dict[str, str | None], field: str) -> None:
    request = signed_webhook(
        "twilio", load("voice_completed.txt", **changes), TOKEN, url=URL
    ).request()
    result = adapter().parse(request)
    [error] = result.errors
    assert error.error is not None
    assert error.error.field == field
    assert CUSTOMER not in str(error.error)


def test_a_caller_and_texter_on_one_number_is_one_keyed_contact() -> None:
    message, _ = parse(load("voice_completed.txt"))
    assert message.contact_id == RESOLVER(Channel.SMS, CUSTOMER)
    assert RESOLVER(Channel.WHATSAPP, CUSTOMER) != message.contact_id  # WhatsApp keeps its own


def test_without_resolver_a_call_is_a_dead_letter_line() -> None:
    request = signed_webhook("twilio", load("voice_completed.txt"), TOKEN, url=URL).request()
    [error] = TwilioAdapter(TOKEN, clock=lambda: NOW).parse(request).errors
    assert error.error is not None
    assert error.error.field == "contact_id"


def test_signature_covers_voice_callbacks() -> None:
    signed = signed_webhook("twilio", load("voice_completed.txt"), TOKEN, url=URL)
    tampered = signed.body.replace(b"CallDuration=42", b"CallDuration=43")
    with pytest.raises(SignatureError):
        adapter().verify(WebhookRequest(body=tampered, headers=signed.headers, url=URL))


@pytest.fixture(
    params=["memory", "sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def repo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CommHistory[Any]]:
    if request.param == "memory":
        with CommHistory(MemoryRepository()) as mem:
            yield mem
        return
    url = (
        f"sqlite:///{tmp_path / 'v.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    with open_repository(url, Keyring.generate()) as sql:
        yield sql


def test_a_call_lifecycle_is_one_message_with_its_events(repo: CommHistory[Any]) -> None:
    a = adapter()
    statuses = [
        ("initiated", "Wed, 01 Apr 2026 00:09:00 +0000"),
        ("ringing", "Wed, 01 Apr 2026 00:09:02 +0000"),
        ("in-progress", "Wed, 01 Apr 2026 00:09:18 +0000"),
        ("completed", "Wed, 01 Apr 2026 00:10:00 +0000"),
    ]
    inserted = 0
    for status, when in statuses:
        params = load("voice_completed.txt", CallStatus=status, Timestamp=when)
        outcome = a.handle(signed_webhook("twilio", params, TOKEN, url=URL).request(), repo)
        inserted += outcome.report.inserted
    assert inserted == 1 + len(statuses)  # the message once, each status once
    # Twilio retries a callback: nothing new.
    retry = signed_webhook("twilio", load("voice_completed.txt"), TOKEN, url=URL).request()
    assert a.handle(retry, repo).report.inserted == 0

    [entry] = repo.timeline(RESOLVER(Channel.VOICE, CUSTOMER))
    assert entry.message.channel is Channel.VOICE
    assert entry.message.sent_at.isoformat() == "2026-04-01T00:09:00+00:00"  # the first
    assert [e.type for e in entry.events] == [
        EventType.QUEUED,
        EventType.RINGING,
        EventType.ANSWERED,
        EventType.COMPLETED,
    ]
    assert entry.events[-1].metadata["duration_seconds"] == 42


def test_kpis_count_calls_as_sent_and_ignore_call_events(repo: CommHistory[Any]) -> None:
    a = adapter()
    calls = {
        "CA00000000000000000000000000000001": ("completed", "+819011111111"),
        "CA00000000000000000000000000000002": ("busy", "+819022222222"),
        "CA00000000000000000000000000000003": ("no-answer", "+819033333333"),
        "CA00000000000000000000000000000004": ("failed", "+819044444444"),
    }
    for sid, (status, to) in calls.items():
        params = load("voice_completed.txt", CallSid=sid, CallStatus=status, To=to)
        a.handle(signed_webhook("twilio", params, TOKEN, url=URL).request(), repo)
    row = repo.kpis(by="channel").row(channel="voice")
    assert row.sent == 4
    assert row.failed == 1  # the FAILED call; busy and no-answer are not failures to send
    assert row.delivered == 3
    assert row.bounced == 0
    assert row.unique_opens == 0


@settings(max_examples=150, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            ["CallStatus", "Direction", "From", "To", "CallDuration", "Timestamp", "ErrorCode"]
        ),
        st.text(st.characters(codec="utf-8"), max_size=30),
        max_size=7,
    )
)
def test_fuzzed_voice_callbacks_give_records_or_typed_errors(params: dict[str, str]) -> None:
    body = urlencode({"CallSid": "CA1", **params}).encode("ascii")
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    parse_or_payload_error(adapter(), body, headers=form)
