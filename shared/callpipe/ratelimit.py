"""The per-account CallRail rate limit, shared by every function instance.

CallRail budgets requests per account, whichever instance sends them, so the limit is
kept in one place every instance sees: one Spanner row per account holding, for each
window, the GCRA "theoretical arrival time" (TAT). Each request runs a short read-write
transaction that reserves the next slot in every window and returns how long to wait for
it; the caller sleeps that long. Reserving (instead of polling) keeps callers in arrival
order and costs exactly one transaction per request. A wait longer than
``max_wait_seconds`` reserves nothing and raises :class:`RateLimited`, so the step is
redelivered later instead of holding an instance.

Three windows, each a GCRA:
- the minute: ``per_minute`` = N and ``burst`` = b allow at most b + N·t/60 requests in
  any window of t seconds (the pace of a burst of calls);
- the hour and the day (``per_hour``, ``per_day``, CallRail's documented budget of 1,000
  and 10,000): at most that many in any hour or day. A tenth of the budget may go at the
  minute's pace, the rest is spread evenly, so a busy hour is served at once and only a
  sustained load (a replay of thousands of calls) is slowed to what the budget allows.

When CallRail answers 429 anyway, :meth:`SpannerRateLimiter.hold` pushes the minute
window back for every instance.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
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
class Window:
    """One GCRA: after ``tolerance`` worth of requests at once, one per ``interval``.
    ``column`` holds its TAT in ``CallRailRateLimits``."""

    column: str
    interval: timedelta
    tolerance: timedelta


MIN_BUDGET = 10


@dataclass(frozen=True)
class RateLimit:
    per_minute: int
    burst: int = 1
    max_wait_seconds: float = 20.0
    per_hour: int | None = None
    per_day: int | None = None

    def __post_init__(self) -> None:
        if self.per_minute < 1 or self.burst < 1:
            raise ValueError("per_minute and burst must be at least 1")
        for name, _, _, budget in self._budgets():
            if budget is not None and budget < MIN_BUDGET:
                raise ValueError(f"{name} must be at least {MIN_BUDGET} (or no budget at all)")

    def _budgets(self) -> tuple[tuple[str, str, int, int | None], ...]:
        """The longer windows: (setting, TAT column, length in seconds, budget or None)."""
        return (
            ("per_hour", "HourTat", 3600, self.per_hour),
            ("per_day", "DayTat", 86400, self.per_day),
        )

    @property
    def interval(self) -> timedelta:
        return timedelta(seconds=60.0 / self.per_minute)

    @property
    def tolerance(self) -> timedelta:
        return self.interval * (self.burst - 1)

    def windows(self) -> list[Window]:
        windows = [Window("Tat", self.interval, self.tolerance)]
        for _, column, seconds, budget in self._budgets():
            if budget is None:
                continue
            # b at once, then the rest spread over the window: b + (budget - b) = budget.
            burst = budget // 10
            interval = timedelta(seconds=seconds / (budget - burst))
            windows.append(Window(column, interval, interval * (burst - 1)))
        return windows


def _wait(tat: datetime | None, now: datetime, window: Window) -> float:
    current = tat if tat is not None and tat > now else now
    return max(0.0, (current - window.tolerance - now).total_seconds())


def reserve(
    tats: Mapping[str, datetime | None], now: datetime, limit: RateLimit
) -> tuple[dict[str, datetime] | None, float]:
    """Return ``(new_tats, wait_seconds)`` for one request (TATs by window column);
    ``new_tats`` is None when the wait is too long (nothing is reserved then).

    The request goes when every window allows it; each window then counts it at that
    moment."""
    windows = limit.windows()
    wait = max(_wait(tats.get(w.column), now, w) for w in windows)
    if wait > limit.max_wait_seconds:
        return None, wait
    sent = now + timedelta(seconds=wait)
    new_tats = {}
    for w in windows:
        tat = tats.get(w.column)
        new_tats[w.column] = (tat if tat is not None and tat > sent else sent) + w.interval
    return new_tats, wait


def held(tat: datetime | None, now: datetime, limit: RateLimit, seconds: float) -> datetime:
    """The minute window's TAT after CallRail asked for a pause of ``seconds``: the next
    request waits at least that long."""
    paused = now + timedelta(seconds=seconds) + limit.tolerance
    return tat if tat is not None and tat > paused else paused


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
        self._columns = [w.column for w in limit.windows()]

    def acquire(self, account_id: str) -> None:
        from google.cloud import spanner

        def work(txn: Any) -> float:
            rows = list(
                txn.read("CallRailRateLimits", self._columns, spanner.KeySet(keys=[[account_id]]))
            )
            tats = dict(zip(self._columns, rows[0], strict=True)) if rows else {}
            new_tats, wait = reserve(tats, self._clock(), self._limit)
            if new_tats is None:
                raise RateLimited(account_id, wait)
            txn.insert_or_update(
                "CallRailRateLimits",
                ["AccountId", *new_tats, "UpdatedAt"],
                [(account_id, *new_tats.values(), spanner.COMMIT_TIMESTAMP)],
            )
            return wait

        wait = float(self._db.run_in_transaction(work))
        if wait > 0:
            self._sleep(wait)

    def hold(self, account_id: str, seconds: float) -> None:
        """CallRail refused a request (429): no instance sends to the account for
        ``seconds``."""
        from google.cloud import spanner

        def work(txn: Any) -> None:
            rows = list(
                txn.read("CallRailRateLimits", ["Tat"], spanner.KeySet(keys=[[account_id]]))
            )
            tat = held(rows[0][0] if rows else None, self._clock(), self._limit, seconds)
            txn.insert_or_update(
                "CallRailRateLimits",
                ["AccountId", "Tat", "UpdatedAt"],
                [(account_id, tat, spanner.COMMIT_TIMESTAMP)],
            )

        self._db.run_in_transaction(work)


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
        self._tats: dict[str, dict[str, datetime]] = {}
        self._lock = threading.Lock()

    def acquire(self, account_id: str) -> None:
        with self._lock:
            new_tats, wait = reserve(self._tats.get(account_id, {}), self._clock(), self._limit)
            if new_tats is None:
                raise RateLimited(account_id, wait)
            self._tats[account_id] = new_tats
        if wait > 0:
            self._sleep(wait)

    def hold(self, account_id: str, seconds: float) -> None:
        with self._lock:
            tats = self._tats.setdefault(account_id, {})
            tats["Tat"] = held(tats.get("Tat"), self._clock(), self._limit, seconds)
