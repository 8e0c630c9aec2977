"""Tests for commhistory.crypto.blind_index."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from commhistory.crypto import BLIND_INDEX_KINDS, BlindIndexer, Keyring, derive_subkey
from commhistory.errors import CryptoError, InvalidInputError, KeyNotFoundError

KEYRING = Keyring.generate()
INDEXER = BlindIndexer.from_provider(KEYRING)
FULL = BlindIndexer.from_provider(KEYRING, size=32)

values = st.text(min_size=1)


def test_from_provider_uses_the_index_key() -> None:
    keyring = Keyring.generate()
    first = keyring.index_key_id
    keyring.rotate()
    assert BlindIndexer.from_provider(keyring).key_id == first


def test_ordinary_rotation_keeps_indexes_and_index_rotation_changes_them() -> None:
    keyring = Keyring.generate()
    before = BlindIndexer.from_provider(keyring).index("email", "taro@example.com")
    keyring.rotate()
    assert BlindIndexer.from_provider(keyring).index("email", "taro@example.com") == before
    new = keyring.rotate(index=True)
    after = BlindIndexer.from_provider(keyring)
    assert after.key_id == new
    assert after.index("email", "taro@example.com") != before
    # the old index key can still be used to recompute stored indexes
    old = BlindIndexer.from_provider(keyring, key_id=keyring.key_ids()[0])
    assert old.index("email", "taro@example.com") == before


def test_index_is_the_truncated_hmac_of_kind_nul_value() -> None:
    subkey = derive_subkey(KEYRING, KEYRING.index_key_id, "blind-index")
    expected = hmac.new(subkey, b"phone\x00+819012345678", hashlib.sha256).digest()[:16]
    assert INDEXER.index("phone", "+819012345678") == expected


@given(value=values)
def test_index_is_deterministic(value: str) -> None:
    again = BlindIndexer.from_provider(KEYRING)
    assert INDEXER.index("email", value) == again.index("email", value)
    assert INDEXER.index("email", value) == INDEXER.index("email", value)


@given(value=values)
def test_index_differs_per_kind(value: str) -> None:
    indexes = {INDEXER.index(kind, value) for kind in BLIND_INDEX_KINDS}
    assert len(indexes) == len(BLIND_INDEX_KINDS)


@given(value=values)
def test_index_differs_per_key(value: str) -> None:
    other = BlindIndexer.from_provider(Keyring.generate())
    assert INDEXER.index("email", value) != other.index("email", value)


@given(a=values, b=values)
def test_different_values_give_different_indexes(a: str, b: str) -> None:
    if a != b:
        assert INDEXER.index("email", a) != INDEXER.index("email", b)


@given(size=st.integers(min_value=8, max_value=32), value=values)
def test_index_length_is_size(size: int, value: str) -> None:
    indexer = BlindIndexer.from_provider(KEYRING, size=size)
    assert indexer.size == size
    out = indexer.index("line", value)
    assert len(out) == size
    assert out == FULL.index("line", value)[:size]


@given(value=st.text(min_size=4))
def test_no_plaintext_in_the_output(value: str) -> None:
    out = INDEXER.index("email", value)
    assert value.encode() not in out


def test_kind_and_value_boundary_is_unambiguous() -> None:
    # the message is kind, NUL, value: no choice of value makes one kind collide with another
    assert INDEXER.index("email", "x") != INDEXER.index("emailx", "\x00")
    assert INDEXER.index("email", "\x00x") != INDEXER.index("email", "x")


def test_other_lower_case_kinds_are_accepted() -> None:
    assert len(INDEXER.index("push_token", "abc")) == 16


@pytest.mark.parametrize("kind", ["", "Email", "e mail", "e\x00", "1email"])
def test_bad_kind_is_an_invalid_input_error(kind: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        INDEXER.index(kind, "x")
    assert info.value.field == "kind"


def test_empty_value_is_refused() -> None:
    with pytest.raises(InvalidInputError) as info:
        INDEXER.index("email", "")
    assert info.value.field == "email"


@pytest.mark.parametrize("size", [0, 7, 33, True])
def test_bad_size_is_refused(size: int) -> None:
    with pytest.raises(InvalidInputError) as info:
        BlindIndexer.from_provider(KEYRING, size=size)
    assert info.value.field == "size"


def test_short_subkey_is_refused() -> None:
    with pytest.raises(CryptoError):
        BlindIndexer(b"x" * 16, key_id="k1")


def test_unknown_key_id_is_key_not_found() -> None:
    with pytest.raises(KeyNotFoundError):
        BlindIndexer.from_provider(KEYRING, key_id="k9-missing")


def test_repr_shows_no_key() -> None:
    subkey = derive_subkey(KEYRING, KEYRING.index_key_id, "blind-index")
    text = repr(INDEXER)
    assert KEYRING.index_key_id in text
    assert subkey.hex() not in text
    assert repr(subkey) not in text
