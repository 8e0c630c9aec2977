"""Actors, roles, permissions and a policy: who may do what.

Access control is opt-in. A repository used directly checks nothing and
audits nothing: its behaviour is exactly as without this module. A *guarded
view* (:class:`~commhistory.facade.guarded.GuardedRepository`, from
``repo.as_actor(...)``) is bound to one
:class:`Actor` and a stated purpose; every call on it checks the permission it
needs under a :class:`Policy`, raises :class:`~commhistory.errors.PermissionDenied`
(and audits the denial) when the actor lacks it, and audits personal-data reads,
exports, erasures, consent and suppression changes, key operations and history
writes (one entry per batch). When the log is the repository's own table, a call
and its entry commit in one transaction. Hand staff code the view, never the
repository.

Built-in roles (:data:`BUILTIN_ROLES`)::

    analyst          read_metrics read_history_masked
    operator         read_metrics read_history_masked write_history manage_consent
    privacy_officer  read_history_masked read_personal manage_consent
                     export_subject erase_subject
    admin            every permission

.. versionadded:: 0.3.0
"""

from __future__ import annotations

import enum
import getpass
import os
import re
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any, Final

import attrs

from commhistory.errors import InvalidInputError

__all__ = [
    "BUILTIN_ROLES",
    "DEFAULT_POLICY",
    "Actor",
    "Permission",
    "Policy",
    "process_user",
]

_NAME_RE: Final = re.compile(r"[a-z][a-z0-9_.-]{0,63}")


class Permission(enum.StrEnum):
    """What an actor may do; each value is its lower-case name.

    .. versionadded:: 0.3.0
    """

    READ_METRICS = "read_metrics"
    """Compute KPIs (aggregates only)."""
    READ_HISTORY_MASKED = "read_history_masked"
    """Read timelines with personal values withheld, consent status and can-send."""
    READ_PERSONAL = "read_personal"
    """Read decrypted personal data (timelines, consent evidence, dead letters, lookups)."""
    WRITE_HISTORY = "write_history"
    """Record messages and events, ingest files."""
    MANAGE_CONSENT = "manage_consent"
    """Grant or withdraw consent, add or lift suppressions."""
    EXPORT_SUBJECT = "export_subject"
    """Export everything held on a person."""
    ERASE_SUBJECT = "erase_subject"
    """Crypto-shred a person."""
    MANAGE_KEYS = "manage_keys"
    """Rotate keys and re-wrap data keys."""


P = Permission

BUILTIN_ROLES: Final[Mapping[str, frozenset[Permission]]] = MappingProxyType(
    {
        "analyst": frozenset({P.READ_METRICS, P.READ_HISTORY_MASKED}),
        "operator": frozenset(
            {P.READ_METRICS, P.READ_HISTORY_MASKED, P.WRITE_HISTORY, P.MANAGE_CONSENT}
        ),
        "privacy_officer": frozenset(
            {
                P.READ_HISTORY_MASKED,
                P.READ_PERSONAL,
                P.MANAGE_CONSENT,
                P.EXPORT_SUBJECT,
                P.ERASE_SUBJECT,
            }
        ),
        "admin": frozenset(Permission),
    }
)
"""The built-in roles and their permissions."""


def _check_name(value: object, field: str) -> str:
    if not isinstance(value, str) or not _NAME_RE.fullmatch(value):
        raise InvalidInputError(
            field=field, reason="must be a lower-case name of letters, digits, '_', '.', '-'"
        )
    return value


def _roles(value: Iterable[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        value = (value,)
    names = tuple(sorted({_check_name(v, "roles") for v in value}))
    if not names:
        raise InvalidInputError(field="roles", reason="an actor needs at least one role")
    return names


def _actor_id(_inst: object, _attr: object, value: Any) -> None:
    if not isinstance(value, str) or not value or len(value) > 200 or not value.isprintable():
        raise InvalidInputError(field="id", reason="must be a printable, non-empty string")


@attrs.frozen
class Actor:
    """Someone (a person or a service) acting on the repository.

    Args:
        id: An opaque staff or service id (``"staff-042"``). It is written to
            the audit log, so use an id, not an email address.
        roles: Role names, built-in or defined by the host's :class:`Policy`.

    Raises:
        InvalidInputError: An empty or unprintable id, no role, a malformed role name.

    .. versionadded:: 0.3.0
    """

    id: str = attrs.field(validator=_actor_id)
    roles: tuple[str, ...] = attrs.field(converter=_roles)


def _permissions(role: str, value: Iterable[Permission | str]) -> frozenset[Permission]:
    out: set[Permission] = set()
    for item in value:
        try:
            out.add(Permission(item))
        except ValueError as exc:
            raise InvalidInputError(
                field=f"roles.{role}", reason="names an unknown permission"
            ) from exc
    return frozenset(out)


class Policy:
    """Which permissions each role grants: the built-in roles plus the host's own.

    Args:
        roles: Host-defined roles, name to permissions. A host role may also
            redefine a built-in one (``{"analyst": ["read_metrics"]}``).
        builtin: Include the built-in roles (``BUILTIN_ROLES``) (default ``True``).

    Raises:
        InvalidInputError: A malformed role name or an unknown permission.

    .. versionadded:: 0.3.0
    """

    def __init__(
        self,
        roles: Mapping[str, Iterable[Permission | str]] | None = None,
        *,
        builtin: bool = True,
    ) -> None:
        table: dict[str, frozenset[Permission]] = dict(BUILTIN_ROLES) if builtin else {}
        for name, perms in (roles or {}).items():
            table[_check_name(name, "roles")] = _permissions(name, perms)
        self._roles: Mapping[str, frozenset[Permission]] = MappingProxyType(table)

    def __repr__(self) -> str:
        return f"Policy(roles={sorted(self._roles)!r})"

    @property
    def roles(self) -> Mapping[str, frozenset[Permission]]:
        """Every role this policy knows, with its permissions."""
        return self._roles

    def check_actor(self, actor: Actor) -> None:
        """Check that every role of *actor* is known.

        Raises:
            InvalidInputError: A role is not defined (``field="roles"``).
        """
        for role in actor.roles:
            if role not in self._roles:
                raise InvalidInputError(field="roles", reason=f"unknown role {role!r}")

    def permissions_of(self, actor: Actor) -> frozenset[Permission]:
        """Return the union of the permissions of the actor's known roles."""
        out: frozenset[Permission] = frozenset()
        for role in actor.roles:
            out |= self._roles.get(role, frozenset())
        return out

    def allows(self, actor: Actor, permission: Permission | str) -> bool:
        """Return whether *actor* holds *permission*.

        Raises:
            InvalidInputError: *permission* is not a known permission.
        """
        try:
            perm = Permission(permission)
        except ValueError as exc:
            raise InvalidInputError(field="permission", reason="unknown permission") from exc
        return perm in self.permissions_of(actor)


DEFAULT_POLICY: Final = Policy()
"""The built-in roles only."""


def process_user() -> str:
    """Return the operating-system user running this process, for default actor ids.

    ``getpass.getuser()`` (the login name from the environment or the password
    database); ``uid-<n>`` when neither names one, ``unknown`` without uids.

    .. versionadded:: 0.4.0
    """
    try:
        name = getpass.getuser()
    except (OSError, KeyError, ImportError):
        name = ""
    name = "".join(ch for ch in name if ch.isprintable()).strip()[:100]
    if name:
        return name
    getuid = getattr(os, "getuid", None)
    return f"uid-{getuid()}" if getuid is not None else "unknown"
