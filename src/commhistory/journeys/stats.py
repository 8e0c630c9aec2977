"""KPIs per journey and per step: who entered, where they stand, what was sent and how it did.

:func:`journey_stats` answers for one journey version from the store, read-only:

* **the walk** (:meth:`~commhistory.store.journeys.JourneyStore.journey_counts`):
  enrollments entered, active, completed, ended by a goal (an activity goal:
  converted), by an unsubscribe or by leaving a segment; per step the times it
  was entered, the enrollments standing at it, and for a send step the intents
  issued, recorded as sent and recorded as skipped. An ended enrollment is also
  counted at the last send step recorded as sent before its end (``None``: it
  ended before any send), which reads as "exits after this step";
* **the messages**: the KPI engine's table of the messages the host recorded
  for the intents (``journey_intents.message_id``), grouped by ``step``
  (:data:`commhistory.store.kpi.JOURNEY_KEYS`): delivered, opened, clicked,
  converted and the rest of DESIGN section 5, by the same rules, on SQL and in
  memory, as every other KPI table.

With ``at``, only what happened at or before ``at`` counts: enrollments entered
by then, intents issued or recorded by then, messages sent by then (with every
event stored for them). An enrollment that ended after ``at`` is active as of
``at`` but at no step, since the store keeps only where it stands now.

.. versionadded:: 0.4.0
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any, Final

import attrs

from commhistory.errors import InvalidInputError
from commhistory.journeys.definition import BranchStep, Journey, SendStep
from commhistory.kpi.aggregate import repository_kpis
from commhistory.kpi.metrics import KpiRow
from commhistory.store.protocol import Repository

__all__ = ["ENDINGS", "JourneyStats", "StepStats", "journey_stats", "render_stats"]

ENDINGS: Final = ("completed", "goal", "unsubscribed", "left_segment")
"""How an enrollment can end (the non-active statuses)."""

_MICRO: Final = dt.timedelta(microseconds=1)


@attrs.frozen(kw_only=True)
class StepStats:
    """One step's numbers.

    Attributes:
        step_id: The step.
        kind: ``send``, ``wait`` or ``branch``.
        template: A send step's template key (else ``None``).
        entered: How many times the step was entered (a loop's visits each count).
        active: Active enrollments standing at the step.
        issued: Intents claimed (send steps).
        sent: Intents recorded as sent.
        skipped: Intents recorded as skipped (send planning refused them).
        exits: Ended enrollments whose last recorded send was this step, per status
            (``completed``, ``goal``, ``unsubscribed``, ``left_segment``).
        messages: The KPIs of the messages recorded for this step's intents
            (a send step; all zero without any).

    .. versionadded:: 0.4.0
    """

    step_id: str
    kind: str
    template: str | None = None
    entered: int = 0
    active: int = 0
    issued: int = 0
    sent: int = 0
    skipped: int = 0
    exits: Mapping[str, int] = attrs.field(factory=dict)
    messages: KpiRow | None = None

    @property
    def pending(self) -> int:
        """Intents issued but not recorded yet."""
        return self.issued - self.sent - self.skipped

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data: the counts, ``exits`` per status and the message KPIs."""
        out: dict[str, Any] = {
            "step": self.step_id,
            "kind": self.kind,
            "template": self.template,
            "entered": self.entered,
            "active": self.active,
            "issued": self.issued,
            "sent": self.sent,
            "skipped": self.skipped,
            "pending": self.pending,
            "exits": {status: self.exits.get(status, 0) for status in ENDINGS},
        }
        if self.messages is not None:
            row = self.messages.to_dict()
            for name in ("cost", "roi", "cost_per_conversion", "revenue_per_recipient"):
                row.pop(name, None)
            row.pop("step", None)
            out["messages"] = row
        return out


@attrs.frozen(kw_only=True)
class JourneyStats:
    """One journey version's numbers, whole and per step.

    Attributes:
        journey_key: The journey.
        version: Its version.
        at: The instant the numbers are as of (``None``: everything stored).
        entered: Enrollments entered.
        statuses: Enrollments per status: ``active`` and each of :data:`ENDINGS`.
        issued: Intents claimed, all steps.
        sent: Intents recorded as sent.
        skipped: Intents recorded as skipped.
        exits_before_send: Ended enrollments with no recorded send, per status.
        messages: The KPIs of every message recorded for the journey's intents.
        steps: Per step, in definition order.

    .. versionadded:: 0.4.0
    """

    journey_key: str
    version: int
    at: dt.datetime | None = None
    entered: int = 0
    statuses: Mapping[str, int] = attrs.field(factory=dict)
    issued: int = 0
    sent: int = 0
    skipped: int = 0
    exits_before_send: Mapping[str, int] = attrs.field(factory=dict)
    messages: KpiRow = attrs.field(factory=KpiRow)
    steps: tuple[StepStats, ...] = ()

    @property
    def active(self) -> int:
        """Enrollments still walking."""
        return self.statuses.get("active", 0)

    @property
    def completed(self) -> int:
        """Enrollments that walked off a last step."""
        return self.statuses.get("completed", 0)

    @property
    def goal(self) -> int:
        """Enrollments ended by an activity goal (converted)."""
        return self.statuses.get("goal", 0)

    @property
    def unsubscribed(self) -> int:
        """Enrollments ended by an unsubscribe."""
        return self.statuses.get("unsubscribed", 0)

    @property
    def left_segment(self) -> int:
        """Enrollments ended by leaving a segment."""
        return self.statuses.get("left_segment", 0)

    def step(self, step_id: str) -> StepStats:
        """The numbers of one step.

        Raises:
            InvalidInputError: No such step (``field="step"``).
        """
        for step in self.steps:
            if step.step_id == step_id:
                return step
        raise InvalidInputError(field="step", reason="names no step of this journey")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data (``at`` as ISO 8601 text)."""
        totals = self.messages.to_dict()
        for name in ("cost", "roi", "cost_per_conversion", "revenue_per_recipient"):
            totals.pop(name, None)
        return {
            "journey": self.journey_key,
            "version": self.version,
            "at": None if self.at is None else self.at.isoformat().replace("+00:00", "Z"),
            "entered": self.entered,
            "active": self.active,
            **{status: self.statuses.get(status, 0) for status in ENDINGS},
            "issued": self.issued,
            "sent": self.sent,
            "skipped": self.skipped,
            "exits_before_send": {s: self.exits_before_send.get(s, 0) for s in ENDINGS},
            "messages": totals,
            "steps": [step.to_dict() for step in self.steps],
        }


def journey_stats(
    repo: Repository,
    journey: Journey,
    *,
    at: dt.datetime | None = None,
    exclude_machine: bool = True,
) -> JourneyStats:
    """Count a journey version's enrollments, intents and message KPIs (read-only).

    Args:
        repo: The repository.
        journey: The journey version (its key and version select the enrollments).
        at: Count only what happened at or before this aware instant.
        exclude_machine: Leave out machine opens and clicks in the message KPIs.

    Returns:
        The numbers, per step in definition order.

    Raises:
        InvalidInputError: ``at`` is naive.
        StorageError: The database failed.
    """
    if at is not None:
        raw: object = at
        if not isinstance(raw, dt.datetime) or raw.utcoffset() is None:
            raise InvalidInputError(field="at", reason="must be a timezone-aware datetime")
        at = raw.astimezone(dt.UTC)
    counts = repo.journey_store.journey_counts(journey.key, journey.version, at=at)
    table = repository_kpis(
        repo,
        by="step",
        until=None if at is None else at + _MICRO,
        exclude_machine=exclude_machine,
        costs=False,
        journey=journey.key,
        journey_version=journey.version,
    )
    per_step = {row.group.get("step"): row for row in table.rows}
    exits: dict[str | None, dict[str, int]] = {}
    for status, step_id, n in counts.exits:
        mine = exits.setdefault(step_id, {})
        mine[status] = mine.get(status, 0) + n
    steps = []
    for step in journey.steps:
        send = isinstance(step, SendStep)
        kind = "send" if send else "branch" if isinstance(step, BranchStep) else "wait"
        steps.append(
            StepStats(
                step_id=step.id,
                kind=kind,
                template=step.template if isinstance(step, SendStep) else None,
                entered=counts.visits.get(step.id, 0),
                active=counts.waiting.get(step.id, 0),
                issued=counts.issued.get(step.id, 0),
                sent=counts.sent.get(step.id, 0),
                skipped=counts.skipped.get(step.id, 0),
                exits=dict(sorted(exits.get(step.id, {}).items())),
                messages=_step_row(per_step, step.id) if send else None,
            )
        )
    return JourneyStats(
        journey_key=journey.key,
        version=journey.version,
        at=at,
        entered=sum(counts.statuses.values()),
        statuses=dict(sorted(counts.statuses.items())),
        issued=sum(counts.issued.values()),
        sent=sum(counts.sent.values()),
        skipped=sum(counts.skipped.values()),
        exits_before_send=dict(sorted(exits.get(None, {}).items())),
        messages=attrs.evolve(table.total(), group={}),
        steps=tuple(steps),
    )


def _step_row(rows: Mapping[str | None, KpiRow], step_id: str) -> KpiRow:
    found = rows.get(step_id)
    return KpiRow(group={"step": step_id}) if found is None else found


_COLUMNS: Final = (
    "entered", "active", "sent", "skipped", "pending",
    "delivered", "opened", "clicked", "converted", "goal", "unsub",
)  # fmt: skip


def _cells(step: StepStats) -> list[str]:
    m = step.messages
    values: list[int | None] = [
        step.entered,
        step.active,
        step.sent,
        step.skipped,
        step.pending,
        None if m is None else m.delivered,
        None if m is None else m.unique_opens,
        None if m is None else m.unique_clicks,
        None if m is None else m.conversions,
        step.exits.get("goal", 0),
        step.exits.get("unsubscribed", 0),
    ]
    return ["" if v is None else str(v) for v in values]


def render_stats(stats: JourneyStats) -> str:
    """The text ``commhistory journey stats`` prints: a summary, then one line a step.

    Message columns (``delivered`` .. ``converted``) are blank for steps that send
    nothing; ``goal`` and ``unsub`` count the exits after the step's send.
    """
    when = "" if stats.at is None else f" as of {stats.at.isoformat().replace('+00:00', 'Z')}"
    m = stats.messages
    lines = [
        f"{stats.journey_key} v{stats.version}{when}",
        f"entered {stats.entered}: active {stats.active}, completed {stats.completed}, "
        f"goal {stats.goal}, unsubscribed {stats.unsubscribed}, "
        f"left segment {stats.left_segment}",
        f"intents: issued {stats.issued}, sent {stats.sent}, skipped {stats.skipped}; "
        f"messages: sent {m.sent}, delivered {m.delivered}, opened {m.unique_opens}, "
        f"clicked {m.unique_clicks}, converted {m.conversions}",
    ]
    header = ["step", "kind", *_COLUMNS]
    body = [[step.step_id, step.kind, *_cells(step)] for step in stats.steps]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    for row in [header, *body]:
        cells = [
            cell.ljust(widths[i]) if i < 2 else cell.rjust(widths[i]) for i, cell in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip())
    if stats.exits_before_send:
        parts = ", ".join(f"{k} {v}" for k, v in stats.exits_before_send.items())
        lines.append(f"ended before any send: {parts}")
    return "\n".join(lines)
