"""The SSRF guard: whether a recording URL may be fetched, and which addresses it may reach.

A recording URL comes from CallRail's API, and a redirect's Location header comes from
whatever host answered, so neither is trusted. ``check_url`` refuses, with ``UnsafeUrl``:

- schemes other than https (http only for an exact ``insecure_hosts`` origin);
- userinfo (``https://user@host``), which some parsers read as a different host;
- IP-literal hosts in every spelling a resolver accepts (``127.0.0.1``, ``[::1]``,
  ``2130706433``, ``0x7f.1``, ``127.1``), except a listed loopback origin;
- hosts off the allow-list, and https ports other than 443;
- hosts any of whose addresses is not public: loopback, private, link-local (including the
  169.254.169.254 metadata server), CGNAT, multicast, reserved, unspecified, documentation,
  IPv6 ULA/link-local/loopback, and IPv4-mapped IPv6 forms of those.

Resolution goes through an injectable resolver, so tests need no DNS. The fetcher's network
backend runs ``resolve_addresses`` again for every connection it opens and connects only to
the addresses it has just checked (see ``callpipe.recordings.pinning``).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import httpx

from callpipe.recordings.policy import (
    FetchPolicy,
    format_origin,
    is_hostname,
    looks_like_ip,
    normalize_host,
    parse_ip,
)

Resolver = Callable[[str], Sequence[str]]
"""Maps a host name to its IP addresses (strings). Raises OSError when it cannot."""

_DEFAULT_PORTS = {"http": 80, "https": 443}

# Not reachable from the public Internet, or not unicast: never a recording server.
_BLOCKED_V4 = tuple(
    ipaddress.IPv4Network(network)
    for network in (
        "0.0.0.0/8",  # "this network", including the unspecified 0.0.0.0
        "10.0.0.0/8",
        "100.64.0.0/10",  # carrier-grade NAT
        "127.0.0.0/8",
        "169.254.0.0/16",  # link-local, including the 169.254.169.254 metadata server
        "172.16.0.0/12",
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # documentation
        "192.88.99.0/24",  # 6to4 relay anycast
        "192.168.0.0/16",
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # documentation
        "203.0.113.0/24",  # documentation
        "224.0.0.0/4",  # multicast (Python's is_global says True for it)
        "240.0.0.0/4",  # reserved, including 255.255.255.255
    )
)
# Only global unicast IPv6 (2000::/3) is accepted; everything else (::1, ::, fc00::/7,
# fe80::/10, ff00::/8, 64:ff9b::/96 NAT64, ...) falls outside it.
_GLOBAL_UNICAST_V6 = ipaddress.IPv6Network("2000::/3")
_BLOCKED_V6 = tuple(
    ipaddress.IPv6Network(network)
    for network in (
        "2001::/23",  # IETF protocol assignments, including Teredo (2001::/32)
        "2001:db8::/32",  # documentation
        "2002::/16",  # 6to4: it embeds an IPv4 address we would have to re-check
        "3fff::/20",  # documentation
    )
)


class UnsafeUrl(ValueError):
    """The URL, or a redirect, points somewhere we never fetch from. Permanent: never retry."""

    reason = "unsafe_url"


class HostUnresolved(OSError):
    """The host did not resolve. Transient: DNS may answer on the next attempt."""


@dataclass(frozen=True)
class ResolvedTarget:
    """A URL that passed the guard, with the addresses its host resolved to at check time."""

    url: httpx.URL = field(repr=False)  # the query string of a signed URL is a credential
    scheme: str
    host: str  # lower-case ASCII, no trailing dot
    port: int
    addresses: tuple[str, ...]
    insecure: bool  # plain http to a listed local origin

    @property
    def redacted(self) -> str:
        return redact_url(self.url)


def redact_url(url: str | httpx.URL) -> str:
    """The URL without userinfo, query or fragment, fit for logs and error messages."""
    try:
        parsed = url if isinstance(url, httpx.URL) else httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        return "<unparseable URL>"
    host = parsed.raw_host.decode("ascii", "replace")
    origin = f"[{host}]" if ":" in host else host
    if parsed.port is not None:
        origin = format_origin(host, parsed.port)
    path = parsed.raw_path.split(b"?", 1)[0].decode("ascii", "replace")
    if len(path) > 120:
        path = path[:120] + "..."
    return f"{parsed.scheme}://{origin}{path}" if host else f"{parsed.scheme}:{path}"


def system_resolve(host: str) -> list[str]:
    """The platform resolver (getaddrinfo), addresses in its preferred order, deduplicated."""
    infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def is_public_address(address: str) -> bool:
    """Whether an address is public unicast, the only kind a recording may be fetched from."""
    ip = parse_ip(address)
    if ip is None:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:  # ::ffff:127.0.0.1 reaches 127.0.0.1
            return _public_v4(ip.ipv4_mapped)
        return (
            ip in _GLOBAL_UNICAST_V6
            and not any(ip in network for network in _BLOCKED_V6)
            and ip.is_global
        )
    return _public_v4(ip)


def _public_v4(ip: ipaddress.IPv4Address) -> bool:
    return not any(ip in network for network in _BLOCKED_V4) and ip.is_global


def resolve_addresses(
    host: str, port: int, policy: FetchPolicy, resolve: Resolver
) -> tuple[str, ...]:
    """Every address of ``host``, all checked; refuses the host if any one is not allowed.

    All of them, not just the first: the connection may use any, and a name that mixes a
    public and a private answer is an attack, not a misconfiguration.
    """
    ip = parse_ip(host)
    if ip is not None:
        candidates: tuple[str, ...] = (str(ip),)
    else:
        try:
            candidates = tuple(dict.fromkeys(resolve(host)))
        except (OSError, UnicodeError) as error:
            raise HostUnresolved(f"cannot resolve {host}: {error.__class__.__name__}") from error
        if not candidates:
            raise HostUnresolved(f"{host} has no addresses")
    for address in candidates:
        if not (is_public_address(address) or policy.exempt_address(address, port)):
            raise UnsafeUrl(f"{host} resolves to a non-public address ({address})")
    return candidates


def check_url(url: str, policy: FetchPolicy, resolve: Resolver = system_resolve) -> ResolvedTarget:
    """Validate ``url`` against ``policy`` and resolve its host; raise UnsafeUrl if refused.

    Raises HostUnresolved (transient) when the resolver cannot answer. Error messages never
    contain the query string.
    """
    if any(char.isspace() or ord(char) < 32 or ord(char) == 127 for char in url):
        raise UnsafeUrl("URL contains whitespace or control characters")
    try:
        parsed = httpx.URL(url)  # the same parser the request is sent with: no differential
    except (httpx.InvalidURL, ValueError):
        raise UnsafeUrl("malformed URL") from None
    shown = redact_url(parsed)
    scheme = parsed.scheme
    if scheme not in _DEFAULT_PORTS:
        raise UnsafeUrl(f"scheme {scheme!r} is not allowed")
    if parsed.userinfo:
        raise UnsafeUrl(f"credentials in the URL are not allowed: {shown}")
    try:
        host = normalize_host(parsed.raw_host.decode("ascii"))
    except ValueError:
        raise UnsafeUrl(f"invalid host: {shown}") from None
    if not host:
        raise UnsafeUrl(f"URL has no host: {shown}")
    port = parsed.port if parsed.port is not None else _DEFAULT_PORTS[scheme]

    insecure = scheme == "http"
    if looks_like_ip(host):
        ip = parse_ip(host)
        # Only a listed loopback origin, in canonical form, over http; 2130706433 and
        # 0x7f.1 never match because they are not canonical.
        if not (insecure and ip is not None and policy.insecure_origin(str(ip), port)):
            raise UnsafeUrl(f"IP-literal hosts are not allowed: {shown}")
        host = str(ip)
    elif not is_hostname(host):
        raise UnsafeUrl(f"invalid host name: {shown}")
    elif insecure:
        if not policy.insecure_origin(host, port):
            raise UnsafeUrl(f"plain http is only allowed for listed local origins: {shown}")
    else:
        if not policy.host_allowed(host):
            raise UnsafeUrl(f"host {host} is not on the allow-list: {shown}")
        if port != 443:
            raise UnsafeUrl(f"port {port} is not allowed: {shown}")

    addresses = resolve_addresses(host, port, policy, resolve)
    return ResolvedTarget(
        url=parsed, scheme=scheme, host=host, port=port, addresses=addresses, insecure=insecure
    )
