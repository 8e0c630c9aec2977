r"""Blind indexes: find a contact by email, phone or LINE id without storing the value.

A blind index is ``HMAC-SHA256(subkey, kind + "\x00" + value)`` truncated to
``size`` bytes, where *subkey* is the ``"blind-index"`` subkey of the key
provider's index key. The database stores only the index; an equality lookup
recomputes it from the normalized value searched for. Nothing else about a
value (prefixes, ranges, similarity) can be queried, and without the key the
index reveals nothing but equality.

*kind* (``"email"``, ``"phone"``, ``"line"``) separates domains: the same string
indexed as two kinds gives unrelated indexes. A kind never contains ``"\x00"``,
so the message is unambiguous whatever the value holds.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import hmac
import re
from typing import Final

from commhistory.crypto.keyring import KeyProvider, derive_subkey
from commhistory.errors import CryptoError, InvalidInputError, KeyNotFoundError

__all__ = ["BLIND_INDEX_KINDS", "BlindIndexer"]

BLIND_INDEX_KINDS: Final = ("email", "line", "phone")
"""The kinds of value commhistory indexes (others may be added; see :meth:`BlindIndexer.index`)."""

_PURPOSE: Final = "blind-index"
_KIND_RE: Final = re.compile(r"[a-z][a-z0-9_]{0,31}")
_MIN_SIZE: Final = 8
_MAX_SIZE: Final = 32


def _is_size(key: object, size: int) -> bool:
    return isinstance(key, bytes) and len(key) == size


def _is_index_size(size: object) -> bool:
    return type(size) is int and _MIN_SIZE <= size <= _MAX_SIZE


class BlindIndexer:
    """Computes blind indexes under one key; build it once and reuse it.

    Args:
        subkey: The 32-byte blind-index key (usually from :meth:`from_provider`).
        key_id: The id of the root key *subkey* was derived from; stored next to
            indexes so a later index-key rotation can tell old ones apart.
        size: Bytes of HMAC output kept, from 8 to 32 (default 16, 128 bits).

    Raises:
        CryptoError: *subkey* is not 32 bytes.
        InvalidInputError: *size* is outside 8-32 (``field="size"``).

    .. versionadded:: 0.1.0
    """

    __slots__ = ("_bases", "_key", "_key_id", "_size")

    def __init__(self, subkey: bytes, *, key_id: str, size: int = 16) -> None:
        if not _is_size(subkey, 32):
            raise CryptoError("a blind-index key must be 32 bytes")
        if not _is_index_size(size):
            raise InvalidInputError(
                field="size", reason=f"must be an integer from {_MIN_SIZE} to {_MAX_SIZE}"
            )
        self._key = subkey
        self._key_id = key_id
        self._size = size
        # One HMAC state per kind with ``kind + "\x00"`` already absorbed; index() copies it.
        self._bases: dict[str, hmac.HMAC] = {}
        for kind in BLIND_INDEX_KINDS:
            self._base(kind)

    @classmethod
    def from_provider(
        cls, provider: KeyProvider, key_id: str | None = None, size: int = 16
    ) -> BlindIndexer:
        """Build an indexer from the ``"blind-index"`` subkey of a provider's root key.

        Args:
            provider: The key provider.
            key_id: The root key to use; defaults to ``provider.index_key_id``.
                Pass an older id to recompute indexes during an index-key rotation.
            size: Bytes of HMAC output kept (8-32, default 16).

        Returns:
            The indexer.

        Raises:
            KeyNotFoundError: The provider has no key *key_id*.
            InvalidInputError: *size* is outside 8-32.
        """
        key_id = provider.index_key_id if key_id is None else key_id
        try:
            subkey = derive_subkey(provider, key_id, _PURPOSE)
        except KeyNotFoundError:
            # A retired key: its blind-index subkey may have been kept for lookups.
            kept = getattr(provider, "lookup_subkey", None)
            if kept is None:
                raise
            subkey = kept(key_id)
        return cls(subkey, key_id=key_id, size=size)

    @property
    def key_id(self) -> str:
        """The id of the root key this indexer's key derives from."""
        return self._key_id

    @property
    def size(self) -> int:
        """The length in bytes of every index this indexer returns."""
        return self._size

    def _base(self, kind: str) -> hmac.HMAC:
        if not _KIND_RE.fullmatch(kind):
            raise InvalidInputError(
                field="kind", reason="must be a lower-case label such as 'email' or 'phone'"
            )
        base = hmac.new(self._key, kind.encode("ascii") + b"\x00", "sha256")
        self._bases[kind] = base
        return base

    def index(self, kind: str, normalized_value: str) -> bytes:
        """Return the blind index of a normalized value.

        Normalize first (:func:`commhistory.normalize_email`,
        :func:`commhistory.normalize_phone`): the index matches exact strings only.

        Args:
            kind: What the value is: ``"email"``, ``"phone"``, ``"line"``, or
                another lower-case label.
            normalized_value: The normalized value.

        Returns:
            :attr:`size` bytes.

        Raises:
            InvalidInputError: *kind* is not a lower-case label (``field="kind"``)
                or the value is empty (``field=kind``).
        """
        base = self._bases.get(kind) or self._base(kind)
        if not normalized_value:
            raise InvalidInputError(field=kind, reason="an empty value cannot be indexed")
        h = base.copy()
        h.update(normalized_value.encode("utf-8"))
        return h.digest()[: self._size]

    def __repr__(self) -> str:
        return f"BlindIndexer(key_id={self._key_id!r}, size={self._size})"
