"""Brevo transactional webhooks: basic auth or bearer token, the event table, batches.

Payloads follow Brevo's transactional webhook reference,
https://developers.brevo.com/docs/transactional-webhooks (the ``request`` event is the page's
own example, with its ``xxxxx`` placeholders filled in); credentials follow
https://developers.brevo.com/docs/secured-webhooks.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commhistory.errors import InvalidInputError, SignatureError
from commhistory.model import BounceClass, EventType
from commhistory.providers import BrevoAdapter, WebhookRequest, get_provider
from commhistory.providers.brevo import EVENT_TYPES
from commhistory.testing import signed_webhook
from tests._esp import only_event, retry_is_duplicate, suppresses, unknown_is_dead_lettered
from tests._webhook_props import JSON, parse_or_payload_error

EVENTS = json.loads((Path(__file__).parent / "payloads" / "brevo" / "events.json").read_text())
SECRET = "hooks:correct horse battery staple"
ADAPTER = BrevoAdapter("hooks", "correct horse battery staple", clock=lambda: 1775002000.0)


def test_the_published_request_example() -> None:
    event = only_event(ADAPTER, "brevo", EVENTS["request"], SECRET)
    assert event.type is EventType.SENT
    assert event.provider_message_id == "201798300811.5787683@relay.domain.com"
    assert event.address == "example@domain.com"
    assert event.occurred_at.timestamp() == 1604933654  # ts_event, not the CET "date"
    assert event.metadata["provider_raw"] == EVENTS["request"]


@pytest.mark.parametrize(
    ("name", "type_", "bounce", "status"),
    [
        ("delivered", EventType.DELIVERED, None, None),
        ("hard_bounce", EventType.BOUNCED, BounceClass.HARD, "5.1.1"),
        ("soft_bounce", EventType.BOUNCED, BounceClass.SOFT, "4.2.2"),
        ("spam", EventType.COMPLAINED, None, None),
        ("unique_proxy_open", EventType.OPENED, None, None),
        ("click", EventType.CLICKED, None, None),
        ("unsubscribed", EventType.UNSUBSCRIBED, None, None),
    ],
)
def test_event_table(
    name: str, type_: EventType, bounce: BounceClass | None, status: str | None
) -> None:
    event = only_event(ADAPTER, "brevo", EVENTS[name], SECRET)
    assert (event.type, event.bounce, event.status_code) == (type_, bounce, status)
    # Angle brackets are dropped so that events link to the id the send API returned.
    assert not event.provider_message_id.startswith("<")  # type: ignore[union-attr]


def test_bounce_keeps_the_servers_reason() -> None:
    event = only_event(ADAPTER, "brevo", EVENTS["hard_bounce"], SECRET)
    assert event.reason == EVENTS["hard_bounce"]["reason"]


def test_proxy_opens_are_machine_opens_and_others_are_not() -> None:
    proxy = only_event(ADAPTER, "brevo", EVENTS["unique_proxy_open"], SECRET)
    assert proxy.machine
    assert proxy.user_agent == "Mozilla/5.0"
    person = only_event(
        ADAPTER, "brevo", {**EVENTS["unique_proxy_open"], "event": "opened"}, SECRET
    )
    assert (person.type, person.machine) == (EventType.OPENED, False)


def test_click_url_is_the_link() -> None:
    event = only_event(ADAPTER, "brevo", EVENTS["click"], SECRET)
    assert event.url == "https://shop.example/item/1?t=abc"
    assert "shop.example" not in repr(event)


@pytest.mark.parametrize(
    ("name", "type_"),
    [
        ("blocked", EventType.REJECTED),
        ("invalid_email", EventType.REJECTED),
        ("deferred", EventType.DEFERRED),
        ("error", EventType.FAILED),
        ("opened", EventType.OPENED),
        ("unique_opened", EventType.OPENED),
        ("proxy_open", EventType.OPENED),
        ("hardBounce", EventType.BOUNCED),  # the settings' camel-case spelling
    ],
)
def test_every_documented_name_maps(name: str, type_: EventType) -> None:
    event = only_event(ADAPTER, "brevo", {**EVENTS["delivered"], "event": name}, SECRET)
    assert event.type is type_
    assert event.machine is (name == "proxy_open")


def test_every_table_entry_parses() -> None:
    for name in EVENT_TYPES:
        only_event(ADAPTER, "brevo", {**EVENTS["delivered"], "event": name}, SECRET)


def test_unknown_event_is_a_dead_letter() -> None:
    payload = {**EVENTS["delivered"], "event": "list_addition"}
    unknown_is_dead_lettered(ADAPTER, "brevo", payload, SECRET, "list_addition")


def test_batched_webhook_gives_one_record_per_event() -> None:
    batch = [EVENTS["request"], EVENTS["delivered"], {"event": "click"}]
    result = ADAPTER.parse(signed_webhook("brevo", batch, SECRET).request())
    assert [r.type for r in result.records] == [EventType.SENT, EventType.DELIVERED]  # type: ignore[union-attr]
    [error] = result.errors
    assert (error.line, error.error.field) == (3, "message-id")  # type: ignore[union-attr]


def test_times() -> None:
    millis = {k: v for k, v in EVENTS["delivered"].items() if k != "ts_event"}
    assert only_event(ADAPTER, "brevo", millis, SECRET).occurred_at.timestamp() == 1604933656.123
    untimed = {k: v for k, v in millis.items() if not k.startswith("ts")}
    event = only_event(ADAPTER, "brevo", untimed, SECRET)
    assert event.occurred_at.timestamp() == 1775002000.0
    assert event.metadata["time_source"] == "received"
    assert "time_source" not in only_event(ADAPTER, "brevo", EVENTS["delivered"], SECRET).metadata


def test_hard_bounce_and_unsubscribe_and_spam_suppress() -> None:
    for name, reason in (
        ("hard_bounce", "hard_bounce"),
        ("unsubscribed", "unsubscribe"),
        ("spam", "complaint"),
    ):
        event = EVENTS[name]
        suppresses(
            ADAPTER,
            "brevo",
            event,
            SECRET,
            message_id=event["message-id"].strip("<>"),
            address=event["email"],
            reason=reason,
        )


def test_retry_is_a_duplicate() -> None:
    retry_is_duplicate(ADAPTER, "brevo", EVENTS["click"], SECRET)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "Bearer guess",
        "Basic %%%",
        "Basic " + base64.b64encode(b"hooks:wrong").decode(),
        "Digest abc",
    ],
)
def test_bad_credentials(header: str | None) -> None:
    headers = {} if header is None else {"Authorization": header}
    with pytest.raises(SignatureError):
        ADAPTER.verify(WebhookRequest(body=b"{}", headers=headers))
    assert ADAPTER.auth_failure_status == 401


def test_bearer_token() -> None:
    adapter = BrevoAdapter(token="s3cr3t-token")
    good = signed_webhook("brevo", EVENTS["request"], "Bearer s3cr3t-token").request()
    adapter.verify(good)
    with pytest.raises(SignatureError, match="wrong bearer token"):
        adapter.verify(signed_webhook("brevo", EVENTS["request"], "Bearer other").request())
    with pytest.raises(SignatureError, match="expected the Bearer scheme"):
        adapter.verify(signed_webhook("brevo", EVENTS["request"], SECRET).request())


def test_needs_a_password_or_a_token() -> None:
    with pytest.raises(InvalidInputError):
        BrevoAdapter("hooks")
    with pytest.raises(InvalidInputError):
        BrevoAdapter(token=3)  # type: ignore[arg-type]


def test_registry_secret_forms() -> None:
    spec = get_provider("brevo")
    basic = spec.from_secret(SECRET)
    basic.verify(signed_webhook("brevo", EVENTS["request"], SECRET).request())
    token = spec.from_secret("Bearer t0k")
    token.verify(signed_webhook("brevo", EVENTS["request"], "Bearer t0k").request())
    assert type(spec.from_secret(None)) is BrevoAdapter


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_bytes(body: bytes) -> None:
    parse_or_payload_error(ADAPTER, body)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(EVENTS)), st.sampled_from(sorted(EVENTS["hard_bounce"])), JSON)
def test_fuzz_wrong_types(name: str, key: str, value: object) -> None:
    changed = dict(EVENTS[name])
    changed[key] = value
    parse_or_payload_error(ADAPTER, json.dumps(changed).encode())
    parse_or_payload_error(ADAPTER, json.dumps([changed, value]).encode())


@settings(max_examples=100, deadline=None)
@given(JSON)
def test_fuzz_json(value: object) -> None:
    parse_or_payload_error(ADAPTER, json.dumps(value).encode())
