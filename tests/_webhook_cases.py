"""End-to-end webhook cases shared by the web receiver tests (one per provider)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from commhistory.crypto import Keyring
from commhistory.facade import CommHistory, open_repository
from commhistory.providers import (
    AmazonConnectAdapter,
    BrevoAdapter,
    KeyedContactResolver,
    LineAdapter,
    MailerSendAdapter,
    MailgunAdapter,
    MailgunInboundAdapter,
    MailjetAdapter,
    MailtrapAdapter,
    MandrillAdapter,
    PostalAdapter,
    PostmarkAdapter,
    ResendAdapter,
    SendGridAdapter,
    SendGridInboundAdapter,
    SesAdapter,
    SparkPostAdapter,
    TwilioAdapter,
    UnisenderGoAdapter,
    WebhookAdapter,
)
from commhistory.store import SQLRepository
from commhistory.testing import SignedWebhook, sendgrid_keys, signed_webhook, sns_test_signer

PAYLOADS = Path(__file__).parent / "payloads"
RESOLVER = KeyedContactResolver(b"web-test-resolver-key")
NOW = 1775002000.0


@attrs.frozen
class Case:
    """One provider: its adapter, a valid signed request, a forged one, and the count.

    POST each request to its ``path`` (some providers sign a query string).
    """

    provider: str
    adapter: WebhookAdapter
    good: SignedWebhook
    forged: SignedWebhook
    inserted: int
    refused_status: int = 403
    retry: SignedWebhook | None = None
    """The provider's retry of ``good`` when it differs (Mailgun signs a fresh token)."""


CaseBuilder = Callable[[str], Case]


def _form(name: str) -> dict[str, str]:
    from urllib.parse import parse_qsl

    return dict(parse_qsl((PAYLOADS / "twilio" / name).read_text()))


def sendgrid_case(base_url: str) -> Case:
    keys, other = sendgrid_keys(), sendgrid_keys()
    events = json.loads((PAYLOADS / "sendgrid" / "batch.json").read_text())
    url = f"{base_url}/webhooks/sendgrid"
    return Case(
        "sendgrid",
        SendGridAdapter(keys.public_key, clock=lambda: NOW),
        signed_webhook("sendgrid", events, keys, url=url, timestamp=NOW),
        signed_webhook("sendgrid", events, other, url=url, timestamp=NOW),
        12,
    )


def twilio_case(base_url: str) -> Case:
    url = f"{base_url}/webhooks/twilio"
    params = _form("inbound_stop.txt")
    return Case(
        "twilio",
        TwilioAdapter("tw-token", clock=lambda: NOW, contact_resolver=RESOLVER),
        signed_webhook("twilio", params, "tw-token", url=url),
        signed_webhook("twilio", params, "not-the-token", url=url),
        1,
    )


def twilio_json_case(base_url: str) -> Case:
    url = f"{base_url}/webhooks/twilio"
    events = json.loads((PAYLOADS / "twilio" / "event_streams.json").read_text())
    return Case(
        "twilio",
        TwilioAdapter("tw-token", clock=lambda: NOW, contact_resolver=RESOLVER),
        signed_webhook("twilio", events, "tw-token", url=url),
        signed_webhook("twilio", events, "not-the-token", url=url),
        3,
    )


def line_case(base_url: str) -> Case:
    url = f"{base_url}/webhooks/line"
    body = json.loads((PAYLOADS / "line" / "events.json").read_text())
    return Case(
        "line",
        LineAdapter("line-secret", contact_resolver=RESOLVER),
        signed_webhook("line", body, "line-secret", url=url),
        signed_webhook("line", body, "other-secret", url=url),
        5,
    )


def mailgun_case(base_url: str) -> Case:
    url = f"{base_url}/webhooks/mailgun"
    event = json.loads((PAYLOADS / "mailgun" / "events.json").read_text())[1]
    return Case(
        "mailgun",
        MailgunAdapter("mg-key", clock=lambda: NOW),
        signed_webhook("mailgun", event, "mg-key", url=url, timestamp=NOW),
        signed_webhook("mailgun", event, "not-mg-key", url=url, timestamp=NOW),
        1,
        retry=signed_webhook("mailgun", event, "mg-key", url=url, timestamp=NOW),
    )


def postmark_case(base_url: str) -> Case:
    url = f"{base_url}/webhooks/postmark"
    record = json.loads((PAYLOADS / "postmark" / "records.json").read_text())["bounce"]
    return Case(
        "postmark",
        PostmarkAdapter("hooks", "pw"),
        signed_webhook("postmark", record, "hooks:pw", url=url),
        signed_webhook("postmark", record, "hooks:guess", url=url),
        1,
        refused_status=401,
    )


def postmark_inbound_case(base_url: str) -> Case:
    url = f"{base_url}/webhooks/postmark"
    record = json.loads((PAYLOADS / "postmark" / "inbound.json").read_text())
    return Case(
        "postmark",
        PostmarkAdapter("hooks", "pw", contact_resolver=RESOLVER),
        signed_webhook("postmark", record, "hooks:pw", url=url),
        signed_webhook("postmark", record, "hooks:guess", url=url),
        1,
        refused_status=401,
    )


def mailersend_case(base_url: str) -> Case:
    url = f"{base_url}/webhooks/mailersend"
    activity = json.loads((PAYLOADS / "mailersend" / "activities.json").read_text())["clicked"]
    return Case(
        "mailersend",
        MailerSendAdapter("ms-secret"),
        signed_webhook("mailersend", activity, "ms-secret", url=url),
        signed_webhook("mailersend", activity, "not-ms-secret", url=url),
        1,
    )


def mailtrap_case(base_url: str) -> Case:
    url = f"{base_url}/webhooks/mailtrap"
    events = json.loads((PAYLOADS / "mailtrap" / "events.json").read_text())["published"]
    batch = [dict(events[name], event_id=f"mt-{name}") for name in ("delivery", "open", "click")]
    return Case(
        "mailtrap",
        MailtrapAdapter("mt-secret"),
        signed_webhook("mailtrap", batch, "mt-secret", url=url),  # JSON Lines
        signed_webhook("mailtrap", batch, "not-mt-secret", url=url),
        3,
    )


def unisender_go_case(base_url: str) -> Case:
    url = f"{base_url}/webhooks/unisender_go"
    events = json.loads((PAYLOADS / "unisender_go" / "events.json").read_text())
    body = {"events_by_user": [dict(events["published"], events=[events["shaped"]["spam"]])]}
    return Case(
        "unisender_go",
        UnisenderGoAdapter("ug-api-key"),
        signed_webhook("unisender_go", body, "ug-api-key", url=url),
        signed_webhook("unisender_go", body, "not-the-key", url=url),
        1,
    )


_POSTAL_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def postal_case(base_url: str) -> Case:
    url = f"{base_url}/webhooks/postal"
    events = json.loads((PAYLOADS / "postal" / "events.json").read_text())
    envelope = events["shaped"]["MessageDeliveryFailed"]
    forger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return Case(
        "postal",
        PostalAdapter(_POSTAL_KEY.public_key()),
        signed_webhook("postal", envelope, _POSTAL_KEY, url=url),
        signed_webhook("postal", envelope, forger, url=url),
        1,
    )


def brevo_case(base_url: str) -> Case:
    url = f"{base_url}/webhooks/brevo"
    events = json.loads((PAYLOADS / "brevo" / "events.json").read_text())
    batch = [events["request"], events["delivered"], events["click"]]
    return Case(
        "brevo",
        BrevoAdapter("hooks", "pw"),
        signed_webhook("brevo", batch, "hooks:pw", url=url),
        signed_webhook("brevo", batch, "hooks:guess", url=url),
        3,
        refused_status=401,
    )


def mailjet_case(base_url: str) -> Case:
    url = f"{base_url}/webhooks/mailjet"
    grouped = json.loads((PAYLOADS / "mailjet" / "events.json").read_text())["grouped"]
    return Case(
        "mailjet",
        MailjetAdapter("hooks", "pw"),
        signed_webhook("mailjet", grouped, "hooks:pw", url=url),
        signed_webhook("mailjet", grouped, "hooks:guess", url=url),
        2,
        refused_status=401,
    )


def sparkpost_case(base_url: str) -> Case:
    url = f"{base_url}/webhooks/sparkpost"
    batch = list(json.loads((PAYLOADS / "sparkpost" / "events.json").read_text()).values())
    return Case(
        "sparkpost",
        SparkPostAdapter("hooks", "pw"),
        signed_webhook("sparkpost", batch, "hooks:pw", url=url),
        signed_webhook("sparkpost", batch, "hooks:guess", url=url),
        len(batch),
        refused_status=401,
    )


def mandrill_case(base_url: str) -> Case:
    url = f"{base_url}/webhooks/mandrill"
    events = json.loads((PAYLOADS / "mandrill" / "events.json").read_text())
    return Case(
        "mandrill",
        MandrillAdapter("md-key"),
        signed_webhook("mandrill", events, "md-key", url=url),
        signed_webhook("mandrill", events, "not-md-key", url=url),
        len(events),
    )


def resend_case(base_url: str) -> Case:
    url = f"{base_url}/webhooks/resend"
    event = json.loads((PAYLOADS / "resend" / "events.json").read_text())["bounced"]
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    return Case(
        "resend",
        ResendAdapter(secret, clock=lambda: NOW),
        signed_webhook("resend", event, secret, url=url, timestamp=NOW),
        signed_webhook("resend", event, "whsec_b3RoZXIta2V5", url=url, timestamp=NOW),
        1,
        retry=signed_webhook("resend", event, secret, url=url, timestamp=NOW + 30),
    )


_SNS = sns_test_signer()


def ses_case(base_url: str) -> Case:
    url = f"{base_url}/webhooks/ses"
    note = json.loads((PAYLOADS / "ses" / "notifications.json").read_text())["delivery"]
    forger = sns_test_signer(topic_arn=_SNS.topic_arn)  # same URL and topic, another key
    return Case(
        "ses",
        SesAdapter([_SNS.topic_arn], certificate_fetcher=_SNS.fetch, clock=lambda: NOW),
        signed_webhook("ses", note, _SNS, url=url, timestamp=NOW),
        signed_webhook("ses", note, forger, url=url, timestamp=NOW),
        2,
    )


def ses_raw_case(base_url: str) -> Case:
    """Raw message delivery, allowed: only the topic header is checked."""
    url = f"{base_url}/webhooks/ses"
    note = json.loads((PAYLOADS / "ses" / "notifications.json").read_text())["delivery"]
    elsewhere = sns_test_signer(topic_arn="arn:aws:sns:ap-northeast-1:123456789012:other")
    return Case(
        "ses",
        SesAdapter(
            [_SNS.topic_arn],
            certificate_fetcher=_SNS.fetch,
            clock=lambda: NOW,
            allow_raw_delivery=True,
        ),
        _SNS.raw_delivery(note, url=url),
        elsewhere.raw_delivery(note, url=url),
        2,
    )


def twilio_voice_case(base_url: str) -> Case:
    url = f"{base_url}/webhooks/twilio"
    params = _form("voice_completed.txt")
    return Case(
        "twilio",
        TwilioAdapter("tw-token", clock=lambda: NOW, contact_resolver=RESOLVER),
        signed_webhook("twilio", params, "tw-token", url=url),
        signed_webhook("twilio", params, "not-the-token", url=url),
        2,  # the call and its completed event
    )


def ses_inbound_case(base_url: str) -> Case:
    url = f"{base_url}/webhooks/ses"
    note = json.loads((PAYLOADS / "ses" / "received_sns_action.json").read_text())
    forger = sns_test_signer(topic_arn=_SNS.topic_arn)
    return Case(
        "ses",
        SesAdapter(
            [_SNS.topic_arn],
            certificate_fetcher=_SNS.fetch,
            clock=lambda: NOW,
            contact_resolver=RESOLVER,
        ),
        signed_webhook("ses", note, _SNS, url=url, timestamp=NOW),
        signed_webhook("ses", note, forger, url=url, timestamp=NOW),
        1,
    )


def sendgrid_inbound_case(base_url: str) -> Case:
    keys, other = sendgrid_keys(), sendgrid_keys()
    fields = json.loads((PAYLOADS / "sendgrid" / "inbound_parse.json").read_text())
    fields["attachment1"] = ("receipt.txt", "text/plain", b"Order 1042 OK")
    url = f"{base_url}/webhooks/sendgrid-inbound"
    return Case(
        "sendgrid-inbound",
        SendGridInboundAdapter(keys.public_key, clock=lambda: NOW, contact_resolver=RESOLVER),
        signed_webhook("sendgrid-inbound", fields, keys, url=url, timestamp=NOW),
        signed_webhook("sendgrid-inbound", fields, other, url=url, timestamp=NOW),
        1,
    )


def mailgun_inbound_case(base_url: str) -> Case:
    url = f"{base_url}/webhooks/mailgun-inbound"
    fields = json.loads((PAYLOADS / "mailgun" / "routes.json").read_text())["forward"]
    return Case(
        "mailgun-inbound",
        MailgunInboundAdapter("mg-key", clock=lambda: NOW, contact_resolver=RESOLVER),
        signed_webhook("mailgun-inbound", fields, "mg-key", url=url, timestamp=NOW),
        signed_webhook("mailgun-inbound", fields, "not-mg-key", url=url, timestamp=NOW),
        1,
        retry=signed_webhook("mailgun-inbound", fields, "mg-key", url=url, timestamp=NOW),
    )


def amazon_connect_case(base_url: str) -> Case:
    url = f"{base_url}/webhooks/amazon-connect"
    records = [
        json.loads((PAYLOADS / "amazon_connect" / name).read_text())
        for name in ("inbound.json", "outbound_no_answer.json")
    ]
    return Case(
        "amazon-connect",
        AmazonConnectAdapter("fh-key", contact_resolver=RESOLVER, staff_key=b"web-test-staff-key"),
        signed_webhook("amazon-connect", records, "fh-key", url=url, timestamp=NOW),
        signed_webhook("amazon-connect", records, "not-fh-key", url=url, timestamp=NOW),
        7,  # two calls: 1 + 3 and 1 + 2 records
        refused_status=401,
    )


CASES: list[CaseBuilder] = [
    sendgrid_case,
    twilio_case,
    twilio_json_case,
    line_case,
    mailgun_case,
    postmark_case,
    postmark_inbound_case,
    mailersend_case,
    postal_case,
    mailtrap_case,
    unisender_go_case,
    ses_case,
    ses_raw_case,
    twilio_voice_case,
    ses_inbound_case,
    sendgrid_inbound_case,
    mailgun_inbound_case,
    amazon_connect_case,
    brevo_case,
    mailjet_case,
    sparkpost_case,
    mandrill_case,
    resend_case,
]


@pytest.fixture(params=["sqlite", "postgres"])
def web_repository(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[CommHistory[SQLRepository]]:
    """An encrypted repository on SQLite or PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'web.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    with open_repository(url, Keyring.generate()) as repo:
        yield repo
