"""Mandrill (Mailchimp Transactional) webhooks: X-Mandrill-Signature, the mandrill_events batch.

The events are Mandrill's own webhook test batch (what "Send Test" POSTs, ids
``exampleaaaa...``; the format is described at
https://mandrill.zendesk.com/hc/en-us/articles/205583307-Message-Event-Webhook-Format and
https://mandrill.zendesk.com/hc/en-us/articles/360038740594-Webhook-Format). The signature recipe
is https://mandrill.zendesk.com/hc/en-us/articles/360039232513-How-to-Authenticate-Webhook-Requests;
Mandrill publishes no worked example, so the test below computes one by that recipe by hand.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path
from urllib.parse import quote, urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commhistory.errors import InvalidInputError, PayloadError, SignatureError
from commhistory.model import BounceClass, EventType
from commhistory.providers import MandrillAdapter, WebhookRequest, get_provider
from commhistory.testing import signed_webhook
from tests._esp import only_event, retry_is_duplicate, suppresses, unknown_is_dead_lettered
from tests._webhook_props import JSON, parse_or_payload_error

EVENTS = json.loads((Path(__file__).parent / "payloads" / "mandrill" / "events.json").read_text())
BY_NAME = {event["event"]: event for event in EVENTS}
KEY = "Xj0R8kQ1mNw3v5bLp9cY2g"
URL = "https://hooks.example.jp/webhooks/mandrill?tenant=7"
ADAPTER = MandrillAdapter(KEY, clock=lambda: 1775002000.0)


def form(events: object) -> bytes:
    return urlencode({"mandrill_events": json.dumps(events)}).encode()


def test_signature_by_the_documented_recipe() -> None:
    events = json.dumps([BY_NAME["send"]])
    body = ("mandrill_events=" + quote(events, safe="")).encode()
    # URL + each POST variable's key and value, sorted by key, no delimiter; HMAC-SHA1; base64.
    signed = URL + "mandrill_events" + events
    expected = base64.b64encode(hmac.new(KEY.encode(), signed.encode(), hashlib.sha1).digest())
    request = WebhookRequest(
        body=body, headers={"X-Mandrill-Signature": expected.decode()}, url=URL
    )
    ADAPTER.verify(request)
    for url in (URL.replace("?tenant=7", ""), URL.replace("/mandrill?", "/mandrill/?")):
        with pytest.raises(SignatureError, match="URL differs"):
            ADAPTER.verify(WebhookRequest(body=body, headers=dict(request.headers), url=url))
    with pytest.raises(SignatureError):
        MandrillAdapter("other").verify(request)
    with pytest.raises(SignatureError):
        ADAPTER.verify(WebhookRequest(body=body + b"x", headers=dict(request.headers), url=URL))


def test_configured_url_wins_over_the_request_url() -> None:
    hook = signed_webhook("mandrill", EVENTS, KEY, url=URL)
    behind_proxy = WebhookRequest(body=hook.body, headers=hook.headers, url="http://10.0.0.5/m")
    MandrillAdapter(KEY, url=URL).verify(behind_proxy)
    with pytest.raises(SignatureError):
        ADAPTER.verify(behind_proxy)


@pytest.mark.parametrize("headers", [{}, {"X-Mandrill-Signature": "%%%"}])
def test_missing_or_garbled_signature(headers: dict[str, str]) -> None:
    with pytest.raises(SignatureError):
        ADAPTER.verify(WebhookRequest(body=form([]), headers=headers, url=URL))
    with pytest.raises(SignatureError, match="URL is unknown"):
        ADAPTER.verify(WebhookRequest(body=form([]), headers={"X-Mandrill-Signature": "AAAA"}))


@pytest.mark.parametrize(
    ("name", "type_", "bounce"),
    [
        ("send", EventType.DELIVERED, None),
        ("deferral", EventType.DEFERRED, None),
        ("hard_bounce", EventType.BOUNCED, BounceClass.HARD),
        ("soft_bounce", EventType.BOUNCED, BounceClass.SOFT),
        ("open", EventType.OPENED, None),
        ("click", EventType.CLICKED, None),
        ("spam", EventType.COMPLAINED, None),
        ("unsub", EventType.UNSUBSCRIBED, None),
        ("reject", EventType.REJECTED, None),
    ],
)
def test_the_test_batch(name: str, type_: EventType, bounce: BounceClass | None) -> None:
    source = BY_NAME[name]
    event = only_event(ADAPTER, "mandrill", [source], KEY)
    assert (event.type, event.bounce) == (type_, bounce)
    assert event.provider_message_id == source["msg"]["_id"]
    assert event.occurred_at.timestamp() == 1384954004
    assert event.address == "example.webhook@mandrillapp.com"


def test_fields() -> None:
    bounce = only_event(ADAPTER, "mandrill", [BY_NAME["hard_bounce"]], KEY)
    assert bounce.status_code == "5.1.1"
    assert bounce.reason is not None
    assert bounce.reason.startswith("smtp;550 5.1.1")
    deferral = only_event(ADAPTER, "mandrill", [BY_NAME["deferral"]], KEY)
    assert (deferral.status_code, deferral.reason) == (
        "4.3.5",
        "451 4.3.5 Temporarily unavailable, try again later.",
    )
    click = only_event(ADAPTER, "mandrill", [BY_NAME["click"]], KEY)
    assert (click.url, click.ip, click.machine) == ("http://mandrill.com", "127.0.0.1", False)
    assert click.reason is None


def test_robot_user_agents_are_machine_opens() -> None:
    robot = {**BY_NAME["open"], "user_agent_parsed": {"type": "Robot", "ua_family": "Scanner"}}
    assert only_event(ADAPTER, "mandrill", [robot], KEY).machine


def test_whole_batch_and_its_retry() -> None:
    result = ADAPTER.parse(signed_webhook("mandrill", EVENTS, KEY, url=URL).request())
    assert result.errors == []
    assert len(result.records) == len(EVENTS)
    retry_is_duplicate(ADAPTER, "mandrill", EVENTS, KEY)


def test_sync_inbound_and_unknown_events_are_dead_letters() -> None:
    sync = {"type": "blacklist", "action": "add", "reject": {"reason": "hard-bounce"}, "ts": 1}
    inbound = {"event": "inbound", "msg": {"raw_msg": "..."}, "ts": 1}
    result = ADAPTER.parse(signed_webhook("mandrill", [sync, inbound], KEY).request())
    assert [(e.error.field, e.error.reason) for e in result.errors] == [  # type: ignore[union-attr]
        ("type", "sync events are about no message: not recorded"),
        ("event", "inbound messages are not recorded"),
    ]
    unknown = {**BY_NAME["send"], "event": "delivered_maybe"}
    unknown_is_dead_lettered(ADAPTER, "mandrill", [unknown], KEY, "delivered_maybe")


@pytest.mark.parametrize(
    "body", [b"other=1", b"mandrill_events=1&mandrill_events=2", b"mandrill_events=%7B%7D"]
)
def test_body_shape_errors(body: bytes) -> None:
    with pytest.raises(PayloadError) as caught:
        ADAPTER.parse(WebhookRequest(body=body))
    assert caught.value.field == "mandrill_events"


def test_untimed_event() -> None:
    untimed = {k: v for k, v in BY_NAME["open"].items() if k != "ts"}
    event = only_event(ADAPTER, "mandrill", [untimed], KEY)
    assert event.occurred_at.timestamp() == 1775002000.0
    assert event.metadata["time_source"] == "received"


@pytest.mark.parametrize(
    ("name", "reason"),
    [("hard_bounce", "hard_bounce"), ("unsub", "unsubscribe"), ("spam", "complaint")],
)
def test_suppressions(name: str, reason: str) -> None:
    source = BY_NAME[name]
    suppresses(
        ADAPTER,
        "mandrill",
        [source],
        KEY,
        message_id=source["msg"]["_id"],
        address="example.webhook@mandrillapp.com",
        reason=reason,
    )


def test_construction_and_registry() -> None:
    with pytest.raises(InvalidInputError):
        MandrillAdapter("")
    spec = get_provider("mandrill")
    hook = signed_webhook("mandrill", EVENTS[:1], KEY)
    spec.from_secret(KEY).verify(hook.request())
    assert type(spec.from_secret(None)) is MandrillAdapter


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_bytes(body: bytes) -> None:
    parse_or_payload_error(ADAPTER, body)
    parse_or_payload_error(ADAPTER, b"mandrill_events=" + body)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(sorted(BY_NAME)),
    st.sampled_from(["event", "msg", "ts", "_id", "url", "ip", "user_agent", "user_agent_parsed"]),
    st.sampled_from(["", "_id", "email", "diag", "bounce_description", "smtp_events"]),
    JSON,
)
def test_fuzz_wrong_types(name: str, key: str, msg_key: str, value: object) -> None:
    changed = json.loads(json.dumps(BY_NAME[name]))
    if msg_key:
        changed["msg"][msg_key] = value
    else:
        changed[key] = value
    parse_or_payload_error(ADAPTER, form([changed, value]))


@settings(max_examples=100, deadline=None)
@given(JSON)
def test_fuzz_json(value: object) -> None:
    parse_or_payload_error(ADAPTER, form(value))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60), st.sampled_from(["", "%", "%4", "%zz", "+", "%E3%81", "%e3a%81"]))
def test_fast_form_decoding_matches_the_standard_one(text: str, tail: str) -> None:
    from commhistory.providers.base import decode_form
    from commhistory.providers.mandrill import decode_params

    body = b"mandrill_events=" + quote(text, safe="").encode() + tail.encode()
    assert decode_params(body) == decode_form(body)
