"""Value types of the consent package: consent status and send decisions.

:class:`~commhistory.model.SuppressionEntry` and :class:`~commhistory.model.SuppressionReason`
live in :mod:`commhistory.model` (the store returns them) and are re-exported here.
"""

from __future__ import annotations

import enum
from datetime import datetime

import attrs

from commhistory.model import (
    Channel,
    ConsentEvent,
    Purpose,
    SuppressionEntry,
    SuppressionReason,
)

__all__ = [
    "ConsentState",
    "ConsentStatus",
    "SendDecision",
    "SuppressionEntry",
    "SuppressionReason",
]


class ConsentState(enum.StrEnum):
    """Where a (contact, channel, purpose) consent stands at an instant."""

    GRANTED = "granted"
    WITHDRAWN = "withdrawn"
    NONE = "none"


CONSENT_REASONS: frozenset[SuppressionReason] = frozenset(
    {
        SuppressionReason.COMPLAINT,
        SuppressionReason.UNSUBSCRIBE,
        SuppressionReason.SMS_KEYWORD,
        SuppressionReason.LINE_UNFOLLOW,
        SuppressionReason.ERASURE,
    }
)
"""Opt-out reasons that a later explicit grant by the contact overrides."""


@attrs.frozen(kw_only=True)
class ConsentStatus:
    """The consent of one contact for one channel and purpose at one instant.

    Attributes:
        contact_id: The contact.
        channel: The channel.
        purpose: The purpose.
        at: The instant asked about, UTC.
        state: Granted, withdrawn, or none recorded.
        decided_by: The ledger event that decided it (the latest at *at*), if any.

    .. versionadded:: 0.1.0
    """

    contact_id: str
    channel: Channel
    purpose: Purpose
    at: datetime
    state: ConsentState
    decided_by: ConsentEvent | None = None

    @property
    def granted(self) -> bool:
        """Whether consent is granted at :attr:`at`."""
        return self.state is ConsentState.GRANTED


@attrs.frozen(kw_only=True)
class SendDecision:
    """Whether a message may be sent to a contact now (or at an instant), and why.

    Attributes:
        contact_id: The contact.
        channel: The channel.
        purpose: The purpose.
        at: The instant decided for, UTC.
        allowed: Whether sending is allowed.
        reasons: Human-readable reasons, free of personal data; when refused, each
            one is a reason to refuse.
        consent: The consent state for (channel, purpose) at *at*.
        consent_id: The ledger event that decided the consent state, if any.
        suppressions: The suppression entries in force that refuse the send.

    .. versionadded:: 0.1.0
    """

    contact_id: str
    channel: Channel
    purpose: Purpose
    at: datetime
    allowed: bool
    reasons: tuple[str, ...]
    consent: ConsentState = ConsentState.NONE
    consent_id: str | None = None
    suppressions: tuple[SuppressionEntry, ...] = ()

    def __bool__(self) -> bool:
        return self.allowed

    def to_dict(self) -> dict[str, object]:
        """Return the decision as a JSON-ready dict."""
        return {
            "contact_id": self.contact_id,
            "channel": self.channel.value,
            "purpose": self.purpose.value,
            "at": _iso(self.at),
            "allowed": self.allowed,
            "reasons": list(self.reasons),
            "consent": self.consent.value,
            "consent_id": self.consent_id,
            "suppressions": [
                {
                    "suppression_id": s.suppression_id,
                    "kind": s.kind,
                    "channel": s.channel.value,
                    "purpose": None if s.purpose is None else s.purpose.value,
                    "reason": s.reason.value,
                    "since": _iso(s.since),
                    "cause_id": s.cause_id,
                }
                for s in self.suppressions
            ],
        }


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")
