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
