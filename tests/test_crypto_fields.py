"""Tests for commhistory.crypto.fields: wrapped data keys and field envelopes."""

from __future__ import annotations

import os
import sys
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from commhistory.crypto import (
    ENVELOPE_FORMAT,
    FieldCipher,
    Keyring,
    NoncePool,
    contact_text_opener,
    envelope_key_ref,
    new_data_key,
    rewrap_data_key,
    unwrap_data_key,
    wrap_data_key,
    wrapped_key_id,
)
from commhistory.errors import CryptoError, DecryptionError, KeyNotFoundError

KEYRING = Keyring.generate()
CIPHER = FieldCipher(new_data_key(), key_ref="c1")
PLACE = {"table": "messages", "column": "address", "row_id": "m1"}

names = st.text(min_size=0, max_size=20)


# -- data keys -------------------------------------------------------------------------


def test_new_data_keys_are_32_random_bytes() -> None:
    keys = {new_data_key() for _ in range(50)}
    assert len(keys) == 50
    assert all(len(k) == 32 for k in keys)


def test_wrap_unwrap_round_trip() -> None:
    data_key = new_data_key()
    blob = wrap_data_key(KEYRING, data_key, contact_id="c1")
    assert unwrap_data_key(KEYRING, blob, contact_id="c1") == data_key
    assert data_key not in blob


def test_wrapped_blob_header_carries_version_and_key_id() -> None:
    blob = wrap_data_key(KEYRING, new_data_key(), contact_id="c1")
    key_id = KEYRING.current_key_id.encode()
    assert blob[0] == ENVELOPE_FORMAT
    assert blob[1] == len(key_id)
    assert blob[2 : 2 + len(key_id)] == key_id
    assert len(blob) == 2 + len(key_id) + 12 + 32 + 16
    assert wrapped_key_id(blob) == KEYRING.current_key_id


def test_wrapping_twice_gives_different_blobs() -> None:
    data_key = new_data_key()
    a = wrap_data_key(KEYRING, data_key, contact_id="c1")
    b = wrap_data_key(KEYRING, data_key, contact_id="c1")
    assert a != b


def test_unwrap_for_another_contact_fails() -> None:
    blob = wrap_data_key(KEYRING, new_data_key(), contact_id="c1")
    with pytest.raises(DecryptionError, match="does not authenticate"):
        unwrap_data_key(KEYRING, blob, contact_id="c2")


def test_unwrap_with_a_different_keyring_names_the_key() -> None:
    blob = wrap_data_key(KEYRING, new_data_key(), contact_id="c1")
    with pytest.raises(KeyNotFoundError) as info:
        unwrap_data_key(Keyring.generate(), blob, contact_id="c1")
    assert info.value.key_id == KEYRING.current_key_id
    assert "wrapped under it" in str(info.value)


def test_unwrap_with_another_key_of_the_same_id_fails() -> None:
    key_id = KEYRING.current_key_id
    impostor = Keyring({key_id: new_data_key()}, current=key_id)
    blob = wrap_data_key(KEYRING, new_data_key(), contact_id="c1")
    with pytest.raises(DecryptionError):
        unwrap_data_key(impostor, blob, contact_id="c1")


def test_rotated_keyring_still_unwraps_old_blobs_and_wraps_under_the_new_key() -> None:
    keyring = Keyring.generate()
    old_id = keyring.current_key_id
    data_key = new_data_key()
    old_blob = wrap_data_key(keyring, data_key, contact_id="c1")
    new_id = keyring.rotate()
    assert unwrap_data_key(keyring, old_blob, contact_id="c1") == data_key
    new_blob = wrap_data_key(keyring, data_key, contact_id="c1")
    assert wrapped_key_id(new_blob) == new_id
    assert wrapped_key_id(old_blob) == old_id


def test_rewrap_moves_a_blob_to_the_current_key_then_retire_is_safe() -> None:
    keyring = Keyring.generate()
    old_id = keyring.current_key_id
    data_key = new_data_key()
    blob = wrap_data_key(keyring, data_key, contact_id="c1")
    keyring.rotate(index=True)
    rewrapped = rewrap_data_key(keyring, blob, contact_id="c1")
    assert wrapped_key_id(rewrapped) == keyring.current_key_id
    assert rewrap_data_key(keyring, rewrapped, contact_id="c1") == rewrapped
    keyring.retire(old_id)
    assert unwrap_data_key(keyring, rewrapped, contact_id="c1") == data_key
    with pytest.raises(KeyNotFoundError, match="retired"):
        unwrap_data_key(keyring, blob, contact_id="c1")


def test_wrap_refuses_a_short_data_key() -> None:
    with pytest.raises(CryptoError, match="32 bytes"):
        wrap_data_key(KEYRING, b"short", contact_id="c1")


@pytest.mark.parametrize(
    "blob",
    [b"", b"\x01", b"\x02\x02k1" + bytes(60), b"\x01\x09k1", b"\x01\x02\xff\xfe" + bytes(60)],
)
def test_malformed_wrapped_blob_is_a_decryption_error(blob: bytes) -> None:
    with pytest.raises(DecryptionError):
        unwrap_data_key(KEYRING, blob, contact_id="c1")
    with pytest.raises(DecryptionError):
        wrapped_key_id(blob)


def test_truncated_or_padded_wrapped_blob_is_a_decryption_error() -> None:
    blob = wrap_data_key(KEYRING, new_data_key(), contact_id="c1")
    for bad in (blob[:-1], blob + b"\x00"):
        with pytest.raises(DecryptionError, match="length"):
            unwrap_data_key(KEYRING, bad, contact_id="c1")


@given(position=st.integers(min_value=0), flip=st.integers(min_value=1, max_value=255))
def test_tampering_any_byte_of_a_wrapped_blob_fails(position: int, flip: int) -> None:
    blob = bytearray(wrap_data_key(KEYRING, new_data_key(), contact_id="c1"))
    blob[position % len(blob)] ^= flip
    with pytest.raises(CryptoError):  # DecryptionError, or KeyNotFoundError for a changed id
        unwrap_data_key(KEYRING, bytes(blob), contact_id="c1")


# -- field envelopes --------------------------------------------------------------------


@given(value=st.text())
def test_text_round_trip(value: str) -> None:
    blob = CIPHER.encrypt(value, **PLACE)
    assert blob is not None
    assert CIPHER.decrypt_text(blob, **PLACE) == value


@given(value=st.binary())
def test_bytes_round_trip(value: bytes) -> None:
    blob = CIPHER.encrypt(value, **PLACE)
    assert CIPHER.decrypt(blob, **PLACE) == value


@given(table=names, column=names, row_id=names, value=st.text(min_size=1))
def test_round_trip_at_any_place(table: str, column: str, row_id: str, value: str) -> None:
    blob = CIPHER.encrypt(value, table=table, column=column, row_id=row_id)
    assert CIPHER.decrypt_text(blob, table=table, column=column, row_id=row_id) == value


def test_empty_string_and_unicode_round_trip() -> None:
    for value in ("", "山田 太郎", "🎉 sale", "a\x00b"):
        blob = CIPHER.encrypt(value, **PLACE)
        assert CIPHER.decrypt_text(blob, **PLACE) == value


def test_none_passes_through() -> None:
    assert CIPHER.encrypt(None, **PLACE) is None
    assert CIPHER.decrypt(None, **PLACE) is None
    assert CIPHER.decrypt_text(None, **PLACE) is None


def test_envelope_header_carries_version_and_key_ref() -> None:
    blob = FieldCipher(new_data_key(), key_ref="c17").encrypt("x", **PLACE)
    assert blob is not None
    assert blob[0] == ENVELOPE_FORMAT
    assert blob[1:5] == b"\x03c17"
    assert len(blob) == 5 + 12 + 1 + 16
    assert envelope_key_ref(blob) == "c17"


def test_plaintext_is_not_in_the_ciphertext() -> None:
    value = "taro.yamada@example.com"
    blob = CIPHER.encrypt(value, **PLACE)
    assert blob is not None
    assert value.encode() not in blob


def test_two_encryptions_of_the_same_value_differ() -> None:
    blobs = {CIPHER.encrypt("same", **PLACE) for _ in range(20)}
    assert len(blobs) == 20
    nonces = {b[4:16] for b in blobs if b is not None}
    assert len(nonces) == 20


@pytest.mark.parametrize(
    "moved",
    [
        {"table": "events", "column": "address", "row_id": "m1"},
        {"table": "messages", "column": "subject", "row_id": "m1"},
        {"table": "messages", "column": "address", "row_id": "m2"},
    ],
)
def test_ciphertext_moved_elsewhere_fails_naming_table_and_column(moved: dict[str, str]) -> None:
    value = "taro@example.com"
    blob = CIPHER.encrypt(value, **PLACE)
    with pytest.raises(DecryptionError) as info:
        CIPHER.decrypt(blob, **moved)
    message = str(info.value)
    assert f"{moved['table']}.{moved['column']}" in message
    assert value not in message


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (("a", "bc", "r"), ("ab", "c", "r")),
        (("t", "a", "bc"), ("t", "ab", "c")),
        (("t", "c", "r1"), ("t", "c", "r10")),
    ],
)
def test_place_boundaries_are_unambiguous(
    a: tuple[str, str, str], b: tuple[str, str, str]
) -> None:
    blob = CIPHER.encrypt("v", table=a[0], column=a[1], row_id=a[2])
    with pytest.raises(DecryptionError):
        CIPHER.decrypt(blob, table=b[0], column=b[1], row_id=b[2])


@given(position=st.integers(min_value=0), flip=st.integers(min_value=1, max_value=255))
def test_tampering_any_byte_fails(position: int, flip: int) -> None:
    blob = CIPHER.encrypt("taro@example.com", **PLACE)
    assert blob is not None
    tampered = bytearray(blob)
    tampered[position % len(tampered)] ^= flip
    with pytest.raises(DecryptionError) as info:
        CIPHER.decrypt(bytes(tampered), **PLACE)
    assert "taro" not in str(info.value)


def test_truncated_ciphertexts_fail() -> None:
    blob = CIPHER.encrypt("taro@example.com", **PLACE)
    assert blob is not None
    for end in range(len(blob)):
        with pytest.raises(DecryptionError):
            CIPHER.decrypt(blob[:end], **PLACE)


def test_another_data_key_with_the_same_ref_fails() -> None:
    blob = CIPHER.encrypt("x", **PLACE)
    with pytest.raises(DecryptionError, match="does not authenticate"):
        FieldCipher(new_data_key(), key_ref="c1").decrypt(blob, **PLACE)


def test_another_key_ref_is_named_in_the_error() -> None:
    blob = FieldCipher(new_data_key(), key_ref="c2").encrypt("x", **PLACE)
    with pytest.raises(DecryptionError, match="'c2'"):
        CIPHER.decrypt(blob, **PLACE)


def test_decrypt_accepts_memoryview_and_bytearray() -> None:
    blob = CIPHER.encrypt("x", **PLACE)
    assert blob is not None
    assert CIPHER.decrypt(memoryview(blob), **PLACE) == b"x"
    assert CIPHER.decrypt(bytearray(blob), **PLACE) == b"x"


def test_decrypt_text_of_non_utf8_is_a_decryption_error() -> None:
    blob = CIPHER.encrypt(b"\xff\xfe secret", **PLACE)
    with pytest.raises(DecryptionError, match="not UTF-8") as info:
        CIPHER.decrypt_text(blob, **PLACE)
    assert info.value.__cause__ is None
    assert "secret" not in str(info.value)


def test_encrypt_row_binds_each_column() -> None:
    values = {"address": "taro@example.com", "subject": "Spring sale", "body": None}
    blobs = CIPHER.encrypt_row(values, table="messages", row_id="m1")
    assert list(blobs) == ["address", "subject", "body"]
    assert blobs["body"] is None
    assert (
        CIPHER.decrypt_text(blobs["subject"], table="messages", column="subject", row_id="m1")
        == "Spring sale"
    )
    with pytest.raises(DecryptionError):
        CIPHER.decrypt(blobs["subject"], table="messages", column="address", row_id="m1")


@given(values=st.dictionaries(names, st.one_of(st.none(), st.text(), st.binary()), max_size=6))
def test_encrypt_row_matches_encrypt_per_column(values: dict[str, str | bytes | None]) -> None:
    blobs = CIPHER.encrypt_row(values, table="events", row_id="e1")
    assert list(blobs) == list(values)
    for column, value in values.items():
        plain = CIPHER.decrypt(blobs[column], table="events", column=column, row_id="e1")
        expected = value.encode() if isinstance(value, str) else value
        assert plain == expected
    nonces = [b[4:16] for b in blobs.values() if b is not None]
    assert len(set(nonces)) == len(nonces)


# -- bulk writes: row sealers and nonce pools --------------------------------------------


EVENT_SECRETS = ("address", "reason", "url", "user_agent", "ip", "metadata")


@given(
    values=st.lists(st.one_of(st.none(), st.text(), st.binary()), min_size=6, max_size=6),
    row_id=names,
)
def test_row_sealer_matches_encrypt_per_column(
    values: list[str | bytes | None], row_id: str
) -> None:
    sealer = CIPHER.row_sealer("events", EVENT_SECRETS)
    blobs = sealer(row_id, values, NoncePool())
    assert len(blobs) == len(values)
    for column, value, blob in zip(EVENT_SECRETS, values, blobs, strict=True):
        if value is None:
            assert blob is None
            continue
        assert blob is not None
        expected = value.encode() if isinstance(value, str) else value
        assert CIPHER.decrypt(blob, table="events", column=column, row_id=row_id) == expected
        # The same envelope layout as encrypt: header, nonce, ciphertext + tag.
        assert len(blob) == len(CIPHER.encrypt(value, table="t", column="c", row_id="r") or b"")


def test_row_sealer_binds_table_column_and_row() -> None:
    (blob,) = CIPHER.row_sealer("events", ["url"])("e1", ["https://x.test/"], NoncePool())
    assert blob is not None
    for place in (
        {"table": "messages", "column": "url", "row_id": "e1"},
        {"table": "events", "column": "ip", "row_id": "e1"},
        {"table": "events", "column": "url", "row_id": "e2"},
    ):
        with pytest.raises(DecryptionError):
            CIPHER.decrypt(blob, **place)


def test_sealers_sharing_a_pool_never_repeat_a_nonce() -> None:
    pool = NoncePool()
    other = FieldCipher(new_data_key(), key_ref="c1")
    seal_a = CIPHER.row_sealer("events", EVENT_SECRETS)
    seal_b = other.row_sealer("events", EVENT_SECRETS)
    nonces = []
    for n in range(700):  # past several CSPRNG blocks (16, 32, ... 1,024 nonces)
        for seal in (seal_a, seal_b):
            for blob in seal(f"e{n}", ["a", None, "b", "c", None, b"d"], pool):
                if blob is not None:
                    nonces.append(blob[4:16])  # header b"\x01\x02c1", then the nonce
    assert len(nonces) == 700 * 2 * 4
    assert len(set(nonces)) == len(nonces)
    assert all(len(n) == 12 for n in nonces)
    fresh = [NoncePool().take() for _ in range(100)]  # new pools draw new blocks
    assert len(set(fresh)) == 100


def test_row_sealer_needs_one_value_per_column_and_a_pool() -> None:
    sealer = CIPHER.row_sealer("events", ["url", "ip"])
    assert CIPHER.row_sealer("events", ("url", "ip")) is sealer  # kept by the cipher
    with pytest.raises(ValueError, match="zip"):
        sealer("e1", ["only one"], NoncePool())
    with pytest.raises(CryptoError, match="NoncePool"):
        sealer("e1", ["a", "b"], iter([b"\x00" * 12]))  # type: ignore[arg-type]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_pool_refuses_to_work_in_a_forked_child() -> None:
    pool = NoncePool()
    pool.take()  # the parent has a block in hand: a child must not reuse it
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        os.close(read)
        try:
            pool.take()
            verdict = b"handed out a nonce"
        except CryptoError:
            verdict = b"refused"
        os.write(write, verdict)
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        verdict = pipe.read()
    os.waitpid(pid, 0)
    assert verdict == b"refused"
    assert len(pool.take()) == 12  # the parent's pool goes on


def test_a_pool_used_by_two_threads_at_once_fails_rather_than_repeats() -> None:
    pool = NoncePool()
    seen: list[bytes] = []
    errors: list[BaseException] = []
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:

        def work() -> None:
            for _ in range(20_000):
                try:
                    seen.append(pool.take())
                except ValueError as exc:  # "generator already executing"
                    errors.append(exc)

        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)
    assert len(set(seen)) == len(seen)
    assert len(seen) + len(errors) == 80_000


def test_full_chain_from_keyring_to_field() -> None:
    data_key = new_data_key()
    wrapped = wrap_data_key(KEYRING, data_key, contact_id="c1")
    blob = FieldCipher(data_key, key_ref="c1").encrypt("山田", **PLACE)
    cipher = FieldCipher(unwrap_data_key(KEYRING, wrapped, contact_id="c1"), key_ref="c1")
    assert cipher.decrypt_text(blob, **PLACE) == "山田"


@pytest.mark.parametrize("ref", ["", "with space", "ü", "x" * 65])
def test_bad_key_ref_is_refused(ref: str) -> None:
    with pytest.raises(CryptoError, match="key_ref"):
        FieldCipher(new_data_key(), key_ref=ref)


def test_short_data_key_is_refused() -> None:
    with pytest.raises(CryptoError, match="32 bytes"):
        FieldCipher(b"x" * 16, key_ref="c1")


def test_repr_shows_the_ref_not_the_key() -> None:
    data_key = new_data_key()
    text = repr(FieldCipher(data_key, key_ref="c1"))
    assert "c1" in text
    assert data_key.hex() not in text
    assert repr(data_key) not in text


@given(st.one_of(st.none(), st.text()), st.text(min_size=1, max_size=20))
def test_text_opener_equals_decrypt_text(value: str | None, row_id: str) -> None:
    cipher = FieldCipher(new_data_key(), key_ref="c1")
    blob = cipher.encrypt(value, table="events", column="url", row_id=row_id)
    opener = cipher.text_opener("events", "url")
    assert opener(blob, row_id) == value
    if blob is not None:
        assert opener(bytearray(blob), row_id) == value
        assert opener(memoryview(blob), row_id) == value


def test_text_opener_raises_the_checked_errors() -> None:
    cipher = FieldCipher(new_data_key(), key_ref="c1")
    blob = cipher.encrypt("taro@example.jp", table="events", column="url", row_id="e1")
    assert blob is not None
    opener = cipher.text_opener("events", "url")
    with pytest.raises(DecryptionError, match=r"events\.url ciphertext does not authenticate"):
        opener(blob, "e2")  # moved to another row
    with pytest.raises(DecryptionError, match="does not authenticate"):
        cipher.text_opener("events", "ip")(blob, "e1")  # moved to another column
    with pytest.raises(DecryptionError, match="truncated"):
        opener(blob[:20], "e1")
    other = FieldCipher(new_data_key(), key_ref="c2")
    with pytest.raises(DecryptionError, match="under data key 'c1'"):
        other.text_opener("events", "url")(blob, "e1")
    binary = cipher.encrypt(b"\xff\xfe", table="events", column="url", row_id="e1")
    with pytest.raises(DecryptionError, match="not UTF-8"):
        opener(binary, "e1")


def _checked_open(
    keyring: Keyring, contact_id: str, wrapped: bytes, blob: bytes | None, row_id: str
) -> str | None:
    """The reference path: unwrap, build the contact's cipher, decrypt the text."""
    data_key = unwrap_data_key(keyring, wrapped, contact_id=contact_id)
    cipher = FieldCipher(data_key, key_ref="dk1")
    return cipher.decrypt_text(blob, table="addresses", column="address", row_id=row_id)


@given(
    st.lists(
        st.tuples(
            st.text(min_size=1, max_size=8),  # contact id
            st.one_of(st.none(), st.text(max_size=30)),  # the address
            st.text(min_size=1, max_size=12),  # row id
            st.booleans(),  # wrapped before a rotation
        ),
        max_size=12,
    )
)
def test_contact_text_opener_equals_unwrap_and_decrypt_text(
    rows: list[tuple[str, str | None, str, bool]],
) -> None:
    keyring = Keyring.generate()
    sealed = []
    for contact_id, value, row_id, old in rows:
        data_key = new_data_key()
        cipher = FieldCipher(data_key, key_ref="dk1")
        blob = cipher.encrypt(value, table="addresses", column="address", row_id=row_id)
        sealed.append((contact_id, data_key, blob, row_id, old, value))
    wrapped_old = {i: wrap_data_key(keyring, s[1], contact_id=s[0]) for i, s in enumerate(sealed)}
    keyring.rotate()
    opener = contact_text_opener(keyring, key_ref="dk1", table="addresses", column="address")
    for i, (contact_id, data_key, blob, row_id, old, value) in enumerate(sealed):
        fresh = wrap_data_key(keyring, data_key, contact_id=contact_id)
        wrapped = wrapped_old[i] if old else fresh
        expected = _checked_open(keyring, contact_id, wrapped, blob, row_id)
        assert expected == value
        assert opener(contact_id, wrapped, blob, row_id) == value
        if blob is not None:  # the driver's other binary types
            assert opener(contact_id, memoryview(wrapped), bytearray(blob), row_id) == value


def test_contact_text_opener_raises_the_checked_errors() -> None:
    keyring = Keyring.generate()
    data_key = new_data_key()
    wrapped = wrap_data_key(keyring, data_key, contact_id="c1")
    cipher = FieldCipher(data_key, key_ref="dk1")
    blob = cipher.encrypt("taro@example.jp", table="addresses", column="address", row_id="r1")
    assert blob is not None
    opener = contact_text_opener(keyring, key_ref="dk1", table="addresses", column="address")
    assert opener("c1", wrapped, blob, "r1") == "taro@example.jp"  # learns the root key
    with pytest.raises(DecryptionError, match="wrapped data key does not authenticate"):
        opener("c2", wrapped, blob, "r1")  # another contact's key
    with pytest.raises(DecryptionError, match=r"addresses\.address ciphertext does not auth"):
        opener("c1", wrapped, blob, "r2")  # moved to another row
    with pytest.raises(DecryptionError, match="truncated"):
        opener("c1", wrapped, blob[:20], "r1")
    with pytest.raises(DecryptionError, match="wrong length"):
        opener("c1", wrapped + b"x", blob, "r1")
    other = FieldCipher(data_key, key_ref="dk2")
    moved = other.encrypt("x", table="addresses", column="address", row_id="r1")
    with pytest.raises(DecryptionError, match="under data key 'dk2'"):
        opener("c1", wrapped, moved, "r1")
    binary = cipher.encrypt(b"\xff\xfe", table="addresses", column="address", row_id="r1")
    with pytest.raises(DecryptionError, match="not UTF-8"):
        opener("c1", wrapped, binary, "r1")
    with pytest.raises(DecryptionError, match="holds a str"):
        opener("c1", wrapped, "not a ciphertext", "r1")  # type: ignore[arg-type]
    with pytest.raises(KeyNotFoundError):  # a key the keyring does not hold
        opener("c1", wrap_data_key(Keyring.generate(), data_key, contact_id="c1"), blob, "r1")
    assert opener("c1", wrapped, None, "r1") is None
    with pytest.raises(CryptoError):
        contact_text_opener(keyring, key_ref="bad ref", table="addresses", column="address")
