"""``finishes_within``: fail a test whose code would otherwise hang (catastrophic regexes).

A ``SIGALRM`` handler raises in the main thread; CPython's regex engine checks for signals
while it backtracks, so even a runaway ``re.search`` is stopped and the test fails instead
of hanging. Once the limit has passed the alarm repeats every second (code under test may
swallow one exception, as a web framework's error handler does), and leaving the block
fails the test. The limit is generous: this guards against hangs, it never measures speed.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class DidNotFinish(AssertionError):
    """The guarded code was still running when the limit passed."""


@contextmanager
def finishes_within(seconds: float = 10.0) -> Iterator[None]:
    """Fail the test if the block runs longer than ``seconds``."""
    assert threading.current_thread() is threading.main_thread(), "needs the main thread"
    expired = []

    def expire(signum: int, frame: Any) -> None:
        expired.append(signum)
        raise DidNotFinish(f"still running after {seconds:g}s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds, 1.0)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    if expired:
        raise DidNotFinish(f"still running after {seconds:g}s")
