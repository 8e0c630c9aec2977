"""The repository protocol and the value types every repository returns.

A :class:`Repository` is where communication history is kept and read back.
:class:`~commhistory.store.sql.SQLRepository` (SQLite and PostgreSQL, encrypted)
and :class:`~commhistory.store.memory.MemoryRepository` (for tests) implement
it with the same semantics, checked by one contract test suite.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self, runtime_checkable

import attrs

from commhistory.errors import InvalidInputError
from commhistory.model import ConsentEvent, Event, Message

if TYPE_CHECKING:
    from commhistory.consent import ConsentLedger, SendDecision, SuppressionList
    from commhistory.convert import ParsedLine
    from commhistory.kpi.metrics import KpiTable
    from commhistory.model import Channel, Purpose
    from commhistory.privacy import ErasureReport

__all__ = ["BatchOutcome", "DeadLetter", "IngestReport", "Repository", "TimelineEntry"]


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

    See :meth:`commhistory.store.sql.SQLRepository.batch_hook`.

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
    def consent(self) -> ConsentLedger:
        """The consent ledger, with ``grant``, ``withdraw`` and ``status(..., at=)``."""
        ...

    @property
    def suppression(self) -> SuppressionList:
        """The address-level suppression list."""
        ...

    def can_send(
        self,
        contact_id: str,
        channel: Channel | str,
        purpose: Purpose | str,
        at: datetime | None = None,
        *,
        address: str | None = None,
    ) -> SendDecision:
        """Decide whether a message may be sent, with reasons (see ``docs/consent.md``)."""
        ...

    def export_subject(self, contact_id: str) -> dict[str, Any]:
        """Everything held on a person as one JSON-serialisable document.

        Raises:
            NotFoundError: The contact is unknown.
        """
        ...

    def erase_subject(self, contact_id: str) -> ErasureReport:
        """Crypto-shred a person; idempotent (see ``docs/privacy.md``).

        Raises:
            NotFoundError: The contact is unknown.
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

    def kpis(
        self,
        by: str | Iterable[str] = (),
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        tz: str = "UTC",
        exclude_machine: bool = True,
    ) -> KpiTable:
        """Compute the KPIs of DESIGN section 5 over the stored history.

        Args:
            by: Grouping keys: any of ``campaign_id``, ``variant``, ``channel``,
                ``provider``, ``purpose`` and at most one of ``day``, ``week``, ``month``.
            since: Only messages sent at or after this aware datetime.
            until: Only messages sent before this aware datetime.
            tz: The IANA time zone periods are computed in.
            exclude_machine: Leave out reactions flagged ``machine`` (the default).

        Returns:
            The table (see :mod:`commhistory.kpi.metrics`).

        Raises:
            InvalidInputError: Unknown grouping keys, zone, or ``since`` after ``until``.

        .. versionadded:: 0.2.0
        """
        ...
