"""Segment criteria: a typed, JSON-serialisable condition tree over what the store knows.

A tree is made of frozen nodes:

* groups: :class:`AllOf` (``{"all": [...]}``), :class:`AnyOf` (``{"any": [...]}``),
  :class:`Not` (``{"not": {...}}``), nested freely;
* :class:`AttributeCondition` (``{"attribute": "tier", "op": "=", "value": "gold"}``):
  a contact attribute's value, or a date's distance to today in a zone
  (``"of": "days ago"``, ``"days until"``, ``"days until anniversary"``);
* :class:`BehaviourCondition` (``{"behaviour": "opened", "within_days": 30}``): how
  many outbound messages were sent, received, opened, clicked, converted,
  bounced, unsubscribed or complained about, for a campaign, a channel or any;
* :class:`ActivityCondition` (``{"activity": "purchase", "op": "=", "value": 0}``):
  how many activities of a name, or the sum of their revenue, with filters on
  plain properties;
* :class:`ConsentCondition` (``{"consent": "email", "purpose": "marketing"}``) and
  :class:`SuppressedCondition` (``{"suppressed": "email", "purpose": "marketing"}``):
  consent and suppression as ``can_send`` reads them;
* :class:`InList` (``{"list": ["c1", "c2"]}``): a static list of contact ids
  (a saved snapshot).

Build one from Python with the small fluent API (:func:`attr`, :func:`opened`,
:func:`activity`, :func:`consent`, :func:`suppressed`, :func:`in_list`; ``&``,
``|``, ``~``), or load it with :func:`from_dict` / :func:`loads` (and
:func:`load_yaml` when PyYAML is installed). Every unknown field, operator or
wrongly typed value is a :class:`~commhistory.errors.CriteriaError` naming its
JSON path (``$.all[2].op``) and the reason. ``to_dict(from_dict(d))`` returns
``d`` in canonical form, and ``from_dict(node.to_dict()) == node``.

The tree knows nothing of storage: the store compiles it
(:mod:`commhistory.store.segments`), and :mod:`commhistory.segments` checks it
against the declared attribute schema. The functions at the end
(:func:`coerce_attribute`, :func:`day_window`, :func:`anniversary_days`) are the
typing rules both evaluators share, so SQL and memory agree.

.. versionadded:: 0.4.0
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Final, Generic, TypeAlias, TypeVar, Union
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs

from commhistory.errors import CriteriaError, CriteriaSchemaError
from commhistory.model import Channel, Purpose

__all__ = [
    "ATTRIBUTE_OPS",
    "BEHAVIOURS",
    "BEHAVIOUR_MEASURES",
    "COMPARE_OPS",
    "COUNT_OPS",
    "MEASURES",
    "PROPERTY_OPS",
    "RELATIVE_OF",
    "RELATIVE_OPS",
    "TIME_OPS",
    "TYPE_OPS",
    "ActivityCondition",
    "AllOf",
    "AnyOf",
    "AttributeCondition",
    "BehaviourCondition",
    "ConsentCondition",
    "Criteria",
    "InList",
    "Node",
    "Not",
    "PropertyFilter",
    "SuppressedCondition",
    "activity",
    "all_",
    "anniversary_days",
    "any_",
    "attr",
    "behaviour",
    "bounced",
    "clicked",
    "coerce_attribute",
    "compare",
    "complained",
    "consent",
    "converted",
    "day_window",
    "decimal_text",
    "dumps",
    "from_dict",
    "in_list",
    "load_yaml",
    "loads",
    "not_",
    "opened",
    "received",
    "revenue_micros",
    "sent",
    "suppressed",
    "today_in",
    "unsubscribed",
    "walk",
]

JSONScalar: TypeAlias = str | int | float | bool
AttrValue: TypeAlias = JSONScalar | tuple[JSONScalar, ...] | None

COMPARE_OPS: Final = ("=", "!=", "<", "<=", ">", ">=")
"""The comparison operators."""
ATTRIBUTE_OPS: Final = (
    *COMPARE_OPS, "in", "not in", "contains", "starts with", "is set", "is not set", "between",
)  # fmt: skip
"""Every attribute operator; :data:`TYPE_OPS` says which ones each type allows."""
RELATIVE_OPS: Final = (*COMPARE_OPS, "in", "not in", "between")
"""The operators of a relative measure (``"of": "days ago"`` ...) over whole days."""
RELATIVE_OF: Final = ("value", "days ago", "days until", "days until anniversary")
"""What an attribute condition measures (``"of"``): its value, or whole days from today."""
COUNT_OPS: Final = COMPARE_OPS
"""The operators of a count or a revenue sum."""
PROPERTY_OPS: Final = ("=", "!=", "in", "not in", "is set", "is not set")
"""The operators of an activity property filter, whose values are text, integers or booleans."""
BEHAVIOURS: Final = (
    "sent", "received", "opened", "clicked", "converted", "bounced", "unsubscribed", "complained",
)  # fmt: skip
"""What a behaviour condition counts (see :class:`BehaviourCondition`)."""
MEASURES: Final = ("count", "revenue", "first", "last")
"""What an activity condition measures (``first``/``last``: the time of the first or last)."""
BEHAVIOUR_MEASURES: Final = ("count", "first", "last")
"""What a behaviour condition measures."""
TIME_OPS: Final = ("<", "<=", ">", ">=")
"""The operators of a ``first``/``last`` measure: before (``<``) or after (``>``) an instant."""

TYPE_OPS: Final[Mapping[str, frozenset[str]]] = {
    "str": frozenset(
        {"=", "!=", "in", "not in", "contains", "starts with", "is set", "is not set"}
    ),
    "enum": frozenset({"=", "!=", "in", "not in", "is set", "is not set"}),
    "int": frozenset({*COMPARE_OPS, "in", "not in", "between", "is set", "is not set"}),
    "decimal": frozenset({*COMPARE_OPS, "in", "not in", "between", "is set", "is not set"}),
    "bool": frozenset({"=", "!=", "is set", "is not set"}),
    "date": frozenset({*COMPARE_OPS, "in", "not in", "between", "is set", "is not set"}),
    "datetime": frozenset({*COMPARE_OPS, "between", "is set", "is not set"}),
    "list": frozenset({"contains", "is set", "is not set"}),
}
"""The operators each attribute type allows on its value (``"of": "value"``).

Text is not ordered (``<`` on text would follow each database's collation).
``"days ago"`` and ``"days until"`` apply to ``date`` and ``datetime``,
``"days until anniversary"`` to ``date``.
"""
_MAX_DAYS: Final = 36_600
_MAX_COUNT: Final = 10**9
_MAX_MICROS: Final = 2**63 - 1
_NO_VALUE: Final = frozenset({"is set", "is not set"})
_ISO_DATE: Final = re.compile(r"\d{4}-\d{2}-\d{2}")


def _err(path: str, reason: str) -> CriteriaError:
    return CriteriaError(path=path, reason=reason)


# ---------------------------------------------------------------------- nodes


class Node:
    """The base of every condition node, with the operators ``a & b``, ``a | b`` and ``~a``."""

    __slots__ = ()

    def __and__(self, other: Criteria) -> AllOf:
        if not isinstance(other, _NODE_TYPES):
            return NotImplemented
        left = self.items if isinstance(self, AllOf) else (self,)
        right = other.items if isinstance(other, AllOf) else (other,)
        return AllOf(items=(*left, *right))

    def __or__(self, other: Criteria) -> AnyOf:
        if not isinstance(other, _NODE_TYPES):
            return NotImplemented
        left = self.items if isinstance(self, AnyOf) else (self,)
        right = other.items if isinstance(other, AnyOf) else (other,)
        return AnyOf(items=(*left, *right))

    def __invert__(self) -> Criteria:
        if isinstance(self, Not):
            return self.item
        return Not(item=self)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        """Return the node as canonical JSON data (see :func:`from_dict`)."""
        return _to_dict(self)  # type: ignore[arg-type]

    def to_json(self) -> str:
        """Return the node as a JSON text (:func:`dumps`)."""
        return dumps(self)  # type: ignore[arg-type]

    def describe(self) -> str:
        """Return a one-line summary of the node (for ``explain``), showing plain values only."""
        return _describe(self)  # type: ignore[arg-type]


def _items(value: Iterable[Criteria]) -> tuple[Criteria, ...]:
    return tuple(value)


def _sorted_ids(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(set(value)))


def _filters(value: Iterable[PropertyFilter]) -> tuple[PropertyFilter, ...]:
    return tuple(value)


@attrs.frozen(kw_only=True, slots=True)
class AllOf(Node):
    """True when every item is (an empty group: every contact). JSON ``{"all": [...]}``."""

    items: tuple[Criteria, ...] = attrs.field(converter=_items)


@attrs.frozen(kw_only=True, slots=True)
class AnyOf(Node):
    """True when at least one item is (an empty group: nobody). JSON ``{"any": [...]}``."""

    items: tuple[Criteria, ...] = attrs.field(converter=_items)


@attrs.frozen(kw_only=True, slots=True)
class Not(Node):
    """True when its item is false. JSON ``{"not": {...}}``."""

    item: Criteria


@attrs.frozen(kw_only=True, slots=True)
class AttributeCondition(Node):
    """A condition on the current (or at ``at``) value of a plain contact attribute.

    A contact without a value of the attribute matches only ``"is not set"``
    (``!=`` and ``not in`` need a value too; wrap a condition in :class:`Not`
    to include contacts without one).

    Attributes:
        name: The attribute (declared, not personal).
        op: One of :data:`ATTRIBUTE_OPS` (for ``of="value"``) or :data:`RELATIVE_OPS`.
        value: A JSON scalar, a tuple of them (``in``, ``not in``; ``between``:
            ``(low, high)``, both included), or ``None`` (``is set``, ``is not set``).
            Dates are ``"YYYY-MM-DD"``, instants ISO 8601 with an offset,
            decimals strings or numbers.
        of: ``"value"`` (default), or a whole number of days measured in *zone*
            from today (the local date of ``at``): ``"days ago"`` (today minus
            the date), ``"days until"`` (the date minus today), ``"days until
            anniversary"`` (days until the date's next anniversary, year
            ignored; 29 February falls on 28 February in other years).
        zone: The IANA time zone of "today" (relative measures, and the local
            date of a ``datetime``).
    """

    name: str
    op: str
    value: AttrValue = None
    of: str = "value"
    zone: str = "UTC"


@attrs.frozen(kw_only=True, slots=True)
class BehaviourCondition(Node):
    """How many outbound messages a behaviour happened to, compared with a number.

    Each message counts once however many events it has (as the KPIs count).
    ``sent``: not rejected; ``received``: not rejected, bounced or failed
    (per the message's events, whenever they came); the window applies to the
    message's ``sent_at``. ``opened`` (an open or a click, as the KPIs count
    opens), ``clicked``, ``converted``, ``unsubscribed``, ``complained``,
    ``bounced``: the window applies to the event's time. Events flagged
    ``machine`` (machine opens, scanner clicks) are left out unless
    *include_machine*.

    Attributes:
        behaviour: One of :data:`BEHAVIOURS`.
        measure: ``"count"`` (default), or ``"first"`` / ``"last"``: the time it
            first or last happened (in the window), compared with an instant by
            one of :data:`TIME_OPS`; a contact to whom it never happened matches
            neither.
        op: One of :data:`COUNT_OPS` (default ``>=``).
        value: The count to compare with (default 1: "at least once"), or for
            ``first``/``last`` an ISO 8601 instant with an offset.
        campaign: Only messages of this campaign.
        channel: Only messages on this channel.
        within_days: Only the last N days before ``at`` (``[at - N days, at]``).
        since: Only from this instant on (ISO 8601 with an offset, included).
        until: Only before this instant (excluded). Nothing after ``at`` counts.
        include_machine: Count machine opens and scanner clicks too.
    """

    behaviour: str
    measure: str = "count"
    op: str = ">="
    value: int | str = 1
    campaign: str | None = None
    channel: str | None = None
    within_days: int | None = None
    since: str | None = None
    until: str | None = None
    include_machine: bool = False

    def count(self) -> _Measure[BehaviourCondition]:
        """Compare the count instead of "at least once": ``opened().count() >= 3``."""
        return _Measure(
            lambda op, v: attrs.evolve(self, measure="count", op=op, value=_count_value(v))
        )

    def first(self) -> _Measure[BehaviourCondition]:
        """Compare when it first happened: ``opened().first() < datetime(...)``."""
        return _Measure(lambda op, v: attrs.evolve(self, measure="first", op=op, value=str(v)))

    def last(self) -> _Measure[BehaviourCondition]:
        """Compare when it last happened: ``clicked().last() >= datetime(...)``."""
        return _Measure(lambda op, v: attrs.evolve(self, measure="last", op=op, value=str(v)))


@attrs.frozen(kw_only=True, slots=True)
class PropertyFilter:
    """A filter on a plain (declared plain) property of an activity.

    Attributes:
        key: The property key.
        op: One of :data:`PROPERTY_OPS`.
        value: Text, an integer or a boolean (a tuple of them for ``in``,
            ``not in``; ``None`` for ``is set``, ``is not set``). Types must
            match: ``1`` does not equal ``"1"`` or ``true``.
    """

    key: str
    op: str
    value: AttrValue = None


@attrs.frozen(kw_only=True, slots=True)
class ActivityCondition(Node):
    """How many activities of a name a contact did (or their revenue), compared.

    Attributes:
        name: The activity name.
        measure: ``"count"`` (default), ``"revenue"`` (the sum of revenue;
            activities without revenue add 0), or ``"first"`` / ``"last"`` (the
            time of the first or last one, compared with an instant by one of
            :data:`TIME_OPS`; a contact without any matches neither).
        op: One of :data:`COUNT_OPS` (default ``>=``).
        value: An integer count, a revenue amount (a decimal string or number),
            or an ISO 8601 instant (``first``, ``last``).
        currency: With ``"revenue"``: only activities in this currency.
        within_days, since, until: The window, as in :class:`BehaviourCondition`.
        where: Filters on plain properties, all of which must hold.
    """

    name: str
    measure: str = "count"
    op: str = ">="
    value: int | str = 1
    currency: str | None = None
    within_days: int | None = None
    since: str | None = None
    until: str | None = None
    where: tuple[PropertyFilter, ...] = attrs.field(default=(), converter=_filters)

    def count(self) -> _Measure[ActivityCondition]:
        """Compare the number of activities: ``activity("purchase").count() == 0``."""
        return _Measure(
            lambda op, v: attrs.evolve(
                self, measure="count", currency=None, op=op, value=_count_value(v)
            )
        )

    def first(self) -> _Measure[ActivityCondition]:
        """Compare when the first one happened."""
        return _Measure(
            lambda op, v: attrs.evolve(self, measure="first", currency=None, op=op, value=str(v))
        )

    def last(self) -> _Measure[ActivityCondition]:
        """Compare when the last one happened: ``activity("purchase").last() < ...``."""
        return _Measure(
            lambda op, v: attrs.evolve(self, measure="last", currency=None, op=op, value=str(v))
        )

    def revenue(self, currency: str | None = None) -> _Measure[ActivityCondition]:
        """Compare the sum of revenue: ``activity("purchase").revenue("JPY") >= 10000``."""
        return _Measure(
            lambda op, v: attrs.evolve(
                self, measure="revenue", currency=currency, op=op, value=_revenue_text(v)
            )
        )


@attrs.frozen(kw_only=True, slots=True)
class ConsentCondition(Node):
    """True when consent for (channel, purpose) is granted at ``at``.

    The ledger's latest event up to ``at`` decides (a withdrawal wins a tie), as
    in ``can_send``.
    """

    channel: str
    purpose: str = "marketing"


@attrs.frozen(kw_only=True, slots=True)
class SuppressedCondition(Node):
    """True when a suppression entry blocks (channel, purpose) at ``at``, as ``can_send`` says.

    An entry on one of the contact's addresses on the channel, begun by ``at``
    and not lifted then, for the purpose or every purpose; an opt-out entry
    yields to a grant made after it. Use ``~suppressed(...)`` for "not suppressed".
    """

    channel: str
    purpose: str = "marketing"


@attrs.frozen(kw_only=True, slots=True)
class InList(Node):
    """True for the contacts of a static list (a saved snapshot's ids).

    Attributes:
        contact_ids: The ids, sorted and unique.
        label: An optional name for the list (a snapshot's ``segment@version``).
    """

    contact_ids: tuple[str, ...] = attrs.field(converter=_sorted_ids)
    label: str | None = None


Criteria: TypeAlias = Union[  # noqa: UP007 - a runtime alias used in isinstance checks
    AllOf,
    AnyOf,
    Not,
    AttributeCondition,
    BehaviourCondition,
    ActivityCondition,
    ConsentCondition,
    SuppressedCondition,
    InList,
]
"""Any node of a condition tree."""

_NODE_TYPES: Final = (
    AllOf, AnyOf, Not, AttributeCondition, BehaviourCondition, ActivityCondition,
    ConsentCondition, SuppressedCondition, InList,
)  # fmt: skip


def walk(node: Criteria, path: str = "$") -> Iterable[tuple[str, Criteria]]:
    """Yield ``(json path, node)`` for *node* and every node below it, depth first."""
    yield path, node
    if isinstance(node, AllOf | AnyOf):
        key = "all" if isinstance(node, AllOf) else "any"
        for i, item in enumerate(node.items):
            yield from walk(item, f"{path}.{key}[{i}]")
    elif isinstance(node, Not):
        yield from walk(node.item, f"{path}.not")


# ---------------------------------------------------------------------- fluent API


def _json_scalar(value: object) -> JSONScalar:
    if isinstance(value, datetime):
        if value.utcoffset() is None:
            raise _err("$", "a datetime needs a time zone")
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, str | int | float | bool):
        return value
    raise _err("$", f"a value must be text, a number, a boolean or a date, not {_kind(value)}")


_N = TypeVar("_N", bound=Node)


class _Measure(Generic[_N]):
    """Comparisons that build a condition: ``==``, ``!=``, ``<`` ... and helpers."""

    def __init__(self, build: Callable[[str, AttrValue], _N]) -> None:
        self._build = build

    def __eq__(self, value: object) -> _N:  # type: ignore[override]
        return self._build("=", _json_scalar(value))

    def __ne__(self, value: object) -> _N:  # type: ignore[override]
        return self._build("!=", _json_scalar(value))

    def __lt__(self, value: object) -> _N:
        return self._build("<", _json_scalar(value))

    def __le__(self, value: object) -> _N:
        return self._build("<=", _json_scalar(value))

    def __gt__(self, value: object) -> _N:
        return self._build(">", _json_scalar(value))

    def __ge__(self, value: object) -> _N:
        return self._build(">=", _json_scalar(value))

    __hash__ = None  # type: ignore[assignment]

    def is_in(self, values: Iterable[object]) -> _N:
        """The value is one of *values*."""
        return self._build("in", tuple(_json_scalar(v) for v in values))

    def not_in(self, values: Iterable[object]) -> _N:
        """The value is set and none of *values*."""
        return self._build("not in", tuple(_json_scalar(v) for v in values))

    def between(self, low: object, high: object) -> _N:
        """``low <= value <= high``."""
        return self._build("between", (_json_scalar(low), _json_scalar(high)))


class AttributeRef(_Measure[AttributeCondition]):
    """``attr(name)``: build conditions on an attribute (see :func:`attr`)."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(lambda op, v: AttributeCondition(name=name, op=op, value=v))

    def contains(self, value: str) -> AttributeCondition:
        """Text contains *value* (case-sensitive), or a list has the element *value*."""
        return AttributeCondition(name=self.name, op="contains", value=value)

    def starts_with(self, value: str) -> AttributeCondition:
        """Text starts with *value* (case-sensitive)."""
        return AttributeCondition(name=self.name, op="starts with", value=value)

    def is_set(self) -> AttributeCondition:
        """The contact has a value."""
        return AttributeCondition(name=self.name, op="is set")

    def is_not_set(self) -> AttributeCondition:
        """The contact has no value."""
        return AttributeCondition(name=self.name, op="is not set")

    def _relative(self, of: str, zone: str) -> _Measure[AttributeCondition]:
        name = self.name
        return _Measure(
            lambda op, v: AttributeCondition(name=name, op=op, value=v, of=of, zone=zone)
        )

    def days_ago(self, zone: str = "UTC") -> _Measure[AttributeCondition]:
        """Whole days from the date to today in *zone*: ``attr("signup").days_ago() > 30``."""
        return self._relative("days ago", zone)

    def days_until(self, zone: str = "UTC") -> _Measure[AttributeCondition]:
        """Whole days from today in *zone* to the date."""
        return self._relative("days until", zone)

    def days_until_anniversary(self, zone: str = "UTC") -> _Measure[AttributeCondition]:
        """Days until the date's next anniversary: ``... .days_until_anniversary() == 7``."""
        return self._relative("days until anniversary", zone)


def attr(name: str) -> AttributeRef:
    """Start a condition on a contact attribute: ``attr("tier") == "gold"``.

    Comparisons (``==``, ``!=``, ``<``, ``<=``, ``>``, ``>=``) and
    ``.is_in()``, ``.not_in()``, ``.between()``, ``.contains()``,
    ``.starts_with()``, ``.is_set()``, ``.is_not_set()``, ``.days_ago(zone)``,
    ``.days_until(zone)``, ``.days_until_anniversary(zone)`` return conditions.
    """
    return AttributeRef(name)


def behaviour(
    kind: str,
    *,
    campaign: str | None = None,
    channel: Channel | str | None = None,
    within_days: int | None = None,
    since: datetime | str | None = None,
    until: datetime | str | None = None,
    include_machine: bool = False,
) -> BehaviourCondition:
    """A behaviour that happened at least once; ``.count()`` compares the count.

    Shortcuts: :func:`sent`, :func:`received`, :func:`opened`, :func:`clicked`,
    :func:`converted`, :func:`bounced`, :func:`unsubscribed`, :func:`complained`.
    """
    return BehaviourCondition(
        behaviour=kind,
        campaign=campaign,
        channel=None if channel is None else str(channel),
        within_days=within_days,
        since=None if since is None else str(_json_scalar(since)),
        until=None if until is None else str(_json_scalar(until)),
        include_machine=include_machine,
    )


def _shortcut(kind: str) -> Callable[..., BehaviourCondition]:
    def make(**kwargs: Any) -> BehaviourCondition:
        return behaviour(kind, **kwargs)

    make.__name__ = kind
    make.__doc__ = f"``behaviour({kind!r}, ...)``: see :func:`behaviour`."
    return make


sent = _shortcut("sent")
received = _shortcut("received")
opened = _shortcut("opened")
clicked = _shortcut("clicked")
converted = _shortcut("converted")
bounced = _shortcut("bounced")
unsubscribed = _shortcut("unsubscribed")
complained = _shortcut("complained")


def _count_value(value: AttrValue) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _err("$", "a count must be a non-negative integer")
    return value


def _revenue_text(value: AttrValue) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _err("$", "a revenue amount must be a number")
    return decimal_text(revenue_micros(value, "$.value")[1])


def decimal_text(amount: Decimal) -> str:
    """The canonical text of an amount: no exponent, no trailing zeros (``"10.5"``)."""
    if amount == 0:
        return "0"
    return format(amount.normalize(), "f")


def activity(
    name: str,
    *,
    within_days: int | None = None,
    since: datetime | str | None = None,
    until: datetime | str | None = None,
    where: Iterable[PropertyFilter] = (),
) -> ActivityCondition:
    """Activities of *name* done at least once; ``.count()`` / ``.revenue()`` compare."""
    return ActivityCondition(
        name=name,
        within_days=within_days,
        since=None if since is None else str(_json_scalar(since)),
        until=None if until is None else str(_json_scalar(until)),
        where=tuple(where),
    )


def consent(channel: Channel | str, purpose: Purpose | str = "marketing") -> ConsentCondition:
    """Consent for (*channel*, *purpose*) is granted at ``at``."""
    return ConsentCondition(channel=str(channel), purpose=str(purpose))


def suppressed(
    channel: Channel | str, purpose: Purpose | str = "marketing"
) -> SuppressedCondition:
    """A suppression blocks (*channel*, *purpose*) at ``at``; ``~suppressed(...)`` for not."""
    return SuppressedCondition(channel=str(channel), purpose=str(purpose))


def in_list(contact_ids: Iterable[str], *, label: str | None = None) -> InList:
    """The contacts of a static list."""
    return InList(contact_ids=tuple(contact_ids), label=label)


def all_(*items: Criteria) -> AllOf:
    """Every item holds (nest freely)."""
    return AllOf(items=items)


def any_(*items: Criteria) -> AnyOf:
    """At least one item holds."""
    return AnyOf(items=items)


def not_(item: Criteria) -> Not:
    """The item does not hold."""
    return Not(item=item)


# ---------------------------------------------------------------------- JSON out


def _clean(d: dict[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k not in defaults or defaults[k] != v}


def _value_json(value: AttrValue) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _to_dict(node: Criteria) -> dict[str, Any]:
    if isinstance(node, AllOf):
        return {"all": [_to_dict(i) for i in node.items]}
    if isinstance(node, AnyOf):
        return {"any": [_to_dict(i) for i in node.items]}
    if isinstance(node, Not):
        return {"not": _to_dict(node.item)}
    if isinstance(node, AttributeCondition):
        out: dict[str, Any] = {"attribute": node.name, "op": node.op}
        if node.op not in _NO_VALUE:
            out["value"] = _value_json(node.value)
        if node.of != "value":
            out["of"] = node.of
        if node.zone != "UTC":
            out["zone"] = node.zone
        return out
    if isinstance(node, BehaviourCondition):
        return _clean(
            {
                "behaviour": node.behaviour, "measure": node.measure, "op": node.op,
                "value": node.value,
                "campaign": node.campaign, "channel": node.channel,
                "within_days": node.within_days, "since": node.since, "until": node.until,
                "include_machine": node.include_machine,
            },
            _BEHAVIOUR_DEFAULTS,
        )  # fmt: skip
    if isinstance(node, ActivityCondition):
        out = _clean(
            {
                "activity": node.name, "measure": node.measure, "op": node.op,
                "value": node.value, "currency": node.currency,
                "within_days": node.within_days, "since": node.since, "until": node.until,
            },
            _ACTIVITY_DEFAULTS,
        )  # fmt: skip
        if node.where:
            out["where"] = [
                {"property": f.key, "op": f.op}
                | ({} if f.op in _NO_VALUE else {"value": _value_json(f.value)})
                for f in node.where
            ]
        return out
    if isinstance(node, ConsentCondition):
        return {"consent": node.channel, "purpose": node.purpose}
    if isinstance(node, SuppressedCondition):
        return {"suppressed": node.channel, "purpose": node.purpose}
    out = {"list": list(node.contact_ids)}
    if node.label is not None:
        out["label"] = node.label
    return out


_BEHAVIOUR_DEFAULTS: Final = {
    "measure": "count", "op": ">=", "value": 1, "campaign": None, "channel": None,
    "within_days": None, "since": None, "until": None, "include_machine": False,
}  # fmt: skip
_ACTIVITY_DEFAULTS: Final = {
    "measure": "count", "op": ">=", "value": 1, "currency": None, "within_days": None,
    "since": None, "until": None,
}  # fmt: skip


def dumps(node: Criteria, *, indent: int | None = None) -> str:
    """Return *node* as JSON text (canonical: defaults left out)."""
    return json.dumps(_to_dict(node), ensure_ascii=False, indent=indent)


# ---------------------------------------------------------------------- JSON in


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _fields(d: Mapping[str, Any], path: str, allowed: Iterable[str]) -> None:
    known = set(allowed)
    for key in d:
        if not isinstance(key, str):
            raise _err(path, "field names must be text")
        if key not in known:
            raise _err(f"{path}.{key}", f"unknown field (expected one of {sorted(known)})")


def _text(d: Mapping[str, Any], key: str, path: str, *, required: bool = True) -> str | None:
    if key not in d:
        if required:
            raise _err(f"{path}.{key}", "missing")
        return None
    value = d[key]
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise _err(f"{path}.{key}", f"must be non-empty text, not {_kind(value)}")
    return value


def _choice(
    d: Mapping[str, Any], key: str, path: str, choices: Sequence[str], default: str
) -> str:
    value = d.get(key, default)
    if not isinstance(value, str):
        raise _err(f"{path}.{key}", f"must be text, not {_kind(value)}")
    if value not in choices:
        raise _err(f"{path}.{key}", f"unknown operator or value (expected one of {list(choices)})")
    return value


def _int(value: object, path: str, *, low: int = 0, high: int = _MAX_COUNT) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _err(path, f"must be an integer, not {_kind(value)}")
    if not low <= value <= high:
        raise _err(path, f"must be between {low} and {high}")
    return value


def _scalar(value: object, path: str) -> JSONScalar:
    if isinstance(value, float) and not math.isfinite(value):
        raise _err(path, "must be a finite number")
    if isinstance(value, str | int | float | bool):
        return value
    raise _err(path, f"must be text, a number or a boolean, not {_kind(value)}")


def _op_value(d: Mapping[str, Any], op: str, path: str) -> AttrValue:
    vpath = f"{path}.value"
    if op in _NO_VALUE:
        if "value" in d:
            raise _err(vpath, f"{op!r} takes no value")
        return None
    if "value" not in d:
        raise _err(vpath, "missing")
    value = d["value"]
    if op in {"in", "not in"}:
        if not isinstance(value, list):
            raise _err(vpath, f"{op!r} needs a list, not {_kind(value)}")
        if len(value) > 10_000:
            raise _err(vpath, "at most 10000 values")
        return tuple(_scalar(v, f"{vpath}[{i}]") for i, v in enumerate(value))
    if op == "between":
        if not isinstance(value, list) or len(value) != 2:
            raise _err(vpath, "'between' needs a list of two values [low, high]")
        return (_scalar(value[0], f"{vpath}[0]"), _scalar(value[1], f"{vpath}[1]"))
    return _scalar(value, vpath)


def _zone(value: str, path: str) -> ZoneInfo:
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise _err(path, "not an IANA time zone") from exc


def _instant(value: str | None, path: str) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise _err(path, "not an ISO 8601 instant") from exc
    if moment.utcoffset() is None:
        raise _err(path, "an instant needs an offset (Z or +09:00)")
    return moment.astimezone(UTC)


def _window(d: Mapping[str, Any], path: str) -> tuple[int | None, str | None, str | None]:
    days = d.get("within_days")
    if days is not None:
        days = _int(days, f"{path}.within_days", low=0, high=_MAX_DAYS)
    since = _text(d, "since", path, required=False)
    until = _text(d, "until", path, required=False)
    lo, hi = _instant(since, f"{path}.since"), _instant(until, f"{path}.until")
    if days is not None and (since is not None or until is not None):
        raise _err(f"{path}.within_days", "give within_days or since/until, not both")
    if lo is not None and hi is not None and lo > hi:
        raise _err(f"{path}.until", "is before since")
    return days, since, until


def _channel(value: str | None, path: str) -> str | None:
    if value is not None and value not in {c.value for c in Channel}:
        raise _err(path, f"unknown channel (expected one of {[c.value for c in Channel]})")
    return value


def _purpose(value: str, path: str) -> str:
    if value not in {p.value for p in Purpose}:
        raise _err(path, f"unknown purpose (expected one of {[p.value for p in Purpose]})")
    return value


def _bool(d: Mapping[str, Any], key: str, path: str) -> bool:
    value = d.get(key, False)
    if not isinstance(value, bool):
        raise _err(f"{path}.{key}", f"must be true or false, not {_kind(value)}")
    return value


_KINDS: Final = ("all", "any", "not", "attribute", "behaviour", "activity", "consent",
                 "suppressed", "list")  # fmt: skip


def from_dict(data: object, path: str = "$") -> Criteria:
    """Build a tree from JSON data, checking every field.

    Raises:
        CriteriaError: An unknown field, node kind or operator, a missing field
            or a wrongly typed value; ``path`` names it (``$.all[2].op``).
    """
    if not isinstance(data, dict):
        raise _err(path, f"a condition must be an object, not {_kind(data)}")
    kinds = [k for k in _KINDS if k in data]
    if len(kinds) != 1:
        if not kinds:
            raise _err(path, f"a condition needs exactly one of {list(_KINDS)}")
        raise _err(f"{path}.{kinds[1]}", f"a condition has one kind, not {kinds}")
    kind = kinds[0]
    if kind in {"all", "any"}:
        _fields(data, path, (kind,))
        items = data[kind]
        if not isinstance(items, list):
            raise _err(f"{path}.{kind}", f"must be a list, not {_kind(items)}")
        nodes = tuple(from_dict(item, f"{path}.{kind}[{i}]") for i, item in enumerate(items))
        return AllOf(items=nodes) if kind == "all" else AnyOf(items=nodes)
    if kind == "not":
        _fields(data, path, ("not",))
        return Not(item=from_dict(data["not"], f"{path}.not"))
    if kind == "attribute":
        return _attribute(data, path)
    if kind == "behaviour":
        return _behaviour(data, path)
    if kind == "activity":
        return _activity(data, path)
    if kind in {"consent", "suppressed"}:
        _fields(data, path, (kind, "purpose"))
        channel = _channel(_text(data, kind, path), f"{path}.{kind}")
        assert channel is not None
        purpose = _purpose(_choice(data, "purpose", path, [p.value for p in Purpose],
                                   "marketing"), f"{path}.purpose")  # fmt: skip
        cls = ConsentCondition if kind == "consent" else SuppressedCondition
        return cls(channel=channel, purpose=purpose)
    _fields(data, path, ("list", "label"))
    ids = data["list"]
    if not isinstance(ids, list):
        raise _err(f"{path}.list", f"must be a list of contact ids, not {_kind(ids)}")
    for i, cid in enumerate(ids):
        if not isinstance(cid, str) or not cid:
            raise _err(f"{path}.list[{i}]", "a contact id must be non-empty text")
    return InList(contact_ids=tuple(ids), label=_text(data, "label", path, required=False))


def _attribute(d: Mapping[str, Any], path: str) -> AttributeCondition:
    _fields(d, path, ("attribute", "op", "value", "of", "zone"))
    name = _text(d, "attribute", path)
    assert name is not None
    of = _choice(d, "of", path, RELATIVE_OF, "value")
    if "op" not in d:
        raise _err(f"{path}.op", "missing")
    op = _choice(d, "op", path, ATTRIBUTE_OPS if of == "value" else RELATIVE_OPS, "")
    value = _op_value(d, op, path)
    zone = _text(d, "zone", path, required=False) or "UTC"
    _zone(zone, f"{path}.zone")
    if of != "value":
        vals = value if isinstance(value, tuple) else (value,)
        for i, v in enumerate(vals):
            where = f"{path}.value" + (f"[{i}]" if isinstance(value, tuple) else "")
            _int(v, where, low=-_MAX_DAYS, high=_MAX_DAYS)
    return AttributeCondition(name=name, op=op, value=value, of=of, zone=zone)


def _behaviour(d: Mapping[str, Any], path: str) -> BehaviourCondition:
    _fields(d, path, (
        "behaviour", "measure", "op", "value", "campaign", "channel", "within_days", "since",
        "until", "include_machine",
    ))  # fmt: skip
    kind = _choice(d, "behaviour", path, BEHAVIOURS, "")
    measure = _choice(d, "measure", path, BEHAVIOUR_MEASURES, "count")
    value: int | str
    if measure == "count":
        op = _choice(d, "op", path, COUNT_OPS, ">=")
        value = _int(d.get("value", 1), f"{path}.value")
    else:
        op, value = _time_measure(d, path)
    days, since, until = _window(d, path)
    return BehaviourCondition(
        behaviour=kind,
        measure=measure,
        op=op,
        value=value,
        campaign=_text(d, "campaign", path, required=False),
        channel=_channel(_text(d, "channel", path, required=False), f"{path}.channel"),
        within_days=days,
        since=since,
        until=until,
        include_machine=_bool(d, "include_machine", path),
    )


def _activity(d: Mapping[str, Any], path: str) -> ActivityCondition:
    _fields(d, path, (
        "activity", "measure", "op", "value", "currency", "within_days", "since", "until",
        "where",
    ))  # fmt: skip
    name = _text(d, "activity", path)
    assert name is not None
    measure = _choice(d, "measure", path, MEASURES, "count")
    raw = d.get("value", 1)
    value: int | str
    currency = _text(d, "currency", path, required=False)
    if measure in {"first", "last"}:
        op, value = _time_measure(d, path)
        if currency is not None:
            raise _err(f"{path}.currency", "only with measure 'revenue'")
    elif measure == "count":
        op = _choice(d, "op", path, COUNT_OPS, ">=")
        value = _int(raw, f"{path}.value")
        if currency is not None:
            raise _err(f"{path}.currency", "only with measure 'revenue'")
    else:
        op = _choice(d, "op", path, COUNT_OPS, ">=")
        value = decimal_text(revenue_micros(raw, f"{path}.value")[1])
        if currency is not None and not re.fullmatch(r"[A-Z]{3}", currency):
            raise _err(f"{path}.currency", "must be an ISO 4217 code (three capital letters)")
    days, since, until = _window(d, path)
    filters = d.get("where", [])
    if not isinstance(filters, list):
        raise _err(f"{path}.where", f"must be a list, not {_kind(filters)}")
    where = tuple(_property(f, f"{path}.where[{i}]") for i, f in enumerate(filters))
    return ActivityCondition(
        name=name, measure=measure, op=op, value=value, currency=currency,
        within_days=days, since=since, until=until, where=where,
    )  # fmt: skip


def _time_measure(d: Mapping[str, Any], path: str) -> tuple[str, str]:
    op = _choice(d, "op", path, TIME_OPS, ">=")
    if "value" not in d:
        raise _err(f"{path}.value", "missing")
    value = d["value"]
    if not isinstance(value, str):
        raise _err(f"{path}.value", f"must be an ISO 8601 instant, not {_kind(value)}")
    _instant(value, f"{path}.value")
    return op, value


def _property(d: object, path: str) -> PropertyFilter:
    if not isinstance(d, dict):
        raise _err(path, f"a property filter must be an object, not {_kind(d)}")
    _fields(d, path, ("property", "op", "value"))
    key = _text(d, "property", path)
    assert key is not None
    if '"' in key or "\\" in key:
        raise _err(
            f"{path}.property", "a property key with quotes or backslashes is not filterable"
        )
    if "op" not in d:
        raise _err(f"{path}.op", "missing")
    op = _choice(d, "op", path, PROPERTY_OPS, "")
    value = _op_value(d, op, path)
    for i, v in enumerate(value if isinstance(value, tuple) else (value,)):
        if isinstance(v, float):
            where = f"{path}.value" + (f"[{i}]" if isinstance(value, tuple) else "")
            raise _err(where, "property filters compare text, integers or booleans")
    return PropertyFilter(key=key, op=op, value=value)


def loads(text: str | bytes) -> Criteria:
    """Parse a JSON text into a tree.

    Raises:
        CriteriaError: Not JSON (path ``$``), or not a valid tree.
    """
    try:
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _err("$", "not valid JSON") from exc
    return from_dict(data)


def load_yaml(text: str) -> Criteria:
    """Parse a YAML text into a tree (needs PyYAML, an optional dependency).

    Raises:
        CriteriaError: Not YAML, or not a valid tree.
        ModuleNotFoundError: PyYAML is not installed.
    """
    import yaml  # type: ignore[import-untyped]  # noqa: PLC0415 - optional dependency

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise _err("$", "not valid YAML") from exc
    return from_dict(data)


# ---------------------------------------------------------------------- shared typing rules


def compare(op: str, left: Any, right: Any) -> bool:
    """Apply a comparison operator of :data:`COMPARE_OPS` (``between``: *right* a pair)."""
    if op == "=":
        return bool(left == right)
    if op == "!=":
        return bool(left != right)
    if op == "<":
        return bool(left < right)
    if op == "<=":
        return bool(left <= right)
    if op == ">":
        return bool(left > right)
    if op == ">=":
        return bool(left >= right)
    if op == "between":
        return bool(right[0] <= left <= right[1])
    if op == "in":
        return left in right
    if op == "not in":
        return left not in right
    raise ValueError(op)


def revenue_micros(value: object, path: str) -> tuple[int, Decimal]:
    """Return an amount as exact millionths and as a decimal (at most 6 places)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _err(path, f"must be a number or a decimal string, not {_kind(value)}")
    try:
        amount = Decimal(str(value))
    except InvalidOperation as exc:
        raise _err(path, "not a decimal number") from exc
    if not amount.is_finite():
        raise _err(path, "must be finite")
    scaled = amount.scaleb(6)
    if scaled != scaled.to_integral_value():
        raise _err(path, "at most 6 decimal places")
    micros = int(scaled)
    if abs(micros) > _MAX_MICROS:
        raise _err(path, "out of range")
    return micros, amount


def _coerce_one(kind: str, value: object, path: str) -> Any:
    """One JSON value as the typed column value of *kind* (what SQL binds, memory compares)."""
    bad = CriteriaSchemaError(path=path, reason=f"must be a {kind} value, not {_kind(value)}")
    if kind in {"str", "enum", "list"}:
        if not isinstance(value, str):
            raise bad
        return value
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        if not -(2**63) <= value < 2**63:
            raise CriteriaSchemaError(path=path, reason="out of the 64-bit range")
        return value
    if kind == "decimal":
        try:
            return revenue_micros(value, path)[0]
        except CriteriaError as exc:
            raise CriteriaSchemaError(path=path, reason=exc.reason) from exc
    if kind == "bool":
        if not isinstance(value, bool):
            raise bad
        return value
    if kind == "date":
        if not isinstance(value, str) or not _ISO_DATE.fullmatch(value):
            raise CriteriaSchemaError(path=path, reason="must be a date YYYY-MM-DD")
        try:
            return date.fromisoformat(value).isoformat()
        except ValueError as exc:
            raise CriteriaSchemaError(path=path, reason="not a calendar date") from exc
    if kind == "datetime":
        if not isinstance(value, str):
            raise bad
        try:
            moment = _instant(value, path)
        except CriteriaError as exc:
            raise CriteriaSchemaError(path=path, reason=exc.reason) from exc
        assert moment is not None
        return moment
    raise CriteriaSchemaError(path=path, reason=f"unknown attribute type {kind!r}")


def coerce_attribute(
    cond: AttributeCondition, kind: str, personal: bool, path: str
) -> tuple[str, Any]:
    """Check *cond* against an attribute's declared type; return ``(op, typed value)``.

    The typed value is in the stored column's terms: text for ``str``/``enum``/
    ``list`` elements, ``int``, micros (``int``) for ``decimal``, ``bool``,
    ISO text for ``date``, an aware UTC ``datetime`` for ``datetime``; a tuple
    for ``in``/``not in``/``between``; ``None`` for ``is set``/``is not set``.
    Relative measures (``of`` other than ``"value"``) return the value as given
    (whole days).

    Raises:
        CriteriaSchemaError: A personal attribute, an operator the type does
            not have, or a value of the wrong type (``path`` names it).
    """
    if personal:
        raise CriteriaSchemaError(
            path=f"{path}.attribute",
            reason="a personal attribute is encrypted and cannot be a segment key",
        )
    if cond.of != "value":
        allowed = {"days ago": ("date", "datetime"), "days until": ("date", "datetime"),
                   "days until anniversary": ("date",)}[cond.of]  # fmt: skip
        if kind not in allowed:
            raise CriteriaSchemaError(
                path=f"{path}.of", reason=f"{cond.of!r} needs a {' or '.join(allowed)} attribute"
            )
        return cond.op, cond.value
    if cond.op not in TYPE_OPS.get(kind, frozenset()):
        raise CriteriaSchemaError(
            path=f"{path}.op",
            reason=f"{cond.op!r} is not an operator of {kind} attributes "
            f"(expected one of {sorted(TYPE_OPS.get(kind, ()))})",
        )
    if cond.op in _NO_VALUE:
        return cond.op, None
    vpath = f"{path}.value"
    if isinstance(cond.value, tuple):
        typed = tuple(_coerce_one(kind, v, f"{vpath}[{i}]") for i, v in enumerate(cond.value))
        if cond.op == "between" and typed[0] > typed[1]:
            raise CriteriaSchemaError(path=vpath, reason="low is above high")
        return cond.op, typed
    return cond.op, _coerce_one(kind, cond.value, vpath)


def today_in(zone: str, at: datetime) -> date:
    """The local date of *at* in *zone*."""
    return at.astimezone(ZoneInfo(zone)).date()


def day_window(op: str, value: Any, of: str, today: date) -> tuple[str, Any]:
    """Turn a relative measure (``days ago``/``days until``) into a condition on the date.

    Returns ``(op, date or tuple of dates)`` with the same meaning on the date
    itself: ``days ago > 30`` becomes ``date < today - 30``.
    """
    sign = 1 if of == "days ago" else -1
    mirror = {"=": "=", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}

    def day(n: int) -> date:
        return today - timedelta(days=sign * n)

    if op in mirror:
        return (mirror[op] if of == "days ago" else op), day(value)
    if op in {"in", "not in"}:
        return op, tuple(day(n) for n in value)
    lo, hi = day(value[0]), day(value[1])
    return "between", (min(lo, hi), max(lo, hi))


def _next_anniversary(month: int, day: int, today: date) -> date:
    for year in (today.year, today.year + 1):
        try:
            candidate = date(year, month, day)
        except ValueError:  # 29 February in a common year
            candidate = date(year, 2, 28)
        if candidate >= today:
            return candidate
    raise AssertionError("unreachable")  # pragma: no cover


def anniversary_days(op: str, value: Any, today: date) -> tuple[str, ...]:
    """Return the ``MM-DD`` month-days whose next anniversary satisfies (*op*, *value*).

    ``days until anniversary`` counts from *today* (0: today) to the next
    anniversary; 29 February falls on 28 February in common years.
    """
    out = []
    start = date(2000, 1, 1)  # a leap year: every month-day
    for offset in range(366):
        d = start + timedelta(days=offset)
        days = (_next_anniversary(d.month, d.day, today) - today).days
        if compare(op, days, value):
            out.append(f"{d.month:02d}-{d.day:02d}")
    return tuple(out)


# ---------------------------------------------------------------------- describe


def _describe(node: Criteria) -> str:
    if isinstance(node, AllOf):
        return f"all of {len(node.items)}"
    if isinstance(node, AnyOf):
        return f"any of {len(node.items)}"
    if isinstance(node, Not):
        return "not"
    if isinstance(node, AttributeCondition):
        subject = node.name if node.of == "value" else f"{node.name} {node.of} ({node.zone})"
        if node.op in _NO_VALUE:
            return f"{subject} {node.op}"
        return f"{subject} {node.op} {json.dumps(_value_json(node.value), ensure_ascii=False)}"
    if isinstance(node, BehaviourCondition | ActivityCondition):
        if isinstance(node, BehaviourCondition):
            text = f"{node.behaviour}" + ("" if node.measure == "count" else f" {node.measure}")
            for label, v in (("campaign", node.campaign), ("channel", node.channel)):
                if v is not None:
                    text += f" {label}={v}"
        else:
            text = f"activity {node.name}"
            if node.measure == "revenue":
                text += f" revenue{'' if node.currency is None else ' ' + node.currency}"
            elif node.measure != "count":
                text += f" {node.measure}"
            for f in node.where:
                text += f" [{f.key} {f.op}{'' if f.value is None else ' ' + json.dumps(_value_json(f.value))}]"  # noqa: E501
        text += f" {node.op} {node.value}"
        if node.within_days is not None:
            text += f" within {node.within_days} days"
        if node.since is not None:
            text += f" since {node.since}"
        if node.until is not None:
            text += f" until {node.until}"
        if isinstance(node, BehaviourCondition) and node.include_machine:
            text += " (machine included)"
        return text
    if isinstance(node, ConsentCondition):
        return f"consent {node.channel}/{node.purpose}"
    if isinstance(node, SuppressedCondition):
        return f"suppressed {node.channel}/{node.purpose}"
    return f"in list {node.label or ''}({len(node.contact_ids)} ids)".replace(" (", " (")
