"""RFC 8058 one-click unsubscribe: tokens, headers, POST records, GET never does."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from commhistory.consent.unsubscribe import (
    ONE_CLICK_BODY,
    UnsubscribeTokens,
    handle_unsubscribe,
    is_one_click,
    list_unsubscribe_headers,
)
from commhistory.crypto import Keyring
from commhistory.errors import PayloadError, SignatureError
from commhistory.model import Channel, ConsentMethod, Purpose
from tests.test_consent_support import at, msg, repo

__all__ = ["repo"]

KEYRING = Keyring.generate()


def test_token_roundtrip_carries_nothing_in_clear() -> None:
    tokens = UnsubscribeTokens(KEYRING)
    # Ids long enough that random base64 cannot hold them by chance ("m1" did, 1 run in ~100).
    mid = "message-in-the-clear-42"
    token = tokens.issue("customer-42", "email", "marketing", message_id=mid, issued_at=at(0))
    assert "customer-42" not in token
    assert mid not in token
    claim = tokens.verify(token)
    assert claim.contact_id == "customer-42"
    assert claim.channel is Channel.EMAIL
    assert claim.purpose is Purpose.MARKETING
    assert claim.message_id == mid
    assert claim.issued_at == at(0)
    assert tokens.issue("c", "email") != tokens.issue("c", "email")  # fresh nonce each time


def test_tampered_foreign_and_expired_tokens_are_rejected() -> None:
    tokens = UnsubscribeTokens(KEYRING)
    token = tokens.issue("c1", "email", issued_at=at(0))
    head, key_id, body, tag = token.split(".")
    flipped = body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1]
    for bad in (
        f"{head}.{key_id}.{flipped}.{tag}",
        f"{head}.{key_id}.{body}.{'B' if tag[0] == 'A' else 'A'}{tag[1:]}",
        token + "x",
        "garbage",
        "",
        f"u2.{key_id}.{body}.{tag}",
    ):
        with pytest.raises(SignatureError):
            tokens.verify(bad)
    with pytest.raises(SignatureError):
        UnsubscribeTokens(Keyring.generate()).verify(token)  # foreign keyring
    with pytest.raises(SignatureError, match="expired"):
        tokens.verify(token, max_age=timedelta(days=30), now=at(31))
    assert tokens.verify(token, max_age=timedelta(days=30), now=at(29)).contact_id == "c1"


@given(st.text(max_size=80))
def test_arbitrary_strings_never_verify(text: str) -> None:
    with pytest.raises(SignatureError):
        UnsubscribeTokens(KEYRING).verify(text)


def test_headers() -> None:
    headers = list_unsubscribe_headers("https://example.com/u/", "tok.en", mailto="u@example.com")
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert headers["List-Unsubscribe"] == (
        "<https://example.com/u/tok.en>, <mailto:u@example.com?subject=unsubscribe>"
    )
    with pytest.raises(PayloadError, match="https"):
        list_unsubscribe_headers("http://example.com/u", "t")


@pytest.mark.parametrize(
    ("body", "ctype", "ok"),
    [
        (ONE_CLICK_BODY, "application/x-www-form-urlencoded", True),
        (b"List-Unsubscribe=One-Click\r\n", None, True),
        (
            '--b\r\nContent-Disposition: form-data; name="List-Unsubscribe"\r\n\r\n'
            "One-Click\r\n--b--\r\n",
            "multipart/form-data; boundary=b",
            True,
        ),
        ("", None, False),
        ("List-Unsubscribe=Yes", None, False),
        (None, None, False),
    ],
)
def test_one_click_body(body: Any, ctype: str | None, ok: bool) -> None:
    assert is_one_click(body, ctype) is ok


def test_post_records_withdrawal_get_never_does(repo: Any) -> None:
    repo.consent.grant("c1", "email", "marketing", method="double_opt_in", occurred_at=at(0))
    repo.record_messages([msg("m1", day=1)])
    tokens = UnsubscribeTokens(KEYRING)
    token = tokens.issue("c1", "email", "marketing", message_id="m1")

    got = handle_unsubscribe(repo, tokens, method="GET", token=token)
    assert not got.unsubscribed
    assert repo.can_send("c1", "email", "marketing").allowed
    wrong_body = handle_unsubscribe(repo, tokens, method="POST", token=token, body="x=y")
    assert not wrong_body.unsubscribed
    assert repo.can_send("c1", "email", "marketing").allowed

    posted = handle_unsubscribe(repo, tokens, method="POST", token=token, body=ONE_CLICK_BODY)
    assert posted.unsubscribed
    decision = repo.can_send("c1", "email", "marketing")
    assert not decision.allowed
    assert decision.consent_id == posted.consent_id
    again = handle_unsubscribe(repo, tokens, method="POST", token=token, body=ONE_CLICK_BODY)
    assert again.consent_id == posted.consent_id
    withdrawals = [e for e in repo.consent.history("c1") if e.method is ConsentMethod.ONE_CLICK]
    assert len(withdrawals) == 1
    assert repo.can_send("c1", "email", "transactional").allowed

    with pytest.raises(SignatureError):
        handle_unsubscribe(
            repo, tokens, method="POST", token=token[:-3] + "AAA", body=ONE_CLICK_BODY
        )
