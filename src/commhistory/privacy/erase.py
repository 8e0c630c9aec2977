"""Erasure by crypto-shredding: the person becomes unreadable and unfindable, KPIs stay.

:func:`erase_subject` (``repo.erase_subject``), in one transaction:

* destroys the contact's wrapped data key, so every ciphertext of that contact
  (addresses, subjects, bodies, event details, consent evidence) can never be
  decrypted again, in the database or in any backup of it;
* deletes the contact's blind-index rows, so no lookup by address finds them;
* deletes the contact's attribute rows, plain and personal, every version
  (:mod:`commhistory.store.attributes`);
* deletes the masked addresses of the contact's messages
  (``messages.address_masked``, kept in the clear for masked reads);
* adds an ``erasure`` suppression (marketing) on each of their addresses, kept
  as a keyed hash only, and keeps existing opt-out and bounce entries, which
  are address-level already: an opt-out must keep being honoured;
* deletes the contact's activities (purchases, page views...), plain
  properties included (overwritten on SQLite);
* keeps consent evidence for its retention period (see
  :mod:`commhistory.privacy.retention`), re-encrypted under the keyring's
  ``consent-evidence`` subkey, until ``retain_until``;
* keeps the plain, aggregate-safe columns of messages and events (ids,
  channel, campaign, variant, times, types, bounce class, revenue), so KPI
  reports are identical before and after.

Erasing twice is harmless (the second report says ``already_erased``).

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

import attrs

from commhistory.consent.keys import suppression_id
from commhistory.consent.records import _iso
from commhistory.model import (
    Channel,
    Purpose,
    SuppressionEntry,
    SuppressionReason,
)
from commhistory.privacy.retention import RetentionPolicy
from commhistory.store.consent import AddressKey
from commhistory.store.layout import EVIDENCE_PURPOSE
from commhistory.store.protocol import Repository

__all__ = ["EVIDENCE_PURPOSE", "ErasureItem", "ErasureReport", "erase_subject"]


CHANNELS_OF_KIND: Final[dict[str, tuple[Channel, ...]]] = {
    "email": (Channel.EMAIL,),
    "phone": (Channel.SMS, Channel.VOICE, Channel.WHATSAPP),
    "line": (Channel.LINE,),
}


@attrs.frozen(kw_only=True)
class ErasureItem:
    """One kind of data an erasure destroyed or kept.

    Attributes:
        what: The data (``"data_key"``, ``"addresses"``, ``"consent_evidence"``...).
        count: How many records.
        why: Why it was destroyed or kept.
        until: For kept data under a retention period, when it is due for purging.
    """

    what: str
    count: int
    why: str
    until: datetime | None = None


@attrs.frozen(kw_only=True)
class ErasureReport:
    """What :func:`erase_subject` did.

    Attributes:
        contact_id: The contact erased.
        erased_at: When it was erased (the first time), UTC.
        already_erased: True when the contact had been erased before this call.
        destroyed: What was made unreadable or deleted.
        kept: What was kept, why, and until when.

    .. versionadded:: 0.1.0
    """

    contact_id: str
    erased_at: datetime
    already_erased: bool
    destroyed: tuple[ErasureItem, ...]
    kept: tuple[ErasureItem, ...]

    def to_dict(self) -> dict[str, Any]:
        """Return the report as a JSON-ready dict."""

        def item(i: ErasureItem) -> dict[str, Any]:
            out: dict[str, Any] = {"what": i.what, "count": i.count, "why": i.why}
            if i.until is not None:
                out["until"] = _iso(i.until)
            return out

        return {
            "contact_id": self.contact_id,
            "erased_at": _iso(self.erased_at),
            "already_erased": self.already_erased,
            "destroyed": [item(i) for i in self.destroyed],
            "kept": [item(i) for i in self.kept],
        }


def erase_subject(
    repo: Repository,
    contact_id: str,
    *,
    policy: RetentionPolicy | None = None,
    now: datetime | None = None,
) -> ErasureReport:
    """Erase a person (GDPR Art. 17, APPI Art. 35) by crypto-shredding their data key.

    Args:
        repo: The repository (its privacy and consent stores are used).
        contact_id: The contact.
        policy: The retention policy that dates the kept consent evidence.
        now: The erasure time (default: now).

    Returns:
        What was destroyed and what was kept, why and until when.

    Raises:
        NotFoundError: No such contact (``kind="contact"``).
        StorageError: The database failed; nothing was changed.
    """
    policy = policy or RetentionPolicy()
    t = (now or datetime.now(UTC)).astimezone(UTC)
    store, data = repo.privacy_store, repo.consent_store
    with repo.transaction():
        held = store.holdings(contact_id)
        counts = {
            "messages": held.messages,
            "events": held.events,
            "consent": held.consent_events,
        }
        if held.erased_at is not None:
            return _report(
                contact_id, held.erased_at, already=True, counts=counts, until=held.retained_until
            )
        keys: list[AddressKey] = []
        for kind in CHANNELS_OF_KIND:
            keys.extend(data.contact_keys([contact_id], kind).get(contact_id, []))
        # Opt-outs must outlive the person: an erasure entry per address, as keyed hashes.
        data.add_entries(_entries_for(keys, contact_id, t))
        counts["suppression"] = len(data.entries(keys, None))
        until = policy.consent_until(t)
        shred = store.shred_contact(contact_id, at=t, evidence_until=until)
        counts["addresses"] = shred.addresses
        counts["masked"] = shred.masked_addresses
        counts["activities"] = repo.activity_store.delete_contact(contact_id)
        counts["attributes"] = shred.attributes
        counts["segment_snapshots"] = shred.segment_snapshots
        counts["journey_enrollments"] = repo.journey_store.delete_contact(contact_id)
        counts["data_key"] = 1
    return _report(
        contact_id, t, already=False, counts=counts, until=until if counts["consent"] else None
    )


def _entries_for(keys: list[AddressKey], contact_id: str, at: datetime) -> list[SuppressionEntry]:
    out = []
    cause = f"erasure:{contact_id}"
    for key in keys:
        for channel in CHANNELS_OF_KIND.get(key.kind, ()):
            out.append(
                SuppressionEntry(
                    suppression_id=suppression_id(
                        key, channel, Purpose.MARKETING, SuppressionReason.ERASURE, cause
                    ),
                    kind=key.kind,
                    channel=channel,
                    purpose=Purpose.MARKETING,
                    reason=SuppressionReason.ERASURE,
                    since=at,
                    cause_id=cause,
                    address_key=key.digest,
                    index_key_id=key.key_id,
                )
            )
    return out


def _report(
    contact_id: str,
    erased_at: datetime,
    *,
    already: bool,
    counts: dict[str, int],
    until: datetime | None,
) -> ErasureReport:
    destroyed = (
        ErasureItem(
            what="data_key",
            count=counts.get("data_key", 0),
            why="crypto-shredded: every ciphertext of the contact is unreadable, backups too",
        ),
        ErasureItem(
            what="addresses",
            count=counts.get("addresses", 0),
            why="blind-index rows deleted: no lookup by address finds the contact",
        ),
        ErasureItem(
            what="message_content",
            count=counts.get("messages", 0),
            why="addresses, subjects, bodies and metadata unreadable (under the destroyed key)",
        ),
        ErasureItem(
            what="masked_addresses",
            count=counts.get("masked", 0),
            why="the masked addresses kept in the clear for masked reads are deleted",
        ),
        ErasureItem(
            what="attributes",
            count=counts.get("attributes", 0),
            why="contact attribute rows deleted, plain and personal, with their history",
        ),
        ErasureItem(
            what="event_details",
            count=counts.get("events", 0),
            why="addresses, reasons, URLs, user agents and IPs unreadable",
        ),
        ErasureItem(
            what="activities",
            count=counts.get("activities", 0),
            why="the contact's activities are deleted, plain properties and revenue included",
        ),
        ErasureItem(
            what="segment_snapshots",
            count=counts.get("segment_snapshots", 0),
            why="the contact's id is removed from every saved segment snapshot",
        ),
        ErasureItem(
            what="journey_enrollments",
            count=counts.get("journey_enrollments", 0),
            why="the contact's journey enrollments and their send intents are deleted",
        ),
    )
    kept = (
        ErasureItem(
            what="aggregate_columns",
            count=counts.get("messages", 0) + counts.get("events", 0),
            why="ids, channel, campaign, variant, times, event types, bounce class and revenue "
            "are not personal on their own and keep KPI reports identical",
        ),
        ErasureItem(
            what="suppression",
            count=counts.get("suppression", 0),
            why="opt-outs and bounces must keep being honoured; kept as keyed hashes of the "
            "addresses only, with an 'erasure' entry against re-import",
        ),
        ErasureItem(
            what="consent_evidence",
            count=counts.get("consent", 0),
            why="legal retention of consent records (Specified Electronic Mail Act); "
            "re-encrypted under the keyring's consent-evidence key, purged when due",
            until=until,
        ),
        ErasureItem(
            what="dead_letters",
            count=0,
            why="rejected input is not attributed to contacts; it expires under the "
            "dead-letter retention policy",
        ),
    )
    return ErasureReport(
        contact_id=contact_id,
        erased_at=erased_at,
        already_erased=already,
        destroyed=destroyed,
        kept=kept,
    )
