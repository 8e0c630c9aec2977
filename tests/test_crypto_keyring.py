"""Tests for commhistory.crypto.keyring: the keyring file, rotation and HKDF subkeys."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from commhistory.crypto import (
    SUBKEY_PURPOSES,
    BlindIndexer,
    KeyProvider,
    Keyring,
    derive_subkey,
    lookup_key_ids,
)
from commhistory.errors import CryptoError, KeyNotFoundError, KeyringExistsError

_B64_KEY = base64.b64encode(bytes(range(32))).decode()

posix_only = pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")


def _materials(keyring: Keyring) -> list[bytes]:
    return [keyring.root_key(k) for k in keyring.key_ids()]


def test_generate_makes_one_key_that_is_current_and_index() -> None:
    keyring = Keyring.generate()
    (key_id,) = keyring.key_ids()
    assert keyring.current_key_id == key_id
    assert keyring.index_key_id == key_id
    assert len(keyring.root_key(key_id)) == 32
    assert isinstance(keyring, KeyProvider)


def test_two_generated_keyrings_differ() -> None:
    a, b = Keyring.generate(), Keyring.generate()
    assert a.current_key_id != b.current_key_id
    assert a.root_key(a.current_key_id) != b.root_key(b.current_key_id)


def test_save_load_round_trip(tmp_path: Path) -> None:
    keyring = Keyring.generate()
    keyring.rotate()
    keyring.rotate(index=True)
    keyring.rotate()
    path = tmp_path / "commhistory.keyring"
    keyring.save(path)
    loaded = Keyring.load(path)
    assert loaded.key_ids() == keyring.key_ids()
    assert loaded.current_key_id == keyring.current_key_id
    assert loaded.index_key_id == keyring.index_key_id
    assert _materials(loaded) == _materials(keyring)
    for key_id in keyring.key_ids():
        assert loaded.created_at(key_id) == keyring.created_at(key_id)


def test_saved_file_is_versioned_json_with_base64_material(tmp_path: Path) -> None:
    keyring = Keyring.generate()
    path = tmp_path / "k.json"
    keyring.save(path)
    doc = json.loads(path.read_text())
    assert doc["format"] == 1
    assert doc["current"] == doc["index"] == keyring.current_key_id
    (entry,) = doc["keys"]
    assert entry["id"] == keyring.current_key_id
    assert base64.b64decode(entry["material"]) == keyring.root_key(entry["id"])
    assert entry["created_at"].endswith("+00:00")


@posix_only
def test_saved_file_has_mode_0600_even_with_a_lax_umask(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    old = os.umask(0)
    try:
        Keyring.generate().save(path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


@posix_only
def test_save_refuses_to_overwrite_an_existing_keyring(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    first = Keyring.generate()
    first.save(path)
    before = path.read_bytes()
    with pytest.raises(KeyringExistsError, match="already exists and was not replaced") as info:
        Keyring.generate().save(path)
    assert info.value.path == str(path)
    assert isinstance(info.value, CryptoError)
    assert isinstance(info.value, FileExistsError)
    assert "overwrite=True" in str(info.value)
    assert path.read_bytes() == before
    assert Keyring.load(path).current_key_id == first.current_key_id
    assert [p.name for p in tmp_path.iterdir()] == ["k.json"]  # no temporary left behind


def test_save_refuses_any_existing_file_even_a_broken_one(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    path.write_text("old")
    with pytest.raises(KeyringExistsError):
        Keyring.generate().save(path)
    assert path.read_text() == "old"


def test_save_overwrite_backs_up_the_old_file_then_replaces_it(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    path.write_text("old")
    path.chmod(0o644)
    keyring = Keyring.generate()
    backup = keyring.save(path, overwrite=True)
    assert backup is not None
    assert backup.parent == tmp_path
    assert backup.name.startswith("k.json.bak-")
    assert backup.read_text() == "old"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(backup).st_mode) == 0o600
    assert Keyring.load(path).current_key_id == keyring.current_key_id
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.json", backup.name]


def test_save_overwrite_twice_keeps_both_backups(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    keyring = Keyring.generate()
    assert keyring.save(path, overwrite=True) is None  # nothing to back up
    first = path.read_bytes()
    keyring.rotate()
    one = keyring.save(path, overwrite=True)
    second = path.read_bytes()
    keyring.rotate()
    two = keyring.save(path, overwrite=True)
    assert one is not None
    assert two is not None
    assert one != two
    assert (one.read_bytes(), two.read_bytes()) == (first, second)
    assert Keyring.load(one).current_key_id != Keyring.load(path).current_key_id


def test_save_into_missing_directory_is_a_crypto_error(tmp_path: Path) -> None:
    with pytest.raises(CryptoError, match="cannot write keyring file"):
        Keyring.generate().save(tmp_path / "missing" / "k.json")


@posix_only
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o602])
def test_load_refuses_a_file_open_to_group_or_others(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "k.json"
    keyring = Keyring.generate()
    keyring.save(path)
    path.chmod(mode)
    with pytest.raises(CryptoError, match="chmod 600") as info:
        Keyring.load(path)
    assert f"{mode:04o}" in str(info.value)
    loaded = Keyring.load(path, check_permissions=False)
    assert loaded.current_key_id == keyring.current_key_id


def test_load_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.keyring"
    with pytest.raises(CryptoError, match="does not exist") as info:
        Keyring.load(path)
    assert str(path) in str(info.value)


def test_load_a_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CryptoError):
        Keyring.load(tmp_path)


def _write(path: Path, content: object) -> Path:
    text = content if isinstance(content, str) else json.dumps(content)
    path.write_text(text)
    path.chmod(0o600)
    return path


def _valid_doc() -> dict[str, object]:
    keyring = Keyring.generate()
    key_id = keyring.current_key_id
    return {
        "format": 1,
        "current": key_id,
        "index": key_id,
        "keys": [
            {
                "id": key_id,
                "created_at": "2026-04-01T00:00:00+00:00",
                "material": base64.b64encode(keyring.root_key(key_id)).decode(),
            }
        ],
    }


def _mutated(**changes: object) -> dict[str, object]:
    doc = _valid_doc()
    doc.update(changes)
    return doc


def _entry_mutated(**changes: object) -> dict[str, object]:
    doc = _valid_doc()
    entry = dict(doc["keys"][0])  # type: ignore[index]
    entry.update(changes)
    doc["keys"] = [entry]
    return doc


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{not json", "not valid JSON"),
        ("[]", "JSON object"),
        (_mutated(format=2), "format 2"),
        (_mutated(format=None), "format None"),
        (_mutated(keys=[]), "'keys'"),
        (_mutated(keys="k1"), "'keys'"),
        (_mutated(current=7), "'current'"),
        (_mutated(current="k9-unknown"), "current key 'k9-unknown'"),
        (_mutated(index="k9-unknown"), "index key 'k9-unknown'"),
        (_mutated(retired="k0"), "'retired'"),
        (_entry_mutated(material="!!!"), "not valid base64"),
        (_entry_mutated(material=base64.b64encode(b"short").decode()), "32 bytes"),
        (_entry_mutated(material=5), "'material'"),
        (_entry_mutated(id=""), "key id"),
        (_entry_mutated(id="bad id with spaces"), "key id"),
        (_entry_mutated(created_at="yesterday"), "'created_at'"),
        (_entry_mutated(created_at="2026-04-01T00:00:00"), "'created_at'"),
    ],
)
def test_load_malformed_file_is_a_crypto_error_naming_the_path(
    tmp_path: Path, content: object, expected: str
) -> None:
    path = _write(tmp_path / "bad.keyring", content)
    with pytest.raises(CryptoError) as info:
        Keyring.load(path)
    message = str(info.value)
    assert expected in message
    assert str(path) in message


def test_malformed_file_errors_do_not_leak_material(tmp_path: Path) -> None:
    doc = _valid_doc()
    material = doc["keys"][0]["material"]  # type: ignore[index]
    path = _write(tmp_path / "bad.keyring", json.dumps(doc)[:-3])
    with pytest.raises(CryptoError) as info:
        Keyring.load(path)
    assert material not in str(info.value)
    assert info.value.__cause__ is None


def test_duplicate_key_ids_are_refused(tmp_path: Path) -> None:
    doc = _valid_doc()
    doc["keys"] = [doc["keys"][0], doc["keys"][0]]  # type: ignore[index]
    with pytest.raises(CryptoError, match="twice"):
        Keyring.load(_write(tmp_path / "dup.keyring", doc))


def test_repr_and_str_show_ids_but_never_material() -> None:
    keyring = Keyring.generate()
    keyring.rotate()
    for text in (repr(keyring), str(keyring)):
        for key_id in keyring.key_ids():
            assert key_id in text
            material = keyring.root_key(key_id)
            assert base64.b64encode(material).decode() not in text
            assert material.hex() not in text
            assert repr(material) not in text


def test_rotate_makes_a_new_current_key_and_keeps_the_old() -> None:
    keyring = Keyring.generate()
    first = keyring.current_key_id
    second = keyring.rotate()
    assert second != first
    assert keyring.current_key_id == second
    assert keyring.index_key_id == first
    assert keyring.key_ids() == (first, second)
    assert keyring.root_key(first) != keyring.root_key(second)


def test_rotate_index_moves_the_index_key_too() -> None:
    keyring = Keyring.generate()
    new = keyring.rotate(index=True)
    assert keyring.current_key_id == keyring.index_key_id == new


def test_retire_destroys_material_and_says_so() -> None:
    keyring = Keyring.generate()
    old = keyring.current_key_id
    keyring.rotate(index=True)
    keyring.retire(old)
    assert old not in keyring.key_ids()
    with pytest.raises(KeyNotFoundError) as info:
        keyring.root_key(old)
    assert info.value.key_id == old
    assert "retired" in str(info.value)


def test_retired_ids_survive_save_and_load(tmp_path: Path) -> None:
    keyring = Keyring.generate()
    old = keyring.current_key_id
    keyring.rotate(index=True)
    keyring.retire(old)
    path = tmp_path / "k"
    keyring.save(path)
    loaded = Keyring.load(path)
    assert old not in loaded.key_ids()
    with pytest.raises(KeyNotFoundError, match="retired"):
        loaded.root_key(old)
    # a later rotation never reuses a retired id
    assert loaded.rotate() != old


def test_retire_refuses_the_current_and_the_index_key() -> None:
    keyring = Keyring.generate()
    first = keyring.current_key_id
    second = keyring.rotate()
    with pytest.raises(CryptoError, match="index key"):
        keyring.retire(first)
    with pytest.raises(CryptoError, match="current key"):
        keyring.retire(second)
    assert keyring.key_ids() == (first, second)


def test_retire_unknown_key_is_key_not_found() -> None:
    with pytest.raises(KeyNotFoundError):
        Keyring.generate().retire("k9-00000000")


def test_wrong_keyring_names_the_key_id() -> None:
    a, b = Keyring.generate(), Keyring.generate()
    with pytest.raises(KeyNotFoundError) as info:
        b.root_key(a.current_key_id)
    assert info.value.key_id == a.current_key_id
    assert a.current_key_id in str(info.value)
    assert isinstance(info.value, KeyError)


def test_constructor_validates_keys() -> None:
    with pytest.raises(CryptoError, match="32 bytes"):
        Keyring({"k1": b"x" * 31}, current="k1")
    with pytest.raises(CryptoError, match="current key"):
        Keyring({"k1": b"x" * 32}, current="k2")


def test_subkeys_differ_per_purpose_and_per_key() -> None:
    keyring = Keyring.generate()
    first = keyring.current_key_id
    second = keyring.rotate()
    subkeys = {
        (key_id, purpose): derive_subkey(keyring, key_id, purpose)
        for key_id in (first, second)
        for purpose in SUBKEY_PURPOSES
    }
    assert all(len(k) == 32 for k in subkeys.values())
    assert len(set(subkeys.values())) == len(subkeys)
    assert keyring.root_key(first) not in subkeys.values()


def test_subkeys_are_deterministic_across_loads(tmp_path: Path) -> None:
    keyring = Keyring.generate()
    keyring.save(tmp_path / "k")
    loaded = Keyring.load(tmp_path / "k")
    key_id = keyring.current_key_id
    assert derive_subkey(loaded, key_id, "token") == derive_subkey(keyring, key_id, "token")


def test_subkey_matches_rfc5869_hkdf_with_zero_salt() -> None:
    # HKDF-SHA256 computed by hand with hmac, independently of the cryptography package.
    import hashlib
    import hmac

    keyring = Keyring({"k1": bytes(range(32))}, current="k1")
    prk = hmac.new(b"\x00" * 32, bytes(range(32)), hashlib.sha256).digest()
    okm = hmac.new(prk, b"commhistory/v1/blind-index" + b"\x01", hashlib.sha256).digest()
    assert derive_subkey(keyring, "k1", "blind-index") == okm


def test_subkey_of_unknown_key_is_key_not_found() -> None:
    with pytest.raises(KeyNotFoundError):
        derive_subkey(Keyring.generate(), "k9-missing", "token")


def test_subkey_of_retired_key_fails_even_after_caching() -> None:
    keyring = Keyring.generate()
    old = keyring.current_key_id
    derive_subkey(keyring, old, "token")
    keyring.rotate(index=True)
    keyring.retire(old)
    with pytest.raises(KeyNotFoundError):
        derive_subkey(keyring, old, "token")


@pytest.mark.parametrize("purpose", ["", "Token", "data key", "x" * 65, "ü"])
def test_bad_purpose_is_refused(purpose: str) -> None:
    keyring = Keyring.generate()
    with pytest.raises(CryptoError, match="purpose"):
        derive_subkey(keyring, keyring.current_key_id, purpose)


class _DictProvider:
    """A host-written provider that raises a bare KeyError."""

    def __init__(self, keys: dict[str, bytes]) -> None:
        self._keys = keys

    @property
    def current_key_id(self) -> str:
        return next(iter(self._keys))

    @property
    def index_key_id(self) -> str:
        return next(iter(self._keys))

    def key_ids(self) -> tuple[str, ...]:
        return tuple(self._keys)

    def root_key(self, key_id: str) -> bytes:
        return self._keys[key_id]


def test_host_provider_key_error_is_translated() -> None:
    provider = _DictProvider({"kms-1": os.urandom(32)})
    assert isinstance(provider, KeyProvider)
    assert len(derive_subkey(provider, "kms-1", "token")) == 32
    with pytest.raises(KeyNotFoundError) as info:
        derive_subkey(provider, "kms-2", "token")
    assert info.value.key_id == "kms-2"


def test_host_provider_with_a_short_key_is_refused() -> None:
    provider = _DictProvider({"kms-1": b"short"})
    with pytest.raises(CryptoError, match="32 bytes"):
        derive_subkey(provider, "kms-1", "token")


# ---------------------------------------------------------------------- lookup subkeys


def test_retire_keeps_only_the_blind_index_subkey(tmp_path: Path) -> None:
    keyring = Keyring.generate()
    old = keyring.current_key_id
    before = BlindIndexer.from_provider(keyring, old).index("email", "taro@example.com")
    wrap_subkey = derive_subkey(keyring, old, "data-key-wrap")
    keyring.rotate(index=True)
    keyring.retire(old)
    assert keyring.lookup_key_ids() == (old,)
    assert lookup_key_ids(keyring) == (keyring.current_key_id, old)
    # Lookups under the retired key still match...
    kept = BlindIndexer.from_provider(keyring, old)
    assert kept.index("email", "taro@example.com") == before
    # ...but nothing else derives from it any more.
    with pytest.raises(KeyNotFoundError):
        derive_subkey(keyring, old, "data-key-wrap")
    assert keyring.lookup_subkey(old) != wrap_subkey
    path = tmp_path / "k"
    keyring.save(path)
    loaded = Keyring.load(path)
    assert loaded.lookup_subkey(old) == keyring.lookup_subkey(old)
    document = path.read_text()
    assert base64.b64encode(keyring.lookup_subkey(old)).decode() in document
    subkey = keyring.lookup_subkey(old)
    assert base64.b64encode(subkey).decode() not in repr(loaded)
    assert subkey.hex() not in repr(loaded)
    with pytest.raises(KeyNotFoundError, match="no lookup subkey"):
        loaded.lookup_subkey(loaded.current_key_id)


@pytest.mark.parametrize(
    ("lookup", "message"),
    [
        ({}, "must be a list"),
        ([1], "must be an object"),
        ([{"id": "k1-00000000", "material": "AAAA"}], "must be an object"),
        ([{"id": "k1-00000000", "purpose": "blind-index", "material": "AAAA"}], "32 bytes"),
        (
            [{"id": "k9-00000000", "purpose": "blind-index", "material": _B64_KEY}],
            "is not a retired key",
        ),
    ],
)
def test_malformed_lookup_keys_are_named(tmp_path: Path, lookup: object, message: str) -> None:
    keyring = Keyring.generate()
    path = tmp_path / "k"
    keyring.save(path)
    document = json.loads(path.read_text())
    document["lookup_keys"] = lookup
    path.write_text(json.dumps(document))
    path.chmod(0o600)
    with pytest.raises(CryptoError, match=message) as info:
        Keyring.load(path)
    assert str(path) in str(info.value)
