"""Mailgun webhooks: HMAC signature, replay cache, stale timestamps, mapping."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commhistory.errors import SignatureError
from commhistory.facade import CommHistory
from commhistory.model import BounceClass, Event, EventType
from commhistory.providers.mailgun import MailgunAdapter, mailgun_signature
from commhistory.testing import signed_webhook
from tests._webhook_props import JSON, parse_or_payload_error

EVENTS = json.loads((Path(__file__).parent / "payloads" / "mailgun" / "events.json").read_text())
KEY = "key-3ax6xnjp29jd6fds4gc373sgvjxteol0"
NOW = 1775002000.0


def adapter(**options: object) -> MailgunAdapter:
    return MailgunAdapter(KEY, clock=lambda: NOW, **options)  # type: ignore[arg-type]


def test_signature_recipe() -> None:
    import hashlib
    import hmac

    expected = hmac.new(KEY.encode(), b"1775002000" + b"abc", hashlib.sha256).hexdigest()
    assert mailgun_signature(KEY, "1775002000", "abc") == expected


def test_verify_and_replay_refused() -> None:
    a = adapter()
    request = signed_webhook("mailgun", EVENTS[0], KEY, timestamp=NOW).request()
    a.verify(request)
    with pytest.raises(SignatureError, match="replayed"):
        a.verify(request)


def test_forged_and_stale_refused() -> None:
    with pytest.raises(SignatureError, match="does not match"):
        adapter().verify(signed_webhook("mailgun", EVENTS[0], "other", timestamp=NOW).request())
    stale = signed_webhook("mailgun", EVENTS[0], KEY, timestamp=NOW - 301).request()
    with pytest.raises(SignatureError, match="too old"):
        adapter().verify(stale)
    adapter(tolerance=600).verify(stale)


def test_unreadable_signature_block() -> None:
    from commhistory.providers import WebhookRequest

    with pytest.raises(SignatureError, match="signature block"):
        adapter().verify(WebhookRequest(body=b'{"event-data": {}}'))


def test_mapping() -> None:
    records = []
    unmapped: list[str] = []
    for item in EVENTS:
        request = signed_webhook("mailgun", item, KEY, timestamp=NOW).request()
        result = adapter().parse(request)
        records.extend(result.records)
        unmapped.extend(str(e.error) for e in result.errors)
    assert all(isinstance(r, Event) for r in records)
    events = [r for r in records if isinstance(r, Event)]
    assert [e.type for e in events] == [
        EventType.DELIVERED,
        EventType.BOUNCED,
        EventType.DEFERRED,
        EventType.OPENED,
        EventType.CLICKED,
        EventType.COMPLAINED,
        EventType.UNSUBSCRIBED,
    ]
    # The event name the adapter does not map is a dead letter naming it.
    assert len(unmapped) == 1
    assert "unknown event type" in unmapped[0]
    assert {e.provider_message_id for e in events} == {
        "20260401090000.1.ABCDEF@mg.example.jp",
        "20260401090000.2.ABCDEF@mg.example.jp",
        "20260401090000.3.ABCDEF@mg.example.jp",
    }
    bounce = events[1]
    assert (bounce.bounce, bounce.status_code) == (BounceClass.HARD, "5.1.1")
    assert events[2].status_code == "4.2.2"
    assert events[3].user_agent == "Mozilla/5.0"
    assert events[4].url == "https://shop.example/sale"
    assert events[0].provider_event_id == "CPgfbmQMTCKtHW6uIWtuVe"


def test_handle_twice_is_duplicate_even_with_fresh_token() -> None:
    repo = CommHistory.in_memory()
    a = adapter()
    first = a.handle(signed_webhook("mailgun", EVENTS[0], KEY, timestamp=NOW).request(), repo)
    second = a.handle(signed_webhook("mailgun", EVENTS[0], KEY, timestamp=NOW).request(), repo)
    assert (first.report.inserted, second.report.duplicates) == (1, 1)


_FUZZ = MailgunAdapter(KEY)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_bytes(body: bytes) -> None:
    parse_or_payload_error(_FUZZ, body)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(EVENTS), st.sampled_from(sorted(EVENTS[1])), JSON)
def test_fuzz_wrong_types(event: dict[str, object], key: str, value: object) -> None:
    changed = dict(event)
    changed[key] = value
    parse_or_payload_error(_FUZZ, json.dumps({"event-data": changed}).encode())
