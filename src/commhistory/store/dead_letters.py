"""Dead-letter storage: the port that lists, reads, re-words and removes rejected input.

:class:`DeadLetterStore` is what the facade needs to show and replay dead
letters: their plain columns (:class:`DeadLetterInfo`, nothing personal), one
letter with its raw text decrypted, a new reason for a letter that still fails,
and deleting the letters that were replayed. :class:`SQLDeadLetterStore` and
:class:`MemoryDeadLetterStore` implement it; a repository hands its own out as
``repo.dead_letter_store``. Deleting dead letters by age stays with retention
(:meth:`~commhistory.store.privacy.PrivacyStore.delete_dead_letters`).

A webhook's dead letter holds a :class:`WebhookLetter`: the provider event (or
the whole body) together with the provider's name and the adapter's version,
so that ``replay`` can hand it back to that provider's adapter after an
upgrade (:meth:`~commhistory.providers.WebhookAdapter.reparse_dead_letter`).

Every method runs in the repository's current transaction when one is open,
else in one of its own. SQL statements are built from schema identifiers and
placeholders; every value is bound.

.. versionadded:: 0.4.0
"""

# ruff: noqa: S608

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Collection
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol

import attrs

from commhistory.errors import NotFoundError, PayloadError
from commhistory.normalize.time import from_micros
from commhistory.store.layout import DEAD_LETTER_PURPOSE
from commhistory.store.protocol import DeadLetter

if TYPE_CHECKING:
    from datetime import datetime

    from commhistory.store.memory import MemoryState
    from commhistory.store.sql import SQLRepository

__all__ = [
    "DeadLetterInfo",
    "DeadLetterStore",
    "MemoryDeadLetterStore",
    "SQLDeadLetterStore",
    "WebhookLetter",
]

_WEBHOOK_KEY: Final = "commhistory_webhook_letter"
"""The key that marks a dead letter's raw text as a :class:`WebhookLetter` (its format version)."""


@attrs.frozen(kw_only=True)
class WebhookLetter:
    """What a webhook dead letter keeps: enough to parse it again with the provider's adapter.

    Stored as the dead letter's raw text (one JSON object, encrypted at rest like
    every dead letter) by :meth:`~commhistory.providers.WebhookAdapter.parse` and
    :meth:`~commhistory.providers.WebhookAdapter.handle`.

    Attributes:
        provider: The adapter's provider name (``"sendgrid"``).
        adapter_version: The adapter's version when the letter was made
            (:attr:`~commhistory.providers.WebhookAdapter.version`).
        part: ``"event"``: *payload* is one provider event, as decoded JSON.
            ``"body"``: *payload* is the request body (the whole body could not be
            parsed, or the event was not plain JSON and is found again by *event*).
        event: The 1-based number of the event in the request, when known; for a
            ``"body"`` letter, the event to parse again (``None``: the whole body).
        content_type: ``"body"`` only: the request's ``Content-Type`` header (with
            its parameters, e.g. a multipart boundary), which decoding needs.
        encoding: ``"body"`` only: ``"text"`` (UTF-8) or ``"base64"`` (a body that
            is not UTF-8, such as a multipart upload).
        payload: The event (any JSON value), or the body as text.

    .. versionadded:: 0.4.0
    """

    provider: str
    adapter_version: str
    part: Literal["event", "body"]
    event: int | None = None
    content_type: str | None = None
    encoding: Literal["text", "base64"] = "text"
    payload: Any = attrs.field(default=None, repr=False)

    @classmethod
    def of_body(
        cls,
        body: bytes,
        *,
        provider: str,
        adapter_version: str,
        content_type: str | None,
        event: int | None = None,
    ) -> WebhookLetter:
        """Keep a request body: as text when it is UTF-8, else base64."""
        try:
            text, encoding = body.decode("utf-8"), "text"
        except UnicodeDecodeError:
            text, encoding = base64.b64encode(body).decode("ascii"), "base64"
        return cls(
            provider=provider,
            adapter_version=adapter_version,
            part="body",
            event=event,
            content_type=content_type,
            encoding=encoding,  # type: ignore[arg-type]
            payload=text,
        )

    def body(self) -> bytes:
        """The request body of a ``"body"`` letter, as received.

        Raises:
            PayloadError: Not a ``"body"`` letter, or its base64 is damaged.
        """
        if self.part != "body" or not isinstance(self.payload, str):
            raise PayloadError(field="<letter>", reason="not a webhook body letter")
        if self.encoding == "text":
            return self.payload.encode("utf-8")
        try:
            return base64.b64decode(self.payload, validate=True)
        except (binascii.Error, ValueError):
            raise PayloadError(field="<letter>", reason="the kept body is not base64") from None

    def dumps(self) -> str:
        """The raw text to store (compact JSON; the same letter always gives the same text).

        An event that is not JSON (a provider decoder's own object) is written
        with ``str()``; such events are kept as ``"body"`` letters instead.
        """
        doc: dict[str, Any] = {
            _WEBHOOK_KEY: 1,
            "provider": self.provider,
            "adapter_version": self.adapter_version,
            "part": self.part,
        }
        if self.event is not None:
            doc["event"] = self.event
        if self.part == "body":
            doc["content_type"] = self.content_type
            doc["encoding"] = self.encoding
        doc["payload"] = self.payload
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":"), default=str)

    @classmethod
    def loads(cls, raw: str) -> WebhookLetter | None:
        """Read a dead letter's raw text; ``None`` when it is not a webhook letter.

        Letters stored before 0.4.0, and records a webhook produced that the
        store refused (kept as canonical JSON lines), are not webhook letters.
        """
        if _WEBHOOK_KEY not in raw[:40]:
            return None
        try:
            doc = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(doc, dict) or doc.get(_WEBHOOK_KEY) != 1:
            return None
        provider, version, part = doc.get("provider"), doc.get("adapter_version"), doc.get("part")
        event, encoding = doc.get("event"), doc.get("encoding", "text")
        content_type = doc.get("content_type")
        if (
            not isinstance(provider, str)
            or not isinstance(version, str)
            or part not in ("event", "body")
            or not (event is None or (type(event) is int and event >= 1))
            or encoding not in ("text", "base64")
            or not (content_type is None or isinstance(content_type, str))
        ):
            return None
        return cls(
            provider=provider,
            adapter_version=version,
            part=part,
            event=event,
            content_type=content_type,
            encoding=encoding,
            payload=doc.get("payload"),
        )


@attrs.frozen(kw_only=True)
class DeadLetterInfo:
    """A dead letter's plain columns: everything but its raw text (nothing personal).

    Attributes:
        id: The dead letter's id.
        received_at: When it was rejected (or last replayed and still failed), UTC.
        source: Where it came from (a file name, ``"record_events"``...).
        line: The 1-based line or row number in *source*, when known.
        field: The offending field (``"<line>"`` for the whole line).
        reason: Why it was rejected (never contains personal values).

    .. versionadded:: 0.4.0
    """

    id: str
    received_at: datetime
    source: str
    line: int | None
    field: str
    reason: str


def info_of(letter: DeadLetter) -> DeadLetterInfo:
    """Return a dead letter's plain columns, without its raw text."""
    return DeadLetterInfo(
        id=letter.id,
        received_at=letter.received_at,
        source=letter.source,
        line=letter.line,
        field=letter.field,
        reason=letter.reason,
    )


class DeadLetterStore(Protocol):
    """The storage port of dead letters: list, read one, re-word, delete.

    .. versionadded:: 0.4.0
    """

    def letters(
        self,
        *,
        source: str | None = None,
        ids: Collection[str] | None = None,
        limit: int | None = None,
    ) -> list[DeadLetterInfo]:
        """Return dead letters' plain columns, oldest first; nothing is decrypted.

        Args:
            source: Only those from this source.
            ids: Only these (unknown ids are left out).
            limit: At most this many.
        """
        ...

    def get(self, letter_id: str) -> DeadLetter:
        """Return one dead letter with its raw text decrypted.

        Raises:
            NotFoundError: No dead letter has this id (``kind="dead_letter"``).
        """
        ...

    def set_reason(self, letter_id: str, *, field: str, reason: str) -> None:
        """Give a dead letter that still fails its new field and reason.

        Raises:
            NotFoundError: No dead letter has this id.
        """
        ...

    def delete(self, letter_ids: Collection[str]) -> int:
        """Delete dead letters (replayed ones); return how many were deleted."""
        ...


# ---------------------------------------------------------------------- SQL

_INFO_COLUMNS = "dead_letter_id, received_at, source, line, field, reason"
_ORDER = " ORDER BY received_at, source, line, dead_letter_id"
_CHUNK = 500
"""Ids per ``IN (...)`` list (SQLite allows 32766 parameters, PostgreSQL 65535)."""


class SQLDeadLetterStore(DeadLetterStore):
    """:class:`DeadLetterStore` over :class:`~commhistory.store.sql.SQLRepository`.

    Args:
        repo: The repository.
    """

    def __init__(self, repo: SQLRepository) -> None:
        self.repo = repo
        self.ph = repo.backend.ph

    def letters(
        self,
        *,
        source: str | None = None,
        ids: Collection[str] | None = None,
        limit: int | None = None,
    ) -> list[DeadLetterInfo]:
        """See :meth:`DeadLetterStore.letters`."""
        sql = f"SELECT {_INFO_COLUMNS} FROM dead_letters"
        where: list[str] = []
        params: list[Any] = []
        if source is not None:
            where.append(f"source = {self.ph}")
            params.append(source)
        with self.repo.transaction(read=True) as conn:
            if ids is not None:
                wanted = list(dict.fromkeys(ids))
                if not wanted:
                    return []
                marks = ", ".join([self.ph] * len(wanted))
                where.append(f"dead_letter_id IN ({marks})")
                params.extend(wanted)
            if where:
                sql += " WHERE " + " AND ".join(where)
            sql += _ORDER
            if limit is not None:
                sql += f" LIMIT {int(limit)}"
            rows = conn.exec_driver_sql(sql, tuple(params)).all()
        return [
            DeadLetterInfo(
                id=dl_id,
                received_at=from_micros(received),
                source=src,
                line=line,
                field=field,
                reason=reason,
            )
            for dl_id, received, src, line, field, reason in rows
        ]

    def get(self, letter_id: str) -> DeadLetter:
        """See :meth:`DeadLetterStore.get`."""
        with self.repo.transaction(read=True) as conn:
            row = conn.exec_driver_sql(
                f"SELECT {_INFO_COLUMNS}, key_id, raw FROM dead_letters "
                f"WHERE dead_letter_id = {self.ph}",
                (letter_id,),
            ).first()
        if row is None:
            raise NotFoundError(kind="dead_letter", identifier=letter_id)
        dl_id, received, src, line, field, reason, key_id, raw = row
        cipher = self.repo.keyed_cipher(key_id, DEAD_LETTER_PURPOSE)
        text = cipher.decrypt_text(bytes(raw), table="dead_letters", column="raw", row_id=dl_id)
        return DeadLetter(
            id=dl_id,
            received_at=from_micros(received),
            source=src,
            line=line,
            field=field,
            reason=reason,
            raw=text or "",
        )

    def set_reason(self, letter_id: str, *, field: str, reason: str) -> None:
        """See :meth:`DeadLetterStore.set_reason`."""
        with self.repo.transaction() as conn:
            updated = conn.exec_driver_sql(
                f"UPDATE dead_letters SET field = {self.ph}, reason = {self.ph} "
                f"WHERE dead_letter_id = {self.ph}",
                (field, reason, letter_id),
            ).rowcount
        if not updated:
            raise NotFoundError(kind="dead_letter", identifier=letter_id)

    def delete(self, letter_ids: Collection[str]) -> int:
        """See :meth:`DeadLetterStore.delete`."""
        ids = list(dict.fromkeys(letter_ids))
        if not ids:
            return 0
        deleted = 0
        with self.repo.transaction() as conn:
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start : start + _CHUNK]
                marks = ", ".join([self.ph] * len(chunk))
                deleted += int(
                    conn.exec_driver_sql(
                        f"DELETE FROM dead_letters WHERE dead_letter_id IN ({marks})",
                        tuple(chunk),
                    ).rowcount
                )
        return deleted


# ---------------------------------------------------------------------- memory


class MemoryDeadLetterStore(DeadLetterStore):
    """:class:`DeadLetterStore` over a :class:`~commhistory.store.memory.MemoryState`.

    Args:
        state: The memory repository's state.
    """

    def __init__(self, state: MemoryState) -> None:
        self.s = state

    def letters(
        self,
        *,
        source: str | None = None,
        ids: Collection[str] | None = None,
        limit: int | None = None,
    ) -> list[DeadLetterInfo]:
        """See :meth:`DeadLetterStore.letters`."""
        wanted = None if ids is None else set(ids)
        found = [
            d
            for d in self.s.dead_letters
            if (source is None or d.source == source) and (wanted is None or d.id in wanted)
        ]
        found.sort(key=lambda d: (d.received_at, d.source, d.line or 0, d.id))
        if limit is not None:
            found = found[:limit]
        return [info_of(d) for d in found]

    def _index(self, letter_id: str) -> int:
        for i, d in enumerate(self.s.dead_letters):
            if d.id == letter_id:
                return i
        raise NotFoundError(kind="dead_letter", identifier=letter_id)

    def get(self, letter_id: str) -> DeadLetter:
        """See :meth:`DeadLetterStore.get`."""
        return self.s.dead_letters[self._index(letter_id)]

    def set_reason(self, letter_id: str, *, field: str, reason: str) -> None:
        """See :meth:`DeadLetterStore.set_reason`."""
        i = self._index(letter_id)
        self.s.dead_letters[i] = attrs.evolve(self.s.dead_letters[i], field=field, reason=reason)

    def delete(self, letter_ids: Collection[str]) -> int:
        """See :meth:`DeadLetterStore.delete`."""
        gone = set(letter_ids)
        kept = [d for d in self.s.dead_letters if d.id not in gone]
        deleted = len(self.s.dead_letters) - len(kept)
        self.s.dead_letters[:] = kept
        return deleted
