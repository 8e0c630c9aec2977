"""Retention: how long each kind of record is kept, and purging what is due.

The default keeps consent evidence until one month after sending to the
person stops (the Specified Electronic Mail Act, 特定電子メール法 Art. 5-2 and its
ordinance: records of consent are kept until one month has passed since the
last message sent on it); set ``consent_evidence_months=36`` for mail-order
advertising (特定商取引法: three years). Sending stops at a withdrawal (the
latest event for that channel and purpose is a withdrawal) or at an erasure.

:func:`purge` deletes what is due: consent events that a later withdrawal
superseded (the withdrawal itself is kept, since an opt-out must keep being
honoured), an erased contact's retained evidence, old dead letters, and,
when the policy sets ``activities``, activities older than that. Messages and
events are kept (they carry the KPIs) unless the policy sets ``history``: then
the messages sent and the events that occurred longer ago than that are
deleted; on a partitioned PostgreSQL database a month wholly past the cutoff
is dropped as a partition (:mod:`commhistory.store.partition`).

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import calendar
from datetime import datetime, timedelta
from typing import Any

import attrs

from commhistory.consent.ledger import when
from commhistory.errors import InvalidInputError
from commhistory.model import ConsentAction
from commhistory.normalize.time import from_micros
from commhistory.store.privacy import LedgerRow
from commhistory.store.protocol import Repository

__all__ = ["PurgeItem", "PurgeReport", "RetentionPolicy", "add_months", "purge"]


def add_months(value: datetime, months: int) -> datetime:
    """Return *value* plus whole calendar months (the day is clamped to the month's end)."""
    index = value.month - 1 + months
    year, month = value.year + index // 12, index % 12 + 1
    day = min(value.day, calendar.monthrange(year, month)[1])
    return value.replace(year=year, month=month, day=day)


def _non_negative(_inst: object, attr: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | timedelta):
        raise InvalidInputError(field=attr.name, reason="expected a whole number or a timedelta")
    if (isinstance(value, int) and value < 0) or (
        isinstance(value, timedelta) and value < timedelta(0)
    ):
        raise InvalidInputError(field=attr.name, reason="must not be negative")


@attrs.frozen(kw_only=True)
class RetentionPolicy:
    """How long records are kept.

    Attributes:
        consent_evidence_months: Months consent evidence is kept after sending
            stops (default 1, the Specified Electronic Mail Act).
        dead_letters: How long rejected input is kept (default 90 days); ``None`` keeps it.
        activities: How long activities are kept after they occurred; ``None``
            (the default) keeps them.
        history: How long messages (after ``sent_at``) and events (after
            ``occurred_at``) are kept; ``None`` (the default) keeps them.

    .. versionadded:: 0.1.0
    .. versionchanged:: 0.4.0
       *activities* and *history*.
    """

    consent_evidence_months: int = attrs.field(default=1, validator=_non_negative)
    dead_letters: timedelta | None = attrs.field(
        default=timedelta(days=90), validator=_non_negative
    )
    activities: timedelta | None = attrs.field(default=None, validator=_non_negative)
    history: timedelta | None = attrs.field(default=None, validator=_non_negative)

    def consent_until(self, stopped_at: datetime) -> datetime:
        """When evidence of consent whose sending stopped at *stopped_at* is due."""
        return add_months(stopped_at, self.consent_evidence_months)


@attrs.frozen(kw_only=True)
class PurgeItem:
    """One kind of record due for purging.

    Attributes:
        kind: ``"consent_events"``, ``"erased_consent_evidence"``, ``"dead_letters"``,
            ``"activities"``, ``"messages"`` or ``"events"``.
        count: How many records.
        rule: The rule that made them due.
        dropped_partitions: The month partitions dropped whole to delete them
            (partitioned PostgreSQL, a real purge only).

    .. versionchanged:: 0.4.0
       *dropped_partitions*.
    """

    kind: str
    count: int
    rule: str
    dropped_partitions: tuple[str, ...] = ()


@attrs.frozen(kw_only=True)
class PurgeReport:
    """What :func:`purge` deleted (or, with ``dry_run``, would delete).

    Attributes:
        now: The instant the policy was applied at.
        dry_run: Whether nothing was deleted.
        items: One item per kind of record.

    .. versionadded:: 0.1.0
    """

    now: datetime
    dry_run: bool
    items: tuple[PurgeItem, ...]

    @property
    def total(self) -> int:
        """Records due, all kinds together."""
        return sum(i.count for i in self.items)


def purge(
    repo: Repository,
    policy: RetentionPolicy | None = None,
    *,
    now: datetime | None = None,
    dry_run: bool = True,
) -> PurgeReport:
    """Delete what the retention policy says is due (by default only report it).

    Args:
        repo: The repository (its privacy store is used).
        policy: The policy (default: a :class:`~commhistory.RetentionPolicy` with its defaults).
        now: The instant to apply it at (default: now).
        dry_run: Only count (the default); pass ``False`` to delete.

    Returns:
        What is (or was) due, by kind.

    Raises:
        StorageError: The database failed; nothing was deleted.
    """
    policy = policy or RetentionPolicy()
    t = when(now, "now")
    store = repo.privacy_store
    cutoff = None if policy.dead_letters is None else t - policy.dead_letters
    acts = None if policy.activities is None else t - policy.activities
    hist = None if policy.history is None else t - policy.history
    history = None
    with repo.transaction():
        superseded = _superseded(store.consent_ledger(), store.last_outbound(), policy, t)
        erased = store.expired_evidence(t)
        dead = 0 if cutoff is None else store.count_dead_letters(cutoff)
        old = 0 if acts is None else repo.activity_store.count_before(acts)
        if hist is not None:
            history = store.count_history(hist)
        if not dry_run:
            store.delete_consents([*superseded, *erased])
            if cutoff is not None:
                store.delete_dead_letters(cutoff)
            if acts is not None:
                repo.activity_store.delete_before(acts)
            if hist is not None:
                history = store.delete_history(hist)
    report = _report(t, dry_run, policy, len(superseded), len(erased), dead)
    items = list(report.items)
    if policy.activities is not None:
        items.append(
            PurgeItem(
                kind="activities",
                count=old,
                rule=f"activities that occurred more than {policy.activities.days} days ago",
            )
        )
    if policy.history is not None and history is not None:
        days = policy.history.days
        dropped = history.dropped_partitions
        items += [
            PurgeItem(
                kind="messages",
                count=history.messages,
                rule=f"messages sent more than {days} days ago",
                dropped_partitions=tuple(p for p in dropped if p.startswith("messages_")),
            ),
            PurgeItem(
                kind="events",
                count=history.events,
                rule=f"events that occurred more than {days} days ago",
                dropped_partitions=tuple(p for p in dropped if p.startswith("events_")),
            ),
        ]
    return attrs.evolve(report, items=tuple(items))


def _superseded(
    rows: list[LedgerRow],
    last_sent: dict[tuple[str, str, str], int],
    policy: RetentionPolicy,
    now: datetime,
) -> list[str]:
    """Consent ids superseded by a withdrawal whose retention has run out.

    Args:
        rows: ``(consent_id, contact_id, channel, purpose, occurred_at_us, action)``.
        last_sent: Last outbound ``sent_at`` per (contact, channel, purpose).
        policy: The policy.
        now: The instant.
    """
    groups: dict[tuple[str, str, str], list[tuple[int, str, str]]] = {}
    for cid, contact, ch, pu, occ, action in rows:
        groups.setdefault((contact, ch, pu), []).append((occ, action, cid))
    due: list[str] = []
    for key, events in groups.items():
        events.sort(key=lambda e: (e[0], e[1] == ConsentAction.WITHDRAW.value, e[2]))
        occ, action, _last_id = events[-1]
        if action != ConsentAction.WITHDRAW.value:
            continue
        stopped = max(occ, last_sent.get(key, 0))
        if policy.consent_until(from_micros(stopped)) > now:
            continue
        due.extend(cid for _, _, cid in events[:-1])
    return due


def _report(  # noqa: PLR0917
    now: datetime, dry_run: bool, policy: RetentionPolicy, superseded: int, erased: int, dead: int
) -> PurgeReport:
    months = policy.consent_evidence_months
    items = [
        PurgeItem(
            kind="consent_events",
            count=superseded,
            rule=f"superseded by a withdrawal; kept {months} month(s) after sending stopped",
        ),
        PurgeItem(
            kind="erased_consent_evidence",
            count=erased,
            rule="evidence of an erased contact past its retain_until date",
        ),
    ]
    if policy.dead_letters is not None:
        items.append(
            PurgeItem(
                kind="dead_letters",
                count=dead,
                rule=f"rejected input older than {policy.dead_letters.days} days",
            )
        )
    return PurgeReport(now=now, dry_run=dry_run, items=tuple(items))
