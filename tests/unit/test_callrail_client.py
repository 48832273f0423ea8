"""The CallRail client's retry, backoff and error mapping, over httpx's mock transport.

The simulator tests (tests/integration/test_callrail_simulator_client.py) cover the same
client against a real HTTP server; here every status sequence is exact and instant.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from callpipe.callrail.client import (
    CallRailAuthError,
    CallRailClient,
    CallRailNotFound,
    CallRailRequestError,
    CallRailUnavailable,
    ClientSettings,
    RetryPolicy,
    parse_retry_after,
)


class Script:
    """Answers requests from a list of (status, headers, json) and records them."""

    def __init__(self, answers: list[tuple[int, dict[str, str], object]]) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        status, headers, body = self.answers.pop(0)
        if isinstance(body, Exception):
            raise body
        return httpx.Response(status, headers=headers, json=body)


def make_client(
    script: Script, sleeps: list[float], attempts: int = 4, limiter: object | None = None
) -> CallRailClient:
    return CallRailClient(
        "secret-api-key-123",
        ClientSettings(
            base_url="https://api.callrail.test/v3", retry=RetryPolicy(max_attempts=attempts)
        ),
        rate_limiter=limiter,  # type: ignore[arg-type]
        http=httpx.Client(transport=httpx.MockTransport(script)),
        sleep=sleeps.append,
        rng=lambda: 1.0,
    )


CALL = {
    "id": "CAL1",
    "duration": 42,
    "recording": "https://api.callrail.test/v3/a/1/calls/CAL1/recording.json",
}


def test_get_call_sends_auth_fields_and_path() -> None:
    script = Script([(200, {}, CALL)])
    client = make_client(script, [])
    assert client.get_call("728790660", "CAL1", fields=("tags", "note")) == CALL
    request = script.requests[0]
    assert request.url.path == "/v3/a/728790660/calls/CAL1.json"
    assert request.url.params["fields"] == "tags,note"
    assert request.headers["Authorization"] == 'Token token="secret-api-key-123"'


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 504])
def test_transient_statuses_are_retried_with_exponential_backoff(status: int) -> None:
    script = Script([(status, {}, {}), (status, {}, {}), (200, {}, CALL)])
    sleeps: list[float] = []
    assert make_client(script, sleeps).get_call("1", "CAL1") == CALL
    assert len(script.requests) == 3
    assert sleeps == [0.5, 1.0]  # base 0.5 s doubling; rng=1.0 takes the top of the jitter


def test_timeouts_and_connection_errors_are_retried() -> None:
    request = httpx.Request("GET", "https://api.callrail.test")
    script = Script(
        [
            (0, {}, httpx.ReadTimeout("slow", request=request)),
            (0, {}, httpx.ConnectError("refused", request=request)),
            (200, {}, CALL),
        ]
    )
    assert make_client(script, []).get_call("1", "CAL1") == CALL


def test_retry_after_is_honoured() -> None:
    script = Script([(429, {"Retry-After": "7"}, {"error": "slow down"}), (200, {}, CALL)])
    sleeps: list[float] = []
    make_client(script, sleeps).get_call("1", "CAL1")
    assert sleeps == [7.0]


def test_a_retry_after_too_long_to_wait_in_process_raises_for_redelivery() -> None:
    script = Script([(429, {"Retry-After": "3600"}, {})])
    sleeps: list[float] = []
    with pytest.raises(CallRailUnavailable) as caught:
        make_client(script, sleeps).get_call("1", "CAL1")
    assert caught.value.retry_after == 3600
    assert sleeps == []
    assert len(script.requests) == 1


@pytest.mark.parametrize(("retry_after", "held"), [(None, 60.0), ("7", 7.0), ("99999999", 3600.0)])
def test_a_429_holds_the_account_for_every_instance_within_an_hour(
    retry_after: str | None, held: float
) -> None:
    """Without Retry-After, a minute (the budget is hourly); a huge one is capped, or one
    bad header would stop every instance for good."""

    class Limiter:
        def __init__(self) -> None:
            self.holds: list[tuple[str, float]] = []

        def acquire(self, account_id: str) -> None:
            pass

        def hold(self, account_id: str, seconds: float) -> None:
            self.holds.append((account_id, seconds))

    headers = {} if retry_after is None else {"Retry-After": retry_after}
    limiter = Limiter()
    with pytest.raises(CallRailUnavailable):
        make_client(Script([(429, headers, {})]), [], attempts=1, limiter=limiter).get_call(
            "728790660", "CAL1"
        )
    assert limiter.holds == [("728790660", held)]


def test_retries_are_bounded() -> None:
    script = Script([(503, {}, {})] * 3)
    with pytest.raises(CallRailUnavailable, match="after 3 attempts"):
        make_client(script, [], attempts=3).get_call("1", "CAL1")
    assert len(script.requests) == 3


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (401, CallRailAuthError),
        (403, CallRailAuthError),
        (404, CallRailNotFound),
        (400, CallRailRequestError),
        (422, CallRailRequestError),
    ],
)
def test_permanent_statuses_are_not_retried(status: int, error: type[Exception]) -> None:
    script = Script([(status, {}, {"error": "nope"})])
    with pytest.raises(error) as caught:
        make_client(script, []).get_call("728790660", "CAL1")
    assert len(script.requests) == 1
    assert "secret-api-key-123" not in str(caught.value)
    assert getattr(caught.value, "permanent", False) is True


def test_auth_error_message_tells_the_operator_what_to_do() -> None:
    with pytest.raises(CallRailAuthError, match="set-api-key"):
        make_client(Script([(401, {}, {})]), []).get_call("728790660", "CAL1")


def test_recording_url_and_missing_recording() -> None:
    script = Script(
        [(200, {}, {"url": "https://app.callrail.test/rec/CAL1.mp3?sig=x"}), (404, {}, {})]
    )
    client = make_client(script, [])
    assert client.get_recording_url("1", "CAL1") == "https://app.callrail.test/rec/CAL1.mp3?sig=x"
    assert client.get_recording_url("1", "CAL2") is None
    assert script.requests[0].url.path == "/v3/a/1/calls/CAL1/recording.json"


def test_iter_calls_walks_every_page_once() -> None:
    pages = [
        (200, {}, {"page": 1, "total_pages": 3, "calls": [{"id": "A"}, {"id": "B"}]}),
        (200, {}, {"page": 2, "total_pages": 3, "calls": [{"id": "C"}]}),
        (200, {}, {"page": 3, "total_pages": 3, "calls": [{"id": "D"}]}),
    ]
    script = Script(pages)
    seen: list[tuple[int, int]] = []
    calls = list(
        make_client(script, []).iter_calls(
            "1",
            start=datetime(2026, 11, 1, tzinfo=UTC),
            per_page=1000,
            on_page=lambda p, t: seen.append((p, t)),
        )
    )
    assert [c["id"] for c in calls] == ["A", "B", "C", "D"]
    assert [r.url.params["page"] for r in script.requests] == ["1", "2", "3"]
    assert script.requests[0].url.params["per_page"] == "250"  # CallRail's maximum
    assert script.requests[0].url.params["start_date"].startswith("2026-11-01")
    assert seen == [(1, 3), (2, 3), (3, 3)]


def test_each_request_takes_a_rate_limit_token_first() -> None:
    taken: list[str] = []

    class Limiter:
        def acquire(self, account_id: str) -> None:
            taken.append(account_id)

    script = Script([(500, {}, {}), (200, {}, CALL)])
    make_client(script, [], limiter=Limiter()).get_call("728790660", "CAL1")
    assert taken == ["728790660", "728790660"]


def test_parse_retry_after_seconds_and_http_dates() -> None:
    now = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)
    clock: Callable[[], datetime] = lambda: now  # noqa: E731
    assert parse_retry_after("12", clock) == 12.0
    later = (now + timedelta(seconds=30)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert parse_retry_after(later, clock) == 30.0
    assert parse_retry_after("soon", clock) is None
    assert parse_retry_after(None, clock) is None
