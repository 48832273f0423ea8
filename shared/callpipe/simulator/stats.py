"""Request counters behind ``GET /_sim/stats`` (tests assert on them; ``/_sim/reset`` clears)."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any


class Stats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_account: Counter[str] = Counter()
        self._by_path: Counter[str] = Counter()
        self._by_status: Counter[str] = Counter()
        self._limited_by_account: Counter[str] = Counter()
        self._downloads = 0
        self._total = 0

    def record(
        self, path: str, account_id: str | None, status: int, *, download: bool, limited: bool
    ) -> None:
        """``limited``: refused by the rate limiter (an injected 429 is not counted there)."""
        with self._lock:
            self._total += 1
            self._by_path[path] += 1
            self._by_status[str(status)] += 1
            if account_id is not None:
                self._by_account[account_id] += 1
                if limited:
                    self._limited_by_account[account_id] += 1
            if download:
                self._downloads += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests_total": self._total,
                "requests_by_account": dict(self._by_account),
                "requests_by_path": dict(self._by_path),
                "responses_by_status": dict(self._by_status),
                "rate_limited": sum(self._limited_by_account.values()),
                "rate_limited_by_account": dict(self._limited_by_account),
                "recording_downloads": self._downloads,
            }

    def reset(self) -> None:
        with self._lock:
            self._by_account.clear()
            self._by_path.clear()
            self._by_status.clear()
            self._limited_by_account.clear()
            self._downloads = 0
            self._total = 0
