"""LINE Messaging API webhooks: signature, follow/unfollow consent, inbound messages."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commhistory.errors import SignatureError
from commhistory.facade import CommHistory
from commhistory.model import (
    Channel,
    ConsentAction,
    ConsentEvent,
    ConsentMethod,
    Direction,
    Message,
)
from commhistory.providers import KeyedContactResolver, LineAdapter, WebhookRequest
from commhistory.providers.line import line_signature
from commhistory.testing import signed_webhook
from tests._webhook_props import JSON, parse_or_payload_error

PAYLOADS = Path(__file__).parent / "payloads" / "line"
SECRET = "8c570fa6dd201bb328f1c1eac23a96d8"
USER = "U4af4980629a0b1c2d3e4f5a6b7c8d9e0"
RESOLVER = KeyedContactResolver(b"line-test-key-0123456789")


def body() -> bytes:
    return (PAYLOADS / "events.json").read_bytes()


def adapter() -> LineAdapter:
    return LineAdapter(SECRET, contact_resolver=RESOLVER)


def test_signature_is_base64_hmac_sha256_of_the_raw_body() -> None:
    # LINE's documented recipe, computed independently of the adapter.
    expected = base64.b64encode(hmac.new(SECRET.encode(), body(), hashlib.sha256).digest())
    assert line_signature(SECRET, body()) == expected.decode()
    adapter().verify(WebhookRequest(body=body(), headers={"x-line-signature": expected.decode()}))


def test_forged_and_missing_signatures() -> None:
    wrong = line_signature("another-secret", body())
    with pytest.raises(SignatureError, match="does not match"):
        adapter().verify(WebhookRequest(body=body(), headers={"X-Line-Signature": wrong}))
    with pytest.raises(SignatureError, match="missing"):
        adapter().verify(WebhookRequest(body=body()))
    good = line_signature(SECRET, body())
    changed = body().replace(b"follow", b"fellow", 1)
    with pytest.raises(SignatureError):
        adapter().verify(WebhookRequest(body=changed, headers={"X-Line-Signature": good}))


def test_mapping() -> None:
    records = adapter().parse(WebhookRequest(body=body())).records
    follow, text, sticker, postback, unfollow = records
    contact = RESOLVER(Channel.LINE, USER)
    assert isinstance(follow, ConsentEvent)
    assert (follow.action, follow.method, follow.channel) == (
        ConsentAction.GRANT,
        ConsentMethod.LINE_BLOCK,
        Channel.LINE,
    )
    assert follow.contact_id == contact
    assert isinstance(unfollow, ConsentEvent)
    assert unfollow.action is ConsentAction.WITHDRAW
    assert isinstance(text, Message)
    assert (text.direction, text.body, text.address) == (
        Direction.INBOUND,
        "予約を変更したいです",
        USER,
    )
    assert text.provider_message_id == "468789577898262530"
    assert text.sent_at.timestamp() == 1775001700
    assert isinstance(sticker, Message)
    assert sticker.body is None
    assert sticker.metadata["provider_raw"]["message"]["type"] == "sticker"
    assert isinstance(postback, Message)
    assert postback.body == "action=confirm&booking=77"


def test_redelivery_is_duplicate() -> None:
    repo = CommHistory.in_memory()
    webhook = signed_webhook("line", json.loads(body()), SECRET)
    first = adapter().handle(webhook.request(), repo)
    assert (first.report.inserted, first.report.rejected) == (5, 0)
    redelivered = json.loads(body())
    for event in redelivered["events"]:
        event["deliveryContext"]["isRedelivery"] = True
    again = adapter().handle(signed_webhook("line", redelivered, SECRET).request(), repo)
    assert (again.report.inserted, again.report.duplicates) == (0, 5)


def test_unfollow_withdraws_consent_in_the_ledger() -> None:
    repo = CommHistory.in_memory()
    adapter().handle(signed_webhook("line", json.loads(body()), SECRET).request(), repo)
    history = repo.consent_history(RESOLVER(Channel.LINE, USER))
    assert [c.action for c in history] == [ConsentAction.GRANT, ConsentAction.WITHDRAW]


def test_bad_user_id_is_dead_lettered() -> None:
    events = json.loads(body())["events"][:1]
    events[0]["source"]["userId"] = "not-a-line-id"
    result = adapter().parse(WebhookRequest(body=json.dumps({"events": events}).encode()))
    [line] = result.lines
    assert line.error is not None
    assert line.error.field == "source.userId"


_FUZZ = LineAdapter(SECRET, contact_resolver=RESOLVER)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_bytes(data: bytes) -> None:
    parse_or_payload_error(_FUZZ, data)


@settings(max_examples=300, deadline=None)
@given(JSON)
def test_fuzz_json(value: object) -> None:
    parse_or_payload_error(_FUZZ, json.dumps({"events": [value]}).encode())


_EVENTS = json.loads((PAYLOADS / "events.json").read_text())["events"]


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(_EVENTS),
    st.sampled_from(["type", "timestamp", "source", "message", "postback", "webhookEventId"]),
    JSON,
)
def test_fuzz_wrong_types(event: dict[str, object], key: str, value: object) -> None:
    changed = dict(event)
    changed[key] = value
    parse_or_payload_error(_FUZZ, json.dumps({"events": [changed]}).encode())


def test_unmapped_event_type_is_a_dead_letter_naming_it() -> None:
    # A video-viewing-complete event, shaped as in
    # https://developers.line.biz/en/reference/messaging-api/#video-viewing-complete
    video = {
        "type": "videoPlayComplete",
        "mode": "active",
        "timestamp": 1775001810000,
        "source": {"type": "user", "userId": USER},
        "webhookEventId": "01HX0000000000000000000006",
        "deliveryContext": {"isRedelivery": False},
        "replyToken": "r6",
        "videoPlayComplete": {"trackingId": "track-1"},
    }
    payload = {"destination": "U" + "0" * 32, "events": [video]}
    repo = CommHistory.in_memory()
    outcome = adapter().handle(signed_webhook("line", payload, SECRET).request(), repo)
    assert (outcome.report.inserted, outcome.report.rejected) == (0, 1)
    [letter] = repo.list_dead_letters(source="webhook:line")
    assert "unknown event type 'videoPlayComplete'" in letter.reason
