"""Acting as an actor: the actor options, the policy file, and who a command acts as."""

from __future__ import annotations

import argparse
import json
import os
from typing import TYPE_CHECKING, Any, Final

import attrs

from commhistory.audit import DEFAULT_POLICY, Actor, Permission, Policy, process_user
from commhistory.cli._exits import EXIT_DENIED, CommandError
from commhistory.errors import InvalidInputError

if TYPE_CHECKING:
    from commhistory.facade import CommHistory, GuardedRepository

ACTOR_ENV: Final = "COMMHISTORY_ACTOR"
ROLES_ENV: Final = "COMMHISTORY_ROLES"
PURPOSE_ENV: Final = "COMMHISTORY_PURPOSE"
POLICY_ENV: Final = "COMMHISTORY_POLICY"
REQUIRE_ACTOR_ENV: Final = "COMMHISTORY_REQUIRE_ACTOR"

OS_ACTOR_PREFIX: Final = "os:"
"""Without ``--actor``, a command acts as ``os:<user>`` (the operating-system user)."""
OS_ACTOR_ROLE: Final = "admin"
"""The built-in role the operating-system user acts with."""

_POLICY_KEYS: Final = ("roles", "require_actor", "builtin_roles")
_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"", "0", "false", "no", "off"})


def add_actor_options(parser: argparse.ArgumentParser, *, purpose_flag: bool = True) -> None:
    """Add ``--actor``, ``--role``, ``--purpose`` and ``--policy``.

    Args:
        parser: The command's parser.
        purpose_flag: Also spell the purpose option ``--purpose`` (``can-send``
            already has a ``--purpose``: the message purpose; there only
            ``--access-purpose`` is offered).
    """
    group = parser.add_argument_group(
        "acting as an actor",
        "With an actor, the command checks the actor's permissions and writes the audit log.",
    )
    group.add_argument(
        "--actor",
        metavar="ID",
        default=None,
        help=f"act as this staff or service id (default ${ACTOR_ENV})",
    )
    group.add_argument(
        "--role",
        dest="roles",
        metavar="ROLE",
        action="append",
        default=None,
        help=f"a role of the actor (repeatable; default ${ROLES_ENV}, comma-separated)",
    )
    flags = ("--purpose", "--access-purpose") if purpose_flag else ("--access-purpose",)
    parser.set_defaults(purpose_option=flags[0])
    group.add_argument(
        *flags,
        dest="access_purpose",
        metavar="TEXT",
        default=None,
        help=f"why, recorded in the audit log; no personal data (default ${PURPOSE_ENV})",
    )
    group.add_argument(
        "--policy",
        dest="policy_file",
        metavar="FILE",
        default=None,
        help=f"JSON file of roles and their permissions (default ${POLICY_ENV}; "
        "else the built-in roles)",
    )


@attrs.frozen
class PolicyFile:
    """What a ``--policy`` file says.

    Attributes:
        policy: The roles and their permissions.
        require_actor: Commands refuse to run without an actor.
    """

    policy: Policy
    require_actor: bool = False


def load_policy(path: str) -> PolicyFile:
    """Read a policy file (see ``docs/access.md``, "Command line").

    Two forms are accepted: ``{"ROLE": ["PERMISSION", ...], ...}`` (roles only),
    and ``{"roles": {...}, "require_actor": BOOL, "builtin_roles": BOOL}``.

    Raises:
        CommandError: The file is missing, not JSON, or not a policy; the message
            names the file and the problem.
    """

    def problem(text: str) -> CommandError:
        return CommandError(f"policy file {path}: {text}")

    try:
        with open(path, encoding="utf-8") as fh:
            doc: Any = json.load(fh)
    except FileNotFoundError:
        raise problem("no such file") from None
    except json.JSONDecodeError as exc:
        raise problem(f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except UnicodeDecodeError:
        raise problem("not UTF-8 text") from None
    except OSError as exc:
        raise problem(exc.strerror or type(exc).__name__) from None
    if not isinstance(doc, dict):
        raise problem("must be a JSON object")
    require_actor = False
    builtin = True
    roles: object = doc
    if any(k in doc for k in _POLICY_KEYS[1:]) or isinstance(doc.get("roles"), dict):
        unknown = sorted(set(doc) - set(_POLICY_KEYS))
        if unknown:
            raise problem(f"unknown key {unknown[0]!r} (expected {', '.join(_POLICY_KEYS)})")
        roles = doc.get("roles", {})
        if not isinstance(roles, dict):
            raise problem("'roles' must be an object mapping role names to permission lists")
        for key in _POLICY_KEYS[1:]:
            if not isinstance(doc.get(key, False), bool):
                raise problem(f"{key!r} must be true or false")
        require_actor = doc.get("require_actor", False)
        builtin = doc.get("builtin_roles", True)
    assert isinstance(roles, dict)
    known = [p.value for p in Permission]
    table: dict[str, list[str]] = {}
    for name, perms in roles.items():
        if not isinstance(perms, list) or not all(isinstance(p, str) for p in perms):
            raise problem(f"role {name!r}: expected a list of permission names")
        for perm in perms:
            if perm not in known:
                raise problem(
                    f"role {name!r}: unknown permission {perm!r} (known: {', '.join(known)})"
                )
        table[name] = perms
    try:
        policy = Policy(table, builtin=builtin)
    except InvalidInputError as exc:
        raise problem(f"{exc.field}: {exc.reason}") from None
    return PolicyFile(policy=policy, require_actor=require_actor)


@attrs.frozen
class Access:
    """Who a command acts as, and why; see :func:`resolve_access`.

    Attributes:
        actor: The actor: the one named, or the operating-system user
            (``os:<user>``, role ``admin``) when none was; ``None`` only when
            built by hand (nothing checked or audited).
        purpose: The stated purpose (or ``commhistory COMMAND`` when none was
            needed and none given).
        policy: The roles and their permissions (the built-in roles for the
            operating-system user).
        implicit: The actor is the operating-system user, not one named.
    """

    actor: Actor | None
    purpose: str
    policy: Policy
    implicit: bool = False

    def allows(self, permission: Permission) -> bool:
        """Return whether the actor holds *permission* (always true without an actor)."""
        return self.actor is None or self.policy.allows(self.actor, permission)

    def view(self, repo: CommHistory[Any]) -> GuardedRepository | None:
        """Return the guarded view of *repo* for the actor, or ``None`` without one."""
        if self.actor is None:
            return None
        return repo.as_actor(self.actor, purpose=self.purpose, policy=self.policy)


def os_actor() -> Actor:
    """The actor a command acts as when none is named: ``os:<user>``, role ``admin``."""
    return Actor(f"{OS_ACTOR_PREFIX}{process_user()}", [OS_ACTOR_ROLE])


def _env_flag(name: str) -> bool:
    value = os.environ.get(name, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise CommandError(f"${name} must be 1 or 0 (true/false, yes/no, on/off)")


def _split_roles(values: list[str]) -> list[str]:
    return [r.strip() for value in values for r in value.split(",") if r.strip()]


def resolve_access(args: argparse.Namespace, *, audited: Permission | None = None) -> Access:
    """Work out who the command acts as, from the options and their environment defaults.

    Each of ``--actor``, ``--role``, ``--purpose`` and ``--policy`` falls back
    on its own environment variable. Everything is checked here, before the
    repository is opened.

    Args:
        args: The parsed arguments (with :func:`add_actor_options`).
        audited: The permission of the audited operation the command performs,
            if any: when the actor holds it, a purpose must be stated.

    Without an actor (and unless one is required), the command acts as the
    operating-system user (:func:`os_actor`) with the built-in ``admin`` role
    and the purpose given by ``--purpose`` (or its environment variable), else
    ``commhistory COMMAND``: it is checked and audited like any actor.

    Returns:
        The actor, the purpose and the policy.

    Raises:
        CommandError: A malformed policy file or option, a missing purpose
            (exit 2), or no actor where one is required (exit 6).
    """
    policy_path = args.policy_file or os.environ.get(POLICY_ENV) or None
    loaded = load_policy(policy_path) if policy_path else PolicyFile(policy=Policy())
    require_actor = loaded.require_actor or _env_flag(REQUIRE_ACTOR_ENV)
    actor_id = args.actor or os.environ.get(ACTOR_ENV) or None
    default_purpose = f"commhistory {getattr(args, 'command', None) or 'command'}"
    purpose_option = str(getattr(args, "purpose_option", "--purpose"))
    purpose = args.access_purpose
    if purpose is None:
        purpose = os.environ.get(PURPOSE_ENV) or None
    if purpose is not None and not purpose.strip():
        raise CommandError(f"{purpose_option} must not be empty")
    if actor_id is None:
        if args.roles:
            raise CommandError("--role needs --actor")
        if require_actor:
            source = (
                f"policy file {policy_path}" if loaded.require_actor else f"${REQUIRE_ACTOR_ENV}"
            )
            raise CommandError(
                f"an actor is required ({source}): pass --actor ID --role ROLE "
                f"or set ${ACTOR_ENV} and ${ROLES_ENV}",
                exit_code=EXIT_DENIED,
            )
        # Nobody named: the operating-system user, with the built-in admin role,
        # audited as usual through the guarded view.
        return Access(
            actor=os_actor(),
            purpose=purpose or default_purpose,
            policy=DEFAULT_POLICY,
            implicit=True,
        )
    roles = _split_roles(args.roles or [os.environ.get(ROLES_ENV, "")])
    if not roles:
        raise CommandError(f"--actor needs at least one --role (or ${ROLES_ENV})")
    try:
        actor = Actor(actor_id, roles)
    except InvalidInputError as exc:
        option = "--actor" if exc.field == "id" else "--role"
        raise CommandError(f"{option}: {exc.reason}") from None
    for role in actor.roles:
        if role not in loaded.policy.roles:
            known = ", ".join(sorted(loaded.policy.roles))
            raise CommandError(f"--role: unknown role {role!r} (known: {known})")
    if purpose is None:
        if audited is not None and loaded.policy.allows(actor, audited):
            raise CommandError(
                f"this command is audited ({audited.value}): state why with {purpose_option} TEXT "
                f"(or ${PURPOSE_ENV})"
            )
        purpose = default_purpose
    return Access(actor=actor, purpose=purpose, policy=loaded.policy)
