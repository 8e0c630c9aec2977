"""A/B statistics: is one variant really better, and how sure are we?

:func:`compare` takes the variants of a test (a :class:`~commhistory.kpi.KpiTable`
grouped by ``variant``, or ``{arm: (successes, trials)}``) and returns an
:class:`ABResult`:

* a **Wilson score interval** for each arm's rate (honest near 0 and 1);
* each arm against the control: the difference, a **two-proportion z-test**
  (pooled), the **relative lift** with a log risk-ratio interval, and the
  p-value **Holm-adjusted** for the number of comparisons;
* with more than two arms, a **chi-square test** of independence first;
* a verdict. No winner is declared unless the difference is significant at
  ``alpha`` (after Holm), and none while an arm has fewer than ``min_sample``
  trials: the verdict says so.

:func:`sample_size` says how many trials per arm a test needs. Everything is
computed with :mod:`math` alone (the normal CDF from :func:`math.erf`, the
chi-square tail from the regularized incomplete gamma function).

.. versionadded:: 0.2.0
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import attrs

from commhistory.errors import InvalidInputError
from commhistory.kpi.metrics import RATES, KpiTable

__all__ = [
    "ABResult",
    "ArmStats",
    "ChiSquare",
    "Comparison",
    "chi2_sf",
    "compare",
    "holm",
    "normal_cdf",
    "normal_ppf",
    "sample_size",
    "two_proportion_z",
    "wilson_interval",
]


# --------------------------------------------------------------------------- distributions


def normal_cdf(x: float) -> float:
    """Return the standard normal cumulative distribution at *x*."""
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def normal_ppf(p: float) -> float:
    """Return the standard normal quantile: the *x* with ``normal_cdf(x) == p``.

    Raises:
        InvalidInputError: *p* is not strictly between 0 and 1.
    """
    if not 0.0 < p < 1.0:
        raise InvalidInputError(field="p", reason="must be strictly between 0 and 1")
    lo, hi = -40.0, 40.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if normal_cdf(mid) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-13:
            break
    return (lo + hi) / 2


def _lower_gamma_series(a: float, x: float) -> float:
    """Regularized lower incomplete gamma P(a, x) by its power series (x < a + 1)."""
    term = total = 1.0 / a
    denom = a
    for _ in range(10_000):
        denom += 1.0
        term *= x / denom
        total += term
        if abs(term) < abs(total) * 1e-16:
            break
    return total * math.exp(-x + a * math.log(x) - math.lgamma(a))


def _upper_gamma_fraction(a: float, x: float) -> float:
    """Regularized upper incomplete gamma Q(a, x) by its continued fraction (x >= a + 1)."""
    tiny = 1e-300
    b = x + 1.0 - a
    c = 1.0 / tiny
    d = 1.0 / b
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-16:
            break
    return h * math.exp(-x + a * math.log(x) - math.lgamma(a))


def chi2_sf(x: float, df: int) -> float:
    """Return the chi-square survival function ``P(X >= x)`` with *df* degrees of freedom.

    Raises:
        InvalidInputError: *df* is not positive.
    """
    if df < 1:
        raise InvalidInputError(field="df", reason="must be at least 1")
    if x <= 0:
        return 1.0
    a, half = df / 2.0, x / 2.0
    if half < a + 1.0:
        return max(0.0, 1.0 - _lower_gamma_series(a, half))
    return min(1.0, _upper_gamma_fraction(a, half))


# --------------------------------------------------------------------------- tests


def _check_counts(successes: int, trials: int) -> None:
    if trials < 0 or successes < 0 or successes > trials:
        raise InvalidInputError(
            field="successes", reason="need 0 <= successes <= trials (counts of messages)"
        )


def wilson_interval(
    successes: int, trials: int, *, confidence: float = 0.95
) -> tuple[float, float]:
    """Return the Wilson score interval of a proportion.

    Args:
        successes: Messages with the outcome (clicks, say).
        trials: Messages that could have it (delivered, say).
        confidence: The interval's confidence level.

    Returns:
        ``(low, high)``; ``(0.0, 1.0)`` when there are no trials.

    Raises:
        InvalidInputError: Counts out of order, or confidence not in (0, 1).
    """
    _check_counts(successes, trials)
    if not 0.0 < confidence < 1.0:
        raise InvalidInputError(field="confidence", reason="must be strictly between 0 and 1")
    if trials == 0:
        return 0.0, 1.0
    z = normal_ppf(1.0 - (1.0 - confidence) / 2.0)
    p = successes / trials
    z2n = z * z / trials
    centre = (p + z2n / 2.0) / (1.0 + z2n)
    half = z * math.sqrt(p * (1.0 - p) / trials + z2n / (4.0 * trials)) / (1.0 + z2n)
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return low, high


def two_proportion_z(
    successes_a: int, trials_a: int, successes_b: int, trials_b: int
) -> tuple[float, float]:
    """Two-sided two-proportion z-test with the pooled standard error.

    Returns:
        ``(z, p_value)``, *z* positive when B's rate is higher. With no trials
        in an arm, or no variation at all, ``(0.0, 1.0)``.

    Raises:
        InvalidInputError: Counts out of order.
    """
    _check_counts(successes_a, trials_a)
    _check_counts(successes_b, trials_b)
    if trials_a == 0 or trials_b == 0:
        return 0.0, 1.0
    pooled = (successes_a + successes_b) / (trials_a + trials_b)
    se = math.sqrt(pooled * (1.0 - pooled) * (1.0 / trials_a + 1.0 / trials_b))
    if se == 0.0:
        return 0.0, 1.0
    z = (successes_b / trials_b - successes_a / trials_a) / se
    return z, min(1.0, 2.0 * normal_cdf(-abs(z)))


def holm(p_values: Sequence[float]) -> list[float]:
    """Return Holm-Bonferroni adjusted p-values, in the order given."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def sample_size(
    baseline: float,
    *,
    lift: float | None = None,
    difference: float | None = None,
    alpha: float = 0.05,
    power: float = 0.8,
) -> int:
    """Return the trials per arm a two-sided two-proportion test needs.

    Args:
        baseline: The control's expected rate (``0.1`` for 10 %).
        lift: The smallest relative change worth detecting (``0.2`` for +20 %).
        difference: Or the smallest absolute change (``0.02`` for +2 points).
        alpha: The significance level.
        power: The chance of detecting a true effect of that size.

    Returns:
        Trials (e.g. delivered messages) per arm, rounded up.

    Raises:
        InvalidInputError: Rates outside (0, 1), neither or both of *lift* and
            *difference*, or alpha/power outside (0, 1).

    Example:
        >>> from commhistory.kpi import sample_size
        >>> sample_size(0.10, difference=0.02)
        3841
    """
    if (lift is None) == (difference is None):
        raise InvalidInputError(field="lift", reason="give exactly one of lift or difference")
    for name, value in (("baseline", baseline), ("alpha", alpha), ("power", power)):
        if not 0.0 < value < 1.0:
            raise InvalidInputError(field=name, reason="must be strictly between 0 and 1")
    target = baseline * (1.0 + lift) if lift is not None else baseline + (difference or 0.0)
    if not 0.0 < target < 1.0 or target == baseline:
        raise InvalidInputError(
            field="lift" if lift is not None else "difference",
            reason="the target rate must differ from the baseline and lie in (0, 1)",
        )
    z_a = normal_ppf(1.0 - alpha / 2.0)
    z_b = normal_ppf(power)
    mean = (baseline + target) / 2.0
    top = z_a * math.sqrt(2.0 * mean * (1.0 - mean)) + z_b * math.sqrt(
        baseline * (1.0 - baseline) + target * (1.0 - target)
    )
    return math.ceil(top * top / (target - baseline) ** 2 - 1e-9)


# --------------------------------------------------------------------------- results


@attrs.frozen(kw_only=True)
class ArmStats:
    """One arm of a test.

    Attributes:
        name: The variant.
        successes: Messages with the outcome.
        trials: Messages that could have it.
        rate: ``successes / trials`` (``None`` without trials).
        low: The Wilson interval's lower end.
        high: The Wilson interval's upper end.
    """

    name: str
    successes: int
    trials: int
    rate: float | None
    low: float
    high: float


@attrs.frozen(kw_only=True)
class Comparison:
    """One arm against the control.

    Attributes:
        arm: The variant compared.
        control: The control variant.
        difference: ``rate(arm) - rate(control)`` (``None`` without trials).
        lift: ``rate(arm) / rate(control) - 1`` (``None`` when undefined).
        lift_low: The lift interval's lower end (log risk ratio), if defined.
        lift_high: Its upper end.
        z: The z statistic (positive when the arm is higher).
        p_value: The two-sided p-value.
        p_adjusted: The p-value after Holm's correction over all comparisons.
        significant: ``p_adjusted < alpha``.
    """

    arm: str
    control: str
    difference: float | None
    lift: float | None
    lift_low: float | None
    lift_high: float | None
    z: float
    p_value: float
    p_adjusted: float
    significant: bool


@attrs.frozen(kw_only=True)
class ChiSquare:
    """A chi-square test of independence over all arms (k x 2 table).

    Attributes:
        statistic: The chi-square statistic.
        df: Degrees of freedom (arms - 1).
        p_value: The survival function at the statistic.
    """

    statistic: float
    df: int
    p_value: float


@attrs.frozen(kw_only=True)
class ABResult:
    """The outcome of :func:`compare`.

    Attributes:
        metric: The rate compared (``"click_rate"``).
        alpha: The significance level.
        confidence: ``1 - alpha``, the intervals' level.
        control: The control arm.
        arms: Every arm, control first.
        comparisons: Each other arm against the control.
        chi_square: The overall test, with more than two arms.
        min_sample: Trials each arm needs before any verdict.
        enough_data: Every arm has at least ``min_sample`` trials.
        winner: The winning arm, or ``None`` (no significant difference, or
            not enough data).
        verdict: One sentence saying what the numbers allow one to conclude.

    .. versionadded:: 0.2.0
    """

    metric: str
    alpha: float
    confidence: float
    control: str
    arms: tuple[ArmStats, ...]
    comparisons: tuple[Comparison, ...]
    chi_square: ChiSquare | None
    min_sample: int
    enough_data: bool
    winner: str | None
    verdict: str

    def to_dict(self) -> dict[str, object]:
        """Return the result as JSON-ready data."""
        return attrs.asdict(self, recurse=True)


def _lift_interval(
    s_c: int, n_c: int, s_a: int, n_a: int, z: float
) -> tuple[float | None, float | None, float | None]:
    if n_c == 0 or n_a == 0 or s_c == 0:
        return None, None, None
    ratio = (s_a / n_a) / (s_c / n_c)
    if s_a == 0:
        return ratio - 1.0, None, None
    se = math.sqrt(1.0 / s_a - 1.0 / n_a + 1.0 / s_c - 1.0 / n_c)
    log_ratio = math.log(ratio)
    return ratio - 1.0, math.exp(log_ratio - z * se) - 1.0, math.exp(log_ratio + z * se) - 1.0


def _chi_square(arms: Sequence[tuple[int, int]]) -> ChiSquare:
    total_s = sum(s for s, _ in arms)
    total_n = sum(n for _, n in arms)
    stat = 0.0
    if total_n and 0 < total_s < total_n:
        for s, n in arms:
            for observed, share in ((s, total_s / total_n), (n - s, 1 - total_s / total_n)):
                expected = n * share
                if expected > 0:
                    stat += (observed - expected) ** 2 / expected
    df = len(arms) - 1
    return ChiSquare(statistic=stat, df=df, p_value=chi2_sf(stat, df))


def _arms_from(
    data: KpiTable | Mapping[str, tuple[int, int]], metric: str
) -> dict[str, tuple[int, int]]:
    if isinstance(data, KpiTable):
        if metric not in RATES:
            raise InvalidInputError(
                field="metric", reason=f"unknown rate; one of {', '.join(RATES)}"
            )
        if "variant" not in data.by:
            raise InvalidInputError(field="by", reason="the table must be grouped by variant")
        numerator, denominator = RATES[metric]
        arms: dict[str, tuple[int, int]] = {}
        for row in data.rows:
            name = row.group.get("variant")
            if name is None:
                continue
            s, n = arms.get(name, (0, 0))
            arms[name] = (s + getattr(row, numerator), n + getattr(row, denominator))
        return arms
    return {str(k): (int(v[0]), int(v[1])) for k, v in data.items()}


def compare(
    data: KpiTable | Mapping[str, tuple[int, int]],
    *,
    metric: str = "click_rate",
    control: str | None = None,
    alpha: float = 0.05,
    min_sample: int = 100,
) -> ABResult:
    """Compare the arms of an A/B (or A/B/n) test on one rate.

    Args:
        data: A table grouped by ``variant`` (other keys are summed over, so
            filter to one campaign first), or ``{arm: (successes, trials)}``.
        metric: The rate to compare, a key of :data:`~commhistory.kpi.RATES`
            (only used with a table).
        control: The control arm (default: the first in sorted order).
        alpha: The significance level (after Holm's correction).
        min_sample: Trials each arm needs before a verdict is given.

    Returns:
        The result, with a verdict that never names a winner without significance.

    Raises:
        InvalidInputError: Fewer than two arms, an unknown control or metric,
            counts out of order, or alpha outside (0, 1).

    Example:
        >>> from commhistory.kpi import compare
        >>> r = compare({"A": (120, 1000), "B": (165, 1000)})
        >>> r.winner, round(r.comparisons[0].p_value, 4)
        ('B', 0.004)
    """
    if not 0.0 < alpha < 1.0:
        raise InvalidInputError(field="alpha", reason="must be strictly between 0 and 1")
    arms = _arms_from(data, metric)
    if len(arms) < 2:
        raise InvalidInputError(field="variant", reason="need at least two arms to compare")
    for s, n in arms.values():
        _check_counts(s, n)
    names = sorted(arms)
    if control is None:
        control = names[0]
    elif control not in arms:
        raise InvalidInputError(field="control", reason="not one of the arms")
    names.remove(control)
    names.insert(0, control)
    confidence = 1.0 - alpha
    z_crit = normal_ppf(1.0 - alpha / 2.0)
    stats = []
    for name in names:
        s, n = arms[name]
        low, high = wilson_interval(s, n, confidence=confidence)
        stats.append(
            ArmStats(
                name=name,
                successes=s,
                trials=n,
                rate=None if n == 0 else s / n,
                low=low,
                high=high,
            )
        )
    s_c, n_c = arms[control]
    raw = []
    for name in names[1:]:
        s_a, n_a = arms[name]
        z, p = two_proportion_z(s_c, n_c, s_a, n_a)
        raw.append((name, z, p))
    adjusted = holm([p for _, _, p in raw])
    comparisons = []
    for (name, z, p), p_adj in zip(raw, adjusted, strict=True):
        s_a, n_a = arms[name]
        lift, lo, hi = _lift_interval(s_c, n_c, s_a, n_a, z_crit)
        rate_a = None if n_a == 0 else s_a / n_a
        rate_c = None if n_c == 0 else s_c / n_c
        comparisons.append(
            Comparison(
                arm=name,
                control=control,
                difference=None if rate_a is None or rate_c is None else rate_a - rate_c,
                lift=lift,
                lift_low=lo,
                lift_high=hi,
                z=z,
                p_value=p,
                p_adjusted=p_adj,
                significant=p_adj < alpha,
            )
        )
    chi = _chi_square([arms[n] for n in names]) if len(names) > 2 else None
    small = [n for n in names if arms[n][1] < min_sample]
    winner, verdict = _verdict(metric, alpha, control, comparisons, chi, small, min_sample)
    return ABResult(
        metric=metric,
        alpha=alpha,
        confidence=confidence,
        control=control,
        arms=tuple(stats),
        comparisons=tuple(comparisons),
        chi_square=chi,
        min_sample=min_sample,
        enough_data=not small,
        winner=winner,
        verdict=verdict,
    )


def _verdict(  # noqa: PLR0917 - private helper of compare()
    metric: str,
    alpha: float,
    control: str,
    comparisons: Sequence[Comparison],
    chi: ChiSquare | None,
    small: Sequence[str],
    min_sample: int,
) -> tuple[str | None, str]:
    label = metric.replace("_", " ")
    if small:
        return None, (
            f"Not enough data: {', '.join(small)} "
            f"{'has' if len(small) == 1 else 'have'} fewer than {min_sample} trials; "
            "no verdict yet."
        )
    if chi is not None and chi.p_value >= alpha:
        return None, (
            f"No significant difference in {label} across the {len(comparisons) + 1} arms "
            f"(chi-square p = {chi.p_value:.3g}, alpha = {alpha:g})."
        )
    better = [c for c in comparisons if c.significant and c.z > 0]
    worse = [c for c in comparisons if c.significant and c.z < 0]
    if better:
        best = max(better, key=lambda c: c.difference or 0.0)
        lift = "" if best.lift is None else f" ({best.lift:+.1%} lift)"
        return best.arm, (
            f"{best.arm} beats {control} on {label}{lift}, "
            f"p = {best.p_adjusted:.3g} after Holm (alpha = {alpha:g})."
        )
    if comparisons and len(worse) == len(comparisons):
        return control, (
            f"{control} (control) beats every other arm on {label} (alpha = {alpha:g})."
        )
    p_min = min((c.p_adjusted for c in comparisons), default=1.0)
    return None, (
        f"No significant difference in {label} against {control} "
        f"(smallest adjusted p = {p_min:.3g}, alpha = {alpha:g}); keep testing or call it a tie."
    )
