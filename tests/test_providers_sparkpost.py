"""SparkPost event webhooks: basic auth / OAuth 2.0 bearer, msys batches, bounce classes.

The events are SparkPost's published webhook samples (https://developers.sparkpost.com/api/webhooks/,
"Webhook Event Types": each sample is built from the documented sample values, such as
``event_id`` 92356927693813856 and ``message_id`` 000443ee14578172be22); the ``event_id`` of each
is made distinct so that one batch can hold them all. Bounce classes follow
https://support.sparkpost.com/docs/deliverability/bounce-classification-codes, authentication
the ``auth_type`` of https://developers.sparkpost.com/api/webhooks/#webhooks-post-create-a-webhook.
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
from commhistory.providers import SparkPostAdapter, WebhookRequest, get_provider
from commhistory.providers.sparkpost import BOUNCE_CLASSES
from commhistory.testing import signed_webhook
from tests._esp import only_event, retry_is_duplicate, suppresses, unknown_is_dead_lettered
from tests._webhook_props import JSON, parse_or_payload_error

EVENTS = json.loads((Path(__file__).parent / "payloads" / "sparkpost" / "events.json").read_text())
SECRET = "basicauthuser:mypassword"
ADAPTER = SparkPostAdapter("basicauthuser", "mypassword", clock=lambda: 1775002000.0)


def inner(name: str) -> dict[str, object]:
    [body] = EVENTS[name]["msys"].values()
    return dict(body)


def wrap(name: str, **changes: object) -> list[dict[str, object]]:
    [kind] = EVENTS[name]["msys"]
    return [{"msys": {kind: {**inner(name), **changes}}}]


@pytest.mark.parametrize(
    ("name", "type_", "bounce"),
    [
        ("bounce", EventType.BOUNCED, BounceClass.UNDETERMINED),  # class 1, a bare 554
        ("delivery", EventType.DELIVERED, None),
        ("delay", EventType.DEFERRED, None),
        ("out_of_band", EventType.BOUNCED, BounceClass.HARD),  # class 10
        ("spam_complaint", EventType.COMPLAINED, None),
        ("policy_rejection", EventType.REJECTED, None),
        ("initial_open", EventType.OPENED, None),
        ("click", EventType.CLICKED, None),
        ("list_unsubscribe", EventType.UNSUBSCRIBED, None),
        ("link_unsubscribe", EventType.UNSUBSCRIBED, None),
        ("generation_failure", EventType.FAILED, None),
    ],
)
def test_published_samples(name: str, type_: EventType, bounce: BounceClass | None) -> None:
    event = only_event(ADAPTER, "sparkpost", [EVENTS[name]], SECRET)
    assert (event.type, event.bounce) == (type_, bounce)
    assert event.provider_message_id == "000443ee14578172be22"
    assert event.provider_event_id == inner(name)["event_id"]
    assert event.occurred_at.timestamp() == 1460989507
    assert event.address == "recipient@example.com"
    assert event.metadata["provider_raw"] == inner(name)


def test_fields() -> None:
    bounce = only_event(ADAPTER, "sparkpost", [EVENTS["bounce"]], SECRET)
    assert bounce.reason == "MAIL REFUSED - IP (17.99.99.99) is in black list"  # raw_reason
    assert bounce.ip is None  # a delivery's ip_address is the receiving MTA, not the person
    assert only_event(ADAPTER, "sparkpost", [EVENTS["delay"]], SECRET).status_code == "4.7.1"
    assert only_event(ADAPTER, "sparkpost", [EVENTS["out_of_band"]], SECRET).status_code == "5.1.1"
    click = only_event(ADAPTER, "sparkpost", [EVENTS["click"]], SECRET)
    assert (click.url, click.ip) == ("https://example.com", "127.0.0.1")
    assert click.user_agent is not None
    assert click.reason is None


@pytest.mark.parametrize(("code", "expected"), sorted(BOUNCE_CLASSES.items()))
def test_bounce_classes(code: str, expected: BounceClass) -> None:
    event = only_event(ADAPTER, "sparkpost", wrap("bounce", bounce_class=code), SECRET)
    assert event.bounce is expected


def test_one_batch_holds_every_sample_and_the_webhook_test() -> None:
    batch = [{"msys": {}}, *EVENTS.values()]
    request = signed_webhook("sparkpost", batch, SECRET).request()
    ADAPTER.verify(request)
    result = ADAPTER.parse(request)
    assert result.errors == []
    assert len(result.records) == len(EVENTS)


def test_not_message_events_and_unknown_types_are_dead_letters() -> None:
    relay = [
        {"msys": {"relay_message": {"content": {}}}},
        {"msys": {"relay_event": {"type": "relay_delivery"}}},
    ]
    result = ADAPTER.parse(signed_webhook("sparkpost", relay, SECRET).request())
    assert [line.error.field for line in result.errors] == ["msys", "msys"]  # type: ignore[union-attr]
    unknown_is_dead_lettered(
        ADAPTER, "sparkpost", wrap("delivery", type="sms_status"), SECRET, "sms_status"
    )


def test_times() -> None:
    iso = only_event(
        ADAPTER, "sparkpost", wrap("delivery", timestamp="2016-04-18T14:25:07.000Z"), SECRET
    )
    assert iso.occurred_at.timestamp() == 1460989507
    untimed = only_event(ADAPTER, "sparkpost", wrap("delivery", timestamp=None), SECRET)
    assert untimed.occurred_at.timestamp() == 1775002000.0
    assert untimed.metadata["time_source"] == "received"


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("out_of_band", "hard_bounce"),
        ("list_unsubscribe", "unsubscribe"),
        ("spam_complaint", "complaint"),
    ],
)
def test_suppressions(name: str, reason: str) -> None:
    suppresses(
        ADAPTER,
        "sparkpost",
        [EVENTS[name]],
        SECRET,
        message_id="000443ee14578172be22",
        address="recipient@example.com",
        reason=reason,
    )


def test_retried_batch_is_a_duplicate() -> None:
    retry_is_duplicate(ADAPTER, "sparkpost", list(EVENTS.values()), SECRET)


@pytest.mark.parametrize(
    "header",
    [None, "Bearer guess", "Basic %%%", "Basic " + base64.b64encode(b"basicauthuser:x").decode()],
)
def test_bad_credentials(header: str | None) -> None:
    headers = {} if header is None else {"Authorization": header}
    with pytest.raises(SignatureError):
        ADAPTER.verify(WebhookRequest(body=b"[]", headers=headers))
    assert ADAPTER.auth_failure_status == 401


def test_oauth2_tokens_through_a_validator() -> None:
    issued = {"tok-1"}
    adapter = SparkPostAdapter(token_validator=issued.__contains__)
    adapter.verify(signed_webhook("sparkpost", [], "Bearer tok-1").request())
    with pytest.raises(SignatureError, match="validator refused"):
        adapter.verify(signed_webhook("sparkpost", [], "Bearer tok-2").request())
    with pytest.raises(SignatureError, match="bearer token"):
        adapter.verify(signed_webhook("sparkpost", [], SECRET).request())
    fixed = SparkPostAdapter(token="tok-9")
    fixed.verify(signed_webhook("sparkpost", [], "Bearer tok-9").request())
    with pytest.raises(InvalidInputError):
        SparkPostAdapter()
    with pytest.raises(InvalidInputError):
        SparkPostAdapter(token_validator="yes")  # type: ignore[arg-type]


def test_registry() -> None:
    spec = get_provider("sparkpost")
    spec.from_secret(SECRET).verify(signed_webhook("sparkpost", [], SECRET).request())
    spec.from_secret("Bearer t").verify(signed_webhook("sparkpost", [], "Bearer t").request())
    assert type(spec.from_secret(None)) is SparkPostAdapter


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_bytes(body: bytes) -> None:
    parse_or_payload_error(ADAPTER, body)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(sorted(EVENTS)),
    st.sampled_from([*sorted(inner("click")), "bounce_class", "error_code", "raw_reason", "msys"]),
    JSON,
)
def test_fuzz_wrong_types(name: str, key: str, value: object) -> None:
    batch: list[object] = (
        [{"msys": value}, value] if key == "msys" else [*wrap(name, **{key: value})]
    )
    parse_or_payload_error(ADAPTER, json.dumps(batch).encode())


@settings(max_examples=100, deadline=None)
@given(JSON)
def test_fuzz_json(value: object) -> None:
    parse_or_payload_error(ADAPTER, json.dumps(value).encode())
    parse_or_payload_error(ADAPTER, json.dumps([value, {"msys": value}]).encode())
