"""The CallRail client against the simulator over real HTTP, and the shared rate limit
held in Spanner across two "instances"."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from callpipe.callrail.client import (
    CallRailAuthError,
    CallRailClient,
    CallRailNotFound,
    CallRailUnavailable,
    ClientSettings,
    RetryPolicy,
)
from callpipe.ratelimit import RateLimit, SpannerRateLimiter
from callpipe.simulator.server import SimulatorServer

ACCOUNT = "555000111"
KEY = "simulator-key-abcdef"
START = datetime(2026, 10, 1, 9, 0, tzinfo=UTC)


def write_calls(directory: Path, count: int) -> list[str]:
    (directory / "calls").mkdir(parents=True, exist_ok=True)
    ids = []
    for index in range(count):
        call_id = f"CAL{index:032x}"
        call = {
            "id": call_id,
            "account_id": ACCOUNT,
            "answered": True,
            "direction": "inbound",
            "duration": 30 + index,
            "start_time": (START + timedelta(hours=index)).isoformat(),
            "customer_city": "Austin",
            "tags": [],
            "note": None,
            "_simulator": {"audio": None},
        }
        (directory / "calls" / f"{call_id}.json").write_text(json.dumps(call))
        ids.append(call_id)
    return ids


@pytest.fixture
def simulator(tmp_path: Path) -> Iterator[tuple[SimulatorServer, list[str]]]:
    ids = write_calls(tmp_path, 300)
    with SimulatorServer(tmp_path, {ACCOUNT: KEY}, rate_limit_per_minute=0).start() as server:
        yield server, ids


def client(server: SimulatorServer, key: str = KEY, **kwargs: Any) -> CallRailClient:
    return CallRailClient(
        key,
        ClientSettings(base_url=server.url + "/v3", retry=RetryPolicy(max_attempts=3)),
        **kwargs,
    )


def test_auth_one_call_and_errors(simulator: tuple[SimulatorServer, list[str]]) -> None:
    server, ids = simulator
    call = client(server).get_call(ACCOUNT, ids[0], fields=("tags", "note"))
    assert call["id"] == ids[0]
    assert call["duration"] == 30
    with pytest.raises(CallRailAuthError):
        client(server, key="wrong-key").get_call(ACCOUNT, ids[0])
    with pytest.raises(CallRailNotFound):
        client(server).get_call(ACCOUNT, "CAL" + "f" * 32)


def test_pagination_walks_every_call_once_with_date_filters(
    simulator: tuple[SimulatorServer, list[str]],
) -> None:
    server, ids = simulator
    pages: list[tuple[int, int]] = []
    seen = [
        c["id"]
        for c in client(server).iter_calls(
            ACCOUNT, per_page=100, on_page=lambda p, t: pages.append((p, t))
        )
    ]
    assert sorted(seen) == sorted(ids)
    assert len(seen) == len(set(seen)) == 300
    assert pages == [(1, 3), (2, 3), (3, 3)]
    day = [
        c["id"]
        for c in client(server).iter_calls(
            ACCOUNT, start=START + timedelta(hours=24), end=START + timedelta(hours=47, minutes=59)
        )
    ]
    assert sorted(day) == sorted(ids[24:48])


def test_server_errors_then_success(simulator: tuple[SimulatorServer, list[str]]) -> None:
    server, ids = simulator
    httpx.post(
        f"{server.url}/_sim/faults/{ids[1]}", json={"api_status_sequence": [500, 503]}
    ).raise_for_status()
    sleeps: list[float] = []
    assert client(server, sleep=sleeps.append).get_call(ACCOUNT, ids[1])["id"] == ids[1]
    assert len(sleeps) == 2


def test_a_429_storm_is_waited_out_or_handed_back(tmp_path: Path) -> None:
    ids = write_calls(tmp_path, 3)
    with SimulatorServer(tmp_path, {ACCOUNT: KEY}, rate_limit_per_minute=3).start() as server:
        for call_id in ids:
            client(server).get_call(ACCOUNT, call_id)
        # The budget is spent: Retry-After (up to 60 s) is longer than the client waits in-process.
        with pytest.raises(CallRailUnavailable) as caught:
            client(server).get_call(ACCOUNT, ids[0])
        assert caught.value.status == 429
        assert caught.value.retry_after is not None and caught.value.retry_after > 0

        # With a patient policy the client honours Retry-After, then succeeds.
        waited: list[float] = []

        def wait(seconds: float) -> None:
            waited.append(seconds)
            server.reset()  # time passes: the simulator's window is empty again

        patient = CallRailClient(
            KEY,
            ClientSettings(
                base_url=server.url + "/v3", retry=RetryPolicy(max_attempts=3, max_wait_seconds=120)
            ),
            sleep=wait,
        )
        assert patient.get_call(ACCOUNT, ids[0])["id"] == ids[0]
        assert len(waited) == 1 and waited[0] >= 1


class SimulatedTime:
    """One clock for the simulator and the limiters: sleeping advances it, so a minute of
    rate limiting runs in milliseconds."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
        self.lock = threading.Lock()

    def datetime(self) -> datetime:
        with self.lock:
            return self.now

    def epoch(self) -> float:
        return self.datetime().timestamp()

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.now += timedelta(seconds=seconds)


@pytest.mark.parametrize(("per_minute", "expect_429"), [(15, False), (40, True)])
def test_the_shared_limit_holds_across_instances(
    database: Any, tmp_path: Path, per_minute: int, expect_429: bool
) -> None:
    """Two limiter instances (two function instances) share one Spanner row per account.

    Below the simulator's budget (20/min) no request is refused; above it (the control
    case) the simulator answers 429, which shows the test can tell the difference.
    """
    account, call_id = simulated_account(tmp_path, f"acct{per_minute}-")
    clock = SimulatedTime()
    keys = {account: KEY}
    limit = RateLimit(per_minute=per_minute, burst=5, max_wait_seconds=3600)
    instances = [
        SpannerRateLimiter(database, limit, clock=clock.datetime, sleep=clock.sleep)
        for _ in range(2)
    ]
    with SimulatorServer(
        tmp_path, keys, rate_limit_per_minute=20, clock=clock.epoch
    ).start() as server:
        statuses: list[int | None] = []
        started = clock.datetime()
        for index in range(45):
            caller = CallRailClient(
                KEY,
                ClientSettings(base_url=server.url + "/v3", retry=RetryPolicy(max_attempts=1)),
                rate_limiter=instances[index % 2],
            )
            try:
                caller.get_call(account, call_id)
            except CallRailUnavailable as error:
                statuses.append(error.status)
        elapsed = (clock.datetime() - started).total_seconds()
        stats = httpx.get(f"{server.url}/_sim/stats").json()
    assert set(statuses) <= {429}
    if expect_429:
        assert statuses
    else:
        assert statuses == [], stats
        # 45 requests, 5 of them in the burst, the rest at 15 per minute.
        assert elapsed >= (45 - 5) / 15 * 60 - 4


def simulated_account(tmp_path: Path, name: str) -> tuple[str, str]:
    """A call of a fresh account (its own rate-limit row): (account id, call id)."""
    (call_id,) = write_calls(tmp_path, 1)
    account = f"{name}{datetime.now().timestamp():.0f}"[:32]
    path = tmp_path / "calls" / f"{call_id}.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "account_id": account}))
    return account, call_id


def test_a_429_pauses_every_instance_for_the_account(database: Any, tmp_path: Path) -> None:
    """CallRail refused instance A: instance B waits the pause out instead of being refused
    too (and spending the budget further)."""
    account, call_id = simulated_account(tmp_path, "held")
    clock = SimulatedTime()
    limit = RateLimit(per_minute=600, burst=5, max_wait_seconds=3600, per_hour=1000)
    a, b = (
        SpannerRateLimiter(database, limit, clock=clock.datetime, sleep=clock.sleep)
        for _ in range(2)
    )
    with SimulatorServer(
        tmp_path, {account: KEY}, rate_limit_per_minute=3, clock=clock.epoch
    ).start() as server:

        def get(limiter: SpannerRateLimiter) -> None:
            CallRailClient(
                KEY,
                ClientSettings(base_url=server.url + "/v3", retry=RetryPolicy(max_attempts=1)),
                rate_limiter=limiter,
            ).get_call(account, call_id)

        for _ in range(3):
            get(a)
        with pytest.raises(CallRailUnavailable) as refused:
            get(a)
        assert refused.value.status == 429 and refused.value.retry_after
        before = clock.datetime()
        get(b)
        assert (clock.datetime() - before).total_seconds() >= refused.value.retry_after


def test_the_hourly_budget_holds_across_instances(database: Any) -> None:
    """Two instances share the account's hourly window in its Spanner row: with a budget
    of 10 an hour (1 at once, then one per 400 s), 12 requests span 4,400 s."""
    clock = SimulatedTime()
    limit = RateLimit(per_minute=600, burst=5, max_wait_seconds=3600, per_hour=10)
    instances = [
        SpannerRateLimiter(database, limit, clock=clock.datetime, sleep=clock.sleep)
        for _ in range(2)
    ]
    account = f"hourly{datetime.now().timestamp():.0f}"
    sent = []
    for index in range(12):
        instances[index % 2].acquire(account)
        sent.append(clock.datetime())
    assert (sent[-1] - sent[0]).total_seconds() == 11 * 400
    assert (
        max(sum(1 for t in sent if start <= t < start + timedelta(hours=1)) for start in sent) <= 10
    )
