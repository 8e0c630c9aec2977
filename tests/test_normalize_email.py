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


# The fast ASCII path (normalize/email.py `_fast_ascii`) must say what email-validator
# says whenever it answers at all: same canonical address, and never an address the
# library refuses. Addresses are drawn near its edges: every ASCII atext character and
# a few others, dots and hyphens in every position, special-use and numeric TLDs,
# labels and local parts around their length limits.
_EDGE_LOCAL = st.text(
    alphabet=st.sampled_from("aZ09._+-!#$%&'*/=?^`{|}~\"(),:;<>[]\\ @é"), min_size=0, max_size=70
) | st.builds(lambda n: "a" * n, st.integers(60, 68))
_EDGE_LABEL = st.text(alphabet=st.sampled_from("aZ09-_.é"), min_size=0, max_size=6) | st.builds(
    lambda n: "b" * n, st.integers(60, 66)
)
_EDGE_TLD = st.sampled_from(
    ["com", "JP", "c", "co1", "123", "test", "local", "localhost", "invalid", "onion", "arpa",
     "example", "xn--p1ai", "ab--cd", "a-b", "", "Com."]
)  # fmt: skip


@st.composite
def _edge_addresses(draw: st.DrawFn) -> str:
    labels = draw(st.lists(_EDGE_LABEL, min_size=0, max_size=4))
    domain = ".".join([*labels, draw(_EDGE_TLD)])
    return f"{draw(_EDGE_LOCAL)}@{domain}"


@given(st.one_of(_edge_addresses(), email_addresses(), st.emails(), st.text(max_size=30)))
def test_fast_ascii_path_agrees_with_email_validator(raw: str) -> None:
    from email_validator import EmailNotValidError, validate_email

    from commhistory.normalize.email import _fast_ascii

    text = raw.strip()
    fast = _fast_ascii(text)
    if fast is None:
        return  # not certain: normalize_email asks the library
    try:
        full = validate_email(text, check_deliverability=False, strict=True).normalized
    except EmailNotValidError:
        pytest.fail("the fast path accepted an address email-validator refuses")
    assert fast == full


@pytest.mark.parametrize(
    "raw",
    ["taro@example.com", "Taro.Yamada+news@Mail.Example.co.jp", "User1@Example.JP",
     "a_b-c@x-y.z0.org", "a" * 64 + "@example.com"],
)  # fmt: skip
def test_fast_ascii_path_takes_plain_addresses(raw: str) -> None:
    from commhistory.normalize.email import _fast_ascii

    assert _fast_ascii(raw) == raw.partition("@")[0] + "@" + raw.partition("@")[2].lower()


@pytest.mark.parametrize(
    "raw",
    ["taro@xn--r8jz45g.jp", "taro@ab--cd.com", "taro@example.test", "taro@mail.local",
     "taro@example.c0m", "taro@example.123", "t..aro@example.com", ".taro@example.com",
     "taro@-example.com", "taro@example-.com", "Jörg@example.com", "taro@例え.jp",
     '"t"@example.com', "a" * 65 + "@example.com", "taro@" + "b" * 64 + ".com"],
)  # fmt: skip
def test_fast_ascii_path_leaves_the_rest_to_email_validator(raw: str) -> None:
    from commhistory.normalize.email import _fast_ascii

    assert _fast_ascii(raw) is None
