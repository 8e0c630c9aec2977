"""Host activities: declared names, plain properties, admission and revenue attribution.

An :class:`~commhistory.Activity` is something a contact did outside a
message. The host declares the names it records and, for each name, which
property keys are *plain* (stored in the clear so segments can filter on them,
like ``sku`` or ``url_path``); every other property is personal and encrypted
with the contact's data key. The declarations live in the database
(:meth:`~commhistory.store.activities.ActivityStore.declare`), so
``commhistory import`` checks a file's activities with no host code.

The rules here:

* :func:`parse_declarations` checks what a host declares;
* :class:`ActivityCatalog` checks an activity against the declarations: an
  undeclared name is an :class:`~commhistory.errors.UnknownActivityError`
  (``field="name"``); a plain property must be a JSON scalar, a string at most
  255 characters, and must not look like an email address, a phone number or a
  LINE user id (:func:`commhistory.normalize.personal_kind`, the one rule for
  every value stored in the clear), else
  :class:`~commhistory.errors.PersonalDataError` (``field="properties.KEY"``);
* :func:`admit` applies the catalog to parsed lines, so refused activities
  become dead letters like any invalid line;
* :func:`attribute` and :func:`attribution_feed`: revenue attribution to the
  last message the contact clicked (see :doc:`/activities` for the rule).

.. versionadded:: 0.4.0
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any, Final

import attrs

from commhistory.convert import ParsedLine, dumps
from commhistory.errors import InvalidInputError, PersonalDataError, UnknownActivityError
from commhistory.model import ACTIVITY_NAME, MAX_ID_LENGTH, Activity
from commhistory.normalize.personal import personal_kind
from commhistory.store.activities import ActivityStore, ClickRow
from commhistory.store.protocol import BatchFeed, StoredBatch

__all__ = [
    "PLAIN_KEY",
    "ActivityCatalog",
    "admit",
    "admit_records",
    "attribute",
    "attribution_feed",
    "check_window",
    "parse_declarations",
]

PLAIN_KEY: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")
"""What a plain property key looks like (it is shown in errors and stored in the clear)."""


def parse_declarations(
    declared: Mapping[str, Iterable[str]] | Iterable[str],
) -> dict[str, frozenset[str]]:
    """Check a host's activity declarations: ``{name: plain keys}``, or names alone.

    Args:
        declared: ``{"purchase": ["sku", "category"], "signup": []}``, or an
            iterable of names (none of whose properties is plain).

    Returns:
        ``{name: frozenset of plain keys}``.

    Raises:
        InvalidInputError: Nothing is declared (``field="activities"``), a name is
            not lower-case letters, digits and ``_`` (``field="name"``), or a plain
            key is not a string like ``sku`` (``field="NAME.plain_keys"``).
    """
    if isinstance(declared, str | bytes):
        raise InvalidInputError(
            field="activities", reason="expected a mapping of names to plain keys, or names"
        )
    pairs: Iterable[tuple[object, object]]
    pairs = declared.items() if isinstance(declared, Mapping) else ((n, ()) for n in declared)
    out: dict[str, frozenset[str]] = {}
    for name, given in pairs:
        if not isinstance(name, str) or not ACTIVITY_NAME.fullmatch(name):
            raise InvalidInputError(
                field="name",
                reason="an activity name is lower-case letters, digits and '_' "
                "(at most 64), like 'purchase'",
            )
        field = f"{name}.plain_keys"
        keys = () if given is None else given
        if isinstance(keys, str | bytes) or not isinstance(keys, Iterable):
            raise InvalidInputError(field=field, reason="expected a list of property keys")
        plain: set[str] = set()
        for key in keys:
            if not isinstance(key, str) or not PLAIN_KEY.fullmatch(key):
                raise InvalidInputError(
                    field=field,
                    reason="a plain key is a letter or '_' then letters, digits, '_', '.' "
                    "or '-' (at most 64), like 'sku'",
                )
            plain.add(key)
        out[name] = frozenset(plain)
    if not out:
        raise InvalidInputError(field="activities", reason="declare at least one name")
    return out


@attrs.frozen
class ActivityCatalog:
    """The activity names a host declared, each with its plain property keys.

    Attributes:
        names: ``{name: plain keys}``.
        region: The region national phone numbers in plain values are read in.

    .. versionadded:: 0.4.0
    """

    names: Mapping[str, frozenset[str]] = attrs.field(factory=dict)
    region: str = attrs.field(default="JP", kw_only=True)

    def __contains__(self, name: object) -> bool:
        return name in self.names

    def plain_keys(self, name: str) -> frozenset[str]:
        """The plain property keys of *name* (empty when it is not declared)."""
        return self.names.get(name, frozenset())

    def check(self, activity: Activity) -> None:
        """Check an activity against the declarations.

        Raises:
            UnknownActivityError: Its name is not declared (``field="name"``).
            InvalidInputError: A plain property is not a JSON scalar, or is a
                string longer than 255 characters (``field="properties.KEY"``).
            PersonalDataError: A plain property's value looks like an email
                address, a phone number or a LINE user id (``field="properties.KEY"``).
        """
        plain = self.names.get(activity.name)
        if plain is None:
            raise UnknownActivityError(
                field="name",
                reason="not a declared activity name; declare it first "
                "(declare_activities, commhistory declare-activities)",
            )
        properties = activity.properties
        if not plain or not properties:
            return
        region = self.region
        for key in _sorted(plain):
            if key not in properties:
                continue
            value = properties[key]
            if (
                type(value) is str
                and len(value) <= MAX_ID_LENGTH
                and personal_kind(value, region) is None
            ):
                continue  # the common case, checked without a call more
            _check_plain_value(f"properties.{key}", value, region)


@functools.lru_cache(maxsize=1024)
def _sorted(keys: frozenset[str]) -> tuple[str, ...]:
    """A declaration's plain keys in the order they are checked (the first bad one is named)."""
    return tuple(sorted(keys))


def _check_plain_value(field: str, value: Any, region: str) -> None:
    if value is None or isinstance(value, bool | int | float):
        return
    if not isinstance(value, str):
        raise InvalidInputError(
            field=field,
            reason="a plain property is a string, number, boolean or null; "
            "leave the key out of the plain keys to keep structured data (encrypted)",
        )
    if len(value) > MAX_ID_LENGTH:
        raise InvalidInputError(
            field=field, reason=f"a plain property is at most {MAX_ID_LENGTH} characters"
        )
    kind = personal_kind(value, region)
    if kind is not None:
        raise PersonalDataError(
            field=field,
            reason=f"the value looks like {kind.phrase}, which must not be stored in the clear; "
            "leave the key out of the plain keys (it is then encrypted)",
        )


def admit(
    lines: Iterable[ParsedLine], catalog: Callable[[], ActivityCatalog]
) -> Iterator[ParsedLine]:
    """Pass parsed lines through, refusing activities the catalog refuses.

    A refused activity becomes an error line (its raw text kept, so the store
    keeps it as a dead letter); every other line passes unchanged.

    Args:
        lines: The parsed lines.
        catalog: Returns the declarations; called once, at the first activity.
    """
    known: ActivityCatalog | None = None
    for line in lines:
        record = line.record
        if type(record) is Activity:
            if known is None:
                known = catalog()
            try:
                known.check(record)
            except InvalidInputError as exc:
                raw = line.raw if line.raw is not None else dumps(record)
                yield ParsedLine(line=line.line, raw=raw, error=exc)
                continue
        yield line


def admit_records(
    items: Iterable[object], catalog: Callable[[], ActivityCatalog]
) -> Iterator[ParsedLine]:
    """:func:`admit` for records: each becomes a line numbered by its position (from 1)."""
    return admit(
        (ParsedLine(line=n, raw=None, record=r) for n, r in enumerate(items, 1)),  # type: ignore[arg-type]
        catalog,
    )


# ---------------------------------------------------------------------- attribution


def check_window(window: object) -> timedelta | None:
    """Check an attribution window: a positive :class:`~datetime.timedelta`, or ``None`` (off).

    Raises:
        InvalidInputError: ``field="attribution_window"``: not a positive timedelta.
    """
    if window is None:
        return None
    if not isinstance(window, timedelta) or window <= timedelta(0):
        raise InvalidInputError(
            field="attribution_window", reason="expected a positive timedelta, or None for off"
        )
    return window


def attribute(activity: Activity, clicks: Iterable[ClickRow], window: timedelta) -> str | None:
    """Return the message an activity's revenue is attributed to, or ``None``.

    The rule: only an activity with revenue is attributed. Its contact's clicks
    count when they are people's (``machine`` false: scanner and proxy clicks,
    flagged by :mod:`commhistory.kpi.machine` or the provider, are left out),
    on an outbound message of any channel, at or before ``occurred_at`` and no
    earlier than ``occurred_at - window`` (both ends included). The latest such
    click wins; between clicks at the same instant, the message sent later;
    then the greater message id.

    Args:
        activity: The activity.
        clicks: Clicks (of any contacts; others are ignored).
        window: How far back a click counts.
    """
    if activity.revenue is None:
        return None
    until = activity.occurred_at
    since = until - window
    best: tuple[datetime, datetime, str] | None = None
    for c in clicks:
        if c.machine or c.contact_id != activity.contact_id:
            continue
        if not since <= c.clicked_at <= until:
            continue
        key = (c.clicked_at, c.sent_at, c.message_id)
        if best is None or key > best:
            best = key
    return None if best is None else best[2]


def attribution_feed(store: ActivityStore, window: timedelta) -> BatchFeed:
    """Return the batch feed that attributes each batch's new activities (see :func:`attribute`).

    Installed by the facade when it is given an ``attribution_window``. It runs
    inside the batch's transaction, after the batch is written: an activity is
    attributed once, when it is first stored, from the clicks stored by then.

    Args:
        store: The repository's activity port.
        window: How far back a click counts.
    """

    def feed(batch: StoredBatch) -> list[str]:
        paying = [a for a in batch.activities if a.revenue is not None]
        if not paying:
            return []
        clicks = store.clicks(
            {a.contact_id for a in paying},
            since=min(a.occurred_at for a in paying) - window,
            until=max(a.occurred_at for a in paying),
        )
        by_contact: dict[str, list[ClickRow]] = {}
        for c in clicks:
            by_contact.setdefault(c.contact_id, []).append(c)
        chosen = {}
        for a in paying:
            message_id = attribute(a, by_contact.get(a.contact_id, ()), window)
            if message_id is not None:
                chosen[a.activity_id] = message_id
        if chosen:
            store.attribute(chosen)
        return []  # attribution changes no consent or suppression

    return feed
