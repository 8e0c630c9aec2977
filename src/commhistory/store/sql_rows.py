"""Rows of the SQL store turned back into records, decrypting personal fields.

Records read back are rebuilt without re-running their validators (they were
validated on the way in; the ciphertexts authenticate).

.. versionadded:: 0.4.0
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final, TypeVar

import attrs

from commhistory.crypto import (
    FieldCipher,
)
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
)
from commhistory.normalize.time import from_micros
from commhistory.store._backend import Row
from commhistory.store.batching import (
    load_metadata,
)

if TYPE_CHECKING:
    pass

__all__ = ["consent_from_row", "event_decoder", "message_decoder"]

Decrypt = Callable[..., bytes | None]
_R = TypeVar("_R", Message, Event, ConsentEvent)


def _text(decrypt: Decrypt, blob: Any, table: str, column: str, row_id: str) -> str | None:
    if blob is None:
        return None
    data = decrypt(blob, table=table, column=column, row_id=row_id)
    return None if data is None else data.decode("utf-8")


def _meta(decrypt: Decrypt, blob: Any, table: str, row_id: str) -> dict[str, Any]:
    if blob is None:
        return {}
    return load_metadata(decrypt(blob, table=table, column="metadata", row_id=row_id))


def _builder(cls: type[_R]) -> Callable[..., _R]:
    """Make a function that rebuilds *cls* from all its fields, skipping validators.

    Everything stored was validated on the way in (and ciphertexts authenticate),
    so validating again, which re-normalizes every address, would only cost time
    on the read path. The builder takes every field by keyword, so a field added
    to the model and not read back here fails loudly (``TypeError``) in the tests.
    """
    names = [f.name for f in attrs.fields(cls)]
    lines = [f"def build(*, {', '.join(names)}):", "    record = new(cls)"]
    lines += [f"    set_(record, {name!r}, {name})" for name in names]
    lines.append("    return record")
    namespace: dict[str, Any] = {"new": object.__new__, "set_": object.__setattr__, "cls": cls}
    exec("\n".join(lines), namespace)  # noqa: S102 - code built from attrs field names only
    builder: Callable[..., _R] = namespace["build"]
    return builder


_build_message = _builder(Message)
_build_event = _builder(Event)
_CHANNELS: Final = {m.value: m for m in Channel}
_DIRECTIONS: Final = {m.value: m for m in Direction}
_PURPOSES: Final = {m.value: m for m in Purpose}
_EVENT_TYPES: Final = {m.value: m for m in EventType}
_BOUNCES: Final = {m.value: m for m in BounceClass}


def _metadata(text: str | None) -> dict[str, Any]:
    return {} if text is None else load_metadata(text.encode("utf-8"))


def message_decoder(cipher: FieldCipher) -> Callable[[Row], Message]:
    """Return a function turning ``messages`` rows of one contact into records."""
    address = cipher.text_opener("messages", "address")
    subject = cipher.text_opener("messages", "subject")
    body = cipher.text_opener("messages", "body")
    metadata = cipher.text_opener("messages", "metadata")

    def decode(r: Row) -> Message:
        mid = r[0]
        return _build_message(
            message_id=mid,
            contact_id=r[1],
            channel=_CHANNELS[r[2]],
            direction=_DIRECTIONS[r[3]],
            purpose=_PURPOSES[r[4]],
            campaign_id=r[5],
            variant=r[6],
            provider=r[7],
            provider_message_id=r[8],
            sent_at=from_micros(r[9]),
            address=address(r[10], mid) or "",
            subject=subject(r[11], mid),
            body=body(r[12], mid),
            metadata=_metadata(metadata(r[13], mid)),
        )

    return decode


def event_decoder(cipher: FieldCipher) -> Callable[[Row], Event]:
    """Return a function turning ``events`` rows of one contact into records."""
    address = cipher.text_opener("events", "address")
    reason = cipher.text_opener("events", "reason")
    url = cipher.text_opener("events", "url")
    user_agent = cipher.text_opener("events", "user_agent")
    ip = cipher.text_opener("events", "ip")
    metadata = cipher.text_opener("events", "metadata")

    def decode(r: Row) -> Event:
        eid = r[0]
        return _build_event(
            event_id=eid,
            message_id=r[1],
            provider=r[3],
            provider_message_id=r[4],
            provider_event_id=r[5],
            type=_EVENT_TYPES[r[6]],
            occurred_at=from_micros(r[7]),
            status_code=r[8],
            bounce=None if r[9] is None else _BOUNCES[r[9]],
            machine=bool(r[10]),
            revenue=None if r[11] is None else Decimal(r[11]),
            currency=r[13],
            address=address(r[15], eid),
            reason=reason(r[16], eid),
            url=url(r[17], eid),
            user_agent=user_agent(r[18], eid),
            ip=ip(r[19], eid),
            metadata=_metadata(metadata(r[20], eid)),
        )

    return decode


def consent_from_row(r: Row, decrypt: Decrypt) -> ConsentEvent:
    """Return a ``consent_events`` row (columns of ``CONSENT_COLUMNS``) as a record."""
    rid = r[0]
    return ConsentEvent(
        consent_id=rid,
        contact_id=r[1],
        channel=Channel(r[2]),
        purpose=Purpose(r[3]),
        action=ConsentAction(r[4]),
        method=ConsentMethod(r[5]),
        occurred_at=from_micros(r[6]),
        recorded_at=None if r[7] is None else from_micros(r[7]),
        notice_version=r[8],
        notice_hash=r[9],
        actor=r[10],
        source=None if r[11] is None else _text(decrypt, r[11], "consent_events", "source", rid),
        ip=None if r[12] is None else _text(decrypt, r[12], "consent_events", "ip", rid),
        user_agent=None
        if r[13] is None
        else _text(decrypt, r[13], "consent_events", "user_agent", rid),
        metadata=_meta(decrypt, r[14], "consent_events", rid),
    )
