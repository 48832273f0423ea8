"""TTLCache and TokenBucket, driven by a fake monotonic clock."""

from __future__ import annotations

import pytest

from callpipe.cache import TTLCache
from callpipe.intake.ratelimit import TokenBucket
from tests.unit.conftest import FakeMonotonic


def test_cache_hit_until_the_ttl_expires(monotonic: FakeMonotonic) -> None:
    cache: TTLCache[str, int] = TTLCache(10, clock=monotonic)
    cache.put("a", 1)
    monotonic.advance(9.999)
    assert cache.get("a") == (True, 1)
    monotonic.advance(0.001)
    assert cache.get("a") == (False, None)


def test_cache_miss_for_an_unknown_key(monotonic: FakeMonotonic) -> None:
    assert TTLCache(10, clock=monotonic).get("nope") == (False, None)


def test_negative_answers_are_cached_as_a_hit_with_none(monotonic: FakeMonotonic) -> None:
    cache: TTLCache[str, int] = TTLCache(60, clock=monotonic)
    cache.put("unknown", None, ttl_seconds=5)
    assert cache.get("unknown") == (True, None)
    monotonic.advance(5)
    assert cache.get("unknown") == (False, None)


def test_per_entry_ttl_overrides_the_default(monotonic: FakeMonotonic) -> None:
    cache: TTLCache[str, str] = TTLCache(60, clock=monotonic)
    cache.put("short", "s", ttl_seconds=1)
    cache.put("long", "l")
    monotonic.advance(30)
    assert cache.get("short") == (False, None)
    assert cache.get("long") == (True, "l")


@pytest.mark.parametrize("ttl", [0, -1])
def test_non_positive_ttl_is_not_stored(monotonic: FakeMonotonic, ttl: float) -> None:
    cache: TTLCache[str, int] = TTLCache(60, clock=monotonic)
    cache.put("a", 1, ttl_seconds=ttl)
    assert cache.get("a") == (False, None)


def test_put_refreshes_value_and_expiry(monotonic: FakeMonotonic) -> None:
    cache: TTLCache[str, int] = TTLCache(10, clock=monotonic)
    cache.put("a", 1)
    monotonic.advance(8)
    cache.put("a", 2)
    monotonic.advance(8)
    assert cache.get("a") == (True, 2)


def test_max_entries_evicts_the_least_recently_used(monotonic: FakeMonotonic) -> None:
    cache: TTLCache[str, int] = TTLCache(60, max_entries=2, clock=monotonic)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == (True, 1)  # "a" is now the most recently used
    cache.put("c", 3)
    assert cache.get("b") == (False, None)
    assert cache.get("a") == (True, 1)
    assert cache.get("c") == (True, 3)


def test_invalidate_one_key_or_everything(monotonic: FakeMonotonic) -> None:
    cache: TTLCache[str, int] = TTLCache(60, clock=monotonic)
    cache.put("a", 1)
    cache.put("b", 2)
    cache.invalidate("a")
    cache.invalidate("missing")  # no error
    assert cache.get("a") == (False, None)
    assert cache.get("b") == (True, 2)
    cache.invalidate()
    assert cache.get("b") == (False, None)


# -- TokenBucket -------------------------------------------------------------------------------


def test_bucket_starts_full_and_allows_its_capacity(monotonic: FakeMonotonic) -> None:
    bucket = TokenBucket(5, clock=monotonic)
    assert [bucket.take() for _ in range(6)] == [True] * 5 + [False]


def test_bucket_refills_at_its_per_minute_rate(monotonic: FakeMonotonic) -> None:
    bucket = TokenBucket(60, clock=monotonic)  # one token per second
    for _ in range(60):
        assert bucket.take()
    assert not bucket.take()
    monotonic.advance(0.5)
    assert not bucket.take()
    monotonic.advance(0.5)
    assert bucket.take()
    assert not bucket.take()
    monotonic.advance(3)
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]


def test_bucket_never_holds_more_than_its_capacity(monotonic: FakeMonotonic) -> None:
    bucket = TokenBucket(3, clock=monotonic)
    monotonic.advance(3600)
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]


def test_zero_per_minute_bucket_never_allows(monotonic: FakeMonotonic) -> None:
    bucket = TokenBucket(0, clock=monotonic)
    assert not bucket.take()
    monotonic.advance(3600)
    assert not bucket.take()
