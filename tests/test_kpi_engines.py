"""Two engines, one answer: ``kpi.compute`` in memory equals ``repo.kpis`` in SQL.

Random histories are stored in a memory repository, SQLite and PostgreSQL; the
tables must be identical, for every grouping, time zone, range and machine flag.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from commhistory.convert import ParsedLine
from commhistory.crypto import Keyring
from commhistory.facade import CommHistory, open_repository
from commhistory.kpi import compute
from commhistory.kpi.sql import repository_kpis
from commhistory.model import (
    BounceClass,
    Channel,
    Direction,
    Event,
    EventType,
    Message,
    Purpose,
)
from commhistory.store import SQLRepository
from commhistory.store.kpi import (
    OUTCOME_COLUMNS,
    Outcome,
    fold_outcomes,
    outcome_select,
    refresh_outcomes,
)
from tests.conftest import pg_variant_url

BASE = datetime(2024, 1, 1, tzinfo=UTC)
# Instants near offset changes and midnights of the zones below.
CRITICAL = [
    datetime(2024, 3, 10, 7, 0, tzinfo=UTC),  # New York spring forward
    datetime(2024, 11, 3, 6, 0, tzinfo=UTC),  # New York fall back
    datetime(2024, 3, 31, 1, 0, tzinfo=UTC),  # London spring forward
    datetime(2024, 4, 6, 15, 0, tzinfo=UTC),  # Lord Howe (30 min DST)
    datetime(2024, 1, 31, 15, 0, tzinfo=UTC),  # Tokyo midnight
    datetime(2024, 2, 29, 18, 30, tzinfo=UTC),  # Kolkata midnight
    datetime(2024, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
]
ZONES = ["UTC", "Asia/Tokyo", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe"]
CHANNEL_ADDRESS = {
    Channel.EMAIL: "someone@example.com",
    Channel.SMS: "+819012345678",
    Channel.LINE: "U" + "0123456789abcdef" * 2,
}

instants = st.one_of(
    st.integers(0, 366 * 86_400).map(lambda s: BASE + timedelta(seconds=s)),
    st.tuples(st.sampled_from(CRITICAL), st.integers(-7200, 7200)).map(
        lambda t: t[0] + timedelta(seconds=t[1])
    ),
)


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[Message], list[Event]]:
    n = draw(st.integers(0, 10))
    messages = []
    for i in range(n):
        channel = draw(st.sampled_from(sorted(CHANNEL_ADDRESS)))
        provider = draw(st.sampled_from([None, "sg", "tw"]))
        messages.append(
            Message(
                message_id=f"m{i}",
                channel=channel,
                direction=draw(st.sampled_from([Direction.OUTBOUND] * 4 + [Direction.INBOUND])),
                contact_id=f"c{draw(st.integers(0, 3))}",
                address=CHANNEL_ADDRESS[channel],
                sent_at=draw(instants),
                purpose=draw(st.sampled_from(list(Purpose))),
                campaign_id=draw(st.sampled_from([None, "spring", "summer"])),
                variant=draw(st.sampled_from([None, "A", "B"])),
                provider=provider,
                provider_message_id=None if provider is None else f"p{i}",
            )
        )
    events = []
    for j in range(draw(st.integers(0, 25))):
        target = draw(st.integers(-1, n - 1))
        etype = draw(st.sampled_from(list(EventType)))
        ref: dict[str, Any]
        if target < 0:
            ref = draw(
                st.sampled_from(
                    [{"message_id": "nowhere"}, {"provider": "sg", "provider_message_id": "px"}]
                )
            )
        else:
            m = messages[target]
            by_pair = m.provider is not None and draw(st.booleans())
            ref = (
                {"provider": m.provider, "provider_message_id": m.provider_message_id}
                if by_pair
                else {"message_id": m.message_id}
            )
        extra: dict[str, Any] = {}
        if etype is EventType.BOUNCED:
            extra["bounce"] = draw(st.sampled_from([None, *BounceClass]))
        if etype is EventType.CONVERTED and draw(st.booleans()):
            extra["revenue"] = Decimal(draw(st.integers(-500, 500_000))) / 100
            extra["currency"] = draw(st.sampled_from(["JPY", "USD"]))
        events.append(
            Event(
                event_id=f"e{j}",
                type=etype,
                occurred_at=BASE + timedelta(minutes=j),
                machine=draw(st.booleans()),
                **ref,
                **extra,
            )
        )
    return messages, events


def _ordered(q: dict[str, Any]) -> bool:
    return q["since"] is None or q["until"] is None or bool(q["since"] <= q["until"])


queries: st.SearchStrategy[dict[str, Any]] = st.fixed_dictionaries(
    {
        "by": st.lists(
            st.sampled_from(["campaign_id", "variant", "channel", "provider", "purpose"]),
            unique=True,
            max_size=3,
        ).flatmap(
            lambda keys: st.sampled_from([None, "day", "week", "month"]).map(
                lambda p: tuple(keys) + (() if p is None else (p,))
            )
        ),
        "tz": st.sampled_from(ZONES),
        "exclude_machine": st.booleans(),
        "since": st.none() | instants,
        "until": st.none() | instants,
    }
).filter(_ordered)


@pytest.fixture(params=["sqlite", "postgresql", "postgresql-partitioned"])
def sql_repo(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[CommHistory[SQLRepository]]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'kpi.db'}"
    else:
        url = pg_variant_url(request, request.param)
    repo = open_repository(url, Keyring.generate())
    try:
        yield repo
    finally:
        repo.close()


def _clear(repo: CommHistory[SQLRepository]) -> None:
    with repo.store.transaction() as conn:
        for table in ("events", "messages", "addresses", "consent_events", "contacts"):
            conn.exec_driver_sql(f"DELETE FROM {table}")
    repo.store.forget_cached_keys()
    repo.store._message_contacts.clear()
    repo.store._pair_messages.clear()


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(history=histories(), query=queries, events_first=st.booleans())
def test_sql_engine_equals_memory_engine(
    sql_repo: CommHistory[SQLRepository],
    history: tuple[list[Message], list[Event]],
    query: dict[str, Any],
    events_first: bool,
) -> None:
    messages, events = history
    _clear(sql_repo)
    memory = CommHistory.in_memory()
    for repo in (sql_repo, memory):
        if events_first:
            repo.record_events(events)
            repo.record_messages(messages)
        else:
            repo.record_messages(messages)
            repo.record_events(events)
    expected = compute(messages, events, **query)
    assert sql_repo.kpis(**query) == expected
    assert memory.kpis(**query) == expected


@st.composite
def deliveries(
    draw: st.DrawFn,
) -> tuple[list[Message], list[Event], list[list[Message | Event]]]:
    """A history delivered the way webhooks deliver it: shuffled, in pieces, retried.

    Records come in a random order (events before or after their message,
    interleaved), split into pieces stored one call each; some events come
    again, as the same event or under a new ``event_id`` with the same
    ``provider_event_id`` (a provider retrying a webhook).
    """
    messages, events = draw(histories())
    events = [
        attrs.evolve(e, provider_event_id=f"pe-{e.event_id}")
        if e.provider is not None and draw(st.booleans())
        else e
        for e in events
    ]
    retries: list[Event] = []
    for e in draw(st.lists(st.sampled_from(events), max_size=6)) if events else []:
        if e.provider_event_id is not None and draw(st.booleans()):
            retries.append(attrs.evolve(e, event_id=f"{e.event_id}-again"))
        else:
            retries.append(e)
    records: list[Message | Event] = draw(st.permutations([*messages, *events, *retries]))
    cuts = sorted(draw(st.lists(st.integers(0, len(records)), max_size=4)))
    pieces = [records[a:b] for a, b in itertools.pairwise([0, *cuts, len(records)])]
    return messages, [*events, *retries], [p for p in pieces if p]


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(delivery=deliveries(), query=queries)
def test_engines_agree_on_shuffled_pieced_and_retried_deliveries(
    sql_repo: CommHistory[SQLRepository],
    delivery: tuple[list[Message], list[Event], list[list[Message | Event]]],
    query: dict[str, Any],
) -> None:
    messages, events, pieces = delivery
    _clear(sql_repo)
    memory = CommHistory.in_memory()
    for repo in (sql_repo, memory):
        for piece in pieces:
            # One call per piece: its messages and events share a batch, as in an import.
            repo.ingest(
                [ParsedLine(line=i, raw=None, record=r) for i, r in enumerate(piece, 1)],
                source="test",
            )
    expected = compute(messages, events, **query)
    assert sql_repo.kpis(**query) == expected
    assert memory.kpis(**query) == expected


def _outcome_rows(repo: CommHistory[SQLRepository]) -> list[tuple[Any, ...]]:
    with repo.store.transaction(read=True) as conn:
        return [
            tuple(r)
            for r in conn.exec_driver_sql(
                f"SELECT message_id, {', '.join(OUTCOME_COLUMNS)} FROM messages "
                "ORDER BY message_id"
            )
        ]


def test_rebuild_outcomes_equals_what_ingest_kept_and_forgets_deleted_events(
    sql_repo: CommHistory[SQLRepository],
) -> None:
    sent = datetime(2024, 5, 1, tzinfo=UTC)
    messages = [
        Message(
            message_id=f"m{i}", channel=Channel.EMAIL, direction=Direction.OUTBOUND,
            contact_id="c1", address="someone@example.com", sent_at=sent, campaign_id="s",
            provider="sg", provider_message_id=f"p{i}",
        )
        for i in range(3)
    ]  # fmt: skip
    at = sent + timedelta(minutes=5)
    events = [
        Event(event_id="e1", type=EventType.OPENED, message_id="m0", occurred_at=at),
        Event(event_id="e2", type=EventType.CLICKED, message_id="m0", occurred_at=at,
              machine=True),
        Event(event_id="e3", type=EventType.CONVERTED, provider="sg", provider_message_id="p1",
              occurred_at=at, revenue=Decimal("19.80"), currency="USD"),
        Event(event_id="e4", type=EventType.CONVERTED, message_id="m1", occurred_at=at,
              revenue=Decimal("1980"), currency="JPY"),
        Event(event_id="e5", type=EventType.BOUNCED, message_id="m2", occurred_at=at,
              bounce=BounceClass.HARD),
    ]  # fmt: skip
    sql_repo.record_events(events[:3])  # before their messages: orphans, linked later
    sql_repo.record_messages(messages)
    sql_repo.record_events(events)  # e1-e3 again: duplicates
    kept = _outcome_rows(sql_repo)
    assert kept == [
        ("m0", int(Outcome.OPENED | Outcome.HUMAN_OPENED | Outcome.CLICKED), None, None, None),
        ("m1", int(Outcome.CONVERTED | Outcome.HUMAN_CONVERTED | Outcome.MIXED_CURRENCY),
         None, None, None),
        ("m2", int(Outcome.BOUNCED | Outcome.HARD_BOUNCED), None, None, None),
    ]  # fmt: skip
    assert sql_repo.kpis(by="campaign_id").row(campaign_id="s").revenue == {
        "USD": Decimal("19.80"),
        "JPY": Decimal("1980"),
    }
    assert sql_repo.store.kpi_store.rebuild_outcomes() == 3
    assert _outcome_rows(sql_repo) == kept

    with sql_repo.store.transaction() as conn:  # a host's own retention policy
        conn.exec_driver_sql("DELETE FROM events WHERE event_id IN ('e3', 'e5')")
    assert _outcome_rows(sql_repo) == kept  # until rebuilt, outcomes stay
    sql_repo.store.kpi_store.rebuild_outcomes()
    assert _outcome_rows(sql_repo) == [
        kept[0],
        ("m1", int(Outcome.CONVERTED | Outcome.HUMAN_CONVERTED), "JPY", 1_980_000_000,
         1_980_000_000),
        ("m2", 0, None, None, None),
    ]  # fmt: skip


_stored_events = st.lists(
    st.tuples(
        # Conversions are most of them, so that money in several currencies is common.
        st.sampled_from([*(t.value for t in EventType), *["converted"] * 10]),
        st.sampled_from([None, *(b.value for b in BounceClass)]),
        st.booleans(),
        st.none() | st.integers(-(2**40), 2**40) | st.sampled_from([2**62, -(2**62)]),
        st.none() | st.sampled_from(["JPY", "USD", "EUR", "usd"]),
    ),
    max_size=12,
)


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(rows=_stored_events)
def test_fold_outcomes_equals_the_sql_fold(
    sql_repo: CommHistory[SQLRepository],
    rows: list[tuple[str, str | None, bool, int | None, str | None]],
) -> None:
    """The in-memory fold gives the columns outcome_select() gives over the same rows.

    Or ``None`` (left to the SQL ``UPDATE``) when a running sum leaves the 64-bit
    range, which is where SQL fails (SQLite's ``SUM``; storing PostgreSQL's numeric sum).
    """
    folded = fold_outcomes(rows)
    values: tuple[Any, ...] | None
    with sql_repo.store.transaction() as conn:
        conn.exec_driver_sql(
            "CREATE TEMPORARY TABLE fold_events (type TEXT NOT NULL, bounce TEXT, "
            "machine BOOLEAN NOT NULL, revenue_micros BIGINT, currency TEXT)"
        )
        try:
            if rows:
                ph = sql_repo.store._backend.ph
                conn.exec_driver_sql(
                    f"INSERT INTO fold_events VALUES ({', '.join([ph] * 5)})", rows
                )
            try:
                with conn.begin_nested():
                    got = conn.exec_driver_sql(f"SELECT {outcome_select()} FROM fold_events").one()
                values = (int(got[0]), *got[1:])
                if any(v is not None and not -(2**63) <= v < 2**63 for v in values[2:]):
                    values = None  # PostgreSQL sums into numeric; storing it fails
            except sa.exc.DBAPIError:  # SQLite's SUM overflows
                values = None
        finally:
            conn.exec_driver_sql("DROP TABLE fold_events")
    if folded is not None or values is None:
        assert folded == values
    else:  # left to SQL: a running sum of money left the range
        money = [
            (micros, machine)
            for kind, _, machine, micros, currency in rows
            if kind == "converted" and micros is not None and currency is not None
        ]
        sums = itertools.accumulate(micros for micros, _ in money)
        human = itertools.accumulate(micros for micros, machine in money if not machine)
        assert any(not -(2**63) <= v < 2**63 for v in [*sums, *human])


def _sql_outcomes(repo: CommHistory[SQLRepository]) -> list[tuple[Any, ...]]:
    """Every message's outcome columns recomputed from its stored events, in SQL."""
    ph = repo.store._backend.ph
    with repo.store.transaction(read=True) as conn:
        ids = [r[0] for r in conn.exec_driver_sql("SELECT message_id FROM messages")]
        rows = []
        for mid in sorted(ids):
            got = conn.exec_driver_sql(
                f"SELECT {outcome_select()} FROM events WHERE message_id = {ph}", (mid,)
            ).one()
            rows.append((mid, int(got[0]), *got[1:]))
    return rows


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(delivery=deliveries(), query=queries)
def test_outcomes_folded_at_ingest_equal_the_sql_recomputation(
    sql_repo: CommHistory[SQLRepository],
    delivery: tuple[list[Message], list[Event], list[list[Message | Event]]],
    query: dict[str, Any],
) -> None:
    """Outcomes kept by ingest (in memory or by UPDATE) are what SQL folds from the events.

    Batches mix messages and events, events before their message, retries under
    the same and under new event ids, and pieces that repeat earlier records.
    """
    messages, events, pieces = delivery
    _clear(sql_repo)
    for piece in pieces:
        sql_repo.ingest(
            [ParsedLine(line=i, raw=None, record=r) for i, r in enumerate(piece, 1)],
            source="test",
        )
    assert _outcome_rows(sql_repo) == _sql_outcomes(sql_repo)
    assert sql_repo.kpis(**query) == compute(messages, events, **query)


def test_a_batch_with_its_messages_and_events_needs_no_outcome_update(
    sql_repo: CommHistory[SQLRepository], monkeypatch: pytest.MonkeyPatch
) -> None:
    """New messages get their batch's outcomes in memory; stored ones and retries by UPDATE."""
    refreshed: list[set[str]] = []
    real = refresh_outcomes

    def spy(conn: Any, backend: Any, ids: Any) -> None:
        refreshed.append(set(ids))
        real(conn, backend, ids)

    monkeypatch.setattr("commhistory.store.sql_ingest.refresh_outcomes", spy)
    sent = datetime(2024, 5, 1, tzinfo=UTC)
    at = sent + timedelta(minutes=5)
    messages = [
        Message(
            message_id=f"m{i}", channel=Channel.EMAIL, direction=Direction.OUTBOUND,
            contact_id=f"c{i}", address="someone@example.com", sent_at=sent,
            provider="sg", provider_message_id=f"p{i}",
        )
        for i in range(4)
    ]  # fmt: skip
    events = [
        Event(event_id="e1", type=EventType.OPENED, message_id="m0", occurred_at=at),
        Event(event_id="e2", type=EventType.CONVERTED, provider="sg", provider_message_id="p1",
              occurred_at=at, revenue=Decimal("2.5"), currency="EUR", machine=True),
        Event(event_id="e3", type=EventType.BOUNCED, message_id="m2", occurred_at=at,
              bounce=BounceClass.HARD),
    ]  # fmt: skip

    def lines(records: list[Message | Event]) -> list[ParsedLine]:
        return [ParsedLine(line=i, raw=None, record=r) for i, r in enumerate(records, 1)]

    # Events before their messages in the input, all in one batch.
    sql_repo.ingest(lines([*events, *messages]), source="test")
    assert refreshed == []
    assert _outcome_rows(sql_repo) == [
        ("m0", int(Outcome.OPENED | Outcome.HUMAN_OPENED), None, None, None),
        ("m1", int(Outcome.CONVERTED), "EUR", 2_500_000, None),
        ("m2", int(Outcome.BOUNCED | Outcome.HARD_BOUNCED), None, None, None),
        ("m3", 0, None, None, None),
    ]
    # A later event of a stored message: recomputed in SQL.
    later = Event(event_id="e4", type=EventType.CLICKED, message_id="m3", occurred_at=at)
    sql_repo.ingest(lines([later]), source="test")
    assert refreshed == [{"m3"}]
    assert _outcome_rows(sql_repo)[3] == (
        "m3", int(Outcome.CLICKED | Outcome.HUMAN_CLICKED), None, None, None
    )  # fmt: skip
    # A new message whose batch also names it in an event stored before (for m0): the
    # fold counted that event, the database kept the stored one; recomputed in SQL.
    refreshed.clear()
    fresh = attrs.evolve(messages[0], message_id="m9", provider_message_id="p9")
    bounce = attrs.evolve(events[2], event_id="e9", message_id="m9")
    stored_again = attrs.evolve(events[0], message_id="m9")
    sql_repo.ingest(lines([fresh, bounce, stored_again]), source="test")
    assert refreshed == [{"m9"}]
    assert _outcome_rows(sql_repo)[-1] == (
        "m9", int(Outcome.BOUNCED | Outcome.HARD_BOUNCED), None, None, None
    )  # fmt: skip
    assert _outcome_rows(sql_repo) == _sql_outcomes(sql_repo)


def test_offset_segments_find_each_dst_change_to_the_microsecond() -> None:
    from zoneinfo import ZoneInfo

    from commhistory.kpi.sql import offset_segments

    def us(moment: datetime) -> int:
        return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)

    hour = 3_600_000_000
    segments = offset_segments(
        ZoneInfo("America/New_York"), us(datetime(2024, 1, 1, tzinfo=UTC)), us(BASE.replace(2025))
    )
    assert segments == [
        (us(datetime(2024, 1, 1, tzinfo=UTC)), -5 * hour),
        (us(datetime(2024, 3, 10, 7, tzinfo=UTC)), -4 * hour),
        (us(datetime(2024, 11, 3, 6, tzinfo=UTC)), -5 * hour),
    ]
    tokyo = offset_segments(ZoneInfo("Asia/Tokyo"), 0, us(BASE))
    assert tokyo == [(0, 9 * hour)]


@pytest.mark.parametrize("zone", ["America/New_York", "Europe/London", "Australia/Lord_Howe"])
def test_days_around_dst_changes_agree(sql_repo: CommHistory[SQLRepository], zone: str) -> None:
    # One message a minute for two hours either side of each change: local days
    # split at the zone's midnight, which moves with the offset.
    messages = [
        Message(
            message_id=f"m{k}-{i}",
            channel=Channel.LINE,
            direction=Direction.OUTBOUND,
            contact_id="c1",
            address=CHANNEL_ADDRESS[Channel.LINE],
            sent_at=moment + timedelta(minutes=i * 7),
            variant="A" if i % 2 else "B",
        )
        for k, moment in enumerate(CRITICAL[:4])
        for i in range(-40, 40)
    ] + [
        Message(
            message_id=f"mid{d}",
            channel=Channel.LINE,
            direction=Direction.OUTBOUND,
            contact_id="c1",
            address=CHANNEL_ADDRESS[Channel.LINE],
            sent_at=BASE + timedelta(days=d, hours=h),
        )
        for d in range(0, 366, 5)
        for h in (0, 4, 11, 13, 22)
    ]
    sql_repo.record_messages(messages)
    for period in ("day", "week", "month"):
        expected = compute(messages, [], by=(period, "variant"), tz=zone)
        assert len(expected) > 10
        assert repository_kpis(sql_repo.store, by=(period, "variant"), tz=zone) == expected
