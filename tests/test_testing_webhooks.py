"""The testing kit's webhook helpers added for JSON Twilio bodies and SNS raw delivery."""

from __future__ import annotations

import json

from cryptography import x509

from commhistory.testing import signed_webhook, sns_test_signer


def test_path_keeps_the_query_string_only_when_there_is_one() -> None:
    form = signed_webhook("twilio", {"MessageSid": "SM1"}, "t", url="https://h.example/a/b")
    assert form.path == "/a/b"
    body = signed_webhook("twilio", [], "t", url="https://h.example/a/b?x=1")
    assert body.path.startswith("/a/b?x=1&bodySHA256=")
    assert body.url.endswith(body.path)


def test_sns_signer_issues_its_certificate_from_a_test_ca_chain() -> None:
    signer = sns_test_signer()
    [leaf] = x509.load_pem_x509_certificates(signer.certificate_pem)
    assert signer.intermediate_certificate is not None
    assert signer.root_certificate is not None
    assert leaf.issuer == signer.intermediate_certificate.subject
    assert signer.intermediate_certificate.issuer == signer.root_certificate.subject
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["sns.amazonaws.com"]


def test_raw_delivery_request_is_unsigned_with_the_sns_headers() -> None:
    signer = sns_test_signer()
    webhook = signer.raw_delivery({"eventType": "Open"}, message_id="m-1")
    assert json.loads(webhook.body) == {"eventType": "Open"}
    assert webhook.headers["x-amz-sns-rawdelivery"] == "true"
    assert webhook.headers["x-amz-sns-message-id"] == "m-1"
    assert webhook.headers["x-amz-sns-topic-arn"] == signer.topic_arn
    assert b"Signature" not in webhook.body
