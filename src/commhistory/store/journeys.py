"""Journey storage: definitions, enrollments and the send intents ``due()`` claimed.

:class:`JourneyStore` is the port :mod:`commhistory.journeys.engine` uses
(tables ``journey_definitions``, ``journey_enrollments`` and
``journey_intents``, migration 0015; ``journey_intents.reason``, 0017):

* definitions are kept per key and version; a stored version is never changed
  (saving the same JSON again is a no-op, different JSON is an error);
* an enrollment row holds where one contact stands (step, since, status,
  visits), and ``wake_at``: when ``due()`` next needs to look at it
  (``NULL``: nothing can happen until the host records a send, or it ended).
  ``UNIQUE (journey_key, trigger_id)`` makes a retried trigger enroll once;
  ``revision`` counts updates, so a writer holding a stale row changes nothing
  (:meth:`JourneyStore.move`);
* inserting an intent's key into ``journey_intents`` is the claim
  (:meth:`JourneyStore.claim`): of two processes claiming one key, exactly
  one inserts it.

``due()`` works a batch of waking enrollments at a time: :meth:`JourneyStore.waking`
pages through them (``after=``), the behaviour its step machine asks about is read
for the whole batch at once (:meth:`JourneyStore.intents_of`,
:meth:`JourneyStore.message_events`, :meth:`JourneyStore.events_of_contacts`,
:meth:`JourneyStore.activity_times`), and the batch's moves and claims are written
with one statement each (:meth:`JourneyStore.move_many`, :meth:`JourneyStore.claim`).

:class:`SQLJourneyStore` (SQLAlchemy Core) and :class:`MemoryJourneyStore`
implement the port; a repository hands its own out as ``repo.journey_store``.
Every method runs in the repository's current transaction when one is open,
else in one of its own.

.. versionadded:: 0.4.0
"""

# SQL text here is built from schema identifiers, placeholders and integers; every
# value is bound as a parameter.
# ruff: noqa: S608

from __future__ import annotations

import json
import sqlite3
import threading
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import attrs
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from commhistory.errors import InvalidInputError, NotFoundError
from commhistory.model import Channel, ConsentAction, EventType, Purpose
from commhistory.normalize.time import from_micros, to_micros
from commhistory.store import schema

if TYPE_CHECKING:
    from commhistory.store.memory import MemoryState
    from commhistory.store.sql import SQLRepository

__all__ = [
    "ActivityTime",
    "ConsentWithdrawal",
    "ContactEvent",
    "ContactEventRow",
    "EnrollmentMove",
    "EnrollmentRow",
    "EntryState",
    "IntentRow",
    "JourneyCounts",
    "JourneyStore",
    "MemoryJourneyStore",
    "MessageEvent",
    "SQLJourneyStore",
    "TriggerMark",
    "TriggerRecord",
    "TriggerRow",
    "WakeFeed",
    "WakeScope",
]

PlainValue = str | int | bool


@attrs.frozen(kw_only=True)
class EnrollmentRow:
    """One stored enrollment: who, which journey version, and where it stands.

    Attributes:
        enrollment_id: The enrollment's id.
        journey_key: The journey.
        version: The journey version the contact walks.
        contact_id: The contact (pseudonymous id).
        trigger_id: The triggering record's id (unique per journey).
        entered_at: When the trigger fired.
        entry_properties: The entering record's plain properties.
        step_id: The current step (``None`` once ended).
        since: When the current step began (or when the walk ended).
        status: ``active`` or how it ended (:class:`commhistory.journeys.Status` values).
        visits: How many times each step was entered.
        wake_at: When ``due()`` next looks at it (``None``: not by time).
        revision: How many times the row was updated.

    .. versionadded:: 0.4.0
    """

    enrollment_id: str
    journey_key: str
    version: int
    contact_id: str
    trigger_id: str
    entered_at: datetime
    entry_properties: Mapping[str, PlainValue] = attrs.field(factory=dict)
    step_id: str | None
    since: datetime
    status: str
    visits: Mapping[str, int] = attrs.field(factory=dict)
    wake_at: datetime | None
    revision: int = 0


@attrs.frozen(kw_only=True)
class IntentRow:
    """One claimed send intent.

    Attributes:
        key: The intent key.
        enrollment_id: Its enrollment.
        step_id: Its send step.
        issued_at: When ``due()`` claimed it (the ``now`` of that call).
        recorded_at: When the host recorded the send, or ``None``.
        outcome: ``"sent"`` or ``"skipped"`` once recorded.
        message_id: The message the host sent for it (``None``: skipped or not recorded).
        reason: Why it was skipped, when send planning refused it (``no_consent``,
            ``quiet_hours``, ...; see :mod:`commhistory.journeys.gate`), else ``None``.

    .. versionadded:: 0.4.0
    """

    key: str
    enrollment_id: str
    step_id: str
    issued_at: datetime
    recorded_at: datetime | None = None
    outcome: str | None = None
    message_id: str | None = None
    reason: str | None = None


@attrs.frozen
class EnrollmentMove:
    """An enrollment's new position, to store if its row still has ``revision``.

    Attributes:
        enrollment_id: The enrollment.
        revision: The revision the row was read at.
        step_id: The new step (``None`` once ended).
        since: When it began.
        status: The new status value.
        visits: The new visit counts.
        wake_at: When ``due()`` next looks at it.

    .. versionadded:: 0.4.0
    """

    enrollment_id: str
    revision: int
    step_id: str | None
    since: datetime
    status: str
    visits: Mapping[str, int]
    wake_at: datetime | None


@attrs.frozen
class MessageEvent:
    """An event on a message, as ``due()`` reads it (:meth:`JourneyStore.message_events`).

    .. versionadded:: 0.4.0
    """

    message_id: str
    type: str
    occurred_at: datetime


@attrs.frozen
class ContactEvent:
    """An event of a contact, with its message's channel (:meth:`JourneyStore.events_of_contacts`).

    Attributes:
        contact_id: The event's contact.
        type: The event type's value.
        channel: The channel value of the event's message, ``None`` without a stored message.
        occurred_at: When it happened.

    .. versionadded:: 0.4.0
    """

    contact_id: str
    type: str
    channel: str | None
    occurred_at: datetime


@attrs.frozen
class ConsentWithdrawal:
    """A consent withdrawal in the ledger (:meth:`JourneyStore.consent_withdrawals`).

    Attributes:
        contact_id: The contact.
        channel: The channel value.
        purpose: The purpose value.
        occurred_at: When it was withdrawn.

    .. versionadded:: 0.4.0
    """

    contact_id: str
    channel: str
    purpose: str
    occurred_at: datetime


@attrs.frozen
class ActivityTime:
    """A contact's activity, as ``due()`` reads it (:meth:`JourneyStore.activity_times`).

    Attributes:
        contact_id: The contact.
        name: The activity name.
        occurred_at: When it happened.
        activity_id: The activity's id (the order among equal instants).
        plain: The properties stored in the clear; ``None`` when some are
            encrypted (a caller matching on properties then reads the contact's
            activities decrypted).

    .. versionadded:: 0.4.0
    """

    contact_id: str
    name: str
    occurred_at: datetime
    activity_id: str
    plain: Mapping[str, Any] | None


class JourneyStore(Protocol):
    """The storage port of journeys.

    .. versionadded:: 0.4.0
    """

    def save_definition(self, journey_key: str, version: int, definition: str) -> bool:
        """Store a definition version; ``False`` when the same JSON is stored already.

        Raises:
            InvalidInputError: This version is stored with a different definition
                (``field="version"``): a stored version never changes.
        """
        ...

    def definition(self, journey_key: str, version: int) -> str | None:
        """The stored JSON of a definition version, or ``None``."""
        ...

    def insert_enrollment(self, row: EnrollmentRow) -> bool:
        """Store a new enrollment; ``False`` (nothing stored) when its trigger enrolled already."""
        ...

    def enrollment(self, enrollment_id: str) -> EnrollmentRow | None:
        """The enrollment, or ``None``."""
        ...

    def waking(
        self,
        now: datetime,
        limit: int | None = None,
        *,
        after: tuple[datetime, str] | None = None,
    ) -> list[EnrollmentRow]:
        """The active enrollments with ``wake_at <= now``, earliest first (one indexed query).

        Args:
            now: The instant.
            limit: At most this many rows.
            after: Only rows after this ``(wake_at, enrollment_id)`` in that order
                (the last row of the previous page).

        .. versionchanged:: 0.4.0
           ``after`` pages through the rows.
        """
        ...

    def move(self, row: EnrollmentRow) -> bool:
        """Store a row's new position and ``wake_at`` if nobody else changed it since it was read.

        Args:
            row: The row as read (its ``revision``) with the new values.

        Returns:
            ``True`` when stored (its revision is now one more); ``False`` when
            the stored revision differs (another writer moved it first).
        """
        ...

    def move_many(self, rows: Sequence[EnrollmentMove]) -> list[str]:
        """:meth:`move` for many enrollments at once (one statement per chunk).

        Args:
            rows: The new positions, each with the revision its row was read at;
                one per enrollment.

        Returns:
            The enrollment ids stored; a row whose stored revision differs (another
            writer moved it first) is left alone and not returned.
        """
        ...

    def claim(self, intents: Sequence[IntentRow]) -> list[str]:
        """Insert the intents' keys; return the keys this call inserted (others were claimed)."""
        ...

    def record_skips(self, skips: Sequence[tuple[str, str]], at: datetime) -> list[str]:
        """:meth:`record` of many claimed intents as ``skipped``, each with its reason.

        The same as ``record(key, at, "skipped", None, reason=reason)`` for each
        ``(key, reason)`` (keys not claimed are left out, not an error), in one
        write of the intents and one of their enrollments (woken at *at*).

        Returns:
            The keys recorded by this call (an intent recorded already is left alone).

        .. versionadded:: 0.4.0
        """
        ...

    def intents_of(self, enrollment_ids: Collection[str]) -> list[IntentRow]:
        """The claimed intents of these enrollments (recorded or not)."""
        ...

    def message_events(
        self,
        message_ids: Collection[str],
        types: Collection[EventType],
        *,
        after: datetime,
        until: datetime,
    ) -> list[MessageEvent]:
        """The events of *types* in ``[after, until]`` on these messages."""
        ...

    def events_of_contacts(
        self,
        contact_ids: Collection[str],
        types: Collection[EventType],
        *,
        after: datetime,
        until: datetime,
    ) -> list[ContactEvent]:
        """The events of *types* in ``[after, until]`` of these contacts, with their channel."""
        ...

    def consent_withdrawals(
        self,
        contact_ids: Collection[str],
        channels: Collection[Channel],
        purposes: Collection[Purpose],
        *,
        after: datetime,
        until: datetime,
    ) -> list[ConsentWithdrawal]:
        """These contacts' consent withdrawals in ``[after, until]`` on *channels* for *purposes*.

        One read for a batch of ``due`` (the grants are not read).

        .. versionadded:: 0.4.0
        """
        ...

    def activity_times(
        self,
        contact_ids: Collection[str],
        names: Collection[str],
        *,
        after: datetime,
        until: datetime,
    ) -> list[ActivityTime]:
        """The contacts' activities of *names* in ``[after, until]``, plain properties only."""
        ...

    def intent(self, key: str) -> IntentRow | None:
        """The claimed intent, or ``None``."""
        ...

    def record(
        self,
        key: str,
        at: datetime,
        outcome: str,
        message_id: str | None,
        *,
        reason: str | None = None,
    ) -> bool:
        """Record the host's send of a claimed intent and wake its enrollment at *at*.

        Args:
            key: The intent key.
            at: When it was sent (or skipped).
            outcome: ``"sent"`` or ``"skipped"``.
            message_id: The message sent for it (``None`` for a skip).
            reason: Why it was skipped (a send planning reason code), or ``None``.

        Returns:
            ``False`` when it was recorded already (the first record stands).

        Raises:
            NotFoundError: No such claimed intent (``kind="journey intent"``).
        """
        ...

    def first_event(
        self,
        contact_id: str,
        types: Collection[EventType],
        *,
        message_ids: Collection[str] | None,
        channel: Channel | None,
        after: datetime,
        until: datetime,
    ) -> datetime | None:
        """The first event of *types* in ``[after, until]`` on the contact's messages.

        Args:
            contact_id: The contact.
            types: The event types.
            message_ids: Only events of these messages (``None``: any of the contact's).
            channel: Only events of messages of this channel (``None``: any).
            after: The window's start (inclusive).
            until: The window's end (inclusive).
        """
        ...

    def delete_contact(self, contact_id: str) -> int:
        """Delete the contact's enrollments and their intents; return the enrollments deleted."""
        ...

    # -- triggers and wakes (commhistory.journeys.triggers; migration 0016)

    def trigger_marks(self, journey_key: str) -> dict[str, TriggerMark]:
        """The trigger marks of a journey key (``"*"``: the wake feeds), by source.

        .. versionadded:: 0.4.0
        """
        ...

    def save_trigger_marks(
        self, journey_key: str, marks: Mapping[str, TriggerMark], *, at: datetime
    ) -> None:
        """Store (insert or replace) trigger marks of a journey key, by source.

        .. versionadded:: 0.4.0
        """
        ...

    def stored_bound(self) -> int:
        """The stored-at sequence bound: every row stored so far is below it, later ones not.

        The ``stored_seq`` of ``activities`` and ``events`` (migration 0014); the
        memory store numbers rows when a bound first sees them.

        .. versionadded:: 0.4.0
        """
        ...

    def trigger_activities(
        self,
        name: str,
        *,
        after: TriggerMark | None,
        before: int,
        since: datetime,
        until: datetime,
        start: tuple[datetime, str] | None = None,
        limit: int = 1000,
    ) -> list[TriggerRecord]:
        """Activities of *name* not read under *after*, in ``(occurred_at, id)`` order.

        A row is returned when its ``stored_seq`` is below *before*, it
        happened in ``[since, until]``, and *after* does not cover it (its
        ``stored_seq`` is at or above ``after.watermark``, or it happened after
        ``after.until``). ``properties`` are its plain properties.

        Args:
            name: The activity name.
            after: The mark of the earlier runs, or ``None``.
            before: The bound of this run (:meth:`stored_bound`).
            since: The earliest instant read.
            until: The latest instant read.
            start: Only rows after this ``(occurred_at, id)`` (the last of the previous batch).
            limit: The most rows returned.

        .. versionadded:: 0.4.0
        """
        ...

    def trigger_events(
        self,
        event: EventType,
        *,
        campaign: str | None,
        channel: Channel | None,
        after: TriggerMark | None,
        before: int,
        since: datetime,
        until: datetime,
        start: tuple[datetime, str] | None = None,
        limit: int = 1000,
    ) -> list[TriggerRecord]:
        """Events of a type not read under *after*, as :meth:`trigger_activities` reads activities.

        Only events of known messages (not orphans) and not flagged ``machine``;
        with *campaign* or *channel*, only of messages of that campaign or channel.

        .. versionadded:: 0.4.0
        """
        ...

    def behaviour_since(
        self, *, after: TriggerMark | None, before: int, since: datetime, until: datetime
    ) -> dict[str, datetime]:
        """Each contact's earliest new behaviour: events, activities and consent changes.

        Events and activities as :meth:`trigger_activities` selects them (any
        type or name, machine events included); consent ledger entries by their
        ``occurred_at`` in ``[since, until]`` and after ``after.until``.

        Returns:
            The earliest such instant per contact id.

        .. versionadded:: 0.4.0
        """
        ...

    def wake_feed(
        self,
        *,
        after: TriggerMark | None,
        pending: int | None,
        before: int,
        since: datetime,
        until: datetime,
    ) -> WakeFeed:
        """:meth:`behaviour_since`, read by the ``stored_seq`` index, and what waits for later.

        The same instants as :meth:`behaviour_since`. Events and activities are
        read from ``stored_seq`` ``min(after.watermark, pending)`` on (migration
        0018's index): a row stored below the watermark is new only when it
        happened after ``after.until``, and every such row is at or above
        *pending*, the :attr:`WakeFeed.pending` of the run that set *after*.
        Without *pending* (marks of an older release) all rows below *before*
        are read once.

        .. versionadded:: 0.4.0
        """
        ...

    def active_versions(self) -> list[tuple[str, int]]:
        """The journey key and version of every active enrollment, distinct, sorted.

        .. versionadded:: 0.4.0
        """
        ...

    def wake(self, instants: Mapping[str, datetime], scopes: Sequence[WakeScope]) -> None:
        """Wake the contacts' active enrollments in *scopes* at the given instants.

        An enrollment's ``wake_at`` becomes the contact's instant unless it is
        earlier already (``NULL``, waiting for a recorded send, counts as later);
        its ``revision`` goes up, so a ``due()`` holding the old row does not
        write it back.

        .. versionadded:: 0.4.0
        """
        ...

    def left_segment_at(
        self, contact_id: str, segment: str, *, after: datetime, until: datetime
    ) -> datetime | None:
        """The first snapshot of *segment* in ``[after, until]`` that shows the contact left.

        Snapshots are ordered by ``at`` (then when they were taken); one shows
        the contact left when the contact is not among its members but was
        among those of the snapshot just before it (which may be before
        *after*). The instant returned is that snapshot's ``at``.

        .. versionadded:: 0.4.0
        """
        ...

    def date_values(
        self,
        attribute: str,
        *,
        between: tuple[date, date] | None = None,
        month_days: Collection[str] | None = None,
    ) -> list[tuple[str, date]]:
        """Current values of a plain ``date`` attribute: ``(contact_id, date)`` pairs.

        Args:
            attribute: The attribute's name.
            between: Only dates in this range (both ends included).
            month_days: Only dates whose ``"MM-DD"`` is one of these.

        .. versionadded:: 0.4.0
        """
        ...

    def lock_entries(self, journey_key: str) -> None:
        """Hold off other enrollments into *journey_key* until this transaction ends.

        Call it inside a write transaction before :meth:`entry_state`, so the
        re-entry check and :meth:`insert_enrollments` see every entry another
        worker committed: on PostgreSQL a transaction-level advisory lock per
        journey key; SQLite's write transaction (``BEGIN IMMEDIATE``) holds
        every writer off already; the memory store does nothing.

        .. versionadded:: 0.4.0
        """
        ...

    def entry_state(
        self, journey_key: str, contact_ids: Collection[str], trigger_ids: Collection[str]
    ) -> EntryState:
        """Which triggers enrolled already, and each contact's last entry (one query).

        Args:
            journey_key: The journey (any version).
            contact_ids: The contacts whose last ``entered_at`` is asked.
            trigger_ids: The trigger ids asked about.

        .. versionadded:: 0.4.0
        """
        ...

    def insert_enrollments(self, rows: Sequence[EnrollmentRow]) -> set[str]:
        """Store new enrollments at once; return the ids stored (a trigger stored already is not).

        One ``INSERT ... ON CONFLICT DO NOTHING RETURNING`` for the whole batch.

        .. versionadded:: 0.4.0
        """
        ...

    def journey_counts(
        self, journey_key: str, version: int, *, at: datetime | None = None
    ) -> JourneyCounts:
        """Count one journey version's enrollments and intents, as of ``at`` (default: all).

        Only enrollments entered at or before ``at`` count. An enrollment that
        ended after ``at`` counts as active then, at no step (its step at ``at``
        is not kept); an intent counts as issued, sent or skipped when that
        happened at or before ``at``. Read-only.

        .. versionadded:: 0.4.0
        """
        ...

    def window_activities(
        self, name: str, *, since: datetime, until: datetime
    ) -> list[TriggerRow]:
        """The activities ``name`` of every contact in ``[since, until]``, by time then id.

        .. versionadded:: 0.4.0
        """
        ...

    def window_events(
        self,
        event: EventType,
        *,
        campaign: str | None,
        channel: Channel | None,
        since: datetime,
        until: datetime,
    ) -> list[TriggerRow]:
        """The events of a type in ``[since, until]`` on known contacts' messages.

        Only those of messages of ``campaign`` and ``channel`` when given; by time then id.

        .. versionadded:: 0.4.0
        """
        ...

    def contact_events(
        self, contact_ids: Collection[str], *, since: datetime, until: datetime
    ) -> list[ContactEventRow]:
        """The contacts' events in ``[since, until]``, each with its message's channel.

        Each row also carries the key of the journey intent the message was
        recorded for (one row per such intent; ``None`` without one).

        .. versionadded:: 0.4.0
        """
        ...


_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"))
"""One encoder for every row (``json.dumps`` with options builds one per call)."""


def _dump(value: Mapping[str, Any]) -> str:
    return _ENCODER.encode(dict(value))


def _changed(journey_key: str, version: int) -> InvalidInputError:
    return InvalidInputError(
        field="version",
        reason=f"journey {journey_key!r} version {version} is stored with another "
        "definition; a stored version never changes, save a new version",
    )


# ---------------------------------------------------------------------- SQL

_E = schema.journey_enrollments
_I = schema.journey_intents
_D = schema.journey_definitions
_ROW_COLUMNS = (
    _E.c.enrollment_id,
    _E.c.journey_key,
    _E.c.version,
    _E.c.contact_id,
    _E.c.trigger_id,
    _E.c.entered_at,
    _E.c.entry_properties,
    _E.c.step_id,
    _E.c.since,
    _E.c.status,
    _E.c.visits,
    _E.c.wake_at,
    _E.c.revision,
)


_SELECT_ROWS = (
    "SELECT enrollment_id, journey_key, version, contact_id, trigger_id, entered_at, "
    "entry_properties, step_id, since, status, visits, wake_at, revision FROM journey_enrollments"
)

_SQLITE_ROWS = 500
"""Rows per multi-row statement on SQLite (7 parameters each, well under its limit)."""

_SQLITE_IN = 5000
"""Values per ``IN (...)`` list of a batch read on SQLite, when its variable limit
allows (:func:`_sqlite_in`): ten statements of 500 cost more than one of 5,000."""

_PG_ARRAY = 10_000
"""Values per ``= ANY(%s)`` array on PostgreSQL."""

_PG_JOINS = ("enable_hashjoin", "enable_mergejoin")
"""Switched off for :data:`_PG_MOVE` alone: the planner's estimate of the join on
(id, revision) makes it hash all of ``journey_enrollments`` for a few thousand
rows; the nested loop looks each up by primary key, in the values' (id) order."""

_PG_MOVE = (
    "UPDATE journey_enrollments AS e SET step_id = v.step_id, since = v.since, "
    "status = v.status, visits = v.visits, wake_at = v.wake_at, revision = e.revision + 1 "
    "FROM unnest(%s::text[], %s::int4[], %s::text[], %s::int8[], %s::text[], %s::text[], "
    "%s::int8[]) AS v(enrollment_id, revision, step_id, since, status, visits, wake_at) "
    "WHERE e.enrollment_id = v.enrollment_id AND e.revision = v.revision "
    "RETURNING e.enrollment_id"
)

_SQLITE_MOVE = (
    "WITH v(enrollment_id, revision, step_id, since, status, visits, wake_at) AS "
    "(VALUES {values}) "
    "UPDATE journey_enrollments SET step_id = v.step_id, since = v.since, status = v.status, "
    "visits = v.visits, wake_at = v.wake_at, revision = journey_enrollments.revision + 1 "
    "FROM v WHERE journey_enrollments.enrollment_id = v.enrollment_id "
    "AND journey_enrollments.revision = v.revision RETURNING journey_enrollments.enrollment_id"
)

_PG_CLAIM = (
    "INSERT INTO journey_intents (intent_key, enrollment_id, step_id, issued_at) "
    "SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::int8[]) "
    "ON CONFLICT DO NOTHING RETURNING intent_key"
)

_SQLITE_CLAIM = (
    "INSERT INTO journey_intents (intent_key, enrollment_id, step_id, issued_at) "
    "VALUES {values} ON CONFLICT DO NOTHING RETURNING intent_key"
)

_ENROLL_COLUMNS = (
    "enrollment_id, journey_key, version, contact_id, trigger_id, entered_at, "
    "entry_properties, step_id, since, status, visits, wake_at, revision"
)

_PG_ENROLL = (
    f"INSERT INTO journey_enrollments ({_ENROLL_COLUMNS}) "
    "SELECT * FROM unnest(%s::text[], %s::text[], %s::int4[], %s::text[], %s::text[], "
    "%s::int8[], %s::text[], %s::text[], %s::int8[], %s::text[], %s::text[], %s::int8[], "
    "%s::int4[]) ON CONFLICT DO NOTHING RETURNING enrollment_id"
)

_SQLITE_ENROLL = (
    f"INSERT INTO journey_enrollments ({_ENROLL_COLUMNS}) "
    "SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5, "
    "value ->> 6, value ->> 7, value ->> 8, value ->> 9, value ->> 10, value ->> 11, "
    "value ->> 12 FROM json_each(?) WHERE true ORDER BY key "
    "ON CONFLICT DO NOTHING RETURNING enrollment_id"
)

_ENTRY_LOCK_CLASS = 0x6A726E79
"""The first key of the advisory locks :meth:`SQLJourneyStore.lock_entries` takes ("jrny");
the second is the journey key's hash. Two-key advisory locks never meet one-key ones."""

_PG_ENTRY_LOCK = f"SELECT pg_advisory_xact_lock({_ENTRY_LOCK_CLASS}, hashtext(%s))"

_PG_ENTRY_STATE = (
    "SELECT 't', t.trigger_id, NULL::int8 FROM unnest(%s::text[]) AS v(id) "
    "CROSS JOIN LATERAL (SELECT trigger_id FROM journey_enrollments "
    "WHERE journey_key = %s AND trigger_id = v.id OFFSET 0) AS t "
    "UNION ALL SELECT 'c', v.id, (SELECT max(entered_at) FROM journey_enrollments "
    "WHERE contact_id = v.id AND journey_key = %s) FROM unnest(%s::text[]) AS v(id)"
)

_SQLITE_ENTRY_STATE = (
    "SELECT 't', trigger_id, NULL FROM journey_enrollments WHERE journey_key = ? "
    "AND trigger_id IN (SELECT value FROM json_each(?)) "
    "UNION ALL SELECT 'c', contact_id, max(entered_at) FROM journey_enrollments "
    "WHERE journey_key = ? AND contact_id IN (SELECT value FROM json_each(?)) "
    "GROUP BY contact_id"
)


_PG_SEQSCAN_OFF = (
    "SELECT current_setting('enable_seqscan'), set_config('enable_seqscan', 'off', true)"
)
"""Switched off for the reads of :func:`_select_in` alone (and put back after): the
lookup per value runs once per value, and for a small table (a few pages) the
planner prices a scan of it below an index search; 5,000 scans of a 200-row
``activities`` took 80 ms where the index takes 5."""


_PG_SKIP = (
    "UPDATE journey_intents AS i SET recorded_at = %s, outcome = 'skipped', "
    "message_id = NULL, reason = v.reason "
    "FROM unnest(%s::text[], %s::text[]) AS v(intent_key, reason) "
    "WHERE i.intent_key = v.intent_key AND i.recorded_at IS NULL "
    "RETURNING i.intent_key, i.enrollment_id"
)

_SQLITE_SKIP = (
    "WITH v(intent_key, reason) AS (VALUES {values}) "
    "UPDATE journey_intents SET recorded_at = ?, outcome = 'skipped', message_id = NULL, "
    "reason = v.reason FROM v WHERE journey_intents.intent_key = v.intent_key "
    "AND journey_intents.recorded_at IS NULL "
    "RETURNING journey_intents.intent_key, journey_intents.enrollment_id"
)

_PG_SKIP_WAKE = (
    "UPDATE journey_enrollments AS e SET wake_at = %s, revision = e.revision + v.n "
    "FROM unnest(%s::text[], %s::int4[]) AS v(enrollment_id, n) "
    "WHERE e.enrollment_id = v.enrollment_id AND e.status = 'active'"
)

_SQLITE_SKIP_WAKE = (
    "WITH v(enrollment_id, n) AS (VALUES {values}) "
    "UPDATE journey_enrollments SET wake_at = ?, revision = journey_enrollments.revision + v.n "
    "FROM v WHERE journey_enrollments.enrollment_id = v.enrollment_id "
    "AND journey_enrollments.status = 'active'"
)


def _sqlite_in(conn: sa.Connection, extra: int) -> int:
    """Values per ``IN`` list on this SQLite connection.

    :data:`_SQLITE_IN`, or fewer when its ``SQLITE_LIMIT_VARIABLE_NUMBER`` (999
    before SQLite 3.32) leaves less room beside the ``extra`` parameters.
    """
    raw: Any = conn.connection.driver_connection
    limit = int(raw.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER))
    return max(1, min(_SQLITE_IN, limit - extra))


def _select_in(
    repo: SQLRepository,
    conn: sa.Connection,
    sql: str,
    values: Sequence[Any],
    *,
    extra: tuple[Any, ...] = (),
) -> list[Sequence[Any]]:
    """Run ``sql`` with one ``IN ({in})`` slot over *values*, fetching each chunk at once.

    PostgreSQL binds the values as one array and searches the index once per
    value (``unnest`` joined ``LATERAL``: for a few thousand values of
    ``= ANY(...)`` the planner would rather scan the whole table), with
    sequential scans switched off for the reads (:data:`_PG_SEQSCAN_OFF`);
    SQLite gets chunks of :func:`_sqlite_in` placeholders.
    """
    out: list[Sequence[Any]] = []
    if repo.dialect == "postgresql":
        inner = sql.replace("IN ({in})", "= _v.id")
        statement = (
            f"SELECT t.* FROM unnest(%s::text[]) AS _v(id) "
            f"CROSS JOIN LATERAL ({inner} OFFSET 0) AS t"
        )
        prior = conn.exec_driver_sql(_PG_SEQSCAN_OFF).scalar_one()
        for start in range(0, len(values), _PG_ARRAY):
            chunk = list(values[start : start + _PG_ARRAY])
            out.extend(conn.exec_driver_sql(statement, (chunk, *extra)).fetchall())
        conn.exec_driver_sql("SELECT set_config('enable_seqscan', %s, true)", (prior,))
        return out
    size = _sqlite_in(conn, len(extra))
    for start in range(0, len(values), size):
        part = values[start : start + size]
        statement = sql.replace("{in}", ", ".join(["?"] * len(part)))
        out.extend(conn.exec_driver_sql(statement, (*extra, *part)).fetchall())
    return out


def _raw_row(r: Sequence[Any], texts: dict[str, Any]) -> EnrollmentRow:
    """A row read with driver SQL: instants are integer microseconds.

    ``texts`` memoises decoded JSON across the rows of one read; the mappings
    are shared between rows, so they are never changed in place.
    """
    properties = texts.get(r[6])
    if properties is None:
        properties = texts[r[6]] = json.loads(r[6])
    visits = texts.get(r[10])
    if visits is None:
        visits = texts[r[10]] = json.loads(r[10])
    return EnrollmentRow(
        enrollment_id=r[0],
        journey_key=r[1],
        version=int(r[2]),
        contact_id=r[3],
        trigger_id=r[4],
        entered_at=from_micros(int(r[5])),
        entry_properties=properties,
        step_id=r[7],
        since=from_micros(int(r[8])),
        status=r[9],
        visits=visits,
        wake_at=None if r[11] is None else from_micros(int(r[11])),
        revision=int(r[12]),
    )


def _row(r: Sequence[Any]) -> EnrollmentRow:
    return EnrollmentRow(
        enrollment_id=r[0],
        journey_key=r[1],
        version=int(r[2]),
        contact_id=r[3],
        trigger_id=r[4],
        entered_at=r[5],
        entry_properties=json.loads(r[6]),
        step_id=r[7],
        since=r[8],
        status=r[9],
        visits=json.loads(r[10]),
        wake_at=r[11],
        revision=int(r[12]),
    )


class SQLJourneyStore(JourneyStore):
    """:class:`JourneyStore` over :class:`~commhistory.store.sql.SQLRepository`, in Core.

    Args:
        repo: The repository.
    """

    def __init__(self, repo: SQLRepository) -> None:
        self.repo = repo

    def _insert(self, table: sa.Table) -> Any:
        """``INSERT ... ON CONFLICT DO NOTHING RETURNING`` the first key column.

        Whether a row was inserted is read from ``RETURNING`` (a row or none):
        the driver's ``rowcount`` is not reliable for it on every connection.
        """
        first = next(iter(table.primary_key.columns))
        if self.repo.dialect == "postgresql":
            return postgresql.insert(table).on_conflict_do_nothing().returning(first)
        return sqlite.insert(table).on_conflict_do_nothing().returning(first)

    def save_definition(self, journey_key: str, version: int, definition: str) -> bool:
        """See :meth:`JourneyStore.save_definition`."""
        with self.repo.transaction() as conn:
            done = conn.execute(
                self._insert(_D).values(
                    journey_key=journey_key,
                    version=version,
                    definition=definition,
                    saved_at=datetime.now(UTC),
                )
            ).first()
            if done is not None:
                return True
            stored = conn.execute(
                sa.select(_D.c.definition).where(
                    _D.c.journey_key == journey_key, _D.c.version == version
                )
            ).scalar_one()
        if stored != definition:
            raise _changed(journey_key, version)
        return False

    def definition(self, journey_key: str, version: int) -> str | None:
        """See :meth:`JourneyStore.definition`."""
        with self.repo.transaction(read=True) as conn:
            value = conn.execute(
                sa.select(_D.c.definition).where(
                    _D.c.journey_key == journey_key, _D.c.version == version
                )
            ).scalar()
        return None if value is None else str(value)

    def insert_enrollment(self, row: EnrollmentRow) -> bool:
        """See :meth:`JourneyStore.insert_enrollment`."""
        with self.repo.transaction() as conn:
            done = conn.execute(
                self._insert(_E).values(
                    enrollment_id=row.enrollment_id,
                    journey_key=row.journey_key,
                    version=row.version,
                    contact_id=row.contact_id,
                    trigger_id=row.trigger_id,
                    entered_at=row.entered_at,
                    entry_properties=_dump(row.entry_properties),
                    step_id=row.step_id,
                    since=row.since,
                    status=row.status,
                    visits=_dump(row.visits),
                    wake_at=row.wake_at,
                    revision=row.revision,
                )
            ).first()
        return done is not None

    def enrollment(self, enrollment_id: str) -> EnrollmentRow | None:
        """See :meth:`JourneyStore.enrollment`."""
        with self.repo.transaction(read=True) as conn:
            r = conn.execute(
                sa.select(*_ROW_COLUMNS).where(_E.c.enrollment_id == enrollment_id)
            ).first()
        return None if r is None else _row(r)

    def waking(
        self,
        now: datetime,
        limit: int | None = None,
        *,
        after: tuple[datetime, str] | None = None,
    ) -> list[EnrollmentRow]:
        """See :meth:`JourneyStore.waking`."""
        ph = self.repo.backend.ph
        sql = f"{_SELECT_ROWS} WHERE status = 'active' AND wake_at <= {ph}"
        params: list[Any] = [to_micros(now)]
        if after is not None:
            # wake_at >= first, so the index range starts there; then the tie on the id.
            sql += f" AND wake_at >= {ph} AND (wake_at > {ph} OR enrollment_id > {ph})"
            at = to_micros(after[0])
            params += [at, at, after[1]]
        sql += " ORDER BY wake_at, enrollment_id"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        with self.repo.transaction(read=True) as conn:
            found = conn.exec_driver_sql(sql, tuple(params)).fetchall()
        texts: dict[str, Any] = {}  # the same visits and properties recur: decode each once
        return [_raw_row(r, texts) for r in found]

    def move(self, row: EnrollmentRow) -> bool:
        """See :meth:`JourneyStore.move`."""
        with self.repo.transaction() as conn:
            done = conn.execute(
                _E.update()
                .where(_E.c.enrollment_id == row.enrollment_id, _E.c.revision == row.revision)
                .values(
                    step_id=row.step_id,
                    since=row.since,
                    status=row.status,
                    visits=_dump(row.visits),
                    wake_at=row.wake_at,
                    revision=row.revision + 1,
                )
            ).rowcount
        return bool(done)

    def move_many(self, rows: Sequence[EnrollmentMove]) -> list[str]:
        """See :meth:`JourneyStore.move_many`.

        One ``UPDATE ... FROM`` the new values per chunk, ``WHERE`` the stored
        revision is the one read, ``RETURNING`` the ids it changed. On
        PostgreSQL it is one statement whose nested loop takes the rows in id
        order, so two callers moving overlapping batches wait for each other
        instead of deadlocking; the one that waited then finds the revision
        changed and leaves the row alone. SQLite serializes writers.
        """
        if not rows:
            return []
        ordered = sorted(rows, key=lambda r: r.enrollment_id)
        values = [
            (
                r.enrollment_id,
                r.revision,
                r.step_id,
                to_micros(r.since),
                r.status,
                _dump(r.visits),
                None if r.wake_at is None else to_micros(r.wake_at),
            )
            for r in ordered
        ]
        moved: list[str] = []
        with self.repo.transaction() as conn:
            if self.repo.dialect == "postgresql":
                prior = conn.exec_driver_sql(
                    "SELECT current_setting(%s), current_setting(%s), "
                    "set_config(%s, 'off', true), set_config(%s, 'off', true)",
                    _PG_JOINS * 2,
                ).one()
                columns = [list(c) for c in zip(*values, strict=True)]
                moved.extend(r[0] for r in conn.exec_driver_sql(_PG_MOVE, tuple(columns)))
                conn.exec_driver_sql(
                    "SELECT set_config(%s, %s, true), set_config(%s, %s, true)",
                    (_PG_JOINS[0], prior[0], _PG_JOINS[1], prior[1]),
                )
            else:
                for start in range(0, len(values), _SQLITE_ROWS):
                    chunk = values[start : start + _SQLITE_ROWS]
                    marks = ", ".join(["(?, ?, ?, ?, ?, ?, ?)"] * len(chunk))
                    sql = _SQLITE_MOVE.replace("{values}", marks)
                    params = tuple(v for row in chunk for v in row)
                    moved.extend(r[0] for r in conn.exec_driver_sql(sql, params))
        return moved

    def claim(self, intents: Sequence[IntentRow]) -> list[str]:
        """See :meth:`JourneyStore.claim`.

        One multi-row ``INSERT ... ON CONFLICT DO NOTHING RETURNING`` per chunk,
        in key order.
        """
        if not intents:
            return []
        values = sorted(
            (i.key, i.enrollment_id, i.step_id, to_micros(i.issued_at)) for i in intents
        )
        claimed: list[str] = []
        with self.repo.transaction() as conn:
            if self.repo.dialect == "postgresql":
                columns = [list(c) for c in zip(*values, strict=True)]
                claimed.extend(r[0] for r in conn.exec_driver_sql(_PG_CLAIM, tuple(columns)))
            else:
                for start in range(0, len(values), _SQLITE_ROWS):
                    chunk = values[start : start + _SQLITE_ROWS]
                    marks = ", ".join(["(?, ?, ?, ?)"] * len(chunk))
                    params = tuple(v for row in chunk for v in row)
                    sql = _SQLITE_CLAIM.replace("{values}", marks)
                    claimed.extend(r[0] for r in conn.exec_driver_sql(sql, params))
        return claimed

    def record_skips(self, skips: Sequence[tuple[str, str]], at: datetime) -> list[str]:
        """See :meth:`JourneyStore.record_skips`.

        One ``UPDATE ... FROM`` the keys and reasons of the intents not yet
        recorded, ``RETURNING`` their enrollments, then one ``UPDATE`` waking
        those (each by as many revisions as it had skips recorded, as
        :meth:`record` one at a time would); on SQLite per chunk.
        """
        if not skips:
            return []
        when = to_micros(at)
        values = sorted(set(skips))
        done: list[tuple[str, str]] = []
        with self.repo.transaction() as conn:
            if self.repo.dialect == "postgresql":
                keys, reasons = [list(c) for c in zip(*values, strict=True)]
                done.extend(
                    (r[0], r[1]) for r in conn.exec_driver_sql(_PG_SKIP, (when, keys, reasons))
                )
            else:
                for start in range(0, len(values), _SQLITE_ROWS):
                    chunk = values[start : start + _SQLITE_ROWS]
                    sql = _SQLITE_SKIP.replace("{values}", ", ".join(["(?, ?)"] * len(chunk)))
                    params = (*(v for row in chunk for v in row), when)
                    done.extend((r[0], r[1]) for r in conn.exec_driver_sql(sql, params))
            woken = sorted(Counter(eid for _key, eid in done).items())
            if woken and self.repo.dialect == "postgresql":
                ids, counts = [list(c) for c in zip(*woken, strict=True)]
                conn.exec_driver_sql(_PG_SKIP_WAKE, (when, ids, counts))
            else:
                for start in range(0, len(woken), _SQLITE_ROWS):
                    part = woken[start : start + _SQLITE_ROWS]
                    sql = _SQLITE_SKIP_WAKE.replace("{values}", ", ".join(["(?, ?)"] * len(part)))
                    conn.exec_driver_sql(sql, (*(v for row in part for v in row), when))
        return [key for key, _eid in done]

    def intents_of(self, enrollment_ids: Collection[str]) -> list[IntentRow]:
        """See :meth:`JourneyStore.intents_of`."""
        with self.repo.transaction(read=True) as conn:
            rows = _select_in(
                self.repo,
                conn,
                "SELECT intent_key, enrollment_id, step_id, issued_at, recorded_at, outcome, "
                "message_id FROM journey_intents WHERE enrollment_id IN ({in})",
                sorted(set(enrollment_ids)),
            )
        return [
            IntentRow(
                key=r[0],
                enrollment_id=r[1],
                step_id=r[2],
                issued_at=from_micros(int(r[3])),
                recorded_at=None if r[4] is None else from_micros(int(r[4])),
                outcome=r[5],
                message_id=r[6],
            )
            for r in rows
        ]

    def message_events(
        self,
        message_ids: Collection[str],
        types: Collection[EventType],
        *,
        after: datetime,
        until: datetime,
    ) -> list[MessageEvent]:
        """See :meth:`JourneyStore.message_events`."""
        wanted = sorted({t.value for t in types})
        if not message_ids or not wanted:
            return []
        ph = self.repo.backend.ph
        kinds = ", ".join([ph] * len(wanted))
        with self.repo.transaction(read=True) as conn:
            rows = _select_in(
                self.repo,
                conn,
                f"SELECT message_id, type, occurred_at FROM events WHERE type IN ({kinds}) "
                f"AND occurred_at >= {ph} AND occurred_at <= {ph} AND message_id IN ({{in}})",
                sorted(set(message_ids)),
                extra=(*wanted, to_micros(after), to_micros(until)),
            )
        return [MessageEvent(r[0], r[1], from_micros(int(r[2]))) for r in rows]

    def events_of_contacts(
        self,
        contact_ids: Collection[str],
        types: Collection[EventType],
        *,
        after: datetime,
        until: datetime,
    ) -> list[ContactEvent]:
        """See :meth:`JourneyStore.events_of_contacts`."""
        wanted = sorted({t.value for t in types})
        if not contact_ids or not wanted:
            return []
        ph = self.repo.backend.ph
        kinds = ", ".join([ph] * len(wanted))
        with self.repo.transaction(read=True) as conn:
            rows = _select_in(
                self.repo,
                conn,
                "SELECT e.contact_id, e.type, m.channel, e.occurred_at FROM events e "
                "LEFT JOIN messages m ON m.message_id = e.message_id "
                f"WHERE e.type IN ({kinds}) AND e.occurred_at >= {ph} "
                f"AND e.occurred_at <= {ph} AND e.contact_id IN ({{in}})",
                sorted(set(contact_ids)),
                extra=(*wanted, to_micros(after), to_micros(until)),
            )
        return [ContactEvent(r[0], r[1], r[2], from_micros(int(r[3]))) for r in rows]

    def consent_withdrawals(
        self,
        contact_ids: Collection[str],
        channels: Collection[Channel],
        purposes: Collection[Purpose],
        *,
        after: datetime,
        until: datetime,
    ) -> list[ConsentWithdrawal]:
        """See :meth:`JourneyStore.consent_withdrawals`."""
        on = sorted({c.value for c in channels})
        why = sorted({p.value for p in purposes})
        if not contact_ids or not on or not why:
            return []
        ph = self.repo.backend.ph
        with self.repo.transaction(read=True) as conn:
            rows = _select_in(
                self.repo,
                conn,
                "SELECT contact_id, channel, purpose, occurred_at FROM consent_events "
                f"WHERE action = {ph} AND channel IN ({', '.join([ph] * len(on))}) "
                f"AND purpose IN ({', '.join([ph] * len(why))}) AND occurred_at >= {ph} "
                f"AND occurred_at <= {ph} AND contact_id IN ({{in}})",
                sorted(set(contact_ids)),
                extra=(
                    ConsentAction.WITHDRAW.value,
                    *on,
                    *why,
                    to_micros(after),
                    to_micros(until),
                ),
            )
        return [ConsentWithdrawal(r[0], r[1], r[2], from_micros(int(r[3]))) for r in rows]

    def activity_times(
        self,
        contact_ids: Collection[str],
        names: Collection[str],
        *,
        after: datetime,
        until: datetime,
    ) -> list[ActivityTime]:
        """See :meth:`JourneyStore.activity_times`."""
        wanted = sorted(set(names))
        if not contact_ids or not wanted:
            return []
        ph = self.repo.backend.ph
        kinds = ", ".join([ph] * len(wanted))
        with self.repo.transaction(read=True) as conn:
            rows = _select_in(
                self.repo,
                conn,
                "SELECT contact_id, name, occurred_at, activity_id, plain_properties, "
                "properties IS NOT NULL FROM activities "
                f"WHERE name IN ({kinds}) AND occurred_at >= {ph} AND occurred_at <= {ph} "
                "AND contact_id IN ({in})",
                sorted(set(contact_ids)),
                extra=(*wanted, to_micros(after), to_micros(until)),
            )
        return [
            ActivityTime(
                contact_id=r[0],
                name=r[1],
                occurred_at=from_micros(int(r[2])),
                activity_id=r[3],
                plain=None if r[5] else ({} if r[4] is None else json.loads(r[4])),
            )
            for r in rows
        ]

    def intent(self, key: str) -> IntentRow | None:
        """See :meth:`JourneyStore.intent`."""
        with self.repo.transaction(read=True) as conn:
            r = conn.execute(
                sa.select(
                    _I.c.intent_key,
                    _I.c.enrollment_id,
                    _I.c.step_id,
                    _I.c.issued_at,
                    _I.c.recorded_at,
                    _I.c.outcome,
                    _I.c.message_id,
                    _I.c.reason,
                ).where(_I.c.intent_key == key)
            ).first()
        if r is None:
            return None
        return IntentRow(
            key=r[0],
            enrollment_id=r[1],
            step_id=r[2],
            issued_at=r[3],
            recorded_at=r[4],
            outcome=r[5],
            message_id=r[6],
            reason=r[7],
        )

    def record(
        self,
        key: str,
        at: datetime,
        outcome: str,
        message_id: str | None,
        *,
        reason: str | None = None,
    ) -> bool:
        """See :meth:`JourneyStore.record`."""
        with self.repo.transaction() as conn:
            enrollment_id = conn.execute(
                sa.select(_I.c.enrollment_id).where(_I.c.intent_key == key)
            ).scalar()
            if enrollment_id is None:
                raise NotFoundError(kind="journey intent", identifier=key)
            done = conn.execute(
                _I.update()
                .where(_I.c.intent_key == key, _I.c.recorded_at.is_(None))
                .values(recorded_at=at, outcome=outcome, message_id=message_id, reason=reason)
            ).rowcount
            if done:
                conn.execute(
                    _E.update()
                    .where(_E.c.enrollment_id == enrollment_id, _E.c.status == "active")
                    .values(wake_at=at, revision=_E.c.revision + 1)
                )
        return bool(done)

    def first_event(
        self,
        contact_id: str,
        types: Collection[EventType],
        *,
        message_ids: Collection[str] | None,
        channel: Channel | None,
        after: datetime,
        until: datetime,
    ) -> datetime | None:
        """See :meth:`JourneyStore.first_event`."""
        e, m = schema.events, schema.messages
        stmt = sa.select(sa.func.min(e.c.occurred_at)).where(
            e.c.type.in_(sorted(t.value for t in types)),
            e.c.occurred_at >= after,
            e.c.occurred_at <= until,
        )
        if message_ids is not None:
            if not message_ids:
                return None
            stmt = stmt.where(e.c.message_id.in_(sorted(message_ids)))
        else:
            stmt = stmt.where(e.c.contact_id == contact_id)
        if channel is not None:
            stmt = stmt.join_from(e, m, m.c.message_id == e.c.message_id).where(
                m.c.channel == channel.value
            )
        with self.repo.transaction(read=True) as conn:
            value = conn.execute(stmt).scalar()
        return _instant(value)

    def delete_contact(self, contact_id: str) -> int:
        """See :meth:`JourneyStore.delete_contact`."""
        with self.repo.transaction() as conn:
            mine = sa.select(_E.c.enrollment_id).where(_E.c.contact_id == contact_id)
            conn.execute(_I.delete().where(_I.c.enrollment_id.in_(mine.scalar_subquery())))
            return int(conn.execute(_E.delete().where(_E.c.contact_id == contact_id)).rowcount)

    # -- triggers and wakes (migration 0016)

    def trigger_marks(self, journey_key: str) -> dict[str, TriggerMark]:
        """See :meth:`JourneyStore.trigger_marks`."""
        t = schema.journey_trigger_marks
        with self.repo.transaction(read=True) as conn:
            rows = conn.execute(
                sa.select(t.c.source, t.c.watermark, t.c.until, t.c.snapshot_id).where(
                    t.c.journey_key == journey_key
                )
            ).all()
        return {r[0]: TriggerMark(watermark=int(r[1]), until=r[2], snapshot_id=r[3]) for r in rows}

    def save_trigger_marks(
        self, journey_key: str, marks: Mapping[str, TriggerMark], *, at: datetime
    ) -> None:
        """See :meth:`JourneyStore.save_trigger_marks`."""
        t = schema.journey_trigger_marks
        with self.repo.transaction() as conn:
            for source, mark in sorted(marks.items()):
                values = {
                    "watermark": mark.watermark,
                    "until": mark.until,
                    "snapshot_id": mark.snapshot_id,
                    "updated_at": at,
                }
                insert: Any = (
                    postgresql.insert(t) if self.repo.dialect == "postgresql" else sqlite.insert(t)
                )
                conn.execute(
                    insert.values(
                        journey_key=journey_key, source=source, **values
                    ).on_conflict_do_update(
                        index_elements=[t.c.journey_key, t.c.source], set_=values
                    )
                )

    def stored_bound(self) -> int:
        """See :meth:`JourneyStore.stored_bound`."""
        with self.repo.transaction(read=True) as conn:
            return self.repo.backend.stored_seq_bound(conn)

    def trigger_activities(
        self,
        name: str,
        *,
        after: TriggerMark | None,
        before: int,
        since: datetime,
        until: datetime,
        start: tuple[datetime, str] | None = None,
        limit: int = 1000,
    ) -> list[TriggerRecord]:
        """See :meth:`JourneyStore.trigger_activities`."""
        a = schema.activities
        stmt = (
            sa.select(a.c.activity_id, a.c.contact_id, a.c.occurred_at, a.c.plain_properties)
            .where(
                a.c.name == name,
                *_new_rows(
                    a.c.stored_seq,
                    a.c.occurred_at,
                    after=after,
                    before=before,
                    since=since,
                    until=until,
                ),
                *_after_key(a.c.occurred_at, a.c.activity_id, start),
            )
            .order_by(a.c.occurred_at, a.c.activity_id)
            .limit(limit)
        )
        with self.repo.transaction(read=True) as conn:
            rows = conn.execute(stmt).all()
        return [
            TriggerRecord(
                record_id=r[0],
                contact_id=r[1],
                occurred_at=r[2],
                properties=json.loads(r[3]) if r[3] else {},
            )
            for r in rows
        ]

    def trigger_events(
        self,
        event: EventType,
        *,
        campaign: str | None,
        channel: Channel | None,
        after: TriggerMark | None,
        before: int,
        since: datetime,
        until: datetime,
        start: tuple[datetime, str] | None = None,
        limit: int = 1000,
    ) -> list[TriggerRecord]:
        """See :meth:`JourneyStore.trigger_events`."""
        e, m = schema.events, schema.messages
        stmt = sa.select(e.c.event_id, e.c.contact_id, e.c.occurred_at).where(
            e.c.type == event.value,
            e.c.contact_id.is_not(None),
            e.c.message_id.is_not(None),
            sa.not_(e.c.machine),
            *_new_rows(
                e.c.stored_seq,
                e.c.occurred_at,
                after=after,
                before=before,
                since=since,
                until=until,
            ),
            *_after_key(e.c.occurred_at, e.c.event_id, start),
        )
        if campaign is not None or channel is not None:
            stmt = stmt.join_from(e, m, m.c.message_id == e.c.message_id)
            if campaign is not None:
                stmt = stmt.where(m.c.campaign_id == campaign)
            if channel is not None:
                stmt = stmt.where(m.c.channel == channel.value)
        stmt = stmt.order_by(e.c.occurred_at, e.c.event_id).limit(limit)
        with self.repo.transaction(read=True) as conn:
            rows = conn.execute(stmt).all()
        return [TriggerRecord(record_id=r[0], contact_id=r[1], occurred_at=r[2]) for r in rows]

    def behaviour_since(
        self, *, after: TriggerMark | None, before: int, since: datetime, until: datetime
    ) -> dict[str, datetime]:
        """See :meth:`JourneyStore.behaviour_since`."""
        e, a, ce = schema.events, schema.activities, schema.consent_events
        parts = sa.union_all(
            sa.select(e.c.contact_id.label("cid"), e.c.occurred_at.label("t")).where(
                e.c.contact_id.is_not(None),
                *_new_rows(
                    e.c.stored_seq,
                    e.c.occurred_at,
                    after=after,
                    before=before,
                    since=since,
                    until=until,
                ),
            ),
            sa.select(a.c.contact_id, a.c.occurred_at).where(
                *_new_rows(
                    a.c.stored_seq,
                    a.c.occurred_at,
                    after=after,
                    before=before,
                    since=since,
                    until=until,
                )
            ),
            sa.select(ce.c.contact_id, ce.c.occurred_at).where(
                ce.c.occurred_at >= since,
                ce.c.occurred_at <= until,
                *(
                    []
                    if after is None or after.until is None
                    else [ce.c.occurred_at > after.until]
                ),
            ),
        ).subquery()
        stmt = sa.select(parts.c.cid, sa.func.min(parts.c.t)).group_by(parts.c.cid)
        with self.repo.transaction(read=True) as conn:
            rows = conn.execute(stmt).all()
        out: dict[str, datetime] = {}
        for cid, value in rows:
            when = _instant(value)
            assert when is not None
            out[cid] = when
        return out

    def wake_feed(
        self,
        *,
        after: TriggerMark | None,
        pending: int | None,
        before: int,
        since: datetime,
        until: datetime,
    ) -> WakeFeed:
        """See :meth:`JourneyStore.wake_feed`: a range of ``stored_seq`` per table."""
        e, a, ce = schema.events, schema.activities, schema.consent_events
        lo = 0 if after is None or pending is None else min(after.watermark, pending)

        def arm(seq: Any, when: Any, cid: Any, *where: Any) -> Any:
            new: list[Any] = [when <= until]
            if after is not None:
                covered: Any = seq >= after.watermark
                if after.until is not None:
                    covered = sa.or_(covered, when > after.until)
                new.append(covered)
            later = when > until
            return sa.select(
                cid.label("cid"),
                sa.case((sa.and_(*new), when)).label("t"),
                sa.case((later, seq)).label("p"),
            ).where(
                *where,
                seq >= lo,
                seq < before,
                when >= since,
                sa.or_(sa.and_(*new), later),
            )

        consent = [ce.c.occurred_at >= since, ce.c.occurred_at <= until]
        if after is not None and after.until is not None:
            consent.append(ce.c.occurred_at > after.until)
        parts = sa.union_all(
            arm(e.c.stored_seq, e.c.occurred_at, e.c.contact_id, e.c.contact_id.is_not(None)),
            arm(a.c.stored_seq, a.c.occurred_at, a.c.contact_id),
            sa.select(ce.c.contact_id, ce.c.occurred_at, sa.null()).where(*consent),
        ).subquery()
        stmt = sa.select(parts.c.cid, sa.func.min(parts.c.t), sa.func.min(parts.c.p)).group_by(
            parts.c.cid
        )
        with self.repo.transaction(read=True) as conn:
            rows = conn.execute(stmt).all()
        out: dict[str, datetime] = {}
        low = before
        for cid, value, seq in rows:
            when = _instant(value)
            if when is not None:
                out[cid] = when
            if seq is not None:
                low = min(low, int(seq))
        return WakeFeed(instants=out, pending=low)

    def active_versions(self) -> list[tuple[str, int]]:
        """See :meth:`JourneyStore.active_versions`."""
        stmt = (
            sa.select(_E.c.journey_key, _E.c.version)
            .where(_E.c.status == "active")
            .distinct()
            .order_by(_E.c.journey_key, _E.c.version)
        )
        with self.repo.transaction(read=True) as conn:
            return [(r[0], int(r[1])) for r in conn.execute(stmt)]

    def wake(self, instants: Mapping[str, datetime], scopes: Sequence[WakeScope]) -> None:
        """See :meth:`JourneyStore.wake`."""
        if not instants or not scopes:
            return
        when = sa.bindparam("w_at", type_=schema.UTCTimestamp())
        stmt = (
            _E.update()
            .where(
                _E.c.contact_id == sa.bindparam("c_id"),
                _E.c.status == "active",
                sa.or_(_E.c.wake_at.is_(None), _E.c.wake_at > when),
                sa.or_(*(_scope(s) for s in scopes)),
            )
            .values(wake_at=when, revision=_E.c.revision + 1)
        )
        params = [{"c_id": cid, "w_at": at} for cid, at in sorted(instants.items())]
        with self.repo.transaction() as conn:
            conn.execute(stmt, params)

    def left_segment_at(
        self, contact_id: str, segment: str, *, after: datetime, until: datetime
    ) -> datetime | None:
        """See :meth:`JourneyStore.left_segment_at`."""
        s, sm = schema.segment_snapshots, schema.segment_snapshot_members
        inside = sa.case(
            (
                sa.exists().where(
                    sm.c.snapshot_id == s.c.snapshot_id, sm.c.contact_id == contact_id
                ),
                1,
            ),
            else_=0,
        )
        order = (s.c.at, s.c.taken_at, s.c.snapshot_id)
        seq = (
            sa.select(
                s.c.at.label("at"),
                inside.label("inside"),
                sa.func.lag(inside).over(order_by=order).label("before"),
            )
            .where(s.c.name == segment, s.c.at <= until)
            .subquery()
        )
        stmt = sa.select(sa.func.min(seq.c.at)).where(
            seq.c.inside == 0, seq.c.before == 1, seq.c.at >= after
        )
        with self.repo.transaction(read=True) as conn:
            value = conn.execute(stmt).scalar()
        return _instant(value)

    def date_values(
        self,
        attribute: str,
        *,
        between: tuple[date, date] | None = None,
        month_days: Collection[str] | None = None,
    ) -> list[tuple[str, date]]:
        """See :meth:`JourneyStore.date_values`."""
        ca = schema.contact_attributes
        stmt = sa.select(ca.c.contact_id, ca.c.value_date).where(
            ca.c.name == attribute,
            ca.c.valid_to.is_(None),
            ca.c.value_date.is_not(None),
            ca.c.value_secret.is_(None),
        )
        if between is not None:
            stmt = stmt.where(
                ca.c.value_date >= between[0].isoformat(),
                ca.c.value_date <= between[1].isoformat(),
            )
        if month_days is not None:
            stmt = stmt.where(sa.func.substr(ca.c.value_date, 6, 5).in_(sorted(month_days)))
        stmt = stmt.order_by(ca.c.contact_id)
        with self.repo.transaction(read=True) as conn:
            return [(r[0], date.fromisoformat(r[1])) for r in conn.execute(stmt)]

    def lock_entries(self, journey_key: str) -> None:
        """See :meth:`JourneyStore.lock_entries`."""
        if self.repo.dialect != "postgresql":
            return  # SQLite: the write transaction holds every other writer off
        with self.repo.transaction() as conn:
            conn.exec_driver_sql(_PG_ENTRY_LOCK, (journey_key,))

    def entry_state(
        self, journey_key: str, contact_ids: Collection[str], trigger_ids: Collection[str]
    ) -> EntryState:
        """See :meth:`JourneyStore.entry_state`: one statement, index lookups per value."""
        contacts, triggers = sorted(set(contact_ids)), sorted(set(trigger_ids))
        if not contacts and not triggers:
            return EntryState()
        with self.repo.transaction(read=True) as conn:
            if self.repo.dialect == "postgresql":
                params: tuple[Any, ...] = (triggers, journey_key, journey_key, contacts)
                rows = conn.exec_driver_sql(_PG_ENTRY_STATE, params).all()
            else:
                params = (journey_key, json.dumps(triggers), journey_key, json.dumps(contacts))
                rows = conn.exec_driver_sql(_SQLITE_ENTRY_STATE, params).all()
        known = frozenset(r[1] for r in rows if r[0] == "t")
        last = {r[1]: from_micros(int(r[2])) for r in rows if r[0] == "c" and r[2] is not None}
        return EntryState(known=known, last=last)

    def insert_enrollments(self, rows: Sequence[EnrollmentRow]) -> set[str]:
        """See :meth:`JourneyStore.insert_enrollments`.

        PostgreSQL: ``unnest`` of one array per column; SQLite: ``json_each`` of
        one JSON array of rows. Either way one statement, whatever the batch size.
        """
        if not rows:
            return set()
        values = [
            (
                r.enrollment_id,
                r.journey_key,
                r.version,
                r.contact_id,
                r.trigger_id,
                to_micros(r.entered_at),
                _dump(r.entry_properties),
                r.step_id,
                to_micros(r.since),
                r.status,
                _dump(r.visits),
                None if r.wake_at is None else to_micros(r.wake_at),
                r.revision,
            )
            for r in sorted(rows, key=lambda r: r.enrollment_id)
        ]
        with self.repo.transaction() as conn:
            if self.repo.dialect == "postgresql":
                columns = tuple(list(c) for c in zip(*values, strict=True))
                done = conn.exec_driver_sql(_PG_ENROLL, columns)
            else:
                done = conn.exec_driver_sql(_SQLITE_ENROLL, (json.dumps(values),))
            return {r[0] for r in done}

    def journey_counts(
        self, journey_key: str, version: int, *, at: datetime | None = None
    ) -> JourneyCounts:
        """See :meth:`JourneyStore.journey_counts`: a few ``GROUP BY`` queries."""
        mine = [_E.c.journey_key == journey_key, _E.c.version == version]
        if at is not None:
            mine.append(_E.c.entered_at <= at)
        ended = _E.c.status != "active"
        if at is not None:
            ended = sa.and_(ended, _E.c.since <= at)
        status = sa.case((ended, _E.c.status), else_=sa.literal("active"))
        placed = _E.c.status == "active"
        if at is not None:
            placed = sa.and_(placed, _E.c.since <= at)  # moved after at: its step then is unknown
        here = sa.case((placed, _E.c.step_id))
        inner = sa.select(status.label("status"), here.label("step")).where(*mine).subquery()
        by_status = sa.select(inner.c.status, inner.c.step, sa.func.count()).group_by(
            inner.c.status, inner.c.step
        )
        intent_rows = (
            sa.select(_I.c.step_id, _I.c.issued_at, _I.c.recorded_at, _I.c.outcome)
            .join_from(_I, _E, _E.c.enrollment_id == _I.c.enrollment_id)
            .where(*mine)
            .subquery()
        )

        def upto(column: sa.ColumnElement[Any]) -> sa.ColumnElement[bool]:
            return column.is_not(None) if at is None else column <= at

        def tally(condition: sa.ColumnElement[bool]) -> sa.ColumnElement[Any]:
            return sa.func.sum(sa.case((condition, 1), else_=0))

        r = intent_rows.c
        by_step = sa.select(
            r.step_id,
            tally(upto(r.issued_at)),
            tally(sa.and_(r.outcome == "sent", upto(r.recorded_at))),
            tally(sa.and_(r.outcome == "skipped", upto(r.recorded_at))),
        ).group_by(r.step_id)
        last = (
            sa.select(_I.c.step_id)
            .where(
                _I.c.enrollment_id == _E.c.enrollment_id,
                _I.c.outcome == "sent",
                _I.c.recorded_at <= _E.c.since,
            )
            .order_by(_I.c.recorded_at.desc(), _I.c.intent_key.desc())
            .limit(1)
            .scalar_subquery()
        )
        exits_inner = (
            sa.select(_E.c.status.label("status"), last.label("step"))
            .where(*mine, ended)
            .subquery()
        )
        exits = sa.select(exits_inner.c.status, exits_inner.c.step, sa.func.count()).group_by(
            exits_inner.c.status, exits_inner.c.step
        )
        params: dict[str, Any] = {"k": journey_key, "v": version}
        where = "je.journey_key = :k AND je.version = :v"
        if at is not None:
            where += " AND je.entered_at <= :at"
            params["at"] = to_micros(at)
        if self.repo.dialect == "postgresql":
            each = "CROSS JOIN LATERAL json_each_text(CAST(je.visits AS json)) AS j(key, value)"
        else:
            each = "JOIN json_each(je.visits) AS j"
        visits_sql = sa.text(
            f"SELECT j.key, SUM(CAST(j.value AS BIGINT)) FROM journey_enrollments je {each} "
            f"WHERE {where} GROUP BY j.key"
        )
        statuses: dict[str, int] = {}
        waiting: dict[str, int] = {}
        with self.repo.transaction(read=True) as conn:
            for st, step, n in conn.execute(by_status):
                statuses[st] = statuses.get(st, 0) + int(n)
                if st == "active" and step is not None:
                    waiting[step] = waiting.get(step, 0) + int(n)
            issued: dict[str, int] = {}
            sent: dict[str, int] = {}
            skipped: dict[str, int] = {}
            for step, i, se, sk in conn.execute(by_step):
                for target, value in ((issued, i), (sent, se), (skipped, sk)):
                    if value:
                        target[step] = int(value)
            exit_rows = tuple(
                sorted(
                    ((st, step, int(n)) for st, step, n in conn.execute(exits)),
                    key=_exit_order,
                )
            )
            visits = {str(k): int(v) for k, v in conn.execute(visits_sql, params) if v}
        return JourneyCounts(
            statuses=statuses,
            waiting=waiting,
            visits=visits,
            issued=issued,
            sent=sent,
            skipped=skipped,
            exits=exit_rows,
        )

    def window_activities(
        self, name: str, *, since: datetime, until: datetime
    ) -> list[TriggerRow]:
        """See :meth:`JourneyStore.window_activities`."""
        a = schema.activities
        stmt = (
            sa.select(a.c.activity_id, a.c.contact_id, a.c.occurred_at)
            .where(a.c.name == name, a.c.occurred_at >= since, a.c.occurred_at <= until)
            .order_by(a.c.occurred_at, a.c.activity_id)
        )
        with self.repo.transaction(read=True) as conn:
            return [TriggerRow(r[0], r[1], _at(r[2])) for r in conn.execute(stmt)]

    def window_events(
        self,
        event: EventType,
        *,
        campaign: str | None,
        channel: Channel | None,
        since: datetime,
        until: datetime,
    ) -> list[TriggerRow]:
        """See :meth:`JourneyStore.window_events`."""
        e, m = schema.events, schema.messages
        stmt = sa.select(e.c.event_id, e.c.contact_id, e.c.occurred_at).where(
            e.c.type == event.value,
            e.c.contact_id.is_not(None),
            e.c.occurred_at >= since,
            e.c.occurred_at <= until,
        )
        if campaign is not None or channel is not None:
            stmt = stmt.join_from(e, m, m.c.message_id == e.c.message_id)
            if campaign is not None:
                stmt = stmt.where(m.c.campaign_id == campaign)
            if channel is not None:
                stmt = stmt.where(m.c.channel == channel.value)
        stmt = stmt.order_by(e.c.occurred_at, e.c.event_id)
        with self.repo.transaction(read=True) as conn:
            return [TriggerRow(r[0], r[1], _at(r[2])) for r in conn.execute(stmt)]

    def contact_events(
        self, contact_ids: Collection[str], *, since: datetime, until: datetime
    ) -> list[ContactEventRow]:
        """See :meth:`JourneyStore.contact_events`."""
        ids = sorted(set(contact_ids))
        if not ids:
            return []
        e, m = schema.events, schema.messages
        out: list[ContactEventRow] = []
        with self.repo.transaction(read=True) as conn:
            for start in range(0, len(ids), 500):
                stmt = (
                    sa.select(
                        e.c.contact_id, e.c.type, e.c.occurred_at, m.c.channel, _I.c.intent_key
                    )
                    .select_from(
                        e.outerjoin(m, m.c.message_id == e.c.message_id).outerjoin(
                            _I, sa.and_(_I.c.message_id == e.c.message_id, _I.c.outcome == "sent")
                        )
                    )
                    .where(
                        e.c.contact_id.in_(ids[start : start + 500]),
                        e.c.occurred_at >= since,
                        e.c.occurred_at <= until,
                    )
                )
                out.extend(
                    ContactEventRow(
                        r[0],
                        EventType(r[1]),
                        _at(r[2]),
                        None if r[3] is None else Channel(r[3]),
                        r[4],
                    )
                    for r in conn.execute(stmt)
                )
        return sorted(out, key=_event_order)


# ---------------------------------------------------------------------- memory


class MemoryJourneys:
    """What :class:`MemoryJourneyStore` keeps (held by the memory repository's state).

    .. versionadded:: 0.4.0
    """

    def __init__(self) -> None:
        self.definitions: dict[tuple[str, int], str] = {}
        self.enrollments: dict[str, EnrollmentRow] = {}
        self.triggers: dict[tuple[str, str], str] = {}
        self.intents: dict[str, IntentRow] = {}
        self.lock = threading.Lock()
        self.marks: dict[str, dict[str, TriggerMark]] = {}
        """Trigger marks by journey key and source."""
        self.seen: dict[tuple[str, str], int] = {}
        """The stored-at sequence each activity and event got from the bound that first saw it."""
        self.seq = 0


class MemoryJourneyStore(JourneyStore):
    """:class:`JourneyStore` over the memory repository's state.

    Args:
        state: The memory repository's state.
    """

    def __init__(self, state: MemoryState) -> None:
        self.s = state

    @property
    def _j(self) -> MemoryJourneys:
        journeys: MemoryJourneys = self.s.journeys
        return journeys

    def save_definition(self, journey_key: str, version: int, definition: str) -> bool:
        """See :meth:`JourneyStore.save_definition`."""
        with self._j.lock:
            stored = self._j.definitions.setdefault((journey_key, version), definition)
        if stored != definition:
            raise _changed(journey_key, version)
        return stored is definition

    def definition(self, journey_key: str, version: int) -> str | None:
        """See :meth:`JourneyStore.definition`."""
        return self._j.definitions.get((journey_key, version))

    def insert_enrollment(self, row: EnrollmentRow) -> bool:
        """See :meth:`JourneyStore.insert_enrollment`."""
        j = self._j
        with j.lock:
            trigger = (row.journey_key, row.trigger_id)
            if trigger in j.triggers or row.enrollment_id in j.enrollments:
                return False
            j.triggers[trigger] = row.enrollment_id
            j.enrollments[row.enrollment_id] = _trunc_row(row)
        return True

    def enrollment(self, enrollment_id: str) -> EnrollmentRow | None:
        """See :meth:`JourneyStore.enrollment`."""
        return self._j.enrollments.get(enrollment_id)

    def waking(
        self,
        now: datetime,
        limit: int | None = None,
        *,
        after: tuple[datetime, str] | None = None,
    ) -> list[EnrollmentRow]:
        """See :meth:`JourneyStore.waking`."""
        rows = sorted(
            (
                r
                for r in self._j.enrollments.values()
                if r.status == "active"
                and r.wake_at is not None
                and r.wake_at <= now
                and (after is None or (r.wake_at, r.enrollment_id) > after)
            ),
            key=lambda r: (r.wake_at, r.enrollment_id),
        )
        return rows if limit is None else rows[:limit]

    def move(self, row: EnrollmentRow) -> bool:
        """See :meth:`JourneyStore.move`."""
        j = self._j
        with j.lock:
            stored = j.enrollments.get(row.enrollment_id)
            if stored is None or stored.revision != row.revision:
                return False
            j.enrollments[row.enrollment_id] = _trunc_row(
                attrs.evolve(row, revision=row.revision + 1)
            )
        return True

    def move_many(self, rows: Sequence[EnrollmentMove]) -> list[str]:
        """See :meth:`JourneyStore.move_many`."""
        moved: list[str] = []
        j = self._j
        with j.lock:
            for move in rows:
                stored = j.enrollments.get(move.enrollment_id)
                if stored is None or stored.revision != move.revision:
                    continue
                j.enrollments[move.enrollment_id] = _trunc_row(
                    attrs.evolve(
                        stored,
                        step_id=move.step_id,
                        since=move.since,
                        status=move.status,
                        visits=dict(move.visits),
                        wake_at=move.wake_at,
                        revision=move.revision + 1,
                    )
                )
                moved.append(move.enrollment_id)
        return moved

    def claim(self, intents: Sequence[IntentRow]) -> list[str]:
        """See :meth:`JourneyStore.claim`."""
        claimed: list[str] = []
        with self._j.lock:
            for intent in intents:
                if intent.key not in self._j.intents:
                    self._j.intents[intent.key] = intent
                    claimed.append(intent.key)
        return claimed

    def record_skips(self, skips: Sequence[tuple[str, str]], at: datetime) -> list[str]:
        """See :meth:`JourneyStore.record_skips`."""
        return [
            key
            for key, reason in sorted(set(skips))
            if key in self._j.intents and self.record(key, at, "skipped", None, reason=reason)
        ]

    def intents_of(self, enrollment_ids: Collection[str]) -> list[IntentRow]:
        """See :meth:`JourneyStore.intents_of`."""
        wanted = set(enrollment_ids)
        return [i for i in self._j.intents.values() if i.enrollment_id in wanted]

    def message_events(
        self,
        message_ids: Collection[str],
        types: Collection[EventType],
        *,
        after: datetime,
        until: datetime,
    ) -> list[MessageEvent]:
        """See :meth:`JourneyStore.message_events`."""
        wanted = set(message_ids)
        return [
            MessageEvent(e.message_id, e.type.value, e.occurred_at)
            for e in self.s.events.values()
            if e.message_id is not None
            and e.message_id in wanted
            and e.type in types
            and after <= e.occurred_at <= until
        ]

    def events_of_contacts(
        self,
        contact_ids: Collection[str],
        types: Collection[EventType],
        *,
        after: datetime,
        until: datetime,
    ) -> list[ContactEvent]:
        """See :meth:`JourneyStore.events_of_contacts`."""
        s = self.s
        wanted = set(contact_ids)
        out: list[ContactEvent] = []
        for eid, e in s.events.items():
            contact = s.event_contact.get(eid)
            if contact not in wanted or e.type not in types:
                continue
            if not after <= e.occurred_at <= until:
                continue
            message = s.messages.get(e.message_id or "")
            channel = None if message is None else message.channel.value
            out.append(ContactEvent(contact, e.type.value, channel, e.occurred_at))
        return out

    def consent_withdrawals(
        self,
        contact_ids: Collection[str],
        channels: Collection[Channel],
        purposes: Collection[Purpose],
        *,
        after: datetime,
        until: datetime,
    ) -> list[ConsentWithdrawal]:
        """See :meth:`JourneyStore.consent_withdrawals`."""
        wanted = set(contact_ids)
        on, why = set(channels), set(purposes)
        return [
            ConsentWithdrawal(c.contact_id, c.channel.value, c.purpose.value, c.occurred_at)
            for c in self.s.consents.values()
            if c.contact_id in wanted
            and c.action is ConsentAction.WITHDRAW
            and c.channel in on
            and c.purpose in why
            and after <= c.occurred_at <= until
        ]

    def activity_times(
        self,
        contact_ids: Collection[str],
        names: Collection[str],
        *,
        after: datetime,
        until: datetime,
    ) -> list[ActivityTime]:
        """See :meth:`JourneyStore.activity_times`: in memory, every property is at hand."""
        wanted, kinds = set(contact_ids), set(names)
        return [
            ActivityTime(a.contact_id, a.name, a.occurred_at, a.activity_id, a.properties)
            for a in self.s.activities.values()
            if a.contact_id in wanted and a.name in kinds and after <= a.occurred_at <= until
        ]

    def intent(self, key: str) -> IntentRow | None:
        """See :meth:`JourneyStore.intent`."""
        return self._j.intents.get(key)

    def record(
        self,
        key: str,
        at: datetime,
        outcome: str,
        message_id: str | None,
        *,
        reason: str | None = None,
    ) -> bool:
        """See :meth:`JourneyStore.record`."""
        j = self._j
        with j.lock:
            intent = j.intents.get(key)
            if intent is None:
                raise NotFoundError(kind="journey intent", identifier=key)
            if intent.recorded_at is not None:
                return False
            at = from_micros(to_micros(at))
            j.intents[key] = attrs.evolve(
                intent, recorded_at=at, outcome=outcome, message_id=message_id, reason=reason
            )
            row = j.enrollments.get(intent.enrollment_id)
            if row is not None and row.status == "active":
                j.enrollments[row.enrollment_id] = attrs.evolve(
                    row, wake_at=at, revision=row.revision + 1
                )
        return True

    def first_event(
        self,
        contact_id: str,
        types: Collection[EventType],
        *,
        message_ids: Collection[str] | None,
        channel: Channel | None,
        after: datetime,
        until: datetime,
    ) -> datetime | None:
        """See :meth:`JourneyStore.first_event`."""
        s = self.s
        wanted = None if message_ids is None else set(message_ids)
        best: datetime | None = None
        for eid, event in s.events.items():
            if event.type not in types or not after <= event.occurred_at <= until:
                continue
            if wanted is not None:
                if event.message_id not in wanted:
                    continue
            elif s.event_contact.get(eid) != contact_id:
                continue
            if channel is not None:
                message = s.messages.get(event.message_id or "")
                if message is None or message.channel is not channel:
                    continue
            if best is None or event.occurred_at < best:
                best = event.occurred_at
        return best

    def delete_contact(self, contact_id: str) -> int:
        """See :meth:`JourneyStore.delete_contact`."""
        j = self._j
        with j.lock:
            mine = [r for r in j.enrollments.values() if r.contact_id == contact_id]
            ids = {r.enrollment_id for r in mine}
            for r in mine:
                del j.enrollments[r.enrollment_id]
                j.triggers.pop((r.journey_key, r.trigger_id), None)
            for key in [k for k, i in j.intents.items() if i.enrollment_id in ids]:
                del j.intents[key]
        return len(mine)

    # -- triggers and wakes

    def trigger_marks(self, journey_key: str) -> dict[str, TriggerMark]:
        """See :meth:`JourneyStore.trigger_marks`."""
        return dict(self._j.marks.get(journey_key, {}))

    def save_trigger_marks(
        self, journey_key: str, marks: Mapping[str, TriggerMark], *, at: datetime
    ) -> None:
        """See :meth:`JourneyStore.save_trigger_marks`."""
        with self._j.lock:
            stored = self._j.marks.setdefault(journey_key, {})
            for source, mark in marks.items():
                stored[source] = attrs.evolve(mark, until=_trunc(mark.until))

    def stored_bound(self) -> int:
        """See :meth:`JourneyStore.stored_bound`.

        Memory rows carry no sequence: a bound numbers the rows it sees first
        (activities, and events of known messages) with the current value, then
        moves to the next.
        """
        s, j = self.s, self._j
        with j.lock:
            for aid in s.activities:
                j.seen.setdefault(("activities", aid), j.seq)
            for eid, event in s.events.items():
                if event.message_id is not None and s.event_contact.get(eid) is not None:
                    j.seen.setdefault(("events", eid), j.seq)
            j.seq += 1
            return j.seq

    def _fresh(
        self,
        table: str,
        row_id: str,
        when: datetime,
        *,
        after: TriggerMark | None,
        before: int,
        since: datetime,
        until: datetime,
    ) -> bool:
        seq = self._j.seen.get((table, row_id))
        if seq is None or seq >= before or not since <= when <= until:
            return False
        if after is None:
            return True
        return seq >= after.watermark or (after.until is not None and when > after.until)

    def trigger_activities(
        self,
        name: str,
        *,
        after: TriggerMark | None,
        before: int,
        since: datetime,
        until: datetime,
        start: tuple[datetime, str] | None = None,
        limit: int = 1000,
    ) -> list[TriggerRecord]:
        """See :meth:`JourneyStore.trigger_activities`."""
        s = self.s
        keys = s.activity_names.get(name, frozenset())
        rows = [
            TriggerRecord(
                record_id=a.activity_id,
                contact_id=a.contact_id,
                occurred_at=a.occurred_at,
                properties={k: v for k, v in a.properties.items() if k in keys},
            )
            for a in s.activities.values()
            if a.name == name
            and self._fresh(
                "activities",
                a.activity_id,
                a.occurred_at,
                after=after,
                before=before,
                since=since,
                until=until,
            )
            and (start is None or (a.occurred_at, a.activity_id) > start)
        ]
        rows.sort(key=lambda r: (r.occurred_at, r.record_id))
        return rows[:limit]

    def trigger_events(
        self,
        event: EventType,
        *,
        campaign: str | None,
        channel: Channel | None,
        after: TriggerMark | None,
        before: int,
        since: datetime,
        until: datetime,
        start: tuple[datetime, str] | None = None,
        limit: int = 1000,
    ) -> list[TriggerRecord]:
        """See :meth:`JourneyStore.trigger_events`."""
        s = self.s
        rows: list[TriggerRecord] = []
        for eid, e in s.events.items():
            cid = s.event_contact.get(eid)
            if e.type is not event or e.machine or cid is None or e.message_id is None:
                continue
            if not self._fresh(
                "events", eid, e.occurred_at, after=after, before=before, since=since, until=until
            ):
                continue
            if start is not None and (e.occurred_at, eid) <= start:
                continue
            if campaign is not None or channel is not None:
                message = s.messages.get(e.message_id)
                if message is None:
                    continue
                if campaign is not None and message.campaign_id != campaign:
                    continue
                if channel is not None and message.channel is not channel:
                    continue
            rows.append(TriggerRecord(record_id=eid, contact_id=cid, occurred_at=e.occurred_at))
        rows.sort(key=lambda r: (r.occurred_at, r.record_id))
        return rows[:limit]

    def behaviour_since(
        self, *, after: TriggerMark | None, before: int, since: datetime, until: datetime
    ) -> dict[str, datetime]:
        """See :meth:`JourneyStore.behaviour_since`."""
        s = self.s
        out: dict[str, datetime] = {}

        def seen(cid: str, when: datetime) -> None:
            if cid not in out or when < out[cid]:
                out[cid] = when

        for eid, e in s.events.items():
            cid = s.event_contact.get(eid)
            if cid is not None and self._fresh(
                "events", eid, e.occurred_at, after=after, before=before, since=since, until=until
            ):
                seen(cid, e.occurred_at)
        for a in s.activities.values():
            if self._fresh(
                "activities",
                a.activity_id,
                a.occurred_at,
                after=after,
                before=before,
                since=since,
                until=until,
            ):
                seen(a.contact_id, a.occurred_at)
        for c in s.consents.values():
            if not since <= c.occurred_at <= until:
                continue
            if after is not None and after.until is not None and c.occurred_at <= after.until:
                continue
            seen(c.contact_id, c.occurred_at)
        return out

    def wake_feed(
        self,
        *,
        after: TriggerMark | None,
        pending: int | None,
        before: int,
        since: datetime,
        until: datetime,
    ) -> WakeFeed:
        """See :meth:`JourneyStore.wake_feed` (memory reads every row; *pending* is a hint)."""
        s, j = self.s, self._j
        instants = self.behaviour_since(after=after, before=before, since=since, until=until)
        low = before
        with j.lock:
            seen = list(j.seen.items())
        for (table, row_id), seq in seen:
            if seq >= before or seq >= low:
                continue
            row = s.events.get(row_id) if table == "events" else s.activities.get(row_id)
            if row is not None and row.occurred_at > until and row.occurred_at >= since:
                low = seq
        return WakeFeed(instants=instants, pending=low)

    def active_versions(self) -> list[tuple[str, int]]:
        """See :meth:`JourneyStore.active_versions`."""
        return sorted(
            {
                (r.journey_key, r.version)
                for r in self._j.enrollments.values()
                if r.status == "active"
            }
        )

    def wake(self, instants: Mapping[str, datetime], scopes: Sequence[WakeScope]) -> None:
        """See :meth:`JourneyStore.wake`."""
        if not instants or not scopes:
            return
        j = self._j
        with j.lock:
            for eid, row in list(j.enrollments.items()):
                at = instants.get(row.contact_id)
                if at is None or row.status != "active":
                    continue
                if row.wake_at is not None and row.wake_at <= at:
                    continue
                if not any(_in_scope(row, scope) for scope in scopes):
                    continue
                j.enrollments[eid] = attrs.evolve(
                    row, wake_at=_trunc(at), revision=row.revision + 1
                )

    def left_segment_at(
        self, contact_id: str, segment: str, *, after: datetime, until: datetime
    ) -> datetime | None:
        """See :meth:`JourneyStore.left_segment_at`."""
        shots = sorted(
            (
                (info.at, info.taken_at, info.snapshot_id, contact_id in ids)
                for info, ids in self.s.segment_snapshots.values()
                if info.name == segment and info.at <= until
            ),
        )
        before: bool | None = None
        for at, _taken, _sid, inside in shots:
            if before and not inside and at >= after:
                return at
            before = inside
        return None

    def date_values(
        self,
        attribute: str,
        *,
        between: tuple[date, date] | None = None,
        month_days: Collection[str] | None = None,
    ) -> list[tuple[str, date]]:
        """See :meth:`JourneyStore.date_values`."""
        out: list[tuple[str, date]] = []
        for (cid, name), rows in self.s.attributes.items():
            if name != attribute:
                continue
            for _frm, to, v in rows:
                value = v.value
                if to is not None or v.personal or not isinstance(value, date):
                    continue
                if isinstance(value, datetime):
                    continue
                if between is not None and not between[0] <= value <= between[1]:
                    continue
                if month_days is not None and value.strftime("%m-%d") not in month_days:
                    continue
                out.append((cid, value))
        return sorted(out)

    def lock_entries(self, journey_key: str) -> None:
        """See :meth:`JourneyStore.lock_entries`: nothing to hold in memory."""

    def entry_state(
        self, journey_key: str, contact_ids: Collection[str], trigger_ids: Collection[str]
    ) -> EntryState:
        """See :meth:`JourneyStore.entry_state`."""
        wanted = set(contact_ids)
        last: dict[str, datetime] = {}
        with self._j.lock:
            rows = list(self._j.enrollments.values())
            known = frozenset(t for t in trigger_ids if (journey_key, t) in self._j.triggers)
        for r in rows:
            if r.journey_key == journey_key and r.contact_id in wanted:
                seen = last.get(r.contact_id)
                if seen is None or r.entered_at > seen:
                    last[r.contact_id] = r.entered_at
        return EntryState(known=known, last=last)

    def insert_enrollments(self, rows: Sequence[EnrollmentRow]) -> set[str]:
        """See :meth:`JourneyStore.insert_enrollments`."""
        return {r.enrollment_id for r in rows if self.insert_enrollment(r)}

    def journey_counts(
        self, journey_key: str, version: int, *, at: datetime | None = None
    ) -> JourneyCounts:
        """See :meth:`JourneyStore.journey_counts`."""
        j = self._j
        rows = {
            r.enrollment_id: r
            for r in j.enrollments.values()
            if r.journey_key == journey_key
            and r.version == version
            and (at is None or r.entered_at <= at)
        }
        statuses: dict[str, int] = {}
        waiting: dict[str, int] = {}
        visits: dict[str, int] = {}
        exits: dict[tuple[str, str | None], int] = {}
        sends: dict[str, list[IntentRow]] = {}
        for intent in j.intents.values():
            if intent.enrollment_id in rows:
                sends.setdefault(intent.enrollment_id, []).append(intent)
        for r in rows.values():
            ended = r.status != "active" and (at is None or r.since <= at)
            status = r.status if ended else "active"
            statuses[status] = statuses.get(status, 0) + 1
            if r.status == "active" and (at is None or r.since <= at) and r.step_id is not None:
                waiting[r.step_id] = waiting.get(r.step_id, 0) + 1
            for step, count in r.visits.items():
                if count:
                    visits[step] = visits.get(step, 0) + count
            if ended:
                done = [
                    i
                    for i in sends.get(r.enrollment_id, ())
                    if i.outcome == "sent"
                    and i.recorded_at is not None
                    and i.recorded_at <= r.since
                ]
                last = max(done, key=lambda i: (i.recorded_at, i.key)).step_id if done else None
                exits[(status, last)] = exits.get((status, last), 0) + 1
        issued: dict[str, int] = {}
        sent: dict[str, int] = {}
        skipped: dict[str, int] = {}
        for intents in sends.values():
            for i in intents:
                if at is None or i.issued_at <= at:
                    issued[i.step_id] = issued.get(i.step_id, 0) + 1
                if i.recorded_at is not None and (at is None or i.recorded_at <= at):
                    target = sent if i.outcome == "sent" else skipped
                    target[i.step_id] = target.get(i.step_id, 0) + 1
        return JourneyCounts(
            statuses=statuses,
            waiting=waiting,
            visits=visits,
            issued=issued,
            sent=sent,
            skipped=skipped,
            exits=tuple(
                sorted(((st, step, n) for (st, step), n in exits.items()), key=_exit_order)
            ),
        )

    def window_activities(
        self, name: str, *, since: datetime, until: datetime
    ) -> list[TriggerRow]:
        """See :meth:`JourneyStore.window_activities`."""
        found = [
            TriggerRow(a.activity_id, a.contact_id, a.occurred_at)
            for a in self.s.activities.values()
            if a.name == name and since <= a.occurred_at <= until
        ]
        return sorted(found, key=lambda t: (t.occurred_at, t.record_id))

    def window_events(
        self,
        event: EventType,
        *,
        campaign: str | None,
        channel: Channel | None,
        since: datetime,
        until: datetime,
    ) -> list[TriggerRow]:
        """See :meth:`JourneyStore.window_events`."""
        s = self.s
        found = []
        for eid, e in s.events.items():
            contact = s.event_contact.get(eid)
            if e.type is not event or contact is None or not since <= e.occurred_at <= until:
                continue
            if campaign is not None or channel is not None:
                m = s.messages.get(e.message_id or "")
                if m is None:
                    continue
                if campaign is not None and m.campaign_id != campaign:
                    continue
                if channel is not None and m.channel is not channel:
                    continue
            found.append(TriggerRow(eid, contact, e.occurred_at))
        return sorted(found, key=lambda t: (t.occurred_at, t.record_id))

    def contact_events(
        self, contact_ids: Collection[str], *, since: datetime, until: datetime
    ) -> list[ContactEventRow]:
        """See :meth:`JourneyStore.contact_events`."""
        s = self.s
        wanted = set(contact_ids)
        keys: dict[str, list[str]] = {}
        for i in self._j.intents.values():
            if i.outcome == "sent" and i.message_id is not None:
                keys.setdefault(i.message_id, []).append(i.key)
        out = []
        for eid, e in s.events.items():
            contact = s.event_contact.get(eid)
            if contact not in wanted or not since <= e.occurred_at <= until:
                continue
            assert contact is not None
            m = s.messages.get(e.message_id or "")
            channel = None if m is None else m.channel
            linked: list[str | None] = list(keys.get(e.message_id or "", [])) or [None]
            for key in linked:
                out.append(ContactEventRow(contact, e.type, e.occurred_at, channel, key))
        return sorted(out, key=_event_order)


def _instant(value: object) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return from_micros(int(value))  # type: ignore[call-overload]


def _trunc(value: datetime | None) -> datetime | None:
    return None if value is None else from_micros(to_micros(value))


def _trunc_row(row: EnrollmentRow) -> EnrollmentRow:
    """The row as a database would return it: instants to the microsecond, in UTC."""
    entered = _trunc(row.entered_at)
    since = _trunc(row.since)
    assert entered is not None
    assert since is not None
    return attrs.evolve(row, entered_at=entered, since=since, wake_at=_trunc(row.wake_at))


# ---------------------------------------------------------------------- triggers (0016)


@attrs.frozen(kw_only=True)
class TriggerMark:
    """How far a journey's trigger (or a wake feed) has read one source of the history.

    Every row of the source whose ``stored_seq`` is below ``watermark`` and
    that happened at or before ``until`` was read (or was too old to count);
    ``snapshot_id`` is the last segment snapshot consumed.

    Attributes:
        watermark: The stored-at sequence bound of the last run (0: none).
        until: The last run's ``now`` (``None``: no run yet).
        snapshot_id: The last snapshot consumed (segment sources).

    .. versionadded:: 0.4.0
    """

    watermark: int = 0
    until: datetime | None = None
    snapshot_id: str | None = None


@attrs.frozen(kw_only=True)
class EntryState:
    """What enrolling a batch into a journey must know (:meth:`JourneyStore.entry_state`).

    Attributes:
        known: The trigger ids asked about that enrolled a contact already.
        last: Each asked contact's last ``entered_at`` in the journey (any
            version); contacts never entered are absent.

    .. versionadded:: 0.4.0
    """

    known: frozenset[str] = frozenset()
    last: Mapping[str, datetime] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class WakeFeed:
    """What :meth:`JourneyStore.wake_feed` read.

    Attributes:
        instants: The earliest new behaviour per contact id.
        pending: The lowest ``stored_seq`` of an event or activity stored below
            the bound that happened after ``until`` (a later run reads it), or
            the bound when there is none: the next read starts there at the latest.

    .. versionadded:: 0.4.0
    """

    instants: Mapping[str, datetime] = attrs.field(factory=dict)
    pending: int = 0


@attrs.frozen(kw_only=True)
class TriggerRecord:
    """A stored record that may fire a trigger: an activity or a message event.

    Attributes:
        record_id: The activity or event id.
        contact_id: Whose it is.
        occurred_at: When it happened.
        properties: An activity's plain properties (empty for events).

    .. versionadded:: 0.4.0
    """

    record_id: str
    contact_id: str
    occurred_at: datetime
    properties: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class WakeScope:
    """Which enrollments a wake reaches: a journey version, at any step or at these steps.

    Attributes:
        journey_key: The journey.
        version: The version.
        steps: Only enrollments at one of these steps (``None``: at any step).

    .. versionadded:: 0.4.0
    """

    journey_key: str
    version: int
    steps: tuple[str, ...] | None = None


def _new_rows(
    seq: Any,
    when: Any,
    *,
    after: TriggerMark | None,
    before: int,
    since: datetime,
    until: datetime,
) -> list[Any]:
    """The SQL conditions of rows stored below *before*, in the window, not covered by *after*."""
    out: list[Any] = [seq < before, when >= since, when <= until]
    if after is not None:
        covered: Any = seq >= after.watermark
        if after.until is not None:
            covered = sa.or_(covered, when > after.until)
        out.append(covered)
    return out


def _after_key(when: Any, ident: Any, start: tuple[datetime, str] | None) -> list[Any]:
    if start is None:
        return []
    return [sa.or_(when > start[0], sa.and_(when == start[0], ident > start[1]))]


def _scope(scope: WakeScope) -> Any:
    cond = sa.and_(_E.c.journey_key == scope.journey_key, _E.c.version == scope.version)
    if scope.steps is not None:
        cond = sa.and_(cond, _E.c.step_id.in_(sorted(scope.steps)))
    return cond


def _in_scope(row: EnrollmentRow, scope: WakeScope) -> bool:
    if row.journey_key != scope.journey_key or row.version != scope.version:
        return False
    return scope.steps is None or row.step_id in scope.steps


@attrs.frozen(kw_only=True)
class JourneyCounts:
    """What :meth:`JourneyStore.journey_counts` counts for one journey version.

    Attributes:
        statuses: Enrollments per status (``active``, ``completed``, ``goal``,
            ``unsubscribed``, ``left_segment``); their sum is the enrollments entered.
        waiting: Active enrollments per step they stand at.
        visits: Times each step was entered, summed over the enrollments.
        issued: Intents claimed per send step.
        sent: Intents recorded as sent per send step.
        skipped: Intents recorded as skipped per send step.
        exits: ``(status, step, count)`` of the ended enrollments, ``step`` being the
            last send step recorded as sent before the end (``None``: none was).

    .. versionadded:: 0.4.0
    """

    statuses: Mapping[str, int] = attrs.field(factory=dict)
    waiting: Mapping[str, int] = attrs.field(factory=dict)
    visits: Mapping[str, int] = attrs.field(factory=dict)
    issued: Mapping[str, int] = attrs.field(factory=dict)
    sent: Mapping[str, int] = attrs.field(factory=dict)
    skipped: Mapping[str, int] = attrs.field(factory=dict)
    exits: tuple[tuple[str, str | None, int], ...] = ()


class TriggerRow(NamedTuple):
    """A stored record that can trigger a journey: ``(record_id, contact_id, occurred_at)``.

    .. versionadded:: 0.4.0
    """

    record_id: str
    contact_id: str
    occurred_at: datetime


class ContactEventRow(NamedTuple):
    """A contact's event for a replay: ``(contact_id, type, occurred_at, channel, intent_key)``.

    ``channel`` is the message's (``None``: unknown message); ``intent_key`` the key of
    the journey intent the message was recorded for, or ``None``.

    .. versionadded:: 0.4.0
    """

    contact_id: str
    type: EventType
    occurred_at: datetime
    channel: Channel | None
    intent_key: str | None


def _exit_order(row: tuple[str, str | None, int]) -> tuple[str, bool, str]:
    return (row[0], row[1] is not None, row[1] or "")


def _event_order(row: ContactEventRow) -> tuple[str, datetime, str, str]:
    return (row.contact_id, row.occurred_at, row.type.value, row.intent_key or "")


def _at(value: object) -> datetime:
    instant = _instant(value)
    assert instant is not None
    return instant
