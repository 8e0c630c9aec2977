"""due(now) through send planning: skipped with the reason, or deferred to the same key."""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import attrs
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from commhistory.contacts import AttributeDefinition, AttributeType
from commhistory.crypto import Keyring
from commhistory.facade import CommHistory, open_repository
from commhistory.journeys import DueResult, Journey, SendIntent, Status, gate
from commhistory.journeys.engine import due, enrollment_id
from commhistory.model import Channel, ConsentAction, Direction, Message, Purpose
from commhistory.segments import planning
from commhistory.segments.planning import (
    JAPAN_DEFAULT,
    ExclusionReason,
    FrequencyCap,
    PlanConfig,
    QuietHours,
)
from tests._journeys import (
    BACKENDS,
    address,
    cli_store,
    consent,
    open_history,
    reachable,
    sql_target,
    with_address,
)

UTC = dt.UTC
DAY = dt.timedelta(days=1)
HOUR = dt.timedelta(hours=1)
T0 = dt.datetime(2026, 3, 2, 1, 0, tzinfo=UTC)  # 10:00 in Tokyo
QUIET = dt.datetime(2026, 3, 2, 13, 0, tzinfo=UTC)  # 22:00 in Tokyo
MORNING = dt.datetime(2026, 3, 2, 23, 0, tzinfo=UTC)  # 08:00 in Tokyo, the next day
R = ExclusionReason
SQL_BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "journeys"


def _sms_pair(when_blocked: str = "defer", key: str = "sms-pair") -> Journey:
    """Two marketing SMS a day apart."""
    return Journey.from_dict(
        {
            "key": key,
            "version": 1,
            "trigger": {"type": "activity", "name": "signup"},
            "reentry": "always",
            "when_blocked": when_blocked,
            "steps": [
                {"type": "send", "id": "first", "template": "t-1", "channel": "sms",
                 "next": "wait"},
                {"type": "wait", "id": "wait", "delay": "1d", "next": "second"},
                {"type": "send", "id": "second", "template": "t-2", "channel": "sms"},
            ],
        }
    )  # fmt: skip


@pytest.fixture(params=BACKENDS)
def repo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CommHistory[Any]]:
    with open_history(request, tmp_path) as history:
        yield history


@pytest.fixture
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return sql_target(request, tmp_path)


def _row(repo: CommHistory[Any], trigger: str, key: str = "sms-pair") -> Any:
    row = repo.store.journey_store.enrollment(enrollment_id(key, trigger))
    assert row is not None
    return row


def _send(repo: CommHistory[Any], intent: SendIntent, at: dt.datetime) -> None:
    repo.record_messages(
        [
            Message(
                message_id=intent.key,
                channel=intent.channel,
                direction=Direction.OUTBOUND,
                contact_id=intent.contact_id,
                address=address(intent.contact_id, intent.channel),
                sent_at=at,
                purpose=intent.purpose,
            )
        ]
    )
    assert repo.record_journey_send(intent.key, at=at) is True


# --- quiet hours ------------------------------------------------------------------------


def test_quiet_hours_defer_the_same_key_to_the_morning(repo: CommHistory[Any]) -> None:
    reachable(repo, ["a"], Channel.SMS)
    repo.enroll(_sms_pair(), "a", "s1", at=QUIET)
    held = repo.journey_due(QUIET, config=JAPAN_DEFAULT)
    assert list(held) == []
    assert held.skipped == ()
    [deferred] = held.deferred
    assert (deferred.until, deferred.reason) == (MORNING, R.QUIET_HOURS)
    assert deferred.intent.template == "t-1"
    assert repo.store.journey_store.intent(deferred.intent.key) is None  # nothing claimed
    assert _row(repo, "s1").wake_at == MORNING
    later = repo.journey_due(QUIET + HOUR, config=JAPAN_DEFAULT)
    assert (list(later), later.deferred) == ([], ())  # asleep until the morning
    [first] = repo.journey_due(MORNING, config=JAPAN_DEFAULT)
    assert first == deferred.intent  # the same key, due since the evening
    assert first.due_at == QUIET
    assert not repo.journey_due(MORNING, config=JAPAN_DEFAULT)


def test_when_blocked_skip_records_the_reason_and_goes_on(repo: CommHistory[Any]) -> None:
    reachable(repo, ["a"], Channel.SMS)
    repo.enroll(_sms_pair("skip"), "a", "s1", at=QUIET)
    result = repo.journey_due(QUIET, config=JAPAN_DEFAULT)
    assert (list(result), result.deferred) == ([], ())
    [skipped] = result.skipped
    assert (skipped.intent.step_id, skipped.reason) == ("first", R.QUIET_HOURS)
    stored = repo.store.journey_store.intent(skipped.intent.key)
    assert stored is not None
    assert (stored.outcome, stored.reason, stored.message_id) == ("skipped", "quiet_hours", None)
    assert stored.recorded_at == QUIET
    assert repo.record_journey_send(skipped.intent.key, at=QUIET) is False  # recorded already
    again = repo.journey_due(QUIET, config=JAPAN_DEFAULT)
    assert (list(again), again.deferred, again.skipped) == ([], (), ())
    [second] = repo.journey_due(QUIET + DAY + 10 * HOUR, config=JAPAN_DEFAULT)
    assert (second.step_id, second.due_at) == ("second", QUIET + DAY)


def test_a_drop_rule_still_defers_when_the_journey_defers(repo: CommHistory[Any]) -> None:
    reachable(repo, ["a"], Channel.SMS)
    drop = PlanConfig(
        quiet_hours=[
            QuietHours(channel="sms", purpose="marketing", start=dt.time(21), end=dt.time(8),
                       action="drop"),
        ],
        default_zone="Asia/Tokyo",
    )  # fmt: skip
    repo.enroll(_sms_pair(), "a", "s1", at=QUIET)
    [deferred] = repo.journey_due(QUIET, config=drop).deferred
    assert (deferred.until, deferred.reason) == (MORNING, R.QUIET_HOURS)
    assert [i.key for i in repo.journey_due(MORNING, config=drop)] == [deferred.intent.key]


def test_until_allowed_waits_out_quiet_hours(repo: CommHistory[Any]) -> None:
    reachable(repo, ["a"], Channel.SMS)
    journey = Journey.from_dict(
        {
            "key": "polite",
            "version": 1,
            "trigger": {"type": "activity", "name": "signup"},
            "steps": [
                {"type": "wait", "id": "allowed", "until_allowed": True, "next": "hello"},
                {"type": "send", "id": "hello", "template": "hi", "channel": "sms"},
            ],
        }
    )
    repo.enroll(journey, "a", "s1", at=QUIET)
    result = repo.journey_due(QUIET, config=JAPAN_DEFAULT)
    assert (list(result), result.deferred) == ([], ())  # waiting, not held at the send
    assert _row(repo, "s1", "polite").wake_at == MORNING
    [hello] = repo.journey_due(MORNING, config=JAPAN_DEFAULT)
    assert (hello.step_id, hello.due_at) == ("hello", MORNING)


# --- frequency caps -----------------------------------------------------------------------


@pytest.mark.parametrize("when_blocked", ["defer", "skip"])
def test_a_frequency_cap_defers_to_the_next_local_midnight_or_skips(
    repo: CommHistory[Any], when_blocked: str
) -> None:
    reachable(repo, ["a"], Channel.SMS)
    repo.record_messages(
        [
            Message(message_id="promo", channel=Channel.SMS, direction=Direction.OUTBOUND,
                    contact_id="a", address=address("a", Channel.SMS), sent_at=T0,
                    purpose=Purpose.MARKETING),
        ]
    )  # fmt: skip
    config = PlanConfig(
        caps=[FrequencyCap(channel="sms", purpose="marketing", limit=1, days=1)],
        default_zone="Asia/Tokyo",
    )
    repo.enroll(_sms_pair(when_blocked), "a", "s1", at=T0 + HOUR)
    result = repo.journey_due(T0 + HOUR, config=config)
    assert list(result) == []
    midnight = dt.datetime(2026, 3, 2, 15, 0, tzinfo=UTC)  # 00:00 on 3 March in Tokyo
    if when_blocked == "defer":
        [deferred] = result.deferred
        assert (deferred.until, deferred.reason) == (midnight, R.FREQUENCY_CAP)
        assert [i.step_id for i in repo.journey_due(midnight, config=config)] == ["first"]
    else:
        [skipped] = result.skipped
        assert skipped.reason is R.FREQUENCY_CAP
        stored = repo.store.journey_store.intent(skipped.intent.key)
        assert stored is not None
        assert (stored.outcome, stored.reason) == ("skipped", "frequency_cap")


# --- refusals: consent, suppression, address ---------------------------------------------


def test_refused_sends_are_skipped_with_the_reason_whatever_when_blocked(
    repo: CommHistory[Any],
) -> None:
    reachable(repo, ["ok", "bounced", "gone"], Channel.SMS)
    with_address(repo, ["silent"], Channel.SMS)  # an address, never a grant
    repo.record_consent([consent("noaddr", Channel.SMS)])  # a grant, no SMS address
    repo.record_consent([consent("gone", Channel.SMS, at=T0, action=ConsentAction.WITHDRAW)])
    repo.suppression.add("sms", address("bounced", Channel.SMS), reason="hard_bounce", since=T0)
    journey = _sms_pair("defer")
    for cid in ("ok", "bounced", "gone", "silent", "noaddr"):
        repo.enroll(journey, cid, f"s-{cid}", at=T0 + HOUR)
    result = repo.journey_due(T0 + HOUR, config=JAPAN_DEFAULT)
    assert [i.contact_id for i in result] == ["ok"]
    assert result.deferred == ()
    reasons = {s.intent.contact_id: s.reason.value for s in result.skipped}
    assert reasons == {
        "bounced": "suppressed",
        "gone": "no_consent",
        "silent": "no_consent",
        "noaddr": "missing_address",
    }
    store = repo.store.journey_store
    for skipped in result.skipped:
        stored = store.intent(skipped.intent.key)
        assert stored is not None
        assert (stored.outcome, stored.reason) == ("skipped", skipped.reason.value)
    # A skip counts as done: the next step comes a day later, and is refused again.
    again = repo.journey_due(T0 + DAY + HOUR, config=JAPAN_DEFAULT)
    assert list(again) == []  # "ok" waits for its first send to be recorded
    assert {s.intent.contact_id: s.intent.step_id for s in again.skipped} == {
        "bounced": "second",
        "gone": "second",
        "silent": "second",
        "noaddr": "second",
    }
    assert _row(repo, "s-gone").status == Status.ACTIVE.value  # goes on at the next call
    assert not repo.journey_due(T0 + DAY + HOUR, config=JAPAN_DEFAULT).skipped
    assert _row(repo, "s-gone").status == Status.COMPLETED.value


def test_a_dry_run_reports_held_and_refused_sends_and_writes_nothing(
    repo: CommHistory[Any],
) -> None:
    reachable(repo, ["a"], Channel.SMS)
    with_address(repo, ["b"], Channel.SMS)
    repo.enroll(_sms_pair(), "a", "s-a", at=QUIET)
    repo.enroll(_sms_pair(), "b", "s-b", at=QUIET)
    dry = repo.journey_due(QUIET, config=JAPAN_DEFAULT, dry_run=True)
    assert dry.counts() == {"send": 0, "deferred": 1, "skipped": 1}
    assert dry == repo.journey_due(QUIET, config=JAPAN_DEFAULT, dry_run=True)
    assert repo.store.journey_store.intent(dry.skipped[0].intent.key) is None
    assert _row(repo, "s-a").wake_at == QUIET
    real = repo.journey_due(QUIET, config=JAPAN_DEFAULT)
    assert (real.deferred, real.skipped) == (dry.deferred, dry.skipped)
    assert repr(real) == (
        "DueResult(at='2026-03-02T13:00:00+00:00', intents=0, deferred=1, skipped=1)"
    )


def test_one_plan_per_channel_and_purpose(
    repo: CommHistory[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gate plans set-wise: one plan_send per (channel, purpose), not one per intent."""
    welcome = Journey.load(EXAMPLES / "welcome.json")
    reachable(repo, ["e1", "e2", "e3"])
    reachable(repo, ["s1", "s2"], Channel.SMS)
    for cid in ("e1", "e2", "e3"):
        repo.enroll(welcome, cid, f"w-{cid}", at=T0)
    for cid in ("s1", "s2"):
        repo.enroll(_sms_pair(), cid, f"p-{cid}", at=T0)
    planned: list[tuple[str, int]] = []
    real = planning.plan_send

    def counting(*args: Any, **kwargs: Any) -> Any:
        planned.append((kwargs["channel"].value, len(args[1])))
        return real(*args, **kwargs)

    monkeypatch.setattr(gate, "plan_send", counting)
    result = repo.journey_due(T0, config=JAPAN_DEFAULT)
    assert sorted(i.contact_id for i in result) == ["e1", "e2", "e3", "s1", "s2"]
    assert sorted(planned) == [("email", 3), ("sms", 2)]
    planned.clear()
    assert not repo.journey_due(T0, config=JAPAN_DEFAULT)
    assert planned == []  # nothing due: nothing planned


# --- zones --------------------------------------------------------------------------------


def test_until_time_waits_in_the_zone_planning_resolves(repo: CommHistory[Any]) -> None:
    repo.declare_attributes([AttributeDefinition(name="tz", type=AttributeType.STR)])
    repo.set_attributes("ny", {"tz": "America/New_York"}, at=T0 - DAY)
    repo.set_attributes("nowhere", {"tz": "Mars/Olympus"}, at=T0 - DAY)
    reachable(repo, ["ny", "tk", "nowhere"])
    journey = Journey.from_dict(
        {
            "key": "nine",
            "version": 1,
            "trigger": {"type": "activity", "name": "signup"},
            "steps": [
                {"type": "send", "id": "one", "template": "one", "channel": "email",
                 "next": "nine"},
                {"type": "wait", "id": "nine", "until_time": "09:00", "next": "two"},
                {"type": "send", "id": "two", "template": "two", "channel": "email"},
            ],
        }
    )  # fmt: skip
    config = PlanConfig(zone_attribute="tz", default_zone="Asia/Tokyo")
    for cid in ("ny", "tk", "nowhere"):
        repo.enroll(journey, cid, f"n-{cid}", at=T0)
    for intent in repo.journey_due(T0, config=config):
        _send(repo, intent, T0)
    assert not repo.journey_due(T0 + dt.timedelta(minutes=1), config=config)
    wake = {cid: _row(repo, f"n-{cid}", "nine").wake_at for cid in ("ny", "tk", "nowhere")}
    assert wake == {
        "ny": dt.datetime(2026, 3, 2, 14, 0, tzinfo=UTC),  # 09:00 EST
        "tk": dt.datetime(2026, 3, 3, 0, 0, tzinfo=UTC),  # 09:00 JST, the next day
        "nowhere": dt.datetime(2026, 3, 3, 0, 0, tzinfo=UTC),  # unknown zone: the default
    }
    # A caller's own zone_of still decides the waits.
    reachable(repo, ["z"])
    repo.enroll(journey, "z", "n-z", at=T0 + HOUR)
    [one] = repo.journey_due(T0 + HOUR, config=config, zone_of=lambda _cid: ZoneInfo("UTC"))
    _send(repo, one, T0 + HOUR)
    assert not repo.journey_due(T0 + 2 * HOUR, config=config, zone_of=lambda _cid: ZoneInfo("UTC"))
    assert _row(repo, "n-z", "nine").wake_at == dt.datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


# --- consent withdrawal as an unsubscribe goal -------------------------------------------


def test_a_withdrawal_in_the_consent_ledger_ends_an_unsubscribe_goal(
    repo: CommHistory[Any],
) -> None:
    welcome = Journey.load(EXAMPLES / "welcome.json")  # goal: unsubscribe on email
    anywhere = Journey.from_dict(
        {**_sms_pair().to_dict(), "key": "any-unsub", "goals": [{"type": "unsubscribe"}]}
    )
    reachable(repo, ["c1", "c2"])
    reachable(repo, ["c1", "c2"], Channel.SMS)
    repo.enroll(welcome, "c1", "w1", at=T0)
    repo.enroll(welcome, "c2", "w2", at=T0)
    repo.enroll(anywhere, "c1", "a1", at=T0)
    for intent in repo.journey_due(T0):
        _send(repo, intent, T0)
    withdrawn = T0 + DAY
    repo.record_consent(
        [consent("c1", Channel.EMAIL, at=withdrawn, action=ConsentAction.WITHDRAW)]
    )
    result = repo.journey_due(T0 + 30 * DAY)
    assert [(i.contact_id, i.step_id) for i in result] == [("c2", "reminder")]
    assert result.skipped == ()  # ended by the goal, not refused by planning
    for trigger, key in (("w1", "welcome"), ("a1", "any-unsub")):
        row = _row(repo, trigger, key)
        assert (row.status, row.since, row.wake_at) == (Status.UNSUBSCRIBED.value, withdrawn, None)


def test_the_withdrawal_that_ends_a_journey_is_of_its_send_purposes(
    repo: CommHistory[Any],
) -> None:
    welcome = Journey.load(EXAMPLES / "welcome.json")  # marketing sends; unsubscribe on email
    receipts = Journey.from_dict(
        {
            "key": "receipts",
            "version": 1,
            "trigger": {"type": "activity", "name": "order"},
            "steps": [
                {"type": "send", "id": "r1", "template": "receipt", "channel": "email",
                 "purpose": "transactional", "next": "wait"},
                {"type": "wait", "id": "wait", "delay": "1d", "next": "r2"},
                {"type": "send", "id": "r2", "template": "survey", "channel": "email",
                 "purpose": "transactional"},
            ],
            "goals": [{"type": "unsubscribe", "channel": "email"}],
        }
    )  # fmt: skip
    reachable(repo, ["c1", "c2"])
    repo.enroll(welcome, "c1", "w1", at=T0)
    repo.enroll(receipts, "c1", "t1", at=T0)
    repo.enroll(receipts, "c2", "t2", at=T0)
    for intent in repo.journey_due(T0):
        _send(repo, intent, T0)

    def withdraw(cid: str, purpose: Purpose, at: dt.datetime) -> None:
        event = consent(cid, Channel.EMAIL, at=at, action=ConsentAction.WITHDRAW)
        repo.record_consent([attrs.evolve(event, purpose=purpose)])

    withdraw("c1", Purpose.SERVICE, T0 + HOUR)  # no send of either journey is a service one
    withdraw("c1", Purpose.MARKETING, T0 + 2 * HOUR)  # ends the welcome, not the receipts
    withdraw("c2", Purpose.TRANSACTIONAL, T0 + 3 * HOUR)  # ends c2's receipts
    result = repo.journey_due(T0 + 30 * DAY)
    assert [(i.contact_id, i.step_id) for i in result] == [("c1", "r2")]
    assert result.skipped == ()
    ended = {
        trigger: (row.status, row.since)
        for trigger, key in (("w1", "welcome"), ("t1", "receipts"), ("t2", "receipts"))
        for row in [_row(repo, trigger, key)]
    }
    assert ended == {
        "w1": (Status.UNSUBSCRIBED.value, T0 + 2 * HOUR),
        "t1": (Status.ACTIVE.value, T0 + DAY),
        "t2": (Status.UNSUBSCRIBED.value, T0 + 3 * HOUR),
    }


# --- concurrency --------------------------------------------------------------------------


@pytest.mark.parametrize("target", SQL_BACKENDS, indirect=True)
def test_concurrent_due_defers_once_and_hands_out_the_deferred_keys_once(target: str) -> None:
    contacts = [f"c{i:02d}" for i in range(30)]
    keyring = Keyring.generate()
    with open_repository(target, keyring) as setup:
        reachable(setup, contacts, Channel.SMS)
        for cid in contacts:
            setup.enroll(_sms_pair(), cid, f"s-{cid}", at=QUIET)

    def run(at: dt.datetime) -> list[DueResult]:
        results: list[DueResult] = []
        errors: list[BaseException] = []
        barrier = threading.Barrier(3)

        def worker() -> None:
            try:
                with open_repository(target, keyring) as mine:
                    barrier.wait()
                    for _ in range(3):
                        results.append(due(mine.store, at, config=JAPAN_DEFAULT))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=worker) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        return results

    evening = run(QUIET)
    assert [i for r in evening for i in r] == []
    deferred = [d.intent.key for r in evening for d in r.deferred]
    assert len(deferred) == len(set(deferred)) == len(contacts)
    morning = run(MORNING)
    handed = [i.key for r in morning for i in r]
    assert len(handed) == len(set(handed)) == len(contacts)
    assert set(handed) == set(deferred)


# --- the CLI ------------------------------------------------------------------------------


def test_cli_due_reads_a_plan_config_and_lists_deferred_and_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from commhistory.cli import main

    url, ring = cli_store(tmp_path, monkeypatch)
    config = tmp_path / "plan.json"
    config.write_text(json.dumps({"profile": "japan_default"}))
    with open_repository(url, ring) as repo:
        reachable(repo, ["a"], Channel.SMS)
        with_address(repo, ["b"], Channel.SMS)
        repo.enroll(_sms_pair(), "a", "s-a", at=QUIET)
        repo.enroll(_sms_pair(), "b", "s-b", at=QUIET)
    at = ["--at", QUIET.isoformat(), "--config", str(config)]
    assert main(["journey", "due", *at, "--dry-run"]) == 0
    out = capsys.readouterr()
    assert out.out == ""
    lines = sorted(line.split() for line in out.err.splitlines())
    assert [line[0] for line in lines] == ["deferred", "skipped"]
    assert lines[0][2:] == ["a", "t-1", "until", MORNING.isoformat(), "(quiet_hours)"]
    assert lines[1][2:] == ["b", "t-1", "(no_consent)"]
    assert main(["journey", "due", *at, "--format", "json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["at"] == QUIET.isoformat()
    assert printed["intents"] == []
    [deferred] = printed["deferred"]
    assert (deferred["contact_id"], deferred["until"], deferred["reason"]) == (
        "a",
        MORNING.isoformat(),
        "quiet_hours",
    )
    [skipped] = printed["skipped"]
    assert (skipped["contact_id"], skipped["reason"]) == ("b", "no_consent")
    assert main(["journey", "due", "--at", MORNING.isoformat(), "--config", str(config)]) == 0
    [line] = capsys.readouterr().out.splitlines()
    assert line.split() == [deferred["key"], "a", "t-1"]


# --- the gate's quiet-hours instants equal planning's --------------------------------------

_PLANNER: list[CommHistory[Any]] = []


def _planner() -> CommHistory[Any]:
    """One memory repository with one contact planning lets an SMS go to (made once)."""
    if not _PLANNER:
        memory = CommHistory.in_memory()
        reachable(memory, ["q"], Channel.SMS)
        _PLANNER.append(memory)
    return _PLANNER[0]


@settings(max_examples=150, deadline=None)
@given(
    at=st.datetimes(min_value=dt.datetime(2026, 1, 1), max_value=dt.datetime(2027, 12, 31)),
    zone=st.sampled_from(["Asia/Tokyo", "America/New_York", "Europe/London", "UTC"]),
    rules=st.lists(
        st.tuples(st.integers(0, 23), st.integers(0, 3), st.integers(0, 23), st.integers(0, 3)),
        min_size=1,
        max_size=3,
    ),
)
def test_until_allowed_ends_where_planning_defers_to(
    at: dt.datetime, zone: str, rules: list[tuple[int, int, int, int]]
) -> None:
    """``gate.allowed`` (for waits) is the instant ``plan_send`` defers a held send to."""
    quiet = [
        QuietHours(channel="sms", purpose="marketing", start=dt.time(sh, sm * 15),
                   end=dt.time(eh, em * 15))
        for sh, sm, eh, em in rules
        if (sh, sm) != (eh, em)
    ]  # fmt: skip
    assume(quiet)
    config = PlanConfig(quiet_hours=quiet, default_zone=zone)
    instant = at.replace(tzinfo=UTC)
    step = _sms_pair().send_steps[0]
    allowed = gate.allowed(config, ZoneInfo(zone))
    assert allowed is not None
    plan = _planner().plan_send(["q"], channel="sms", purpose="marketing", at=instant,
                                config=config, addresses=False)  # fmt: skip
    if plan.send:
        assert allowed(instant, step) == instant
    else:
        [deferred] = plan.deferred
        assert allowed(instant, step) == deferred.until
