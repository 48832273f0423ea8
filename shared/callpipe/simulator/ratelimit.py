"""A per-account sliding-window limiter: the simulator's stand-in for CallRail's 429s.

Only accepted requests enter the window, so a client that keeps hammering through its 429s
gets in again as soon as the oldest accepted request is older than the window (which is
what ``Retry-After`` announces).
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable


class SlidingWindowLimiter:
    def __init__(self, limit: int, window_seconds: float, clock: Callable[[], float]) -> None:
        self._limit = limit
        self._window = window_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._hits: dict[str, deque[float]] = {}

    @property
    def enabled(self) -> bool:
        return self._limit > 0

    def admit(self, key: str) -> int | None:
        """Record a request and return None, or refuse it and return Retry-After seconds."""
        if not self.enabled:
            return None
        now = self._clock()
        with self._lock:
            hits = self._hits.setdefault(key, deque())
            while hits and hits[0] <= now - self._window:
                hits.popleft()
            if len(hits) >= self._limit:
                # The deque holds at most `limit` entries: memory stays bounded per account.
                return max(1, math.ceil(hits[0] + self._window - now))
            hits.append(now)
            return None

    def reset(self) -> None:
        with self._lock:
            self._hits.clear()
