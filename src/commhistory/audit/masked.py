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
from typing import TYPE_CHECKING, Any, Final

import attrs
import sqlalchemy as sa

from commhistory.errors import NotFoundError
from commhistory.model import BounceClass, Channel, Direction, EventType, Purpose
from commhistory.normalize.mask import mask_address, mask_email, mask_line_user_id, mask_phone
from commhistory.normalize.time import from_micros
from commhistory.store import schema

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


_MESSAGE_SQL: Final = (
    "SELECT message_id, channel, direction, contact_id, sent_at, purpose, campaign_id, "
    "variant, provider, subject IS NOT NULL, body IS NOT NULL, address_masked FROM messages "
    "WHERE contact_id = {ph} ORDER BY sent_at, message_id"
)
_EVENT_SQL: Final = (
    "SELECT event_id, message_id, type, occurred_at, status_code, bounce, machine, revenue, "
    "currency FROM events WHERE contact_id = {ph} ORDER BY occurred_at, event_id"
)


def _sql_rows(repo: Any, contact_id: str) -> tuple[Sequence[Any], Sequence[Any]] | None:
    c = schema.contacts
    ph = repo.backend.ph
    with repo.transaction(read=True) as conn:
        row = conn.execute(
            sa.select(c.c.data_key.is_(None)).where(c.c.contact_id == contact_id)
        ).first()
        if row is None:
            raise NotFoundError(kind="contact", identifier=contact_id)
        if row[0]:  # erased
            return None
        # Plain DB-API rows, as the repository's own timeline reads them; only
        # plain columns are selected, so nothing here can decrypt.
        cur: Any = conn.connection.driver_connection.cursor()
        try:
            cur.execute(_MESSAGE_SQL.format(ph=ph), (contact_id,))
            messages = cur.fetchall()
            cur.execute(_EVENT_SQL.format(ph=ph), (contact_id,))
            events = cur.fetchall()
        finally:
            cur.close()
    return messages, events


def _from_sql(repo: Any, contact_id: str) -> list[MaskedEntry]:
    found = _sql_rows(repo, contact_id)
    if found is None:
        return []
    message_rows, event_rows = found
    by_message: dict[str, list[MaskedEvent]] = {}
    for r in event_rows:
        by_message.setdefault(r[1], []).append(
            MaskedEvent(
                event_id=r[0],
                type=EventType(r[2]),
                occurred_at=from_micros(int(r[3])),
                status_code=r[4],
                bounce=None if r[5] is None else BounceClass(r[5]),
                machine=bool(r[6]),
                revenue=r[7],
                currency=r[8],
            )
        )
    return [
        MaskedEntry(
            message=MaskedMessage(
                message_id=r[0],
                channel=Channel(r[1]),
                direction=Direction(r[2]),
                contact_id=r[3],
                sent_at=from_micros(int(r[4])),
                purpose=Purpose(r[5]),
                campaign_id=r[6],
                variant=r[7],
                provider=r[8],
                has_subject=bool(r[9]),
                has_body=bool(r[10]),
                address=r[11],
            ),
            events=tuple(by_message.get(r[0], ())),
        )
        for r in message_rows
    ]


def _from_records(repo: Repository, contact_id: str) -> list[MaskedEntry]:
    # Repositories that keep records in the clear (in memory): strip them.
    return [
        MaskedEntry(
            message=MaskedMessage(
                message_id=e.message.message_id,
                channel=e.message.channel,
                direction=e.message.direction,
                contact_id=e.message.contact_id,
                sent_at=e.message.sent_at,
                purpose=e.message.purpose,
                campaign_id=e.message.campaign_id,
                variant=e.message.variant,
                provider=e.message.provider,
                address=mask_address(e.message.channel, e.message.address),
                has_subject=e.message.subject is not None,
                has_body=e.message.body is not None,
            ),
            events=tuple(
                MaskedEvent(
                    event_id=ev.event_id,
                    type=ev.type,
                    occurred_at=ev.occurred_at,
                    status_code=ev.status_code,
                    bounce=ev.bounce,
                    machine=ev.machine,
                    revenue=None if ev.revenue is None else str(ev.revenue),
                    currency=ev.currency,
                )
                for ev in e.events
            ),
        )
        for e in repo.timeline(contact_id)
    ]


def masked_timeline(repo: Repository, contact_id: str) -> list[MaskedEntry]:
    """Return a contact's timeline with every personal field withheld or masked.

    On a :class:`~commhistory.store.sql.SQLRepository` only plain columns are
    read, the stored masked address among them: no data key is unwrapped and
    nothing is decrypted. Other repositories are read through ``timeline()``,
    stripped, and their addresses masked with the same
    :func:`~commhistory.normalize.mask.mask_address` (the in-memory one holds no
    ciphertext).

    Args:
        repo: The repository.
        contact_id: The contact.

    Returns:
        The entries, messages by ``sent_at`` then id, events by ``occurred_at``
        then id; empty for an erased contact.

    Raises:
        NotFoundError: The contact is unknown.
    """
    from commhistory.store.sql import SQLRepository  # noqa: PLC0415

    if isinstance(repo, SQLRepository):
        return _from_sql(repo, contact_id)
    return _from_records(repo, contact_id)
