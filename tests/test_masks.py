"""Address masks: the prefix fast path for phone numbers gives exactly the parsed result."""

from __future__ import annotations

import phonenumbers
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from commhistory import audit
from commhistory.audit import masked
from commhistory.errors import NormalizationError
from commhistory.model import ADDRESS_KINDS, Channel
from commhistory.normalize import normalize_phone
from commhistory.normalize.mask import (
    mask_address,
    mask_email,
    mask_line_user_id,
    mask_phone,
)
from tests.strategies import phone_spellings, world_phone_numbers


def _mask_phone_reference(number: str) -> str:
    """``mask_phone`` as it was before the fast path: always through ``phonenumbers.parse``."""
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        return "***"
    national = phonenumbers.national_significant_number(parsed)
    if len(national) < 8:
        return f"+{parsed.country_code} ****"
    return f"+{parsed.country_code} {national[:2]}-****-{national[-4:]}"


def test_country_codes_are_prefix_free_and_short() -> None:
    codes = [str(c) for c in phonenumbers.COUNTRY_CODE_TO_REGION_CODE]
    assert all(1 <= len(c) <= 3 for c in codes)
    for a in codes:
        for b in codes:
            assert a == b or not b.startswith(a), (a, b)


@given(world_phone_numbers())
@example("+819012345678")
@example("+390612345678")  # Italy: the national number keeps its leading zero
@example("+12015550123")  # NANP: one-digit country code
@example("+80012345678")  # non-geographic (international freephone)
@example("+24740123")  # Ascension: a short national number
def test_fast_path_equals_the_parsed_mask_for_valid_numbers(number: str) -> None:
    assert phonenumbers.is_valid_number(phonenumbers.parse(number, None))
    assert mask_phone(number) == _mask_phone_reference(number)


@given(phone_spellings())
def test_fast_path_equals_the_parsed_mask_for_normalized_input(raw: str) -> None:
    try:
        number = normalize_phone(raw)
    except NormalizationError:
        return
    assert mask_phone(number) == _mask_phone_reference(number)


@given(st.text(max_size=24) | st.from_regex(r"\+[0-9]{1,20}", fullmatch=True))
def test_any_text_is_masked_without_raising_and_shows_few_digits(value: str) -> None:
    masked_value = mask_phone(value)
    assert isinstance(masked_value, str)
    assert sum(ch.isdigit() for ch in masked_value) <= 3 + 2 + 4
    if not value.startswith("+") or not value[1:].isascii():
        assert masked_value == _mask_phone_reference(value)  # other spellings are parsed


@pytest.mark.parametrize(
    ("channel", "address", "expected"),
    [
        (Channel.EMAIL, "taro@example.com", "t***@example.com"),
        (Channel.SMS, "+819012345678", "+81 90-****-5678"),
        (Channel.VOICE, "+819012345678", "+81 90-****-5678"),
        (Channel.LINE, "U" + "0123456789abcdef" * 2, "U***cdef"),
        ("email", "taro@example.com", "t***@example.com"),
        (Channel.PUSH, "fcm-token-0123456789", None),
        (Channel.CHAT, "taro#1234", None),
        (Channel.POSTAL, "1-2-3 Chiyoda, Tokyo", None),
        (Channel.WEB, "session-42", None),
        (Channel.EMAIL, "", None),  # an erased in-memory message
    ],
)
def test_mask_address_by_channel(channel: str, address: str, expected: str | None) -> None:
    assert mask_address(channel, address) == expected


def test_public_names_stay_where_they_were() -> None:
    for name in ("mask_email", "mask_phone", "mask_line_user_id", "mask_address"):
        assert getattr(audit, name) is getattr(masked, name)
    assert audit.mask_email is mask_email
    assert audit.mask_line_user_id is mask_line_user_id


def test_the_masked_channels_are_the_indexed_ones() -> None:
    # backfill_masks selects rows by ADDRESS_KINDS; ingest masks by mask_address.
    samples = {
        Channel.EMAIL: "taro@example.com",
        Channel.SMS: "+819012345678",
        Channel.VOICE: "+819012345678",
        Channel.LINE: "U" + "0123456789abcdef" * 2,
    }
    for channel in Channel:
        masked_value = mask_address(channel, samples.get(channel, "some address"))
        assert (masked_value is not None) == (channel in ADDRESS_KINDS), channel
