"""The condition tree: building, JSON round trips, and typed errors naming the path."""

from __future__ import annotations

import calendar
import json
import pickle
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commhistory import criteria as c
from commhistory.errors import CriteriaError, CriteriaSchemaError, InvalidInputError
from tests.test_segments_engines import trees


def test_fluent_api_builds_the_json_the_docs_show() -> None:
    tree = (
        (c.attr("tier") == "gold")
        & c.opened(within_days=30)
        & (c.activity("purchase", within_days=90).count() == 0)
        & c.consent("email", "marketing")
        & ~c.suppressed("email", "marketing")
    )
    assert tree.to_dict() == {
        "all": [
            {"attribute": "tier", "op": "=", "value": "gold"},
            {"behaviour": "opened", "within_days": 30},
            {"activity": "purchase", "op": "=", "value": 0, "within_days": 90},
            {"consent": "email", "purpose": "marketing"},
            {"not": {"suppressed": "email", "purpose": "marketing"}},
        ]
    }
    assert c.loads(tree.to_json()) == tree


def test_operators_flatten_and_double_negation_cancels() -> None:
    a, b, d = c.attr("x").is_set(), c.attr("y").is_set(), c.attr("z").is_set()
    assert (a & b & d).items == (a, b, d)
    assert (a | b | d).items == (a, b, d)
    assert ~~a == a


def test_builders_turn_python_values_into_json() -> None:
    assert (c.attr("born") == date(1990, 6, 22)).value == "1990-06-22"
    moment = datetime(2026, 1, 1, 9, tzinfo=UTC)
    assert (c.attr("seen") > moment).value == "2026-01-01T09:00:00Z"
    assert c.attr("n").between(1, 5).value == (1, 5)
    assert (c.attr("b").days_until_anniversary("Asia/Tokyo") == 7).to_dict() == {
        "attribute": "b", "op": "=", "value": 7, "of": "days until anniversary",
        "zone": "Asia/Tokyo",
    }  # fmt: skip
    revenue = c.activity("purchase").revenue("JPY") >= 10000
    assert revenue.to_dict() == {
        "activity": "purchase", "measure": "revenue", "value": "10000",
        "currency": "JPY",
    }  # fmt: skip
    assert (c.opened(campaign="spring").count() >= 3).value == 3
    last = c.clicked().last() < datetime(2026, 5, 1, tzinfo=UTC)
    assert last.to_dict() == {
        "behaviour": "clicked", "measure": "last", "op": "<", "value": "2026-05-01T00:00:00Z",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("data", "path", "reason"),
    [
        ([], "$", "must be an object"),
        ({}, "$", "exactly one of"),
        ({"all": [{"attribute": "t", "op": "=", "value": 1}, {"nope": 1}]}, "$.all[1]", "one of"),
        ({"all": [{"attribute": "t", "op": "~", "value": 1}]}, "$.all[0].op", "unknown operator"),
        ({"any": [{"attribute": "t", "op": "=", "value": 1, "x": 2}]}, "$.any[0].x", "unknown"),
        ({"attribute": "t", "op": "in", "value": "a"}, "$.value", "needs a list"),
        ({"attribute": "t", "op": "between", "value": [1]}, "$.value", "two values"),
        ({"attribute": "t", "op": "is set", "value": 1}, "$.value", "takes no value"),
        ({"attribute": "t", "op": "=", "value": {"a": 1}}, "$.value", "text, a number"),
        ({"attribute": "t", "op": "=", "value": 1, "zone": "Mars/Base"}, "$.zone", "IANA"),
        ({"attribute": "t", "op": "=", "of": "days ago", "value": "x"}, "$.value", "integer"),
        ({"not": {"behaviour": "opened", "value": -1}}, "$.not.value", "between"),
        ({"behaviour": "opened", "value": True}, "$.value", "integer"),
        ({"behaviour": "read"}, "$.behaviour", "unknown"),
        ({"behaviour": "opened", "channel": "fax"}, "$.channel", "unknown channel"),
        (
            {"behaviour": "opened", "within_days": 3, "since": "2026-01-01T00:00:00Z"},
            "$.within_days",
            "not both",
        ),
        ({"behaviour": "opened", "since": "2026-01-01T00:00:00"}, "$.since", "offset"),
        (
            {
                "behaviour": "opened",
                "since": "2026-02-01T00:00:00Z",
                "until": "2026-01-01T00:00:00Z",
            },
            "$.until",
            "before since",
        ),
        ({"activity": "p", "measure": "revenue", "value": "1.0000001"}, "$.value", "6 decimal"),
        ({"activity": "p", "currency": "JPY"}, "$.currency", "only with measure"),
        (
            {"activity": "p", "where": [{"property": "k", "op": "<", "value": 1}]},
            "$.where[0].op",
            "unknown operator",
        ),
        (
            {"activity": "p", "where": [{"property": "k", "op": "=", "value": 1.5}]},
            "$.where[0].value",
            "integers",
        ),
        (
            {
                "behaviour": "opened",
                "measure": "first",
                "op": "=",
                "value": "2026-01-01T00:00:00Z",
            },
            "$.op",
            "unknown operator",
        ),
        (
            {"behaviour": "opened", "measure": "last", "op": "<", "value": 3},
            "$.value",
            "ISO 8601 instant",
        ),
        ({"activity": "p", "measure": "first", "value": "2026-01-01"}, "$.value", "offset"),
        ({"consent": "email", "purpose": "spam"}, "$.purpose", "unknown"),
        ({"list": ["a", 3]}, "$.list[1]", "contact id"),
    ],
)
def test_bad_trees_name_the_path_and_the_reason(data: Any, path: str, reason: str) -> None:
    with pytest.raises(CriteriaError) as info:
        c.from_dict(data)
    assert info.value.path == path
    assert reason in info.value.reason
    assert isinstance(info.value, InvalidInputError)


def test_not_json_is_a_criteria_error() -> None:
    with pytest.raises(CriteriaError, match=r"\$: not valid JSON"):
        c.loads("{")


def test_errors_pickle_and_never_quote_values() -> None:
    with pytest.raises(CriteriaError) as info:
        c.from_dict({"attribute": "t", "op": "=", "value": {"secret@example.com": 1}})
    assert "secret@example.com" not in str(info.value)
    again = pickle.loads(pickle.dumps(info.value))
    assert (type(again), again.path, again.reason) == (CriteriaError, info.value.path,
                                                       info.value.reason)  # fmt: skip


@pytest.mark.parametrize(
    ("cond", "kind", "personal", "path", "reason"),
    [
        (c.attr("n") == 1, "int", True, "$.attribute", "personal"),
        (c.attr("n").contains("a"), "int", False, "$.op", "not an operator of int"),
        (c.attr("n") > "a", "str", False, "$.op", "not an operator of str"),
        (c.attr("n") == "1", "int", False, "$.value", "int value"),
        (c.attr("n") == True, "int", False, "$.value", "int value"),  # noqa: E712
        (c.attr("n") == "1.0000001", "decimal", False, "$.value", "6 decimal"),
        (c.attr("n") == "2026-02-30", "date", False, "$.value", "calendar"),
        (c.attr("n") == "2026-02-01T00:00:00", "datetime", False, "$.value", "offset"),
        (c.attr("n").between(5, 1), "int", False, "$.value", "low is above"),
        (c.attr("n").days_ago() > 3, "int", False, "$.of", "date or datetime"),
        (c.attr("n").days_until_anniversary() > 3, "datetime", False, "$.of", "date"),
    ],
)
def test_typing_against_a_declared_type(
    cond: c.AttributeCondition, kind: str, personal: bool, path: str, reason: str
) -> None:
    with pytest.raises(CriteriaSchemaError) as info:
        c.coerce_attribute(cond, kind, personal, "$")
    assert info.value.path == path
    assert reason in info.value.reason


def test_anniversaries_of_29_february_fall_on_28_february() -> None:
    assert c.anniversary_days("=", 0, date(2027, 2, 28)) == ("02-28", "02-29")
    assert c.anniversary_days("=", 0, date(2028, 2, 29)) == ("02-29",)
    assert c.anniversary_days("=", 7, date(2026, 12, 28)) == ("01-04",)
    assert len(c.anniversary_days(">=", 0, date(2026, 3, 1))) == 366


def test_day_windows_mirror_days_ago_onto_the_date() -> None:
    today = date(2026, 6, 15)
    assert c.day_window(">", 30, "days ago", today) == ("<", date(2026, 5, 16))
    assert c.day_window(">", 30, "days until", today) == (">", date(2026, 7, 15))
    assert c.day_window("between", (0, 7), "days ago", today) == (
        "between", (date(2026, 6, 8), today),
    )  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(tree=trees)
def test_json_round_trip(tree: c.Criteria) -> None:
    data = tree.to_dict()
    assert c.from_dict(json.loads(json.dumps(data))) == tree
    assert c.from_dict(data).to_dict() == data
    assert all(p.startswith("$") for p, _n in c.walk(tree))
    assert isinstance(tree.describe(), str)


@settings(max_examples=300, deadline=None)
@given(
    day=st.dates(date(2020, 1, 1), date(2030, 12, 31)),
    today=st.dates(date(2024, 1, 1), date(2028, 12, 31)),
    of=st.sampled_from(["days ago", "days until"]),
    op=st.sampled_from(["=", "!=", "<", "<=", ">", ">=", "between", "in", "not in"]),
    n=st.integers(-40, 40),
    m=st.integers(-40, 40),
)
def test_day_window_means_what_the_measure_says(
    day: date, today: date, of: str, op: str, n: int, m: int
) -> None:
    measure = (today - day).days if of == "days ago" else (day - today).days
    value: Any = (min(n, m), max(n, m)) if op == "between" else (n, m) if "in" in op else n
    new_op, target = c.day_window(op, value, of, today)
    assert c.compare(new_op, day, target) == c.compare(op, measure, value)


@settings(max_examples=200, deadline=None)
@given(
    day=st.dates(date(1950, 1, 1), date(2030, 12, 31)),
    today=st.dates(date(2024, 1, 1), date(2030, 12, 31)),
    n=st.integers(0, 366),
)
def test_anniversary_days_match_a_brute_force_count(day: date, today: date, n: int) -> None:
    later = next(
        today + timedelta(days=k)
        for k in range(367)
        if (today + timedelta(days=k)).strftime("%m-%d") == day.strftime("%m-%d")
        or (
            day.strftime("%m-%d") == "02-29"
            and (today + timedelta(days=k)).strftime("%m-%d") == "02-28"
            and not calendar.isleap((today + timedelta(days=k)).year)
        )
    )
    expected = (later - today).days == n
    assert (day.strftime("%m-%d") in c.anniversary_days("=", n, today)) == expected
