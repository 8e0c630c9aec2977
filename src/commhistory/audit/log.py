"""The tamper-evident audit log: append-only entries in one HMAC chain.

Every entry says who acted (actor id and roles), what they did (action and the
permission it needed), to which ids (a contact id and other target ids), the
purpose they stated, and the outcome. Entries hold identifiers only, never a
personal value (no address, phone number, subject or body).

Each entry carries a MAC::

    mac[n] = HMAC-SHA256(audit_subkey(key_id[n]),
                         b"commhistory-audit/v1" || mac[n-1] || canonical(entry[n]))

where ``mac[0]`` is 32 zero bytes and ``audit_subkey`` is the keyring's
``"audit"`` subkey (:func:`commhistory.crypto.derive_subkey`). The entry's
sequence number is part of what is authenticated, so an entry that is altered,
removed, inserted or moved breaks the chain at that point, and
:meth:`AuditLog.verify_chain` names the first such entry. Removing entries
from the *end* of the log leaves a shorter valid chain: compare
:attr:`ChainReport.head` with a copy kept elsewhere to catch that.

Writers are serialized: on SQLite by the write lock every write transaction
takes (``BEGIN IMMEDIATE``), on PostgreSQL by a transaction-level advisory lock
taken before the chain head is read, so concurrent writers extend one chain.

.. versionadded:: 0.3.0
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

import attrs

from commhistory.crypto import KeyProvider, derive_subkey
from commhistory.errors import CommHistoryError, InvalidInputError
from commhistory.normalize.time import from_micros, to_micros
from commhistory.store.audit import AUDIT_LOCK_KEY, GENESIS_MAC, AuditStore, MemoryAuditStore

if TYPE_CHECKING:
    from commhistory.store.protocol import Repository

__all__ = [
    "AUDIT_LOCK_KEY",
    "AUDIT_SUBKEY_PURPOSE",
    "AuditEntry",
    "AuditLog",
    "AuditStore",
    "ChainReport",
    "Outcome",
]

AUDIT_SUBKEY_PURPOSE: Final = "audit"
"""The keyring subkey purpose the audit MACs are computed under."""

_DOMAIN: Final = b"commhistory-audit/v1"
_GENESIS: Final = GENESIS_MAC


class Outcome:
    """The outcomes an entry records (plain strings, so hosts may add their own)."""

    OK: Final = "ok"
    """The operation was allowed and completed."""
    DENIED: Final = "denied"
    """The actor lacked the permission; nothing was done."""
    FAILED: Final = "failed"
    """The operation was allowed but raised an error (its class name follows a colon)."""


@attrs.frozen(kw_only=True)
class AuditEntry:
    """One entry of the audit log.

    Attributes:
        seq: The 1-based position in the chain.
        recorded_at: When it was appended, UTC.
        actor_id: Who acted (an opaque staff or service id).
        roles: The actor's roles at the time.
        action: What was done (``"timeline"``, ``"export_subject"``...).
        permission: The permission the action needed, if any.
        contact_id: The contact acted on, if one.
        targets: Other ids acted on (message ids, contact ids found...).
        purpose: The purpose the actor stated.
        outcome: ``"ok"``, ``"denied"`` or ``"failed:<ErrorClass>"``.
        key_id: The keyring key whose audit subkey authenticates the entry.
        mac: The entry's MAC, hex.

    .. versionadded:: 0.3.0
    """

    seq: int
    recorded_at: datetime
    actor_id: str
    roles: tuple[str, ...]
    action: str
    permission: str | None
    contact_id: str | None
    targets: tuple[str, ...]
    purpose: str
    outcome: str
    key_id: str
    mac: str


@attrs.frozen(kw_only=True)
class ChainReport:
    """The result of :meth:`AuditLog.verify_chain`.

    Attributes:
        intact: Every entry verifies and links to the one before.
        entries: How many entries were read.
        first_bad: The sequence number of the first entry that does not verify
            (altered or forged), or is missing, or does not link to the entry
            before it (entries removed, inserted or reordered); ``None`` when intact.
        problem: What is wrong at *first_bad*, free of personal data.
        head: The last entry's MAC, hex (all zeros for an empty log); keep a copy
            elsewhere to detect entries removed from the end.

    .. versionadded:: 0.3.0
    """

    intact: bool
    entries: int
    first_bad: int | None = None
    problem: str | None = None
    head: str = _GENESIS.hex()


def _canonical(row: dict[str, Any]) -> bytes:
    fields = [
        row["seq"],
        row["recorded_at"],
        row["actor_id"],
        row["roles"],
        row["action"],
        row["permission"],
        row["contact_id"],
        row["targets"],
        row["purpose"],
        row["outcome"],
        row["key_id"],
    ]
    return json.dumps(fields, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def _check_text(value: object, field: str, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str) or not value:
        raise InvalidInputError(field=field, reason="must be a non-empty string")


class AuditLog:
    """The hash-chained, HMAC-authenticated audit log of one repository.

    Open it with :meth:`for_repository` (the repository's own audit store: the
    ``audit_log`` table of a SQL repository) or
    :meth:`in_memory`.

    Args:
        keyring: The key provider; entries are authenticated under the
            ``"audit"`` subkey of its current key.
        store: Where the rows live (a repository's ``audit_store``; or use the
            class methods).

    .. versionadded:: 0.3.0
    """

    def __init__(self, keyring: KeyProvider, store: AuditStore) -> None:
        self._keyring = keyring
        self._store = store
        self._keys: dict[str, bytes] = {}

    @classmethod
    def for_repository(cls, repo: Repository) -> AuditLog:
        """Return the audit log a repository keeps (``repo.audit_store``).

        Args:
            repo: The repository; the key provider its audit store names (a SQL
                repository's keyring) authenticates the entries.

        Returns:
            The log.
        """
        store = repo.audit_store
        return cls(store.keyring, store)

    @classmethod
    def in_memory(cls, keyring: KeyProvider) -> AuditLog:
        """Return an audit log held in memory (for tests and the in-memory repository).

        Args:
            keyring: The key provider that authenticates the entries.

        Returns:
            An empty log.
        """
        return cls(keyring, MemoryAuditStore(keyring))

    def __repr__(self) -> str:
        return f"AuditLog(store={type(self._store).__name__})"

    def stored_in(self, repo: Repository) -> bool:
        """Whether this log is *repo*'s own audit store, sharing its transactions.

        Then an append made inside ``repo.transaction()`` joins that
        transaction, so an audited operation and its entry commit together.
        """
        store = self._store
        return store is repo.audit_store and store.shares_transactions

    def _key(self, key_id: str) -> bytes:
        key = self._keys.get(key_id)
        if key is None:
            key = derive_subkey(self._keyring, key_id, AUDIT_SUBKEY_PURPOSE)
            self._keys[key_id] = key
        return key

    def _mac(self, key_id: str, prev: bytes, row: dict[str, Any]) -> bytes:
        return hmac.new(
            self._key(key_id), _DOMAIN + prev + _canonical(row), hashlib.sha256
        ).digest()

    def append(
        self,
        *,
        actor_id: str,
        roles: Sequence[str],
        action: str,
        purpose: str,
        outcome: str,
        permission: str | None = None,
        contact_id: str | None = None,
        targets: Iterable[str] = (),
    ) -> AuditEntry:
        """Append one entry at the head of the chain.

        Args:
            actor_id: Who acted.
            roles: The actor's roles.
            action: What was done.
            purpose: The purpose the actor stated.
            outcome: ``"ok"``, ``"denied"``, ``"failed:<ErrorClass>"``...
            permission: The permission the action needed.
            contact_id: The contact acted on.
            targets: Other ids acted on.

        Returns:
            The entry as stored.

        Raises:
            InvalidInputError: A field is empty or not a string.
            StorageError: The database failed; nothing was appended.
        """
        _check_text(actor_id, "actor_id")
        _check_text(action, "action")
        _check_text(purpose, "purpose")
        _check_text(outcome, "outcome")
        _check_text(permission, "permission", optional=True)
        _check_text(contact_id, "contact_id", optional=True)
        role_list = sorted(roles)
        target_list = list(targets)
        for value in (*role_list, *target_list):
            _check_text(value, "targets")
        key_id = self._keyring.current_key_id
        recorded_at = to_micros(datetime.now(UTC))

        def build(seq: int, prev: bytes) -> dict[str, Any]:
            row: dict[str, Any] = {
                "seq": seq,
                "recorded_at": recorded_at,
                "actor_id": actor_id,
                "roles": ",".join(role_list),
                "action": action,
                "permission": permission,
                "contact_id": contact_id,
                "targets": json.dumps(target_list, ensure_ascii=True),
                "purpose": purpose,
                "outcome": outcome,
                "key_id": key_id,
                "prev_mac": prev,
            }
            row["mac"] = self._mac(key_id, prev, row)
            return row

        return _entry(self._store.append(build))

    def entries(
        self,
        *,
        contact_id: str | None = None,
        actor_id: str | None = None,
        since: datetime | None = None,
        actions: Iterable[str] | None = None,
    ) -> list[AuditEntry]:
        """Return entries in chain order, optionally filtered.

        Args:
            contact_id: Only entries about this contact (as ``contact_id`` or
                among the targets).
            actor_id: Only entries by this actor.
            since: Only entries recorded at or after this aware datetime.
            actions: Only entries of these actions (``"export_subject"``,
                ``"erase_subject"``...).

        .. versionchanged:: 0.4.0
           ``actions=``.

        Returns:
            The entries.

        Raises:
            InvalidInputError: *since* is naive.
            StorageError: The database failed.
        """
        if since is not None and since.utcoffset() is None:
            raise InvalidInputError(field="since", reason="must be timezone-aware")
        rows = self._store.rows(
            contact_id=None, actor_id=actor_id, since=None if since is None else to_micros(since)
        )
        if actions is not None:
            wanted = frozenset(actions)
            rows = [r for r in rows if r["action"] in wanted]
        out = [_entry(r) for r in rows]
        if contact_id is not None:
            out = [e for e in out if e.contact_id == contact_id or contact_id in e.targets]
        return out

    def verify_chain(self) -> ChainReport:
        """Check every entry's MAC and its link to the entry before.

        Returns:
            The report; ``first_bad`` names the first entry altered, forged,
            removed (the first missing sequence number) or out of place.

        Raises:
            StorageError: The database failed.
        """
        prev = _GENESIS
        expected = 1
        count = 0
        for row in self._store.rows(contact_id=None, actor_id=None, since=None):
            count += 1
            seq = int(row["seq"])
            if seq != expected:
                return ChainReport(
                    intact=False,
                    entries=count,
                    first_bad=expected,
                    problem=f"entry {expected} is missing (removed)",
                    head=prev.hex(),
                )
            try:
                mac = self._mac(str(row["key_id"]), bytes(row["prev_mac"]), row)
            except CommHistoryError:
                return ChainReport(
                    intact=False,
                    entries=count,
                    first_bad=seq,
                    problem=f"entry {seq} names a key the keyring does not hold",
                    head=prev.hex(),
                )
            if not hmac.compare_digest(mac, bytes(row["mac"])):
                return ChainReport(
                    intact=False,
                    entries=count,
                    first_bad=seq,
                    problem=f"entry {seq} does not verify (altered, forged or moved)",
                    head=prev.hex(),
                )
            if not hmac.compare_digest(bytes(row["prev_mac"]), prev):
                return ChainReport(
                    intact=False,
                    entries=count,
                    first_bad=seq,
                    problem=(
                        f"entry {seq} does not follow entry {seq - 1} "
                        "(entries removed, inserted or reordered)"
                    ),
                    head=prev.hex(),
                )
            prev = bytes(row["mac"])
            expected += 1
        return ChainReport(intact=True, entries=count, head=prev.hex())


def _entry(row: dict[str, Any]) -> AuditEntry:
    try:
        targets = json.loads(row["targets"])
    except ValueError:
        targets = None
    return AuditEntry(
        seq=int(row["seq"]),
        recorded_at=from_micros(int(row["recorded_at"])),
        actor_id=row["actor_id"],
        roles=tuple(r for r in str(row["roles"]).split(",") if r),
        action=row["action"],
        permission=row["permission"],
        contact_id=row["contact_id"],
        targets=tuple(str(t) for t in targets) if isinstance(targets, list) else (),
        purpose=row["purpose"],
        outcome=row["outcome"],
        key_id=row["key_id"],
        mac=bytes(row["mac"]).hex(),
    )


def default_audit_log(repo: Repository) -> AuditLog:
    """Return the audit log a repository keeps (its own audit store)."""
    return AuditLog.for_repository(repo)
