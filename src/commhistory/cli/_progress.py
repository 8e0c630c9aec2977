"""The progress bar long-running commands draw on a terminal."""

from __future__ import annotations

import sys
import time
from typing import Final, TextIO


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
            text = f"\r{self.label} {done:,}\x1b[K"  # the label may have shrunk
        self.stream.write(text)
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        """Clear the bar's line."""
        if self.enabled and self._drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
