"""Campaign cost storage: the cost record and the port that keeps and sums costs.

A :class:`~commhistory.kpi.Cost` is money spent on a campaign (optionally on one channel and/or
one variant of it) over a period ``[starts_at, ends_at)``. :class:`CostStore`
is what the KPI rules (:mod:`commhistory.kpi.costs`) need from a repository:
record costs idempotently by ``cost_id``, list them, and the amounts summed per
(campaign, channel, variant, currency, period) for the costs that overlap a
report's range. :class:`SQLCostStore` (table ``campaign_costs``) and
:class:`MemoryCostStore` implement it; a repository hands its own out as
``repo.cost_store``.

Costs are not personal data: every column is plain. Amounts are kept twice, as
the exact decimal text and as ``amount_micros`` (millionths, a ``BIGINT``), which
SQL sums exactly, like conversion revenue.

Every method runs in the repository's current transaction when one is open,
else in one of its own. SQL statements are built from schema identifiers and
placeholders; every value is bound.

.. versionadded:: 0.4.0
"""

# ruff: noqa: S608

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final, NamedTuple, Protocol

import attrs

from commhistory._currencies import ISO_4217
from commhistory.errors import InvalidInputError, NormalizationError, PayloadError
from commhistory.model import MAX_ID_LENGTH, Channel
from commhistory.normalize.time import from_micros, to_micros
from commhistory.store import schema
from commhistory.store.protocol import IngestReport

if TYPE_CHECKING:
    from commhistory.store.memory import MemoryState
    from commhistory.store.sql import SQLRepository

__all__ = [
    "AMOUNT_SCALE",
    "Cost",
    "CostStore",
    "CostTotal",
    "MemoryCostStore",
    "SQLCostStore",
    "amount_micros",
    "check_costs",
    "total_costs",
]

AMOUNT_SCALE: Final = 1_000_000
"""``amount_micros = amount * AMOUNT_SCALE``: six decimal places, exact (as revenue)."""
_INT64_MAX: Final = 2**63 - 1


def _kind(value: object) -> str:
    return type(value).__name__


def _check_id(field: str, value: object, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str):
        raise PayloadError(field=field, reason=f"expected a string id, got {_kind(value)}")
    if not value.strip():
        raise PayloadError(field=field, reason="must not be empty")
    if len(value) > MAX_ID_LENGTH:
        raise PayloadError(field=field, reason=f"longer than {MAX_ID_LENGTH} characters")
    if "\x00" in value or not value.isprintable():
        raise PayloadError(field=field, reason="contains a control character")


def _check_aware(field: str, value: object) -> None:
    if not isinstance(value, datetime):
        raise PayloadError(field=field, reason=f"expected a datetime, got {_kind(value)}")
    if value.utcoffset() is None:
        raise NormalizationError(field=field, reason="naive datetime; give a time zone offset")


def amount_micros(value: Decimal) -> int:
    """Return an amount in millionths of the currency unit, exactly.

    Raises:
        InvalidInputError: More than six decimal places, or too large to store
            (``field="amount"``).
    """
    scaled = value * AMOUNT_SCALE
    if scaled != scaled.to_integral_value():
        raise InvalidInputError(
            field="amount", reason="more than 6 decimal places cannot be stored"
        )
    micros = int(scaled)
    if abs(micros) > _INT64_MAX:
        raise InvalidInputError(field="amount", reason="too large to store")
    return micros


def _to_utc(value: object) -> object:
    if isinstance(value, datetime) and value.utcoffset() is not None:
        return value.astimezone(UTC)
    return value


def _to_channel(value: object) -> object:
    if isinstance(value, str) and not isinstance(value, Channel):
        try:
            return Channel(value)
        except ValueError:
            return value  # refused by the validator, naming the field
    return value


@attrs.frozen(kw_only=True)
class Cost:
    """Money spent on a campaign over a period; recorded once per ``cost_id``.

    A cost belongs to a campaign and, optionally, to one channel and/or one
    variant of it. Reports show it only at the level it was recorded at and
    above (see :mod:`commhistory.kpi.costs`): a cost recorded for the whole
    campaign is never split across its channels or variants.

    Attributes:
        cost_id: A unique id; recording the same id again is a duplicate.
        campaign_id: The campaign the money was spent on.
        amount: The amount, a non-negative, finite :class:`~decimal.Decimal`
            with at most six decimal places.
        currency: Its ISO 4217 code in upper case (``"JPY"``).
        starts_at: The start of the period the cost covers (aware; kept in UTC).
        ends_at: The end of the period, exclusive (aware, after ``starts_at``).
            One day in Tokyo is ``2024-05-01T00:00+09:00`` to ``2024-05-02T00:00+09:00``.
        channel: The channel, when the cost is for one channel only (a
            :class:`~commhistory.Channel` or its value, ``"email"``).
        variant: The variant, when the cost is for one variant only.

    Raises:
        InvalidInputError: A field is missing, malformed or out of range; the
            error's ``field`` names it (``amount``: negative, not finite or too
            precise; ``currency``: not an ISO 4217 code; ``starts_at`` /
            ``ends_at``: naive; ``ends_at``: not after ``starts_at``).

    .. versionadded:: 0.4.0
    """

    cost_id: str
    campaign_id: str
    amount: Decimal
    currency: str
    starts_at: datetime = attrs.field(converter=_to_utc)
    ends_at: datetime = attrs.field(converter=_to_utc)
    channel: Channel | None = attrs.field(default=None, converter=_to_channel)
    variant: str | None = None

    def __attrs_post_init__(self) -> None:
        _check_id("cost_id", self.cost_id)
        _check_id("campaign_id", self.campaign_id)
        amount: object = self.amount
        if not isinstance(amount, Decimal):
            raise PayloadError(field="amount", reason=f"expected a Decimal, got {_kind(amount)}")
        if not amount.is_finite():
            raise InvalidInputError(field="amount", reason="must be a finite number")
        if amount < 0:
            raise InvalidInputError(field="amount", reason="must not be negative")
        amount_micros(amount)
        currency: object = self.currency
        if not isinstance(currency, str) or currency not in ISO_4217:
            raise NormalizationError(
                field="currency", reason="expected an ISO 4217 code in upper case, like 'JPY'"
            )
        _check_aware("starts_at", self.starts_at)
        _check_aware("ends_at", self.ends_at)
        if self.ends_at <= self.starts_at:
            raise InvalidInputError(field="ends_at", reason="must be after starts_at")
        channel: object = self.channel
        if channel is not None and not isinstance(channel, Channel):
            allowed = ", ".join(c.value for c in Channel)
            raise PayloadError(field="channel", reason=f"expected one of: {allowed}")
        _check_id("variant", self.variant, optional=True)

    @property
    def micros(self) -> int:
        """The amount in millionths of the currency unit."""
        return amount_micros(self.amount)


def check_costs(items: Iterable[object]) -> list[Cost]:
    """Check that every item is a cost and that no id repeats with other values.

    Returns:
        The costs, in order (identical repeats included).

    Raises:
        PayloadError: An item is not a :class:`~commhistory.kpi.Cost` (``field="<record>"``).
        InvalidInputError: Two items share a ``cost_id`` with different values
            (``field="cost_id"``).
    """
    out: list[Cost] = []
    seen: dict[str, Cost] = {}
    for item in items:
        if not isinstance(item, Cost):
            raise PayloadError(field="<record>", reason=f"expected a Cost, got {_kind(item)}")
        prior = seen.setdefault(item.cost_id, item)
        if prior != item:
            raise InvalidInputError(field="cost_id", reason=_CONFLICT)
        out.append(item)
    return out


_CONFLICT: Final = "repeated with a different campaign, channel, variant, amount or period"


class CostTotal(NamedTuple):
    """Costs with the same campaign, channel, variant, currency and period, summed.

    Fields: ``campaign_id``; ``channel`` and ``variant`` (text, ``None`` when the
    costs are for every channel or variant); ``currency``; ``starts_at`` and
    ``ends_at`` (aware UTC); ``micros``, the summed amount in millionths;
    ``costs``, how many costs were summed.
    """

    campaign_id: str
    channel: str | None
    variant: str | None
    currency: str
    starts_at: datetime
    ends_at: datetime
    micros: int
    costs: int


def _overlaps(cost: Cost, since: datetime | None, until: datetime | None) -> bool:
    return (since is None or cost.ends_at > since) and (until is None or cost.starts_at < until)


def total_costs(
    costs: Iterable[Cost], *, since: datetime | None = None, until: datetime | None = None
) -> list[CostTotal]:
    """Sum costs in memory as :meth:`CostStore.totals` sums them (each ``cost_id`` once)."""
    sums: dict[tuple[Any, ...], list[int]] = {}
    seen: set[str] = set()
    for c in costs:
        if c.cost_id in seen or not _overlaps(c, since, until):
            continue
        seen.add(c.cost_id)
        key = (
            c.campaign_id,
            None if c.channel is None else c.channel.value,
            c.variant,
            c.currency,
            c.starts_at,
            c.ends_at,
        )
        have = sums.setdefault(key, [0, 0])
        have[0] += c.micros
        have[1] += 1
    return [
        CostTotal(
            campaign_id=key[0],
            channel=key[1],
            variant=key[2],
            currency=key[3],
            starts_at=key[4],
            ends_at=key[5],
            micros=micros,
            costs=count,
        )
        for key, (micros, count) in sums.items()
    ]


class CostStore(Protocol):
    """The storage port of campaign costs: record, list, sum.

    .. versionadded:: 0.4.0
    """

    def record(self, costs: Sequence[Cost]) -> IngestReport:
        """Store costs in one transaction, each ``cost_id`` once.

        A cost whose id is stored already with the same values is a duplicate;
        with other values the whole call is refused and nothing is stored.

        Raises:
            InvalidInputError: A ``cost_id`` is stored (or given twice) with
                different values (``field="cost_id"``).
        """
        ...

    def costs(self, *, campaign_id: str | None = None) -> list[Cost]:
        """Return the stored costs (of one campaign), by campaign, start and id."""
        ...

    def totals(
        self, *, since: datetime | None = None, until: datetime | None = None
    ) -> list[CostTotal]:
        """Return the costs whose period overlaps ``[since, until)``, summed per key.

        The key is (campaign, channel, variant, currency, period); the order of
        the totals is unspecified.
        """
        ...


def _sorted(costs: Iterable[Cost]) -> list[Cost]:
    return sorted(costs, key=lambda c: (c.campaign_id, c.starts_at, c.cost_id))


# ---------------------------------------------------------------------- SQL

_COLUMNS: Final = (
    "cost_id",
    "campaign_id",
    "channel",
    "variant",
    "starts_at",
    "ends_at",
    "amount",
    "amount_micros",
    "currency",
    "recorded_at",
)
_READ: Final = (
    "SELECT cost_id, campaign_id, channel, variant, starts_at, ends_at, amount, "
    "amount_micros, currency FROM campaign_costs"
)


def _same(row: Sequence[Any], cost: Cost) -> bool:
    cid, campaign, channel, variant, starts, ends, _amount, micros, currency = row
    return (
        cid == cost.cost_id
        and campaign == cost.campaign_id
        and channel == (None if cost.channel is None else cost.channel.value)
        and variant == cost.variant
        and int(starts) == to_micros(cost.starts_at)
        and int(ends) == to_micros(cost.ends_at)
        and int(micros) == cost.micros
        and currency == cost.currency
    )


def _from_row(row: Sequence[Any]) -> Cost:
    cid, campaign, channel, variant, starts, ends, amount, _micros, currency = row
    return Cost(
        cost_id=cid,
        campaign_id=campaign,
        channel=None if channel is None else Channel(channel),
        variant=variant,
        starts_at=from_micros(int(starts)),
        ends_at=from_micros(int(ends)),
        amount=Decimal(amount),
        currency=currency,
    )


class SQLCostStore(CostStore):
    """:class:`CostStore` over :class:`~commhistory.store.sql.SQLRepository`.

    Args:
        repo: The repository.
    """

    def __init__(self, repo: SQLRepository) -> None:
        self.repo = repo
        self.ph = repo.backend.ph

    def record(self, costs: Sequence[Cost]) -> IngestReport:
        """See :meth:`CostStore.record`."""
        items = check_costs(costs)
        if not items:
            return IngestReport()
        fresh: dict[str, Cost] = {}
        for c in items:
            fresh.setdefault(c.cost_id, c)
        backend = self.repo.backend
        now = to_micros(datetime.now(UTC))
        with self.repo.transaction() as conn:
            stored = backend.select_in(conn, f"{_READ} WHERE cost_id IN ({{in}})", list(fresh))
            for row in stored:
                if not _same(row, fresh[row[0]]):
                    raise InvalidInputError(field="cost_id", reason=_CONFLICT)
                del fresh[row[0]]
            rows = [
                (
                    c.cost_id,
                    c.campaign_id,
                    None if c.channel is None else c.channel.value,
                    c.variant,
                    to_micros(c.starts_at),
                    to_micros(c.ends_at),
                    str(c.amount),
                    c.micros,
                    c.currency,
                    now,
                )
                for c in fresh.values()
            ]
            inserted = backend.insert(conn, schema.campaign_costs, _COLUMNS, rows)
        return IngestReport(inserted=inserted, duplicates=len(items) - inserted)

    def costs(self, *, campaign_id: str | None = None) -> list[Cost]:
        """See :meth:`CostStore.costs`."""
        sql, params = _READ, tuple[str, ...]()
        if campaign_id is not None:
            sql, params = f"{_READ} WHERE campaign_id = {self.ph}", (campaign_id,)
        with self.repo.transaction(read=True) as conn:
            rows = conn.exec_driver_sql(sql, params).all()
        return _sorted(_from_row(r) for r in rows)

    def totals(
        self, *, since: datetime | None = None, until: datetime | None = None
    ) -> list[CostTotal]:
        """See :meth:`CostStore.totals`: one ``GROUP BY`` in the database."""
        where: list[str] = []
        params: list[int] = []
        if since is not None:
            where.append(f"ends_at > {self.ph}")
            params.append(to_micros(since))
        if until is not None:
            where.append(f"starts_at < {self.ph}")
            params.append(to_micros(until))
        keys = "campaign_id, channel, variant, currency, starts_at, ends_at"
        sql = (
            f"SELECT {keys}, SUM(amount_micros), COUNT(*) FROM campaign_costs"
            + (f" WHERE {' AND '.join(where)}" if where else "")
            + f" GROUP BY {keys}"
        )
        with self.repo.transaction(read=True) as conn:
            rows = conn.exec_driver_sql(sql, tuple(params)).all()
        # Periods repeat (a day, a month): convert each distinct instant once.
        instants: dict[int, datetime] = {}

        def moment(micros: Any) -> datetime:
            value = int(micros)
            found = instants.get(value)
            if found is None:
                found = instants[value] = from_micros(value)
            return found

        return [
            CostTotal(r[0], r[1], r[2], r[3], moment(r[4]), moment(r[5]), int(r[6]), int(r[7]))
            for r in rows
        ]


# ---------------------------------------------------------------------- memory


class MemoryCostStore(CostStore):
    """:class:`CostStore` over a :class:`~commhistory.store.memory.MemoryState`.

    Args:
        state: The memory repository's state.
    """

    def __init__(self, state: MemoryState) -> None:
        self.s = state

    def record(self, costs: Sequence[Cost]) -> IngestReport:
        """See :meth:`CostStore.record`."""
        items = check_costs(costs)
        stored = self.s.costs
        for c in items:
            prior = stored.get(c.cost_id)
            if prior is not None and prior != c:
                raise InvalidInputError(field="cost_id", reason=_CONFLICT)
        inserted = 0
        for c in items:
            if c.cost_id not in stored:
                stored[c.cost_id] = c
                inserted += 1
        return IngestReport(inserted=inserted, duplicates=len(items) - inserted)

    def costs(self, *, campaign_id: str | None = None) -> list[Cost]:
        """See :meth:`CostStore.costs`."""
        return _sorted(
            c for c in self.s.costs.values() if campaign_id is None or c.campaign_id == campaign_id
        )

    def totals(
        self, *, since: datetime | None = None, until: datetime | None = None
    ) -> list[CostTotal]:
        """See :meth:`CostStore.totals`."""
        return total_costs(self.s.costs.values(), since=since, until=until)
