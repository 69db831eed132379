"""GCRA reservations: in process, and shared through Redis by separate clients."""

from __future__ import annotations

import uuid

import pytest
import redis

from steps.clients.ratelimit import SAFETY_MARGIN, Limits, LocalRateLimiter, RedisRateLimiter
from tests.conftest import REDIS_URL


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def interval(per_minute: int) -> float:
    return 60 / per_minute / (1 - SAFETY_MARGIN)


def approx(value: float, abs: float = 1e-4) -> object:
    """Intervals are whole microseconds."""
    return pytest.approx(value, abs=abs)


def test_requests_are_paced_evenly_without_burst():
    clock = Clock()
    limiter = LocalRateLimiter(clock)
    limits = Limits(requests_per_minute=120)
    waits = [limiter.reserve("b", limits, tokens=0, max_wait=60).wait for _ in range(4)]
    assert waits == pytest.approx(
        [0, interval(120), 2 * interval(120), 3 * interval(120)], abs=1e-4
    )
    clock.now += 10  # idle time is not saved up as a burst
    assert limiter.reserve("b", limits, tokens=0, max_wait=60).wait == 0
    assert limiter.reserve("b", limits, tokens=0, max_wait=60).wait == approx(interval(120))


def test_a_wait_too_long_is_not_booked():
    clock = Clock()
    limiter = LocalRateLimiter(clock)
    limits = Limits(requests_per_minute=60)
    limiter.reserve("b", limits, tokens=0, max_wait=60)
    refused = limiter.reserve("b", limits, tokens=0, max_wait=0.5)
    assert not refused.granted and refused.wait == approx(interval(60))
    assert limiter.reserve("b", limits, tokens=0, max_wait=5).wait == approx(interval(60))


def test_tokens_are_booked_then_settled():
    clock = Clock()
    limiter = LocalRateLimiter(clock)
    limits = Limits(tokens_per_minute=6000)
    limiter.reserve("b", limits, tokens=1000, max_wait=60)
    limiter.settle("b", limits, extra_tokens=-900)  # it used 100 tokens, not 1000
    assert limiter.reserve("b", limits, tokens=10, max_wait=60).wait == approx(100 * interval(6000))


def test_block_holds_every_caller():
    clock = Clock()
    limiter = LocalRateLimiter(clock)
    limiter.block("b", 3)
    assert limiter.reserve("b", Limits(), tokens=0, max_wait=60).wait == pytest.approx(3)
    assert limiter.reserve("other", Limits(), tokens=0, max_wait=60).wait == 0


@pytest.fixture
def redis_client():
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.skip(f"no Redis at {REDIS_URL}")
    yield client
    client.close()


def test_redis_reservations_are_shared_between_clients(redis_client):
    # Two clients stand for two worker processes.
    first, second = (
        RedisRateLimiter(redis_client),
        RedisRateLimiter(redis.Redis.from_url(REDIS_URL)),
    )
    bucket, limits = f"test-{uuid.uuid4()}", Limits(requests_per_minute=600)
    waits = [
        (first if i % 2 else second).reserve(bucket, limits, tokens=0, max_wait=60).wait
        for i in range(10)
    ]
    # Each booking is one interval after the previous one, whoever made it.
    for i, wait in enumerate(waits):
        assert wait == pytest.approx(i * interval(600), abs=0.05)
    refused = first.reserve(bucket, limits, tokens=0, max_wait=0)
    assert not refused.granted and refused.wait == pytest.approx(10 * interval(600), abs=0.05)
    second.block(bucket, 30)
    assert first.reserve(bucket, limits, tokens=0, max_wait=60).wait == pytest.approx(30, abs=0.05)


def test_redis_tokens_settle(redis_client):
    limiter = RedisRateLimiter(redis_client)
    bucket, limits = f"test-{uuid.uuid4()}", Limits(tokens_per_minute=60_000)
    limiter.reserve(bucket, limits, tokens=5000, max_wait=60)
    limiter.settle(bucket, limits, extra_tokens=-4000)
    wait = limiter.reserve(bucket, limits, tokens=1, max_wait=60).wait
    assert wait == pytest.approx(1000 * interval(60_000), abs=0.05)
    keys = redis_client.keys(f"conveyor:ratelimit:{{{bucket}}}:*")
    assert all(0 < redis_client.pttl(k) <= 70_000 for k in keys)  # idle buckets expire


def test_the_same_script_runs_on_fakeredis():
    import fakeredis

    limiter = RedisRateLimiter(fakeredis.FakeRedis())
    limits = Limits(requests_per_minute=60)
    assert limiter.reserve("b", limits, tokens=0, max_wait=5).granted
    assert limiter.reserve("b", limits, tokens=0, max_wait=5).wait == pytest.approx(
        interval(60), abs=0.05
    )


def test_an_unreachable_redis_is_a_transient_error_not_a_crash():
    from steps.errors import TransientError

    limiter = RedisRateLimiter(redis.Redis.from_url("redis://127.0.0.1:1/0", socket_timeout=1))
    with pytest.raises(TransientError, match="rate limiter"):
        limiter.reserve("b", Limits(requests_per_minute=60), tokens=0, max_wait=5)
    limiter.settle("b", Limits(tokens_per_minute=60), extra_tokens=5)  # best effort: no raise
    limiter.block("b", 1)
