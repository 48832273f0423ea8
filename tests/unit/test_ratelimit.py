"""GCRA arithmetic of the shared CallRail rate limit (the Spanner-backed limiter itself is
tested against the emulator in tests/integration)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from callpipe.ratelimit import LocalRateLimiter, RateLimit, RateLimited, gcra_reserve

T0 = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)


def test_first_request_passes_and_reserves_one_interval() -> None:
    limit = RateLimit(per_minute=120)
    tat, wait = gcra_reserve(None, T0, limit)
    assert wait == 0
    assert tat == T0 + timedelta(seconds=0.5)


def test_requests_are_spaced_by_the_interval_without_burst() -> None:
    limit = RateLimit(per_minute=60, burst=1, max_wait_seconds=100)
    tat = None
    waits = []
    for _ in range(4):
        tat, wait = gcra_reserve(tat, T0, limit)
        waits.append(wait)
    assert waits == [0.0, 1.0, 2.0, 3.0]


def test_burst_lets_that_many_through_at_once() -> None:
    limit = RateLimit(per_minute=60, burst=3, max_wait_seconds=100)
    tat = None
    waits = []
    for _ in range(5):
        tat, wait = gcra_reserve(tat, T0, limit)
        waits.append(wait)
    assert waits == [0.0, 0.0, 0.0, 1.0, 2.0]


def test_a_wait_beyond_the_maximum_reserves_nothing() -> None:
    limit = RateLimit(per_minute=60, burst=1, max_wait_seconds=1.5)
    tat, _ = gcra_reserve(None, T0, limit)
    tat, _ = gcra_reserve(tat, T0, limit)
    refused, wait = gcra_reserve(tat, T0, limit)
    assert refused is None
    assert wait == 2.0


def test_idle_time_does_not_bank_credit_beyond_the_burst() -> None:
    limit = RateLimit(per_minute=60, burst=2, max_wait_seconds=100)
    tat, _ = gcra_reserve(None, T0, limit)
    later = T0 + timedelta(hours=1)
    waits = []
    for _ in range(3):
        tat, wait = gcra_reserve(tat, later, limit)
        waits.append(wait)
    assert waits == [0.0, 0.0, 1.0]


def test_at_most_burst_plus_rate_in_any_window() -> None:
    """Simulated clients hammering for 60 s get at most burst + N grants."""
    limit = RateLimit(per_minute=30, burst=5, max_wait_seconds=0)
    tat = None
    granted = []
    for tick in range(600):  # every 0.1 s for a minute
        now = T0 + timedelta(seconds=tick / 10)
        new, _ = gcra_reserve(tat, now, limit)
        if new is not None:
            tat = new
            granted.append(now)
    assert len(granted) <= 5 + 30
    assert len(granted) >= 30


def test_local_limiter_sleeps_and_raises() -> None:
    slept: list[float] = []
    limiter = LocalRateLimiter(
        RateLimit(per_minute=60, burst=1, max_wait_seconds=1.0),
        clock=lambda: T0,
        sleep=slept.append,
    )
    limiter.acquire("a")
    limiter.acquire("a")
    limiter.acquire("b")  # accounts are independent
    assert slept == [1.0]
    with pytest.raises(RateLimited) as caught:
        limiter.acquire("a")
    assert caught.value.retry_after == 2.0


def test_invalid_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        RateLimit(per_minute=0)
