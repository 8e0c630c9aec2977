"""Mailgun replays across workers: a shared ReplayStore catches what separate caches miss.

Mailgun's HMAC covers only ``timestamp + token``, so a captured request can be
replayed with a different body (a new ``event-data.id``): the repository's
dedupe does not see a duplicate, and a second worker's own replay cache has
never seen the token (issue 12 item 9).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from commhistory.errors import InvalidInputError, SignatureError
from commhistory.facade import CommHistory
from commhistory.providers import InMemoryReplayStore, MailgunAdapter, ReplayStore, WebhookRequest
from commhistory.testing import signed_webhook

EVENTS = json.loads((Path(__file__).parent / "payloads" / "mailgun" / "events.json").read_text())
KEY = "key-3ax6xnjp29jd6fds4gc373sgvjxteol0"
NOW = 1775002000.0


def captured_and_replayed() -> tuple[WebhookRequest, WebhookRequest]:
    """A signed request and its replay with a new event id (same signature block)."""
    good = signed_webhook("mailgun", EVENTS[0], KEY, timestamp=NOW).request()
    payload = json.loads(good.body)
    payload["event-data"] = {**payload["event-data"], "id": "replayed-with-a-new-id"}
    replay = WebhookRequest(body=json.dumps(payload).encode(), headers=good.headers)
    return good, replay


def worker(store: ReplayStore | None = None) -> MailgunAdapter:
    return MailgunAdapter(KEY, clock=lambda: NOW, replay_store=store)


def test_separate_caches_miss_a_replay_with_a_new_event_id() -> None:
    """Today's default: each worker remembers only its own tokens."""
    good, replay = captured_and_replayed()
    repo = CommHistory.in_memory()
    first, second = worker(), worker()
    assert first.handle(good, repo).report.inserted == 1
    assert second.handle(replay, repo).report.inserted == 1  # not a duplicate: a new event id
    with pytest.raises(SignatureError, match="replayed"):
        first.verify(replay)  # the same worker does catch it


def test_a_shared_store_catches_the_replay_across_workers() -> None:
    good, replay = captured_and_replayed()
    repo = CommHistory.in_memory()
    shared = InMemoryReplayStore()
    first, second = worker(shared), worker(shared)
    assert first.handle(good, repo).report.inserted == 1
    with pytest.raises(SignatureError, match="already used"):
        second.handle(replay, repo)


def test_a_custom_store_is_called_with_a_namespaced_key_and_expiry() -> None:
    calls: list[tuple[str, float, float]] = []

    class Recording:
        def remember(self, key: str, *, expires_at: float, now: float) -> bool:
            calls.append((key, expires_at, now))
            return len(calls) == 1

    good, replay = captured_and_replayed()
    adapter = worker(Recording())
    adapter.verify(good)
    with pytest.raises(SignatureError, match="already used"):
        adapter.verify(replay)
    token = json.loads(good.body)["signature"]["token"]
    assert calls[0] == (f"mailgun:{token}", NOW + adapter.tolerance, NOW)


def test_in_memory_store_forgets_expired_keys_and_stays_bounded() -> None:
    store = InMemoryReplayStore(max_size=2)
    assert store.remember("a", expires_at=10, now=0)
    assert not store.remember("a", expires_at=10, now=5)
    assert store.remember("a", expires_at=30, now=11)  # expired: a new use
    assert store.remember("b", expires_at=30, now=11)
    assert store.remember("c", expires_at=30, now=11)  # evicts the oldest
    assert len(store) == 2
    with pytest.raises(InvalidInputError):
        InMemoryReplayStore(max_size=0)


def test_in_memory_store_admits_a_key_once_under_concurrency() -> None:
    store = InMemoryReplayStore()
    wins: list[bool] = []
    barrier = threading.Barrier(8)

    def claim() -> None:
        barrier.wait()
        wins.append(store.remember("k", expires_at=100, now=0))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wins.count(True) == 1
