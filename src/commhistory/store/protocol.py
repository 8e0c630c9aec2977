"""The repository protocol and the value types every repository returns.

A :class:`Repository` is where communication history is kept and read back.
:class:`~commhistory.store.sql.SQLRepository` (SQLite and PostgreSQL, encrypted)
and :class:`~commhistory.store.memory.MemoryRepository` (for tests) implement
it with the same semantics, checked by one contract test suite.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, Self, runtime_checkable

import attrs

from commhistory.errors import InvalidInputError
from commhistory.model import (
    Activity,
    BounceClass,
    ConsentEvent,
    ContactUpdate,
    Event,
    EventType,
    Message,
)

if TYPE_CHECKING:
    from commhistory.convert import ParsedLine
    from commhistory.store.activities import ActivityStore
    from commhistory.store.analytics import AnalyticsReader
    from commhistory.store.attributes import AttributeCodec, AttributeStore
    from commhistory.store.audit import AuditStore, MaskedHistory
    from commhistory.store.consent import ConsentStore
    from commhistory.store.costs import CostStore
    from commhistory.store.dead_letters import DeadLetterStore
    from commhistory.store.journeys import JourneyStore
    from commhistory.store.kpi import KpiStore
    from commhistory.store.mask_backfill import MaskBackfillReport
    from commhistory.store.partition import PartitionReport
    from commhistory.store.planning import PlanningStore
    from commhistory.store.privacy import PrivacyStore
    from commhistory.store.rotation import RotationReport
    from commhistory.store.segments import SegmentStore

__all__ = [
    "BatchFeed",
    "BatchHook",
    "BatchOutcome",
    "DeadLetter",
    "DeliveryOutcome",
    "HistoryWriter",
    "IngestReport",
    "Repository",
    "StoredBatch",
    "TimelineEntry",
]


def _non_negative(_inst: object, attr: attrs.Attribute[int], value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidInputError(field=attr.name, reason="must be a non-negative integer")


@attrs.frozen(kw_only=True)
class IngestReport:
    """What an ingest call did with its input.

    Every item given is counted exactly once, so
    ``inserted + duplicates + rejected == total`` equals the number of items (or
    lines) given. Reports add up with ``+``.

    Attributes:
        inserted: Records stored now.
        duplicates: Records already stored (same message id, event id, provider
            event id or consent id), in an earlier call or earlier in this one.
            Nothing of a duplicate is stored again.
        rejected: Items that failed validation; each is kept as a dead letter.
        linked: Events stored earlier without their message (orphans) that were
            linked to a message arriving in this call. Not part of ``total``.

    .. versionadded:: 0.1.0
    """

    inserted: int = attrs.field(default=0, validator=_non_negative)
    duplicates: int = attrs.field(default=0, validator=_non_negative)
    rejected: int = attrs.field(default=0, validator=_non_negative)
    linked: int = attrs.field(default=0, validator=_non_negative)

    @property
    def total(self) -> int:
        """The number of items given, ``inserted + duplicates + rejected``."""
        return self.inserted + self.duplicates + self.rejected

    def __add__(self, other: object) -> IngestReport:
        if not isinstance(other, IngestReport):
            return NotImplemented
        return IngestReport(
            inserted=self.inserted + other.inserted,
            duplicates=self.duplicates + other.duplicates,
            rejected=self.rejected + other.rejected,
            linked=self.linked + other.linked,
        )


@attrs.frozen(kw_only=True)
class BatchOutcome:
    """What one write batch did, as a batch hook sees it before the batch commits.

    See :meth:`Repository.batch_hook`.

    Attributes:
        source: The source name given to ``ingest`` (or the method's name).
        report: The batch's own counts.
        changed: Ids of what the batch changed in consent and suppression, sorted:
            the contact ids of consent events it stored (given, or derived
            from SMS STOP/START and unsubscribes) and the suppression ids it
            added (hard bounces, complaints, soft-bounce streaks). Never an address.

    .. versionadded:: 0.3.0
    """

    source: str
    report: IngestReport
    changed: tuple[str, ...] = ()


BatchHook = Callable[[BatchOutcome], None]
"""``hook(outcome)``: see :meth:`Repository.batch_hook`."""

DeliveryOutcome = tuple[datetime, str, EventType, BounceClass | None]
"""``(occurred_at, event_id, type, bounce)`` of one delivery or bounce of an address."""


class StoredBatch(Protocol):
    """One write batch as a batch feed sees it: inside the batch's transaction, before commit.

    The records are the batch's own, in memory; the two lookups read what the
    batch stored together with what was stored before. Whatever a feed writes
    through the repository's ports joins the batch's transaction.

    .. versionadded:: 0.4.0
    """

    @property
    def source(self) -> str:
        """The source name given to ``ingest`` (or the method's name)."""
        ...

    @property
    def messages(self) -> Sequence[Message]:
        """The batch's messages (new and duplicate), in input order."""
        ...

    @property
    def events(self) -> Sequence[Event]:
        """The batch's events (new and duplicate), in input order."""
        ...

    @property
    def consents(self) -> Sequence[ConsentEvent]:
        """The batch's consent events (new and duplicate), in input order.

        .. versionadded:: 0.4.0
        """
        ...

    @property
    def activities(self) -> Sequence[Activity]:
        """The activities this batch stored now (not its duplicates or refused ones).

        .. versionadded:: 0.4.0
        """
        ...

    def reactions(self, types: Collection[EventType]) -> list[tuple[Event, Message]]:
        """Return the stored events of *types* that this batch stored or linked, with messages.

        An event counts when the batch holds it, or when it waited for one of the
        batch's messages (an orphan linked now). Each comes with its message,
        address decrypted; events of erased contacts are left out.
        """
        ...

    def deliveries(self, message: Message) -> list[DeliveryOutcome]:
        """Return the latest deliveries and bounces (at most 500) of *message*'s address.

        Only messages of the same contact and channel to the same address count.
        """
        ...


BatchFeed = Callable[[StoredBatch], Iterable[str]]
"""``feed(batch) -> changed ids``: see :meth:`Repository.set_batch_feed`."""


@attrs.frozen(kw_only=True)
class TimelineEntry:
    """One message of a contact's timeline, with the events that belong to it.

    Attributes:
        message: The message, decrypted.
        events: Its events, decrypted, ordered by ``occurred_at`` (then event id).
            Each event's ``message_id`` is the message's id, even when the event
            originally named its message by ``provider`` + ``provider_message_id``.

    .. versionadded:: 0.1.0
    """

    message: Message
    events: tuple[Event, ...] = ()


@attrs.frozen(kw_only=True)
class DeadLetter:
    """An input item that could not be stored, kept with why, for inspection or replay.

    Attributes:
        id: The dead letter's id.
        received_at: When it was rejected, UTC.
        source: Where it came from (a file name, ``"record_events"``...).
        line: The 1-based line or row number in *source*, when known.
        field: The offending field (``"<line>"`` for the whole line).
        reason: Why it was rejected (never contains personal values).
        raw: The raw input text. Personal: stored encrypted, kept out of ``repr()``.

    .. versionadded:: 0.1.0
    """

    id: str
    received_at: datetime
    source: str
    line: int | None
    field: str
    reason: str
    raw: str = attrs.field(repr=False)


class HistoryWriter(Protocol):
    """What webhook receivers and contact resolvers need: ingest, and address lookups.

    The facade (:class:`~commhistory.CommHistory`), its guarded view and every
    :class:`Repository` are history writers. Hand receivers the facade, so the
    consent feed it installs runs for every batch.

    .. versionadded:: 0.4.0
    """

    def ingest(self, lines: Iterable[ParsedLine], *, source: str) -> IngestReport:
        """Store parsed lines; see :meth:`Repository.ingest`."""
        ...

    def find_contacts(
        self,
        *,
        email: str | None = None,
        phone: str | None = None,
        line_user_id: str | None = None,
    ) -> list[str]:
        """Find contacts by address; see :meth:`Repository.find_contacts`."""
        ...


@runtime_checkable
class Repository(Protocol):
    """Keeps a business's communication history and reads it back; the storage role.

    Implementations: :class:`~commhistory.store.sql.SQLRepository` (encrypted, on
    SQLite or PostgreSQL) and :class:`~commhistory.store.memory.MemoryRepository`
    (in memory, for tests). A host may plug in its own.

    Semantics every implementation keeps:

    * Ingest is idempotent: a message id, event id, provider event id
      (with its provider) or consent id seen before is a *duplicate*, counted and
      not stored again.
    * Input is processed in batches; each batch is stored completely or not at all.
    * An event whose message is not stored yet is kept as an *orphan* and linked
      when the message arrives. Orphans are not part of any timeline.
    * Every item is counted once: ``inserted + duplicates + rejected`` equals
      the number of items given.

    .. versionadded:: 0.1.0
    """

    def record_messages(self, items: Iterable[Message]) -> IngestReport:
        """Store messages, linking any orphan events that were waiting for them.

        Args:
            items: The messages; any iterable, consumed in batches.

        Returns:
            What was stored. An item that is not a :class:`Message`, or that the
            store cannot hold, is rejected into the dead letters.

        Raises:
            StorageError: The backend failed; batches stored before stay stored.
        """
        ...

    def record_events(self, items: Iterable[Event]) -> IngestReport:
        """Store events; an event whose message is not stored yet becomes an orphan.

        Args:
            items: The events; any iterable, consumed in batches.

        Returns:
            What was stored.

        Raises:
            StorageError: The backend failed; batches stored before stay stored.
        """
        ...

    def record_consent(self, items: Iterable[ConsentEvent]) -> IngestReport:
        """Append consent events (the ledger is append-only).

        Args:
            items: The consent events. One without a ``consent_id`` gets one
                derived from its content, so importing it twice is a duplicate.

        Returns:
            What was stored.

        Raises:
            StorageError: The backend failed; batches stored before stay stored.
        """
        ...

    def record_activities(self, items: Iterable[Activity]) -> IngestReport:
        """Store activities; an activity id seen before is a duplicate.

        A repeated id naming another contact or another name is a conflict,
        kept as a dead letter. Properties whose keys are declared plain for the
        activity's name are stored in the clear, every other one encrypted. A
        bare repository checks no declarations: the facade does
        (:meth:`commhistory.CommHistory.record_activities`).

        Args:
            items: The activities; any iterable, consumed in batches.

        Returns:
            What was stored.

        Raises:
            StorageError: The backend failed; batches stored before stay stored.

        .. versionadded:: 0.4.0
        """
        ...

    def record_contacts(self, items: Iterable[ContactUpdate]) -> IngestReport:
        """Store contact attribute updates, checked by the installed attribute codec.

        An update whose values all equal those in force at its time is a
        duplicate; one the codec refuses, or of an erased contact, is rejected
        into the dead letters.

        Args:
            items: The updates; any iterable, consumed in batches.

        Returns:
            What was stored.

        .. versionadded:: 0.4.0
        """
        ...

    def ingest(self, lines: Iterable[ParsedLine], *, source: str) -> IngestReport:
        """Store the records of parsed input lines; invalid lines become dead letters.

        Within one batch, messages are stored before events, so an event and its
        message in the same batch are linked at once.

        Args:
            lines: Parsed lines from :func:`commhistory.convert.read_records`.
            source: A name for the input (a file name), kept with dead letters.

        Returns:
            What was stored; ``total`` equals the number of lines.

        Raises:
            StorageError: The backend failed; batches stored before stay stored.
        """
        ...

    def timeline(self, contact_id: str) -> list[TimelineEntry]:
        """Return a contact's messages with their events, decrypted, in time order.

        Messages are ordered by ``sent_at`` (then message id).

        Args:
            contact_id: The contact.

        Returns:
            The entries; empty for a contact known only from consent events.

        Raises:
            NotFoundError: No message or consent event names this contact
                (``kind="contact"``).
        """
        ...

    def consent_history(self, contact_id: str) -> list[ConsentEvent]:
        """Return a contact's consent events, decrypted, ordered by ``occurred_at`` (then id).

        Args:
            contact_id: The contact.

        Returns:
            The consent events, each with its ``consent_id`` (given or derived).

        Raises:
            NotFoundError: No message or consent event names this contact.
        """
        ...

    def find_contacts(
        self,
        *,
        email: str | None = None,
        phone: str | None = None,
        line_user_id: str | None = None,
    ) -> list[str]:
        """Find the contacts a message was sent to (or received from) at an address.

        The value is normalized first, then looked up by exact normalized value.

        Args:
            email: An email address.
            phone: A phone number (E.164, or national in the JP region).
            line_user_id: A LINE user id.

        Returns:
            The contact ids, sorted; empty when none matches.

        Raises:
            InvalidInputError: Not exactly one criterion was given.
            NormalizationError: The value is not a valid address of its kind.
        """
        ...

    def dead_letters(
        self, *, source: str | None = None, limit: int | None = None
    ) -> list[DeadLetter]:
        """Return the dead letters, decrypted, oldest first.

        Args:
            source: Only those from this source.
            limit: At most this many.

        Returns:
            The dead letters.
        """
        ...

    @property
    def consent_store(self) -> ConsentStore:
        """The consent and suppression storage port (see :mod:`commhistory.store.consent`).

        .. versionadded:: 0.4.0
        """
        ...

    @property
    def kpi_store(self) -> KpiStore:
        """The KPI aggregate storage port (see :mod:`commhistory.store.kpi`).

        .. versionadded:: 0.4.0
        """
        ...

    @property
    def privacy_store(self) -> PrivacyStore:
        """The erasure, subject export and retention port (see :mod:`commhistory.store.privacy`).

        .. versionadded:: 0.4.0
        """
        ...

    @property
    def activity_store(self) -> ActivityStore:
        """The activity storage port (see :mod:`commhistory.store.activities`).

        .. versionadded:: 0.4.0
        """
        ...

    @property
    def planning_store(self) -> PlanningStore:
        """The send planning storage port (see :mod:`commhistory.store.planning`).

        .. versionadded:: 0.4.0
        """
        ...

    @property
    def attribute_store(self) -> AttributeStore:
        """The contact attribute storage port (see :mod:`commhistory.store.attributes`).

        .. versionadded:: 0.4.0
        """
        ...

    def set_attribute_codec(self, codec: AttributeCodec | None) -> None:
        """Install the check that types contact attribute updates met by ``ingest``.

        The facade installs its declared schema's check here, so ``contact``
        lines are validated in their batch; an update it refuses becomes a
        dead letter. Without a codec, contact updates are refused.

        .. versionadded:: 0.4.0
        """
        ...

    @property
    def dead_letter_store(self) -> DeadLetterStore:
        """The dead-letter storage port (see :mod:`commhistory.store.dead_letters`).

        .. versionadded:: 0.4.0
        """
        ...

    @property
    def cost_store(self) -> CostStore:
        """The campaign cost storage port (see :mod:`commhistory.store.costs`).

        .. versionadded:: 0.4.0
        """
        ...

    @property
    def analytics_reader(self) -> AnalyticsReader:
        """The analytics export's read port (see :mod:`commhistory.store.analytics`).

        .. versionadded:: 0.4.0
        """
        ...

    @property
    def segment_store(self) -> SegmentStore:
        """The segment port, which counts and lists condition trees and keeps saved segments.

        See :mod:`commhistory.store.segments`.

        .. versionadded:: 0.4.0
        """
        ...

    @property
    def journey_store(self) -> JourneyStore:
        """The journey storage port (definitions, enrollments and claimed send intents).

        See :mod:`commhistory.store.journeys`.

        .. versionadded:: 0.4.0
        """
        ...

    @property
    def audit_store(self) -> AuditStore:
        """The audit log storage port (see :mod:`commhistory.store.audit`).

        .. versionadded:: 0.4.0
        """
        ...

    @property
    def masked_history(self) -> MaskedHistory:
        """Plain-column history reads, nothing decrypted (see :mod:`commhistory.store.audit`).

        .. versionadded:: 0.4.0
        """
        ...

    def set_batch_feed(self, name: str, feed: BatchFeed | None) -> None:
        """Run *feed* inside every write batch's transaction, after the batch is written.

        The facade installs the consent feed here (suppressions from bounces,
        complaints, STOP keywords). A feed returns the ids of what it changed;
        they reach the batch hooks in :attr:`BatchOutcome.changed`. An
        exception from a feed rolls the batch back and propagates.

        Args:
            name: The feed's name; setting a name again replaces its feed.
            feed: The feed, or ``None`` to remove it.

        .. versionadded:: 0.4.0
        """
        ...

    def batch_hook(self, hook: BatchHook) -> AbstractContextManager[None]:
        """Call *hook* with each write batch's outcome, inside its transaction, while open.

        For this thread, while the returned context is entered. What the hook
        writes through the repository joins the batch's transaction.

        .. versionadded:: 0.3.0
        .. versionchanged:: 0.4.0
           The hook receives only the :class:`BatchOutcome`.
        """
        ...

    def transaction(self, *, read: bool = False) -> AbstractContextManager[object]:
        """Open a unit of work; repository calls inside it join it (see ``docs/storage.md``).

        .. versionadded:: 0.3.0
        """
        ...

    @property
    def in_transaction(self) -> bool:
        """Whether this thread is inside :meth:`transaction`."""
        ...

    def after_commit(self, call: Callable[[], object]) -> None:
        """Run *call* once the current transaction commits (at once when none is open)."""
        ...

    def rotate_keys(
        self,
        *,
        batch_size: int = 1000,
        reindex: bool = False,
        progress: Callable[[str, int], None] | None = None,
    ) -> RotationReport:
        """Move stored keys under the keyring's current key (see ``docs/keys.md``).

        *progress*, when given, is called after each batch with the step's name
        and the rows done in that step.

        Raises:
            InvalidInputError: The repository keeps no keys.

        .. versionadded:: 0.4.0
        """
        ...

    def backfill_masks(self, *, batch_size: int = 1000) -> MaskBackfillReport:
        """Store masked addresses for messages stored before schema revision 0005.

        Raises:
            InvalidInputError: The repository stores no masks.

        .. versionadded:: 0.4.0
        """
        ...

    def ensure_partitions(
        self, *, ahead_months: int = 3, now: datetime | None = None
    ) -> PartitionReport:
        """Create the coming months' partitions of a partitioned PostgreSQL database.

        The current month and *ahead_months* after it get a partition of
        ``messages`` and of ``events``; a month with rows in the ``DEFAULT``
        partition gets one too, its rows moved there (see
        :mod:`commhistory.store.partition`). Nothing to do (an empty report) on a
        database that is not partitioned, on SQLite and in memory.

        Raises:
            InvalidInputError: *ahead_months* is not a whole number 0 to 120.
            StorageError: The database failed (nothing changed).

        .. versionadded:: 0.4.0
        """
        ...

    def close(self) -> None:
        """Release the backend's resources; the repository is unusable afterwards."""
        ...

    def __enter__(self) -> Self:
        """Return the repository itself."""
        ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the repository."""
        ...
