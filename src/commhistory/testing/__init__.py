"""Helpers for *your* tests: factories, signed webhooks, an in-memory repository.

* :func:`make_message`, :func:`make_event`, :func:`make_consent`: valid records
  with defaults, overridable field by field;
* :class:`MemoryRepository`: the storage in memory, same semantics as SQL; wrap it
  as ``CommHistory(MemoryRepository())`` (or :meth:`CommHistory.in_memory
  <commhistory.CommHistory.in_memory>`) for consent, KPIs and privacy;
* :func:`signed_webhook`: a provider request signed so a real endpoint accepts it
  (:func:`sendgrid_keys` and :func:`sns_test_signer` make stand-in provider keys);
* the pytest plugin (:mod:`commhistory.testing.pytest_plugin`): fixtures.

See ``docs/testing.md``.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from commhistory.store.memory import MemoryRepository
from commhistory.testing.factories import BASE_TIME, make_consent, make_event, make_message
from commhistory.testing.webhooks import (
    SendGridKeys,
    SignedWebhook,
    SnsTestSigner,
    sendgrid_keys,
    signed_webhook,
    sns_test_signer,
)

__all__ = [
    "BASE_TIME",
    "MemoryRepository",
    "SendGridKeys",
    "SignedWebhook",
    "SnsTestSigner",
    "make_consent",
    "make_event",
    "make_message",
    "sendgrid_keys",
    "signed_webhook",
    "sns_test_signer",
]
