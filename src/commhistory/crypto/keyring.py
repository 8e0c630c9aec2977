"""Root keys: the :class:`KeyProvider` protocol, the local :class:`Keyring` file, and subkeys.

A *root key* is 32 random bytes named by an opaque *key id* (``"k1-3fa2b1c9"``).
Root keys never encrypt data directly: :func:`derive_subkey` turns one root key
into independent 32-byte subkeys, one per *purpose* (wrapping data keys, blind
indexes, unsubscribe tokens, the audit chain, dead letters), with HKDF-SHA256.

Two key ids matter at any time:

* the **current** key wraps new per-contact data keys; :meth:`Keyring.rotate`
  replaces it, while older keys stay available to unwrap what they wrapped;
* the **index** key derives the blind-index subkey. It changes only on an
  explicit ``rotate(index=True)``, because every stored blind index must then be
  recomputed; an ordinary rotation leaves lookups working.

:class:`Keyring` keeps its keys in a versioned JSON file created with mode
``0600``. A host that keeps root keys in a KMS or HSM implements
:class:`KeyProvider` instead; nothing else in commhistory needs to change.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import re
import secrets
import stat
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Final, Protocol, runtime_checkable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from commhistory.errors import CryptoError, KeyNotFoundError, KeyringExistsError

__all__ = [
    "KEYRING_FORMAT",
    "ROOT_KEY_SIZE",
    "SUBKEY_PURPOSES",
    "KeyProvider",
    "Keyring",
    "derive_subkey",
    "lookup_key_ids",
]

BLIND_INDEX_PURPOSE: Final = "blind-index"
"""The subkey purpose blind indexes are made with (kept for retired keys)."""

ROOT_KEY_SIZE: Final = 32
"""Length in bytes of every root key and every derived subkey (256 bits)."""

KEYRING_FORMAT: Final = 1
"""The ``"format"`` number written to, and required in, keyring files."""

SUBKEY_PURPOSES: Final = (
    "audit",
    "blind-index",
    "consent-evidence",
    "data-key-wrap",
    "dead-letter",
    "dead-letter-fingerprint",
    "orphan-event",
    "token",
    "token-enc",
)
"""The purposes commhistory derives subkeys for (see :func:`derive_subkey`)."""

_HKDF_INFO_PREFIX: Final = b"commhistory/v1/"
_KEY_ID_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
_PURPOSE_RE: Final = re.compile(r"[a-z][a-z0-9-]{0,63}")


@runtime_checkable
class KeyProvider(Protocol):
    """Supplies root keys, by id, to everything in commhistory that encrypts or indexes.

    :class:`Keyring` is the local implementation. Implement this protocol to keep
    root keys in a KMS, an HSM-backed secret store or a vault: return the 32-byte
    key for an id (cache it in memory; it is asked for once per contact data key
    that is wrapped or unwrapped, and derived subkeys are cached by commhistory).

    Key ids are opaque, non-secret ASCII strings of at most 64 characters; they
    are written next to every wrapped data key, so they must stay stable.
    """

    @property
    def current_key_id(self) -> str:
        """The id of the key that wraps new data keys."""
        ...

    @property
    def index_key_id(self) -> str:
        """The id of the key blind indexes are derived from.

        It changes only on an explicit index-key rotation, so an ordinary rotation
        does not invalidate stored blind indexes.
        """
        ...

    def key_ids(self) -> tuple[str, ...]:
        """Return the ids of every key whose material is available, oldest first."""
        ...

    def root_key(self, key_id: str) -> bytes:
        """Return the 32-byte root key named *key_id*.

        Raises:
            KeyNotFoundError: *key_id* is unknown or retired.
        """
        ...


def lookup_key_ids(provider: KeyProvider) -> tuple[str, ...]:
    """Return every key id blind-index lookups must try: live keys, then retired ones kept for it.

    A provider may keep the blind-index subkeys of retired keys by offering
    ``lookup_key_ids()`` and ``lookup_subkey(key_id)`` (:class:`Keyring` does);
    providers that do not simply contribute their live keys.

    Args:
        provider: The key provider.

    Returns:
        The ids, live keys first.
    """
    kept = getattr(provider, "lookup_key_ids", None)
    extra: tuple[str, ...] = tuple(kept()) if callable(kept) else ()
    return tuple(provider.key_ids()) + extra


@lru_cache(maxsize=1024)
def _hkdf(root: bytes, purpose: str) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(),
        length=ROOT_KEY_SIZE,
        salt=None,
        info=_HKDF_INFO_PREFIX + purpose.encode("ascii"),
    ).derive(root)


def derive_subkey(provider: KeyProvider, key_id: str, purpose: str) -> bytes:
    """Derive the 32-byte subkey of root key *key_id* for *purpose*.

    HKDF-SHA256 (RFC 5869) with no salt (HKDF then uses a block of zero bytes:
    the root keys are already uniformly random, so a salt adds nothing) and
    ``info = b"commhistory/v1/" + purpose``. Different purposes and different
    root keys give independent subkeys. Results are cached in memory, keyed by
    the root key and purpose; the provider is still asked for the root key on
    every call, so a retired key stops working at once.

    Args:
        provider: Where the root key comes from.
        key_id: The root key's id.
        purpose: A lower-case label such as ``"data-key-wrap"`` or
            ``"blind-index"`` (see :data:`SUBKEY_PURPOSES`).

    Returns:
        32 bytes of key material.

    Raises:
        KeyNotFoundError: The provider has no key *key_id*.
        CryptoError: *purpose* is not a lower-case label, or the provider
            returned a root key that is not 32 bytes.
    """
    if not _PURPOSE_RE.fullmatch(purpose):
        raise CryptoError(f"subkey purpose {purpose!r} is not a lower-case label")
    try:
        root = provider.root_key(key_id)
    except KeyNotFoundError:
        raise
    except KeyError as exc:  # a host provider that raised a bare KeyError
        raise KeyNotFoundError(key_id, hint="the key provider does not know it") from exc
    if not _is_key(root):
        raise CryptoError(f"the key provider returned a root key {key_id!r} that is not 32 bytes")
    return _hkdf(root, purpose)


class _KeyEntry:
    __slots__ = ("created_at", "material")

    def __init__(self, material: bytes, created_at: datetime) -> None:
        self.material = material
        self.created_at = created_at


class Keyring:
    """A set of root keys kept in a local JSON file: the default :class:`KeyProvider`.

    Create one with :meth:`generate`, persist it with :meth:`save` and read it
    back with :meth:`load`. :meth:`rotate` and :meth:`retire` change the keyring
    in memory only; call :meth:`save` afterwards. A keyring is safe to read from
    several threads; changing it while other threads use it is not.

    ``repr()`` shows key ids only, never key material.

    Args:
        keys: Root key material by key id, oldest first (32 bytes each).
        current: The id of the key that wraps new data keys.
        index: The id of the key blind indexes derive from (defaults to *current*).
        retired: Ids of keys whose material was destroyed; asking for them
            raises :class:`~commhistory.errors.KeyNotFoundError` with a hint saying so.
        created_at: When each key was made (defaults to now).
        lookup_keys: The ``"blind-index"`` subkeys of retired keys, by key id,
            kept by :meth:`retire` so that lookups (suppressions of erased
            people above all) keep matching; they decrypt nothing.

    Raises:
        CryptoError: A key id is malformed, a key is not 32 bytes, or *current*
            or *index* names no key in *keys*.

    .. versionadded:: 0.1.0
    """

    __slots__ = ("_current", "_index", "_keys", "_lookup", "_retired")

    def __init__(
        self,
        keys: Mapping[str, bytes],
        *,
        current: str,
        index: str | None = None,
        retired: Iterable[str] = (),
        created_at: Mapping[str, datetime] | None = None,
        lookup_keys: Mapping[str, bytes] | None = None,
    ) -> None:
        now = datetime.now(UTC)
        created = created_at or {}
        self._keys: dict[str, _KeyEntry] = {}
        for key_id, material in keys.items():
            _check_key_id(key_id)
            if not _is_key(material):
                raise CryptoError(f"root key {key_id!r} must be {ROOT_KEY_SIZE} bytes")
            self._keys[key_id] = _KeyEntry(material, created.get(key_id, now))
        self._retired: set[str] = {k for k in retired if k not in self._keys}
        self._lookup: dict[str, bytes] = {}
        for key_id, subkey in (lookup_keys or {}).items():
            if key_id not in self._retired:
                raise CryptoError(f"lookup key {key_id!r} is not a retired key")
            if not _is_key(subkey):
                raise CryptoError(f"lookup key {key_id!r} must be {ROOT_KEY_SIZE} bytes")
            self._lookup[key_id] = subkey
        index = current if index is None else index
        for role, key_id in (("current", current), ("index", index)):
            if key_id not in self._keys:
                raise CryptoError(f"the {role} key {key_id!r} is not among the keyring's keys")
        self._current = current
        self._index = index

    # -- construction and persistence -------------------------------------------------

    @classmethod
    def generate(cls) -> Keyring:
        """Return a new keyring holding one random 256-bit key, both current and index key.

        Returns:
            A keyring that exists only in memory until :meth:`save` is called.
        """
        key_id = _new_key_id(1)
        return cls({key_id: secrets.token_bytes(ROOT_KEY_SIZE)}, current=key_id)

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, check_permissions: bool = True) -> Keyring:
        """Read a keyring file written by :meth:`save`.

        On POSIX systems a keyring file that group or others may read or write is
        refused, as ``ssh`` refuses such private keys: fix it with
        ``chmod 600 PATH``. Pass ``check_permissions=False`` only where the file
        mode means nothing (some network or container file systems).

        Args:
            path: The keyring file.
            check_permissions: Refuse a file accessible to group or others.

        Returns:
            The keyring.

        Raises:
            CryptoError: The file is missing, unreadable, too widely readable,
                not JSON, of an unknown format, or inconsistent. The message
                names the path and the problem, never key material.
        """
        p = Path(path)
        try:
            fd = os.open(p, os.O_RDONLY)
        except FileNotFoundError as exc:
            raise CryptoError(
                f"keyring file {str(p)!r} does not exist; create one with "
                "Keyring.generate().save(path) or `commhistory init`"
            ) from exc
        except OSError as exc:
            raise CryptoError(f"cannot open keyring file {str(p)!r}: {exc.strerror}") from exc
        try:
            raw = _read_private_file(fd, p, check_permissions=check_permissions)
        finally:
            os.close(fd)
        return cls._from_document(raw, p)

    @classmethod
    def _from_document(cls, raw: bytes, path: Path) -> Keyring:
        where = f"keyring file {str(path)!r}"
        try:
            doc = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            line = f" (line {exc.lineno})" if isinstance(exc, json.JSONDecodeError) else ""
            # ``from None``: a JSONDecodeError carries the whole document, key material included.
            raise CryptoError(f"{where} is not valid JSON{line}") from None
        if not isinstance(doc, dict):
            raise CryptoError(f"{where} must hold a JSON object")
        if doc.get("format") != KEYRING_FORMAT:
            raise CryptoError(
                f"{where} has format {doc.get('format')!r}; this version reads format "
                f"{KEYRING_FORMAT}"
            )
        entries = doc.get("keys")
        if not isinstance(entries, list) or not entries:
            raise CryptoError(f"{where}: 'keys' must be a non-empty list")
        keys: dict[str, bytes] = {}
        created: dict[str, datetime] = {}
        for position, entry in enumerate(entries):
            key_id, material, created_at = _parse_entry(entry, f"{where}: keys[{position}]")
            if key_id in keys:
                raise CryptoError(f"{where}: key id {key_id!r} appears twice")
            keys[key_id] = material
            created[key_id] = created_at
        current, index, retired = doc.get("current"), doc.get("index"), doc.get("retired", [])
        if not isinstance(current, str) or not isinstance(index, str):
            raise CryptoError(f"{where}: 'current' and 'index' must be key ids")
        if not isinstance(retired, list) or not all(isinstance(r, str) for r in retired):
            raise CryptoError(f"{where}: 'retired' must be a list of key ids")
        lookup = _parse_lookup(doc.get("lookup_keys", []), where)
        try:
            return cls(
                keys,
                current=current,
                index=index,
                retired=retired,
                created_at=created,
                lookup_keys=lookup,
            )
        except CryptoError as exc:
            raise CryptoError(f"{where}: {exc}") from exc

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path | None:
        """Write the keyring to *path*, readable by its owner only; never clobber one by mistake.

        The keys are written to a temporary file created with mode ``0600`` in the
        same directory and flushed to disk, then put in place: a crash leaves either
        the old file or the new one, never a torn one.

        An existing file at *path* is refused
        (:class:`~commhistory.errors.KeyringExistsError`): it may hold the only copy
        of the keys a database was written with. With ``overwrite=True`` (key
        rotation) it is replaced, but only after a byte-for-byte backup is written
        beside it, ``PATH.bak-YYYYmmddTHHMMSSZ`` with mode ``0600``; delete the
        backup once the new file is safely backed up elsewhere.

        Args:
            path: The keyring file; its directory must exist.
            overwrite: Replace an existing file (after backing it up).

        Returns:
            The backup's path when an existing file was replaced, else ``None``.

        Raises:
            KeyringExistsError: *path* exists and *overwrite* is false.
            CryptoError: The file or its backup cannot be written (the message
                names the path).

        .. versionchanged:: 0.4.0
           Refuses to overwrite an existing file unless ``overwrite=True``, and
           backs the old file up first.
        """
        p = Path(path)
        if not overwrite and os.path.lexists(p):
            raise KeyringExistsError(str(p))
        data = json.dumps(self._document(), indent=2).encode("utf-8") + b"\n"
        tmp = p.with_name(f".{p.name}.{secrets.token_hex(4)}.tmp")
        backup: Path | None = None
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                if overwrite:
                    backup = _backup_file(p)
                    os.replace(tmp, p)
                else:
                    _link_exclusive(tmp, p)
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
        except KeyringExistsError:
            raise
        except OSError as exc:
            raise CryptoError(f"cannot write keyring file {str(p)!r}: {exc.strerror}") from exc
        _fsync_directory(p.parent)
        return backup

    def _document(self) -> dict[str, Any]:
        return {
            "format": KEYRING_FORMAT,
            "current": self._current,
            "index": self._index,
            "keys": [
                {
                    "id": key_id,
                    "created_at": entry.created_at.isoformat(),
                    "material": base64.b64encode(entry.material).decode("ascii"),
                }
                for key_id, entry in self._keys.items()
            ],
            "retired": sorted(self._retired),
            "lookup_keys": [
                {
                    "id": key_id,
                    "purpose": BLIND_INDEX_PURPOSE,
                    "material": base64.b64encode(subkey).decode("ascii"),
                }
                for key_id, subkey in sorted(self._lookup.items())
            ],
        }

    # -- the KeyProvider protocol -----------------------------------------------------

    @property
    def current_key_id(self) -> str:
        """The id of the key that wraps new data keys."""
        return self._current

    @property
    def index_key_id(self) -> str:
        """The id of the key blind indexes derive from (changes only on ``rotate(index=True)``)."""
        return self._index

    def key_ids(self) -> tuple[str, ...]:
        """Return the ids of the keys whose material this keyring holds, oldest first."""
        return tuple(self._keys)

    def root_key(self, key_id: str) -> bytes:
        """Return the 32-byte root key named *key_id*.

        Args:
            key_id: The key's id.

        Returns:
            The key material.

        Raises:
            KeyNotFoundError: The keyring never held *key_id*, or it was retired.
        """
        entry = self._keys.get(key_id)
        if entry is None:
            if key_id in self._retired:
                hint = "it was retired and its material destroyed"
            else:
                hint = "this keyring has " + ", ".join(repr(k) for k in self._keys)
            raise KeyNotFoundError(key_id, hint=hint)
        return entry.material

    def lookup_key_ids(self) -> tuple[str, ...]:
        """Return the ids of retired keys whose blind-index subkey is kept, sorted."""
        return tuple(sorted(self._lookup))

    def lookup_subkey(self, key_id: str) -> bytes:
        """Return the kept ``"blind-index"`` subkey of retired key *key_id*.

        Raises:
            KeyNotFoundError: No lookup subkey is kept for *key_id*.
        """
        subkey = self._lookup.get(key_id)
        if subkey is None:
            raise KeyNotFoundError(key_id, hint="no lookup subkey is kept for it")
        return subkey

    # -- lifecycle ----------------------------------------------------------------------

    def created_at(self, key_id: str) -> datetime:
        """Return when key *key_id* was generated (aware, UTC).

        Raises:
            KeyNotFoundError: The keyring has no material for *key_id*.
        """
        self.root_key(key_id)
        return self._keys[key_id].created_at

    def rotate(self, *, index: bool = False) -> str:
        """Add a new random key and make it the current key.

        Data keys wrapped under older keys still unwrap; re-wrap them under the new
        key (``commhistory rotate-keys``) before retiring the old one. With
        ``index=True`` the new key also becomes the index key, and every stored
        blind index must be recomputed before lookups find old rows again.

        Args:
            index: Also make the new key the blind-index key.

        Returns:
            The new key's id.
        """
        key_id = _new_key_id(len(self._keys) + len(self._retired) + 1)
        while key_id in self._keys or key_id in self._retired:  # pragma: no cover - 2**-32
            key_id = _new_key_id(len(self._keys) + len(self._retired) + 1)
        self._keys[key_id] = _KeyEntry(secrets.token_bytes(ROOT_KEY_SIZE), datetime.now(UTC))
        self._current = key_id
        if index:
            self._index = key_id
        return key_id

    def retire(self, key_id: str) -> None:
        """Destroy the material of a key that is neither current nor the index key.

        Anything still wrapped under it becomes unreadable (a crypto-shred), so
        re-wrap first. The id is remembered, so later lookups say it was retired.

        The key's ``"blind-index"`` subkey is kept (:meth:`lookup_subkey`):
        suppression entries are keyed by blind indexes, and those of erased
        people (whose addresses are gone) can never be recomputed under a new
        index key, so without it they would silently stop matching. The subkey
        is an HMAC key derived one-way from the root key: it unwraps and
        decrypts nothing, and tells only whether a guessed address matches an
        index made under the retired key.

        Args:
            key_id: The key to retire.

        Raises:
            KeyNotFoundError: The keyring has no material for *key_id*.
            CryptoError: *key_id* is the current or the index key.
        """
        self.root_key(key_id)
        for role, in_use in (("current", self._current), ("index", self._index)):
            if key_id == in_use:
                raise CryptoError(f"key {key_id!r} is the {role} key and cannot be retired")
        self._lookup[key_id] = _hkdf(self._keys[key_id].material, BLIND_INDEX_PURPOSE)
        del self._keys[key_id]
        self._retired.add(key_id)

    def __repr__(self) -> str:
        return (
            f"Keyring(current={self._current!r}, index={self._index!r}, "
            f"keys={tuple(self._keys)!r}, retired={tuple(sorted(self._retired))!r})"
        )


def _is_key(material: object) -> bool:
    return isinstance(material, bytes) and len(material) == ROOT_KEY_SIZE


def _new_key_id(ordinal: int) -> str:
    return f"k{ordinal}-{secrets.token_hex(4)}"


def _check_key_id(key_id: object) -> None:
    if not isinstance(key_id, str) or not _KEY_ID_RE.fullmatch(key_id):
        raise CryptoError(
            "a key id must be 1-64 ASCII letters, digits or '._:-', "
            "starting with a letter or digit"
        )


def _parse_entry(entry: object, where: str) -> tuple[str, bytes, datetime]:
    if not isinstance(entry, dict):
        raise CryptoError(f"{where} must be an object with 'id', 'created_at' and 'material'")
    key_id, material, created_at = entry.get("id"), entry.get("material"), entry.get("created_at")
    if not isinstance(key_id, str):
        raise CryptoError(f"{where}: 'id' must be a string")
    _check_key_id_in(key_id, where)
    if not isinstance(material, str):
        raise CryptoError(f"{where}: 'material' must be a base64 string")
    try:
        decoded = base64.b64decode(material.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error):
        raise CryptoError(f"{where}: 'material' is not valid base64") from None
    if len(decoded) != ROOT_KEY_SIZE:
        raise CryptoError(f"{where}: 'material' must decode to {ROOT_KEY_SIZE} bytes")
    try:
        when = datetime.fromisoformat(created_at) if isinstance(created_at, str) else None
    except ValueError:
        when = None
    if when is None or when.tzinfo is None:
        raise CryptoError(f"{where}: 'created_at' must be an ISO 8601 time with an offset")
    return key_id, decoded, when.astimezone(UTC)


def _parse_lookup(entries: object, where: str) -> dict[str, bytes]:
    if not isinstance(entries, list):
        raise CryptoError(f"{where}: 'lookup_keys' must be a list")
    out: dict[str, bytes] = {}
    for position, entry in enumerate(entries):
        at = f"{where}: lookup_keys[{position}]"
        if not isinstance(entry, dict) or entry.get("purpose") != BLIND_INDEX_PURPOSE:
            raise CryptoError(f"{at} must be an object with 'id', 'purpose' and 'material'")
        key_id, material, _ = _parse_entry(
            {**entry, "created_at": "1970-01-01T00:00:00+00:00"}, at
        )
        out[key_id] = material
    return out


def _check_key_id_in(key_id: str, where: str) -> None:
    try:
        _check_key_id(key_id)
    except CryptoError as exc:
        raise CryptoError(f"{where}: {exc}") from None


def _read_private_file(fd: int, path: Path, *, check_permissions: bool) -> bytes:
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise CryptoError(f"keyring path {str(path)!r} is not a regular file")
    mode = stat.S_IMODE(st.st_mode)
    if check_permissions and os.name == "posix" and mode & 0o077:
        raise CryptoError(
            f"keyring file {str(path)!r} is accessible to group or others "
            f"(mode {mode:04o}); run `chmod 600 {path}`"
        )
    chunks = []
    try:
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    except OSError as exc:
        raise CryptoError(f"cannot read keyring file {str(path)!r}: {exc.strerror}") from exc
    return b"".join(chunks)


def _link_exclusive(tmp: Path, path: Path) -> None:
    """Put the finished *tmp* file at *path* only if nothing is there (atomic on POSIX)."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise KeyringExistsError(str(path)) from None
    except OSError:  # pragma: no cover - a file system without hard links
        fd = _create_exclusive(path)
        with os.fdopen(fd, "wb") as handle:
            handle.write(tmp.read_bytes())
            handle.flush()
            os.fsync(handle.fileno())


def _create_exclusive(path: Path) -> int:
    try:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyringExistsError(str(path)) from None


def _backup_file(path: Path) -> Path | None:
    """Copy an existing keyring file to ``PATH.bak-<UTC time>`` (mode 0600); None if absent."""
    try:
        source = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        raw = _read_private_file(source, path, check_permissions=False)
    finally:
        os.close(source)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    for attempt in range(100):
        suffix = f".bak-{stamp}" if attempt == 0 else f".bak-{stamp}-{attempt}"
        backup = path.with_name(path.name + suffix)
        try:
            fd = os.open(backup, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            continue
        with os.fdopen(fd, "wb") as handle:
            handle.write(raw)
            handle.flush()
            os.fsync(handle.fileno())
        return backup
    raise CryptoError(f"cannot choose a backup name for keyring file {str(path)!r}")


def _fsync_directory(directory: Path) -> None:
    """Make the rename durable; best effort (not every platform can open a directory)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some file systems refuse
        pass
    finally:
        os.close(fd)
