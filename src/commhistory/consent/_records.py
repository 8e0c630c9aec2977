"""Value types of the consent package: consent status, suppression entries, send decisions."""

from __future__ import annotations

import enum
from datetime import datetime

import attrs

from commhistory.model import Channel, ConsentEvent, Purpose

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


class SuppressionReason(enum.StrEnum):
    """Why an address is suppressed."""

    HARD_BOUNCE = "hard_bounce"
    SOFT_BOUNCE_LIMIT = "soft_bounce_limit"
    COMPLAINT = "complaint"
    UNSUBSCRIBE = "unsubscribe"
    SMS_KEYWORD = "sms_keyword"
    LINE_UNFOLLOW = "line_unfollow"
    MANUAL = "manual"
    ERASURE = "erasure"


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
class SuppressionEntry:
    """One address-level suppression: the address is known only by its keyed blind index.

    Attributes:
        suppression_id: The entry's id (derived from its cause, so feeding twice is a no-op).
        kind: The address kind: ``"email"``, ``"phone"`` or ``"line"``.
        channel: The channel it applies to.
        purpose: The purpose it applies to; ``None`` for every purpose.
        reason: Why.
        since: When it started (the cause's time), UTC.
        cause_id: The event, message or consent id that caused it, if any.
        lifted_at: When it was lifted, if it was.
        lifted_by: What lifted it (a message id, consent id or ``"manual"``).
        address_key: The blind index of the address. Not shown in ``repr()``.
        index_key_id: The keyring key the blind index was computed under.

    .. versionadded:: 0.1.0
    """

    suppression_id: str
    kind: str
    channel: Channel
    purpose: Purpose | None
    reason: SuppressionReason
    since: datetime
    cause_id: str | None = None
    lifted_at: datetime | None = None
    lifted_by: str | None = None
    address_key: bytes = attrs.field(default=b"", repr=False)
    index_key_id: str = ""

    def active_at(self, at: datetime) -> bool:
        """Whether the entry is in force at *at*."""
        return self.since <= at and (self.lifted_at is None or self.lifted_at > at)

    def covers(self, purpose: Purpose) -> bool:
        """Whether the entry applies to messages of *purpose*."""
        return self.purpose is None or self.purpose is purpose

    def describe(self) -> str:
        """A human-readable, personal-data-free sentence about the entry."""
        scope = "all purposes" if self.purpose is None else self.purpose.value
        cause = f", cause {self.cause_id}" if self.cause_id else ""
        return (
            f"{self.kind} address suppressed on {self.channel.value} ({scope}) since "
            f"{_iso(self.since)}: {self.reason.value}{cause}"
        )


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
