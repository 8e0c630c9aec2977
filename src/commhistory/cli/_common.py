"""What the commands share: exit codes, option parsing helpers, the progress bar, actors."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Final, TextIO
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs

from commhistory.convert import KINDS, ParsedLine, read_records

if TYPE_CHECKING:
    from commhistory.audit import Actor, GuardedRepository, Permission, Policy
    from commhistory.store import SQLRepository

EXIT_OK: Final = 0
EXIT_REJECTED: Final = 1
EXIT_USAGE: Final = 2


class CommandError(Exception):
    """A command cannot run as asked; printed as one line, without a traceback."""

    def __init__(self, message: str, *, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def time_zone(value: str) -> ZoneInfo:
    """``argparse`` type for an IANA time zone name such as ``Asia/Tokyo``."""
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise argparse.ArgumentTypeError(f"unknown time zone {value!r}") from None


def column_mapping(value: str) -> tuple[str, str]:
    """``argparse`` type for ``COLUMN=FIELD`` (an empty FIELD ignores the column)."""
    column, sep, field = value.partition("=")
    if not sep or not column.strip():
        raise argparse.ArgumentTypeError(f"expected COLUMN=FIELD, got {value!r}")
    return column.strip(), field.strip()


class Progress:
    """A one-line progress bar on a terminal; silent when the stream is not one.

    Args:
        total: The amount of work (bytes of the input file), or 0 when unknown.
        label: What is being done.
        stream: Where to draw (standard error by default).
        enabled: Force drawing on or off (default: only on a terminal).
    """

    WIDTH: Final = 30

    def __init__(
        self,
        total: int,
        *,
        label: str,
        stream: TextIO | None = None,
        enabled: bool | None = None,
    ) -> None:
        self.total = total
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self._last = 0.0
        self._drawn = False

    def update(self, done: int) -> None:
        """Redraw for *done* units of work, at most ten times a second."""
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < 0.1 and done < self.total:
            return
        self._last = now
        if self.total > 0:
            fraction = min(done / self.total, 1.0)
            filled = int(fraction * self.WIDTH)
            bar = "#" * filled + "-" * (self.WIDTH - filled)
            text = f"\r{self.label} [{bar}] {fraction:4.0%}"
        else:
            text = f"\r{self.label} {done:,}"
        self.stream.write(text)
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        """Clear the bar's line."""
        if self.enabled and self._drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def add_input_options(parser: argparse.ArgumentParser, *, file_help: str) -> None:
    """Add ``FILE`` and the options that say how to read it (``validate``, ``import``)."""
    parser.add_argument("file", metavar="FILE", help=file_help)
    parser.add_argument(
        "--map",
        dest="mapping",
        metavar="COLUMN=FIELD",
        type=column_mapping,
        action="append",
        default=[],
        help="CSV: read COLUMN as FIELD (FIELD may be metadata.KEY; empty ignores the column)",
    )
    parser.add_argument(
        "--tz",
        type=time_zone,
        default=None,
        metavar="ZONE",
        help="time zone for timestamps without an offset, e.g. Asia/Tokyo",
    )
    parser.add_argument(
        "--kind",
        choices=sorted(KINDS),
        default=None,
        help="CSV: the record kind of rows without a 'kind' column (default message)",
    )
    parser.add_argument(
        "--encoding", default="utf-8-sig", help="text encoding, e.g. cp932 (default utf-8)"
    )


@contextmanager
def input_records(
    args: argparse.Namespace, *, label: str
) -> Iterator[tuple[Iterator[ParsedLine], Progress]]:
    """Check the input options and stream the file's parsed lines with a progress bar.

    Yields:
        The parsed lines (read lazily) and the progress bar drawing as they are read.

    Raises:
        CommandError: The file is missing, ``--map`` is given for a non-CSV file, or
            the encoding is unknown.
    """
    path = args.file
    if not os.path.isfile(path):
        raise CommandError(f"no such file: {path}")
    mapping = dict(args.mapping)
    if mapping and not path.lower().endswith((".csv", ".tsv")):
        raise CommandError("--map applies to .csv files only")
    progress = Progress(os.path.getsize(path), label=label)
    lines = read_records(
        path,
        default_tz=args.tz,
        mapping=mapping,
        kind=args.kind,
        encoding=args.encoding,
        progress=progress.update,
    )
    try:
        yield lines, progress
    except LookupError:
        raise CommandError(f"unknown encoding {args.encoding!r}") from None
    finally:
        progress.close()


DEFAULT_DB: Final = "sqlite:///commhistory.db"
DEFAULT_KEYRING: Final = "commhistory.keyring"


def add_store_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--db`` and ``--keyring`` with their environment defaults."""
    parser.add_argument(
        "--db",
        default=None,
        metavar="URL",
        help=f"database URL (default $COMMHISTORY_DB, else {DEFAULT_DB})",
    )
    parser.add_argument(
        "--keyring",
        default=None,
        metavar="PATH",
        help=f"keyring file (default $COMMHISTORY_KEYRING, else {DEFAULT_KEYRING})",
    )


def database_url(args: argparse.Namespace) -> str:
    """The database URL from ``--db``, ``$COMMHISTORY_DB`` or the default."""
    import os  # noqa: PLC0415

    return str(args.db or os.environ.get("COMMHISTORY_DB") or DEFAULT_DB)


def keyring_path(args: argparse.Namespace) -> str:
    """The keyring path from ``--keyring``, ``$COMMHISTORY_KEYRING`` or the default."""
    import os  # noqa: PLC0415

    return str(args.keyring or os.environ.get("COMMHISTORY_KEYRING") or DEFAULT_KEYRING)


# --------------------------------------------------------------------------- acting as an actor

EXIT_DENIED: Final = 6
"""The actor lacks the permission the command needs, or an actor is required and none given."""

ACTOR_ENV: Final = "COMMHISTORY_ACTOR"
ROLES_ENV: Final = "COMMHISTORY_ROLES"
PURPOSE_ENV: Final = "COMMHISTORY_PURPOSE"
POLICY_ENV: Final = "COMMHISTORY_POLICY"
REQUIRE_ACTOR_ENV: Final = "COMMHISTORY_REQUIRE_ACTOR"

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
    from commhistory.audit import Permission, Policy  # noqa: PLC0415 - heavy imports
    from commhistory.errors import InvalidInputError  # noqa: PLC0415

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
        actor: The actor, or ``None`` for anonymous use (nothing checked or audited).
        purpose: The stated purpose (or ``commhistory COMMAND`` when none was
            needed and none given).
        policy: The roles and their permissions.
    """

    actor: Actor | None
    purpose: str
    policy: Policy

    def allows(self, permission: Permission) -> bool:
        """Return whether the actor holds *permission* (always true without an actor)."""
        return self.actor is None or self.policy.allows(self.actor, permission)

    def view(self, repo: SQLRepository) -> GuardedRepository | None:
        """Return the guarded view of *repo* for the actor, or ``None`` without one."""
        if self.actor is None:
            return None
        return repo.as_actor(self.actor, purpose=self.purpose, policy=self.policy)


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

    Returns:
        The actor (or none), the purpose and the policy.

    Raises:
        CommandError: A malformed policy file or option, a missing purpose
            (exit 2), or no actor where one is required (exit 6).
    """
    from commhistory.audit import Actor, Policy  # noqa: PLC0415 - heavy imports
    from commhistory.errors import InvalidInputError  # noqa: PLC0415

    policy_path = args.policy_file or os.environ.get(POLICY_ENV) or None
    loaded = load_policy(policy_path) if policy_path else PolicyFile(policy=Policy())
    require_actor = loaded.require_actor or _env_flag(REQUIRE_ACTOR_ENV)
    actor_id = args.actor or os.environ.get(ACTOR_ENV) or None
    default_purpose = f"commhistory {getattr(args, 'command', None) or 'command'}"
    purpose_option = str(getattr(args, "purpose_option", "--purpose"))
    if actor_id is None:
        if args.roles or args.access_purpose is not None:
            raise CommandError(f"--role and {purpose_option} need --actor")
        if require_actor:
            source = (
                f"policy file {policy_path}" if loaded.require_actor else f"${REQUIRE_ACTOR_ENV}"
            )
            raise CommandError(
                f"an actor is required ({source}): pass --actor ID --role ROLE "
                f"or set ${ACTOR_ENV} and ${ROLES_ENV}",
                exit_code=EXIT_DENIED,
            )
        return Access(actor=None, purpose=default_purpose, policy=loaded.policy)
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
    purpose = args.access_purpose
    if purpose is None:
        purpose = os.environ.get(PURPOSE_ENV) or None
    if purpose is not None and not purpose.strip():
        raise CommandError(f"{purpose_option} must not be empty")
    if purpose is None:
        if audited is not None and loaded.policy.allows(actor, audited):
            raise CommandError(
                f"this command is audited ({audited.value}): state why with {purpose_option} TEXT "
                f"(or ${PURPOSE_ENV})"
            )
        purpose = default_purpose
    return Access(actor=actor, purpose=purpose, policy=loaded.policy)
