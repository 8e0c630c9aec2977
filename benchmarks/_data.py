"""Seeded synthetic communication history, shared by the storage benchmarks.

One :class:`HistorySpec` describes a history: how many messages, how many events
per message, how many contacts they go to, and a seed. The same spec always
gives the same history, as records (:func:`messages`, :func:`events`,
:func:`records`) or as canonical JSON lines (:func:`write_jsonl`), so a file
and an in-process run hold identical data.

Shape of the data (every value is made up; none is anyone's real data):

* contacts ``{prefix}c0000001``...: mostly email (``user1@example.com``), about
  a tenth SMS (``+81901...``, valid Japanese mobile numbers) and a tenth LINE
  (``U`` + 32 hex digits). Every message address gets one blind index.
* messages ``{prefix}m00000001``...: ``sent_at`` increasing from
  :attr:`HistorySpec.start`, a campaign and A/B variant, an encrypted subject
  and body of a few dozen words.
* events ``{prefix}e000000001``...: ``events_per_message`` per message, after
  it in time, mostly delivered/opened/clicked. With ``personal_events`` every
  event carries exactly three personal (encrypted) fields: ``url``,
  ``user_agent`` and ``ip``; nothing else personal.

Random draws come from :class:`random.Random` seeded by the spec, one message
and its events at a time, so generating is streaming and memory stays flat.
"""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Final, Literal

import attrs

from commhistory.model import Channel, Direction, Event, EventType, Message, Purpose

__all__ = [
    "HistorySpec",
    "Order",
    "events",
    "messages",
    "records",
    "source_revision",
    "write_jsonl",
]

Order = Literal["interleaved", "messages_first", "events_first_some"]
"""How :func:`records` orders messages and events.

* ``interleaved``: each message, then its events;
* ``messages_first``: all messages, then all events;
* ``events_first_some``: like ``interleaved``, but every fourth message comes
  *after* its events (providers report events before the sender's log arrives).
"""

_USER_AGENTS: Final = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Safari/605.1.15",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (compatible; GoogleImageProxy)",
)
# fmt: off
_WORDS: Final = (
    "spring", "sale", "new", "arrivals", "members", "only", "free", "shipping", "limited",
    "time", "offer", "thanks", "for", "your", "order", "your", "receipt", "points", "expire",
    "soon", "reserve", "now", "coupon", "inside", "weekend", "event", "notice", "update",
    "account", "details", "delivery", "schedule", "restock", "alert", "survey", "gift",
)
# fmt: on
_EVENT_TYPES: Final = (
    (EventType.DELIVERED, 40),
    (EventType.OPENED, 30),
    (EventType.CLICKED, 20),
    (EventType.CONVERTED, 3),
    (EventType.UNSUBSCRIBED, 2),
    (EventType.DEFERRED, 5),
)
_TYPE_POPULATION: Final = tuple(t for t, _ in _EVENT_TYPES)
_TYPE_WEIGHTS: Final = tuple(w for _, w in _EVENT_TYPES)
_PROVIDERS: Final = {Channel.EMAIL: "sendgrid", Channel.SMS: "twilio", Channel.LINE: "line"}


@attrs.frozen(kw_only=True)
class HistorySpec:
    """What synthetic history to generate.

    Attributes:
        n_messages: How many messages.
        events_per_message: Events per message (the event count is the product).
        n_contacts: How many contacts the messages are spread over (each message
            picks one at random; contacts without a message do not appear).
        seed: The random seed; the same spec always gives the same history.
        prefix: Prepended to every id, so several histories share one database.
        personal_events: Give every event ``url``, ``user_agent`` and ``ip``.
        start: ``sent_at`` of the first message; later ones follow at random gaps.
    """

    n_messages: int
    events_per_message: int = 5
    n_contacts: int = 1000
    seed: int = 20260401
    prefix: str = ""
    personal_events: bool = True
    start: datetime = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)

    @classmethod
    def for_events(cls, n_events: int, **kwargs: Any) -> HistorySpec:
        """Return a spec with *n_events* events, ``events_per_message`` per message.

        Args:
            n_events: The number of events wanted; rounded up to a whole message.
            **kwargs: Other :class:`HistorySpec` fields.

        Returns:
            The spec (``n_contacts`` defaults to one per 20 messages).
        """
        per = int(kwargs.pop("events_per_message", 5))
        n_messages = max(1, -(-n_events // per))
        kwargs.setdefault("n_contacts", max(1, n_messages // 20))
        return cls(n_messages=n_messages, events_per_message=per, **kwargs)

    @property
    def n_events(self) -> int:
        """The number of events in the history."""
        return self.n_messages * self.events_per_message

    def contact_id(self, number: int) -> str:
        """Return the id of contact *number* (0-based)."""
        return f"{self.prefix}c{number:07d}"


def _address(channel: Channel, contact: int) -> str:
    if channel is Channel.SMS:
        return f"+81901{contact % 10**7:07d}"
    if channel is Channel.LINE:
        return "U" + hashlib.sha256(f"line-{contact}".encode()).hexdigest()[:32]
    return f"user{contact}@example.com"


def _channel_of(contact: int) -> Channel:
    kind = contact % 10
    if kind == 7:
        return Channel.SMS
    if kind == 8:
        return Channel.LINE
    return Channel.EMAIL


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choices(_WORDS, k=words))


def _history(spec: HistorySpec) -> Iterator[tuple[Message, list[Event]]]:
    """Yield each message with its events, in message order."""
    rng = random.Random(spec.seed)
    when = spec.start
    p = spec.prefix
    for n in range(spec.n_messages):
        contact = rng.randrange(spec.n_contacts)
        channel = _channel_of(contact)
        campaign = f"campaign-{n // 10_000:03d}"
        when += timedelta(seconds=rng.randint(1, 90))
        message_id = f"{p}m{n:08d}"
        message = Message(
            message_id=message_id,
            channel=channel,
            direction=Direction.OUTBOUND,
            contact_id=spec.contact_id(contact),
            address=_address(channel, contact),
            sent_at=when,
            purpose=Purpose.MARKETING,
            campaign_id=campaign,
            variant="A" if rng.random() < 0.5 else "B",
            subject=_text(rng, 6) if channel is Channel.EMAIL else None,
            body=_text(rng, 40),
            provider=_PROVIDERS[channel],
            provider_message_id=f"{p}pm-{n:08d}",
        )
        evs: list[Event] = []
        occurred = when
        for k in range(spec.events_per_message):
            occurred += timedelta(seconds=rng.randint(1, 3600))
            etype = rng.choices(_TYPE_POPULATION, _TYPE_WEIGHTS)[0]
            personal: dict[str, Any] = {}
            if spec.personal_events:
                personal = {
                    "url": f"https://shop.example.com/p/{rng.randrange(10**6)}"
                    f"?utm_campaign={campaign}&t={rng.getrandbits(64):016x}",
                    "user_agent": rng.choice(_USER_AGENTS),
                    "ip": f"198.51.{rng.randrange(256)}.{rng.randrange(1, 255)}",
                }
            revenue: dict[str, Any] = {}
            if etype is EventType.CONVERTED:
                revenue = {"revenue": Decimal(rng.randrange(500, 20000)), "currency": "JPY"}
            evs.append(
                Event(
                    event_id=f"{p}e{n:08d}-{k}",
                    type=etype,
                    occurred_at=occurred,
                    message_id=message_id,
                    provider=message.provider,
                    provider_event_id=f"{p}pe-{n:08d}-{k}",
                    machine=etype is EventType.OPENED and rng.random() < 0.1,
                    **personal,
                    **revenue,
                )
            )
        yield message, evs


def messages(spec: HistorySpec) -> Iterator[Message]:
    """Yield the history's messages, in order.

    Args:
        spec: The history.

    Yields:
        Each message.
    """
    for message, _ in _history(spec):
        yield message


def events(spec: HistorySpec) -> Iterator[Event]:
    """Yield the history's events, message by message.

    Args:
        spec: The history.

    Yields:
        Each event.
    """
    for _, evs in _history(spec):
        yield from evs


def records(spec: HistorySpec, *, order: Order = "interleaved") -> Iterator[Message | Event]:
    """Yield messages and events together.

    Args:
        spec: The history.
        order: How to order them (see :data:`Order`).

    Yields:
        Each record.
    """
    if order == "messages_first":
        yield from messages(spec)
        yield from events(spec)
        return
    for n, (message, evs) in enumerate(_history(spec)):
        if order == "events_first_some" and n % 4 == 3:
            yield from evs
            yield message
        else:
            yield message
            yield from evs


def _canonical(record: Message | Event) -> dict[str, Any]:
    """The canonical JSON object of a record, built directly (faster than cattrs)."""
    out: dict[str, Any]
    if isinstance(record, Message):
        out = {
            "kind": "message",
            "message_id": record.message_id,
            "channel": record.channel.value,
            "direction": record.direction.value,
            "contact_id": record.contact_id,
            "address": record.address,
            "sent_at": record.sent_at.isoformat(),
            "purpose": record.purpose.value,
            "campaign_id": record.campaign_id,
            "variant": record.variant,
            "subject": record.subject,
            "body": record.body,
            "provider": record.provider,
            "provider_message_id": record.provider_message_id,
        }
    else:
        out = {
            "kind": "event",
            "event_id": record.event_id,
            "message_id": record.message_id,
            "type": record.type.value,
            "occurred_at": record.occurred_at.isoformat(),
            "provider": record.provider,
            "provider_event_id": record.provider_event_id,
            "url": record.url,
            "user_agent": record.user_agent,
            "ip": record.ip,
            "machine": record.machine or None,
            "revenue": None if record.revenue is None else str(record.revenue),
            "currency": record.currency,
        }
    return {k: v for k, v in out.items() if v is not None}


def write_jsonl(
    path: str | Path, spec: HistorySpec, *, order: Order = "interleaved"
) -> tuple[int, int]:
    """Write the history as canonical JSON lines.

    Args:
        path: The file to write (replaced if it exists).
        spec: The history.
        order: How to order the lines (see :data:`Order`).

    Returns:
        ``(lines, bytes)`` written.
    """
    lines = 0
    with Path(path).open("w", encoding="utf-8", newline="\n") as out:
        for record in records(spec, order=order):
            out.write(json.dumps(_canonical(record), ensure_ascii=False, separators=(",", ":")))
            out.write("\n")
            lines += 1
        size = out.tell()
    return lines, size


def source_revision() -> str:
    """Name the code being measured: the git commit, ``+dirty`` when ``src/`` has edits.

    Returns:
        ``"<short hash>"``, ``"<short hash>+dirty"``, or ``"unknown"`` outside a checkout.
    """
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}+dirty" if dirty else head
