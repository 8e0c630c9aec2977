"""Input split into write batches, with what storage derives from each record.

Both the SQL and the in-memory repository split their input with
:func:`batches`, so they accept, reject and count the same items.
"""

from __future__ import annotations

import json
import json.encoder
from collections.abc import Iterable, Iterator, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final

from commhistory.convert import dumps
from commhistory.errors import InvalidInputError, PayloadError
from commhistory.model import (
    Activity,
    ConsentEvent,
    ContactUpdate,
    Event,
    Message,
    consent_id_of,
)
from commhistory.normalize import normalize_email, normalize_line_user_id, normalize_phone
from commhistory.store.attributes import AttributeChange

if TYPE_CHECKING:
    from commhistory.convert import ParsedLine
    from commhistory.store.attributes import AttributeCodec
    from commhistory.store.protocol import IngestReport

__all__ = [
    "Batch",
    "BatchedWrites",
    "batches",
    "check_batch_size",
    "load_metadata",
    "metadata_bytes",
    "one_criterion",
    "properties_bytes",
    "revenue_micros",
    "storable_source",
]

REVENUE_SCALE: Final = 1_000_000
"""``revenue_micros = revenue * REVENUE_SCALE``: six decimal places, exact."""
_INT64_MAX: Final = 2**63 - 1


def revenue_micros(value: Decimal) -> int:
    """Return revenue in millionths of the currency unit, exactly.

    Raises:
        PayloadError: More than six decimal places, or too large to store.
    """
    scaled = value * REVENUE_SCALE
    if scaled != scaled.to_integral_value():
        raise PayloadError(field="revenue", reason="more than 6 decimal places cannot be stored")
    micros = int(scaled)
    if abs(micros) > _INT64_MAX:
        raise PayloadError(field="revenue", reason="too large to store")
    return micros


_encode: Final = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), allow_nan=False
).encode
"""Compact JSON, one encoder for every call (``json.dumps`` with options builds one each time)."""

_escape: Final = json.encoder.encode_basestring  # what the encoder above does to strings


def _dump(value: Mapping[str, Any]) -> str:
    """:data:`_encode`, with a fast path for a flat object of strings, integers, booleans, nulls.

    The same text as the encoder (keys in order, compact separators, strings
    escaped alike), about three times faster for the small objects host data
    usually is; anything else goes through the encoder.
    """
    parts = []
    for key, item in value.items():
        kind = type(item)
        if kind is str:
            parts.append(f"{_escape(key)}:{_escape(item)}")
        elif kind is int:
            parts.append(f"{_escape(key)}:{int.__repr__(item)}")
        elif item is None or kind is bool:
            parts.append(
                f"{_escape(key)}:{'null' if item is None else 'true' if item else 'false'}"
            )
        else:
            return _encode(value)
    return "{" + ",".join(parts) + "}"


def metadata_bytes(value: Mapping[str, Any]) -> bytes | None:
    """Serialize metadata as compact JSON (``None`` for an empty mapping).

    Raises:
        PayloadError: The metadata is not JSON-serialisable.
    """
    if not value:
        return None
    try:
        return _dump(value).encode("utf-8")
    except (TypeError, ValueError):
        raise PayloadError(field="metadata", reason="not JSON-serialisable") from None


def properties_bytes(
    properties: Mapping[str, Any], plain: frozenset[str]
) -> tuple[str | None, bytes | None]:
    """Split an activity's properties into plain JSON text and personal JSON bytes.

    Keys in *plain* go to the first (stored in the clear), every other key to
    the second (encrypted by the caller). ``None`` where there are none.

    Raises:
        PayloadError: The properties are not JSON-serialisable.
    """
    if not properties:
        return None, None
    if plain:
        shown = {k: v for k, v in properties.items() if k in plain}
        if len(shown) == len(properties):
            hidden: Mapping[str, Any] = {}
        else:
            hidden = {k: v for k, v in properties.items() if k not in plain}
    else:
        shown, hidden = {}, properties
    try:
        return (
            _dump(shown) if shown else None,
            _dump(hidden).encode("utf-8") if hidden else None,
        )
    except (TypeError, ValueError):
        raise PayloadError(field="properties", reason="not JSON-serialisable") from None


def load_metadata(value: bytes | None) -> dict[str, Any]:
    """Parse metadata written by :func:`metadata_bytes`."""
    if value is None:
        return {}
    loaded: dict[str, Any] = json.loads(value)
    return loaded


class Batch:
    """One batch of input, split by kind, with what storage derives from each record.

    Attributes:
        messages: New-looking messages, in input order.
        message_lines: Each message's line (or position) in the input.
        message_meta: Each message's serialized metadata.
        events: Events, in input order.
        event_lines: Each event's line (or position) in the input.
        event_meta: Each event's serialized metadata.
        event_revenue: Each event's revenue in micros (or ``None``).
        consents: Consent events, in input order.
        consent_lines: Each consent event's line (or position) in the input.
        consent_ids: Each consent event's id (given or derived).
        consent_meta: Each consent event's serialized metadata.
        activities: Activities, in input order.
        activity_lines: Each activity's line (or position) in the input.
        activity_revenue: Each activity's revenue in micros (or ``None``).
        stored_activities: The activities the batch stored (set when it is written).
        contact_updates: Contact attribute updates, in input order.
        contact_lines: Each update's line (or position) in the input.
        contact_changes: Each update's typed values, checked by the attribute codec.
        rejects: ``(line, field, reason, raw)`` of each rejected item.
        size: The number of items in the batch.
    """

    __slots__ = (
        "activities",
        "activity_lines",
        "activity_revenue",
        "codec",
        "consent_ids",
        "consent_lines",
        "consent_meta",
        "consents",
        "contact_changes",
        "contact_lines",
        "contact_updates",
        "event_lines",
        "event_meta",
        "event_revenue",
        "events",
        "message_lines",
        "message_meta",
        "messages",
        "rejects",
        "size",
        "stored_activities",
    )

    def __init__(self, codec: AttributeCodec | None = None) -> None:
        self.codec = codec
        self.contact_updates: list[ContactUpdate] = []
        self.contact_lines: list[int | None] = []
        self.contact_changes: list[AttributeChange] = []
        self.messages: list[Message] = []
        self.message_lines: list[int | None] = []
        self.message_meta: list[bytes | None] = []
        self.events: list[Event] = []
        self.event_lines: list[int | None] = []
        self.event_meta: list[bytes | None] = []
        self.event_revenue: list[int | None] = []
        self.consents: list[ConsentEvent] = []
        self.consent_lines: list[int | None] = []
        self.consent_ids: list[str] = []
        self.consent_meta: list[bytes | None] = []
        self.activities: list[Activity] = []
        self.activity_lines: list[int | None] = []
        self.activity_revenue: list[int | None] = []
        self.stored_activities: list[Activity] = []
        self.rejects: list[tuple[int | None, str, str, str]] = []
        self.size = 0

    def add(self, record: object, line: int | None, raw: str | None) -> None:
        """Add one record; a record storage cannot hold becomes a reject.

        Args:
            record: The record (anything else is rejected).
            line: Its line number or position in the input.
            raw: Its raw text; ``None`` to serialize the record canonically.
        """
        self.size += 1
        try:
            cls = type(record)
            if cls is Event:
                assert isinstance(record, Event)
                meta = metadata_bytes(record.metadata)
                rev = None if record.revenue is None else revenue_micros(record.revenue)
                self.events.append(record)
                self.event_lines.append(line)
                self.event_meta.append(meta)
                self.event_revenue.append(rev)
            elif cls is Message:
                assert isinstance(record, Message)
                meta = metadata_bytes(record.metadata)
                self.messages.append(record)
                self.message_lines.append(line)
                self.message_meta.append(meta)
            elif cls is ConsentEvent:
                assert isinstance(record, ConsentEvent)
                meta = metadata_bytes(record.metadata)
                self.consent_ids.append(consent_id_of(record))
                self.consents.append(record)
                self.consent_lines.append(line)
                self.consent_meta.append(meta)
            elif cls is Activity:
                assert isinstance(record, Activity)
                rev = None if record.revenue is None else revenue_micros(record.revenue)
                self.activities.append(record)
                self.activity_lines.append(line)
                self.activity_revenue.append(rev)
            elif cls is ContactUpdate:
                assert isinstance(record, ContactUpdate)
                self._add_contact(record, line)
            else:
                raise PayloadError(
                    field="<record>",
                    reason="expected a Message, Event, ConsentEvent, Activity or ContactUpdate, "
                    f"got {cls.__name__}",
                )
        except InvalidInputError as exc:
            self.reject(line, exc.field, exc.reason, _raw_of(record) if raw is None else raw)

    def _add_contact(self, record: ContactUpdate, line: int | None) -> None:
        if self.codec is None:
            raise PayloadError(
                field="<record>",
                reason="contact attributes need the declared schema: store them through "
                "the facade (CommHistory), which checks them",
            )
        values = tuple(self.codec(record))
        self.contact_updates.append(record)
        self.contact_lines.append(line)
        self.contact_changes.append(
            AttributeChange(contact_id=record.contact_id, at=record.at, values=values)
        )

    def reject(self, line: int | None, field: str, reason: str, raw: str) -> None:
        """Record an item that cannot be stored (counted in ``size`` by :meth:`add`)."""
        self.rejects.append((line, field, reason, raw))

    def conflict(self, record: Message, line: int | None) -> None:
        """Reject a message whose id is stored with a different contact, channel or direction.

        The whole record is kept (encrypted) as the dead letter: it is new data
        that would otherwise be dropped as a duplicate.
        """
        self.rejects.append((line, "message_id", CONFLICT_REASON, dumps(record)))

    def activity_conflict(self, record: Activity, line: int | None) -> None:
        """Reject an activity whose id is stored with a different contact or name.

        As for messages, the whole record is kept (encrypted) as the dead letter.
        """
        self.rejects.append((line, "activity_id", ACTIVITY_CONFLICT_REASON, dumps(record)))

    def refuse_erased(
        self, record: Message | Event | ConsentEvent | Activity | ContactUpdate, line: int | None
    ) -> None:
        """Reject a record of an erased contact, keeping only its ids (:func:`ids_only`)."""
        self.rejects.append((line, "contact_id", ERASED_REASON, ids_only(record)))


ERASED_REASON: Final = "the contact was erased; nothing more is stored for it"
"""The reason of a record refused because its contact was erased."""

CONFLICT_REASON: Final = (
    "a message with this id is stored with another contact, channel or direction"
)
"""The reason of a message refused because its id names a different stored message."""

ACTIVITY_CONFLICT_REASON: Final = "an activity with this id is stored with another contact or name"
"""The reason of an activity refused because its id names a different stored activity."""


def ids_only(record: Message | Event | ConsentEvent | Activity | ContactUpdate) -> str:
    """The raw text kept for a refused record of an erased contact: its ids, nothing personal.

    Keeping the whole line would collect the erased person's data again (an
    address, a body), so the dead letter holds only what names the record.
    """
    if isinstance(record, Message):
        doc: dict[str, str | None] = {
            "kind": "message", "message_id": record.message_id, "contact_id": record.contact_id,
        }  # fmt: skip
    elif isinstance(record, Event):
        doc = {
            "kind": "event", "event_id": record.event_id, "message_id": record.message_id,
            "provider": record.provider, "provider_event_id": record.provider_event_id,
        }  # fmt: skip
    elif isinstance(record, Activity):
        doc = {
            "kind": "activity", "activity_id": record.activity_id,
            "contact_id": record.contact_id,
        }  # fmt: skip
    elif isinstance(record, ContactUpdate):
        doc = {"kind": "contact", "contact_id": record.contact_id}
    else:
        doc = {
            "kind": "consent", "consent_id": consent_id_of(record),
            "contact_id": record.contact_id,
        }  # fmt: skip
    return json.dumps(doc, separators=(",", ":"))


def _raw_of(record: object) -> str:
    if isinstance(record, Message | Event | ConsentEvent | Activity | ContactUpdate):
        return dumps(record)
    return ""


def batches(
    items: Iterable[object],
    batch_size: int,
    *,
    parsed: bool = False,
    codec: AttributeCodec | None = None,
) -> Iterator[Batch]:
    """Split input into batches of at most *batch_size* items.

    Args:
        items: Records, or :class:`~commhistory.convert.ParsedLine` objects when *parsed*.
        batch_size: The most items in one batch.
        parsed: Whether *items* are parsed lines.
        codec: Checks and types contact attribute updates (without one they are rejected).

    Yields:
        Batches; only the current one is held in memory.
    """
    batch = Batch(codec)
    for position, item in enumerate(items, 1):
        if parsed:
            pl: ParsedLine = item  # type: ignore[assignment]
            if pl.record is not None:
                batch.add(pl.record, pl.line, pl.raw)
            else:
                batch.size += 1
                error = pl.error
                field = error.field if error is not None else "<line>"
                reason = error.reason if error is not None else "no record"
                batch.reject(pl.line, field, reason, pl.raw or "")
        else:
            batch.add(item, position, None)
        if batch.size >= batch_size:
            yield batch
            batch = Batch(codec)
    if batch.size:
        yield batch


def check_batch_size(batch_size: object) -> int:
    """Validate a batch size.

    Raises:
        InvalidInputError: It is not a positive integer.
    """
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise InvalidInputError(field="batch_size", reason="must be a positive integer")
    return batch_size


def one_criterion(
    email: str | None, phone: str | None, line_user_id: str | None
) -> tuple[str, str]:
    """Check that exactly one lookup criterion is given and normalize it.

    Returns:
        ``(kind, normalized value)``.

    Raises:
        InvalidInputError: Not exactly one criterion.
        NormalizationError: The value is invalid for its kind.
    """
    given = [
        (name, value)
        for name, value in (("email", email), ("phone", phone), ("line_user_id", line_user_id))
        if value is not None
    ]
    if len(given) != 1:
        raise InvalidInputError(
            field="find_contacts", reason="give exactly one of email, phone, line_user_id"
        )
    name, value = given[0]
    if not isinstance(value, str):
        raise InvalidInputError(
            field=name, reason=f"expected a string, got {type(value).__name__}"
        )
    if name == "email":
        return "email", normalize_email(value)
    if name == "phone":
        return "phone", normalize_phone(value)
    return "line", normalize_line_user_id(value)


SOURCE_MAX: Final = 255
"""The longest source name kept with dead letters (longer ones are cut)."""


def storable_source(source: str) -> str:
    """Return a source name every database stores: no NUL, no lone surrogate, bounded.

    A file name may hold bytes that are not valid in its file system's
    encoding (Python keeps them as lone surrogates), which PostgreSQL refuses;
    they become U+FFFD, so the batch's dead letters are still kept.

    .. versionadded:: 0.4.0
    """
    text = str(source).encode("utf-8", "replace").decode("utf-8").replace("\x00", "\ufffd")
    return text[:SOURCE_MAX]


class BatchedWrites:
    """The write entry points every repository shares: input split by :func:`batches`.

    A repository sets ``_batch_size`` and implements ``_write(parts, source)``,
    which stores each batch in its own unit of work; the source name is made
    storable (:func:`storable_source`) first.
    """

    __slots__ = ()
    _batch_size: int
    _attribute_codec: AttributeCodec | None
    """Set by each repository's ``set_attribute_codec``."""

    def _write(self, parts: Iterable[Batch], source: str) -> IngestReport:
        raise NotImplementedError

    def record_messages(self, items: Iterable[Message]) -> IngestReport:
        """Store messages; see :meth:`Repository.record_messages`."""
        return self._write(
            batches(items, self._batch_size, codec=self._attribute_codec), "record_messages"
        )

    def record_events(self, items: Iterable[Event]) -> IngestReport:
        """Store events; see :meth:`Repository.record_events`."""
        return self._write(
            batches(items, self._batch_size, codec=self._attribute_codec), "record_events"
        )

    def record_consent(self, items: Iterable[ConsentEvent]) -> IngestReport:
        """Append consent events; see :meth:`Repository.record_consent`."""
        return self._write(
            batches(items, self._batch_size, codec=self._attribute_codec), "record_consent"
        )

    def record_contacts(self, items: Iterable[ContactUpdate]) -> IngestReport:
        """Store contact attribute updates; see :meth:`Repository.record_contacts`.

        .. versionadded:: 0.4.0
        """
        return self._write(
            batches(items, self._batch_size, codec=self._attribute_codec), "record_contacts"
        )

    def record_activities(self, items: Iterable[Activity]) -> IngestReport:
        """Store activities; see :meth:`Repository.record_activities`.

        .. versionadded:: 0.4.0
        """
        return self._write(batches(items, self._batch_size), "record_activities")

    def ingest(self, lines: Iterable[ParsedLine], *, source: str) -> IngestReport:
        """Store parsed lines; see :meth:`Repository.ingest`."""
        return self._write(
            batches(lines, self._batch_size, parsed=True, codec=self._attribute_codec),
            storable_source(source),
        )
