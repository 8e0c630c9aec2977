"""Verifying and parsing a 1,000-event SendGrid Event Webhook batch.

The batch mixes SendGrid's event kinds the way a campaign produces them
(processed, delivered, opens, clicks, a few bounces, deferrals and
unsubscribes), each with its own ``sg_event_id``, signed with a P-256 key as
SendGrid signs.

* ``webhooks.sendgrid.verify+parse``: what a receiver does per request:
  ECDSA verification of the whole body, JSON decoding, and one canonical
  :class:`~commhistory.Event` per SendGrid event (raw event kept in metadata).
  Goal: at least 50,000 events/s on one core (20 ms per batch).
* ``webhooks.sendgrid.parse``: parsing only.
* ``webhooks.sendgrid.verify``: verification only (one signature per batch).
* ``webhooks.sendgrid-inbound.verify+parse``: one Inbound Parse post of about
  4 MB (a text body and three attachments), verified and parsed into an
  inbound message (attachment contents decoded for their size, then dropped),
  against the standard library's ``email`` parser reading the same body alone.
  Goal: at most 3x the bare parse.

The report gives events/s and the share of the time spent verifying.

Run: ``python -m benchmarks webhooks`` or ``python benchmarks/bench_webhooks.py``.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Any, Final

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import email.parser
import email.policy

from benchmarks._harness import Benchmark, Goal, best_of, main
from commhistory.model import Message
from commhistory.providers import KeyedContactResolver, SendGridAdapter, SendGridInboundAdapter
from commhistory.testing import sendgrid_keys, signed_webhook

SEED: Final = 20260401
EVENTS: Final = 1000
NOW: Final = 1775002000.0
_KINDS: Final = [
    ("processed", 20),
    ("delivered", 20),
    ("open", 30),
    ("click", 15),
    ("bounce", 4),
    ("deferred", 4),
    ("dropped", 2),
    ("unsubscribe", 3),
    ("spamreport", 2),
]


def make_batch(rng: random.Random) -> list[dict[str, Any]]:
    """Return a realistic batch of SendGrid events."""
    names = [name for name, weight in _KINDS for _ in range(weight)]
    batch = []
    for i in range(EVENTS):
        name = rng.choice(names)
        event: dict[str, Any] = {
            "email": f"customer{rng.randrange(5000)}@example.com",
            "timestamp": 1775001600 + i,
            "event": name,
            "sg_event_id": f"ev{i:06d}-{rng.getrandbits(64):016x}",
            "sg_message_id": f"{rng.getrandbits(64):016x}.filter0001.{i}.0",
            "smtp-id": f"<{i}@ismtpd-1>",
            "category": ["spring"],
        }
        if name in ("open", "click"):
            event["useragent"] = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X)"
            event["ip"] = f"203.0.113.{rng.randrange(255)}"
            event["sg_machine_open"] = name == "open" and rng.random() < 0.3
        if name == "click":
            event["url"] = f"https://shop.example/item/{rng.randrange(100)}?utm_source=mail"
        if name == "bounce":
            event.update(type="bounce", status="5.1.1", reason="550 5.1.1 user unknown")
        if name == "deferred":
            event["response"] = "451 4.4.1 try again later"
        batch.append(event)
    return batch


def make_inbound(rng: random.Random) -> dict[str, Any]:
    """Return the form fields of an Inbound Parse post with about 4 MB of attachments."""
    return {
        "from": "Taro Yamada <taro@example.com>",
        "to": "support@parse.example.jp",
        "subject": "Re: Your order 1042",
        "text": "Could you change the delivery date to Friday?\n" * 40,
        "headers": "Message-ID: <bench-1@example.com>\nDate: Wed, 01 Apr 2026 09:15:00 +0900\n",
        "envelope": '{"to":["support@parse.example.jp"],"from":"taro@example.com"}',
        "charsets": '{"text":"UTF-8","subject":"UTF-8","from":"UTF-8"}',
        "spam_score": "0.1",
        "attachment1": ("photo.jpg", "image/jpeg", rng.randbytes(2_000_000)),
        "attachment2": ("invoice.pdf", "application/pdf", rng.randbytes(1_500_000)),
        "attachment3": ("notes.txt", "text/plain", b"line\n" * 100_000),
    }


def inbound_benchmark() -> Benchmark:
    """Inbound Parse: verify and parse one large post, against a bare stdlib parse."""
    keys = sendgrid_keys()
    webhook = signed_webhook(
        "sendgrid-inbound", make_inbound(random.Random(SEED)), keys, timestamp=NOW
    )
    request = webhook.request()
    adapter = SendGridInboundAdapter(
        keys.public_key,
        clock=lambda: NOW,
        contact_resolver=KeyedContactResolver(b"b" * 32),
        max_body_bytes=8 * 1024 * 1024,
    )
    head = f"Content-Type: {request.headers['content-type']}\r\n\r\n".encode()
    parser = email.parser.BytesParser(policy=email.policy.compat32)

    def candidate() -> None:
        adapter.verify(request)
        [message] = adapter.parse(request).records
        assert isinstance(message, Message)
        assert len(message.metadata["attachments"]) == 3

    def baseline() -> None:
        parsed = parser.parsebytes(head + request.body)
        assert len(parsed.get_payload()) == 11

    return Benchmark(
        name="webhooks.sendgrid-inbound.verify+parse",
        candidate=candidate,
        baseline=baseline,
        goal=Goal(text="<= 3x a bare stdlib parse of the body", max_ratio=3.0),
        repeats=5,
        items=1,
        extra=lambda: {"body_bytes": len(request.body)},
    )


def benchmarks() -> list[Benchmark]:
    """The webhook benchmarks."""
    keys = sendgrid_keys()
    webhook = signed_webhook("sendgrid", make_batch(random.Random(SEED)), keys, timestamp=NOW)
    adapter = SendGridAdapter(keys.public_key, clock=lambda: NOW)
    request = webhook.request()

    def both() -> None:
        adapter.verify(request)
        result = adapter.parse(request)
        assert len(result.records) == EVENTS

    def parse_only() -> None:
        adapter.parse(request)

    def verify_only() -> None:
        adapter.verify(request)

    def figures() -> dict[str, Any]:
        total = best_of(both, 5)
        verify = best_of(verify_only, 20)
        return {
            "events": EVENTS,
            "body_bytes": len(request.body),
            "events_per_second": round(EVENTS / total),
            "parse_only_events_per_second": round(EVENTS / best_of(parse_only, 5)),
            "verification_share": round(verify / total, 4),
            "verify_ms": round(verify * 1000, 3),
        }

    goal = Goal(text=">= 50,000 events/s verified and parsed", max_seconds=EVENTS / 50_000)
    return [
        Benchmark(
            name="webhooks.sendgrid.verify+parse",
            candidate=both,
            goal=goal,
            repeats=5,
            items=EVENTS,
            extra=figures,
        ),
        Benchmark(name="webhooks.sendgrid.parse", candidate=parse_only, repeats=5, items=EVENTS),
        Benchmark(name="webhooks.sendgrid.verify", candidate=verify_only, repeats=20, items=1),
        inbound_benchmark(),
    ]


if __name__ == "__main__":
    sys.exit(main([benchmarks], sys.argv[1:]))
