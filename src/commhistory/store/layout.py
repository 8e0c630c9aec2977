"""How the SQL store lays data out: column lists, key purposes, AAD row ids.

Shared by the modules of the SQL store so every statement names the columns in
the same order as the row tuples built for it, and every envelope is bound to
the same row id and key purpose on the way in and out.

.. versionadded:: 0.4.0
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "ADDRESS_COLUMNS",
    "CONSENT_COLUMNS",
    "DATA_KEY_REF",
    "DEAD_LETTER_COLUMNS",
    "DEAD_LETTER_PURPOSE",
    "EVENT_COLUMNS",
    "EVENT_SECRET_COLUMNS",
    "EVENT_WRITE_COLUMNS",
    "EVIDENCE_COLUMNS",
    "EVIDENCE_PURPOSE",
    "FINGERPRINT_PURPOSE",
    "MESSAGE_COLUMNS",
    "MESSAGE_WRITE_COLUMNS",
    "ORPHAN_PURPOSE",
    "address_row_id",
]

MESSAGE_COLUMNS: Final = (
    "message_id", "contact_id", "channel", "direction", "purpose", "campaign_id", "variant",
    "provider", "provider_message_id", "sent_at", "address", "subject", "body", "metadata",
)  # fmt: skip
MESSAGE_WRITE_COLUMNS: Final = (*MESSAGE_COLUMNS, "address_masked")
"""What ingest writes: the columns reads decode, and the plain masked address."""
EVENT_COLUMNS: Final = (
    "event_id", "message_id", "contact_id", "provider", "provider_message_id",
    "provider_event_id", "type", "occurred_at", "status_code", "bounce", "machine", "revenue",
    "revenue_micros", "currency", "orphan_key_id", "address", "reason", "url", "user_agent",
    "ip", "metadata",
)  # fmt: skip
EVENT_WRITE_COLUMNS: Final = (*EVENT_COLUMNS, "link")
"""What ingest writes: the columns reads decode, and the plain link label of a click."""
EVENT_SECRET_COLUMNS: Final = ("address", "reason", "url", "user_agent", "ip", "metadata")
CONSENT_COLUMNS: Final = (
    "consent_id", "contact_id", "channel", "purpose", "action", "method", "occurred_at",
    "recorded_at", "notice_version", "notice_hash", "actor", "source", "ip", "user_agent",
    "metadata",
)  # fmt: skip
ADDRESS_COLUMNS: Final = (
    "kind", "blind_index", "contact_id", "index_key_id", "address", "created_at",
)  # fmt: skip
DEAD_LETTER_COLUMNS: Final = (
    "dead_letter_id", "fingerprint", "received_at", "source", "line", "field", "reason",
    "key_id", "raw",
)  # fmt: skip

DATA_KEY_REF: Final = "dk1"
"""The ``key_ref`` in the envelopes of fields encrypted under a contact's data key."""

ORPHAN_PURPOSE: Final = "orphan-event"
"""Subkey purpose that encrypts an orphan event's personal fields until it is linked."""

DEAD_LETTER_PURPOSE: Final = "dead-letter"
FINGERPRINT_PURPOSE: Final = "dead-letter-fingerprint"


def address_row_id(kind: str, blind_index: bytes) -> str:
    """The AAD row id of an ``addresses`` row (its key within the contact)."""
    return f"{kind}:{blind_index.hex()}"


EVIDENCE_PURPOSE: Final = "consent-evidence"
"""Subkey purpose that keeps an erased contact's consent evidence until its retention date."""

EVIDENCE_COLUMNS: Final = ("source", "ip", "user_agent", "metadata")
"""The consent evidence columns re-encrypted under :data:`EVIDENCE_PURPOSE` at erasure."""
