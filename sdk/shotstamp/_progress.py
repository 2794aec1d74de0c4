"""A one-line progress bar for the CLI, drawn on a terminal and silent elsewhere.

Hand-written so the SDK keeps its two dependencies. It redraws at most ten
times a second with a carriage return; `write` prints a message above it.
When the stream is not a terminal (a pipe, a CI log) nothing is drawn.
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from collections.abc import Callable
from typing import TextIO

__all__ = ["LABELS", "Progress"]

# Outcome → short label, in display order.
LABELS = {
    "new": "new",
    "existing": "yours",
    "skipped": "skipped",
    "conflict": "conflicts",
    "error": "errors",
}
_REDRAW_EVERY = 0.1


def _duration(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    """`advance(outcome)` once per finished item; `close()` at the end."""

    def __init__(
        self,
        total: int,
        *,
        stream: TextIO,
        enabled: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = total
        self.stream = stream
        self.enabled = _isatty(stream) if enabled is None else enabled
        self.counts: Counter[str] = Counter()
        self.done = 0
        self._clock = clock
        self._started = clock()
        self._last_draw = float("-inf")
        self._drawn = False

    def advance(self, outcome: str) -> None:
        self.counts[outcome] += 1
        self.done += 1
        self._draw(force=self.done == self.total)

    def write(self, message: str) -> None:
        """Print a line above the bar (the bar is redrawn under it)."""
        if self.enabled and self._drawn:
            self.stream.write("\r\x1b[K")
        self.stream.write(message.rstrip("\n") + "\n")
        if self.enabled:
            self._draw(force=True)
        self.stream.flush()

    def render(self, width: int) -> str:
        """The bar as text at most `width` columns wide (pure; for tests)."""
        elapsed = max(self._clock() - self._started, 1e-9)
        rate = self.done / elapsed
        counts = " ".join(
            f"{label} {self.counts[key]}" for key, label in LABELS.items() if self.counts[key]
        )
        tail = f" {self.done}/{self.total}"
        if counts:
            tail += f"  {counts}"
        if self.done and elapsed >= 0.5:
            tail += f"  {rate:.1f}/s"
            if self.done < self.total:
                tail += f"  ETA {_duration((self.total - self.done) / rate)}"
        bar_width = max(10, min(40, width - len(tail) - 2))
        filled = bar_width if not self.total else bar_width * self.done // self.total
        bar = "=" * filled + (">" if filled < bar_width else "") + " " * (bar_width - filled - 1)
        return f"[{bar[:bar_width]}]{tail}"[:width]

    def _draw(self, *, force: bool = False) -> None:
        if not self.enabled:
            return
        now = self._clock()
        if not force and now - self._last_draw < _REDRAW_EVERY:
            return
        self._last_draw = now
        width = shutil.get_terminal_size((80, 24)).columns - 1
        self.stream.write("\r\x1b[K" + self.render(width))
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self.enabled:
            self._draw(force=True)
            self.stream.write("\n")
            self.stream.flush()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
