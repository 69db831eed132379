"""``steps.retry``: the one backoff (doubling, capped, jittered, floored by Retry-After)."""

from __future__ import annotations

import email.utils
import time

import pytest

from steps.retry import backoff_delay, retry_after_seconds


def fixed(factor):
    draws = []

    def uniform(low, high):
        draws.append((low, high))
        return factor

    return uniform, draws


def test_doubles_per_attempt_times_the_jitter_drawn_in_its_range():
    uniform, draws = fixed(1.5)
    assert [backoff_delay(n, 2.0, uniform=uniform) for n in (1, 2, 3)] == [3.0, 6.0, 12.0]
    assert draws == [(0.5, 1.5)] * 3


def test_the_cap_bounds_the_doubling_before_the_jitter():
    uniform, draws = fixed(0.5)
    delay = backoff_delay(10, 1.0, cap=20.0, jitter=(0.5, 1.0), uniform=uniform)
    assert delay == 10.0 and draws == [(0.5, 1.0)]


def test_no_jitter_draws_nothing():
    uniform, draws = fixed(99.0)
    assert backoff_delay(3, 1.0, jitter=(1.0, 1.0), uniform=uniform) == 4.0
    assert draws == []


def test_retry_after_is_a_floor_never_a_ceiling():
    uniform, _ = fixed(1.0)
    assert backoff_delay(1, 1.0, 30.0, uniform=uniform) == 30.0
    assert backoff_delay(4, 1.0, 0.5, uniform=uniform) == 8.0


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after-ms": "soon", "retry-after": "7"}, 7.0),
        ({"retry-after": "12"}, 12.0),
        ({"retry-after": "-3"}, 0.0),
        ({"retry-after": "whenever"}, None),
        ({}, None),
    ],
)
def test_retry_after_headers(headers, expected):
    assert retry_after_seconds(headers) == expected


def test_retry_after_as_an_http_date():
    later = email.utils.formatdate(time.time() + 3600, usegmt=True)
    assert 3500 < retry_after_seconds({"retry-after": later}) <= 3600
    earlier = email.utils.formatdate(time.time() - 3600, usegmt=True)
    assert retry_after_seconds({"retry-after": earlier}) == 0.0


def test_exhausted_windows_are_read_from_openai_and_anthropic_headers():
    import datetime as dt

    from steps.retry import exhausted_hold_seconds

    assert exhausted_hold_seconds({}) is None
    assert (
        exhausted_hold_seconds(
            {"x-ratelimit-remaining-requests": "12", "x-ratelimit-reset-requests": "6m0s"}
        )
        is None
    )
    assert exhausted_hold_seconds(
        {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "6m0s"}
    ) == pytest.approx(360)
    assert exhausted_hold_seconds(
        {
            "X-RateLimit-Remaining-Requests": "3",
            "x-ratelimit-remaining-tokens": "0",
            "x-ratelimit-reset-tokens": "1.5s",
        }
    ) == pytest.approx(1.5)
    assert exhausted_hold_seconds(
        {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "20ms"}
    ) == pytest.approx(0.02)
    soon = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30)).isoformat()
    held = exhausted_hold_seconds(
        {"anthropic-ratelimit-requests-remaining": "0", "anthropic-ratelimit-requests-reset": soon}
    )
    assert held is not None and 25 < held <= 30
