"""Journey definitions: a trigger, steps, a re-entry policy and goals, checked whole.

A journey is a small graph. A contact *enters* when its trigger fires, walks from
the start step along each step's ``next`` (a branch picks ``then`` or
``otherwise``), and leaves at a step with no successor or when it meets a goal.
The definition is data: :meth:`Journey.from_dict` reads the JSON/YAML form,
:meth:`Journey.to_dict` writes it back, and both name every problem by its JSON
path (``$.steps[2].next``) in a :class:`~commhistory.errors.JourneyDefinitionError`.

A definition is refused, before anything runs, when:

* a field is unknown, missing or of the wrong type, or an enum value is unknown;
* two steps share an id, or a ``next``/``then``/``otherwise``/``of_step`` names no step;
* a step cannot be reached from the start step;
* a cycle has no step that is sure to wait (a :class:`WaitStep` with a ``delay`` or
  an ``until_time``): such a loop would send without end in one ``due`` call.

Durations are written ``"3d"``, ``"12h"``, ``"30m"``, ``"45s"`` or combined
(``"1d12h"``); times of day ``"HH:MM"`` in the contact's zone.

.. versionadded:: 0.4.0
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, TypeAlias, TypeVar

import attrs

from commhistory.errors import JourneyDefinitionError
from commhistory.model import Channel, EventType, Purpose

__all__ = [
    "ActivityGoal",
    "ActivityTrigger",
    "Behaviour",
    "BranchStep",
    "DateTrigger",
    "EventTrigger",
    "Goal",
    "Journey",
    "ReEntry",
    "SegmentExitGoal",
    "SegmentTrigger",
    "SendStep",
    "Step",
    "Trigger",
    "UnsubscribeGoal",
    "WaitStep",
    "WhenBlocked",
    "format_duration",
    "parse_duration",
]

_KEY: Final = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_DURATION: Final = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
_TIME: Final = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
_MAX_OFFSET_DAYS: Final = 366


class ReEntry(enum.StrEnum):
    """Whether a contact may enter a journey it has entered before.

    * ``ONCE``: once ever (per journey key, across versions);
    * ``PERIODIC``: again once ``reentry_days`` have passed since the last entry;
    * ``ALWAYS``: on every trigger (each triggering record still enters only once).
    """

    ONCE = "once"
    PERIODIC = "periodic"
    ALWAYS = "always"


class WhenBlocked(enum.StrEnum):
    """What a send step does when send planning holds it (quiet hours, a frequency cap).

    ``DEFER`` waits for the next allowed instant; ``SKIP`` moves on without sending.
    A step without consent, or to a suppressed address, is never sent either way.
    """

    DEFER = "defer"
    SKIP = "skip"


# --- triggers ---------------------------------------------------------------------


@attrs.frozen
class ActivityTrigger:
    """Enter when the contact records an activity (``purchase``, ``cart_abandoned``).

    Attributes:
        name: The declared activity name.
        properties: Plain properties the activity must carry with these values.
    """

    name: str
    properties: Mapping[str, str | int | bool] = attrs.field(factory=dict)


@attrs.frozen
class EventTrigger:
    """Enter when a message event happens (a click on a campaign's link, a reply).

    Attributes:
        event: The event type.
        campaign: Only events of messages of this campaign, or any.
        channel: Only messages on this channel, or any.
    """

    event: EventType
    campaign: str | None = None
    channel: Channel | None = None


@attrs.frozen
class SegmentTrigger:
    """Enter when the contact enters a saved segment (a new member of its snapshot).

    Attributes:
        segment: The saved segment's name.
    """

    segment: str


@attrs.frozen
class DateTrigger:
    """Enter on a date attribute, shifted by ``offset_days``, at ``at`` in the contact's zone.

    Attributes:
        attribute: A declared ``date`` attribute (``birth_date``, ``renewal_date``).
        offset_days: Days after (positive) or before (negative) the date.
        annual: Recur every year on the date's month and day (a birthday); a
            29 February falls on 28 February in other years.
        at: The local time of day to enter.
    """

    attribute: str
    offset_days: int = 0
    annual: bool = False
    at: dt.time = dt.time(9, 0)


Trigger: TypeAlias = ActivityTrigger | EventTrigger | SegmentTrigger | DateTrigger
"""Any trigger."""

# --- steps ------------------------------------------------------------------------


@attrs.frozen
class SendStep:
    """Send the message of ``template`` on ``channel`` for ``purpose``.

    Attributes:
        id: The step's id, unique in the journey.
        template: The host's template key (the library renders nothing).
        channel: The channel to send on.
        purpose: The purpose, which decides the consent it needs.
        next: The following step, or ``None`` to end the journey.
    """

    id: str
    template: str
    channel: Channel
    purpose: Purpose = Purpose.MARKETING
    next: str | None = None


@attrs.frozen
class WaitStep:
    """Wait, then go on: a fixed delay, until a local time of day, or until sending is allowed.

    At least one of the three is set; when several are, they apply in that order
    (wait ``delay``, then until the next ``until_time``, then until send planning
    would allow the next step).

    Attributes:
        id: The step's id.
        delay: How long to wait.
        until_time: Wait until the next occurrence of this local time (strictly later).
        until_allowed: Wait until quiet hours and frequency caps allow a send.
        next: The following step, or ``None``.
    """

    id: str
    delay: dt.timedelta | None = None
    until_time: dt.time | None = None
    until_allowed: bool = False
    next: str | None = None

    @property
    def surely_waits(self) -> bool:
        """Whether this step always lets time pass (a positive delay or a time of day)."""
        return (self.delay is not None and self.delay > dt.timedelta(0)) or (
            self.until_time is not None
        )


@attrs.frozen
class Behaviour:
    """What a branch waits for: a message event of a send step, or an activity.

    Exactly one of ``event`` and ``activity`` is set.

    Attributes:
        event: The event type (``opened``, ``clicked``, ``converted``, ``replied``).
        of_step: The send step whose message the event belongs to; ``None`` means
            any message sent by this enrollment.
        activity: An activity name the contact records after entering.
    """

    event: EventType | None = None
    of_step: str | None = None
    activity: str | None = None


@attrs.frozen
class BranchStep:
    """Wait up to ``within`` for a behaviour; go to ``then`` when it happens, else ``otherwise``.

    Attributes:
        id: The step's id.
        condition: What to wait for.
        within: The timeout.
        then: The step when the behaviour happened in time, or ``None`` to end.
        otherwise: The step when the timeout passed first, or ``None`` to end.
    """

    id: str
    condition: Behaviour
    within: dt.timedelta
    then: str | None = None
    otherwise: str | None = None


Step: TypeAlias = SendStep | WaitStep | BranchStep
"""Any step."""

# --- goals ------------------------------------------------------------------------


@attrs.frozen
class ActivityGoal:
    """Leave the journey (converted) when the contact records this activity.

    Attributes:
        activity: The activity name (``purchase``).
        match: Property names whose values must equal the entering activity's
            (a purchase of the abandoned cart's ``sku``); empty: any such activity.
    """

    activity: str
    match: tuple[str, ...] = ()


@attrs.frozen
class UnsubscribeGoal:
    """Leave the journey when the contact unsubscribes (on ``channel``, or any)."""

    channel: Channel | None = None


@attrs.frozen
class SegmentExitGoal:
    """Leave the journey when the contact leaves a saved segment."""

    segment: str


Goal: TypeAlias = ActivityGoal | UnsubscribeGoal | SegmentExitGoal
"""Any goal (exit criterion)."""

# --- the journey ------------------------------------------------------------------


@attrs.frozen
class Journey:
    """A versioned journey definition; build with :meth:`from_dict` to have it checked.

    Attributes:
        key: The journey's stable key (lower case, digits, ``_.-``).
        version: The definition's version, from 1; enrolled contacts stay on theirs.
        trigger: What enrolls a contact.
        steps: The steps; the first is the start unless ``start`` names another.
        start: The start step's id (default: the first step's).
        reentry: Whether a contact may enter again.
        reentry_days: The period for ``ReEntry.PERIODIC``.
        goals: What ends the journey early as reached.
        when_blocked: What a send step does when send planning holds it.
        name: A human title (optional).
    """

    key: str
    version: int
    trigger: Trigger
    steps: tuple[Step, ...]
    start: str = ""
    reentry: ReEntry = ReEntry.ONCE
    reentry_days: int | None = None
    goals: tuple[Goal, ...] = ()
    when_blocked: WhenBlocked = WhenBlocked.DEFER
    name: str = ""

    def __attrs_post_init__(self) -> None:
        if not self.start and self.steps:
            object.__setattr__(self, "start", self.steps[0].id)
        _check(self)

    def step(self, step_id: str) -> Step:
        """The step with this id.

        Raises:
            KeyError: no such step (an id from outside this definition).
        """
        for candidate in self.steps:
            if candidate.id == step_id:
                return candidate
        raise KeyError(step_id)

    @property
    def send_steps(self) -> tuple[SendStep, ...]:
        """The send steps, in definition order."""
        return tuple(step for step in self.steps if isinstance(step, SendStep))

    @classmethod
    def from_dict(cls, data: object) -> Journey:
        """Read a definition from its JSON form, checking everything.

        Raises:
            JourneyDefinitionError: naming the JSON path and the reason.
        """
        return _read_journey(data)

    @classmethod
    def loads(cls, text: str) -> Journey:
        """Read a definition from JSON text."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise JourneyDefinitionError(
                field="$", reason=f"not JSON (line {exc.lineno}, column {exc.colno})"
            ) from None
        return cls.from_dict(data)

    @classmethod
    def load(cls, path: str | Path) -> Journey:
        """Read a definition from a ``.json`` file (``.yaml``/``.yml`` with PyYAML installed)."""
        path = Path(path)
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() in {".yaml", ".yml"}:
            try:
                import yaml  # type: ignore[import-untyped,unused-ignore]  # noqa: PLC0415
            except ImportError:  # pragma: no cover - depends on the environment
                raise JourneyDefinitionError(
                    field="$", reason="reading YAML needs PyYAML (pip install pyyaml)"
                ) from None
            try:
                data = yaml.safe_load(text)
            except yaml.YAMLError:
                raise JourneyDefinitionError(field="$", reason="not valid YAML") from None
            return cls.from_dict(data)
        return cls.loads(text)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form; :meth:`from_dict` reads it back to an equal journey."""
        out: dict[str, Any] = {
            "key": self.key,
            "version": self.version,
            "trigger": _trigger_dict(self.trigger),
            "steps": [_step_dict(step) for step in self.steps],
            "start": self.start,
            "reentry": self.reentry.value,
            "goals": [_goal_dict(goal) for goal in self.goals],
            "when_blocked": self.when_blocked.value,
        }
        if self.reentry_days is not None:
            out["reentry_days"] = self.reentry_days
        if self.name:
            out["name"] = self.name
        return out


# --- durations and times ------------------------------------------------------------


def parse_duration(text: str, *, field: str = "$") -> dt.timedelta:
    """Parse ``"3d"``, ``"12h"``, ``"30m"``, ``"45s"`` or a combination (``"1d12h"``).

    Raises:
        JourneyDefinitionError: the text is not such a duration.
    """
    match = _DURATION.match(text)
    if not text or match is None:
        raise JourneyDefinitionError(
            field=field, reason='not a duration like "3d", "12h", "30m" or "1d12h"'
        )
    days, hours, minutes, seconds = (int(part) if part else 0 for part in match.groups())
    return dt.timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)


def format_duration(value: dt.timedelta) -> str:
    """Write a duration in the form :func:`parse_duration` reads."""
    seconds = int(value.total_seconds())
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


def _parse_time(value: object, field: str) -> dt.time:
    match = _TIME.match(value) if isinstance(value, str) else None
    if match is None:
        raise JourneyDefinitionError(field=field, reason='not a time of day like "09:30"')
    return dt.time(int(match.group(1)), int(match.group(2)))


def _format_time(value: dt.time) -> str:
    return f"{value.hour:02d}:{value.minute:02d}"


# --- reading ----------------------------------------------------------------------

_E = TypeVar("_E", bound=enum.StrEnum)


class _Fields:
    """One JSON object being read: typed getters that name the path, and a leftover check."""

    def __init__(self, data: object, path: str) -> None:
        if not isinstance(data, Mapping):
            raise JourneyDefinitionError(field=path, reason="must be an object")
        for name in data:
            if not isinstance(name, str):
                raise JourneyDefinitionError(field=path, reason="keys must be strings")
        self._data: Mapping[str, object] = data
        self._path = path
        self._seen: set[str] = set()

    def at(self, name: str) -> str:
        return f"{self._path}.{name}"

    def raw(self, name: str, *, required: bool = False) -> object:
        self._seen.add(name)
        if name not in self._data:
            if required:
                raise JourneyDefinitionError(field=self.at(name), reason="is required")
            return None
        return self._data[name]

    def text(self, name: str, *, required: bool = False, key: bool = False) -> str | None:
        value = self.raw(name, required=required)
        if value is None and not required:
            return None
        if not isinstance(value, str) or not value:
            raise JourneyDefinitionError(field=self.at(name), reason="must be a non-empty string")
        if key and not _KEY.match(value):
            raise JourneyDefinitionError(
                field=self.at(name),
                reason="must be lower case letters, digits, '_', '.' or '-' (at most 64)",
            )
        return value

    def required_text(self, name: str, *, key: bool = False) -> str:
        value = self.text(name, required=True, key=key)
        if value is None:  # pragma: no cover - text(required=True) raises first
            raise JourneyDefinitionError(field=self.at(name), reason="is required")
        return value

    def required_choice(self, name: str, kind: type[_E]) -> _E:
        value = self.choice(name, kind)
        if value is None:
            raise JourneyDefinitionError(field=self.at(name), reason="is required")
        return value

    def integer(self, name: str, *, default: int | None = None) -> int | None:
        value = self.raw(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise JourneyDefinitionError(field=self.at(name), reason="must be an integer")
        return value

    def flag(self, name: str, *, default: bool = False) -> bool:
        value = self.raw(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise JourneyDefinitionError(field=self.at(name), reason="must be true or false")
        return value

    def choice(self, name: str, kind: type[_E]) -> _E | None:
        value = self.raw(name)
        if value is None:
            return None
        try:
            if not isinstance(value, str):
                raise ValueError(name)
            return kind(value)
        except ValueError:
            allowed = ", ".join(member.value for member in kind)
            raise JourneyDefinitionError(
                field=self.at(name), reason=f"must be one of: {allowed}"
            ) from None

    def items(self, name: str) -> list[tuple[str, object]]:
        value = self.raw(name)
        if value is None:
            return []
        if not isinstance(value, list):
            raise JourneyDefinitionError(field=self.at(name), reason="must be a list")
        return [(f"{self.at(name)}[{index}]", item) for index, item in enumerate(value)]

    def done(self) -> None:
        extra = sorted(set(self._data) - self._seen)
        if extra:
            raise JourneyDefinitionError(
                field=self.at(extra[0]), reason="is not a known field here"
            )


def _kind(fields: _Fields, allowed: Sequence[str]) -> str:
    value = fields.raw("type", required=True)
    if not isinstance(value, str) or value not in allowed:
        raise JourneyDefinitionError(
            field=fields.at("type"), reason=f"must be one of: {', '.join(allowed)}"
        )
    return value


def _read_trigger(data: object, path: str) -> Trigger:
    fields = _Fields(data, path)
    kind = _kind(fields, ("activity", "event", "segment", "date"))
    trigger: Trigger
    if kind == "activity":
        name = fields.required_text("name")
        properties = fields.raw("properties") or {}
        if not isinstance(properties, Mapping) or not all(
            isinstance(value, str | int | bool) for value in properties.values()
        ):
            raise JourneyDefinitionError(
                field=fields.at("properties"),
                reason="must be an object of strings, integers or booleans",
            )
        trigger = ActivityTrigger(name=name, properties=dict(properties))
    elif kind == "event":
        event = fields.required_choice("event", EventType)
        trigger = EventTrigger(
            event=event,
            campaign=fields.text("campaign"),
            channel=fields.choice("channel", Channel),
        )
    elif kind == "segment":
        segment = fields.required_text("segment")
        trigger = SegmentTrigger(segment=segment)
    else:
        attribute = fields.required_text("attribute")
        offset = fields.integer("offset_days") or 0
        if abs(offset) > _MAX_OFFSET_DAYS:
            raise JourneyDefinitionError(
                field=fields.at("offset_days"),
                reason=f"must be between -{_MAX_OFFSET_DAYS} and {_MAX_OFFSET_DAYS}",
            )
        at_raw = fields.raw("at")
        trigger = DateTrigger(
            attribute=attribute,
            offset_days=offset,
            annual=fields.flag("annual"),
            at=dt.time(9, 0) if at_raw is None else _parse_time(at_raw, fields.at("at")),
        )
    fields.done()
    return trigger


def _read_duration(fields: _Fields, name: str, *, required: bool = False) -> dt.timedelta | None:
    value = fields.raw(name, required=required)
    if value is None:
        return None
    if not isinstance(value, str):
        raise JourneyDefinitionError(field=fields.at(name), reason="must be a duration string")
    return parse_duration(value, field=fields.at(name))


def _read_step(data: object, path: str) -> Step:
    fields = _Fields(data, path)
    kind = _kind(fields, ("send", "wait", "branch"))
    step_id = fields.required_text("id", key=True)
    step: Step
    if kind == "send":
        template = fields.required_text("template")
        channel = fields.required_choice("channel", Channel)
        purpose = fields.choice("purpose", Purpose) or Purpose.MARKETING
        step = SendStep(
            id=step_id,
            template=template,
            channel=channel,
            purpose=purpose,
            next=fields.text("next"),
        )
    elif kind == "wait":
        delay = _read_duration(fields, "delay")
        until_raw = fields.raw("until_time")
        until_time = None if until_raw is None else _parse_time(until_raw, fields.at("until_time"))
        until_allowed = fields.flag("until_allowed")
        if delay is None and until_time is None and not until_allowed:
            raise JourneyDefinitionError(
                field=path, reason="a wait needs a delay, an until_time or until_allowed"
            )
        step = WaitStep(
            id=step_id,
            delay=delay,
            until_time=until_time,
            until_allowed=until_allowed,
            next=fields.text("next"),
        )
    else:
        condition = _read_behaviour(fields.raw("condition", required=True), fields.at("condition"))
        within = _read_duration(fields, "within", required=True)
        if within is None or within <= dt.timedelta(0):
            raise JourneyDefinitionError(field=fields.at("within"), reason="must be positive")
        step = BranchStep(
            id=step_id,
            condition=condition,
            within=within,
            then=fields.text("then"),
            otherwise=fields.text("otherwise"),
        )
    fields.done()
    return step


def _read_behaviour(data: object, path: str) -> Behaviour:
    fields = _Fields(data, path)
    event = fields.choice("event", EventType)
    activity = fields.text("activity")
    of_step = fields.text("of_step")
    fields.done()
    if (event is None) == (activity is None):
        raise JourneyDefinitionError(field=path, reason="needs exactly one of event and activity")
    if of_step is not None and event is None:
        raise JourneyDefinitionError(
            field=f"{path}.of_step", reason="applies to an event, not an activity"
        )
    return Behaviour(event=event, of_step=of_step, activity=activity)


def _read_goal(data: object, path: str) -> Goal:
    fields = _Fields(data, path)
    kind = _kind(fields, ("activity", "unsubscribe", "segment_exit"))
    goal: Goal
    if kind == "activity":
        activity = fields.required_text("activity")
        match: list[str] = []
        for item_path, item in fields.items("match"):
            if not isinstance(item, str) or not item:
                raise JourneyDefinitionError(field=item_path, reason="must be a property name")
            match.append(item)
        goal = ActivityGoal(activity=activity, match=tuple(match))
    elif kind == "unsubscribe":
        goal = UnsubscribeGoal(channel=fields.choice("channel", Channel))
    else:
        segment = fields.required_text("segment")
        goal = SegmentExitGoal(segment=segment)
    fields.done()
    return goal


def _read_journey(data: object) -> Journey:
    fields = _Fields(data, "$")
    key = fields.required_text("key", key=True)
    version = fields.integer("version")
    if version is None:
        raise JourneyDefinitionError(field="$.version", reason="is required")
    if version < 1:
        raise JourneyDefinitionError(field="$.version", reason="must be at least 1")
    trigger = _read_trigger(fields.raw("trigger", required=True), "$.trigger")
    steps = tuple(_read_step(item, item_path) for item_path, item in fields.items("steps"))
    if not steps:
        raise JourneyDefinitionError(field="$.steps", reason="needs at least one step")
    goals = tuple(_read_goal(item, item_path) for item_path, item in fields.items("goals"))
    reentry = fields.choice("reentry", ReEntry) or ReEntry.ONCE
    reentry_days = fields.integer("reentry_days")
    when_blocked = fields.choice("when_blocked", WhenBlocked) or WhenBlocked.DEFER
    start = fields.text("start") or ""
    name = fields.raw("name")
    if name is not None and not isinstance(name, str):
        raise JourneyDefinitionError(field="$.name", reason="must be a string")
    fields.done()
    return Journey(
        key=key,
        version=version,
        trigger=trigger,
        steps=steps,
        start=start,
        reentry=reentry,
        reentry_days=reentry_days,
        goals=goals,
        when_blocked=when_blocked,
        name=name or "",
    )


# --- the whole-graph checks -----------------------------------------------------------


def _successors(step: Step) -> Iterator[tuple[str, str | None]]:
    """Each outgoing edge as (field name, target id or None)."""
    if isinstance(step, BranchStep):
        yield "then", step.then
        yield "otherwise", step.otherwise
    else:
        yield "next", step.next


def _check(journey: Journey) -> None:
    """The checks that need the whole journey; paths point into its JSON form."""
    index: dict[str, int] = {}
    for position, step in enumerate(journey.steps):
        if step.id in index:
            raise JourneyDefinitionError(
                field=f"$.steps[{position}].id",
                reason=f"repeats the id of $.steps[{index[step.id]}]",
            )
        index[step.id] = position
    if journey.start not in index:
        raise JourneyDefinitionError(field="$.start", reason="names no step")
    for position, step in enumerate(journey.steps):
        for name, target in _successors(step):
            if target is not None and target not in index:
                raise JourneyDefinitionError(
                    field=f"$.steps[{position}].{name}", reason="names no step"
                )
        if isinstance(step, BranchStep) and step.condition.of_step is not None:
            target_pos = index.get(step.condition.of_step)
            if target_pos is None or not isinstance(journey.steps[target_pos], SendStep):
                raise JourneyDefinitionError(
                    field=f"$.steps[{position}].condition.of_step", reason="names no send step"
                )
    if journey.reentry is ReEntry.PERIODIC and (
        journey.reentry_days is None or journey.reentry_days < 1
    ):
        raise JourneyDefinitionError(
            field="$.reentry_days", reason="a periodic re-entry needs at least 1 day"
        )
    if journey.reentry is not ReEntry.PERIODIC and journey.reentry_days is not None:
        raise JourneyDefinitionError(
            field="$.reentry_days", reason="applies only to reentry 'periodic'"
        )
    for position, goal in enumerate(journey.goals):
        if (
            isinstance(goal, ActivityGoal)
            and goal.match
            and not isinstance(journey.trigger, ActivityTrigger)
        ):
            raise JourneyDefinitionError(
                field=f"$.goals[{position}].match",
                reason="matches the entering activity's properties: needs an activity trigger",
            )
    reached = _reachable(journey, index)
    for position, step in enumerate(journey.steps):
        if step.id not in reached:
            raise JourneyDefinitionError(
                field=f"$.steps[{position}]", reason="cannot be reached from the start step"
            )
    cycle = _cycle_without_wait(journey, index)
    if cycle:
        path = " -> ".join([*cycle, cycle[0]])
        raise JourneyDefinitionError(
            field=f"$.steps[{index[cycle[0]]}]",
            reason=f"loops without a wait step that surely waits ({path})",
        )


def _reachable(journey: Journey, index: Mapping[str, int]) -> set[str]:
    seen = {journey.start}
    stack = [journey.start]
    while stack:
        step = journey.steps[index[stack.pop()]]
        for _name, target in _successors(step):
            if target is not None and target not in seen:
                seen.add(target)
                stack.append(target)
    return seen


def _cycle_without_wait(journey: Journey, index: Mapping[str, int]) -> list[str]:
    """A cycle among the steps that do not surely wait, or an empty list.

    Steps that surely wait cut every cycle through them, so a cycle in the graph
    left after removing them is a loop that could run without time passing.
    """
    nodes = {
        step.id for step in journey.steps if not (isinstance(step, WaitStep) and step.surely_waits)
    }
    colour: dict[str, int] = {}  # 1: on the stack, 2: done
    trail: list[str] = []

    def visit(node: str) -> list[str]:
        colour[node] = 1
        trail.append(node)
        for _name, target in _successors(journey.steps[index[node]]):
            if target is None or target not in nodes:
                continue
            if colour.get(target) == 1:
                return trail[trail.index(target) :]
            if target not in colour:
                found = visit(target)
                if found:
                    return found
        colour[node] = 2
        trail.pop()
        return []

    for step in journey.steps:
        if step.id in nodes and step.id not in colour:
            found = visit(step.id)
            if found:
                return found
    return []


# --- writing ----------------------------------------------------------------------


def _drop_none(values: Mapping[str, object]) -> dict[str, Any]:
    return {name: value for name, value in values.items() if value is not None}


def _trigger_dict(trigger: Trigger) -> dict[str, Any]:
    if isinstance(trigger, ActivityTrigger):
        out: dict[str, Any] = {"type": "activity", "name": trigger.name}
        if trigger.properties:
            out["properties"] = dict(trigger.properties)
        return out
    if isinstance(trigger, EventTrigger):
        return _drop_none(
            {
                "type": "event",
                "event": trigger.event.value,
                "campaign": trigger.campaign,
                "channel": trigger.channel.value if trigger.channel else None,
            }
        )
    if isinstance(trigger, SegmentTrigger):
        return {"type": "segment", "segment": trigger.segment}
    return {
        "type": "date",
        "attribute": trigger.attribute,
        "offset_days": trigger.offset_days,
        "annual": trigger.annual,
        "at": _format_time(trigger.at),
    }


def _step_dict(step: Step) -> dict[str, Any]:
    if isinstance(step, SendStep):
        return _drop_none(
            {
                "type": "send",
                "id": step.id,
                "template": step.template,
                "channel": step.channel.value,
                "purpose": step.purpose.value,
                "next": step.next,
            }
        )
    if isinstance(step, WaitStep):
        out = _drop_none(
            {
                "type": "wait",
                "id": step.id,
                "delay": format_duration(step.delay) if step.delay is not None else None,
                "until_time": _format_time(step.until_time)
                if step.until_time is not None
                else None,
                "next": step.next,
            }
        )
        if step.until_allowed:
            out["until_allowed"] = True
        return out
    condition = _drop_none(
        {
            "event": step.condition.event.value if step.condition.event else None,
            "of_step": step.condition.of_step,
            "activity": step.condition.activity,
        }
    )
    return _drop_none(
        {
            "type": "branch",
            "id": step.id,
            "condition": condition,
            "within": format_duration(step.within),
            "then": step.then,
            "otherwise": step.otherwise,
        }
    )


def _goal_dict(goal: Goal) -> dict[str, Any]:
    if isinstance(goal, ActivityGoal):
        out: dict[str, Any] = {"type": "activity", "activity": goal.activity}
        if goal.match:
            out["match"] = list(goal.match)
        return out
    if isinstance(goal, UnsubscribeGoal):
        return _drop_none(
            {"type": "unsubscribe", "channel": goal.channel.value if goal.channel else None}
        )
    return {"type": "segment_exit", "segment": goal.segment}
