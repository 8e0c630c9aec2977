"""Three engines, one answer: a segment counted in memory, on SQLite and on PostgreSQL.

Random condition trees over random histories (attributes with history, messages
and events with machine opens and scanner clicks, activities with plain
properties and revenue, consent grants and withdrawals, suppressions fed from
bounces and unsubscribes) must give the same count and members everywhere.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from commhistory import criteria as c
from commhistory.contacts import AttributeDefinition
from commhistory.crypto import Keyring
from commhistory.errors import InvalidInputError
from commhistory.facade import CommHistory, open_repository
from commhistory.model import (
    Activity,
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
)
from commhistory.store import SQLRepository
from commhistory.store.segments import STRATEGIES, SQLSegmentStore

AT = datetime(2026, 6, 15, 3, 0, tzinfo=UTC)
CONTACTS = [f"c{i}" for i in range(5)]
ADDRESS = {
    Channel.EMAIL: [f"user{i}@example.com" for i in range(5)],
    Channel.SMS: [f"+8190123456{i:02d}" for i in range(5)],
}
DEFINITIONS = [
    AttributeDefinition(name="tier", type="enum", values=("gold", "silver", "bronze")),
    AttributeDefinition(name="score", type="int"),
    AttributeDefinition(name="balance", type="decimal"),
    AttributeDefinition(name="vip", type="bool"),
    AttributeDefinition(name="birthday", type="date"),
    AttributeDefinition(name="signed_up", type="datetime"),
    AttributeDefinition(name="tags", type="list"),
    AttributeDefinition(name="city", type="str"),
]
DAYS = [date(2026, 6, 15) + timedelta(days=d) for d in (-400, -31, -30, -29, -1, 0, 1, 6, 7, 8)]
DAYS += [date(2024, 2, 29), date(1990, 6, 22), date(1990, 6, 15)]
INSTANTS = [AT + timedelta(hours=h) for h in (-24 * 40, -24 * 30 - 1, -24 * 29, -15, -4, 0, 2)]

values_of: dict[str, list[Any]] = {
    "tier": ["gold", "silver", "bronze"],
    "score": [-5, 0, 3, 10],
    "balance": [Decimal("0"), Decimal("1.5"), Decimal("-2.25"), Decimal("100")],
    "vip": [True, False],
    "birthday": DAYS,
    "signed_up": INSTANTS,
    "tags": [[], ["a"], ["a", "b"], ["b,c", 'q"x']],
    "city": ["Tokyo", "tokyo", "Osaka", "Tōkyō"],
}
json_of: dict[str, list[Any]] = {
    "tier": ["gold", "silver", "bronze", "none"],
    "score": [-5, 0, 3, 10, 4],
    "balance": ["0", "1.5", -2.25, 100, "1.500001"],
    "vip": [True, False],
    "birthday": [d.isoformat() for d in DAYS[:6]],
    "signed_up": [t.isoformat() for t in INSTANTS[:5]],
    "tags": ["a", "b", "b,c", 'q"x', "c"],
    "city": ["Tokyo", "tok", "To", "Tō", "Osaka"],
}
TYPE = {d.name: d.type.value for d in DEFINITIONS}


def _times(draw: st.DrawFn) -> datetime:
    return AT + timedelta(minutes=draw(st.integers(-60 * 24 * 45, 60 * 24 * 2)))


@st.composite
def histories(draw: st.DrawFn) -> dict[str, list[Any]]:
    attributes = []
    for _ in range(draw(st.integers(0, 12))):
        name = draw(st.sampled_from(sorted(values_of)))
        value = draw(st.none() | st.sampled_from(values_of[name]))
        attributes.append((draw(st.sampled_from(CONTACTS)), name, value, _times(draw)))
    messages = []
    for i in range(draw(st.integers(0, 8))):
        channel = draw(st.sampled_from([Channel.EMAIL, Channel.SMS]))
        who = draw(st.integers(0, 4))
        messages.append(
            Message(
                message_id=f"m{i}",
                channel=channel,
                direction=draw(st.sampled_from([Direction.OUTBOUND] * 4 + [Direction.INBOUND])),
                contact_id=CONTACTS[who],
                address=ADDRESS[channel][who],
                sent_at=_times(draw),
                purpose=draw(st.sampled_from([Purpose.MARKETING, Purpose.TRANSACTIONAL])),
                campaign_id=draw(st.sampled_from([None, "spring", "summer"])),
            )
        )
    events = []
    if messages:
        for j in range(draw(st.integers(0, 14))):
            m = draw(st.sampled_from(messages))
            etype = draw(
                st.sampled_from(
                    [
                        EventType.DELIVERED, EventType.OPENED, EventType.OPENED,
                        EventType.CLICKED, EventType.CONVERTED, EventType.BOUNCED,
                        EventType.UNSUBSCRIBED, EventType.COMPLAINED, EventType.REJECTED,
                        EventType.FAILED,
                    ]
                )
            )  # fmt: skip
            extra: dict[str, Any] = {}
            if etype is EventType.BOUNCED:
                extra["bounce"] = draw(st.sampled_from([BounceClass.HARD, BounceClass.SOFT]))
            events.append(
                Event(
                    event_id=f"e{j}",
                    message_id=m.message_id,
                    type=etype,
                    occurred_at=max(m.sent_at, _times(draw)),
                    machine=draw(st.booleans()),
                    **extra,
                )
            )
    activities = []
    for k in range(draw(st.integers(0, 8))):
        name = draw(st.sampled_from(["purchase", "view"]))
        revenue = draw(st.none() | st.sampled_from([Decimal("10"), Decimal("2.5"), Decimal("-1")]))
        props = draw(
            st.dictionaries(
                st.sampled_from(["sku", "qty", "gift", "note"]),
                st.sampled_from(["A1", "B2", "1", 1, 2, True, False, None]),
                max_size=3,
            )
        )
        activities.append(
            Activity(
                activity_id=f"a{k}",
                contact_id=draw(st.sampled_from(CONTACTS)),
                name=name,
                occurred_at=_times(draw),
                revenue=revenue,
                currency=None if revenue is None else draw(st.sampled_from(["JPY", "USD"])),
                properties=props,
            )
        )
    consents = []
    for n in range(draw(st.integers(0, 8))):
        consents.append(
            ConsentEvent(
                consent_id=f"k{n}",
                contact_id=draw(st.sampled_from(CONTACTS)),
                channel=draw(st.sampled_from([Channel.EMAIL, Channel.SMS])),
                purpose=draw(st.sampled_from([Purpose.MARKETING, Purpose.TRANSACTIONAL])),
                action=draw(st.sampled_from(list(ConsentAction))),
                occurred_at=draw(st.sampled_from(INSTANTS)),
                method=ConsentMethod.WEB_FORM,
            )
        )
    return {
        "attributes": attributes,
        "messages": messages,
        "events": events,
        "activities": activities,
        "consents": consents,
    }


OPS_OF = {
    kind: sorted(c.TYPE_OPS[kind]) for kind in ("enum", "int", "decimal", "bool", "date",
                                                  "datetime", "list", "str")
}  # fmt: skip


@st.composite
def attribute_leaves(draw: st.DrawFn) -> c.AttributeCondition:
    name = draw(st.sampled_from(sorted(values_of)))
    kind = TYPE[name]
    relative = kind in {"date", "datetime"} and draw(st.booleans())
    if relative:
        of = draw(
            st.sampled_from(
                ["days ago", "days until"] + (["days until anniversary"] if kind == "date" else [])
            )
        )
        op = draw(st.sampled_from(list(c.RELATIVE_OPS)))
        days = st.integers(-40, 40) if of != "days until anniversary" else st.integers(0, 366)
        value: Any
        if op in {"in", "not in"}:
            value = tuple(draw(st.lists(days, max_size=3)))
        elif op == "between":
            value = tuple(sorted(draw(st.tuples(days, days))))
        else:
            value = draw(days)
        zone = draw(st.sampled_from(["UTC", "Asia/Tokyo", "America/New_York"]))
        return c.AttributeCondition(name=name, op=op, value=value, of=of, zone=zone)
    op = draw(st.sampled_from(OPS_OF[kind]))
    pool = st.sampled_from(json_of[name])
    if op in {"is set", "is not set"}:
        value = None
    elif op in {"in", "not in"}:
        value = tuple(draw(st.lists(pool, max_size=3)))
    elif op == "between":
        lo, hi = draw(pool), draw(pool)
        if kind in {"int", "decimal"}:
            lo, hi = sorted((lo, hi), key=lambda v: Decimal(str(v)))
        else:
            lo, hi = sorted((lo, hi), key=str)
            if kind == "datetime":
                lo, hi = sorted((lo, hi), key=datetime.fromisoformat)
        value = (lo, hi)
    else:
        value = draw(pool)
    return c.AttributeCondition(name=name, op=op, value=value)


def _window(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["none", "days", "range"]))
    if kind == "days":
        return {"within_days": draw(st.integers(0, 40))}
    if kind == "range":
        a, b = sorted(draw(st.tuples(st.sampled_from(INSTANTS), st.sampled_from(INSTANTS))))
        return {"since": a.isoformat(), "until": b.isoformat()}
    return {}


def _measure(draw: st.DrawFn, counts: st.SearchStrategy[Any]) -> dict[str, Any]:
    measure = draw(st.sampled_from(["count", "count", "first", "last"]))
    if measure == "count":
        return {"op": draw(st.sampled_from(list(c.COUNT_OPS))), "value": draw(counts)}
    return {
        "measure": measure,
        "op": draw(st.sampled_from(list(c.TIME_OPS))),
        "value": draw(st.sampled_from(INSTANTS)).isoformat(),
    }


@st.composite
def behaviour_leaves(draw: st.DrawFn) -> c.BehaviourCondition:
    return c.BehaviourCondition(
        behaviour=draw(st.sampled_from(list(c.BEHAVIOURS))),
        **_measure(draw, st.integers(0, 3)),
        campaign=draw(st.sampled_from([None, "spring"])),
        channel=draw(st.sampled_from([None, "email", "sms"])),
        include_machine=draw(st.booleans()),
        **_window(draw),
    )


@st.composite
def activity_leaves(draw: st.DrawFn) -> c.ActivityCondition:
    revenue = draw(st.booleans())
    filters = draw(
        st.lists(
            st.builds(
                lambda key, op, vals: c.PropertyFilter(
                    key=key,
                    op=op,
                    value=None
                    if op in {"is set", "is not set"}
                    else tuple(vals)
                    if op in {"in", "not in"}
                    else (vals[0] if vals else "A1"),
                ),
                st.sampled_from(["sku", "qty", "gift"]),
                st.sampled_from(list(c.PROPERTY_OPS)),
                st.lists(st.sampled_from(["A1", "1", 1, 2, True, False]), max_size=2),
            ),
            max_size=2,
        )
    )
    measured: dict[str, Any] = (
        {
            "measure": "revenue",
            "op": draw(st.sampled_from(list(c.COUNT_OPS))),
            "value": draw(st.sampled_from(["0", "10", "2.5", "-1", "12.5"])),
            "currency": draw(st.sampled_from([None, "JPY"])),
        }
        if revenue
        else _measure(draw, st.integers(0, 3))
    )
    return c.ActivityCondition(
        name=draw(st.sampled_from(["purchase", "view"])),
        **measured,
        where=tuple(filters),
        **_window(draw),
    )


leaves = st.one_of(
    attribute_leaves(),
    behaviour_leaves(),
    activity_leaves(),
    st.builds(
        c.ConsentCondition,
        channel=st.sampled_from(["email", "sms"]),
        purpose=st.sampled_from(["marketing", "transactional"]),
    ),
    st.builds(
        c.SuppressedCondition,
        channel=st.sampled_from(["email", "sms", "line"]),
        purpose=st.sampled_from(["marketing", "transactional"]),
    ),
    st.builds(c.InList, contact_ids=st.lists(st.sampled_from([*CONTACTS, "nobody"]), max_size=3)),
)
trees = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.builds(c.AllOf, items=st.lists(inner, max_size=3)),
        st.builds(c.AnyOf, items=st.lists(inner, max_size=3)),
        st.builds(c.Not, item=inner),
    ),
    max_leaves=5,
)


def _load(repo: CommHistory[Any], history: dict[str, list[Any]]) -> None:
    repo.declare_attributes(DEFINITIONS)
    repo.declare_activities({"purchase": ["sku", "qty", "gift"], "view": ["sku", "qty", "gift"]})
    for cid, name, value, at in history["attributes"]:
        repo.set_attributes(cid, {name: value}, at=at)
    repo.record_messages(history["messages"])
    repo.record_events(history["events"])
    repo.record_activities(history["activities"])
    repo.record_consent(history["consents"])


@pytest.fixture(params=["sqlite", "postgresql"])
def sql_repo(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[CommHistory[SQLRepository]]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'segments.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    repo = open_repository(url, Keyring.generate())
    try:
        yield repo
    finally:
        repo.close()


TABLES = (
    "events", "messages", "addresses", "consent_events", "suppressions", "activities",
    "contact_attributes", "contacts",
)  # fmt: skip


def _clear(repo: CommHistory[SQLRepository]) -> None:
    with repo.store.transaction() as conn:
        for table in TABLES:
            conn.exec_driver_sql(f"DELETE FROM {table}")
    repo.store.forget_cached_keys()
    repo.store._message_contacts.clear()
    repo.store._pair_messages.clear()


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(history=histories(), tree_list=st.lists(trees, min_size=1, max_size=4))
def test_memory_sqlite_and_postgresql_agree(
    sql_repo: CommHistory[SQLRepository],
    history: dict[str, list[Any]],
    tree_list: list[c.Criteria],
) -> None:
    _clear(sql_repo)
    memory = CommHistory.in_memory()
    for repo in (memory, sql_repo):
        _load(repo, history)
    store = sql_repo.store.segment_store
    try:
        for tree in tree_list:
            for at in (AT, AT - timedelta(days=3)):
                expected = memory.store.segment_store.members(tree, at=at)
                # Both compilations (uncorrelated sets; correlated probes in a
                # reordered "all"), whichever "auto" picks for the dialect.
                for strategy in STRATEGIES:
                    store.strategy = strategy
                    got = store.members(tree, at=at)
                    assert got == expected, (strategy, c.dumps(tree))
                    assert store.count(tree, at=at) == len(expected), strategy
                assert memory.store.segment_store.count(tree, at=at) == len(expected)
            assert c.from_dict(tree.to_dict()) == tree
    finally:
        store.strategy = "auto"


@settings(max_examples=40, deadline=None)
@given(history=histories(), tree=trees)
def test_not_is_the_complement_within_the_universe(
    history: dict[str, list[Any]], tree: c.Criteria
) -> None:
    memory = CommHistory.in_memory()
    _load(memory, history)
    store = memory.store.segment_store
    everyone = store.members(c.all_(), at=AT)
    kept = store.members(tree, at=AT)
    assert sorted(set(everyone) - set(kept)) == store.members(~tree, at=AT)
    explained = store.explain(tree, at=AT)
    assert explained.kept == explained.cumulative == len(kept)


@settings(max_examples=60, deadline=None)
@given(history=histories(), channel=st.sampled_from(["email", "sms"]))
def test_consent_and_not_suppressed_is_what_can_send_allows_for_marketing(
    history: dict[str, list[Any]], channel: str
) -> None:
    memory = CommHistory.in_memory()
    _load(memory, history)
    everyone = memory.segment_members(c.all_(), at=AT)
    sendable = c.consent(channel, "marketing") & ~c.suppressed(channel, "marketing")
    assert memory.segment_members(sendable, at=AT) == sorted(
        memory.filter_sendable(everyone, channel, "marketing", AT)
    )


def test_an_unknown_strategy_is_refused(sql_repo: CommHistory[SQLRepository]) -> None:
    with pytest.raises(InvalidInputError, match="strategy"):
        SQLSegmentStore(sql_repo.store, strategy="fastest")
    store = sql_repo.store.segment_store
    store.strategy = "fastest"
    try:
        with pytest.raises(InvalidInputError, match="strategy"):
            store.members(c.all_(), at=AT)
    finally:
        store.strategy = "auto"
