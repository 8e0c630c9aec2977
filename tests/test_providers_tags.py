"""The sender's tags and categories of provider events, in ``metadata["provider_tags"]``.

Each provider test uses the provider's published webhook shape with its tag field:

* SendGrid ``category`` (a string or a list): https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/event
  -- SendGrid's docs ask senders to keep personal data out of categories ("Not PII" fields);
* Mailgun ``tags`` (a list, at most 3 a message):
  https://documentation.mailgun.com/docs/mailgun/user-manual/tracking-messages/track-tagging
  -- segments mail into categories; nothing is said about personal data;
* Postmark ``Tag`` (one string): https://postmarkapp.com/developer/webhooks/delivery-webhook;
* Amazon SES ``mail.tags`` (names to lists of values; SES adds ``ses:*`` tags itself):
  https://docs.aws.amazon.com/ses/latest/dg/event-publishing-retrieving-sns-examples.html
* Mandrill ``msg.tags``, SparkPost ``rcpt_tags``, Brevo ``tags``, Mailjet
  ``customcampaign``, MailerSend ``tags``, Postal ``message.tag``: each test names its page.

Resend's tag docs (https://resend.com/docs/dashboard/emails/tags) suggest tagging an
email with a customer id, so tags are not assumed free of personal data: they stay in
metadata, encrypted at rest like the rest of it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from commhistory.errors import PayloadError
from commhistory.model import Event
from commhistory.providers import SendGridAdapter
from commhistory.providers._shared import TAGS_KEY, provider_tags
from commhistory.providers.mailgun import MailgunAdapter
from commhistory.providers.postmark import PostmarkAdapter
from commhistory.providers.ses import SesAdapter
from commhistory.testing import sendgrid_keys, signed_webhook, sns_test_signer
from tests._esp import only_event as only_esp_event

PAYLOADS = Path(__file__).parent / "payloads"
NOW = 1775002000.0


def only_event(records: Any) -> Event:
    [event] = records
    assert isinstance(event, Event)
    return event


@pytest.mark.parametrize(
    ("category", "expected"),
    [(["spring", "newsletter"], ["spring", "newsletter"]), ("cat facts", ["cat facts"])],
)
def test_sendgrid_category_list_or_string(category: object, expected: list[str]) -> None:
    keys = sendgrid_keys()
    [delivered] = [
        e
        for e in json.loads((PAYLOADS / "sendgrid" / "batch.json").read_text())
        if e["event"] == "delivered"
    ]
    item = {**delivered, "category": category}
    request = signed_webhook("sendgrid", [item], keys, timestamp=NOW).request()
    event = only_event(SendGridAdapter(keys.public_key, clock=lambda: NOW).parse(request).records)
    assert event.metadata[TAGS_KEY] == expected


def test_mailgun_tags() -> None:
    key = "key-3ax6xnjp29jd6fds4gc373sgvjxteol0"
    delivered = json.loads((PAYLOADS / "mailgun" / "events.json").read_text())[0]
    item = {**delivered, "tags": ["my_tag_1", "my_tag_2"]}
    request = signed_webhook("mailgun", item, key, timestamp=NOW).request()
    event = only_event(MailgunAdapter(key, clock=lambda: NOW).parse(request).records)
    assert event.metadata[TAGS_KEY] == ["my_tag_1", "my_tag_2"]


def test_postmark_tag_and_no_tag() -> None:
    records = json.loads((PAYLOADS / "postmark" / "records.json").read_text())
    credentials = "hooks:secret"
    adapter = PostmarkAdapter("hooks", "secret")
    delivered = signed_webhook("postmark", records["delivery"], credentials).request()
    assert only_event(adapter.parse(delivered).records).metadata[TAGS_KEY] == ["welcome"]
    untagged = signed_webhook("postmark", {**records["delivery"], "Tag": ""}, credentials)
    assert TAGS_KEY not in only_event(adapter.parse(untagged.request()).records).metadata


def test_ses_keeps_the_senders_tags_not_the_ones_ses_adds() -> None:
    signer = sns_test_signer()
    note = {
        "eventType": "Delivery",
        "mail": {
            "timestamp": "2026-04-01T00:00:00.000Z",
            "source": "shop@example.jp",
            "messageId": "0100018e-aaaa-bbbb-cccc-000000000009-000000",
            "destination": ["recipient@example.com"],
            "tags": {
                "ses:configuration-set": ["ConfigSet"],
                "ses:source-ip": ["192.0.2.0"],
                "ses:from-domain": ["example.jp"],
                "myCustomTag1": ["myCustomTagValue1"],
                "myCustomTag2": ["myCustomTagValue2"],
            },
        },
        "delivery": {
            "timestamp": "2026-04-01T00:00:01.000Z",
            "recipients": ["recipient@example.com"],
            "smtpResponse": "250 ok",
        },
    }
    adapter = SesAdapter([signer.topic_arn], clock=lambda: NOW, certificate_fetcher=signer.fetch)
    request = signed_webhook("ses", note, signer, timestamp=NOW).request()
    event = only_event(adapter.parse(request).records)
    assert event.metadata[TAGS_KEY] == [
        "myCustomTag1=myCustomTagValue1",
        "myCustomTag2=myCustomTagValue2",
    ]


@pytest.mark.parametrize("value", [3, [1], {"a": [None]}, [["nested"]]])
def test_tags_of_another_type_are_a_typed_error(value: object) -> None:
    with pytest.raises(PayloadError) as caught:
        provider_tags(value, field="tags")
    assert caught.value.field == "tags"


@given(st.lists(st.text(max_size=20), max_size=8))
def test_tags_are_the_non_blank_strings_in_order_each_once(values: list[str]) -> None:
    tags = provider_tags(values, field="tags")
    expected = list(dict.fromkeys(v.strip() for v in values if v.strip()))
    assert tags == expected
    assert len(set(tags)) == len(tags)
    assert all(t and t == t.strip() for t in tags)


@given(
    st.dictionaries(
        st.text(min_size=1, max_size=10).filter(lambda n: not n.startswith("ses:")),
        st.lists(st.text(min_size=1, max_size=10).filter(str.strip), min_size=1, max_size=3),
        max_size=5,
    )
)
def test_named_tags_give_one_pair_per_value(value: dict[str, list[str]]) -> None:
    tags = provider_tags(value, field="tags", skip_prefixes=("ses:",))
    assert set(tags) <= {f"{n}={v}".strip() for n, vs in value.items() for v in vs}
    for name, values in value.items():
        for v in values:
            assert f"{name}={v}".strip() in tags


def test_mandrill_msg_tags() -> None:
    # https://mailchimp.com/developer/transactional/docs/webhooks/ (msg.tags)
    from tests.test_providers_mandrill import ADAPTER, BY_NAME, KEY

    event = only_esp_event(ADAPTER, "mandrill", [BY_NAME["send"]], KEY)
    assert event.metadata[TAGS_KEY] == ["webhook-example"]


def test_sparkpost_rcpt_tags() -> None:
    # https://developers.sparkpost.com/api/webhooks/ (rcpt_tags). The published example's
    # tags ("male", "US") describe the recipient: one more reason to keep tags encrypted.
    from tests.test_providers_sparkpost import ADAPTER, SECRET, wrap

    event = only_esp_event(ADAPTER, "sparkpost", wrap("delivery"), SECRET)
    assert event.metadata[TAGS_KEY] == ["male", "US"]


def test_brevo_tags() -> None:
    # https://developers.brevo.com/docs/transactional-webhooks (tags)
    from tests.test_providers_brevo import ADAPTER, EVENTS, SECRET

    event = only_esp_event(ADAPTER, "brevo", EVENTS["delivered"], SECRET)
    assert event.metadata[TAGS_KEY] == ["transac_messages"]


def test_mailjet_customcampaign() -> None:
    # https://dev.mailjet.com/email/guides/webhooks/ (customcampaign; empty when not set)
    from tests.test_providers_mailjet import ADAPTER, EVENTS, SECRET

    assert TAGS_KEY not in only_esp_event(ADAPTER, "mailjet", EVENTS["sent"], SECRET).metadata
    [grouped, _] = EVENTS["grouped"]
    event = only_esp_event(ADAPTER, "mailjet", grouped, SECRET)
    assert event.metadata[TAGS_KEY] == ["test"]


def test_mailersend_tags_in_both_shapes() -> None:
    # https://developers.mailersend.com/api/v1/webhooks.html (data.tags, data.email.tags)
    from tests.test_providers_mailersend import parse

    assert parse("sent_flat").metadata[TAGS_KEY] == ["test", "test2"]
    assert TAGS_KEY not in parse("sent_fat").metadata  # "tags": null


def test_postal_message_tag() -> None:
    # https://docs.postalserver.io/developer/webhooks (payload.message.tag)
    from tests.test_providers_postal import parse

    assert parse("MessageSent").metadata[TAGS_KEY] == ["welcome"]
