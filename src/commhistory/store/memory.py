"""An in-memory repository with the SQL repository's semantics, for tests.

:class:`MemoryRepository` keeps everything in Python dicts, unencrypted. It
dedupes, links orphan events, keeps dead letters and counts exactly like
:class:`~commhistory.store.sql.SQLRepository` (one contract test suite runs
against both), so host code can test against it without a database.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import attrs

from commhistory._lifecycle import ClosesOnExit
from commhistory.errors import InvalidInputError, NotFoundError, StorageError
from commhistory.model import (
    ADDRESS_KINDS,
    Activity,
    ConsentEvent,
    Event,
    Message,
    SuppressionEntry,
    consent_id_of,
)
from commhistory.store import partition
from commhistory.store.activities import MemoryActivityStore, memory_write_activities
from commhistory.store.analytics import MemoryAnalyticsReader
from commhistory.store.attributes import MemoryAttributeStore, memory_apply
from commhistory.store.audit import MemoryAuditStore, MemoryMaskedHistory
from commhistory.store.batching import (
    Batch,
    BatchedWrites,
    check_batch_size,
    one_criterion,
)
from commhistory.store.consent import MemoryConsentStore
from commhistory.store.costs import Cost, MemoryCostStore
from commhistory.store.dead_letters import MemoryDeadLetterStore
from commhistory.store.feed import MemoryStoredBatch
from commhistory.store.journeys import MemoryJourneys, MemoryJourneyStore
from commhistory.store.kpi import MemoryKpiStore
from commhistory.store.partition import PartitionReport
from commhistory.store.planning import MemoryPlanningStore
from commhistory.store.privacy import MemoryPrivacyStore
from commhistory.store.protocol import (
    BatchFeed,
    BatchHook,
    BatchOutcome,
    DeadLetter,
    IngestReport,
    TimelineEntry,
)
from commhistory.store.segments import MemorySegmentStore

if TYPE_CHECKING:
    from commhistory.store.attributes import AttributeCodec, StoredDefinition
    from commhistory.store.mask_backfill import MaskBackfillReport
    from commhistory.store.rotation import RotationReport
    from commhistory.store.segments import SavedSegment, SnapshotInfo

__all__ = ["MemoryRepository", "MemoryState"]


class MemoryState:
    """Everything a :class:`MemoryRepository` stores, in plain Python containers.

    The memory implementations of the storage ports (:mod:`commhistory.store.consent`,
    :mod:`commhistory.store.feed`) read and write it.

    .. versionadded:: 0.4.0
    """

    __slots__ = (
        "activities",
        "activity_message",
        "activity_names",
        "addresses",
        "attribute_definitions",
        "attributes",
        "consents",
        "contacts",
        "costs",
        "dead_letters",
        "erased",
        "event_contact",
        "events",
        "journeys",
        "messages",
        "orphans",
        "pairs",
        "provider_events",
        "retained",
        "segment_definitions",
        "segment_snapshots",
        "suppressions",
    )

    def __init__(self) -> None:
        self.contacts: set[str] = set()
        self.messages: dict[str, Message] = {}
        self.pairs: dict[tuple[str, str], str] = {}
        self.events: dict[str, Event] = {}
        self.event_contact: dict[str, str | None] = {}
        self.orphans: set[str] = set()
        self.provider_events: set[tuple[str, str]] = set()
        self.consents: dict[str, ConsentEvent] = {}
        self.addresses: dict[tuple[str, str], set[str]] = {}
        self.dead_letters: list[DeadLetter] = []
        self.suppressions: dict[str, SuppressionEntry] = {}
        self.erased: dict[str, datetime] = {}
        self.retained: dict[str, datetime] = {}
        """Consent ids of erased contacts, with the date their evidence is due."""
        self.costs: dict[str, Cost] = {}
        """Campaign costs by cost id."""
        self.activities: dict[str, Activity] = {}
        self.activity_message: dict[str, str] = {}
        """The attributed message of each attributed activity."""
        self.activity_names: dict[str, frozenset[str]] = {}
        """The declared activity names with their plain property keys."""
        self.attribute_definitions: dict[str, StoredDefinition] = {}
        self.attributes: dict[tuple[str, str], list[Any]] = {}
        """``(contact_id, name) -> [(valid_from_us, valid_to_us, AttributeValue), ...]``."""
        self.segment_definitions: dict[str, list[SavedSegment]] = {}
        """Saved segment versions by name, oldest first."""
        self.segment_snapshots: dict[str, tuple[SnapshotInfo, set[str]]] = {}
        """Membership snapshots by id, with their contact ids."""
        self.journeys = MemoryJourneys()
        """Journey definitions, enrollments and claimed intents."""


class MemoryRepository(BatchedWrites, ClosesOnExit):
    """A :class:`~commhistory.store.protocol.Repository` held in memory (for tests).

    Nothing is encrypted or persisted. Each batch is applied atomically: a batch
    whose input fails midway leaves nothing behind. Storage only: wrap it in
    :class:`~commhistory.CommHistory` (``CommHistory.in_memory()``) for consent,
    KPIs, privacy and access control.

    Args:
        batch_size: Items per batch (as in the SQL repository).

    .. versionadded:: 0.1.0
    """

    def __init__(self, *, batch_size: int = 5000) -> None:
        self._batch_size = check_batch_size(batch_size)
        self._s = MemoryState()
        self._closed = False
        self._feeds: dict[str, BatchFeed] = {}
        self._consent_store = MemoryConsentStore(self._s)
        self._audit_store = MemoryAuditStore()
        self._masked_history = MemoryMaskedHistory(self._s, self._check_open)
        self._privacy_store = MemoryPrivacyStore(self._s)
        self._kpi_store = MemoryKpiStore(self._s)
        self._dead_letter_store = MemoryDeadLetterStore(self._s)
        self._cost_store = MemoryCostStore(self._s)
        self._activity_store = MemoryActivityStore(self._s)
        self._attribute_store = MemoryAttributeStore(self._s)
        self._planning_store = MemoryPlanningStore(self._s)
        self._attribute_codec: AttributeCodec | None = None
        self._analytics_reader = MemoryAnalyticsReader(self._s)
        self._segment_store = MemorySegmentStore(self._s)
        self._journey_store = MemoryJourneyStore(self._s)
        self._local = threading.local()

    def __repr__(self) -> str:
        s = self._s
        return f"MemoryRepository(messages={len(s.messages)}, events={len(s.events)})"

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError("the repository is closed")

    # ------------------------------------------------------------------ writes

    def _write(self, parts: Iterable[Batch], source: str) -> IngestReport:
        self._check_open()
        report = IngestReport()
        hook: BatchHook | None = getattr(self._local, "hook", None)
        for batch in parts:
            part = self._apply(batch, source)
            changed = [c.contact_id for c in batch.consents if c.contact_id not in self._s.erased]
            if self._feeds:
                stored = MemoryStoredBatch(self._s, batch, source)
                for feed in self._feeds.values():
                    changed.extend(feed(stored))
            if hook is not None:
                hook(BatchOutcome(source=source, report=part, changed=tuple(sorted(set(changed)))))
            report += part
        return report

    def _apply(self, batch: Batch, source: str) -> IngestReport:
        # The batch is fully read before it is applied and applying it cannot
        # fail halfway, so a batch is all or nothing, as in the SQL repository.
        s = self._s
        inserted = duplicates = linked = 0
        fresh: list[Message] = []
        refused: set[str] = set()  # ids refused in this batch: a repeat is a duplicate
        refused_messages: set[str | tuple[str, str]] = set()
        for m, line in zip(batch.messages, batch.message_lines, strict=True):
            pair = (m.provider, m.provider_message_id)
            prior = s.messages.get(m.message_id)
            if prior is not None and (prior.contact_id, prior.channel, prior.direction) != (
                m.contact_id,
                m.channel,
                m.direction,
            ):
                batch.conflict(m, line)
                continue
            if m.message_id in s.messages or pair in s.pairs or m.message_id in refused_messages:
                duplicates += 1
                continue
            if m.contact_id in s.erased:
                batch.refuse_erased(m, line)
                refused_messages.add(m.message_id)
                if m.provider is not None and m.provider_message_id is not None:
                    refused_messages.add((m.provider, m.provider_message_id))
                continue
            s.messages[m.message_id] = m
            if m.provider is not None and m.provider_message_id is not None:
                s.pairs[(m.provider, m.provider_message_id)] = m.message_id
            s.contacts.add(m.contact_id)
            kind = ADDRESS_KINDS.get(m.channel)
            if kind is not None:
                s.addresses.setdefault((kind, m.address), set()).add(m.contact_id)
            fresh.append(m)
            inserted += 1
        if fresh:
            linked = self._link(s, fresh)
        for e, line in zip(batch.events, batch.event_lines, strict=True):
            pe = (e.provider, e.provider_event_id)
            if e.event_id in s.events or pe in s.provider_events or e.event_id in refused:
                duplicates += 1
                continue
            message = self._message_of(s, e)
            named = (
                e.message_id
                if e.message_id is not None
                else (e.provider or "", e.provider_message_id or "")
            )
            if named in refused_messages or (
                message is not None and message.contact_id in s.erased
            ):
                batch.refuse_erased(e, line)
                refused.add(e.event_id)
                continue
            stored = e if message is None else attrs.evolve(e, message_id=message.message_id)
            s.events[e.event_id] = stored
            s.event_contact[e.event_id] = None if message is None else message.contact_id
            if message is None:
                s.orphans.add(e.event_id)
            if e.provider is not None and e.provider_event_id is not None:
                s.provider_events.add((e.provider, e.provider_event_id))
            inserted += 1
        for c, line in zip(batch.consents, batch.consent_lines, strict=True):
            cid = consent_id_of(c)
            if cid in s.consents or cid in refused:
                duplicates += 1
                continue
            if c.contact_id in s.erased:
                batch.refuse_erased(c, line)
                refused.add(cid)
                continue
            s.consents[cid] = attrs.evolve(c, consent_id=cid)
            s.contacts.add(c.contact_id)
            inserted += 1
        if batch.activities:
            ins, dup = memory_write_activities(s, batch)
            inserted += ins
            duplicates += dup
        if batch.contact_changes:
            statuses = memory_apply(s, batch.contact_changes, on_erased="skip")
            for status, update, line in zip(
                statuses, batch.contact_updates, batch.contact_lines, strict=True
            ):
                if status == "changed":
                    inserted += 1
                elif status == "unchanged":
                    duplicates += 1
                else:
                    batch.refuse_erased(update, line)
        now = datetime.now(UTC)
        known = {(d.source, d.line, d.raw) for d in s.dead_letters}
        for line, field, reason, raw in batch.rejects:
            if (source, line, raw) in known:
                continue
            known.add((source, line, raw))
            s.dead_letters.append(
                DeadLetter(
                    id=secrets.token_hex(16),
                    received_at=now,
                    source=source,
                    line=line,
                    field=field,
                    reason=reason,
                    raw=raw,
                )
            )
        return IngestReport(
            inserted=inserted, duplicates=duplicates, rejected=len(batch.rejects), linked=linked
        )

    @staticmethod
    def _message_of(s: MemoryState, e: Event) -> Message | None:
        if e.message_id is not None:
            return s.messages.get(e.message_id)
        if e.provider is None or e.provider_message_id is None:  # pragma: no cover - model forbids
            return None
        mid = s.pairs.get((e.provider, e.provider_message_id))
        return None if mid is None else s.messages[mid]

    @staticmethod
    def _link(s: MemoryState, fresh: list[Message]) -> int:
        by_id = {m.message_id: m for m in fresh}
        by_pair = {
            (m.provider, m.provider_message_id): m
            for m in fresh
            if m.provider is not None and m.provider_message_id is not None
        }
        linked = 0
        for eid in sorted(s.orphans):
            e = s.events[eid]
            if e.message_id is not None:
                m = by_id.get(e.message_id)
            else:
                m = by_pair.get((e.provider, e.provider_message_id))  # type: ignore[arg-type]
            if m is None:
                continue
            s.events[eid] = attrs.evolve(e, message_id=m.message_id)
            s.event_contact[eid] = m.contact_id
            s.orphans.discard(eid)
            linked += 1
        return linked

    # ------------------------------------------------------------------ reads

    def timeline(self, contact_id: str) -> list[TimelineEntry]:
        """Return a contact's timeline; see :meth:`Repository.timeline`."""
        self._check_open()
        s = self._s
        if contact_id not in s.contacts:
            raise NotFoundError(kind="contact", identifier=contact_id)
        if contact_id in s.erased:
            return []
        messages = sorted(
            (m for m in s.messages.values() if m.contact_id == contact_id),
            key=lambda m: (m.sent_at, m.message_id),
        )
        by_message: dict[str, list[Event]] = {}
        for eid, contact in s.event_contact.items():
            if contact == contact_id:
                e = s.events[eid]
                by_message.setdefault(e.message_id or "", []).append(e)
        return [
            TimelineEntry(
                message=m,
                events=tuple(
                    sorted(
                        by_message.get(m.message_id, ()), key=lambda e: (e.occurred_at, e.event_id)
                    )
                ),
            )
            for m in messages
        ]

    def consent_history(self, contact_id: str) -> list[ConsentEvent]:
        """Return a contact's consent events in time order (then consent id).

        Raises:
            NotFoundError: The contact is unknown.
        """
        self._check_open()
        s = self._s
        if contact_id not in s.contacts:
            raise NotFoundError(kind="contact", identifier=contact_id)
        return sorted(
            (c for c in s.consents.values() if c.contact_id == contact_id),
            key=lambda c: (c.occurred_at, c.consent_id or ""),
        )

    def find_contacts(
        self,
        *,
        email: str | None = None,
        phone: str | None = None,
        line_user_id: str | None = None,
    ) -> list[str]:
        """Find contacts by address; see :meth:`Repository.find_contacts`."""
        self._check_open()
        kind, value = one_criterion(email, phone, line_user_id)
        return sorted(self._s.addresses.get((kind, value), ()))

    def dead_letters(
        self, *, source: str | None = None, limit: int | None = None
    ) -> list[DeadLetter]:
        """Return dead letters; see :meth:`Repository.dead_letters`."""
        self._check_open()
        found = [d for d in self._s.dead_letters if source is None or d.source == source]
        found.sort(key=lambda d: (d.received_at, d.source, d.line or 0, d.id))
        return found if limit is None else found[:limit]

    # ------------------------------------------------------------------ ports and units of work

    @property
    def state(self) -> MemoryState:
        """Everything stored (for the memory implementations of the storage ports).

        .. versionadded:: 0.4.0
        """
        return self._s

    @property
    def consent_store(self) -> MemoryConsentStore:
        """The consent and suppression storage port.

        .. versionadded:: 0.4.0
        """
        return self._consent_store

    @property
    def audit_store(self) -> MemoryAuditStore:
        """The audit log storage port; a generated keyring authenticates its entries.

        .. versionadded:: 0.4.0
        """
        return self._audit_store

    @property
    def masked_history(self) -> MemoryMaskedHistory:
        """Plain-field history reads, addresses masked.

        .. versionadded:: 0.4.0
        """
        return self._masked_history

    @property
    def privacy_store(self) -> MemoryPrivacyStore:
        """The erasure, subject export and retention storage port.

        .. versionadded:: 0.4.0
        """
        return self._privacy_store

    @property
    def kpi_store(self) -> MemoryKpiStore:
        """The KPI aggregate storage port.

        .. versionadded:: 0.4.0
        """
        return self._kpi_store

    @property
    def activity_store(self) -> MemoryActivityStore:
        """The activity storage port (name registry, reads, attribution).

        .. versionadded:: 0.4.0
        """
        self._check_open()
        return self._activity_store

    @property
    def attribute_store(self) -> MemoryAttributeStore:
        """The contact attribute storage port (declarations, values, history).

        .. versionadded:: 0.4.0
        """
        self._check_open()
        return self._attribute_store

    @property
    def planning_store(self) -> MemoryPlanningStore:
        """The send planning storage port (recent sends, addresses, zones).

        .. versionadded:: 0.4.0
        """
        self._check_open()
        return self._planning_store

    @property
    def dead_letter_store(self) -> MemoryDeadLetterStore:
        """The dead-letter storage port (list, read one, re-word, delete).

        .. versionadded:: 0.4.0
        """
        self._check_open()
        return self._dead_letter_store

    @property
    def cost_store(self) -> MemoryCostStore:
        """The campaign cost storage port.

        .. versionadded:: 0.4.0
        """
        self._check_open()
        return self._cost_store

    @property
    def analytics_reader(self) -> MemoryAnalyticsReader:
        """The analytics export's read port.

        .. versionadded:: 0.4.0
        """
        self._check_open()
        return self._analytics_reader

    @property
    def segment_store(self) -> MemorySegmentStore:
        """The segment port (condition trees evaluated in memory, saved segments).

        .. versionadded:: 0.4.0
        """
        self._check_open()
        return self._segment_store

    @property
    def journey_store(self) -> MemoryJourneyStore:
        """The journey port (:class:`~commhistory.store.journeys.MemoryJourneyStore`).

        .. versionadded:: 0.4.0
        """
        self._check_open()
        return self._journey_store

    def set_batch_feed(self, name: str, feed: BatchFeed | None) -> None:
        """Install (or remove) a batch feed; see :meth:`Repository.set_batch_feed`.

        .. versionadded:: 0.4.0
        """
        if feed is None:
            self._feeds.pop(name, None)
        else:
            self._feeds[name] = feed

    def set_attribute_codec(self, codec: AttributeCodec | None) -> None:
        """Install (or remove) the check of contact attribute updates; see the protocol.

        .. versionadded:: 0.4.0
        """
        self._attribute_codec = codec

    @contextmanager
    def batch_hook(self, hook: BatchHook) -> Iterator[None]:
        """Call *hook* with each batch's outcome while the block runs; see the protocol.

        .. versionadded:: 0.4.0
        """
        local = self._local
        previous: BatchHook | None = getattr(local, "hook", None)
        local.hook = hook
        try:
            yield
        finally:
            local.hook = previous

    @contextmanager
    def transaction(self, *, read: bool = False) -> Iterator[None]:
        """A unit of work; in memory, calls apply at once and nothing rolls back.

        Work given to :meth:`after_commit` inside it runs when the outermost
        block exits without an exception.

        .. versionadded:: 0.4.0
        """
        self._check_open()
        local = self._local
        depth: int = getattr(local, "depth", 0)
        if depth == 0:
            local.after = []
        local.depth = depth + 1
        try:
            yield
        except BaseException:
            local.depth = depth
            if depth == 0:
                local.after = []
            raise
        local.depth = depth
        if depth == 0:
            after: list[Callable[[], object]] = local.after
            local.after = []
            for call in after:
                call()

    @property
    def in_transaction(self) -> bool:
        """Whether this thread is inside :meth:`transaction`."""
        return getattr(self._local, "depth", 0) > 0

    def after_commit(self, call: Callable[[], object]) -> None:
        """Run *call* when the current transaction ends (at once when none is open)."""
        if self.in_transaction:
            self._local.after.append(call)
        else:
            call()

    def rotate_keys(
        self,
        *,
        batch_size: int = 1000,
        reindex: bool = False,
        progress: Callable[[str, int], None] | None = None,
    ) -> RotationReport:
        """Refuse: the memory repository keeps no keys.

        Raises:
            InvalidInputError: Always.
        """
        raise InvalidInputError(field="rotate_keys", reason="needs a SQL repository")

    def backfill_masks(self, *, batch_size: int = 1000) -> MaskBackfillReport:
        """Refuse: the memory repository stores no masks.

        Raises:
            InvalidInputError: Always.
        """
        raise InvalidInputError(field="backfill_masks", reason="needs a SQL repository")

    def ensure_partitions(
        self, *, ahead_months: int = 3, now: datetime | None = None
    ) -> PartitionReport:
        """Nothing to do: the memory repository has no partitions (an empty report).

        .. versionadded:: 0.4.0
        """
        partition.check_ahead(ahead_months)
        return PartitionReport()

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Mark the repository closed (its data stays readable by nobody)."""
        self._closed = True
