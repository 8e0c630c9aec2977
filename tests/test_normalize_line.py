from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from commhistory.errors import NormalizationError
from commhistory.normalize import normalize_line_user_id
from tests.strategies import line_user_ids

VALID = "U4af4980629a1b2c3d4e5f60718293a4b"


def test_valid_and_stripped() -> None:
    assert normalize_line_user_id(VALID) == VALID
    assert normalize_line_user_id(f"  {VALID}\n") == VALID


@pytest.mark.parametrize(
    ("raw", "reason_part"),
    [
        (VALID.upper(), "case"),
        ("u" + VALID[1:], "case"),
        (VALID[:-1], "32 hex"),
        (VALID + "0", "32 hex"),
        ("C" + VALID[1:], "32 hex"),
        (VALID[:-1] + "g", "32 hex"),
        ("", "32 hex"),
        (VALID[:10] + " " + VALID[10:], "32 hex"),
    ],
)
def test_rejects(raw: str, reason_part: str) -> None:
    with pytest.raises(NormalizationError) as info:
        normalize_line_user_id(raw)
    assert info.value.field == "line_user_id"
    assert reason_part in info.value.reason
    assert VALID[1:] not in str(info.value)


def test_rejects_non_string() -> None:
    with pytest.raises(NormalizationError, match="expected a string"):
        normalize_line_user_id(None)  # type: ignore[arg-type]


@given(line_user_ids(), st.sampled_from(["", " ", "\t", "\n"]))
def test_idempotent(value: str, pad: str) -> None:
    once = normalize_line_user_id(pad + value + pad)
    assert once == value
    assert normalize_line_user_id(once) == once


@given(st.text())
def test_arbitrary_text_only_raises_normalization_error(raw: str) -> None:
    try:
        result = normalize_line_user_id(raw)
    except NormalizationError as exc:
        error_field = exc.field
    else:
        assert normalize_line_user_id(result) == result
        return
    assert error_field == "line_user_id"
