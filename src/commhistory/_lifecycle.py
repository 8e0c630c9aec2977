"""``with obj:`` closes *obj*: the one context-manager shape every closable class shares."""

from __future__ import annotations

from types import TracebackType
from typing import Self

__all__ = ["ClosesOnExit"]


class ClosesOnExit:
    """Mixin: entering returns the object itself, leaving calls its ``close()``."""

    __slots__ = ()

    def close(self) -> None:
        """Release what the object holds (each class says what)."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
