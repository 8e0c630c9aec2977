"""The suppression list: addresses that must not be messaged, fed from what happens.

Entries are address-level and keyed by the address's blind index (a keyed
hash), so an opt-out outlives the erasure of the person who made it without
keeping the address. ``repo.suppression`` is a :class:`SuppressionList`.

Recorded messages and events feed it automatically at ingest
(``signals()``): a hard bounce suppresses the address on its channel for
every purpose; a complaint suppresses marketing to the address and withdraws
marketing consent on every channel; an unsubscribe suppresses and withdraws the
message's purpose on its channel; :data:`SOFT_BOUNCE_LIMIT` consecutive soft
bounces (no delivery in between) suppress the address; an inbound SMS or
WhatsApp message whose whole text is an opt-out keyword (``STOP``...) suppresses
the number on its channel and withdraws marketing there, an opt-in keyword
(``START``...) lifts that and grants it again; a LINE ``unsubscribed`` event or
a LINE unfollow (a withdrawal with method ``line_block``) suppresses the LINE id
for every purpose, and a ``subscribed`` event or a follow lifts it.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Final

import attrs

from commhistory.consent.keys import kind_of, normalize_address, suppression_id
from commhistory.consent.ledger import coerce, when
from commhistory.errors import PayloadError
from commhistory.model import (
    BounceClass,
    Channel,
    ConsentAction,
    ConsentEvent,
    ConsentMethod,
    Direction,
    Event,
    EventType,
    Message,
    Purpose,
    SuppressionEntry,
    SuppressionReason,
    consent_id_of,
)
from commhistory.store.consent import AddressKey, ConsentStore
from commhistory.store.protocol import DeliveryOutcome, Repository

__all__ = [
    "OPT_IN_KEYWORDS",
    "OPT_OUT_KEYWORDS",
    "SOFT_BOUNCE_LIMIT",
    "FeedActions",
    "SuppressionList",
    "sms_keyword",
]

SOFT_BOUNCE_LIMIT: Final = 5
"""Consecutive soft bounces that suppress an address (configurable per repository)."""

OPT_OUT_KEYWORDS: Final = frozenset(
    {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"}
)
"""Inbound SMS texts that opt the sender out (CTIA / TCPA practice)."""

OPT_IN_KEYWORDS: Final = frozenset({"START", "UNSTOP", "YES"})
"""Inbound SMS texts that opt the sender back in."""

FEED_ACTOR: Final = "commhistory:feed"
"""The ``actor`` of consent events derived from provider events."""


def sms_keyword(text: str | None) -> str | None:
    """Return the SMS keyword a text consists of (``"STOP"``), or ``None``.

    The whole message must be the keyword, case-insensitive, after Unicode NFKC
    (full-width letters count), surrounding spaces and trailing punctuation.
    """
    if not text:
        return None
    word = unicodedata.normalize("NFKC", text).strip().rstrip(".!\u3002\uff01").strip().upper()
    word = word.replace(" ", "").replace("-", "")
    if word in OPT_OUT_KEYWORDS or word in OPT_IN_KEYWORDS:
        return word
    return None


@attrs.define
class FeedActions:
    """What a batch of recorded messages and events asks of consent and suppression."""

    entries: list[tuple[str, str, SuppressionEntry]] = attrs.field(factory=list)
    """``(kind, normalized address, entry)`` to add (the key is filled in per store)."""
    lifts: list[tuple[str, str, Channel, frozenset[SuppressionReason], datetime, str]] = (
        attrs.field(factory=list)
    )
    consents: list[ConsentEvent] = attrs.field(factory=list)
    soft_bounces: list[tuple[Message, Event]] = attrs.field(factory=list)
    contact_entries: list[tuple[str, SuppressionEntry]] = attrs.field(factory=list)
    """``(contact id, entry)`` to add on each address the store knows for the contact."""
    contact_lifts: list[tuple[str, Channel, frozenset[SuppressionReason], datetime, str]] = (
        attrs.field(factory=list)
    )
    """``(contact id, channel, reasons, at, by)`` to lift on each of the contact's addresses."""


def _entry(
    channel: Channel,
    purpose: Purpose | None,
    reason: SuppressionReason,
    since: datetime,
    cause: str,
) -> SuppressionEntry:
    return SuppressionEntry(
        suppression_id="", kind=kind_of(channel) or "", channel=channel, purpose=purpose,
        reason=reason, since=since, cause_id=cause,
    )  # fmt: skip


def _consent(  # noqa: PLR0917
    m: Message,
    channel: Channel,
    purpose: Purpose,
    action: ConsentAction,
    method: ConsentMethod,
    at: datetime,
    cause: str,
) -> ConsentEvent:
    return ConsentEvent(
        consent_id=f"feed:{cause}:{channel.value}:{purpose.value}:{action.value}",
        contact_id=m.contact_id, channel=channel, purpose=purpose, action=action,
        occurred_at=at, method=method, actor=FEED_ACTOR,
    )  # fmt: skip


KEYWORD_CHANNELS: Final = frozenset({Channel.SMS, Channel.WHATSAPP})
"""The channels whose inbound opt-out and opt-in keywords are read (each on its own)."""


def signals(
    pairs: Iterable[tuple[Event, Message]],
    inbound: Iterable[Message],
    consents: Sequence[ConsentEvent] = (),
) -> FeedActions:
    """Derive suppression and consent actions from events, inbound messages and consents.

    Args:
        pairs: Stored events of interest with the message each belongs to.
        inbound: Inbound messages (SMS and WhatsApp keywords are read from their body).
        consents: The batch's consent events: a LINE unfollow (withdrawal, method
            ``line_block``) suppresses the contact's LINE ids, a follow lifts that.
            A keyword's ledger event is not derived again when the batch already
            holds the same change (an adapter may record it itself).

    Returns:
        The actions; applying them twice changes nothing (ids derive from causes).

    .. versionchanged:: 0.4.0
       WhatsApp keywords, on WhatsApp; LINE follow and unfollow consent events.
    """
    out = FeedActions()
    for e, m in pairs:
        ch = m.channel
        if kind_of(ch) is None:
            continue
        cause = e.event_id
        t = e.occurred_at
        if e.type is EventType.BOUNCED:
            if e.bounce is BounceClass.HARD:
                out.entries.append(
                    (
                        ch.value,
                        m.address,
                        _entry(ch, None, SuppressionReason.HARD_BOUNCE, t, cause),
                    )
                )
            elif e.bounce is BounceClass.SOFT:
                out.soft_bounces.append((m, e))
        elif e.type is EventType.COMPLAINED:
            out.entries.append(
                (
                    ch.value,
                    m.address,
                    _entry(ch, Purpose.MARKETING, SuppressionReason.COMPLAINT, t, cause),
                )
            )
            for every in Channel:
                out.consents.append(
                    _consent(m, every, Purpose.MARKETING, ConsentAction.WITHDRAW,
                             ConsentMethod.COMPLAINT, t, cause)
                )  # fmt: skip
        elif e.type is EventType.UNSUBSCRIBED:
            if ch is Channel.LINE:
                out.entries.append(
                    (
                        ch.value,
                        m.address,
                        _entry(ch, None, SuppressionReason.LINE_UNFOLLOW, t, cause),
                    )
                )
                out.consents.append(
                    _consent(m, ch, Purpose.MARKETING, ConsentAction.WITHDRAW,
                             ConsentMethod.LINE_BLOCK, t, cause)
                )  # fmt: skip
            else:
                out.entries.append(
                    (
                        ch.value,
                        m.address,
                        _entry(ch, m.purpose, SuppressionReason.UNSUBSCRIBE, t, cause),
                    )
                )
                out.consents.append(
                    _consent(m, ch, m.purpose, ConsentAction.WITHDRAW,
                             ConsentMethod.UNSUBSCRIBE_LINK, t, cause)
                )  # fmt: skip
        elif e.type is EventType.SUBSCRIBED and ch is Channel.LINE:
            out.lifts.append(
                (ch.value, m.address, ch, frozenset({SuppressionReason.LINE_UNFOLLOW}), t, cause)
            )
    recorded = {(c.contact_id, c.channel, c.purpose, c.action, c.occurred_at) for c in consents}
    for m in inbound:
        ch = m.channel
        if m.direction is not Direction.INBOUND or ch not in KEYWORD_CHANNELS:
            continue
        word = sms_keyword(m.body)
        if word is None:
            continue
        cause = m.message_id
        if word in OPT_OUT_KEYWORDS:
            out.entries.append(
                (
                    ch.value,
                    m.address,
                    _entry(ch, None, SuppressionReason.SMS_KEYWORD, m.sent_at, cause),
                )
            )
            action = ConsentAction.WITHDRAW
        else:
            out.lifts.append(
                (ch.value, m.address, ch, frozenset({SuppressionReason.SMS_KEYWORD}),
                 m.sent_at, cause)
            )  # fmt: skip
            action = ConsentAction.GRANT
        if (m.contact_id, ch, Purpose.MARKETING, action, m.sent_at) not in recorded:
            out.consents.append(
                _consent(m, ch, Purpose.MARKETING, action, ConsentMethod.SMS_KEYWORD,
                         m.sent_at, cause)
            )  # fmt: skip
    for c in consents:
        if c.channel is not Channel.LINE or c.method is not ConsentMethod.LINE_BLOCK:
            continue
        cause = c.consent_id or consent_id_of(c)
        if c.action is ConsentAction.WITHDRAW:
            out.contact_entries.append(
                (
                    c.contact_id,
                    _entry(Channel.LINE, None, SuppressionReason.LINE_UNFOLLOW, c.occurred_at,
                           cause),
                )
            )  # fmt: skip
        else:
            out.contact_lifts.append(
                (c.contact_id, Channel.LINE, frozenset({SuppressionReason.LINE_UNFOLLOW}),
                 c.occurred_at, cause)
            )  # fmt: skip
    return out


def soft_bounce_streak(
    outcomes: Sequence[tuple[datetime, str, EventType, BounceClass | None]],
) -> list[str]:
    """Return the event ids of the trailing run of soft bounces (newest last).

    Args:
        outcomes: ``(occurred_at, event_id, type, bounce)`` of one address's
            deliveries and bounces, in any order.
    """
    run: list[str] = []
    for _t, eid, typ, bounce in sorted(outcomes):
        if typ is EventType.BOUNCED and bounce is BounceClass.SOFT:
            run.append(eid)
        else:
            run = []
    return run


def keyed(
    data: ConsentStore, kind: str, address: str, entry: SuppressionEntry
) -> list[SuppressionEntry]:
    """Give an entry its address key (the current index key) and derived id."""
    key = data.keys_of(kind, address)[0]
    return [_keyed(key, entry)]


def _keyed(key: AddressKey, entry: SuppressionEntry) -> SuppressionEntry:
    return attrs.evolve(
        entry,
        kind=key.kind,
        address_key=key.digest,
        index_key_id=key.key_id,
        suppression_id=suppression_id(
            key, entry.channel, entry.purpose, entry.reason, entry.cause_id
        ),
    )


class SuppressionList:
    """The suppression list of one repository (``repo.suppression``).

    Args:
        repo: The repository (its consent store is used).

    .. versionadded:: 0.1.0
    """

    def __init__(self, repo: Repository) -> None:
        self._repo = repo
        self._data = repo.consent_store

    def __repr__(self) -> str:
        return f"SuppressionList({type(self._repo).__name__})"

    def add(
        self,
        channel: Channel | str,
        address: str,
        *,
        reason: SuppressionReason | str = SuppressionReason.MANUAL,
        purpose: Purpose | str | None = None,
        since: datetime | None = None,
        cause_id: str | None = None,
    ) -> SuppressionEntry:
        """Suppress an address (idempotent for the same cause).

        Args:
            channel: The channel.
            address: The address (normalized here; only its blind index is stored).
            reason: Why (default ``manual``).
            purpose: The purpose suppressed; ``None`` for every purpose.
            since: From when (default now).
            cause_id: What caused it (a ticket id...); default derived from the time.

        Returns:
            The entry (as stored, or as already stored).

        Raises:
            PayloadError: Unknown channel, purpose or reason, or a channel without addresses.
            NormalizationError: The address is invalid for the channel.
        """
        ch = coerce(Channel, channel, "channel")
        kind, value = normalize_address(ch, address)
        t = when(since, "since")
        entry = SuppressionEntry(
            suppression_id="",
            kind=kind,
            channel=ch,
            purpose=None if purpose is None else coerce(Purpose, purpose, "purpose"),
            reason=coerce(SuppressionReason, reason, "reason"),
            since=t,
            cause_id=cause_id or f"manual:{t.isoformat()}",
        )
        stored = keyed(self._data, kind, value, entry)
        self._data.add_entries(stored)
        return stored[0]

    def lift(
        self,
        channel: Channel | str,
        address: str,
        *,
        reasons: Iterable[SuppressionReason | str] | None = None,
        at: datetime | None = None,
        by: str = "manual",
    ) -> int:
        """Lift an address's entries (all reasons unless given); return how many.

        Entries are never deleted: a lifted entry keeps answering for instants
        before it was lifted.

        Raises:
            PayloadError: Unknown channel or reason.
            NormalizationError: The address is invalid for the channel.
        """
        ch = coerce(Channel, channel, "channel")
        kind, value = normalize_address(ch, address)
        wanted = (
            frozenset(SuppressionReason)
            if reasons is None
            else frozenset(coerce(SuppressionReason, r, "reasons") for r in reasons)
        )
        return self._data.lift(self._data.keys_of(kind, value), ch, wanted, when(at), by)

    def check(
        self,
        channel: Channel | str,
        address: str,
        purpose: Purpose | str = Purpose.MARKETING,
        at: datetime | None = None,
    ) -> tuple[SuppressionEntry, ...]:
        """Return the entries in force for an address, purpose and instant (empty: not suppressed).

        Works for any address, including one whose contact was erased.

        Raises:
            PayloadError: Unknown channel or purpose.
            NormalizationError: The address is invalid for the channel.
        """
        ch = coerce(Channel, channel, "channel")
        pu = coerce(Purpose, purpose, "purpose")
        kind, value = normalize_address(ch, address)
        t = when(at)
        found = self._data.entries(self._data.keys_of(kind, value), ch)
        return tuple(
            sorted(
                (e for e in found if e.active_at(t) and e.covers(pu)),
                key=lambda e: (e.since, e.suppression_id),
            )
        )

    def entries(self, channel: Channel | str, address: str) -> list[SuppressionEntry]:
        """Return every entry ever made for an address on a channel, lifted ones too."""
        ch = coerce(Channel, channel, "channel")
        kind, value = normalize_address(ch, address)
        found = self._data.entries(self._data.keys_of(kind, value), ch)
        return sorted(found, key=lambda e: (e.since, e.suppression_id))

    def for_contact(self, contact_id: str) -> list[SuppressionEntry]:
        """Return every entry on the addresses the store knows for a contact."""
        keys: list[AddressKey] = []
        for kind in ("email", "phone", "line"):
            keys.extend(self._data.contact_keys([contact_id], kind).get(contact_id, []))
        return sorted(self._data.entries(keys, None), key=lambda e: (e.since, e.suppression_id))


def apply_feed(
    data: ConsentStore,
    actions: FeedActions,
    *,
    outcomes: Callable[[Message], Sequence[DeliveryOutcome]] | None = None,
    soft_bounce_limit: int = SOFT_BOUNCE_LIMIT,
) -> list[str]:
    """Apply feed actions to a store; return the ids of what changed.

    Args:
        data: The store.
        actions: From :func:`signals`.
        outcomes: ``outcomes(message) -> [(occurred_at, event_id, type, bounce)]``
            for the soft-bounce streak of a message's address.
        soft_bounce_limit: Consecutive soft bounces that suppress.

    Returns:
        The contact ids of the consent events appended, the suppression ids of
        the entries added (or already there) and the ids of the records that
        lifted suppressions: what an audit entry names, never an address.
    """
    entries: list[SuppressionEntry] = []
    for kind_channel, address, entry in actions.entries:
        kind = kind_of(Channel(kind_channel))
        if kind is None:
            continue
        entries.extend(keyed(data, kind, address, entry))
    if outcomes is not None:
        seen: set[tuple[str, str]] = set()
        for m, _e in actions.soft_bounces:
            kind = kind_of(m.channel)
            if kind is None or (m.channel.value, m.address) in seen:
                continue
            seen.add((m.channel.value, m.address))
            run = soft_bounce_streak(outcomes(m))
            if len(run) >= soft_bounce_limit:
                cause = run[soft_bounce_limit - 1]
                key = data.keys_of(kind, m.address)[0]
                existing = data.entries([key], m.channel)
                if any(
                    x.reason is SuppressionReason.SOFT_BOUNCE_LIMIT and x.lifted_at is None
                    for x in existing
                ):
                    continue
                since = next(t for t, eid, _, _ in sorted(outcomes(m)) if eid == cause)
                entries.append(
                    _keyed(
                        key,
                        _entry(m.channel, None, SuppressionReason.SOFT_BOUNCE_LIMIT, since, cause),
                    )
                )
    for contact_id, entry in actions.contact_entries:
        kind = kind_of(entry.channel)
        if kind is not None:
            for key in data.contact_keys([contact_id], kind).get(contact_id, []):
                entries.append(_keyed(key, entry))
    if actions.consents:
        data.append_consents(actions.consents)
    if entries:
        data.add_entries(entries)
    changed = [c.contact_id for c in actions.consents] + [e.suppression_id for e in entries]
    for kind_channel, address, ch, reasons, at, by in actions.lifts:
        kind = kind_of(Channel(kind_channel))
        if kind is not None and data.lift(data.keys_of(kind, address), ch, reasons, at, by):
            changed.append(by)
    for contact_id, ch, reasons, at, by in actions.contact_lifts:
        kind = kind_of(ch)
        keys = [] if kind is None else data.contact_keys([contact_id], kind).get(contact_id, [])
        if keys and data.lift(keys, ch, reasons, at, by):
            changed.append(by)
    return changed


def now() -> datetime:
    """The current UTC time (one place to read the clock)."""
    return datetime.now(UTC)


def _unused(_: PayloadError) -> None:  # pragma: no cover - keeps the import for docs
    return None
