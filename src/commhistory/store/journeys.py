"""Journey storage: definitions, enrollments and the send intents ``due()`` claimed.

:class:`JourneyStore` is the port :mod:`commhistory.journeys.engine` uses
(tables ``journey_definitions``, ``journey_enrollments`` and
``journey_intents``, migration 0015):

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
:meth:`JourneyStore.message_events`, :meth:`JourneyStore.contact_events`,
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
import threading
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

import attrs
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from commhistory.errors import InvalidInputError, NotFoundError
from commhistory.model import Channel, EventType
from commhistory.normalize.time import from_micros, to_micros
from commhistory.store import schema

if TYPE_CHECKING:
    from commhistory.store.memory import MemoryState
    from commhistory.store.sql import SQLRepository

__all__ = [
    "ActivityTime",
    "ContactEvent",
    "EnrollmentMove",
    "EnrollmentRow",
    "IntentRow",
    "JourneyStore",
    "MemoryJourneyStore",
    "MessageEvent",
    "SQLJourneyStore",
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

    .. versionadded:: 0.4.0
    """

    key: str
    enrollment_id: str
    step_id: str
    issued_at: datetime
    recorded_at: datetime | None = None
    outcome: str | None = None
    message_id: str | None = None


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
    """An event of a contact, with its message's channel (:meth:`JourneyStore.contact_events`).

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

    def last_entry(self, journey_key: str, contact_id: str) -> datetime | None:
        """When the contact last entered the journey (any version), or ``None``."""
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

    def contact_events(
        self,
        contact_ids: Collection[str],
        types: Collection[EventType],
        *,
        after: datetime,
        until: datetime,
    ) -> list[ContactEvent]:
        """The events of *types* in ``[after, until]`` of these contacts, with their channel."""
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

    def record(self, key: str, at: datetime, outcome: str, message_id: str | None) -> bool:
        """Record the host's send of a claimed intent and wake its enrollment at *at*.

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
    ``= ANY(...)`` the planner would rather scan the whole table); SQLite gets
    chunks of :data:`_SQLITE_ROWS` placeholders.
    """
    out: list[Sequence[Any]] = []
    if repo.dialect == "postgresql":
        inner = sql.replace("IN ({in})", "= _v.id")
        statement = (
            f"SELECT t.* FROM unnest(%s::text[]) AS _v(id) "
            f"CROSS JOIN LATERAL ({inner} OFFSET 0) AS t"
        )
        for start in range(0, len(values), _PG_ARRAY):
            chunk = list(values[start : start + _PG_ARRAY])
            out.extend(conn.exec_driver_sql(statement, (chunk, *extra)).fetchall())
        return out
    for start in range(0, len(values), _SQLITE_ROWS):
        part = values[start : start + _SQLITE_ROWS]
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

    def last_entry(self, journey_key: str, contact_id: str) -> datetime | None:
        """See :meth:`JourneyStore.last_entry`."""
        with self.repo.transaction(read=True) as conn:
            value = conn.execute(
                sa.select(sa.func.max(_E.c.entered_at)).where(
                    _E.c.contact_id == contact_id, _E.c.journey_key == journey_key
                )
            ).scalar()
        return _instant(value)

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
                    "SELECT current_setting(%s), current_setting(%s)", _PG_JOINS
                ).one()
                conn.exec_driver_sql(
                    "SELECT set_config(%s, 'off', true), set_config(%s, 'off', true)", _PG_JOINS
                )
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

    def contact_events(
        self,
        contact_ids: Collection[str],
        types: Collection[EventType],
        *,
        after: datetime,
        until: datetime,
    ) -> list[ContactEvent]:
        """See :meth:`JourneyStore.contact_events`."""
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
        )

    def record(self, key: str, at: datetime, outcome: str, message_id: str | None) -> bool:
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
                .values(recorded_at=at, outcome=outcome, message_id=message_id)
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

    def last_entry(self, journey_key: str, contact_id: str) -> datetime | None:
        """See :meth:`JourneyStore.last_entry`."""
        times = [
            r.entered_at
            for r in self._j.enrollments.values()
            if r.journey_key == journey_key and r.contact_id == contact_id
        ]
        return max(times) if times else None

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

    def contact_events(
        self,
        contact_ids: Collection[str],
        types: Collection[EventType],
        *,
        after: datetime,
        until: datetime,
    ) -> list[ContactEvent]:
        """See :meth:`JourneyStore.contact_events`."""
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

    def record(self, key: str, at: datetime, outcome: str, message_id: str | None) -> bool:
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
                intent, recorded_at=at, outcome=outcome, message_id=message_id
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
