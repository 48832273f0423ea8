"""GCRA arithmetic of the shared CallRail rate limit (the Spanner-backed limiter itself is
tested against the emulator in tests/integration)."""

from __future__ import annotations

import bisect
import itertools
from datetime import UTC, datetime, timedelta

import pytest

from callpipe.ratelimit import LocalRateLimiter, RateLimit, RateLimited, reserve

T0 = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)


def gcra_reserve(
    tat: datetime | None, now: datetime, limit: RateLimit
) -> tuple[datetime | None, float]:
    """The minute window alone: its new TAT and the wait."""
    tats, wait = reserve({"Tat": tat}, now, limit)
    return (tats["Tat"] if tats else None), wait


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
    with pytest.raises(ValueError, match="at least 10"):
        RateLimit(per_minute=60, per_hour=9)


def granted_per_window(limit: RateLimit, seconds: int, step: float) -> list[datetime]:
    """Requests sent as soon as allowed, tried every ``step`` seconds for ``seconds``."""
    tats: dict[str, datetime | None] = {}
    granted = []
    for tick in range(int(seconds / step)):
        now = T0 + timedelta(seconds=tick * step)
        new, _ = reserve(tats, now, limit)
        if new is not None:
            tats = dict(new)
            granted.append(now)
    return granted


def most_in_any(granted: list[datetime], window: timedelta) -> int:
    """The most requests in any window of that length (``granted`` is sorted)."""
    return max(bisect.bisect_left(granted, start + window) - i for i, start in enumerate(granted))


def test_the_hourly_budget_holds_in_any_hour_and_a_tenth_of_it_goes_at_once() -> None:
    """CallRail's 1,000 an hour: the first 100 at the minute's pace, then one per 4 s."""
    limit = RateLimit(per_minute=120, burst=5, max_wait_seconds=0, per_hour=1000)
    granted = granted_per_window(limit, seconds=3 * 3600, step=0.25)
    assert most_in_any(granted, timedelta(hours=1)) <= 1000
    assert len(granted) >= 3 * 900  # and the budget is used, not wasted
    first_minute = [t for t in granted if t - T0 < timedelta(minutes=1)]
    assert len(first_minute) >= 100  # a busy hour is served at once
    late = [t for t in granted if t - T0 >= timedelta(hours=1)]
    gaps = {(b - a).total_seconds() for a, b in itertools.pairwise(late)}
    assert gaps == {4.0}  # a sustained load, at what the budget allows


def test_the_daily_budget_holds_in_any_day() -> None:
    limit = RateLimit(per_minute=120, burst=5, max_wait_seconds=0, per_hour=1000, per_day=10000)
    granted = granted_per_window(limit, seconds=2 * 86400, step=2.0)
    assert most_in_any(granted, timedelta(days=1)) <= 10000
    assert len(granted) >= 2 * 9000


def test_a_request_waits_for_the_strictest_window_and_counts_in_every_one() -> None:
    limit = RateLimit(per_minute=60, burst=1, max_wait_seconds=1000, per_hour=20)
    tats: dict[str, datetime | None] = {}
    waits = []
    for _ in range(4):
        new, wait = reserve(tats, T0, limit)
        assert new is not None
        tats = dict(new)
        waits.append(wait)
    # the hour: 2 at once, then one per 3600 / 18 = 200 s; the minute: one per second
    assert waits == [0.0, 1.0, 200.0, 400.0]
    assert tats["Tat"] == T0 + timedelta(seconds=400 + 1)  # the minute counted it at 400 s


def test_a_429_holds_every_request_to_the_account_for_the_pause() -> None:
    now = [T0]
    slept: list[float] = []
    limiter = LocalRateLimiter(
        RateLimit(per_minute=60, burst=5, max_wait_seconds=100),
        clock=lambda: now[0],
        sleep=slept.append,
    )
    limiter.acquire("a")
    limiter.hold("a", 30.0)
    limiter.acquire("a")
    limiter.acquire("b")  # other accounts are not held
    assert slept == [30.0]
    limiter.hold("a", 5.0)  # a shorter pause does not shorten the longer one
    now[0] = T0 + timedelta(seconds=10)
    limiter.acquire("a")
    assert slept[-1] == 21.0  # after the one sent at 30 s, a second later
