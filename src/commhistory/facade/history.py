"""The facade: one object for a business's communication history, over any storage.

:class:`CommHistory` is what :func:`open_repository` returns. It composes the
domain services over one storage :class:`~commhistory.store.protocol.Repository`:
the consent ledger, the suppression list and ``can_send``
(:mod:`commhistory.consent`), KPIs (:mod:`commhistory.kpi`), subject export,
erasure and retention (:mod:`commhistory.privacy`), and the guarded, audited
view (:mod:`commhistory.audit`, :mod:`commhistory.facade.guarded`). It speaks
no SQL; the store below it is the only room that does.

Data flows one way: records go down through the facade into the store, whose
write batches call the consent feed the facade installed; rows come up from the
store's ports into the domain rules and out through the facade.

.. versionadded:: 0.4.0
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Iterable, Mapping
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Any, Generic, TypeVar
from zoneinfo import ZoneInfo

from commhistory._lifecycle import ClosesOnExit
from commhistory.audit import Actor, AuditLog, Permission, Policy, process_user
from commhistory.audit.log import default_audit_log
from commhistory.audit.masked import MaskedEntry, masked_timeline
from commhistory.consent import (
    SOFT_BOUNCE_LIMIT,
    ConsentLedger,
    SendDecision,
    SuppressionEntry,
    SuppressionList,
    can_send,
    filter_sendable,
)
from commhistory.consent.feed import batch_feed
from commhistory.contacts import AttributeDefinition, AttributeSchema, SchemaCache
from commhistory.contacts.activities import (
    ActivityCatalog,
    admit,
    admit_records,
    attribution_feed,
    check_window,
    parse_declarations,
)
from commhistory.criteria import Criteria, Node, from_dict
from commhistory.crypto import KeyProvider
from commhistory.errors import InvalidInputError, NotFoundError
from commhistory.facade.dead_letters import AdapterResolver, ReplayReport, replay_dead_letters
from commhistory.facade.guarded import TRIGGER_MAX_AGE, GuardedRepository, in_guarded_call
from commhistory.model import (
    Activity,
    Channel,
    ConsentEvent,
    ContactUpdate,
    Event,
    Message,
    Purpose,
)
from commhistory.store.activities import ActivityEntry
from commhistory.store.attributes import AttributeChange, AttributeVersion, TypedValue
from commhistory.store.costs import Cost
from commhistory.store.dead_letters import DeadLetterInfo
from commhistory.store.mask_backfill import MaskBackfillReport
from commhistory.store.memory import MemoryRepository
from commhistory.store.partition import PartitionReport
from commhistory.store.protocol import (
    BatchHook,
    DeadLetter,
    IngestReport,
    Repository,
    TimelineEntry,
)
from commhistory.store.rotation import RotationReport
from commhistory.store.segments import ExplainNode, SavedSegment, SnapshotInfo
from commhistory.store.sql import SQLRepository, open_sql_repository

if TYPE_CHECKING:
    from commhistory.analytics import AnalyticsExport, Pseudonymizer
    from commhistory.convert import ParsedLine
    from commhistory.journeys import Enrollment, Journey
    from commhistory.journeys.gate import DueResult
    from commhistory.journeys.replay import JourneyReplay
    from commhistory.journeys.stats import JourneyStats
    from commhistory.journeys.triggers import TriggerReport
    from commhistory.kpi.links import LinkClicks
    from commhistory.kpi.metrics import KpiTable
    from commhistory.privacy import ErasureReport, PurgeReport, RetentionPolicy
    from commhistory.segments import SegmentDelta
    from commhistory.segments.planning import (
        CandidateSource,
        FrequencyCap,
        PlanConfig,
        QuietHours,
        SendPlan,
    )

__all__ = [
    "DEFAULT_API_PURPOSE",
    "CommHistory",
    "default_api_actor",
    "open_repository",
    "rotate_keys",
]

S = TypeVar("S", bound=Repository)
"""The storage a :class:`CommHistory` composes (its :attr:`~CommHistory.store`)."""

CONSENT_FEED = "consent"
"""The name the facade's consent feed is installed under on its repository."""

ATTRIBUTION_FEED = "attribution"
"""The name the facade's revenue attribution feed is installed under (when it has a window)."""

DEFAULT_API_PURPOSE = "commhistory api"
"""The purpose the facade's default actor records (``default_purpose=``)."""


def default_api_actor() -> Actor:
    """The actor the facade audits its changes as when none is configured.

    ``api:<process user>`` (see :func:`commhistory.audit.process_user`) with the
    role ``admin``.

    .. versionadded:: 0.4.0
    """
    return Actor(f"api:{process_user()}", ["admin"])


class CommHistory(ClosesOnExit, Generic[S]):
    """A business's communication history: record, read, consent, KPIs, privacy, access.

    Composes the domain services over one storage repository; every documented
    call of ``repo = ch.open_repository(...)`` is a method here. Creating it
    installs the consent feed on *store*, so recorded bounces, complaints,
    unsubscribes and STOP keywords update suppression and consent in the same
    transaction as the batch that carried them. Use one facade per store.

    Args:
        store: The storage: a :class:`~commhistory.store.sql.SQLRepository`,
            a :class:`~commhistory.store.memory.MemoryRepository` or a host's
            own :class:`~commhistory.store.protocol.Repository`.
        soft_bounce_limit: Consecutive soft bounces that suppress an address.
        default_actor: Who the facade's own audit entries name (default
            ``default_api_actor()``: ``api:<process user>``, role ``admin``).
            Its roles are recorded, not checked: the facade checks nothing.
        default_purpose: The purpose those entries record.
        attribution_window: Attribute each activity with revenue to the last
            message its contact clicked within this long before it (see
            :doc:`/activities`); ``None`` (the default) attributes nothing.

    Attributes:
        soft_bounce_limit: As given; may be changed at any time.

    Erasure, subject export, key rotation, a real purge and consent and
    suppression changes (``consent.grant``/``withdraw``,
    ``suppression.add``/``lift``) always write an audit entry, in the same
    transaction as the change when the log is the store's own: called on a
    guarded view, as its actor; called here, as *default_actor*. Reads are
    audited only through a guarded view (:meth:`as_actor`).

    Raises:
        InvalidInputError: *default_actor* is not an :class:`~commhistory.audit.Actor`,
            *default_purpose* is empty, or *attribution_window* is not a positive
            :class:`~datetime.timedelta`.

    .. versionadded:: 0.4.0
    .. versionchanged:: 0.4.0
       The *attribution_window* argument.
    """

    def __init__(
        self,
        store: S,
        *,
        soft_bounce_limit: int = SOFT_BOUNCE_LIMIT,
        default_actor: Actor | None = None,
        default_purpose: str = DEFAULT_API_PURPOSE,
        attribution_window: timedelta | None = None,
    ) -> None:
        actor: object = default_api_actor() if default_actor is None else default_actor
        if not isinstance(actor, Actor):
            raise InvalidInputError(field="default_actor", reason="must be an Actor")
        stated: object = default_purpose
        if not isinstance(stated, str) or not stated.strip():
            raise InvalidInputError(field="default_purpose", reason="must be a non-empty string")
        self._store = store
        self.soft_bounce_limit = soft_bounce_limit
        self._audit: AuditLog | None = None
        self._default_actor = actor
        self._default_purpose = default_purpose
        self._default_view: GuardedRepository | None = None
        window = check_window(attribution_window)
        self._attribution_window = window
        store.set_batch_feed(
            CONSENT_FEED, batch_feed(store.consent_store, lambda: self.soft_bounce_limit)
        )
        if window is not None:
            store.set_batch_feed(ATTRIBUTION_FEED, attribution_feed(store.activity_store, window))
        self._schema = SchemaCache(store.attribute_store)
        store.set_attribute_codec(self._schema.codec)

    @staticmethod
    def in_memory(
        *, batch_size: int = 5000, attribution_window: timedelta | None = None
    ) -> CommHistory[MemoryRepository]:
        """Return a facade over a new :class:`~commhistory.store.memory.MemoryRepository`.

        For tests of host code: same semantics, nothing encrypted or persisted.

        .. versionchanged:: 0.4.0
           The *attribution_window* argument.
        """
        return CommHistory(
            MemoryRepository(batch_size=batch_size), attribution_window=attribution_window
        )

    @property
    def attribution_window(self) -> timedelta | None:
        """How far back a click earns an activity's revenue (``None``: attribution is off).

        .. versionadded:: 0.4.0
        """
        return self._attribution_window

    def __repr__(self) -> str:
        return f"CommHistory({self._store!r})"

    @property
    def store(self) -> S:
        """The storage repository this facade composes (storage calls only)."""
        return self._store

    # ------------------------------------------------------------------ history

    def record_messages(self, items: Iterable[Message]) -> IngestReport:
        """Store messages; see :meth:`~commhistory.store.protocol.Repository.record_messages`."""
        return self._store.record_messages(items)

    def record_events(self, items: Iterable[Event]) -> IngestReport:
        """Store events; see :meth:`~commhistory.store.protocol.Repository.record_events`."""
        return self._store.record_events(items)

    def record_consent(self, items: Iterable[ConsentEvent]) -> IngestReport:
        """Append consent events.

        See :meth:`~commhistory.store.protocol.Repository.record_consent`.
        """
        return self._store.record_consent(items)

    def ingest(self, lines: Iterable[ParsedLine], *, source: str) -> IngestReport:
        """Store parsed lines; see :meth:`~commhistory.store.protocol.Repository.ingest`.

        Activities among them are checked against the declared names and plain
        keys first (:meth:`declare_activities`); a refused one becomes a dead letter.

        .. versionchanged:: 0.4.0
           Activities are checked against the declarations.
        """
        return self._store.ingest(admit(lines, self.activity_catalog), source=source)

    # ------------------------------------------------------------------ activities

    def declare_activities(
        self, declared: Mapping[str, Iterable[str]] | Iterable[str]
    ) -> ActivityCatalog:
        """Declare the activity names this host records, with their plain property keys.

        Stored in the database, so every process (and ``commhistory import``)
        checks activities against the same declarations. Declaring a name again
        replaces its plain keys; names not given stay declared.

        Args:
            declared: ``{"purchase": ["sku", "category"], "page_view": ["url_path"],
                "signup": []}``, or names alone (no plain property).

        Returns:
            Every declaration now in force.

        Raises:
            InvalidInputError: A name or key is malformed, or nothing is declared.

        .. versionadded:: 0.4.0
        """
        names = parse_declarations(declared)
        self._store.activity_store.declare(names, at=datetime.now(UTC))
        return self.activity_catalog()

    def activity_catalog(self) -> ActivityCatalog:
        """The activity names declared so far, each with its plain property keys.

        .. versionadded:: 0.4.0
        """
        return ActivityCatalog(self._store.activity_store.declared())

    def record_activities(self, items: Iterable[Activity]) -> IngestReport:
        """Store activities, idempotently by ``activity_id``.

        Each is checked against the declarations first: an undeclared name
        (:class:`~commhistory.errors.UnknownActivityError`) or a plain property
        that holds an email address, a phone number or a LINE user id
        (:func:`~commhistory.normalize.personal_kind`,
        :class:`~commhistory.errors.PersonalDataError`) is rejected into the
        dead letters. A retried batch stores nothing twice; an id stored with
        another contact or name is a conflict, also kept as a dead letter.

        Returns:
            What was stored (``total`` equals the number of items).

        .. versionadded:: 0.4.0
        """
        return self._store.ingest(
            admit_records(items, self.activity_catalog), source="record_activities"
        )

    def activities(
        self,
        contact_id: str,
        *,
        names: Iterable[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[ActivityEntry]:
        """A contact's activities, properties decrypted, by ``occurred_at`` (then id).

        Args:
            contact_id: The contact.
            names: Only activities of these names.
            since: Only those at or after this aware datetime.
            until: Only those before this aware datetime.

        Raises:
            NotFoundError: The contact is unknown.
            InvalidInputError: *since* or *until* is not an aware datetime.

        .. versionadded:: 0.4.0
        """
        return self._store.activity_store.activities(
            contact_id,
            names=None if names is None else [names] if isinstance(names, str) else list(names),
            since=_aware_or_none(since, "since"),
            until=_aware_or_none(until, "until"),
        )

    def timeline(self, contact_id: str) -> list[TimelineEntry]:
        """A contact's messages with their events, decrypted, in time order.

        Raises:
            NotFoundError: The contact is unknown.
        """
        return self._store.timeline(contact_id)

    def masked_timeline(self, contact_id: str) -> list[MaskedEntry]:
        """A contact's timeline with every personal field withheld or masked.

        See :func:`commhistory.audit.masked.masked_timeline`.

        Raises:
            NotFoundError: The contact is unknown.
        """
        return masked_timeline(self._store, contact_id)

    def consent_history(self, contact_id: str) -> list[ConsentEvent]:
        """A contact's consent events, decrypted, in time order.

        Raises:
            NotFoundError: The contact is unknown.
        """
        return self._store.consent_history(contact_id)

    def find_contacts(
        self,
        *,
        email: str | None = None,
        phone: str | None = None,
        line_user_id: str | None = None,
    ) -> list[str]:
        """Find contacts by address, through the keyed blind index.

        Raises:
            InvalidInputError: Not exactly one criterion was given.
            NormalizationError: The value is not a valid address of its kind.
        """
        return self._store.find_contacts(email=email, phone=phone, line_user_id=line_user_id)

    def dead_letters(
        self, *, source: str | None = None, limit: int | None = None
    ) -> list[DeadLetter]:
        """The rejected input items, decrypted, oldest first."""
        return self._store.dead_letters(source=source, limit=limit)

    def list_dead_letters(
        self, *, source: str | None = None, limit: int | None = None
    ) -> list[DeadLetterInfo]:
        """The rejected input items without their raw text (nothing decrypted), oldest first.

        .. versionadded:: 0.4.0
        """
        return self._store.dead_letter_store.letters(source=source, limit=limit)

    def dead_letter(self, letter_id: str) -> DeadLetter:
        """One dead letter with its raw text decrypted.

        Raises:
            NotFoundError: No dead letter has this id (``kind="dead_letter"``).

        .. versionadded:: 0.4.0
        """
        return self._store.dead_letter_store.get(letter_id)

    def masked_dead_letter(self, letter_id: str) -> DeadLetterInfo:
        """One dead letter without its raw text (nothing decrypted).

        Raises:
            NotFoundError: No dead letter has this id (``kind="dead_letter"``).

        .. versionadded:: 0.4.0
        """
        found = self._store.dead_letter_store.letters(ids=[letter_id])
        if not found:
            raise NotFoundError(kind="dead_letter", identifier=letter_id)
        return found[0]

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
        """Parse dead letters again and store what now parses, each line once.

        See :func:`commhistory.facade.dead_letters.replay_dead_letters`.

        Webhook dead letters are parsed again by the adapter *adapters* returns
        for their provider (``commhistory.providers.get_provider`` builds one; the
        facade imports no provider), without checking their signature again: it
        was checked on receipt. Without *adapters* they are left untouched.

        Raises:
            NotFoundError: An id names no dead letter.

        .. versionadded:: 0.4.0
        """
        return replay_dead_letters(
            self,
            ids,
            source=source,
            default_tz=default_tz,
            mapping=mapping,
            kind=kind,
            header=header,
            region=region,
            adapters=adapters,
        )

    def purge_dead_letters(self, before: datetime, *, dry_run: bool = False) -> int:
        """Delete the dead letters received before *before* (count them with *dry_run*).

        Returns:
            How many were (or, with *dry_run*, would be) deleted.

        .. versionadded:: 0.4.0
        """
        if dry_run:
            return self._store.privacy_store.count_dead_letters(before)
        return self._store.privacy_store.delete_dead_letters(before)

    # ------------------------------------------------------------------ contact attributes

    def declare_attributes(
        self,
        schema: AttributeSchema | Iterable[AttributeDefinition],
        *,
        allow_changes: bool = False,
    ) -> AttributeSchema:
        """Declare contact attributes (idempotent); return the whole declared schema.

        An attribute declared again as it is changes nothing; a new one is
        added; an enum's allowed values and a description may change. Audited
        (action ``attributes.declare``) as the default actor. See ``docs/contacts.md``.

        Args:
            schema: The declarations (an :class:`~commhistory.contacts.attributes.AttributeSchema`,
                e.g. from :meth:`AttributeSchema.load
                <commhistory.contacts.attributes.AttributeSchema.load>`, or definitions).
            allow_changes: Allow changing a declared attribute's type or personal
                flag (values stored before keep their type and encryption).

        Raises:
            AttributeSchemaError: A declaration is malformed, or changes a
                type or personal flag without *allow_changes*.

        .. versionadded:: 0.4.0
        """
        view = self._unattended()
        if view is None:
            return self._schema.declare(schema, allow_changes=allow_changes)
        return view.declare_attributes(schema, allow_changes=allow_changes)

    def attribute_schema(self) -> AttributeSchema:
        """The declared contact attributes, read from the store.

        .. versionadded:: 0.4.0
        """
        return self._schema.refresh()

    def set_attributes(
        self,
        contact_id: str,
        values: Mapping[str, object],
        *,
        at: datetime | None = None,
    ) -> bool:
        """Set some of a contact's attributes from *at* on (``None`` as a value unsets one).

        Every value is checked against the declared schema before anything is
        written, and all are stored in one transaction, so a refused value
        stores nothing. History is kept: the value each attribute held before
        stays readable (:meth:`attribute_history`, ``at=`` of :meth:`attributes`).
        A contact not seen before is created. Audited (action
        ``attributes.set``, with the contact id) as the default actor.

        Args:
            contact_id: The contact.
            values: ``{name: value}``; text forms are accepted (``"42"``, ``"2026-04-01"``).
            at: When the values took effect (an aware datetime; default: now).

        Returns:
            Whether anything changed (setting the values in force is a no-op).

        Raises:
            UnknownAttributeError: A name is not declared.
            AttributeTypeError: A value is not of its attribute's type.
            AttributeEnumError: A value is not an allowed enum value.
            PersonalValueError: A plain attribute was given an email address or
                a phone number.
            InvalidInputError: The contact was erased, or *at* is not an aware datetime.

        .. versionadded:: 0.4.0
        """
        view = self._unattended()
        if view is None:
            return self._set_attributes([(contact_id, values, at)])[0]
        return view.set_attributes(contact_id, values, at=at)

    def set_attributes_many(self, updates: Iterable[ContactUpdate]) -> list[bool]:
        """Set the attributes of many contacts in one transaction: all or nothing.

        Every update is checked before anything is written; the first refused
        value raises (as :meth:`set_attributes`) and nothing is stored. For
        bulk loads where a bad line should become a dead letter instead, use
        :meth:`record_contacts`. Audited (action ``attributes.set``, with the
        contact ids) as the default actor.

        Returns:
            For each update, whether it changed anything.

        .. versionadded:: 0.4.0
        """
        batch = list(updates)
        view = self._unattended()
        if view is None:
            return self._set_attributes([(u.contact_id, u.attributes, u.at) for u in batch])
        return view.set_attributes_many(batch)

    def _set_attributes(
        self, items: list[tuple[str, Mapping[str, object], datetime | None]]
    ) -> list[bool]:
        changes = []
        for contact_id, values, at in items:
            update = ContactUpdate(
                contact_id=contact_id,
                attributes=values,
                at=datetime.now(UTC) if at is None else at,
            )
            typed = self._schema.values_of(update.attributes)
            changes.append(
                AttributeChange(contact_id=update.contact_id, at=update.at, values=tuple(typed))
            )
        statuses = self._store.attribute_store.apply(changes, on_erased="raise")
        return [status == "changed" for status in statuses]

    def record_contacts(self, items: Iterable[ContactUpdate]) -> IngestReport:
        """Store contact attribute updates in batches, as ``ingest`` stores ``contact`` lines.

        An update refused by the schema, or of an erased contact, becomes a
        dead letter; one that changes nothing is a duplicate. See
        :meth:`~commhistory.store.protocol.Repository.record_contacts`.

        .. versionadded:: 0.4.0
        """
        return self._store.record_contacts(items)

    def attributes(self, contact_id: str, *, at: datetime | None = None) -> dict[str, TypedValue]:
        """A contact's attribute values, personal ones decrypted: current, or in force at *at*.

        Raises:
            NotFoundError: The contact is unknown.

        .. versionadded:: 0.4.0
        """
        self._known(contact_id)
        return {
            v.name: v.value
            for v in self._store.attribute_store.versions(contact_id, at=at)
            if v.value is not None
        }

    def masked_attributes(
        self, contact_id: str, *, at: datetime | None = None
    ) -> dict[str, TypedValue | None]:
        """A contact's attribute values with personal ones withheld (``None``); nothing decrypted.

        Raises:
            NotFoundError: The contact is unknown.

        .. versionadded:: 0.4.0
        """
        self._known(contact_id)
        return {
            v.name: v.value
            for v in self._store.attribute_store.versions(contact_id, at=at, decrypt=False)
        }

    def attribute_history(self, contact_id: str) -> list[AttributeVersion]:
        """Every value each attribute of a contact held, with when, personal ones decrypted.

        Ordered by attribute name, then ``valid_from``.

        Raises:
            NotFoundError: The contact is unknown.

        .. versionadded:: 0.4.0
        """
        self._known(contact_id)
        return self._store.attribute_store.versions(contact_id, history=True)

    def masked_attribute_history(self, contact_id: str) -> list[AttributeVersion]:
        """Every version of a contact's attributes, personal values withheld (``None``).

        Nothing is decrypted.

        Raises:
            NotFoundError: The contact is unknown.

        .. versionadded:: 0.4.0
        """
        self._known(contact_id)
        return self._store.attribute_store.versions(contact_id, history=True, decrypt=False)

    def _known(self, contact_id: str) -> None:
        if contact_id not in self._store.consent_store.known([contact_id]):
            raise NotFoundError(kind="contact", identifier=contact_id)

    # ------------------------------------------------------------------ consent

    @property
    def consent(self) -> ConsentLedger:
        """The consent ledger (see :class:`~commhistory.consent.ConsentLedger`).

        ``grant`` and ``withdraw`` are audited as the default actor.
        """
        return _AuditedLedger(self)

    @property
    def suppression(self) -> SuppressionList:
        """The suppression list (see :class:`~commhistory.consent.SuppressionList`).

        ``add`` and ``lift`` are audited as the default actor.
        """
        return _AuditedSuppression(self)

    def can_send(
        self,
        contact_id: str,
        channel: Channel | str,
        purpose: Purpose | str,
        at: datetime | None = None,
        *,
        address: str | None = None,
    ) -> SendDecision:
        """Decide whether a message may be sent; see :func:`commhistory.consent.can_send`."""
        return can_send(self._store, contact_id, channel, purpose, at, address=address)

    def filter_sendable(
        self,
        contact_ids: Iterable[str],
        channel: Channel | str,
        purpose: Purpose | str,
        at: datetime | None = None,
    ) -> list[str]:
        """Keep the sendable contacts; see :func:`commhistory.consent.filter_sendable`."""
        return filter_sendable(self._store, contact_ids, channel, purpose, at)

    # ------------------------------------------------------------------ segments

    def _segment(self, tree: Criteria | Mapping[str, Any]) -> Criteria:
        from commhistory.segments import validate  # noqa: PLC0415 - start-up

        node = from_dict(tree) if isinstance(tree, Mapping) else tree
        validate(node, self.attribute_schema(), self.activity_catalog())
        return node

    def segment_count(
        self, tree: Criteria | Mapping[str, Any], *, at: datetime | None = None
    ) -> int:
        """Count the contacts a condition tree keeps at *at* (default: now), in the database.

        Args:
            tree: A :mod:`commhistory.criteria` tree, or its JSON data.
            at: The instant (an aware datetime): windows end there, consent and
                suppression are read then, attributes are those in force then
                (default: now, with the current attribute values).

        Raises:
            CriteriaError: The JSON data is not a valid tree (the path is named).
            CriteriaSchemaError: The tree does not fit the declared attributes
                or activities (unknown or personal attribute, wrong operator or value).

        .. versionadded:: 0.4.0
        """
        return self._store.segment_store.count(self._segment(tree), at=at)

    def segment_members(
        self, tree: Criteria | Mapping[str, Any], *, at: datetime | None = None
    ) -> list[str]:
        """Return the (pseudonymous) contact ids a tree keeps at *at*, sorted.

        See :meth:`segment_count` for the arguments and errors.

        .. versionadded:: 0.4.0
        """
        return self._store.segment_store.members(self._segment(tree), at=at)

    def segment_explain(
        self, tree: Criteria | Mapping[str, Any], *, at: datetime | None = None
    ) -> ExplainNode:
        """Count what each node of a tree keeps, alone and cumulatively (``explain``).

        .. versionadded:: 0.4.0
        """
        return self._store.segment_store.explain(self._segment(tree), at=at)

    def save_segment(self, name: str, tree: Criteria | Mapping[str, Any]) -> SavedSegment:
        """Save a checked tree as the next version of segment *name*.

        Saving the tree of the latest version again returns that version.

        .. versionadded:: 0.4.0
        """
        from commhistory.segments import save_segment  # noqa: PLC0415 - start-up

        return save_segment(self._store, name, self._segment(tree))

    def segments(self, name: str | None = None) -> list[SavedSegment]:
        """Return the saved segment versions (of *name*, or every one), by name and version.

        .. versionadded:: 0.4.0
        """
        return self._store.segment_store.definitions(name)

    def segment_snapshot(
        self, name: str, *, version: int | None = None, at: datetime | None = None
    ) -> SnapshotInfo:
        """Evaluate a saved segment (default: its latest version) and store its members.

        .. versionadded:: 0.4.0
        """
        from commhistory.segments import snapshot  # noqa: PLC0415 - start-up

        return snapshot(self._store, name, version=version, at=at)

    def segment_delta(
        self, name: str, *, before: str | None = None, after: str | None = None
    ) -> SegmentDelta:
        """Who entered and who left segment *name* between two snapshots (default: the last two).

        .. versionadded:: 0.4.0
        """
        from commhistory.segments import delta  # noqa: PLC0415 - start-up

        return delta(self._store, name, before=before, after=after)

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
        addresses: bool = True,
    ) -> SendPlan:
        """Plan a send: now, deferred (with when) or excluded (with why).

        See :func:`commhistory.segments.planning.plan_send`. Consent and
        suppression always apply; caps and quiet hours come from *config* (or
        *caps* and *quiet_hours*), counted in each contact's zone.

        *contacts* are contact ids, a :class:`~commhistory.segments.planning.CandidateSource`,
        or a segment: a :mod:`commhistory.criteria` tree or its JSON form, checked
        against the declared attributes and evaluated at the plan's instant.

        .. versionadded:: 0.4.0
        """
        from commhistory.segments.planning import SegmentCandidates, plan_send  # noqa: PLC0415 - start-up

        source: Iterable[str] | CandidateSource
        if isinstance(contacts, (Mapping, Node)):
            source = SegmentCandidates(self._segment(contacts))
        else:
            source = contacts
        return plan_send(
            self._store, source, channel=channel, purpose=purpose, at=at, caps=caps,
            quiet_hours=quiet_hours, config=config, addresses=addresses,
        )  # fmt: skip

    # ------------------------------------------------------------------ journeys

    def save_journey(self, journey: Journey) -> bool:
        """Store a journey version; ``False`` when the same definition is stored already.

        A stored version never changes: saving another definition under its
        number raises :class:`~commhistory.errors.InvalidInputError`; save a new version.

        .. versionadded:: 0.4.0
        """
        from commhistory.journeys.engine import save_journey  # noqa: PLC0415 - start-up

        return save_journey(self._store, journey)

    def enroll(
        self,
        journey: Journey,
        contact_id: str,
        trigger_id: str,
        *,
        at: datetime,
        properties: Mapping[str, object] | None = None,
    ) -> Enrollment | None:
        """Enroll a contact on a trigger, once per trigger, as the re-entry policy allows.

        See :func:`commhistory.journeys.engine.enroll`; ``None`` when the
        journey's re-entry policy keeps the contact out.

        .. versionadded:: 0.4.0
        """
        from commhistory.journeys.engine import enroll as journey_enroll  # noqa: PLC0415 - start-up

        return journey_enroll(
            self._store, journey, contact_id, trigger_id, at, properties=properties
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
        """Claim and return the journey sends due at *now* (default: now), through send planning.

        See :func:`commhistory.journeys.engine.due`: an intent is returned by
        one call only, also across processes. Send it, then
        :meth:`record_journey_send` its key. The result is a sequence of the
        claimed intents, with ``deferred`` and ``skipped``: what send planning
        (consent, suppression, and *config*'s caps and quiet hours) held
        back. ``dry_run=True`` claims and stores nothing.

        .. versionadded:: 0.4.0
        """
        from commhistory.journeys.engine import due as journey_due  # noqa: PLC0415 - start-up

        at = datetime.now(UTC) if now is None else now
        return journey_due(
            self._store, at, config=config, zone_of=zone_of, limit=limit, dry_run=dry_run
        )

    def record_journey_send(
        self,
        key: str,
        *,
        at: datetime | None = None,
        outcome: str = "sent",
        message_id: str | None = None,
    ) -> bool:
        """Record the host's send (or skip) of a journey intent by its key.

        See :func:`commhistory.journeys.engine.record_sent`; ``False`` when
        recorded already.

        .. versionadded:: 0.4.0
        """
        from commhistory.journeys.engine import record_sent  # noqa: PLC0415 - start-up

        when = datetime.now(UTC) if at is None else at
        return record_sent(self._store, key, when, outcome, message_id=message_id)

    def journey_stats(
        self, journey: Journey, *, at: datetime | None = None, exclude_machine: bool = True
    ) -> JourneyStats:
        """Count a journey version's enrollments, sends and message KPIs, per step (read-only).

        See :func:`commhistory.journeys.stats.journey_stats`.

        .. versionadded:: 0.4.0
        """
        from commhistory.journeys.stats import journey_stats  # noqa: PLC0415 - start-up

        return journey_stats(self._store, journey, at=at, exclude_machine=exclude_machine)

    def journey_replay(
        self,
        journey: Journey,
        *,
        since: datetime,
        until: datetime,
        zone_of: Callable[[str], ZoneInfo] | None = None,
        config: PlanConfig | None = None,
    ) -> JourneyReplay:
        """Replay the stored history of ``[since, until]`` against a journey, writing nothing.

        Each send is screened by send planning at its instant (``config`` as
        :meth:`journey_due` takes it). See :func:`commhistory.journeys.replay.replay`.

        .. versionadded:: 0.4.0
        """
        from commhistory.journeys.replay import replay as journey_replay  # noqa: PLC0415 - start-up

        return journey_replay(
            self._store, journey, since=since, until=until, zone_of=zone_of, config=config
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
        """Enroll the contacts the journeys' triggers name since their last run; wake on behaviour.

        See :func:`commhistory.journeys.triggers.run_triggers`: activity, event,
        segment and date triggers fire from the stored history, idempotently (a
        repeated run enrolls nobody twice), and new behaviour wakes the
        enrollments waiting for it.

        .. versionadded:: 0.4.0
        """
        from commhistory.journeys.triggers import run_triggers  # noqa: PLC0415 - start-up

        at = datetime.now(UTC) if now is None else now
        return run_triggers(
            self._store, journeys, at, zone_of=zone_of, max_age=max_age,
            batch_size=batch_size, wake=wake,
        )  # fmt: skip

    # ------------------------------------------------------------------ KPIs

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
        """Compute the KPIs of DESIGN section 5 over the stored history, in the database.

        Args:
            by: Grouping keys: any of ``campaign_id``, ``variant``, ``channel``,
                ``provider``, ``purpose``, the journey keys ``journey``,
                ``journey_version``, ``step`` (the messages recorded for journey
                intents only) and at most one of ``day``, ``week``, ``month``.
            since: Only messages sent at or after this aware datetime.
            until: Only messages sent before this aware datetime.
            tz: The IANA time zone periods are computed in.
            exclude_machine: Leave out reactions flagged ``machine`` (the default).
            costs: Show the recorded campaign costs with ROI, cost per conversion
                and revenue per recipient (see :mod:`commhistory.kpi.costs`).
            journey: Only the messages recorded for intents of this journey key.
            journey_version: Only those of this version of ``journey``.

        Returns:
            The table (see :mod:`commhistory.kpi.metrics`).

        Raises:
            InvalidInputError: Unknown grouping keys, zone, or ``since`` after ``until``.
            StorageError: The database failed.

        .. versionchanged:: 0.4.0
           ``costs``; ``journey``, ``journey_version`` and the journey grouping keys.
        """
        from commhistory.kpi.aggregate import repository_kpis  # noqa: PLC0415 - start-up

        return repository_kpis(
            self._store,
            by=by,
            since=since,
            until=until,
            tz=tz,
            exclude_machine=exclude_machine,
            costs=costs,
            journey=journey,
            journey_version=journey_version,
        )

    def link_clicks(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        exclude_machine: bool = True,
    ) -> tuple[LinkClicks, ...]:
        """Count clicks per campaign and link label, in the database, nothing decrypted.

        See :func:`commhistory.kpi.links.link_clicks`.

        .. versionadded:: 0.4.0
        """
        from commhistory.kpi.links import link_clicks as repository_link_clicks  # noqa: PLC0415 - start-up

        return repository_link_clicks(
            self._store, since=since, until=until, exclude_machine=exclude_machine
        )

    # ------------------------------------------------------------------ costs

    def record_costs(self, items: Iterable[Cost]) -> IngestReport:
        """Record campaign costs, each ``cost_id`` once, all in one transaction.

        Recording a cost again (same id, same values) is a duplicate and changes
        nothing, so an import can be re-run. Costs are immutable: the same id
        with other values refuses the whole call.

        Args:
            items: The costs (:class:`~commhistory.kpi.Cost`).

        Returns:
            ``inserted`` and ``duplicates`` (``rejected`` is always 0: bad input
            raises and stores nothing).

        Raises:
            PayloadError: An item is not a :class:`~commhistory.kpi.Cost`.
            InvalidInputError: A ``cost_id`` is given or stored with other values.
            StorageError: The database failed; nothing was stored.

        .. versionadded:: 0.4.0
        """
        return self._store.cost_store.record(list(items))

    def costs(self, *, campaign_id: str | None = None) -> list[Cost]:
        """The recorded campaign costs (of one campaign), by campaign, start and id.

        .. versionadded:: 0.4.0
        """
        return self._store.cost_store.costs(campaign_id=campaign_id)

    # ------------------------------------------------------------------ privacy

    def export_subject(self, contact_id: str) -> dict[str, Any]:
        """Everything held on a person; see :func:`commhistory.privacy.export_subject`.

        Audited (action ``export_subject``) as the default actor.

        Raises:
            NotFoundError: The contact is unknown.
            StorageError: The database failed, or the audit entry could not be written.
        """
        from commhistory.privacy import export_subject  # noqa: PLC0415 - start-up

        view = self._unattended()
        if view is None:
            return export_subject(self._store, contact_id)
        return view.export_subject(contact_id)

    def erase_subject(self, contact_id: str) -> ErasureReport:
        """Crypto-shred a person; see :func:`commhistory.privacy.erase_subject`.

        Audited (action ``erase_subject``) as the default actor, in the
        erasure's transaction: an erasure whose entry cannot be written is
        rolled back.

        Raises:
            NotFoundError: The contact is unknown.
            StorageError: The database failed, or the audit entry could not be written.
        """
        from commhistory.privacy import erase_subject  # noqa: PLC0415 - start-up

        view = self._unattended()
        if view is None:
            return erase_subject(self._store, contact_id)
        return view.erase_subject(contact_id)

    def purge(self, policy: RetentionPolicy | None = None, *, dry_run: bool = True) -> PurgeReport:
        """Delete what the retention policy says is due; see :func:`commhistory.privacy.purge`.

        A real purge is audited (action ``purge``) as the default actor; a dry
        run is not.
        """
        from commhistory.privacy import purge  # noqa: PLC0415 - start-up

        view = None if dry_run else self._unattended()
        if view is None:
            return purge(self._store, policy, dry_run=dry_run)
        return view.purge(policy, dry_run=False)

    # ------------------------------------------------------------------ analytics

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
        """Export pseudonymous facts for analytics engines; see ``docs/analytics.md``.

        Writes messages, events, activities, campaign costs and the values of
        plain contact attributes (no personal field; contact ids as keyed
        pseudonyms; erased contacts left out) under
        *out* as a date-partitioned Parquet or CSV dataset: the rows stored
        since the last export there, whatever their times
        (:func:`commhistory.analytics.export_analytics`).

        Args:
            out: The output directory.
            format: ``"parquet"`` (needs the ``analytics`` extra) or ``"csv"``.
            since: Only rows whose time is at or after this aware datetime.
            until: Only rows whose time is before this aware datetime.
            keys: The keyring the pseudonym key is derived from; by default the
                SQL store's own (a memory store has none: give one).
            batch_size: Rows read and written per batch.

        Raises:
            InvalidInputError: Bad format, bounds or output directory, pyarrow
                missing for parquet, or no keyring (``field="keys"``).
            StorageError: The database failed.

        .. versionadded:: 0.4.0
        """
        from commhistory.analytics import export_analytics  # noqa: PLC0415 - start-up

        if keys is None:
            keys = getattr(self._store, "keyring", None)
            if keys is None:
                raise InvalidInputError(
                    field="keys", reason="this store has no keyring; pass keys="
                )
        return export_analytics(
            self._store.analytics_reader,
            keys,
            out,
            format=format,
            since=since,
            until=until,
            batch_size=batch_size,
        )

    # ------------------------------------------------------------------ keys

    def rotate_keys(
        self,
        *,
        batch_size: int = 1000,
        reindex: bool = False,
        progress: Callable[[str, int], None] | None = None,
    ) -> RotationReport:
        """Move stored keys under the keyring's current key; see :func:`rotate_keys`.

        Audited (action ``rotate_keys``) as the default actor, once it ends.
        """
        view = self._unattended()
        if view is None:
            return self._store.rotate_keys(
                batch_size=batch_size, reindex=reindex, progress=progress
            )
        return view.rotate_keys(batch_size=batch_size, reindex=reindex, progress=progress)

    def backfill_masks(self, *, batch_size: int = 1000) -> MaskBackfillReport:
        """Store masked addresses of messages stored before schema revision 0005."""
        return self._store.backfill_masks(batch_size=batch_size)

    def ensure_partitions(
        self, *, ahead_months: int = 3, now: datetime | None = None
    ) -> PartitionReport:
        """Create the coming months' partitions (partitioned PostgreSQL; else a no-op).

        Run it from a scheduler (monthly, or daily) with *ahead_months* covering
        the longest gap between runs; rows of a month without a partition land in
        the ``DEFAULT`` partition and are moved to their own one by the next run.
        See :meth:`commhistory.store.Repository.ensure_partitions` and
        ``docs/scaling.md``.

        .. versionadded:: 0.4.0
        """
        return self._store.ensure_partitions(ahead_months=ahead_months, now=now)

    # ------------------------------------------------------------------ access

    @property
    def audit_log(self) -> AuditLog:
        """The audit log guarded views append to by default (the store's own)."""
        if self._audit is None:
            self._audit = default_audit_log(self._store)
        return self._audit

    @property
    def default_actor(self) -> Actor:
        """Who the facade's own audit entries name (see the class description)."""
        return self._default_actor

    def _unattended(self) -> GuardedRepository | None:
        """The view this facade audits its own changes through, or ``None``.

        ``None`` inside a guarded view's call: the view records the operation.
        The default actor's roles grant every permission here (the facade
        checks nothing), so the view only records.
        """
        if in_guarded_call():
            return None
        view = self._default_view
        if view is None:
            actor = self._default_actor
            policy = Policy({r: list(Permission) for r in actor.roles}, builtin=False)
            view = GuardedRepository(self, actor, purpose=self._default_purpose, policy=policy)
            self._default_view = view
        return view

    def as_actor(
        self,
        actor: Actor,
        *,
        purpose: str,
        policy: Policy | None = None,
        audit: AuditLog | None = None,
    ) -> GuardedRepository:
        """Return a view that acts as *actor*, checking and auditing every call.

        This facade itself checks nothing; see :mod:`commhistory.facade.guarded`.

        Args:
            actor: Who acts.
            purpose: Why (``"ticket 4711"``); recorded with every audit entry.
            policy: Roles and permissions (default: the built-in roles).
            audit: The audit log (default: :attr:`audit_log`).

        Returns:
            The guarded view.

        Raises:
            InvalidInputError: An unknown role or an empty purpose.
        """
        return GuardedRepository(self, actor, purpose=purpose, policy=policy, audit=audit)

    # ------------------------------------------------------------------ units of work

    def transaction(self, *, read: bool = False) -> AbstractContextManager[object]:
        """One unit of work: calls inside it commit or roll back together.

        Calls made inside it join it; see ``docs/storage.md``.
        """
        return self._store.transaction(read=read)

    @property
    def in_transaction(self) -> bool:
        """Whether this thread is inside :meth:`transaction`."""
        return self._store.in_transaction

    def after_commit(self, call: Callable[[], object]) -> None:
        """Run *call* once the current transaction has committed."""
        self._store.after_commit(call)

    def batch_hook(self, hook: BatchHook) -> AbstractContextManager[None]:
        """Call *hook* with each write batch's outcome, inside its transaction."""
        return self._store.batch_hook(hook)

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Close the store."""
        self._store.set_batch_feed(CONSENT_FEED, None)
        self._store.set_batch_feed(ATTRIBUTION_FEED, None)
        self._store.set_attribute_codec(None)
        self._store.close()


def _aware_or_none(value: object, field: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise InvalidInputError(field=field, reason="expected an aware datetime")
    return value.astimezone(UTC)


class _AuditedLedger(ConsentLedger):
    """The facade's consent ledger: ``grant`` and ``withdraw`` audited as its default actor."""

    def __init__(self, facade: CommHistory[Any]) -> None:
        super().__init__(facade.store)
        self._facade = facade

    def grant(self, contact_id: str, *args: Any, **kwargs: Any) -> ConsentEvent:
        """See :meth:`commhistory.consent.ConsentLedger.grant`; audited."""
        view = self._facade._unattended()
        if view is None:
            return super().grant(contact_id, *args, **kwargs)
        return view.consent.grant(contact_id, *args, **kwargs)

    def withdraw(self, contact_id: str, *args: Any, **kwargs: Any) -> ConsentEvent:
        """See :meth:`commhistory.consent.ConsentLedger.withdraw`; audited."""
        view = self._facade._unattended()
        if view is None:
            return super().withdraw(contact_id, *args, **kwargs)
        return view.consent.withdraw(contact_id, *args, **kwargs)


class _AuditedSuppression(SuppressionList):
    """The facade's suppression list: ``add`` and ``lift`` audited as its default actor."""

    def __init__(self, facade: CommHistory[Any]) -> None:
        super().__init__(facade.store)
        self._facade = facade

    def add(self, *args: Any, **kwargs: Any) -> SuppressionEntry:
        """See :meth:`commhistory.consent.SuppressionList.add`; audited."""
        view = self._facade._unattended()
        if view is None:
            return super().add(*args, **kwargs)
        return view.suppression.add(*args, **kwargs)

    def lift(self, *args: Any, **kwargs: Any) -> int:
        """See :meth:`commhistory.consent.SuppressionList.lift`; audited."""
        view = self._facade._unattended()
        if view is None:
            return super().lift(*args, **kwargs)
        return view.suppression.lift(*args, **kwargs)


def open_repository(
    url: str,
    keyring: KeyProvider,
    *,
    upgrade: bool = True,
    batch_size: int = 5000,
    attribution_window: timedelta | None = None,
) -> CommHistory[SQLRepository]:
    """Open the encrypted history at a database URL.

    Args:
        url: ``sqlite:///path/to/file.db`` or ``postgresql://user@host/db``
            (``postgresql://`` uses psycopg 3).
        keyring: The key provider (usually a :class:`~commhistory.Keyring`).
        upgrade: Bring the schema to the newest revision when it is behind
            (under a lock, so concurrent openers are safe). With ``False`` a
            schema that is not current is an error.
        batch_size: Items written per transaction.
        attribution_window: Attribute activities with revenue to the last
            clicked message within this long before them (default: off); see
            :doc:`/activities`.

    Returns:
        The facade over a :class:`~commhistory.store.sql.SQLRepository`; use it
        as a context manager or call ``close()``.

    Raises:
        SchemaError: The schema is not current and *upgrade* is false, or the
            database holds a newer schema than this version knows.
        KeyNotFoundError: The database was written with another keyring.
        DatabaseUnavailableError: The database cannot be reached, or does not
            exist (:class:`~commhistory.errors.DatabaseNotFoundError`); the message
            says which file, or which host, port and database, and why.
        StorageError: The database cannot be reached or the URL is unusable.

    .. versionadded:: 0.1.0
    .. versionchanged:: 0.4.0
       Returns a :class:`CommHistory`; the *attribution_window* argument.
    """
    window = check_window(attribution_window)
    return CommHistory(
        open_sql_repository(url, keyring, upgrade=upgrade, batch_size=batch_size),
        attribution_window=window,
    )


def rotate_keys(
    repo: CommHistory[Any], *, batch_size: int = 1000, reindex: bool = False
) -> RotationReport:
    """Move every stored key under the keyring's current key (see ``docs/keys.md``).

    Args:
        repo: The history, from :func:`open_repository`.
        batch_size: Rows per transaction.
        reindex: Also recompute blind indexes under the current index key.

    Returns:
        What was moved.

    Raises:
        InvalidInputError: The store keeps no keys (in memory).

    .. versionadded:: 0.1.0
    .. versionchanged:: 0.4.0
       Takes the facade; :func:`commhistory.store.rotate_keys` takes the SQL store.
    """
    return repo.rotate_keys(batch_size=batch_size, reindex=reindex)
