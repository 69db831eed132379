"""Retry timing, one mechanism for every retry in Conveyor: exponential backoff with
jitter that never waits less than the server asked (``Retry-After``).

The step pipeline waits ``backoff_delay`` between a step's attempts (``settings.retry``),
the LLM gateway holds a rate-limited credential's bucket for it, the run summary waits it
between sends; webhook, Slack and provider clients read the server's wish with
``retry_after_seconds`` and carry it on the ``TransientError`` they raise.
"""

from __future__ import annotations

import email.utils
import math
import random
import time
from collections.abc import Callable, Mapping


def backoff_delay(
    attempt: int,
    base_seconds: float,
    retry_after: float | None = None,
    *,
    cap: float = math.inf,
    jitter: tuple[float, float] = (0.5, 1.5),
    uniform: Callable[[float, float], float] = random.uniform,
) -> float:
    """Seconds to wait before retry number ``attempt`` (1-based).

    ``base_seconds`` doubled per attempt, at most ``cap``, times a random factor drawn from
    ``jitter`` (``(1, 1)``: none), and never less than the server's ``retry_after``.
    """
    low, high = jitter
    factor = low if low == high else uniform(low, high)
    delay = min(cap, base_seconds * 2 ** (attempt - 1)) * factor
    return delay if retry_after is None else max(delay, retry_after)


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """Seconds asked for by ``retry-after-ms`` (OpenAI) or ``Retry-After`` (seconds or date)."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(0.0, float(raw_ms) / 1000)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - time.time())
