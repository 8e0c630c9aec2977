"""Signed webhook requests that a real commhistory endpoint accepts.

Downstream systems use these to test their webhook endpoints end to end: sign
a payload the way the provider would, POST it, and check what was stored.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import base64
import datetime
import json
import secrets
import time
import uuid
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import urlsplit

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from commhistory.errors import InvalidInputError, NotFoundError
from commhistory.providers.base import WebhookRequest
from commhistory.providers.registry import get_provider
from commhistory.providers.ses import sns_string_to_sign

__all__ = [
    "DEFAULT_URL",
    "SendGridKeys",
    "SignedWebhook",
    "SnsTestSigner",
    "sendgrid_keys",
    "signed_webhook",
    "sns_test_signer",
]

DEFAULT_URL: Final = "https://example.test/webhooks/{provider}"
"""The URL signed when none is given (Twilio signs the URL)."""


@attrs.frozen(kw_only=True)
class SignedWebhook:
    """A signed provider request: POST ``body`` with ``headers`` to ``url``.

    Attributes:
        provider: The provider's name.
        body: The raw body.
        headers: The headers to send (content type and signature).
        url: The URL the signature covers (where it matters) or a default.
    """

    provider: str
    body: bytes = attrs.field(repr=False)
    headers: Mapping[str, str] = attrs.field(repr=False)
    url: str

    @property
    def path(self) -> str:
        """The path and query string of :attr:`url`, what a framework's test client POSTs to.

        .. versionadded:: 0.3.0
        """
        parts = urlsplit(self.url)
        return f"{parts.path}?{parts.query}" if parts.query else parts.path

    def request(self) -> WebhookRequest:
        """Return it as a :class:`~commhistory.providers.WebhookRequest`."""
        return WebhookRequest(body=self.body, headers=self.headers, url=self.url)


@attrs.frozen(kw_only=True)
class SendGridKeys:
    """A P-256 key pair standing in for SendGrid's.

    Attributes:
        private_key: Signs test requests.
        public_key: The base64 DER public key, as SendGrid's settings show it;
            give it to :class:`~commhistory.providers.SendGridAdapter`.
    """

    private_key: ec.EllipticCurvePrivateKey = attrs.field(repr=False)
    public_key: str


def sendgrid_keys() -> SendGridKeys:
    """Generate a fresh SendGrid-style signing key pair."""
    private = ec.generate_private_key(ec.SECP256R1())
    der = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return SendGridKeys(private_key=private, public_key=base64.b64encode(der).decode("ascii"))


@attrs.frozen(kw_only=True)
class SnsTestSigner:
    """A stand-in for Amazon SNS: an RSA key, its certificate and where it "lives".

    Give :meth:`fetch` to :class:`~commhistory.providers.SesAdapter` as its
    ``certificate_fetcher`` and :attr:`topic_arn` in its ``topic_arns``. The
    certificate (``sns.amazonaws.com``, fit for TLS servers) is issued by a
    test intermediate CA under a test root, like SNS's: give
    :attr:`root_certificate` as ``certificate_roots`` and
    :attr:`intermediate_certificate` as ``certificate_intermediates`` to test
    chain validation.

    Attributes:
        private_key: Signs envelopes.
        certificate_pem: The certificate of the key (PEM, the leaf alone, as SNS serves it).
        cert_url: The ``SigningCertURL`` put in envelopes.
        topic_arn: The ``TopicArn`` put in envelopes.
        version: The ``SignatureVersion`` used (``"1"`` SHA1, ``"2"`` SHA256).
        root_certificate: The test root CA.
        intermediate_certificate: The test CA that issued :attr:`certificate_pem`.
    """

    private_key: rsa.RSAPrivateKey = attrs.field(repr=False)
    certificate_pem: bytes = attrs.field(repr=False)
    cert_url: str
    topic_arn: str
    version: str = "2"
    root_certificate: x509.Certificate | None = attrs.field(default=None, repr=False)
    intermediate_certificate: x509.Certificate | None = attrs.field(default=None, repr=False)

    def fetch(self, url: str) -> bytes:
        """A certificate fetcher serving only :attr:`cert_url` (no network)."""
        if url != self.cert_url:
            raise OSError("no such certificate")
        return self.certificate_pem

    def sign(self, envelope: Mapping[str, Any]) -> dict[str, Any]:
        """Return *envelope* with ``SignatureVersion``, ``SigningCertURL`` and ``Signature``."""
        out = dict(envelope)
        out.setdefault("SignatureVersion", self.version)
        out.setdefault("SigningCertURL", self.cert_url)
        # SNS signature version 1 is SHA1withRSA; we must be able to produce it.
        algorithm = hashes.SHA1() if out["SignatureVersion"] == "1" else hashes.SHA256()  # noqa: S303
        signature = self.private_key.sign(sns_string_to_sign(out), padding.PKCS1v15(), algorithm)
        out["Signature"] = base64.b64encode(signature).decode("ascii")
        return out

    def notification(self, message: Any, *, timestamp: float | None = None) -> dict[str, Any]:
        """Return a signed ``Notification`` envelope carrying *message* (JSON-encoded)."""
        when = time.time() if timestamp is None else timestamp
        return self.sign(
            {
                "Type": "Notification",
                "MessageId": str(_uuid()),
                "TopicArn": self.topic_arn,
                "Message": message if isinstance(message, str) else json.dumps(message),
                "Timestamp": _iso(when),
                "UnsubscribeURL": "https://sns.ap-northeast-1.amazonaws.com/?Action=Unsubscribe",
            }
        )

    def raw_delivery(
        self, message: Any, *, url: str | None = None, message_id: str | None = None
    ) -> SignedWebhook:
        """Return what SNS POSTs with raw message delivery on: the bare message, unsigned.

        The body is *message* (JSON-encoded unless a string) with SNS's
        ``x-amz-sns-*`` headers and ``x-amz-sns-rawdelivery: true``, and no
        signature: an adapter refuses it unless built with ``allow_raw_delivery=True``.

        .. versionadded:: 0.3.0
        """
        body = message if isinstance(message, str) else json.dumps(message)
        headers = {
            "Content-Type": "text/plain; charset=UTF-8",
            "x-amz-sns-message-type": "Notification",
            "x-amz-sns-message-id": message_id or _uuid(),
            "x-amz-sns-topic-arn": self.topic_arn,
            "x-amz-sns-subscription-arn": f"{self.topic_arn}:{_uuid()}",
            "x-amz-sns-rawdelivery": "true",
        }
        target = url or DEFAULT_URL.format(provider="ses")
        return SignedWebhook(provider="ses", body=body.encode(), headers=headers, url=target)

    def subscription_confirmation(self, *, timestamp: float | None = None) -> dict[str, Any]:
        """Return a signed ``SubscriptionConfirmation`` envelope."""
        when = time.time() if timestamp is None else timestamp
        region = self.topic_arn.split(":")[3] if self.topic_arn.count(":") >= 5 else "us-east-1"
        token = secrets.token_hex(32)
        return self.sign(
            {
                "Type": "SubscriptionConfirmation",
                "MessageId": str(_uuid()),
                "Token": token,
                "TopicArn": self.topic_arn,
                "Message": "You have chosen to subscribe to the topic. Visit the SubscribeURL.",
                "SubscribeURL": f"https://sns.{region}.amazonaws.com/?Action=ConfirmSubscription"
                f"&TopicArn={self.topic_arn}&Token={token}",
                "Timestamp": _iso(when),
            }
        )


def sns_test_signer(
    *,
    region: str = "ap-northeast-1",
    topic_arn: str | None = None,
    version: str = "2",
) -> SnsTestSigner:
    """Generate an RSA key and certificate standing in for Amazon SNS's.

    Args:
        region: The region in the certificate URL and default topic.
        topic_arn: The topic (default ``arn:aws:sns:<region>:123456789012:ses-events``).
        version: The ``SignatureVersion`` to sign with.
    """
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    root_key = ec.generate_private_key(ec.SECP256R1())
    ca_key = ec.generate_private_key(ec.SECP256R1())
    root = _ca_certificate("commhistory test root", root_key, None, root_key)
    intermediate = _ca_certificate("commhistory test SNS CA", ca_key, root, root_key)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    cert = (
        _builder(name, intermediate.subject, key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("sns.amazonaws.com")]), False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return SnsTestSigner(
        private_key=key,
        certificate_pem=cert.public_bytes(serialization.Encoding.PEM),
        cert_url=f"https://sns.{region}.amazonaws.com/SimpleNotificationService-test.pem",
        topic_arn=topic_arn or f"arn:aws:sns:{region}:123456789012:ses-events",
        version=version,
        root_certificate=root,
        intermediate_certificate=intermediate,
    )


_START: Final = datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC)


def _builder(subject: x509.Name, issuer: x509.Name, key: Any) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(_START)
        .not_valid_after(_START.replace(year=2100))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key), critical=False)
    )


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=not ca,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _ca_certificate(
    common_name: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    builder = (
        _builder(subject, issuer.subject if issuer else subject, key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _iso(when: float) -> str:
    moment = datetime.datetime.fromtimestamp(when, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _uuid() -> str:
    return str(uuid.uuid4())


def signed_webhook(
    provider: str,
    events: Any,
    secret: Any,
    *,
    url: str | None = None,
    timestamp: float | None = None,
) -> SignedWebhook:
    """Build a request signed the way *provider* signs its webhooks.

    The provider is looked up in the registry
    (:func:`~commhistory.providers.get_provider`) and signs with its
    :attr:`~commhistory.providers.ProviderSpec.signer`, so a third-party
    provider that registers one works here too.

    Args:
        provider: ``"sendgrid"``, ``"twilio"``, ``"line"``, ``"mailgun"``,
            ``"postmark"``, ``"ses"`` or any other registered provider.
        events: The provider payload: SendGrid a list of events; Twilio a dict
            of POST parameters (a form post), or a list of Event Streams events
            (a JSON body, signed with the ``bodySHA256`` rule; the returned
            ``url`` carries ``bodySHA256``: POST to it); LINE a list of events (or the whole body);
            Mailgun the ``event-data`` object; Postmark the record object; SES
            the SES notification object (or an SNS envelope without signature);
            ``sendgrid-inbound`` and ``mailgun-inbound`` the form fields (a
            ``(filename, content_type, bytes)`` value is a file); ``amazon-connect``
            a list of contact records (a Firehose delivery); Brevo and Mailjet an
            event or a list of them; SparkPost the list of ``{"msys": ...}``
            objects; Mandrill the list of events; Resend the event object.
        secret: What the provider signs with: SendGrid a :class:`SendGridKeys`
            or EC private key; Twilio the auth token; LINE the channel secret;
            Mailgun the signing key; Postmark ``"user:password"``; SES an
            :class:`~commhistory.testing.SnsTestSigner`; ``sendgrid-inbound`` as
            SendGrid; ``mailgun-inbound`` the signing key; ``amazon-connect`` the
            Firehose access key; Brevo, Mailjet and SparkPost ``"user:password"``
            (Brevo and SparkPost also ``"Bearer TOKEN"``); Mandrill the webhook
            key; Resend the ``whsec_...`` signing secret.
        url: The URL the request is sent to (Twilio signs it).
        timestamp: The signing time in epoch seconds (default: now).

    Returns:
        The signed request.

    Raises:
        InvalidInputError: ``field="provider"``; the provider is unknown or
            registered no signer. ``field="secret"``; the provider cannot sign
            with *secret*.
        ~commhistory.providers.ProviderLoadError: The provider's entry point
            cannot be loaded.
    """
    try:
        spec = get_provider(provider)
    except NotFoundError:
        raise InvalidInputError(field="provider", reason="unknown provider") from None
    if spec.signer is None:
        raise InvalidInputError(field="provider", reason="the provider registered no signer")
    now = time.time() if timestamp is None else timestamp
    target = url or DEFAULT_URL.format(provider=provider)
    signed = spec.signer(events, secret, url=target, timestamp=now)
    return SignedWebhook(
        provider=provider, body=signed.body, headers=signed.headers, url=signed.url
    )
