r"""AES-256-GCM envelopes: per-contact data keys and the personal fields they encrypt.

Every contact has its own random 256-bit *data key*. The data key encrypts that
contact's personal fields (:class:`FieldCipher`) and is stored only *wrapped*
(:func:`wrap_data_key`) under the ``"data-key-wrap"`` subkey of the key
provider's current root key. Destroying a contact's wrapped data key makes
every field of that contact unreadable (crypto-shredding).

Wrapped data key (:func:`wrap_data_key`)::

    0x01 | len(key_id) | key_id (ASCII) | nonce (12) | ciphertext (32) + tag (16)
    AAD = header (the first three parts) + b"contacts.data_key\x00" + contact_id (UTF-8)

Field envelope (:meth:`FieldCipher.encrypt`)::

    0x01 | len(key_ref) | key_ref (ASCII) | nonce (12) | ciphertext + tag (16)
    AAD = header + u32(len(table)) table + u32(len(column)) column + u32(len(row_id)) row_id

Lengths ``u32`` are big-endian and the strings UTF-8, so ``("a", "bc")`` and
``("ab", "c")`` never give the same AAD. Because the AAD binds the ciphertext to
its table, column and row, a ciphertext copied anywhere else fails to decrypt.
Nonces are 96 random bits from :func:`os.urandom`; with one data key per contact
no key comes near the 2**32 encryptions that random GCM nonces allow. Bulk
writes (:meth:`FieldCipher.row_sealer`) take them from a :class:`NoncePool`,
which slices one :func:`os.urandom` block into many nonces and hands each out once.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import lru_cache
from typing import Final, TypeAlias

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from commhistory.crypto.keyring import KeyProvider, derive_subkey
from commhistory.errors import CryptoError, DecryptionError, KeyNotFoundError

__all__ = [
    "DATA_KEY_SIZE",
    "ENVELOPE_FORMAT",
    "BytesLike",
    "ContactTextOpener",
    "FieldCipher",
    "NoncePool",
    "RowSealer",
    "TextOpener",
    "contact_text_opener",
    "envelope_key_ref",
    "new_data_key",
    "rewrap_data_key",
    "stored_bytes",
    "unwrap_data_key",
    "wrap_data_key",
    "wrap_data_keys",
    "wrapped_key_id",
]

DATA_KEY_SIZE: Final = 32
"""Length in bytes of a per-contact data key (AES-256)."""

ENVELOPE_FORMAT: Final = 1
"""The format version byte that starts wrapped data keys and field envelopes."""

_NONCE_SIZE: Final = 12
_TAG_SIZE: Final = 16
_WRAP_PURPOSE: Final = "data-key-wrap"
_WRAP_CONTEXT: Final = b"contacts.data_key\x00"
_WRAPPED_BODY_SIZE: Final = _NONCE_SIZE + DATA_KEY_SIZE + _TAG_SIZE
_REF_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")

_urandom = os.urandom

BytesLike: TypeAlias = bytes | bytearray | memoryview
"""What the decrypting functions accept: database drivers return any of these."""

_PREFIXES: dict[bytes, dict[tuple[str, str], bytes]] = {}
"""AAD prefixes by envelope header, then by (table, column); shared by all ciphers."""

_ROW_PREFIXES: dict[tuple[bytes, str, tuple[str, ...]], tuple[bytes, ...]] = {}
"""The AAD prefixes of :meth:`FieldCipher.row_sealer`, by (header, table, columns)."""

TextOpener: TypeAlias = Callable[[BytesLike | None, str], str | None]
"""``opener(blob, row_id) -> str | None``: see :meth:`FieldCipher.text_opener`."""

ContactTextOpener: TypeAlias = Callable[[str, BytesLike, BytesLike | None, str], str | None]
"""``opener(contact_id, wrapped_key, blob, row_id)``: see :func:`contact_text_opener`."""

RowSealer: TypeAlias = Callable[
    [str, Sequence[str | bytes | None], "NoncePool"], list[bytes | None]
]
"""``sealer(row_id, values, nonces) -> envelopes``: see :meth:`FieldCipher.row_sealer`."""

_FORKS: Final = [0]
"""How many times this process is a child of :func:`os.fork` (pools check it)."""


def _count_fork() -> None:
    _FORKS[0] += 1


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_count_fork)

_POOL_FIRST_BLOCK: Final = 16
_POOL_MAX_BLOCK: Final = 1024


def _nonce_blocks(forks: int) -> Iterator[bytes]:
    """Yield nonces sliced from CSPRNG blocks (16 nonces, doubling up to 1,024)."""
    urandom, count, step = _urandom, _FORKS, _NONCE_SIZE
    block = _POOL_FIRST_BLOCK
    while True:
        size = block * step
        data = urandom(size)
        for start in range(0, size, step):
            if count[0] != forks:
                raise CryptoError(
                    "a NoncePool cannot be used in a process forked after it was created"
                )
            yield data[start : start + step]
        block = min(block * 2, _POOL_MAX_BLOCK)


class NoncePool:
    """Fresh 96-bit AES-GCM nonces for one bulk write, drawn from the OS CSPRNG in blocks.

    One :func:`os.urandom` call yields up to 1,024 nonces (the first blocks are
    smaller, so a small write draws little), and each nonce is handed out once
    and never again: slices of one CSPRNG output are as random and as
    independent as separate draws, and a draw costs about a microsecond here.

    Create one for a batch of writes in one thread, give it to the sealers of
    :meth:`FieldCipher.row_sealer`, and drop it. It never hands out a nonce
    twice: a pool used by two threads at once raises :class:`ValueError`, and a
    pool used in a process forked after it was created (which would repeat the
    parent's remaining nonces) raises :class:`~commhistory.errors.CryptoError`.

    .. versionadded:: 0.1.0
    """

    __slots__ = ("_next",)

    def __init__(self) -> None:
        self._next: Callable[[], bytes] = _nonce_blocks(_FORKS[0]).__next__

    def take(self) -> bytes:
        """Return the next nonce: 12 bytes no other call of any pool returns.

        Raises:
            CryptoError: The process was forked after the pool was created.
        """
        return self._next()

    def __repr__(self) -> str:
        return "NoncePool()"


def new_data_key() -> bytes:
    """Return a new random 256-bit data key.

    Returns:
        32 bytes from the operating system's CSPRNG.
    """
    return _urandom(DATA_KEY_SIZE)


@lru_cache(maxsize=256)
def _wrapping_aead(subkey: bytes) -> AESGCM:
    return AESGCM(subkey)


_CHECKED_HEADERS: dict[str, bytes] = {}
"""Envelope headers of key refs already checked (every cipher of a store shares a few)."""


def _header(ref: str) -> bytes:
    return bytes((ENVELOPE_FORMAT, len(ref))) + ref.encode("ascii")


def _parse_header(blob: bytes, what: str) -> tuple[str, int]:
    """Return the key id or key ref in *blob*'s header and the header's length."""
    if len(blob) < 3 or blob[0] != ENVELOPE_FORMAT:
        if len(blob) >= 1 and blob[0] != ENVELOPE_FORMAT:
            raise DecryptionError(f"{what} has unknown format version {blob[0]}")
        raise DecryptionError(f"{what} is truncated")
    end = 2 + blob[1]
    if len(blob) < end:
        raise DecryptionError(f"{what} is truncated")
    try:
        ref = blob[2:end].decode("ascii")
    except UnicodeDecodeError:
        raise DecryptionError(f"{what} has a malformed header") from None
    if not _REF_RE.fullmatch(ref):
        raise DecryptionError(f"{what} has a malformed header")
    return ref, end


def _check_ref(ref: object, name: str) -> None:
    if not isinstance(ref, str) or not _REF_RE.fullmatch(ref):
        raise CryptoError(
            f"{name} must be 1-64 ASCII letters, digits or '._:-', starting with a letter or digit"
        )


def _check_data_key(data_key: object) -> None:
    if not isinstance(data_key, bytes) or len(data_key) != DATA_KEY_SIZE:
        raise CryptoError(f"a data key must be {DATA_KEY_SIZE} bytes")


def wrap_data_key(provider: KeyProvider, data_key: bytes, *, contact_id: str) -> bytes:
    """Encrypt a contact's data key under the provider's current root key.

    Args:
        provider: The key provider; its :attr:`~KeyProvider.current_key_id` is used.
        data_key: The 32-byte data key.
        contact_id: The contact the key belongs to; bound into the AAD, so the
            blob only unwraps for this contact.

    Returns:
        The wrapped blob (header, nonce, ciphertext and tag), 62 bytes plus the key id.

    Raises:
        CryptoError: *data_key* is not 32 bytes, or the current key id is malformed.
        KeyNotFoundError: The provider lacks its own current key.
    """
    _check_data_key(data_key)
    key_id = provider.current_key_id
    _check_ref(key_id, "a key id")
    header = _header(key_id)
    aead = _wrapping_aead(derive_subkey(provider, key_id, _WRAP_PURPOSE))
    nonce = _urandom(_NONCE_SIZE)
    aad = header + _WRAP_CONTEXT + contact_id.encode("utf-8")
    return header + nonce + aead.encrypt(nonce, data_key, aad)


def wrap_data_keys(provider: KeyProvider, data_keys: Mapping[str, bytes]) -> dict[str, bytes]:
    """Wrap many contacts' data keys at once: :func:`wrap_data_key` for a bulk write.

    Each blob is exactly what :func:`wrap_data_key` would return for its
    contact (same format, key and AAD; a fresh nonce each), but the wrapping
    subkey is derived and checked once and the nonces come from one CSPRNG
    call, which halves the cost per contact when thousands are created.

    Args:
        provider: The key provider; its :attr:`~KeyProvider.current_key_id` is used.
        data_keys: The 32-byte data key of each contact, by contact id.

    Returns:
        The wrapped blob of each contact, by contact id, in the order given.

    Raises:
        CryptoError: A data key is not 32 bytes, or the current key id is malformed.
        KeyNotFoundError: The provider lacks its own current key.

    .. versionadded:: 0.4.0
    """
    if not data_keys:
        return {}
    key_id = provider.current_key_id
    _check_ref(key_id, "a key id")
    header = _header(key_id)
    seal = _wrapping_aead(derive_subkey(provider, key_id, _WRAP_PURPOSE)).encrypt
    context = header + _WRAP_CONTEXT
    nonces = _urandom(_NONCE_SIZE * len(data_keys))
    out: dict[str, bytes] = {}
    start = 0
    for contact_id, data_key in data_keys.items():
        if type(data_key) is not bytes or len(data_key) != DATA_KEY_SIZE:
            _check_data_key(data_key)
        nonce = nonces[start : start + _NONCE_SIZE]
        start += _NONCE_SIZE
        out[contact_id] = header + nonce + seal(nonce, data_key, context + contact_id.encode())
    return out


def wrapped_key_id(blob: BytesLike) -> str:
    """Return the id of the root key that wrapped *blob* (rotation re-wraps the others).

    Args:
        blob: A blob from :func:`wrap_data_key`.

    Returns:
        The key id from the blob's header.

    Raises:
        DecryptionError: The blob is truncated or of an unknown format.
    """
    return _parse_header(bytes(blob), "wrapped data key")[0]


def unwrap_data_key(provider: KeyProvider, blob: BytesLike, *, contact_id: str) -> bytes:
    """Decrypt a contact's data key wrapped by :func:`wrap_data_key`.

    Any key the provider still holds works, not only the current one, so data
    keys wrapped before a rotation keep unwrapping.

    Args:
        provider: The key provider.
        blob: The wrapped data key.
        contact_id: The contact the key was wrapped for.

    Returns:
        The 32-byte data key.

    Raises:
        KeyNotFoundError: The provider has no key with the blob's key id (a
            different keyring, or the key was retired).
        DecryptionError: The blob is truncated, of an unknown format, altered,
            belongs to another contact, or was wrapped by a different key that
            reuses the same id.
    """
    blob = bytes(blob)
    key_id, end = _parse_header(blob, "wrapped data key")
    if len(blob) != end + _WRAPPED_BODY_SIZE:
        raise DecryptionError("wrapped data key has the wrong length (truncated or padded)")
    try:
        subkey = derive_subkey(provider, key_id, _WRAP_PURPOSE)
    except KeyNotFoundError as exc:
        hint = "; ".join(h for h in (exc.hint, "the contact's data key is wrapped under it") if h)
        raise KeyNotFoundError(key_id, hint=hint) from exc
    aad = blob[:end] + _WRAP_CONTEXT + contact_id.encode("utf-8")
    try:
        return _wrapping_aead(subkey).decrypt(
            blob[end : end + _NONCE_SIZE], blob[end + _NONCE_SIZE :], aad
        )
    except InvalidTag:
        raise DecryptionError(
            "wrapped data key does not authenticate: altered, stored for another contact, "
            f"or wrapped by a different key that is also named {key_id!r}"
        ) from None


def rewrap_data_key(provider: KeyProvider, blob: BytesLike, *, contact_id: str) -> bytes:
    """Re-wrap a data key under the provider's current key (a step of key rotation).

    Args:
        provider: The key provider; it must hold both the old and the current key.
        blob: The wrapped data key.
        contact_id: The contact the key belongs to.

    Returns:
        *blob* itself when it is already under the current key, else a new blob.

    Raises:
        KeyNotFoundError: The provider lacks the blob's key.
        DecryptionError: The blob does not unwrap for this contact.
    """
    if wrapped_key_id(blob) == provider.current_key_id:
        return bytes(blob)
    data_key = unwrap_data_key(provider, blob, contact_id=contact_id)
    return wrap_data_key(provider, data_key, contact_id=contact_id)


def contact_text_opener(
    provider: KeyProvider, *, key_ref: str, table: str, column: str
) -> ContactTextOpener:
    """Return a function decrypting one column's text for many contacts: the bulk read path.

    ``opener(contact_id, wrapped_key, blob, row_id)`` returns what
    ``FieldCipher(unwrap_data_key(provider, wrapped_key, contact_id=contact_id),
    key_ref=key_ref).decrypt_text(blob, table=table, column=column, row_id=row_id)``
    returns, and raises the same errors, but builds no :class:`FieldCipher` per
    contact: the wrapping subkey of each root key is derived once for the
    opener's life (make one per batch: a key retired meanwhile still opens what
    the batch reads), the column's AAD prefix is built once, and each call is one
    unwrap and one decryption. Anything unusual (another envelope header, a
    wrong length, a tag that does not authenticate) takes the checked path,
    which raises the precise error.

    Args:
        provider: The key provider the data keys are wrapped under.
        key_ref: The data key reference the envelopes carry (the store's own).
        table: The table the envelopes are read from.
        column: Their column.

    Returns:
        ``opener(contact_id, wrapped_key, blob, row_id) -> str | None``.

    Raises:
        CryptoError: *key_ref* is malformed.

    .. versionadded:: 0.4.0
    """
    _check_ref(key_ref, "key_ref")
    header = _header(key_ref)
    hl = len(header)
    body_at = hl + _NONCE_SIZE
    shortest = body_at + _TAG_SIZE
    prefix = header + _u32(table.encode("utf-8")) + _u32(column.encode("utf-8"))
    where = f"{table}.{column}"
    unwrappers: dict[bytes, Callable[[bytes, bytes, bytes], bytes]] = {}
    aead = AESGCM

    def checked(contact_id: str, wrapped: bytes, blob: bytes, row_id: str) -> str | None:
        data_key = unwrap_data_key(provider, wrapped, contact_id=contact_id)
        key_id, end = _parse_header(wrapped, "wrapped data key")
        if len(unwrappers) < 256:  # the next blob under this root key takes the fast path
            subkey = derive_subkey(provider, key_id, _WRAP_PURPOSE)
            unwrappers[wrapped[:end]] = _wrapping_aead(subkey).decrypt
        cipher = FieldCipher(data_key, key_ref=key_ref)
        return cipher.decrypt_text(blob, table=table, column=column, row_id=row_id)

    def opener(
        contact_id: str, wrapped_key: BytesLike, blob: BytesLike | None, row_id: str
    ) -> str | None:
        if blob is None:
            return None
        wrapped = (
            wrapped_key
            if type(wrapped_key) is bytes
            else stored_bytes(wrapped_key, "contacts.data_key")
        )
        if type(blob) is not bytes:
            blob = stored_bytes(blob, where)
        end = 2 + wrapped[1] if len(wrapped) > 2 else 0
        unwrap = unwrappers.get(wrapped[:end])
        if (
            unwrap is not None
            and len(wrapped) == end + _WRAPPED_BODY_SIZE
            and blob[:hl] == header
            and len(blob) >= shortest
        ):
            row = row_id.encode("utf-8")
            aad = prefix + len(row).to_bytes(4, "big") + row
            try:
                data_key = unwrap(
                    wrapped[end : end + _NONCE_SIZE],
                    wrapped[end + _NONCE_SIZE :],
                    wrapped[:end] + _WRAP_CONTEXT + contact_id.encode("utf-8"),
                )
                return aead(data_key).decrypt(blob[hl:body_at], blob[body_at:], aad).decode()
            except (InvalidTag, UnicodeDecodeError):
                pass
        return checked(contact_id, wrapped, blob, row_id)

    return opener


def envelope_key_ref(blob: BytesLike) -> str:
    """Return the data key reference in a field envelope's header.

    A repository that keeps several generations of a contact's data key uses it
    to pick the right :class:`FieldCipher`.

    Args:
        blob: A ciphertext from :meth:`FieldCipher.encrypt`.

    Returns:
        The ``key_ref`` the field was encrypted under.

    Raises:
        DecryptionError: The blob is truncated or of an unknown format.
    """
    return _parse_header(bytes(blob), "field ciphertext")[0]


def _u32(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


class FieldCipher:
    """Encrypts and decrypts one contact's personal fields under one data key.

    Build one per contact data key and reuse it: it keeps the AES-GCM context and
    the precomputed header. Safe to share between threads.

    Args:
        data_key: The contact's 32-byte data key.
        key_ref: A short, non-secret name for this data key written into every
            envelope (e.g. ``"c1"`` for generation 1), so a reader can tell which
            data key a ciphertext needs.

    Raises:
        CryptoError: *data_key* is not 32 bytes or *key_ref* is malformed.

    .. versionadded:: 0.1.0
    """

    __slots__ = ("_aead", "_header", "_header_len", "_key_ref", "_prefixes", "_sealers")

    def __init__(self, data_key: bytes, *, key_ref: str) -> None:
        _check_data_key(data_key)
        header = _CHECKED_HEADERS.get(key_ref) if type(key_ref) is str else None
        if header is None:
            _check_ref(key_ref, "key_ref")
            header = _header(key_ref)
            if len(_CHECKED_HEADERS) < 256:
                _CHECKED_HEADERS[key_ref] = header
        self._aead = AESGCM(data_key)
        self._key_ref = key_ref
        self._header = header
        self._header_len = len(self._header)
        # AAD prefixes depend only on the header (format and key_ref), the table and
        # the column, so every cipher with the same key_ref shares one table: a
        # repository caching thousands of contact ciphers keeps one copy, not one each.
        self._prefixes = _PREFIXES.setdefault(self._header, {})
        self._sealers: dict[tuple[str, tuple[str, ...]], RowSealer] = {}

    @property
    def key_ref(self) -> str:
        """The data key reference written into every envelope."""
        return self._key_ref

    def _prefix(self, table: str, column: str) -> bytes:
        prefix = self._prefixes.get((table, column))
        if prefix is None:
            prefix = self._header + _u32(table.encode("utf-8")) + _u32(column.encode("utf-8"))
            self._prefixes[(table, column)] = prefix
        return prefix

    def encrypt(
        self, plaintext: str | bytes | None, *, table: str, column: str, row_id: str
    ) -> bytes | None:
        """Encrypt one field value for one place: a table, a column and a row.

        Args:
            plaintext: The value; text is encoded as UTF-8. ``None`` stays ``None``.
            table: The table the ciphertext will be stored in.
            column: Its column.
            row_id: The row's id (its primary key, as text).

        Returns:
            The envelope: header, 12-byte nonce, ciphertext and 16-byte tag;
            ``None`` for ``None``.
        """
        if plaintext is None:
            return None
        if isinstance(plaintext, str):
            plaintext = plaintext.encode("utf-8")
        prefix = self._prefixes.get((table, column)) or self._prefix(table, column)
        row = row_id.encode("utf-8")
        nonce = _urandom(_NONCE_SIZE)
        aad = prefix + len(row).to_bytes(4, "big") + row
        return self._header + nonce + self._aead.encrypt(nonce, plaintext, aad)

    def encrypt_row(
        self, values: Mapping[str, str | bytes | None], *, table: str, row_id: str
    ) -> dict[str, bytes | None]:
        """Encrypt several columns of one row: the fast path for ingest.

        Equivalent to calling :meth:`encrypt` once per column, but it draws the
        nonces for the whole row from the CSPRNG in a single call, which saves
        about a third of a microsecond per field.

        Args:
            values: Plaintext by column name (``None`` values stay ``None``).
            table: The table.
            row_id: The row's id.

        Returns:
            Envelopes by column name, in the order of *values*.
        """
        row = row_id.encode("utf-8")
        row_aad = len(row).to_bytes(4, "big") + row
        nonces = _urandom(_NONCE_SIZE * len(values))
        header, seal, prefixes = self._header, self._aead.encrypt, self._prefixes
        out: dict[str, bytes | None] = {}
        start = 0
        for column, value in values.items():
            if value is None:
                out[column] = None
                continue
            data = value.encode("utf-8") if isinstance(value, str) else value
            prefix = prefixes.get((table, column)) or self._prefix(table, column)
            nonce = nonces[start : start + _NONCE_SIZE]
            start += _NONCE_SIZE
            out[column] = header + nonce + seal(nonce, data, prefix + row_aad)
        return out

    def row_sealer(self, table: str, columns: Sequence[str]) -> RowSealer:
        """Return a function encrypting the fields of one row at a time: the bulk write path.

        ``sealer(row_id, values, nonces)`` returns, for each of *columns* in
        order, what ``encrypt(value, table=table, column=column, row_id=row_id)``
        returns (``None`` for ``None``), but with the columns' AAD prefixes and
        the cipher bound once and the nonces taken from *nonces*, a
        :class:`NoncePool` that draws them from the CSPRNG in blocks. For three
        fields that is about 3.6 µs instead of 5.3 µs. The cipher keeps the
        sealer, so asking again for the same table and columns is cheap.

        Args:
            table: The table the envelopes will be stored in.
            columns: The columns of the values the sealer is given, in order.

        Returns:
            ``sealer(row_id, values, nonces) -> list of envelopes``. It raises
            :class:`ValueError` when *values* does not have one value per column,
            and :class:`~commhistory.errors.CryptoError` when *nonces* is not a
            :class:`NoncePool` (one per batch and thread; several sealers may
            share it).

        .. versionadded:: 0.1.0
        """
        shape = (table, tuple(columns))
        found = self._sealers.get(shape)
        if found is not None:
            return found
        header, seal = self._header, self._aead.encrypt
        key = (header, *shape)
        prefixes = _ROW_PREFIXES.get(key)
        if prefixes is None:  # shared by every cipher with this envelope header
            prefixes = _ROW_PREFIXES[key] = tuple(self._prefix(table, c) for c in columns)
        pool_type = NoncePool

        def sealer(
            row_id: str, values: Sequence[str | bytes | None], nonces: NoncePool
        ) -> list[bytes | None]:
            if type(nonces) is not pool_type:
                raise CryptoError("nonces must be a NoncePool")
            take = nonces._next  # the pool's own class, same module: skip a call layer
            row = row_id.encode("utf-8")
            aad_row = len(row).to_bytes(4, "big") + row
            out: list[bytes | None] = []
            append = out.append
            for value, prefix in zip(values, prefixes, strict=True):
                if value is None:
                    append(None)
                    continue
                nonce = take()
                data = value.encode("utf-8") if isinstance(value, str) else value
                append(header + nonce + seal(nonce, data, prefix + aad_row))
            return out

        self._sealers[shape] = sealer
        return sealer

    def decrypt(
        self, blob: BytesLike | None, *, table: str, column: str, row_id: str
    ) -> bytes | None:
        """Decrypt an envelope stored at *table*, *column*, *row_id*.

        Args:
            blob: The envelope from :meth:`encrypt` (``None`` stays ``None``).
            table: The table it was read from.
            column: Its column.
            row_id: Its row's id.

        Returns:
            The plaintext bytes, or ``None``.

        Raises:
            DecryptionError: The envelope was altered, truncated, copied from
                another table, column or row, or encrypted under another data
                key. The message names the table and column, never the value.
        """
        if blob is None:
            return None
        if type(blob) is not bytes:
            blob = stored_bytes(blob, f"{table}.{column}")
        # The read hot path (a timeline decrypts thousands of fields): no work
        # on success that only an error message needs.
        hl = self._header_len
        if blob[:hl] != self._header:
            ref, _ = _parse_header(blob, f"{table}.{column} ciphertext")
            raise DecryptionError(
                f"{table}.{column} ciphertext is under data key {ref!r}, not {self._key_ref!r}"
            )
        if len(blob) < hl + _NONCE_SIZE + _TAG_SIZE:
            raise DecryptionError(f"{table}.{column} ciphertext is truncated")
        row = row_id.encode("utf-8")
        prefix = self._prefixes.get((table, column)) or self._prefix(table, column)
        try:
            return self._aead.decrypt(
                blob[hl : hl + _NONCE_SIZE],
                blob[hl + _NONCE_SIZE :],
                prefix + len(row).to_bytes(4, "big") + row,
            )
        except InvalidTag:
            raise DecryptionError(
                f"{table}.{column} ciphertext does not authenticate: altered, moved from "
                "another table, column or row, or encrypted under another data key"
            ) from None

    def text_opener(
        self, table: str, column: str
    ) -> Callable[[BytesLike | None, str], str | None]:
        """Return a function decrypting text envelopes of one column: the bulk read path.

        ``opener(blob, row_id)`` equals ``decrypt_text(blob, table=table,
        column=column, row_id=row_id)`` and raises the same errors, but the
        column's AAD prefix and the cipher are bound once, which halves the
        per-field overhead when thousands of fields are read (a timeline).

        Args:
            table: The table the envelopes are read from.
            column: Their column.

        Returns:
            ``opener(blob, row_id) -> str | None``.

        .. versionadded:: 0.1.0
        """
        header, hl = self._header, self._header_len
        body_at = hl + _NONCE_SIZE
        shortest = body_at + _TAG_SIZE
        prefix = self._prefixes.get((table, column)) or self._prefix(table, column)
        open_ = self._aead.decrypt
        slow = self.decrypt_text

        def opener(blob: BytesLike | None, row_id: str) -> str | None:
            if blob is None:
                return None
            if type(blob) is not bytes:
                blob = stored_bytes(blob, f"{table}.{column}")
            if blob[:hl] == header and len(blob) >= shortest:
                row = row_id.encode("utf-8")
                try:
                    data = open_(
                        blob[hl:body_at],
                        blob[body_at:],
                        prefix + len(row).to_bytes(4, "big") + row,
                    )
                    return data.decode("utf-8")
                except (InvalidTag, UnicodeDecodeError):
                    pass
            # Anything unusual takes the checked path, which raises the precise error.
            return slow(blob, table=table, column=column, row_id=row_id)

        return opener

    def decrypt_text(
        self, blob: BytesLike | None, *, table: str, column: str, row_id: str
    ) -> str | None:
        """Decrypt an envelope holding text (see :meth:`decrypt`).

        Returns:
            The plaintext as ``str``, or ``None``.

        Raises:
            DecryptionError: As :meth:`decrypt`, or the plaintext is not UTF-8.
        """
        data = self.decrypt(blob, table=table, column=column, row_id=row_id)
        if data is None:
            return None
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            # ``from None``: the UnicodeDecodeError holds the plaintext bytes.
            raise DecryptionError(f"{table}.{column} plaintext is not UTF-8 text") from None

    def __repr__(self) -> str:
        return f"FieldCipher(key_ref={self._key_ref!r})"


def stored_bytes(value: object, where: str) -> bytes:
    """Return a stored binary value as ``bytes``, refusing anything that is not binary.

    A ciphertext column holding text (or a number) was written by something
    other than this library: the value is refused as undecryptable, naming the
    column and the type, never the value.

    Args:
        value: What the database returned.
        where: ``"table.column"``, for the message.

    Raises:
        DecryptionError: *value* is not ``bytes``, ``bytearray`` or ``memoryview``.

    .. versionadded:: 0.4.0
    """
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    raise DecryptionError(
        f"{where} holds a {type(value).__name__}, not a ciphertext (written outside commhistory?)"
    )
