"""Factories for canonical records with sensible defaults, for tests.

Every factory takes the record's fields as keyword overrides; anything not
given gets a valid default. Ids come from a per-process counter, so records
made in one test never collide.

>>> from commhistory.testing import make_message, make_event
>>> message = make_message(campaign_id="spring")
>>> make_event(message, type="clicked").message_id == message.message_id
True

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from commhistory.model import (
    Channel,
    ConsentAction,
    ConsentEvent,
    ConsentMethod,
    Direction,
    Event,
    EventType,
    Message,
    Purpose,
)

__all__ = ["BASE_TIME", "make_consent", "make_event", "make_message"]

BASE_TIME: Final = datetime(2026, 4, 1, 0, 0, tzinfo=UTC)
"""The default ``sent_at``/``occurred_at`` of factory records."""

_COUNTER = itertools.count(1)

_ADDRESSES: Final = {
    Channel.EMAIL: lambda n: f"customer{n}@example.com",
    Channel.SMS: lambda n: f"+81901{n % 10_000_000:07d}",
    Channel.VOICE: lambda n: f"+81901{n % 10_000_000:07d}",
    Channel.LINE: lambda n: f"U{n:032x}",
    Channel.WHATSAPP: lambda n: f"+81901{n % 10_000_000:07d}",
}


def make_message(**overrides: Any) -> Message:
    """Return a valid outbound email :class:`~commhistory.Message`, with *overrides*.

    The default address fits the channel (an ``example.com`` email, a Japanese
    mobile number, a LINE user id). String enum values (``channel="sms"``) are
    accepted.
    """
    n = next(_COUNTER)
    channel = Channel(overrides.pop("channel", Channel.EMAIL))
    fields: dict[str, Any] = {
        "message_id": f"m{n}",
        "channel": channel,
        "direction": Direction.OUTBOUND,
        "contact_id": f"c{n}",
        "address": _ADDRESSES.get(channel, lambda i: f"address-{i}")(n),
        "sent_at": BASE_TIME,
        "purpose": Purpose.MARKETING,
    }
    fields.update(overrides)
    for key, enum in (("direction", Direction), ("purpose", Purpose)):
        fields[key] = enum(fields[key])
    return Message(**fields)


def make_event(message: Message | None = None, **overrides: Any) -> Event:
    """Return a valid :class:`~commhistory.Event` for *message*, with *overrides*.

    Without *message*, the event names a fresh message id. ``occurred_at``
    defaults to five minutes after the message was sent; ``type`` defaults to
    ``delivered`` and accepts strings.
    """
    n = next(_COUNTER)
    sent = message.sent_at if message is not None else BASE_TIME
    fields: dict[str, Any] = {
        "event_id": f"e{n}",
        "type": EventType.DELIVERED,
        "occurred_at": sent + timedelta(minutes=5),
        "message_id": message.message_id if message is not None else f"m{n}",
    }
    fields.update(overrides)
    fields["type"] = EventType(fields["type"])
    return Event(**fields)


def make_consent(**overrides: Any) -> ConsentEvent:
    """Return a valid marketing-email consent grant, with *overrides*.

    Enum fields accept their string values (``action="withdraw"``).
    """
    n = next(_COUNTER)
    fields: dict[str, Any] = {
        "contact_id": f"c{n}",
        "channel": Channel.EMAIL,
        "purpose": Purpose.MARKETING,
        "action": ConsentAction.GRANT,
        "occurred_at": BASE_TIME,
        "method": ConsentMethod.DOUBLE_OPT_IN,
    }
    fields.update(overrides)
    for key, enum in (
        ("channel", Channel),
        ("purpose", Purpose),
        ("action", ConsentAction),
        ("method", ConsentMethod),
    ):
        fields[key] = enum(fields[key])
    return ConsentEvent(**fields)
