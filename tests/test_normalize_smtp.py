from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from commhistory.model import BounceClass
from commhistory.normalize import SmtpReply, classify_bounce, parse_smtp_reply
from tests.strategies import smtp_diagnostics

HARD, SOFT, BLOCK, UNDETERMINED = (
    BounceClass.HARD,
    BounceClass.SOFT,
    BounceClass.BLOCK,
    BounceClass.UNDETERMINED,
)


@pytest.mark.parametrize(
    ("line", "code", "enhanced", "text"),
    [
        (
            "550 5.1.1 <taro@example.com>: Recipient address rejected: User unknown",
            550,
            "5.1.1",
            "<taro@example.com>: Recipient address rejected: User unknown",
        ),
        (
            "smtp; 550-5.1.1 The email account that you tried to reach does not exist.",
            550,
            "5.1.1",
            "The email account that you tried to reach does not exist.",
        ),
        ("552 5.2.2 Mailbox full", 552, "5.2.2", "Mailbox full"),
        ("421 4.7.0 Try again later", 421, "4.7.0", "Try again later"),
        ("550 User unknown", 550, None, "User unknown"),
        ("5.1.1", None, "5.1.1", ""),
        ("#5.1.1 bad mailbox", None, "5.1.1", "bad mailbox"),
        ("550 5.01.001 padded", 550, "5.1.1", "padded"),
        ("X-Postfix; host mx.example.com said: 550 5.1.1 no such user", 550, "5.1.1", None),
        ("Remote server returned '550 5.1.1 RESOLVER.ADR.RecipNotFound'", 550, "5.1.1", None),
        ("Amazon SES has suppressed sending to this address.", None, None, None),
        ("", None, None, ""),
        ("host 10.5.1.1 refused", None, None, None),
        ("relay 192.0.2.5.1.1 said 5.1.1234", None, None, None),
    ],
)
def test_parse(line: str, code: int | None, enhanced: str | None, text: str | None) -> None:
    reply = parse_smtp_reply(line)
    assert (reply.code, reply.enhanced) == (code, enhanced)
    if text is not None:
        assert reply.text == text


def test_parse_multiline_gmail_reply() -> None:
    reply = parse_smtp_reply(
        "550-5.1.1 The email account that you tried to reach does not exist. Please try\n"
        "550-5.1.1 double-checking the recipient's email address for typos or\n"
        "550 5.1.1 unnecessary spaces. https://support.google.com/mail/?p=NoSuchUser"
    )
    assert (reply.code, reply.enhanced) == (550, "5.1.1")
    assert reply.text.startswith("The email account")
    assert "550" not in reply.text
    assert "NoSuchUser" in reply.text


def test_repr_hides_text() -> None:
    reply = parse_smtp_reply("550 5.1.1 <taro@example.com>: unknown")
    assert "taro" not in repr(reply)
    assert repr(reply) == "SmtpReply(code=550, enhanced='5.1.1')"
    assert reply == SmtpReply(code=550, enhanced="5.1.1", text="<taro@example.com>: unknown")


@pytest.mark.parametrize(
    ("status_code", "expected"),
    [
        ("4.2.2", SOFT),
        ("4.4.7", SOFT),
        ("4.7.1", SOFT),
        ("5.1.0", HARD),
        ("5.1.1", HARD),
        ("5.1.2", HARD),
        ("5.1.3", HARD),
        ("5.1.6", HARD),
        ("5.1.10", HARD),
        ("5.1.7", BLOCK),
        ("5.1.8", BLOCK),
        ("5.2.0", UNDETERMINED),
        ("5.2.1", HARD),
        ("5.2.2", SOFT),
        ("5.2.3", SOFT),
        ("5.2.4", UNDETERMINED),
        ("5.3.0", SOFT),
        ("5.3.4", SOFT),
        ("5.4.4", HARD),
        ("5.4.1", SOFT),
        ("5.4.7", SOFT),
        ("5.5.1", UNDETERMINED),
        ("5.6.1", UNDETERMINED),
        ("5.7.0", BLOCK),
        ("5.7.1", BLOCK),
        ("5.7.26", BLOCK),
        ("5.0.0", UNDETERMINED),
        ("5.9.9", UNDETERMINED),
        ("2.0.0", UNDETERMINED),
        ("450", SOFT),
        ("550", UNDETERMINED),
        ("", UNDETERMINED),
        ("garbage", UNDETERMINED),
        (None, UNDETERMINED),
    ],
)
def test_classify_by_status_code(status_code: str | None, expected: BounceClass) -> None:
    assert classify_bounce(status_code) is expected


@pytest.mark.parametrize(
    ("diagnostic", "expected"),
    [
        # Postfix
        ("smtp; 550 5.1.1 <taro@example.com>: Recipient address rejected: User unknown", HARD),
        # Gmail
        ("smtp; 550-5.1.1 The email account that you tried to reach does not exist.", HARD),
        ("552-5.2.2 The recipient's inbox is out of storage space.", SOFT),
        ("421-4.7.0 [192.0.2.1] Our system has detected an unusual rate of mail", SOFT),
        ("550-5.7.26 Unauthenticated email from example.com is not accepted", BLOCK),
        # Microsoft
        ("550 5.5.0 Requested action not taken: mailbox unavailable", UNDETERMINED),
        ("550 5.7.1 Service unavailable, Client host blocked using Spamhaus", BLOCK),
        ("Remote server returned '550 5.1.10 RESOLVER.ADR.RecipientNotFound'", HARD),
        # Yahoo / AOL
        ("554 5.7.9 Message not accepted for policy reasons.", BLOCK),
        ("421 4.7.0 [TSS04] Messages temporarily deferred due to user complaints", SOFT),
        # SES / SendGrid style
        ("smtp; 550 5.2.1 The email account that you tried to reach is disabled.", HARD),
        ("smtp; 554 5.4.4 Unable to route: domain not found", HARD),
        ("smtp; 554 4.4.7 Message expired: unable to deliver in 840 minutes.", SOFT),
        # No enhanced code: basic code, then phrases
        ("452 Too many recipients", SOFT),
        ("550 User unknown", HARD),
        ("550 No such user here", HARD),
        ("mailbox is full", SOFT),
        ("Your message was blocked as spam", BLOCK),
        ("Amazon SES has suppressed sending to this address.", UNDETERMINED),
        ("", UNDETERMINED),
    ],
)
def test_classify_real_diagnostics(diagnostic: str, expected: BounceClass) -> None:
    assert classify_bounce(diagnostic=diagnostic) is expected


def test_status_code_wins_over_diagnostic() -> None:
    assert classify_bounce("5.2.2", "550 5.1.1 unknown user") is SOFT
    assert classify_bounce("5.0.0", "550 5.1.1 unknown user") is HARD
    assert classify_bounce(None, "550 5.1.1 unknown user") is HARD
    assert classify_bounce("smtp; 421 4.4.2 timeout") is SOFT


@given(smtp_diagnostics())
def test_parse_finds_generated_codes(sample: tuple[str, str, int]) -> None:
    line, enhanced, basic = sample
    reply = parse_smtp_reply(line)
    assert reply.enhanced == enhanced
    assert reply.code in (None, basic)
    klass = classify_bounce(diagnostic=line)
    if enhanced.startswith("4."):
        assert klass is SOFT
    elif enhanced.startswith("5.1.") and enhanced not in ("5.1.7", "5.1.8"):
        assert klass is HARD
    elif enhanced.startswith("5.7."):
        assert klass is BLOCK


@given(st.one_of(st.none(), st.text()), st.one_of(st.none(), st.text()))
def test_never_raises_on_text(status_code: str | None, diagnostic: str | None) -> None:
    assert classify_bounce(status_code, diagnostic) in set(BounceClass)
    reply = parse_smtp_reply(diagnostic or "")
    if reply.enhanced is not None:
        klass, _, _ = reply.enhanced.split(".")
        assert klass in "245"


def test_non_text_is_undetermined() -> None:
    assert classify_bounce(550, {"x": 1}) is UNDETERMINED  # type: ignore[arg-type]
    assert parse_smtp_reply(None) == SmtpReply(code=None, enhanced=None, text="")  # type: ignore[arg-type]
