"""Provider webhook adapters: each provider's dialect to canonical records.

One module per provider over a shared base (:mod:`commhistory.providers.base`):

* :class:`SendGridAdapter`: SendGrid Event Webhook (ECDSA P-256);
* :class:`TwilioAdapter`: Twilio SMS status callbacks and inbound SMS (HMAC-SHA1);
* :class:`LineAdapter`: LINE Messaging API (HMAC-SHA256);
* :class:`MailgunAdapter`: Mailgun (HMAC-SHA256, token replay store: a
  :class:`ReplayStore`, per process by default (:class:`InMemoryReplayStore`),
  shared between workers when given one);
* :class:`PostmarkAdapter`: Postmark (HTTP basic auth);
* :class:`MailerSendAdapter`: MailerSend (HMAC-SHA256 of the body);
* :class:`PostalAdapter`: Postal (RSA-SHA256, or RSA-SHA1 from older servers);
* :class:`MailtrapAdapter`: Mailtrap (HMAC-SHA256 of the body; JSON or JSON Lines);
* :class:`UnisenderGoAdapter`: Unisender Go (MD5 ``auth`` over the body with the API key);
* :class:`SesAdapter`: Amazon SES through SNS (RSA signature versions 1 and 2),
  with SES receiving's ``Received`` notifications as inbound email;
* :class:`SendGridInboundAdapter` (``sendgrid-inbound``): SendGrid Inbound Parse;
* :class:`MailgunInboundAdapter` (``mailgun-inbound``): Mailgun routes (forward
  and store notifications);
* :class:`AmazonConnectAdapter` (``amazon-connect``): Amazon Connect contact
  records, from files or a Kinesis Data Firehose HTTP endpoint;
* :class:`BrevoAdapter`: Brevo (Sendinblue) transactional webhooks (HTTP basic
  auth or a bearer token);
* :class:`MailjetAdapter`: Mailjet Event API (HTTP basic auth);
* :class:`SparkPostAdapter`: SparkPost event webhooks (HTTP basic auth or an
  OAuth 2.0 bearer token);
* :class:`MandrillAdapter`: Mandrill (Mailchimp Transactional) webhooks
  (HMAC-SHA1 over URL + sorted POST parameters);
* :class:`ResendAdapter`: Resend webhooks (Svix HMAC-SHA256, with a replay store).

:class:`TwilioAdapter` also reads Twilio Voice status callbacks.

Each adapter verifies a :class:`WebhookRequest` (:meth:`~WebhookAdapter.verify`),
parses it into a :class:`WebhookResult` (:meth:`~WebhookAdapter.parse`), or does
both and stores the records (:meth:`~WebhookAdapter.handle`). See
``docs/providers/``.

Each provider module registers itself by name in the provider registry
(:mod:`commhistory.providers.registry`: :class:`ProviderSpec`,
:func:`register_provider`, :func:`get_provider`), where the command line and
the testing kit look providers up; third-party adapters join it through the
``commhistory.providers`` entry point group.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from commhistory.providers.amazon_connect import AmazonConnectAdapter
from commhistory.providers.base import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_TOLERANCE,
    ContactResolver,
    HandleOutcome,
    InMemoryReplayStore,
    KeyedContactResolver,
    ReplayStore,
    RepositoryContactResolver,
    WebhookAdapter,
    WebhookRequest,
    WebhookResult,
)
from commhistory.providers.brevo import BrevoAdapter
from commhistory.providers.line import LineAdapter
from commhistory.providers.mailersend import MailerSendAdapter
from commhistory.providers.mailgun import MailgunAdapter, MailgunInboundAdapter
from commhistory.providers.mailjet import MailjetAdapter
from commhistory.providers.mailtrap import MailtrapAdapter
from commhistory.providers.mandrill import MandrillAdapter
from commhistory.providers.postal import PostalAdapter
from commhistory.providers.postmark import PostmarkAdapter
from commhistory.providers.registry import (
    ENTRY_POINT_GROUP,
    AdapterFactory,
    DuplicateProviderError,
    PayloadSigner,
    ProviderLoadError,
    ProviderSpec,
    SignedRequest,
    get_provider,
    provider_names,
    register_provider,
    registered_adapters,
)
from commhistory.providers.resend import ResendAdapter
from commhistory.providers.sendgrid import SendGridAdapter, SendGridInboundAdapter
from commhistory.providers.ses import SesAdapter
from commhistory.providers.sparkpost import SparkPostAdapter
from commhistory.providers.twilio import TwilioAdapter
from commhistory.providers.unisender_go import UnisenderGoAdapter

__all__ = [
    "ADAPTERS",
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_TOLERANCE",
    "ENTRY_POINT_GROUP",
    "AdapterFactory",
    "AmazonConnectAdapter",
    "BrevoAdapter",
    "ContactResolver",
    "DuplicateProviderError",
    "HandleOutcome",
    "InMemoryReplayStore",
    "KeyedContactResolver",
    "LineAdapter",
    "MailerSendAdapter",
    "MailgunAdapter",
    "MailgunInboundAdapter",
    "MailjetAdapter",
    "MailtrapAdapter",
    "MandrillAdapter",
    "PayloadSigner",
    "PostalAdapter",
    "PostmarkAdapter",
    "ProviderLoadError",
    "ProviderSpec",
    "ReplayStore",
    "RepositoryContactResolver",
    "ResendAdapter",
    "SendGridAdapter",
    "SendGridInboundAdapter",
    "SesAdapter",
    "SignedRequest",
    "SparkPostAdapter",
    "TwilioAdapter",
    "UnisenderGoAdapter",
    "WebhookAdapter",
    "WebhookRequest",
    "WebhookResult",
    "get_provider",
    "provider_names",
    "register_provider",
    "registered_adapters",
]

ADAPTERS: Final[Mapping[str, type[WebhookAdapter]]] = registered_adapters()
"""Every adapter class by provider name, as a live, read-only view of the provider registry.

.. versionchanged:: 0.4.0
   A view of the registry (:func:`registered_adapters`), no longer a dict: it
   also holds third-party providers, loaded from their entry points on first use.
"""
