"""Amazon SNS raw message delivery: refused by default (no signature), parsed when allowed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commhistory.errors import PayloadError, SignatureError
from commhistory.facade import CommHistory
from commhistory.model import Event, EventType
from commhistory.providers import WebhookRequest
from commhistory.providers.ses import RAW_DELIVERY_HEADER, SesAdapter, SnsRawDeliveryError
from commhistory.testing import signed_webhook, sns_test_signer
from commhistory.web import WebhookReceiver
from tests._webhook_props import JSON, parse_or_payload_error

NOTES = json.loads((Path(__file__).parent / "payloads" / "ses" / "notifications.json").read_text())
SIGNER = sns_test_signer()
NOW = 1775002000.0


def adapter(**options: Any) -> SesAdapter:
    return SesAdapter(
        [SIGNER.topic_arn], certificate_fetcher=SIGNER.fetch, clock=lambda: NOW, **options
    )


def test_raw_delivery_is_refused_by_default_saying_why() -> None:
    request = SIGNER.raw_delivery(NOTES["delivery"]).request()
    with pytest.raises(SnsRawDeliveryError, match="cannot be verified") as caught:
        adapter().verify(request)
    assert RAW_DELIVERY_HEADER in str(caught.value)
    assert "allow_raw_delivery" in str(caught.value)


def test_bare_notification_without_the_header_is_refused_too() -> None:
    body = json.dumps(NOTES["bounce"]).encode()
    for options in ({}, {"allow_raw_delivery": True}):
        with pytest.raises(SnsRawDeliveryError, match="without its SNS envelope"):
            adapter(**options).verify(WebhookRequest(body=body))


def test_receiver_answers_403_and_stores_nothing() -> None:
    repo = CommHistory.in_memory()
    answer = WebhookReceiver([adapter()], repo).receive(
        "ses", SIGNER.raw_delivery(NOTES["delivery"]).request()
    )
    assert answer.status == 403
    assert "raw message delivery" in answer.body["error"]
    assert repo.dead_letters() == []


def test_parse_without_permission_names_the_header() -> None:
    with pytest.raises(PayloadError, match=RAW_DELIVERY_HEADER):
        adapter().parse(SIGNER.raw_delivery(NOTES["delivery"]).request())


def test_allowed_raw_delivery_is_parsed_and_marked_unsigned() -> None:
    request = SIGNER.raw_delivery(NOTES["bounce"], message_id="raw-1").request()
    a = adapter(allow_raw_delivery=True)
    a.verify(request)
    [event] = a.parse(request).records
    assert isinstance(event, Event)
    assert event.type is EventType.BOUNCED
    assert event.provider_event_id == "raw-1:0"
    raw = event.metadata["provider_raw"]
    assert isinstance(raw, dict)
    assert raw["sns_raw_delivery"] is True
    assert raw["sns_message_id"] == "raw-1"


def test_allowed_raw_delivery_dedupes_against_the_signed_envelope() -> None:
    repo = CommHistory.in_memory()
    a = adapter(allow_raw_delivery=True)
    envelope = SIGNER.notification(NOTES["delivery"], timestamp=NOW)
    first = a.handle(WebhookRequest(body=json.dumps(envelope).encode()), repo)
    raw = SIGNER.raw_delivery(envelope["Message"], message_id=envelope["MessageId"])
    again = a.handle(raw.request(), repo)
    assert (first.report.inserted, again.report.duplicates) == (2, 2)


@pytest.mark.parametrize(
    ("header", "value", "match"),
    [
        ("x-amz-sns-topic-arn", "arn:aws:sns:us-east-1:1:other", "allow-list"),
        ("x-amz-sns-message-type", "SubscriptionConfirmation", "only notifications"),
        ("x-amz-sns-message-id", "", "missing"),
    ],
)
def test_allowed_raw_delivery_still_checks_its_headers(
    header: str, value: str, match: str
) -> None:
    webhook = SIGNER.raw_delivery(NOTES["delivery"])
    request = WebhookRequest(body=webhook.body, headers={**webhook.headers, header: value})
    with pytest.raises(SignatureError, match=match):
        adapter(allow_raw_delivery=True).verify(request)


def test_signed_envelopes_still_verify_when_raw_delivery_is_allowed() -> None:
    a = adapter(allow_raw_delivery=True)
    a.verify(signed_webhook("ses", NOTES["delivery"], SIGNER, timestamp=NOW).request())
    forged = signed_webhook("ses", NOTES["delivery"], sns_test_signer(topic_arn=SIGNER.topic_arn))
    with pytest.raises(SignatureError, match="does not match"):
        a.verify(forged.request())


def test_unparseable_raw_body_is_one_dead_letter() -> None:
    repo = CommHistory.in_memory()
    outcome = adapter(allow_raw_delivery=True).handle(
        SIGNER.raw_delivery("not json").request(), repo
    )
    assert outcome.report.rejected == 1
    [letter] = repo.dead_letters(source="webhook:ses")
    assert letter.field == "Message"


_FUZZ = adapter(allow_raw_delivery=True)
_HEADERS = dict(SIGNER.raw_delivery({}).headers)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_raw_bytes(body: bytes) -> None:
    parse_or_payload_error(_FUZZ, body, headers=_HEADERS)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(NOTES)), st.sampled_from(["mail", "eventType", "bounce"]), JSON)
def test_fuzz_raw_wrong_types(name: str, key: str, value: object) -> None:
    changed = dict(NOTES[name])
    changed[key] = value
    parse_or_payload_error(_FUZZ, json.dumps(changed).encode(), headers=_HEADERS)


def test_refusal_through_a_web_framework() -> None:
    flask = pytest.importorskip("flask")
    from commhistory.web.flask import webhook_blueprint

    repo = CommHistory.in_memory()
    app = flask.Flask("raw")
    app.register_blueprint(webhook_blueprint([adapter()], repo), url_prefix="/webhooks")
    webhook = SIGNER.raw_delivery(NOTES["delivery"], url="http://localhost/webhooks/ses")
    answer = app.test_client().post(webhook.path, data=webhook.body, headers=dict(webhook.headers))
    assert answer.status_code == 403
    assert "raw message delivery" in answer.get_json()["error"]
    assert repo.dead_letters() == []
