"""The send planning gate of ``due(now)``: which journey sends go now, later, or not at all.

:func:`~commhistory.journeys.engine.due` walks every waking enrollment with the
step machine, then hands the send intents of that call to :func:`screen`
before anything is claimed. :func:`screen` groups the intents by
``(channel, purpose)`` and plans each group set-wise with **one**
:func:`~commhistory.segments.planning.plan_send` call (at the ``now`` of the
``due`` call, ids only: nothing is decrypted), then splits them:

* **send**: planning lets the send go now; ``due`` claims the intent and hands
  it out.
* **skipped**, never handed out: planning refused the contact for a reason no
  wait can fix (``erased``, ``suppressed``, ``no_consent``,
  ``missing_address``), or it was held (``quiet_hours``, ``frequency_cap``)
  and the journey says ``when_blocked: skip``. ``due`` claims the intent and
  records it as ``skipped`` with the reason (``journey_intents.reason``); the
  step counts as done and the enrollment goes on at the next ``due`` call.
* **deferred**, not handed out yet: held by quiet hours or a frequency cap and
  the journey says ``when_blocked: defer`` (the default). Nothing is claimed;
  the enrollment stays at the send step and sleeps until the deferred-until
  instant, when the next ``due`` call plans the *same* intent key again.

Deferred-until instants:

* quiet hours (a ``defer`` rule): the instant planning gives (the end of the
  quiet period in the contact's zone);
* quiet hours under a ``drop`` rule: the same end of the quiet period, computed
  from the rules of the plan configuration (the journey's ``defer`` wins over
  the rule's ``drop``: the step is not lost, it waits);
* a frequency cap: the next local midnight in the contact's zone. Caps count
  calendar days, so a cap cannot free up before then; if it still holds then,
  the send is deferred again.

Zones come from the plan configuration's zone resolution (:func:`zones`: the
plain ``zone_attribute`` in force at ``now``, else ``default_zone``), the same
zones planning uses; a caller's own ``zone_of`` replaces them for waits
(``until_time``, ``until_allowed``) and deferral instants. :func:`allowed`
gives the step machine the first instant quiet hours let a send step go, for
``until_allowed`` waits.

.. versionadded:: 0.4.0
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Final, overload
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs

from commhistory.journeys.definition import Journey, SendStep, WhenBlocked
from commhistory.journeys.machine import SendIntent
from commhistory.model import Channel, Purpose
from commhistory.segments.planning import (
    ExclusionReason,
    PlanConfig,
    QuietHours,
    plan_send,
)
from commhistory.store.protocol import Repository

__all__ = [
    "HARD_REASONS",
    "DeferredIntent",
    "DueResult",
    "GateSplit",
    "SkippedIntent",
    "allowed",
    "screen",
    "zones",
]

HARD_REASONS: Final = frozenset(
    {
        ExclusionReason.ERASED,
        ExclusionReason.SUPPRESSED,
        ExclusionReason.NO_CONSENT,
        ExclusionReason.MISSING_ADDRESS,
    }
)
"""Refusals that skip a step whatever the journey's ``when_blocked`` says."""

_TICK: Final = dt.timedelta(microseconds=1)
_UTC: Final = ZoneInfo("UTC")


@attrs.frozen(kw_only=True)
class DeferredIntent:
    """A send held by quiet hours or a frequency cap, planned again at ``until``.

    Nothing is claimed: the next ``due`` call at or after ``until`` plans the
    same key again.

    Attributes:
        intent: The send (its key is the one handed out later).
        until: When the enrollment wakes to plan it again (UTC).
        reason: ``quiet_hours`` or ``frequency_cap``.

    .. versionadded:: 0.4.0
    """

    intent: SendIntent
    until: dt.datetime
    reason: ExclusionReason

    def to_dict(self) -> dict[str, str]:
        """The deferral as a JSON-ready dict (ids, template key, instant, reason)."""
        return {
            "key": self.intent.key,
            "contact_id": self.intent.contact_id,
            "template": self.intent.template,
            "until": self.until.isoformat(),
            "reason": self.reason.value,
        }


@attrs.frozen(kw_only=True)
class SkippedIntent:
    """A send that send planning refused; recorded as ``skipped`` with ``reason``.

    Attributes:
        intent: The send (its key is recorded, never handed out).
        reason: The planning reason (``no_consent``, ``suppressed``,
            ``erased``, ``missing_address``; ``quiet_hours`` or
            ``frequency_cap`` under ``when_blocked: skip``).

    .. versionadded:: 0.4.0
    """

    intent: SendIntent
    reason: ExclusionReason

    def to_dict(self) -> dict[str, str]:
        """The skip as a JSON-ready dict (ids, template key, reason)."""
        return {
            "key": self.intent.key,
            "contact_id": self.intent.contact_id,
            "template": self.intent.template,
            "reason": self.reason.value,
        }


Verdict = SendIntent | DeferredIntent | SkippedIntent
"""What the gate decided for one intent: send it (the intent itself), defer or skip it."""


@attrs.frozen(kw_only=True)
class GateSplit:
    """The gate's decision for each intent of one ``due`` call.

    Attributes:
        send: The intents to claim and hand out, in the order given.
        deferred: The intents held for later.
        skipped: The intents to record as skipped.

    .. versionadded:: 0.4.0
    """

    send: tuple[SendIntent, ...] = ()
    deferred: tuple[DeferredIntent, ...] = ()
    skipped: tuple[SkippedIntent, ...] = ()
    _by_key: Mapping[str, Verdict] = attrs.field(factory=dict, alias="by_key", repr=False)

    def verdict(self, key: str) -> Verdict | None:
        """The decision for the intent ``key`` (``None``: not screened)."""
        return self._by_key.get(key)


class DueResult(Sequence[SendIntent]):
    """What ``due(now)`` returns: the sends claimed, and those deferred or skipped.

    It is a sequence of the claimed :class:`~commhistory.journeys.SendIntent`
    (``for intent in due(...)``, ``len()``, indexing), so a host that only
    sends what it is handed loops over it. :attr:`deferred` and :attr:`skipped`
    say what send planning held back, each item once: only the call that moved
    the enrollment (deferred) or claimed the key (skipped) reports it.

    Attributes:
        at: The ``now`` of the call (UTC).
        intents: The claimed sends, in the order the enrollments woke.
        deferred: Sends held by quiet hours or a cap (``when_blocked: defer``).
        skipped: Sends refused by planning, recorded as ``skipped`` with the reason.

    .. versionadded:: 0.4.0
    """

    __slots__ = ("at", "deferred", "intents", "skipped")

    def __init__(
        self,
        at: dt.datetime,
        intents: Sequence[SendIntent] = (),
        deferred: Sequence[DeferredIntent] = (),
        skipped: Sequence[SkippedIntent] = (),
    ) -> None:
        self.at = at
        self.intents = tuple(intents)
        self.deferred = tuple(deferred)
        self.skipped = tuple(skipped)

    @overload
    def __getitem__(self, index: int) -> SendIntent: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[SendIntent, ...]: ...

    def __getitem__(self, index: int | slice) -> SendIntent | tuple[SendIntent, ...]:
        return self.intents[index]

    def __len__(self) -> int:
        return len(self.intents)

    def __iter__(self) -> Iterator[SendIntent]:
        return iter(self.intents)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DueResult):
            return NotImplemented
        return (self.at, self.intents, self.deferred, self.skipped) == (
            other.at,
            other.intents,
            other.deferred,
            other.skipped,
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"DueResult(at={self.at.isoformat()!r}, intents={len(self.intents)}, "
            f"deferred={len(self.deferred)}, skipped={len(self.skipped)})"
        )

    def counts(self) -> dict[str, int]:
        """How many sends went each way: ``send``, ``deferred``, ``skipped``."""
        return {
            "send": len(self.intents),
            "deferred": len(self.deferred),
            "skipped": len(self.skipped),
        }

    def to_dict(self) -> dict[str, object]:
        """The result as a JSON-ready dict (pseudonymous ids and template keys only)."""
        return {
            "at": self.at.isoformat(),
            "intents": [
                {"key": i.key, "contact_id": i.contact_id, "template": i.template}
                for i in self.intents
            ],
            "deferred": [d.to_dict() for d in self.deferred],
            "skipped": [s.to_dict() for s in self.skipped],
        }


def _zone(name: str | None, default: ZoneInfo) -> ZoneInfo:
    if name is None:
        return default
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return default


def zones(
    repo: Repository,
    config: PlanConfig | None,
    contact_ids: Sequence[str],
    at: dt.datetime,
    *,
    zone_of: Callable[[str], ZoneInfo] | None = None,
) -> Callable[[str], ZoneInfo]:
    """The zone of each contact, resolved as send planning resolves it.

    With ``zone_of``, that function (the caller's own). Else, with a
    configuration naming a ``zone_attribute``, its plain value in force at
    ``at`` (one set-wise read for ``contact_ids``), an unknown name or none
    falling back to ``default_zone``; without one, ``default_zone`` (UTC
    without a configuration).

    .. versionadded:: 0.4.0
    """
    if zone_of is not None:
        return zone_of
    if config is None:
        return lambda _cid: _UTC
    default = _zone(config.default_zone, _UTC)
    if config.zone_attribute is None or not contact_ids:
        return lambda _cid: default
    names = repo.planning_store.zones(
        sorted(set(contact_ids)), config.zone_attribute, at, skip=config.default_zone
    )
    resolved = {name: _zone(name, default) for name in set(names.values())}
    by_contact = {cid: resolved[name] for cid, name in names.items()}
    return lambda cid: by_contact.get(cid, default)


def _quiet_end(rules: Sequence[QuietHours], at: dt.datetime, zone: ZoneInfo) -> dt.datetime:
    """The first instant at or after ``at`` that none of ``rules`` holds (drop or defer)."""
    t = at
    for _ in range(len(rules) + 2):
        local = t.astimezone(zone).time().replace(tzinfo=None)
        holding = [q for q in rules if q.quiet(local)]
        if not holding:
            return t
        t = max(q.next_allowed(t, zone) for q in holding)
    return t


def allowed(
    config: PlanConfig | None, zone: ZoneInfo
) -> Callable[[dt.datetime, SendStep], dt.datetime] | None:
    """The ``allowed`` function of the step machine, for ``until_allowed`` waits.

    The first instant at or after the given one when the configuration's quiet
    hours for the send step's channel and purpose (any action) let it go, in
    ``zone``. Frequency caps depend on what is sent in between, so they are
    checked when the send is due (:func:`screen`). ``None`` without a
    configuration (no quiet hours: at once).

    .. versionadded:: 0.4.0
    """
    if config is None or not config.quiet_hours:
        return None

    def first_allowed(at: dt.datetime, step: SendStep) -> dt.datetime:
        return _quiet_end(config.quiet_for(step.channel, step.purpose), at, zone)

    return first_allowed


def _next_midnight(at: dt.datetime, zone: ZoneInfo) -> dt.datetime:
    day = at.astimezone(zone).date() + dt.timedelta(days=1)
    out = dt.datetime.combine(day, dt.time(0), tzinfo=zone).astimezone(dt.UTC)
    return max(out, at + _TICK)


def screen(
    repo: Repository,
    now: dt.datetime,
    intents: Sequence[tuple[Journey, SendIntent]],
    *,
    config: PlanConfig | None = None,
    zone_of: Callable[[str], ZoneInfo] | None = None,
) -> GateSplit:
    """Split the intents of one ``due`` call into send, deferred and skipped (module docs).

    One :func:`~commhistory.segments.planning.plan_send` call per
    ``(channel, purpose)`` present, at ``now``, ids only. Reads only.

    Args:
        repo: The repository.
        now: The ``now`` of the ``due`` call (UTC).
        intents: Each intent with its journey version (for ``when_blocked``).
        config: Caps, quiet hours and zones (``None``: consent, suppression,
            erasure and addresses only, every contact in UTC).
        zone_of: The contact's zone for deferral instants (default: :func:`zones`).

    Returns:
        The split; every intent given is in exactly one part.

    Raises:
        PlanConfigError: The configuration's zone attribute is not declared,
            is personal, or not text.

    .. versionadded:: 0.4.0
    """
    if not intents:
        return GateSplit()
    zone = zone_of or zones(repo, config, [i.contact_id for _, i in intents], now)
    groups: dict[tuple[Channel, Purpose], list[str]] = {}
    for _, intent in intents:
        groups.setdefault((intent.channel, intent.purpose), []).append(intent.contact_id)
    held: dict[tuple[Channel, Purpose], dict[str, tuple[ExclusionReason, dt.datetime | None]]] = {}
    for (channel, purpose), contacts in groups.items():
        plan = plan_send(
            repo,
            list(dict.fromkeys(contacts)),
            channel=channel,
            purpose=purpose,
            at=now,
            config=config,
            addresses=False,
        )
        mine: dict[str, tuple[ExclusionReason, dt.datetime | None]] = {}
        for d in plan.deferred:
            mine[d.contact_id] = (ExclusionReason(d.reason.value), d.until)
        for e in plan.excluded:
            mine[e.contact_id] = (e.reason, None)
        held[(channel, purpose)] = mine
    send: list[SendIntent] = []
    deferred: list[DeferredIntent] = []
    skipped: list[SkippedIntent] = []
    by_key: dict[str, Verdict] = {}
    for journey, intent in intents:
        found = held[(intent.channel, intent.purpose)].get(intent.contact_id)
        verdict: Verdict
        if found is None:
            verdict = intent
            send.append(intent)
        elif found[0] in HARD_REASONS or journey.when_blocked is WhenBlocked.SKIP:
            verdict = SkippedIntent(intent=intent, reason=found[0])
            skipped.append(verdict)
        else:
            reason, until = found
            if until is None:
                contact_zone = zone(intent.contact_id)
                if reason is ExclusionReason.QUIET_HOURS:  # a drop rule; the journey defers
                    rules = (
                        () if config is None else config.quiet_for(intent.channel, intent.purpose)
                    )
                    until = _quiet_end(rules, now, contact_zone)
                else:
                    until = _next_midnight(now, contact_zone)
            verdict = DeferredIntent(intent=intent, until=max(until, now + _TICK), reason=reason)
            deferred.append(verdict)
        by_key[intent.key] = verdict
    return GateSplit(
        send=tuple(send), deferred=tuple(deferred), skipped=tuple(skipped), by_key=by_key
    )
