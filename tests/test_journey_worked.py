"""The three worked journeys of docs/journeys.md, end to end on a simulated clock.

Each test is a host: it enrolls contacts on their triggers, calls
``journey_due`` every 30 simulated minutes (twice, as two workers would),
"sends" each intent it is handed (stores the ``Message`` under the intent key
and records the send), and records what the contacts do (opens, clicks,
purchases, a consent withdrawal) at their instants. It checks the exact sends
(template, contact, instant), what send planning skipped or deferred, and that
no intent key is handed out twice. On memory, SQLite and PostgreSQL, through the
facade.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from commhistory.facade import CommHistory
from commhistory.journeys import Journey, SendIntent, Status
from commhistory.journeys.engine import enrollment_id
from commhistory.model import (
    Activity,
    Channel,
    ConsentAction,
    Direction,
    Event,
    EventType,
    Message,
)
from commhistory.segments.planning import JAPAN_DEFAULT
from tests._journeys import (
    BACKENDS,
    address,
    consent,
    open_history,
    reachable,
    with_address,
)

UTC = dt.UTC
TICK = dt.timedelta(minutes=30)
HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)
EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "journeys"


def utc(month: int, day: int, hour: int, minute: int = 0) -> dt.datetime:
    """An instant in 2026, UTC."""
    return dt.datetime(2026, month, day, hour, minute, tzinfo=UTC)


@pytest.fixture(params=BACKENDS)
def repo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CommHistory[Any]]:
    with open_history(request, tmp_path) as history:
        yield history


class Host:
    """A host on a simulated clock: calls due, sends what it is handed, records behaviour."""

    def __init__(self, repo: CommHistory[Any]) -> None:
        self.repo = repo
        self.sent: list[tuple[str, str, dt.datetime]] = []
        self.skipped: list[tuple[str, str, dt.datetime, str]] = []
        self.deferred: list[tuple[str, str, dt.datetime, dt.datetime]] = []
        self.keys: dict[tuple[str, str], str] = {}
        self.handed: list[str] = []
        self.actions: list[tuple[dt.datetime, Callable[[], object]]] = []

    def at(self, when: dt.datetime, action: Callable[[], object]) -> None:
        """Do *action* on the first tick at or after *when*."""
        self.actions.append((when, action))

    def send(self, intent: SendIntent, now: dt.datetime) -> None:
        self.repo.record_messages(
            [
                Message(
                    message_id=intent.key,
                    channel=intent.channel,
                    direction=Direction.OUTBOUND,
                    contact_id=intent.contact_id,
                    address=address(intent.contact_id, intent.channel),
                    sent_at=now,
                    purpose=intent.purpose,
                )
            ]
        )
        assert self.repo.record_journey_send(intent.key, at=now) is True
        self.keys[(intent.contact_id, intent.template)] = intent.key

    def event(self, contact: str, template: str, kind: EventType, at: dt.datetime) -> None:
        """The contact opened or clicked the message it got for *template*."""
        key = self.keys[(contact, template)]
        self.repo.record_events(
            [Event(event_id=f"{kind.value}-{key}", type=kind, occurred_at=at, message_id=key)]
        )

    def run(self, start: dt.datetime, end: dt.datetime) -> None:
        now = start
        while now <= end:
            for when, action in [a for a in self.actions if a[0] <= now]:
                action()
                self.actions.remove((when, action))
            for _worker in range(2):  # a second worker right after finds nothing new
                result = self.repo.journey_due(now, config=JAPAN_DEFAULT)
                for d in result.deferred:
                    self.deferred.append((d.intent.template, d.intent.contact_id, now, d.until))
                for s in result.skipped:
                    i = s.intent
                    self.skipped.append((i.template, i.contact_id, now, s.reason.value))
                for intent in result:
                    self.handed.append(intent.key)
                    self.sent.append((intent.template, intent.contact_id, now))
                    self.send(intent, now)
            now += TICK
        assert len(self.handed) == len(set(self.handed))  # nothing handed out twice

    def status(self, journey: str, trigger: str) -> tuple[str, dt.datetime]:
        row = self.repo.store.journey_store.enrollment(enrollment_id(journey, trigger))
        assert row is not None
        return row.status, row.since


# --- 1. the welcome series ----------------------------------------------------------------


def test_welcome_series(repo: CommHistory[Any]) -> None:
    welcome = Journey.load(EXAMPLES / "welcome.json")
    t0 = utc(3, 2, 1)  # Monday 2 March, 10:00 in Tokyo
    reachable(repo, ["opener", "silent", "leaver"])
    with_address(repo, ["stranger"], Channel.EMAIL)  # an address, never a grant
    host = Host(repo)
    for cid in ("opener", "silent", "leaver", "stranger"):
        repo.enroll(welcome, cid, f"signup-{cid}", at=t0)
    host.at(
        t0 + 5 * HOUR, lambda: host.event("opener", "welcome-1", EventType.OPENED, t0 + 5 * HOUR)
    )
    withdrawn = t0 + DAY
    host.at(
        withdrawn,
        lambda: repo.record_consent(
            [consent("leaver", Channel.EMAIL, at=withdrawn, action=ConsentAction.WITHDRAW)]
        ),
    )
    host.run(t0, t0 + 12 * DAY)
    assert sorted(host.sent, key=lambda s: (s[2], s[1])) == [
        ("welcome-1", "leaver", t0),
        ("welcome-1", "opener", t0),
        ("welcome-1", "silent", t0),
        ("welcome-tips", "opener", t0 + 2 * DAY),  # opened: tips after the 2-day wait
        ("welcome-reminder", "silent", t0 + 5 * DAY),  # not opened within 3 days
        ("welcome-tips", "silent", t0 + 9 * DAY),  # 4 days after the reminder
    ]
    # No consent: every step is skipped with the reason, the walk goes on regardless.
    assert host.skipped == [
        ("welcome-1", "stranger", t0, "no_consent"),
        ("welcome-reminder", "stranger", t0 + 5 * DAY, "no_consent"),
        ("welcome-tips", "stranger", t0 + 9 * DAY, "no_consent"),
    ]
    assert host.deferred == []
    # The withdrawal in the consent ledger met the unsubscribe goal.
    assert host.status("welcome", "signup-leaver") == (Status.UNSUBSCRIBED.value, withdrawn)
    assert host.status("welcome", "signup-opener")[0] == Status.COMPLETED.value
    assert host.status("welcome", "signup-stranger")[0] == Status.COMPLETED.value


# --- 2. cart abandonment, ended by the purchase of the same cart ---------------------------


def test_cart_abandonment_with_a_purchase_exit(repo: CommHistory[Any]) -> None:
    cart = Journey.load(EXAMPLES / "cart_abandonment.json")
    repo.declare_activities({"purchase": ["cart_id"], "cart_abandoned": ["cart_id"]})
    people = ["buyer", "other", "clicker", "late"]
    reachable(repo, people)
    reachable(repo, people, Channel.LINE)
    t0 = utc(3, 2, 1)  # 10:00 in Tokyo
    late = utc(3, 2, 11, 30)  # 20:30 in Tokyo
    host = Host(repo)
    carts = {"buyer": ("cart-a", t0), "other": ("cart-b", t0), "clicker": ("cart-c", t0)}
    carts["late"] = ("cart-d", late)
    for cid, (cart_id, when) in carts.items():
        enroll = partial(
            repo.enroll, cart, cid, f"abandon-{cart_id}", at=when, properties={"cart_id": cart_id}
        )
        host.at(when, enroll)

    def purchase(cid: str, cart_id: str, when: dt.datetime) -> None:
        repo.record_activities(
            [
                Activity(activity_id=f"order-{cid}", contact_id=cid, name="purchase",
                         occurred_at=when, properties={"cart_id": cart_id}),
            ]
        )  # fmt: skip

    bought = t0 + 3 * HOUR
    host.at(bought, lambda: purchase("buyer", "cart-a", bought))  # the same cart: exit
    host.at(bought, lambda: purchase("other", "cart-z", bought))  # another cart: no exit
    host.at(
        t0 + 2 * HOUR,
        lambda: host.event("clicker", "cart-1", EventType.CLICKED, t0 + 2 * HOUR),
    )
    host.run(t0, t0 + 4 * DAY)
    assert sorted(host.sent, key=lambda s: (s[2], s[1])) == [
        ("cart-1", "buyer", t0 + HOUR),
        ("cart-1", "clicker", t0 + HOUR),
        ("cart-1", "other", t0 + HOUR),
        ("cart-1", "late", late + HOUR),  # 21:30 in Tokyo: e-mail has no quiet hours
        ("cart-line", "other", t0 + HOUR + DAY),  # not clicked within a day: LINE, 11:00
        # Not clicked either, but 21:30 in Tokyo is inside the LINE quiet hours: 08:00.
        ("cart-line", "late", utc(3, 3, 23)),
    ]
    assert host.deferred == [("cart-line", "late", late + HOUR + DAY, utc(3, 3, 23))]
    assert host.skipped == []
    assert host.status("cart-abandonment", "abandon-cart-a") == (Status.GOAL.value, bought)
    assert host.status("cart-abandonment", "abandon-cart-c")[0] == Status.COMPLETED.value


# --- 3. a birthday coupon in Asia/Tokyo, with quiet hours ----------------------------------


def test_birthday_coupon_in_tokyo_with_quiet_hours(repo: CommHistory[Any]) -> None:
    birthday = Journey.load(EXAMPLES / "birthday.json")
    repo.declare_activities({"purchase": []})
    people = ["morning", "evening", "nosms", "buyer"]
    reachable(repo, people)  # e-mail for the reminder
    reachable(repo, ["morning", "evening", "buyer"], Channel.SMS)
    with_address(repo, ["nosms"], Channel.SMS)  # a phone number, no SMS consent
    nine = utc(3, 10, 0)  # 09:00 on 10 March in Tokyo: the trigger's time
    signed_up = utc(3, 10, 12, 30)  # 21:30 in Tokyo: "evening" gave its birthday tonight
    host = Host(repo)
    for cid in ("morning", "nosms", "buyer"):
        host.at(nine, partial(repo.enroll, birthday, cid, f"birthday-2026-{cid}", at=nine))
    host.at(
        signed_up,
        lambda: repo.enroll(birthday, "evening", "birthday-2026-evening", at=signed_up),
    )
    bought = utc(3, 12, 3)
    host.at(
        bought,
        lambda: repo.record_activities(
            [Activity(activity_id="o-1", contact_id="buyer", name="purchase", occurred_at=bought)]
        ),
    )
    host.run(nine, utc(3, 18, 0))
    morning_8 = utc(3, 10, 23)  # 08:00 on 11 March in Tokyo
    assert sorted(host.sent, key=lambda s: (s[2], s[1])) == [
        ("birthday-coupon", "buyer", nine),
        ("birthday-coupon", "morning", nine),
        # 21:30 is inside the SMS quiet hours (21:00-08:00): deferred to 08:00 local.
        ("birthday-coupon", "evening", morning_8),
        # 6 days after the coupon, then the next 10:00 in Tokyo (01:00 UTC).
        ("birthday-last-call", "morning", utc(3, 16, 1)),
        ("birthday-last-call", "nosms", utc(3, 16, 1)),
        ("birthday-last-call", "evening", utc(3, 17, 1)),
    ]
    assert host.deferred == [("birthday-coupon", "evening", signed_up, morning_8)]
    assert host.skipped == [("birthday-coupon", "nosms", nine, "no_consent")]
    assert host.status("birthday-coupon", "birthday-2026-buyer") == (Status.GOAL.value, bought)
    evening = repo.store.journey_store.intent(host.keys[("evening", "birthday-coupon")])
    assert evening is not None
    assert evening.issued_at == morning_8  # claimed only when it could go
