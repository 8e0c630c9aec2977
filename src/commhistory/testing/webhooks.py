"""Signed webhook requests that a real commhistory endpoint accepts.

Downstream systems use these to test their webhook endpoints end to end: sign
a payload the way the provider would, POST it, and check what was stored.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import urlencode, urlsplit

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from commhistory.errors import InvalidInputError
from commhistory.providers.base import WebhookRequest
from commhistory.providers.line import line_signature
from commhistory.providers.sendgrid import SIGNATURE_HEADER as SENDGRID_SIGNATURE
from commhistory.providers.sendgrid import TIMESTAMP_HEADER as SENDGRID_TIMESTAMP
from commhistory.providers.ses import sns_string_to_sign
from commhistory.providers.twilio import twilio_body_url, twilio_signature

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
    ``certificate_fetcher`` and :attr:`topic_arn` in its ``topic_arns``.

    Attributes:
        private_key: Signs envelopes.
        certificate_pem: The self-signed certificate of the key.
        cert_url: The ``SigningCertURL`` put in envelopes.
        topic_arn: The ``TopicArn`` put in envelopes.
        version: The ``SignatureVersion`` used (``"1"`` SHA1, ``"2"`` SHA256).
    """

    private_key: rsa.RSAPrivateKey = attrs.field(repr=False)
    certificate_pem: bytes = attrs.field(repr=False)
    cert_url: str
    topic_arn: str
    version: str = "2"

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
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    start = datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start.replace(year=2100))
        .sign(key, hashes.SHA256())
    )
    return SnsTestSigner(
        private_key=key,
        certificate_pem=cert.public_bytes(serialization.Encoding.PEM),
        cert_url=f"https://sns.{region}.amazonaws.com/SimpleNotificationService-test.pem",
        topic_arn=topic_arn or f"arn:aws:sns:{region}:123456789012:ses-events",
        version=version,
    )


def _iso(when: float) -> str:
    moment = datetime.datetime.fromtimestamp(when, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _uuid() -> str:
    import uuid  # noqa: PLC0415

    return str(uuid.uuid4())


def _json(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def signed_webhook(
    provider: str,
    events: Any,
    secret: Any,
    *,
    url: str | None = None,
    timestamp: float | None = None,
) -> SignedWebhook:
    """Build a request signed the way *provider* signs its webhooks.

    Args:
        provider: ``"sendgrid"``, ``"twilio"``, ``"line"``, ``"mailgun"``,
            ``"postmark"`` or ``"ses"``.
        events: The provider payload: SendGrid a list of events; Twilio a dict
            of POST parameters (a form post), or a list of Event Streams events
            (a JSON body, signed with the ``bodySHA256`` rule; the returned
            ``url`` carries ``bodySHA256``: POST to it); LINE a list of events (or the whole body);
            Mailgun the ``event-data`` object; Postmark the record object; SES
            the SES notification object (or an SNS envelope without signature).
        secret: What the provider signs with: SendGrid a :class:`SendGridKeys`
            or EC private key; Twilio the auth token; LINE the channel secret;
            Mailgun the signing key; Postmark ``"user:password"``; SES an
            :class:`~commhistory.testing.SnsTestSigner`.
        url: The URL the request is sent to (Twilio signs it).
        timestamp: The signing time in epoch seconds (default: now).

    Returns:
        The signed request.

    Raises:
        InvalidInputError: ``field="provider"``; the provider is unknown.
    """
    now = time.time() if timestamp is None else timestamp
    target = url or DEFAULT_URL.format(provider=provider)
    if provider == "sendgrid":
        key = secret.private_key if isinstance(secret, SendGridKeys) else secret
        if isinstance(key, str | bytes):
            data = key.encode() if isinstance(key, str) else key
            loaded = serialization.load_pem_private_key(data, password=None)
            assert isinstance(loaded, ec.EllipticCurvePrivateKey)
            key = loaded
        body = _json(events)
        stamp = str(int(now))
        signature = key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        headers = {
            "Content-Type": "application/json",
            SENDGRID_SIGNATURE: base64.b64encode(signature).decode("ascii"),
            SENDGRID_TIMESTAMP: stamp,
        }
        return SignedWebhook(provider=provider, body=body, headers=headers, url=target)
    if provider == "twilio":
        if isinstance(events, list):  # Event Streams: JSON, signed with bodySHA256
            body = _json(events)
            signed_url = twilio_body_url(target, body)
            headers = {
                "Content-Type": "application/json",
                "X-Twilio-Signature": twilio_signature(str(secret), signed_url, {}),
            }
            return SignedWebhook(provider=provider, body=body, headers=headers, url=signed_url)
        params = dict(events)
        body = urlencode(params, doseq=True).encode("utf-8")
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": twilio_signature(str(secret), target, params),
        }
        return SignedWebhook(provider=provider, body=body, headers=headers, url=target)
    if provider == "line":
        payload = (
            events if isinstance(events, Mapping) else {"destination": "U0", "events": events}
        )
        body = _json(payload)
        headers = {
            "Content-Type": "application/json",
            "X-Line-Signature": line_signature(str(secret), body),
        }
        return SignedWebhook(provider=provider, body=body, headers=headers, url=target)
    if provider == "mailgun":
        stamp = str(int(now))
        token = secrets.token_hex(25)
        mac = hmac.new(str(secret).encode(), (stamp + token).encode(), hashlib.sha256)
        payload = {
            "signature": {"timestamp": stamp, "token": token, "signature": mac.hexdigest()},
            "event-data": events,
        }
        headers = {"Content-Type": "application/json"}
        return SignedWebhook(provider=provider, body=_json(payload), headers=headers, url=target)
    if provider == "postmark":
        credentials = base64.b64encode(str(secret).encode("utf-8")).decode("ascii")
        headers = {"Content-Type": "application/json", "Authorization": f"Basic {credentials}"}
        return SignedWebhook(provider=provider, body=_json(events), headers=headers, url=target)
    if provider == "ses":
        if not isinstance(secret, SnsTestSigner):
            raise InvalidInputError(field="secret", reason="give an SnsTestSigner for 'ses'")
        if isinstance(events, Mapping) and "Type" in events:
            envelope = secret.sign(events)
        else:
            envelope = secret.notification(events, timestamp=now)
        headers = {
            "Content-Type": "text/plain; charset=UTF-8",
            "x-amz-sns-message-type": str(envelope["Type"]),
        }
        return SignedWebhook(provider=provider, body=_json(envelope), headers=headers, url=target)
    raise InvalidInputError(field="provider", reason="unknown provider")
