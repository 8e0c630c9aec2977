"""Suppression fed from recorded events, and can_send combining it with consent."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from commhistory.consent import OPT_IN_KEYWORDS, OPT_OUT_KEYWORDS, SuppressionReason, sms_keyword
from commhistory.convert import ParsedLine
from commhistory.errors import NormalizationError, PayloadError
from commhistory.model import BounceClass, Channel, Direction, Event, EventType, Message, Purpose
from tests.test_consent_support import at, ev, msg, repo

__all__ = ["repo"]

LINE_ID = "U" + "0123456789abcdef" * 2


def _grant(repo: Any, contact: str = "c1", channel: str = "email", day: float = 0) -> None:
    repo.consent.grant(contact, channel, "marketing", method="double_opt_in", occurred_at=at(day))


def test_hard_bounce_suppresses_every_purpose_at_once(repo: Any) -> None:
    _grant(repo)
    repo.record_messages([msg("m1", day=1)])
    repo.record_events([ev("e1", "m1", EventType.BOUNCED, day=1.1, bounce=BounceClass.HARD)])

    assert repo.can_send("c1", "email", "marketing", at=at(1)).allowed
    for purpose in Purpose:
        decision = repo.can_send("c1", "email", purpose, at=at(2))
        assert not decision.allowed
        assert decision.suppressions[0].reason is SuppressionReason.HARD_BOUNCE
        assert any("hard_bounce" in r for r in decision.reasons)
    # Address-level: the address itself is suppressed, whoever it belongs to.
    assert repo.suppression.check("email", "c1@Example.COM", "service", at=at(2))
    assert repo.can_send("c1", "sms", "transactional", at=at(2)).allowed
    # Reasons name no address.
    assert all("c1@example.com" not in r for r in repo.can_send("c1", "email", "service").reasons)


def test_transactional_needs_no_consent_marketing_does(repo: Any) -> None:
    repo.record_messages([msg("m1", day=1)])
    assert repo.can_send("c1", "email", "transactional", at=at(2)).allowed
    assert repo.can_send("c1", "email", "service", at=at(2)).allowed
    refused = repo.can_send("c1", "email", "marketing", at=at(2))
    assert not refused.allowed
    assert refused.reasons == ("no marketing consent on email recorded",)
    unknown = repo.can_send("nobody", "email", "marketing", at=at(2))
    assert not unknown
    assert "unknown contact" in unknown.reasons[0]


def test_complaint_withdraws_marketing_on_every_channel(repo: Any) -> None:
    for channel in ("email", "sms", "line"):
        _grant(repo, channel=channel)
    repo.record_messages([msg("m1", day=1)])
    repo.record_events([ev("e1", "m1", EventType.COMPLAINED, day=2)])
    for channel in ("email", "sms", "line"):
        assert repo.can_send("c1", channel, "marketing", at=at(1.5)).allowed
        assert not repo.can_send("c1", channel, "marketing", at=at(3)).allowed
    assert repo.can_send("c1", "email", "transactional", at=at(3)).allowed
    entry = repo.can_send("c1", "email", "marketing", at=at(3)).suppressions[0]
    assert entry.reason is SuppressionReason.COMPLAINT
    assert entry.cause_id == "e1"


def test_unsubscribe_withdraws_that_purpose_and_later_grant_overrides(repo: Any) -> None:
    _grant(repo)
    repo.record_messages([msg("m1", day=1)])
    repo.record_events([ev("e1", "m1", EventType.UNSUBSCRIBED, day=2)])
    assert not repo.can_send("c1", "email", "marketing", at=at(3)).allowed
    assert repo.can_send("c1", "email", "transactional", at=at(3)).allowed
    repo.consent.grant("c1", "email", "marketing", method="double_opt_in", occurred_at=at(4))
    again = repo.can_send("c1", "email", "marketing", at=at(5))
    assert again.allowed
    assert any("overridden by a later grant" in r for r in again.reasons)
    assert not repo.can_send("c1", "email", "marketing", at=at(3)).allowed  # history holds


def test_feeding_is_idempotent_and_handles_orphans(repo: Any) -> None:
    _grant(repo)
    # The event arrives before its message: the feed runs when they are linked.
    repo.record_events([ev("e1", "m1", EventType.BOUNCED, day=1.1, bounce=BounceClass.HARD)])
    assert repo.can_send("c1", "email", "marketing", at=at(2)).allowed
    repo.record_messages([msg("m1", day=1)])
    assert not repo.can_send("c1", "email", "marketing", at=at(2)).allowed
    repo.record_events([ev("e1", "m1", EventType.BOUNCED, day=1.1, bounce=BounceClass.HARD)])
    assert len(repo.suppression.entries("email", "c1@example.com")) == 1


@pytest.mark.parametrize("orphan_first", [False, True])
def test_a_bounce_in_its_messages_batch_suppresses(repo: Any, orphan_first: bool) -> None:
    """The feed sees a batch's own events of its new messages, and the orphans it links."""
    _grant(repo)
    bounce = ev("e1", "m1", EventType.BOUNCED, day=1.1, bounce=BounceClass.HARD)
    if orphan_first:
        repo.record_events([bounce])
    records: list[Message | Event] = [
        msg("m1", day=1),
        ev("e2", "m1", EventType.DELIVERED, day=1.05),
    ]
    if not orphan_first:
        records.append(bounce)
    repo.ingest(
        [ParsedLine(line=i, raw=None, record=r) for i, r in enumerate(records, 1)], source="t"
    )
    assert not repo.can_send("c1", "email", "marketing", at=at(2)).allowed
    assert len(repo.suppression.entries("email", "c1@example.com")) == 1


@pytest.mark.parametrize("delivered_between", [False, True])
def test_five_consecutive_soft_bounces_suppress(repo: Any, delivered_between: bool) -> None:
    _grant(repo)
    repo.record_messages([msg(f"m{i}", day=i) for i in range(6)])
    events = [
        ev(f"s{i}", f"m{i}", EventType.BOUNCED, day=i + 0.1, bounce=BounceClass.SOFT)
        for i in range(5)
    ]
    if delivered_between:
        events.insert(2, ev("d", "m5", EventType.DELIVERED, day=1.5))
    for e in events[:-1]:
        repo.record_events([e])
    assert repo.can_send("c1", "email", "marketing", at=at(10)).allowed
    repo.record_events([events[-1]])
    decision = repo.can_send("c1", "email", "marketing", at=at(10))
    assert decision.allowed is delivered_between
    if not delivered_between:
        assert decision.suppressions[0].reason is SuppressionReason.SOFT_BOUNCE_LIMIT
        assert decision.suppressions[0].since == at(4.1)


FULL_WIDTH_STOP = "\uff33\uff34\uff2f\uff30"


@pytest.mark.parametrize("word", ["STOP", "stop", " Stop. ", FULL_WIDTH_STOP, "optout", "QUIT"])
def test_sms_opt_out_keyword_then_start(repo: Any, word: str) -> None:
    _grant(repo, channel="sms")
    repo.record_messages([msg("m1", channel=Channel.SMS, day=1)])
    inbound = msg("in1", channel=Channel.SMS, direction=Direction.INBOUND, day=2, body=word)
    repo.record_messages([inbound])
    assert not repo.can_send("c1", "sms", "marketing", at=at(3)).allowed
    assert not repo.can_send("c1", "sms", "transactional", at=at(3)).allowed
    assert repo.can_send("c1", "email", "transactional", at=at(3)).allowed
    start = msg("in2", channel=Channel.SMS, direction=Direction.INBOUND, day=4, body="START")
    repo.record_messages([start])
    assert repo.can_send("c1", "sms", "marketing", at=at(5)).allowed
    assert repo.can_send("c1", "sms", "transactional", at=at(5)).allowed
    assert not repo.can_send("c1", "sms", "marketing", at=at(3)).allowed


def test_non_keyword_inbound_sms_changes_nothing(repo: Any) -> None:
    _grant(repo, channel="sms")
    repo.record_messages([msg("m1", channel=Channel.SMS, day=1)])
    repo.record_messages(
        [
            msg(
                "in1",
                channel=Channel.SMS,
                direction=Direction.INBOUND,
                day=2,
                body="please stop by",
            )
        ]
    )
    assert repo.can_send("c1", "sms", "marketing", at=at(3)).allowed


def test_line_unfollow_and_follow(repo: Any) -> None:
    _grant(repo, channel="line")
    repo.record_messages([msg("m1", channel=Channel.LINE, day=1)])
    repo.record_events([ev("u1", "m1", EventType.UNSUBSCRIBED, day=2)])
    decision = repo.can_send("c1", "line", "service", at=at(3))
    assert not decision.allowed
    assert decision.suppressions[0].reason is SuppressionReason.LINE_UNFOLLOW
    repo.record_events([ev("f1", "m1", EventType.SUBSCRIBED, day=4)])
    assert repo.can_send("c1", "line", "service", at=at(5)).allowed
    assert repo.suppression.check("line", LINE_ID, "service", at=at(3))


def test_manual_entries_lift_and_point_in_time(repo: Any) -> None:
    _grant(repo)
    repo.record_messages([msg("m1", day=1)])
    entry = repo.suppression.add("email", "c1@example.com", since=at(2), cause_id="ticket-7")
    assert entry.reason is SuppressionReason.MANUAL
    assert "c1@example.com" not in repr(entry)
    assert not repo.can_send("c1", "email", "marketing", at=at(3))
    assert repo.suppression.lift("email", "c1@example.com", at=at(4)) == 1
    assert repo.can_send("c1", "email", "marketing", at=at(5))
    assert not repo.can_send("c1", "email", "marketing", at=at(3))
    assert repo.can_send("c1", "email", "marketing", at=at(1.5))
    by_address = repo.can_send("c1", "email", "marketing", at=at(3), address="other@example.com")
    assert by_address.allowed


def test_bad_suppression_input(repo: Any) -> None:
    with pytest.raises(NormalizationError):
        repo.suppression.add("email", "not an address")
    with pytest.raises(PayloadError, match="channel"):
        repo.suppression.add("postal", "1-1 Chiyoda")
    with pytest.raises(PayloadError, match="reason"):
        repo.suppression.add("email", "a@example.com", reason="because")


def test_bulk_filter_matches_single_decisions(repo: Any) -> None:
    for i in range(30):
        cid = f"c{i}"
        if i % 2 == 0:
            _grant(repo, cid)
        repo.record_messages([msg(f"m{i}", cid, day=1)])
        if i % 5 == 0:
            repo.record_events(
                [ev(f"e{i}", f"m{i}", EventType.BOUNCED, day=1.1, bounce=BounceClass.HARD)]
            )
    ids = [f"c{i}" for i in range(32)]
    single = [cid for cid in ids if repo.can_send(cid, "email", "marketing", at=at(2))]
    assert repo.filter_sendable(ids, "email", "marketing", at=at(2)) == single
    assert single == [f"c{i}" for i in range(30) if i % 2 == 0 and i % 5 != 0]
    from commhistory.consent import decide_many

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("commhistory.consent.policy.BULK_THRESHOLD", 3)  # force the scanning path
        many = decide_many(repo.store, ids, "email", "marketing", at=at(2))
        scanned = repo.filter_sendable(ids, "email", "marketing", at=at(2))
    assert scanned == single
    assert [cid for cid, d in many.items() if d] == single
    assert many["c5"].reasons == repo.can_send("c5", "email", "marketing", at=at(2)).reasons


@given(
    st.sampled_from(sorted(OPT_OUT_KEYWORDS | OPT_IN_KEYWORDS)), st.sampled_from(["", " ", "!"])
)
def test_sms_keyword_recognizes_whole_message_keywords(word: str, tail: str) -> None:
    assert sms_keyword(word.lower() + tail) == word
    assert sms_keyword(f"{word} now please") is None


@given(st.text(max_size=30))
def test_sms_keyword_only_returns_known_keywords(text: str) -> None:
    assert sms_keyword(text) in OPT_OUT_KEYWORDS | OPT_IN_KEYWORDS | {None}


def test_bulk_filter_honours_overrides_and_erasure(repo: Any) -> None:
    for cid in ("a", "b", "c"):
        _grant(repo, cid)
        repo.record_messages([msg(f"m{cid}", cid, day=1)])
    repo.record_events([ev("ua", "ma", EventType.UNSUBSCRIBED, day=2)])
    repo.record_events([ev("ub", "mb", EventType.UNSUBSCRIBED, day=2)])
    repo.consent.grant("b", "email", "marketing", method="web_form", occurred_at=at(3))
    from commhistory.privacy import erase_subject

    erase_subject(repo.store, "c", now=at(3.5))
    ids = ["a", "b", "c", "zz"]
    expected = [cid for cid in ids if repo.can_send(cid, "email", "marketing", at=at(4))]
    assert expected == ["b"]
    assert repo.filter_sendable(ids, "email", "marketing", at=at(4)) == expected
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("commhistory.consent.policy.BULK_THRESHOLD", 1)
        assert repo.filter_sendable(ids, "email", "marketing", at=at(4)) == expected
    assert repo.filter_sendable(ids, "email", "transactional", at=at(4)) == ["a", "b", "zz"]
