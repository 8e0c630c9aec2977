"""The one guard for values stored in the clear: ``commhistory.normalize.personal_kind``.

Plain attributes and plain activity properties are both checked with it, so the edge
cases here are the rule for both (docs/normalization.md, "Values stored in the clear").
"""

from __future__ import annotations

from datetime import UTC, datetime

import phonenumbers
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from commhistory import Activity, ActivityCatalog, PersonalDataError
from commhistory.contacts import AttributeDefinition, AttributeSchema, looks_personal
from commhistory.errors import AttributeSchemaError, NormalizationError, PersonalValueError
from commhistory.normalize import (
    PersonalKind,
    cache_info,
    clear_caches,
    normalize_email,
    personal_kind,
)
from commhistory.normalize.personal import CACHED_LENGTH

EMAIL, PHONE, LINE = PersonalKind.EMAIL, PersonalKind.PHONE, PersonalKind.LINE_USER_ID

LINE_ID = "U4af4980629abcdef0123456789abcdef"
LINE_ID_FEW_DIGITS = "Uabcdef0abcdef1abcdef2abcdef3abcd"
"""A LINE id without a run of digits (the old attribute guard let it through)."""
FULL_WIDTH_PHONE = "090-1234-5678".translate(
    {ord("-"): 0xFF0D, **{48 + i: 0xFF10 + i for i in range(10)}}
)
"""090-1234-5678 in full-width digits and hyphens."""


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        # emails: anywhere in the text, plus tags, IDN, RFC 5322 atext in the local part
        ("taro@example.com", EMAIL),
        ("taro+shop@example.co.jp", EMAIL),
        ("contact: Taro.Yamada+shop@example.co.jp please", EMAIL),
        ("ユーザー@例え.jp", EMAIL),
        ("user@пример.рф", EMAIL),
        ("user@xn--e1afmkfd.xn--p1ai", EMAIL),
        ("o'brien@example.com", EMAIL),
        ("a@x.io", EMAIL),
        ("<a@x.io>", EMAIL),
        # not emails
        ("abc@def", None),
        ("@mention", None),
        ("2@1.99", None),  # two for 1.99: the top-level label starts with a digit
        ("3@4.5kg", None),
        ("x@y.z", None),  # one-letter top-level label
        # LINE user ids
        (LINE_ID, LINE),
        (LINE_ID_FEW_DIGITS, LINE),
        (f"see {LINE_ID}.", LINE),
        (LINE_ID.upper(), None),  # LINE ids are lower-case hex
        (LINE_ID[:-1], None),  # 31 hex digits
        ("x" + LINE_ID, None),  # inside a longer word
        # phones: Japanese national, international, E.164, full-width, tel: URIs
        ("090-1234-5678", PHONE),
        ("09012345678", PHONE),
        ("03-1234-5678", PHONE),
        ("(03) 1234-5678", PHONE),
        ("0120-123-456", PHONE),
        ("+81 90 1234 5678", PHONE),
        ("+81-3-1234-5678", PHONE),
        ("+14155552671", PHONE),
        ("call +1 212 555 1234", PHONE),
        ("+1 (212) 555-1234", PHONE),
        (FULL_WIDTH_PHONE, PHONE),
        ("090\u20101234\u20105678", PHONE),  # Unicode hyphens
        ("tel:+81-90-1234-5678", PHONE),
        # numbers that are not phones
        ("150-0002", None),  # a postcode
        ("〒150-0002", None),
        ("4901234567894", None),  # a JAN barcode
        ("SKU 4901234567894 x2", None),
        ("1234567890", None),
        ("12345678", None),
        ("1234-5678", None),
        ("ORD-2026-000123456", None),  # an order id
        ("order 0000000001", None),
        ("invoice #20260401-0001", None),
        ("¥1,280,000", None),  # prices
        ("$1,234,567.89", None),
        ("price 1280000 yen", None),
        ("2026-04-01 09:00:00", None),  # dates and times
        ("2026-04-01T09:00:00+09:00", None),
        ("2026/04/01", None),
        ("20260401", None),
        ("3.14159265358979", None),
        ("192.168.100.200", None),
        # codes and bands
        ("JP-13", None),
        ("2026-04", None),
        ("10000-20000", None),
        ("SKU-12345", None),
        ("/products/shoes?size=27", None),
        ("", None),
    ],
)
def test_edge_cases(text: str, kind: PersonalKind | None) -> None:
    assert personal_kind(text) is kind
    assert looks_personal(text) is (kind is not None)


@pytest.mark.parametrize(
    ("text", "jp", "us"),
    [
        ("(212) 555-1234", None, PHONE),  # a US national number is read in the US plan only
        ("212-555-1234", None, PHONE),
        ("090-1234-5678", PHONE, None),  # and a Japanese national number in Japan's
        ("+81 90 1234 5678", PHONE, PHONE),  # international numbers in every region
        ("+14155552671", PHONE, PHONE),
    ],
)
def test_national_numbers_are_read_in_the_region(
    text: str, jp: PersonalKind | None, us: PersonalKind | None
) -> None:
    assert personal_kind(text, "JP") is jp
    assert personal_kind(text, "US") is us


def test_kinds_are_strings_with_a_phrase() -> None:
    assert [str(k) for k in PersonalKind] == ["email", "phone", "line_user_id"]
    assert EMAIL == "email"
    assert [k.phrase for k in PersonalKind] == [
        "an email address",
        "a phone number",
        "a LINE user id",
    ]


def test_answers_are_cached_for_short_values_only() -> None:
    clear_caches()
    personal_kind("order 0000000001")
    personal_kind("order 0000000001")
    info = cache_info()["personal"]
    assert (info.hits, info.misses, info.currsize) == (1, 1, 1)
    long = "x" * CACHED_LENGTH + " 090-1234-5678"
    assert personal_kind(long) is PHONE
    assert personal_kind(long) is PHONE
    assert cache_info()["personal"].currsize == 1  # checked every time, never remembered
    clear_caches()
    assert cache_info()["personal"].currsize == 0


# ------------------------------------------------------- both guards apply the one rule


CATALOG = ActivityCatalog({"purchase": frozenset({"sku"})})
SCHEMA = AttributeSchema([AttributeDefinition(name="code", type="str")])


@pytest.mark.parametrize(
    ("value", "phrase"),
    [
        ("taro@example.com", "an email address"),
        ("090-1234-5678", "a phone number"),
        (LINE_ID_FEW_DIGITS, "a LINE user id"),
    ],
)
def test_attributes_and_activities_refuse_the_same_values(value: str, phrase: str) -> None:
    act = Activity(
        activity_id="a1",
        contact_id="c1",
        name="purchase",
        occurred_at=datetime(2026, 4, 1, tzinfo=UTC),
        properties={"sku": value},
    )
    with pytest.raises(PersonalDataError, match=phrase) as refused:
        CATALOG.check(act)
    assert value not in str(refused.value)
    with pytest.raises(PersonalValueError, match=phrase) as info:
        SCHEMA.values_of({"code": value})
    assert value not in str(info.value)
    with pytest.raises(AttributeSchemaError):
        AttributeDefinition(name="code", type="enum", values=("gold", value))


@pytest.mark.parametrize("value", ["2026-04-01 09:00:00", "2@1.99", "150-0002", "4901234567894"])
def test_attributes_and_activities_accept_the_same_values(value: str) -> None:
    CATALOG.check(
        Activity(
            activity_id="a1",
            contact_id="c1",
            name="purchase",
            occurred_at=datetime(2026, 4, 1, tzinfo=UTC),
            properties={"sku": value},
        )
    )
    [typed] = SCHEMA.values_of({"code": value})
    assert typed.value == value


# ---------------------------------------------------------------------- Hypothesis

_WORDS = st.text(
    alphabet=st.characters(categories=["L", "Zs"], exclude_characters="@"), max_size=30
)
"""Text around the identifier: letters (any script) and spaces, no digits, no '@'."""


@st.composite
def e164_numbers(draw: st.DrawFn) -> str:
    """A valid E.164 number: a region's example mobile number with its last digits redrawn."""
    region = draw(st.sampled_from(["JP", "US", "GB", "DE", "FR", "KR", "AU", "BR", "IN", "SG"]))
    example = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE)
    assert example is not None
    national = str(example.national_number)
    tail = draw(st.text(alphabet="0123456789", min_size=3, max_size=3))
    number = phonenumbers.PhoneNumber(
        country_code=example.country_code, national_number=int(national[:-3] + tail)
    )
    assume(phonenumbers.is_valid_number(number))
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


@given(st.emails(), _WORDS, _WORDS)
def test_any_normalized_email_in_text_is_found(address: str, before: str, after: str) -> None:
    try:
        email = normalize_email(address)
    except NormalizationError:
        assume(False)
        raise
    assert personal_kind(f"{before} {email} {after}") is EMAIL
    assert personal_kind(email) is EMAIL


@given(e164_numbers(), _WORDS, _WORDS, st.sampled_from(["JP", "US", "DE"]))
def test_any_e164_number_in_text_is_found(
    number: str, before: str, after: str, region: str
) -> None:
    assert personal_kind(number, region) is PHONE
    assert personal_kind(f"{before} {number} {after}", region) is PHONE


@given(st.text(max_size=80), st.sampled_from(["JP", "US"]))
def test_never_fails(text: str, region: str) -> None:
    assert personal_kind(text, region) in {None, *PersonalKind}


# ------------------------------------------------------- other values stored in the clear


@pytest.mark.parametrize(
    ("name", "quoted"),
    [
        ("brand_new_event", True),
        ("email.received", True),
        (LINE_ID, False),  # a short word, but a LINE user id
        ("tel:09012345678", False),
        ("to:taro@example.com", False),
    ],
)
def test_an_unknown_event_name_is_quoted_in_the_plain_reason_only_when_not_personal(
    name: str, quoted: bool
) -> None:
    from commhistory.providers._shared import unknown_event

    reason = unknown_event("event", name).reason
    assert (name in reason) is quoted
