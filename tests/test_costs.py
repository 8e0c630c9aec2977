"""Campaign costs: the record's checks, the store port on every backend, and ROI in tables."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from commhistory.audit import Actor
from commhistory.crypto import Keyring
from commhistory.errors import InvalidInputError, NormalizationError, PayloadError
from commhistory.facade import CommHistory, open_repository
from commhistory.kpi import Cost, KpiRow, compute
from commhistory.model import Channel, Direction, Event, EventType, Message
from commhistory.store import MemoryRepository

T0 = datetime(2024, 5, 1, tzinfo=UTC)
JST = timezone(timedelta(hours=9))
ADDRESS = {Channel.EMAIL: "someone@example.com", Channel.SMS: "+819012345678"}


def cost(cost_id: str = "k1", **kw: Any) -> Cost:
    fields: dict[str, Any] = {
        "cost_id": cost_id,
        "campaign_id": "spring",
        "amount": Decimal("1000"),
        "currency": "JPY",
        "starts_at": T0,
        "ends_at": T0 + timedelta(days=1),
    }
    fields.update(kw)
    return Cost(**fields)


def message(n: int, *, channel: Channel = Channel.EMAIL, **kw: Any) -> Message:
    fields: dict[str, Any] = {
        "message_id": f"m{n}",
        "channel": channel,
        "direction": Direction.OUTBOUND,
        "contact_id": f"c{n}",
        "address": ADDRESS[channel],
        "sent_at": T0 + timedelta(hours=n),
        "campaign_id": "spring",
    }
    fields.update(kw)
    return Message(**fields)


def converted(n: int, revenue: str, currency: str = "JPY") -> Event:
    return Event(
        event_id=f"v{n}",
        type=EventType.CONVERTED,
        message_id=f"m{n}",
        occurred_at=T0 + timedelta(hours=n, minutes=5),
        revenue=Decimal(revenue),
        currency=currency,
    )


# ---------------------------------------------------------------------- the record


@pytest.mark.parametrize(
    ("change", "field", "error"),
    [
        ({"amount": Decimal("-1")}, "amount", InvalidInputError),
        ({"amount": Decimal("NaN")}, "amount", InvalidInputError),
        ({"amount": Decimal("Infinity")}, "amount", InvalidInputError),
        ({"amount": Decimal("0.0000001")}, "amount", InvalidInputError),
        ({"amount": 1000}, "amount", PayloadError),
        ({"amount": 10.5}, "amount", PayloadError),
        ({"currency": "jpy"}, "currency", NormalizationError),
        ({"currency": "XXX"}, "currency", NormalizationError),
        ({"currency": None}, "currency", NormalizationError),
        ({"starts_at": datetime(2024, 5, 1)}, "starts_at", NormalizationError),
        ({"ends_at": datetime(2024, 5, 2)}, "ends_at", NormalizationError),
        ({"ends_at": T0 - timedelta(seconds=1)}, "ends_at", InvalidInputError),
        ({"ends_at": T0}, "ends_at", InvalidInputError),
        ({"starts_at": "2024-05-01"}, "starts_at", PayloadError),
        ({"cost_id": ""}, "cost_id", PayloadError),
        ({"cost_id": 7}, "cost_id", PayloadError),
        ({"campaign_id": " "}, "campaign_id", PayloadError),
        ({"campaign_id": "x" * 256}, "campaign_id", PayloadError),
        ({"channel": "pigeon"}, "channel", PayloadError),
        ({"variant": ""}, "variant", PayloadError),
        ({"variant": "a\x00b"}, "variant", PayloadError),
    ],
)
def test_bad_costs_raise_typed_errors_naming_the_field(
    change: dict[str, Any], field: str, error: type[Exception]
) -> None:
    with pytest.raises(error) as info:
        cost(**change)
    assert isinstance(info.value, InvalidInputError)
    assert info.value.field == field


def test_a_cost_keeps_utc_and_accepts_a_channel_value() -> None:
    c = cost(
        starts_at=datetime(2024, 5, 1, tzinfo=JST),
        ends_at=datetime(2024, 5, 2, tzinfo=JST),
        channel="sms",
        amount=Decimal("0"),
    )
    assert c.starts_at == datetime(2024, 4, 30, 15, tzinfo=UTC)
    assert c.starts_at.tzinfo is UTC
    assert c.channel is Channel.SMS
    assert c.micros == 0


# ---------------------------------------------------------------------- the store port

BACKENDS = ["memory", "sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def repo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CommHistory[Any]]:
    if request.param == "memory":
        with CommHistory(MemoryRepository()) as mem:
            yield mem
        return
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'costs.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    with open_repository(url, Keyring.generate()) as sql:
        yield sql


def test_record_is_idempotent_by_cost_id(repo: CommHistory[Any]) -> None:
    a = cost("k1", amount=Decimal("1000.50"))
    b = cost("k2", channel=Channel.SMS, variant="A", currency="USD", amount=Decimal("7.25"))
    first = repo.record_costs([a, b, a])
    assert (first.inserted, first.duplicates, first.rejected) == (2, 1, 0)
    again = repo.record_costs([b, a])
    assert (again.inserted, again.duplicates) == (0, 2)
    assert repo.costs() == [a, b]
    assert repo.costs(campaign_id="spring") == [a, b]
    assert repo.costs(campaign_id="autumn") == []
    stored = repo.costs()[0]
    assert str(stored.amount) == "1000.50"  # the exact decimal text comes back
    table = repo.kpis()
    assert table.total().cost == {"JPY": Decimal("1000.5"), "USD": Decimal("7.25")}


def test_same_id_with_other_values_refuses_the_whole_call(repo: CommHistory[Any]) -> None:
    repo.record_costs([cost("k1")])
    with pytest.raises(InvalidInputError) as info:
        repo.record_costs([cost("k9"), cost("k1", amount=Decimal("999"))])
    assert info.value.field == "cost_id"
    assert [c.cost_id for c in repo.costs()] == ["k1"]  # k9 was not stored either
    with pytest.raises(InvalidInputError, match="cost_id"):
        repo.record_costs([cost("k5"), cost("k5", variant="B")])
    with pytest.raises(PayloadError, match="expected a Cost"):
        repo.record_costs([cost("k6"), {"cost_id": "k7"}])  # type: ignore[list-item]
    assert [c.cost_id for c in repo.costs()] == ["k1"]


def test_totals_sum_in_the_store_and_select_overlapping_costs(repo: CommHistory[Any]) -> None:
    day = timedelta(days=1)
    repo.record_costs(
        [
            cost("a", amount=Decimal("100")),
            cost("b", amount=Decimal("0.000001")),
            cost("c", starts_at=T0 + day, ends_at=T0 + 2 * day),
            cost("d", currency="USD", amount=Decimal("3")),
        ]
    )
    totals = repo.store.cost_store.totals()
    by_key = {(t.currency, t.starts_at): (t.micros, t.costs) for t in totals}
    assert by_key == {
        ("JPY", T0): (100_000_001, 2),
        ("JPY", T0 + day): (1_000_000_000, 1),
        ("USD", T0): (3_000_000, 1),
    }
    later = repo.store.cost_store.totals(since=T0 + day)
    assert [(t.starts_at, t.costs) for t in later] == [(T0 + day, 1)]
    earlier = repo.store.cost_store.totals(until=T0 + day)
    assert {t.starts_at for t in earlier} == {T0}


# ---------------------------------------------------------------------- ROI in tables


def _history(repo: CommHistory[Any]) -> None:
    repo.record_messages(
        [
            message(1, variant="A"),
            message(2, variant="B"),
            message(3, variant="B", channel=Channel.SMS),
            message(4, campaign_id="summer"),
        ]
    )
    repo.record_events([converted(1, "3000"), converted(2, "1500"), converted(4, "20", "USD")])


def test_roi_per_campaign_and_its_worked_example(repo: CommHistory[Any]) -> None:
    _history(repo)
    repo.record_costs(
        [
            cost("spring-ads", amount=Decimal("1800"), ends_at=T0 + timedelta(days=31)),
            cost("summer-sms", campaign_id="summer", amount=Decimal("0"), currency="USD"),
        ]
    )
    table = repo.kpis("campaign_id")
    spring = table.row(campaign_id="spring")
    assert spring.cost == {"JPY": Decimal("1800")}
    assert spring.revenue == {"JPY": Decimal("4500")}
    assert spring.roi == {"JPY": 1.5}  # (4500 - 1800) / 1800
    assert spring.cost_per_conversion == {"JPY": Decimal("900")}
    assert spring.revenue_per_recipient == {"JPY": Decimal("1500")}  # 4500 / 3 sent
    summer = table.row(campaign_id="summer")
    assert summer.cost == {"USD": Decimal("0")}
    assert summer.roi == {"USD": None}  # zero cost: not available, never infinity
    data = table.to_dict()["rows"][0]
    assert data["cost"] == {"JPY": "1800"}
    assert data["roi"] == {"JPY": 1.5}
    assert data["cost_per_conversion"] == {"JPY": "900"}
    assert table.has_costs
    assert compute(
        [message(1, variant="A"), message(2, variant="B")],
        [converted(1, "3000"), converted(2, "1500")],
        by="campaign_id",
        costs=[cost("spring-ads", amount=Decimal("1800"), ends_at=T0 + timedelta(days=31))],
    ).rows[0].roi == {"JPY": 1.5}


def test_campaign_cost_is_not_split_across_variants_or_channels(repo: CommHistory[Any]) -> None:
    _history(repo)
    repo.record_costs(
        [
            cost("campaign", amount=Decimal("1000")),
            cost("variant-b-sms", variant="B", channel=Channel.SMS, amount=Decimal("300")),
            cost("variant-a", variant="A", amount=Decimal("200")),
        ]
    )
    by_variant = repo.kpis(("campaign_id", "variant"))
    assert by_variant.row(campaign_id="spring", variant="A").cost == {"JPY": Decimal("200")}
    # B's only cost is for its SMS messages: it adds up into B (an aggregate, not a split).
    assert by_variant.row(campaign_id="spring", variant="B").cost == {"JPY": Decimal("300")}
    assert by_variant.unattributed_cost == {"JPY": Decimal("1000")}
    assert by_variant.total().cost == {"JPY": Decimal("1500")}

    by_channel = repo.kpis(("campaign_id", "channel"))
    assert by_channel.row(campaign_id="spring", channel="email").cost == {}
    assert by_channel.row(campaign_id="spring", channel="email").roi == {"JPY": None}
    assert by_channel.row(campaign_id="spring", channel="sms").cost == {"JPY": Decimal("300")}
    assert by_channel.unattributed_cost == {"JPY": Decimal("1200")}

    by_campaign = repo.kpis("campaign_id")
    assert by_campaign.row(campaign_id="spring").cost == {"JPY": Decimal("1500")}
    assert by_campaign.unattributed_cost == {}

    by_provider = repo.kpis("provider")
    assert all(r.cost == {} for r in by_provider)
    assert by_provider.total().cost == {"JPY": Decimal("1500")}


def test_costs_and_periods(repo: CommHistory[Any]) -> None:
    _history(repo)
    may = cost("may", starts_at=T0, ends_at=datetime(2024, 6, 1, tzinfo=UTC))
    day = cost("day1", amount=Decimal("10"))  # 2024-05-01, one UTC day
    repo.record_costs([may, day])
    daily = repo.kpis(("campaign_id", "day"))
    assert daily.row(campaign_id="spring", day="2024-05-01").cost == {"JPY": Decimal("10")}
    assert daily.unattributed_cost == {"JPY": Decimal("1000")}  # May is no single day
    monthly = repo.kpis(("campaign_id", "month"))
    assert monthly.row(campaign_id="spring", month="2024-05").cost == {"JPY": Decimal("1010")}
    # In Tokyo the UTC day 2024-05-01 spans two local days: no day shows it.
    tokyo = repo.kpis(("day",), tz="Asia/Tokyo")
    assert all(r.cost == {} for r in tokyo)
    assert tokyo.total().cost == {"JPY": Decimal("1010")}


def test_range_bounds_never_split_a_cost(repo: CommHistory[Any]) -> None:
    _history(repo)
    repo.record_costs(
        [
            cost("may", starts_at=T0, ends_at=datetime(2024, 6, 1, tzinfo=UTC)),
            cost("day1", amount=Decimal("10")),
            cost("april", amount=Decimal("5"), starts_at=T0 - timedelta(days=30), ends_at=T0),
        ]
    )
    table = repo.kpis("campaign_id", since=T0, until=T0 + timedelta(days=2))
    assert table.row(campaign_id="spring").cost == {"JPY": Decimal("10")}
    assert table.costs_outside_range == 1  # May straddles `until`; April is before `since`
    assert table.to_dict()["costs_outside_range"] == 1
    nothing = repo.kpis("campaign_id", since=T0 + timedelta(days=400))
    assert not nothing.has_costs
    assert repo.kpis("campaign_id", costs=False) == compute(
        [
            message(1, variant="A"),
            message(2, variant="B"),
            message(3, variant="B", channel=Channel.SMS),
            message(4, campaign_id="summer"),
        ],
        [converted(1, "3000"), converted(2, "1500"), converted(4, "20", "USD")],
        by="campaign_id",
    )


def test_cost_of_a_group_without_messages_is_unattributed(repo: CommHistory[Any]) -> None:
    _history(repo)
    repo.record_costs([cost("autumn", campaign_id="autumn", amount=Decimal("50"))])
    table = repo.kpis("campaign_id")
    assert [r.group["campaign_id"] for r in table] == ["spring", "summer"]
    assert table.unattributed_cost == {"JPY": Decimal("50")}
    total = table.total()
    assert total.cost == {"JPY": Decimal("50")}
    assert total.roi == {"JPY": (4500 - 50) / 50, "USD": None}


def test_compute_refuses_conflicting_costs_as_a_repository_does() -> None:
    with pytest.raises(InvalidInputError) as info:
        compute([message(1)], [], costs=[cost("k1"), cost("k1", amount=Decimal("2"))])
    assert info.value.field == "cost_id"
    with pytest.raises(PayloadError, match="expected a Cost"):
        compute([message(1)], [], costs=["k1"])  # type: ignore[list-item]
    twice = compute([message(1)], [], by="campaign_id", costs=[cost("k1"), cost("k1")])
    assert twice.row(campaign_id="spring").cost == {"JPY": Decimal("1000")}


def test_currencies_are_never_mixed() -> None:
    row = KpiRow(
        sent=4,
        delivered=4,
        conversions=3,
        revenue={"JPY": Decimal("1000"), "USD": Decimal("10")},
        cost={"USD": Decimal("40"), "EUR": Decimal("5")},
    )
    assert row.roi == {"EUR": -1.0, "JPY": None, "USD": -0.75}
    assert row.cost_per_conversion == {"EUR": Decimal("1.666667"), "USD": Decimal("13.333333")}
    assert row.revenue_per_recipient == {"JPY": Decimal("250"), "USD": Decimal("2.5")}
    empty = KpiRow()
    assert (empty.roi, empty.cost_per_conversion, empty.revenue_per_recipient) == ({}, {}, {})
    no_conversions = KpiRow(sent=1, delivered=1, cost={"JPY": Decimal("1")})
    assert no_conversions.cost_per_conversion == {"JPY": None}


def test_guarded_views_check_and_audit_costs(repo: CommHistory[Any]) -> None:
    analyst = repo.as_actor(Actor("a-1", ["analyst"]), purpose="budget review")
    with pytest.raises(PermissionError):
        analyst.record_costs([cost("k1")])
    assert repo.costs() == []
    operator = repo.as_actor(Actor("o-1", ["operator"]), purpose="invoices")
    report = operator.record_costs([cost("k2"), cost("k1")])
    assert report.inserted == 2
    assert [c.cost_id for c in analyst.costs()] == ["k1", "k2"]
    assert analyst.kpis(costs=False).unattributed_cost == {}
    entry = repo.audit_log.entries(actor_id="o-1")[-1]
    assert (entry.action, entry.targets) == ("record_costs", ("k1", "k2"))
