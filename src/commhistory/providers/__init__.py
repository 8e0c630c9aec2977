"""Provider webhook adapters: each provider's dialect to canonical records.

One module per provider over a shared base (:mod:`commhistory.providers.base`):

* :class:`SendGridAdapter`: SendGrid Event Webhook (ECDSA P-256);
* :class:`TwilioAdapter`: Twilio SMS status callbacks and inbound SMS (HMAC-SHA1);
* :class:`LineAdapter`: LINE Messaging API (HMAC-SHA256);
* :class:`MailgunAdapter`: Mailgun (HMAC-SHA256, token replay cache);
* :class:`PostmarkAdapter`: Postmark (HTTP basic auth);
* :class:`SesAdapter`: Amazon SES through SNS (RSA signature versions 1 and 2).

Each adapter verifies a :class:`WebhookRequest` (:meth:`~WebhookAdapter.verify`),
parses it into a :class:`WebhookResult` (:meth:`~WebhookAdapter.parse`), or does
both and stores the records (:meth:`~WebhookAdapter.handle`). See
``docs/providers/``.

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
    KeyedContactResolver,
    RepositoryContactResolver,
    WebhookAdapter,
    WebhookRequest,
    WebhookResult,
)
from commhistory.providers.line import LineAdapter
from commhistory.providers.mailgun import MailgunAdapter
from commhistory.providers.postmark import PostmarkAdapter
from commhistory.providers.sendgrid import SendGridAdapter
from commhistory.providers.ses import SesAdapter
from commhistory.providers.twilio import TwilioAdapter

__all__ = [
    "ADAPTERS",
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_TOLERANCE",
    "ContactResolver",
    "HandleOutcome",
    "KeyedContactResolver",
    "LineAdapter",
    "MailgunAdapter",
    "PostmarkAdapter",
    "RepositoryContactResolver",
    "SendGridAdapter",
    "SesAdapter",
    "TwilioAdapter",
    "WebhookAdapter",
    "WebhookRequest",
    "WebhookResult",
]

ADAPTERS: Final[Mapping[str, type[WebhookAdapter]]] = {
    cls.name: cls
    for cls in (
        LineAdapter,
        MailgunAdapter,
        PostmarkAdapter,
        SendGridAdapter,
        SesAdapter,
        TwilioAdapter,
    )
}
"""Every adapter class by provider name."""
