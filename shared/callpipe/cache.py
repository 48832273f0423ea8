"""A small thread-safe TTL cache (gunicorn gthread serves requests from several threads)."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class TTLCache(Generic[K, V]):
    def __init__(
        self,
        ttl_seconds: float,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl_seconds
        self._max = max_entries
        self._clock = clock
        self._items: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> tuple[bool, V | None]:
        """Return ``(hit, value)``; a hit may carry ``None`` (a cached negative answer)."""
        now = self._clock()
        with self._lock:
            entry = self._items.get(key)
            if entry is None:
                return False, None
            expires, value = entry
            if expires <= now:
                del self._items[key]
                return False, None
            self._items.move_to_end(key)
            return True, value

    def put(self, key: K, value: V | None, ttl_seconds: float | None = None) -> None:
        ttl = self._ttl if ttl_seconds is None else ttl_seconds
        if ttl <= 0:
            return
        with self._lock:
            self._items[key] = (self._clock() + ttl, value)  # type: ignore[assignment]
            self._items.move_to_end(key)
            while len(self._items) > self._max:
                self._items.popitem(last=False)

    def invalidate(self, key: K | None = None) -> None:
        with self._lock:
            if key is None:
                self._items.clear()
            else:
                self._items.pop(key, None)
