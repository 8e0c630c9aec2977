"""Consent and the right to message: the ledger, the suppression list, ``can_send``, unsubscribe.

* :class:`ConsentLedger` (``repo.consent``): append-only grants and withdrawals,
  :meth:`~ConsentLedger.status` at any instant with the deciding event;
* :class:`SuppressionList` (``repo.suppression``): address-level opt-outs and
  bounces, kept as keyed hashes, fed automatically at ingest;
* :func:`can_send` (``repo.can_send``), :func:`decide_many` and
  :func:`filter_sendable`: one :class:`SendDecision` with human-readable reasons;
  :func:`screen`: the refused contacts of a send list with one reason each;
* :mod:`~commhistory.consent.unsubscribe`: RFC 8058 one-click unsubscribe.

See ``docs/consent.md`` and ``docs/compliance.md``.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from commhistory.consent.ledger import ConsentLedger, notice_hash
from commhistory.consent.policy import can_send, decide_many, filter_sendable, screen
from commhistory.consent.records import (
    ConsentState,
    ConsentStatus,
    SendDecision,
    SuppressionEntry,
    SuppressionReason,
)
from commhistory.consent.suppression import (
    OPT_IN_KEYWORDS,
    OPT_OUT_KEYWORDS,
    SOFT_BOUNCE_LIMIT,
    SuppressionList,
    sms_keyword,
)

__all__ = [
    "OPT_IN_KEYWORDS",
    "OPT_OUT_KEYWORDS",
    "SOFT_BOUNCE_LIMIT",
    "ConsentLedger",
    "ConsentState",
    "ConsentStatus",
    "SendDecision",
    "SuppressionEntry",
    "SuppressionList",
    "SuppressionReason",
    "can_send",
    "decide_many",
    "filter_sendable",
    "notice_hash",
    "screen",
    "sms_keyword",
]
