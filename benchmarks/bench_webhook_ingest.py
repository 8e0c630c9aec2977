"""Webhook ingest through the Starlette receiver into SQLite, against direct ``handle`` calls.

What is measured (``webhook_ingest.sendgrid.starlette``):

* **Input**: 30 signed SendGrid Event Webhook batches of 1,000 events each
  (30,000 events, the kinds mixed as in ``bench_webhooks``), every event
  naming (by ``sg_message_id``) one of 5,000 email messages already stored,
  so every event links to its message and its contact. Each batch is signed
  with a P-256 key as SendGrid signs (:func:`commhistory.testing.signed_webhook`).
* **Untimed setup**: the messages are stored once with ``record_messages`` in
  a SQLite file (:func:`commhistory.open_repository`, WAL), kept as a template
  and copied to a fresh file before every timed run; the repository is opened,
  and the Starlette app built, before the clock starts.
* **Timed (candidate)**: every batch POSTed through Starlette's ``TestClient``
  to :func:`commhistory.web.starlette.webhook_app` (mounted at ``/webhooks``):
  the ASGI round trip, the body read against the adapter's limit, ECDSA verification, parsing, the
  message lookups, encryption of the personal fields and the insert, one
  transaction per batch; each answer must be 200 with 1,000 inserted.
* **Timed (baseline)**: the same signed requests given to
  ``SendGridAdapter.handle(request, repo)`` directly, into a fresh copy of the
  same template: everything but the web layer.

After each run the ``events`` table is counted: it must hold exactly the
events posted, every one linked to a message (asserted here, not in tests).

Goal: at least 20,000 stored events/s through Starlette. The ratio shows what
the web layer (ASGI, test client, thread pool hop, JSON answer) adds.

Run: ``python -m benchmarks webhook_ingest``.
"""

from __future__ import annotations

import atexit
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient

from benchmarks._harness import Benchmark, Goal, main
from benchmarks.bench_webhooks import make_batch
from commhistory.crypto import Keyring
from commhistory.facade import CommHistory, open_repository
from commhistory.model import Channel, Direction, Message
from commhistory.providers import SendGridAdapter, WebhookRequest
from commhistory.store import SQLRepository
from commhistory.testing import SignedWebhook, sendgrid_keys, signed_webhook
from commhistory.web.starlette import webhook_app

SEED: Final = 20261204
BATCHES: Final = 30
EVENTS_PER_BATCH: Final = 1000
EVENTS: Final = BATCHES * EVENTS_PER_BATCH
MESSAGES: Final = 5000
NOW: Final = 1775002000.0
SENT_AT: Final = datetime(2026, 3, 31, 9, 0, tzinfo=UTC)
GOAL: Final = Goal(text=">= 20,000 stored events/s through Starlette", max_seconds=EVENTS / 20_000)


def provider_message_id(n: int) -> str:
    """SendGrid's ``X-Message-Id`` of message *n* (no dots, as SendGrid's are)."""
    return f"sgbench{n:06d}AbCdEf"


def stored_messages() -> list[Message]:
    """The email messages the events refer to."""
    return [
        Message(
            message_id=f"m{n:06d}",
            channel=Channel.EMAIL,
            direction=Direction.OUTBOUND,
            contact_id=f"c{n % 1000:04d}",
            address=f"customer{n % 1000}@example.com",
            sent_at=SENT_AT,
            campaign_id="spring",
            subject="Spring sale",
            body="Our spring sale starts today.",
            provider="sendgrid",
            provider_message_id=provider_message_id(n),
        )
        for n in range(MESSAGES)
    ]


def signed_batches(keys: Any) -> list[SignedWebhook]:
    """The signed batches; every event names a stored message and has its own event id."""
    rng = random.Random(SEED)
    out = []
    for b in range(BATCHES):
        batch = make_batch(rng)
        for i, event in enumerate(batch):
            n = rng.randrange(MESSAGES)
            event["sg_message_id"] = f"{provider_message_id(n)}.filter0001.{i}.0"
            event["sg_event_id"] = f"b{b:03d}-{event['sg_event_id']}"
        out.append(signed_webhook("sendgrid", batch, keys, timestamp=NOW))
    return out


def count_events(path: Path) -> tuple[int, int]:
    """Return ``(rows, rows linked to a message)`` of the ``events`` table."""
    conn = sqlite3.connect(path)
    try:
        row = conn.execute("SELECT count(*), count(message_id) FROM events").fetchone()
        return int(row[0]), int(row[1])
    finally:
        conn.close()


class WebhookIngest:
    """The state of the benchmark: the template database, the requests, the open repository."""

    def __init__(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="commhistory-bench-webhook-"))
        self.keyring = Keyring.generate()
        self.keys = sendgrid_keys()
        self.adapter = SendGridAdapter(self.keys.public_key, clock=lambda: NOW)
        self.template = self.workdir / "template.db"
        self.db = self.workdir / "run.db"
        self.webhooks: list[SignedWebhook] = []
        self.requests: list[WebhookRequest] = []
        self.repo: CommHistory[SQLRepository] | None = None
        self.client: TestClient | None = None
        self._prepared = False
        self.best = {"starlette": float("inf"), "direct": float("inf")}
        atexit.register(self.close)

    def prepare(self) -> None:
        """Build the requests and the template database, once (untimed)."""
        if self._prepared:
            return
        self._prepared = True
        self.webhooks = signed_batches(self.keys)
        self.requests = [webhook.request() for webhook in self.webhooks]
        with open_repository(f"sqlite:///{self.template}", self.keyring) as repo:
            report = repo.record_messages(stored_messages())
        assert report.inserted == MESSAGES, report

    def close(self) -> None:
        """Close the repository and remove the files."""
        if self.repo is not None:
            self.repo.close()
            self.repo = None
        shutil.rmtree(self.workdir, ignore_errors=True)

    def setup(self) -> None:
        """Untimed: a fresh copy of the template, the repository opened, the app built."""
        self.prepare()
        if self.repo is not None:
            self.repo.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.db}{suffix}").unlink(missing_ok=True)
        shutil.copyfile(self.template, self.db)
        self.repo = open_repository(f"sqlite:///{self.db}", self.keyring)
        app = Starlette(routes=[Mount("/webhooks", app=webhook_app([self.adapter], self.repo))])
        self.client = TestClient(app)

    def _check(self) -> None:
        rows, linked = count_events(self.db)
        assert rows == EVENTS, f"{rows} events stored, {EVENTS} posted"
        assert linked == EVENTS, f"{EVENTS - linked} events not linked to their message"

    def through_starlette(self) -> None:
        """Timed: POST every batch through the Starlette app."""
        assert self.client is not None
        started = time.perf_counter()
        with self.client as client:
            for webhook in self.webhooks:
                answer = client.post(
                    webhook.path, content=webhook.body, headers=dict(webhook.headers)
                )
                assert answer.status_code == 200, answer.text
                assert answer.json()["inserted"] == EVENTS_PER_BATCH, answer.text
        self._check()
        self._keep("starlette", started)

    def direct(self) -> None:
        """Timed: ``adapter.handle(request, repo)`` for every batch."""
        assert self.repo is not None
        started = time.perf_counter()
        for request in self.requests:
            outcome = self.adapter.handle(request, self.repo)
            assert outcome.report.inserted == EVENTS_PER_BATCH, outcome.report
        self._check()
        self._keep("direct", started)

    def _keep(self, which: str, started: float) -> None:
        self.best[which] = min(self.best[which], time.perf_counter() - started)


def benchmarks() -> list[Benchmark]:
    """The Starlette webhook ingest benchmark."""
    state = WebhookIngest()

    def figures() -> dict[str, Any]:
        return {
            "events": EVENTS,
            "batches": BATCHES,
            "messages": MESSAGES,
            "body_bytes_per_batch": len(state.webhooks[0].body),
            "events_per_second": round(EVENTS / state.best["starlette"]),
            "direct_events_per_second": round(EVENTS / state.best["direct"]),
            "web_layer_ms_per_batch": round(
                (state.best["starlette"] - state.best["direct"]) / BATCHES * 1000, 3
            ),
        }

    return [
        Benchmark(
            name="webhook_ingest.sendgrid.starlette",
            candidate=state.through_starlette,
            baseline=state.direct,
            setup=state.setup,
            goal=GOAL,
            repeats=3,
            items=EVENTS,
            extra=figures,
        )
    ]


if __name__ == "__main__":
    sys.exit(main([benchmarks], sys.argv[1:]))
