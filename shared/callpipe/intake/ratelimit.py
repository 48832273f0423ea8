"""Token buckets (per process) bounding how many webhooks intake keeps in quarantine."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


class TokenBucket:
    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._capacity = float(per_minute)
        self._rate = per_minute / 60.0
        self._tokens = float(per_minute)
        self._clock = clock
        self._updated = clock()
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            now = self._clock()
            self._tokens = min(self._capacity, self._tokens + (now - self._updated) * self._rate)
            self._updated = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return True
            return False


@dataclass(frozen=True)
class QuarantineBudgets:
    """One budget per kind of quarantined webhook, by who can send it.

    Anyone can send a webhook for an unknown company (nothing can verify it), so that
    budget must not be the one authentic webhooks depend on: a flood of forged requests
    would otherwise leave nothing for a signed webhook refused as unusable, or for the
    webhooks of an outage of the directory, and CallRail never sends them again.
    """

    # not verifiable, and anyone can send it
    unknown_company: TokenBucket
    # verified with the company's token: forged requests never reach this budget
    unusable: TokenBucket
    # not verifiable either (the tokens could not be read), but spent only while Spanner or
    # the secret store fail, for companies the instance has no recent mapping of
    directory_unavailable: TokenBucket
