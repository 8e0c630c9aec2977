"""Journeys over the store: enroll, due(now), record_sent, on memory, SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from commhistory.audit import Actor
from commhistory.crypto import Keyring
from commhistory.errors import InvalidInputError, NotFoundError, PermissionDenied
from commhistory.facade import CommHistory, open_repository
from commhistory.journeys import Journey, SendIntent, Status
from commhistory.journeys.engine import due, enroll, enrollment_id, record_sent
from commhistory.model import Activity, Channel, Direction, Event, EventType, Message
from commhistory.store.journeys import IntentRow
from tests._journeys import BACKENDS, cli_store, open_history, reachable, sql_target

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "journeys"
UTC = dt.UTC
T0 = dt.datetime(2026, 3, 2, 1, 0, tzinfo=UTC)
DAY = dt.timedelta(days=1)
HOUR = dt.timedelta(hours=1)
SQL_BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


def _welcome(**changes: Any) -> Journey:
    data = Journey.load(EXAMPLES / "welcome.json").to_dict()
    data.update(changes)
    return Journey.from_dict(data)


CONTACTS = ["c0", "c1", "c2", "c3", "c4"]


@pytest.fixture(params=BACKENDS)
def repo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CommHistory[Any]]:
    with open_history(request, tmp_path) as history:
        reachable(history, CONTACTS)
        yield history


def _send(repo: CommHistory[Any], intent: SendIntent, at: dt.datetime) -> None:
    """What a host does: store the message under the intent key, then record the send."""
    repo.record_messages(
        [
            Message(
                message_id=intent.key,
                channel=intent.channel,
                direction=Direction.OUTBOUND,
                contact_id=intent.contact_id,
                address=f"{intent.contact_id}@example.com",
                sent_at=at,
                purpose=intent.purpose,
            )
        ]
    )
    assert repo.record_journey_send(intent.key, at=at) is True


def _open(repo: CommHistory[Any], intent: SendIntent, at: dt.datetime) -> None:
    repo.record_events(
        [
            Event(
                event_id=f"open-{intent.key}",
                type=EventType.OPENED,
                occurred_at=at,
                message_id=intent.key,
            )
        ]
    )


def _status(repo: CommHistory[Any], trigger: str, key: str = "welcome") -> Any:
    row = repo.store.journey_store.enrollment(enrollment_id(key, trigger))
    assert row is not None
    return row


# --- enroll -------------------------------------------------------------------------


def test_enroll_is_idempotent_per_trigger_and_once_means_once(repo: CommHistory[Any]) -> None:
    journey = _welcome()
    first = repo.enroll(journey, "c1", "signup-1", at=T0)
    assert first is not None
    assert repo.enroll(journey, "c1", "signup-1", at=T0 + HOUR) == first  # a retried trigger
    assert repo.enroll(journey, "c1", "signup-2", at=T0 + DAY) is None  # once ever
    assert repo.enroll(journey, "c2", "signup-3", at=T0) is not None
    dry = repo.journey_due(T0, dry_run=True)
    assert repo.journey_due(T0, dry_run=True) == dry  # a dry run claims nothing
    assert sorted(i.contact_id for i in dry) == ["c1", "c2"]
    assert sorted(repo.journey_due(T0), key=lambda i: i.key) == sorted(dry, key=lambda i: i.key)


def test_periodic_and_always_reentry(repo: CommHistory[Any]) -> None:
    periodic = _welcome(key="monthly", reentry="periodic", reentry_days=30)
    assert repo.enroll(periodic, "c1", "t1", at=T0) is not None
    assert repo.enroll(periodic, "c1", "t2", at=T0 + 29 * DAY) is None
    assert repo.enroll(periodic, "c1", "t3", at=T0 + 30 * DAY) is not None
    always = _welcome(key="every", reentry="always")
    a = repo.enroll(always, "c1", "t1", at=T0)
    b = repo.enroll(always, "c1", "t2", at=T0)
    assert a is not None
    assert b is not None
    assert a.enrollment_id != b.enrollment_id


def test_enroll_rejects_naive_times_and_non_plain_properties(repo: CommHistory[Any]) -> None:
    with pytest.raises(InvalidInputError, match="at"):
        repo.enroll(_welcome(), "c1", "t1", at=dt.datetime(2026, 3, 2))
    with pytest.raises(InvalidInputError, match=r"properties\.cart"):
        repo.enroll(_welcome(), "c1", "t1", at=T0, properties={"cart": [1, 2]})


def test_a_stored_version_never_changes(repo: CommHistory[Any]) -> None:
    assert repo.save_journey(_welcome()) is True
    assert repo.save_journey(_welcome()) is False
    with pytest.raises(InvalidInputError, match="version"):
        repo.save_journey(_welcome(name="renamed"))
    assert repo.save_journey(_welcome(name="renamed", version=2)) is True


# --- the welcome series through the store -------------------------------------------------


def test_welcome_opened_end_to_end(repo: CommHistory[Any]) -> None:
    repo.enroll(_welcome(), "c1", "signup-1", at=T0)
    [hello] = repo.journey_due(T0)
    assert (hello.step_id, hello.template, hello.due_at) == ("hello", "welcome-1", T0)
    assert not repo.journey_due(T0)  # claimed: never handed out twice
    assert not repo.journey_due(T0 + HOUR)  # waiting for the recorded send
    _send(repo, hello, T0 + dt.timedelta(minutes=5))
    assert repo.record_journey_send(hello.key, at=T0 + HOUR) is False  # the first record stands
    _open(repo, hello, T0 + 5 * HOUR)
    assert not repo.journey_due(T0 + DAY)
    assert _status(repo, "signup-1").step_id == "wait-2d"
    [tips] = repo.journey_due(T0 + 2 * DAY + 10 * HOUR)
    assert tips.step_id == "tips"
    assert tips.due_at == T0 + 2 * DAY + dt.timedelta(minutes=5)  # opened before the branch
    _send(repo, tips, T0 + 3 * DAY)
    assert not repo.journey_due(T0 + 4 * DAY)
    row = _status(repo, "signup-1")
    assert (row.status, row.step_id, row.wake_at) == (Status.COMPLETED.value, None, None)


def test_welcome_not_opened_reminder_then_tips(repo: CommHistory[Any]) -> None:
    repo.enroll(_welcome(), "c1", "signup-1", at=T0)
    [hello] = repo.journey_due(T0)
    _send(repo, hello, T0)
    for hours in range(48, 5 * 24, 7):  # a due() loop on a clock: every 7 hours
        assert not repo.journey_due(T0 + hours * HOUR)
    [reminder] = repo.journey_due(T0 + 5 * DAY)
    assert (reminder.step_id, reminder.due_at) == ("reminder", T0 + 5 * DAY)
    _send(repo, reminder, T0 + 5 * DAY + HOUR)
    assert not repo.journey_due(T0 + 8 * DAY)
    assert _status(repo, "signup-1").wake_at == T0 + 9 * DAY + HOUR
    [tips] = repo.journey_due(T0 + 20 * DAY)
    assert (tips.step_id, tips.due_at) == ("tips", T0 + 9 * DAY + HOUR)


def test_an_open_during_the_branch_is_seen_within_the_recheck(repo: CommHistory[Any]) -> None:
    repo.enroll(_welcome(), "c1", "signup-1", at=T0)
    [hello] = repo.journey_due(T0)
    _send(repo, hello, T0)
    assert not repo.journey_due(T0 + 2 * DAY)  # at the branch now
    assert _status(repo, "signup-1").wake_at == T0 + 2 * DAY + HOUR  # rechecked hourly
    _open(repo, hello, T0 + 2 * DAY + dt.timedelta(minutes=30))
    [tips] = repo.journey_due(T0 + 2 * DAY + HOUR)
    assert (tips.step_id, tips.due_at) == ("tips", T0 + 2 * DAY + dt.timedelta(minutes=30))


def test_an_open_of_another_contacts_message_does_not_count(repo: CommHistory[Any]) -> None:
    journey = _welcome()
    repo.enroll(journey, "c1", "signup-1", at=T0)
    repo.enroll(journey, "c2", "signup-2", at=T0)
    hello1, hello2 = sorted(repo.journey_due(T0), key=lambda i: i.contact_id)
    _send(repo, hello1, T0)
    _send(repo, hello2, T0)
    _open(repo, hello2, T0 + HOUR)
    intents = {i.contact_id: i.step_id for i in repo.journey_due(T0 + 5 * DAY)}
    assert intents == {"c1": "reminder", "c2": "tips"}


def test_an_unsubscribe_ends_the_series(repo: CommHistory[Any]) -> None:
    repo.enroll(_welcome(), "c1", "signup-1", at=T0)
    [hello] = repo.journey_due(T0)
    _send(repo, hello, T0)
    repo.record_events(
        [
            Event(
                event_id="unsub-1",
                type=EventType.UNSUBSCRIBED,
                occurred_at=T0 + DAY,
                message_id=hello.key,
            )
        ]
    )
    assert not repo.journey_due(T0 + 30 * DAY)
    row = _status(repo, "signup-1")
    assert (row.status, row.since, row.wake_at) == (Status.UNSUBSCRIBED.value, T0 + DAY, None)


def test_a_skipped_send_counts_as_done(repo: CommHistory[Any]) -> None:
    repo.enroll(_welcome(), "c1", "signup-1", at=T0)
    [hello] = repo.journey_due(T0)
    assert repo.record_journey_send(hello.key, at=T0, outcome="skipped") is True
    [reminder] = repo.journey_due(T0 + 5 * DAY)  # nothing sent: nothing could be opened
    assert reminder.step_id == "reminder"
    with pytest.raises(InvalidInputError, match="outcome"):
        repo.record_journey_send(reminder.key, at=T0, outcome="bounced")
    with pytest.raises(NotFoundError):
        repo.record_journey_send("jrn_never_handed_out", at=T0)


def test_limit_takes_the_earliest_woken_first(repo: CommHistory[Any]) -> None:
    for i in range(5):
        repo.enroll(_welcome(), f"c{i}", f"t{i}", at=T0 + i * HOUR)
    first = repo.journey_due(T0 + DAY, limit=2)
    assert [i.contact_id for i in first] == ["c0", "c1"]
    assert [i.contact_id for i in repo.journey_due(T0 + DAY)] == ["c2", "c3", "c4"]


# --- concurrency ----------------------------------------------------------------------


@pytest.mark.parametrize("target", SQL_BACKENDS, indirect=True)
def test_concurrent_due_never_hands_out_a_step_twice(target: str) -> None:
    contacts = [f"c{i:02d}" for i in range(40)]
    keyring = Keyring.generate()
    with open_repository(target, keyring) as setup:
        reachable(setup, contacts)
        for cid in contacts:
            setup.enroll(_welcome(), cid, f"signup-{cid}", at=T0)
    results: list[list[str]] = [[], [], []]
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(results))

    def worker(slot: int) -> None:
        try:
            with open_repository(target, keyring) as mine:
                barrier.wait()
                for _ in range(3):
                    results[slot].extend(i.key for i in due(mine.store, T0))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(len(results))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    handed = [key for keys in results for key in keys]
    assert len(handed) == len(set(handed)) == len(contacts)


@pytest.fixture
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return sql_target(request, tmp_path)


# --- erasure and access ---------------------------------------------------------------


def test_erasure_deletes_enrollments_and_intents(repo: CommHistory[Any]) -> None:
    repo.enroll(_welcome(), "c1", "signup-1", at=T0)
    repo.enroll(_welcome(), "c2", "signup-2", at=T0)
    intents = {i.contact_id: i for i in repo.journey_due(T0)}
    _send(repo, intents["c1"], T0)
    _send(repo, intents["c2"], T0)
    report = repo.erase_subject("c1")
    assert {item.what: item.count for item in report.destroyed}["journey_enrollments"] == 1
    store = repo.store.journey_store
    assert store.enrollment(enrollment_id("welcome", "signup-1")) is None
    assert store.intent(intents["c1"].key) is None
    assert store.enrollment(enrollment_id("welcome", "signup-2")) is not None
    assert store.intent(intents["c2"].key) is not None


def test_the_guarded_view_needs_write_history(repo: CommHistory[Any]) -> None:
    analyst = repo.as_actor(Actor(id="ann", roles=("analyst",)), purpose="ticket 1")
    with pytest.raises(PermissionDenied):
        analyst.enroll(_welcome(), "c1", "signup-1", at=T0)
    with pytest.raises(PermissionDenied):
        analyst.journey_due(T0)
    operator = repo.as_actor(Actor(id="otto", roles=("operator",)), purpose="ticket 2")
    assert operator.enroll(_welcome(), "c1", "signup-1", at=T0) is not None
    [hello] = operator.journey_due(T0)
    assert operator.record_journey_send(hello.key, at=T0) is True
    actions = [entry.action for entry in repo.audit_log.entries()]
    assert "journey.enroll" in actions


def test_engine_functions_work_on_the_bare_repository(repo: CommHistory[Any]) -> None:
    store = repo.store
    assert enroll(store, _welcome(), "c1", "t1", T0) is not None
    [hello] = due(store, T0)
    assert record_sent(store, hello.key, T0) is True
    assert not due(store, T0 + DAY)


# --- the store port itself ------------------------------------------------------------


def test_a_key_is_claimed_once_and_a_stale_move_changes_nothing(repo: CommHistory[Any]) -> None:
    store = repo.store.journey_store
    repo.enroll(_welcome(), "c1", "signup-1", at=T0)
    row = _status(repo, "signup-1")
    intent = IntentRow(key="jrn_x", enrollment_id=row.enrollment_id, step_id="hello", issued_at=T0)
    assert store.claim([intent]) == ["jrn_x"]
    assert store.claim([intent]) == []
    moved = attrs.evolve(row, wake_at=None)
    assert store.move(moved) is True
    assert store.move(moved) is False  # its revision is stale now
    assert _status(repo, "signup-1").revision == row.revision + 1


# --- the CLI ---------------------------------------------------------------------------


def test_cli_due_prints_keys_and_templates_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from commhistory.cli import main

    url, ring = cli_store(tmp_path, monkeypatch)
    with open_repository(url, ring) as repo:
        reachable(repo, ["c1"])
        repo.enroll(_welcome(), "c1", "signup-1", at=T0)
    at = ["--at", "2026-03-02T01:00:00Z"]
    assert main(["journey", "due", *at, "--dry-run"]) == 0
    [dry] = capsys.readouterr().out.splitlines()
    assert dry.split()[1:] == ["c1", "welcome-1"]
    assert main(["journey", "due", *at, "--format", "json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["deferred"] == printed["skipped"] == []
    [claimed] = printed["intents"]
    assert claimed == {"key": dry.split()[0], "contact_id": "c1", "template": "welcome-1"}
    assert main(["journey", "due", *at]) == 0
    assert capsys.readouterr().out == ""  # claimed already


# --- cart abandonment: a purchase of the same cart, from the activity store ----------------


def test_cart_purchase_of_the_same_cart_ends_it_through_the_store(repo: CommHistory[Any]) -> None:
    cart = Journey.load(EXAMPLES / "cart_abandonment.json")
    repo.declare_activities({"purchase": ["cart_id"], "cart_abandoned": ["cart_id"]})
    reachable(repo, ["c1", "c2"], Channel.LINE)
    repo.enroll(cart, "c1", "abandon-1", at=T0, properties={"cart_id": "cart-9"})
    repo.enroll(cart, "c2", "abandon-2", at=T0, properties={"cart_id": "cart-3"})
    assert not repo.journey_due(T0 + dt.timedelta(minutes=59))
    nudges = {i.contact_id: i for i in repo.journey_due(T0 + HOUR)}
    assert {i.template for i in nudges.values()} == {"cart-1"}
    for intent in nudges.values():
        _send(repo, intent, T0 + HOUR)
    repo.record_activities(
        [
            Activity(activity_id="p1", contact_id="c1", name="purchase",
                     occurred_at=T0 + 2 * HOUR, properties={"cart_id": "cart-9"}),
            Activity(activity_id="p2", contact_id="c2", name="purchase",
                     occurred_at=T0 + 2 * HOUR, properties={"cart_id": "cart-7"}),
        ]
    )  # fmt: skip
    [line] = repo.journey_due(T0 + 3 * DAY)  # c1 bought its cart: no LINE nudge
    assert (line.contact_id, line.template) == ("c2", "cart-line")
    row = repo.store.journey_store.enrollment(enrollment_id("cart-abandonment", "abandon-1"))
    assert row is not None
    assert (row.status, row.since) == (Status.GOAL.value, T0 + 2 * HOUR)
