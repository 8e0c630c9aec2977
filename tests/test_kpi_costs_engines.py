"""Two engines, one answer, with costs: ``kpi.compute`` equals ``repo.kpis`` on every store.

The random histories and queries of :mod:`tests.test_kpi_engines` get random
campaign costs (per campaign, channel and/or variant, in two currencies, over
periods that do and do not line up with local days, weeks and months, some ids
repeated); the tables, costs and ROI included, must be identical in memory, on
SQLite and on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from commhistory.crypto import Keyring
from commhistory.facade import CommHistory, open_repository
from commhistory.kpi import Cost, compute
from commhistory.model import Channel, Event, Message
from commhistory.store import SQLRepository
from tests.test_kpi_engines import ZONES, histories, instants, queries

DURATIONS = [
    timedelta(hours=1),
    timedelta(days=1),
    timedelta(days=7),
    timedelta(days=31),
    timedelta(days=400),
]


@st.composite
def aligned_starts(draw: st.DrawFn) -> datetime:
    """Local midnights (of a day, a Monday or the 1st) in one of the report zones."""
    zone = ZoneInfo(draw(st.sampled_from(ZONES)))
    day = datetime(2024, 1, 1) + timedelta(days=draw(st.integers(-3, 366)))
    if draw(st.booleans()):
        day = day.replace(day=1)
    return day.replace(tzinfo=zone)


@st.composite
def cost_lists(draw: st.DrawFn) -> list[Cost]:
    costs = []
    for i in range(draw(st.integers(0, 12))):
        starts = draw(st.one_of(instants, aligned_starts()))
        length = draw(
            st.one_of(
                st.sampled_from(DURATIONS),
                st.integers(1, 90 * 86_400).map(lambda s: timedelta(seconds=s)),
            )
        )
        costs.append(
            Cost(
                cost_id=f"k{i}",
                campaign_id=draw(st.sampled_from(["spring", "summer", "autumn"])),
                channel=draw(st.sampled_from([None, Channel.EMAIL, Channel.SMS])),
                variant=draw(st.sampled_from([None, "A", "B"])),
                amount=Decimal(draw(st.integers(0, 10_000_000))) / 100,
                currency=draw(st.sampled_from(["JPY", "USD"])),
                starts_at=starts,
                ends_at=starts + length,
            )
        )
    repeats = draw(st.lists(st.sampled_from(costs), max_size=3)) if costs else []
    return costs + repeats


# Groupings made of the keys costs have, so that many costs land in rows.
cost_queries: st.SearchStrategy[dict[str, Any]] = st.fixed_dictionaries(
    {
        "by": st.lists(
            st.sampled_from(["campaign_id", "variant", "channel"]), unique=True, max_size=3
        ).flatmap(
            lambda keys: st.sampled_from([None, "day", "week", "month"]).map(
                lambda p: tuple(keys) + (() if p is None else (p,))
            )
        ),
        "tz": st.sampled_from(ZONES),
        "exclude_machine": st.booleans(),
        "since": st.none() | instants,
        "until": st.none(),
    }
)


@pytest.fixture(params=["sqlite", "postgresql"])
def sql_repo(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[CommHistory[SQLRepository]]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'kpi.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    with open_repository(url, Keyring.generate()) as repo:
        yield repo


def _clear(repo: CommHistory[SQLRepository]) -> None:
    with repo.store.transaction() as conn:
        for table in (
            "events",
            "messages",
            "addresses",
            "consent_events",
            "contacts",
            "campaign_costs",
        ):
            conn.exec_driver_sql(f"DELETE FROM {table}")
    repo.store.forget_cached_keys()
    repo.store._message_contacts.clear()
    repo.store._pair_messages.clear()


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(history=histories(), costs=cost_lists(), query=st.one_of(queries, cost_queries))
def test_engines_agree_on_costs_and_roi(
    sql_repo: CommHistory[SQLRepository],
    history: tuple[list[Message], list[Event]],
    costs: list[Cost],
    query: dict[str, Any],
) -> None:
    messages, events = history
    _clear(sql_repo)
    memory = CommHistory.in_memory()
    for repo in (sql_repo, memory):
        repo.record_messages(messages)
        repo.record_events(events)
        repo.record_costs(costs)
    expected = compute(messages, events, costs=costs, **query)
    event(f"rows with a cost: {min(sum(bool(r.cost) for r in expected), 2)}")
    event(f"unattributed cost: {bool(expected.unattributed_cost)}")
    event(f"costs outside the range: {bool(expected.costs_outside_range)}")
    assert sql_repo.kpis(**query) == expected
    assert memory.kpis(**query) == expected
    # The figures follow from the table; checking them on both sides pins the JSON too.
    assert sql_repo.kpis(**query).to_dict() == expected.to_dict()
    total = expected.total()
    in_range = [
        c
        for c in {c.cost_id: c for c in costs}.values()
        if (query["since"] is None or c.starts_at >= query["since"])
        and (query["until"] is None or c.ends_at <= query["until"])
    ]
    for currency in ("JPY", "USD"):
        spent = sum((c.amount for c in in_range if c.currency == currency), Decimal(0))
        assert total.cost.get(currency, Decimal(0)) == spent
        if spent == 0:
            assert total.roi.get(currency) is None
