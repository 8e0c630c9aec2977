"""A/B statistics against textbook values (no SciPy: the numbers are quoted)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from commhistory.errors import InvalidInputError
from commhistory.kpi import compute
from commhistory.kpi.abtest import (
    chi2_sf,
    compare,
    holm,
    normal_cdf,
    normal_ppf,
    sample_size,
    two_proportion_z,
    wilson_interval,
)
from commhistory.model import Channel, Direction, Event, EventType, Message


def test_normal_cdf_and_quantile() -> None:
    assert normal_cdf(0.0) == 0.5
    assert normal_cdf(1.96) == pytest.approx(0.9750021048517795, abs=1e-12)
    assert normal_cdf(-3.0) == pytest.approx(0.0013498980316301, abs=1e-13)
    assert normal_ppf(0.975) == pytest.approx(1.959963984540054, abs=1e-9)
    assert normal_ppf(0.8) == pytest.approx(0.8416212335729143, abs=1e-9)


@pytest.mark.parametrize(
    ("x", "df", "p"),
    [  # critical values from chi-square tables
        (3.841458820694124, 1, 0.05),
        (5.991464547107979, 2, 0.05),
        (11.070497693516351, 5, 0.05),
        (18.307038053275146, 10, 0.05),
        (6.634896601021214, 1, 0.01),
        (2.705543454095404, 1, 0.10),
        (43.77297182574219, 30, 0.05),
        (0.0, 4, 1.0),
    ],
)
def test_chi_square_survival(x: float, df: int, p: float) -> None:
    assert chi2_sf(x, df) == pytest.approx(p, abs=1e-10)


def test_chi_square_far_tail() -> None:
    assert chi2_sf(100.0, 3) == pytest.approx(1.554159431389e-21, rel=1e-6)


@pytest.mark.parametrize(
    ("s", "n", "low", "high"),
    [  # Newcombe (1998), Statistics in Medicine 17, table I, Wilson score method
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_interval_matches_newcombe(s: int, n: int, low: float, high: float) -> None:
    lo, hi = wilson_interval(s, n)
    assert lo == pytest.approx(low, abs=5e-5)
    assert hi == pytest.approx(high, abs=5e-5)


@given(st.integers(0, 10_000).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_wilson_interval_contains_the_rate(sn: tuple[int, int]) -> None:
    s, n = sn
    lo, hi = wilson_interval(s, n)
    assert 0.0 <= lo <= hi <= 1.0
    if n:
        assert lo <= s / n <= hi


def test_two_proportion_z_by_hand() -> None:
    # p = 0.5 vs 0.6, n = 100 each: pooled 0.55, se = sqrt(.55*.45*.02) = 0.070356
    z, p = two_proportion_z(50, 100, 60, 100)
    assert z == pytest.approx(0.1 / 0.0703562363, rel=1e-8)
    assert p == pytest.approx(0.155218, abs=1e-6)
    assert two_proportion_z(0, 0, 5, 10) == (0.0, 1.0)


def test_holm() -> None:
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([]) == []


def test_sample_size_textbook() -> None:
    # Fleiss, without continuity correction: 10 % vs 12 %, alpha .05, power .8
    assert sample_size(0.10, difference=0.02) == 3841
    assert sample_size(0.10, lift=0.2) == 3841
    assert sample_size(0.5, difference=0.1, power=0.9) == 519
    with pytest.raises(InvalidInputError):
        sample_size(0.1)
    with pytest.raises(InvalidInputError):
        sample_size(0.9, lift=0.5)


def test_clear_winner() -> None:
    result = compare({"A": (120, 1000), "B": (165, 1000)})
    assert result.control == "A"
    assert result.winner == "B"
    (cmp,) = result.comparisons
    assert cmp.significant
    assert cmp.lift == pytest.approx(0.375)
    assert cmp.lift_low is not None
    assert cmp.lift_high is not None
    assert 0 < cmp.lift_low < 0.375 < cmp.lift_high
    assert "B beats A" in result.verdict


def test_no_winner_without_significance() -> None:
    result = compare({"A": (120, 1000), "B": (130, 1000)})
    assert result.winner is None
    assert "No significant difference" in result.verdict


def test_below_minimum_sample_says_so() -> None:
    result = compare({"A": (1, 10), "B": (9, 10)}, min_sample=100)
    assert result.winner is None
    assert not result.enough_data
    assert "Not enough data" in result.verdict


def test_many_arms_chi_square_and_holm() -> None:
    even = compare({"A": (120, 1000), "B": (125, 1000), "C": (130, 1000)})
    assert even.chi_square is not None
    assert even.chi_square.df == 2
    assert even.chi_square.p_value > 0.05
    assert even.winner is None
    split = compare({"A": (100, 1000), "B": (104, 1000), "C": (150, 1000)})
    assert split.chi_square is not None
    assert split.chi_square.p_value < 0.05
    assert split.winner == "C"
    by_arm = {c.arm: c for c in split.comparisons}
    assert by_arm["C"].p_adjusted == pytest.approx(2 * by_arm["C"].p_value)
    assert not by_arm["B"].significant


def test_compare_a_kpi_table() -> None:
    sent = datetime(2024, 5, 1, tzinfo=UTC)
    messages = [
        Message(
            message_id=f"m{i}",
            channel=Channel.LINE,
            direction=Direction.OUTBOUND,
            contact_id=f"c{i}",
            address="U" + "cd" * 16,
            sent_at=sent,
            variant="A" if i % 2 else "B",
        )
        for i in range(400)
    ]
    clicks = [
        Event(event_id=f"e{i}", type=EventType.CLICKED, occurred_at=sent, message_id=f"m{i}")
        for i in range(400)
        if (i % 2 and i % 10 == 1) or (not i % 2 and i % 4 == 0)
    ]
    table = compute(messages, clicks, by="variant")
    result = compare(table, metric="click_rate")
    assert [(a.name, a.successes, a.trials) for a in result.arms] == [
        ("A", 40, 200),
        ("B", 100, 200),
    ]
    assert result.winner == "B"
    with pytest.raises(InvalidInputError):
        compare(compute(messages, clicks, by="channel"))
    with pytest.raises(InvalidInputError):
        compare(table, metric="nps")


def test_bad_input() -> None:
    with pytest.raises(InvalidInputError):
        compare({"A": (1, 10)})
    with pytest.raises(InvalidInputError):
        compare({"A": (11, 10), "B": (1, 10)})
    with pytest.raises(InvalidInputError):
        compare({"A": (1, 10), "B": (1, 10)}, control="Z")
    with pytest.raises(InvalidInputError):
        normal_ppf(1.0)
