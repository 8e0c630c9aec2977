"""Caches of the SQL store: a bounded LRU mapping, and what a transaction learned."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from commhistory.crypto import FieldCipher

__all__ = ["LRU", "Pending"]

K = TypeVar("K")
V = TypeVar("V")


class LRU(Generic[K, V]):
    """A bounded least-recently-used cache, safe to share between threads.

    Every operation holds one lock for its whole read-modify-write (an
    uncontended acquire costs tens of nanoseconds); :meth:`update` takes it
    once for all its entries.

    Args:
        maxsize: The most entries kept.

    .. versionchanged:: 0.4.0
       Thread-safe (it was not).
    """

    __slots__ = ("_data", "_lock", "_maxsize")

    def __init__(self, maxsize: int) -> None:
        self._data: OrderedDict[K, V] = OrderedDict()
        self._maxsize = maxsize
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        """Return the value for *key* (marking it recently used), or ``None``."""
        data = self._data
        with self._lock:
            value = data.get(key)
            if value is not None:
                data.move_to_end(key)
        return value

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)

    def put(self, key: K, value: V) -> None:
        """Store *value* under *key*, evicting the oldest entry when full."""
        with self._lock:
            self._put(key, value)

    def _put(self, key: K, value: V) -> None:  # the caller holds the lock
        data = self._data
        data[key] = value
        data.move_to_end(key)
        if len(data) > self._maxsize:
            data.popitem(last=False)

    def update(self, items: dict[K, V]) -> None:
        """Store several entries (atomically: another thread sees all or none)."""
        if not items:
            return
        with self._lock:
            for key, value in items.items():
                self._put(key, value)

    def clear(self) -> None:
        """Forget every entry."""
        with self._lock:
            self._data.clear()

    def discard(self, key: K) -> None:
        """Forget *key* if it is there."""
        with self._lock:
            self._data.pop(key, None)


class Pending:
    """Cache entries learned inside a transaction, applied only after it commits."""

    __slots__ = ("addresses", "ciphers", "created", "erased", "messages", "pairs", "refused")

    def __init__(self) -> None:
        self.addresses: dict[tuple[str, bytes, str], bool] = {}
        """Address rows ``(kind, blind index, contact)`` this transaction wrote or met."""
        self.ciphers: dict[str, FieldCipher] = {}
        self.created: set[str] = set()
        """Contacts this transaction created: nothing else of theirs is stored yet."""
        self.erased: set[str] = set()
        """Contacts found erased in this transaction: their records are refused."""
        self.refused: set[str | tuple[str, str]] = set()
        """Message ids and ``(provider, provider_message_id)`` pairs refused in this
        batch: events naming them are refused too, not kept as orphans."""
        self.messages: dict[str, str] = {}
        self.pairs: dict[tuple[str, str], tuple[str, str]] = {}
