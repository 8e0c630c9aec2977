"""The shared base of every provider webhook adapter.

A provider adapter turns one HTTP request from a provider (SendGrid, Twilio,
LINE...) into canonical records. The base does everything that is the same for
all of them, so each provider module is mostly mapping tables:

* **size limit**: a body larger than ``max_body_bytes`` (5 MiB by default) is a
  :class:`~commhistory.PayloadError` before anything else is done with it;
* **verification** (:meth:`WebhookAdapter.verify`): each provider implements
  ``_verify``; helpers here compare in constant time and check signed
  timestamps against a window (±300 s by default, injectable clock);
* **decoding** the body (JSON or form) and splitting it into provider events;
* **per-event parsing**: one bad provider event becomes a dead letter, the
  others are kept; an unknown event name is a dead letter naming it (see
  ``providers._shared.unknown_event``) holding the raw event, never an
  ``UNKNOWN`` event;
* **dead-lettering** (:meth:`WebhookAdapter.handle`): a verified body that
  cannot be parsed at all is stored as one dead letter, so the receiver can
  answer 2xx and the provider stops retrying. Every webhook dead letter is a
  :class:`~commhistory.store.dead_letters.WebhookLetter` naming the provider and the
  adapter's version, which :meth:`WebhookAdapter.reparse_dead_letter` parses
  again on replay (without re-verifying: see there).

Every canonical record keeps the provider's raw event in
``metadata["provider_raw"]`` (metadata is encrypted at rest). Records get
deterministic ids (``"<provider>:<dedupe key>"``) and a ``provider_event_id``,
so a retried webhook is counted as a duplicate by the repository.

Inbound messages and consent changes need a contact id, which providers do
not know: adapters take a :data:`ContactResolver`. See
:class:`KeyedContactResolver` and :class:`RepositoryContactResolver`.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import abc
import base64
import binascii
import collections
import email.errors
import email.header
import email.message
import email.parser
import email.policy
import hashlib
import hmac
import importlib.metadata
import json
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, ClassVar, Final, Protocol
from urllib.parse import parse_qsl

import attrs

from commhistory.convert import ParsedLine
from commhistory.crypto import KeyProvider, derive_subkey
from commhistory.errors import InvalidInputError, PayloadError, SignatureError
from commhistory.model import BounceClass, Channel, Direction, Message, Purpose, Record
from commhistory.normalize import (
    classify_bounce,
    normalize_email,
    normalize_line_user_id,
    normalize_phone,
    parse_smtp_reply,
)
from commhistory.store.dead_letters import WebhookLetter

if TYPE_CHECKING:
    from commhistory.store.protocol import HistoryWriter, IngestReport

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_TOLERANCE",
    "Attachment",
    "ContactResolver",
    "HandleOutcome",
    "InMemoryReplayStore",
    "KeyedContactResolver",
    "MultipartForm",
    "ReplayStore",
    "RepositoryContactResolver",
    "WebhookAdapter",
    "WebhookRequest",
    "WebhookResult",
    "content_hash",
    "hmac_equal",
    "staff_key_from_keyring",
]

try:
    _PACKAGE_VERSION: Final = importlib.metadata.version("commhistory")
except importlib.metadata.PackageNotFoundError:  # pragma: no cover - a source tree
    _PACKAGE_VERSION = "0.0.0"  # type: ignore[misc]

DEFAULT_MAX_BODY_BYTES: Final = 5 * 1024 * 1024
"""The largest body an adapter accepts by default (5 MiB)."""

CONTACT_KEY_PURPOSE: Final = "inbound-contact"
"""The keyring subkey purpose of :meth:`KeyedContactResolver.from_keyring`."""

STAFF_KEY_PURPOSE: Final = "staff-pseudonym"
"""The keyring subkey purpose of :func:`staff_key_from_keyring`."""

DEFAULT_TOLERANCE: Final = 300.0
"""How far (in seconds, either way) a signed timestamp may be from now by default."""

ContactResolver = Callable[[Channel, str], "str | None"]
"""Maps an inbound sender to the business's contact id.

Called with the channel and the sender's *normalized* address (E.164 phone
number, LINE user id, email). Returns the contact id, or ``None`` when the
sender is not known (the item then becomes a dead letter, kept for replay).
Contact ids are stored in the clear: never return an address itself.
"""


class ReplayStore(Protocol):
    """Remembers one-time values (signature tokens) so a captured request cannot be replayed.

    An adapter that checks replays (:class:`~commhistory.providers.MailgunAdapter`)
    calls :meth:`remember` once per verified request. The default,
    :class:`InMemoryReplayStore`, is per process: with several workers or
    hosts, give every adapter one store they share (Redis ``SET NX EX``, or an
    ``INSERT`` into a table of your own with the key as primary key), or a
    request replayed to another worker passes. See ``docs/providers/mailgun.md``.

    .. versionadded:: 0.4.0
    """

    def remember(self, key: str, *, expires_at: float, now: float) -> bool:
        """Record *key* as used until *expires_at*; ``False`` when it already is.

        Must be atomic: of concurrent calls with the same unexpired key, exactly
        one returns ``True``. May forget a key once ``now`` is past its
        ``expires_at`` (the signed timestamp is refused by then anyway).

        Args:
            key: The value, namespaced by the adapter (``"mailgun:<token>"``).
            expires_at: Epoch seconds after which the key need not be kept.
            now: The adapter's current time (epoch seconds).

        Returns:
            ``True`` for a first use, ``False`` for a replay.
        """
        ...


class InMemoryReplayStore:
    """A bounded, thread-safe :class:`ReplayStore` in this process's memory.

    Share one instance between adapters of the same process; it does not reach
    other processes. When more than *max_size* unexpired keys are held, the
    oldest are forgotten (a replay of one of them would then pass).

    Args:
        max_size: The most keys kept.

    .. versionadded:: 0.4.0
    """

    def __init__(self, max_size: int = 100_000) -> None:
        size: object = max_size
        if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
            raise InvalidInputError(field="max_size", reason="must be a positive integer")
        self.max_size = max_size
        self._seen: collections.OrderedDict[str, float] = collections.OrderedDict()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"InMemoryReplayStore(max_size={self.max_size})"

    def __len__(self) -> int:
        return len(self._seen)

    def remember(self, key: str, *, expires_at: float, now: float) -> bool:
        """See :meth:`ReplayStore.remember`."""
        with self._lock:
            while self._seen:
                oldest, kept_until = next(iter(self._seen.items()))
                if now <= kept_until and len(self._seen) < self.max_size:
                    break
                del self._seen[oldest]
            known = self._seen.get(key)
            if known is not None and now <= known:
                return False
            self._seen[key] = expires_at
            self._seen.move_to_end(key)
            return True


def _lower_headers(value: Mapping[str, str] | Iterable[tuple[str, str]]) -> Mapping[str, str]:
    items = value.items() if isinstance(value, Mapping) else value
    return {str(k).lower(): str(v) for k, v in items}


@attrs.frozen(kw_only=True)
class WebhookRequest:
    """One HTTP request from a provider, as the adapters need it.

    Attributes:
        body: The raw body bytes, exactly as received (signatures cover them).
        headers: The request headers; names are lower-cased on construction.
        url: The full URL the provider called, with the query string (Twilio
            signs it); ``None`` when unknown.
        method: The HTTP method.

    .. versionadded:: 0.1.0
    """

    body: bytes = attrs.field(repr=False)
    headers: Mapping[str, str] = attrs.field(factory=dict, converter=_lower_headers, repr=False)
    url: str | None = attrs.field(default=None, repr=False)
    method: str = "POST"

    def header(self, name: str) -> str | None:
        """Return a header's value by case-insensitive name, or ``None``."""
        return self.headers.get(name.lower())

    @property
    def content_type(self) -> str:
        """The media type of the body, lower-cased, without parameters ("" when absent)."""
        value = self.headers.get("content-type", "")
        return value.split(";", 1)[0].strip().lower()


@attrs.frozen(kw_only=True)
class WebhookResult:
    """What parsing one request produced.

    Attributes:
        lines: One :class:`~commhistory.convert.ParsedLine` per canonical record or
            per provider event that could not be parsed (with its error), in order;
            ready for :meth:`Repository.ingest <commhistory.store.Repository.ingest>`.
        subscribe_url: For an Amazon SNS subscription confirmation: the URL
            that confirms it (already checked to be an SNS endpoint).

    .. versionadded:: 0.1.0
    """

    lines: tuple[ParsedLine, ...] = ()
    subscribe_url: str | None = None

    @property
    def records(self) -> list[Record]:
        """The canonical records, in order."""
        return [line.record for line in self.lines if line.record is not None]

    @property
    def errors(self) -> list[ParsedLine]:
        """The provider events that could not be parsed."""
        return [line for line in self.lines if line.record is None]


@attrs.frozen(kw_only=True)
class HandleOutcome:
    """What :meth:`WebhookAdapter.handle` did with a verified request.

    Attributes:
        report: What the repository stored.
        result: The parse result (empty when the whole body was dead-lettered).
        dead_lettered: True when the body could not be parsed at all and was
            stored as one dead letter.

    .. versionadded:: 0.1.0
    """

    report: IngestReport
    result: WebhookResult
    dead_lettered: bool = False


def content_hash(obj: object) -> str:
    """Return a stable SHA-256 hex digest of a JSON value (keys sorted, compact).

    Used as a dedupe key where the provider's own event id is missing or not
    stable across retries.
    """
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def hmac_equal(expected: bytes | str, given: bytes | str) -> bool:
    """Compare two signatures in constant time (strings are compared as UTF-8)."""
    a = expected.encode("utf-8") if isinstance(expected, str) else expected
    b = given.encode("utf-8") if isinstance(given, str) else given
    return hmac.compare_digest(a, b)


def b64decode_signature(value: str, *, header: str) -> bytes:
    """Decode a base64 signature from a header.

    Raises:
        SignatureError: The value is not base64.
    """
    try:
        return base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError(f"{header}: not valid base64") from None


_SAME_CONTACT: Final[Mapping[Channel, Channel]] = {Channel.VOICE: Channel.SMS}
"""Channels whose keyed contact ids are another channel's (one phone number, one person)."""


class KeyedContactResolver:
    """A :data:`ContactResolver` deriving a pseudonymous contact id from the address.

    The id is ``"c_"`` + the first 32 hex digits of HMAC-SHA256 over
    ``"<channel>:<address>"`` under *key*; a phone number's calls
    (:attr:`~commhistory.Channel.VOICE`) use ``sms``, so whoever calls and
    texts from one number is one contact. The same sender always gets the same
    id, and without the key the id reveals nothing about the address. Keep the
    key as secret as the keyring; changing it changes every derived id.

    Args:
        key: At least 16 bytes of secret key material.

    Raises:
        InvalidInputError: The key is shorter than 16 bytes.

    .. versionadded:: 0.1.0
    .. versionchanged:: 0.4.0
       Voice calls get the SMS id of their number.
    """

    def __init__(self, key: bytes) -> None:
        given: object = key
        if not isinstance(given, bytes) or len(given) < 16:
            raise InvalidInputError(field="key", reason="must be at least 16 bytes")
        self._key = key

    def __repr__(self) -> str:
        return "KeyedContactResolver(key=<hidden>)"

    @classmethod
    def from_keyring(cls, keys: KeyProvider) -> KeyedContactResolver:
        """Return the resolver keyed by the keyring: what the CLI uses when nothing is set.

        The key is the HKDF subkey ``"inbound-contact"`` of the keyring's blind-index
        key (:attr:`~commhistory.crypto.KeyProvider.index_key_id`), so the ids stay
        the same across ordinary key rotations and change only with an index-key
        rotation, like the blind indexes. Without the keyring, the ids reveal nothing
        about the addresses.

        .. versionadded:: 0.4.0
        """
        return cls(derive_subkey(keys, keys.index_key_id, CONTACT_KEY_PURPOSE))

    def __call__(self, channel: Channel, address: str) -> str:
        """Return the pseudonymous contact id of *address* on *channel*."""
        channel = _SAME_CONTACT.get(channel, channel)
        mac = hmac.new(self._key, f"{channel.value}:{address}".encode(), hashlib.sha256)
        return "c_" + mac.hexdigest()[:32]


class RepositoryContactResolver:
    """A :data:`ContactResolver` that looks the sender up in a repository.

    Finds the contacts earlier messages went to at the same address (through
    the repository's blind indexes). When exactly one contact matches it is
    returned; otherwise *fallback* decides (``None`` without one).

    Args:
        repository: The repository to search.
        fallback: Called when no single contact matches.

    .. versionadded:: 0.1.0
    """

    def __init__(self, repository: HistoryWriter, fallback: ContactResolver | None = None) -> None:
        self._repository = repository
        self._fallback = fallback

    def __call__(self, channel: Channel, address: str) -> str | None:
        """Return the contact id of *address* on *channel*, or ``None``."""
        if channel is Channel.EMAIL:
            found = self._repository.find_contacts(email=address)
        elif channel in (Channel.SMS, Channel.VOICE, Channel.WHATSAPP):
            found = self._repository.find_contacts(phone=address)
        elif channel is Channel.LINE:
            found = self._repository.find_contacts(line_user_id=address)
        else:
            found = []
        if len(found) == 1:
            return found[0]
        return None if self._fallback is None else self._fallback(channel, address)


def staff_key_from_keyring(keys: KeyProvider) -> bytes:
    """Return the ``staff_key`` adapters use when nothing else is set (what the CLI uses).

    The HKDF subkey ``"staff-pseudonym"`` of the keyring's blind-index key, so
    agent pseudonyms, like inbound contact ids, survive ordinary key rotations.

    .. versionadded:: 0.4.0
    """
    return derive_subkey(keys, keys.index_key_id, STAFF_KEY_PURPOSE)


# --------------------------------------------------------------------------- value helpers


def json_type(value: object) -> str:
    """Name a value's JSON type without showing it (it may be personal)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, list | tuple):
        return "array"
    return type(value).__name__


def as_object(value: object, *, field: str = "<event>") -> Mapping[str, Any]:
    """Return *value* as a JSON object.

    Raises:
        PayloadError: It is not one.
    """
    if type(value) is dict:  # the usual case, decoded JSON: skip the ABC check
        return value
    if not isinstance(value, Mapping):
        raise PayloadError(field=field, reason=f"expected an object, got {json_type(value)}")
    return value


def get_str(item: Mapping[str, Any], key: str, *, required: bool = False) -> str | None:
    """Return ``item[key]`` as a non-empty string, ``None`` when absent.

    Raises:
        PayloadError: The value is not a string, or is missing/empty and *required*.
    """
    value = item.get(key)
    if type(value) is str and value:  # the usual case; str() would return it as is
        return value
    if value is None or value == "":
        if required:
            raise PayloadError(field=key, reason="required")
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise PayloadError(field=key, reason=f"expected a string, got {json_type(value)}")
    return str(value)


def require_str(item: Mapping[str, Any], key: str) -> str:
    """Return ``item[key]`` as a non-empty string.

    Raises:
        PayloadError: The value is missing, empty or not a string.
    """
    value = get_str(item, key)
    if value is None:
        raise PayloadError(field=key, reason="required")
    return value


def get_mapping(item: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    """Return ``item[key]`` as an object (empty when absent).

    Raises:
        PayloadError: The value is present but not an object.
    """
    value = item.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise PayloadError(field=key, reason=f"expected an object, got {json_type(value)}")
    return value


def epoch(value: object, *, field: str, millis: bool = False) -> datetime:
    """Read epoch seconds (or milliseconds) as an aware UTC datetime.

    Raises:
        PayloadError: The value is not a number in range.
    """
    if type(value) is int and not millis:  # the usual case: whole epoch seconds
        try:
            return datetime.fromtimestamp(value, tz=UTC)
        except (OverflowError, OSError, ValueError):
            raise PayloadError(field=field, reason="timestamp out of range") from None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise PayloadError(field=field, reason="expected an epoch timestamp") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PayloadError(field=field, reason=f"expected a number, got {json_type(value)}")
    seconds = value / 1000 if millis else value
    try:
        return datetime.fromtimestamp(seconds, tz=UTC)
    except (OverflowError, OSError, ValueError):
        raise PayloadError(field=field, reason="timestamp out of range") from None


def iso_time(value: object, *, field: str) -> datetime:
    """Read an ISO 8601 timestamp with an offset as an aware UTC datetime.

    Raises:
        PayloadError: The value is not such a timestamp.
    """
    if not isinstance(value, str):
        raise PayloadError(field=field, reason=f"expected a timestamp, got {json_type(value)}")
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise PayloadError(field=field, reason="not an ISO 8601 timestamp") from None
    if parsed.utcoffset() is None:
        raise PayloadError(field=field, reason="timestamp has no time zone offset")
    return parsed.astimezone(UTC)


_COLON_OFFSET: Final = re.compile(r"([+-]\d\d):(\d\d)\s*$")


def mail_date(value: object) -> datetime | None:
    """Read an email-style date (RFC 5322/2822, or ISO 8601) as UTC; ``None`` when unreadable.

    The ``Date`` header of an inbound email, Twilio's ``Timestamp``. A date
    without a zone is unreadable (a guess would misplace it by hours), except
    RFC 5322's ``-0000`` (UTC, no local zone known).

    .. versionadded:: 0.4.0
    """
    if not isinstance(value, str) or not value.strip():
        return None
    text = _COLON_OFFSET.sub(r"\1\2", value.strip())  # "-04:00" is read as no zone otherwise
    try:
        parsed = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        try:
            return iso_time(value, field="Date")
        except PayloadError:
            return None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC) if text.endswith("-0000") else None
    try:
        return parsed.astimezone(UTC)
    except (OverflowError, ValueError):
        return None


def optional_email(value: object) -> str | None:
    """Normalize an email address; ``None`` when absent or invalid (the raw event keeps it)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return normalize_email(value)
    except InvalidInputError:
        return None


def phone_address(value: object, *, field: str, region: str) -> str:
    """Normalize a phone number (E.164).

    Raises:
        PayloadError: The value is missing or not a phone number.
    """
    if not isinstance(value, str) or not value:
        raise PayloadError(field=field, reason="required")
    try:
        return normalize_phone(value, region)
    except InvalidInputError as exc:
        raise PayloadError(field=field, reason=exc.reason) from None


def email_address(value: object, *, field: str) -> str:
    """Normalize an email address (a sender's, which must be readable).

    Raises:
        PayloadError: The value is missing or not an email address.

    .. versionadded:: 0.3.0
    """
    if not isinstance(value, str) or not value:
        raise PayloadError(field=field, reason="required")
    try:
        return normalize_email(value)
    except InvalidInputError as exc:
        raise PayloadError(field=field, reason=exc.reason) from None


def line_address(value: object, *, field: str) -> str:
    """Check a LINE user id.

    Raises:
        PayloadError: The value is missing or not a LINE user id.
    """
    if not isinstance(value, str) or not value:
        raise PayloadError(field=field, reason="required")
    try:
        return normalize_line_user_id(value)
    except InvalidInputError as exc:
        raise PayloadError(field=field, reason=exc.reason) from None


def enhanced_status(status: object, diagnostic: object) -> str | None:
    """Return the enhanced status code of a bounce or deferral, without classifying it.

    The code :func:`bounce_details` returns, for events whose bounce class is not
    needed (a deferral): classifying costs several more parses of the same text.

    Args:
        status: The provider's status code (enhanced ``"5.1.1"`` or basic ``550``).
        diagnostic: The provider's diagnostic text.
    """
    code = str(status) if isinstance(status, str | int) and not isinstance(status, bool) else None
    enhanced = None
    if code is not None:
        enhanced = parse_smtp_reply(code).enhanced
    if enhanced is None and isinstance(diagnostic, str):
        enhanced = parse_smtp_reply(diagnostic).enhanced
    return enhanced


def bounce_details(
    status: object, diagnostic: object, *, bounce: BounceClass | None = None
) -> tuple[str | None, BounceClass]:
    """Return the enhanced status code and bounce class of a bounce.

    Args:
        status: The provider's status code (enhanced ``"5.1.1"`` or basic ``550``).
        diagnostic: The provider's diagnostic text.
        bounce: A class the provider's own vocabulary already decided, if any.
    """
    enhanced = enhanced_status(status, diagnostic)
    if bounce is None:
        text = diagnostic if isinstance(diagnostic, str) else None
        code = (
            str(status) if isinstance(status, str | int) and not isinstance(status, bool) else None
        )
        bounce = classify_bounce(code, text)
    return enhanced, bounce


def decode_json(body: bytes) -> Any:
    """Decode a JSON body.

    Raises:
        PayloadError: The body is not UTF-8 JSON.
    """
    try:
        return json.loads(body)
    except UnicodeDecodeError:
        raise PayloadError(field="<body>", reason="not valid UTF-8") from None
    except json.JSONDecodeError as exc:
        raise PayloadError(
            field="<body>", reason=f"invalid JSON: {exc.msg} at column {exc.colno}"
        ) from None
    except RecursionError:
        raise PayloadError(field="<body>", reason="JSON nested too deeply") from None


def decode_form(body: bytes) -> dict[str, Any]:
    """Decode an ``application/x-www-form-urlencoded`` body.

    A key given once maps to its string; a key given several times to the list
    of its values, in order.

    Raises:
        PayloadError: The body is not UTF-8 form data.
    """
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text))
    except UnicodeDecodeError:
        raise PayloadError(field="<body>", reason="not valid UTF-8") from None
    except ValueError:
        raise PayloadError(field="<body>", reason="not form-encoded data") from None
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            prior = out[key]
            out[key] = [*prior, value] if isinstance(prior, list) else [prior, value]
        else:
            out[key] = value
    return out


def clean_text(value: str) -> str:
    """Replace lone surrogates (undecodable bytes of a mail header) with U+FFFD.

    .. versionadded:: 0.4.0
    """
    if value.isascii():
        return value
    return value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def decode_bytes(data: bytes, charset: str | None) -> str:
    """Decode text in its declared charset; UTF-8 when none or unknown.

    Undecodable bytes become U+FFFD rather than failing the message: the text
    is kept, and a wrong charset label is common in inbound mail.

    .. versionadded:: 0.4.0
    """
    try:
        return data.decode(charset or "utf-8", errors="replace")
    except (LookupError, TypeError):
        return data.decode("utf-8", errors="replace")


@attrs.frozen(kw_only=True)
class Attachment:
    """What is kept of an inbound email's attachment: never its content.

    Attributes:
        filename: The file name the sender gave, if any. Personal (kept only
            in the encrypted metadata).
        content_type: The media type, lower case (``"application/pdf"``).
        size: The size of the decoded content in bytes.

    .. versionadded:: 0.4.0
    """

    filename: str | None = attrs.field(repr=False)
    content_type: str
    size: int

    def as_metadata(self) -> dict[str, Any]:
        """The attachment as a JSON object (``filename``, ``content_type``, ``size``)."""
        return {"filename": self.filename, "content_type": self.content_type, "size": self.size}


@attrs.frozen(kw_only=True)
class MultipartForm:
    """A decoded ``multipart/form-data`` body: its text fields and its files.

    Attributes:
        fields: Each field's values, in order: the raw bytes and the part's
            declared charset (``None`` when it declares none).
        files: The file parts, without their content.

    .. versionadded:: 0.4.0
    """

    fields: Mapping[str, tuple[tuple[bytes, str | None], ...]] = attrs.field(repr=False)
    files: tuple[Attachment, ...] = ()

    def text(self, name: str, *, charset: str | None = None) -> str | None:
        """Return the first value of field *name* as text (``None`` when absent).

        Args:
            name: The field.
            charset: The charset to decode with when the part declares none
                (default UTF-8).
        """
        values = self.fields.get(name)
        if not values:
            return None
        data, declared = values[0]
        return decode_bytes(data, declared or charset)

    def as_form(self, charsets: Mapping[str, str] | None = None) -> dict[str, Any]:
        """Every field as text, shaped like ``decode_form``'s result."""
        out: dict[str, Any] = {}
        for name, values in self.fields.items():
            extra = (charsets or {}).get(name)
            texts = [decode_bytes(data, declared or extra) for data, declared in values]
            out[name] = texts[0] if len(texts) == 1 else texts
        return out


def decode_multipart(body: bytes, content_type: str) -> MultipartForm:
    """Decode a ``multipart/form-data`` body (RFC 7578) without keeping file contents.

    A part with a file name, or one that is not text, is a file: only its name,
    media type and size are kept.

    Args:
        body: The raw body.
        content_type: The request's whole ``Content-Type`` header (with the boundary).

    Raises:
        PayloadError: There is no boundary, or the body has no parts.

    .. versionadded:: 0.4.0
    """
    header = email.message.Message()
    header["content-type"] = content_type
    boundary = header.get_param("boundary")
    if not isinstance(boundary, str) or not boundary:
        raise PayloadError(field="Content-Type", reason="multipart/form-data without a boundary")
    prefix = f'Content-Type: multipart/form-data; boundary="{boundary}"\r\n\r\n'
    parsed = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(
        prefix.encode("utf-8", "surrogatepass") + body
    )
    parts = parsed.get_payload()
    if not parsed.is_multipart() or not isinstance(parts, list) or not parts:
        raise PayloadError(field="<body>", reason="no multipart/form-data parts")
    fields: dict[str, list[tuple[bytes, str | None]]] = {}
    files: list[Attachment] = []
    for part in parts:
        if not isinstance(part, email.message.Message):
            continue
        name = part.get_param("name", header="content-disposition")
        filename = part.get_filename()
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        kind = part.get_content_type().lower()
        if filename is not None or (part.get("content-type") and not kind.startswith("text/")):
            files.append(
                Attachment(
                    filename=clean_text(filename) if isinstance(filename, str) else None,
                    content_type=kind,
                    size=len(data),
                )
            )
            continue
        if not isinstance(name, str):
            continue  # a part that names no field carries nothing to read
        charset = part.get_content_charset() if part.get("content-type") else None
        fields.setdefault(clean_text(name), []).append((data, charset))
    return MultipartForm(
        fields={name: tuple(values) for name, values in fields.items()}, files=tuple(files)
    )


def mime_parts(message: bytes) -> tuple[email.message.Message, str | None, tuple[Attachment, ...]]:
    """Read a raw MIME email: its headers, its plain-text body, and its attachments' metadata.

    The body is the first ``text/plain`` part that is not an attachment (``None``
    when there is none); attachments keep only their name, type and size.

    .. versionadded:: 0.4.0
    """
    parsed = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(message)
    body: str | None = None
    attachments: list[Attachment] = []
    for part in parsed.walk():
        if part.is_multipart():
            continue
        disposition = str(part.get("content-disposition", "")).split(";", 1)[0].strip().lower()
        kind = part.get_content_type().lower()
        filename = part.get_filename()
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        if disposition == "attachment" or filename is not None:
            attachments.append(
                Attachment(
                    filename=clean_text(filename) if isinstance(filename, str) else None,
                    content_type=kind,
                    size=len(data),
                )
            )
        elif body is None and kind == "text/plain":
            body = clean_text(decode_bytes(data, part.get_content_charset()))
    return parsed, body, tuple(attachments)


def header_text(value: object) -> str | None:
    """Decode a raw header value (RFC 2047 encoded words); ``None`` when absent.

    .. versionadded:: 0.4.0
    """
    if value is None:
        return None
    text = str(value)
    try:
        decoded = str(email.header.make_header(email.header.decode_header(text)))
    except (email.errors.HeaderParseError, UnicodeError, LookupError, ValueError):
        decoded = text
    return clean_text(decoded) or None


def message_id_header(value: object) -> str | None:
    """Return a ``Message-ID`` header without its angle brackets, if it is a plain id.

    ``None`` when absent, empty, or unfit for a plain-text id (over 255
    characters, not ASCII, with control characters).

    .. versionadded:: 0.4.0
    """
    if not isinstance(value, str):
        return None
    bare = value.strip().strip("<>").strip()
    if not bare or len(bare) > 200 or not bare.isascii() or not bare.isprintable():
        return None
    return bare


# --------------------------------------------------------------------------- the base


class WebhookAdapter(abc.ABC):
    """Verifies and parses one provider's webhooks; the base of every adapter.

    Subclasses set :attr:`name`, implement :meth:`_verify`, :meth:`_events`
    (split the decoded body into provider events) and :meth:`_parse_event`
    (one provider event to canonical records), and usually override
    :meth:`_decode`.

    Args:
        max_body_bytes: The largest body accepted.
        tolerance: Seconds a signed timestamp may differ from now, either way
            (finite and non-negative).
        clock: Returns the current time in epoch seconds (inject one in tests).
        contact_resolver: Maps inbound senders to contact ids; without one,
            inbound messages and consent changes become dead letters.
        staff_key: Keys the pseudonyms that replace staff identifiers (a call
            centre agent's id) in records (:meth:`staff_pseudonym`); without
            one, staff identifiers are left out. See :func:`staff_key_from_keyring`.

    .. versionadded:: 0.1.0
    .. versionchanged:: 0.4.0
       ``staff_key``.
    """

    name: ClassVar[str]
    """The provider's name, used in records (``provider``) and ids."""

    auth_failure_status: ClassVar[int] = 403
    """The HTTP status web receivers answer when verification fails."""

    version: ClassVar[str] = _PACKAGE_VERSION
    """The adapter's version, kept in its dead letters.

    See :class:`~commhistory.store.dead_letters.WebhookLetter`.

    The built-in adapters carry the package's version; a third-party adapter
    may set its own.

    .. versionadded:: 0.4.0
    """

    def __init__(
        self,
        *,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        tolerance: float = DEFAULT_TOLERANCE,
        clock: Callable[[], float] = time.time,
        contact_resolver: ContactResolver | None = None,
        staff_key: bytes | None = None,
    ) -> None:
        size: object = max_body_bytes
        key: object = staff_key
        if key is not None and (not isinstance(key, bytes) or len(key) < 16):
            raise InvalidInputError(field="staff_key", reason="must be at least 16 bytes")
        window: object = tolerance
        if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
            raise InvalidInputError(field="max_body_bytes", reason="must be a positive integer")
        if not isinstance(window, int | float) or not math.isfinite(window) or window < 0:
            # NaN would compare false against every age and accept any timestamp.
            raise InvalidInputError(
                field="tolerance", reason="must be a finite, non-negative number"
            )
        self.max_body_bytes = max_body_bytes
        self.tolerance = float(tolerance)
        self.clock = clock
        self.contact_resolver = contact_resolver
        self._staff_key = staff_key

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    # ------------------------------------------------------------------ public

    @property
    def source(self) -> str:
        """The dead-letter source name of this adapter (``"webhook:<name>"``)."""
        return f"webhook:{self.name}"

    def check_size(self, request: WebhookRequest) -> None:
        """Refuse a body larger than :attr:`max_body_bytes`.

        Raises:
            PayloadError: ``field="<body>"``; the body is too large.
        """
        if len(request.body) > self.max_body_bytes:
            raise PayloadError(
                field="<body>", reason=f"larger than the limit of {self.max_body_bytes} bytes"
            )

    def verify(self, request: WebhookRequest) -> None:
        """Check that the request comes from the provider.

        Args:
            request: The request.

        Raises:
            PayloadError: The body is larger than the limit.
            SignatureError: The signature, credentials or signed timestamp do
                not verify; the message says why (never quoting secrets).
        """
        self.check_size(request)
        self._verify(request)

    def parse(self, request: WebhookRequest) -> WebhookResult:
        """Turn a (verified) request into canonical records.

        Each provider event becomes one or more records; one that cannot be
        parsed becomes an error line (kept as a dead letter on ingest).

        Args:
            request: The request; call :meth:`verify` first.

        Returns:
            The records and errors, in order.

        Raises:
            PayloadError: The body as a whole is too large, not decodable, or
                not shaped like this provider's webhooks.
        """
        self.check_size(request)
        payload = self._decode(request)
        lines: list[ParsedLine] = []
        for number, item in enumerate(self._events(payload, request), start=1):
            self._parse_item(number, item, request, lines)
        return WebhookResult(lines=tuple(lines), subscribe_url=self._subscribe_url(payload))

    def _parse_item(
        self, number: int, item: Any, request: WebhookRequest, lines: list[ParsedLine]
    ) -> None:
        """Parse one provider event into *lines*: its records, or one error line."""
        try:
            records = self._parse_event(item)
        except InvalidInputError as exc:
            lines.append(
                ParsedLine(line=number, raw=self._letter(number, item, request), error=exc)
            )
            return
        except (TypeError, ValueError, KeyError, AttributeError, IndexError) as exc:
            # A provider parser must raise InvalidInputError; anything else is
            # a malformed value it did not foresee. Keep the event, say so.
            error = PayloadError(field="<event>", reason=f"malformed event ({type(exc).__name__})")
            lines.append(
                ParsedLine(line=number, raw=self._letter(number, item, request), error=error)
            )
            return
        # Valid records carry no raw text: the provider event is already kept,
        # encrypted, in their metadata, and serializing it again per event
        # cost a fifth of the parse time.
        for record in records:
            lines.append(ParsedLine(line=number, raw=None, record=record))

    def _letter(self, number: int, item: Any, request: WebhookRequest) -> str:
        """The raw text of an event's dead letter: a :class:`WebhookLetter`.

        An event that survives a JSON round trip unchanged is kept alone; one
        that does not (a decoder's own object: a multipart form, a CloudEvent)
        is kept as the request body with the event's number, so a replay finds
        it again exactly.
        """
        text = _raw(item)
        try:
            same = json.loads(text) == item
        except (ValueError, RecursionError):
            same = False
        if same:
            letter = WebhookLetter(
                provider=self.name,
                adapter_version=self.version,
                part="event",
                event=number,
                payload=item,
            )
        else:
            letter = WebhookLetter.of_body(
                request.body,
                provider=self.name,
                adapter_version=self.version,
                content_type=request.header("content-type"),
                event=number,
            )
        return letter.dumps()

    def body_letter(self, request: WebhookRequest, error: InvalidInputError) -> ParsedLine:
        """The dead letter of a verified body that cannot be parsed at all.

        Kept whole, with its ``Content-Type``, as a :class:`WebhookLetter`, so a
        replay can parse it again (:meth:`reparse_dead_letter`).

        Args:
            request: The (verified) request.
            error: Why it cannot be parsed.

        .. versionadded:: 0.4.0
        """
        letter = WebhookLetter.of_body(
            request.body,
            provider=self.name,
            adapter_version=self.version,
            content_type=request.header("content-type"),
        )
        return ParsedLine(line=1, raw=letter.dumps(), error=error)

    def reparse_dead_letter(self, letter: WebhookLetter) -> list[ParsedLine]:
        """Parse a kept webhook dead letter again, with this adapter's mapping.

        What ``commhistory dead-letters replay`` and
        :meth:`CommHistory.replay_dead_letters
        <commhistory.facade.history.CommHistory.replay_dead_letters>` call, with
        the adapter their resolver returns for ``letter.provider``, e.g. after an
        upgrade that maps an event type the old adapter did not know.

        The signature is **not** checked again: the request was verified when
        it was received (nothing unverified is ever kept as a webhook dead
        letter), and signatures carry timestamps that have expired since and
        headers that are not kept. The letter itself was stored encrypted
        under the dead-letter key and is only readable to a key holder, so its
        payload is the verified one.

        Args:
            letter: The letter (:meth:`WebhookLetter.loads` of a dead letter's raw text).

        Returns:
            The lines, as :meth:`parse` returns them: records, and error lines
            for events that still fail. For a letter of one event, exactly its
            lines; for a whole body, every event of it.

        Raises:
            PayloadError: The letter is not this provider's, or the kept body
                still cannot be parsed as a whole.

        .. versionadded:: 0.4.0
        """
        if letter.provider != self.name:
            raise PayloadError(
                field="<letter>",
                reason=f"a dead letter of provider {letter.provider!r}, not {self.name!r}",
            )
        number = letter.event or 1
        if letter.part == "event":
            request = WebhookRequest(body=b"")
            lines: list[ParsedLine] = []
            self._parse_item(number, letter.payload, request, lines)
            return lines
        content_type = letter.content_type
        request = WebhookRequest(
            body=letter.body(),
            headers={} if content_type is None else {"content-type": content_type},
        )
        if letter.event is None:
            return list(self.parse(request).lines)
        self.check_size(request)
        items = self._events(self._decode(request), request)
        if not 1 <= letter.event <= len(items):
            raise PayloadError(
                field="<letter>", reason=f"the kept body has no event {letter.event}"
            )
        lines = []
        self._parse_item(letter.event, items[letter.event - 1], request, lines)
        return lines

    def handle(self, request: WebhookRequest, repository: HistoryWriter) -> HandleOutcome:
        """Verify, parse and store a request; what web receivers call.

        A body that verifies but cannot be parsed is stored as one dead letter
        (so the receiver can answer 2xx and the provider stops retrying).

        Args:
            request: The request.
            repository: Where to store the records.

        Returns:
            What was stored.

        Raises:
            PayloadError: The body is larger than the limit (nothing is stored).
            SignatureError: The request does not verify (nothing is stored).
            StorageError: The repository failed.
        """
        self.verify(request)
        try:
            result = self.parse(request)
        except PayloadError as exc:
            report = repository.ingest([self.body_letter(request, exc)], source=self.source)
            return HandleOutcome(report=report, result=WebhookResult(), dead_lettered=True)
        if result.subscribe_url is not None:
            self._on_subscribe(result.subscribe_url)
        report = repository.ingest(result.lines, source=self.source)
        return HandleOutcome(report=report, result=result)

    # ------------------------------------------------------------------ for subclasses

    @abc.abstractmethod
    def _verify(self, request: WebhookRequest) -> None:
        """Raise :class:`SignatureError` unless the request comes from the provider."""

    def _decode(self, request: WebhookRequest) -> Any:
        """Decode the body (JSON by default)."""
        return decode_json(request.body)

    @abc.abstractmethod
    def _events(self, payload: Any, request: WebhookRequest) -> Sequence[Any]:
        """Split a decoded body into provider events.

        Raises:
            PayloadError: The body is not shaped like this provider's webhooks.
        """

    @abc.abstractmethod
    def _parse_event(self, event: Any) -> list[Record]:
        """Turn one provider event (any decoded JSON value) into canonical records.

        Raises:
            InvalidInputError: The event cannot be parsed (it becomes a dead letter).
        """

    def _subscribe_url(self, payload: Any) -> str | None:
        """Return a subscription confirmation URL found in the payload (SNS only)."""
        return None

    def _on_subscribe(self, url: str) -> None:
        """Act on a subscription confirmation URL (SNS only)."""
        return

    def check_timestamp(self, signed: float, *, what: str = "timestamp") -> None:
        """Refuse a signed timestamp outside ``now ± tolerance``, or not a finite number.

        Raises:
            SignatureError: The timestamp is stale, in the future, or NaN or
                infinite (``float("nan")`` is no nearer or farther than any
                window, so it would otherwise pass).

        .. versionchanged:: 0.4.0
           NaN and infinite timestamps are refused.
        """
        if not math.isfinite(signed):
            raise SignatureError(f"{what}: not a finite number")
        now = self.clock()
        if abs(now - signed) > self.tolerance:
            direction = "old" if signed < now else "far in the future"
            raise SignatureError(
                f"{what} is too {direction} (more than {self.tolerance:g} s from now);"
                " check the server clock or the tolerance"
            )

    def resolve_contact(self, channel: Channel, address: str) -> str:
        """Return the contact id of an inbound sender.

        Raises:
            PayloadError: ``field="contact_id"``; no resolver is configured or the
                sender is unknown.
        """
        if self.contact_resolver is None:
            raise PayloadError(
                field="contact_id",
                reason="no contact resolver configured for inbound items (see contact_resolver)",
            )
        contact = self.contact_resolver(channel, address)
        if contact is None:
            raise PayloadError(field="contact_id", reason="the contact resolver knows no contact")
        returned: object = contact
        if not isinstance(returned, str) or not returned.strip():
            raise PayloadError(
                field="contact_id", reason="the contact resolver returned an empty id"
            )
        return contact

    def staff_pseudonym(self, identifier: str) -> str | None:
        """Return the pseudonym of a staff identifier, or ``None`` without a ``staff_key``.

        ``"a_"`` and the first 32 hex digits of HMAC-SHA256 over the identifier
        (an agent's ARN) under ``staff_key``: the same agent always gets the same
        pseudonym, which reveals nothing without the key.

        .. versionadded:: 0.4.0
        """
        if self._staff_key is None:
            return None
        mac = hmac.new(
            self._staff_key, identifier.encode("utf-8", "surrogatepass"), hashlib.sha256
        )
        return "a_" + mac.hexdigest()[:32]

    def ids(self, key: str) -> tuple[str, str]:
        """Return ``(record id, provider event id)`` for a dedupe key."""
        return f"{self.name}:{key}", key

    def inbound_email(
        self,
        *,
        sender: str,
        key: str,
        provider_message_id: str | None,
        sent_at: datetime,
        subject: str | None,
        body: str | None,
        attachments: Sequence[Attachment] = (),
        raw: Mapping[str, Any],
    ) -> Message:
        """Build the inbound :class:`~commhistory.Message` of a received email.

        The sender's contact id comes from the contact resolver. The subject and
        body are kept (encrypted at rest, like every personal field); of the
        attachments, only name, type and size, in ``metadata["attachments"]``
        (metadata is encrypted at rest too); their content never.

        Args:
            sender: The sender's normalized address.
            key: The dedupe key: the message id is ``"<provider>:<key>"``.
            provider_message_id: The provider's (or the email's) id, if any.
            sent_at: The email's ``Date``, or when it was received.
            subject: The subject.
            body: The plain-text body.
            attachments: The attachments' metadata.
            raw: What of the provider payload to keep in ``metadata["provider_raw"]``
                (without the email's content or attachments).

        Raises:
            PayloadError: ``field="contact_id"``; the sender resolves to no contact.

        .. versionadded:: 0.4.0
        """
        contact = self.resolve_contact(Channel.EMAIL, sender)
        metadata: dict[str, Any] = {"provider_raw": dict(raw)}
        if attachments:
            metadata["attachments"] = [a.as_metadata() for a in attachments]
        return Message(
            message_id=f"{self.name}:{key}",
            channel=Channel.EMAIL,
            direction=Direction.INBOUND,
            contact_id=contact,
            address=sender,
            sent_at=sent_at,
            purpose=Purpose.SERVICE,
            subject=clean_text(subject) if subject else None,
            body=clean_text(body) if body else None,
            provider=self.name,
            provider_message_id=provider_message_id,
            metadata=metadata,
        )


def _raw(item: object) -> str:
    try:
        return _ENCODE(item)
    except (TypeError, ValueError, RecursionError):
        return json.dumps(item, ensure_ascii=False, default=str)


_ENCODE: Final = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
