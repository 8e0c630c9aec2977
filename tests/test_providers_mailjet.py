"""Mailjet Event API: basic auth, the event table, grouped events.

Every payload is one of Mailjet's published samples, from the Event API guide
(https://dev.mailjet.com/email/guides/webhooks/, source
https://github.com/mailjet/api-documentation/blob/master/guides/_event-api.md), copied
unchanged into tests/payloads/mailjet/events.json.
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
from commhistory.providers import MailjetAdapter, WebhookRequest, get_provider
from commhistory.testing import signed_webhook
from tests._esp import only_event, retry_is_duplicate, suppresses, unknown_is_dead_lettered
from tests._webhook_props import JSON, parse_or_payload_error

EVENTS = json.loads((Path(__file__).parent / "payloads" / "mailjet" / "events.json").read_text())
SECRET = "mj:s3cret"
ADAPTER = MailjetAdapter("mj", "s3cret", clock=lambda: 1775002000.0)


@pytest.mark.parametrize(
    ("name", "type_", "bounce"),
    [
        ("sent", EventType.DELIVERED, None),
        ("open", EventType.OPENED, None),
        ("click", EventType.CLICKED, None),
        ("bounce", EventType.BOUNCED, BounceClass.HARD),
        ("blocked", EventType.REJECTED, None),
        ("spam", EventType.COMPLAINED, None),
        ("unsub", EventType.UNSUBSCRIBED, None),
    ],
)
def test_published_samples(name: str, type_: EventType, bounce: BounceClass | None) -> None:
    event = only_event(ADAPTER, "mailjet", EVENTS[name], SECRET)
    assert (event.type, event.bounce) == (type_, bounce)
    assert event.provider_message_id == str(EVENTS[name]["MessageID"])
    assert event.occurred_at.timestamp() == EVENTS[name]["time"]
    assert event.address == EVENTS[name]["email"]
    assert event.metadata["provider_raw"] == EVENTS[name]


def test_fields() -> None:
    opened = only_event(ADAPTER, "mailjet", EVENTS["open"], SECRET)
    assert (opened.ip, opened.user_agent) == ("127.0.0.1", EVENTS["open"]["agent"])
    assert only_event(ADAPTER, "mailjet", EVENTS["click"], SECRET).url == "https://mailjet.com"
    bounce = only_event(ADAPTER, "mailjet", EVENTS["bounce"], SECRET)
    assert bounce.reason == "recipient: user unknown"
    assert only_event(ADAPTER, "mailjet", EVENTS["spam"], SECRET).reason == "JMRPP"


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"hard_bounce": False}, BounceClass.SOFT),
        ({"hard_bounce": False, "error_related_to": "spam", "error": "content blocked"},
         BounceClass.BLOCK),
        ({"hard_bounce": True, "error_related_to": "spam"}, BounceClass.HARD),
    ],
)  # fmt: skip
def test_bounce_classes(changes: dict[str, object], expected: BounceClass) -> None:
    event = only_event(ADAPTER, "mailjet", {**EVENTS["bounce"], **changes}, SECRET)
    assert event.bounce is expected


def test_bounce_status_from_the_smtp_reply() -> None:
    reply = {"smtp_reply": "550 5.1.1 <bounce@mailjet.com>: Recipient address rejected"}
    event = only_event(ADAPTER, "mailjet", {**EVENTS["bounce"], **reply}, SECRET)
    assert event.status_code == "5.1.1"


def test_grouped_events_and_the_deprecated_message_id() -> None:
    result = ADAPTER.parse(signed_webhook("mailjet", EVENTS["grouped"], SECRET).request())
    assert result.errors == []
    assert [r.provider_message_id for r in result.records] == [  # type: ignore[union-attr]
        "18858825588804172",
        "18858825588803684",
    ]


def test_missing_message_id_and_time() -> None:
    no_id = {k: v for k, v in EVENTS["open"].items() if k != "MessageID"}
    [error] = ADAPTER.parse(signed_webhook("mailjet", no_id, SECRET).request()).errors
    assert error.error.field == "MessageID"  # type: ignore[union-attr]
    untimed = {k: v for k, v in EVENTS["open"].items() if k != "time"}
    event = only_event(ADAPTER, "mailjet", untimed, SECRET)
    assert event.occurred_at.timestamp() == 1775002000.0
    assert event.metadata["time_source"] == "received"


def test_unknown_event_is_a_dead_letter() -> None:
    payload = {**EVENTS["open"], "event": "forward"}
    unknown_is_dead_lettered(ADAPTER, "mailjet", payload, SECRET, "forward")


@pytest.mark.parametrize(
    ("name", "reason"),
    [("bounce", "hard_bounce"), ("unsub", "unsubscribe"), ("spam", "complaint")],
)
def test_suppressions(name: str, reason: str) -> None:
    event = EVENTS[name]
    suppresses(
        ADAPTER,
        "mailjet",
        event,
        SECRET,
        message_id=str(event["MessageID"]),
        address=event["email"],
        reason=reason,
    )


def test_retry_is_a_duplicate() -> None:
    retry_is_duplicate(ADAPTER, "mailjet", EVENTS["grouped"], SECRET)


@pytest.mark.parametrize(
    "header",
    [None, "Bearer s3cret", "Basic %%%", "Basic " + base64.b64encode(b"mj:guess").decode()],
)
def test_bad_credentials(header: str | None) -> None:
    headers = {} if header is None else {"Authorization": header}
    with pytest.raises(SignatureError):
        ADAPTER.verify(WebhookRequest(body=b"{}", headers=headers))
    assert ADAPTER.auth_failure_status == 401


def test_construction_and_registry() -> None:
    with pytest.raises(InvalidInputError):
        MailjetAdapter("mj", "")
    spec = get_provider("mailjet")
    spec.from_secret(SECRET).verify(signed_webhook("mailjet", EVENTS["open"], SECRET).request())
    assert type(spec.from_secret(None)) is MailjetAdapter


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_bytes(body: bytes) -> None:
    parse_or_payload_error(ADAPTER, body)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(sorted(k for k in EVENTS if k != "grouped")),
    st.sampled_from([*sorted(EVENTS["bounce"]), "url", "agent", "ip", "smtp_reply"]),
    JSON,
)
def test_fuzz_wrong_types(name: str, key: str, value: object) -> None:
    changed = dict(EVENTS[name])
    changed[key] = value
    parse_or_payload_error(ADAPTER, json.dumps(changed).encode())
    parse_or_payload_error(ADAPTER, json.dumps([changed, value]).encode())


@settings(max_examples=100, deadline=None)
@given(JSON)
def test_fuzz_json(value: object) -> None:
    parse_or_payload_error(ADAPTER, json.dumps(value).encode())
