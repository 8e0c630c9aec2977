"""Decrypted reads of the SQL repository: timelines, consent history, lookups, dead letters.

:class:`SQLReads` is the read part of :class:`~commhistory.store.sql.SQLRepository`.

.. versionadded:: 0.4.0
"""

# SQL text here is built only from schema identifiers, placeholders and integers;
# every value is bound as a parameter.
# ruff: noqa: S608

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from commhistory.crypto import (
    lookup_key_ids,
)
from commhistory.errors import NotFoundError, StorageError
from commhistory.model import (
    ConsentEvent,
    Event,
)
from commhistory.normalize.time import from_micros
from commhistory.store.batching import (
    one_criterion,
)
from commhistory.store.layout import (
    CONSENT_COLUMNS,
    DEAD_LETTER_COLUMNS,
    DEAD_LETTER_PURPOSE,
    EVENT_COLUMNS,
    MESSAGE_COLUMNS,
)
from commhistory.store.protocol import (
    DeadLetter,
    TimelineEntry,
)
from commhistory.store.sql_core import SQLCore
from commhistory.store.sql_rows import consent_from_row, event_decoder, message_decoder

if TYPE_CHECKING:
    pass

__all__ = ["SQLReads"]


class SQLReads(SQLCore):
    """The read part of :class:`~commhistory.store.sql.SQLRepository`."""

    def timeline(self, contact_id: str) -> list[TimelineEntry]:
        """Return a contact's decrypted timeline; see :meth:`Repository.timeline`."""
        ph = self._backend.ph
        with self.transaction(read=True) as conn:
            row = conn.exec_driver_sql(
                f"SELECT data_key, erased_at FROM contacts WHERE contact_id = {ph}", (contact_id,)
            ).first()
            if row is None:
                raise NotFoundError(kind="contact", identifier=contact_id)
            if row[0] is None:
                if row[1] is not None:  # erased: nothing can be decrypted
                    return []
                raise StorageError(
                    f"contact {contact_id!r} has no data key but was never erased: "
                    "the database was altered outside commhistory"
                )
            cipher = self.contact_cipher(conn, contact_id)
            assert cipher is not None
            # Plain DB-API rows: two indexed queries, no per-row SQLAlchemy work.
            cur: Any = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
            try:
                cur.execute(
                    f"SELECT {', '.join(MESSAGE_COLUMNS)} FROM messages "
                    f"WHERE contact_id = {ph} ORDER BY sent_at, message_id",
                    (contact_id,),
                )
                message_rows = cur.fetchall()
                cur.execute(
                    f"SELECT {', '.join(EVENT_COLUMNS)} FROM events "
                    f"WHERE contact_id = {ph} ORDER BY occurred_at, event_id",
                    (contact_id,),
                )
                event_rows = cur.fetchall()
            finally:
                cur.close()
        event_from_row = event_decoder(cipher)
        message_from_row = message_decoder(cipher)
        by_message: dict[str, list[Event]] = {}
        for r in event_rows:
            event = event_from_row(r)
            by_message.setdefault(r[1], []).append(event)
        return [
            TimelineEntry(message=message_from_row(r), events=tuple(by_message.get(r[0], ())))
            for r in message_rows
        ]

    def consent_history(self, contact_id: str) -> list[ConsentEvent]:
        """Return a contact's consent events, decrypted, in time order.

        Args:
            contact_id: The contact.

        Returns:
            The consent events ordered by ``occurred_at`` (then consent id).

        Raises:
            NotFoundError: The contact is unknown.
        """
        ph = self._backend.ph
        with self.transaction(read=True) as conn:
            cipher = self.contact_cipher(conn, contact_id)
            if cipher is None:
                raise NotFoundError(kind="contact", identifier=contact_id)
            rows = conn.exec_driver_sql(
                f"SELECT {', '.join(CONSENT_COLUMNS)} FROM consent_events "
                f"WHERE contact_id = {ph} ORDER BY occurred_at, consent_id",
                (contact_id,),
            ).all()
        return [consent_from_row(r, cipher.decrypt) for r in rows]

    def find_contacts(
        self,
        *,
        email: str | None = None,
        phone: str | None = None,
        line_user_id: str | None = None,
    ) -> list[str]:
        """Find contacts by address; see :meth:`Repository.find_contacts`."""
        kind, value = one_criterion(email, phone, line_user_id)
        # Every key the keyring holds: rows indexed before an index-key change
        # stay findable until --reindex has recomputed them.
        wanted: dict[bytes, set[str]] = {}
        for key_id in lookup_key_ids(self._keyring):
            wanted.setdefault(self.indexer(key_id).index(kind, value), set()).add(key_id)
        ph = self._backend.ph
        with self.transaction(read=True) as conn:
            rows = self._backend.select_in(
                conn,
                "SELECT contact_id, blind_index, index_key_id FROM addresses "
                f"WHERE kind = {ph} AND blind_index IN ({{in}})",
                list(wanted),
                extra=(kind,),
            )
        return sorted({cid for cid, bidx, kid in rows if kid in wanted.get(bytes(bidx), ())})

    def dead_letters(
        self, *, source: str | None = None, limit: int | None = None
    ) -> list[DeadLetter]:
        """Return decrypted dead letters; see :meth:`Repository.dead_letters`."""
        ph = self._backend.ph
        sql = f"SELECT {', '.join(DEAD_LETTER_COLUMNS)} FROM dead_letters"
        params: list[Any] = []
        if source is not None:
            sql += f" WHERE source = {ph}"
            params.append(source)
        sql += " ORDER BY received_at, source, line, dead_letter_id"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        with self.transaction(read=True) as conn:
            rows = conn.exec_driver_sql(sql, tuple(params)).all()
        out = []
        for dl_id, _fp, received, src, line, field, reason, key_id, raw in rows:
            cipher = self.keyed_cipher(key_id, DEAD_LETTER_PURPOSE)
            text = cipher.decrypt_text(
                bytes(raw), table="dead_letters", column="raw", row_id=dl_id
            )
            out.append(
                DeadLetter(
                    id=dl_id,
                    received_at=from_micros(received),
                    source=src,
                    line=line,
                    field=field,
                    reason=reason,
                    raw=text or "",
                )
            )
        return out
