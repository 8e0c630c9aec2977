"""Hypothesis strategies for valid canonical records."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

from hypothesis import strategies as st

import commhistory as ch

ids = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Zs")),
    min_size=1,
    max_size=12,
)
texts = st.text(max_size=40)
emails = st.builds(
    "{}@{}.{}".format,
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,10}[A-Za-z0-9]", fullmatch=True).filter(
        lambda s: ".." not in s
    ),
    # No "--" (labels with hyphens in the 3rd and 4th places are reserved, IDNA).
    st.from_regex(r"[a-z][a-z0-9-]{0,8}[a-z0-9]", fullmatch=True).filter(lambda s: "--" not in s),
    st.sampled_from(["jp", "com", "co.jp", "net"]),
)
phones = st.sampled_from(
    ["+819012345678", "+818098765432", "+817012341234", "+81312345678", "+14155552671"]
)
line_ids = st.from_regex(r"U[0-9a-f]{32}", fullmatch=True)
offsets = st.sampled_from([UTC, timezone(timedelta(hours=9)), timezone(timedelta(hours=-5))])
moments = st.datetimes(
    min_value=datetime(1971, 1, 1), max_value=datetime(2099, 12, 31), timezones=offsets
)
metadata = st.dictionaries(
    st.text(min_size=1, max_size=8),
    st.one_of(st.none(), st.booleans(), st.integers(-1000, 1000), st.text(max_size=10)),
    max_size=3,
)


@st.composite
def messages(draw: st.DrawFn) -> ch.Message:
    """A valid message on a channel with a matching address."""
    channel = draw(st.sampled_from(list(ch.Channel)))
    if channel is ch.Channel.EMAIL:
        address = ch.normalize_email(draw(emails))
    elif channel in (ch.Channel.SMS, ch.Channel.VOICE, ch.Channel.WHATSAPP):
        address = draw(phones)
    elif channel is ch.Channel.LINE:
        address = draw(line_ids)
    else:
        address = draw(st.text(min_size=1, max_size=20).map(str.strip).filter(bool))
    return ch.Message(
        message_id=draw(ids),
        channel=channel,
        direction=draw(st.sampled_from(list(ch.Direction))),
        contact_id=draw(ids),
        address=address,
        sent_at=draw(moments),
        purpose=draw(st.sampled_from(list(ch.Purpose))),
        campaign_id=draw(st.none() | ids),
        variant=draw(st.none() | ids),
        subject=draw(st.none() | texts),
        body=draw(st.none() | texts),
        provider=draw(st.none() | ids),
        provider_message_id=draw(st.none() | ids),
        metadata=draw(metadata),
    )


@st.composite
def events(draw: st.DrawFn) -> ch.Event:
    """A valid event naming its message by id or by provider id."""
    by_provider = draw(st.booleans())
    # Amounts the canonical reader accepts: what storage holds exactly (|x| < 10**13,
    # at most 6 places); larger ones are refused when a line is read.
    revenue = draw(
        st.none()
        | st.decimals(
            min_value=-(10**12), max_value=10**12, allow_nan=False, allow_infinity=False, places=2
        ).map(Decimal)
    )
    return ch.Event(
        event_id=draw(ids),
        type=draw(st.sampled_from(list(ch.EventType))),
        occurred_at=draw(moments),
        message_id=None if by_provider else draw(ids),
        provider=draw(ids) if by_provider else draw(st.none() | ids),
        provider_message_id=draw(ids) if by_provider else None,
        provider_event_id=draw(st.none() | ids),
        address=draw(st.none() | emails.map(ch.normalize_email) | phones),
        status_code=draw(st.none() | st.from_regex(r"[245]\.[0-9]\.[0-9]{1,2}", fullmatch=True)),
        bounce=draw(st.none() | st.sampled_from(list(ch.BounceClass))),
        reason=draw(st.none() | texts),
        url=draw(st.none() | st.just("https://example.jp/x?a=1")),
        user_agent=draw(st.none() | texts),
        ip=draw(st.none() | st.ip_addresses().map(str)),
        machine=draw(st.booleans()),
        revenue=revenue,
        currency=None if revenue is None else draw(st.sampled_from(["JPY", "USD", "EUR"])),
        metadata=draw(metadata),
    )


@st.composite
def consent_events(draw: st.DrawFn) -> ch.ConsentEvent:
    """A valid consent event with optional evidence."""
    return ch.ConsentEvent(
        contact_id=draw(ids),
        channel=draw(st.sampled_from(list(ch.Channel))),
        purpose=draw(st.sampled_from(list(ch.Purpose))),
        action=draw(st.sampled_from(list(ch.ConsentAction))),
        occurred_at=draw(moments),
        method=draw(st.sampled_from(list(ch.ConsentMethod))),
        consent_id=draw(st.none() | ids),
        recorded_at=draw(st.none() | moments),
        source=draw(st.none() | texts),
        notice_version=draw(st.none() | ids),
        notice_hash=draw(st.none() | st.from_regex(r"[0-9a-f]{64}", fullmatch=True)),
        ip=draw(st.none() | st.ip_addresses().map(str)),
        user_agent=draw(st.none() | texts),
        actor=draw(st.none() | ids),
        metadata=draw(metadata),
    )


activity_names = st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True)


@st.composite
def activities(draw: st.DrawFn) -> ch.Activity:
    """A valid activity, with revenue or without, and any properties."""
    revenue = draw(
        st.none()
        | st.decimals(
            min_value=-(10**12), max_value=10**12, allow_nan=False, allow_infinity=False, places=2
        ).map(Decimal)
    )
    return ch.Activity(
        activity_id=draw(ids),
        contact_id=draw(ids),
        name=draw(activity_names),
        occurred_at=draw(moments),
        revenue=revenue,
        currency=None if revenue is None else draw(st.sampled_from(["JPY", "USD", "EUR"])),
        properties=draw(metadata),
    )


def records() -> st.SearchStrategy[ch.Message | ch.Event | ch.ConsentEvent | ch.Activity]:
    """Any valid canonical record."""
    return st.one_of(messages(), events(), consent_events(), activities())
