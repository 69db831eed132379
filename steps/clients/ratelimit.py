"""Workspace-wide rate limits (requests and tokens per minute) shared by every worker.

The algorithm is GCRA (the "generic cell rate algorithm", as in redis-cell) in its
*reservation* form: a caller asks for a slot, the limiter books the earliest one that keeps
the pace and answers how long to wait for it. Callers sleep exactly that long instead of
polling, so no slot is wasted and no thundering herd forms; a wait longer than the caller
can afford is not booked. With Redis the state lives in three keys per bucket and one Lua
script updates them atomically on Redis' own clock, so all worker processes share it; the
embedded mode (no Redis) uses the same arithmetic in process.

Requests are paced evenly with no burst, at ``1 - SAFETY_MARGIN`` of the configured limit,
so network jitter can never land ``limit + 1`` requests in one of the provider's minutes.
Tokens are booked from an estimate before the call and settled with the real usage after.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

from steps.errors import TransientError

log = logging.getLogger(__name__)

SAFETY_MARGIN = 0.01
KEY_PREFIX = "conveyor:ratelimit"
MICROS = 1_000_000


@dataclass(frozen=True)
class Limits:
    """Per-minute limits of one bucket; ``None`` means unlimited."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None

    def intervals(self) -> tuple[int, int]:
        """Microseconds booked per request and per token (0 = unlimited)."""
        pace = 60 * MICROS / (1 - SAFETY_MARGIN)
        request = int(pace / self.requests_per_minute) if self.requests_per_minute else 0
        token = int(pace / self.tokens_per_minute) if self.tokens_per_minute else 0
        return request, token


@dataclass(frozen=True)
class Reservation:
    """A booked slot (``granted``) and the seconds to wait for it, or the wait that was
    too long to book."""

    granted: bool
    wait: float


class RateLimiter(Protocol):
    """Shared pacing of calls to one bucket (a workspace's provider credential)."""

    def reserve(self, bucket: str, limits: Limits, *, tokens: int, max_wait: float) -> Reservation:
        """Book the next slot for a call using about ``tokens`` tokens."""
        ...

    def settle(self, bucket: str, limits: Limits, *, extra_tokens: int) -> None:
        """Correct the token booking once the real usage is known (negative refunds)."""
        ...

    def block(self, bucket: str, seconds: float) -> None:
        """Hold every call to the bucket for ``seconds`` (the provider said Retry-After)."""
        ...


def _keys(bucket: str) -> list[str]:
    # The hash tag keeps a bucket's keys in one Redis Cluster slot.
    return [f"{KEY_PREFIX}:{{{bucket}}}:{part}" for part in ("requests", "tokens", "blocked")]


# Shared by the scripts: Redis' clock in microseconds, and a setter whose key expires once
# its time is well past (so idle buckets leave nothing behind).
_PRELUDE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local function get(key) return tonumber(redis.call('GET', key) or '0') end
local function put(key, at)
  local ttl = math.ceil((at - now) / 1000) + 60000
  redis.call('SET', key, string.format('%.0f', at), 'PX', ttl)
end
"""

_RESERVE = (
    _PRELUDE
    + """
local request_interval = tonumber(ARGV[1])
local token_interval = tonumber(ARGV[2])
local tokens = tonumber(ARGV[3])
local start = math.max(now, get(KEYS[3]))
if request_interval > 0 then start = math.max(start, get(KEYS[1])) end
if token_interval > 0 and tokens > 0 then start = math.max(start, get(KEYS[2])) end
local wait = start - now
if wait > tonumber(ARGV[4]) then return {0, wait} end
if request_interval > 0 then put(KEYS[1], start + request_interval) end
if token_interval > 0 and tokens > 0 then put(KEYS[2], start + tokens * token_interval) end
return {1, wait}
"""
)

_SETTLE = (
    _PRELUDE
    + """
put(KEYS[1], math.max(now, math.max(now, get(KEYS[1])) + tonumber(ARGV[1])))
return 1
"""
)

_BLOCK = (
    _PRELUDE
    + """
put(KEYS[1], math.max(now + tonumber(ARGV[1]), get(KEYS[1])))
return 1
"""
)


class RedisRateLimiter:
    """GCRA reservations in Redis, shared by every process using the same Redis."""

    def __init__(self, redis: Any) -> None:
        self.redis = redis
        self._reserve = redis.register_script(_RESERVE)
        self._settle = redis.register_script(_SETTLE)
        self._block = redis.register_script(_BLOCK)

    def reserve(self, bucket: str, limits: Limits, *, tokens: int, max_wait: float) -> Reservation:
        """Book the next slot in Redis (atomically, on Redis' clock)."""
        from redis import RedisError

        request_interval, token_interval = limits.intervals()
        # While Redis is away (restarting, failing over) the call waits for it rather than
        # going out unpaced: every worker would otherwise burst at once when it comes back.
        gives_up = time.monotonic() + max_wait
        pause = 0.25
        while True:
            try:
                granted, wait = self._reserve(
                    keys=_keys(bucket),
                    args=[
                        request_interval,
                        token_interval,
                        max(0, tokens),
                        int(max(0.0, gives_up - time.monotonic()) * MICROS),
                    ],
                )
                return Reservation(bool(granted), max(0, int(wait)) / MICROS)
            except RedisError as exc:
                if time.monotonic() + pause > gives_up:
                    raise TransientError(
                        f"the shared rate limiter (Redis) is not reachable: {exc}"
                    ) from exc
                log.warning("rate limiter: Redis is not reachable (%s); waiting", exc)
                time.sleep(pause)
                pause = min(2.0, pause * 2)

    def settle(self, bucket: str, limits: Limits, *, extra_tokens: int) -> None:
        """Move the token booking by the difference between real and estimated usage."""
        from redis import RedisError

        _, token_interval = limits.intervals()
        if token_interval and extra_tokens:
            try:
                self._settle(keys=_keys(bucket)[1:2], args=[extra_tokens * token_interval])
            except RedisError as exc:  # best effort: the next reservation still paces
                log.warning("rate limiter: could not settle tokens of %s: %s", bucket, exc)

    def block(self, bucket: str, seconds: float) -> None:
        """Hold the bucket until ``seconds`` from now (never shortens a longer hold)."""
        from redis import RedisError

        if seconds > 0:
            try:
                self._block(keys=_keys(bucket)[2:3], args=[int(seconds * MICROS)])
            except RedisError as exc:  # best effort: this worker still waits out its retry
                log.warning("rate limiter: could not hold %s: %s", bucket, exc)


class LocalRateLimiter:
    """The same reservations in process memory, for the embedded mode without Redis."""

    def __init__(self, clock: Any = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._state: dict[str, list[float]] = {}  # bucket -> [requests, tokens, blocked]

    def _now(self) -> float:
        return float(self._clock()) * MICROS

    def reserve(self, bucket: str, limits: Limits, *, tokens: int, max_wait: float) -> Reservation:
        """Book the next slot under a lock."""
        request_interval, token_interval = limits.intervals()
        with self._lock:
            now = self._now()
            state = self._state.setdefault(bucket, [0.0, 0.0, 0.0])
            start = max(now, state[2])
            if request_interval:
                start = max(start, state[0])
            if token_interval and tokens > 0:
                start = max(start, state[1])
            wait = start - now
            if wait > max_wait * MICROS:
                return Reservation(False, wait / MICROS)
            if request_interval:
                state[0] = start + request_interval
            if token_interval and tokens > 0:
                state[1] = start + tokens * token_interval
            return Reservation(True, wait / MICROS)

    def settle(self, bucket: str, limits: Limits, *, extra_tokens: int) -> None:
        """Move the token booking by the difference between real and estimated usage."""
        _, token_interval = limits.intervals()
        if not (token_interval and extra_tokens):
            return
        with self._lock:
            now = self._now()
            state = self._state.setdefault(bucket, [0.0, 0.0, 0.0])
            state[1] = max(now, max(now, state[1]) + extra_tokens * token_interval)

    def block(self, bucket: str, seconds: float) -> None:
        """Hold the bucket until ``seconds`` from now."""
        with self._lock:
            state = self._state.setdefault(bucket, [0.0, 0.0, 0.0])
            state[2] = max(state[2], self._now() + seconds * MICROS)
