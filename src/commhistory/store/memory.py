"""An in-memory repository with the SQL repository's semantics, for tests.

:class:`MemoryRepository` keeps everything in Python dicts, unencrypted. It
dedupes, links orphan events, keeps dead letters and counts exactly like
:class:`~commhistory.store.sql.SQLRepository` (one contract test suite runs
against both), so host code can test against it without a database.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Self

import attrs

from commhistory.errors import NotFoundError, StorageError
from commhistory.model import ConsentEvent, Event, Message
from commhistory.store._common import (
    ADDRESS_KINDS,
    Batch,
    batches,
    check_batch_size,
    consent_id_of,
    one_criterion,
)
from commhistory.store.compliance import ComplianceMethods
from commhistory.store.protocol import DeadLetter, IngestReport, TimelineEntry

if TYPE_CHECKING:
    from commhistory.audit import Actor, AuditLog, GuardedRepository, Policy
    from commhistory.convert import ParsedLine
    from commhistory.kpi.metrics import KpiTable

__all__ = ["MemoryRepository"]


class _State:
    """Everything stored."""

    __slots__ = (
        "addresses",
        "consents",
        "contacts",
        "dead_letters",
        "event_contact",
        "events",
        "messages",
        "orphans",
        "pairs",
        "provider_events",
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


class MemoryRepository(ComplianceMethods):
    """A :class:`~commhistory.store.protocol.Repository` held in memory (for tests).

    Nothing is encrypted or persisted. Each batch is applied atomically: a batch
    whose input fails midway leaves nothing behind.

    Args:
        batch_size: Items per batch (as in the SQL repository).

    .. versionadded:: 0.1.0
    """

    def __init__(self, *, batch_size: int = 5000) -> None:
        self._batch_size = check_batch_size(batch_size)
        self._s = _State()
        self._closed = False

    def __repr__(self) -> str:
        s = self._s
        return f"MemoryRepository(messages={len(s.messages)}, events={len(s.events)})"

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError("the repository is closed")

    # ------------------------------------------------------------------ writes

    def record_messages(self, items: Iterable[Message]) -> IngestReport:
        """Store messages; see :meth:`Repository.record_messages`."""
        return self._write(batches(items, self._batch_size), "record_messages")

    def record_events(self, items: Iterable[Event]) -> IngestReport:
        """Store events; see :meth:`Repository.record_events`."""
        return self._write(batches(items, self._batch_size), "record_events")

    def record_consent(self, items: Iterable[ConsentEvent]) -> IngestReport:
        """Append consent events; see :meth:`Repository.record_consent`."""
        return self._write(batches(items, self._batch_size), "record_consent")

    def ingest(self, lines: Iterable[ParsedLine], *, source: str) -> IngestReport:
        """Store parsed lines; see :meth:`Repository.ingest`."""
        return self._write(batches(lines, self._batch_size, parsed=True), source)

    def _write(self, parts: Iterable[Batch], source: str) -> IngestReport:
        self._check_open()
        report = IngestReport()
        for batch in parts:
            report += self._apply(batch, source)
        return report

    def _apply(self, batch: Batch, source: str) -> IngestReport:
        # The batch is fully read before it is applied and applying it cannot
        # fail halfway, so a batch is all or nothing, as in the SQL repository.
        s = self._s
        inserted = duplicates = linked = 0
        fresh: list[Message] = []
        for m in batch.messages:
            pair = (m.provider, m.provider_message_id)
            if m.message_id in s.messages or pair in s.pairs:
                duplicates += 1
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
        for e in batch.events:
            pe = (e.provider, e.provider_event_id)
            if e.event_id in s.events or pe in s.provider_events:
                duplicates += 1
                continue
            message = self._message_of(s, e)
            stored = e if message is None else attrs.evolve(e, message_id=message.message_id)
            s.events[e.event_id] = stored
            s.event_contact[e.event_id] = None if message is None else message.contact_id
            if message is None:
                s.orphans.add(e.event_id)
            if e.provider is not None and e.provider_event_id is not None:
                s.provider_events.add((e.provider, e.provider_event_id))
            inserted += 1
        for c in batch.consents:
            cid = consent_id_of(c)
            if cid in s.consents:
                duplicates += 1
                continue
            s.consents[cid] = attrs.evolve(c, consent_id=cid)
            s.contacts.add(c.contact_id)
            inserted += 1
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
        if batch.messages or batch.events:
            from commhistory.consent._feed import feed_memory  # noqa: PLC0415 - imports store

            feed_memory(self, batch)
        return IngestReport(
            inserted=inserted, duplicates=duplicates, rejected=len(batch.rejects), linked=linked
        )

    @staticmethod
    def _message_of(s: _State, e: Event) -> Message | None:
        if e.message_id is not None:
            return s.messages.get(e.message_id)
        if e.provider is None or e.provider_message_id is None:  # pragma: no cover - model forbids
            return None
        mid = s.pairs.get((e.provider, e.provider_message_id))
        return None if mid is None else s.messages[mid]

    @staticmethod
    def _link(s: _State, fresh: list[Message]) -> int:
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
        privacy = getattr(self, "_privacy_state", None)
        if privacy is not None and contact_id in privacy.erased:
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

    # ------------------------------------------------------------------ consent and privacy

    def as_actor(
        self,
        actor: Actor,
        *,
        purpose: str,
        policy: Policy | None = None,
        audit: AuditLog | None = None,
    ) -> GuardedRepository:
        """Return a view that acts as *actor*, checking and auditing every call.

        This repository itself checks nothing; see :func:`commhistory.audit.as_actor`.

        Args:
            actor: Who acts.
            purpose: Why; recorded with every audit entry.
            policy: Roles and permissions (default: the built-in roles).
            audit: The audit log (default: one in memory, kept by this
                repository and shared by all its views, under a fresh keyring).

        Returns:
            The guarded view.

        .. versionadded:: 0.3.0
        """
        from commhistory.audit import AuditLog, as_actor  # noqa: PLC0415 - audit imports the store
        from commhistory.crypto import Keyring  # noqa: PLC0415

        if audit is None:
            audit = getattr(self, "_audit_log", None)
            if audit is None:
                audit = AuditLog.in_memory(Keyring.generate())
                self._audit_log = audit
        return as_actor(self, actor, purpose=purpose, policy=policy, audit=audit)

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Mark the repository closed (its data stays readable by nobody)."""
        self._closed = True

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def kpis(
        self,
        by: str | Iterable[str] = (),
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        tz: str = "UTC",
        exclude_machine: bool = True,
    ) -> KpiTable:
        """Compute KPIs in memory; see :meth:`Repository.kpis`.

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
        """
        from commhistory.kpi.compute import compute  # noqa: PLC0415 - kpi imports the store

        self._check_open()
        s = self._s
        return compute(
            s.messages.values(),
            s.events.values(),
            by=by,
            since=since,
            until=until,
            tz=tz,
            exclude_machine=exclude_machine,
        )
