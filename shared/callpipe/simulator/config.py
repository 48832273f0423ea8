"""The simulator's settings (what ``SimulatorServer`` and ``callpipe sim serve`` take)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class SimulatorConfig:
    # account_id -> API key. One key may serve several accounts (a CallRail user's key).
    api_keys: Mapping[str, str]
    # Accepted API requests per account in any sliding 60 s window; 0 turns limiting off.
    rate_limit_per_minute: int = 120
    recording_url_ttl_seconds: int = 300
    rate_window_seconds: float = 60.0
    # Per process: recording URLs only verify against the simulator that issued them.
    signing_secret: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)
    # Wall clock (epoch seconds): recording URLs carry an epoch Expires. Tests inject one.
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep

    def __post_init__(self) -> None:
        if self.rate_limit_per_minute < 0:
            raise ValueError("rate_limit_per_minute must be 0 (off) or more")
        if self.recording_url_ttl_seconds < 1:
            raise ValueError("recording_url_ttl_seconds must be at least 1")
