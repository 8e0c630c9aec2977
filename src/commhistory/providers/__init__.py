"""Provider webhook adapters: each provider's dialect to canonical records.

One module per provider over a shared base (:mod:`commhistory.providers.base`):

* :class:`SendGridAdapter`: SendGrid Event Webhook (ECDSA P-256);
* :class:`TwilioAdapter`: Twilio SMS status callbacks and inbound SMS (HMAC-SHA1);
* :class:`LineAdapter`: LINE Messaging API (HMAC-SHA256);
* :class:`MailgunAdapter`: Mailgun (HMAC-SHA256, token replay store: a
  :class:`ReplayStore`, per process by default (:class:`InMemoryReplayStore`),
  shared between workers when given one);
* :class:`PostmarkAdapter`: Postmark (HTTP basic auth);
* :class:`SesAdapter`: Amazon SES through SNS (RSA signature versions 1 and 2);
* :class:`BrevoAdapter`: Brevo (Sendinblue) transactional webhooks (HTTP basic
  auth or a bearer token);
* :class:`MailjetAdapter`: Mailjet Event API (HTTP basic auth);
* :class:`SparkPostAdapter`: SparkPost event webhooks (HTTP basic auth or an
  OAuth 2.0 bearer token);
* :class:`MandrillAdapter`: Mandrill (Mailchimp Transactional) webhooks
  (HMAC-SHA1 over URL + sorted POST parameters);
* :class:`ResendAdapter`: Resend webhooks (Svix HMAC-SHA256, with a replay store).

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
from commhistory.providers.mailgun import MailgunAdapter
from commhistory.providers.mailjet import MailjetAdapter
from commhistory.providers.mandrill import MandrillAdapter
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
from commhistory.providers.sendgrid import SendGridAdapter
from commhistory.providers.ses import SesAdapter
from commhistory.providers.sparkpost import SparkPostAdapter
from commhistory.providers.twilio import TwilioAdapter

__all__ = [
    "ADAPTERS",
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_TOLERANCE",
    "ENTRY_POINT_GROUP",
    "AdapterFactory",
    "BrevoAdapter",
    "ContactResolver",
    "DuplicateProviderError",
    "HandleOutcome",
    "InMemoryReplayStore",
    "KeyedContactResolver",
    "LineAdapter",
    "MailgunAdapter",
    "MailjetAdapter",
    "MandrillAdapter",
    "PayloadSigner",
    "PostmarkAdapter",
    "ProviderLoadError",
    "ProviderSpec",
    "ReplayStore",
    "RepositoryContactResolver",
    "ResendAdapter",
    "SendGridAdapter",
    "SesAdapter",
    "SignedRequest",
    "SparkPostAdapter",
    "TwilioAdapter",
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
