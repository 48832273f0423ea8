"""The per-account CallRail rate limit, shared by every function instance.

CallRail budgets requests per account, whichever instance sends them, so the limit is
kept in one place every instance sees: one Spanner row per account holding the GCRA
"theoretical arrival time" (TAT). Each request runs a short read-write transaction that
reserves the next slot and returns how long to wait for it; the caller sleeps that long.
Reserving (instead of polling) keeps callers in arrival order and costs exactly one
transaction per request. A wait longer than ``max_wait_seconds`` reserves nothing and
raises :class:`RateLimited`, so the step is redelivered later instead of holding an
instance.

GCRA with ``per_minute`` = N and ``burst`` = b allows at most b + N·t/60 requests in any
window of t seconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any


class RateLimited(RuntimeError):
    """Transient: the account's budget is used up for longer than we are willing to wait."""

    def __init__(self, account_id: str, retry_after: float) -> None:
        super().__init__(
            f"CallRail rate limit for account {account_id} reached; next slot in {retry_after:.1f} s"
        )
        self.retry_after = retry_after


@dataclass(frozen=True)
class RateLimit:
    per_minute: int
    burst: int = 1
    max_wait_seconds: float = 20.0

    def __post_init__(self) -> None:
        if self.per_minute < 1 or self.burst < 1:
            raise ValueError("per_minute and burst must be at least 1")

    @property
    def interval(self) -> timedelta:
        return timedelta(seconds=60.0 / self.per_minute)

    @property
    def tolerance(self) -> timedelta:
        return self.interval * (self.burst - 1)


def gcra_reserve(
    tat: datetime | None, now: datetime, limit: RateLimit
) -> tuple[datetime | None, float]:
    """Return ``(new_tat, wait_seconds)``; ``new_tat`` is None when the wait is too long."""
    current = tat if tat is not None and tat > now else now
    allowed_at = current - limit.tolerance
    wait = max(0.0, (allowed_at - now).total_seconds())
    if wait > limit.max_wait_seconds:
        return None, wait
    return current + limit.interval, wait


class SpannerRateLimiter:
    def __init__(
        self,
        database: Any,
        limit: RateLimit,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._db = database
        self._limit = limit
        self._clock = clock
        self._sleep = sleep

    def acquire(self, account_id: str) -> None:
        from google.cloud import spanner

        def work(txn: Any) -> float:
            rows = list(
                txn.read("CallRailRateLimits", ["Tat"], spanner.KeySet(keys=[[account_id]]))
            )
            tat = rows[0][0] if rows else None
            new_tat, wait = gcra_reserve(tat, self._clock(), self._limit)
            if new_tat is None:
                raise RateLimited(account_id, wait)
            txn.insert_or_update(
                "CallRailRateLimits",
                ["AccountId", "Tat", "UpdatedAt"],
                [(account_id, new_tat, spanner.COMMIT_TIMESTAMP)],
            )
            return wait

        wait = float(self._db.run_in_transaction(work))
        if wait > 0:
            self._sleep(wait)


class LocalRateLimiter:
    """The same algorithm in memory: one process only (the CLI, unit tests)."""

    def __init__(
        self,
        limit: RateLimit,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._limit = limit
        self._clock = clock
        self._sleep = sleep
        self._tats: dict[str, datetime] = {}
        self._lock = threading.Lock()

    def acquire(self, account_id: str) -> None:
        with self._lock:
            new_tat, wait = gcra_reserve(self._tats.get(account_id), self._clock(), self._limit)
            if new_tat is None:
                raise RateLimited(account_id, wait)
            self._tats[account_id] = new_tat
        if wait > 0:
            self._sleep(wait)
