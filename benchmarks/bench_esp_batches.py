"""Verifying and parsing 1,000-event batches of the batching email providers added in 0.4.0.

SparkPost (``msys`` batches), Mandrill (``mandrill_events`` form posts, up to
1,000 events each) and Mailjet (grouped events) deliver many events per
request, like SendGrid. Each benchmark verifies and parses a 1,000-event batch
of the provider's own shape, mixing event kinds the way a campaign produces
them, against the baseline of the SendGrid adapter verifying and parsing a
1,000-event batch in the same run (``bench_webhooks``'s batch): the per-event
cost of the established adapter.

* ``webhooks.sparkpost.verify+parse`` / ``webhooks.mandrill.verify+parse`` /
  ``webhooks.mailjet.verify+parse``: goal, at most 1.5 times the SendGrid
  adapter's time (a content hash per event, where SendGrid gives an event id,
  and Mandrill's HMAC over the whole form body are the extra work).

Run: ``python -m benchmarks esp_batches``.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Any, Final

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._harness import Benchmark, Goal, main
from benchmarks.bench_webhooks import make_batch as sendgrid_batch
from commhistory.providers import (
    MailjetAdapter,
    MandrillAdapter,
    SendGridAdapter,
    SparkPostAdapter,
    WebhookAdapter,
    WebhookRequest,
)
from commhistory.testing import sendgrid_keys, signed_webhook

SEED: Final = 20261204
EVENTS: Final = 1000
NOW: Final = 1775002000.0
GOAL: Final = Goal(text="<= 1.5x the SendGrid adapter per batch", max_ratio=1.5)
_UA: Final = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X)"


def _pick(rng: random.Random, kinds: list[tuple[str, int]]) -> str:
    return rng.choice([name for name, weight in kinds for _ in range(weight)])


def sparkpost_batch(rng: random.Random) -> list[dict[str, Any]]:
    """A batch of SparkPost events (message, track and unsubscribe classes)."""
    kinds = [("delivery", 40), ("open", 30), ("click", 15), ("bounce", 5), ("delay", 5),
             ("list_unsubscribe", 3), ("spam_complaint", 2)]  # fmt: skip
    batch = []
    for i in range(EVENTS):
        name = _pick(rng, kinds)
        event: dict[str, Any] = {
            "type": name,
            "event_id": f"{rng.getrandbits(63)}",
            "message_id": f"{rng.getrandbits(80):020x}",
            "timestamp": str(1775001600 + i),
            "rcpt_to": f"customer{rng.randrange(5000)}@example.com",
            "campaign_id": "spring",
        }
        kind = "message_event"
        if name in ("open", "click"):
            kind = "track_event"
            event.update(ip_address=f"203.0.113.{rng.randrange(255)}", user_agent=_UA)
        if name == "click":
            event["target_link_url"] = f"https://shop.example/item/{rng.randrange(100)}"
        if name == "list_unsubscribe":
            kind = "unsubscribe_event"
        if name in ("bounce", "delay"):
            event.update(bounce_class="10" if name == "bounce" else "21", error_code="550",
                         raw_reason="550 5.1.1 user unknown")  # fmt: skip
        batch.append({"msys": {kind: event}})
    return batch


def mandrill_batch(rng: random.Random) -> list[dict[str, Any]]:
    """A ``mandrill_events`` batch."""
    kinds = [("send", 40), ("open", 30), ("click", 15), ("hard_bounce", 5), ("deferral", 5),
             ("unsub", 3), ("spam", 2)]  # fmt: skip
    batch = []
    for i in range(EVENTS):
        name = _pick(rng, kinds)
        msg_id = f"{rng.getrandbits(128):032x}"
        msg: dict[str, Any] = {"ts": 1775001000, "_id": msg_id, "state": "sent",
                               "email": f"customer{rng.randrange(5000)}@example.com"}  # fmt: skip
        event: dict[str, Any] = {"event": name, "msg": msg, "_id": msg_id, "ts": 1775001600 + i}
        if name in ("open", "click"):
            event.update(ip=f"203.0.113.{rng.randrange(255)}", user_agent=_UA)
        if name == "click":
            event["url"] = f"https://shop.example/item/{rng.randrange(100)}"
        if name == "hard_bounce":
            msg["diag"] = "smtp;550 5.1.1 user unknown"
        batch.append(event)
    return batch


def mailjet_batch(rng: random.Random) -> list[dict[str, Any]]:
    """A grouped (version 2) Mailjet batch."""
    kinds = [("sent", 40), ("open", 30), ("click", 15), ("bounce", 5), ("blocked", 5),
             ("unsub", 3), ("spam", 2)]  # fmt: skip
    batch = []
    for i in range(EVENTS):
        name = _pick(rng, kinds)
        address = f"customer{rng.randrange(5000)}@example.com"
        event: dict[str, Any] = {
            "event": name,
            "time": 1775001600 + i,
            "MessageID": rng.getrandbits(53),
            "email": address,
        }
        if name in ("open", "click"):
            event.update(ip=f"203.0.113.{rng.randrange(255)}", agent=_UA)
        if name == "click":
            event["url"] = f"https://shop.example/item/{rng.randrange(100)}"
        if name == "bounce":
            event.update(hard_bounce=True, error_related_to="recipient", error="user unknown")
        batch.append(event)
    return batch


def _both(adapter: WebhookAdapter, request: WebhookRequest) -> None:
    adapter.verify(request)
    result = adapter.parse(request)
    assert len(result.records) == EVENTS, result.errors[:1]


def benchmarks() -> list[Benchmark]:
    """The batch benchmarks, each against the SendGrid adapter in the same run."""
    keys = sendgrid_keys()
    sendgrid = SendGridAdapter(keys.public_key, clock=lambda: NOW)
    baseline_batch = sendgrid_batch(random.Random(SEED))
    baseline_request = signed_webhook("sendgrid", baseline_batch, keys, timestamp=NOW).request()

    def baseline() -> None:
        _both(sendgrid, baseline_request)

    cases: list[tuple[str, WebhookAdapter, Any, str]] = [
        ("sparkpost", SparkPostAdapter("u", "p"), sparkpost_batch, "u:p"),
        ("mandrill", MandrillAdapter("md-key"), mandrill_batch, "md-key"),
        ("mailjet", MailjetAdapter("u", "p"), mailjet_batch, "u:p"),
    ]
    out = []
    for name, adapter, build, secret in cases:
        request = signed_webhook(name, build(random.Random(SEED)), secret).request()

        def candidate(
            adapter: WebhookAdapter = adapter, request: WebhookRequest = request
        ) -> None:
            _both(adapter, request)

        out.append(
            Benchmark(
                name=f"webhooks.{name}.verify+parse",
                candidate=candidate,
                baseline=baseline,
                goal=GOAL,
                repeats=5,
                items=EVENTS,
            )
        )
    return out


if __name__ == "__main__":
    sys.exit(main([benchmarks], sys.argv[1:]))
