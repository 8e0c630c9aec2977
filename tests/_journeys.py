"""Helpers of the journey tests: contacts that send planning lets a send go to."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable
from typing import Any

from commhistory.facade import CommHistory
from commhistory.model import (
    Channel,
    ConsentAction,
    ConsentEvent,
    ConsentMethod,
    Direction,
    Message,
    Purpose,
)

LONG_AGO = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


def address(cid: str, channel: Channel) -> str:
    """A contact's address on a channel (email, LINE user id or a Japanese mobile number)."""
    if channel is Channel.EMAIL:
        return f"{cid}@example.com"
    digest = hashlib.sha256(cid.encode()).hexdigest()
    if channel is Channel.LINE:
        return "U" + digest[:32]
    return f"+81901{int(digest[:12], 16) % 10**7:07d}"


def with_address(repo: CommHistory[Any], contacts: Iterable[str], channel: Channel) -> None:
    """Give contacts an address on the channel: an old transactional message to it."""
    repo.record_messages(
        Message(
            message_id=f"old-{channel.value}-{cid}",
            channel=channel,
            direction=Direction.OUTBOUND,
            contact_id=cid,
            address=address(cid, channel),
            sent_at=LONG_AGO,
            purpose=Purpose.TRANSACTIONAL,
        )
        for cid in contacts
    )


def consent(
    cid: str,
    channel: Channel,
    at: dt.datetime = LONG_AGO,
    action: ConsentAction = ConsentAction.GRANT,
) -> ConsentEvent:
    """A marketing consent event of a contact on a channel."""
    return ConsentEvent(
        contact_id=cid,
        channel=channel,
        purpose=Purpose.MARKETING,
        action=action,
        occurred_at=at,
        method=ConsentMethod.WEB_FORM,
    )


def reachable(
    repo: CommHistory[Any], contacts: Iterable[str], channel: Channel = Channel.EMAIL
) -> None:
    """Contacts send planning lets a marketing send go to: an address and consent."""
    ids = list(contacts)
    with_address(repo, ids, channel)
    repo.record_consent(consent(cid, channel) for cid in ids)
