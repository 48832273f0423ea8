"""CallRail API v3 client (httpx).

- Auth: ``Authorization: Token token="<API key>"``; the key never appears in errors or logs.
- Every request has a timeout. 429, 5xx, timeouts and connection errors are retried with
  exponential backoff and full jitter, a bounded number of times; ``Retry-After`` is
  honoured when present. A wait longer than ``RetryPolicy.max_wait_seconds`` is not spent
  inside the function: :class:`CallRailUnavailable` is raised with ``retry_after`` so that
  Pub/Sub redelivers later instead of holding an instance.
- 401/403 (bad or revoked key), 404 and other 4xx are permanent errors with clear messages.
- Every request first takes a token from the per-account :class:`RateLimiter`, which is
  shared by every function instance calling the same account (see callpipe.ratelimit).
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Protocol
from urllib.parse import quote

import httpx

DEFAULT_BASE_URL = "https://api.callrail.com/v3"

# Fields beyond the defaults that the pipeline wants for every call (FACTS.md).
CALL_FIELDS: tuple[str, ...] = (
    "company_id",
    "company_name",
    "lead_status",
    "value",
    "tags",
    "keywords",
    "note",
    "milestones",
    "sentiment",
    "transcription",
    "conversational_transcript",
    "source",
    "source_name",
    "call_type",
    "first_call",
)


class CallRailError(Exception):
    """Base of the client's errors; ``permanent`` tells the step whether to retry."""

    permanent = False

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class CallRailAuthError(CallRailError):
    permanent = True


class CallRailNotFound(CallRailError):
    permanent = True


class CallRailRequestError(CallRailError):
    permanent = True


class CallRailUnavailable(CallRailError):
    """Transient: rate limited, server errors or timeouts after the retries."""

    def __init__(
        self, message: str, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, status)
        self.retry_after = retry_after


class RateLimiter(Protocol):
    def acquire(self, account_id: str) -> None:
        """Block until a request to ``account_id`` is allowed, or raise RateLimited."""

    def hold(self, account_id: str, seconds: float) -> None:
        """Let no request go to ``account_id`` for ``seconds`` (CallRail answered 429)."""


# How long every instance leaves an account alone after a 429 without Retry-After: the
# budget CallRail enforces is hourly and daily, so an immediate retry would be refused too.
RATE_LIMITED_PAUSE_SECONDS = 60.0
# The longest pause a Retry-After can impose on every instance: an hour (the window of
# CallRail's budget); a larger value is more likely a mistake than a request.
RATE_LIMITED_MAX_PAUSE_SECONDS = 3600.0


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    base_delay_seconds: float = 0.5
    max_delay_seconds: float = 8.0
    max_wait_seconds: float = 10.0  # longest Retry-After honoured in-process

    def backoff(self, attempt: int, rng: Callable[[], float]) -> float:
        """Full jitter: uniform in [0, min(max, base * 2^attempt)]."""
        return float(rng() * min(self.max_delay_seconds, self.base_delay_seconds * 2.0**attempt))


@dataclass(frozen=True)
class ClientSettings:
    base_url: str = DEFAULT_BASE_URL
    connect_timeout: float = 5.0
    read_timeout: float = 20.0
    retry: RetryPolicy = RetryPolicy()


def parse_retry_after(
    value: str | None, now: Callable[[], datetime] = lambda: datetime.now(UTC)
) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now()).total_seconds())


class CallRailClient:
    def __init__(
        self,
        api_key: str,
        settings: ClientSettings | None = None,
        rate_limiter: RateLimiter | None = None,
        http: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._settings = settings or ClientSettings()
        self._limiter = rate_limiter
        self._sleep = sleep
        self._rng = rng
        self._http = http or httpx.Client(
            timeout=httpx.Timeout(
                self._settings.read_timeout, connect=self._settings.connect_timeout
            ),
            follow_redirects=False,
        )
        self._headers = {
            "Authorization": f'Token token="{api_key}"',
            "Accept": "application/json",
            "User-Agent": "callpipe/0.1",
        }

    def close(self) -> None:
        self._http.close()

    # -- endpoints ------------------------------------------------------------------------

    def get_call(
        self, account_id: str, call_id: str, fields: Sequence[str] = CALL_FIELDS
    ) -> dict[str, Any]:
        params = {"fields": ",".join(fields)} if fields else {}
        path = f"/a/{_seg(account_id)}/calls/{_seg(call_id)}.json"
        return self._get_json(account_id, path, params, what=f"call {call_id}")

    def get_recording_url(self, account_id: str, call_id: str) -> str | None:
        """The short-lived audio URL, or None when the call has no recording."""
        path = f"/a/{_seg(account_id)}/calls/{_seg(call_id)}/recording.json"
        try:
            data = self._get_json(account_id, path, {}, what=f"recording of call {call_id}")
        except CallRailNotFound:
            return None
        url = data.get("url")
        return url if isinstance(url, str) and url else None

    def iter_calls(
        self,
        account_id: str,
        start: date | datetime | None = None,
        end: date | datetime | None = None,
        per_page: int = 250,
        fields: Sequence[str] = (),
        on_page: Callable[[int, int], None] | None = None,
        company_id: str | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Every call of the account (or of one of its companies) in the date range,
        walking the pages in order."""
        params: dict[str, str] = {
            "per_page": str(min(max(per_page, 1), 250)),
            "sort": "start_time",
            "order": "asc",
        }
        if company_id is not None:
            params["company_id"] = company_id
        if start is not None:
            params["start_date"] = _api_time(start)
        if end is not None:
            params["end_date"] = _api_time(end)
        if fields:
            params["fields"] = ",".join(fields)
        page = 1
        while True:
            data = self._get_json(
                account_id,
                f"/a/{_seg(account_id)}/calls.json",
                {**params, "page": str(page)},
                what=f"calls page {page}",
            )
            calls = data.get("calls") or []
            total_pages = int(data.get("total_pages") or 1)
            if on_page:
                on_page(page, total_pages)
            yield from calls
            if page >= total_pages or not calls:
                return
            page += 1

    # -- transport ------------------------------------------------------------------------

    def _get_json(
        self, account_id: str, path: str, params: dict[str, str], what: str
    ) -> dict[str, Any]:
        retry = self._settings.retry
        url = self._settings.base_url.rstrip("/") + path
        last: CallRailUnavailable | None = None
        for attempt in range(retry.max_attempts):
            if self._limiter is not None:
                self._limiter.acquire(account_id)
            try:
                response = self._http.get(url, params=params, headers=self._headers)
            except httpx.TimeoutException:
                last = CallRailUnavailable(f"CallRail timed out on {what}")
            except httpx.TransportError as error:
                last = CallRailUnavailable(
                    f"CallRail unreachable on {what}: {error.__class__.__name__}"
                )
            else:
                status = response.status_code
                if status == 200:
                    try:
                        data = response.json()
                    except ValueError:
                        last = CallRailUnavailable(
                            f"CallRail answered {what} with invalid JSON", status
                        )
                    else:
                        if isinstance(data, dict):
                            return data
                        raise CallRailRequestError(
                            f"CallRail answered {what} with a non-object", status
                        )
                elif status in (401, 403):
                    raise CallRailAuthError(
                        f"CallRail refused the API key for account {account_id} ({status}) on {what}: "
                        "the key is wrong, revoked or lacks access; set a new one with "
                        "`callpipe tenants set-api-key`",
                        status,
                    )
                elif status == 404:
                    raise CallRailNotFound(
                        f"CallRail has no {what} in account {account_id} (404)", status
                    )
                elif status in (408, 425, 429) or status >= 500:  # worth another try
                    retry_after = parse_retry_after(response.headers.get("Retry-After"))
                    if status == 429 and self._limiter is not None:
                        pause = RATE_LIMITED_PAUSE_SECONDS if retry_after is None else retry_after
                        self._limiter.hold(account_id, min(pause, RATE_LIMITED_MAX_PAUSE_SECONDS))
                    last = CallRailUnavailable(
                        f"CallRail answered {status} on {what}", status, retry_after
                    )
                    if retry_after is not None and retry_after > retry.max_wait_seconds:
                        raise last  # too long to wait here: let Pub/Sub redeliver later
                else:
                    raise CallRailRequestError(
                        f"CallRail refused the request for {what} ({status}): {_error_text(response)}",
                        status,
                    )
            if attempt + 1 < retry.max_attempts:
                delay = retry.backoff(attempt, self._rng)
                if last is not None and last.retry_after is not None:
                    delay = max(delay, last.retry_after)
                self._sleep(delay)
        assert last is not None
        raise CallRailUnavailable(
            f"{last} (after {retry.max_attempts} attempts)", last.status, last.retry_after
        )


def _api_time(value: date | datetime) -> str:
    """A date, or a time to the second with its offset (CallRail's examples have no
    fractions of a second)."""
    if isinstance(value, datetime):
        return value.replace(microsecond=0).isoformat()
    return value.isoformat()


def _seg(value: str) -> str:
    return quote(value, safe="")


def _error_text(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(data, dict):
        return str(data.get("error") or data.get("errors") or data)[:200]
    return str(data)[:200]
