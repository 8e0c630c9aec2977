from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from commhistory.errors import NormalizationError
from commhistory.normalize import normalize_phone
from tests.strategies import phone_spellings


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("090-1234-5678", "+819012345678"),
        ("080 1234 5678", "+818012345678"),
        ("07012345678", "+817012345678"),
        ("(090) 1234-5678", "+819012345678"),
        ("03-1234-5678", "+81312345678"),
        ("+81 90-1234-5678", "+819012345678"),
        ("+81 090-1234-5678", "+819012345678"),
        ("+819012345678", "+819012345678"),
        ("０９０－１２３４－５６７８", "+819012345678"),  # noqa: RUF001 - full-width on purpose
        ("＋８１９０１２３４５６７８", "+819012345678"),  # noqa: RUF001
        ("tel:+81-90-1234-5678", "+819012345678"),
        ("  090-1234-5678\t", "+819012345678"),
        ("0120-123-456", "+81120123456"),
        ("+1 415 555 2671", "+14155552671"),
    ],
)
def test_japanese_examples(raw: str, expected: str) -> None:
    assert normalize_phone(raw) == expected
    assert normalize_phone(expected) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("(415) 555-2671", "+14155552671"),
        ("415.555.2671", "+14155552671"),
        ("1-415-555-2671", "+14155552671"),
        ("+81 90 1234 5678", "+819012345678"),
    ],
)
def test_us_region(raw: str, expected: str) -> None:
    assert normalize_phone(raw, region="US") == expected
    assert normalize_phone(expected) == expected  # E.164 is region-independent


@pytest.mark.parametrize(
    ("raw", "reason_part"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("090-1234", "valid"),
        ("090-1234-56789", "valid"),
        ("099-1234-5678", "valid"),
        ("05-1234-5678", "valid"),
        ("12345", "valid"),
        ("hello", "not a phone number"),
        ("+999 1234 5678", "country calling code"),
        ("090-1234-5678 ext. 12", "extension"),
        ("0" * 65, "too long"),
    ],
)
def test_rejects_with_value_free_reason(raw: str, reason_part: str) -> None:
    with pytest.raises(NormalizationError) as info:
        normalize_phone(raw)
    assert info.value.field == "phone"
    assert reason_part in info.value.reason
    assert "1234" not in str(info.value)


def test_us_number_is_not_valid_in_japan() -> None:
    with pytest.raises(NormalizationError):
        normalize_phone("(415) 555-2671")


@pytest.mark.parametrize("region", ["XX", "jp", "", "ZZ", "JPN", None, 81])
def test_unknown_region(region: object) -> None:
    with pytest.raises(NormalizationError) as info:
        normalize_phone("090-1234-5678", region=region)  # type: ignore[arg-type]
    assert info.value.field == "region"


@pytest.mark.parametrize("value", [None, 9012345678, b"09012345678"])
def test_rejects_non_strings(value: object) -> None:
    with pytest.raises(NormalizationError, match="expected a string"):
        normalize_phone(value)  # type: ignore[arg-type]


@given(phone_spellings())
def test_spellings_normalize_to_e164_fixed_points(raw: str) -> None:
    once = normalize_phone(raw)
    assert once.startswith("+81")
    assert once[1:].isdigit()
    assert normalize_phone(once) == once
    assert normalize_phone(once, region="US") == once


@given(st.text(), st.sampled_from(["JP", "US", "GB", "KR"]))
def test_arbitrary_text_only_raises_normalization_error(raw: str, region: str) -> None:
    try:
        result = normalize_phone(raw, region=region)
    except NormalizationError as exc:
        error_field = exc.field
    else:
        assert normalize_phone(result) == result
        return
    assert error_field == "phone"
