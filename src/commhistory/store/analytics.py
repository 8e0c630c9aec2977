"""Analytics reads: the plain, non-personal columns of the history, streamed in batches.

:class:`AnalyticsReader` is what the analytics export (:mod:`commhistory.analytics`)
needs from a repository: the rows of one of the :data:`TABLES` not exported
by earlier runs, in time order, a batch at a time; the plain contact attributes
whole; and the ids of the erased contacts. :class:`SQLAnalyticsReader` and
:class:`MemoryAnalyticsReader` implement it; a repository hands its own out as
``repo.analytics_reader``.

Only plain columns are read; nothing is decrypted. Rows of erased contacts
(messages, their events, activities) are left out, and so are orphan events
(no known message). Times are integer microseconds since the epoch, UTC;
money is integer millionths (``*_micros``); ``machine`` is 0 or 1.

Which rows earlier runs exported is told by the **stored-at sequence**
(``stored_seq``, schema revision 0014), not by the rows' own times: each row
gets a value when it is stored (an orphan event again when it is linked to its
message), and :meth:`AnalyticsReader.stored_seq_bound` returns a value every
row of a committed write is below and every later write is at or above. A
:class:`Watermark` says what the earlier runs read: every row stored below
their bound (and, when they had an ``until``, timed before it). So a row stored
late with an old time is read by the next run. Rows come in time order (then
id): messages by ``sent_at``, events and activities by ``occurred_at``, costs
by ``recorded_at``.

.. versionadded:: 0.4.0
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Final, NamedTuple, Protocol

from commhistory.errors import InvalidInputError
from commhistory.normalize.time import to_micros
from commhistory.store.attributes import plain_columns

if TYPE_CHECKING:
    from commhistory.store.memory import MemoryState
    from commhistory.store.sql import SQLRepository

__all__ = [
    "SNAPSHOTS",
    "TABLES",
    "AnalyticsReader",
    "AnalyticsTable",
    "MemoryAnalyticsReader",
    "SQLAnalyticsReader",
    "Watermark",
]


class AnalyticsTable(NamedTuple):
    """What a scan of one analytics table returns.

    Fields: ``columns``, the names of the values of each row, in order; ``order``,
    the time column (microseconds) rows are sorted and date-partitioned by;
    ``id``, the id column that breaks ties.
    """

    columns: tuple[str, ...]
    order: str
    id: str


TABLES: Final[dict[str, AnalyticsTable]] = {
    "messages": AnalyticsTable(
        (
            "message_id", "contact_id", "channel", "direction", "purpose",
            "campaign_id", "variant", "provider", "sent_at",
        ),
        "sent_at",
        "message_id",
    ),
    "events": AnalyticsTable(
        (
            "event_id", "message_id", "type", "occurred_at", "status_code", "bounce",
            "machine", "revenue_micros", "currency",
        ),
        "occurred_at",
        "event_id",
    ),
    "activities": AnalyticsTable(
        (
            "activity_id", "contact_id", "name", "occurred_at", "revenue_micros",
            "currency", "properties", "attributed_message_id",
        ),
        "occurred_at",
        "activity_id",
    ),
    "costs": AnalyticsTable(
        (
            "cost_id", "campaign_id", "channel", "variant", "starts_at", "ends_at",
            "amount_micros", "currency", "recorded_at",
        ),
        "recorded_at",
        "cost_id",
    ),
}  # fmt: skip
"""The tables a scan reads, by name."""

SNAPSHOTS: Final[dict[str, AnalyticsTable]] = {
    "contact_attributes": AnalyticsTable(
        (
            "contact_id", "name", "type", "valid_from", "valid_to", "value_text",
            "value_int", "value_micros", "value_bool", "value_date", "value_ts",
        ),
        "valid_from",
        "name",
    ),
}  # fmt: skip
"""The tables :meth:`AnalyticsReader.snapshot` reads whole, by name.

``contact_attributes``: every value of every attribute declared plain, over
``[valid_from, valid_to)`` (``valid_to`` ``None`` while current), one typed
column filled per row as in :mod:`commhistory.store.attributes` (``value_date``
is ISO ``YYYY-MM-DD`` text). Values of personal attributes are never read.
Rows are mutable (a value's ``valid_to`` closes when the next one arrives), so
the table is read whole, never after a watermark.

.. versionadded:: 0.4.0
"""


class Watermark(NamedTuple):
    """What the earlier runs of an export read from a table.

    Every row with ``stored_seq`` below ``stored_before`` whose time is before
    ``until`` (microseconds; ``None``: any time), and no other.

    .. versionadded:: 0.4.0
    """

    stored_before: int
    until: int | None = None


_SELECT: Final = {
    "messages": (
        "SELECT m.message_id, m.contact_id, m.channel, m.direction, m.purpose, "
        "m.campaign_id, m.variant, m.provider, m.sent_at FROM messages m "
        "JOIN contacts c ON c.contact_id = m.contact_id WHERE c.erased_at IS NULL",
        "m.sent_at",
        "m.message_id",
        "m.stored_seq",
    ),
    "events": (
        "SELECT e.event_id, e.message_id, e.type, e.occurred_at, e.status_code, e.bounce, "
        "CAST(e.machine AS INTEGER), e.revenue_micros, e.currency FROM events e "
        "JOIN contacts c ON c.contact_id = e.contact_id "
        "WHERE c.erased_at IS NULL AND e.message_id IS NOT NULL",
        "e.occurred_at",
        "e.event_id",
        "e.stored_seq",
    ),
    "activities": (
        "SELECT a.activity_id, a.contact_id, a.name, a.occurred_at, a.revenue_micros, "
        "a.currency, a.plain_properties, a.attributed_message_id FROM activities a "
        "JOIN contacts c ON c.contact_id = a.contact_id WHERE c.erased_at IS NULL",
        "a.occurred_at",
        "a.activity_id",
        "a.stored_seq",
    ),
    "contact_attributes": (
        "SELECT a.contact_id, a.name, a.value_type, a.valid_from, a.valid_to, a.value_text, "
        "a.value_int, a.value_micros, a.value_bool, a.value_date, a.value_ts "
        "FROM contact_attributes a "
        "JOIN attribute_definitions d ON d.name = a.name "
        "JOIN contacts c ON c.contact_id = a.contact_id "
        "WHERE c.erased_at IS NULL AND NOT d.personal AND a.value_secret IS NULL "
        "ORDER BY a.contact_id, a.name, a.valid_from",
        "",
        "",
        "",
    ),
    "costs": (
        "SELECT cost_id, campaign_id, channel, variant, starts_at, ends_at, amount_micros, "
        "currency, recorded_at FROM campaign_costs WHERE 1 = 1",
        "recorded_at",
        "cost_id",
        "stored_seq",
    ),
}


def _check(
    table: str, batch_size: int, tables: dict[str, AnalyticsTable] = TABLES
) -> AnalyticsTable:
    if table not in tables:
        raise InvalidInputError(
            field="table", reason=f"unknown analytics table; expected one of: {', '.join(tables)}"
        )
    size: object = batch_size
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise InvalidInputError(field="batch_size", reason="must be a positive integer")
    return tables[table]


class AnalyticsReader(Protocol):
    """The read port of the analytics export.

    .. versionadded:: 0.4.0
    """

    def stored_seq_bound(self) -> int:
        """Return the stored-at sequence value every committed row is below.

        Every row stored (or linked) after this call gets a value at or above
        it. On PostgreSQL, rows of transactions still running when it is called
        are at or above it too, even when they commit before the scan.

        .. versionadded:: 0.4.0
        """
        ...

    def scan(
        self,
        table: str,
        *,
        after: Watermark | None = None,
        before: int | None = None,
        since: int | None = None,
        until: int | None = None,
        batch_size: int = 50_000,
    ) -> Iterator[list[tuple[Any, ...]]]:
        """Yield the rows of *table* not read by earlier runs, in (order, id) order, in batches.

        Args:
            table: A name of :data:`TABLES`.
            after: Leave out the rows the earlier runs read (see :class:`Watermark`).
            before: Only rows whose ``stored_seq`` is below this
                (:meth:`stored_seq_bound`, taken before the scan).
            since: Only rows whose order value is at least this (microseconds).
            until: Only rows whose order value is less than this (microseconds).
            batch_size: The most rows per batch.

        Raises:
            InvalidInputError: Unknown table, or a batch size that is not positive.
        """
        ...

    def snapshot(self, table: str, *, batch_size: int = 50_000) -> Iterator[list[tuple[Any, ...]]]:
        """Yield every row of a :data:`SNAPSHOTS` table, by contact id, name and time, in batches.

        Rows of erased contacts are left out.

        Raises:
            InvalidInputError: Unknown table, or a batch size that is not positive.

        .. versionadded:: 0.4.0
        """
        ...

    def erased_contacts(self) -> list[str]:
        """Return the ids of the erased contacts, sorted."""
        ...


class SQLAnalyticsReader(AnalyticsReader):
    """:class:`AnalyticsReader` over :class:`~commhistory.store.sql.SQLRepository`.

    One ``SELECT`` per scan, streamed (a server-side cursor on PostgreSQL).

    Args:
        repo: The repository.
    """

    def __init__(self, repo: SQLRepository) -> None:
        self.repo = repo
        self.ph = repo.backend.ph

    def stored_seq_bound(self) -> int:
        """See :meth:`AnalyticsReader.stored_seq_bound`."""
        with self.repo.transaction(read=True) as conn:
            return self.repo.backend.stored_seq_bound(conn)

    def scan(
        self,
        table: str,
        *,
        after: Watermark | None = None,
        before: int | None = None,
        since: int | None = None,
        until: int | None = None,
        batch_size: int = 50_000,
    ) -> Iterator[list[tuple[Any, ...]]]:
        """See :meth:`AnalyticsReader.scan`."""
        _check(table, batch_size)
        sql, order, ident, seq = _SELECT[table]
        ph = self.ph
        params: list[Any] = []
        if after is not None:
            if after.until is None:
                sql += f" AND {seq} >= {ph}"
                params.append(after.stored_before)
            else:
                sql += f" AND ({seq} >= {ph} OR {order} >= {ph})"
                params += [after.stored_before, after.until]
        if before is not None:
            # The stored_seq index (revision 0018) is for an incremental run's range
            # (both bounds); "+" keeps a full read, bounded above only, off it.
            plus = "+" if after is None else ""
            sql += f" AND {plus}{seq} < {ph}"
            params.append(before)
        if since is not None:
            sql += f" AND {order} >= {ph}"
            params.append(since)
        if until is not None:
            sql += f" AND {order} < {ph}"
            params.append(until)
        sql += f" ORDER BY {order}, {ident}"
        return self._stream(sql, tuple(params), batch_size)

    def snapshot(self, table: str, *, batch_size: int = 50_000) -> Iterator[list[tuple[Any, ...]]]:
        """See :meth:`AnalyticsReader.snapshot`."""
        _check(table, batch_size, SNAPSHOTS)
        return self._stream(_SELECT[table][0], (), batch_size)

    def _stream(
        self, sql: str, params: tuple[Any, ...], batch_size: int
    ) -> Iterator[list[tuple[Any, ...]]]:
        # The driver's own cursor: plain tuples, no result-row wrapping (a third
        # of the time); on PostgreSQL a named (server-side) cursor, so rows stream.
        with self.repo.transaction(read=True) as conn:
            raw: Any = conn.connection.driver_connection
            if self.repo.dialect == "postgresql":
                cursor = raw.cursor(name=f"analytics_{uuid.uuid4().hex[:16]}")
                cursor.itersize = batch_size
            else:
                cursor = raw.cursor()
            try:
                cursor.execute(sql, params)
                while rows := cursor.fetchmany(batch_size):
                    yield rows
            finally:
                cursor.close()

    def erased_contacts(self) -> list[str]:
        """See :meth:`AnalyticsReader.erased_contacts`."""
        with self.repo.transaction(read=True) as conn:
            rows = conn.exec_driver_sql(
                "SELECT contact_id FROM contacts WHERE erased_at IS NOT NULL ORDER BY contact_id"
            ).all()
        return [r[0] for r in rows]


def _opt_micros(value: Any) -> int | None:
    return None if value is None else int(value * 1_000_000)


class MemoryAnalyticsReader(AnalyticsReader):
    """:class:`AnalyticsReader` over a :class:`~commhistory.store.memory.MemoryState`.

    Args:
        state: The memory repository's state.
    """

    def __init__(self, state: MemoryState) -> None:
        self.s = state
        self._seq = 0
        self._stored: dict[tuple[str, str], int] = {}
        """The stored-at sequence of each row seen exportable by a bound, by (table, id)."""

    def stored_seq_bound(self) -> int:
        """See :meth:`AnalyticsReader.stored_seq_bound`.

        Memory rows carry no sequence: each call gives the rows exportable now
        and not seen before the current value, then moves to the next one.
        """
        for table, spec in TABLES.items():
            ix = spec.columns.index(spec.id)
            for row in self._rows(table):
                self._stored.setdefault((table, row[ix]), self._seq)
        self._seq += 1
        return self._seq

    def _rows(self, table: str) -> list[tuple[Any, ...]]:
        s = self.s
        live = s.contacts - set(s.erased)
        if table == "messages":
            return [
                (
                    m.message_id, m.contact_id, m.channel.value, m.direction.value,
                    m.purpose.value, m.campaign_id, m.variant, m.provider, to_micros(m.sent_at),
                )
                for m in s.messages.values()
                if m.contact_id in live
            ]  # fmt: skip
        if table == "events":
            return [
                (
                    e.event_id, e.message_id, e.type.value, to_micros(e.occurred_at),
                    e.status_code, None if e.bounce is None else e.bounce.value, int(e.machine),
                    _opt_micros(e.revenue), e.currency,
                )
                for e in s.events.values()
                if e.message_id is not None and s.event_contact.get(e.event_id) in live
            ]  # fmt: skip
        if table == "activities":
            out: list[tuple[Any, ...]] = []
            for a in s.activities.values():
                if a.contact_id not in live:
                    continue
                keys = s.activity_names.get(a.name, frozenset())
                plain = {k: v for k, v in a.properties.items() if k in keys}
                out.append(
                    (
                        a.activity_id, a.contact_id, a.name, to_micros(a.occurred_at),
                        _opt_micros(a.revenue), a.currency,
                        json.dumps(plain, separators=(",", ":")) if plain else None,
                        s.activity_message.get(a.activity_id),
                    )
                )  # fmt: skip
            return out
        return [
            (
                c.cost_id, c.campaign_id, None if c.channel is None else c.channel.value,
                c.variant, to_micros(c.starts_at), to_micros(c.ends_at), c.micros, c.currency,
                to_micros(c.starts_at),
            )
            for c in s.costs.values()
        ]  # fmt: skip

    def scan(
        self,
        table: str,
        *,
        after: Watermark | None = None,
        before: int | None = None,
        since: int | None = None,
        until: int | None = None,
        batch_size: int = 50_000,
    ) -> Iterator[list[tuple[Any, ...]]]:
        """See :meth:`AnalyticsReader.scan` (costs: ``recorded_at`` is ``starts_at``)."""
        spec = _check(table, batch_size)
        at = spec.columns.index(spec.order)
        ix = spec.columns.index(spec.id)
        stored, now = self._stored, self._seq

        def keep(r: tuple[Any, ...]) -> bool:
            seq = stored.get((table, r[ix]), now)
            if (
                after is not None
                and seq < after.stored_before
                and (after.until is None or r[at] < after.until)
            ):
                return False
            return (
                (before is None or seq < before)
                and (since is None or r[at] >= since)
                and (until is None or r[at] < until)
            )

        rows = sorted(filter(keep, self._rows(table)), key=lambda r: (r[at], r[ix]))
        return iter([rows[i : i + batch_size] for i in range(0, len(rows), batch_size)])

    def snapshot(self, table: str, *, batch_size: int = 50_000) -> Iterator[list[tuple[Any, ...]]]:
        """See :meth:`AnalyticsReader.snapshot`."""
        _check(table, batch_size, SNAPSHOTS)
        s = self.s
        live = s.contacts - set(s.erased)
        plain = {n for n, d in s.attribute_definitions.items() if not d.personal}
        rows = [
            (cid, name, v.type, frm, to, *plain_columns(v))
            for (cid, name), line in s.attributes.items()
            if cid in live and name in plain
            for frm, to, v in line
            if not v.personal
        ]
        rows.sort(key=lambda r: (r[0], r[1], r[3]))
        return iter([rows[i : i + batch_size] for i in range(0, len(rows), batch_size)])

    def erased_contacts(self) -> list[str]:
        """See :meth:`AnalyticsReader.erased_contacts`."""
        return sorted(self.s.erased)
