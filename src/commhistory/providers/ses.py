"""Amazon SES event and feedback notifications delivered by Amazon SNS over HTTPS.

SNS POSTs a JSON envelope (``Type``: ``Notification``,
``SubscriptionConfirmation`` or ``UnsubscribeConfirmation``) signed with
RSA: ``SignatureVersion`` ``"1"`` is SHA1withRSA, ``"2"`` SHA256withRSA, over
one ``Key``/``Value`` line pair per envelope field in a fixed order. The
signing certificate is fetched from ``SigningCertURL``, which must be
``https://sns.<region>.amazonaws.com/...pem`` (anything else is refused before
any network access), through an injectable :data:`CertificateFetcher`; the
default :class:`CachingCertificateFetcher` keeps certificates in memory.
Only topics in the ``topic_arns`` allow-list are accepted, and the signed
``Timestamp`` must be within the tolerance window.

The signing certificate is trusted because it was fetched over HTTPS from an
SNS host (the TLS connection validates that host's certificate chain); its own
chain is not validated by default, since SNS serves the signing certificate
without its intermediates and the adapter makes no other network request (AWS's
own SDKs check the same things). Give ``certificate_roots`` (and the issuing
``certificate_intermediates``) to validate the chain offline as well, with
:mod:`cryptography.x509.verification`: the certificate must then chain to one
of the roots, be valid now, be fit for TLS servers and name an SNS signing host.

With *raw message delivery* turned on for the subscription, SNS posts the bare
message (``x-amz-sns-rawdelivery: true``) without the envelope, and so without
any signature: such a request cannot be verified and is refused with
:class:`SnsRawDeliveryError`, unless the adapter is built with
``allow_raw_delivery=True`` (then only the ``x-amz-sns-topic-arn`` header is
checked against the allow-list, and the endpoint must be protected some other
way).

A verified ``SubscriptionConfirmation`` produces no records; its
``SubscribeURL`` (checked to be an SNS endpoint) is in
:attr:`~commhistory.providers.WebhookResult.subscribe_url` and is passed to
``confirm_subscription`` when one is configured.

Each ``Notification`` carries one SES notification (event publishing's
``eventType`` or feedback's ``notificationType``); it becomes one event per
recipient, linked by ``provider="ses"`` + ``mail.messageId``. The dedupe key
is the SNS ``MessageId`` (stable across SNS retries) and the recipient's index.
Send, reject and rendering-failure events, which have no recipient list, give
one event per ``mail.destination``; opens and clicks take the destination when
there is exactly one. SES's one-time "Successfully validated SNS topic"
notification (plain text) produces nothing.
A raw-delivered message (when allowed) is parsed the same way, its SNS message
id read from the ``x-amz-sns-message-id`` header, so it dedupes against the
same message delivered with its envelope.

SES email receiving publishes ``Received`` notifications to SNS as well: each
becomes an inbound :class:`~commhistory.Message` on the email channel (id
``ses:<mail.messageId>``). The sender is the first ``commonHeaders.from``
address (else ``mail.source``), resolved through the ``contact_resolver``;
the subject is ``commonHeaders.subject`` and ``sent_at`` the ``Date`` header
(else when SES received it). Only an SNS *action* carries the email itself
(``content``, MIME, UTF-8 or base64 as the action's ``encoding`` says): its
plain-text body becomes the message body and its attachments' name, type and
size go to ``metadata["attachments"]``. Other actions' notifications (S3,
Lambda...) carry headers only, so the message has no body. The content is
never kept in ``provider_raw``; the verdicts and headers are.

.. versionadded:: 0.1.0
.. versionchanged:: 0.3.0
   Raw message delivery is refused with :class:`SnsRawDeliveryError` unless
   allowed; optional offline chain validation (``certificate_roots``).
.. versionchanged:: 0.4.0
   Recipients from ``mail.destination``; the topic validation notice is ignored;
   ``Received`` notifications (email receiving) become inbound messages.
"""

from __future__ import annotations

import base64
import binascii
import collections
import re
import threading
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from email.utils import parseaddr
from typing import Any, ClassVar, Final, Protocol, runtime_checkable
from urllib.parse import urlsplit

import cryptography.x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509 import verification

from commhistory.errors import InvalidInputError, PayloadError, SignatureError
from commhistory.model import BounceClass, Event, EventType, Message, Record
from commhistory.providers._shared import tagged, unknown_event
from commhistory.providers.base import (
    Attachment,
    WebhookAdapter,
    WebhookRequest,
    as_object,
    bounce_details,
    decode_json,
    email_address,
    get_mapping,
    get_str,
    iso_time,
    json_type,
    mail_date,
    mime_parts,
    optional_email,
    require_str,
)
from commhistory.providers.registry import (
    ProviderSpec,
    SignedRequest,
    json_body,
    register_provider,
)

__all__ = [
    "BOUNCE_CLASSES",
    "EVENT_TYPES",
    "PROVIDER",
    "RAW_DELIVERY_HEADER",
    "RECEIVED",
    "CachingCertificateFetcher",
    "CertificateFetcher",
    "SesAdapter",
    "SnsRawDeliveryError",
    "check_sns_url",
    "sns_string_to_sign",
]

RAW_DELIVERY_HEADER: Final = "x-amz-sns-rawdelivery"
"""The header SNS sets to ``true`` on a raw-delivered (unsigned) message."""

_MESSAGE_ID_HEADER: Final = "x-amz-sns-message-id"
_TOPIC_HEADER: Final = "x-amz-sns-topic-arn"
_TYPE_HEADER: Final = "x-amz-sns-message-type"
_SIGNING_NAME: Final = re.compile(r"sns(-signing\.[a-z0-9-]+|-[a-z0-9-]+)?\.amazonaws\.com(\.cn)?")
"""DNS names of SNS signing certificates (``sns.amazonaws.com``, ``sns-signing.<region>...``)."""


class SnsRawDeliveryError(SignatureError):
    """An SNS message arrived by raw message delivery, which carries no signature.

    Raw delivery strips the SNS envelope, and the signature with it, so the
    adapter cannot tell the message came from SNS. Turn raw message delivery
    off for the subscription, or build the adapter with
    ``allow_raw_delivery=True`` and authenticate the endpoint another way.

    .. versionadded:: 0.3.0
    """


CertificateFetcher = Callable[[str], bytes]
"""Returns the PEM bytes of the certificate at an (already checked) SNS URL."""

EVENT_TYPES: Final[Mapping[str, EventType]] = {
    "Send": EventType.QUEUED,
    "Delivery": EventType.DELIVERED,
    "Bounce": EventType.BOUNCED,
    "Complaint": EventType.COMPLAINED,
    "Reject": EventType.REJECTED,
    "Open": EventType.OPENED,
    "Click": EventType.CLICKED,
    "DeliveryDelay": EventType.DEFERRED,
    "Rendering Failure": EventType.FAILED,
    "Subscription": EventType.UNSUBSCRIBED,
}
"""SES ``eventType``/``notificationType`` values; any other is a dead letter."""

BOUNCE_CLASSES: Final[Mapping[tuple[str, str], BounceClass]] = {
    ("Permanent", "General"): BounceClass.HARD,
    ("Permanent", "NoEmail"): BounceClass.HARD,
    ("Permanent", "Suppressed"): BounceClass.HARD,
    ("Permanent", "OnAccountSuppressionList"): BounceClass.HARD,
    ("Transient", "General"): BounceClass.SOFT,
    ("Transient", "MailboxFull"): BounceClass.SOFT,
    ("Transient", "MessageTooLarge"): BounceClass.SOFT,
    ("Transient", "ContentRejected"): BounceClass.BLOCK,
    ("Transient", "AttachmentRejected"): BounceClass.BLOCK,
}
"""Bounce classes by SES ``(bounceType, bounceSubType)``; others use the SMTP diagnostic."""

# Where each notification type keeps its details, and its list of recipients.
_DETAIL: Final[Mapping[str, tuple[str, str | None]]] = {
    "Bounce": ("bounce", "bouncedRecipients"),
    "Complaint": ("complaint", "complainedRecipients"),
    "Delivery": ("delivery", "recipients"),
    "DeliveryDelay": ("deliveryDelay", "delayedRecipients"),
    "Open": ("open", None),
    "Click": ("click", None),
    "Reject": ("reject", None),
    "Send": ("send", None),
    "Rendering Failure": ("failure", None),
    "Subscription": ("subscription", None),
}

RECEIVED: Final = "Received"
"""The ``notificationType`` of an email SES received (email receiving).

.. versionadded:: 0.4.0
"""

_PER_DESTINATION: Final = frozenset({"Send", "Reject", "Rendering Failure"})
"""Message-level events without a recipient list: one event per ``mail.destination``."""

_TOPIC_VALIDATED: Final = "Successfully validated SNS topic"
"""How SES's one-time test notification (a plain-text ``Message``) begins."""

_CONFIRMATION_FIELDS: Final = (
    "Message",
    "MessageId",
    "SubscribeURL",
    "Timestamp",
    "Token",
    "TopicArn",
    "Type",
)
_SIGNED_FIELDS: Final[Mapping[str, tuple[str, ...]]] = {
    "SubscriptionConfirmation": _CONFIRMATION_FIELDS,
    "UnsubscribeConfirmation": _CONFIRMATION_FIELDS,
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
}
_SNS_HOST: Final = re.compile(r"sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?")
_HASHES: Final[Mapping[str, Callable[[], hashes.HashAlgorithm]]] = {
    "1": hashes.SHA1,
    "2": hashes.SHA256,
}


def check_sns_url(url: object, *, field: str, pem: bool = False) -> str:
    """Check that *url* is an HTTPS URL on an SNS endpoint host.

    Args:
        url: The URL from the envelope.
        field: The envelope field, for the error.
        pem: Also require the path to end in ``.pem`` (certificate URLs).

    Returns:
        The URL.

    Raises:
        SignatureError: It is not ``https://sns.<region>.amazonaws.com/...``.
    """
    if not isinstance(url, str):
        raise SignatureError(f"{field}: missing")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise SignatureError(f"{field}: not a URL") from None
    host = parts.hostname or ""
    ok = (
        parts.scheme == "https"
        and port is None
        and "@" not in parts.netloc
        and _SNS_HOST.fullmatch(host) is not None
        and parts.netloc == host
    )
    if ok and pem:
        ok = parts.path.endswith(".pem") and not parts.query and not parts.fragment
    if not ok:
        shape = "https://sns.<region>.amazonaws.com/...pem" if pem else "https://sns.<region>..."
        raise SignatureError(f"{field}: not an Amazon SNS URL (expected {shape})")
    return url


def sns_string_to_sign(envelope: Mapping[str, Any]) -> bytes:
    """Return the bytes SNS signs for an envelope.

    Raises:
        SignatureError: The message type is unknown or a signed field is missing.
    """
    kind = envelope.get("Type")
    names = _SIGNED_FIELDS.get(kind) if isinstance(kind, str) else None
    if names is None:
        raise SignatureError("Type: not an SNS message type")
    parts: list[str] = []
    for name in names:
        value = envelope.get(name)
        if value is None and name == "Subject":
            continue
        if not isinstance(value, str):
            raise SignatureError(f"{name}: missing from the SNS message")
        parts.append(f"{name}\n{value}\n")
    return "".join(parts).encode("utf-8")


def _urlopen_fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - URL checked
        data: bytes = response.read(64 * 1024)
    return data


class CachingCertificateFetcher:
    """A :data:`CertificateFetcher` that keeps fetched certificates in memory.

    Args:
        fetch: Fetches the PEM bytes of a URL (default: an HTTPS GET).
        max_entries: How many certificates to keep (least recently used go first).

    .. versionadded:: 0.1.0
    """

    def __init__(self, fetch: CertificateFetcher = _urlopen_fetch, *, max_entries: int = 16):
        self._fetch = fetch
        self._max = max_entries
        self._cache: collections.OrderedDict[str, bytes] = collections.OrderedDict()
        self._lock = threading.Lock()
        self.fetches = 0

    def __call__(self, url: str) -> bytes:
        """Return the PEM at *url*, fetching it only the first time."""
        with self._lock:
            if url in self._cache:
                self._cache.move_to_end(url)
                return self._cache[url]
        data = self._fetch(url)
        with self._lock:
            self.fetches += 1
            self._cache[url] = data
            while len(self._cache) > self._max:
                self._cache.popitem(last=False)
        return data


class _RawDelivery(dict[str, Any]):
    """An envelope made up for a raw-delivered message (so its records say so)."""

    __slots__ = ()


def _is_raw_delivery(request: WebhookRequest) -> bool:
    return (request.header(RAW_DELIVERY_HEADER) or "").strip().lower() == "true"


def _looks_like_a_bare_notification(envelope: Mapping[str, Any]) -> bool:
    """An SES notification without its SNS envelope (raw delivery without the header)."""
    return (
        "Type" not in envelope
        and "Signature" not in envelope
        and ("mail" in envelope or "eventType" in envelope or "notificationType" in envelope)
    )


class SesAdapter(WebhookAdapter):
    """Verifies SNS messages and parses the SES notifications they carry.

    Args:
        topic_arns: The SNS topics accepted (at least one).
        certificate_fetcher: Fetches signing certificates (default: a caching
            HTTPS fetcher; inject one in tests, there is no network there).
        confirm_subscription: Called with the ``SubscribeURL`` of a verified
            subscription confirmation (e.g. a function that GETs it).
        allow_raw_delivery: Accept raw-delivered messages, which carry no
            signature (only their topic header is checked). Off by default:
            they are refused with :class:`SnsRawDeliveryError`.
        certificate_roots: Trust anchors; when given, the signing certificate
            must chain to one of them (validated offline).
        certificate_intermediates: Intermediate CA certificates to build that
            chain with (SNS serves the signing certificate alone).
        **options: :class:`~commhistory.providers.base.WebhookAdapter` options.
            SNS signs its original publish time, and retries keep it: raise
            ``tolerance`` if your endpoint may be down longer than 5 minutes.

    Raises:
        InvalidInputError: ``topic_arns`` is empty, or ``certificate_roots`` is
            given but empty.

    .. versionadded:: 0.1.0
    """

    name: ClassVar[str] = "ses"

    def __init__(
        self,
        topic_arns: Iterable[str],
        *,
        certificate_fetcher: CertificateFetcher | None = None,
        confirm_subscription: Callable[[str], None] | None = None,
        allow_raw_delivery: bool = False,
        certificate_roots: Iterable[cryptography.x509.Certificate] | None = None,
        certificate_intermediates: Iterable[cryptography.x509.Certificate] = (),
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self._topics = frozenset(topic_arns)
        if not self._topics:
            raise InvalidInputError(field="topic_arns", reason="give at least one topic ARN")
        self._fetch = certificate_fetcher or CachingCertificateFetcher()
        self._confirm = confirm_subscription
        self._allow_raw = allow_raw_delivery
        self._store: verification.Store | None = None
        if certificate_roots is not None:
            roots = list(certificate_roots)
            if not roots:
                raise InvalidInputError(
                    field="certificate_roots", reason="give at least one root certificate"
                )
            self._store = verification.Store(roots)
        self._intermediates = list(certificate_intermediates)

    # ------------------------------------------------------------------ verification

    def _verify(self, request: WebhookRequest) -> None:
        if _is_raw_delivery(request):
            self._verify_raw(request)
            return
        try:
            envelope = as_object(decode_json(request.body), field="<body>")
        except PayloadError as exc:
            raise SignatureError(f"not an SNS message ({exc.reason})") from None
        if _looks_like_a_bare_notification(envelope):
            raise SnsRawDeliveryError(
                "the body is an SES notification without its SNS envelope (raw message"
                " delivery), so it carries no signature and cannot be verified; turn raw"
                " message delivery off for this subscription"
            )
        topic = envelope.get("TopicArn")
        if topic not in self._topics:
            raise SignatureError("TopicArn: not in the allow-list of topics")
        version = envelope.get("SignatureVersion")
        algorithm = _HASHES.get(version) if isinstance(version, str) else None
        if algorithm is None:
            raise SignatureError("SignatureVersion: expected '1' or '2'")
        cert_url = check_sns_url(envelope.get("SigningCertURL"), field="SigningCertURL", pem=True)
        signature = envelope.get("Signature")
        if not isinstance(signature, str):
            raise SignatureError("Signature: missing")
        try:
            raw_signature = base64.b64decode(signature, validate=True)
        except (binascii.Error, ValueError):
            raise SignatureError("Signature: not valid base64") from None
        data = sns_string_to_sign(envelope)
        key = self._public_key(cert_url)
        try:
            key.verify(raw_signature, data, padding.PKCS1v15(), algorithm())
        except InvalidSignature:
            raise SignatureError(
                "signature does not match the message (altered, or not signed by SNS)"
            ) from None
        try:
            sent = iso_time(envelope.get("Timestamp"), field="Timestamp")
        except PayloadError as exc:
            raise SignatureError(f"Timestamp: {exc.reason}") from None
        self.check_timestamp(sent.timestamp(), what="Timestamp")
        if envelope.get("Type") == "SubscriptionConfirmation":
            check_sns_url(envelope.get("SubscribeURL"), field="SubscribeURL")

    def _verify_raw(self, request: WebhookRequest) -> None:
        """A raw-delivered message: refused unless allowed; then only its headers are checked."""
        if not self._allow_raw:
            raise SnsRawDeliveryError(
                f"{RAW_DELIVERY_HEADER}: raw message delivery strips the SNS envelope and"
                " its signature, so the message cannot be verified; turn raw message"
                " delivery off for this subscription (or pass allow_raw_delivery=True and"
                " authenticate the endpoint another way)"
            )
        if request.header(_TOPIC_HEADER) not in self._topics:
            raise SignatureError(f"{_TOPIC_HEADER}: not in the allow-list of topics")
        kind = request.header(_TYPE_HEADER)
        if kind is not None and kind != "Notification":
            raise SignatureError(f"{_TYPE_HEADER}: only notifications are delivered raw")
        if not request.header(_MESSAGE_ID_HEADER):
            raise SignatureError(f"{_MESSAGE_ID_HEADER}: missing")

    def _public_key(self, url: str) -> rsa.RSAPublicKey:
        try:
            pem = self._fetch(url)
        except OSError as exc:
            raise SignatureError(
                f"SigningCertURL: the certificate cannot be fetched ({type(exc).__name__})"
            ) from None
        try:
            certs = x509.load_pem_x509_certificates(pem)
        except ValueError:
            raise SignatureError("SigningCertURL: not a PEM certificate") from None
        cert = certs[0]
        now = datetime.fromtimestamp(self.clock(), tz=UTC)
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise SignatureError("SigningCertURL: the certificate is not valid now")
        if self._store is not None:
            self._check_chain(self._store, cert, certs[1:], now)
        key = cert.public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            raise SignatureError("SigningCertURL: not an RSA certificate")
        return key

    def _check_chain(
        self,
        store: verification.Store,
        cert: x509.Certificate,
        extra: Sequence[x509.Certificate],
        now: datetime,
    ) -> None:
        """Validate the certificate's chain to the configured roots, offline."""
        try:
            names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
            dns_names = names.value.get_values_for_type(x509.DNSName)
        except x509.ExtensionNotFound:
            dns_names = []
        name = next((n for n in dns_names if _SIGNING_NAME.fullmatch(n.lower())), None)
        if name is None:
            raise SignatureError("SigningCertURL: the certificate names no SNS signing host")
        verifier = (
            verification.PolicyBuilder()
            .store(store)
            .time(now)
            .build_server_verifier(x509.DNSName(name))
        )
        try:
            verifier.verify(cert, [*extra, *self._intermediates])
        except verification.VerificationError as exc:
            raise SignatureError(
                f"SigningCertURL: the certificate does not chain to a trusted root ({exc})"
            ) from None

    # ------------------------------------------------------------------ parsing

    def _decode(self, request: WebhookRequest) -> Any:
        if not _is_raw_delivery(request):
            return decode_json(request.body)
        if not self._allow_raw:
            raise PayloadError(
                field=RAW_DELIVERY_HEADER, reason="raw message delivery is not allowed"
            )
        message_id = request.header(_MESSAGE_ID_HEADER)
        if not message_id:
            raise PayloadError(field=_MESSAGE_ID_HEADER, reason="required")
        try:
            text = request.body.decode("utf-8")
        except UnicodeDecodeError:
            raise PayloadError(field="<body>", reason="not valid UTF-8") from None
        return _RawDelivery(
            Type="Notification",
            MessageId=message_id,
            TopicArn=request.header(_TOPIC_HEADER),
            Message=text,
        )

    def _events(self, payload: Any, request: WebhookRequest) -> Sequence[Any]:
        envelope = as_object(payload, field="<body>")
        kind = envelope.get("Type")
        if kind not in _SIGNED_FIELDS:
            raise PayloadError(field="Type", reason="not an SNS message type")
        return [envelope] if kind == "Notification" else []

    def _subscribe_url(self, payload: Any) -> str | None:
        if isinstance(payload, Mapping) and payload.get("Type") == "SubscriptionConfirmation":
            url = payload.get("SubscribeURL")
            return url if isinstance(url, str) else None
        return None

    def _on_subscribe(self, url: str) -> None:
        if self._confirm is not None:
            self._confirm(url)

    def _parse_event(self, event: Any) -> list[Record]:
        envelope = as_object(event)
        sns_id = require_str(envelope, "MessageId")
        text = envelope.get("Message")
        if not isinstance(text, str):
            raise PayloadError(field="Message", reason=f"expected a string, got {json_type(text)}")
        if text.lstrip().startswith(_TOPIC_VALIDATED):
            return []  # SES's test notification when the topic is set up: nothing happened
        try:
            notification = as_object(decode_json(text.encode("utf-8")), field="Message")
        except PayloadError as exc:
            raise PayloadError(field="Message", reason=exc.reason) from None
        kind = get_str(notification, "eventType") or get_str(notification, "notificationType")
        if kind is None:
            raise PayloadError(field="Message.eventType", reason="required")
        if kind == RECEIVED:
            raw_delivery = isinstance(envelope, _RawDelivery)
            return [self._received(notification, sns_id, raw_delivery=raw_delivery)]
        mail = get_mapping(notification, "mail")
        message_id = get_str(mail, "messageId")
        if message_id is None:
            raise PayloadError(field="Message.mail.messageId", reason="required")
        type_ = EVENT_TYPES.get(kind)
        if type_ is None:
            raise unknown_event("Message.eventType", kind)
        detail_key, recipients_key = _DETAIL.get(kind, ("", None))
        detail = get_mapping(notification, detail_key) if detail_key else {}
        when_text = detail.get("timestamp") or mail.get("timestamp") or envelope.get("Timestamp")
        occurred_at = iso_time(when_text, field="timestamp")
        if recipients_key is not None:
            raw_recipients = detail.get(recipients_key)
            if not isinstance(raw_recipients, list) or not raw_recipients:
                raw_recipients = [None]
        else:
            raw_recipients = [None]
        if raw_recipients == [None]:
            # Open, click, send, reject: no recipient list of their own. A message-level
            # event concerns every destination; an open or click the one destination, when
            # there is one (with several, which recipient acted is not said).
            destination = mail.get("destination")
            single = isinstance(destination, list) and len(destination) == 1
            if (
                isinstance(destination, list)
                and destination
                and (kind in _PER_DESTINATION or (single and recipients_key is None))
            ):
                raw_recipients = list(destination)
        kept: dict[str, Any] = {"sns_message_id": sns_id, "notification": dict(notification)}
        if isinstance(envelope, _RawDelivery):
            kept["sns_raw_delivery"] = True  # arrived unsigned (allow_raw_delivery)
        # SES adds tags of its own (``ses:source-ip``, ``ses:from-domain``...): only the
        # sender's are kept as tags.
        raw = tagged(
            {"provider_raw": kept}, mail.get("tags"), "Message.mail.tags", skip=("ses:", "aws:")
        )
        if type_ is EventType.UNSUBSCRIBED:
            prefs = get_mapping(detail, "newTopicPreferences")
            if prefs.get("unsubscribeAll") is not True:
                type_ = EventType.SUBSCRIBED
        records: list[Record] = []
        for index, recipient in enumerate(raw_recipients):
            key = f"{sns_id}:{index}"
            records.append(
                self._event(type_, key, message_id, occurred_at, detail, recipient, raw)
            )
        return records

    def _received(
        self, notification: Mapping[str, Any], sns_id: str, *, raw_delivery: bool
    ) -> Message:
        """An email SES received: an inbound message (content only with an SNS action)."""
        mail = get_mapping(notification, "mail")
        message_id = get_str(mail, "messageId")
        if message_id is None:
            raise PayloadError(field="Message.mail.messageId", reason="required")
        common = get_mapping(mail, "commonHeaders")
        senders = common.get("from")
        given = senders[0] if isinstance(senders, list) and senders else None
        if isinstance(given, str) and given:
            sender = email_address(parseaddr(given)[1], field="Message.mail.commonHeaders.from")
        else:
            sender = email_address(get_str(mail, "source"), field="Message.mail.source")
        action = get_mapping(get_mapping(notification, "receipt"), "action")
        content = notification.get("content")
        body: str | None = None
        attachments: tuple[Attachment, ...] = ()
        if content is not None:
            if not isinstance(content, str):
                raise PayloadError(
                    field="Message.content", reason=f"expected a string, got {json_type(content)}"
                )
            if (get_str(action, "encoding") or "").upper() == "BASE64":
                try:
                    data = base64.b64decode(content, validate=True)
                except (binascii.Error, ValueError):
                    raise PayloadError(field="Message.content", reason="not base64") from None
            else:
                data = content.encode("utf-8", "surrogatepass")
            _, body, attachments = mime_parts(data)
        sent_at = mail_date(get_str(common, "date")) or iso_time(
            mail.get("timestamp"), field="Message.mail.timestamp"
        )
        kept: dict[str, Any] = {
            "sns_message_id": sns_id,
            "notification": {k: v for k, v in notification.items() if k != "content"},
        }
        if raw_delivery:
            kept["sns_raw_delivery"] = True
        return self.inbound_email(
            sender=sender,
            key=message_id,
            provider_message_id=message_id,
            sent_at=sent_at,
            subject=get_str(common, "subject"),
            body=body,
            attachments=attachments,
            raw=kept,
        )

    def _event(  # noqa: PLR0917 - private
        self,
        type_: EventType,
        key: str,
        message_id: str,
        occurred_at: datetime,
        detail: Mapping[str, Any],
        recipient: object,
        raw: Mapping[str, Any],
    ) -> Event:
        event_id, provider_event_id = self.ids(key)
        address: str | None = None
        status_code: str | None = None
        bounce: BounceClass | None = None
        reason: str | None = None
        if isinstance(recipient, str):
            address = optional_email(recipient)
        elif isinstance(recipient, Mapping):
            address = optional_email(recipient.get("emailAddress"))
            diagnostic = recipient.get("diagnosticCode")
            reason = diagnostic if isinstance(diagnostic, str) else None
            if type_ in (EventType.BOUNCED, EventType.DEFERRED):
                given = None
                if type_ is EventType.BOUNCED:
                    given = BOUNCE_CLASSES.get(
                        (str(detail.get("bounceType")), str(detail.get("bounceSubType")))
                    )
                status_code, found = bounce_details(recipient.get("status"), reason, bounce=given)
                bounce = found if type_ is EventType.BOUNCED else None
        if type_ is EventType.BOUNCED and bounce is None:
            bounce = BounceClass.UNDETERMINED
        if type_ is EventType.DELIVERED and reason is None:
            smtp = detail.get("smtpResponse")
            reason = smtp if isinstance(smtp, str) else None
        url = get_str(detail, "link") if type_ is EventType.CLICKED else None
        return Event(
            event_id=event_id,
            type=type_,
            occurred_at=occurred_at,
            provider=self.name,
            provider_message_id=message_id,
            provider_event_id=provider_event_id,
            address=address,
            status_code=status_code,
            bounce=bounce,
            reason=reason if reason is not None else get_str(detail, "reason"),
            url=url,
            user_agent=get_str(detail, "userAgent"),
            ip=get_str(detail, "ipAddress"),
            metadata=raw,
        )


@runtime_checkable
class _SnsSigner(Protocol):
    """What signs SNS envelopes in tests: :class:`commhistory.testing.SnsTestSigner`."""

    def sign(self, envelope: Mapping[str, Any]) -> dict[str, Any]: ...

    def notification(self, message: Any, *, timestamp: float | None = None) -> dict[str, Any]: ...


def _from_secret(secret: str | None, /, **options: Any) -> SesAdapter:
    # The topic ARN; SesAdapter fetches the signing certificate from Amazon.
    return SesAdapter([secret or "-"], **options)


def _sign(events: Any, secret: Any, /, *, url: str, timestamp: float) -> SignedRequest:
    # events: the SES notification object, or an SNS envelope without signature.
    if not isinstance(secret, _SnsSigner):
        raise InvalidInputError(field="secret", reason="give an SnsTestSigner for 'ses'")
    if isinstance(events, Mapping) and "Type" in events:
        envelope = secret.sign(events)
    else:
        envelope = secret.notification(events, timestamp=timestamp)
    headers = {
        "Content-Type": "text/plain; charset=UTF-8",
        _TYPE_HEADER: str(envelope["Type"]),
    }
    return SignedRequest(body=json_body(envelope), headers=headers, url=url)


PROVIDER: Final = register_provider(
    ProviderSpec(adapter=SesAdapter, from_secret=_from_secret, signer=_sign)
)
"""Amazon SES's entry in the provider registry.

``--secret`` is the SNS topic ARN; tests sign with :func:`commhistory.testing.sns_test_signer`.

.. versionadded:: 0.4.0
"""
