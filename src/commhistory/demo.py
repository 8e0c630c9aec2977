"""A seeded, realistic synthetic history, and the ``commhistory demo`` run.

:func:`generate` makes the history of a fictional Tokyo shop: contacts on
email, SMS and LINE; three campaigns, each an A/B (or A/B/C) test; deliveries,
hard and soft bounces, SMS failures, Apple privacy-proxy opens, link-scanner
clicks, human opens and clicks, unsubscribes, complaints, and conversions
with JPY revenue. The machine events come out *unflagged*, the way webhooks
deliver them; :func:`run_demo` flags them with
:func:`commhistory.kpi.machine.mark_machine` before recording, as a host would.

Same seed, same history: the numbers in the docs can be reproduced.

.. versionadded:: 0.2.0
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Final

import attrs

from commhistory.crypto import Keyring
from commhistory.facade import open_repository
from commhistory.kpi.abtest import ABResult
from commhistory.kpi.machine import mark_machine
from commhistory.kpi.metrics import KpiTable
from commhistory.kpi.report import build_report, render_html
from commhistory.model import BounceClass, Channel, Direction, Event, EventType, Message, Purpose
from commhistory.store.protocol import TimelineEntry

__all__ = ["Campaign", "DemoResult", "generate", "run_demo"]

START: Final = datetime(2024, 4, 1, 0, 0, tzinfo=UTC)  # 09:00 in Tokyo


@attrs.frozen(kw_only=True)
class Campaign:
    """A campaign of the demo: who gets it, on which channel, and how each arm performs.

    Attributes:
        campaign_id: Its id.
        channel: Its channel.
        day: Days after :data:`START` it goes out.
        arms: Per variant: ``(open_rate, click_rate_given_open, conversion_rate_given_click)``.
        reach: Share of the channel's contacts who get it.
    """

    campaign_id: str
    channel: Channel
    day: int
    arms: dict[str, tuple[float, float, float]]
    reach: float = 0.9


CAMPAIGNS: Final = (
    Campaign(
        campaign_id="spring-sale",
        channel=Channel.EMAIL,
        day=0,
        arms={"A": (0.24, 0.16, 0.14), "B": (0.27, 0.23, 0.15)},
    ),
    Campaign(
        campaign_id="line-coupon",
        channel=Channel.LINE,
        day=9,
        arms={"A": (0.62, 0.21, 0.10), "B": (0.61, 0.22, 0.10)},
    ),
    Campaign(
        campaign_id="sms-reminder",
        channel=Channel.SMS,
        day=17,
        arms={"A": (0.0, 0.08, 0.12), "B": (0.0, 0.11, 0.12), "C": (0.0, 0.08, 0.12)},
        reach=1.0,
    ),
)
PRICES: Final = (Decimal(1980), Decimal(3980), Decimal(4980), Decimal(9800))
LINKS: Final = (
    "https://shop.example/sale",
    "https://shop.example/new",
    "https://shop.example/faq",
)
_SCANNER_UA: Final = "Mozilla/5.0 (compatible; Barracuda Sentinel)"
_PERSON_UA: Final = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) Mobile/15E148"


def _address(channel: Channel, n: int) -> str:
    if channel is Channel.EMAIL:
        return f"customer{n}@example.com"
    if channel is Channel.SMS:
        return f"+81901{n % 10_000_000:07d}"
    return "U" + f"{n:032x}"


def _channel_of(rng: random.Random) -> Channel:
    x = rng.random()
    return Channel.EMAIL if x < 0.6 else Channel.SMS if x < 0.8 else Channel.LINE


def generate(*, contacts: int = 10_000, seed: int = 2024) -> Iterator[tuple[Message, list[Event]]]:
    """Yield each message with its (unflagged) events, deterministically for a seed.

    Args:
        contacts: How many contacts.
        seed: The random seed.

    Yields:
        ``(message, events)`` in send order.
    """
    rng = random.Random(seed)  # noqa: S311 - synthetic data, seeded on purpose
    channels = [_channel_of(rng) for _ in range(contacts)]
    event_no = 0

    def ev(message: Message, kind: EventType, at: datetime, **kw: object) -> Event:
        nonlocal event_no
        event_no += 1
        return Event(
            event_id=f"demo-e{event_no}",
            type=kind,
            occurred_at=at,
            message_id=message.message_id,
            **kw,  # type: ignore[arg-type]
        )

    for campaign in CAMPAIGNS:
        variants = sorted(campaign.arms)
        for n in range(contacts):
            if channels[n] is not campaign.channel or rng.random() > campaign.reach:
                continue
            variant = variants[n % len(variants)]
            sent = START + timedelta(days=campaign.day, seconds=rng.randrange(0, 6 * 86_400))
            m = Message(
                message_id=f"{campaign.campaign_id}-{n}",
                channel=campaign.channel,
                direction=Direction.OUTBOUND,
                contact_id=f"cust-{n:05d}",
                address=_address(campaign.channel, n),
                sent_at=sent,
                purpose=Purpose.MARKETING,
                campaign_id=campaign.campaign_id,
                variant=variant,
                subject=f"{campaign.campaign_id} ({variant})",
                provider={Channel.EMAIL: "sendgrid", Channel.SMS: "twilio"}.get(
                    campaign.channel, "line"
                ),
                provider_message_id=f"p-{campaign.campaign_id}-{n}",
            )
            yield m, list(_events(rng, campaign, variant, m, ev))


def _events(
    rng: random.Random,
    campaign: Campaign,
    variant: str,
    m: Message,
    ev: Callable[..., Event],
) -> Iterator[Event]:
    open_p, click_p, conv_p = campaign.arms[variant]
    t = m.sent_at + timedelta(seconds=rng.randint(1, 20))
    x = rng.random()
    if campaign.channel is Channel.EMAIL and x < 0.015:
        yield ev(m, EventType.BOUNCED, t, bounce=BounceClass.HARD, status_code="5.1.1")
        return
    if campaign.channel is Channel.EMAIL and x < 0.03:
        yield ev(m, EventType.BOUNCED, t, bounce=BounceClass.SOFT, status_code="4.2.2")
        return
    if campaign.channel is Channel.SMS and x < 0.02:
        yield ev(m, EventType.FAILED, t)
        return
    yield ev(m, EventType.DELIVERED, t)
    if campaign.channel is Channel.EMAIL:
        if rng.random() < 0.35:  # Apple Mail Privacy Protection fetches the pixel
            yield ev(
                m,
                EventType.OPENED,
                t + timedelta(seconds=rng.randint(5, 90)),
                user_agent="Mozilla/5.0",
                ip=f"17.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
            )
        if rng.random() < 0.06:  # a security gateway follows every link at once
            for k, url in enumerate(LINKS):
                yield ev(
                    m,
                    EventType.CLICKED,
                    t + timedelta(seconds=3, milliseconds=300 * k),
                    url=url,
                    user_agent=_SCANNER_UA,
                    metadata={"http_method": "HEAD" if k == 0 else "GET"},
                )
    opened = campaign.channel is Channel.SMS or rng.random() < open_p
    if not opened:
        return
    at = t + timedelta(minutes=rng.randint(3, 60 * 30))
    if campaign.channel is not Channel.SMS:
        for _ in range(1 + (rng.random() < 0.3)):
            yield ev(m, EventType.OPENED, at, user_agent=_PERSON_UA, ip="203.0.113.7")
            at += timedelta(minutes=rng.randint(1, 600))
    if rng.random() >= click_p:
        if rng.random() < 0.004:
            yield ev(m, EventType.UNSUBSCRIBED, at + timedelta(minutes=1))
        if campaign.channel is Channel.EMAIL and rng.random() < 0.0008:
            yield ev(m, EventType.COMPLAINED, at + timedelta(minutes=2))
        return
    at += timedelta(minutes=rng.randint(0, 20), seconds=rng.randint(20, 59))
    yield ev(m, EventType.CLICKED, at, url=rng.choice(LINKS), user_agent=_PERSON_UA)
    if rng.random() < conv_p:
        yield ev(
            m,
            EventType.CONVERTED,
            at + timedelta(minutes=rng.randint(2, 90)),
            revenue=rng.choice(PRICES),
            currency="JPY",
        )
    elif rng.random() < 0.01:
        yield ev(m, EventType.UNSUBSCRIBED, at + timedelta(minutes=3))


@attrs.frozen(kw_only=True)
class DemoResult:
    """What :func:`run_demo` made.

    Attributes:
        messages: Messages recorded.
        events: Events recorded.
        machine_events: Events the classifier flagged as machine.
        table: KPIs by campaign and variant.
        ab: Each campaign's A/B result.
        contact_id: The customer whose timeline is shown.
        timeline: That customer's timeline.
        html_path: Where the HTML report was written.
        db_url: The database.
    """

    messages: int
    events: int
    machine_events: int
    table: KpiTable
    ab: tuple[tuple[str | None, ABResult], ...]
    contact_id: str
    timeline: list[TimelineEntry]
    html_path: Path
    db_url: str


def run_demo(
    db_path: Path,
    *,
    keyring_path: Path,
    html_path: Path,
    contacts: int = 10_000,
    seed: int = 2024,
    progress: Callable[[int, int], None] | None = None,
) -> DemoResult:
    """Generate the history, record it encrypted in SQLite, and report on it.

    Args:
        db_path: The SQLite file to create (it must not exist).
        keyring_path: The keyring file to create (it must not exist).
        html_path: Where to write the HTML report.
        contacts: How many contacts.
        seed: The random seed.
        progress: Called with ``(contacts done, contacts)`` while recording.

    Returns:
        What was recorded and computed.

    Raises:
        FileExistsError: The database or keyring already exists.
    """
    for path in (db_path, keyring_path):
        if path.exists():
            raise FileExistsError(f"{path} exists; remove it or choose another path")
    keyring = Keyring.generate()
    keyring.save(keyring_path)
    url = f"sqlite:///{db_path}"
    n_messages = n_events = n_machine = 0
    with open_repository(url, keyring) as repo:
        batch_m: list[Message] = []
        batch_e: list[Event] = []

        def flush() -> None:
            nonlocal n_machine
            flagged = mark_machine(batch_e, messages=batch_m)
            n_machine += sum(e.machine for e in flagged)
            repo.record_messages(batch_m)
            repo.record_events(flagged)
            batch_m.clear()
            batch_e.clear()

        per_campaign = max(1, contacts)
        done = 0
        for m, events in generate(contacts=contacts, seed=seed):
            batch_m.append(m)
            batch_e.extend(events)
            n_messages += 1
            n_events += len(events)
            if len(batch_m) >= 2000:
                flush()
                done += 2000
                if progress is not None:
                    progress(min(done, per_campaign), per_campaign)
        flush()
        # Two webhook events for messages this shop never recorded: reported, not counted.
        orphans = [
            Event(
                event_id=f"demo-orphan-{k}",
                type=EventType.OPENED,
                occurred_at=START,
                provider="sendgrid",
                provider_message_id=f"unknown-{k}",
            )
            for k in range(2)
        ]
        repo.record_events(orphans)
        n_events += len(orphans)
        if progress is not None:
            progress(per_campaign, per_campaign)
        data = build_report(
            repo, by=("campaign_id", "variant"), tz="Asia/Tokyo", title="commhistory demo"
        )
        contact_id = "cust-00000"
        timeline = repo.timeline(contact_id)
    html_path.write_text(render_html(data), encoding="utf-8")
    return DemoResult(
        messages=n_messages,
        events=n_events,
        machine_events=n_machine,
        table=data.main,
        ab=data.ab,
        contact_id=contact_id,
        timeline=timeline,
        html_path=html_path,
        db_url=url,
    )
