"""Dry-run replay: what a journey would have sent over a stored history, writing nothing.

:func:`replay` answers "had this journey been live from ``since`` to
``until``, who would it have enrolled and what would it have sent when?":

1. **Triggers** are read from the stored history in ``[since, until]``, with
   the live trigger's ids: the activities of an ``activity`` trigger (with its
   ``properties`` matched after decryption), the message events of an
   ``event`` trigger (of its campaign and channel), a ``date`` trigger's fire
   instants day by day over the window in each contact's zone
   (:func:`~commhistory.journeys.triggers.date_fires`, the attribute's current
   values), or the entries into a ``segment`` between consecutive saved
   snapshots whose later one is in the window. A segment with no snapshot at
   or before ``since`` is refused (``field="since"``): entry is the difference
   of two snapshots, and who was in the segment when the window opened is unknown.
2. **Enrollments** are simulated in trigger order (time, then record id) under
   the journey's re-entry policy, as if the journey had no enrollment before
   ``since``; the enrollment ids are those :func:`~commhistory.journeys.engine.enroll`
   would give, so the intent keys are those a live run would hand out.
3. **The walk** is :func:`~commhistory.journeys.machine.advance` on a simulated
   clock that wakes each enrollment at every instant something can happen (the
   end of a wait, a branch's deadline, each stored event or activity of the
   contact), as a host calling ``due`` continuously would. Every send it decides
   is taken as sent when send planning lets it go (4.: at its due instant unless
   deferred). Behaviour comes from the store into a
   :class:`~commhistory.journeys.machine.RecordedBehaviour`: the contact's
   activities (goals, branches), unsubscribes (goals), and the events of the
   messages the host recorded for the same intent keys (branches on a step's
   event). A replayed send of a key the host never recorded has no events, so
   a branch waiting for its open takes ``otherwise`` at the timeout; the
   contact's consent withdrawals in the ledger count as unsubscribes (goals),
   as they do for ``due``.
4. **Send planning** screens every send at the instant the walk reaches it,
   through the gate live ``due`` uses (:func:`~commhistory.journeys.gate.screen`,
   one :func:`~commhistory.segments.planning.plan_send` per send, at that
   instant, with ``config``): consent, suppression and quiet hours as stored
   at that instant, erasure and addresses as stored now. A refused send is
   skipped (the step counts as done at that instant, as ``due`` records it);
   a held one is deferred or skipped as the journey's ``when_blocked`` says,
   and a deferred one is screened again at its deferred-until instant (its
   key sent then, if planning lets it go). ``until_allowed`` waits wait for
   the configuration's quiet hours, as in ``due``.

**What a replay cannot know** (so replay and live ``due`` can differ there):
frequency caps count the messages *stored* in the caps' windows (what the host
really recorded), not the replay's own simulated sends; a send the host never
recorded therefore does not count towards a later cap in the replay, and a
message the host recorded at the very instant a send was due does count
(live ``due`` planned before the host recorded it). Two sends of one contact
due at the same instant are screened one after the other, not together.
Erasure and addresses are read as they are now, not as they were. Zones come
from the configuration's ``zone_attribute`` as in force at ``until`` (or
``zone_of``). The result is deterministic: the same history, definition and
configuration give the same report.

.. versionadded:: 0.4.0
"""

from __future__ import annotations

import bisect
import datetime as dt
import itertools
from collections.abc import Callable, Mapping
from typing import Any, Final
from zoneinfo import ZoneInfo

import attrs

from commhistory.errors import InvalidInputError, NotFoundError
from commhistory.journeys import gate
from commhistory.journeys.definition import (
    ActivityGoal,
    ActivityTrigger,
    BranchStep,
    DateTrigger,
    EventTrigger,
    Journey,
    ReEntry,
    SegmentTrigger,
    SendStep,
    UnsubscribeGoal,
    WaitStep,
)
from commhistory.journeys.engine import _send_purposes, enrollment_id
from commhistory.journeys.gate import DeferredIntent, SkippedIntent
from commhistory.journeys.machine import (
    Enrollment,
    Position,
    RecordedBehaviour,
    SendIntent,
    Status,
    advance,
    wait_end,
)
from commhistory.journeys.triggers import date_fires, require_date_attribute
from commhistory.model import ConsentAction, EventType
from commhistory.segments.planning import PlanConfig
from commhistory.segments.saved import load_definition
from commhistory.store.protocol import Repository

__all__ = ["JourneyReplay", "ReplayStep", "render_replay", "replay"]

_MICRO: Final = dt.timedelta(microseconds=1)
_MAX_WAKES: Final = 100_000
"""A guard: one enrollment is woken at most this many times in one replay."""


@attrs.frozen(kw_only=True)
class ReplayStep:
    """How many sends a send step would have made.

    Attributes:
        step_id: The send step.
        template: Its template key.
        sends: The sends it would have made in the window.
        contacts: The distinct contacts they went to.
        skipped: The sends send planning refused (or held, under
            ``when_blocked: skip``): skipped, as ``due`` records them.
        deferred: How many times planning held one of its sends for later
            (``when_blocked: defer``); a send deferred twice counts twice.

    .. versionadded:: 0.4.0
    """

    step_id: str
    template: str
    sends: int = 0
    contacts: int = 0
    skipped: int = 0
    deferred: int = 0


@attrs.frozen(kw_only=True)
class JourneyReplay:
    """What :func:`replay` found.

    Attributes:
        journey_key: The journey.
        version: Its version.
        since: The window's start.
        until: The window's end (inclusive).
        triggers: Trigger records found in the window.
        enrolled: Simulated enrollments.
        kept_out: Triggers the re-entry policy kept out.
        statuses: Enrollments per status at ``until``.
        steps: Per send step, in definition order.
        intents: Every simulated send, by due instant then key.
        skipped: Every send send planning skipped, with the reason, by due instant then key.
        deferred: Every deferral, with its deferred-until instant and reason, by
            instant held then key (a send still deferred at ``until`` is in no
            other list).

    .. versionadded:: 0.4.0
    """

    journey_key: str
    version: int
    since: dt.datetime
    until: dt.datetime
    triggers: int = 0
    enrolled: int = 0
    kept_out: int = 0
    statuses: Mapping[str, int] = attrs.field(factory=dict)
    steps: tuple[ReplayStep, ...] = ()
    intents: tuple[SendIntent, ...] = ()
    skipped: tuple[SkippedIntent, ...] = ()
    deferred: tuple[DeferredIntent, ...] = ()

    def step(self, step_id: str) -> ReplayStep:
        """The numbers of one send step.

        Raises:
            InvalidInputError: No such send step (``field="step"``).

        .. versionadded:: 0.4.0
        """
        for step in self.steps:
            if step.step_id == step_id:
                return step
        raise InvalidInputError(field="step", reason="names no send step of this journey")

    def to_dict(self, *, intents: bool = True) -> dict[str, Any]:
        """JSON-ready data; ``intents=False`` leaves the sends, skips and deferrals out."""
        out: dict[str, Any] = {
            "journey": self.journey_key,
            "version": self.version,
            "since": _iso(self.since),
            "until": _iso(self.until),
            "triggers": self.triggers,
            "enrolled": self.enrolled,
            "kept_out": self.kept_out,
            "statuses": dict(self.statuses),
            "steps": [
                {
                    "step": s.step_id,
                    "template": s.template,
                    "sends": s.sends,
                    "contacts": s.contacts,
                    "skipped": s.skipped,
                    "deferred": s.deferred,
                }
                for s in self.steps
            ],
        }
        if intents:
            out["intents"] = [_intent(i) for i in self.intents]
            out["skipped"] = [
                {**_intent(k.intent), "reason": k.reason.value} for k in self.skipped
            ]
            out["deferred"] = [
                {**_intent(d.intent), "until": _iso(d.until), "reason": d.reason.value}
                for d in self.deferred
            ]
        return out


def _intent(i: SendIntent) -> dict[str, str]:
    return {
        "due_at": _iso(i.due_at),
        "step": i.step_id,
        "template": i.template,
        "channel": i.channel.value,
        "contact_id": i.contact_id,
        "key": i.key,
    }


def _iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _aware(value: object, field: str) -> dt.datetime:
    if not isinstance(value, dt.datetime) or value.utcoffset() is None:
        raise InvalidInputError(field=field, reason="must be a timezone-aware datetime")
    return value.astimezone(dt.UTC)


@attrs.frozen
class _Trigger:
    record_id: str
    contact_id: str
    at: dt.datetime
    properties: Mapping[str, str | int | bool]


def _plain(values: Mapping[str, object]) -> dict[str, str | int | bool]:
    return {k: v for k, v in values.items() if isinstance(v, str | int | bool)}


def _activities(
    repo: Repository, contact_id: str, names: list[str], since: dt.datetime, until: dt.datetime
) -> list[tuple[str, str, dt.datetime, dict[str, str | int | bool]]]:
    """The contact's activities of ``names`` in ``[since, until]``: (id, name, at, properties)."""
    if not names:
        return []
    try:
        entries = repo.activity_store.activities(
            contact_id, names=names, since=since, until=until + _MICRO
        )
    except NotFoundError:
        return []
    return [
        (
            e.activity.activity_id,
            e.activity.name,
            e.activity.occurred_at,
            _plain(e.activity.properties),
        )
        for e in entries
    ]


_Zones = Callable[[list[str]], Callable[[str], ZoneInfo]]
"""Given contact ids, their time zones (the replay's ``zone_of`` or the configuration's)."""


def _segment_triggers(
    repo: Repository, trigger: SegmentTrigger, since: dt.datetime, until: dt.datetime
) -> list[_Trigger]:
    """Entries into the saved segment between consecutive snapshots taken in the window.

    As the live trigger reads them: a contact entered when a snapshot (ordered by
    ``at``, then when taken) holds it and the one before does not; the trigger id
    names that snapshot, the entry instant is its ``at``.
    """
    name = trigger.segment
    load_definition(repo, name)  # NotFoundError: not a saved segment, as live
    store = repo.segment_store
    shots = sorted(
        (s for s in store.snapshots(name) if s.at <= until),
        key=lambda s: (s.at, s.taken_at, s.snapshot_id),
    )
    if not any(s.at <= since for s in shots):
        # Entry is the difference between two snapshots: without one at or before
        # since, who was in the segment when the window opened is unknown, and the
        # first snapshot in the window would count every member as entering (or,
        # read as the live trigger's first run reads it, nobody).
        raise InvalidInputError(
            field="since",
            reason=f"segment {name!r} has no snapshot taken at or before since; entries "
            "into it cannot be reconstructed from its snapshots",
        )
    out: list[_Trigger] = []
    members: dict[str, frozenset[str]] = {}

    def ids(snapshot_id: str) -> frozenset[str]:
        if snapshot_id not in members:
            members[snapshot_id] = frozenset(store.snapshot_members(snapshot_id))
        return members[snapshot_id]

    for before, current in itertools.pairwise(shots):
        if current.at < since:
            continue
        for contact in sorted(ids(current.snapshot_id) - ids(before.snapshot_id)):
            tid = f"segment:{name}:{current.snapshot_id}:{contact}"
            out.append(_Trigger(tid, contact, current.at, {}))
    return out


def _date_triggers(
    repo: Repository, trigger: DateTrigger, since: dt.datetime, until: dt.datetime, zones: _Zones
) -> list[_Trigger]:
    """Every day of the window on which the date trigger fires, per contact, in its zone.

    The attribute's current values (as the live trigger reads them), each
    contact's local fire dates (29 February on 28 February in common years)
    at the trigger's ``at``; the trigger ids are the live trigger's.
    """
    require_date_attribute(repo, trigger)
    values = repo.journey_store.date_values(trigger.attribute)
    zone_of = zones(sorted({c for c, _v in values}))
    out: list[_Trigger] = []
    for contact, value in values:
        for day, fire in date_fires(trigger, value, zone_of(contact), since - _MICRO, until):
            tid = f"date:{trigger.attribute}:{day.isoformat()}:{contact}"
            out.append(_Trigger(tid, contact, fire, {}))
    return out


def _triggers(
    repo: Repository, journey: Journey, since: dt.datetime, until: dt.datetime, zones: _Zones
) -> list[_Trigger]:
    trigger = journey.trigger
    store = repo.journey_store
    if isinstance(trigger, ActivityTrigger):
        rows = store.window_activities(trigger.name, since=since, until=until)
        props: dict[str, dict[str, str | int | bool]] = {}
        for contact in sorted({r.contact_id for r in rows}):
            for aid, _name, _at, values in _activities(
                repo, contact, [trigger.name], since, until
            ):
                props[aid] = values
        out = []
        for r in rows:
            values = props.get(r.record_id, {})
            if all(values.get(k) == v for k, v in trigger.properties.items()):
                out.append(_Trigger(r.record_id, r.contact_id, r.occurred_at, values))
        return out
    if isinstance(trigger, EventTrigger):
        rows = store.window_events(
            trigger.event,
            campaign=trigger.campaign,
            channel=trigger.channel,
            since=since,
            until=until,
        )
        return [_Trigger(r.record_id, r.contact_id, r.occurred_at, {}) for r in rows]
    if isinstance(trigger, SegmentTrigger):
        return _segment_triggers(repo, trigger, since, until)
    return _date_triggers(repo, trigger, since, until, zones)


def _enroll(journey: Journey, triggers: list[_Trigger]) -> tuple[list[Enrollment], int]:
    """Simulate enrollments under the re-entry policy; return them and how many were kept out."""
    last: dict[str, dt.datetime] = {}
    out: list[Enrollment] = []
    kept_out = 0
    for t in sorted(triggers, key=lambda t: (t.at, t.record_id)):
        before = last.get(t.contact_id)
        if before is not None and (
            journey.reentry is ReEntry.ONCE
            or (
                journey.reentry is ReEntry.PERIODIC
                and t.at < before + dt.timedelta(days=journey.reentry_days or 0)
            )
        ):
            kept_out += 1
            continue
        last[t.contact_id] = t.at
        out.append(
            Enrollment(
                enrollment_id=enrollment_id(journey.key, t.record_id),
                contact_id=t.contact_id,
                entered_at=t.at,
                entry_properties=dict(t.properties),
            )
        )
    return out, kept_out


def _behaviours(
    repo: Repository,
    journey: Journey,
    contacts: list[str],
    since: dt.datetime,
    until: dt.datetime,
) -> dict[str, RecordedBehaviour]:
    names = sorted(
        {g.activity for g in journey.goals if isinstance(g, ActivityGoal)}
        | {
            s.condition.activity
            for s in journey.steps
            if isinstance(s, BranchStep) and s.condition.activity is not None
        }
    )
    out = {c: RecordedBehaviour() for c in contacts}
    for contact in contacts:
        for _aid, name, at, values in _activities(repo, contact, names, since, until):
            out[contact].activities.append((name, values, at))
    for row in repo.journey_store.contact_events(contacts, since=since, until=until):
        history = out[row.contact_id]
        if row.intent_key is not None:
            history.events.append((row.intent_key, row.type, row.occurred_at))
        if row.type is EventType.UNSUBSCRIBED and row.channel is not None:
            history.unsubscribes.append((row.channel, row.occurred_at))
    if any(isinstance(g, UnsubscribeGoal) for g in journey.goals):
        # A consent withdrawal in the ledger ends the journey too, as ``due`` reads it:
        # a withdrawal of a purpose of the journey's own send steps.
        purposes = _send_purposes(journey)
        for contact in contacts:
            try:
                ledger = repo.consent_history(contact)
            except NotFoundError:
                continue
            out[contact].unsubscribes.extend(
                (e.channel, e.occurred_at)
                for e in ledger
                if e.action is ConsentAction.WITHDRAW
                and e.purpose in purposes
                and since <= e.occurred_at <= until
            )
    return out


def _wake(
    journey: Journey,
    position: Position,
    zone: ZoneInfo,
    allowed: Callable[[dt.datetime, SendStep], dt.datetime] | None,
) -> dt.datetime | None:
    """When the position's step can next move by time alone (``None``: not by time)."""
    if position.step_id is None:
        return None
    step = journey.step(position.step_id)
    if isinstance(step, WaitStep):
        return wait_end(journey, step, position.since, zone=zone, allowed=allowed)
    if isinstance(step, BranchStep):
        return position.since + step.within
    return None


@attrs.define
class _Walked:
    """One enrollment's simulated sends, skips and deferrals."""

    sent: list[SendIntent] = attrs.field(factory=list)
    skipped: list[SkippedIntent] = attrs.field(factory=list)
    deferred: list[DeferredIntent] = attrs.field(factory=list)


def _walk(
    repo: Repository,
    journey: Journey,
    enrollment: Enrollment,
    history: RecordedBehaviour,
    *,
    until: dt.datetime,
    zone: ZoneInfo,
    config: PlanConfig | None,
) -> tuple[Position, _Walked]:
    """Walk one enrollment on a clock that wakes whenever something can happen.

    Each send the walk reaches goes through the gate at that instant; a deferred
    one wakes the walk again at its deferred-until instant.
    """
    instants = sorted(
        {when for _k, _e, when in history.events}
        | {when for _n, _p, when in history.activities}
        | {when for _c, when in history.unsubscribes}
    )
    allowed = gate.allowed(config, zone)
    position = Position.start(journey, enrollment)
    now = enrollment.entered_at
    out = _Walked()
    for _ in range(_MAX_WAKES):
        moved = advance(
            journey, enrollment, position, now=now, zone=zone, history=history, allowed=allowed
        )
        position = moved.position
        if moved.intents:
            intent = moved.intents[0]
            split = gate.screen(
                repo, now, [(journey, intent)], config=config, zone_of=lambda _cid: zone
            )
            verdict = split.verdict(intent.key)
            if isinstance(verdict, DeferredIntent):
                # As due: the enrollment sleeps until then (no earlier wake), then plans again.
                out.deferred.append(verdict)
                if verdict.until > until:
                    break
                now = verdict.until
                continue
                # Sent when let go; a skip counts as done at that instant, as due records it.
            history.record_send(intent.key, now)
            if isinstance(verdict, SkippedIntent):
                out.skipped.append(verdict)
            else:
                out.sent.append(intent)
            continue
        if position.status is not Status.ACTIVE or now >= until:
            break
        candidates = [until]
        wake = _wake(journey, position, zone, allowed)
        if wake is not None:
            candidates.append(wake)
        later = bisect.bisect_right(instants, now)
        if later < len(instants):
            candidates.append(instants[later])
        now = max(now + _MICRO, min(candidates))
    else:  # pragma: no cover - a guard: definitions cannot loop without waiting
        raise RuntimeError(f"journey {journey.key}: replay did not settle")
    return position, out


def replay(
    repo: Repository,
    journey: Journey,
    *,
    since: dt.datetime,
    until: dt.datetime,
    zone_of: Callable[[str], ZoneInfo] | None = None,
    config: PlanConfig | None = None,
) -> JourneyReplay:
    """Replay the stored history of ``[since, until]`` against a journey; write nothing.

    Every send is screened by send planning at its instant, as ``due`` screens
    it (module docs: what a replay cannot know).

    Args:
        repo: The repository (only read).
        journey: The journey definition to try.
        since: The window's start (aware).
        until: The window's end (aware, inclusive): triggers up to it, sends due by it.
        zone_of: The contact's time zone (``until_time`` and ``until_allowed``
            waits, deferral instants); default: the configuration's zones as in
            force at ``until`` (UTC without a configuration).
        config: Send planning's frequency caps, quiet hours and zones, as given
            to ``due`` (``None``: consent, suppression, erasure and addresses only).

    Returns:
        The report: triggers, enrollments, final statuses, sends, skips and
        deferrals per step, and each of them.

    Raises:
        InvalidInputError: A naive bound, ``since`` after ``until``, a date trigger
            naming no declared plain date attribute, or a segment trigger whose
            segment has no snapshot at or before ``since`` (``field="since"``).
        NotFoundError: A segment trigger names no saved segment.
        PlanConfigError: The configuration's zone attribute is not a declared,
            plain text attribute.
        StorageError: The database failed.

    .. versionchanged:: 0.4.0
       Send planning screens every send; ``config``. Segment-entry and date
       triggers are replayed.
    """
    since = _aware(since, "since")
    until = _aware(until, "until")
    if since > until:
        raise InvalidInputError(field="since", reason="must not be after until")

    def zones(contacts: list[str]) -> Callable[[str], ZoneInfo]:
        return gate.zones(repo, config, contacts, until, zone_of=zone_of)

    triggers = _triggers(repo, journey, since, until, zones)
    enrollments, kept_out = _enroll(journey, triggers)
    contacts = sorted({e.contact_id for e in enrollments})
    histories = _behaviours(repo, journey, contacts, since, until)
    zone_for = zones(contacts)
    statuses: dict[str, int] = {}
    intents: list[SendIntent] = []
    skipped: list[SkippedIntent] = []
    deferred: list[DeferredIntent] = []
    for enrollment in enrollments:
        position, walked = _walk(
            repo,
            journey,
            enrollment,
            histories[enrollment.contact_id],
            until=until,
            zone=zone_for(enrollment.contact_id),
            config=config,
        )
        statuses[position.status.value] = statuses.get(position.status.value, 0) + 1
        intents.extend(walked.sent)
        skipped.extend(walked.skipped)
        deferred.extend(walked.deferred)
    intents.sort(key=lambda i: (i.due_at, i.key))
    skipped.sort(key=lambda k: (k.intent.due_at, k.intent.key))
    deferred.sort(key=lambda d: (d.until, d.intent.key))
    steps = tuple(
        ReplayStep(
            step_id=step.id,
            template=step.template,
            sends=sum(1 for i in intents if i.step_id == step.id),
            contacts=len({i.contact_id for i in intents if i.step_id == step.id}),
            skipped=sum(1 for k in skipped if k.intent.step_id == step.id),
            deferred=sum(1 for d in deferred if d.intent.step_id == step.id),
        )
        for step in journey.send_steps
    )
    return JourneyReplay(
        journey_key=journey.key,
        version=journey.version,
        since=since,
        until=until,
        triggers=len(triggers),
        enrolled=len(enrollments),
        kept_out=kept_out,
        statuses=dict(sorted(statuses.items())),
        steps=steps,
        intents=tuple(intents),
        skipped=tuple(skipped),
        deferred=tuple(deferred),
    )


def render_replay(report: JourneyReplay, *, intents: bool = False) -> str:
    """The text ``commhistory journey replay`` prints.

    ``intents=True`` lists every send, then every skip (with its reason) and
    every deferral (with its instant and reason).
    """
    ended = ", ".join(f"{k} {v}" for k, v in report.statuses.items()) or "none"
    lines = [
        f"{report.journey_key} v{report.version} replayed {_iso(report.since)} .. "
        f"{_iso(report.until)}",
        f"triggers {report.triggers}, enrolled {report.enrolled}, "
        f"kept out by re-entry {report.kept_out}",
        f"at the end: {ended}",
    ]
    rows = [["step", "template", "sends", "contacts", "skipped", "deferred"]] + [
        [s.step_id, s.template, str(s.sends), str(s.contacts), str(s.skipped), str(s.deferred)]
        for s in report.steps
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        lines.append(
            "  ".join(c.ljust(widths[i]) if i < 2 else c.rjust(widths[i]) for i, c in enumerate(r))
        )
    if intents:
        lines.extend(
            f"{_iso(i.due_at)}  {i.step_id}  {i.template}  {i.contact_id}  {i.key}"
            for i in report.intents
        )
        lines.extend(
            f"{_iso(k.intent.due_at)}  {k.intent.step_id}  {k.intent.template}  "
            f"{k.intent.contact_id}  {k.intent.key}  skipped {k.reason.value}"
            for k in report.skipped
        )
        lines.extend(
            f"{_iso(d.intent.due_at)}  {d.intent.step_id}  {d.intent.template}  "
            f"{d.intent.contact_id}  {d.intent.key}  deferred until {_iso(d.until)} "
            f"{d.reason.value}"
            for d in report.deferred
        )
    return "\n".join(lines)
