"""Retry timing, one mechanism for every retry in Conveyor: exponential backoff with
jitter that never waits less than the server asked (``Retry-After``).

The step pipeline waits ``backoff_delay`` between a step's attempts (``settings.retry``),
the LLM gateway holds a rate-limited credential's bucket for it, the run summary waits it
between sends; webhook, Slack and provider clients read the server's wish with
``retry_after_seconds`` and carry it on the ``TransientError`` they raise.
"""

from __future__ import annotations

import datetime
import email.utils
import math
import random
import re
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


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def _duration_seconds(raw: str) -> float | None:
    """``"6m0s"``, ``"1.5s"``, ``"20ms"`` (OpenAI's reset format) → seconds."""
    parts = _DURATION.findall(raw.strip())
    if not parts:
        return None
    return sum(float(n) * _UNIT_SECONDS[unit] for n, unit in parts)


def _reset_seconds(raw: str) -> float | None:
    """A reset given as a duration (OpenAI), a number of seconds, or a time (Anthropic)."""
    raw = raw.strip()
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    seconds = _duration_seconds(raw)
    if seconds is not None:
        return seconds
    try:
        when = datetime.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None
    return max(0.0, when.timestamp() - time.time())


def exhausted_hold_seconds(headers: Mapping[str, str]) -> float | None:
    """Seconds until a provider's exhausted rate-limit window resets, from the headers of a
    *successful* reply: OpenAI's ``x-ratelimit-remaining-*``/``x-ratelimit-reset-*`` and
    Anthropic's ``anthropic-ratelimit-*-remaining``/``-reset``. None while calls remain."""
    lowered = {k.lower(): v for k, v in headers.items()}
    holds = []
    for remaining, reset in (
        ("x-ratelimit-remaining-requests", "x-ratelimit-reset-requests"),
        ("x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"),
        ("anthropic-ratelimit-requests-remaining", "anthropic-ratelimit-requests-reset"),
        ("anthropic-ratelimit-tokens-remaining", "anthropic-ratelimit-tokens-reset"),
    ):
        left = lowered.get(remaining)
        if left is None:
            continue
        try:
            exhausted = float(left) <= 0
        except ValueError:
            continue
        if exhausted:
            seconds = _reset_seconds(lowered.get(reset, ""))
            if seconds:
                holds.append(seconds)
    return max(holds) if holds else None
