from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from commhistory.errors import NormalizationError
from commhistory.normalize import cache_info, clear_caches, normalize_email
from tests.strategies import email_addresses


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("taro@example.com", "taro@example.com"),
        ("Taro@Example.COM", "Taro@example.com"),
        ("  Taro.Yamada+news@Mail.Example.co.jp \n", "Taro.Yamada+news@mail.example.co.jp"),
        ("\u3000taro@example.jp\u3000", "taro@example.jp"),
        ("taro@例え.jp", "taro@例え.jp"),
        ("taro@xn--r8jz45g.jp", "taro@例え.jp"),
        ("taro@XN--R8JZ45G.JP", "taro@例え.jp"),
        ("たろう@例え.jp", "たろう@例え.jp"),
        ("hans@STRASSE.de", "hans@strasse.de"),
        ("hans@Straße.de", "hans@straße.de"),
    ],
)
def test_examples(raw: str, expected: str) -> None:
    assert normalize_email(raw) == expected
    assert normalize_email(expected) == expected


def test_local_part_case_is_kept_and_no_provider_folding() -> None:
    assert normalize_email("Taro@gmail.com") != normalize_email("taro@gmail.com")
    assert normalize_email("t.aro+x@gmail.com") == "t.aro+x@gmail.com"


@pytest.mark.parametrize(
    ("raw", "reason_part"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("Taro <taro@example.com>", "display name"),
        ("<taro@example.com>", "display name"),
        ("taro.example.com", "'@'"),
        ("taro@", "domain"),
        ("taro@localhost", "domain"),
        ("taro@[192.0.2.1]", "domain"),
        ('"taro yamada"@example.com', "local part"),
        ("taro..yamada@example.com", "invalid"),
        ("taro@example..com", "invalid"),
        ("a" * 65 + "@example.com", "too long"),
        ("taro@" + "a" * 64 + ".com", "invalid domain"),
        ("taro@" + "a" * 400 + ".com", "too long"),
    ],
)
def test_rejects_with_value_free_reason(raw: str, reason_part: str) -> None:
    with pytest.raises(NormalizationError) as info:
        normalize_email(raw)
    assert info.value.field == "email"
    assert reason_part in info.value.reason
    if raw.strip():
        assert raw.strip() not in str(info.value)
    assert "taro" not in str(info.value)
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__ or info.value.__context__ is None


@pytest.mark.parametrize("value", [None, 42, b"taro@example.com", ["taro@example.com"]])
def test_rejects_non_strings(value: object) -> None:
    with pytest.raises(NormalizationError, match="expected a string") as info:
        normalize_email(value)  # type: ignore[arg-type]
    assert info.value.field == "email"


def test_failures_raise_every_time_and_are_cached() -> None:
    clear_caches()
    for _ in range(3):
        with pytest.raises(NormalizationError):
            normalize_email("Taro <taro@example.com>")
    info = cache_info()["email"]
    assert (info.hits, info.misses) == (2, 1)
    normalize_email("taro@example.com")
    normalize_email("taro@example.com")
    assert cache_info()["email"].hits == 3
    assert cache_info()["email"].maxsize == 32_768


@given(email_addresses())
def test_idempotent(raw: str) -> None:
    try:
        once = normalize_email(raw)
    except NormalizationError:
        return
    assert normalize_email(once) == once
    assert once == once.strip()
    domain = once.rpartition("@")[2]
    assert domain == domain.lower()


@given(st.emails())
def test_idempotent_on_generated_addresses(raw: str) -> None:
    try:
        once = normalize_email(raw)
    except NormalizationError:
        return
    assert normalize_email(once) == once


@given(st.text())
def test_arbitrary_text_only_raises_normalization_error(raw: str) -> None:
    try:
        result = normalize_email(raw)
    except NormalizationError as exc:
        error_field = exc.field
    else:
        assert normalize_email(result) == result
        return
    assert error_field == "email"
