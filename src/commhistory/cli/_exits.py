"""How a command ends: the exit codes, and the error that stops a command with one."""

from __future__ import annotations

from typing import Final

EXIT_OK: Final = 0
EXIT_REJECTED: Final = 1
EXIT_USAGE: Final = 2
EXIT_DENIED: Final = 6
"""The actor lacks the permission the command needs, or an actor is required and none given."""


class CommandError(Exception):
    """A command cannot run as asked; printed as one line, without a traceback."""

    def __init__(self, message: str, *, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code
