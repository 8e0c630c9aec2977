"""Send planning: which candidates to message now, which later, which not, and why.

:func:`plan_send` takes candidate contacts (ids, or any :class:`CandidateSource`
such as a segment) and a channel and purpose, and returns a :class:`SendPlan`:

* **send**: the contacts to message now, each with the address to use
  (kept out of ``repr()``; ``None`` when addresses were not asked for);
* **deferred**: the contacts inside quiet hours whose rule says *defer*, each
  with the next instant (UTC) the send is allowed;
* **excluded**: every other candidate with one :class:`ExclusionReason`.

The checks, in order; the first that refuses gives the reason:

1. **Consent and suppression** (:func:`commhistory.consent.screen`, the
   rules of :func:`~commhistory.consent.can_send`): an erased contact
   (``erased``), a suppression in force on any of the contact's addresses for
   the channel (``suppressed``), marketing without a grant in force, or any
   purpose the contact withdrew (``no_consent``). This is always applied and
   has no switch: a configuration cannot turn it off for marketing, and
   transactional and service sends follow the same policy as ``can_send``
   (no consent needed, but a withdrawal for that purpose and suppression count).
2. **Address** (``missing_address``): the contact has no address of the
   channel's kind (email, phone for SMS/voice/WhatsApp, LINE user id).
   Channels without an address kind (push, chat, web, postal) skip this check.
3. **Frequency caps** (``frequency_cap``): a :class:`FrequencyCap` for the
   channel and purpose counts the outbound messages of that channel and purpose
   already recorded for the contact (``Message.purpose``, stored on every
   message) over the last ``days`` calendar days *in the contact's zone*: from
   local midnight ``days - 1`` days before the planning day up to the planning
   instant. A contact with ``limit`` or more is excluded. Purposes are counted
   separately, so transactional sends are exempt unless a cap names them.
4. **Quiet hours** (``quiet_hours``): a :class:`QuietHours` rule for the
   channel and purpose holds sends between ``start`` and ``end`` local time in
   the contact's zone (``start > end`` wraps past midnight). ``defer`` puts the
   contact in *deferred* with the next allowed instant; ``drop`` excludes it.

A contact's zone is the plain value of the attribute named by
:attr:`PlanConfig.zone_attribute` (declared, non-personal, ``str`` or ``enum``,
an IANA name such as ``"Asia/Tokyo"``), else :attr:`PlanConfig.default_zone`;
an unknown zone name falls back to the default too.

:data:`JAPAN_DEFAULT` holds marketing SMS and LINE between 21:00 and 08:00
Asia/Tokyo. That is common practice in Japan (industry guidance and what
carriers and users expect), not a legal requirement; choose your own hours.

.. versionadded:: 0.4.0
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any, Final, Protocol, runtime_checkable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs

from commhistory.consent.ledger import coerce, when
from commhistory.criteria import Criteria
from commhistory.errors import InvalidInputError, PlanConfigError
from commhistory.model import ADDRESS_KINDS, Channel, Purpose
from commhistory.store.planning import PlanningStore
from commhistory.store.protocol import Repository

__all__ = [
    "JAPAN_DEFAULT",
    "PROFILES",
    "CandidateSource",
    "DeferReason",
    "DeferredSend",
    "Exclusion",
    "ExclusionReason",
    "FrequencyCap",
    "PlanConfig",
    "PlannedSend",
    "QuietAction",
    "QuietHours",
    "SegmentCandidates",
    "SendPlan",
    "load_plan_config",
    "plan_send",
]

ZONE_TYPES: Final = frozenset({"str", "enum"})
"""Declared types a zone attribute may have."""


class ExclusionReason(enum.StrEnum):
    """Why a candidate is not sent to (see the module docs for the order of checks)."""

    ERASED = "erased"
    SUPPRESSED = "suppressed"
    NO_CONSENT = "no_consent"
    MISSING_ADDRESS = "missing_address"
    FREQUENCY_CAP = "frequency_cap"
    QUIET_HOURS = "quiet_hours"


_REFUSALS: Final = {r.value: r for r in ExclusionReason}


class DeferReason(enum.StrEnum):
    """Why a candidate is sent later."""

    QUIET_HOURS = "quiet_hours"


class QuietAction(enum.StrEnum):
    """What quiet hours do to a send that falls inside them."""

    DEFER = "defer"
    """Send at the next allowed instant (the contact is in :attr:`SendPlan.deferred`)."""
    DROP = "drop"
    """Do not send (the contact is excluded with ``quiet_hours``)."""


# ---------------------------------------------------------------------- configuration


def _channel(value: object) -> Channel:
    return coerce(Channel, value, "channel")


def _purpose(value: object) -> Purpose:
    return coerce(Purpose, value, "purpose")


def _positive(_inst: object, attribute: attrs.Attribute[int], value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise PlanConfigError(field=attribute.name, reason="must be a whole number >= 1")


def _zone_name(_inst: object, attribute: attrs.Attribute[str], value: object) -> None:
    if not isinstance(value, str) or zone_of(value) is None:
        raise PlanConfigError(field=attribute.name, reason="must be an IANA time zone name")


def zone_of(name: str) -> ZoneInfo | None:
    """Return the zone named *name*, or ``None`` when it is not a known IANA zone."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


@attrs.frozen(kw_only=True)
class FrequencyCap:
    """At most *limit* messages of a channel and purpose per *days* days, per contact.

    The window is counted in calendar days in the contact's zone: the planning
    day and the ``days - 1`` days before it, from local midnight. ``limit=2,
    days=7`` on a Wednesday afternoon counts the messages sent since the
    Thursday before, 00:00 local time.

    Attributes:
        channel: The channel capped.
        purpose: The purpose capped (others are not counted and not capped).
        limit: The most messages the window may already hold for a send to go.
        days: The window's length in days.

    .. versionadded:: 0.4.0
    """

    channel: Channel = attrs.field(converter=_channel)
    purpose: Purpose = attrs.field(converter=_purpose)
    limit: int = attrs.field(validator=_positive)
    days: int = attrs.field(validator=_positive)

    def window_start(self, at: datetime, zone: ZoneInfo) -> datetime:
        """Return the first instant (UTC) of the window that ends at *at*, in *zone*."""
        first = at.astimezone(zone).date() - timedelta(days=self.days - 1)
        return _local(first, time(0), zone)

    def to_dict(self) -> dict[str, Any]:
        """The cap as configuration (what :meth:`PlanConfig.from_dict` reads)."""
        return {
            "channel": self.channel.value,
            "purpose": self.purpose.value,
            "limit": self.limit,
            "days": self.days,
        }


def _local(day: date, at: time, zone: ZoneInfo) -> datetime:
    """The first instant (UTC) whose wall-clock time in *zone* on *day* is *at* or later.

    A repeated wall-clock time (clocks turned back) is its first occurrence; one
    skipped by a DST change is the instant of the change, the first one past it.
    """
    wall = datetime.combine(day, at, tzinfo=zone)
    out = wall.astimezone(UTC)
    if out.astimezone(zone).replace(tzinfo=None) == wall.replace(tzinfo=None):
        return out
    # Skipped: the change lies between the two readings of the wall time.
    low = wall.replace(fold=1).astimezone(UTC)
    after = out.astimezone(zone).utcoffset()
    while out - low > _TICK:
        mid = low + (out - low) / 2
        if mid.astimezone(zone).utcoffset() == after:
            out = mid
        else:
            low = mid
    return out


_TICK: Final = timedelta(microseconds=1)


def _action(value: object) -> QuietAction:
    return coerce(QuietAction, value, "action")


def _unfolded(value: object) -> object:
    return value.replace(fold=0) if isinstance(value, time) else value


def _time(_inst: object, attribute: attrs.Attribute[time], value: object) -> None:
    if not isinstance(value, time) or value.tzinfo is not None:
        raise PlanConfigError(field=attribute.name, reason="must be a local time (HH:MM)")


@attrs.frozen(kw_only=True)
class QuietHours:
    """Hold sends of a channel and purpose between *start* and *end*, local time.

    The contact's zone decides what local time it is. ``start`` is inside the
    quiet period, ``end`` is not; ``start > end`` wraps past midnight
    (21:00 to 08:00 holds 21:00 through 07:59:59.999999).

    Attributes:
        channel: The channel held.
        purpose: The purpose held.
        start: First quiet local time.
        end: First allowed local time after the quiet period.
        action: ``defer`` (send at *end*) or ``drop`` (do not send).

    .. versionadded:: 0.4.0
    """

    channel: Channel = attrs.field(converter=_channel)
    purpose: Purpose = attrs.field(converter=_purpose)
    start: time = attrs.field(converter=_unfolded, validator=_time)
    end: time = attrs.field(converter=_unfolded, validator=_time)
    action: QuietAction = attrs.field(default=QuietAction.DEFER, converter=_action)

    def __attrs_post_init__(self) -> None:
        if self.start == self.end:
            raise PlanConfigError(field="end", reason="must differ from start")

    def quiet(self, local: time) -> bool:
        """Whether the wall-clock time *local* is inside the quiet period."""
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end

    def next_allowed(self, at: datetime, zone: ZoneInfo) -> datetime:
        """Return the first instant (UTC) after *at* when the quiet period is over.

        Assumes *at* is inside it (see :meth:`quiet`).
        """
        local = at.astimezone(zone)
        day = local.date()
        if local.time().replace(tzinfo=None) >= self.end:
            day += timedelta(days=1)
        out = _local(day, self.end, zone)
        if out <= at:  # the clocks went back: the wall time may come round again
            wall = datetime.combine(day, self.end, tzinfo=zone).replace(fold=1)
            again = wall.astimezone(UTC)
            if again > at and again.astimezone(zone).replace(tzinfo=None) == wall.replace(
                tzinfo=None, fold=0
            ):
                out = again
        while out <= at:  # a DST change moved the wall clock past it
            day += timedelta(days=1)
            out = _local(day, self.end, zone)
        return out

    def to_dict(self) -> dict[str, Any]:
        """The rule as configuration (what :meth:`PlanConfig.from_dict` reads)."""
        return {
            "channel": self.channel.value,
            "purpose": self.purpose.value,
            "start": self.start.isoformat(timespec="minutes"),
            "end": self.end.isoformat(timespec="minutes"),
            "action": self.action.value,
        }


def _items(value: Iterable[Any], kind: type[Any]) -> tuple[Any, ...]:
    items = tuple(value)
    for i, item in enumerate(items):
        if not isinstance(item, kind):
            raise PlanConfigError(field=f"[{i}]", reason=f"must be a {kind.__name__}")
    return items


def _caps(value: Iterable[FrequencyCap]) -> tuple[FrequencyCap, ...]:
    return _items(value, FrequencyCap)


def _quiet(value: Iterable[QuietHours]) -> tuple[QuietHours, ...]:
    return _items(value, QuietHours)


def _attribute_name(_inst: object, attribute: attrs.Attribute[str | None], value: object) -> None:
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise PlanConfigError(field=attribute.name, reason="must be an attribute name or null")


@attrs.frozen(kw_only=True)
class PlanConfig:
    """Frequency caps, quiet hours and time zones for :func:`plan_send`.

    Consent and suppression are not configuration: they always apply.

    Attributes:
        caps: Frequency caps (those of the planned channel and purpose apply).
        quiet_hours: Quiet hours (those of the planned channel and purpose apply).
        zone_attribute: The declared, non-personal ``str``/``enum`` contact
            attribute holding each contact's IANA zone; ``None``: every contact
            is in *default_zone*.
        default_zone: The zone of contacts without a (known) zone.

    .. versionadded:: 0.4.0
    """

    caps: tuple[FrequencyCap, ...] = attrs.field(default=(), converter=_caps)
    quiet_hours: tuple[QuietHours, ...] = attrs.field(default=(), converter=_quiet)
    zone_attribute: str | None = attrs.field(default=None, validator=_attribute_name)
    default_zone: str = attrs.field(default="UTC", validator=_zone_name)

    def caps_for(self, channel: Channel, purpose: Purpose) -> tuple[FrequencyCap, ...]:
        """The caps that apply to a send of *channel* and *purpose*."""
        return tuple(c for c in self.caps if c.channel is channel and c.purpose is purpose)

    def quiet_for(self, channel: Channel, purpose: Purpose) -> tuple[QuietHours, ...]:
        """The quiet hours that apply to a send of *channel* and *purpose*."""
        return tuple(q for q in self.quiet_hours if q.channel is channel and q.purpose is purpose)

    def to_dict(self) -> dict[str, Any]:
        """The configuration as a JSON-ready dict (what :meth:`from_dict` reads back)."""
        return {
            "caps": [c.to_dict() for c in self.caps],
            "quiet_hours": [q.to_dict() for q in self.quiet_hours],
            "zone_attribute": self.zone_attribute,
            "default_zone": self.default_zone,
        }

    @classmethod
    def from_dict(cls, data: object) -> PlanConfig:
        """Read a configuration document (see ``docs/planning.md``).

        Keys: ``profile`` (``"japan_default"`` starts from :data:`JAPAN_DEFAULT`;
        the document's caps and quiet hours are added to the profile's, its zone
        keys replace the profile's), ``caps``, ``quiet_hours``,
        ``zone_attribute``, ``default_zone``.

        Raises:
            PlanConfigError: Unknown keys, wrong types or values; ``field`` is
                the path of the offending value (``"caps[0].limit"``).
        """
        return _parse_config(data)

    @classmethod
    def from_json(cls, text: str | bytes) -> PlanConfig:
        """Read a configuration from JSON text.

        Raises:
            PlanConfigError: Not JSON, or not a valid configuration (the path named).
        """
        try:
            data = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "msg", None) or type(exc).__name__
            raise PlanConfigError(field="<config>", reason=f"not JSON ({reason})") from None
        return _parse_config(data)


def load_plan_config(path: str | Path) -> PlanConfig:
    """Read a configuration from a JSON file.

    Raises:
        OSError: The file cannot be read.
        PlanConfigError: Not a valid configuration (the path in the document named).

    .. versionadded:: 0.4.0
    """
    return PlanConfig.from_json(Path(path).read_bytes())


JAPAN_DEFAULT: Final = PlanConfig(
    quiet_hours=(
        QuietHours(channel=Channel.SMS, purpose=Purpose.MARKETING, start=time(21), end=time(8)),
        QuietHours(channel=Channel.LINE, purpose=Purpose.MARKETING, start=time(21), end=time(8)),
    ),
    default_zone="Asia/Tokyo",
)
"""Defers marketing SMS and LINE messages at night (21.00 to 08.00), Asia/Tokyo by default.

Common practice in Japan, not law (as far as we know no statute sets hours for SMS
or LINE marketing; see ``docs/planning.md``). Add your own caps with
``attrs.evolve(JAPAN_DEFAULT, caps=...)``.
"""

PROFILES: Final[Mapping[str, PlanConfig]] = {"none": PlanConfig(), "japan_default": JAPAN_DEFAULT}
"""The profiles a configuration document may start from (its ``profile`` key)."""

_CONFIG_KEYS: Final = ("profile", "caps", "quiet_hours", "zone_attribute", "default_zone")
_CAP_KEYS: Final = ("channel", "purpose", "limit", "days")
_QUIET_KEYS: Final = ("channel", "purpose", "start", "end", "action")


def _object(
    data: object, path: str, keys: Sequence[str], required: Sequence[str]
) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise PlanConfigError(field=path, reason="must be an object")
    for key in data:
        if key not in keys:
            where = f"{path}.{key}" if path != "<config>" else str(key)
            raise PlanConfigError(
                field=where, reason=f"unknown key; expected one of: {', '.join(keys)}"
            )
    for key in required:
        if key not in data:
            where = f"{path}.{key}" if path != "<config>" else key
            raise PlanConfigError(field=where, reason="is required")
    return data


def _rebased(exc: InvalidInputError, path: str) -> PlanConfigError:
    return PlanConfigError(field=f"{path}.{exc.field}", reason=exc.reason)


def _clock(value: object, path: str) -> time:
    if isinstance(value, str) and len(value) in (5, 8):
        try:
            parsed = time.fromisoformat(value)
        except ValueError:
            pass
        else:
            if parsed.tzinfo is None:
                return parsed
    raise PlanConfigError(field=path, reason='must be a local time "HH:MM"')


def _whole(value: object, path: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise PlanConfigError(field=path, reason="must be a whole number >= 1")
    return value


def _list(data: dict[str, Any], key: str) -> list[Any]:
    value = data.get(key, [])
    if not isinstance(value, list):
        raise PlanConfigError(field=key, reason="must be a list")
    return value


def _parse_config(data: object) -> PlanConfig:
    doc = _object(data, "<config>", _CONFIG_KEYS, ())
    profile_name = doc.get("profile", "none")
    base = PROFILES.get(profile_name) if isinstance(profile_name, str) else None
    if base is None:
        raise PlanConfigError(
            field="profile", reason=f"unknown profile; expected one of: {', '.join(PROFILES)}"
        )
    caps = list(base.caps)
    for i, raw in enumerate(_list(doc, "caps")):
        path = f"caps[{i}]"
        item = _object(raw, path, _CAP_KEYS, _CAP_KEYS)
        try:
            caps.append(
                FrequencyCap(
                    channel=item["channel"],
                    purpose=item["purpose"],
                    limit=_whole(item["limit"], f"{path}.limit"),
                    days=_whole(item["days"], f"{path}.days"),
                )
            )
        except PlanConfigError as exc:
            if exc.field.startswith(path):
                raise
            raise _rebased(exc, path) from None
        except InvalidInputError as exc:
            raise _rebased(exc, path) from None
    quiet = list(base.quiet_hours)
    for i, raw in enumerate(_list(doc, "quiet_hours")):
        path = f"quiet_hours[{i}]"
        item = _object(raw, path, _QUIET_KEYS, ("channel", "purpose", "start", "end"))
        try:
            quiet.append(
                QuietHours(
                    channel=item["channel"],
                    purpose=item["purpose"],
                    start=_clock(item["start"], f"{path}.start"),
                    end=_clock(item["end"], f"{path}.end"),
                    action=item.get("action", QuietAction.DEFER.value),
                )
            )
        except PlanConfigError as exc:
            if exc.field.startswith(path):
                raise
            raise _rebased(exc, path) from None
        except InvalidInputError as exc:
            raise _rebased(exc, path) from None
    return PlanConfig(
        caps=caps,
        quiet_hours=quiet,
        zone_attribute=doc.get("zone_attribute", base.zone_attribute),
        default_zone=doc.get("default_zone", base.default_zone),
    )


# ---------------------------------------------------------------------- the plan


@attrs.frozen(kw_only=True)
class PlannedSend:
    """A contact to message now.

    Attributes:
        contact_id: The contact.
        address: The address to use (kept out of ``repr()``); ``None`` when the
            plan was made without addresses, or the channel has no address kind.
    """

    contact_id: str
    address: str | None = attrs.field(default=None, repr=False)


@attrs.frozen(kw_only=True)
class DeferredSend:
    """A contact to message later.

    Attributes:
        contact_id: The contact.
        until: The first instant (UTC) the send is allowed.
        reason: Why it waits.
    """

    contact_id: str
    until: datetime
    reason: DeferReason = DeferReason.QUIET_HOURS


@attrs.frozen(kw_only=True)
class Exclusion:
    """A candidate not to message, and why.

    Attributes:
        contact_id: The contact.
        reason: The first check that refused it.
    """

    contact_id: str
    reason: ExclusionReason


def _slot_setter(cls: type, name: str) -> Callable[[Any, Any], None]:
    """The setter of slot *name* of the frozen attrs class *cls* (bypasses the frozen check)."""
    setter: Callable[[Any, Any], None] = cls.__dict__[name].__set__
    return setter


@attrs.frozen(kw_only=True, repr=False)
class SendPlan:
    """What :func:`plan_send` decided for each candidate, in candidate order per list.

    ``repr()`` shows the sizes only. ``to_dict()`` and :meth:`rows` leave the
    addresses out unless asked.

    Attributes:
        channel: The channel planned.
        purpose: The purpose planned.
        at: The planning instant (UTC).
        send: The contacts to message now.
        deferred: The contacts to message later.
        excluded: The contacts not to message.

    .. versionadded:: 0.4.0
    """

    channel: Channel
    purpose: Purpose
    at: datetime
    send: tuple[PlannedSend, ...] = ()
    deferred: tuple[DeferredSend, ...] = ()
    excluded: tuple[Exclusion, ...] = ()

    def __repr__(self) -> str:
        return (
            f"SendPlan(channel={self.channel.value!r}, purpose={self.purpose.value!r}, "
            f"at={self.at.isoformat()!r}, send={len(self.send)}, "
            f"deferred={len(self.deferred)}, excluded={len(self.excluded)})"
        )

    @property
    def send_ids(self) -> list[str]:
        """The ids of the contacts to message now."""
        return [s.contact_id for s in self.send]

    def counts(self) -> dict[str, int]:
        """How many candidates went each way: ``send``, ``deferred`` and each exclusion reason."""
        out = {"send": len(self.send), "deferred": len(self.deferred)}
        for reason in ExclusionReason:
            out[reason.value] = 0
        for e in self.excluded:
            out[e.reason.value] += 1
        return out

    def without_addresses(self) -> SendPlan:
        """This plan with every address removed (ids only)."""
        if all(s.address is None for s in self.send):
            return self
        return attrs.evolve(
            self, send=tuple(PlannedSend(contact_id=s.contact_id) for s in self.send)
        )

    def rows(self, *, addresses: bool = False) -> list[dict[str, str | None]]:
        """One row per candidate: ``contact_id``, ``decision``, ``reason``, ``until``.

        Args:
            addresses: Add ``address``, each send's address (personal data).
        """
        out: list[dict[str, str | None]] = []
        for s in self.send:
            row: dict[str, str | None] = {
                "contact_id": s.contact_id, "decision": "send", "reason": None, "until": None,
            }  # fmt: skip
            if addresses:
                row["address"] = s.address
            out.append(row)
        for d in self.deferred:
            out.append({
                "contact_id": d.contact_id, "decision": "defer", "reason": d.reason.value,
                "until": d.until.isoformat(),
            })  # fmt: skip
        for e in self.excluded:
            out.append({
                "contact_id": e.contact_id, "decision": "exclude", "reason": e.reason.value,
                "until": None,
            })  # fmt: skip
        if addresses:
            for row in out:
                row.setdefault("address", None)
        return out

    def to_dict(self, *, addresses: bool = False) -> dict[str, Any]:
        """The plan as a JSON-ready dict (ids only unless *addresses*)."""
        send: list[dict[str, str | None]] = [
            {"contact_id": s.contact_id, "address": s.address}
            if addresses
            else {"contact_id": s.contact_id}
            for s in self.send
        ]
        return {
            "channel": self.channel.value,
            "purpose": self.purpose.value,
            "at": self.at.isoformat(),
            "counts": self.counts(),
            "send": send,
            "deferred": [
                {
                    "contact_id": d.contact_id,
                    "until": d.until.isoformat(),
                    "reason": d.reason.value,
                }
                for d in self.deferred
            ],
            "excluded": [
                {"contact_id": e.contact_id, "reason": e.reason.value} for e in self.excluded
            ],
        }


@runtime_checkable
class CandidateSource(Protocol):
    """Something that names candidate contacts at an instant (a segment, a saved list).

    :func:`plan_send` accepts one instead of ids: it calls :meth:`candidate_ids`
    inside its read transaction.

    .. versionadded:: 0.4.0
    """

    def candidate_ids(self, repo: Repository, at: datetime) -> Iterable[str]:
        """Return the contact ids of the candidates at *at*."""
        ...


@attrs.frozen
class SegmentCandidates:
    """A segment's members as the candidates of a plan (a :class:`CandidateSource`).

    The tree is evaluated by the store (:attr:`Repository.segment_store`) at the
    plan's instant, inside the plan's read transaction, so the segment and the
    consent, caps and quiet hours applied to it are read at the same moment.
    ``CommHistory.plan_send`` wraps a tree (or its JSON form) in one after
    checking it against the declared attributes.

    .. versionadded:: 0.4.0
    """

    tree: Criteria

    def candidate_ids(self, repo: Repository, at: datetime) -> Iterable[str]:
        """The segment's members at *at* (sorted contact ids)."""
        return repo.segment_store.members(self.tree, at=at)


def _candidates(
    contacts: Iterable[str] | CandidateSource, repo: Repository, at: datetime
) -> list[str]:
    if isinstance(contacts, SegmentCandidates):  # the store's sorted, distinct ids
        return list(contacts.candidate_ids(repo, at))
    if isinstance(contacts, CandidateSource):
        contacts = contacts.candidate_ids(repo, at)
    if isinstance(contacts, str | bytes):
        raise InvalidInputError(field="contacts", reason="must be contact ids, not one string")
    given: list[Any] = list(dict.fromkeys(contacts))
    # Checked in C for the usual list of plain strings; the loop names the offender.
    if set(map(type, given)) - {str} or "" in given:
        for i, cid in enumerate(given):
            if not isinstance(cid, str) or not cid:
                raise InvalidInputError(
                    field=f"contacts[{i}]", reason="must be a non-empty string"
                )
    return given


def _check_zone_attribute(repo: Repository, name: str) -> None:
    for d in repo.attribute_store.definitions():
        if d.name == name:
            if d.personal:
                raise PlanConfigError(
                    field="zone_attribute", reason="names a personal attribute; declare it plain"
                )
            if d.type not in ZONE_TYPES:
                raise PlanConfigError(field="zone_attribute", reason="must be a str or enum")
            return
    raise PlanConfigError(field="zone_attribute", reason="not a declared attribute")


def plan_send(
    repo: Repository,
    contacts: Iterable[str] | CandidateSource,
    *,
    channel: Channel | str,
    purpose: Purpose | str,
    at: datetime | None = None,
    caps: Iterable[FrequencyCap] | None = None,
    quiet_hours: Iterable[QuietHours] | None = None,
    config: PlanConfig | None = None,
    addresses: bool = True,
) -> SendPlan:
    """Split candidates into send now, deferred and excluded (see the module docs).

    Every read is set-wise (a few queries whatever the number of candidates)
    and runs in one read transaction.

    Args:
        repo: The repository (its consent, planning and attribute ports are read).
        contacts: Candidate contact ids (duplicates planned once), or a
            :class:`CandidateSource` such as a segment.
        channel: The channel of the send.
        purpose: Its purpose.
        at: The planning instant (default: now).
        caps: Frequency caps (replace *config*'s).
        quiet_hours: Quiet hours (replace *config*'s).
        config: Caps, quiet hours and zones (default: none, zone UTC).
        addresses: Resolve (decrypt) the address of each send; ``False`` plans
            with ids only and decrypts nothing.

    Returns:
        The plan.

    Raises:
        PayloadError: Unknown channel or purpose.
        NormalizationError: *at* is naive.
        InvalidInputError: *contacts* is not a collection of ids.
        PlanConfigError: The zone attribute is not declared, personal, or not text.

    .. versionadded:: 0.4.0
    """
    ch = coerce(Channel, channel, "channel")
    pu = coerce(Purpose, purpose, "purpose")
    t = when(at)
    cfg = PlanConfig() if config is None else config
    if caps is not None:
        cfg = attrs.evolve(cfg, caps=tuple(caps))
    if quiet_hours is not None:
        cfg = attrs.evolve(cfg, quiet_hours=tuple(quiet_hours))
    my_caps = cfg.caps_for(ch, pu)
    my_quiet = cfg.quiet_for(ch, pu)
    # The decision per contact capped or held by quiet hours (a reason, or the
    # instant to defer to); the screen's refusals stay in their own map. The
    # typed records are built once, in candidate order, at the end.
    decided: dict[str, ExclusionReason | datetime] = {}
    store = repo.planning_store
    addressed = ADDRESS_KINDS.get(ch) is not None
    with repo.transaction(read=True):
        # The screen (erased, suppressed, no consent, then no address) is one
        # set-wise read of the store: for a segment, compiled into the segment's
        # own statement.
        if isinstance(contacts, SegmentCandidates):
            ids, refused = store.screen_segment(contacts.tree, ch, pu, t)
        else:
            ids = _candidates(contacts, repo, t)
            refused = store.screen(ids, ch, pu, t)
        remaining = [cid for cid in ids if cid not in refused] if refused else ids
        resolve = _ZoneResolver(cfg.default_zone)
        keys: dict[str, str] = {}
        if (my_caps or my_quiet) and cfg.zone_attribute is not None and remaining:
            _check_zone_attribute(repo, cfg.zone_attribute)
            # Contacts in the default zone need no entry: skip them in the read.
            zones = store.zones(remaining, cfg.zone_attribute, t, skip=cfg.default_zone)
            # One lookup per distinct zone name, not per contact.
            by_name = {name: resolve.key(name) for name in set(zones.values())}
            keys = {cid: by_name[name] for cid, name in zones.items()}
        if my_caps and remaining:
            remaining = _apply_caps(
                store, remaining, channel=ch, purpose=pu, at=t, caps=my_caps, keys=keys,
                resolve=resolve, decided=decided,
            )  # fmt: skip
        if my_quiet and remaining:
            remaining = _apply_quiet(
                remaining, rules=my_quiet, at=t, keys=keys, resolve=resolve, decided=decided
            )
        # Only the contacts sent to now have their address decrypted.
        found = store.addresses(remaining, ch, decrypt=True) if addresses and addressed else {}
    send, deferred, excluded = _records(ids, refused, decided, found)
    return SendPlan(channel=ch, purpose=pu, at=t, send=send, deferred=deferred, excluded=excluded)


_new = object.__new__
_SEND_ID = _slot_setter(PlannedSend, "contact_id")
_SEND_ADDRESS = _slot_setter(PlannedSend, "address")
_DEFER_ID = _slot_setter(DeferredSend, "contact_id")
_DEFER_UNTIL = _slot_setter(DeferredSend, "until")
_DEFER_REASON = _slot_setter(DeferredSend, "reason")
_EXCLUDE_ID = _slot_setter(Exclusion, "contact_id")
_EXCLUDE_REASON = _slot_setter(Exclusion, "reason")


def _records(
    ids: list[str],
    refused: Mapping[str, str],
    decided: Mapping[str, ExclusionReason | datetime],
    found: Mapping[str, str | None],
) -> tuple[tuple[PlannedSend, ...], tuple[DeferredSend, ...], tuple[Exclusion, ...]]:
    """The plan's records, in candidate order per list.

    A plan holds one record per candidate (hundreds of thousands for a large
    segment), so each is filled through its slots, as the attrs ``__init__``
    would fill it, without the call: the values are already checked.
    """
    send: list[PlannedSend] = []
    deferred: list[DeferredSend] = []
    excluded: list[Exclusion] = []
    new, quiet = _new, DeferReason.QUIET_HOURS
    set_sid, set_address = _SEND_ID, _SEND_ADDRESS
    set_did, set_until, set_why = _DEFER_ID, _DEFER_UNTIL, _DEFER_REASON
    set_eid, set_reason = _EXCLUDE_ID, _EXCLUDE_REASON
    refusal, decision, address = refused.get, decided.get, found.get
    reasons = _REFUSALS
    for cid in ids:
        why = refusal(cid)
        if why is None:
            d = decision(cid)
            if d is None:
                r: Any = new(PlannedSend)
                set_sid(r, cid)
                set_address(r, address(cid))
                send.append(r)
                continue
            if isinstance(d, datetime):
                r = new(DeferredSend)
                set_did(r, cid)
                set_until(r, d)
                set_why(r, quiet)
                deferred.append(r)
                continue
            reason = d
        else:
            reason = reasons[why]
        r = new(Exclusion)
        set_eid(r, cid)
        set_reason(r, reason)
        excluded.append(r)
    return tuple(send), tuple(deferred), tuple(excluded)


class _ZoneResolver:
    """Zone names to zones, cached; unknown names become the default zone."""

    def __init__(self, default: str) -> None:
        self.default = default
        self._zones: dict[str, ZoneInfo] = {}
        self._keys: dict[str | None, str] = {}

    def key(self, name: str | None) -> str:
        """The zone name to use for a contact whose attribute says *name*."""
        found = self._keys.get(name)
        if found is None:
            found = name if name is not None and zone_of(name) is not None else self.default
            self._keys[name] = found
        return found

    def zone(self, key: str) -> ZoneInfo:
        """The zone of a name returned by :meth:`key`."""
        z = self._zones.get(key)
        if z is None:
            z = self._zones[key] = ZoneInfo(key)
        return z


def _apply_caps(
    store: PlanningStore,
    ids: list[str],
    *,
    channel: Channel,
    purpose: Purpose,
    at: datetime,
    caps: Sequence[FrequencyCap],
    keys: Mapping[str, str],
    resolve: _ZoneResolver,
    decided: dict[str, ExclusionReason | datetime],
) -> list[str]:
    """Mark the contacts at a cap in *decided*; return the others (in order).

    *keys* maps a contact to its zone key (:meth:`_ZoneResolver.key`); a
    contact not in it is in the default zone.
    """
    default = resolve.key(None)
    zone_keys = {*keys.values(), default}
    instants: list[datetime] = []
    at_least: list[int] = []
    slot: dict[tuple[int, str], int] = {}
    seen: dict[datetime, int] = {}
    for i, cap in enumerate(caps):
        for key in sorted(zone_keys):
            start = cap.window_start(at, resolve.zone(key))
            if start not in seen:
                seen[start] = len(instants)
                instants.append(start)
                at_least.append(cap.limit)
            index = slot[(i, key)] = seen[start]
            at_least[index] = min(at_least[index], cap.limit)
    # Only the contacts past the smallest limit counted from an instant can be
    # capped: the store leaves the others out (a HAVING in SQL).
    counts = store.send_counts(ids, channel, purpose, instants, at, at_least=at_least)
    checks = {
        key: tuple((slot[(i, key)], cap.limit) for i, cap in enumerate(caps)) for key in zone_keys
    }
    capped = ExclusionReason.FREQUENCY_CAP
    key_of = keys.get
    default_checks = checks[default]
    out = set()
    for cid, mine in counts.items():
        mine_key = key_of(cid)
        for index, limit in default_checks if mine_key is None else checks[mine_key]:
            if mine[index] >= limit:
                out.add(cid)
                break
    if not out:
        return ids
    for cid in out:
        if cid not in decided:
            decided[cid] = capped
    return [cid for cid in ids if cid not in out]


def _apply_quiet(
    ids: list[str],
    *,
    rules: Sequence[QuietHours],
    at: datetime,
    keys: Mapping[str, str],
    resolve: _ZoneResolver,
    decided: dict[str, ExclusionReason | datetime],
) -> list[str]:
    """Mark the contacts inside quiet hours (drop or defer) in *decided*; return the others."""
    default = resolve.key(None)
    verdicts: dict[str, ExclusionReason | datetime | None] = {}
    for key in {*keys.values(), default}:
        held = _quiet_verdict(rules, at, resolve.zone(key))
        if held is None:
            verdicts[key] = None
        elif held[0] is QuietAction.DROP:
            verdicts[key] = ExclusionReason.QUIET_HOURS
        else:
            verdicts[key] = held[1]
    if all(v is None for v in verdicts.values()):
        return ids
    key_of = keys.get
    kept = []
    for cid in ids:
        verdict = verdicts[key_of(cid, default)]
        if verdict is None:
            kept.append(cid)
        else:
            decided[cid] = verdict
    return kept


def _quiet_verdict(
    rules: Sequence[QuietHours], at: datetime, zone: ZoneInfo
) -> tuple[QuietAction, datetime] | None:
    """``None`` when no rule holds *at*; else drop, or defer to the first free instant."""
    t = at
    for _ in range(len(rules) + 2):
        local = t.astimezone(zone).time().replace(tzinfo=None)
        holding = [q for q in rules if q.quiet(local)]
        if not holding:
            return None if t == at else (QuietAction.DEFER, t)
        if any(q.action is QuietAction.DROP for q in holding):
            return (QuietAction.DROP, t)
        t = max(q.next_allowed(t, zone) for q in holding)
    return (QuietAction.DEFER, t)
