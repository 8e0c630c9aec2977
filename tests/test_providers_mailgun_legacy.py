"""Mailgun's retired legacy (form-encoded) webhooks are refused with a reason, not misread."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest

from commhistory.errors import SignatureError
from commhistory.facade import CommHistory
from commhistory.providers import WebhookRequest
from commhistory.providers.mailgun import MailgunAdapter, mailgun_signature
from commhistory.web import WebhookReceiver

KEY = "key-3ax6xnjp29jd6fds4gc373sgvjxteol0"
NOW = 1775002000.0


def legacy_post(content_type: str) -> WebhookRequest:
    # The legacy shape: signature fields and event fields side by side in the form,
    # correctly signed with the webhook signing key.
    stamp, token = "1775002000", "a" * 50
    form = {
        "timestamp": stamp,
        "token": token,
        "signature": mailgun_signature(KEY, stamp, token),
        "event": "delivered",
        "recipient": "taro@example.com",
        "Message-Id": "<20260401090000.1.ABCDEF@mg.example.jp>",
    }
    return WebhookRequest(body=urlencode(form).encode(), headers={"Content-Type": content_type})


@pytest.mark.parametrize(
    "content_type", ["application/x-www-form-urlencoded", "multipart/form-data; boundary=x"]
)
def test_legacy_form_post_is_refused_saying_why(content_type: str) -> None:
    with pytest.raises(SignatureError, match="legacy Mailgun webhook"):
        MailgunAdapter(KEY, clock=lambda: NOW).verify(legacy_post(content_type))


def test_receiver_answers_403_and_stores_nothing() -> None:
    repo = CommHistory.in_memory()
    receiver = WebhookReceiver([MailgunAdapter(KEY, clock=lambda: NOW)], repo)
    answer = receiver.receive("mailgun", legacy_post("application/x-www-form-urlencoded"))
    assert answer.status == 403
    assert "JSON webhooks" in answer.body["error"]
    assert repo.dead_letters() == []
