"""Journeys over the store: enroll contacts, hand out the sends due, record what was sent.

The step machine (:mod:`commhistory.journeys.machine`) decides; this module
keeps its state in the store (``repo.journey_store``,
:mod:`commhistory.store.journeys`) and answers "what is due now" for every
enrollment at once:

* :func:`enroll` stores a contact's entry into a journey version, once per
  triggering record (the enrollment id is derived from the journey key and the
  trigger id), and only when the journey's re-entry policy lets the contact in;
  :func:`enroll_batch` does the same for many triggers with a constant number
  of statements.
* :func:`due` selects the active enrollments whose ``wake_at`` has come (an
  indexed query, a batch at a time), runs
  :func:`~commhistory.journeys.machine.advance` on each with the behaviour read
  for the whole batch, passes the batch's intents through send planning
  (:mod:`commhistory.journeys.gate`: refused ones are recorded as skipped with
  the reason, held ones deferred or skipped as the journey's ``when_blocked``
  says), stores the new positions with the next ``wake_at`` and **claims**
  each intent planning lets go by inserting its key into ``journey_intents``.
  Only the intents this call inserted are returned: two processes calling
  :func:`due` at once never get the same step, and calling it again returns
  nothing new.
* :func:`record_sent` records the host's send (or skip) of an intent by its key
  and wakes the enrollment, so the next :func:`due` goes on from there.

**Linking the host's message to an intent.** The host passes the id of the
message it sent to :func:`record_sent` (``message_id=``; by default the intent
key itself, for a host that uses the key as its message id). Branches on an
event of a step ("opened step 1 within 3 days") look for events of that
message in the store's ``events``.

**When behaviour is seen.** Behaviour that arrives later (an open, a
purchase) is read when the enrollment wakes: at the end of its wait, at its
branch's deadline, and, while it waits at a branch, every ``recheck``
(default one hour) before that. So a branch follows the behaviour at most
``recheck`` late (the step after it is then due from the behaviour's instant),
and a goal ends an enrollment when it next wakes; no send is handed out after
a goal was met, since goals are checked first on every wake. An enrollment
waiting for the host to record a send is not woken by time at all.

.. versionadded:: 0.4.0
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Final
from zoneinfo import ZoneInfo

import attrs

from commhistory.errors import InvalidInputError, NotFoundError
from commhistory.journeys import gate
from commhistory.journeys.definition import (
    ActivityGoal,
    BranchStep,
    Journey,
    ReEntry,
    SendStep,
    UnsubscribeGoal,
    WaitStep,
)
from commhistory.journeys.gate import DeferredIntent, DueResult, SkippedIntent
from commhistory.journeys.machine import (
    Advance,
    BehaviourSource,
    Enrollment,
    Position,
    SendIntent,
    Status,
    advance,
    intent_key,
    wait_end,
)
from commhistory.model import Channel, ConsentAction, EventType, Purpose
from commhistory.segments.planning import PlanConfig
from commhistory.store.journeys import ActivityTime, EnrollmentMove, EnrollmentRow, IntentRow
from commhistory.store.protocol import Repository

__all__ = [
    "DEFAULT_BATCH",
    "DEFAULT_RECHECK",
    "BatchEnrolled",
    "DueResult",
    "StoredBehaviour",
    "due",
    "enroll",
    "enroll_batch",
    "enrollment_id",
    "record_sent",
    "save_journey",
]

DEFAULT_RECHECK: Final = dt.timedelta(hours=1)
"""How often an enrollment waiting at a branch is looked at before its deadline."""

_OUTCOMES: Final = ("sent", "skipped")
_MICRO: Final = dt.timedelta(microseconds=1)


def _aware(value: object, field: str) -> dt.datetime:
    if not isinstance(value, dt.datetime) or value.tzinfo is None:
        raise InvalidInputError(field=field, reason="must be a timezone-aware datetime")
    return value.astimezone(dt.UTC)


def enrollment_id(journey_key: str, trigger_id: str) -> str:
    """The enrollment id of a trigger: the same for a retried trigger, per journey key."""
    digest = hashlib.sha256(f"{journey_key}\x1f{trigger_id}".encode()).hexdigest()
    return f"enr_{digest[:32]}"


def save_journey(repo: Repository, journey: Journey) -> bool:
    """Store a journey version; ``False`` when the same definition is stored already.

    Raises:
        InvalidInputError: The version is stored with another definition (``field="version"``).
    """
    text = json.dumps(journey.to_dict(), sort_keys=True, separators=(",", ":"))
    return repo.journey_store.save_definition(journey.key, journey.version, text)


def _properties(values: Mapping[str, object] | None) -> dict[str, str | int | bool]:
    out: dict[str, str | int | bool] = {}
    items: list[tuple[object, object]] = list((values or {}).items())
    for name, value in items:
        if not isinstance(name, str) or not isinstance(value, str | int | bool):
            raise InvalidInputError(
                field=f"properties.{name}", reason="must be a plain string, integer or boolean"
            )
        out[name] = value
    return out


def _enrollment(row: EnrollmentRow) -> Enrollment:
    return Enrollment(
        enrollment_id=row.enrollment_id,
        contact_id=row.contact_id,
        entered_at=row.entered_at,
        entry_properties=dict(row.entry_properties),
    )


def enroll(
    repo: Repository,
    journey: Journey,
    contact_id: str,
    trigger_id: str,
    at: dt.datetime,
    *,
    properties: Mapping[str, object] | None = None,
) -> Enrollment | None:
    """Enroll a contact on a trigger, idempotently, as the journey's re-entry policy allows.

    The journey version is stored too (:func:`save_journey`). The same trigger
    (journey key and ``trigger_id``) enrolls once: a retry returns the stored
    enrollment. A new trigger enrolls unless ``reentry`` forbids it: ``once``
    (the contact entered this journey before, any version), ``periodic`` (less
    than ``reentry_days`` since the last entry).

    Args:
        repo: The repository.
        journey: The journey version to walk.
        contact_id: The contact (pseudonymous id).
        trigger_id: The triggering record's id (an activity id, an event id, ...).
        at: When the trigger fired (aware).
        properties: The triggering record's plain properties goals match on.

    Returns:
        The enrollment, or ``None`` when the re-entry policy kept the contact out.

    Raises:
        InvalidInputError: ``at`` is naive, a property is not a plain value, or
            the journey version is stored with another definition.

    .. versionchanged:: 0.4.0
       One entry of :func:`enroll_batch`: the same checks and statements.
    """
    with repo.transaction():
        enroll_batch(repo, journey, [(contact_id, trigger_id, at, properties or {})])
        stored = repo.journey_store.enrollment(enrollment_id(journey.key, trigger_id))
    return None if stored is None else _enrollment(stored)


Entry = tuple[str, str, dt.datetime, Mapping[str, object]]
"""One entry to enroll: contact id, trigger id, when it fired (aware), its plain properties."""


@attrs.frozen(kw_only=True)
class BatchEnrolled:
    """What :func:`enroll_batch` did with each entry, by trigger id.

    Attributes:
        enrolled: The triggers that enrolled a contact now.
        kept_out: The triggers the re-entry policy refused.
        known: The triggers that had enrolled a contact already (a retry).

    .. versionadded:: 0.4.0
    """

    enrolled: tuple[str, ...] = ()
    kept_out: tuple[str, ...] = ()
    known: tuple[str, ...] = ()


def _admits(journey: Journey, last: dt.datetime | None, at: dt.datetime) -> bool:
    """Whether the re-entry policy lets a contact whose last entry was *last* in at *at*."""
    if last is None or journey.reentry is ReEntry.ALWAYS:
        return True
    if journey.reentry is ReEntry.ONCE:
        return False
    assert journey.reentry_days is not None
    return at >= last + dt.timedelta(days=journey.reentry_days)


def enroll_batch(repo: Repository, journey: Journey, entries: Sequence[Entry]) -> BatchEnrolled:
    """Enroll many triggers at once, exactly as :func:`enroll` one after the other would.

    In one transaction and a constant number of statements, whatever the
    batch's size: the journey version is stored, other enrollments into the
    journey key are held off until the transaction ends
    (:meth:`~commhistory.store.journeys.JourneyStore.lock_entries`), one read
    gives the triggers stored already and each contact's last entry, the
    re-entry policy is applied to the entries in the order given (an entry
    admitted counts as the contact's last entry for the ones after it), and
    the admitted ones are inserted with one statement.

    Args:
        repo: The repository.
        journey: The journey version to walk.
        entries: ``(contact_id, trigger_id, at, properties)`` per trigger, in
            the order :func:`enroll` would be called.

    Returns:
        Which triggers enrolled, which the policy kept out, which had enrolled already.

    Raises:
        InvalidInputError: As :func:`enroll`, for any entry (nothing is stored then).

    .. versionadded:: 0.4.0
    """
    checked: list[tuple[str, str, dt.datetime, dict[str, str | int | bool]]] = []
    for contact_id, trigger_id, at, properties in entries:
        when = _aware(at, "at")
        if not contact_id:
            raise InvalidInputError(field="contact_id", reason="must not be empty")
        if not trigger_id:
            raise InvalidInputError(field="trigger_id", reason="must not be empty")
        checked.append((contact_id, trigger_id, when, _properties(properties)))
    store = repo.journey_store
    enrolled: list[str] = []
    kept_out: list[str] = []
    known: list[str] = []
    rows: list[EnrollmentRow] = []
    with repo.transaction():
        save_journey(repo, journey)
        if not checked:
            return BatchEnrolled()
        store.lock_entries(journey.key)
        state = store.entry_state(journey.key, {e[0] for e in checked}, {e[1] for e in checked})
        stored = set(state.known)
        last = dict(state.last)
        for contact_id, trigger_id, at, entry in checked:
            if trigger_id in stored:
                known.append(trigger_id)
                continue
            if not _admits(journey, last.get(contact_id), at):
                kept_out.append(trigger_id)
                continue
            stored.add(trigger_id)
            previous = last.get(contact_id)
            last[contact_id] = at if previous is None else max(previous, at)
            enrolled.append(trigger_id)
            rows.append(
                EnrollmentRow(
                    enrollment_id=enrollment_id(journey.key, trigger_id),
                    journey_key=journey.key,
                    version=journey.version,
                    contact_id=contact_id,
                    trigger_id=trigger_id,
                    entered_at=at,
                    entry_properties=entry,
                    step_id=journey.start,
                    since=at,
                    status=Status.ACTIVE.value,
                    visits={journey.start: 1},
                    wake_at=at,
                )
            )
        store.insert_enrollments(rows)
    return BatchEnrolled(enrolled=tuple(enrolled), kept_out=tuple(kept_out), known=tuple(known))


@attrs.define
class StoredBehaviour:
    """A :class:`~commhistory.journeys.machine.BehaviourSource` read from the store.

    * ``sent_at``: ``journey_intents.recorded_at`` (sent or skipped);
    * ``event_at``: the first event of the type on the messages recorded for
      the keys (``message_id`` given to :func:`record_sent`; only intents
      recorded as ``sent``), or on any of the contact's messages;
    * ``activity_at``: the contact's activities (``repo.activity_store``),
      properties matched after decryption;
    * ``unsubscribed_at``: the first ``unsubscribed`` event on the contact's
      messages (of the channel), or the first consent withdrawal in the
      consent ledger for one of ``purposes`` (on the channel; any channel
      when the goal names none), whichever came first;
    * ``left_segment_at``: from the saved segment's membership snapshots
      (:meth:`~commhistory.store.journeys.JourneyStore.left_segment_at`): the
      ``at`` of the first snapshot that no longer holds the contact while the
      snapshot just before it did. A contact's leaving is therefore observed at
      the next snapshot after the change, not when the data changed; snapshots
      are taken by :func:`~commhistory.journeys.triggers.run_triggers` (every
      segment a goal names) or by the host (``segment_snapshot``).

    Attributes:
        repo: The repository.
        contact_id: The contact.
        purposes: The purposes whose consent withdrawal is an unsubscribe:
            :func:`due` passes those of the journey's send steps (a journey
            of transactional sends ends on a withdrawal of transactional
            consent, not of marketing consent); default ``marketing``.

    .. versionchanged:: 0.4.0
       Consent withdrawals (of the journey's send purposes) and segment exits count.
    """

    repo: Repository
    contact_id: str
    purposes: frozenset[Purpose] = frozenset({Purpose.MARKETING})

    def sent_at(self, key: str) -> dt.datetime | None:
        """See :meth:`~commhistory.journeys.machine.BehaviourSource.sent_at`."""
        intent = self.repo.journey_store.intent(key)
        return None if intent is None else intent.recorded_at

    def event_at(
        self,
        event: EventType,
        *,
        keys: tuple[str, ...] | None,
        after: dt.datetime,
        until: dt.datetime,
    ) -> dt.datetime | None:
        """See :meth:`~commhistory.journeys.machine.BehaviourSource.event_at`."""
        store = self.repo.journey_store
        message_ids: list[str] | None = None
        if keys is not None:
            message_ids = []
            for key in keys:
                intent = store.intent(key)
                if intent is not None and intent.outcome == "sent" and intent.message_id:
                    message_ids.append(intent.message_id)
            if not message_ids:
                return None
        return store.first_event(
            self.contact_id,
            (event,),
            message_ids=message_ids,
            channel=None,
            after=after,
            until=until,
        )

    def activity_at(
        self,
        name: str,
        *,
        match: Mapping[str, str | int | bool],
        after: dt.datetime,
        until: dt.datetime,
    ) -> dt.datetime | None:
        """See :meth:`~commhistory.journeys.machine.BehaviourSource.activity_at`."""
        try:
            entries = self.repo.activity_store.activities(
                self.contact_id, names=[name], since=after, until=until + _MICRO
            )
        except NotFoundError:
            return None
        for entry in entries:
            props = entry.activity.properties
            if all(props.get(field) == value for field, value in match.items()):
                return entry.activity.occurred_at
        return None

    def unsubscribed_at(
        self, channel: Channel | None, *, after: dt.datetime, until: dt.datetime
    ) -> dt.datetime | None:
        """See :meth:`~commhistory.journeys.machine.BehaviourSource.unsubscribed_at`."""
        found = self.repo.journey_store.first_event(
            self.contact_id,
            (EventType.UNSUBSCRIBED,),
            message_ids=None,
            channel=channel,
            after=after,
            until=until,
        )
        consent = self.repo.consent_store
        for on in (channel,) if channel is not None else tuple(Channel):
            for purpose in self.purposes:
                for row in consent.consent_rows([self.contact_id], on, purpose, until):
                    if (
                        row.action is ConsentAction.WITHDRAW
                        and row.occurred_at >= after
                        and (found is None or row.occurred_at < found)
                    ):
                        found = row.occurred_at
        return found

    def left_segment_at(
        self, segment: str, *, after: dt.datetime, until: dt.datetime
    ) -> dt.datetime | None:
        """See :meth:`~commhistory.journeys.machine.BehaviourSource.left_segment_at`."""
        return self.repo.journey_store.left_segment_at(
            self.contact_id, segment, after=after, until=until
        )


def _send_purposes(journey: Journey) -> frozenset[Purpose]:
    """The purposes of the journey's send steps (``marketing`` when it has none)."""
    found = frozenset(s.purpose for s in journey.steps if isinstance(s, SendStep))
    return found or frozenset({Purpose.MARKETING})


def _wake_at(
    journey: Journey,
    enrollment: Enrollment,
    moved: Advance,
    *,
    now: dt.datetime,
    zone: ZoneInfo,
    history: BehaviourSource,
    recheck: dt.timedelta | None,
    allowed: Callable[[dt.datetime, SendStep], dt.datetime] | None = None,
) -> dt.datetime | None:
    """The next instant anything can happen to the enrollment without a recorded send."""
    position = moved.position
    if position.status is not Status.ACTIVE or position.step_id is None or moved.intents:
        return None
    step = journey.step(position.step_id)
    if isinstance(step, SendStep):
        # Recorded, but later than now (a simulated clock): wake when it was recorded.
        key = intent_key(
            journey, enrollment.enrollment_id, step.id, position.visits.get(step.id, 1)
        )
        return history.sent_at(key)
    if isinstance(step, WaitStep):
        return wait_end(journey, step, position.since, zone=zone, allowed=allowed)
    assert isinstance(step, BranchStep)
    deadline = position.since + step.within
    if recheck is not None:
        return min(deadline, now + recheck)
    return deadline


DEFAULT_BATCH: Final = 5000
"""How many waking enrollments :func:`due` reads, walks and writes at a time."""


@attrs.frozen
class _Needs:
    """What a journey's walk can ask about, so a batch reads it up front."""

    events: frozenset[EventType]
    unsubscribes: frozenset[Channel | None]
    """The channels of the unsubscribe goals (``None``: any channel)."""
    purposes: frozenset[Purpose]
    """The purposes whose consent withdrawals are unsubscribes (with unsubscribe goals)."""
    activities: frozenset[str]

    @classmethod
    def of(cls, journey: Journey) -> _Needs:
        events: set[EventType] = set()
        activities: set[str] = set()
        for step in journey.steps:
            if isinstance(step, BranchStep):
                if step.condition.event is not None:
                    events.add(step.condition.event)
                if step.condition.activity is not None:
                    activities.add(step.condition.activity)
        unsubscribes: set[Channel | None] = set()
        for goal in journey.goals:
            if isinstance(goal, ActivityGoal):
                activities.add(goal.activity)
            elif isinstance(goal, UnsubscribeGoal):
                unsubscribes.add(goal.channel)
        purposes = _send_purposes(journey) if unsubscribes else frozenset()
        return cls(frozenset(events), frozenset(unsubscribes), purposes, frozenset(activities))


def _first_in(
    times: list[dt.datetime] | None, after: dt.datetime, until: dt.datetime
) -> dt.datetime | None:
    """The first of sorted ``times`` in ``[after, until]``."""
    if times:
        for when in times:
            if when > until:
                return None
            if when >= after:
                return when
    return None


class _Batch:
    """Behaviour of a batch of enrollments, read with a few queries for the whole batch.

    It answers what :class:`StoredBehaviour` answers, from maps filled once:
    the batch's claimed intents (by enrollment id: an intent key names its
    enrollment), the events of the messages recorded for them, the contacts'
    unsubscribes (``unsubscribed`` events, and consent withdrawals in the
    ledger for the channels the goals name and the purposes of their
    journeys' send steps) and their activities, all in ``[after, until]``. A
    question outside what was read (an earlier instant, a later one, an event
    type, channel or activity no journey of the batch names, properties that
    are encrypted, segment exits) goes to :class:`StoredBehaviour`, which asks
    the store.
    """

    def __init__(
        self,
        repo: Repository,
        rows: list[EnrollmentRow],
        needs: _Needs,
        *,
        after: dt.datetime,
        until: dt.datetime,
    ) -> None:
        store = repo.journey_store
        self.repo = repo
        self.after = after
        self.until = until
        self.needs = needs
        self.intents: dict[str, IntentRow] = {
            i.key: i for i in store.intents_of([r.enrollment_id for r in rows])
        }
        self.events: dict[tuple[str, str], list[dt.datetime]] = {}
        message_ids = [
            i.message_id for i in self.intents.values() if i.outcome == "sent" and i.message_id
        ]
        if needs.events and message_ids:
            for e in store.message_events(message_ids, needs.events, after=after, until=until):
                self.events.setdefault((e.message_id, e.type), []).append(e.occurred_at)
        contacts = sorted({r.contact_id for r in rows})
        self.unsubscribes: dict[str, list[tuple[dt.datetime, str | None]]] = {}
        self.withdrawals: dict[str, list[tuple[dt.datetime, Channel, Purpose]]] = {}
        # the (channel, purpose) pairs whose consent withdrawals were read, as
        # StoredBehaviour counts them: the goals' channels (any: all), the send purposes
        self.consent_channels: frozenset[Channel] = frozenset(
            Channel if None in needs.unsubscribes else (c for c in needs.unsubscribes if c)
        )
        if needs.unsubscribes:
            found = store.events_of_contacts(
                contacts, (EventType.UNSUBSCRIBED,), after=after, until=until
            )
            for c in found:
                self.unsubscribes.setdefault(c.contact_id, []).append((c.occurred_at, c.channel))
            for w in store.consent_withdrawals(
                contacts, self.consent_channels, needs.purposes, after=after, until=until
            ):
                self.withdrawals.setdefault(w.contact_id, []).append(
                    (w.occurred_at, Channel(w.channel), Purpose(w.purpose))
                )
        self.activities: dict[tuple[str, str], list[ActivityTime]] = {}
        if needs.activities:
            for a in store.activity_times(contacts, needs.activities, after=after, until=until):
                self.activities.setdefault((a.contact_id, a.name), []).append(a)
        for times in self.events.values():
            times.sort()
        for pairs in self.unsubscribes.values():
            pairs.sort(key=lambda pair: pair[0])
        for rows_of in self.withdrawals.values():
            rows_of.sort(key=lambda row: row[0])
        for entries in self.activities.values():
            entries.sort(key=lambda a: (a.occurred_at, a.activity_id))

    def covers(self, after: dt.datetime, until: dt.datetime) -> bool:
        """Whether a window lies inside what was read."""
        return self.after <= after and until <= self.until

    def behaviour(self, contact_id: str, purposes: frozenset[Purpose]) -> _Prefetched:
        """The behaviour source of one enrollment's contact (``purposes``: its journey's)."""
        return _Prefetched(self, contact_id, purposes)


class _Prefetched:
    """One contact's behaviour from a :class:`_Batch`, as :class:`StoredBehaviour` answers it."""

    __slots__ = ("batch", "contact_id", "purposes")

    def __init__(self, batch: _Batch, contact_id: str, purposes: frozenset[Purpose]) -> None:
        self.batch = batch
        self.contact_id = contact_id
        self.purposes = purposes

    @property
    def stored(self) -> StoredBehaviour:
        """The store itself, for what the batch did not read."""
        return StoredBehaviour(self.batch.repo, self.contact_id, self.purposes)

    def sent_at(self, key: str) -> dt.datetime | None:
        intent = self.batch.intents.get(key)
        return None if intent is None else intent.recorded_at

    def event_at(
        self,
        event: EventType,
        *,
        keys: tuple[str, ...] | None,
        after: dt.datetime,
        until: dt.datetime,
    ) -> dt.datetime | None:
        batch = self.batch
        if keys is None or event not in batch.needs.events or not batch.covers(after, until):
            return self.stored.event_at(event, keys=keys, after=after, until=until)
        best: dt.datetime | None = None
        found = False
        for key in keys:
            intent = batch.intents.get(key)
            if intent is None or intent.outcome != "sent" or not intent.message_id:
                continue
            found = True
            when = _first_in(batch.events.get((intent.message_id, event.value)), after, until)
            if when is not None and (best is None or when < best):
                best = when
        return best if found else None

    def activity_at(
        self,
        name: str,
        *,
        match: Mapping[str, str | int | bool],
        after: dt.datetime,
        until: dt.datetime,
    ) -> dt.datetime | None:
        batch = self.batch
        if name not in batch.needs.activities or not batch.covers(after, until):
            return self.stored.activity_at(name, match=match, after=after, until=until)
        for entry in batch.activities.get((self.contact_id, name), ()):
            if entry.occurred_at < after or entry.occurred_at > until:
                continue
            if not match:
                return entry.occurred_at
            if entry.plain is None:  # encrypted properties: read them decrypted
                return self.stored.activity_at(name, match=match, after=after, until=until)
            plain = entry.plain
            if all(plain.get(field) == value for field, value in match.items()):
                return entry.occurred_at
        return None

    def unsubscribed_at(
        self, channel: Channel | None, *, after: dt.datetime, until: dt.datetime
    ) -> dt.datetime | None:
        batch = self.batch
        read = (
            len(batch.consent_channels) == len(Channel)
            if channel is None
            else channel in batch.consent_channels
        )
        if not read or not self.purposes <= batch.needs.purposes or not batch.covers(after, until):
            return self.stored.unsubscribed_at(channel, after=after, until=until)
        found: dt.datetime | None = None
        for when, on in batch.unsubscribes.get(self.contact_id, ()):
            if when > until:
                break
            if when >= after and (channel is None or on == channel.value):
                found = when
                break
        for when, by, purpose in batch.withdrawals.get(self.contact_id, ()):
            if when > until or (found is not None and when >= found):
                break
            if when >= after and (channel is None or by is channel) and purpose in self.purposes:
                return when
        return found

    def left_segment_at(
        self, segment: str, *, after: dt.datetime, until: dt.datetime
    ) -> dt.datetime | None:
        return self.stored.left_segment_at(segment, after=after, until=until)


@attrs.frozen
class _Move:
    """One enrollment walked in a batch: the row as read, its journey, the move, its intents."""

    row: EnrollmentRow
    journey: Journey
    stored: EnrollmentMove
    intents: tuple[SendIntent, ...]


class _Journeys:
    """The journey versions a :func:`due` call met, read from the store once each."""

    def __init__(self, repo: Repository) -> None:
        self.store = repo.journey_store
        self.loaded: dict[tuple[str, int], tuple[Journey, _Needs]] = {}

    def get(self, key: str, version: int) -> tuple[Journey, _Needs]:
        found = self.loaded.get((key, version))
        if found is None:
            text = self.store.definition(key, version)
            if text is None:
                raise NotFoundError(kind="journey version", identifier=f"{key}@{version}")
            journey = Journey.loads(text)
            found = self.loaded[(key, version)] = (journey, _Needs.of(journey))
        return found


def _walk(
    repo: Repository,
    rows: list[EnrollmentRow],
    journeys: _Journeys,
    *,
    now: dt.datetime,
    zone_for: Callable[[str], ZoneInfo],
    config: PlanConfig | None,
    recheck: dt.timedelta | None,
) -> list[_Move]:
    """Walk a batch of waking enrollments to ``now`` with behaviour read for the whole batch."""
    needs = [journeys.get(r.journey_key, r.version)[1] for r in rows]
    batch = _Batch(
        repo,
        rows,
        _Needs(
            frozenset().union(*(n.events for n in needs)),
            frozenset().union(*(n.unsubscribes for n in needs)),
            frozenset().union(*(n.purposes for n in needs)),
            frozenset().union(*(n.activities for n in needs)),
        ),
        after=min(r.entered_at for r in rows),
        until=now,
    )
    moves: list[_Move] = []
    # per journey version and per zone, not per row
    purposes: dict[tuple[str, int], frozenset[Purpose]] = {}
    allowed_in: dict[ZoneInfo, Callable[[dt.datetime, SendStep], dt.datetime] | None] = {}
    for row in rows:
        journey = journeys.get(row.journey_key, row.version)[0]
        enrollment = _enrollment(row)
        zone = zone_for(row.contact_id)
        if zone in allowed_in:
            allowed = allowed_in[zone]
        else:
            allowed = allowed_in[zone] = gate.allowed(config, zone)
        version = (row.journey_key, row.version)
        mine = purposes.get(version)
        if mine is None:
            mine = purposes[version] = _send_purposes(journey)
        history = batch.behaviour(row.contact_id, mine)
        position = Position(
            step_id=row.step_id, since=row.since, status=Status(row.status), visits=row.visits
        )
        moved = advance(
            journey, enrollment, position, now=now, zone=zone, history=history, allowed=allowed
        )
        wake = _wake_at(
            journey,
            enrollment,
            moved,
            now=now,
            zone=zone,
            history=history,
            recheck=recheck,
            allowed=allowed,
        )
        new = moved.position
        stored = EnrollmentMove(
            row.enrollment_id,
            row.revision,
            new.step_id,
            new.since,
            new.status.value,
            new.visits,
            wake,
        )
        moves.append(_Move(row, journey, stored, moved.intents))
    return moves


def _commit(
    repo: Repository,
    moves: list[_Move],
    split: gate.GateSplit,
    now: dt.datetime,
    *,
    out: list[SendIntent],
    deferred: list[DeferredIntent],
    skipped: list[SkippedIntent],
) -> None:
    """Store a batch's moves and claims as the gate split them, in one transaction.

    A deferred send is not claimed: its enrollment stays at the send step and
    wakes at the earliest deferred-until instant. Every other intent is
    claimed; a refused one is recorded as skipped with the reason at once.
    A move whose row another caller changed since it was read is not stored,
    and its intents are neither claimed nor reported: they are that caller's.
    The claimed sends, deferred and skipped intents are appended to ``out``,
    ``deferred`` and ``skipped``.
    """
    store = repo.journey_store
    verdicts: list[list[gate.Verdict | None]] = []
    stored: list[EnrollmentMove] = []
    for m in moves:
        mine = [split.verdict(i.key) for i in m.intents]
        held = [v.until for v in mine if isinstance(v, DeferredIntent)]
        verdicts.append(mine)
        # gate: a deferred send stays at its step and wakes when it may go
        stored.append(attrs.evolve(m.stored, wake_at=min(held)) if held else m.stored)
    with repo.transaction():
        won = set(store.move_many(stored))
        kept = [
            (i, v)
            for m, mine in zip(moves, verdicts, strict=True)
            if m.row.enrollment_id in won
            for i, v in zip(m.intents, mine, strict=True)
        ]
        claimed = set(
            store.claim(
                [
                    IntentRow(
                        key=i.key, enrollment_id=i.enrollment_id, step_id=i.step_id, issued_at=now
                    )
                    for i, v in kept
                    if not isinstance(v, DeferredIntent)
                ]
            )
        )
        # gate: a refused send is recorded as skipped, with the reason, at once
        # (one write for the batch).
        store.record_skips(
            [
                (v.intent.key, v.reason.value)
                for _, v in kept
                if isinstance(v, SkippedIntent) and v.intent.key in claimed
            ],
            now,
        )
    deferred.extend(v for _, v in kept if isinstance(v, DeferredIntent))
    skipped.extend(v for _, v in kept if isinstance(v, SkippedIntent) and v.intent.key in claimed)
    out.extend(i for i, v in kept if v is i and i.key in claimed)


def due(
    repo: Repository,
    now: dt.datetime,
    *,
    config: PlanConfig | None = None,
    zone_of: Callable[[str], ZoneInfo] | None = None,
    limit: int | None = None,
    recheck: dt.timedelta | None = DEFAULT_RECHECK,
    dry_run: bool = False,
    batch_size: int = DEFAULT_BATCH,
) -> DueResult:
    """Advance every enrollment whose time has come; return the sends this call claimed.

    The intents the walk yields pass send planning first
    (:mod:`commhistory.journeys.gate`): refused ones are recorded as
    ``skipped`` with the reason, held ones are deferred or skipped as the
    journey's ``when_blocked`` says; only the rest are claimed and handed out.
    Each returned intent's key is inserted into ``journey_intents`` by this
    call: another call (in this process or another) never returns it again.
    Send the message, then :func:`record_sent` the key; the enrollment goes on
    at the next :func:`due` after the recorded time.

    The waking enrollments are worked ``batch_size`` at a time, earliest
    woken first: one query reads the batch, a few more read the behaviour
    its walks ask about and the contacts' zones for the whole batch (claimed
    intents, events of their messages, unsubscribes and consent withdrawals,
    activities), send planning screens the batch's intents (one
    ``plan_send`` per channel and purpose), and one transaction stores the
    moves (each only if its row is unchanged since it was read; a deferred
    send's enrollment wakes at its deferred-until instant), claims the
    intents not deferred and records the refused ones as skipped. An
    enrollment a batch recorded a skip for is not walked again by the same
    call (it goes on at the next one).

    Args:
        repo: The repository.
        now: The instant to walk to (aware; a simulated clock is fine).
        config: Send planning's frequency caps, quiet hours and zones
            (``None``: consent, suppression, erasure and addresses only, every
            contact in UTC). Its zone resolution also places ``until_time``
            and ``until_allowed`` waits.
        zone_of: The contact's time zone for waits and deferral instants,
            replacing the configuration's (planning itself uses the configuration's).
        limit: Look at most at this many enrollments (the earliest-woken first).
        recheck: How often an enrollment waiting at a branch is re-checked
            before the branch's deadline (``None``: only at the deadline).
        dry_run: Write nothing: return what a real call would claim, defer and
            skip now (a simulation with a later ``now`` only sees the first
            send of each enrollment, since no send is recorded).
        batch_size: Enrollments per batch (read, walked, screened, written together).

    Returns:
        The claimed intents (a sequence, in the order the enrollments woke),
        with the deferred and skipped ones (:class:`~commhistory.journeys.gate.DueResult`).

    Raises:
        InvalidInputError: ``now`` is naive, or ``batch_size`` is not positive.
        NotFoundError: An enrollment's journey version is not stored.
        PlanConfigError: The configuration's zone attribute is not a declared,
            plain text attribute.

    .. versionchanged:: 0.4.0
       Works the enrollments in batches (``batch_size``); sends pass send
       planning (``config``) and the result is a
       :class:`~commhistory.journeys.gate.DueResult`.
    """
    now = _aware(now, "now")
    if batch_size < 1:
        raise InvalidInputError(field="batch_size", reason="must be at least 1")
    store = repo.journey_store
    journeys = _Journeys(repo)
    out: list[SendIntent] = []
    deferred: list[DeferredIntent] = []
    skipped: list[SkippedIntent] = []
    after: tuple[dt.datetime, str] | None = None
    # A skip recorded by this call wakes its enrollment at ``now``, behind the page
    # cursor: it goes on at the next call, as it would had the rows been read at once.
    recorded: set[str] = set()
    left = limit
    while left is None or left > 0:
        size = batch_size if left is None else min(batch_size, left)
        with repo.transaction(read=True):  # one read transaction: the batch, its behaviour
            page = store.waking(now, size, after=after)
            if not page:
                break
            rows = [r for r in page if r.enrollment_id not in recorded]
            # send planning gate: the batch's zones as planning resolves them
            zone_for = gate.zones(repo, config, [r.contact_id for r in rows], now, zone_of=zone_of)
            moves = (
                _walk(
                    repo,
                    rows,
                    journeys,
                    now=now,
                    zone_for=zone_for,
                    config=config,
                    recheck=recheck,
                )
                if rows
                else []
            )
        last = page[-1]
        assert last.wake_at is not None
        after = (last.wake_at, last.enrollment_id)
        if left is not None:
            left -= len(rows)
        # send planning gate: one plan_send per (channel, purpose) in the batch
        split = gate.screen(
            repo,
            now,
            [(m.journey, i) for m in moves for i in m.intents],
            config=config,
            zone_of=zone_for,
        )
        if dry_run:
            out.extend(split.send)
            deferred.extend(split.deferred)
            skipped.extend(split.skipped)
        elif moves:
            done = len(skipped)
            _commit(repo, moves, split, now, out=out, deferred=deferred, skipped=skipped)
            recorded.update(v.intent.enrollment_id for v in skipped[done:])
        if len(page) < size:
            break
    return DueResult(now, out, deferred, skipped)


def record_sent(
    repo: Repository,
    key: str,
    at: dt.datetime,
    outcome: str = "sent",
    *,
    message_id: str | None = None,
) -> bool:
    """Record that the host sent (or skipped) the intent ``key`` at ``at``; wake its enrollment.

    Args:
        repo: The repository.
        key: The intent key :func:`due` returned.
        at: When it was sent (aware); the journey goes on from there.
        outcome: ``"sent"`` or ``"skipped"`` (send planning refused it; the
            step counts as done either way).
        message_id: The id of the message the host recorded for it (branches
            on its events); default: the key itself. Ignored for a skip.

    Returns:
        ``False`` when the intent was recorded already (the first record stands).

    Raises:
        InvalidInputError: A naive ``at`` or an unknown outcome.
        NotFoundError: No intent with this key was handed out.
    """
    at = _aware(at, "at")
    if outcome not in _OUTCOMES:
        raise InvalidInputError(field="outcome", reason="must be 'sent' or 'skipped'")
    mid = None if outcome == "skipped" else (message_id or key)
    return repo.journey_store.record(key, at, outcome, mid)
