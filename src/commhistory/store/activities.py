"""Activity storage: the port the activity rules use, on SQL and in memory, and the write path.

:class:`ActivityStore` is what :mod:`commhistory.contacts.activities` needs
from a repository: the registry of declared activity names (each with the
property keys stored in the clear), a contact's activities read back with
their properties decrypted, the clicks attribution weighs, setting the
attributed message, and the deletions erasure and retention make.
:class:`SQLActivityStore` and :class:`MemoryActivityStore` implement it; a
repository hands its own out as ``repo.activity_store``.

Writing activities is part of each repository's batched ingest
(:func:`sql_write_activities`, :func:`memory_write_activities`): an activity
id seen before is a duplicate (the first stored wins), unless it names another
contact or another name, which is a conflict kept as a dead letter, as for
messages. Properties whose keys are declared plain for the activity's name at
write time are stored as JSON text; every other key is encrypted with the
contact's data key (AAD: table ``activities``, column ``properties``, the
activity id).

Every method runs in the repository's current transaction when one is open,
else in one of its own. SQL statements are built from schema identifiers and
placeholders; every value is bound.

.. versionadded:: 0.4.0
"""

# ruff: noqa: S608

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final, Protocol

import attrs

from commhistory.crypto import NoncePool
from commhistory.errors import NotFoundError
from commhistory.model import Activity
from commhistory.normalize.time import from_micros, to_micros
from commhistory.store import schema
from commhistory.store.batching import Batch, load_metadata, properties_bytes

if TYPE_CHECKING:
    import sqlalchemy as sa

    from commhistory.store._backend import Row
    from commhistory.store._lru import Pending
    from commhistory.store.memory import MemoryState
    from commhistory.store.sql import SQLRepository
    from commhistory.store.sql_core import SQLCore

__all__ = [
    "ACTIVITY_COLUMNS",
    "ActivityEntry",
    "ActivityStore",
    "ClickRow",
    "MemoryActivityStore",
    "SQLActivityStore",
    "memory_write_activities",
    "sql_write_activities",
]

ACTIVITY_COLUMNS: Final = (
    "activity_id", "contact_id", "name", "occurred_at", "revenue", "revenue_micros",
    "currency", "attributed_message_id", "plain_properties", "properties",
)  # fmt: skip
"""The columns of ``activities`` in the order ingest writes and reads decode them."""

_EMPTY: Final[frozenset[str]] = frozenset()

_LOOKUP_BELOW: Final = 500
"""PostgreSQL batches of at most this many activities look stored ids up before writing."""


@attrs.frozen(kw_only=True)
class ActivityEntry:
    """One stored activity, decrypted, with the message its revenue is attributed to.

    Attributes:
        activity: The activity, properties decrypted and merged.
        message_id: The message the activity's revenue is attributed to (see
            :doc:`/activities`), or ``None``.

    .. versionadded:: 0.4.0
    """

    activity: Activity
    message_id: str | None = None


@attrs.frozen(kw_only=True)
class ClickRow:
    """A stored click on an outbound message, as attribution weighs it.

    Attributes:
        contact_id: The message's contact.
        message_id: The clicked message.
        clicked_at: When the click happened, UTC.
        sent_at: When the message was sent, UTC.
        machine: Whether the click is flagged as a machine's (a link scanner).

    .. versionadded:: 0.4.0
    """

    contact_id: str
    message_id: str
    clicked_at: datetime
    sent_at: datetime
    machine: bool


class ActivityStore(Protocol):
    """The storage port of activities: the name registry, reads, attribution, deletions.

    .. versionadded:: 0.4.0
    """

    def declare(self, names: Mapping[str, frozenset[str]], *, at: datetime) -> None:
        """Declare activity names with their plain property keys (a name again: replaced)."""
        ...

    def declared(self) -> dict[str, frozenset[str]]:
        """Return every declared name with its plain property keys."""
        ...

    def activities(
        self,
        contact_id: str,
        *,
        names: Collection[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[ActivityEntry]:
        """Return a contact's activities, decrypted, by ``occurred_at`` (then id).

        Args:
            contact_id: The contact.
            names: Only activities of these names.
            since: Only those at or after this instant.
            until: Only those before this instant.

        Raises:
            NotFoundError: The contact is unknown (``kind="contact"``).
        """
        ...

    def clicks(
        self, contact_ids: Collection[str], *, since: datetime, until: datetime
    ) -> list[ClickRow]:
        """Return the clicks on the contacts' outbound messages, ``since <= at <= until``."""
        ...

    def attribute(self, attributions: Mapping[str, str]) -> int:
        """Set the attributed message of activities that have none; return how many changed.

        Args:
            attributions: ``{activity_id: message_id}``.
        """
        ...

    def count_contact(self, contact_id: str) -> int:
        """Return how many activities the contact has."""
        ...

    def delete_contact(self, contact_id: str) -> int:
        """Delete the contact's activities (erasure); return how many."""
        ...

    def count_before(self, before: datetime) -> int:
        """Return how many activities occurred before *before*."""
        ...

    def delete_before(self, before: datetime) -> int:
        """Delete the activities that occurred before *before* (retention); return how many."""
        ...


def _plain_keys(text: str) -> frozenset[str]:
    keys: list[str] = json.loads(text)
    return frozenset(keys)


def _keys_text(keys: frozenset[str]) -> str:
    return json.dumps(sorted(keys), separators=(",", ":"))


def _merge(plain: str | None, personal: bytes | None) -> dict[str, Any]:
    out: dict[str, Any] = {} if plain is None else json.loads(plain)
    if personal is not None:
        out.update(load_metadata(personal))
    return out


# ---------------------------------------------------------------------- SQL


class SQLActivityStore(ActivityStore):
    """:class:`ActivityStore` over :class:`~commhistory.store.sql.SQLRepository`.

    Args:
        repo: The repository.
    """

    def __init__(self, repo: SQLRepository) -> None:
        self.repo = repo
        self.ph = repo.backend.ph

    def declare(self, names: Mapping[str, frozenset[str]], *, at: datetime) -> None:
        """See :meth:`ActivityStore.declare`."""
        ph = self.ph
        rows = [(name, _keys_text(keys), to_micros(at)) for name, keys in sorted(names.items())]
        with self.repo.transaction() as conn:
            self.repo.backend.executemany(
                conn,
                f"INSERT INTO activity_names (name, plain_keys, declared_at) "
                f"VALUES ({ph}, {ph}, {ph}) ON CONFLICT (name) DO UPDATE "
                "SET plain_keys = excluded.plain_keys, declared_at = excluded.declared_at",
                rows,
            )

    def declared(self) -> dict[str, frozenset[str]]:
        """See :meth:`ActivityStore.declared`."""
        with self.repo.transaction(read=True) as conn:
            return declared_names(conn)

    def activities(
        self,
        contact_id: str,
        *,
        names: Collection[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[ActivityEntry]:
        """See :meth:`ActivityStore.activities`."""
        repo, ph = self.repo, self.ph
        where = [f"contact_id = {ph}"]
        params: list[Any] = [contact_id]
        if names is not None:
            wanted = sorted(set(names))
            if not wanted:
                wanted = [""]
            where.append(f"name IN ({', '.join([ph] * len(wanted))})")
            params.extend(wanted)
        if since is not None:
            where.append(f"occurred_at >= {ph}")
            params.append(to_micros(since))
        if until is not None:
            where.append(f"occurred_at < {ph}")
            params.append(to_micros(until))
        with repo.transaction(read=True) as conn:
            known = conn.exec_driver_sql(
                f"SELECT data_key FROM contacts WHERE contact_id = {ph}", (contact_id,)
            ).first()
            if known is None:
                raise NotFoundError(kind="contact", identifier=contact_id)
            rows = conn.exec_driver_sql(
                f"SELECT {', '.join(ACTIVITY_COLUMNS)} FROM activities "
                f"WHERE {' AND '.join(where)} ORDER BY occurred_at, activity_id",
                tuple(params),
            ).all()
            cipher = repo.contact_cipher(conn, contact_id) if rows else None
        out = []
        for aid, cid, name, occurred, revenue, _micros, currency, mid, plain, blob in rows:
            personal = None
            if blob is not None:
                assert cipher is not None
                personal = cipher.decrypt(
                    blob, table="activities", column="properties", row_id=aid
                )
            activity = Activity(
                activity_id=aid,
                contact_id=cid,
                name=name,
                occurred_at=from_micros(int(occurred)),
                revenue=None if revenue is None else Decimal(revenue),
                currency=currency,
                properties=_merge(plain, personal),
            )
            out.append(ActivityEntry(activity=activity, message_id=mid))
        return out

    def clicks(
        self, contact_ids: Collection[str], *, since: datetime, until: datetime
    ) -> list[ClickRow]:
        """See :meth:`ActivityStore.clicks`."""
        repo, ph = self.repo, self.ph
        with repo.transaction(read=True) as conn:
            rows = repo.backend.select_in(
                conn,
                "SELECT e.contact_id, e.message_id, e.occurred_at, m.sent_at, e.machine "
                "FROM events e JOIN messages m ON m.message_id = e.message_id "
                f"WHERE e.type = 'clicked' AND m.direction = 'outbound' "
                f"AND e.occurred_at >= {ph} AND e.occurred_at <= {ph} "
                "AND e.contact_id IN ({in})",
                sorted(set(contact_ids)),
                extra=(to_micros(since), to_micros(until)),
            )
        return [
            ClickRow(
                contact_id=cid,
                message_id=mid,
                clicked_at=from_micros(int(at)),
                sent_at=from_micros(int(sent)),
                machine=bool(machine),
            )
            for cid, mid, at, sent, machine in rows
        ]

    def attribute(self, attributions: Mapping[str, str]) -> int:
        """See :meth:`ActivityStore.attribute`."""
        ph = self.ph
        with self.repo.transaction() as conn:
            return self.repo.backend.executemany(
                conn,
                f"UPDATE activities SET attributed_message_id = {ph} "
                f"WHERE activity_id = {ph} AND attributed_message_id IS NULL",
                [(mid, aid) for aid, mid in sorted(attributions.items())],
            )

    def count_contact(self, contact_id: str) -> int:
        """See :meth:`ActivityStore.count_contact`."""
        with self.repo.transaction(read=True) as conn:
            return int(
                conn.exec_driver_sql(
                    f"SELECT COUNT(*) FROM activities WHERE contact_id = {self.ph}",
                    (contact_id,),
                ).scalar_one()
            )

    def delete_contact(self, contact_id: str) -> int:
        """See :meth:`ActivityStore.delete_contact`.

        On SQLite the deleted rows are overwritten (``secure_delete``): their
        plain properties must not linger in free pages.
        """
        with self.repo.transaction() as conn, _overwriting(conn, self.repo.dialect):
            return int(
                conn.exec_driver_sql(
                    f"DELETE FROM activities WHERE contact_id = {self.ph}", (contact_id,)
                ).rowcount
            )

    def count_before(self, before: datetime) -> int:
        """See :meth:`ActivityStore.count_before`."""
        with self.repo.transaction(read=True) as conn:
            return int(
                conn.exec_driver_sql(
                    f"SELECT COUNT(*) FROM activities WHERE occurred_at < {self.ph}",
                    (to_micros(before),),
                ).scalar_one()
            )

    def delete_before(self, before: datetime) -> int:
        """See :meth:`ActivityStore.delete_before`."""
        with self.repo.transaction() as conn, _overwriting(conn, self.repo.dialect):
            return int(
                conn.exec_driver_sql(
                    f"DELETE FROM activities WHERE occurred_at < {self.ph}",
                    (to_micros(before),),
                ).rowcount
            )


class _overwriting:  # noqa: N801 - used as a context manager, like contextlib's
    """On SQLite, overwrite deleted content with zeros (``secure_delete``) for a block."""

    def __init__(self, conn: sa.Connection, dialect: str) -> None:
        self._conn = conn
        self._sqlite = dialect == "sqlite"
        self._before = 0

    def __enter__(self) -> None:
        if self._sqlite:
            self._before = int(self._conn.exec_driver_sql("PRAGMA secure_delete").scalar_one())
            self._conn.exec_driver_sql("PRAGMA secure_delete = ON")

    def __exit__(self, *exc: object) -> None:
        if self._sqlite:
            self._conn.exec_driver_sql(f"PRAGMA secure_delete = {int(self._before)}")


def declared_names(conn: sa.Connection) -> dict[str, frozenset[str]]:
    """Return the declared activity names with their plain keys, read on *conn*."""
    return {
        name: _plain_keys(keys)
        for name, keys in conn.exec_driver_sql("SELECT name, plain_keys FROM activity_names")
    }


def sql_write_activities(
    core: SQLCore, conn: sa.Connection, batch: Batch, pending: Pending
) -> tuple[int, int]:
    """Write a batch's activities in its transaction; return ``(inserted, duplicates)``.

    Stored ids are looked up first (a conflict must be told from a duplicate),
    so the rows written are new: on PostgreSQL they are copied straight into
    the table, in ``activity_id`` order. A bulk PostgreSQL batch after one that
    met no stored id copies first, and looks ids up (and writes again) only if
    the copy meets a stored one. The activities stored are left in
    ``batch.stored_activities`` for the batch feeds.
    """
    be = core.backend
    items = batch.activities
    # PostgreSQL, a bulk batch, and the last one met no stored id: copy first and
    # look ids up only if the copy meets one (as events do; a tenth of the cost).
    optimistic = be.copies_new_rows and len(items) > _LOOKUP_BELOW and not core._look_up_activities
    rejects_before = len(batch.rejects)
    found: dict[str, tuple[str, str]] = {}
    if not optimistic:
        found = {
            r[0]: (r[1], r[2])
            for r in be.select_in(
                conn,
                "SELECT activity_id, contact_id, name FROM activities WHERE activity_id IN ({in})",
                {a.activity_id for a in items},
            )
        }
        core._look_up_activities = bool(found)  # a hint for the next batch (PostgreSQL)
    fresh: list[tuple[Activity, int | None, int | None]] = []
    conflicts = 0
    for a, line, rev in zip(items, batch.activity_lines, batch.activity_revenue, strict=True):
        stored = found.get(a.activity_id)
        if stored is not None:
            if stored != (a.contact_id, a.name):
                batch.activity_conflict(a, line)
                conflicts += 1
            continue
        found[a.activity_id] = (a.contact_id, a.name)
        fresh.append((a, line, rev))
    if not fresh:
        return 0, len(items) - conflicts
    ciphers = core.ciphers(conn, {a.contact_id for a, _, _ in fresh}, pending, create=True)
    refused = conflicts
    if pending.erased:
        kept = []
        for a, line, rev in fresh:
            if a.contact_id in pending.erased:
                batch.refuse_erased(a, line)
                refused += 1
            else:
                kept.append((a, line, rev))
        fresh = kept
        if not fresh:
            return 0, len(items) - refused
    fresh.sort(key=lambda f: f[0].activity_id)
    plain_of = declared_names(conn)
    nonces = NoncePool()
    sealers: dict[str, Any] = {}

    def rows() -> Iterable[Row]:
        for a, _line, rev in fresh:
            aid, cid = a.activity_id, a.contact_id
            plain, secret = properties_bytes(a.properties, plain_of.get(a.name, _EMPTY))
            if secret is None:
                sealed = None
            else:
                seal = sealers.get(cid)
                if seal is None:
                    seal = sealers[cid] = ciphers[cid].row_sealer("activities", ("properties",))
                sealed = seal(aid, (secret,), nonces)[0]
            yield (
                aid, cid, a.name, to_micros(a.occurred_at),
                None if rev is None else str(a.revenue), rev, a.currency, None,
                plain, sealed,
            )  # fmt: skip

    if optimistic:
        copied = be.try_copy_new(conn, schema.activities, ACTIVITY_COLUMNS, rows())
        if copied is None:  # an id is stored: look them up, this batch and the next ones
            core._look_up_activities = True
            del batch.rejects[rejects_before:]
            return sql_write_activities(core, conn, batch, pending)
        inserted = copied
    elif be.copies_new_rows:
        inserted = be.insert_new(conn, schema.activities, ACTIVITY_COLUMNS, rows())
    else:
        inserted = be.insert(conn, schema.activities, ACTIVITY_COLUMNS, list(rows()))
    batch.stored_activities = [a for a, _, _ in fresh]
    return inserted, len(items) - inserted - refused


# ---------------------------------------------------------------------- memory


class MemoryActivityStore(ActivityStore):
    """:class:`ActivityStore` over a :class:`~commhistory.store.memory.MemoryState`.

    Args:
        state: The memory repository's state.
    """

    def __init__(self, state: MemoryState) -> None:
        self.s = state

    def declare(self, names: Mapping[str, frozenset[str]], *, at: datetime) -> None:
        """See :meth:`ActivityStore.declare`."""
        self.s.activity_names.update({n: frozenset(k) for n, k in names.items()})

    def declared(self) -> dict[str, frozenset[str]]:
        """See :meth:`ActivityStore.declared`."""
        return dict(self.s.activity_names)

    def activities(
        self,
        contact_id: str,
        *,
        names: Collection[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[ActivityEntry]:
        """See :meth:`ActivityStore.activities`."""
        s = self.s
        if contact_id not in s.contacts:
            raise NotFoundError(kind="contact", identifier=contact_id)
        wanted = None if names is None else set(names)
        found = [
            a
            for a in s.activities.values()
            if a.contact_id == contact_id
            and (wanted is None or a.name in wanted)
            and (since is None or a.occurred_at >= since)
            and (until is None or a.occurred_at < until)
        ]
        found.sort(key=lambda a: (a.occurred_at, a.activity_id))
        return [
            ActivityEntry(activity=a, message_id=s.activity_message.get(a.activity_id))
            for a in found
        ]

    def clicks(
        self, contact_ids: Collection[str], *, since: datetime, until: datetime
    ) -> list[ClickRow]:
        """See :meth:`ActivityStore.clicks`."""
        s = self.s
        wanted = set(contact_ids)
        out = []
        for eid, cid in s.event_contact.items():
            if cid is None or cid not in wanted:
                continue
            e = s.events[eid]
            if e.type.value != "clicked" or not since <= e.occurred_at <= until:
                continue
            m = s.messages.get(e.message_id or "")
            if m is None or m.direction.value != "outbound":
                continue
            out.append(
                ClickRow(
                    contact_id=cid,
                    message_id=m.message_id,
                    clicked_at=e.occurred_at,
                    sent_at=m.sent_at,
                    machine=e.machine,
                )
            )
        return out

    def attribute(self, attributions: Mapping[str, str]) -> int:
        """See :meth:`ActivityStore.attribute`."""
        changed = 0
        for aid, mid in attributions.items():
            if aid in self.s.activities and aid not in self.s.activity_message:
                self.s.activity_message[aid] = mid
                changed += 1
        return changed

    def count_contact(self, contact_id: str) -> int:
        """See :meth:`ActivityStore.count_contact`."""
        return sum(1 for a in self.s.activities.values() if a.contact_id == contact_id)

    def delete_contact(self, contact_id: str) -> int:
        """See :meth:`ActivityStore.delete_contact`."""
        return self._delete([a for a in self.s.activities.values() if a.contact_id == contact_id])

    def count_before(self, before: datetime) -> int:
        """See :meth:`ActivityStore.count_before`."""
        return sum(1 for a in self.s.activities.values() if a.occurred_at < before)

    def delete_before(self, before: datetime) -> int:
        """See :meth:`ActivityStore.delete_before`."""
        return self._delete([a for a in self.s.activities.values() if a.occurred_at < before])

    def _delete(self, gone: list[Activity]) -> int:
        for a in gone:
            del self.s.activities[a.activity_id]
            self.s.activity_message.pop(a.activity_id, None)
        return len(gone)


def memory_write_activities(state: MemoryState, batch: Batch) -> tuple[int, int]:
    """Apply a batch's activities to *state*; return ``(inserted, duplicates)``.

    The same rules as :func:`sql_write_activities`; nothing is encrypted.
    """
    s = state
    inserted = duplicates = 0
    refused: set[str] = set()
    stored: list[Activity] = []
    for a, line in zip(batch.activities, batch.activity_lines, strict=True):
        prior = s.activities.get(a.activity_id)
        if prior is not None and (prior.contact_id, prior.name) != (a.contact_id, a.name):
            batch.activity_conflict(a, line)
            continue
        if prior is not None or a.activity_id in refused:
            duplicates += 1
            continue
        if a.contact_id in s.erased:
            batch.refuse_erased(a, line)
            refused.add(a.activity_id)
            continue
        s.activities[a.activity_id] = a
        s.contacts.add(a.contact_id)
        stored.append(a)
        inserted += 1
    batch.stored_activities = sorted(stored, key=lambda a: a.activity_id)
    return inserted, duplicates
