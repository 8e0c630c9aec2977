"""The guarded view: the facade bound to one actor and purpose, checked and audited.

:meth:`CommHistory.as_actor() <commhistory.facade.history.CommHistory.as_actor>`
returns a :class:`GuardedRepository`. Every call on it checks the permission it
needs under a :class:`~commhistory.audit.Policy`, raises
:class:`~commhistory.errors.PermissionDenied` (and audits the denial) when the
actor lacks it, and audits personal-data reads, exports, erasures, consent and
suppression changes, key operations and history writes (one entry per batch).
When the log is the repository's own table, a call and its entry commit in one
transaction. It wraps the same facade the host uses; it declares each call once
more only to check and audit it.

.. versionadded:: 0.3.0
.. versionchanged:: 0.4.0
   Moved from ``commhistory.audit.access``; it wraps the facade.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from contextvars import ContextVar
from datetime import datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Any, Final, TypeVar

from commhistory._lifecycle import ClosesOnExit
from commhistory.audit import DEFAULT_POLICY, Actor, AuditLog, Outcome, Permission, Policy
from commhistory.audit.masked import MaskedEntry
from commhistory.errors import InvalidInputError, PermissionDenied
from commhistory.facade.dead_letters import replay_dead_letters
from commhistory.model import ConsentEvent
from commhistory.store.costs import Cost

if TYPE_CHECKING:
    import os
    from zoneinfo import ZoneInfo

    from commhistory.analytics import AnalyticsExport, Pseudonymizer
    from commhistory.consent import SendDecision, SuppressionEntry
    from commhistory.contacts import ActivityCatalog, AttributeDefinition, AttributeSchema
    from commhistory.convert import ParsedLine
    from commhistory.criteria import Criteria
    from commhistory.crypto import KeyProvider
    from commhistory.facade.dead_letters import AdapterResolver, ReplayReport
    from commhistory.facade.history import CommHistory
    from commhistory.journeys import Enrollment, Journey
    from commhistory.journeys.gate import DueResult
    from commhistory.journeys.replay import JourneyReplay
    from commhistory.journeys.stats import JourneyStats
    from commhistory.journeys.triggers import TriggerReport
    from commhistory.kpi.links import LinkClicks
    from commhistory.kpi.metrics import KpiTable
    from commhistory.model import Activity, Channel, ContactUpdate, Event, Message, Purpose
    from commhistory.privacy import ErasureReport, PurgeReport, RetentionPolicy
    from commhistory.segments import SegmentDelta
    from commhistory.segments.planning import (
        CandidateSource,
        FrequencyCap,
        PlanConfig,
        QuietHours,
        SendPlan,
    )
    from commhistory.store.activities import ActivityEntry
    from commhistory.store.attributes import AttributeVersion, TypedValue
    from commhistory.store.dead_letters import DeadLetterInfo
    from commhistory.store.mask_backfill import MaskBackfillReport
    from commhistory.store.protocol import (
        BatchOutcome,
        DeadLetter,
        IngestReport,
        TimelineEntry,
    )
    from commhistory.store.rotation import RotationReport
    from commhistory.store.segments import ExplainNode, SavedSegment, SnapshotInfo

__all__ = ["GuardedConsent", "GuardedRepository", "GuardedSuppression", "in_guarded_call"]

_T = TypeVar("_T")
P = Permission

TRIGGER_MAX_AGE: Final = timedelta(days=1)
"""The default ``max_age`` of :meth:`run_journey_triggers`: the journeys' own
(:data:`commhistory.journeys.triggers.DEFAULT_MAX_AGE`, which a test compares),
spelled here so the facade does not import the journeys at start-up."""

_IN_VIEW: ContextVar[bool] = ContextVar("commhistory_in_guarded_call", default=False)
"""Set while a view runs the facade's call: the facade then records nothing of its own."""


def in_guarded_call() -> bool:
    """Whether a guarded view is running the current facade call (it audits it itself).

    The facade audits its changes as its default actor only outside such a call,
    so an audited operation gets one entry, the view's.

    .. versionadded:: 0.4.0
    """
    return _IN_VIEW.get()


@contextmanager
def _guarded_call() -> Iterator[None]:
    token = _IN_VIEW.set(True)
    try:
        yield
    finally:
        _IN_VIEW.reset(token)


class GuardedRepository(ClosesOnExit):
    """The facade bound to one actor and purpose; see :meth:`commhistory.CommHistory.as_actor`.

    Offers the :class:`~commhistory.store.protocol.Repository` methods (plus
    ``filter_sendable`` and ``rotate_keys``), each checked against the policy.
    Anything else of the repository (its engine, keyring, backend) is not
    reachable through the view. Closing the view does not close the repository.

    .. versionadded:: 0.3.0
    """

    def __init__(
        self,
        repo: CommHistory[Any],
        actor: Actor,
        *,
        purpose: str,
        policy: Policy | None = None,
        audit: AuditLog | None = None,
    ) -> None:
        given: object = actor
        if not isinstance(given, Actor):
            raise InvalidInputError(field="actor", reason="must be an Actor")
        stated: object = purpose
        if not isinstance(stated, str) or not stated.strip():
            raise InvalidInputError(field="purpose", reason="must be a non-empty string")
        self._policy = DEFAULT_POLICY if policy is None else policy
        self._policy.check_actor(actor)
        self._repo = repo
        self._actor = actor
        self._purpose = purpose
        self._audit = repo.audit_log if audit is None else audit
        self._granted = self._policy.permissions_of(actor)
        # When the log lives in the repository's own database, an audited call
        # and its entry share one transaction: both commit, or neither.
        self._shared = repo if self._audit.stored_in(repo.store) else None

    def __repr__(self) -> str:
        return f"GuardedRepository(actor={self._actor.id!r}, roles={self._actor.roles!r})"

    # ------------------------------------------------------------------ plumbing

    @property
    def actor(self) -> Actor:
        """The actor this view acts as."""
        return self._actor

    @property
    def purpose(self) -> str:
        """The purpose stated for this view."""
        return self._purpose

    @property
    def audit_log(self) -> AuditLog:
        """The audit log this view appends to."""
        return self._audit

    def allows(self, permission: Permission | str) -> bool:
        """Return whether this view's actor holds *permission* (nothing is audited)."""
        return self._policy.allows(self._actor, permission)

    def _record(
        self,
        action: str,
        permission: Permission | None,
        outcome: str,
        contact_id: str | None = None,
        targets: Iterable[str] = (),
    ) -> None:
        self._audit.append(
            actor_id=self._actor.id,
            roles=self._actor.roles,
            action=action,
            purpose=self._purpose,
            outcome=outcome,
            permission=None if permission is None else str(permission),
            contact_id=contact_id,
            targets=targets,
        )

    def _require(self, permission: Permission, action: str, contact_id: str | None = None) -> None:
        if permission not in self._granted:
            self._record(action, permission, Outcome.DENIED, _id_or_none(contact_id))
            raise PermissionDenied(permission=str(permission), actor=self._actor.id)

    def _audited(
        self,
        permission: Permission,
        action: str,
        call: Callable[[], _T],
        contact_id: str | None = None,
        targets: Callable[[_T], Iterable[str]] | None = None,
        *,
        atomic: bool = True,
    ) -> _T:
        self._require(permission, action, contact_id)
        cid = _id_or_none(contact_id)
        shared = self._shared if atomic else None
        try:
            with shared.transaction() if shared is not None else nullcontext(), _guarded_call():
                result = call()
                self._record(
                    action, permission, Outcome.OK, cid, targets(result) if targets else ()
                )
        except Exception as exc:
            self._record(action, permission, f"{Outcome.FAILED}:{type(exc).__name__}", cid)
            raise
        return result

    def _checked(self, permission: Permission, action: str, call: Callable[[], _T]) -> _T:
        self._require(permission, action)
        with _guarded_call():
            return call()

    def _write(self, action: str, call: Callable[[], IngestReport]) -> IngestReport:
        """Run a history write, with one audit entry per batch (in the batch's transaction)."""
        self._require(P.WRITE_HISTORY, action)
        shared = self._shared
        if shared is None:
            # Another store: one entry for the whole call, after it.
            with _guarded_call():
                report = call()
            self._record(action, P.WRITE_HISTORY, Outcome.OK)
            return report

        def audit_batch(outcome: BatchOutcome) -> None:
            self._record(action, P.WRITE_HISTORY, Outcome.OK, targets=outcome.changed)

        with shared.batch_hook(audit_batch), _guarded_call():
            return call()

    # ------------------------------------------------------------------ writes

    def record_messages(self, items: Iterable[Message]) -> IngestReport:
        """Store messages (needs ``write_history``; one audit entry per batch).

        See :meth:`commhistory.store.protocol.Repository.record_messages`.
        """
        return self._write("record_messages", lambda: self._repo.record_messages(items))

    def record_events(self, items: Iterable[Event]) -> IngestReport:
        """Store events (needs ``write_history``; one audit entry per batch).

        See :meth:`commhistory.store.protocol.Repository.record_events`.
        """
        return self._write("record_events", lambda: self._repo.record_events(items))

    def record_costs(self, items: Iterable[Cost]) -> IngestReport:
        """Record campaign costs (needs ``write_history``; one audit entry naming the ids).

        See :meth:`CommHistory.record_costs
        <commhistory.facade.history.CommHistory.record_costs>`. When the log is
        the repository's own table, the costs and the entry commit together.

        Raises:
            PermissionDenied: The actor lacks ``write_history``.

        .. versionadded:: 0.4.0
        """
        costs = list(items)
        return self._audited(
            P.WRITE_HISTORY,
            "record_costs",
            lambda: self._repo.record_costs(costs),
            targets=lambda _report: sorted({c.cost_id for c in costs}),
        )

    def costs(self, *, campaign_id: str | None = None) -> list[Cost]:
        """The recorded campaign costs (needs ``read_metrics``; not audited, as KPIs).

        See :meth:`CommHistory.costs <commhistory.facade.history.CommHistory.costs>`.

        Raises:
            PermissionDenied: The actor lacks ``read_metrics``.

        .. versionadded:: 0.4.0
        """
        return self._checked(
            P.READ_METRICS, "costs", lambda: self._repo.costs(campaign_id=campaign_id)
        )

    def record_activities(self, items: Iterable[Activity]) -> IngestReport:
        """Store activities (needs ``write_history``; one audit entry per batch).

        See :meth:`commhistory.CommHistory.record_activities`.

        .. versionadded:: 0.4.0
        """
        return self._write("record_activities", lambda: self._repo.record_activities(items))

    def declare_activities(
        self, declared: Mapping[str, Iterable[str]] | Iterable[str]
    ) -> ActivityCatalog:
        """Declare activity names and plain keys (needs ``write_history``; audited).

        See :meth:`commhistory.CommHistory.declare_activities`.

        .. versionadded:: 0.4.0
        """
        return self._audited(
            P.WRITE_HISTORY,
            "declare_activities",
            lambda: self._repo.declare_activities(declared),
            targets=lambda catalog: sorted(catalog.names),
        )

    def activity_catalog(self) -> ActivityCatalog:
        """The declared activity names and plain keys (needs ``read_history_masked``).

        .. versionadded:: 0.4.0
        """
        return self._checked(
            P.READ_HISTORY_MASKED, "activity_catalog", self._repo.activity_catalog
        )

    def activities(
        self,
        contact_id: str,
        *,
        names: Iterable[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[ActivityEntry]:
        """A contact's activities, properties decrypted (needs ``read_personal``; audited).

        See :meth:`commhistory.CommHistory.activities`.

        .. versionadded:: 0.4.0
        """
        return self._audited(
            P.READ_PERSONAL,
            "activities",
            lambda: self._repo.activities(contact_id, names=names, since=since, until=until),
            contact_id,
            lambda entries: [e.activity.activity_id for e in entries],
        )

    def ingest(self, lines: Iterable[ParsedLine], *, source: str) -> IngestReport:
        """Store parsed lines (needs ``write_history``; one audit entry per batch).

        See :meth:`commhistory.store.protocol.Repository.ingest`.
        """
        return self._write(
            "ingest", lambda: self._repo.ingest(self._consent_checked(lines), source=source)
        )

    def _consent_checked(self, lines: Iterable[ParsedLine]) -> Iterator[ParsedLine]:
        """Pass lines through; a consent event among them needs ``manage_consent``.

        A batch is read whole before it is written, so a denial stores nothing of
        the batch holding the consent line (earlier batches stay, as for any error).
        """
        for line in lines:
            if isinstance(line.record, ConsentEvent):
                self._require(P.MANAGE_CONSENT, "ingest")
            yield line

    def _consent_line_checked(self, line: ParsedLine) -> None:
        """A consent event replayed from a dead letter needs ``manage_consent``."""
        if isinstance(line.record, ConsentEvent):
            self._require(P.MANAGE_CONSENT, "replay_dead_letters")

    def record_consent(self, items: Iterable[ConsentEvent]) -> IngestReport:
        """Append consent events (needs ``manage_consent``; audited with the contact ids).

        Args:
            items: The consent events.

        Returns:
            What was stored.

        Raises:
            PermissionDenied: The actor lacks ``manage_consent``.
        """
        batch = list(items)
        contacts = sorted({str(getattr(e, "contact_id", "")) for e in batch} - {""})
        return self._audited(
            P.MANAGE_CONSENT,
            "record_consent",
            lambda: self._repo.record_consent(batch),
            targets=lambda _r: contacts,
        )

    # ------------------------------------------------------------------ contact attributes

    def declare_attributes(
        self,
        schema: AttributeSchema | Iterable[AttributeDefinition],
        *,
        allow_changes: bool = False,
    ) -> AttributeSchema:
        """Declare contact attributes (needs ``write_history``; audited with the names).

        See :meth:`CommHistory.declare_attributes
        <commhistory.facade.history.CommHistory.declare_attributes>`.

        .. versionadded:: 0.4.0
        """
        declared = list(schema)
        return self._audited(
            P.WRITE_HISTORY,
            "attributes.declare",
            lambda: self._repo.declare_attributes(declared, allow_changes=allow_changes),
            targets=lambda _s: sorted(d.name for d in declared),
        )

    def attribute_schema(self) -> AttributeSchema:
        """The declared contact attributes (needs ``read_history_masked``).

        .. versionadded:: 0.4.0
        """
        return self._checked(
            P.READ_HISTORY_MASKED, "attribute_schema", self._repo.attribute_schema
        )

    def set_attributes(
        self, contact_id: str, values: Mapping[str, object], *, at: datetime | None = None
    ) -> bool:
        """Set a contact's attributes (needs ``write_history``; audited with the contact id).

        The entry names the contact and the attributes, never their values. See
        :meth:`CommHistory.set_attributes
        <commhistory.facade.history.CommHistory.set_attributes>`.

        .. versionadded:: 0.4.0
        """
        names = sorted(str(n) for n in values)
        return self._audited(
            P.WRITE_HISTORY,
            "attributes.set",
            lambda: self._repo.set_attributes(contact_id, values, at=at),
            contact_id,
            lambda _r: names,
        )

    def set_attributes_many(self, updates: Iterable[ContactUpdate]) -> list[bool]:
        """Set many contacts' attributes, all or nothing (needs ``write_history``; audited).

        The entry names the contact ids. See :meth:`CommHistory.set_attributes_many
        <commhistory.facade.history.CommHistory.set_attributes_many>`.

        .. versionadded:: 0.4.0
        """
        batch = list(updates)
        contacts = sorted({str(getattr(u, "contact_id", "")) for u in batch} - {""})
        return self._audited(
            P.WRITE_HISTORY,
            "attributes.set",
            lambda: self._repo.set_attributes_many(batch),
            targets=lambda _r: contacts,
        )

    def record_contacts(self, items: Iterable[ContactUpdate]) -> IngestReport:
        """Store contact attribute updates in batches (needs ``write_history``; one entry a batch).

        .. versionadded:: 0.4.0
        """
        return self._write("record_contacts", lambda: self._repo.record_contacts(items))

    def attributes(self, contact_id: str, *, at: datetime | None = None) -> dict[str, TypedValue]:
        """A contact's attributes, personal ones decrypted (needs ``read_personal``; audited).

        Actors with only ``read_history_masked`` use :meth:`masked_attributes`.

        .. versionadded:: 0.4.0
        """
        return self._audited(
            P.READ_PERSONAL,
            "attributes",
            lambda: self._repo.attributes(contact_id, at=at),
            contact_id,
        )

    def masked_attributes(
        self, contact_id: str, *, at: datetime | None = None
    ) -> dict[str, TypedValue | None]:
        """A contact's attributes, personal ones withheld (needs ``read_history_masked``).

        Nothing is decrypted, so the read is not audited.

        .. versionadded:: 0.4.0
        """
        return self._checked(
            P.READ_HISTORY_MASKED,
            "masked_attributes",
            lambda: self._repo.masked_attributes(contact_id, at=at),
        )

    def attribute_history(self, contact_id: str) -> list[AttributeVersion]:
        """Every value of a contact's attributes (needs ``read_personal``; audited).

        .. versionadded:: 0.4.0
        """
        return self._audited(
            P.READ_PERSONAL,
            "attribute_history",
            lambda: self._repo.attribute_history(contact_id),
            contact_id,
        )

    def masked_attribute_history(self, contact_id: str) -> list[AttributeVersion]:
        """Every version of a contact's attributes, personal ones withheld.

        Needs ``read_history_masked``; nothing is decrypted, so nothing is audited.

        .. versionadded:: 0.4.0
        """
        return self._checked(
            P.READ_HISTORY_MASKED,
            "masked_attribute_history",
            lambda: self._repo.masked_attribute_history(contact_id),
        )

    # ------------------------------------------------------------------ reads

    def timeline(self, contact_id: str) -> list[TimelineEntry]:
        """Return a contact's decrypted timeline (needs ``read_personal``; audited).

        Actors with only ``read_history_masked`` use :meth:`masked_timeline`,
        which decrypts nothing.

        Raises:
            PermissionDenied: The actor lacks ``read_personal``.
            NotFoundError: The contact is unknown.
        """
        return self._audited(
            P.READ_PERSONAL,
            "timeline",
            lambda: self._repo.timeline(contact_id),
            contact_id,
            lambda entries: [e.message.message_id for e in entries],
        )

    def masked_timeline(self, contact_id: str) -> list[MaskedEntry]:
        """Return a contact's timeline, personal fields withheld (needs ``read_history_masked``).

        Nothing is decrypted (see :func:`commhistory.audit.masked.masked_timeline`),
        so the read is not audited.

        Raises:
            PermissionDenied: The actor lacks ``read_history_masked``.
            NotFoundError: The contact is unknown.
        """
        return self._checked(
            P.READ_HISTORY_MASKED,
            "masked_timeline",
            lambda: self._repo.masked_timeline(contact_id),
        )

    def consent_history(self, contact_id: str) -> list[ConsentEvent]:
        """Return a contact's consent events with evidence (needs ``read_personal``; audited).

        Raises:
            PermissionDenied: The actor lacks ``read_personal``.
            NotFoundError: The contact is unknown.
        """
        return self._audited(
            P.READ_PERSONAL,
            "consent_history",
            lambda: self._repo.consent_history(contact_id),
            contact_id,
        )

    def find_contacts(
        self,
        *,
        email: str | None = None,
        phone: str | None = None,
        line_user_id: str | None = None,
    ) -> list[str]:
        """Find contacts by address (needs ``read_personal``; audited with the ids found).

        The address searched for is not recorded.

        Raises:
            PermissionDenied: The actor lacks ``read_personal``.
        """
        return self._audited(
            P.READ_PERSONAL,
            "find_contacts",
            lambda: self._repo.find_contacts(email=email, phone=phone, line_user_id=line_user_id),
            targets=lambda ids: ids,
        )

    def dead_letters(
        self, *, source: str | None = None, limit: int | None = None
    ) -> list[DeadLetter]:
        """Return decrypted dead letters (needs ``read_personal``; audited with their ids).

        Raises:
            PermissionDenied: The actor lacks ``read_personal``.
        """
        return self._audited(
            P.READ_PERSONAL,
            "dead_letters",
            lambda: self._repo.dead_letters(source=source, limit=limit),
            targets=lambda letters: [d.id for d in letters],
        )

    def list_dead_letters(
        self, *, source: str | None = None, limit: int | None = None
    ) -> list[DeadLetterInfo]:
        """List dead letters without their raw text (needs ``read_history_masked``).

        Nothing personal is shown, so nothing is audited.

        Raises:
            PermissionDenied: The actor lacks ``read_history_masked``.

        .. versionadded:: 0.4.0
        """
        return self._checked(
            P.READ_HISTORY_MASKED,
            "list_dead_letters",
            lambda: self._repo.list_dead_letters(source=source, limit=limit),
        )

    def dead_letter(self, letter_id: str) -> DeadLetter:
        """Return one dead letter, raw text decrypted (needs ``read_personal``; audited).

        The audit entry names the letter's id, never its content.

        Raises:
            PermissionDenied: The actor lacks ``read_personal``.
            NotFoundError: No dead letter has this id.

        .. versionadded:: 0.4.0
        """
        return self._audited(
            P.READ_PERSONAL,
            "dead_letter",
            lambda: self._repo.dead_letter(letter_id),
            targets=lambda letter: [letter.id],
        )

    def masked_dead_letter(self, letter_id: str) -> DeadLetterInfo:
        """Return one dead letter without its raw text (needs ``read_history_masked``).

        Raises:
            PermissionDenied: The actor lacks ``read_history_masked``.
            NotFoundError: No dead letter has this id.

        .. versionadded:: 0.4.0
        """
        return self._checked(
            P.READ_HISTORY_MASKED,
            "masked_dead_letter",
            lambda: self._repo.masked_dead_letter(letter_id),
        )

    def replay_dead_letters(
        self,
        ids: Collection[str] | None = None,
        *,
        source: str | None = None,
        default_tz: tzinfo | str | None = None,
        mapping: Mapping[str, str] | None = None,
        kind: str | None = None,
        header: str | None = None,
        region: str = "JP",
        adapters: AdapterResolver | None = None,
    ) -> ReplayReport:
        """Replay dead letters (needs ``write_history``; audited, in the replay's transaction).

        The raw text is decrypted only to be parsed, never shown. A consent line
        among those that now parse also needs ``manage_consent``, as for :meth:`ingest`. See
        :meth:`CommHistory.replay_dead_letters
        <commhistory.facade.history.CommHistory.replay_dead_letters>`.

        Webhook dead letters are parsed again by the adapter *adapters* returns
        for their provider (``commhistory.providers.get_provider`` builds one; the
        facade imports no provider), without checking their signature again: it
        was checked on receipt. Without *adapters* they are left untouched.

        Raises:
            PermissionDenied: The actor lacks ``write_history``.
            NotFoundError: An id names no dead letter.

        .. versionadded:: 0.4.0
        """
        return self._audited(
            P.WRITE_HISTORY,
            "replay_dead_letters",
            lambda: replay_dead_letters(
                self._repo,
                ids,
                source=source,
                default_tz=default_tz,
                mapping=mapping,
                kind=kind,
                header=header,
                region=region,
                adapters=adapters,
                check=self._consent_line_checked,
            ),
        )

    def purge_dead_letters(self, before: datetime, *, dry_run: bool = False) -> int:
        """Delete the dead letters received before *before* (needs ``erase_subject``).

        As :meth:`purge`: a real purge is audited, a dry run only checked.

        Raises:
            PermissionDenied: The actor lacks ``erase_subject``.

        .. versionadded:: 0.4.0
        """
        if dry_run:
            return self._checked(
                P.ERASE_SUBJECT,
                "purge_dead_letters.dry_run",
                lambda: self._repo.purge_dead_letters(before, dry_run=True),
            )
        return self._audited(
            P.ERASE_SUBJECT,
            "purge_dead_letters",
            lambda: self._repo.purge_dead_letters(before, dry_run=False),
        )

    def kpis(
        self,
        by: str | Iterable[str] = (),
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        tz: str = "UTC",
        exclude_machine: bool = True,
        costs: bool = True,
        journey: str | None = None,
        journey_version: int | None = None,
    ) -> KpiTable:
        """Compute KPIs (needs ``read_metrics``).

        See :meth:`CommHistory.kpis <commhistory.facade.history.CommHistory.kpis>`.

        .. versionchanged:: 0.4.0
           ``costs``, ``journey`` and ``journey_version``.
        """
        return self._checked(
            P.READ_METRICS,
            "kpis",
            lambda: self._repo.kpis(
                by,
                since=since,
                until=until,
                tz=tz,
                exclude_machine=exclude_machine,
                costs=costs,
                journey=journey,
                journey_version=journey_version,
            ),
        )

    def export_analytics(
        self,
        out: str | os.PathLike[str],
        *,
        format: str = "parquet",
        since: datetime | None = None,
        until: datetime | None = None,
        keys: KeyProvider | Pseudonymizer | None = None,
        batch_size: int = 50_000,
    ) -> AnalyticsExport:
        """Export pseudonymous analytics facts (needs ``read_metrics``; not audited, as KPIs).

        See :meth:`CommHistory.export_analytics
        <commhistory.facade.history.CommHistory.export_analytics>`.

        Raises:
            PermissionDenied: The actor lacks ``read_metrics``.

        .. versionadded:: 0.4.0
        """
        return self._checked(
            P.READ_METRICS,
            "export_analytics",
            lambda: self._repo.export_analytics(
                out, format=format, since=since, until=until, keys=keys, batch_size=batch_size
            ),
        )

    def link_clicks(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        exclude_machine: bool = True,
    ) -> tuple[LinkClicks, ...]:
        """Count clicks per campaign and link (needs ``read_metrics``).

        See :meth:`CommHistory.link_clicks
        <commhistory.facade.history.CommHistory.link_clicks>`.

        .. versionadded:: 0.4.0
        """
        return self._checked(
            P.READ_METRICS,
            "link_clicks",
            lambda: self._repo.link_clicks(
                since=since, until=until, exclude_machine=exclude_machine
            ),
        )

    def can_send(
        self,
        contact_id: str,
        channel: Channel | str,
        purpose: Purpose | str,
        at: datetime | None = None,
        *,
        address: str | None = None,
    ) -> SendDecision:
        """Decide whether a message may be sent (needs ``read_history_masked``).

        Deciding for a full *address* needs ``read_personal`` and is audited (the
        address is not recorded): the decision tells whether that address is
        suppressed, and its cause id links it to a contact.

        .. versionchanged:: 0.4.0
           ``address=`` needs ``read_personal``.
        """

        def call() -> SendDecision:
            return self._repo.can_send(contact_id, channel, purpose, at, address=address)

        if address is not None:
            return self._audited(P.READ_PERSONAL, "can_send.address", call, contact_id)
        return self._checked(P.READ_HISTORY_MASKED, "can_send", call)

    def filter_sendable(
        self,
        contact_ids: Iterable[str],
        channel: Channel | str,
        purpose: Purpose | str,
        at: datetime | None = None,
    ) -> list[str]:
        """Keep the sendable contacts (needs ``read_history_masked``).

        Raises:
            PermissionDenied: The actor lacks ``read_history_masked``.
        """
        return self._checked(
            P.READ_HISTORY_MASKED,
            "filter_sendable",
            lambda: self._repo.filter_sendable(contact_ids, channel, purpose, at),
        )

    # ------------------------------------------------------------------ segments

    def segment_count(
        self, tree: Criteria | Mapping[str, Any], *, at: datetime | None = None
    ) -> int:
        """Count a segment (needs ``read_metrics``: an aggregate, not audited).

        .. versionadded:: 0.4.0
        """
        return self._checked(
            P.READ_METRICS, "segment_count", lambda: self._repo.segment_count(tree, at=at)
        )

    def segment_explain(
        self, tree: Criteria | Mapping[str, Any], *, at: datetime | None = None
    ) -> ExplainNode:
        """Count each node of a segment (needs ``read_metrics``: aggregates, not audited).

        .. versionadded:: 0.4.0
        """
        return self._checked(
            P.READ_METRICS, "segment_explain", lambda: self._repo.segment_explain(tree, at=at)
        )

    def segment_members(
        self, tree: Criteria | Mapping[str, Any], *, at: datetime | None = None
    ) -> list[str]:
        """List a segment's contact ids (needs ``read_history_masked``; audited).

        The ids are pseudonymous, but a list of who matches a condition says
        something about each of them: every extraction is an audit entry
        (action ``segment_members``; the ids are not listed in it).

        .. versionadded:: 0.4.0
        """
        return self._audited(
            P.READ_HISTORY_MASKED,
            "segment_members",
            lambda: self._repo.segment_members(tree, at=at),
            atomic=False,
        )

    def save_segment(self, name: str, tree: Criteria | Mapping[str, Any]) -> SavedSegment:
        """Save a segment version (needs ``write_history``; audited).

        .. versionadded:: 0.4.0
        """
        return self._audited(
            P.WRITE_HISTORY, "segment.save", lambda: self._repo.save_segment(name, tree)
        )

    def segments(self, name: str | None = None) -> list[SavedSegment]:
        """List saved segment versions (needs ``read_metrics``).

        .. versionadded:: 0.4.0
        """
        return self._checked(P.READ_METRICS, "segments", lambda: self._repo.segments(name))

    def segment_snapshot(
        self, name: str, *, version: int | None = None, at: datetime | None = None
    ) -> SnapshotInfo:
        """Store a segment's membership snapshot (needs ``write_history``; audited).

        .. versionadded:: 0.4.0
        """
        return self._audited(
            P.WRITE_HISTORY,
            "segment.snapshot",
            lambda: self._repo.segment_snapshot(name, version=version, at=at),
        )

    def save_journey(self, journey: Journey) -> bool:
        """Store a journey version (needs ``write_history``; audited as ``journey.save``).

        .. versionadded:: 0.4.0
        """
        return self._audited(
            P.WRITE_HISTORY, "journey.save", lambda: self._repo.save_journey(journey)
        )

    def enroll(
        self,
        journey: Journey,
        contact_id: str,
        trigger_id: str,
        *,
        at: datetime,
        properties: Mapping[str, object] | None = None,
    ) -> Enrollment | None:
        """Enroll a contact in a journey (needs ``write_history``; audited as ``journey.enroll``).

        .. versionadded:: 0.4.0
        """
        return self._audited(
            P.WRITE_HISTORY,
            "journey.enroll",
            lambda: self._repo.enroll(
                journey, contact_id, trigger_id, at=at, properties=properties
            ),
            contact_id,
        )

    def journey_due(
        self,
        now: datetime | None = None,
        *,
        config: PlanConfig | None = None,
        zone_of: Callable[[str], ZoneInfo] | None = None,
        limit: int | None = None,
        dry_run: bool = False,
    ) -> DueResult:
        """Claim the journey sends due (needs ``write_history``: it stores the claims).

        A dry run stores nothing and needs ``read_history_masked`` only. Not
        audited, as ``plan_send`` of ids: intents carry pseudonymous ids and
        template keys, nothing is decrypted.

        .. versionadded:: 0.4.0
        """
        return self._checked(
            P.READ_HISTORY_MASKED if dry_run else P.WRITE_HISTORY,
            "journey.due",
            lambda: self._repo.journey_due(
                now, config=config, zone_of=zone_of, limit=limit, dry_run=dry_run
            ),
        )

    def record_journey_send(
        self,
        key: str,
        *,
        at: datetime | None = None,
        outcome: str = "sent",
        message_id: str | None = None,
    ) -> bool:
        """Record the host's send of a journey intent (needs ``write_history``).

        .. versionadded:: 0.4.0
        """
        return self._checked(
            P.WRITE_HISTORY,
            "journey.record_send",
            lambda: self._repo.record_journey_send(
                key, at=at, outcome=outcome, message_id=message_id
            ),
        )

    def journey_stats(
        self, journey: Journey, *, at: datetime | None = None, exclude_machine: bool = True
    ) -> JourneyStats:
        """Count a journey's enrollments, sends and message KPIs (needs ``read_metrics``).

        Not audited, as KPIs: counts only. See :meth:`CommHistory.journey_stats
        <commhistory.facade.history.CommHistory.journey_stats>`.

        .. versionadded:: 0.4.0
        """
        return self._checked(
            P.READ_METRICS,
            "journey.stats",
            lambda: self._repo.journey_stats(journey, at=at, exclude_machine=exclude_machine),
        )

    def journey_replay(
        self,
        journey: Journey,
        *,
        since: datetime,
        until: datetime,
        zone_of: Callable[[str], ZoneInfo] | None = None,
        config: PlanConfig | None = None,
    ) -> JourneyReplay:
        """Replay a stored history against a journey (needs ``read_history_masked``).

        It reads activities and events of contacts and reports pseudonymous ids and
        template keys; it writes nothing. Not audited, as a dry-run ``journey_due``.
        See :meth:`CommHistory.journey_replay
        <commhistory.facade.history.CommHistory.journey_replay>`.

        .. versionadded:: 0.4.0
        """
        return self._checked(
            P.READ_HISTORY_MASKED,
            "journey.replay",
            lambda: self._repo.journey_replay(
                journey, since=since, until=until, zone_of=zone_of, config=config
            ),
        )

    def run_journey_triggers(
        self,
        journeys: Iterable[Journey],
        now: datetime | None = None,
        *,
        zone_of: Callable[[str], ZoneInfo] | None = None,
        max_age: timedelta | None = TRIGGER_MAX_AGE,
        batch_size: int = 1000,
        wake: bool = True,
    ) -> TriggerReport:
        """Fire journey triggers from the stored history (needs ``write_history``; audited).

        Audited as ``journey.triggers`` (no ids in the entry); each batch of
        enrollments commits on its own, as the unguarded call does.

        .. versionadded:: 0.4.0
        """
        return self._audited(
            P.WRITE_HISTORY,
            "journey.triggers",
            lambda: self._repo.run_journey_triggers(
                journeys, now, zone_of=zone_of, max_age=max_age, batch_size=batch_size, wake=wake
            ),
            atomic=False,
        )

    def segment_delta(
        self, name: str, *, before: str | None = None, after: str | None = None
    ) -> SegmentDelta:
        """Who entered and left a segment (needs ``read_history_masked``; audited).

        .. versionadded:: 0.4.0
        """
        return self._audited(
            P.READ_HISTORY_MASKED,
            "segment_delta",
            lambda: self._repo.segment_delta(name, before=before, after=after),
            atomic=False,
        )

    def plan_send(
        self,
        contacts: Iterable[str] | CandidateSource | Criteria | Mapping[str, Any],
        *,
        channel: Channel | str,
        purpose: Purpose | str,
        at: datetime | None = None,
        caps: Iterable[FrequencyCap] | None = None,
        quiet_hours: Iterable[QuietHours] | None = None,
        config: PlanConfig | None = None,
        addresses: bool | None = None,
    ) -> SendPlan:
        """Plan a send (see :meth:`CommHistory.plan_send`), addresses only for ``read_personal``.

        A plan of ids only needs ``read_history_masked`` and is not audited, as
        ``filter_sendable``: nothing is decrypted. A plan with each send's
        address needs ``read_personal`` and is audited (action
        ``plan_send.addresses``, the ids sent to as targets; no address is
        recorded).

        Args:
            contacts: Candidate contact ids, or a candidate source (a segment).
            channel: The channel.
            purpose: The purpose.
            at: The planning instant (default: now).
            caps: Frequency caps (replace *config*'s).
            quiet_hours: Quiet hours (replace *config*'s).
            config: Caps, quiet hours and zones.
            addresses: ``None`` (default): addresses when the actor holds
                ``read_personal``, else ids only; ``True``: addresses (denied
                without ``read_personal``); ``False``: ids only.

        Raises:
            PermissionDenied: The actor lacks the permission the plan needs.

        .. versionadded:: 0.4.0
        """
        if addresses is None:
            addresses = P.READ_PERSONAL in self._granted

        def call() -> SendPlan:
            return self._repo.plan_send(
                contacts, channel=channel, purpose=purpose, at=at, caps=caps,
                quiet_hours=quiet_hours, config=config, addresses=bool(addresses),
            )  # fmt: skip

        if addresses:
            return self._audited(
                P.READ_PERSONAL,
                "plan_send.addresses",
                call,
                targets=lambda plan: plan.send_ids,
            )
        return self._checked(P.READ_HISTORY_MASKED, "plan_send", call)

    # ------------------------------------------------------------------ consent and privacy

    @property
    def consent(self) -> GuardedConsent:
        """The consent ledger, guarded (see :class:`GuardedConsent`)."""
        return GuardedConsent(self)

    @property
    def suppression(self) -> GuardedSuppression:
        """The suppression list, guarded (see :class:`GuardedSuppression`)."""
        return GuardedSuppression(self)

    def export_subject(self, contact_id: str) -> dict[str, Any]:
        """Export everything held on a person (needs ``export_subject``; audited).

        Raises:
            PermissionDenied: The actor lacks ``export_subject``.
            NotFoundError: The contact is unknown.
        """
        return self._audited(
            P.EXPORT_SUBJECT,
            "export_subject",
            lambda: self._repo.export_subject(contact_id),
            contact_id,
        )

    def erase_subject(self, contact_id: str) -> ErasureReport:
        """Crypto-shred a person (needs ``erase_subject``; audited).

        Raises:
            PermissionDenied: The actor lacks ``erase_subject``.
            NotFoundError: The contact is unknown.
        """
        return self._audited(
            P.ERASE_SUBJECT,
            "erase_subject",
            lambda: self._repo.erase_subject(contact_id),
            contact_id,
        )

    def purge(self, policy: RetentionPolicy | None = None, *, dry_run: bool = True) -> PurgeReport:
        """Delete what the retention policy says is due (needs ``erase_subject``).

        A real purge runs in one transaction with its audit entry (action
        ``purge``); a dry run (the default) is checked but not audited, since it
        deletes and reveals nothing. See :func:`commhistory.privacy.purge`.

        Args:
            policy: The retention policy (default: its defaults).
            dry_run: Only count (the default).

        Returns:
            What is (or was) due, by kind.

        Raises:
            PermissionDenied: The actor lacks ``erase_subject``.
        """
        if dry_run:
            return self._checked(
                P.ERASE_SUBJECT, "purge.dry_run", lambda: self._repo.purge(policy, dry_run=True)
            )
        return self._audited(
            P.ERASE_SUBJECT, "purge", lambda: self._repo.purge(policy, dry_run=False)
        )

    def backfill_masks(self, *, batch_size: int = 1000) -> MaskBackfillReport:
        """Store masked addresses for older messages (needs ``manage_keys``; audited).

        It decrypts every stored address, so it is an administrator's key-level
        operation. See :func:`commhistory.store.mask_backfill.backfill_masks`.

        Raises:
            PermissionDenied: The actor lacks ``manage_keys``.
            InvalidInputError: The repository is not a SQL repository.
        """
        return self._audited(
            P.MANAGE_KEYS,
            "backfill_masks",
            lambda: self._repo.backfill_masks(batch_size=batch_size),
        )

    def rotate_keys(
        self,
        *,
        batch_size: int = 1000,
        reindex: bool = False,
        progress: Callable[[str, int], None] | None = None,
    ) -> RotationReport:
        """Re-wrap data keys under the keyring's current key (needs ``manage_keys``; audited).

        Args:
            batch_size: Rows per transaction.
            reindex: Also recompute blind indexes.
            progress: Called after each batch with the step's name and its rows done.

        Returns:
            What was moved (see :func:`commhistory.store.rotation.rotate_keys`).

        Raises:
            PermissionDenied: The actor lacks ``manage_keys``.
            InvalidInputError: The repository is not a SQL repository.

        .. versionchanged:: 0.4.0
           The rotation keeps its resumable per-batch transactions; the entry is
           appended once, after it ends (before, it ran in one transaction).
        """
        return self._audited(
            P.MANAGE_KEYS,
            "rotate_keys",
            lambda: self._repo.rotate_keys(
                batch_size=batch_size, reindex=reindex, progress=progress
            ),
            atomic=False,
        )

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Do nothing: the repository belongs to whoever opened it."""


def _id_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


class GuardedConsent:
    """The consent ledger seen through a :class:`GuardedRepository`.

    ``grant`` and ``withdraw`` need ``manage_consent`` and are audited;
    ``status`` and ``statuses`` need ``read_history_masked``; ``history``
    (evidence included) needs ``read_personal`` and is audited.

    .. versionadded:: 0.3.0
    """

    def __init__(self, view: GuardedRepository) -> None:
        self._view = view

    def __repr__(self) -> str:
        return f"GuardedConsent(actor={self._view.actor.id!r})"

    def grant(self, contact_id: str, *args: Any, **kwargs: Any) -> ConsentEvent:
        """Record consent; arguments as :meth:`commhistory.consent.ConsentLedger.grant`."""
        v = self._view
        return v._audited(
            P.MANAGE_CONSENT,
            "consent.grant",
            lambda: v._repo.consent.grant(contact_id, *args, **kwargs),
            contact_id,
            lambda e: [e.consent_id] if e.consent_id else [],
        )

    def withdraw(self, contact_id: str, *args: Any, **kwargs: Any) -> ConsentEvent:
        """Record a withdrawal; arguments as :meth:`commhistory.consent.ConsentLedger.withdraw`."""
        v = self._view
        return v._audited(
            P.MANAGE_CONSENT,
            "consent.withdraw",
            lambda: v._repo.consent.withdraw(contact_id, *args, **kwargs),
            contact_id,
            lambda e: [e.consent_id] if e.consent_id else [],
        )

    def status(self, contact_id: str, *args: Any, **kwargs: Any) -> Any:
        """Return the consent status.

        Arguments as :meth:`commhistory.consent.ConsentLedger.status`.
        """
        v = self._view
        return v._checked(
            P.READ_HISTORY_MASKED,
            "consent.status",
            lambda: v._repo.consent.status(contact_id, *args, **kwargs),
        )

    def statuses(self, *args: Any, **kwargs: Any) -> Any:
        """Return many consent states.

        Arguments as :meth:`commhistory.consent.ConsentLedger.statuses`.
        """
        v = self._view
        return v._checked(
            P.READ_HISTORY_MASKED,
            "consent.statuses",
            lambda: v._repo.consent.statuses(*args, **kwargs),
        )

    def history(self, contact_id: str, *args: Any, **kwargs: Any) -> list[ConsentEvent]:
        """Return ledger events with evidence.

        Arguments as :meth:`commhistory.consent.ConsentLedger.history`.
        """
        v = self._view
        return v._audited(
            P.READ_PERSONAL,
            "consent.history",
            lambda: v._repo.consent.history(contact_id, *args, **kwargs),
            contact_id,
        )


class GuardedSuppression:
    """The suppression list seen through a :class:`GuardedRepository`.

    ``add`` and ``lift`` need ``manage_consent`` and are audited (with the
    suppression ids, never the address); ``check`` needs ``read_history_masked``;
    ``entries`` and ``for_contact`` need ``read_personal`` and are audited.

    .. versionadded:: 0.3.0
    """

    def __init__(self, view: GuardedRepository) -> None:
        self._view = view

    def __repr__(self) -> str:
        return f"GuardedSuppression(actor={self._view.actor.id!r})"

    def add(self, *args: Any, **kwargs: Any) -> SuppressionEntry:
        """Suppress an address; arguments as :meth:`commhistory.consent.SuppressionList.add`."""
        v = self._view
        return v._audited(
            P.MANAGE_CONSENT,
            "suppression.add",
            lambda: v._repo.suppression.add(*args, **kwargs),
            targets=lambda e: [e.suppression_id],
        )

    def lift(self, *args: Any, **kwargs: Any) -> int:
        """Lift suppressions; arguments as :meth:`commhistory.consent.SuppressionList.lift`."""
        v = self._view
        return v._audited(
            P.MANAGE_CONSENT,
            "suppression.lift",
            lambda: v._repo.suppression.lift(*args, **kwargs),
        )

    def check(self, *args: Any, **kwargs: Any) -> tuple[SuppressionEntry, ...]:
        """Return entries in force for a full address (needs ``read_personal``; audited).

        Arguments as :meth:`commhistory.consent.SuppressionList.check`. Looking a
        full address up tells whether it is suppressed and, through the cause
        id, whose it is: the same permission as any personal read.

        .. versionchanged:: 0.4.0
           Needs ``read_personal`` (was ``read_history_masked``).
        """
        v = self._view
        return v._audited(
            P.READ_PERSONAL,
            "suppression.check",
            lambda: v._repo.suppression.check(*args, **kwargs),
            targets=lambda found: [e.suppression_id for e in found],
        )

    def entries(self, *args: Any, **kwargs: Any) -> list[SuppressionEntry]:
        """Return every entry for an address.

        Arguments as :meth:`commhistory.consent.SuppressionList.entries`.
        """
        v = self._view
        return v._audited(
            P.READ_PERSONAL,
            "suppression.entries",
            lambda: v._repo.suppression.entries(*args, **kwargs),
            targets=lambda found: [e.suppression_id for e in found],
        )

    def for_contact(self, contact_id: str) -> list[SuppressionEntry]:
        """Return a contact's entries.

        See :meth:`commhistory.consent.SuppressionList.for_contact`.
        """
        v = self._view
        return v._audited(
            P.READ_PERSONAL,
            "suppression.for_contact",
            lambda: v._repo.suppression.for_contact(contact_id),
            contact_id,
            lambda found: [e.suppression_id for e in found],
        )
