"""The consent feed on WhatsApp keywords and LINE follows and unfollows, on every backend."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from commhistory.consent import SuppressionReason
from commhistory.model import (
    Channel,
    ConsentAction,
    ConsentEvent,
    ConsentMethod,
    Direction,
    Purpose,
)
from commhistory.providers import KeyedContactResolver, LineAdapter, TwilioAdapter
from commhistory.testing import signed_webhook
from tests.test_consent_support import at, msg, repo
from tests.test_providers_twilio import load

__all__ = ["repo"]

NUMBER = "+31612345678"
LINE_ID = "U" + "0123456789abcdef" * 2
PAYLOADS = Path(__file__).parent / "payloads"


def _inbound(n: str, body: str, day: float, channel: Channel = Channel.WHATSAPP) -> Any:
    return msg(n, channel=channel, address=NUMBER, direction=Direction.INBOUND, day=day, body=body)


def test_whatsapp_stop_suppresses_the_number_on_whatsapp_only(repo: Any) -> None:
    repo.consent.grant("c1", "whatsapp", "marketing", method="checkbox", occurred_at=at(0))
    repo.consent.grant("c1", "sms", "marketing", method="checkbox", occurred_at=at(0))
    repo.record_messages([msg("m1", channel=Channel.WHATSAPP, address=NUMBER, day=1)])
    repo.record_messages([msg("s1", channel=Channel.SMS, address=NUMBER, day=1)])
    repo.record_messages([_inbound("in1", "STOP", day=2)])

    refused = repo.can_send("c1", "whatsapp", "transactional", at=at(3))
    assert not refused.allowed
    [entry] = refused.suppressions
    assert (entry.channel, entry.reason, entry.purpose) == (
        Channel.WHATSAPP,
        SuppressionReason.SMS_KEYWORD,
        None,
    )
    assert not repo.can_send("c1", "whatsapp", "marketing", at=at(3)).allowed
    assert repo.suppression.check("whatsapp", NUMBER, "service", at=at(3))
    # The same number on SMS is untouched: WhatsApp's opt-out is its own.
    assert repo.suppression.check("sms", NUMBER, "service", at=at(3)) == ()
    assert repo.can_send("c1", "sms", "marketing", at=at(3)).allowed
    [withdrawn] = [c for c in repo.consent_history("c1") if c.action is ConsentAction.WITHDRAW]
    assert (withdrawn.channel, withdrawn.purpose, withdrawn.method) == (
        Channel.WHATSAPP,
        Purpose.MARKETING,
        ConsentMethod.SMS_KEYWORD,
    )

    repo.record_messages([_inbound("in2", "START", day=4)])
    assert repo.can_send("c1", "whatsapp", "transactional", at=at(5)).allowed
    assert repo.can_send("c1", "whatsapp", "marketing", at=at(5)).allowed
    assert not repo.can_send("c1", "whatsapp", "transactional", at=at(3)).allowed  # history
    assert {c.channel for c in repo.consent_history("c1") if c.actor == "commhistory:feed"} == {
        Channel.WHATSAPP
    }


def test_twilio_whatsapp_stop_payload_suppresses_and_records_one_withdrawal(repo: Any) -> None:
    resolver = KeyedContactResolver(b"k" * 32)
    adapter = TwilioAdapter("0123456789abcdef0123456789abcdef", contact_resolver=resolver)
    request = signed_webhook(
        "twilio",
        load("inbound_whatsapp_stop.txt"),
        "0123456789abcdef0123456789abcdef",
        url="https://hooks.example.jp/twilio/sms",
    ).request()
    assert adapter.handle(request, repo).report.rejected == 0

    contact = resolver(Channel.WHATSAPP, NUMBER)
    decision = repo.can_send(contact, "whatsapp", "transactional")
    assert not decision.allowed
    assert decision.suppressions[0].reason is SuppressionReason.SMS_KEYWORD
    assert repo.suppression.entries(Channel.SMS, NUMBER) == []
    # The adapter already records the withdrawal: the feed does not add a second one.
    [consent] = repo.consent_history(contact)
    assert (consent.channel, consent.action) == (Channel.WHATSAPP, ConsentAction.WITHDRAW)


def _line(action: ConsentAction, day: float, n: str) -> ConsentEvent:
    return ConsentEvent(
        consent_id=n, contact_id="c1", channel=Channel.LINE, purpose=Purpose.MARKETING,
        action=action, occurred_at=at(day), method=ConsentMethod.LINE_BLOCK,
    )  # fmt: skip


def test_line_unfollow_consent_suppresses_the_line_id_for_every_purpose(repo: Any) -> None:
    repo.record_messages([msg("m1", channel=Channel.LINE, purpose=Purpose.SERVICE, day=1)])
    assert repo.can_send("c1", "line", "transactional", at=at(3)).allowed
    repo.record_consent([_line(ConsentAction.WITHDRAW, 2, "unfollow-1")])

    for purpose in Purpose:
        decision = repo.can_send("c1", "line", purpose, at=at(3))
        assert not decision.allowed, purpose
        assert decision.suppressions[0].reason is SuppressionReason.LINE_UNFOLLOW
        assert decision.suppressions[0].cause_id == "unfollow-1"
    assert repo.suppression.check("line", LINE_ID, "transactional", at=at(3))
    assert repo.can_send("c1", "line", "transactional", at=at(1.5)).allowed

    repo.record_consent([_line(ConsentAction.GRANT, 4, "follow-1")])
    assert repo.can_send("c1", "line", "transactional", at=at(5)).allowed
    assert repo.suppression.check("line", LINE_ID, "transactional", at=at(5)) == ()
    assert not repo.can_send("c1", "line", "transactional", at=at(3)).allowed  # history holds


def test_line_unfollow_payload_refuses_transactional(repo: Any) -> None:
    resolver = KeyedContactResolver(b"line-test-key-0123456789")
    secret = "8c570fa6dd201bb328f1c1eac23a96d8"
    user = "U4af4980629a0b1c2d3e4f5a6b7c8d9e0"
    events = json.loads((PAYLOADS / "line" / "events.json").read_text())
    adapter = LineAdapter(secret, contact_resolver=resolver)
    assert (
        adapter.handle(signed_webhook("line", events, secret).request(), repo).report.rejected == 0
    )

    contact = resolver(Channel.LINE, user)
    decision = repo.can_send(contact, "line", "transactional")
    assert not decision.allowed
    assert decision.suppressions[0].reason is SuppressionReason.LINE_UNFOLLOW
    assert repo.suppression.check("line", user, "transactional")

    follow = {**events["events"][0], "webhookEventId": "01HX0000000000000000000009"}
    follow["timestamp"] = events["events"][4]["timestamp"] + 60_000
    adapter.handle(signed_webhook("line", [follow], secret).request(), repo)
    assert repo.can_send(contact, "line", "transactional").allowed
