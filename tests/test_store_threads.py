"""One SQL repository shared between threads (decision 14): caches, feeds, writes, reads."""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from commhistory import Channel, Direction, Message
from commhistory.errors import NotFoundError
from commhistory.facade import CommHistory
from commhistory.store import SQLRepository, StoredBatch
from commhistory.store._lru import LRU
from tests._webhook_cases import web_repository

__all__ = ["web_repository"]


@pytest.fixture(autouse=True)
def _switch_often() -> Iterator[None]:
    """Let the interpreter switch threads far more often than every 5 ms."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def _message(t: int, i: int) -> Message:
    return Message(
        message_id=f"m-{t}-{i}",
        contact_id=f"c-{i % 5}",
        channel=Channel.EMAIL,
        direction=Direction.OUTBOUND,
        address=f"person{i % 5}@example.com",
        sent_at=datetime(2026, 4, 1, tzinfo=UTC) + timedelta(seconds=t * 1000 + i),
        provider="sendgrid",
        provider_message_id=f"sg-{t}-{i}",
    )


def test_record_and_read_from_many_threads(web_repository: CommHistory[SQLRepository]) -> None:
    """Writers and readers share one repository; the caches stay consistent."""
    repo = web_repository
    writers, per_writer = 6, 30
    start = threading.Barrier(writers + 2)
    done = threading.Event()

    def write(t: int) -> int:
        start.wait()
        inserted = 0
        for i in range(per_writer):
            inserted += repo.record_messages([_message(t, i)]).inserted
            if i % 7 == 0:
                repo.store.forget_cached_keys()  # churn the caches under the others
        return inserted

    def read() -> int:
        start.wait()
        reads = 0
        while not done.is_set():
            for c in range(5):
                try:
                    entries = repo.timeline(f"c-{c}")
                except NotFoundError:  # not written yet
                    continue
                assert {e.message.contact_id for e in entries} == {f"c-{c}"}
                assert {e.message.address for e in entries} == {f"person{c}@example.com"}
                reads += 1
        return reads

    with ThreadPoolExecutor(writers + 2) as pool:
        readers = [pool.submit(read) for _ in range(2)]
        written = list(pool.map(write, range(writers)))
        done.set()
        assert all(r.result() > 0 for r in readers)
    assert sum(written) == writers * per_writer
    again = repo.record_messages(_message(t, i) for t in range(writers) for i in range(per_writer))
    assert (again.inserted, again.duplicates) == (0, writers * per_writer)
    total = sum(len(list(repo.timeline(f"c-{c}"))) for c in range(5))
    assert total == writers * per_writer


def test_lru_shared_between_threads() -> None:
    """Get, put, update, discard and clear from many threads: no error, the bound holds."""
    cache: LRU[int, int] = LRU(4)
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def hammer(seed: int) -> None:
        start.wait()
        try:
            for n in range(20_000):
                key = (seed * 7 + n) % 9
                cache.put(key, n)
                cache.get((key + 3) % 9)
                if n % 50 == 0:
                    cache.update({key: n, key + 1: n})
                if n % 97 == 0:
                    cache.discard(key)
                if n % 1001 == 0:
                    cache.clear()
                assert len(cache) <= 5  # maxsize, plus one between insert and evict
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(s,)) for s in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(cache) <= 4


def _in_other_thread(call: Any, *, wait: float = 0.3) -> None:
    """Run *call* in another thread; wait up to *wait* seconds for it to finish."""
    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(wait)


class _Interleaving(OrderedDict[int, int]):
    """An LRU's storage that lets another thread act between a lookup and what follows."""

    meanwhile: Any = None

    def get(self, key: int, default: Any = None) -> Any:
        value = super().get(key, default)
        meanwhile, self.meanwhile = self.meanwhile, None
        if meanwhile is not None:
            _in_other_thread(meanwhile)
        return value


def test_lru_get_is_atomic() -> None:
    """Another thread evicting the key between ``get``'s lookup and its reorder waits.

    Before the LRU locked, the other thread's ``clear()`` ran in between and the
    reorder raised ``KeyError``; now it waits for the lock, and runs afterwards.
    """
    cache: LRU[int, int] = LRU(4)
    data = _Interleaving()
    cache._data = data
    cache.put(1, 10)
    data.meanwhile = cache.clear
    assert cache.get(1) == 10
    for _ in range(100):  # the waiting clear() runs once get() lets go
        if len(cache) == 0:
            break
        threading.Event().wait(0.01)
    assert len(cache) == 0


def test_installing_a_feed_during_a_batch(web_repository: CommHistory[SQLRepository]) -> None:
    """A feed installed by another thread while a batch runs its feeds breaks nothing.

    Before, the batch iterated the live dict that ``set_batch_feed`` changed, and
    failed with ``RuntimeError: dictionary changed size during iteration``.
    """
    store = web_repository.store
    calls: list[str] = []

    def later(batch: StoredBatch) -> Iterable[str]:
        calls.append("later")
        return ()

    def installs(batch: StoredBatch) -> Iterable[str]:
        calls.append("installs")
        _in_other_thread(lambda: store.set_batch_feed("later", later))
        return ()

    store.set_batch_feed("installs", installs)
    first = web_repository.record_messages([_message(0, 0)])
    assert first.inserted == 1
    assert calls == ["installs"]
    second = web_repository.record_messages([_message(0, 1)])
    assert second.inserted == 1
    assert calls == ["installs", "installs", "later"]
