"""An HTTP client whose every TCP connection goes to an address the guard has just checked.

Checking a URL's host and then letting the HTTP stack resolve it again leaves a gap: a
hostile DNS server can answer a public address to the check and 127.0.0.1 or
169.254.169.254 to the connection (DNS rebinding). So resolution moves into the transport:
``PinnedBackend`` is the httpcore network backend, and its ``connect_tcp`` resolves the host
itself, validates every address with the guard's rules (``resolve_addresses``) and opens
the socket to one of those validated IPs. Nothing else resolves the name afterwards, and the
HTTP layer above is unchanged: the Host header, TLS SNI and certificate verification all
still use the host name, because httpcore starts TLS on our stream with the URL's host.

httpx has no public hook for a network backend, so ``PinnedTransport`` builds the standard
``HTTPTransport`` and swaps its connection pool for one using ``PinnedBackend``. It checks
the attribute it replaces, so an httpx release that moves it fails loudly at construction
instead of silently fetching without pinning. Proxies are off (``trust_env=False``): a
proxy would resolve the name on its side, out of our reach.
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import Iterable

import httpcore
import httpx

from callpipe.recordings.guard import Resolver, UnsafeUrl, resolve_addresses, system_resolve
from callpipe.recordings.policy import FetchPolicy, normalize_host

USER_AGENT = "callpipe-recording-fetcher/1"


class PinnedBackend(httpcore.NetworkBackend):
    """Connects only to addresses that pass the guard, resolved here and nowhere else."""

    def __init__(self, policy: FetchPolicy, resolve: Resolver = system_resolve) -> None:
        self._policy = policy
        self._resolve = resolve
        self._sockets = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        # Raises UnsafeUrl (which httpx lets through unchanged) before any socket exists.
        addresses = resolve_addresses(normalize_host(host), port, self._policy, self._resolve)
        failure: Exception | None = None
        for address in addresses:
            try:
                return self._sockets.connect_tcp(
                    address,
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as error:
                failure = error  # try the next checked address, as getaddrinfo users do
        assert failure is not None  # resolve_addresses never returns an empty tuple
        raise failure

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        raise UnsafeUrl("unix sockets are never used to fetch recordings")

    def sleep(self, seconds: float) -> None:
        self._sockets.sleep(seconds)


class PinnedTransport(httpx.HTTPTransport):
    """``httpx.HTTPTransport`` whose connection pool connects through ``PinnedBackend``."""

    def __init__(
        self,
        policy: FetchPolicy,
        resolve: Resolver = system_resolve,
        *,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        ssl_context = _default_ssl_context() if verify is True else _ssl_context(verify)
        super().__init__(verify=ssl_context, trust_env=False)
        if not isinstance(getattr(self, "_pool", None), httpcore.ConnectionPool):
            raise RuntimeError("httpx.HTTPTransport internals changed: cannot pin connections")
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context,
            max_connections=10,
            max_keepalive_connections=5,
            keepalive_expiry=5.0,
            http1=True,
            http2=False,
            network_backend=PinnedBackend(policy, resolve),
        )


@functools.cache
def _default_ssl_context() -> ssl.SSLContext:
    # Loading the CA bundle takes tens of milliseconds; one verifying context serves every
    # connection (SSLContext is thread-safe once configured).
    return httpx.create_ssl_context(trust_env=False)


def _ssl_context(verify: ssl.SSLContext | bool) -> ssl.SSLContext:
    return httpx.create_ssl_context(verify=verify, trust_env=False)


def pinned_client(
    policy: FetchPolicy,
    resolve: Resolver = system_resolve,
    *,
    verify: ssl.SSLContext | bool = True,
) -> httpx.Client:
    """A client for ``download_audio`` that may be kept and reused across downloads.

    It never follows redirects by itself (the fetcher re-checks each hop) and ignores proxy
    environment variables. ``verify`` exists for tests with a private CA; keep the default.
    """
    return httpx.Client(
        transport=PinnedTransport(policy, resolve, verify=verify),
        follow_redirects=False,
        trust_env=False,
        timeout=httpx.Timeout(policy.read_timeout, connect=policy.connect_timeout),
        headers={"User-Agent": USER_AGENT},
    )
