"""KPI definitions (DESIGN section 5), the grouping keys, and the result tables.

Every metric is counted **per message**, never per event: a message with three
opens counts once in ``unique_opens``, and a retried webhook changes nothing.
Who counts (the *population*) is decided per message:

``sent``
    Outbound messages with no ``rejected`` event.
``bounced``
    Sent messages with a ``bounced`` event; ``hard_bounced`` those with a
    bounce of class ``hard``.
``failed``
    Sent messages with a ``failed`` event and no bounce.
``delivered``
    ``sent - bounced - failed``.
``unique_opens``
    Delivered messages with an open, or with a click (a click implies an open).
``unique_clicks``
    Delivered messages with a click.
``conversions``, ``unsubscribes``, ``complaints``
    Delivered messages with at least one such event.
``revenue``
    The sum of the revenue of the conversion events counted in
    ``conversions``, per currency (never summed across currencies).

With ``exclude_machine=True`` (the default) the reaction events (opens,
clicks, conversions, unsubscribes and complaints) flagged ``machine`` are
ignored; delivery facts (bounces, failures, rejections) always count.

Rates are ``None`` when their denominator is 0 (see :data:`RATES`).

.. versionadded:: 0.2.0
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs

from commhistory.errors import InvalidInputError
from commhistory.store.kpi import COUNTS, GROUP_KEYS, JOURNEY_KEYS

__all__ = [
    "COUNTS",
    "GROUP_KEYS",
    "PERIODS",
    "RATES",
    "KpiRow",
    "KpiTable",
    "Period",
    "check_by",
    "check_journey",
    "check_range",
    "check_tz",
    "money_ratio",
    "period_label",
]

Period = Literal["day", "week", "month"]

PERIODS: Final = ("day", "week", "month")
"""The period keys; a message belongs to the local day, ISO week or month of its ``sent_at``."""

RATES: Final[Mapping[str, tuple[str, str]]] = {
    "delivery_rate": ("delivered", "sent"),
    "bounce_rate": ("bounced", "sent"),
    "open_rate": ("unique_opens", "delivered"),
    "click_rate": ("unique_clicks", "delivered"),
    "click_to_open_rate": ("unique_clicks", "unique_opens"),
    "conversion_rate": ("conversions", "delivered"),
    "unsubscribe_rate": ("unsubscribes", "delivered"),
    "complaint_rate": ("complaints", "delivered"),
}
"""Each rate as ``(numerator, denominator)``; ``None`` when the denominator is 0."""

_REVENUE_SCALE: Final = 1_000_000
_EPOCH_DAY: Final = date(1970, 1, 1)


# --------------------------------------------------------------------------- validation


def check_by(by: str | Iterable[str]) -> tuple[str, ...]:
    """Validate grouping keys.

    Args:
        by: A key or keys from :data:`~commhistory.store.kpi.GROUP_KEYS`,
            :data:`~commhistory.store.kpi.JOURNEY_KEYS` and at most one of :data:`PERIODS`.

    Returns:
        The keys as a tuple, in the order given.

    Raises:
        InvalidInputError: A key is unknown or repeated, or more than one period is given.

    .. versionchanged:: 0.4.0
       The journey keys (``journey``, ``journey_version``, ``step``).
    """
    keys = (by,) if isinstance(by, str) else tuple(by)
    allowed = (*GROUP_KEYS, *JOURNEY_KEYS, *PERIODS)
    for key in keys:
        if key not in allowed:
            raise InvalidInputError(
                field="by", reason=f"unknown grouping key; expected some of: {', '.join(allowed)}"
            )
    if len(set(keys)) != len(keys):
        raise InvalidInputError(field="by", reason="a grouping key is repeated")
    if sum(k in PERIODS for k in keys) > 1:
        raise InvalidInputError(field="by", reason="at most one period (day, week or month)")
    return keys


def check_tz(tz: str | ZoneInfo) -> ZoneInfo:
    """Return the :class:`~zoneinfo.ZoneInfo` for an IANA zone name.

    Raises:
        InvalidInputError: The zone is unknown.
    """
    if isinstance(tz, ZoneInfo):
        return tz
    raw: object = tz
    if not isinstance(raw, str) or not raw.strip():
        raise InvalidInputError(field="tz", reason="expected an IANA time zone name")
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidInputError(field="tz", reason="unknown time zone") from exc


def check_range(since: datetime | None, until: datetime | None) -> None:
    """Check a ``[since, until)`` range of aware datetimes.

    Raises:
        InvalidInputError: A bound is not an aware datetime, or ``since > until``.
    """
    for name, value in (("since", since), ("until", until)):
        if value is None:
            continue
        raw: object = value
        if not isinstance(raw, datetime) or raw.utcoffset() is None:
            raise InvalidInputError(field=name, reason="expected an aware datetime")
    if since is not None and until is not None and since > until:
        raise InvalidInputError(field="since", reason="must not be after until")


def period_label(period: str, local_day: int) -> str:
    """Label a local day (days since 1970-01-01) for a period.

    Args:
        period: ``"day"`` (``2024-03-31``), ``"week"`` (ISO week, ``2024-W13``) or
            ``"month"`` (``2024-03``).
        local_day: The day number in the report's time zone.

    Returns:
        The label.
    """
    day = _EPOCH_DAY + timedelta(days=local_day)
    if period == "day":
        return day.isoformat()
    if period == "week":
        year, week, _ = day.isocalendar()
        return f"{year:04d}-W{week:02d}"
    return f"{day.year:04d}-{day.month:02d}"


def _plain(value: Decimal) -> Decimal:
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return Decimal(text)


def money_ratio(amount: Decimal, count: int) -> Decimal | None:
    """Return ``amount / count`` rounded to six decimal places, or ``None`` when *count* is 0.

    .. versionadded:: 0.4.0
    """
    if count == 0:
        return None
    return _plain((amount / count).quantize(Decimal("0.000001"), rounding=ROUND_HALF_EVEN))


def micros_to_decimal(micros: int) -> Decimal:
    """Return an amount in millionths as a plain :class:`~decimal.Decimal` (no exponent)."""
    value = Decimal(micros) / _REVENUE_SCALE
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return Decimal(text)


# --------------------------------------------------------------------------- rows


def _rate(numerator: int, denominator: int) -> float | None:
    return None if denominator == 0 else numerator / denominator


@attrs.frozen(kw_only=True)
class KpiRow:
    """The KPIs of one group.

    Attributes:
        group: The group's key values, by key name (``None`` where the message
            has no value, e.g. no campaign).
        sent: Outbound messages not rejected.
        delivered: ``sent - bounced - failed``.
        bounced: Sent messages with a bounce.
        hard_bounced: Sent messages with a hard bounce.
        failed: Sent messages with a failure and no bounce.
        unique_opens: Delivered messages opened (or clicked).
        unique_clicks: Delivered messages clicked.
        conversions: Delivered messages with a conversion.
        unsubscribes: Delivered messages with an unsubscribe.
        complaints: Delivered messages with a complaint.
        revenue: Conversion revenue per ISO 4217 currency.
        cost: Campaign costs attributed to the group, per currency (see
            :mod:`commhistory.kpi.costs`); empty when no cost is known at
            this level.

    .. versionadded:: 0.2.0
    .. versionchanged:: 0.4.0
       ``cost``, and the :attr:`roi`, :attr:`cost_per_conversion` and
       :attr:`revenue_per_recipient` figures.
    """

    group: Mapping[str, str | None] = attrs.field(factory=dict)
    sent: int = 0
    delivered: int = 0
    bounced: int = 0
    hard_bounced: int = 0
    failed: int = 0
    unique_opens: int = 0
    unique_clicks: int = 0
    conversions: int = 0
    unsubscribes: int = 0
    complaints: int = 0
    revenue: Mapping[str, Decimal] = attrs.field(factory=dict)
    cost: Mapping[str, Decimal] = attrs.field(factory=dict)

    @property
    def roi(self) -> dict[str, float | None]:
        """``(revenue - cost) / cost`` per currency of the cost or the revenue.

        ``None`` for a currency whose cost is unknown or zero (never an error or
        infinity). Currencies are never mixed: revenue in yen and cost in dollars
        give ``{"JPY": None, "USD": -1.0}``.

        .. versionadded:: 0.4.0
        """
        out: dict[str, float | None] = {}
        for cur in sorted({*self.cost, *self.revenue}):
            cost = self.cost.get(cur, Decimal(0))
            if cost == 0:
                out[cur] = None
            else:
                out[cur] = float((self.revenue.get(cur, Decimal(0)) - cost) / cost)
        return out

    @property
    def cost_per_conversion(self) -> dict[str, Decimal | None]:
        """``cost / conversions`` per currency of the cost; ``None`` without conversions.

        Rounded to six decimal places (half to even).

        .. versionadded:: 0.4.0
        """
        return {cur: money_ratio(v, self.conversions) for cur, v in sorted(self.cost.items())}

    @property
    def revenue_per_recipient(self) -> dict[str, Decimal | None]:
        """``revenue / sent`` per currency of the revenue; ``None`` when nothing was sent.

        Recipients are counted as the KPI engine counts them: ``sent``, one per
        message handed to a provider and not rejected. Rounded to six decimal
        places (half to even).

        .. versionadded:: 0.4.0
        """
        return {cur: money_ratio(v, self.sent) for cur, v in sorted(self.revenue.items())}

    @property
    def delivery_rate(self) -> float | None:
        """``delivered / sent``."""
        return _rate(self.delivered, self.sent)

    @property
    def bounce_rate(self) -> float | None:
        """``bounced / sent``."""
        return _rate(self.bounced, self.sent)

    @property
    def open_rate(self) -> float | None:
        """``unique_opens / delivered``."""
        return _rate(self.unique_opens, self.delivered)

    @property
    def click_rate(self) -> float | None:
        """``unique_clicks / delivered``."""
        return _rate(self.unique_clicks, self.delivered)

    @property
    def click_to_open_rate(self) -> float | None:
        """``unique_clicks / unique_opens``."""
        return _rate(self.unique_clicks, self.unique_opens)

    @property
    def conversion_rate(self) -> float | None:
        """``conversions / delivered``."""
        return _rate(self.conversions, self.delivered)

    @property
    def unsubscribe_rate(self) -> float | None:
        """``unsubscribes / delivered``."""
        return _rate(self.unsubscribes, self.delivered)

    @property
    def complaint_rate(self) -> float | None:
        """``complaints / delivered``."""
        return _rate(self.complaints, self.delivered)

    def rate(self, name: str) -> float | None:
        """Return a rate by name (a key of :data:`RATES`).

        Raises:
            InvalidInputError: The name is not a rate.
        """
        if name not in RATES:
            raise InvalidInputError(
                field="metric", reason=f"unknown rate; one of {', '.join(RATES)}"
            )
        value: float | None = getattr(self, name)
        return value

    def to_dict(self) -> dict[str, Any]:
        """Return the row as JSON-ready data: group keys, counts, revenue strings, rates."""
        out: dict[str, Any] = dict(self.group)
        for name in COUNTS:
            out[name] = getattr(self, name)
        out["revenue"] = {cur: format(v, "f") for cur, v in sorted(self.revenue.items())}
        for name in RATES:
            out[name] = getattr(self, name)
        out["cost"] = {cur: format(v, "f") for cur, v in sorted(self.cost.items())}
        out["roi"] = self.roi
        for name in ("cost_per_conversion", "revenue_per_recipient"):
            values: dict[str, Decimal | None] = getattr(self, name)
            out[name] = {c: None if v is None else format(v, "f") for c, v in values.items()}
        return out


def _sort_key(values: tuple[str | None, ...]) -> tuple[tuple[bool, str], ...]:
    return tuple((v is not None, v or "") for v in values)


@attrs.frozen(kw_only=True)
class KpiTable:
    """KPIs grouped by some keys: what :func:`commhistory.kpi.compute` and ``repo.kpis`` return.

    Attributes:
        by: The grouping keys, in order.
        rows: One row per group that has messages, sorted by the key values
            (``None`` first).
        unmatched_events: Events whose message is unknown (orphans); reported,
            never counted in any row.
        exclude_machine: Whether machine opens and clicks were left out.
        tz: The time zone periods were computed in.
        unattributed_cost: Costs in the table's range that no row can show
            (recorded above the level of the grouping, or for a group without
            messages), per currency; :meth:`total` includes them.
        costs_outside_range: How many costs straddle ``since`` or ``until``;
            they are counted nowhere (a cost is never split).
        has_costs: Whether any cost overlaps the table's range (the report
            shows its cost columns then).

    .. versionadded:: 0.2.0
    .. versionchanged:: 0.4.0
       ``unattributed_cost``, ``costs_outside_range`` and ``has_costs``.
    """

    by: tuple[str, ...] = ()
    rows: tuple[KpiRow, ...] = ()
    unmatched_events: int = 0
    exclude_machine: bool = True
    tz: str = "UTC"
    unattributed_cost: Mapping[str, Decimal] = attrs.field(factory=dict)
    costs_outside_range: int = 0
    has_costs: bool = False

    def __iter__(self) -> Iterator[KpiRow]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def row(self, **group: str | None) -> KpiRow:
        """Return the row whose group has these key values.

        Raises:
            InvalidInputError: No row matches.
        """
        for r in self.rows:
            if all(r.group.get(k) == v for k, v in group.items()):
                return r
        raise InvalidInputError(field="group", reason="no row has these key values")

    def total(self) -> KpiRow:
        """Return one row summing every group (counts add: each message is in one group).

        Its cost also includes :attr:`unattributed_cost`: at the level of the whole
        table every cost in range is known.
        """
        total = _merge((), self.rows)
        if not self.unattributed_cost:
            return total
        cost = dict(total.cost)
        for cur, amount in self.unattributed_cost.items():
            cost[cur] = cost.get(cur, Decimal(0)) + amount
        return attrs.evolve(total, cost=dict(sorted(cost.items())))

    def to_dict(self) -> dict[str, Any]:
        """Return ``{"by", "tz", "exclude_machine", "unmatched_events", "rows"}`` as JSON data."""
        return {
            "by": list(self.by),
            "tz": self.tz,
            "exclude_machine": self.exclude_machine,
            "unmatched_events": self.unmatched_events,
            "rows": [r.to_dict() for r in self.rows],
            "unattributed_cost": {
                cur: format(v, "f") for cur, v in sorted(self.unattributed_cost.items())
            },
            "costs_outside_range": self.costs_outside_range,
        }

    def to_json(self, *, indent: int | None = None) -> str:
        """Return :meth:`to_dict` as JSON text."""
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)


def _merge(group: tuple[tuple[str, str | None], ...], rows: Iterable[KpiRow]) -> KpiRow:
    counts = dict.fromkeys(COUNTS, 0)
    revenue: dict[str, Decimal] = {}
    cost: dict[str, Decimal] = {}
    for r in rows:
        for name in COUNTS:
            counts[name] += getattr(r, name)
        for cur, amount in r.revenue.items():
            revenue[cur] = revenue.get(cur, Decimal(0)) + amount
        for cur, amount in r.cost.items():
            cost[cur] = cost.get(cur, Decimal(0)) + amount
    return KpiRow(group=dict(group), revenue=revenue, cost=dict(sorted(cost.items())), **counts)


class Accumulator:
    """Adds up per-group partial counts from either engine into a :class:`KpiTable`.

    Partials for the same group add: every message belongs to exactly one
    partial, so counts per message stay counts per message.
    """

    def __init__(self, by: Sequence[str]) -> None:
        self.by = tuple(by)
        self._counts: dict[tuple[str | None, ...], list[int]] = {}
        self._revenue: dict[tuple[str | None, ...], dict[str, int]] = {}

    def add(
        self,
        key: tuple[str | None, ...],
        counts: Sequence[int],
        revenue: Mapping[str, int] | None = None,
    ) -> None:
        """Add counts (in :data:`COUNTS` order) and revenue micros to a group."""
        have = self._counts.get(key)
        if have is None:
            self._counts[key] = [int(c) for c in counts]
        else:
            for i, c in enumerate(counts):
                have[i] += int(c)
        if revenue:
            mine = self._revenue.setdefault(key, {})
            for cur, micros in revenue.items():
                mine[cur] = mine.get(cur, 0) + int(micros)

    def table(self, *, unmatched_events: int, exclude_machine: bool, tz: str) -> KpiTable:
        """Return the table, rows sorted by key values, groups without messages dropped."""
        rows = []
        for key in sorted(self._counts, key=_sort_key):
            counts = self._counts[key]
            if counts[0] == 0:
                continue
            rev = self._revenue.get(key, {})
            rows.append(
                KpiRow(
                    group=dict(zip(self.by, key, strict=True)),
                    revenue={c: micros_to_decimal(m) for c, m in sorted(rev.items())},
                    cost={},
                    **dict(zip(COUNTS, counts, strict=True)),
                )
            )
        return KpiTable(
            by=self.by,
            rows=tuple(rows),
            unmatched_events=unmatched_events,
            exclude_machine=exclude_machine,
            tz=tz,
        )


def check_journey(journey: str | None, journey_version: int | None) -> None:
    """Check a journey filter: a key, and a version only with a key.

    Raises:
        InvalidInputError: ``journey`` is empty or not text, or ``journey_version``
            is given without a journey or is not a positive integer.

    .. versionadded:: 0.4.0
    """
    raw: object = journey
    if raw is not None and (not isinstance(raw, str) or not raw):
        raise InvalidInputError(field="journey", reason="expected a journey key")
    version: object = journey_version
    if version is None:
        return
    if journey is None:
        raise InvalidInputError(field="journey_version", reason="needs a journey")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise InvalidInputError(field="journey_version", reason="expected a version from 1")
