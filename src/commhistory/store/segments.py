"""Segment storage: a condition tree evaluated in the database, or over the memory state.

:class:`SegmentStore` is the port :mod:`commhistory.segments` and the facade use:
:meth:`~SegmentStore.count`, :meth:`~SegmentStore.members` and
:meth:`~SegmentStore.explain` evaluate a :mod:`commhistory.criteria` tree at an
instant, and the saved-segment calls keep definitions and membership snapshots
(tables ``segment_definitions``, ``segment_snapshots`` and
``segment_snapshot_members``, migration 0013). :class:`SQLSegmentStore`
compiles the tree into one SQLAlchemy Core statement per call (every value a
bound parameter); :class:`MemorySegmentStore` evaluates the same tree over a
:class:`~commhistory.store.memory.MemoryState` with the same rules. The two
agree (a Hypothesis test checks memory, SQLite and PostgreSQL).

**The universe** is every contact the store knows and has not erased: a row
of ``contacts`` with ``erased_at`` ``NULL`` (in memory, ``state.contacts``
less the erased). A contact becomes known with its first message, consent
event, attribute value or activity. Each condition is evaluated over the
universe, so ``not`` and ``count == 0`` include contacts with no rows at all.

**The instant** ``at`` (default: now, read once per call) bounds every
window (nothing after ``at`` counts) and decides consent and suppression.
Attribute conditions read the current values (``valid_to IS NULL``) when
``at`` is not given, else the values in force at ``at``.

The SQL shape: ``SELECT contact_id FROM contacts WHERE erased_at IS NULL AND
<tree>``, in one of two strategies (``SQLSegmentStore.strategy``).
*Sets*: each leaf is ``contact_id IN (subquery)`` (or ``NOT IN``, when the
leaf holds for contacts without rows, as ``count <= N`` does) over one table,
grouped by contact when a count or sum is compared; each subquery is
uncorrelated, so the database runs it once and probes a hash or index.
*Probes*: message behaviour, activity and consent leaves are correlated
probes of the one contact's rows through an index that starts with the
contact (``EXISTS``, ``NOT EXISTS``, or the measure as a scalar subquery),
and the items of an ``all`` are evaluated sets first, then the cheapest
probes (``_probe_rank``), so a selective attribute decides how many
contacts the probes visit. ``auto`` picks probes on SQLite, sets on
PostgreSQL (measured: ``docs/performance.md``).

.. versionadded:: 0.4.0
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final, Protocol
from zoneinfo import ZoneInfo

import attrs
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from commhistory.criteria import (
    ActivityCondition,
    AllOf,
    AnyOf,
    AttributeCondition,
    BehaviourCondition,
    ConsentCondition,
    Criteria,
    InList,
    Not,
    PropertyFilter,
    SuppressedCondition,
    anniversary_days,
    coerce_attribute,
    compare,
    day_window,
    revenue_micros,
    today_in,
    walk,
)
from commhistory.errors import CriteriaSchemaError, InvalidInputError, NotFoundError
from commhistory.model import (
    ADDRESS_KINDS,
    Channel,
    ConsentAction,
    EventType,
    Purpose,
    SuppressionReason,
)
from commhistory.normalize.time import from_micros, to_micros
from commhistory.store import schema
from commhistory.store.attributes import DECIMAL_PLACES, StoredDefinition
from commhistory.store.consent import MemoryConsentStore

if TYPE_CHECKING:
    from commhistory.store.memory import MemoryState
    from commhistory.store.sql import SQLRepository

__all__ = [
    "CONSENT_REASONS",
    "STRATEGIES",
    "ExplainNode",
    "MemorySegmentStore",
    "SQLSegmentStore",
    "SavedSegment",
    "SegmentStore",
    "SnapshotInfo",
]

CONSENT_REASONS: Final = frozenset(
    {
        SuppressionReason.COMPLAINT,
        SuppressionReason.UNSUBSCRIBE,
        SuppressionReason.SMS_KEYWORD,
        SuppressionReason.LINE_UNFOLLOW,
        SuppressionReason.ERASURE,
    }
)
"""Opt-out reasons a later grant overrides (the same set as ``commhistory.consent``'s)."""

_DAY_US: Final = 86_400_000_000
_REACTIONS: Final = {
    "opened": (EventType.OPENED, EventType.CLICKED),
    "clicked": (EventType.CLICKED,),
    "converted": (EventType.CONVERTED,),
    "unsubscribed": (EventType.UNSUBSCRIBED,),
    "complained": (EventType.COMPLAINED,),
    "bounced": (EventType.BOUNCED,),
}
_NOT_SENT: Final = 1  # Outcome.REJECTED
_NOT_RECEIVED: Final = 1 | 2 | 8  # REJECTED | BOUNCED | FAILED
_COLUMN: Final = {
    "str": "value_text", "enum": "value_text", "list": "value_text", "int": "value_int",
    "decimal": "value_micros", "bool": "value_bool", "date": "value_date",
    "datetime": "value_ts",
}  # fmt: skip


# ---------------------------------------------------------------------- value types


@attrs.frozen(kw_only=True)
class ExplainNode:
    """How many contacts one node of a tree keeps (``explain``).

    Attributes:
        path: The node's JSON path (``$.all[1]``).
        label: A one-line summary of the node (its ``describe()``; plain values only).
        kept: Contacts of the universe for which this node alone holds.
        cumulative: Contacts for which this node and everything before it on
            the way from the root holds: within an ``all``, its earlier
            siblings too (a funnel); within an ``any``, this node or an
            earlier sibling. The root's is the segment's size.
        children: The nodes below it.
    """

    path: str
    label: str
    kept: int
    cumulative: int
    children: tuple[ExplainNode, ...] = ()

    def lines(self, indent: int = 0) -> list[str]:
        """Render the tree, one node a line: ``label  kept N  cumulative M``."""
        out = [f"{'  ' * indent}{self.label}  [kept {self.kept}, cumulative {self.cumulative}]"]
        for child in self.children:
            out.extend(child.lines(indent + 1))
        return out


@attrs.frozen(kw_only=True)
class SavedSegment:
    """One version of a saved segment definition.

    Attributes:
        name: The segment's name.
        version: Its version (1, 2, ...).
        definition: The tree as canonical JSON text.
        saved_at: When this version was saved, UTC.
    """

    name: str
    version: int
    definition: str
    saved_at: datetime


@attrs.frozen(kw_only=True)
class SnapshotInfo:
    """A saved membership snapshot (its ids are read with :meth:`SegmentStore.snapshot_members`).

    Attributes:
        snapshot_id: The snapshot's id.
        name: The segment's name.
        version: The segment version evaluated.
        at: The instant the tree was evaluated at, UTC.
        taken_at: When the snapshot was stored, UTC.
        size: How many contacts it holds now (erasure removes contacts).
    """

    snapshot_id: str
    name: str
    version: int
    at: datetime
    taken_at: datetime
    size: int


class SegmentStore(Protocol):
    """The storage port of segments: evaluation, saved definitions, snapshots.

    .. versionadded:: 0.4.0
    """

    def count(self, tree: Criteria, *, at: datetime | None = None) -> int:
        """Return how many contacts of the universe the tree keeps at *at*.

        Raises:
            CriteriaSchemaError: The tree names an unknown or personal attribute,
                an operator its type lacks, or a property not declared plain.
            InvalidInputError: *at* is naive.
        """
        ...

    def members(self, tree: Criteria, *, at: datetime | None = None) -> list[str]:
        """Return the contact ids the tree keeps at *at*, sorted (pseudonymous ids only)."""
        ...

    def explain(self, tree: Criteria, *, at: datetime | None = None) -> ExplainNode:
        """Return per-node counts (see :class:`ExplainNode`)."""
        ...

    def save_definition(self, name: str, definition: str) -> SavedSegment:
        """Store *definition* as the next version of *name* (unchanged text: same version)."""
        ...

    def definitions(self, name: str | None = None) -> list[SavedSegment]:
        """Return saved versions (of *name*, or all), by name and version."""
        ...

    def save_snapshot(
        self, name: str, version: int, at: datetime, contact_ids: Sequence[str]
    ) -> SnapshotInfo:
        """Store a membership snapshot of a saved segment version."""
        ...

    def snapshots(self, name: str) -> list[SnapshotInfo]:
        """Return the snapshots of *name*, oldest first."""
        ...

    def snapshot_members(self, snapshot_id: str) -> list[str]:
        """Return a snapshot's contact ids, sorted.

        Raises:
            NotFoundError: No such snapshot (``kind="snapshot"``).
        """
        ...

    def forget_contact(self, contact_id: str) -> int:
        """Remove a contact from every snapshot (erasure); return how many rows went."""
        ...


# ---------------------------------------------------------------------- preparation


@attrs.frozen
class _Context:
    at: datetime
    current: bool  # attributes: current rows (at not given)
    definitions: Mapping[str, StoredDefinition]
    plain_keys: Mapping[str, frozenset[str]]


def _resolve_at(at: datetime | None) -> tuple[datetime, bool]:
    if at is None:
        return datetime.now(UTC), True
    if at.utcoffset() is None:
        raise InvalidInputError(field="at", reason="must be an aware datetime")
    return at.astimezone(UTC), False


def _check(tree: Criteria, ctx: _Context) -> None:
    """Check every node against the declarations (the same errors on every engine)."""
    for path, node in walk(tree):
        if isinstance(node, AttributeCondition):
            d = ctx.definitions.get(node.name)
            if d is None:
                raise CriteriaSchemaError(
                    path=f"{path}.attribute", reason="not a declared attribute"
                )
            coerce_attribute(node, d.type, d.personal, path)
        elif isinstance(node, ActivityCondition):
            plain = ctx.plain_keys.get(node.name, frozenset())
            for i, f in enumerate(node.where):
                if f.key not in plain:
                    raise CriteriaSchemaError(
                        path=f"{path}.where[{i}].property",
                        reason="not a property declared plain for this activity "
                        "(other properties are encrypted)",
                    )


def _bounds(
    node: BehaviourCondition | ActivityCondition, at_us: int
) -> tuple[int | None, int | None, int]:
    """``(lo included, hi excluded, at included)`` in microseconds."""
    lo = hi = None
    if node.within_days is not None:
        lo = at_us - node.within_days * _DAY_US
    if node.since is not None:
        lo = to_micros(datetime.fromisoformat(node.since))
    if node.until is not None:
        hi = to_micros(datetime.fromisoformat(node.until))
    return lo, hi, at_us


def _in_window(t: int, lo: int | None, hi: int | None, at_us: int) -> bool:
    return (lo is None or t >= lo) and (hi is None or t < hi) and t <= at_us


def _local_start(day: date, zone: str) -> int:
    return to_micros(datetime.combine(day, time(), tzinfo=ZoneInfo(zone)))


def _count_value(node: BehaviourCondition | ActivityCondition) -> int:
    """The compared number: a count, revenue micros, or an instant's micros (first, last)."""
    if node.measure in {"first", "last"}:
        return to_micros(datetime.fromisoformat(str(node.value)))
    if isinstance(node, ActivityCondition) and node.measure == "revenue":
        return revenue_micros(node.value, "$")[0]
    return int(node.value)


def _timed(node: BehaviourCondition | ActivityCondition) -> bool:
    """Whether the node measures a time (``first``/``last``): contacts without rows never match."""
    return node.measure in {"first", "last"}


# ---------------------------------------------------------------------- SQL


_U = schema.contacts.alias("u")
_CID = _U.c.contact_id
# Built once: an alias's column collection costs milliseconds to set up. Each leaf's
# subquery is its own scope, so two leaves of one statement may share an alias.
_CA = schema.contact_attributes.alias("ca")
_M = schema.messages.alias("m")
_E = schema.events.alias("e")
_A = schema.activities.alias("a")
_CE = schema.consent_events.alias("ce")
_S = schema.suppressions.alias("s")
_AD = schema.addresses.alias("ad")
_S_SINCE = sa.type_coerce(_S.c.since, sa.BigInteger())
_S_LIFTED = sa.type_coerce(_S.c.lifted_at, sa.BigInteger())
_S_CONSENT_REASON = _S.c.reason.in_(sorted(r.value for r in CONSENT_REASONS))


def _sql_compare(op: str, left: Any, right: Any) -> sa.ColumnElement[bool]:
    ops: dict[str, Callable[[Any, Any], sa.ColumnElement[bool]]] = {
        "=": lambda a, b: a == b,
        "!=": lambda a, b: a != b,
        "<": lambda a, b: a < b,
        "<=": lambda a, b: a <= b,
        ">": lambda a, b: a > b,
        ">=": lambda a, b: a >= b,
    }
    return ops[op](left, right)


class _SQLCompiler:
    """Compile a checked tree into a boolean expression over ``contacts u``."""

    def __init__(self, ctx: _Context, dialect: str, strategy: str = "auto") -> None:
        self.ctx = ctx
        self.dialect = dialect
        self.at_us = to_micros(ctx.at)
        self.probes = _resolve_strategy(strategy, dialect) == "probes"

    def node(self, node: Criteria) -> sa.ColumnElement[bool]:
        if isinstance(node, AllOf):
            items = sorted(node.items, key=_probe_rank) if self.probes else node.items
            return sa.and_(sa.true(), *(self.node(i) for i in items))
        if isinstance(node, AnyOf):
            return sa.or_(sa.false(), *(self.node(i) for i in node.items))
        if isinstance(node, Not):
            return sa.not_(self.node(node.item))
        if isinstance(node, AttributeCondition):
            return self.attribute(node)
        if isinstance(node, BehaviourCondition):
            return self.behaviour(node)
        if isinstance(node, ActivityCondition):
            return self.activity(node)
        if isinstance(node, ConsentCondition):
            if self.probes:
                return self.consent_probe(node.channel, node.purpose)
            granted = self.granted(node.channel, node.purpose)
            return _CID.in_(sa.select(granted.c.contact_id))
        if isinstance(node, SuppressedCondition):
            return self.suppressed(node)
        return self.in_list(node)

    # -- attributes

    def attribute(self, node: AttributeCondition) -> sa.ColumnElement[bool]:
        d = self.ctx.definitions[node.name]
        op, typed = coerce_attribute(node, d.type, d.personal, "$")
        ca = _CA
        col: sa.ColumnElement[Any] = ca.c[_COLUMN[d.type]]
        if d.type == "datetime":
            col = sa.type_coerce(col, sa.BigInteger())
        where: list[sa.ColumnElement[bool]] = [ca.c.name == node.name, ca.c.value_type == d.type]
        if self.ctx.current:
            where.append(ca.c.valid_to.is_(None))
        else:
            t = sa.type_coerce(sa.literal(self.at_us), sa.BigInteger())
            vf = sa.type_coerce(ca.c.valid_from, sa.BigInteger())
            vt = sa.type_coerce(ca.c.valid_to, sa.BigInteger())
            where += [vf <= t, sa.or_(vt.is_(None), vt > t)]
        rows = sa.select(ca.c.contact_id).where(*where)
        if op == "is not set":
            return _CID.not_in(rows)
        if op != "is set":
            rows = rows.where(self.value_condition(node, d.type, op, typed, col))
        return _CID.in_(rows)

    def value_condition(
        self, node: AttributeCondition, kind: str, op: str, typed: Any, col: sa.ColumnElement[Any]
    ) -> sa.ColumnElement[bool]:
        if node.of == "days until anniversary":
            today = today_in(node.zone, self.ctx.at)
            return sa.func.substr(col, 6, 5).in_(anniversary_days(op, typed, today))
        if node.of in {"days ago", "days until"}:
            op, days = day_window(op, typed, node.of, today_in(node.zone, self.ctx.at))
            if kind == "date":
                typed = (
                    tuple(d.isoformat() for d in days)
                    if isinstance(days, tuple)
                    else days.isoformat()
                )
            else:
                return self.local_days(col, op, days, node.zone)
        elif kind == "datetime":
            typed = (
                tuple(to_micros(t) for t in typed)
                if isinstance(typed, tuple)
                else (to_micros(typed))
            )
        if op == "contains":
            if kind == "list":
                return self.list_contains(col, typed)
            found: sa.ColumnElement[int] = (
                sa.func.instr(col, typed)
                if self.dialect == "sqlite"
                else sa.func.strpos(col, typed)
            )
            return found > 0
        if op == "starts with":
            head: sa.ColumnElement[str] = sa.func.substr(col, 1, len(typed))
            return sa.and_(head == typed)
        if op == "in":
            return col.in_(list(typed))
        if op == "not in":
            return col.not_in(list(typed))
        if op == "between":
            return col.between(typed[0], typed[1])
        return _sql_compare(op, col, typed)

    def local_days(
        self, col: sa.ColumnElement[Any], op: str, days: Any, zone: str
    ) -> sa.ColumnElement[bool]:
        def on(day: date) -> sa.ColumnElement[bool]:
            return sa.and_(col >= _local_start(day, zone), col < _local_start(day + _ONE, zone))

        if op == "=":
            return on(days)
        if op == "!=":
            return sa.not_(on(days))
        if op == "<":
            return col < _local_start(days, zone)
        if op == "<=":
            return col < _local_start(days + _ONE, zone)
        if op == ">":
            return col >= _local_start(days + _ONE, zone)
        if op == ">=":
            return col >= _local_start(days, zone)
        if op == "in":
            return sa.or_(sa.false(), *(on(d) for d in days))
        if op == "not in":
            return sa.and_(sa.true(), *(sa.not_(on(d)) for d in days))
        lo, hi = days
        return sa.and_(col >= _local_start(lo, zone), col < _local_start(hi + _ONE, zone))

    def list_contains(self, col: sa.ColumnElement[Any], element: str) -> sa.ColumnElement[bool]:
        if self.dialect == "postgresql":
            return sa.func.jsonb_exists(sa.cast(col, pg.JSONB), element)
        each = sa.func.json_each(col).table_valued("value")
        return sa.exists(sa.select(sa.literal(1)).select_from(each).where(each.c.value == element))

    # -- counts

    def counted(
        self,
        rows: sa.Select[Any],
        contact: Any,
        measure: Any,
        op: str,
        value: int,
        *,
        plain: bool,
        timed: bool = False,
    ) -> sa.ColumnElement[bool]:
        """Leaf for ``measure(rows of a contact) op value``; contacts without rows measure 0.

        With *timed* (a first or last time), contacts without rows never match.
        """
        zero = False if timed else compare(op, 0, value)
        once = plain and not zero and ((op == ">=" and value == 1) or (op == ">" and value == 0))
        never = plain and zero and (op, value) in {("=", 0), ("<=", 0), ("<", 1)}
        if self.probes:
            # A correlated probe of this contact's rows (*rows* is restricted to it).
            probe = rows.where(contact == _CID)
            if once:
                return sa.exists(probe)
            if never:
                return ~sa.exists(probe)
            # An aggregate over no rows: count 0, revenue 0 (coalesced), first/last NULL,
            # and a NULL comparison is false (so that ``not`` keeps such contacts).
            measured = probe.with_only_columns(measure).scalar_subquery()
            return sa.func.coalesce(_sql_compare(op, measured, value), sa.false(),
                                    type_=sa.Boolean())  # fmt: skip
        if once:
            return _CID.in_(rows)  # at least once
        if never:
            return _CID.not_in(rows)  # never
        having = _sql_compare(op, measure, value)
        grouped = rows.group_by(contact)
        if zero:
            return _CID.not_in(grouped.having(sa.not_(having)))
        return _CID.in_(grouped.having(having))

    def behaviour(self, node: BehaviourCondition) -> sa.ColumnElement[bool]:
        m = _M
        lo, hi, at_us = _bounds(node, self.at_us)
        where: list[sa.ColumnElement[bool]] = [m.c.direction == "outbound"]
        if node.campaign is not None:
            where.append(m.c.campaign_id == node.campaign)
        if node.channel is not None:
            where.append(m.c.channel == node.channel)
        contact: Any = m.c.contact_id
        if node.behaviour in {"sent", "received"}:
            mask = _NOT_SENT if node.behaviour == "sent" else _NOT_RECEIVED
            t = sa.type_coerce(m.c.sent_at, sa.BigInteger())
            where += [m.c.outcomes.op("&")(mask) == 0, *_window_sql(t, lo, hi, at_us)]
            rows = sa.select(m.c.contact_id).where(*where)
            measure: Any = sa.func.count()
        else:
            e = _E
            types = [ty.value for ty in _REACTIONS[node.behaviour]]
            t = sa.type_coerce(e.c.occurred_at, sa.BigInteger())
            where += [e.c.type.in_(types), *_window_sql(t, lo, hi, at_us)]
            if not node.include_machine and node.behaviour != "bounced":
                where.append(e.c.machine == sa.false())
            rows = (
                sa.select(m.c.contact_id)
                .select_from(e.join(m, m.c.message_id == e.c.message_id))
                .where(*where)
            )
            measure = sa.func.count(sa.distinct(e.c.message_id))
            if self.probes:
                # A linked event carries its message's contact (ingest sets both
                # together; an orphan has none and counts for nobody): the probe
                # reads the contact's events by the (contact_id, occurred_at) index.
                contact = e.c.contact_id
        if node.measure == "first":
            measure = sa.func.min(t)
        elif node.measure == "last":
            measure = sa.func.max(t)
        return self.counted(
            rows,
            contact,
            measure,
            node.op,
            _count_value(node),
            plain=node.measure == "count",
            timed=_timed(node),
        )

    def activity(self, node: ActivityCondition) -> sa.ColumnElement[bool]:
        a = _A
        lo, hi, at_us = _bounds(node, self.at_us)
        t = sa.type_coerce(a.c.occurred_at, sa.BigInteger())
        where = [a.c.name == node.name, *_window_sql(t, lo, hi, at_us)]
        where += [self.property(a.c.plain_properties, f) for f in node.where]
        if node.measure == "revenue":
            if node.currency is not None:
                where.append(a.c.currency == node.currency)
            measure: Any = sa.func.coalesce(sa.func.sum(a.c.revenue_micros), 0)
        else:
            measure = sa.func.count()
        if node.measure == "first":
            measure = sa.func.min(t)
        elif node.measure == "last":
            measure = sa.func.max(t)
        rows = sa.select(a.c.contact_id).where(*where)
        return self.counted(
            rows,
            a.c.contact_id,
            measure,
            node.op,
            _count_value(node),
            plain=node.measure == "count",
            timed=_timed(node),
        )

    def property(self, col: Any, f: PropertyFilter) -> sa.ColumnElement[bool]:
        if self.dialect == "postgresql":
            doc = sa.cast(col, pg.JSONB)
            jtype: sa.ColumnElement[Any] = sa.func.jsonb_typeof(doc.op("->")(f.key))
            text: sa.ColumnElement[Any] = doc.op("->>")(f.key)
            names = {str: "string", int: "number", bool: "boolean"}
        else:
            path = f'$."{f.key}"'
            jtype = sa.func.json_type(col, path)
            text = sa.func.json_extract(col, path)
            names = {str: "text", int: "integer", bool: "true"}
        is_set = sa.and_(jtype.is_not(None), jtype != "null")

        def equal(v: Any) -> sa.ColumnElement[bool]:
            if isinstance(v, bool):
                if self.dialect == "postgresql":
                    return sa.and_(jtype == "boolean", text == ("true" if v else "false"))
                return jtype == ("true" if v else "false")
            if self.dialect == "postgresql":
                return sa.and_(jtype == names[type(v)], text == str(v))
            return sa.and_(jtype == names[type(v)], text == v)

        if f.op == "is set":
            return is_set
        if f.op == "is not set":
            return sa.not_(is_set)
        if f.op == "=":
            return equal(f.value)
        if f.op == "!=":
            return sa.and_(is_set, sa.not_(equal(f.value)))
        values = f.value if isinstance(f.value, tuple) else ()
        hit = sa.or_(sa.false(), *(equal(v) for v in values))
        return hit if f.op == "in" else sa.and_(is_set, sa.not_(hit))

    # -- consent and suppression

    def granted(self, channel: str, purpose: str) -> sa.Subquery:
        """Contacts whose latest ledger event up to ``at`` is a grant, with its time ``g``."""
        c = _CE
        t = sa.type_coerce(c.c.occurred_at, sa.BigInteger())
        grant = sa.func.max(sa.case((c.c.action == ConsentAction.GRANT.value, t)))
        withdraw = sa.func.max(sa.case((c.c.action == ConsentAction.WITHDRAW.value, t)))
        return (
            sa.select(c.c.contact_id, grant.label("g"))
            .where(c.c.channel == channel, c.c.purpose == purpose, t <= self.at_us)
            .group_by(c.c.contact_id)
            .having(sa.or_(withdraw.is_(None), grant > withdraw))
            .having(grant.is_not(None))
            .subquery()
        )

    def consent_probe(self, channel: str, purpose: str) -> sa.ColumnElement[bool]:
        """The contact's latest grant or withdrawal up to ``at`` is a grant (a probe).

        One backward step on the covering index ``(channel, purpose, contact_id,
        occurred_at, action)``: the latest event, a withdrawal first on a tie
        (``'withdraw' > 'grant'``), so it is a grant exactly when the latest grant
        is later than every withdrawal, the rule of :meth:`granted`.
        """
        c = _CE
        t = sa.type_coerce(c.c.occurred_at, sa.BigInteger())
        actions = (ConsentAction.GRANT.value, ConsentAction.WITHDRAW.value)
        latest = (
            sa.select(c.c.action)
            .where(
                c.c.channel == channel,
                c.c.purpose == purpose,
                c.c.contact_id == _CID,
                t <= self.at_us,
                c.c.action.in_(actions),
            )
            .order_by(c.c.occurred_at.desc(), c.c.action.desc())
            .limit(1)
            .scalar_subquery()
        )
        # No ledger event: NULL, which must read as false (also under ``not``).
        return sa.func.coalesce(latest == ConsentAction.GRANT.value, sa.false(),
                                type_=sa.Boolean())  # fmt: skip

    def suppressed(self, node: SuppressedCondition) -> sa.ColumnElement[bool]:
        kind = ADDRESS_KINDS.get(Channel(node.channel))
        if kind is None:
            return sa.false()
        if self.probes:
            return self.suppressed_probed(node, kind)
        g = self.granted(node.channel, node.purpose)
        overridden = sa.and_(_S_CONSENT_REASON, g.c.g.is_not(None), g.c.g > _S_SINCE)
        return _CID.in_(
            self.suppressed_ids(kind, node.channel, node.purpose, overridden, granted=g)
        )

    def suppressed_probed(self, node: SuppressedCondition, kind: str) -> sa.ColumnElement[bool]:
        """:meth:`suppressed` as a set of the few contacts under an entry in force.

        The opt-out override reads, for those contacts only, the latest ledger
        event (one step on the ledger's covering index, correlated to the
        suppression row), instead of grouping the channel's whole ledger: the
        entry yields when that event is a grant later than the entry's start
        (the latest event is a grant exactly when the contact is granted, and
        its time is then the latest grant's).
        """
        ad, c = _AD, _CE
        t = sa.type_coerce(c.c.occurred_at, sa.BigInteger())
        regranted = (
            sa.select(sa.and_(c.c.action == ConsentAction.GRANT.value, t > _S_SINCE))
            .where(
                c.c.channel == node.channel,
                c.c.purpose == node.purpose,
                c.c.contact_id == ad.c.contact_id,
                t <= self.at_us,
                c.c.action.in_((ConsentAction.GRANT.value, ConsentAction.WITHDRAW.value)),
            )
            .order_by(c.c.occurred_at.desc(), c.c.action.desc())
            .limit(1)
            .scalar_subquery()
        )
        overridden = sa.and_(
            _S_CONSENT_REASON, sa.func.coalesce(regranted, sa.false(), type_=sa.Boolean())
        )
        return _CID.in_(self.suppressed_ids(kind, node.channel, node.purpose, overridden))

    def suppressed_ids(
        self,
        kind: str,
        channel: str,
        purpose: str,
        overridden: sa.ColumnElement[bool],
        *,
        granted: sa.Subquery | None = None,
    ) -> sa.Select[Any]:
        """The contacts under a suppression entry of *channel* and *purpose* in force at ``at``.

        An entry counts unless *overridden* (an opt-out yields to a later grant in
        force; each caller reads the ledger its own way, over the columns of
        ``_S``, ``_AD`` and, when given, *granted* outer-joined by contact).
        """
        s, ad, since, lifted = _S, _AD, _S_SINCE, _S_LIFTED
        source = s.join(ad, sa.and_(ad.c.kind == s.c.kind, ad.c.blind_index == s.c.blind_index))
        if granted is not None:
            source = source.outerjoin(granted, granted.c.contact_id == ad.c.contact_id)
        return (
            sa.select(ad.c.contact_id)
            .select_from(source)
            .where(
                s.c.kind == kind,
                s.c.channel == channel,
                since <= self.at_us,
                sa.or_(lifted.is_(None), lifted > self.at_us),
                sa.or_(s.c.purpose.is_(None), s.c.purpose == purpose),
                sa.not_(overridden),
            )
        )

    def screen(
        self, channel: Channel, purpose: Purpose, *, implied: frozenset[str] = frozenset()
    ) -> sa.Select[Any]:
        """``SELECT u.contact_id, refusal FROM contacts u ...``: the send screen per contact.

        ``refusal`` is the first of ``erased``, ``suppressed``, ``no_consent``
        (the rules of ``commhistory.consent.screen``) and ``missing_address``
        (no address of the channel's kind; channels without one skip it) that
        refuses, else ``NULL``. Each check is one uncorrelated set probed per
        row (the ledger grouped per contact from its covering index, the
        contacts with an address); the opt-out override reads the latest grant
        and withdrawal of the few contacts under a suppression. Checks named in
        *implied* are known to pass for every row the caller keeps (its segment
        holds them): they are left out.
        """
        t = self.at_us
        erased_at = sa.type_coerce(_U.c.erased_at, sa.BigInteger())
        kind = ADDRESS_KINDS.get(channel)
        whens: list[tuple[sa.ColumnElement[bool], str]] = []
        if "erased" not in implied:
            whens.append((sa.and_(erased_at.is_not(None), erased_at <= t), "erased"))
        if kind is not None and "suppressed" not in implied:
            # The contact's latest grant and withdrawal, probed per suppression row
            # in force (few) through the ledger's (channel, purpose, contact_id) index.
            gt, wt = (self.latest(channel, purpose, action, _AD.c.contact_id) for action in
                      (ConsentAction.GRANT, ConsentAction.WITHDRAW))  # fmt: skip
            overridden = sa.and_(
                _S_CONSENT_REASON,
                gt.is_not(None),
                sa.or_(wt.is_(None), gt > wt),
                gt > _S_SINCE,
            )
            rows = self.suppressed_ids(kind, channel.value, purpose.value, overridden)
            whens.append((_CID.in_(rows), "suppressed"))
        if "no_consent" not in implied:
            if purpose is Purpose.MARKETING:
                granted = self.granted(channel.value, purpose.value)
                refused = _CID.not_in(sa.select(granted.c.contact_id))
            else:  # the latest event is a withdrawal (it wins a tie)
                withdrawn = self.withdrawn(channel.value, purpose.value)
                refused = _CID.in_(sa.select(withdrawn.c.contact_id))
            whens.append((refused, "no_consent"))
        if kind is not None:
            ad = _AD
            if self.probes:
                # Probes: one search of the (contact_id) index per member screened
                # (SQLite picks it: the correlated column leads it), instead of a
                # set of every contact with an address built first.
                addressed = sa.exists().where(ad.c.contact_id == _CID, ad.c.kind == kind)
                whens.append((~addressed, "missing_address"))
            else:
                # Sets: the contacts with an address, built once and probed per row.
                addressed_ids = sa.select(ad.c.contact_id).where(ad.c.kind == kind)
                whens.append((_CID.not_in(addressed_ids), "missing_address"))
        reason: sa.ColumnElement[Any] = sa.case(*whens, else_=sa.null()) if whens else sa.null()
        return sa.select(_CID, reason.label("reason")).select_from(_U)

    def latest(
        self, channel: Channel, purpose: Purpose, action: ConsentAction, contact: Any
    ) -> sa.ScalarSelect[Any]:
        """The time of *contact*'s latest ledger event of *action* up to ``at`` (or ``NULL``)."""
        c = schema.consent_events.alias("cl")
        t = sa.type_coerce(c.c.occurred_at, sa.BigInteger())
        return (
            sa.select(sa.func.max(t))
            .where(
                c.c.channel == channel.value,
                c.c.purpose == purpose.value,
                c.c.contact_id == contact,
                c.c.action == action.value,
                t <= self.at_us,
            )
            .scalar_subquery()
        )

    def withdrawn(self, channel: str, purpose: str) -> sa.Subquery:
        """Contacts whose latest ledger event up to ``at`` is a withdrawal (it wins a tie)."""
        c = _CE
        t = sa.type_coerce(c.c.occurred_at, sa.BigInteger())
        grant = sa.func.max(sa.case((c.c.action == ConsentAction.GRANT.value, t)))
        withdraw = sa.func.max(sa.case((c.c.action == ConsentAction.WITHDRAW.value, t)))
        return (
            sa.select(c.c.contact_id)
            .where(c.c.channel == channel, c.c.purpose == purpose, t <= self.at_us)
            .group_by(c.c.contact_id)
            .having(withdraw.is_not(None))
            .having(sa.or_(grant.is_(None), withdraw >= grant))
            .subquery()
        )

    def in_list(self, node: InList) -> sa.ColumnElement[bool]:
        ids = list(node.contact_ids)
        if not ids:
            return sa.false()
        if self.dialect == "postgresql":
            return sa.any_(sa.bindparam(None, ids, type_=pg.ARRAY(sa.Text()))) == _CID
        each = sa.func.json_each(json.dumps(ids)).table_valued("value")
        return _CID.in_(sa.select(each.c.value))


_ONE: Final = timedelta(days=1)

STRATEGIES: Final = ("auto", "sets", "probes")
"""How :class:`SQLSegmentStore` compiles conditions (its ``strategy`` argument and attribute)."""


def _resolve_strategy(strategy: str, dialect: str) -> str:
    if strategy not in STRATEGIES:
        raise InvalidInputError(field="strategy", reason=f"must be one of {list(STRATEGIES)}")
    if strategy == "auto":
        return "probes" if dialect == "sqlite" else "sets"
    return strategy


def _probe_rank(node: Criteria) -> int:
    """Evaluation order within an ``all`` under the probes strategy (stable, by kind).

    Sets first (attributes, lists, suppression: built once, they cut the contacts
    the probes visit), then the probes from the cheapest per contact: activities
    (one index range), consent (one index step), sent/received (the contact's
    messages), reactions (the contact's events, each joined to its message), and
    groups last. Reordering the items of an ``all`` does not change its result.
    """
    if isinstance(node, Not):
        return _probe_rank(node.item)
    if isinstance(node, AttributeCondition | InList | SuppressedCondition):
        return 0
    if isinstance(node, ActivityCondition):
        return 1
    if isinstance(node, ConsentCondition):
        return 2
    if isinstance(node, BehaviourCondition):
        return 3 if node.behaviour in {"sent", "received"} else 4
    return 5


def _window_sql(t: Any, lo: int | None, hi: int | None, at_us: int) -> list[Any]:
    out = [t <= at_us]
    if lo is not None:
        out.append(t >= lo)
    if hi is not None:
        out.append(t < hi)
    return out


def _implied_checks(tree: Criteria, channel: Channel, purpose: Purpose) -> frozenset[str]:
    """The send-screen checks every member of *tree* passes by the tree's own conditions.

    Erasure always (the universe leaves erased contacts out); ``no_consent``
    when a top-level conjunct is ``consent(channel, purpose)`` (a grant is the
    latest event, so neither "no grant" nor "withdrawn" holds); ``suppressed``
    when one is ``not suppressed(channel, purpose)`` (the same rule as the screen).
    """
    out = {"erased"}
    todo: list[Criteria] = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, AllOf):
            todo.extend(node.items)
        elif isinstance(node, ConsentCondition):
            if node.channel == channel.value and node.purpose == purpose.value:
                out.add("no_consent")
        elif isinstance(node, Not) and isinstance(node.item, SuppressedCondition):
            item = node.item
            if item.channel == channel.value and item.purpose == purpose.value:
                out.add("suppressed")
    return frozenset(out)


def _explain(
    tree: Criteria,
    count: Callable[[Criteria], int],
) -> ExplainNode:
    def visit(node: Criteria, path: str, context: tuple[Criteria, ...]) -> ExplainNode:
        kept = count(node)
        cumulative = count(AllOf(items=(*context, node)))
        children: list[ExplainNode] = []
        if isinstance(node, AllOf):
            for i, item in enumerate(node.items):
                children.append(visit(item, f"{path}.all[{i}]", (*context, *node.items[:i])))
        elif isinstance(node, AnyOf):
            for i, item in enumerate(node.items):
                earlier = AnyOf(items=node.items[: i + 1])
                child = visit(item, f"{path}.any[{i}]", context)
                children.append(
                    attrs.evolve(child, cumulative=count(AllOf(items=(*context, earlier))))
                )
        elif isinstance(node, Not):
            children.append(visit(node.item, f"{path}.not", context))
        return ExplainNode(
            path=path, label=node.describe(), kept=kept, cumulative=cumulative,
            children=tuple(children),
        )  # fmt: skip

    return visit(tree, "$", ())


class SQLSegmentStore(SegmentStore):
    """:class:`SegmentStore` over :class:`~commhistory.store.sql.SQLRepository`.

    Args:
        repo: The repository.
        strategy: How conditions compile: ``"sets"`` (each leaf an uncorrelated
            set probed per contact), ``"probes"`` (message behaviour, activity
            and consent leaves as correlated probes of one contact's rows
            through their indexes, the items of an ``all`` ordered sets first,
            then the cheapest probes) or ``"auto"`` (the default: probes on
            SQLite, sets on PostgreSQL). All give the same members.

    Raises:
        InvalidInputError: Another *strategy* (also when the attribute is set to one).

    .. versionchanged:: 0.4.0
       The ``strategy`` argument and attribute.
    """

    def __init__(self, repo: SQLRepository, strategy: str = "auto") -> None:
        _resolve_strategy(strategy, repo.dialect)
        self.repo = repo
        self.strategy = strategy

    def _context(self, conn: sa.Connection, tree: Criteria, at: datetime | None) -> _Context:
        moment, current = _resolve_at(at)
        names = {n.name for _p, n in walk(tree) if isinstance(n, AttributeCondition)}
        definitions: dict[str, StoredDefinition] = {}
        if names:
            d = schema.attribute_definitions
            for name, kind, personal in conn.execute(
                sa.select(d.c.name, d.c.type, d.c.personal).where(d.c.name.in_(sorted(names)))
            ):
                definitions[name] = StoredDefinition(name=name, type=kind, personal=bool(personal))
        plain: dict[str, frozenset[str]] = {}
        acts = {n.name for _p, n in walk(tree) if isinstance(n, ActivityCondition) and n.where}
        if acts:
            an = schema.activity_names
            for name, keys in conn.execute(
                sa.select(an.c.name, an.c.plain_keys).where(an.c.name.in_(sorted(acts)))
            ):
                plain[name] = frozenset(json.loads(keys))
        ctx = _Context(moment, current, definitions, plain)
        _check(tree, ctx)
        return ctx

    def _where(self, ctx: _Context, tree: Criteria) -> sa.ColumnElement[bool]:
        compiler = _SQLCompiler(ctx, self.repo.dialect, self.strategy)
        return sa.and_(_U.c.erased_at.is_(None), compiler.node(tree))

    def count(self, tree: Criteria, *, at: datetime | None = None) -> int:
        """See :meth:`SegmentStore.count`."""
        with self.repo.transaction(read=True) as conn:
            ctx = self._context(conn, tree, at)
            stmt = sa.select(sa.func.count()).select_from(_U).where(self._where(ctx, tree))
            return int(conn.execute(stmt).scalar_one())

    def members(self, tree: Criteria, *, at: datetime | None = None) -> list[str]:
        """See :meth:`SegmentStore.members`."""
        with self.repo.transaction(read=True) as conn:
            ctx = self._context(conn, tree, at)
            stmt = sa.select(_CID).where(self._where(ctx, tree)).order_by(_CID)
            return [r[0] for r in conn.execute(stmt)]

    def statement(self, tree: Criteria, *, at: datetime | None = None) -> sa.Select[Any]:
        """Return the members query (for benchmarks and ``EXPLAIN``); checks the tree."""
        with self.repo.transaction(read=True) as conn:
            ctx = self._context(conn, tree, at)
        return sa.select(_CID).where(self._where(ctx, tree)).order_by(_CID)

    def screened_members(
        self, tree: Criteria, *, at: datetime, channel: Channel, purpose: Purpose
    ) -> list[tuple[str, str | None]]:
        """Return the members at *at*, sorted, each with its send-screen refusal or ``None``.

        One statement: the tree's members and, per member, the first of
        ``erased``, ``suppressed``, ``no_consent`` and ``missing_address`` that
        refuses a send on *channel* for *purpose* (the rules of
        ``commhistory.consent.screen``, compiled into the statement). A
        check the tree itself implies for every member (a top-level
        ``consent(channel, purpose)`` or ``not suppressed(channel, purpose)``;
        erasure, outside the universe) is not repeated.

        .. versionadded:: 0.4.0
        """
        with self.repo.transaction(read=True) as conn:
            ctx = self._context(conn, tree, at)
            compiler = _SQLCompiler(ctx, self.repo.dialect, self.strategy)
            implied = _implied_checks(tree, channel, purpose)
            stmt = (
                compiler.screen(channel, purpose, implied=implied)
                .where(_U.c.erased_at.is_(None), compiler.node(tree))
                .order_by(_CID)
            )
            return _raw_rows(conn, stmt)

    def screen_statement(
        self, *, at: datetime, channel: Channel, purpose: Purpose
    ) -> sa.Select[Any]:
        """``(contact_id, refusal or NULL)`` for every contact of the store (see above)."""
        ctx = _Context(at.astimezone(UTC), False, {}, {})
        return _SQLCompiler(ctx, self.repo.dialect).screen(channel, purpose)

    def explain(self, tree: Criteria, *, at: datetime | None = None) -> ExplainNode:
        """See :meth:`SegmentStore.explain`."""
        with self.repo.transaction(read=True) as conn:
            ctx = self._context(conn, tree, at)

            def count(node: Criteria) -> int:
                stmt = sa.select(sa.func.count()).select_from(_U).where(self._where(ctx, node))
                return int(conn.execute(stmt).scalar_one())

            return _explain(tree, count)

    # -- saved segments

    def save_definition(self, name: str, definition: str) -> SavedSegment:
        """See :meth:`SegmentStore.save_definition`."""
        t = schema.segment_definitions
        with self.repo.transaction() as conn:
            last = conn.execute(
                sa.select(t.c.version, t.c.definition, t.c.saved_at)
                .where(t.c.name == name)
                .order_by(t.c.version.desc())
                .limit(1)
            ).first()
            if last is not None and last[1] == definition:
                return SavedSegment(
                    name=name, version=last[0], definition=last[1], saved_at=last[2]
                )
            version = 1 if last is None else int(last[0]) + 1
            now = datetime.now(UTC)
            conn.execute(
                t.insert().values(name=name, version=version, definition=definition, saved_at=now)
            )
        return SavedSegment(
            name=name, version=version, definition=definition, saved_at=_trunc(now)
        )

    def definitions(self, name: str | None = None) -> list[SavedSegment]:
        """See :meth:`SegmentStore.definitions`."""
        t = schema.segment_definitions
        stmt = sa.select(t.c.name, t.c.version, t.c.definition, t.c.saved_at).order_by(
            t.c.name, t.c.version
        )
        if name is not None:
            stmt = stmt.where(t.c.name == name)
        with self.repo.transaction(read=True) as conn:
            return [
                SavedSegment(name=r[0], version=int(r[1]), definition=r[2], saved_at=r[3])
                for r in conn.execute(stmt)
            ]

    def save_snapshot(
        self, name: str, version: int, at: datetime, contact_ids: Sequence[str]
    ) -> SnapshotInfo:
        """See :meth:`SegmentStore.save_snapshot`."""
        sid = secrets.token_hex(16)
        now = datetime.now(UTC)
        ids = sorted(set(contact_ids))
        with self.repo.transaction() as conn:
            conn.execute(
                schema.segment_snapshots.insert().values(
                    snapshot_id=sid, name=name, version=version, at=at, taken_at=now
                )
            )
            if ids:
                self.repo.backend.insert(
                    conn,
                    schema.segment_snapshot_members,
                    ("snapshot_id", "contact_id"),
                    [(sid, cid) for cid in ids],
                )
        return SnapshotInfo(
            snapshot_id=sid, name=name, version=version, at=_trunc(at), taken_at=_trunc(now),
            size=len(ids),
        )  # fmt: skip

    def snapshots(self, name: str) -> list[SnapshotInfo]:
        """See :meth:`SegmentStore.snapshots`."""
        s, sm = schema.segment_snapshots, schema.segment_snapshot_members
        size = (
            sa.select(sa.func.count()).where(sm.c.snapshot_id == s.c.snapshot_id).scalar_subquery()
        )
        stmt = (
            sa.select(s.c.snapshot_id, s.c.name, s.c.version, s.c.at, s.c.taken_at, size)
            .where(s.c.name == name)
            .order_by(s.c.taken_at, s.c.snapshot_id)
        )
        with self.repo.transaction(read=True) as conn:
            return [
                SnapshotInfo(
                    snapshot_id=r[0],
                    name=r[1],
                    version=int(r[2]),
                    at=r[3],
                    taken_at=r[4],
                    size=int(r[5]),
                )
                for r in conn.execute(stmt)
            ]

    def snapshot_members(self, snapshot_id: str) -> list[str]:
        """See :meth:`SegmentStore.snapshot_members`."""
        s, sm = schema.segment_snapshots, schema.segment_snapshot_members
        with self.repo.transaction(read=True) as conn:
            found = conn.execute(
                sa.select(s.c.snapshot_id).where(s.c.snapshot_id == snapshot_id)
            ).first()
            if found is None:
                raise NotFoundError(kind="snapshot", identifier=snapshot_id)
            return [
                r[0]
                for r in conn.execute(
                    sa.select(sm.c.contact_id)
                    .where(sm.c.snapshot_id == snapshot_id)
                    .order_by(sm.c.contact_id)
                )
            ]

    def forget_contact(self, contact_id: str) -> int:
        """See :meth:`SegmentStore.forget_contact`."""
        sm = schema.segment_snapshot_members
        with self.repo.transaction() as conn:
            return int(conn.execute(sm.delete().where(sm.c.contact_id == contact_id)).rowcount)


def _raw_rows(conn: sa.Connection, statement: sa.Select[Any]) -> list[tuple[str, Any]]:
    """Run *statement* on the driver's cursor: plain tuples, no result rows built."""
    compiled = statement.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    params: Any = compiled.params
    if compiled.positional:
        params = tuple(compiled.params[name] for name in compiled.positiontup or ())
    cursor: Any = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(str(compiled), params)
        rows: list[tuple[str, Any]] = cursor.fetchall()
    finally:
        cursor.close()
    return rows


def _trunc(moment: datetime) -> datetime:
    """*moment* at the store's precision (microseconds, UTC)."""
    return from_micros(to_micros(moment))


# ---------------------------------------------------------------------- memory


class _MemoryEvaluator:
    """Evaluate a checked tree over the memory state, with the SQL compiler's rules."""

    def __init__(self, s: MemoryState, ctx: _Context) -> None:
        self.s = s
        self.ctx = ctx
        self.at_us = to_micros(ctx.at)
        self.universe = frozenset(s.contacts - s.erased.keys())
        self._outcomes: dict[str, set[str]] | None = None

    def node(self, node: Criteria) -> frozenset[str]:
        if isinstance(node, AllOf):
            out = self.universe
            for item in node.items:
                out = out & self.node(item)
            return out
        if isinstance(node, AnyOf):
            acc: frozenset[str] = frozenset()
            for item in node.items:
                acc = acc | self.node(item)
            return acc
        if isinstance(node, Not):
            return self.universe - self.node(node.item)
        if isinstance(node, AttributeCondition):
            return self.universe & self.attribute(node)
        if isinstance(node, BehaviourCondition | ActivityCondition):
            found = (
                self.behaviour(node)
                if isinstance(node, BehaviourCondition)
                else (self.activity(node))
            )
            return self.counted(found, node.op, _count_value(node), timed=_timed(node))
        if isinstance(node, ConsentCondition):
            return self.universe & set(self.granted(node.channel, node.purpose))
        if isinstance(node, SuppressedCondition):
            return self.universe & self.suppressed(node)
        return self.universe & set(node.contact_ids)

    def counted(
        self, measures: Mapping[str, int], op: str, value: int, *, timed: bool
    ) -> frozenset[str]:
        if timed:
            return frozenset(
                c for c in self.universe if c in measures and compare(op, measures[c], value)
            )
        return frozenset(c for c in self.universe if compare(op, measures.get(c, 0), value))

    # -- attributes

    def attribute(self, node: AttributeCondition) -> set[str]:
        d = self.ctx.definitions[node.name]
        op, typed = coerce_attribute(node, d.type, d.personal, "$")
        out = set()
        for (cid, name), rows in self.s.attributes.items():
            if name != node.name:
                continue
            for frm, to, v in rows:
                if self.ctx.current:
                    if to is not None:
                        continue
                elif not (frm <= self.at_us and (to is None or to > self.at_us)):
                    continue
                if v.type != d.type or v.personal:
                    continue
                if op in {"is set", "is not set"} or self.matches(
                    node, d.type, op, typed, v.value
                ):
                    out.add(cid)
        if op == "is not set":
            return set(self.universe) - out
        return out

    def matches(
        self, node: AttributeCondition, kind: str, op: str, typed: Any, value: Any
    ) -> bool:
        if node.of == "days until anniversary":
            today = today_in(node.zone, self.ctx.at)
            return value.strftime("%m-%d") in anniversary_days(op, typed, today)
        if node.of in {"days ago", "days until"}:
            op, typed = day_window(op, typed, node.of, today_in(node.zone, self.ctx.at))
            value = value if kind == "date" else value.astimezone(ZoneInfo(node.zone)).date()
            return compare(op, value, typed)
        if kind == "decimal":
            value = int(value.scaleb(DECIMAL_PLACES))
        elif kind == "date":
            value = value.isoformat()
        if op == "contains":
            return typed in value
        if op == "starts with":
            return bool(value.startswith(typed))
        return compare(op, value, typed)

    # -- behaviour

    def bad_messages(self) -> dict[str, set[str]]:
        if self._outcomes is None:
            out: dict[str, set[str]] = {}
            for eid, e in self.s.events.items():
                if self.s.event_contact.get(eid) is not None and e.message_id is not None:
                    out.setdefault(e.message_id, set()).add(e.type.value)
            self._outcomes = out
        return self._outcomes

    def behaviour(self, node: BehaviourCondition) -> dict[str, int]:
        lo, hi, at_us = _bounds(node, self.at_us)
        s = self.s

        def wanted(mid: str) -> bool:
            m = s.messages[mid]
            return (
                m.direction.value == "outbound"
                and (node.campaign is None or m.campaign_id == node.campaign)
                and (node.channel is None or m.channel.value == node.channel)
            )

        counted: dict[str, set[str]] = {}
        times: dict[str, list[int]] = {}
        if node.behaviour in {"sent", "received"}:
            bad = {"rejected"} if node.behaviour == "sent" else {"rejected", "bounced", "failed"}
            kinds = self.bad_messages()
            for mid, m in s.messages.items():
                if not wanted(mid) or kinds.get(mid, set()) & bad:
                    continue
                t = to_micros(m.sent_at)
                if _in_window(t, lo, hi, at_us):
                    counted.setdefault(m.contact_id, set()).add(mid)
                    times.setdefault(m.contact_id, []).append(t)
        else:
            types = _REACTIONS[node.behaviour]
            human = not node.include_machine and node.behaviour != "bounced"
            for eid, e in s.events.items():
                if s.event_contact.get(eid) is None or e.message_id is None:
                    continue
                if e.type not in types or (human and e.machine) or not wanted(e.message_id):
                    continue
                t = to_micros(e.occurred_at)
                if _in_window(t, lo, hi, at_us):
                    cid = s.messages[e.message_id].contact_id
                    counted.setdefault(cid, set()).add(e.message_id)
                    times.setdefault(cid, []).append(t)
        if node.measure == "first":
            return {cid: min(ts) for cid, ts in times.items()}
        if node.measure == "last":
            return {cid: max(ts) for cid, ts in times.items()}
        return {cid: len(mids) for cid, mids in counted.items()}

    # -- activities

    def activity(self, node: ActivityCondition) -> dict[str, int]:
        lo, hi, at_us = _bounds(node, self.at_us)
        plain = self.s.activity_names.get(node.name, frozenset())
        out: dict[str, int] = {}
        for a in self.s.activities.values():
            if a.name != node.name or not _in_window(to_micros(a.occurred_at), lo, hi, at_us):
                continue
            props = {k: v for k, v in a.properties.items() if k in plain}
            if not all(_property_matches(props, f) for f in node.where):
                continue
            t = to_micros(a.occurred_at)
            if node.measure == "revenue":
                if node.currency is not None and a.currency != node.currency:
                    continue
                amount = 0 if a.revenue is None else int(Decimal(a.revenue).scaleb(6))
                out[a.contact_id] = out.get(a.contact_id, 0) + amount
            elif node.measure == "first":
                out[a.contact_id] = min(t, out.get(a.contact_id, t))
            elif node.measure == "last":
                out[a.contact_id] = max(t, out.get(a.contact_id, t))
            else:
                out[a.contact_id] = out.get(a.contact_id, 0) + 1
        return out

    # -- consent and suppression

    def granted(self, channel: str, purpose: str) -> dict[str, int]:
        best: dict[str, tuple[int, bool, str]] = {}
        grants: dict[str, int] = {}
        for cid, c in self.s.consents.items():
            if c.channel.value != channel or c.purpose.value != purpose:
                continue
            t = to_micros(c.occurred_at)
            if t > self.at_us:
                continue
            key = (t, c.action is ConsentAction.WITHDRAW, cid)
            old = best.get(c.contact_id)
            if old is None or key > old:
                best[c.contact_id] = key
            if c.action is ConsentAction.GRANT:
                grants[c.contact_id] = max(t, grants.get(c.contact_id, t))
        return {cid: grants[cid] for cid, key in best.items() if not key[1]}

    def suppressed(self, node: SuppressedCondition) -> set[str]:
        channel, purpose = Channel(node.channel), Purpose(node.purpose)
        granted = self.granted(node.channel, node.purpose)
        entries = MemoryConsentStore(self.s).contact_entries(None, channel, self.ctx.at)
        out = set()
        for cid, found in entries.items():
            for e in found:
                if not (e.active_at(self.ctx.at) and e.covers(purpose)):
                    continue
                g = granted.get(cid)
                if e.reason in CONSENT_REASONS and g is not None and g > to_micros(e.since):
                    continue
                out.add(cid)
                break
        return out


def _property_matches(props: Mapping[str, Any], f: PropertyFilter) -> bool:
    value = props.get(f.key)
    is_set = f.key in props and value is not None

    def equal(v: Any) -> bool:
        return is_set and type(value) is type(v) and value == v

    if f.op == "is set":
        return is_set
    if f.op == "is not set":
        return not is_set
    if f.op == "=":
        return equal(f.value)
    if f.op == "!=":
        return is_set and not equal(f.value)
    values = f.value if isinstance(f.value, tuple) else ()
    hit = any(equal(v) for v in values)
    return hit if f.op == "in" else is_set and not hit


class MemorySegmentStore(SegmentStore):
    """:class:`SegmentStore` over a :class:`~commhistory.store.memory.MemoryState`.

    Args:
        state: The memory repository's state.
    """

    def __init__(self, state: MemoryState) -> None:
        self.s = state
        self._definitions: dict[str, list[SavedSegment]] = state.segment_definitions
        self._snapshots: dict[str, tuple[SnapshotInfo, set[str]]] = state.segment_snapshots

    def _evaluator(self, tree: Criteria, at: datetime | None) -> _MemoryEvaluator:
        moment, current = _resolve_at(at)
        ctx = _Context(
            moment,
            current,
            dict(self.s.attribute_definitions),
            dict(self.s.activity_names),
        )
        _check(tree, ctx)
        return _MemoryEvaluator(self.s, ctx)

    def count(self, tree: Criteria, *, at: datetime | None = None) -> int:
        """See :meth:`SegmentStore.count`."""
        ev = self._evaluator(tree, at)
        return len(ev.universe & ev.node(tree))

    def members(self, tree: Criteria, *, at: datetime | None = None) -> list[str]:
        """See :meth:`SegmentStore.members`."""
        ev = self._evaluator(tree, at)
        return sorted(ev.universe & ev.node(tree))

    def explain(self, tree: Criteria, *, at: datetime | None = None) -> ExplainNode:
        """See :meth:`SegmentStore.explain`."""
        ev = self._evaluator(tree, at)
        return _explain(tree, lambda node: len(ev.universe & ev.node(node)))

    def save_definition(self, name: str, definition: str) -> SavedSegment:
        """See :meth:`SegmentStore.save_definition`."""
        versions = self._definitions.setdefault(name, [])
        if versions and versions[-1].definition == definition:
            return versions[-1]
        saved = SavedSegment(
            name=name, version=len(versions) + 1, definition=definition,
            saved_at=_trunc(datetime.now(UTC)),
        )  # fmt: skip
        versions.append(saved)
        return saved

    def definitions(self, name: str | None = None) -> list[SavedSegment]:
        """See :meth:`SegmentStore.definitions`."""
        return [
            v
            for n in sorted(self._definitions)
            if name is None or n == name
            for v in self._definitions[n]
        ]

    def save_snapshot(
        self, name: str, version: int, at: datetime, contact_ids: Sequence[str]
    ) -> SnapshotInfo:
        """See :meth:`SegmentStore.save_snapshot`."""
        ids = set(contact_ids)
        info = SnapshotInfo(
            snapshot_id=secrets.token_hex(16), name=name, version=version, at=_trunc(at),
            taken_at=_trunc(datetime.now(UTC)), size=len(ids),
        )  # fmt: skip
        self._snapshots[info.snapshot_id] = (info, ids)
        return info

    def snapshots(self, name: str) -> list[SnapshotInfo]:
        """See :meth:`SegmentStore.snapshots`."""
        return [
            attrs.evolve(info, size=len(ids))
            for info, ids in self._snapshots.values()
            if info.name == name
        ]

    def snapshot_members(self, snapshot_id: str) -> list[str]:
        """See :meth:`SegmentStore.snapshot_members`."""
        found = self._snapshots.get(snapshot_id)
        if found is None:
            raise NotFoundError(kind="snapshot", identifier=snapshot_id)
        return sorted(found[1])

    def forget_contact(self, contact_id: str) -> int:
        """See :meth:`SegmentStore.forget_contact`."""
        gone = 0
        for _info, ids in self._snapshots.values():
            if contact_id in ids:
                ids.discard(contact_id)
                gone += 1
        return gone
