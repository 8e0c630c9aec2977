"""Amazon SES via SNS: signature versions 1 and 2, cert URL checks, topics, subscriptions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commhistory.errors import InvalidInputError, SignatureError
from commhistory.facade import CommHistory
from commhistory.model import BounceClass, Event, EventType
from commhistory.providers import WebhookRequest
from commhistory.providers.ses import CachingCertificateFetcher, SesAdapter, check_sns_url
from commhistory.testing import signed_webhook, sns_test_signer
from tests._webhook_props import JSON, parse_or_payload_error

NOTES = json.loads((Path(__file__).parent / "payloads" / "ses" / "notifications.json").read_text())
SIGNER = sns_test_signer()
NOW = 1775002000.0


def adapter(**options: Any) -> SesAdapter:
    options.setdefault("certificate_fetcher", SIGNER.fetch)
    return SesAdapter([SIGNER.topic_arn], clock=lambda: NOW, **options)


def request_for(envelope: dict[str, Any]) -> WebhookRequest:
    return WebhookRequest(body=json.dumps(envelope).encode())


@pytest.mark.parametrize("version", ["1", "2"])
def test_both_signature_versions_verify(version: str) -> None:
    signer = sns_test_signer(version=version)
    a = SesAdapter([signer.topic_arn], certificate_fetcher=signer.fetch, clock=lambda: NOW)
    envelope = signer.notification(NOTES["delivery"], timestamp=NOW)
    assert envelope["SignatureVersion"] == version
    a.verify(request_for(envelope))
    tampered = dict(envelope, Message=envelope["Message"].replace("taro", "jiro"))
    with pytest.raises(SignatureError, match="does not match"):
        a.verify(request_for(tampered))


@pytest.mark.parametrize(
    "url",
    [
        "http://sns.ap-northeast-1.amazonaws.com/cert.pem",
        "https://sns.ap-northeast-1.amazonaws.com.evil.test/cert.pem",
        "https://evil.test/sns.ap-northeast-1.amazonaws.com/cert.pem",
        "https://sns.ap-northeast-1.amazonaws.com/cert.txt",
        "https://user@sns.ap-northeast-1.amazonaws.com/cert.pem",
        "https://sns.ap-northeast-1.amazonaws.com:8443/cert.pem",
        "https://sns.ap-northeast-1.amazonaws.com/cert.pem?x=1",
    ],
)
def test_foreign_certificate_urls_are_refused_before_fetching(url: str) -> None:
    fetched: list[str] = []

    def fetch(u: str) -> bytes:
        fetched.append(u)
        return SIGNER.certificate_pem

    envelope = SIGNER.notification(NOTES["delivery"], timestamp=NOW)
    envelope["SigningCertURL"] = url
    with pytest.raises(SignatureError, match="SigningCertURL"):
        adapter(certificate_fetcher=fetch).verify(request_for(envelope))
    assert fetched == []


def test_cn_partition_url_accepted() -> None:
    url = "https://sns.cn-north-1.amazonaws.com.cn/x.pem"
    assert check_sns_url(url, field="f", pem=True) == url


def test_topic_allow_list_and_signature_version() -> None:
    envelope = SIGNER.notification(NOTES["delivery"], timestamp=NOW)
    with pytest.raises(SignatureError, match="TopicArn"):
        SesAdapter(["arn:aws:sns:us-east-1:1:other"], certificate_fetcher=SIGNER.fetch).verify(
            request_for(envelope)
        )
    with pytest.raises(SignatureError, match="SignatureVersion"):
        adapter().verify(request_for(dict(envelope, SignatureVersion="3")))
    with pytest.raises(InvalidInputError):
        SesAdapter([])


def test_stale_and_unfetchable() -> None:
    stale = SIGNER.notification(NOTES["delivery"], timestamp=NOW - 400)
    with pytest.raises(SignatureError, match="too old"):
        adapter().verify(request_for(stale))
    adapter(tolerance=3600).verify(request_for(stale))

    def offline(url: str) -> bytes:
        raise OSError("network unreachable")

    fresh = SIGNER.notification(NOTES["delivery"], timestamp=NOW)
    with pytest.raises(SignatureError, match="cannot be fetched"):
        adapter(certificate_fetcher=offline).verify(request_for(fresh))


def test_caching_fetcher_fetches_once() -> None:
    fetcher = CachingCertificateFetcher(SIGNER.fetch)
    a = adapter(certificate_fetcher=fetcher)
    for _ in range(3):
        a.verify(request_for(SIGNER.notification(NOTES["open"], timestamp=NOW)))
    assert fetcher.fetches == 1


def test_subscription_confirmation_is_confirmed_and_stores_nothing() -> None:
    confirmed: list[str] = []
    a = adapter(confirm_subscription=confirmed.append)
    envelope = SIGNER.subscription_confirmation(timestamp=NOW)
    repo = CommHistory.in_memory()
    outcome = a.handle(request_for(envelope), repo)
    assert outcome.report.total == 0
    assert confirmed == [envelope["SubscribeURL"]]
    forged = SIGNER.sign(
        {k: v for k, v in envelope.items() if k not in ("Signature",)}
        | {"SubscribeURL": "https://evil.test/confirm"}
    )
    with pytest.raises(SignatureError, match="SubscribeURL"):
        a.verify(request_for(forged))


def parse(name: str) -> list[Event]:
    webhook = signed_webhook("ses", NOTES[name], SIGNER, timestamp=NOW)
    a = adapter()
    a.verify(webhook.request())
    records = a.parse(webhook.request()).records
    assert all(isinstance(r, Event) for r in records)
    return [r for r in records if isinstance(r, Event)]


def test_mapping() -> None:
    [bounce] = parse("bounce")
    assert (bounce.type, bounce.bounce, bounce.status_code) == (
        EventType.BOUNCED,
        BounceClass.HARD,
        "5.1.1",
    )
    assert bounce.address == "nobody@example.net"
    assert bounce.provider_message_id == "0100018e-aaaa-bbbb-cccc-000000000001-000000"
    delivered = parse("delivery")
    assert [e.address for e in delivered] == ["taro@example.com", "hanako@example.com"]
    assert len({e.event_id for e in delivered}) == 2
    assert parse("complaint")[0].type is EventType.COMPLAINED
    [opened] = parse("open")
    assert (opened.type, opened.ip, opened.user_agent) == (
        EventType.OPENED,
        "192.0.2.1",
        "Mozilla/5.0",
    )
    assert parse("click")[0].url == "https://shop.example/sale"
    [delay] = parse("delay")
    assert (delay.type, delay.status_code) == (EventType.DEFERRED, "4.2.2")
    assert parse("reject")[0].type is EventType.REJECTED


def test_unmapped_event_type_is_a_dead_letter_naming_it() -> None:
    repo = CommHistory.in_memory()
    webhook = signed_webhook("ses", NOTES["novel"], SIGNER, timestamp=NOW)
    outcome = adapter().handle(webhook.request(), repo)
    assert (outcome.report.inserted, outcome.report.rejected) == (0, 1)
    [letter] = repo.list_dead_letters(source="webhook:ses")
    assert "unknown event type 'SomethingNew'" in letter.reason


def test_retry_of_same_sns_message_is_duplicate() -> None:
    repo = CommHistory.in_memory()
    envelope = SIGNER.notification(NOTES["delivery"], timestamp=NOW)
    assert adapter().handle(request_for(envelope), repo).report.inserted == 2
    assert adapter().handle(request_for(envelope), repo).report.duplicates == 2


_FUZZ = adapter()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_bytes(body: bytes) -> None:
    parse_or_payload_error(_FUZZ, body)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(sorted(NOTES)),
    st.sampled_from(["mail", "eventType", "bounce", "delivery", "open"]),
    JSON,
)
def test_fuzz_wrong_types(name: str, key: str, value: object) -> None:
    changed = dict(NOTES[name])
    changed[key] = value
    envelope = {"Type": "Notification", "MessageId": "m", "Message": json.dumps(changed)}
    parse_or_payload_error(_FUZZ, json.dumps(envelope).encode())


@settings(max_examples=100, deadline=None)
@given(JSON)
def test_fuzz_message(value: object) -> None:
    envelope = {"Type": "Notification", "MessageId": "m", "Message": json.dumps(value)}
    parse_or_payload_error(_FUZZ, json.dumps(envelope).encode())


# Issue 14, bug 5. SES's one-time test notification when an SNS topic is set up as an event
# destination, as posted in ope-tech/laravel-ses issue #10
# (https://github.com/ope-tech/laravel-ses/issues/10): a Notification whose Message is plain text.
def test_topic_validation_notice_is_acknowledged_and_ignored() -> None:
    text = "Successfully validated SNS topic for Amazon SES event publishing."
    envelope = SIGNER.notification(text, timestamp=NOW)
    a = adapter()
    a.verify(request_for(envelope))
    repo = CommHistory.in_memory()
    outcome = a.handle(request_for(envelope), repo)
    assert (outcome.report.total, outcome.dead_lettered) == (0, False)
    assert repo.dead_letters(source="webhook:ses") == []


# Open, Send and Reject records from AWS's "Examples of event data that Amazon SES publishes
# to Amazon SNS" (https://docs.aws.amazon.com/ses/latest/dg/event-publishing-retrieving-sns-examples.html):
# they have no recipient list; the recipient is in mail.destination.
def _ses_mail(destination: list[str]) -> dict[str, Any]:
    return {
        "timestamp": "2017-08-09T22:00:19.652Z",
        "source": "sender@example.com",
        "sourceArn": "arn:aws:ses:us-east-1:123456789012:identity/sender@example.com",
        "sendingAccountId": "123456789012",
        "messageId": "EXAMPLE7c191be45-e9aedb9a-02f9-4d12-a87d-dd0099a07f8a-000000",
        "destination": destination,
        "headersTruncated": False,
        "tags": {"ses:configuration-set": ["ConfigSet"]},
    }


def test_open_send_and_reject_take_the_recipient_from_mail_destination() -> None:
    opened = {
        "eventType": "Open",
        "mail": _ses_mail(["recipient@example.com"]),
        "open": {
            "ipAddress": "192.0.2.1",
            "timestamp": "2017-08-09T22:00:24.044Z",
            "userAgent": "Mozilla/5.0 (iPhone; CPU iPhone OS 10_3_3 like Mac OS X)",
        },
    }
    sent = {
        "eventType": "Send",
        "mail": _ses_mail(["recipient@example.com", "second@example.com"]),
        "send": {},
    }
    rejected = {
        "eventType": "Reject",
        "mail": _ses_mail(["recipient@example.com"]),
        "reject": {"reason": "Bad content"},
    }
    a = adapter()
    found: dict[str, list[str | None]] = {}
    for name, note in (("open", opened), ("send", sent), ("reject", rejected)):
        records = a.parse(request_for(SIGNER.notification(note, timestamp=NOW))).records
        found[name] = [r.address for r in records if isinstance(r, Event)]
    assert found == {
        "open": ["recipient@example.com"],
        "send": ["recipient@example.com", "second@example.com"],
        "reject": ["recipient@example.com"],
    }
    # An open of a message sent to several: which recipient opened it is not said.
    several = dict(opened, mail=_ses_mail(["a@example.com", "b@example.com"]))
    [event] = a.parse(request_for(SIGNER.notification(several, timestamp=NOW))).records
    assert isinstance(event, Event)
    assert event.address is None
