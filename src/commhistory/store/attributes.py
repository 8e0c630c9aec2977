"""Contact attribute storage: the declared schema and each contact's values over time.

:class:`AttributeStore` is what :mod:`commhistory.contacts` needs from a
repository: the declarations (``attribute_definitions``), writing typed values
with their history, reading the values in force at a time, and deleting a
contact's rows at erasure. :class:`SQLAttributeStore` and
:class:`MemoryAttributeStore` implement it; a repository hands its own out as
``repo.attribute_store``. The rules (types, validation) stay in
:mod:`commhistory.contacts.attributes`; the store takes values already typed.

One row of ``contact_attributes`` is one value of one attribute of one
contact over ``[valid_from, valid_to)`` (microseconds, UTC; ``valid_to`` is
``NULL`` while it is the current value). A plain value sits in the column of
its type, so SQL can filter it:

=============  ==================================================================
type           column
=============  ==================================================================
str, enum      ``value_text``
int            ``value_int`` (``BIGINT``)
decimal        ``value_micros`` (``BIGINT``, value x 10^6, exact) and ``value_text``
bool           ``value_bool``
date           ``value_date`` (ISO ``YYYY-MM-DD`` text: sorts and compares as dates)
datetime       ``value_ts`` (``BIGINT`` microseconds since the epoch, UTC)
list           ``value_text`` (a JSON array of strings)
=============  ==================================================================

A personal value is JSON in ``value_secret``, encrypted under the contact's
data key, its AAD bound to the table, the column and ``contact/name/valid_from``;
every typed column stays ``NULL``. "The current tier of every contact" is
``WHERE name = 'tier' AND valid_to IS NULL``; "at time t" is
``WHERE name = ? AND valid_from <= t AND (valid_to IS NULL OR valid_to > t)``.

Writing a value equal to the one in force at that time changes nothing, so
retries never add rows. A write dated before the current value is inserted in
the history and holds until the next known change.

Every method runs in the repository's current transaction when one is open,
else in one of its own. SQL statements are built from schema identifiers and
placeholders; every value is bound.

.. versionadded:: 0.4.0
"""

# ruff: noqa: S608

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Final, Literal, NamedTuple, Protocol

import attrs

from commhistory.errors import InvalidInputError
from commhistory.model import ContactUpdate
from commhistory.normalize.time import from_micros, to_micros
from commhistory.store import schema
from commhistory.store._lru import Pending

if TYPE_CHECKING:
    import sqlalchemy as sa

    from commhistory.crypto import FieldCipher
    from commhistory.store.memory import MemoryState
    from commhistory.store.sql import SQLRepository
    from commhistory.store.sql_core import SQLCore

__all__ = [
    "ATTRIBUTE_COLUMNS",
    "DECIMAL_PLACES",
    "AttributeChange",
    "AttributeCodec",
    "AttributeStore",
    "AttributeValue",
    "AttributeVersion",
    "MemoryAttributeStore",
    "SQLAttributeStore",
    "StoredDefinition",
    "TypedValue",
]

DECIMAL_PLACES: Final = 6
"""Decimal attributes keep at most this many places; ``value_micros`` is value x 10^6."""

TypedValue = str | int | Decimal | bool | date | datetime | tuple[str, ...]
"""A typed attribute value (``datetime`` aware, in UTC; a list as a tuple of strings)."""

ATTRIBUTE_COLUMNS: Final = (
    "contact_id", "name", "valid_from", "valid_to", "value_type", "value_text", "value_int",
    "value_micros", "value_bool", "value_date", "value_ts", "value_secret", "recorded_at",
)  # fmt: skip
_VALUE_COLUMNS: Final = ATTRIBUTE_COLUMNS[4:12]
DEFINITION_COLUMNS: Final = (
    "name", "type", "personal", "allowed", "description", "declared_at", "updated_at",
)  # fmt: skip
TABLE: Final = "contact_attributes"
SECRET: Final = "value_secret"  # noqa: S105 - a column name

ERASED_REASON: Final = "the contact was erased; nothing more is stored for it"


@attrs.frozen(kw_only=True)
class StoredDefinition:
    """An attribute declaration as the store keeps it (plain values only).

    Attributes:
        name: The attribute's name.
        type: Its type's name (:class:`~commhistory.contacts.attributes.AttributeType` value).
        personal: Whether its values are personal (encrypted).
        values: An enum's allowed values.
        description: What it means.
    """

    name: str
    type: str
    personal: bool = False
    values: tuple[str, ...] = ()
    description: str | None = None


@attrs.frozen(kw_only=True)
class AttributeValue:
    """One typed value to store for one attribute (``None``: unset it).

    Attributes:
        name: The attribute.
        type: Its declared type's name.
        value: The typed value (kept out of ``repr()``: it may be personal).
        personal: Whether it is stored encrypted.
    """

    name: str
    type: str
    value: TypedValue | None = attrs.field(repr=False)
    personal: bool = False


@attrs.frozen(kw_only=True)
class AttributeVersion:
    """One value an attribute of a contact held over ``[valid_from, valid_to)``.

    Attributes:
        name: The attribute.
        type: The type the value was stored as.
        value: The value; ``None`` for a personal value read without decrypting.
        personal: Whether it is stored encrypted.
        valid_from: When it took effect, UTC.
        valid_to: When the next value (or an unset) replaced it; ``None`` while current.
    """

    name: str
    type: str
    value: TypedValue | None = attrs.field(repr=False)
    personal: bool
    valid_from: datetime
    valid_to: datetime | None = None


@attrs.frozen(kw_only=True)
class AttributeChange:
    """New values of some attributes of one contact, from *at* on.

    Attributes:
        contact_id: The contact.
        at: When the values took effect.
        values: The typed values (each attribute once).
    """

    contact_id: str
    at: datetime
    values: tuple[AttributeValue, ...]


AttributeCodec = Callable[[ContactUpdate], Sequence[AttributeValue]]
"""``codec(update) -> typed values``: the schema's check, installed by the facade.

Raises :class:`~commhistory.errors.InvalidInputError` (an attribute error) for
an update the schema refuses; the store keeps that line as a dead letter.
"""

Status = Literal["changed", "unchanged", "erased"]
OnErased = Literal["raise", "skip"]


class AttributeStore(Protocol):
    """The storage port of contact attributes: declarations, values, history.

    .. versionadded:: 0.4.0
    """

    def definitions(self) -> list[StoredDefinition]:
        """Return every declaration, by name."""
        ...

    def save_definitions(self, definitions: Sequence[StoredDefinition]) -> None:
        """Insert or replace declarations (the rules of what may change are the caller's)."""
        ...

    def apply(
        self, changes: Sequence[AttributeChange], *, on_erased: OnErased = "raise"
    ) -> list[Status]:
        """Store typed values with their history; return each change's outcome.

        A change is ``"changed"`` when at least one value differs from the one
        in force at its time, else ``"unchanged"``. A missing contact is created.

        Args:
            changes: The changes, applied in order.
            on_erased: ``"raise"``: an erased contact among them refuses the
                whole call before anything is written
                (:class:`~commhistory.errors.InvalidInputError`, field
                ``contact_id``); ``"skip"``: its changes are ``"erased"``.
        """
        ...

    def versions(
        self,
        contact_id: str,
        *,
        at: datetime | None = None,
        history: bool = False,
        decrypt: bool = True,
    ) -> list[AttributeVersion]:
        """Return a contact's values, by name (then ``valid_from``).

        Args:
            contact_id: The contact.
            at: The values in force at this time (default: the current ones).
            history: Every version instead (*at* is ignored).
            decrypt: ``False`` leaves personal values ``None`` (nothing decrypted).
        """
        ...

    def delete_contact(self, contact_id: str) -> int:
        """Delete every attribute row of a contact (erasure); return how many."""
        ...


# ---------------------------------------------------------------------- encoding


_to_json: Final = json.JSONEncoder(ensure_ascii=False).encode
"""``json.dumps(value, ensure_ascii=False)`` without building an encoder per call."""


def _jsonable(kind: str, value: TypedValue) -> Any:
    if isinstance(value, datetime):
        return to_micros(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def _from_json(kind: str, value: Any) -> TypedValue:
    if kind == "decimal":
        return Decimal(value)
    if kind == "date":
        return date.fromisoformat(value)
    if kind == "datetime":
        return from_micros(int(value))
    if kind == "list":
        return tuple(value)
    if kind == "bool":
        return bool(value)
    return value  # type: ignore[no-any-return]


def plain_columns(v: AttributeValue) -> tuple[Any, ...]:
    """The typed columns ``value_text`` .. ``value_ts`` of a plain value."""
    value = v.value
    cls = type(value)
    if cls is str:  # str and enum values, the most common
        return (value, None, None, None, None, None)
    text = integer = micros = flag = day = ts = None
    if cls is Decimal:
        assert isinstance(value, Decimal)
        return (str(value), None, int(value.scaleb(DECIMAL_PLACES)), None, None, None)
    if isinstance(value, bool):
        flag = value
    elif isinstance(value, int):
        integer = value
    elif isinstance(value, Decimal):
        micros = int(value.scaleb(DECIMAL_PLACES))
        text = str(value)
    elif isinstance(value, datetime):
        ts = to_micros(value)
    elif isinstance(value, date):
        day = value.isoformat()
    elif isinstance(value, tuple):
        text = json.dumps(list(value), ensure_ascii=False, separators=(",", ":"))
    else:
        text = value
    return (text, integer, micros, flag, day, ts)


def _plain_value(kind: str, cols: Sequence[Any]) -> TypedValue:
    text, integer, _micros, flag, day, ts = cols
    if kind == "int":
        return int(integer)
    if kind == "decimal":
        return Decimal(text)
    if kind == "bool":
        return bool(flag)
    if kind == "date":
        return date.fromisoformat(day)
    if kind == "datetime":
        return from_micros(int(ts))
    if kind == "list":
        return tuple(json.loads(text))
    return str(text)


def _same(a: AttributeValue | None, kind: str, value: TypedValue | None) -> bool:
    return a is not None and a.type == kind and type(a.value) is type(value) and a.value == value


def secret_row_id(contact_id: str, name: str, valid_from_us: int) -> str:
    """The AAD row id of a personal attribute value."""
    return f"{contact_id}/{name}/{valid_from_us}"


# ---------------------------------------------------------------------- timelines


class _Entry:
    """One version in a (contact, attribute) timeline being edited."""

    __slots__ = ("frm", "orig", "to", "value")

    def __init__(
        self, frm: int, to: int | None, value: AttributeValue, orig: tuple[Any, ...] | None
    ) -> None:
        self.frm = frm
        self.to = to
        self.value = value
        self.orig = orig
        """The stored ``(valid_to, value)`` when loaded, to tell what changed."""


def _set(timeline: list[_Entry], new: AttributeValue, t: int) -> bool:
    """Apply one value (``new.value`` ``None``: unset) at *t*; return whether anything changed."""
    if not timeline:  # the bulk load's case: nothing stored yet
        if new.value is None:
            return False
        timeline.append(_Entry(t, None, new, None))
        return True
    covering = None
    index = 0
    for i, e in enumerate(timeline):
        if e.frm <= t:
            covering, index = e, i
        else:
            break
    if covering is not None and covering.to is not None and covering.to <= t:
        covering = None  # a gap: nothing was in force at t
    if new.value is None:
        if covering is None:
            return False
        if covering.frm == t:
            timeline.remove(covering)
        else:
            covering.to = t
        return True
    if covering is not None:
        if _same(covering.value, new.type, new.value) and covering.value.personal == new.personal:
            return False
        if covering.frm == t:
            covering.value = new
            return True
        entry = _Entry(t, covering.to, new, None)
        covering.to = t
        timeline.insert(index + 1, entry)
        return True
    following = next((e for e in timeline if e.frm > t), None)
    entry = _Entry(t, None if following is None else following.frm, new, None)
    at = timeline.index(following) if following is not None else len(timeline)
    timeline.insert(at, entry)
    return True


def _plan(
    changes: Sequence[AttributeChange],
    skip: set[str],
    timelines: dict[tuple[str, str], list[_Entry]],
) -> list[Status]:
    statuses: list[Status] = []
    for ch in changes:
        if ch.contact_id in skip:
            statuses.append("erased")
            continue
        t = to_micros(ch.at)
        changed = False
        cid = ch.contact_id
        for v in ch.values:
            key = (cid, v.name)
            line = timelines.get(key)
            if line is None:  # nothing stored or set before in this batch (bulk loads)
                if v.value is not None:
                    timelines[key] = [_Entry(t, None, v, None)]
                    changed = True
                continue
            changed = _set(line, v, t) or changed
        statuses.append("changed" if changed else "unchanged")
    return statuses


def _erased_error() -> InvalidInputError:
    return InvalidInputError(field="contact_id", reason=ERASED_REASON)


# ---------------------------------------------------------------------- SQL


def sql_apply(
    repo: SQLCore,
    conn: sa.Connection,
    changes: Sequence[AttributeChange],
    pending: Pending,
    *,
    on_erased: OnErased,
) -> list[Status]:
    """Store attribute changes in the caller's transaction (the port's and ingest's path)."""
    if not changes:
        return []
    contacts = list(dict.fromkeys(c.contact_id for c in changes))
    ciphers = repo.ciphers(conn, contacts, pending, create=True)
    erased = {cid for cid in contacts if cid not in ciphers}
    if erased and on_erased == "raise":
        raise _erased_error()
    # Contacts this transaction just created hold no attribute rows: nothing to look up.
    created = pending.created
    live = [cid for cid in contacts if cid not in erased and cid not in created]
    now = to_micros(datetime.now(UTC))
    inserts: list[tuple[Any, ...]] = []
    statuses: list[Status | None] = [None] * len(changes)
    if created:
        # The bulk load's case: a contact created here with one change in the batch
        # has nothing to merge with, so each value is one new current row.
        # (What _plan and the timeline loop below would write for it, without them.)
        rest = _write_fresh(changes, created, ciphers, now=now, inserts=inserts, statuses=statuses)
    else:
        rest = list(changes)
    backend, ph = repo.backend, repo.backend.ph
    names = {v.name for c in changes for v in c.values}
    cols = ", ".join(ATTRIBUTE_COLUMNS[:12])
    timelines: dict[tuple[str, str], list[_Entry]] = {}
    if live and backend.name == "postgresql":
        # Two writers of one contact's attributes read, then rewrite, its timelines:
        # the second waits for the first (message writers' KEY SHARE locks do not).
        # Sorted, so overlapping batches lock in the same order.
        conn.exec_driver_sql(
            "SELECT contact_id FROM contacts WHERE contact_id = ANY(%s) "
            "ORDER BY contact_id FOR NO KEY UPDATE",
            (sorted(live),),
        )
    stored = (
        backend.select_in(
            conn,
            f"SELECT {cols} FROM {TABLE} WHERE contact_id IN ({{in}}) "
            "ORDER BY contact_id, name, valid_from",
            live,
        )
        if live
        else []
    )
    for row in stored:
        cid, name, frm, to = row[0], row[1], int(row[2]), row[3]
        if name not in names:
            continue
        value = _decode(ciphers.get(cid), cid, name, frm, row[4:12], decrypt=True)
        entry = _Entry(frm, None if to is None else int(to), value, None)
        entry.orig = (entry.to, value)
        timelines.setdefault((cid, name), []).append(entry)
    before = {key: {e.frm: e for e in line} for key, line in timelines.items()}
    planned = iter(_plan(rest, erased, timelines))
    done = [s if s is not None else next(planned) for s in statuses]
    updates: list[tuple[Any, ...]] = []
    deletes: list[tuple[Any, ...]] = []
    for (cid, name), line in timelines.items():
        kept = before.get((cid, name))
        if kept is None:  # a new timeline: every version is a new row
            cipher = ciphers[cid]
            for e in line:
                inserts.append((cid, name, e.frm, *_encode(cipher, cid, e), now))
            continue
        current = {e.frm for e in line}
        for frm in kept.keys() - current:
            deletes.append((cid, name, frm))
        for e in line:
            if e.orig is None and e.frm in kept:
                # A stored version was removed and another set at its time: the row
                # is rewritten (an insert would meet the stored row's key and be lost).
                updates.append((*_encode(ciphers[cid], cid, e), now, cid, name, e.frm))
            elif e.orig is None:
                inserts.append((cid, name, e.frm, *_encode(ciphers[cid], cid, e), now))
            elif e.to != e.orig[0] or e.value is not e.orig[1]:
                updates.append((*_encode(ciphers[cid], cid, e), now, cid, name, e.frm))
    if deletes:
        backend.executemany(
            conn,
            f"DELETE FROM {TABLE} WHERE contact_id = {ph} AND name = {ph} AND valid_from = {ph}",
            deletes,
        )
    if updates:
        sets = ", ".join(f"{c} = {ph}" for c in (*ATTRIBUTE_COLUMNS[3:12], "recorded_at"))
        backend.executemany(
            conn,
            f"UPDATE {TABLE} SET {sets} "
            f"WHERE contact_id = {ph} AND name = {ph} AND valid_from = {ph}",
            updates,
        )
    if inserts:
        inserts.sort(key=_ROW_KEY)
        table = schema.contact_attributes
        if backend.copies_new_rows:
            backend.insert_new(conn, table, ATTRIBUTE_COLUMNS, inserts)
        else:
            backend.insert(conn, table, ATTRIBUTE_COLUMNS, inserts)
    return done


_ROW_KEY: Final = itemgetter(0, 1, 2)
"""``(contact_id, name, valid_from)``: the primary key, the order rows are inserted in."""


def _write_fresh(
    changes: Sequence[AttributeChange],
    created: set[str],
    ciphers: dict[str, FieldCipher],
    *,
    now: int,
    inserts: list[tuple[Any, ...]],
    statuses: list[Status | None],
) -> list[AttributeChange]:
    """Add the rows of the changes of new contacts to *inserts*; return the other changes.

    A change counts when its contact was created by this transaction (no
    attribute rows yet) and is the contact's only change in *changes*: each of
    its values is then one row, current from the change's time on; an unset
    changes nothing. Its status goes into *statuses* at its position.
    """
    seen: dict[str, int] = {}
    for ch in changes:
        seen[ch.contact_id] = seen.get(ch.contact_id, 0) + 1
    rest: list[AttributeChange] = []
    for i, ch in enumerate(changes):
        cid = ch.contact_id
        if cid not in created or seen[cid] != 1:
            rest.append(ch)
            continue
        t = to_micros(ch.at)
        cipher = ciphers[cid]
        changed = False
        for v in ch.values:
            if v.value is None:
                continue
            if v.personal:
                inserts.append((cid, v.name, t, None, *_secret_columns(cipher, cid, v, t), now))
            else:
                inserts.append((cid, v.name, t, None, v.type, *plain_columns(v), None, now))
            changed = True
        statuses[i] = "changed" if changed else "unchanged"
    return rest


def _encode(cipher: FieldCipher, contact_id: str, e: _Entry) -> tuple[Any, ...]:
    """``valid_to, value_type, value_text .. value_ts, value_secret`` of one entry."""
    v = e.value
    if v.personal:
        return (e.to, *_secret_columns(cipher, contact_id, v, e.frm))
    return (e.to, v.type, *plain_columns(v), None)


def _secret_columns(
    cipher: FieldCipher, contact_id: str, v: AttributeValue, frm: int
) -> tuple[Any, ...]:
    """``value_type, value_text .. value_ts, value_secret`` of a personal value."""
    assert v.value is not None
    payload = _to_json(_jsonable(v.type, v.value)).encode("utf-8")
    secret = cipher.encrypt(
        payload, table=TABLE, column=SECRET, row_id=secret_row_id(contact_id, v.name, frm)
    )
    return (v.type, None, None, None, None, None, None, secret)


def _decode(
    cipher: FieldCipher | None,
    contact_id: str,
    name: str,
    frm: int,
    cols: Sequence[Any],
    *,
    decrypt: bool,
) -> AttributeValue:
    """Rebuild a stored value from ``value_type`` .. ``value_secret``."""
    kind, secret = cols[0], cols[7]
    if secret is None:
        return AttributeValue(name=name, type=kind, value=_plain_value(kind, cols[1:7]))
    if not decrypt or cipher is None:
        return AttributeValue(name=name, type=kind, value=None, personal=True)
    data = cipher.decrypt(
        secret, table=TABLE, column=SECRET, row_id=secret_row_id(contact_id, name, frm)
    )
    assert data is not None
    return AttributeValue(
        name=name, type=kind, value=_from_json(kind, json.loads(data)), personal=True
    )


class SQLAttributeStore(AttributeStore):
    """:class:`AttributeStore` over :class:`~commhistory.store.sql.SQLRepository`.

    Args:
        repo: The repository.
    """

    def __init__(self, repo: SQLRepository) -> None:
        self.repo = repo
        self.ph = repo.backend.ph

    def definitions(self) -> list[StoredDefinition]:
        """See :meth:`AttributeStore.definitions`."""
        with self.repo.transaction(read=True) as conn:
            rows = conn.exec_driver_sql(
                "SELECT name, type, personal, allowed, description FROM attribute_definitions "
                "ORDER BY name"
            ).all()
        return [
            StoredDefinition(
                name=r[0],
                type=r[1],
                personal=bool(r[2]),
                values=tuple(json.loads(r[3])) if r[3] else (),
                description=r[4],
            )
            for r in rows
        ]

    def save_definitions(self, definitions: Sequence[StoredDefinition]) -> None:
        """See :meth:`AttributeStore.save_definitions`."""
        if not definitions:
            return
        now = to_micros(datetime.now(UTC))
        ph = self.ph
        rows = [
            (
                d.name, d.type, d.personal,
                json.dumps(list(d.values), ensure_ascii=False) if d.values else None,
                d.description, now, now,
            )
            for d in definitions
        ]  # fmt: skip
        with self.repo.transaction() as conn:
            self.repo.backend.executemany(
                conn,
                f"INSERT INTO attribute_definitions ({', '.join(DEFINITION_COLUMNS)}) "
                f"VALUES ({', '.join([ph] * len(DEFINITION_COLUMNS))}) "
                "ON CONFLICT (name) DO UPDATE SET type = excluded.type, "
                "personal = excluded.personal, allowed = excluded.allowed, "
                "description = excluded.description, updated_at = excluded.updated_at",
                rows,
            )

    def apply(
        self, changes: Sequence[AttributeChange], *, on_erased: OnErased = "raise"
    ) -> list[Status]:
        """See :meth:`AttributeStore.apply`."""
        with self.repo.transaction() as conn:
            return sql_apply(self.repo, conn, changes, Pending(), on_erased=on_erased)

    def versions(
        self,
        contact_id: str,
        *,
        at: datetime | None = None,
        history: bool = False,
        decrypt: bool = True,
    ) -> list[AttributeVersion]:
        """See :meth:`AttributeStore.versions`."""
        ph = self.ph
        sql = f"SELECT {', '.join(ATTRIBUTE_COLUMNS[:12])} FROM {TABLE} WHERE contact_id = {ph}"
        params: tuple[Any, ...] = (contact_id,)
        if not history:
            if at is None:
                sql += " AND valid_to IS NULL"
            else:
                t = to_micros(at)
                sql += f" AND valid_from <= {ph} AND (valid_to IS NULL OR valid_to > {ph})"
                params += (t, t)
        sql += " ORDER BY name, valid_from"
        with self.repo.transaction(read=True) as conn:
            rows = conn.exec_driver_sql(sql, params).all()
            secret = decrypt and any(r[11] is not None for r in rows)
            cipher = self.repo.contact_cipher(conn, contact_id) if secret else None
        return [_version(cipher, r, decrypt=decrypt) for r in rows]

    def delete_contact(self, contact_id: str) -> int:
        """See :meth:`AttributeStore.delete_contact`."""
        with self.repo.transaction() as conn:
            return int(
                conn.exec_driver_sql(
                    f"DELETE FROM {TABLE} WHERE contact_id = {self.ph}", (contact_id,)
                ).rowcount
            )


def _version(cipher: FieldCipher | None, r: Sequence[Any], *, decrypt: bool) -> AttributeVersion:
    cid, name, frm, to, kind = r[0], r[1], int(r[2]), r[3], r[4]
    v = _decode(cipher, cid, name, frm, r[4:12], decrypt=decrypt)
    return AttributeVersion(
        name=name,
        type=kind,
        value=v.value,
        personal=v.personal,
        valid_from=from_micros(frm),
        valid_to=None if to is None else from_micros(int(to)),
    )


# ---------------------------------------------------------------------- memory


class MemoryAttributeStore(AttributeStore):
    """:class:`AttributeStore` over a :class:`~commhistory.store.memory.MemoryState`.

    Nothing is encrypted in memory.

    Args:
        state: The memory repository's state.
    """

    def __init__(self, state: MemoryState) -> None:
        self.s = state

    def definitions(self) -> list[StoredDefinition]:
        """See :meth:`AttributeStore.definitions`."""
        return [self.s.attribute_definitions[n] for n in sorted(self.s.attribute_definitions)]

    def save_definitions(self, definitions: Sequence[StoredDefinition]) -> None:
        """See :meth:`AttributeStore.save_definitions`."""
        for d in definitions:
            self.s.attribute_definitions[d.name] = d

    def apply(
        self, changes: Sequence[AttributeChange], *, on_erased: OnErased = "raise"
    ) -> list[Status]:
        """See :meth:`AttributeStore.apply`."""
        return memory_apply(self.s, changes, on_erased=on_erased)

    def versions(
        self,
        contact_id: str,
        *,
        at: datetime | None = None,
        history: bool = False,
        decrypt: bool = True,
    ) -> list[AttributeVersion]:
        """See :meth:`AttributeStore.versions`."""
        t = None if at is None else to_micros(at)
        out = []
        for (cid, name), line in sorted(self.s.attributes.items()):
            if cid != contact_id:
                continue
            for frm, to, v in line:
                if not history:
                    if t is None and to is not None:
                        continue
                    if t is not None and not (frm <= t and (to is None or to > t)):
                        continue
                hidden = v.personal and not decrypt
                out.append(
                    AttributeVersion(
                        name=name,
                        type=v.type,
                        value=None if hidden else v.value,
                        personal=v.personal,
                        valid_from=from_micros(frm),
                        valid_to=None if to is None else from_micros(to),
                    )
                )
        return out

    def delete_contact(self, contact_id: str) -> int:
        """See :meth:`AttributeStore.delete_contact`."""
        keys = [k for k in self.s.attributes if k[0] == contact_id]
        return sum(len(self.s.attributes.pop(k)) for k in keys)


class _MemoryRow(NamedTuple):
    frm: int
    to: int | None
    value: AttributeValue


def memory_apply(
    s: MemoryState, changes: Sequence[AttributeChange], *, on_erased: OnErased
) -> list[Status]:
    """Store attribute changes in memory (the port's and ingest's path); all or nothing."""
    contacts = {c.contact_id for c in changes}
    erased = contacts & s.erased.keys()
    if erased and on_erased == "raise":
        raise _erased_error()
    timelines: dict[tuple[str, str], list[_Entry]] = {}
    for ch in changes:
        for v in ch.values:
            key = (ch.contact_id, v.name)
            if key not in timelines:
                timelines[key] = [
                    _Entry(r.frm, r.to, r.value, None) for r in s.attributes.get(key, ())
                ]
    statuses = _plan(changes, erased, timelines)
    for key, line in timelines.items():
        if line:
            s.attributes[key] = [_MemoryRow(e.frm, e.to, e.value) for e in line]
        else:
            s.attributes.pop(key, None)
    s.contacts.update(contacts - erased)
    return statuses
