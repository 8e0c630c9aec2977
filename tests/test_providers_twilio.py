"""Twilio SMS: the published request-validation example, status callbacks, inbound, keywords."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qsl

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commhistory.errors import SignatureError
from commhistory.facade import CommHistory
from commhistory.model import (
    BounceClass,
    Channel,
    ConsentAction,
    ConsentEvent,
    ConsentMethod,
    Direction,
    Event,
    EventType,
    Message,
)
from commhistory.providers import KeyedContactResolver, TwilioAdapter, WebhookRequest
from commhistory.providers.twilio import twilio_signature
from commhistory.testing import signed_webhook
from tests._webhook_props import parse_or_payload_error

PAYLOADS = Path(__file__).parent / "payloads" / "twilio"
TOKEN = "0123456789abcdef0123456789abcdef"
URL = "https://hooks.example.jp/twilio/sms"
NOW = 1775002000.0
RESOLVER = KeyedContactResolver(b"k" * 32)

# Twilio's documented example (docs "Webhooks security"; used by every Twilio SDK's tests).
DOC_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
DOC_TOKEN = "12345"
DOC_PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+14158675309",
    "Digits": "1234",
    "From": "+14158675309",
    "To": "+18005551212",
}
DOC_SIGNATURE = "RSOYDt4T1cUTdK1PDd93/VVr8B8="
DOC_BODY = (
    b"CallSid=CA1234567890ABCDE&Caller=%2B14158675309&Digits=1234"
    b"&From=%2B14158675309&To=%2B18005551212"
)


def adapter(**options: object) -> TwilioAdapter:
    return TwilioAdapter(TOKEN, clock=lambda: NOW, contact_resolver=RESOLVER, **options)  # type: ignore[arg-type]


def load(name: str) -> dict[str, str]:
    return dict(parse_qsl((PAYLOADS / name).read_text()))


def request(name: str, **changes: object) -> WebhookRequest:
    return signed_webhook("twilio", load(name), TOKEN, url=URL).request()


def test_published_example_signature() -> None:
    assert twilio_signature(DOC_TOKEN, DOC_URL, DOC_PARAMS) == DOC_SIGNATURE


def test_published_example_verifies_as_a_request() -> None:
    req = WebhookRequest(body=DOC_BODY, headers={"X-Twilio-Signature": DOC_SIGNATURE}, url=DOC_URL)
    TwilioAdapter(DOC_TOKEN).verify(req)
    # Twilio's SDKs also accept the URL with the default port written out.
    with_port = "https://mycompany.com:443/myapp.php?foo=1&bar=2"
    TwilioAdapter(DOC_TOKEN, url=with_port).verify(req)


@pytest.mark.parametrize(
    ("token", "url", "body"),
    [
        ("54321", DOC_URL, DOC_BODY),
        (DOC_TOKEN, "https://mycompany.com/myapp.php?foo=1&bar=3", DOC_BODY),
        (DOC_TOKEN, "http://mycompany.com/myapp.php?foo=1&bar=2", DOC_BODY),
        (DOC_TOKEN, DOC_URL, DOC_BODY.replace(b"1234", b"9999")),
    ],
)
def test_published_example_refused_when_anything_changes(
    token: str, url: str, body: bytes
) -> None:
    req = WebhookRequest(body=body, headers={"X-Twilio-Signature": DOC_SIGNATURE}, url=url)
    with pytest.raises(SignatureError, match="does not match"):
        TwilioAdapter(token).verify(req)


def test_missing_signature_or_url() -> None:
    with pytest.raises(SignatureError, match="missing header"):
        TwilioAdapter(DOC_TOKEN).verify(WebhookRequest(body=DOC_BODY, url=DOC_URL))
    req = WebhookRequest(body=DOC_BODY, headers={"X-Twilio-Signature": DOC_SIGNATURE})
    with pytest.raises(SignatureError, match="URL"):
        TwilioAdapter(DOC_TOKEN).verify(req)


def test_delivered_status() -> None:
    a = adapter()
    req = request("status_delivered.txt")
    a.verify(req)
    [event] = a.parse(req).records
    assert isinstance(event, Event)
    assert event.type is EventType.DELIVERED
    assert event.provider_message_id == "SM11111111111111111111111111111111"
    assert event.address == "+819012345678"
    assert event.occurred_at.timestamp() == NOW
    assert event.metadata["provider_raw"]["MessageStatus"] == "delivered"


def test_undelivered_status_is_classified_bounce() -> None:
    [event] = adapter().parse(request("status_undelivered.txt")).records
    assert isinstance(event, Event)
    assert (event.type, event.bounce) == (EventType.BOUNCED, BounceClass.HARD)
    assert event.reason == "twilio error 30005"


def test_status_dedupe_is_stable_across_retries() -> None:
    repo = CommHistory.in_memory()
    first = TwilioAdapter(TOKEN, clock=lambda: NOW).handle(request("status_delivered.txt"), repo)
    later = TwilioAdapter(TOKEN, clock=lambda: NOW + 60).handle(
        request("status_delivered.txt"), repo
    )
    assert (first.report.inserted, later.report.duplicates) == (1, 1)


def test_inbound_message() -> None:
    [message] = adapter().parse(request("inbound.txt")).records
    assert isinstance(message, Message)
    assert message.direction is Direction.INBOUND
    assert message.channel is Channel.SMS
    assert message.address == "+819012345678"
    assert message.body == "Hello, what time do you open?"
    assert message.contact_id == RESOLVER(Channel.SMS, "+819012345678")
    assert "819012345678" not in message.contact_id
    assert message.message_id == "twilio:SM33333333333333333333333333333333"


@pytest.mark.parametrize("name", ["inbound_stop.txt", "inbound_start.txt"])
def test_standard_keywords_are_left_to_the_repository(name: str) -> None:
    [message] = adapter().parse(request(name)).records
    assert isinstance(message, Message)


def test_advanced_opt_out_type_becomes_consent() -> None:
    params = load("inbound.txt") | {"Body": "please stop texting me", "OptOutType": "STOP"}
    req = signed_webhook("twilio", params, TOKEN, url=URL).request()
    message, consent = adapter().parse(req).records
    assert isinstance(message, Message)
    assert isinstance(consent, ConsentEvent)
    assert consent.action is ConsentAction.WITHDRAW
    assert consent.method is ConsentMethod.SMS_KEYWORD
    assert consent.channel is Channel.SMS
    assert consent.contact_id == message.contact_id
    assert consent.source == "sms_keyword:STOP"


def test_custom_keywords() -> None:
    params = load("inbound.txt") | {"Body": "配信停止"}
    req = signed_webhook("twilio", params, TOKEN, url=URL).request()
    records = adapter(opt_out_keywords={"配信停止", "STOP"}).parse(req).records
    assert isinstance(records[-1], ConsentEvent)
    assert records[-1].action is ConsentAction.WITHDRAW


def test_inbound_without_resolver_is_dead_lettered_not_dropped() -> None:
    repo = CommHistory.in_memory()
    outcome = TwilioAdapter(TOKEN, clock=lambda: NOW).handle(request("inbound_stop.txt"), repo)
    assert outcome.report.rejected == 1
    [letter] = repo.dead_letters()
    assert letter.field == "contact_id"
    assert "STOP" in letter.raw.upper()


def test_handle_inbound_stop_stores_message_and_consent() -> None:
    repo = CommHistory.in_memory()
    outcome = adapter().handle(request("inbound_stop.txt"), repo)
    assert outcome.report.inserted == 1
    contact = RESOLVER(Channel.SMS, "+819012345678")
    [consent] = repo.consent_history(contact)  # derived by the repository, once
    assert consent.action is ConsentAction.WITHDRAW
    assert consent.method is ConsentMethod.SMS_KEYWORD


def test_unknown_status_is_a_dead_letter_naming_it() -> None:
    params = load("status_delivered.txt") | {"MessageStatus": "teleported"}
    req = signed_webhook("twilio", params, TOKEN, url=URL).request()
    repo = CommHistory.in_memory()
    outcome = adapter().handle(req, repo)
    assert (outcome.report.inserted, outcome.report.rejected) == (0, 1)
    [letter] = repo.list_dead_letters(source="webhook:twilio")
    assert "unknown event type 'teleported'" in letter.reason


_FUZZ = TwilioAdapter(TOKEN, clock=lambda: NOW, contact_resolver=RESOLVER)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_bytes(body: bytes) -> None:
    parse_or_payload_error(_FUZZ, body)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(sorted(load("inbound_stop.txt"))) | st.text(max_size=8),
        st.text(max_size=30),
        max_size=8,
    )
)
def test_fuzz_params(params: dict[str, str]) -> None:
    from urllib.parse import urlencode

    parse_or_payload_error(_FUZZ, urlencode(params).encode())


# Issue 14, bug 4. Twilio's "Twilio's request to your incoming message Webhook URL"
# (https://www.twilio.com/docs/messaging/guides/webhook-request) sends WhatsApp senders as
# "whatsapp:+E.164" (with ProfileName and WaId) and RCS senders as "rcs:+E.164".
def test_inbound_whatsapp_is_whatsapp_not_sms() -> None:
    message, consent = adapter().parse(request("inbound_whatsapp_stop.txt")).records
    assert isinstance(message, Message)
    assert (message.channel, message.address) == (Channel.WHATSAPP, "+31612345678")
    assert message.contact_id == RESOLVER(Channel.WHATSAPP, "+31612345678")
    # A WhatsApp STOP is recorded here, on WhatsApp (the feed adds its suppression).
    assert isinstance(consent, ConsentEvent)
    assert (consent.channel, consent.action) == (Channel.WHATSAPP, ConsentAction.WITHDRAW)


def test_whatsapp_stop_does_not_change_sms_consent() -> None:
    from commhistory.testing import make_message

    repo = CommHistory.in_memory()
    sms_contact = RESOLVER(Channel.SMS, "+31612345678")
    sms = make_message(channel=Channel.SMS, address="+31612345678", contact_id=sms_contact)
    repo.record_messages([sms])
    outcome = adapter().handle(request("inbound_whatsapp_stop.txt"), repo)
    assert outcome.report.rejected == 0
    assert repo.consent_history(sms_contact) == []
    assert repo.suppression.entries(Channel.SMS, "+31612345678") == []
    whatsapp_contact = RESOLVER(Channel.WHATSAPP, "+31612345678")
    [consent] = repo.consent_history(whatsapp_contact)
    assert (consent.channel, consent.action) == (Channel.WHATSAPP, ConsentAction.WITHDRAW)


def test_inbound_rcs_is_sms_on_the_same_number() -> None:
    [message] = adapter().parse(request("inbound_rcs_stop.txt")).records
    assert isinstance(message, Message)
    assert (message.channel, message.address) == (Channel.SMS, "+31612345678")
    repo = CommHistory.in_memory()
    adapter().handle(request("inbound_rcs_stop.txt"), repo)
    [entry] = repo.suppression.entries(Channel.SMS, "+31612345678")
    assert entry.reason.value == "sms_keyword"
