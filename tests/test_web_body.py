"""The receivers' body readers: stop at the limit, hold no more than it plus a chunk."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator

from commhistory.web import WebhookReceiver, read_body, read_body_async
from tests._big_body import HUGE, LazyStream


def test_read_body_returns_a_body_within_the_limit() -> None:
    assert read_body(io.BytesIO(b"abc").read, 3) == b"abc"
    assert read_body(io.BytesIO(b"").read, 3) == b""
    assert read_body(io.BytesIO(b"abcd").read, 3) is None


def test_read_body_stops_reading_at_the_limit() -> None:
    stream = LazyStream(HUGE)
    assert read_body(stream.read, 1000, chunk_size=300) is None
    assert stream.read_bytes == 1001  # never asks for more than one byte past the limit


def test_read_body_async_stops_pulling_at_the_limit() -> None:
    pulled = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal pulled
        while True:
            pulled += 1
            yield b"x" * 100

    assert asyncio.run(read_body_async(chunks(), 1000)) is None
    assert pulled == 11

    async def small() -> AsyncIterator[bytes]:
        yield b"ab"
        yield b"c"

    assert asyncio.run(read_body_async(small(), 3)) == b"abc"


def test_before_body_answers_without_the_body() -> None:
    from commhistory.facade import CommHistory
    from commhistory.providers import LineAdapter

    receiver = WebhookReceiver([LineAdapter("s", max_body_bytes=10)], CommHistory.in_memory())
    assert receiver.before_body("line", "POST", "10") is None
    assert receiver.before_body("line", "POST", None) is None
    assert receiver.before_body("line", "POST", "junk") is None  # the stream still counts
    too_large = receiver.before_body("line", "POST", "11")
    assert too_large is not None
    assert too_large.status == 413
    assert too_large.body == {"error": "<body>: larger than the limit of 10 bytes"}
    unknown = receiver.before_body("nope", "POST", "1")
    assert unknown is not None
    assert unknown.status == 404
    get = receiver.before_body("line", "GET", None)
    assert get is not None
    assert (get.status, get.headers) == (405, {"Allow": "POST"})
