"""Postal webhooks: RSA signatures (SHA-256 and the older SHA-1), keys, the event map.

Source: Postal's webhook documentation, https://docs.postalserver.io/developer/webhooks
(postalserver/docs, content/4.developer/4.webhooks.md): the envelope (event, timestamp,
uuid, payload), the example payloads of the message status, MessageBounced,
MessageLinkClicked, MessageLoaded, DomainDNSError and send-limit events (in
tests/payloads/postal/events.json under "published", wrapped in the documented
envelope), and "Verifying signatures" (X-Postal-Signature-256: base64 RSA-SHA256 of the
raw body; X-Postal-Signature: RSA-SHA1, kept for compatibility; X-Postal-Signature-KID:
the JWK thumbprint of the key in /.well-known/jwks.json). The "shaped" payloads are
the documented status payload with the other documented statuses (SoftFail, HardFail,
Held).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from commhistory.errors import InvalidInputError, PayloadError, SignatureError
from commhistory.facade import CommHistory
from commhistory.model import BounceClass, Channel, Event, EventType, Purpose
from commhistory.providers import PostalAdapter, WebhookRequest
from commhistory.providers.postal import (
    KID_HEADER,
    SHA1_HEADER,
    SHA256_HEADER,
    load_postal_keys,
)
from commhistory.testing import make_message, signed_webhook
from tests._esp import unknown_is_dead_lettered
from tests._webhook_props import JSON, parse_or_payload_error

EVENTS = json.loads((Path(__file__).parent / "payloads" / "postal" / "events.json").read_text())
PUBLISHED: dict[str, Any] = EVENTS["published"]
SHAPED: dict[str, Any] = EVENTS["shaped"]
ALL = {**PUBLISHED, **SHAPED}
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PEM = (
    KEY.public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)
ADAPTER = PostalAdapter(PEM, clock=lambda: 1775002000.0)


def _b64url(number: int) -> str:
    raw = number.to_bytes((number.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, str]:
    numbers = key.public_key().public_numbers()
    return {"kty": "RSA", "kid": kid, "e": _b64url(numbers.e), "n": _b64url(numbers.n)}


def parse(name: str) -> Event:
    request = signed_webhook("postal", ALL[name], KEY).request()
    ADAPTER.verify(request)
    result = ADAPTER.parse(request)
    assert result.errors == []
    [record] = result.records
    assert isinstance(record, Event)
    return record


# --------------------------------------------------------------------------- signatures


def test_sha256_signature_is_checked_over_the_raw_body() -> None:
    body = json.dumps(PUBLISHED["MessageSent"], indent=2).encode()  # any bytes Postal sends
    signature = KEY.sign(body, padding.PKCS1v15(), hashes.SHA256())
    headers = {SHA256_HEADER: base64.b64encode(signature).decode()}
    ADAPTER.verify(WebhookRequest(body=body, headers=headers))
    with pytest.raises(SignatureError, match="does not match the body"):
        ADAPTER.verify(WebhookRequest(body=body + b" ", headers=headers))


def test_sha1_only_requests_of_older_postal_and_require_sha256() -> None:
    body = json.dumps(PUBLISHED["MessageLoaded"]).encode()
    sha1 = KEY.sign(body, padding.PKCS1v15(), hashes.SHA1())
    request = WebhookRequest(body=body, headers={SHA1_HEADER: base64.b64encode(sha1).decode()})
    ADAPTER.verify(request)
    strict = PostalAdapter(PEM, require_sha256=True)
    with pytest.raises(SignatureError, match="require_sha256"):
        strict.verify(request)
    # With both headers, SHA-256 decides: a bad one is not rescued by a good SHA-1.
    both = WebhookRequest(
        body=body,
        headers={SHA1_HEADER: base64.b64encode(sha1).decode(), SHA256_HEADER: "AAAA"},
    )
    with pytest.raises(SignatureError, match=SHA256_HEADER):
        ADAPTER.verify(both)


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "missing header X-Postal-Signature-256"),
        ({SHA256_HEADER: "%%%"}, "not valid base64"),
        ({SHA256_HEADER: "AAAA"}, "does not match"),
    ],
)
def test_refused_signatures(headers: dict[str, str], message: str) -> None:
    with pytest.raises(SignatureError, match=message):
        ADAPTER.verify(WebhookRequest(body=b"{}", headers=headers))


def test_another_installations_key_is_refused() -> None:
    hook = signed_webhook("postal", PUBLISHED["MessageSent"], OTHER)
    with pytest.raises(SignatureError):
        ADAPTER.verify(hook.request())


def test_keys_from_a_jwk_set_the_kid_header_and_the_dns_record() -> None:
    jwks = json.dumps({"keys": [jwk(OTHER, "old"), jwk(KEY, "current")]})
    adapter = PostalAdapter(jwks)
    hook = signed_webhook("postal", PUBLISHED["MessageSent"], KEY)
    adapter.verify(hook.request())  # no KID header: every key is tried
    with_kid = WebhookRequest(body=hook.body, headers={**hook.headers, KID_HEADER: "current"})
    adapter.verify(with_kid)
    wrong_kid = WebhookRequest(body=hook.body, headers={**hook.headers, KID_HEADER: "old"})
    with pytest.raises(SignatureError):
        adapter.verify(wrong_kid)
    PostalAdapter(jwk(KEY, "current")).verify(hook.request())  # one JWK, as a mapping
    der = KEY.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    dns_record = "p=" + base64.b64encode(der).decode() + ";"
    PostalAdapter(dns_record).verify(hook.request())


@pytest.mark.parametrize(
    "key",
    ["", "not a key", '{"keys": []}', '{"kty": "EC"}', '{"kty": "RSA", "n": "AQAB"}', "{bad"],
)
def test_unreadable_keys(key: str) -> None:
    with pytest.raises(InvalidInputError, match="public_key"):
        load_postal_keys(key)


def test_the_signer_needs_an_rsa_private_key() -> None:
    with pytest.raises(InvalidInputError, match="secret: give an RSA private key"):
        signed_webhook("postal", PUBLISHED["MessageSent"], "not a key")
    pem = KEY.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    ADAPTER.verify(signed_webhook("postal", PUBLISHED["MessageSent"], pem).request())


# --------------------------------------------------------------------------- mapping


def test_published_examples() -> None:
    sent = parse("MessageSent")
    assert (sent.type, sent.address, sent.provider) == (
        EventType.DELIVERED,
        "test@example.com",
        "postal",
    )
    assert sent.provider_message_id == "5817a64332f44_4ec93ff59e79d154565eb@app34.mail"
    assert sent.event_id == "postal:820b47a4-4dfd-42e4-ae6a-1e5bed5a33fd"
    assert sent.occurred_at.timestamp() == pytest.approx(1477945177.12994)
    bounced = parse("MessageBounced")
    assert (bounced.type, bounced.address, bounced.bounce) == (
        EventType.BOUNCED,
        "test@example.com",
        BounceClass.UNDETERMINED,  # Postal's bounce event carries no diagnostic
    )
    assert bounced.provider_message_id == sent.provider_message_id
    clicked = parse("MessageLinkClicked")
    assert (clicked.type, clicked.url, clicked.ip) == (
        EventType.CLICKED,
        "https://atech.media",
        "185.22.208.2",
    )
    assert clicked.user_agent is not None
    assert clicked.user_agent.startswith("Mozilla/5.0")
    assert clicked.occurred_at.timestamp() == 1477945300.25  # the envelope's time
    loaded = parse("MessageLoaded")
    assert (loaded.type, loaded.url) == (EventType.OPENED, None)


def test_documented_statuses() -> None:
    delayed = parse("MessageDelayed")
    assert (delayed.type, delayed.status_code, delayed.bounce) == (
        EventType.DEFERRED,
        "4.7.1",
        None,
    )
    failed = parse("MessageDeliveryFailed")
    assert (failed.type, failed.bounce, failed.status_code, failed.address) == (
        EventType.BOUNCED,
        BounceClass.HARD,
        "5.1.1",
        "nobody@example.net",
    )
    assert failed.reason == "Permanent SMTP delivery error when sending to mx.example.net"
    held = parse("MessageHeld")
    assert (held.type, held.address) == (EventType.REJECTED, "held@example.com")


def test_status_of_an_incoming_message_is_a_dead_letter_and_suppresses_nothing() -> None:
    repo = CommHistory.in_memory()
    request = signed_webhook("postal", ALL["IncomingHardFail"], KEY).request()
    outcome = ADAPTER.handle(request, repo)
    assert (outcome.report.inserted, outcome.report.rejected) == (0, 1)
    [error] = outcome.result.errors
    assert isinstance(error.error, PayloadError)
    assert error.error.field == "payload.message.direction"


def test_server_events_and_unknown_message_events_are_dead_letters() -> None:
    repo = CommHistory.in_memory()
    for name in ("DomainDNSError", "SendLimitExceeded"):
        outcome = ADAPTER.handle(signed_webhook("postal", PUBLISHED[name], KEY).request(), repo)
        [error] = outcome.result.errors
        assert isinstance(error.error, PayloadError)
        assert (error.error.field, outcome.report.rejected) == ("event", 1)
        assert name in error.error.reason
    future = dict(PUBLISHED["MessageLoaded"], event="MessageTeleported")
    unknown_is_dead_lettered(ADAPTER, "postal", future, KEY, "MessageTeleported")


def test_a_retry_is_a_duplicate_and_a_hard_fail_suppresses() -> None:
    repo = CommHistory.in_memory()
    message = make_message(
        provider="postal",
        provider_message_id="5817a64332f44_4ec93ff59e79d154565eb@app34.mail",
        address="nobody@example.net",
        purpose=Purpose.TRANSACTIONAL,
    )
    repo.record_messages([message])
    request = signed_webhook("postal", SHAPED["MessageDeliveryFailed"], KEY).request()
    assert ADAPTER.handle(request, repo).report.inserted == 1
    assert ADAPTER.handle(request, repo).report.duplicates == 1
    [entry] = repo.suppression.entries(Channel.EMAIL, "nobody@example.net")
    assert entry.reason.value == "hard_bounce"


def test_an_event_without_any_time_is_timed_on_receipt() -> None:
    untimed = json.loads(json.dumps(PUBLISHED["MessageLoaded"]))
    del untimed["timestamp"]
    [event] = ADAPTER.parse(signed_webhook("postal", untimed, KEY).request()).records
    assert isinstance(event, Event)
    assert event.occurred_at.timestamp() == 1775002000.0
    assert event.metadata["time_source"] == "received"


# --------------------------------------------------------------------------- fuzz


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_bytes(body: bytes) -> None:
    parse_or_payload_error(ADAPTER, body)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(sorted(ALL)), st.sampled_from(["event", "timestamp", "uuid", "payload"]), JSON
)
def test_fuzz_wrong_types_in_the_envelope(name: str, key: str, value: object) -> None:
    changed = dict(ALL[name])
    changed[key] = value
    parse_or_payload_error(ADAPTER, json.dumps(changed).encode())


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(sorted(ALL)),
    st.sampled_from(
        ["message", "original_message", "output", "details", "timestamp", "url", "ip_address"]
    ),
    st.sampled_from(["message_id", "to", "direction", None]),
    JSON,
)
def test_fuzz_wrong_types_in_the_payload(
    name: str, key: str, inner: str | None, value: object
) -> None:
    changed = json.loads(json.dumps(ALL[name]))
    payload = changed["payload"]
    if inner is not None and isinstance(payload.get(key), dict):
        payload[key][inner] = value
    else:
        payload[key] = value
    parse_or_payload_error(ADAPTER, json.dumps(changed).encode())
