"""Progress of long work in the log: done / total, the rate, and what is left, at a steady interval.

A night at a million customers takes minutes per stage; whoever watches the task log in the
Airflow UI should see it move. :class:`Progress` logs at most once per ``every`` seconds (and
once at the end), so a fast stage stays quiet and a slow one reports steadily. The clock is
the process's monotonic clock: this measures the work, it never decides business time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

__all__ = ["Progress"]

#: Seconds between two progress lines (a task log stays readable at a million rows).
DEFAULT_EVERY = 30.0


class Progress:
    """Count work done and log ``label: done / total (pct), rate/s, about N s left`` now and then."""

    def __init__(
        self,
        label: str,
        total: int | None = None,
        *,
        unit: str = "rows",
        every: float = DEFAULT_EVERY,
        logger: logging.Logger | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label, self.total, self.unit, self.every = label, total, unit, every
        self.log = logger or logging.getLogger("retention.progress")
        self.clock = clock
        self.done = 0
        self.started = self.last = clock()
        self.lines = 0

    def advance(self, count: int = 1) -> None:
        """Add ``count`` units; logs a line when ``every`` seconds passed since the last one."""
        self.done += count
        now = self.clock()
        if now - self.last >= self.every:
            self._line(now)

    def finish(self) -> None:
        """The closing line, whatever the interval (only if any work was done)."""
        if self.done:
            self._line(self.clock(), final=True)

    def line(self, now: float | None = None) -> str:
        now = self.clock() if now is None else now
        elapsed = max(now - self.started, 1e-9)
        rate = self.done / elapsed
        text = f"{self.label}: {self.done:,}"
        if self.total:
            text += f" / {self.total:,} {self.unit} ({100 * self.done / self.total:.0f} %)"
        else:
            text += f" {self.unit}"
        text += f", {rate:,.0f} {self.unit}/s"
        if self.total and rate > 0 and self.done < self.total:
            text += f", about {(self.total - self.done) / rate:,.0f} s left"
        return text

    def _line(self, now: float, final: bool = False) -> None:
        self.last = now
        self.lines += 1
        self.log.info("%s%s", self.line(now), " (done)" if final else "")
