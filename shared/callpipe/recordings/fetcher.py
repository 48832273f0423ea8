"""Download one call recording safely: guarded URL, pinned connections, capped audio stream.

``download_audio`` streams the body into a caller-supplied sink (a temporary file, say) and
returns what it learned: media type, extension from the magic bytes, size and SHA-256.

How the request is kept on the allow-list:

- every URL, the first and each redirect's Location, passes ``check_url`` first; redirects
  are followed by hand (``follow_redirects=False``), at most ``policy.max_redirects``;
- connections come from ``pinned_client``: its network backend resolves the host itself,
  re-checks every address and connects to a checked IP (Host header and TLS SNI stay the
  host name), so a DNS answer that changes between check and connect (DNS rebinding)
  cannot steer the request to a private address. See ``callpipe.recordings.pinning``.

Errors, by what the caller should do with them:

- permanent, dead-letter: ``UnsafeUrl`` (``TooManyRedirects``), ``AudioRejected`` (not
  audio, too big, empty), ``RecordingGone`` (404/410, and 401/403: CallRail-style signed
  URLs answer 403 once they expire; the step asks CallRail for a fresh URL when it runs
  again, for example after a DLQ replay);
- transient, raise so Pub/Sub retries: ``FetchFailed`` (timeouts, connection errors, 5xx,
  429, truncated body, total deadline exceeded, any other unexpected status), with
  ``status`` and ``retry_after`` when the server gave them.

On any error the sink holds a partial body: the caller throws it away. Messages never carry
a URL's query string (on a signed URL, it is the credential).

The total deadline is checked before each request and after each chunk read, and every
socket timeout is capped by the time left when the request starts, so a download can
overrun ``total_timeout`` by at most one read timeout.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import BinaryIO

import httpx

from callpipe.recordings.guard import (
    HostUnresolved,
    ResolvedTarget,
    Resolver,
    UnsafeUrl,
    check_url,
    redact_url,
    system_resolve,
)
from callpipe.recordings.pinning import pinned_client
from callpipe.recordings.policy import FetchPolicy
from callpipe.recordings.sniff import SNIFF_BYTES, is_audio_media_type, media_type, sniff_audio

Clock = Callable[[], float]

_REQUEST_HEADERS = {
    "Accept": "audio/*, application/octet-stream;q=0.5",
    # Audio does not compress; asking for identity keeps Content-Length meaning body bytes.
    "Accept-Encoding": "identity",
}
_GONE = frozenset({401, 403, 404, 410})
_RETRYABLE = frozenset({408, 425, 429})


class AudioRejected(ValueError):
    """The response is not acceptable audio. Permanent: the same URL gives the same bytes."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason  # content_type, magic_bytes, too_large or empty_body


class TooManyRedirects(UnsafeUrl):
    """More redirects than ``policy.max_redirects``. Permanent."""

    reason = "too_many_redirects"


class RecordingGone(LookupError):
    """404/410/401/403: the recording is gone or its signed URL expired. Permanent here."""

    reason = "recording_gone"

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


class FetchFailed(RuntimeError):
    """A failure that may pass: network, timeout, 5xx, 429, truncated body. Retry later."""

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


@dataclass(frozen=True)
class DownloadedAudio:
    content_type: str  # media type as served, parameters dropped, e.g. "audio/mpeg"
    extension: str  # from the magic bytes: mp3, wav, ogg, flac or m4a
    size: int
    sha256: str  # hex digest of the bytes written to the sink
    final_url_host: str  # host that served the body, after redirects


def download_audio(
    url: str,
    policy: FetchPolicy,
    sink: BinaryIO,
    *,
    client: httpx.Client | None = None,
    resolve: Resolver = system_resolve,
    clock: Clock = time.monotonic,
) -> DownloadedAudio:
    """Fetch the recording at ``url`` into ``sink``, following allowed redirects.

    Without ``client`` a pinned client is made and closed for this call. A long-lived caller
    may pass one from ``pinned_client(policy, resolve)`` to reuse connections; any other
    client is used as it is, so its transport decides where connections go (tests pass an
    ``httpx.MockTransport``). ``resolve`` is used for the URL checks and by the client made
    here; ``clock`` (monotonic seconds) measures the total deadline.
    """
    deadline = clock() + policy.total_timeout
    http = client if client is not None else pinned_client(policy, resolve)
    try:
        current = url
        for _ in range(policy.max_redirects + 1):
            target = _check(current, policy, resolve)
            outcome = _fetch_once(http, target, policy, sink, deadline, clock)
            if isinstance(outcome, DownloadedAudio):
                return outcome
            current = outcome
        raise TooManyRedirects(
            f"more than {policy.max_redirects} redirects, last to {redact_url(current)}"
        )
    finally:
        if client is None:
            http.close()


def _check(url: str, policy: FetchPolicy, resolve: Resolver) -> ResolvedTarget:
    try:
        return check_url(url, policy, resolve)
    except HostUnresolved as error:
        raise FetchFailed(str(error)) from error


def _fetch_once(
    client: httpx.Client,
    target: ResolvedTarget,
    policy: FetchPolicy,
    sink: BinaryIO,
    deadline: float,
    clock: Clock,
) -> DownloadedAudio | str:
    """One request: the downloaded audio, or the absolute URL a redirect points to."""
    remaining = deadline - clock()
    if remaining <= 0:
        raise FetchFailed(f"total deadline of {policy.total_timeout:g}s exceeded")
    connect = min(policy.connect_timeout, remaining)
    read = min(policy.read_timeout, remaining)
    timeout = httpx.Timeout(connect=connect, read=read, write=read, pool=connect)
    try:
        with client.stream(
            "GET", target.url, headers=_REQUEST_HEADERS, follow_redirects=False, timeout=timeout
        ) as response:
            if response.has_redirect_location:
                return _redirect_location(response, target)
            _check_status(response, target)
            return _read_body(response, target, policy, sink, deadline, clock)
    except HostUnresolved as error:  # from the pinned backend's own resolution
        raise FetchFailed(str(error)) from error
    except httpx.TimeoutException as error:
        raise FetchFailed(f"timed out fetching {target.redacted}: {error}") from error
    except httpx.TransportError as error:
        # Connection refused or reset, protocol errors, a body cut short of Content-Length.
        raise FetchFailed(
            f"{error.__class__.__name__} fetching {target.redacted}: {error}"
        ) from error


def _redirect_location(response: httpx.Response, target: ResolvedTarget) -> str:
    try:
        return str(response.url.join(response.headers["location"]))
    except (httpx.InvalidURL, ValueError):
        raise UnsafeUrl(f"malformed redirect from {target.redacted}") from None


def _check_status(response: httpx.Response, target: ResolvedTarget) -> None:
    status = response.status_code
    if status == 200:
        return
    if status in _GONE:
        raise RecordingGone(
            f"HTTP {status} from {target.redacted}: recording gone or signed URL expired",
            status=status,
        )
    if status == 204:
        raise AudioRejected(f"HTTP 204 (no content) from {target.redacted}", reason="empty_body")
    retry_after = _retry_after(response.headers.get("retry-after"))
    if status in _RETRYABLE or status >= 500:
        raise FetchFailed(
            f"HTTP {status} from {target.redacted}", status=status, retry_after=retry_after
        )
    # Anything else (other 4xx, 3xx without Location, odd 2xx) is unexpected; retrying is
    # cheap and bounded by the subscription's dead-letter policy.
    raise FetchFailed(
        f"unexpected HTTP {status} from {target.redacted}", status=status, retry_after=retry_after
    )


def _read_body(
    response: httpx.Response,
    target: ResolvedTarget,
    policy: FetchPolicy,
    sink: BinaryIO,
    deadline: float,
    clock: Clock,
) -> DownloadedAudio:
    content_type = media_type(response.headers.get("content-type"))
    if not is_audio_media_type(content_type):
        raise AudioRejected(
            f"content type {content_type or 'missing'!r} is not audio ({target.redacted})",
            reason="content_type",
        )
    declared = _content_length(response)
    if declared is not None and declared > policy.max_bytes:
        # Refused before reading a byte of it.
        raise AudioRejected(
            f"Content-Length {declared} is over the {policy.max_bytes}-byte cap",
            reason="too_large",
        )

    digest = hashlib.sha256()
    size = 0
    head = b""  # held back until the magic bytes are known, so non-audio never hits the sink
    extension: str | None = None
    for chunk in response.iter_bytes():  # chunks as they arrive: the deadline check keeps up
        if clock() > deadline:
            raise FetchFailed(f"total deadline of {policy.total_timeout:g}s exceeded mid-body")
        if size + len(chunk) > policy.max_bytes:
            raise AudioRejected(f"body is over the {policy.max_bytes}-byte cap", reason="too_large")
        size += len(chunk)
        if extension is None:
            head += chunk
            if len(head) < SNIFF_BYTES:
                continue
            extension = _sniff(head)
            chunk, head = head, b""
        digest.update(chunk)
        sink.write(chunk)

    if declared is not None and response.num_bytes_downloaded < declared:
        raise FetchFailed(f"body truncated: {response.num_bytes_downloaded} of {declared} bytes")
    if size == 0:
        raise AudioRejected(f"empty body from {target.redacted}", reason="empty_body")
    if extension is None:  # a body shorter than SNIFF_BYTES
        extension = _sniff(head)
        digest.update(head)
        sink.write(head)
    return DownloadedAudio(
        content_type=content_type,
        extension=extension,
        size=size,
        sha256=digest.hexdigest(),
        final_url_host=target.host,
    )


def _sniff(head: bytes) -> str:
    extension = sniff_audio(head)
    if extension is None:
        raise AudioRejected(
            f"body does not start like any known audio format ({head[:4].hex()})",
            reason="magic_bytes",
        )
    return extension


def _content_length(response: httpx.Response) -> int | None:
    try:
        value = int(response.headers["content-length"])
    except (KeyError, ValueError):
        return None  # absent, or invalid (h11 refuses most invalid values itself)
    return value if value >= 0 else None


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds, from either delay-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
