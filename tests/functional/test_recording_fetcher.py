"""The recording fetcher over real HTTP, against small servers on 127.0.0.1.

Each test starts its own ``http.server`` on a free loopback port. Host names such as
``recordings.callrail.test`` exist only in the injected resolver, which maps them to
127.0.0.1; a download that reaches the server by such a name therefore proves that the
connection went to the address our resolver gave and the guard checked, not to one the
system looked up. To reach loopback at all, the test policy lists exact ``127.0.0.1:<port>``
and ``<name>:<port>`` pairs as insecure origins, as the local simulator's config would.
"""

from __future__ import annotations

import hashlib
import io
import socket
import threading
import time
import wave
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from callpipe.recordings import (
    AudioRejected,
    DownloadedAudio,
    FetchFailed,
    FetchPolicy,
    RecordingGone,
    TooManyRedirects,
    UnsafeUrl,
    download_audio,
    pinned_client,
)

pytestmark = pytest.mark.timeout(30)

PUBLIC = "34.120.1.2"  # a public address nothing here ever connects to
SECRET = "s3cr3t-signature"


# --- audio bodies ----------------------------------------------------------------------

MP3_FRAME = b"\xff\xfb\x90\x64" + bytes(413)  # MPEG-1 layer III, 128 kb/s, 44.1 kHz: 417 bytes


def mp3_bytes(frames: int = 8, tag: bool = True) -> bytes:
    id3 = b"ID3\x04\x00\x00\x00\x00\x00\x00" if tag else b""  # ID3v2.4, no frames
    return id3 + MP3_FRAME * frames


def wav_bytes(seconds: float = 0.05) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(bytes(int(8000 * seconds) * 2))
    return buffer.getvalue()


OGG = b"OggS\x00\x02" + bytes(200)
FLAC = b"fLaC\x00\x00\x00\x22" + bytes(200)
M4A = b"\x00\x00\x00\x20ftypM4A \x00\x00\x00\x00M4A mp42isom" + bytes(200)


# --- the local server ------------------------------------------------------------------

Route = Callable[["Handler"], None]


@dataclass
class Hit:
    path: str
    query: str
    host: str


@dataclass
class LocalServer:
    port: int
    routes: dict[str, Route] = field(default_factory=dict)
    hits: list[Hit] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    @property
    def paths(self) -> list[str]:
        return [hit.path for hit in self.hits]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # slow handlers notice the closed socket or `stopping` and end
    state: LocalServer


class Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"  # one response per connection; no length = until close

    def do_GET(self) -> None:
        state = self.server.state
        path, _, query = self.path.partition("?")
        state.hits.append(Hit(path, query, self.headers.get("Host", "")))
        route = state.routes.get(path)
        if route is None:
            self.head(404, length=0)
            return
        try:
            route(self)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client hung up, as it should on a refused body

    def head(self, status: int, length: int | None = None, **headers: str) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass


@pytest.fixture
def server() -> Iterator[LocalServer]:
    httpd = _Server(("127.0.0.1", 0), Handler)
    state = LocalServer(port=httpd.server_address[1])
    httpd.state = state
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.01})
    thread.start()
    try:
        yield state
    finally:
        state.stopping.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


# Route builders.


def audio(body: bytes, content_type: str | None = "audio/mpeg", length: int | None = -1) -> Route:
    def route(h: Handler) -> None:
        headers = {"Content_Type": content_type} if content_type else {}
        h.head(200, length=len(body) if length == -1 else length, **headers)
        h.wfile.write(body)

    return route


def status(code: int, **headers: str) -> Route:
    def route(h: Handler) -> None:
        body = b'{"error": "nope"}'
        h.head(code, length=len(body), Content_Type="application/json", **headers)
        h.wfile.write(body)

    return route


def redirect(location: str, code: int = 302) -> Route:
    def route(h: Handler) -> None:
        h.head(code, length=0, Location=location)

    return route


def drip(head: bytes, chunk: bytes, every: float, content_type: str = "audio/mpeg") -> Route:
    """Send ``head`` and then ``chunk`` every ``every`` seconds until the client leaves."""

    def route(h: Handler) -> None:
        h.head(200, Content_Type=content_type)
        h.wfile.write(head)
        h.wfile.flush()
        while not h.server.state.stopping.wait(every):
            h.wfile.write(chunk)
            h.wfile.flush()

    return route


def endless(chunk: bytes) -> Route:
    """An audio body with no Content-Length that never ends (until the client hangs up)."""

    def route(h: Handler) -> None:
        h.head(200, Content_Type="audio/mpeg")
        h.wfile.write(mp3_bytes(frames=1))
        for _ in range(10_000):  # 640 MiB bound, should the client not stop reading
            if h.server.state.stopping.is_set():
                return
            h.wfile.write(chunk)

    return route


# --- resolvers and policies ----------------------------------------------------------


class FakeDns:
    """Answers from a dict (a callable answer is called per lookup); records every lookup."""

    def __init__(self, answers: dict[str, Sequence[str] | Callable[[], Sequence[str]]]) -> None:
        self.answers = answers
        self.lookups: list[str] = []

    def __call__(self, host: str) -> Sequence[str]:
        self.lookups.append(host)
        answer = self.answers.get(host)
        if answer is None:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return answer() if callable(answer) else answer


def local_dns(**extra: Sequence[str] | Callable[[], Sequence[str]]) -> FakeDns:
    answers: dict[str, Sequence[str] | Callable[[], Sequence[str]]] = {
        "recordings.callrail.test": ["127.0.0.1"],
        "cdn.callrail.test": ["127.0.0.1"],
        "unlisted.callrail.test": ["127.0.0.1"],
        "evil.test": ["127.0.0.1"],
        "internal.callrail.com": ["10.0.0.7"],
        "metadata.callrail.com": ["169.254.169.254"],
    }
    answers.update({name.replace("_", "."): value for name, value in extra.items()})
    return FakeDns(answers)


def local_policy(port: int, **limits: float) -> FetchPolicy:
    return FetchPolicy(
        allowed_hosts=("*.callrail.com",),
        insecure_hosts=(
            f"127.0.0.1:{port}",
            f"recordings.callrail.test:{port}",
            f"cdn.callrail.test:{port}",
        ),
        max_bytes=int(limits.pop("max_bytes", 1024 * 1024)),
        connect_timeout=limits.pop("connect_timeout", 2.0),
        read_timeout=limits.pop("read_timeout", 2.0),
        total_timeout=limits.pop("total_timeout", 10.0),
        max_redirects=int(limits.pop("max_redirects", 3)),
    )


def fetch(
    server: LocalServer, url: str, sink: io.BytesIO | None = None, **limits: float
) -> DownloadedAudio:
    return download_audio(
        url, local_policy(server.port, **limits), sink or io.BytesIO(), resolve=local_dns()
    )


# --- success -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type", "extension"),
    [
        (mp3_bytes(), "audio/mpeg", "mp3"),
        (mp3_bytes(tag=False), "audio/mpeg", "mp3"),  # frame sync, no ID3 tag
        (wav_bytes(), "audio/wav", "wav"),
        (wav_bytes(), "audio/x-wav; charset=binary", "wav"),
        (OGG, "audio/ogg", "ogg"),
        (FLAC, "audio/flac", "flac"),
        (M4A, "audio/mp4", "m4a"),
        (mp3_bytes(), "application/octet-stream", "mp3"),
        (wav_bytes(), "binary/octet-stream", "wav"),
    ],
)
def test_downloads_audio_with_size_and_sha256(
    server: LocalServer, body: bytes, content_type: str, extension: str
) -> None:
    server.routes["/rec"] = audio(body, content_type)
    sink = io.BytesIO()
    result = fetch(server, server.url(f"/rec?Signature={SECRET}"), sink)
    assert result == DownloadedAudio(
        content_type=content_type.split(";")[0],
        extension=extension,
        size=len(body),
        sha256=hashlib.sha256(body).hexdigest(),
        final_url_host="127.0.0.1",
    )
    assert sink.getvalue() == body
    assert server.hits == [Hit("/rec", f"Signature={SECRET}", f"127.0.0.1:{server.port}")]


def test_downloads_by_host_name_pinned_to_the_checked_address(server: LocalServer) -> None:
    # recordings.callrail.test exists only in our resolver: reaching the server by that name
    # means the socket went to the address we resolved and checked, with the name kept in
    # the Host header.
    body = wav_bytes(0.5)
    server.routes["/calls/CAL1.wav"] = audio(body, "audio/wav")
    resolver = local_dns()
    sink = io.BytesIO()
    result = download_audio(
        server.url("/calls/CAL1.wav", host="recordings.callrail.test"),
        local_policy(server.port),
        sink,
        resolve=resolver,
    )
    assert (result.extension, result.size, result.final_url_host) == (
        "wav",
        len(body),
        "recordings.callrail.test",
    )
    assert result.sha256 == hashlib.sha256(body).hexdigest()
    assert sink.getvalue() == body
    assert server.hits[0].host == f"recordings.callrail.test:{server.port}"
    # Once for the guard's check, once by the network backend when connecting.
    assert resolver.lookups == ["recordings.callrail.test", "recordings.callrail.test"]


def test_a_large_body_streams_through_intact(server: LocalServer) -> None:
    body = mp3_bytes(frames=2500)  # about 1 MiB, many reads
    server.routes["/big.mp3"] = audio(body)
    sink = io.BytesIO()
    result = fetch(server, server.url("/big.mp3"), sink, max_bytes=len(body))  # exactly the cap
    assert result.size == len(body) == len(sink.getvalue())
    assert result.sha256 == hashlib.sha256(body).hexdigest()


def test_a_caller_kept_pinned_client_is_reused_and_left_open(server: LocalServer) -> None:
    server.routes["/a.mp3"] = audio(mp3_bytes())
    server.routes["/b.wav"] = audio(wav_bytes(), "audio/wav")
    policy = local_policy(server.port)
    resolver = local_dns()
    with pinned_client(policy, resolver) as client:
        first = download_audio(
            server.url("/a.mp3"), policy, io.BytesIO(), client=client, resolve=resolver
        )
        second = download_audio(
            server.url("/b.wav", host="cdn.callrail.test"),
            policy,
            io.BytesIO(),
            client=client,
            resolve=resolver,
        )
        assert not client.is_closed
    assert (first.extension, second.extension) == ("mp3", "wav")


# --- redirects -----------------------------------------------------------------------


def test_follows_redirects_to_allowed_hosts(server: LocalServer) -> None:
    body = mp3_bytes()
    server.routes["/calls/CAL1/recording"] = redirect(
        server.url(f"/hop?Signature={SECRET}", host="cdn.callrail.test"), code=302
    )
    server.routes["/hop"] = redirect("/final.mp3?X-Amz-Signature=abc", code=307)  # relative
    server.routes["/final.mp3"] = audio(body)
    result = fetch(server, server.url("/calls/CAL1/recording", host="recordings.callrail.test"))
    assert result.final_url_host == "cdn.callrail.test"
    assert result.sha256 == hashlib.sha256(body).hexdigest()
    assert [(hit.path, hit.host) for hit in server.hits] == [
        ("/calls/CAL1/recording", f"recordings.callrail.test:{server.port}"),
        ("/hop", f"cdn.callrail.test:{server.port}"),
        ("/final.mp3", f"cdn.callrail.test:{server.port}"),
    ]
    assert server.hits[2].query == "X-Amz-Signature=abc"


@pytest.mark.parametrize(
    ("location", "why"),
    [
        ("http://evil.test:{port}/x.mp3", "plain http"),  # a host on no list
        ("http://unlisted.callrail.test:{port}/x.mp3", "plain http"),
        ("https://evil.test/x.mp3", "allow-list"),
        ("http://2130706433:{port}/x.mp3", "IP-literal"),  # our server, in decimal
        ("http://0x7f.1:{port}/x.mp3", "IP-literal"),  # ... in hex
        ("http://127.1:{port}/x.mp3", "IP-literal"),
        ("http://[::ffff:127.0.0.1]:{port}/x.mp3", "IP-literal"),
        ("http://169.254.169.254/latest/meta-data/", "IP-literal"),
        ("https://internal.callrail.com/x.mp3", "non-public address (10.0.0.7)"),
        ("https://metadata.callrail.com/x.mp3", "non-public address (169.254.169.254)"),
        ("https://cdn.callrail.test:{port}/x.mp3", "allow-list"),  # insecure is http only
        ("http://cdn.callrail.test:1/x.mp3", "plain http"),  # listed name, other port
        ("file:///etc/passwd", "scheme"),
        ("ftp://cdn.callrail.test/x.mp3", "scheme"),
        ("gopher://cdn.callrail.test:70/_x", "scheme"),
        ("http://user:pw@cdn.callrail.test:{port}/x.mp3", "credentials"),
    ],
)
def test_redirects_off_the_list_are_refused_without_being_requested(
    server: LocalServer, location: str, why: str
) -> None:
    server.routes["/start"] = redirect(location.format(port=server.port))
    server.routes["/x.mp3"] = audio(mp3_bytes())
    with pytest.raises(UnsafeUrl) as caught:
        fetch(server, server.url(f"/start?Signature={SECRET}"))
    assert why in str(caught.value)
    assert SECRET not in str(caught.value)
    assert server.paths == ["/start"]  # the redirect target was never fetched


def test_too_many_redirects(server: LocalServer) -> None:
    for n in range(10):
        server.routes[f"/loop{n}"] = redirect(f"/loop{n + 1}", code=301)
    with pytest.raises(TooManyRedirects, match="more than 3 redirects"):
        fetch(server, server.url("/loop0"))
    assert server.paths == ["/loop0", "/loop1", "/loop2", "/loop3"]  # 3 redirects followed


def test_exactly_max_redirects_is_fine_and_zero_means_none(server: LocalServer) -> None:
    server.routes["/r0"] = redirect("/r1")
    server.routes["/r1"] = redirect("/r2")
    server.routes["/r2"] = redirect("/r3.mp3")
    server.routes["/r3.mp3"] = audio(mp3_bytes())
    assert fetch(server, server.url("/r0"), max_redirects=3).extension == "mp3"
    with pytest.raises(TooManyRedirects):
        fetch(server, server.url("/r2"), max_redirects=0)


# --- DNS rebinding -------------------------------------------------------------------


def rebinding_policy(port: int) -> FetchPolicy:
    # The name may be fetched over http at this port, but loopback is NOT exempted: a
    # connection to 127.0.0.1 is allowed only if the checks let an address through.
    return FetchPolicy(
        allowed_hosts=(),
        insecure_hosts=(f"rebind.callrail.test:{port}",),
        connect_timeout=2.0,
        read_timeout=2.0,
        total_timeout=10.0,
    )


@pytest.mark.parametrize(
    "second_answer", [["127.0.0.1"], [PUBLIC, "127.0.0.1"], ["::ffff:127.0.0.1"]]
)
def test_dns_rebinding_after_the_check_never_reaches_the_server(
    server: LocalServer, second_answer: list[str]
) -> None:
    server.routes["/rec.mp3"] = audio(mp3_bytes())
    answers = iter([[PUBLIC], second_answer])  # public for the check, loopback to connect
    resolver = local_dns(rebind_callrail_test=lambda: next(answers))
    with pytest.raises(UnsafeUrl, match="non-public address"):
        download_audio(
            server.url(f"/rec.mp3?Signature={SECRET}", host="rebind.callrail.test"),
            rebinding_policy(server.port),
            io.BytesIO(),
            resolve=resolver,
        )
    assert resolver.lookups == ["rebind.callrail.test", "rebind.callrail.test"]
    assert server.hits == []


def test_rebinding_control_the_same_request_reaches_the_server_once_loopback_is_exempt(
    server: LocalServer,
) -> None:
    # Identical request, but 127.0.0.1:<port> is listed: now it goes through. So what
    # stopped the request above was the connect-time check, not an unreachable server.
    server.routes["/rec.mp3"] = audio(mp3_bytes())
    answers = iter([[PUBLIC], ["127.0.0.1"]])
    resolver = local_dns(rebind_callrail_test=lambda: next(answers))
    policy = FetchPolicy(
        allowed_hosts=(),
        insecure_hosts=(f"rebind.callrail.test:{server.port}", f"127.0.0.1:{server.port}"),
    )
    result = download_audio(
        server.url("/rec.mp3", host="rebind.callrail.test"), policy, io.BytesIO(), resolve=resolver
    )
    assert result.final_url_host == "rebind.callrail.test"
    assert server.paths == ["/rec.mp3"]


# --- size, type, magic bytes -----------------------------------------------------------


def test_oversize_content_length_is_refused_before_reading(server: LocalServer) -> None:
    def huge(h: Handler) -> None:
        # Declare 10 MiB, send a little, then stall: a client that read the body would sit
        # in the read timeout and fail with FetchFailed, not AudioRejected.
        h.head(200, length=10 * 1024 * 1024, Content_Type="audio/mpeg")
        h.wfile.write(mp3_bytes(frames=1))
        h.wfile.flush()
        h.server.state.stopping.wait(10)

    server.routes["/huge.mp3"] = huge
    sink = io.BytesIO()
    started = time.monotonic()
    with pytest.raises(AudioRejected, match="Content-Length 10485760 is over") as caught:
        fetch(server, server.url("/huge.mp3"), sink, max_bytes=1024 * 1024, read_timeout=5.0)
    assert caught.value.reason == "too_large"
    assert time.monotonic() - started < 2
    assert sink.getvalue() == b""


def test_oversize_stream_is_cut_at_the_cap(server: LocalServer) -> None:
    server.routes["/endless.mp3"] = endless(MP3_FRAME * 157)  # ~64 KiB chunks, forever
    sink = io.BytesIO()
    cap = 256 * 1024
    with pytest.raises(AudioRejected, match="over the 262144-byte cap") as caught:
        fetch(server, server.url("/endless.mp3"), sink, max_bytes=cap)
    assert caught.value.reason == "too_large"
    assert 0 < len(sink.getvalue()) <= cap


@pytest.mark.parametrize("content_type", ["text/html", "application/json", "video/mp4", None])
def test_wrong_content_type_is_rejected(server: LocalServer, content_type: str | None) -> None:
    server.routes["/rec"] = audio(mp3_bytes(), content_type)
    sink = io.BytesIO()
    with pytest.raises(AudioRejected, match="is not audio") as caught:
        fetch(server, server.url("/rec"), sink)
    assert caught.value.reason == "content_type"
    assert sink.getvalue() == b""


@pytest.mark.parametrize(
    "body",
    [
        b"<html><body>Access denied</body></html>",
        b'{"error":"not found"}',
        b"\xff\xf1\x50\x80" + bytes(400),  # AAC ADTS, not one of our formats
        b"RIFF\x24\x00\x00\x00AVI LIST" + bytes(100),
        b"\x00",  # shorter than the sniff window
    ],
)
def test_bytes_that_are_not_audio_are_rejected(server: LocalServer, body: bytes) -> None:
    server.routes["/rec.mp3"] = audio(body, "audio/mpeg")
    sink = io.BytesIO()
    with pytest.raises(AudioRejected, match="known audio format") as caught:
        fetch(server, server.url("/rec.mp3"), sink)
    assert caught.value.reason == "magic_bytes"
    assert sink.getvalue() == b""  # nothing unrecognised is ever written


@pytest.mark.parametrize("length", [0, None])
def test_empty_body_is_rejected(server: LocalServer, length: int | None) -> None:
    server.routes["/rec.mp3"] = audio(b"", "audio/mpeg", length=length)
    with pytest.raises(AudioRejected, match="empty body") as caught:
        fetch(server, server.url("/rec.mp3"))
    assert caught.value.reason == "empty_body"


# --- transient failures --------------------------------------------------------------


def test_truncated_body_is_a_transient_failure(server: LocalServer) -> None:
    body = mp3_bytes(frames=2)
    server.routes["/rec.mp3"] = audio(body, length=len(body) + 1000)  # then the socket closes
    with pytest.raises(FetchFailed) as caught:
        fetch(server, server.url(f"/rec.mp3?Signature={SECRET}"))
    assert caught.value.status is None
    assert "RemoteProtocolError" in str(caught.value)
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize(
    ("code", "headers", "retry_after"),
    [
        (500, {}, None),
        (502, {}, None),
        (503, {"Retry_After": "120"}, 120.0),
        (429, {"Retry_After": "30"}, 30.0),
        (429, {}, None),
        (408, {}, None),
    ],
)
def test_server_errors_and_throttling_are_transient(
    server: LocalServer, code: int, headers: dict[str, str], retry_after: float | None
) -> None:
    server.routes["/rec.mp3"] = status(code, **headers)
    with pytest.raises(FetchFailed, match=f"HTTP {code}") as caught:
        fetch(server, server.url(f"/rec.mp3?Signature={SECRET}"))
    assert (caught.value.status, caught.value.retry_after) == (code, retry_after)
    assert SECRET not in str(caught.value)


def test_retry_after_as_an_http_date(server: LocalServer) -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=90), usegmt=True)
    server.routes["/rec.mp3"] = status(429, Retry_After=when)
    with pytest.raises(FetchFailed) as caught:
        fetch(server, server.url("/rec.mp3"))
    assert caught.value.retry_after is not None
    assert 80 <= caught.value.retry_after <= 90


def test_unexpected_status_is_transient(server: LocalServer) -> None:
    server.routes["/rec.mp3"] = status(400)
    with pytest.raises(FetchFailed, match="unexpected HTTP 400") as caught:
        fetch(server, server.url("/rec.mp3"))
    assert caught.value.status == 400


def test_connection_refused_is_transient(server: LocalServer) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago, now closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    policy = FetchPolicy(allowed_hosts=(), insecure_hosts=(f"127.0.0.1:{port}",))
    with pytest.raises(FetchFailed, match="ConnectError") as caught:
        download_audio(f"http://127.0.0.1:{port}/rec.mp3", policy, io.BytesIO())
    assert caught.value.status is None


def test_unresolvable_host_is_transient(server: LocalServer) -> None:
    policy = FetchPolicy(allowed_hosts=("*.callrail.com",))
    with pytest.raises(FetchFailed, match="cannot resolve"):
        download_audio("https://gone.callrail.com/x.mp3", policy, io.BytesIO(), resolve=FakeDns({}))


# --- gone ------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [404, 410, 403, 401])
def test_missing_or_expired_recordings_are_gone(server: LocalServer, code: int) -> None:
    server.routes["/rec.mp3"] = status(code)
    with pytest.raises(RecordingGone) as caught:
        fetch(server, server.url(f"/rec.mp3?Signature={SECRET}&Expires=1"))
    assert caught.value.status == code
    assert f"HTTP {code}" in str(caught.value)
    assert SECRET not in str(caught.value)


# --- deadlines -----------------------------------------------------------------------


def test_a_body_that_drips_past_the_total_deadline_fails(server: LocalServer) -> None:
    # Each chunk arrives well within the read timeout; only the total deadline can stop it.
    server.routes["/slow.mp3"] = drip(mp3_bytes(frames=1), MP3_FRAME, every=0.05)
    sink = io.BytesIO()
    started = time.monotonic()
    with pytest.raises(FetchFailed, match=r"total deadline of 0\.5s exceeded"):
        fetch(server, server.url("/slow.mp3"), sink, read_timeout=2.0, total_timeout=0.5)
    assert 0.5 <= time.monotonic() - started < 2.0
    assert len(sink.getvalue()) > 0  # it was streaming, and was cut off


def test_slow_headers_are_bounded_by_the_total_deadline(server: LocalServer) -> None:
    def silent(h: Handler) -> None:
        h.server.state.stopping.wait(10)  # never answers

    server.routes["/silent.mp3"] = silent
    started = time.monotonic()
    with pytest.raises(FetchFailed, match="timed out"):
        fetch(server, server.url("/silent.mp3"), read_timeout=5.0, total_timeout=0.4)
    assert time.monotonic() - started < 2.0


def test_deadline_uses_the_injected_clock(server: LocalServer) -> None:
    server.routes["/rec.mp3"] = audio(mp3_bytes())
    ticks = iter([0.0, 100.0])  # the deadline has passed by the first request
    with pytest.raises(FetchFailed, match="total deadline of 10s exceeded"):
        download_audio(
            server.url("/rec.mp3"),
            local_policy(server.port, total_timeout=10.0),
            io.BytesIO(),
            resolve=local_dns(),
            clock=lambda: next(ticks),
        )
    assert server.hits == []
