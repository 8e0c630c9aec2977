"""``can_send``: consent, suppression and purpose combined into one decision with reasons.

The rules, in order:

1. An erased contact is never sent to.
2. A suppression entry in force on the contact's address (on the channel, for
   the purpose or for all purposes) refuses the send. An opt-out entry
   (unsubscribe, complaint, SMS keyword, LINE unfollow, erasure) yields to a
   grant the contact made *after* it for the same channel and purpose.
3. ``marketing`` needs consent granted for the channel at the instant.
   ``transactional`` and ``service`` need no consent, but an explicit
   withdrawal for that very purpose refuses, and suppression (a hard bounce)
   still applies.

Without ``address``, the entries on every address the store knows for the
contact on that channel count; pass ``address`` to decide for one address.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Literal

from commhistory.consent.keys import kind_of, normalize_address
from commhistory.consent.ledger import coerce, latest, when
from commhistory.consent.records import (
    CONSENT_REASONS,
    ConsentState,
    SendDecision,
    _iso,
)
from commhistory.model import Channel, ConsentAction, Purpose, SuppressionEntry
from commhistory.normalize.time import to_micros
from commhistory.store.consent import BULK_THRESHOLD, ConsentRow
from commhistory.store.protocol import Repository

__all__ = ["Refusal", "can_send", "decide_many", "filter_sendable", "screen"]


def can_send(
    repo: Repository,
    contact_id: str,
    channel: Channel | str,
    purpose: Purpose | str,
    at: datetime | None = None,
    *,
    address: str | None = None,
) -> SendDecision:
    """Decide whether a message may be sent to a contact.

    Args:
        repo: The repository (its consent store is read).
        contact_id: The contact.
        channel: The channel (``"email"`` or :class:`~commhistory.Channel`).
        purpose: The purpose (``"marketing"`` or :class:`~commhistory.Purpose`).
        at: The instant to decide for (default: now); past instants answer as then.
        address: Decide for this address only (normalized here).

    Returns:
        The decision; ``bool(decision)`` is ``decision.allowed``.

    Raises:
        PayloadError: Unknown channel or purpose value.
        NormalizationError: *at* is naive, or *address* is invalid for the channel.
    """
    ch = coerce(Channel, channel, "channel")
    pu = coerce(Purpose, purpose, "purpose")
    t = when(at)
    data = repo.consent_store
    known = data.known([contact_id])
    rows = data.consent_rows([contact_id], ch, pu, t)
    if address is not None:
        kind, value = normalize_address(ch, address)
        found = [e for e in data.entries(data.keys_of(kind, value), ch) if e.since <= t]
    else:
        found = data.contact_entries([contact_id], ch, t).get(contact_id, [])
    return _decide(
        contact_id, ch, pu, t,
        known=contact_id in known, erased_at=known.get(contact_id),
        row=latest(rows).get(contact_id), entries=found,
    )  # fmt: skip


def decide_many(
    repo: Repository,
    contact_ids: Iterable[str],
    channel: Channel | str,
    purpose: Purpose | str,
    at: datetime | None = None,
) -> dict[str, SendDecision]:
    """Decide for many contacts at once (a send list), in a few set-wise queries.

    Args:
        repo: The repository (its consent store is read).
        contact_ids: The contacts (duplicates are decided once).
        channel: The channel.
        purpose: The purpose.
        at: The instant (default: now).

    Returns:
        A decision per contact, in input order.

    Raises:
        PayloadError: Unknown channel or purpose value.
    """
    ch = coerce(Channel, channel, "channel")
    pu = coerce(Purpose, purpose, "purpose")
    t = when(at)
    ids = list(dict.fromkeys(contact_ids))
    data = repo.consent_store
    scan: Sequence[str] | None = None if len(ids) > BULK_THRESHOLD else ids
    if scan is None:
        erased: dict[str, datetime | None] = dict(data.erased())
        known = None
    else:
        erased = {cid: at_ for cid, at_ in data.known(ids).items() if at_ is not None}
        known = set(data.known(ids)) if scan else set()
    decided = latest(data.consent_rows(scan, ch, pu, t))
    entries = data.contact_entries(scan, ch, t) if kind_of(ch) is not None else {}
    return {
        cid: _decide(
            cid,
            ch,
            pu,
            t,
            known=True if known is None else cid in known,
            erased_at=erased.get(cid),
            row=decided.get(cid),
            entries=entries.get(cid, ()),
        )
        for cid in ids
    }


def filter_sendable(
    repo: Repository,
    contact_ids: Iterable[str],
    channel: Channel | str,
    purpose: Purpose | str,
    at: datetime | None = None,
) -> list[str]:
    """Return the contacts of a send list that may be sent to, in input order.

    Raises:
        PayloadError: Unknown channel or purpose value.
    """
    ids = list(dict.fromkeys(contact_ids))
    refused = screen(repo, ids, channel, purpose, at)
    return [cid for cid in ids if cid not in refused]


Refusal = Literal["erased", "suppressed", "no_consent"]
"""Why :func:`screen` refuses a contact: erased, a suppression in force, or consent.

``"no_consent"`` is a marketing send without a grant in force, or any send whose
purpose the contact withdrew.

.. versionadded:: 0.4.0
"""


def screen(
    repo: Repository,
    contact_ids: Iterable[str],
    channel: Channel | str,
    purpose: Purpose | str,
    at: datetime | None = None,
) -> dict[str, Refusal]:
    """Return the refused contacts of a send list, each with why, in a few set-wise queries.

    The rules of :func:`can_send` (without ``address``: the entries on every
    address of the contact on the channel count). When several apply, the first
    of erased, suppressed, no consent is given. :func:`filter_sendable` keeps
    the contacts this does not name; send planning
    (:mod:`commhistory.segments.planning`) reports the reasons.

    Args:
        repo: The repository (its consent store is read).
        contact_ids: The contacts.
        channel: The channel.
        purpose: The purpose.
        at: The instant (default: now).

    Returns:
        ``{contact_id: reason}`` for the refused contacts only.

    Raises:
        PayloadError: Unknown channel or purpose value.

    .. versionadded:: 0.4.0
    """
    ch = coerce(Channel, channel, "channel")
    pu = coerce(Purpose, purpose, "purpose")
    t = when(at)
    ids = list(dict.fromkeys(contact_ids))
    data = repo.consent_store
    scan: Sequence[str] | None = None if len(ids) > BULK_THRESHOLD else ids
    erased: dict[str, datetime | None] = dict(data.erased()) if scan is None else data.known(ids)
    decided = data.latest_actions(scan, ch, pu, t)
    entries = data.contact_entries(scan, ch, t) if kind_of(ch) is not None else {}
    marketing = pu is Purpose.MARKETING
    out: dict[str, Refusal] = {}
    for cid in ids:
        gone = erased.get(cid)
        if gone is not None and gone <= t:
            out[cid] = "erased"
            continue
        row = decided.get(cid)
        granted = row is not None and not row[1]
        for e in entries.get(cid, ()):
            if not (e.active_at(t) and e.covers(pu)):
                continue
            overridden = e.reason in CONSENT_REASONS and granted and row is not None
            if overridden and row is not None and row[0] > to_micros(e.since):
                continue
            out[cid] = "suppressed"
            break
        else:
            if (marketing and not granted) or (row is not None and row[1]):
                out[cid] = "no_consent"
    return out


def _decide(
    contact_id: str,
    channel: Channel,
    purpose: Purpose,
    at: datetime,
    *,
    known: bool,
    erased_at: datetime | None,
    row: ConsentRow | None,
    entries: Iterable[SuppressionEntry],
) -> SendDecision:
    reasons: list[str] = []
    refused = False
    state = ConsentState.NONE
    if row is not None:
        state = (
            ConsentState.GRANTED if row.action is ConsentAction.GRANT else ConsentState.WITHDRAWN
        )
    if erased_at is not None and erased_at <= at:
        refused = True
        reasons.append(f"contact was erased at {_iso(erased_at)}")
    blocking: list[SuppressionEntry] = []
    for e in sorted(entries, key=lambda e: (e.since, e.suppression_id)):
        if not (e.active_at(at) and e.covers(purpose)):
            continue
        if (
            e.reason in CONSENT_REASONS
            and state is ConsentState.GRANTED
            and row is not None
            and row.occurred_at > e.since
        ):
            reasons.append(
                f"{e.reason.value} suppression since {_iso(e.since)} overridden by a later "
                f"grant (consent {row.consent_id})"
            )
            continue
        blocking.append(e)
        refused = True
        reasons.append(e.describe())
    what = f"{purpose.value} consent on {channel.value}"
    if row is not None:
        verb = "granted" if state is ConsentState.GRANTED else "withdrawn"
        how = f"{row.method.value}, consent {row.consent_id}"
        said = f"{what} {verb} at {_iso(row.occurred_at)} ({how})"
    else:
        said = f"no {what} recorded" + ("" if known else " (unknown contact)")
    if purpose is Purpose.MARKETING:
        if state is not ConsentState.GRANTED:
            refused = True
        reasons.append(said)
    elif state is ConsentState.WITHDRAWN:
        refused = True
        reasons.append(said)
    else:
        reasons.append(f"{purpose.value} messages need no marketing consent")
    return SendDecision(
        contact_id=contact_id,
        channel=channel,
        purpose=purpose,
        at=at,
        allowed=not refused,
        reasons=tuple(reasons),
        consent=state,
        consent_id=None if row is None else row.consent_id,
        suppressions=tuple(blocking),
    )
