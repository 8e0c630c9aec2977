"""Masked history: what an actor without ``read_personal`` may see, read without decryption.

A masked timeline keeps what the database stores in the clear (ids, channel,
direction, purpose, campaign, variant, provider, times, event types, bounce
class, status codes, revenue, and the masked address) and withholds every
encrypted field: the address itself, subject, body, reason, URL, user agent,
IP and metadata. It is read from the plain columns only, so no data key is
unwrapped and nothing is decrypted.

The masked address (``t***@example.com``, ``+81 90-****-5678``, ``U***cdef``)
is computed at ingest by :func:`~commhistory.normalize.mask.mask_address` and
stored in ``messages.address_masked``; it is ``None`` for channels without a
mask (push, chat, postal, web), for rows stored before schema revision 0005
until :func:`~commhistory.store.backfill_masks` has run, and never present for
an erased contact.

.. versionadded:: 0.3.0
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

import attrs

from commhistory.model import BounceClass, Channel, Direction, EventType, Purpose
from commhistory.normalize.mask import mask_address, mask_email, mask_line_user_id, mask_phone
from commhistory.store.audit import PlainEvent, PlainMessage

if TYPE_CHECKING:
    from commhistory.store.protocol import Repository

__all__ = [
    "MaskedEntry",
    "MaskedEvent",
    "MaskedMessage",
    "mask_address",
    "mask_email",
    "mask_line_user_id",
    "mask_phone",
    "masked_timeline",
]


@attrs.frozen(kw_only=True)
class MaskedEvent:
    """An event with its personal fields withheld.

    .. versionadded:: 0.3.0
    """

    event_id: str
    type: EventType
    occurred_at: datetime
    status_code: str | None = None
    bounce: BounceClass | None = None
    machine: bool = False
    revenue: str | None = None
    currency: str | None = None


@attrs.frozen(kw_only=True)
class MaskedMessage:
    """A message with its address masked and its subject, body and metadata withheld.

    Attributes:
        address: The masked address (``t***@example.com``), or ``None`` (withheld)
            when the channel has no mask or none is stored.
        has_subject: Whether the message has a subject (its text is withheld).
        has_body: Whether the message has a body (its text is withheld).

    .. versionadded:: 0.3.0
    """

    message_id: str
    channel: Channel
    direction: Direction
    contact_id: str
    sent_at: datetime
    purpose: Purpose
    campaign_id: str | None = None
    variant: str | None = None
    provider: str | None = None
    address: str | None = None
    has_subject: bool = False
    has_body: bool = False


@attrs.frozen(kw_only=True)
class MaskedEntry:
    """One message of a masked timeline, with its events.

    .. versionadded:: 0.3.0
    """

    message: MaskedMessage
    events: tuple[MaskedEvent, ...] = ()


def _entries(messages: Sequence[PlainMessage], events: Sequence[PlainEvent]) -> list[MaskedEntry]:
    by_message: dict[str | None, list[MaskedEvent]] = {}
    for e in events:
        by_message.setdefault(e.message_id, []).append(
            MaskedEvent(
                event_id=e.event_id,
                type=e.type,
                occurred_at=e.occurred_at,
                status_code=e.status_code,
                bounce=e.bounce,
                machine=e.machine,
                revenue=e.revenue,
                currency=e.currency,
            )
        )
    return [
        MaskedEntry(
            message=MaskedMessage(
                message_id=m.message_id,
                channel=m.channel,
                direction=m.direction,
                contact_id=m.contact_id,
                sent_at=m.sent_at,
                purpose=m.purpose,
                campaign_id=m.campaign_id,
                variant=m.variant,
                provider=m.provider,
                address=m.address_masked,
                has_subject=m.has_subject,
                has_body=m.has_body,
            ),
            events=tuple(by_message.get(m.message_id, ())),
        )
        for m in messages
    ]


def masked_timeline(repo: Repository, contact_id: str) -> list[MaskedEntry]:
    """Return a contact's timeline with every personal field withheld or masked.

    Read through the repository's ``masked_history`` port: on a SQL repository
    only plain columns are read, the stored masked address among them, so no
    data key is unwrapped and nothing is decrypted; the in-memory repository
    (which holds no ciphertext) masks its addresses with the same
    :func:`~commhistory.normalize.mask.mask_address`.

    Args:
        repo: The repository.
        contact_id: The contact.

    Returns:
        The entries, messages by ``sent_at`` then id, events by ``occurred_at``
        then id; empty for an erased contact.

    Raises:
        NotFoundError: The contact is unknown.
    """
    messages, events = repo.masked_history.plain_history(contact_id)
    return _entries(messages, events)
