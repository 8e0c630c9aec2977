"""The set-wise send screen of planning equals the Python rules of ``consent.screen``.

``PlanningStore.screen`` (one SQL statement over the candidates) and
``PlanningStore.screen_segment`` (the segment's statement with the screen
compiled in) must refuse exactly the contacts, for exactly the reasons, that
the reference path refuses: :func:`commhistory.consent.screen` (erased,
suppressed, no consent) followed by the address check of
``planning_store.addresses``. Random ledgers with grants, withdrawals and
re-grants per channel and purpose, suppressions (hard bounces, unsubscribes,
manual entries per purpose, lifted entries), erasure and unknown ids, on
memory, SQLite and PostgreSQL; and a plan over a segment equals the plan over
the segment's members.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from commhistory import criteria as c
from commhistory.consent import screen
from commhistory.crypto import Keyring
from commhistory.facade import CommHistory, open_repository
from commhistory.model import (
    ADDRESS_KINDS,
    BounceClass,
    Channel,
    ConsentAction,
    ConsentEvent,
    ConsentMethod,
    Direction,
    Event,
    EventType,
    Message,
    Purpose,
    SuppressionReason,
)
from commhistory.store import SQLRepository
from commhistory.store.protocol import Repository

AT = datetime(2026, 6, 15, 3, 0, tzinfo=UTC)
CONTACTS = [f"c{i}" for i in range(6)]
ADDRESS = {
    Channel.EMAIL: [f"user{i}@example.com" for i in range(6)],
    Channel.SMS: [f"+8190123456{i:02d}" for i in range(6)],
}
SHARED = "shared@example.com"  # an address two contacts have: a suppression hits both
CHANNELS = [Channel.EMAIL, Channel.SMS, Channel.PUSH]
PURPOSES = [Purpose.MARKETING, Purpose.TRANSACTIONAL]
INSTANTS = [AT + timedelta(hours=h) for h in (-24 * 30, -24 * 3, -5, -1, 0, 3)]
PLAN_AT = [AT, AT - timedelta(days=2), AT - timedelta(hours=5), AT - timedelta(hours=1)]
# Few instants for the ledger and the suppressions, so ties (a grant and a withdrawal at
# the same instant, an opt-out and a grant at the same instant) come up often.
TIES = [AT - timedelta(days=3), AT - timedelta(hours=5), AT - timedelta(hours=1)]


@st.composite
def histories(draw: st.DrawFn) -> dict[str, Any]:
    messages = []
    for i in range(draw(st.integers(0, 8))):
        channel = draw(st.sampled_from([Channel.EMAIL, Channel.SMS]))
        who = draw(st.integers(0, 5))
        address = ADDRESS[channel][who]
        if channel is Channel.EMAIL and who in (4, 5) and draw(st.booleans()):
            address = SHARED
        messages.append(
            Message(
                message_id=f"m{i}",
                channel=channel,
                direction=Direction.OUTBOUND,
                contact_id=CONTACTS[who],
                address=address,
                sent_at=draw(st.sampled_from(INSTANTS)) - timedelta(days=1),
                purpose=draw(st.sampled_from(PURPOSES)),
            )
        )
    events = []
    for j, m in enumerate(messages):
        kind = draw(st.sampled_from([None, None, EventType.BOUNCED, EventType.UNSUBSCRIBED]))
        if kind is None:
            continue
        events.append(
            Event(
                event_id=f"e{j}",
                message_id=m.message_id,
                type=kind,
                occurred_at=draw(st.sampled_from(INSTANTS)),
                bounce=BounceClass.HARD if kind is EventType.BOUNCED else None,
                status_code="5.1.1" if kind is EventType.BOUNCED else None,
            )
        )
    consents = [
        ConsentEvent(
            consent_id=f"k{n}",
            contact_id=draw(st.sampled_from(CONTACTS[:4])),
            channel=draw(st.sampled_from(CHANNELS)),
            purpose=draw(st.sampled_from(PURPOSES)),
            action=draw(st.sampled_from(list(ConsentAction))),
            occurred_at=draw(st.sampled_from(TIES)),
            method=ConsentMethod.WEB_FORM,
        )
        for n in range(draw(st.integers(0, 16)))
    ]
    manual = [
        (
            draw(st.sampled_from([Channel.EMAIL, Channel.SMS])),
            draw(st.integers(0, 5)),
            draw(st.sampled_from([None, *PURPOSES])),
            draw(st.sampled_from([SuppressionReason.MANUAL, SuppressionReason.UNSUBSCRIBE])),
            draw(st.sampled_from(TIES)),
            draw(st.none() | st.sampled_from(INSTANTS)),
        )
        for _ in range(draw(st.integers(0, 4)))
    ]
    erased = draw(st.lists(st.sampled_from(CONTACTS), max_size=2, unique=True))
    return {
        "messages": messages,
        "events": events,
        "consents": consents,
        "manual": manual,
        "erased": erased,
    }


def _load(repo: CommHistory[Any], history: dict[str, Any]) -> None:
    repo.record_messages(history["messages"])
    repo.record_events(history["events"])
    repo.record_consent(history["consents"])
    for channel, who, purpose, reason, since, lifted in history["manual"]:
        address = ADDRESS[channel][who]
        repo.suppression.add(channel, address, reason=reason, purpose=purpose, since=since)
        if lifted is not None and lifted > since:
            repo.suppression.lift(channel, address, at=lifted)
    known = repo.store.consent_store.known(history["erased"])
    for cid in history["erased"]:
        if cid in known:
            repo.erase_subject(cid)


def _reference(
    repo: Repository, ids: list[str], channel: Channel, purpose: Purpose, at: datetime
) -> dict[str, str]:
    """The Python path: ``consent.screen``, then the address check."""
    out: dict[str, str] = dict(screen(repo, ids, channel, purpose, at))
    if ADDRESS_KINDS.get(channel) is not None:
        rest = [cid for cid in ids if cid not in out]
        known = repo.planning_store.addresses(rest, channel, decrypt=False)
        out.update({cid: "missing_address" for cid in rest if cid not in known})
    return out


@st.composite
def segments(draw: st.DrawFn) -> c.Criteria:
    channel = draw(st.sampled_from(["email", "sms"]))
    purpose = draw(st.sampled_from(["marketing", "transactional"]))
    pool = [
        c.consent(channel, purpose),
        ~c.suppressed(channel, purpose),
        c.in_list(draw(st.lists(st.sampled_from([*CONTACTS, "zz"]), max_size=4))),
        c.sent(channel=channel),
        c.suppressed(channel, purpose),
    ]
    chosen = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=4))
    return c.AllOf(items=tuple(chosen))


@pytest.fixture(params=["sqlite", "postgresql"])
def sql_repo(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[CommHistory[SQLRepository]]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'screen.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    repo = open_repository(url, Keyring.generate())
    try:
        yield repo
    finally:
        repo.close()


TABLES = (
    "events", "messages", "addresses", "consent_events", "suppressions",
    "segment_snapshot_members", "contacts",
)  # fmt: skip


def _clear(repo: CommHistory[SQLRepository]) -> None:
    with repo.store.transaction() as conn:
        for table in TABLES:
            conn.exec_driver_sql(f"DELETE FROM {table}")
    repo.store.forget_cached_keys()
    repo.store._message_contacts.clear()
    repo.store._pair_messages.clear()


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    history=histories(),
    ids=st.lists(st.sampled_from([*CONTACTS, "zz"]), unique=True),
    tree=segments(),
)
def test_screen_equals_the_python_rules_on_every_engine(
    sql_repo: CommHistory[SQLRepository],
    history: dict[str, Any],
    ids: list[str],
    tree: c.Criteria,
) -> None:
    _clear(sql_repo)
    memory = CommHistory.in_memory()
    for repo in (memory, sql_repo):
        _load(repo, history)
    # After the erasures (stamped now), so an erased contact is refused as erased too.
    later = datetime.now(UTC) + timedelta(days=1)
    for at in (*PLAN_AT, later):
        for channel in CHANNELS:
            for purpose in PURPOSES:
                expected = _reference(memory.store, ids, channel, purpose, at)
                for repo in (memory, sql_repo):
                    store = repo.store
                    assert _reference(store, ids, channel, purpose, at) == expected
                    assert store.planning_store.screen(ids, channel, purpose, at) == expected
                    members = store.segment_store.members(tree, at=at)
                    got = store.planning_store.screen_segment(tree, channel, purpose, at)
                    assert got == (members, _reference(store, members, channel, purpose, at))


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(history=histories(), tree=segments())
def test_a_plan_over_a_segment_is_the_plan_over_its_members(
    sql_repo: CommHistory[SQLRepository], history: dict[str, Any], tree: c.Criteria
) -> None:
    _clear(sql_repo)
    memory = CommHistory.in_memory()
    for repo in (memory, sql_repo):
        _load(repo, history)
    for repo in (memory, sql_repo):
        for channel in (Channel.EMAIL, Channel.PUSH):
            for purpose in PURPOSES:
                over_tree = repo.plan_send(tree, channel=channel, purpose=purpose, at=AT)
                members = repo.segment_members(tree, at=AT)
                over_ids = repo.plan_send(members, channel=channel, purpose=purpose, at=AT)
                assert over_tree == over_ids


def test_the_screen_scans_past_the_bulk_threshold(tmp_path: Path) -> None:
    """More ids than ``BULK_THRESHOLD``: one scan, the same refusals as the Python rules."""
    from commhistory.store.consent import BULK_THRESHOLD

    for repo in (
        CommHistory.in_memory(),
        open_repository(f"sqlite:///{tmp_path / 'bulk.db'}", Keyring.generate()),
    ):
        n = BULK_THRESHOLD + 5
        repo.record_messages(
            Message(
                message_id=f"m{i}", channel=Channel.EMAIL, direction=Direction.OUTBOUND,
                contact_id=f"b{i}", address=f"b{i}@example.com", sent_at=AT - timedelta(days=1),
            )
            for i in range(0, n, 2)
        )  # fmt: skip
        repo.record_consent(
            ConsentEvent(
                consent_id=f"g{i}", contact_id=f"b{i}", channel=Channel.EMAIL,
                purpose=Purpose.MARKETING, action=ConsentAction.GRANT,
                occurred_at=AT - timedelta(days=2), method=ConsentMethod.WEB_FORM,
            )
            for i in range(0, n, 3)
        )  # fmt: skip
        ids = [f"b{i}" for i in range(n)] + ["nobody"]
        for purpose in PURPOSES:
            expected = _reference(repo.store, ids, Channel.EMAIL, purpose, AT)
            assert expected  # some refused: no address, no consent
            got = repo.store.planning_store.screen(ids, Channel.EMAIL, purpose, AT)
            assert got == expected
        # Exactly the store's contacts; then all but b2 (refused: no consent), some twice.
        every = [f"b{i}" for i in range(n) if i % 2 == 0 or i % 3 == 0]
        assert every[1] == "b2"
        for asked in (every, every[:1] + every[2:] + every[2:7]):
            for purpose in PURPOSES:
                expected = _reference(repo.store, asked, Channel.EMAIL, purpose, AT)
                got = repo.store.planning_store.screen(asked, Channel.EMAIL, purpose, AT)
                assert got == expected
            refused = repo.store.planning_store.screen(asked, Channel.EMAIL, Purpose.MARKETING, AT)
            assert ("b2" in refused) is (asked is every)
        repo.close()


def test_ties_refuse_as_the_python_rules_do(sql_repo: CommHistory[SQLRepository]) -> None:
    """A withdrawal at the instant of a grant wins; an opt-out at the instant of a grant stays."""
    t = AT - timedelta(hours=5)
    history: dict[str, Any] = {
        "messages": [
            Message(
                message_id=f"m{i}",
                channel=Channel.EMAIL,
                direction=Direction.OUTBOUND,
                contact_id=CONTACTS[i],
                address=ADDRESS[Channel.EMAIL][i],
                sent_at=t - timedelta(days=1),
            )
            for i in range(3)
        ],
        "events": [],
        "consents": [
            ConsentEvent(
                consent_id=f"k{n}",
                contact_id=cid,
                channel=Channel.EMAIL,
                purpose=purpose,
                action=action,
                occurred_at=t,
                method=ConsentMethod.WEB_FORM,
            )
            for n, (cid, purpose, action) in enumerate(
                [
                    ("c0", Purpose.TRANSACTIONAL, ConsentAction.GRANT),
                    ("c0", Purpose.TRANSACTIONAL, ConsentAction.WITHDRAW),
                    ("c1", Purpose.MARKETING, ConsentAction.GRANT),
                    ("c2", Purpose.MARKETING, ConsentAction.GRANT),
                ]
            )
        ],
        "manual": [
            (Channel.EMAIL, 1, None, SuppressionReason.UNSUBSCRIBE, t, None),
            (Channel.EMAIL, 2, None, SuppressionReason.UNSUBSCRIBE, t - timedelta(hours=1), None),
        ],
        "erased": [],
    }
    _clear(sql_repo)
    memory = CommHistory.in_memory()
    ids = ["c0", "c1", "c2"]
    for repo in (memory, sql_repo):
        _load(repo, history)
        store = repo.store
        transactional = store.planning_store.screen(ids, Channel.EMAIL, Purpose.TRANSACTIONAL, AT)
        assert transactional == _reference(store, ids, Channel.EMAIL, Purpose.TRANSACTIONAL, AT)
        # c2's grant is for marketing: it does not lift the opt-out for transactional sends.
        assert transactional == {"c0": "no_consent", "c1": "suppressed", "c2": "suppressed"}
        marketing = store.planning_store.screen(ids, Channel.EMAIL, Purpose.MARKETING, AT)
        assert marketing == _reference(store, ids, Channel.EMAIL, Purpose.MARKETING, AT)
        # c1's opt-out began with its grant: it stays; c2 granted after its opt-out.
        assert marketing == {"c0": "no_consent", "c1": "suppressed"}
