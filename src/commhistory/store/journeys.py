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

:class:`SQLJourneyStore` (SQLAlchemy Core) and :class:`MemoryJourneyStore`
implement the port; a repository hands its own out as ``repo.journey_store``.
Every method runs in the repository's current transaction when one is open,
else in one of its own.

.. versionadded:: 0.4.0
"""

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
    "EnrollmentRow",
    "IntentRow",
    "JourneyStore",
    "MemoryJourneyStore",
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

    def waking(self, now: datetime, limit: int | None = None) -> list[EnrollmentRow]:
        """The active enrollments with ``wake_at <= now``, earliest first (one indexed query)."""
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

    def claim(self, intents: Sequence[IntentRow]) -> list[str]:
        """Insert the intents' keys; return the keys this call inserted (others were claimed)."""
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


def _dump(value: Mapping[str, Any]) -> str:
    return json.dumps(dict(value), sort_keys=True, separators=(",", ":"))


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

    def waking(self, now: datetime, limit: int | None = None) -> list[EnrollmentRow]:
        """See :meth:`JourneyStore.waking`."""
        stmt = (
            sa.select(*_ROW_COLUMNS)
            .where(_E.c.status == "active", _E.c.wake_at <= now)
            .order_by(_E.c.wake_at, _E.c.enrollment_id)
        )
        if limit is not None:
            stmt = stmt.limit(limit)
        with self.repo.transaction(read=True) as conn:
            return [_row(r) for r in conn.execute(stmt)]

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

    def claim(self, intents: Sequence[IntentRow]) -> list[str]:
        """See :meth:`JourneyStore.claim`."""
        claimed: list[str] = []
        with self.repo.transaction() as conn:
            for intent in intents:
                done = conn.execute(
                    self._insert(_I).values(
                        intent_key=intent.key,
                        enrollment_id=intent.enrollment_id,
                        step_id=intent.step_id,
                        issued_at=intent.issued_at,
                    )
                ).first()
                if done is not None:
                    claimed.append(intent.key)
        return claimed

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

    def waking(self, now: datetime, limit: int | None = None) -> list[EnrollmentRow]:
        """See :meth:`JourneyStore.waking`."""
        rows = sorted(
            (
                r
                for r in self._j.enrollments.values()
                if r.status == "active" and r.wake_at is not None and r.wake_at <= now
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

    def claim(self, intents: Sequence[IntentRow]) -> list[str]:
        """See :meth:`JourneyStore.claim`."""
        claimed: list[str] = []
        with self._j.lock:
            for intent in intents:
                if intent.key not in self._j.intents:
                    self._j.intents[intent.key] = intent
                    claimed.append(intent.key)
        return claimed

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
