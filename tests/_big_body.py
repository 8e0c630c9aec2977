"""Large request bodies that the tests never hold, and a peak-memory probe.

The receivers must refuse a body over the adapters' limit while reading it, so
these bodies are produced lazily: a generator (ASGI) or a file-like stream
(WSGI) that makes each chunk when it is asked for. ``peak_bytes`` measures the
Python heap's peak (``tracemalloc``) while a request runs.
"""

from __future__ import annotations

import io
import json
import tracemalloc
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TypeVar

from commhistory.providers.base import DEFAULT_MAX_BODY_BYTES
from commhistory.testing import SignedWebhook, signed_webhook

T = TypeVar("T")

LIMIT = DEFAULT_MAX_BODY_BYTES
"""The adapters' default body limit (5 MiB)."""

HUGE = 64 * 1024 * 1024
"""A body far over the limit (64 MiB, 12.8 times it)."""

PEAK_BOUND = 3 * LIMIT
"""Peak heap growth allowed while refusing a huge body."""

CHUNK = 64 * 1024


def chunks(total: int = HUGE) -> Iterator[bytes]:
    """Yield *total* bytes, 64 KiB at a time, each chunk a new object (as a server's)."""
    sent = 0
    while sent < total:
        size = min(CHUNK, total - sent)
        yield b"x" * size
        sent += size


async def achunks(total: int = HUGE) -> AsyncIterator[bytes]:
    """The asynchronous :func:`chunks`."""
    for piece in chunks(total):
        yield piece


class LazyStream(io.RawIOBase):
    """A WSGI input stream of *total* bytes made while read, never held.

    Args:
        total: How many bytes it yields.
        announced: What its size looks like to a test client that seeks to the
            end to compute ``Content-Length`` (default: *total*).
    """

    def __init__(self, total: int = HUGE, *, announced: int | None = None) -> None:
        self.total = total
        self.announced = total if announced is None else announced
        self.position = 0
        self.read_bytes = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_END:
            self.position = self.announced + offset
        elif whence == io.SEEK_CUR:
            self.position += offset
        else:
            self.position = offset
        return self.position

    def read(self, size: int | None = -1) -> bytes:
        remaining = max(self.total - self.position, 0)
        n = remaining if size is None or size < 0 else min(size, remaining)
        self.position += n
        self.read_bytes += n
        return b"x" * n

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def peak_bytes(call: Callable[[], T]) -> tuple[T, int]:
    """Run *call*; return its result and the peak heap growth (bytes) meanwhile."""
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        result = call()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        if started:
            tracemalloc.stop()
    return result, peak - base


def just_under_limit(secret: str = "s3cret") -> SignedWebhook:
    """A signed LINE webhook (one follow event) padded to just under the limit."""
    body = {
        "destination": "Uaaaabbbbccccddddeeeeffff00001111",
        "events": [
            {
                "type": "follow",
                "mode": "active",
                "timestamp": 1775001600000,
                "source": {"type": "user", "userId": "U4af4980629a0b1c2d3e4f5a6b7c8d9e0"},
                "webhookEventId": "01HX0000000000000000000001",
                "deliveryContext": {"isRedelivery": False},
                "replyToken": "r1",
                "follow": {"isUnblocked": False},
            }
        ],
        "padding": "",
    }
    size = len(json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode())
    body["padding"] = "p" * (LIMIT - size - 16)
    webhook = signed_webhook("line", body, secret)
    assert LIMIT - 64 < len(webhook.body) <= LIMIT, len(webhook.body)
    return webhook
