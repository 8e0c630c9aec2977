"""How one enrollment walks its journey: a pure step machine over a behaviour history.

:func:`advance` takes an enrollment's :class:`Position`, the time now and what
the contact did (a :class:`BehaviourSource`), and returns the new position and
the send intents due. It reads no clock and no database, so the same inputs
always give the same answer: the store-backed ``due(now)`` and the dry-run
replay of a stored history both run on it.

The rules, in the order they apply:

* **Goals first.** The first goal met after entry (an activity, optionally
  matching the entering activity's properties; an unsubscribe; leaving a
  segment) ends the walk at that instant: no step at or after it runs.
* **A send step** yields a :class:`SendIntent` with a deterministic key
  (:func:`intent_key`: journey, version, enrollment, step and the how-many-th
  visit of that step). The walk stops there until the host records the sent
  message under that key (:meth:`BehaviourSource.sent_at`); it then goes on
  from the recorded send time. A step the host skipped (send planning
  refused it) is recorded the same way and counts as done.
* **A wait step** waits its ``delay``, then until the next ``until_time``
  (strictly later, in the contact's zone), then until ``allowed`` says a send
  may go (quiet hours and caps, from send planning).
* **A branch step** goes to ``then`` at the moment the behaviour is seen (at the
  branch's start when it happened earlier, since entry), or to ``otherwise``
  when ``within`` has passed without it.
* A step with no successor completes the journey.

.. versionadded:: 0.4.0
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
from collections.abc import Callable, Mapping
from typing import Final, Protocol
from zoneinfo import ZoneInfo

import attrs

from commhistory.errors import InvalidInputError
from commhistory.journeys.definition import (
    ActivityGoal,
    ActivityTrigger,
    Behaviour,
    BranchStep,
    Goal,
    Journey,
    SegmentExitGoal,
    SendStep,
    UnsubscribeGoal,
    WaitStep,
)
from commhistory.model import Channel, EventType, Purpose

__all__ = [
    "Advance",
    "BehaviourSource",
    "Enrollment",
    "Position",
    "RecordedBehaviour",
    "SendIntent",
    "Status",
    "advance",
    "intent_key",
    "next_local_time",
    "wait_end",
]

_MAX_MOVES: Final = 10_000
"""A walk never takes more moves than this in one call (loops always wait, so it is a guard)."""


class Status(enum.StrEnum):
    """Where an enrollment stands."""

    ACTIVE = "active"
    COMPLETED = "completed"
    """It walked off a step with no successor."""
    GOAL = "goal"
    """It met an activity goal (converted)."""
    UNSUBSCRIBED = "unsubscribed"
    LEFT_SEGMENT = "left_segment"


@attrs.frozen
class Enrollment:
    """One contact's entry into one version of a journey.

    Attributes:
        enrollment_id: Unique; derived from the journey key and the triggering
            record's id, so a retried trigger enrolls once.
        contact_id: The contact (a pseudonymous id).
        entered_at: When the trigger fired (UTC).
        entry_properties: The entering activity's plain properties that goals match on.
    """

    enrollment_id: str
    contact_id: str
    entered_at: dt.datetime
    entry_properties: Mapping[str, str | int | bool] = attrs.field(factory=dict)


@attrs.frozen
class Position:
    """Where an enrollment is: its step (``None`` once it ended), since when, and how it ended.

    Attributes:
        step_id: The current step, or ``None`` when the walk has ended.
        since: When the current step began (or when the walk ended).
        status: Active, or how it ended.
        visits: How many times each step has been entered (intent keys count visits).
    """

    step_id: str | None
    since: dt.datetime
    status: Status = Status.ACTIVE
    visits: Mapping[str, int] = attrs.field(factory=dict)

    @classmethod
    def start(cls, journey: Journey, enrollment: Enrollment) -> Position:
        """The position of a new enrollment: the start step, since the entry time."""
        return cls(step_id=journey.start, since=enrollment.entered_at, visits={journey.start: 1})


@attrs.frozen
class SendIntent:
    """A send that is due: the host renders ``template`` and sends, then records it by ``key``.

    Attributes:
        key: The idempotency key (:func:`intent_key`); record the sent message with it.
        journey_key: The journey.
        version: The journey's version.
        enrollment_id: The enrollment.
        contact_id: The recipient.
        step_id: The send step.
        template: The host's template key.
        channel: The channel.
        purpose: The purpose.
        due_at: When it became due (UTC).
    """

    key: str
    journey_key: str
    version: int
    enrollment_id: str
    contact_id: str
    step_id: str
    template: str
    channel: Channel
    purpose: Purpose
    due_at: dt.datetime


@attrs.frozen
class Advance:
    """What :func:`advance` returns: the new position and the intents due (at most one)."""

    position: Position
    intents: tuple[SendIntent, ...] = ()


class BehaviourSource(Protocol):
    """What the step machine needs to know about a contact's behaviour.

    Every method answers for one enrollment's contact and returns the first
    matching instant in ``[after, until]``, or ``None``.
    """

    def sent_at(self, key: str) -> dt.datetime | None:
        """When the host recorded the send of intent ``key`` (sent or skipped), or ``None``."""
        ...

    def event_at(
        self,
        event: EventType,
        *,
        keys: tuple[str, ...] | None,
        after: dt.datetime,
        until: dt.datetime,
    ) -> dt.datetime | None:
        """The first event of this type on the messages sent under ``keys`` (``None``: any)."""
        ...

    def activity_at(
        self,
        name: str,
        *,
        match: Mapping[str, str | int | bool],
        after: dt.datetime,
        until: dt.datetime,
    ) -> dt.datetime | None:
        """The first activity ``name`` whose properties include ``match``."""
        ...

    def unsubscribed_at(
        self, channel: Channel | None, *, after: dt.datetime, until: dt.datetime
    ) -> dt.datetime | None:
        """The first unsubscribe (on ``channel``, or any)."""
        ...

    def left_segment_at(
        self, segment: str, *, after: dt.datetime, until: dt.datetime
    ) -> dt.datetime | None:
        """The first time the contact left the saved segment."""
        ...


def intent_key(journey: Journey, enrollment_id: str, step_id: str, visit: int) -> str:
    """The idempotency key of a send: one per journey, version, enrollment, step and visit."""
    digest = hashlib.sha256(
        f"{journey.key}\x1f{journey.version}\x1f{enrollment_id}\x1f{step_id}\x1f{visit}".encode()
    ).hexdigest()
    return f"jrn_{digest[:32]}"


def next_local_time(after: dt.datetime, at: dt.time, zone: ZoneInfo) -> dt.datetime:
    """The first instant strictly after ``after`` whose local time in ``zone`` is ``at`` (UTC).

    A local time that does not exist on a day (skipped by a DST change) is taken
    at the same wall-clock time with the offset before the change, i.e. shifted
    later by the gap, as :mod:`zoneinfo` does with ``fold=0``.
    """
    local = after.astimezone(zone)
    day = local.date()
    for _ in range(3):
        candidate = dt.datetime.combine(day, at, tzinfo=zone).astimezone(dt.UTC)
        if candidate > after:
            return candidate
        day += dt.timedelta(days=1)
    raise AssertionError(
        "unreachable: a later local time exists within three days"
    )  # pragma: no cover


def wait_end(
    journey: Journey,
    step: WaitStep,
    since: dt.datetime,
    *,
    zone: ZoneInfo,
    allowed: Callable[[dt.datetime, SendStep], dt.datetime] | None,
) -> dt.datetime:
    """When a wait step entered at ``since`` ends: delay, then ``until_time``, then allowed.

    ``until_allowed`` waits on ``allowed`` (the first instant at or after the
    end at which the next send step may go) only when the next step sends.
    The one rule the step machine, ``due`` and the replay share.

    .. versionadded:: 0.4.0
    """
    end = since + (step.delay or dt.timedelta(0))
    if step.until_time is not None:
        end = next_local_time(end, step.until_time, zone)
    if step.until_allowed and allowed is not None and step.next is not None:
        following = journey.step(step.next)
        if isinstance(following, SendStep):
            end = max(end, allowed(end, following))
    return end


def _first_goal(
    journey: Journey, enrollment: Enrollment, history: BehaviourSource, until: dt.datetime
) -> tuple[dt.datetime, Status] | None:
    best: tuple[dt.datetime, Status] | None = None
    for goal in journey.goals:
        found = _goal_at(goal, journey, enrollment, history, until)
        if found is not None and (best is None or found[0] < best[0]):
            best = found
    return best


def _goal_at(
    goal: Goal,
    journey: Journey,
    enrollment: Enrollment,
    history: BehaviourSource,
    until: dt.datetime,
) -> tuple[dt.datetime, Status] | None:
    after = enrollment.entered_at
    if isinstance(goal, ActivityGoal):
        match: dict[str, str | int | bool] = {}
        if goal.match and isinstance(journey.trigger, ActivityTrigger):
            for name in goal.match:
                if name not in enrollment.entry_properties:
                    return None  # the entry had no such property: nothing can match it
                match[name] = enrollment.entry_properties[name]
        when = history.activity_at(goal.activity, match=match, after=after, until=until)
        return None if when is None else (when, Status.GOAL)
    if isinstance(goal, UnsubscribeGoal):
        when = history.unsubscribed_at(goal.channel, after=after, until=until)
        return None if when is None else (when, Status.UNSUBSCRIBED)
    assert isinstance(goal, SegmentExitGoal)
    when = history.left_segment_at(goal.segment, after=after, until=until)
    return None if when is None else (when, Status.LEFT_SEGMENT)


def _behaviour_at(
    condition: Behaviour,
    *,
    journey: Journey,
    enrollment: Enrollment,
    position: Position,
    history: BehaviourSource,
    until: dt.datetime,
) -> dt.datetime | None:
    if condition.activity is not None:
        return history.activity_at(
            condition.activity, match={}, after=enrollment.entered_at, until=until
        )
    assert condition.event is not None
    keys: tuple[str, ...] | None
    if condition.of_step is None:
        keys = tuple(
            intent_key(journey, enrollment.enrollment_id, step.id, visit)
            for step in journey.send_steps
            for visit in range(1, position.visits.get(step.id, 0) + 1)
        )
    else:
        visits = position.visits.get(condition.of_step, 0)
        keys = (
            (intent_key(journey, enrollment.enrollment_id, condition.of_step, visits),)
            if visits
            else ()
        )
    if not keys:
        return None
    return history.event_at(condition.event, keys=keys, after=enrollment.entered_at, until=until)


def advance(
    journey: Journey,
    enrollment: Enrollment,
    position: Position,
    *,
    now: dt.datetime,
    zone: ZoneInfo,
    history: BehaviourSource,
    allowed: Callable[[dt.datetime, SendStep], dt.datetime] | None = None,
) -> Advance:
    """Walk ``position`` forward to ``now``; return the new position and the send due, if any.

    Args:
        journey: The enrollment's journey version.
        enrollment: The enrollment.
        position: Where it stood after the last call.
        now: The time to walk to (UTC); nothing after it is looked at.
        zone: The contact's zone, for ``until_time``.
        history: The contact's behaviour.
        allowed: For ``until_allowed`` waits: the first instant at or after the
            given one when the next send step may go; default: at once.

    Returns:
        The new position; an intent when the walk stopped at a send step whose
        send the host has not recorded yet.
    """
    if now.tzinfo is None:
        raise InvalidInputError(field="now", reason="must be timezone-aware (UTC)")
    if position.status is not Status.ACTIVE or position.step_id is None:
        return Advance(position)
    goal = _first_goal(journey, enrollment, history, now)
    horizon = goal[0] if goal is not None else now
    step_id: str | None = position.step_id
    since = position.since
    visits = dict(position.visits)

    def moved(target: str | None, at: dt.datetime) -> None:
        nonlocal step_id, since
        step_id, since = target, at
        if target is not None:
            visits[target] = visits.get(target, 0) + 1

    intents: tuple[SendIntent, ...] = ()
    for _ in range(_MAX_MOVES):
        if step_id is None or since > horizon:
            break
        step = journey.step(step_id)
        current = Position(step_id=step_id, since=since, visits=visits)
        if isinstance(step, SendStep):
            key = intent_key(journey, enrollment.enrollment_id, step.id, visits[step.id])
            sent = history.sent_at(key)
            if sent is None or sent > horizon:
                if goal is None:
                    intents = (
                        SendIntent(
                            key=key,
                            journey_key=journey.key,
                            version=journey.version,
                            enrollment_id=enrollment.enrollment_id,
                            contact_id=enrollment.contact_id,
                            step_id=step.id,
                            template=step.template,
                            channel=step.channel,
                            purpose=step.purpose,
                            due_at=since,
                        ),
                    )
                break
            moved(step.next, max(since, sent))
        elif isinstance(step, WaitStep):
            end = wait_end(journey, step, since, zone=zone, allowed=allowed)
            if end > horizon:
                break
            moved(step.next, end)
        else:
            assert isinstance(step, BranchStep)
            deadline = since + step.within
            seen = _behaviour_at(
                step.condition,
                journey=journey,
                enrollment=enrollment,
                position=current,
                history=history,
                until=min(deadline, horizon),
            )
            if seen is not None:
                moved(step.then, max(since, seen))
            elif deadline <= horizon:
                moved(step.otherwise, deadline)
            else:
                break
    else:  # pragma: no cover - definitions cannot loop without waiting
        raise RuntimeError(f"journey {journey.key}: walk did not settle")
    if step_id is None:
        return Advance(Position(step_id=None, since=since, status=Status.COMPLETED, visits=visits))
    if goal is not None:
        # Stopped at or before the goal's instant: the goal ends it, nothing more is sent.
        return Advance(Position(step_id=None, since=goal[0], status=goal[1], visits=visits))
    return Advance(Position(step_id=step_id, since=since, visits=visits), intents)


def _first(times: list[dt.datetime], after: dt.datetime, until: dt.datetime) -> dt.datetime | None:
    inside = [when for when in times if after <= when <= until]
    return min(inside) if inside else None


@attrs.define
class RecordedBehaviour:
    """A :class:`BehaviourSource` over behaviour held in memory: dry runs and tests.

    Record what the host sent and what the contact did, then hand it to
    :func:`advance`. Every instant is UTC.
    """

    sends: dict[str, dt.datetime] = attrs.field(factory=dict)
    events: list[tuple[str, EventType, dt.datetime]] = attrs.field(factory=list)
    activities: list[tuple[str, Mapping[str, str | int | bool], dt.datetime]] = attrs.field(
        factory=list
    )
    unsubscribes: list[tuple[Channel, dt.datetime]] = attrs.field(factory=list)
    segment_exits: list[tuple[str, dt.datetime]] = attrs.field(factory=list)

    def record_send(self, key: str, at: dt.datetime) -> None:
        """The host sent (or skipped) intent ``key`` at ``at``; a repeat keeps the first."""
        self.sends.setdefault(key, at)

    def sent_at(self, key: str) -> dt.datetime | None:
        """See :meth:`BehaviourSource.sent_at`."""
        return self.sends.get(key)

    def event_at(
        self,
        event: EventType,
        *,
        keys: tuple[str, ...] | None,
        after: dt.datetime,
        until: dt.datetime,
    ) -> dt.datetime | None:
        """See :meth:`BehaviourSource.event_at`."""
        wanted = None if keys is None else set(keys)
        return _first(
            [
                when
                for key, kind, when in self.events
                if kind is event and (wanted is None or key in wanted)
            ],
            after,
            until,
        )

    def activity_at(
        self,
        name: str,
        *,
        match: Mapping[str, str | int | bool],
        after: dt.datetime,
        until: dt.datetime,
    ) -> dt.datetime | None:
        """See :meth:`BehaviourSource.activity_at`."""
        return _first(
            [
                when
                for activity, properties, when in self.activities
                if activity == name
                and all(properties.get(field) == value for field, value in match.items())
            ],
            after,
            until,
        )

    def unsubscribed_at(
        self, channel: Channel | None, *, after: dt.datetime, until: dt.datetime
    ) -> dt.datetime | None:
        """See :meth:`BehaviourSource.unsubscribed_at`."""
        return _first(
            [when for on, when in self.unsubscribes if channel is None or on is channel],
            after,
            until,
        )

    def left_segment_at(
        self, segment: str, *, after: dt.datetime, until: dt.datetime
    ) -> dt.datetime | None:
        """See :meth:`BehaviourSource.left_segment_at`."""
        return _first([when for name, when in self.segment_exits if name == segment], after, until)
