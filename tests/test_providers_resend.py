"""Resend webhooks: Svix signatures (Svix's published test vector), the event table.

The events are Resend's published samples (https://resend.com/docs/dashboard/webhooks/event-types,
including its ``email.delivered_delayed`` spelling, and the ``bounce`` and ``click`` objects of
https://resend.com/docs/webhooks/emails/bounced and .../clicked). The signature vector is the one
Svix publishes (https://docs.svix.com/receiving/verifying-payloads/how, secret
``whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw``), which Resend's verification page points to
(https://resend.com/docs/webhooks/verify-webhooks-requests).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commhistory.errors import InvalidInputError, PayloadError, SignatureError
from commhistory.facade import CommHistory
from commhistory.model import BounceClass, EventType
from commhistory.providers import InMemoryReplayStore, ResendAdapter, WebhookRequest, get_provider
from commhistory.testing import signed_webhook
from tests._esp import only_event, suppresses, unknown_is_dead_lettered
from tests._webhook_props import JSON, parse_or_payload_error

EVENTS = json.loads((Path(__file__).parent / "payloads" / "resend" / "events.json").read_text())
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
NOW = 1775002000.0
SVIX = {
    "svix-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
    "svix-timestamp": "1614265330",
    "svix-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
}
SVIX_BODY = b'{"test": 2432232314}'


def adapter(now: float = NOW) -> ResendAdapter:
    return ResendAdapter(SECRET, clock=lambda: now)


def test_svix_published_vector() -> None:
    adapter(1614265330.0).verify(WebhookRequest(body=SVIX_BODY, headers=SVIX))


def test_white_labelled_headers_and_rotation() -> None:
    headers = {k.replace("svix-", "webhook-"): v for k, v in SVIX.items()}
    headers["webhook-signature"] = "v1,AAAA v2,zzz " + SVIX["svix-signature"]
    adapter(1614265330.0).verify(WebhookRequest(body=SVIX_BODY, headers=headers))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"svix-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE"}, "no v1 signature"),
        ({"svix-signature": "v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="}, "no v1 signature"),
        ({"svix-id": "msg_other"}, "no v1 signature"),
        ({"svix-timestamp": "1614265331"}, "no v1 signature"),
        ({"svix-signature": ""}, "missing header svix-signature"),
    ],
)
def test_forgeries(change: dict[str, str], message: str) -> None:
    with pytest.raises(SignatureError, match=message):
        adapter(1614265330.0).verify(WebhookRequest(body=SVIX_BODY, headers={**SVIX, **change}))
    with pytest.raises(SignatureError, match="no v1 signature"):
        adapter(1614265330.0).verify(WebhookRequest(body=SVIX_BODY + b" ", headers=SVIX))


def test_stale_and_replayed() -> None:
    with pytest.raises(SignatureError, match="too old"):
        adapter().verify(WebhookRequest(body=SVIX_BODY, headers=SVIX))
    store = InMemoryReplayStore()
    first = ResendAdapter(SECRET, clock=lambda: 1614265330.0, replay_store=store)
    first.verify(WebhookRequest(body=SVIX_BODY, headers=SVIX))
    other_worker = ResendAdapter(SECRET, clock=lambda: 1614265330.0, replay_store=store)
    with pytest.raises(SignatureError, match="replay"):
        other_worker.verify(WebhookRequest(body=SVIX_BODY, headers=SVIX))


def test_a_svix_retry_is_accepted_and_stored_once() -> None:
    repo = CommHistory.in_memory()
    hook = adapter(NOW)
    first = signed_webhook("resend", EVENTS["delivered"], SECRET, timestamp=NOW)
    retry = signed_webhook("resend", EVENTS["delivered"], SECRET, timestamp=NOW + 60)
    assert hook.handle(first.request(), repo).report.inserted == 1
    assert hook.handle(retry.request(), repo).report.duplicates == 1


@pytest.mark.parametrize(
    ("name", "type_", "bounce"),
    [
        ("sent", EventType.QUEUED, None),
        ("delivered", EventType.DELIVERED, None),
        ("delivered_delayed", EventType.DEFERRED, None),
        ("complained", EventType.COMPLAINED, None),
        ("bounced", EventType.BOUNCED, BounceClass.HARD),
        ("opened", EventType.OPENED, None),
        ("clicked", EventType.CLICKED, None),
    ],
)
def test_published_samples(name: str, type_: EventType, bounce: BounceClass | None) -> None:
    event = only_event(adapter(), "resend", EVENTS[name], SECRET)
    assert (event.type, event.bounce) == (type_, bounce)
    assert event.provider_message_id == "56761188-7520-42d8-8898-ff6fc54ce618"
    assert event.address == "delivered@resend.dev"
    assert event.occurred_at == event.occurred_at.fromisoformat(EVENTS[name]["created_at"])


def test_fields() -> None:
    click = only_event(adapter(), "resend", EVENTS["clicked"], SECRET)
    assert (click.url, click.ip) == ("https://resend.com", "122.115.53.11")
    assert click.user_agent is not None
    bounced = only_event(adapter(), "resend", EVENTS["bounced"], SECRET)
    assert bounced.reason is not None
    assert bounced.reason.startswith("The recipient's email address is on the suppression list")


@pytest.mark.parametrize(
    ("bounce", "expected"),
    [
        ({"type": "Transient", "subType": "MailboxFull"}, BounceClass.SOFT),
        ({"type": "Transient", "subType": "ContentRejected"}, BounceClass.BLOCK),
        ({"type": "Permanent", "subType": "Whatever"}, BounceClass.HARD),
        ({"type": "Undetermined", "message": "550 5.1.1 user unknown"}, BounceClass.HARD),
    ],
)
def test_bounce_classes(bounce: dict[str, str], expected: BounceClass) -> None:
    sample = json.loads(json.dumps(EVENTS["bounced"]))
    sample["data"]["bounce"] = bounce
    assert only_event(adapter(), "resend", sample, SECRET).bounce is expected


def test_failed_and_suppressed_and_multiple_recipients() -> None:
    data = {**EVENTS["sent"]["data"], "failed": {"reason": "reached_daily_quota"}}
    failed = {"type": "email.failed", "created_at": "2024-11-22T23:41:12.126Z", "data": data}
    event = only_event(adapter(), "resend", failed, SECRET)
    assert (event.type, event.reason) == (EventType.FAILED, "reached_daily_quota")
    suppressed = {**failed, "type": "email.suppressed"}
    assert only_event(adapter(), "resend", suppressed, SECRET).type is EventType.REJECTED
    several = json.loads(json.dumps(EVENTS["delivered"]))
    several["data"]["to"] = ["a@example.com", "b@example.com"]
    assert only_event(adapter(), "resend", several, SECRET).address is None


def test_not_message_events_and_unknown_types() -> None:
    for name in ("contact.created", "domain.updated", "email.received"):
        result = adapter().parse(
            signed_webhook("resend", {"type": name, "data": {}}, SECRET).request()
        )
        [line] = result.errors
        assert isinstance(line.error, PayloadError)
        assert line.error.reason == "not an event of a sent email: not recorded"
    unknown = {**EVENTS["sent"], "type": "email.teleported"}
    unknown_is_dead_lettered(adapter(), "resend", unknown, SECRET, "email.teleported")


def test_untimed_events_use_the_open_time_or_receipt() -> None:
    sample = json.loads(json.dumps(EVENTS["clicked"]))
    del sample["created_at"]
    assert (
        only_event(adapter(), "resend", sample, SECRET)
        .occurred_at.isoformat()
        .startswith("2024-11-24T05:00:57")
    )
    del sample["data"]["click"]["timestamp"]
    event = only_event(adapter(), "resend", sample, SECRET)
    assert (event.occurred_at.timestamp(), event.metadata["time_source"]) == (NOW, "received")


@pytest.mark.parametrize(
    ("name", "reason"), [("bounced", "hard_bounce"), ("complained", "complaint")]
)
def test_suppressions(name: str, reason: str) -> None:
    suppresses(
        adapter(),
        "resend",
        EVENTS[name],
        SECRET,
        message_id="56761188-7520-42d8-8898-ff6fc54ce618",
        address="delivered@resend.dev",
        reason=reason,
    )


def test_construction_and_registry() -> None:
    for bad in ("whsec_%%%", "whsec_", 3):
        with pytest.raises(InvalidInputError):
            ResendAdapter(bad)  # type: ignore[arg-type]
    spec = get_provider("resend")
    spec.from_secret(SECRET, clock=lambda: NOW).verify(
        signed_webhook("resend", EVENTS["sent"], SECRET, timestamp=NOW).request()
    )
    assert type(spec.from_secret(None)) is ResendAdapter


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_bytes(body: bytes) -> None:
    parse_or_payload_error(adapter(), body)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(sorted(EVENTS)),
    st.sampled_from(["type", "created_at", "data", "email_id", "to", "bounce", "click"]),
    JSON,
)
def test_fuzz_wrong_types(name: str, key: str, value: object) -> None:
    changed = json.loads(json.dumps(EVENTS[name]))
    if key in ("type", "created_at", "data"):
        changed[key] = value
    else:
        changed["data"][key] = value
    parse_or_payload_error(adapter(), json.dumps(changed).encode())


@settings(max_examples=100, deadline=None)
@given(JSON)
def test_fuzz_json(value: object) -> None:
    parse_or_payload_error(adapter(), json.dumps(value).encode())
