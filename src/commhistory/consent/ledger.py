"""The consent ledger: append-only grants and withdrawals, and consent at any instant.

``repo.consent`` is a :class:`ConsentLedger` bound to the repository::

    repo.consent.grant("c1", "email", "marketing", method="double_opt_in",
                       source="https://example.com/signup", notice_version="v3",
                       notice_text=notice, ip=ip, user_agent=ua)
    repo.consent.status("c1", "email", "marketing", at=t).granted

Events are never updated in place: a change of mind is a new event. The state
at an instant is decided by the latest event that occurred at or before it;
when a grant and a withdrawal occur at the same instant, the withdrawal wins.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import TypeVar

import attrs

from commhistory.consent.records import ConsentState, ConsentStatus
from commhistory.errors import NormalizationError, PayloadError, StorageError
from commhistory.model import (
    Channel,
    ConsentAction,
    ConsentEvent,
    ConsentMethod,
    JSONValue,
    Purpose,
    consent_id_of,
)
from commhistory.store.consent import BULK_THRESHOLD, ConsentRow, ConsentStore
from commhistory.store.protocol import Repository

__all__ = ["ConsentLedger", "coerce", "latest", "notice_hash", "when"]

_E = TypeVar("_E", bound=enum.Enum)


def coerce(cls: type[_E], value: object, field: str) -> _E:
    """Return *value* as a member of enum *cls* (members and their values accepted).

    Raises:
        PayloadError: The value is not one of the enum's values (names the field).
    """
    if isinstance(value, cls):
        return value
    try:
        return cls(value)
    except ValueError:
        allowed = ", ".join(str(m.value) for m in cls)
        raise PayloadError(field=field, reason=f"expected one of: {allowed}") from None


def when(at: datetime | None, field: str = "at") -> datetime:
    """Return *at* in UTC (now when ``None``).

    Raises:
        NormalizationError: *at* is naive.
        PayloadError: *at* is not a datetime.
    """
    if at is None:
        return datetime.now(UTC)
    if not isinstance(at, datetime):
        raise PayloadError(field=field, reason=f"expected a datetime, got {type(at).__name__}")
    if at.utcoffset() is None:
        raise NormalizationError(field=field, reason="naive datetime; give a time zone offset")
    return at.astimezone(UTC)


def notice_hash(text: str) -> str:
    """Return the hash recorded for the wording of a consent notice (``sha256:<hex>``)."""
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def latest(rows: Iterable[ConsentRow]) -> dict[str, ConsentRow]:
    """Reduce ledger rows to the deciding row per contact.

    The latest ``occurred_at`` wins; at the same instant a withdrawal wins over a
    grant (then the greater consent id, for a stable answer).
    """
    out: dict[str, ConsentRow] = {}
    withdraw = ConsentAction.WITHDRAW
    for r in rows:
        best = out.get(r.contact_id)
        if best is None or (r.occurred_at, r.action is withdraw, r.consent_id) > (
            best.occurred_at,
            best.action is withdraw,
            best.consent_id,
        ):
            out[r.contact_id] = r
    return out


class ConsentLedger:
    """The consent ledger of one repository (``repo.consent``).

    Args:
        repo: The repository (its consent store and ``record_consent``).

    .. versionadded:: 0.1.0
    """

    def __init__(self, repo: Repository) -> None:
        self._repo = repo
        self._data: ConsentStore = repo.consent_store

    def __repr__(self) -> str:
        return f"ConsentLedger({type(self._repo).__name__})"

    def grant(
        self,
        contact_id: str,
        channel: Channel | str,
        purpose: Purpose | str,
        *,
        method: ConsentMethod | str,
        occurred_at: datetime | None = None,
        source: str | None = None,
        notice_version: str | None = None,
        notice_text: str | None = None,
        notice_hash: str | None = None,
        ip: str | None = None,
        user_agent: str | None = None,
        actor: str | None = None,
        consent_id: str | None = None,
        metadata: Mapping[str, JSONValue] | None = None,
    ) -> ConsentEvent:
        """Record that the contact gave consent (appends one event).

        Args:
            contact_id: The contact.
            channel: The channel covered (``"email"`` or :class:`Channel`).
            purpose: The purpose covered (``"marketing"`` or :class:`Purpose`).
            method: How it was given (``"double_opt_in"``...).
            occurred_at: When the contact gave it (default: now).
            source: Where: a form URL or id. Encrypted at rest.
            notice_version: The version of the consent notice shown.
            notice_text: The notice's wording; only its hash is recorded.
            notice_hash: The notice's hash, when computed elsewhere.
            ip: The contact's IP address. Encrypted at rest.
            user_agent: The contact's user agent. Encrypted at rest.
            actor: Who recorded it.
            consent_id: A unique id; derived from the content when absent.
            metadata: Host-defined JSON data. Encrypted at rest.

        Returns:
            The recorded event, with its ``consent_id``.

        Raises:
            PayloadError: A channel, purpose or method value is unknown, or a field is invalid.
            NormalizationError: *occurred_at* is naive.
            StorageError: The contact was erased, or the database failed.
        """
        return self._append(
            ConsentAction.GRANT, contact_id, channel, purpose, method=method,
            occurred_at=occurred_at, source=source, notice_version=notice_version,
            notice_text=notice_text, notice_hash=notice_hash, ip=ip, user_agent=user_agent,
            actor=actor, consent_id=consent_id, metadata=metadata,
        )  # fmt: skip

    def withdraw(
        self,
        contact_id: str,
        channel: Channel | str,
        purpose: Purpose | str,
        *,
        method: ConsentMethod | str,
        occurred_at: datetime | None = None,
        source: str | None = None,
        ip: str | None = None,
        user_agent: str | None = None,
        actor: str | None = None,
        consent_id: str | None = None,
        metadata: Mapping[str, JSONValue] | None = None,
    ) -> ConsentEvent:
        """Record that the contact withdrew consent (appends one event).

        Args:
            contact_id: The contact.
            channel: The channel.
            purpose: The purpose.
            method: How it was withdrawn (``"unsubscribe_link"``, ``"one_click"``...).
            occurred_at: When (default: now).
            source: Where. Encrypted at rest.
            ip: The contact's IP address. Encrypted at rest.
            user_agent: The contact's user agent. Encrypted at rest.
            actor: Who recorded it.
            consent_id: A unique id; derived from the content when absent.
            metadata: Host-defined JSON data. Encrypted at rest.

        Returns:
            The recorded event, with its ``consent_id``.

        Raises:
            PayloadError: A channel, purpose or method value is unknown, or a field is invalid.
            NormalizationError: *occurred_at* is naive.
            StorageError: The contact was erased, or the database failed.
        """
        return self._append(
            ConsentAction.WITHDRAW, contact_id, channel, purpose, method=method,
            occurred_at=occurred_at, source=source, notice_version=None, notice_text=None,
            notice_hash=None, ip=ip, user_agent=user_agent, actor=actor, consent_id=consent_id,
            metadata=metadata,
        )  # fmt: skip

    def _append(
        self,
        action: ConsentAction,
        contact_id: str,
        channel: Channel | str,
        purpose: Purpose | str,
        *,
        method: ConsentMethod | str,
        occurred_at: datetime | None,
        source: str | None,
        notice_version: str | None,
        notice_text: str | None,
        notice_hash: str | None,
        ip: str | None,
        user_agent: str | None,
        actor: str | None,
        consent_id: str | None,
        metadata: Mapping[str, JSONValue] | None,
    ) -> ConsentEvent:
        if notice_text is not None:
            if not isinstance(notice_text, str):
                raise PayloadError(field="notice_text", reason="expected a string")
            computed = _hash_notice(notice_text)
            if notice_hash is not None and notice_hash != computed:
                raise PayloadError(field="notice_hash", reason="does not match notice_text")
            notice_hash = computed
        event = ConsentEvent(
            contact_id=contact_id,
            channel=coerce(Channel, channel, "channel"),
            purpose=coerce(Purpose, purpose, "purpose"),
            action=action,
            occurred_at=when(occurred_at, "occurred_at"),
            method=coerce(ConsentMethod, method, "method"),
            consent_id=consent_id,
            recorded_at=datetime.now(UTC),
            source=source,
            notice_version=notice_version,
            notice_hash=notice_hash,
            ip=ip,
            user_agent=user_agent,
            actor=actor,
            metadata={} if metadata is None else metadata,
        )
        erased = self._data.known([contact_id]).get(contact_id)
        if erased is not None:
            raise StorageError(f"contact {contact_id!r} was erased; its data cannot be written")
        report = self._repo.record_consent([event])
        if report.rejected:
            reason = self._repo.dead_letters(source="record_consent")[-1].reason
            raise PayloadError(field="consent", reason=reason)
        return _with_id(event)

    def status(
        self,
        contact_id: str,
        channel: Channel | str,
        purpose: Purpose | str,
        at: datetime | None = None,
    ) -> ConsentStatus:
        """Return the consent for (channel, purpose) at an instant, with the deciding event.

        Args:
            contact_id: The contact.
            channel: The channel.
            purpose: The purpose.
            at: The instant (default: now); any past instant may be asked.

        Returns:
            The status; ``NONE`` when no event occurred by *at* (also for an
            unknown contact).

        Raises:
            PayloadError: An unknown channel or purpose value.
            NormalizationError: *at* is naive.
        """
        ch = coerce(Channel, channel, "channel")
        pu = coerce(Purpose, purpose, "purpose")
        t = when(at)
        row = latest(self._data.consent_rows([contact_id], ch, pu, t)).get(contact_id)
        if row is None:
            return ConsentStatus(
                contact_id=contact_id, channel=ch, purpose=pu, at=t, state=ConsentState.NONE
            )
        return ConsentStatus(
            contact_id=contact_id,
            channel=ch,
            purpose=pu,
            at=t,
            state=ConsentState.GRANTED
            if row.action is ConsentAction.GRANT
            else ConsentState.WITHDRAWN,
            decided_by=self._event(contact_id, row.consent_id),
        )

    def statuses(
        self,
        contact_ids: Iterable[str],
        channel: Channel | str,
        purpose: Purpose | str,
        at: datetime | None = None,
    ) -> dict[str, ConsentState]:
        """Return the consent state of many contacts at once (without the evidence).

        Args:
            contact_ids: The contacts.
            channel: The channel.
            purpose: The purpose.
            at: The instant (default: now).

        Returns:
            The state of each contact asked about.

        Raises:
            PayloadError: An unknown channel or purpose value.
        """
        ch = coerce(Channel, channel, "channel")
        pu = coerce(Purpose, purpose, "purpose")
        ids = list(dict.fromkeys(contact_ids))
        rows = self._data.consent_rows(
            None if len(ids) > BULK_THRESHOLD else ids, ch, pu, when(at)
        )
        decided = latest(rows)
        out: dict[str, ConsentState] = {}
        for cid in ids:
            row = decided.get(cid)
            if row is None:
                out[cid] = ConsentState.NONE
            elif row.action is ConsentAction.GRANT:
                out[cid] = ConsentState.GRANTED
            else:
                out[cid] = ConsentState.WITHDRAWN
        return out

    def history(
        self,
        contact_id: str,
        channel: Channel | str | None = None,
        purpose: Purpose | str | None = None,
    ) -> list[ConsentEvent]:
        """Return the contact's ledger events in time order, optionally for one channel/purpose.

        Raises:
            NotFoundError: The contact is unknown.
            PayloadError: An unknown channel or purpose value.
        """
        ch = None if channel is None else coerce(Channel, channel, "channel")
        pu = None if purpose is None else coerce(Purpose, purpose, "purpose")
        return [
            e
            for e in self._repo.consent_history(contact_id)
            if (ch is None or e.channel is ch) and (pu is None or e.purpose is pu)
        ]

    def _event(self, contact_id: str, consent_id: str) -> ConsentEvent | None:
        try:
            events = self._repo.consent_history(contact_id)
        except StorageError:  # erased: the evidence is no longer readable this way
            return None
        return next((e for e in events if e.consent_id == consent_id), None)


def _hash_notice(text: str) -> str:
    return notice_hash(text)


def _with_id(event: ConsentEvent) -> ConsentEvent:
    return attrs.evolve(event, consent_id=consent_id_of(event))
