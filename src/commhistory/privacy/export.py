"""Subject access and portability: everything held on one person as one JSON document.

:func:`export_subject` (``repo.export_subject``; ``commhistory export-subject``)
answers a disclosure request (APPI Art. 33) and an access or portability
request (GDPR Art. 15 and 20). The document's schema is versioned
(:data:`EXPORT_SCHEMA`) and described in ``docs/privacy.md``::

    {
      "schema": "commhistory.subject-export/1",
      "exported_at": "2026-05-01T00:00:00Z",
      "contact": {"contact_id": "c1", "created_at": "...", "erased_at": null},
      "addresses": [{"kind": "email", "address": "taro@example.com"}],
      "messages": [{"kind": "message", ..., "events": [{"kind": "event", ...}]}],
      "activities": [{"kind": "activity", ..., "attributed_message_id": null}],
      "consent": [{"kind": "consent", ...}],
      "consent_status": [{"channel": "email", "purpose": "marketing", "state": "granted",
                          "consent_id": "..."}],
      "suppression": [{"channel": "email", "purpose": null, "reason": "hard_bounce", ...}],
      "attributes": {"tier": "gold", "birth_date": "1990-02-03"},
      "attribute_history": [{"name": "tier", "type": "enum", "personal": false,
                             "value": "silver", "valid_from": "...", "valid_to": "..."}]
    }

Messages, events and activities use the canonical JSON-lines shapes
(:mod:`commhistory.convert`); each activity also names the message its revenue
is attributed to.
For an erased contact only what was kept is exported (retained consent evidence).
Contact attributes are exported with their values decrypted: the current ones
(``attributes``) and every version with its period (``attribute_history``).

.. versionchanged:: 0.4.0
   ``attributes`` and ``attribute_history``.

.. versionadded:: 0.1.0
.. versionchanged:: 0.4.0
   ``activities``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

from commhistory.consent.ledger import latest
from commhistory.consent.records import ConsentState, _iso
from commhistory.consent.suppression import SuppressionList
from commhistory.contacts import json_value
from commhistory.convert import unstructure
from commhistory.errors import NotFoundError
from commhistory.model import ConsentEvent
from commhistory.store.consent import ConsentRow
from commhistory.store.protocol import Repository

__all__ = ["EXPORT_SCHEMA", "export_subject"]

EXPORT_SCHEMA: Final = "commhistory.subject-export/1"
"""The name and version of the export document's schema."""


def export_subject(repo: Repository, contact_id: str) -> dict[str, Any]:
    """Export everything held on a person as one JSON-serialisable document.

    Args:
        repo: The repository (its privacy and consent stores are used).
        contact_id: The contact.

    Returns:
        The document (see the module docs for its schema).

    Raises:
        NotFoundError: No such contact (``kind="contact"``).
        StorageError: The database failed.
    """
    data = repo.consent_store
    known = data.known([contact_id])
    if contact_id not in known:
        raise NotFoundError(kind="contact", identifier=contact_id)
    erased_at = known[contact_id]
    store = repo.privacy_store
    created_at = store.created_at(contact_id)
    addresses = [
        {"kind": a.kind, "address": a.address} for a in store.subject_addresses(contact_id)
    ]
    # For an erased contact only what was kept: the retained consent evidence.
    consents = (
        repo.consent_history(contact_id)
        if erased_at is None
        else store.retained_consents(contact_id)
    )
    activities = []
    for done in repo.activity_store.activities(contact_id):
        doc = unstructure(done.activity)
        doc["attributed_message_id"] = done.message_id
        activities.append(doc)
    timeline = repo.timeline(contact_id)
    # Erasure deletes every attribute row, so an erased contact has none.
    history = repo.attribute_store.versions(contact_id, history=True)
    messages = []
    for entry in timeline:
        doc = unstructure(entry.message)
        doc["events"] = [unstructure(e) for e in entry.events]
        messages.append(doc)
    statuses = []
    groups: dict[tuple[str, str], list[ConsentEvent]] = {}
    for c in consents:
        groups.setdefault((c.channel.value, c.purpose.value), []).append(c)
    for (channel, purpose), events in sorted(groups.items()):
        rows = [
            ConsentRow(e.contact_id, e.action, e.occurred_at, e.consent_id or "", e.method)
            for e in events
        ]
        row = latest(rows)[contact_id]
        statuses.append(
            {
                "channel": channel,
                "purpose": purpose,
                "state": ConsentState.GRANTED.value
                if row.action.value == "grant"
                else ConsentState.WITHDRAWN.value,
                "consent_id": row.consent_id,
            }
        )
    suppression = [
        {
            "suppression_id": e.suppression_id,
            "kind": e.kind,
            "channel": e.channel.value,
            "purpose": None if e.purpose is None else e.purpose.value,
            "reason": e.reason.value,
            "since": _iso(e.since),
            "cause_id": e.cause_id,
            "lifted_at": None if e.lifted_at is None else _iso(e.lifted_at),
        }
        for e in SuppressionList(repo).for_contact(contact_id)
    ]
    return {
        "schema": EXPORT_SCHEMA,
        "exported_at": _iso(datetime.now(UTC)),
        "contact": {
            "contact_id": contact_id,
            "created_at": None if created_at is None else _iso(created_at),
            "erased_at": None if erased_at is None else _iso(erased_at),
        },
        "addresses": addresses,
        "messages": messages,
        "activities": activities,
        "consent": [unstructure(c) for c in consents],
        "consent_status": statuses,
        "suppression": suppression,
        "attributes": {v.name: json_value(v.value) for v in history if v.valid_to is None},
        "attribute_history": [
            {
                "name": v.name,
                "type": v.type,
                "personal": v.personal,
                "value": json_value(v.value),
                "valid_from": _iso(v.valid_from),
                "valid_to": None if v.valid_to is None else _iso(v.valid_to),
            }
            for v in history
        ],
    }
