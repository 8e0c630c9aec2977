"""Journeys: step mail and trigger scenarios, decided as "what is due for whom now".

A library does not send. A journey definition (:class:`Journey`) says what
enrolls a contact, which steps follow and what ends the journey early; the
store keeps each contact's enrollment, and ``due(now)`` says which sends are
due, each with a deterministic idempotency key, after send planning
(:mod:`commhistory.journeys.gate`) deferred or skipped what it holds back. This package holds the
definitions and their checks (:mod:`commhistory.journeys.definition`); see
:doc:`/journeys`.

.. versionadded:: 0.4.0
"""

from commhistory.journeys.definition import (
    ActivityGoal,
    ActivityTrigger,
    Behaviour,
    BranchStep,
    DateTrigger,
    EventTrigger,
    Goal,
    Journey,
    ReEntry,
    SegmentExitGoal,
    SegmentTrigger,
    SendStep,
    Step,
    Trigger,
    UnsubscribeGoal,
    WaitStep,
    WhenBlocked,
    format_duration,
    parse_duration,
)
from commhistory.journeys.gate import DeferredIntent, DueResult, SkippedIntent
from commhistory.journeys.machine import (
    Advance,
    BehaviourSource,
    Enrollment,
    Position,
    RecordedBehaviour,
    SendIntent,
    Status,
    advance,
    intent_key,
    next_local_time,
    wait_end,
)

__all__ = [
    "ActivityGoal",
    "ActivityTrigger",
    "Advance",
    "Behaviour",
    "BehaviourSource",
    "BranchStep",
    "DateTrigger",
    "DeferredIntent",
    "DueResult",
    "Enrollment",
    "EventTrigger",
    "Goal",
    "Journey",
    "Position",
    "ReEntry",
    "RecordedBehaviour",
    "SegmentExitGoal",
    "SegmentTrigger",
    "SendIntent",
    "SendStep",
    "SkippedIntent",
    "Status",
    "Step",
    "Trigger",
    "UnsubscribeGoal",
    "WaitStep",
    "WhenBlocked",
    "advance",
    "format_duration",
    "intent_key",
    "next_local_time",
    "parse_duration",
    "wait_end",
]
