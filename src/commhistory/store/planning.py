"""Send planning storage: the bulk reads :mod:`commhistory.segments.planning` needs.

:class:`PlanningStore` answers, for a batch of contact ids at once (never one
query per contact):

* :meth:`~PlanningStore.send_counts`: how many outbound messages of a channel
  and purpose each contact was sent since each of several instants (one
  ``GROUP BY`` with a ``SUM(CASE ...)`` per instant), so frequency caps whose
  windows start at a different instant in each contact's zone take one scan;
* :meth:`~PlanningStore.addresses`: which contacts have an address for a
  channel, and (decrypted, only when asked) the address a send would use;
* :meth:`~PlanningStore.zones`: the plain text value of the attribute that
  names a contact's time zone, in force at an instant.

* :meth:`~PlanningStore.screen` and :meth:`~PlanningStore.screen_segment`:
  the send screen (erased, suppressed, no consent, missing address), the
  rules of :func:`commhistory.consent.screen` applied in the database (one
  statement; for a segment, compiled into the segment's statement). A
  Hypothesis test holds the two to the same answers on every engine.

:class:`SQLPlanningStore` (SQLAlchemy Core) and :class:`MemoryPlanningStore`
implement the port; a repository hands its own out as ``repo.planning_store``.
Above :data:`~commhistory.store.consent.BULK_THRESHOLD` ids a read either scans
the channel's rows and keeps the wanted ids in Python (the screen, the zones, the
send counts on PostgreSQL), or, where each row costs (a message looked up, an
address decrypted), joins to the ids bound as one list (``json_each`` on SQLite,
``unnest`` on PostgreSQL) so only the wanted contacts' rows are read; never
``IN`` lists of that size. Every method runs in the repository's current transaction when one is
open, else in one of its own.

.. versionadded:: 0.4.0
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol, cast

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from commhistory.criteria import Criteria
from commhistory.crypto.fields import contact_text_opener
from commhistory.model import (
    ADDRESS_KINDS,
    Channel,
    ConsentAction,
    Direction,
    Purpose,
    SuppressionEntry,
)
from commhistory.normalize.time import to_micros
from commhistory.store import schema
from commhistory.store.consent import BULK_THRESHOLD, memory_digest
from commhistory.store.layout import DATA_KEY_REF, address_row_id
from commhistory.store.segments import CONSENT_REASONS, MemorySegmentStore

if TYPE_CHECKING:
    from commhistory.store.memory import MemoryState
    from commhistory.store.sql import SQLRepository

__all__ = [
    "MAX_THRESHOLDS",
    "MemoryPlanningStore",
    "PlanningStore",
    "Refusal",
    "SQLPlanningStore",
]

MAX_THRESHOLDS: Final = 32
"""Instants counted per statement by :meth:`SQLPlanningStore.send_counts`; more take more."""

_CHUNK: Final = 900
"""Contact ids per ``IN`` list (under SQLite's 999 host parameters)."""


class PlanningStore(Protocol):
    """The storage port of send planning: recent sends, addresses and zones, in bulk.

    .. versionadded:: 0.4.0
    """

    def send_counts(
        self,
        contact_ids: Sequence[str],
        channel: Channel,
        purpose: Purpose,
        since: Sequence[datetime],
        until: datetime,
        *,
        at_least: Sequence[int] | None = None,
    ) -> dict[str, tuple[int, ...]]:
        """Count each contact's outbound messages of *channel* and *purpose*.

        Args:
            contact_ids: The contacts.
            channel: The channel of the messages counted.
            purpose: Their purpose (the ``purpose`` stored on each message).
            since: Instants; count ``i`` is of the messages with
                ``since[i] <= sent_at <= until``.
            until: The end of every window (the planning instant).
            at_least: One threshold per *since*: keep only the contacts with
                ``counts[i] >= at_least[i]`` for some ``i`` (those a cap may
                refuse; the SQL stores filter in the database). ``None``: every
                contact with a message in the widest window.

        Returns:
            ``{contact_id: counts}`` (one count per *since*), only for the
            contacts with at least one message in the widest window (and past
            a threshold, with *at_least*).
        """
        ...

    def addresses(
        self, contact_ids: Sequence[str], channel: Channel, *, decrypt: bool
    ) -> dict[str, str | None]:
        """Return the contacts with an address for *channel*.

        A contact with several addresses of the channel's kind uses the first in
        sort order of the normalized values (the same on every store).

        Args:
            contact_ids: The contacts.
            channel: The channel (its address kind, ``ADDRESS_KINDS``).
            decrypt: Return the address (decrypted); ``False`` maps each to ``None``
                and decrypts nothing.

        Returns:
            ``{contact_id: address or None}``; empty for a channel with no address kind.
        """
        ...

    def zones(
        self, contact_ids: Sequence[str], attribute: str, at: datetime, *, skip: str | None = None
    ) -> dict[str, str]:
        """Return the plain text value of *attribute* in force at *at*, per contact.

        Personal (encrypted) values are not read: a zone attribute must be
        declared plain. With *skip*, contacts whose value is *skip* are left
        out (the planner skips its default zone: those contacts are in it anyway).
        """
        ...

    def screen(
        self, contact_ids: Sequence[str], channel: Channel, purpose: Purpose, at: datetime
    ) -> dict[str, Refusal]:
        """Return the contacts a send screen refuses, each with the first reason.

        The rules of :func:`commhistory.consent.screen` (``erased``,
        ``suppressed``, ``no_consent``, in that order), then ``missing_address``
        (no address of the channel's kind; channels without an address kind
        skip it), set-wise: in SQL one statement over the candidates.

        .. versionadded:: 0.4.0
        """
        ...

    def screen_segment(
        self, tree: Criteria, channel: Channel, purpose: Purpose, at: datetime
    ) -> tuple[list[str], dict[str, Refusal]]:
        """Return a segment's members at *at* (sorted) and those :meth:`screen` refuses.

        In SQL one statement evaluates the tree and screens its members.

        .. versionadded:: 0.4.0
        """
        ...


Refusal = Literal["erased", "suppressed", "no_consent", "missing_address"]
"""Why :meth:`PlanningStore.screen` refuses a contact (the first check that does).

.. versionadded:: 0.4.0
"""


def _unknown_refusal(channel: Channel, purpose: Purpose) -> Refusal | None:
    """The screen of an id the store does not know: no grant, no address, nothing else."""
    if purpose is Purpose.MARKETING:
        return "no_consent"
    if ADDRESS_KINDS.get(channel) is not None:
        return "missing_address"
    return None


def _past(counts: Sequence[int], at_least: Sequence[int] | None) -> bool:
    """Whether a contact's counts are kept: any count, or one past its threshold."""
    if at_least is None:
        return any(counts)
    return any(n >= k for n, k in zip(counts, at_least, strict=True))


def _chunks(ids: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(ids), _CHUNK):
        yield ids[start : start + _CHUNK]


def _id_list(dialect: str, ids: Sequence[str]) -> Any:
    """The distinct *ids* as a table of one column, ``value``, bound as one parameter.

    PostgreSQL: ``unnest`` of a text array; SQLite: ``json_each`` of a JSON
    array. Either is probed once per id, so a read for thousands of ids joins
    to them instead of sending ``IN`` lists or scanning every contact's rows.
    """
    distinct = list(dict.fromkeys(ids))
    if dialect == "postgresql":
        array = sa.bindparam("wanted_ids", distinct, type_=postgresql.ARRAY(sa.Text()))
        return sa.func.unnest(array).table_valued("value").render_derived(name="wanted")
    text = sa.bindparam("wanted_ids", json.dumps(distinct), type_=sa.Text())
    return sa.func.json_each(text).table_valued("value").alias("wanted")


# ---------------------------------------------------------------------- SQL


def _fetch_all(conn: sa.Connection, statement: sa.Select[Any]) -> list[Sequence[Any]]:
    """Run a Core statement on the driver's cursor and fetch every row at once.

    The bulk path: plain tuples, no result rows built (every selected column is
    a plain id, text or integer, and every bound value is a plain value).
    """
    compiled = statement.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    params: Any = compiled.params
    if compiled.positional:
        params = tuple(compiled.params[name] for name in compiled.positiontup or ())
    cursor: Any = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(str(compiled), params)
        rows: list[Sequence[Any]] = cursor.fetchall()
    finally:
        cursor.close()
    return rows


class SQLPlanningStore(PlanningStore):
    """:class:`PlanningStore` over :class:`~commhistory.store.sql.SQLRepository`, in Core."""

    def __init__(self, repo: SQLRepository) -> None:
        self.repo = repo

    def _rows(
        self,
        conn: sa.Connection,
        base: sa.Select[Any],
        column: sa.ColumnElement[str],
        ids: Sequence[str],
    ) -> list[Sequence[Any]]:
        """Run *base* for the wanted ids: ``IN`` chunks, or one scan filtered here."""
        if len(ids) > BULK_THRESHOLD:
            wanted = set(ids)
            return [row for row in _fetch_all(conn, base) if row[0] in wanted]
        out: list[Sequence[Any]] = []
        for chunk in _chunks(ids):
            out.extend(conn.execute(base.where(column.in_(list(chunk)))).all())
        return out

    def _listed(
        self,
        conn: sa.Connection,
        base: sa.Select[Any],
        column: sa.ColumnElement[str],
        ids: Sequence[str],
    ) -> list[Sequence[Any]]:
        """Run *base* for the wanted ids: ``IN`` chunks, or joined to the ids bound as one list.

        For a read whose rows are costly per contact (each sent message, each
        address to decrypt): only the wanted contacts' rows are visited.
        """
        if len(ids) <= BULK_THRESHOLD:
            return self._rows(conn, base, column, ids)
        wanted = _id_list(self.repo.dialect, ids)
        return _fetch_all(conn, base.join(wanted, column == wanted.c.value))

    def send_counts(
        self,
        contact_ids: Sequence[str],
        channel: Channel,
        purpose: Purpose,
        since: Sequence[datetime],
        until: datetime,
        *,
        at_least: Sequence[int] | None = None,
    ) -> dict[str, tuple[int, ...]]:
        """See :meth:`PlanningStore.send_counts`.

        Many contacts: on SQLite they are joined to their id list (one
        parameter), the ``(contact_id, sent_at)`` index searched per contact for
        the window, so only the wanted contacts' messages are read; PostgreSQL
        would hash the whole window's messages for that join, and scans them
        once instead (the wanted ids kept here).
        """
        if not since or not contact_ids:
            return {}
        m = schema.messages
        out: dict[str, list[int]] = {}
        n = len(since)
        read = self._rows if self.repo.dialect == "postgresql" else self._listed
        if n <= MAX_THRESHOLDS:  # one statement, one row per contact: no merging
            with self.repo.transaction(read=True) as conn:
                rows = read(
                    conn,
                    self._counting(channel, purpose, since, until, at_least),
                    m.c.contact_id,
                    contact_ids,
                )
            return {row[0]: tuple(map(int, row[1:])) for row in rows}
        with self.repo.transaction(read=True) as conn:
            for first in range(0, n, MAX_THRESHOLDS):
                part = since[first : first + MAX_THRESHOLDS]
                base = self._counting(channel, purpose, part, until)
                for row in read(conn, base, m.c.contact_id, contact_ids):
                    counts = out.setdefault(row[0], [0] * n)
                    for i, value in enumerate(row[1:]):
                        counts[first + i] = int(value or 0)
        return {cid: tuple(c) for cid, c in out.items() if _past(c, at_least)}

    @staticmethod
    def _counting(
        channel: Channel,
        purpose: Purpose,
        since: Sequence[datetime],
        until: datetime,
        at_least: Sequence[int] | None = None,
    ) -> sa.Select[Any]:
        """``contact_id`` and one ``SUM(CASE ...)`` per instant, grouped by contact.

        With *at_least*, a ``HAVING`` keeps the groups past some threshold.
        """
        m = schema.messages
        part = [to_micros(s) for s in since]
        sums = [
            sa.func.sum(sa.case((m.c.sent_at >= s, 1), else_=0)).label(f"n{i}")
            for i, s in enumerate(part)
        ]
        statement = (
            sa.select(m.c.contact_id, *sums)
            .where(
                m.c.channel == channel.value,
                m.c.purpose == purpose.value,
                m.c.direction == Direction.OUTBOUND.value,
                m.c.sent_at >= min(part),
                m.c.sent_at <= to_micros(until),
            )
            .group_by(m.c.contact_id)
        )
        if at_least is not None:
            statement = statement.having(
                sa.or_(*(total >= limit for total, limit in zip(sums, at_least, strict=True)))
            )
        return statement

    def addresses(
        self, contact_ids: Sequence[str], channel: Channel, *, decrypt: bool
    ) -> dict[str, str | None]:
        """See :meth:`PlanningStore.addresses`."""
        kind = ADDRESS_KINDS.get(channel)
        if kind is None or not contact_ids:
            return {}
        a, c = schema.addresses, schema.contacts
        out: dict[str, str | None] = {}
        with self.repo.transaction(read=True) as conn:
            if not decrypt:
                base = sa.select(a.c.contact_id).where(a.c.kind == kind)
                # No DISTINCT: a contact's few addresses collapse here, with no sort in SQL.
                return dict.fromkeys(
                    (row[0] for row in self._rows(conn, base, a.c.contact_id, contact_ids)), None
                )
            base = (
                sa.select(a.c.contact_id, a.c.blind_index, a.c.address, c.c.data_key)
                .join(c, c.c.contact_id == a.c.contact_id)
                .where(a.c.kind == kind, c.c.data_key.is_not(None))
            )
            rows = self._listed(conn, base, a.c.contact_id, contact_ids)
        # A contact whose cipher the store holds uses it; the others' data keys are
        # unwrapped here, the wrapping subkey derived once for the whole read.
        cached = self.repo._ciphers  # the store's own cache
        opener = contact_text_opener(
            self.repo._keyring, key_ref=DATA_KEY_REF, table="addresses", column="address"
        )
        best: dict[str, str] = {}
        for cid, bidx, blob, wrapped in rows:
            row_id = address_row_id(kind, bytes(bidx))
            cipher = cached.get(cid) if cid in cached else None
            if cipher is None:
                text = opener(cid, wrapped, blob, row_id)
            else:
                text = cipher.decrypt_text(
                    blob, table="addresses", column="address", row_id=row_id
                )
            if text is None:
                continue
            old = best.get(cid)
            if old is None or text < old:
                best[cid] = text
        out.update(best)
        return out

    def screen(
        self, contact_ids: Sequence[str], channel: Channel, purpose: Purpose, at: datetime
    ) -> dict[str, Refusal]:
        """See :meth:`PlanningStore.screen`."""
        if not contact_ids:
            return {}
        base = self.repo.segment_store.screen_statement(at=at, channel=channel, purpose=purpose)
        column = base.selected_columns[0]
        unknown = _unknown_refusal(channel, purpose)
        with self.repo.transaction(read=True) as conn:
            if len(contact_ids) > BULK_THRESHOLD:  # one pass over contacts, kept here
                rows = _fetch_all(conn, base)
            else:
                rows = []
                for chunk in _chunks(contact_ids):
                    rows.extend(_fetch_all(conn, base.where(column.in_(list(chunk)))))
        # Every known contact has a row (a refusal or NULL); the others are unknown.
        status: dict[str, Any] = dict(cast("list[tuple[str, Any]]", rows))
        out: dict[str, Refusal] = {cid: why for cid, why in rows if why is not None}
        wanted = set(contact_ids)
        if len(status) != len(wanted) or not all(map(status.__contains__, wanted)):
            # Rows of contacts not asked about, or ids the store does not know.
            out = {cid: why for cid, why in out.items() if cid in wanted}
            if unknown is not None:  # no grant, no address
                out.update((cid, unknown) for cid in contact_ids if cid not in status)
        return out

    def screen_segment(
        self, tree: Criteria, channel: Channel, purpose: Purpose, at: datetime
    ) -> tuple[list[str], dict[str, Refusal]]:
        """See :meth:`PlanningStore.screen_segment`."""
        rows = self.repo.segment_store.screened_members(
            tree, at=at, channel=channel, purpose=purpose
        )
        refused: dict[str, Refusal] = {cid: why for cid, why in rows if why is not None}  # type: ignore[misc]
        return [cid for cid, _why in rows], refused

    def zones(
        self, contact_ids: Sequence[str], attribute: str, at: datetime, *, skip: str | None = None
    ) -> dict[str, str]:
        """See :meth:`PlanningStore.zones`."""
        if not contact_ids:
            return {}
        t = to_micros(at)
        ca = schema.contact_attributes
        base = sa.select(ca.c.contact_id, ca.c.value_text).where(
            ca.c.name == attribute,
            ca.c.valid_from <= t,
            sa.or_(ca.c.valid_to.is_(None), ca.c.valid_to > t),
            ca.c.value_text.is_not(None),
        )
        if skip is not None:
            base = base.where(ca.c.value_text != skip)
        with self.repo.transaction(read=True) as conn:
            return {
                cid: str(text)
                for cid, text in self._rows(conn, base, ca.c.contact_id, contact_ids)
            }


# ---------------------------------------------------------------------- memory


class MemoryPlanningStore(PlanningStore):
    """:class:`PlanningStore` over a :class:`~commhistory.store.memory.MemoryState`."""

    def __init__(self, state: MemoryState) -> None:
        self.s = state

    def send_counts(
        self,
        contact_ids: Sequence[str],
        channel: Channel,
        purpose: Purpose,
        since: Sequence[datetime],
        until: datetime,
        *,
        at_least: Sequence[int] | None = None,
    ) -> dict[str, tuple[int, ...]]:
        """See :meth:`PlanningStore.send_counts`."""
        if not since:
            return {}
        wanted = set(contact_ids)
        starts = [to_micros(s) for s in since]
        low, end = min(starts), to_micros(until)
        out: dict[str, list[int]] = {}
        for m in self.s.messages.values():
            if (
                m.contact_id not in wanted
                or m.channel is not channel
                or m.purpose is not purpose
                or m.direction is not Direction.OUTBOUND
            ):
                continue
            sent = to_micros(m.sent_at)
            if not low <= sent <= end:
                continue
            counts = out.setdefault(m.contact_id, [0] * len(starts))
            for i, s in enumerate(starts):
                if sent >= s:
                    counts[i] += 1
        return {cid: tuple(c) for cid, c in out.items() if _past(c, at_least)}

    def addresses(
        self, contact_ids: Sequence[str], channel: Channel, *, decrypt: bool
    ) -> dict[str, str | None]:
        """See :meth:`PlanningStore.addresses`."""
        kind = ADDRESS_KINDS.get(channel)
        if kind is None:
            return {}
        wanted = set(contact_ids)
        best: dict[str, str] = {}
        for (k, value), cids in self.s.addresses.items():
            if k != kind:
                continue
            for cid in cids & wanted:
                if cid in self.s.erased:
                    continue
                old = best.get(cid)
                if old is None or value < old:
                    best[cid] = value
        return {cid: (value if decrypt else None) for cid, value in best.items()}

    def screen(
        self, contact_ids: Sequence[str], channel: Channel, purpose: Purpose, at: datetime
    ) -> dict[str, Refusal]:
        """See :meth:`PlanningStore.screen`."""
        s = self.s
        t = to_micros(at)
        ids = list(dict.fromkeys(contact_ids))
        kind = ADDRESS_KINDS.get(channel)
        # The latest ledger event per contact: (time, withdrawal wins a tie, id).
        latest: dict[str, tuple[int, bool, str]] = {}
        for consent_id, c in s.consents.items():
            if c.channel is not channel or c.purpose is not purpose:
                continue
            occurred = to_micros(c.occurred_at)
            if occurred > t:
                continue
            key = (occurred, c.action is ConsentAction.WITHDRAW, consent_id)
            old = latest.get(c.contact_id)
            if old is None or key > old:
                latest[c.contact_id] = key
        addressed: set[str] = set()
        blocking: dict[str, list[SuppressionEntry]] = {}
        if kind is not None:
            wanted = set(ids)
            by_key: dict[bytes, set[str]] = {}
            for (k, value), cids in s.addresses.items():
                if k == kind:
                    hit = cids & wanted
                    addressed |= hit
                    if hit:
                        by_key.setdefault(memory_digest(k, value), set()).update(hit)
            for e in s.suppressions.values():
                if (
                    e.channel is channel
                    and e.kind == kind
                    and e.active_at(at)
                    and e.covers(purpose)
                ):
                    for cid in by_key.get(e.address_key, ()):
                        blocking.setdefault(cid, []).append(e)
        out: dict[str, Refusal] = {}
        for cid in ids:
            gone = s.erased.get(cid)
            if gone is not None and gone <= at:
                out[cid] = "erased"
                continue
            row = latest.get(cid)
            granted = row is not None and not row[1]
            if any(
                not (e.reason in CONSENT_REASONS and granted and row is not None
                     and row[0] > to_micros(e.since))
                for e in blocking.get(cid, ())
            ):  # fmt: skip
                out[cid] = "suppressed"
            elif (purpose is Purpose.MARKETING and not granted) or (row is not None and row[1]):
                out[cid] = "no_consent"
            elif kind is not None and (cid not in addressed or cid in s.erased):
                out[cid] = "missing_address"
        return out

    def screen_segment(
        self, tree: Criteria, channel: Channel, purpose: Purpose, at: datetime
    ) -> tuple[list[str], dict[str, Refusal]]:
        """See :meth:`PlanningStore.screen_segment`."""
        ids = MemorySegmentStore(self.s).members(tree, at=at)
        return ids, self.screen(ids, channel, purpose, at)

    def zones(
        self, contact_ids: Sequence[str], attribute: str, at: datetime, *, skip: str | None = None
    ) -> dict[str, str]:
        """See :meth:`PlanningStore.zones`."""
        t = to_micros(at)
        out: dict[str, str] = {}
        for cid in contact_ids:
            for frm, to, v in self.s.attributes.get((cid, attribute), ()):
                current = frm <= t and (to is None or to > t)
                if current and not v.personal and isinstance(v.value, str) and v.value != skip:
                    out[cid] = v.value
        return out
