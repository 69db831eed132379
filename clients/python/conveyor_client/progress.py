"""A dependency-free progress bar for ``runs.wait(progress=True)``: counts, rate and ETA."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, TextIO


class ProgressBar:
    """Draws ``[#####.....] 120/250 done (3 failed) 40.1/s ETA 3s`` on one line of a stream."""

    def __init__(
        self,
        stream: TextIO | None = None,
        width: int = 30,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream or sys.stderr
        self.width = width
        self.clock = clock
        self._start: tuple[float, int] | None = None

    def __call__(self, run: Mapping[str, Any]) -> None:
        self.stream.write("\r" + self.render(run))
        if run.get("status") in TERMINAL:
            self.stream.write("\n")
        self.stream.flush()

    def render(self, run: Mapping[str, Any]) -> str:
        """One line for the run's current progress."""
        progress = run.get("progress") or {}
        total = int(progress.get("total") or 0)
        done = sum(int(progress.get(k) or 0) for k in ("completed", "failed", "cancelled"))
        now = self.clock()
        if self._start is None:
            self._start = (now, done)
        elapsed = now - self._start[0]
        rate = (done - self._start[1]) / elapsed if elapsed > 0 else 0.0
        filled = int(self.width * done / total) if total else self.width
        bar = "#" * filled + "." * (self.width - filled)
        line = f"[{bar}] {done}/{total} {run.get('status', '')}"
        if progress.get("failed"):
            line += f" ({progress['failed']} failed)"
        if rate > 0:
            line += f" {rate:.1f}/s"
            if total > done:
                line += f" ETA {int((total - done) / rate)}s"
        return line


TERMINAL = frozenset({"completed", "failed", "cancelled"})
