"""Amazon SNS: messages signed by SNS itself, and offline certificate chain validation.

``payloads/ses/aws`` holds messages SNS signed (signature versions 1 and 2, a
subscription confirmation) and the real SNS signing certificate, as AWS publishes
them with its own SDK's tests.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from commhistory.errors import InvalidInputError, SignatureError
from commhistory.facade import CommHistory
from commhistory.providers import WebhookRequest
from commhistory.providers.ses import SesAdapter, SnsRawDeliveryError
from commhistory.testing import sns_test_signer

AWS = Path(__file__).parent / "payloads" / "ses" / "aws"
CERT_NAME = "SimpleNotificationService-7506a1e35b36ef5a444dd1a8e7cc3ed8.pem"
AWS_PEM = (AWS / CERT_NAME).read_bytes()
AWS_CERT_URL = f"https://sns.us-west-2.amazonaws.com/{CERT_NAME}"
NAMES = ["notification_v2.json", "notification_v1_subject.json", "subscription_confirmation.json"]


def load(name: str) -> dict[str, Any]:
    envelope: dict[str, Any] = json.loads((AWS / name).read_text())
    return envelope


def signed_at(envelope: dict[str, Any]) -> float:
    return datetime.fromisoformat(envelope["Timestamp"].replace("Z", "+00:00")).timestamp()


def aws_fetch(url: str) -> bytes:
    if url != AWS_CERT_URL:
        raise OSError("no such certificate")
    return AWS_PEM


def aws_adapter(envelope: dict[str, Any], **options: Any) -> SesAdapter:
    options.setdefault("clock", lambda: signed_at(envelope) + 2)
    return SesAdapter([envelope["TopicArn"]], certificate_fetcher=aws_fetch, **options)


def request_for(envelope: dict[str, Any]) -> WebhookRequest:
    return WebhookRequest(body=json.dumps(envelope).encode())


@pytest.mark.parametrize("name", NAMES)
def test_messages_signed_by_sns_verify(name: str) -> None:
    envelope = load(name)
    aws_adapter(envelope).verify(request_for(envelope))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("field", ["Message", "MessageId", "Timestamp", "TopicArn"])
def test_any_signed_field_changed_is_refused(name: str, field: str) -> None:
    envelope = load(name)
    adapter = aws_adapter(envelope, tolerance=10**9)
    envelope[field] = envelope[field][:-1] + ("0" if envelope[field][-1] != "0" else "1")
    if field == "TopicArn":  # still allowed, so the signature is what refuses it
        adapter = aws_adapter(envelope, tolerance=10**9)
    with pytest.raises(SignatureError, match="does not match"):
        adapter.verify(request_for(envelope))


def test_subject_is_signed_when_present() -> None:
    envelope = load("notification_v1_subject.json")
    envelope["Subject"] = "Another subject"
    with pytest.raises(SignatureError, match="does not match"):
        aws_adapter(envelope).verify(request_for(envelope))
    del envelope["Subject"]
    with pytest.raises(SignatureError, match="does not match"):
        aws_adapter(envelope).verify(request_for(envelope))


def test_expired_certificate_is_refused() -> None:
    envelope = load("notification_v2.json")
    after_expiry = datetime.fromisoformat("2026-10-15T00:00:00+00:00").timestamp()
    adapter = aws_adapter(envelope, clock=lambda: after_expiry, tolerance=10**9)
    with pytest.raises(SignatureError, match="not valid now"):
        adapter.verify(request_for(envelope))


def test_real_confirmation_is_confirmed_once_verified() -> None:
    envelope = load("subscription_confirmation.json")
    confirmed: list[str] = []
    outcome = aws_adapter(envelope, confirm_subscription=confirmed.append).handle(
        request_for(envelope), CommHistory.in_memory()
    )
    assert confirmed == [envelope["SubscribeURL"]]
    assert outcome.report.total == 0


# ------------------------------------------------------------------ chain validation


SIGNER = sns_test_signer()
NOW = 1775002000.0
NOTE = {
    "eventType": "Open",
    "mail": {"messageId": "m-1"},
    "open": {"timestamp": "2026-04-01T09:00:00Z"},
}


def chain_adapter(signer: Any = SIGNER, **options: Any) -> SesAdapter:
    return SesAdapter(
        [SIGNER.topic_arn], certificate_fetcher=signer.fetch, clock=lambda: NOW, **options
    )


def test_chain_to_the_configured_root_verifies() -> None:
    adapter = chain_adapter(
        certificate_roots=[SIGNER.root_certificate],
        certificate_intermediates=[SIGNER.intermediate_certificate],
    )
    adapter.verify(request_for(SIGNER.notification(NOTE, timestamp=NOW)))


def test_chain_refused_without_the_intermediate_or_under_another_root() -> None:
    envelope = SIGNER.notification(NOTE, timestamp=NOW)
    other = sns_test_signer()
    for options in (
        {"certificate_roots": [SIGNER.root_certificate]},
        {
            "certificate_roots": [other.root_certificate],
            "certificate_intermediates": [other.intermediate_certificate],
        },
    ):
        with pytest.raises(SignatureError, match="does not chain to a trusted root"):
            chain_adapter(**options).verify(request_for(envelope))
    # Without roots, the same certificate is accepted (the default: no chain validation).
    chain_adapter().verify(request_for(envelope))


def test_chain_mode_reads_the_sns_name_of_the_real_certificate() -> None:
    # The real certificate names sns.amazonaws.com; under a test root it cannot chain.
    envelope = load("notification_v2.json")
    adapter = aws_adapter(envelope, certificate_roots=[SIGNER.root_certificate])
    with pytest.raises(SignatureError, match="does not chain to a trusted root"):
        adapter.verify(request_for(envelope))


def test_chain_mode_needs_a_certificate_naming_an_sns_signing_host() -> None:
    # A self-signed certificate without any SNS name, as older test kits made.
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    start = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(SIGNER.private_key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start.replace(year=2100))
        .sign(SIGNER.private_key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    adapter = SesAdapter(
        [SIGNER.topic_arn],
        certificate_fetcher=lambda url: pem,
        clock=lambda: NOW,
        certificate_roots=[cert],
    )
    with pytest.raises(SignatureError, match="names no SNS signing host"):
        adapter.verify(request_for(SIGNER.notification(NOTE, timestamp=NOW)))


def test_empty_roots_are_a_configuration_error() -> None:
    with pytest.raises(InvalidInputError, match="certificate_roots"):
        SesAdapter([SIGNER.topic_arn], certificate_roots=[])


def test_raw_delivery_error_is_a_signature_error() -> None:
    assert issubclass(SnsRawDeliveryError, SignatureError)
