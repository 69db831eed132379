"""``finishes_within``: fail a test whose code would otherwise hang (catastrophic regexes).

A ``SIGALRM`` handler raises in the main thread; CPython's regex engine checks for signals
while it backtracks, so even a runaway ``re.search`` is stopped and the test fails instead
of hanging. The limit is generous: this guards against hangs, it never measures speed.
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
    """Raise ``DidNotFinish`` from inside the block if it runs longer than ``seconds``."""
    assert threading.current_thread() is threading.main_thread(), "needs the main thread"

    def expire(signum: int, frame: Any) -> None:
        raise DidNotFinish(f"still running after {seconds:g}s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
