"""What the recording fetcher may fetch: allowed hosts, the local-only exemption and limits.

Two lists, on purpose of different shapes:

- ``allowed_hosts``: the CallRail hosts reachable over https on port 443. An entry is an
  exact host (``app.callrail.com``) or a wildcard (``*.callrail.com``) that matches
  subdomains only, never the bare domain.
- ``insecure_hosts``: exact ``host:port`` pairs that may be fetched over plain http, for the
  local CallRail simulator. Only the caller's local/test configuration sets it. A pair
  always names its port, so no entry can open a whole host or a whole scheme by accident.
  An IP entry must be a loopback address (``127.0.0.1:8099``, ``[::1]:8099``). That address
  and port are then exempt from the private-address rule, and nothing else is. A hostname
  entry (``recordings.callrail.test:8099``) only permits http to that origin; if the name
  resolves to loopback, the loopback ``ip:port`` pair must be listed as well. So a name
  that suddenly resolves to loopback (DNS rebinding) is still refused.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

import idna

MiB = 1024 * 1024
DEFAULT_MAX_BYTES = 50 * MiB

# RFC 1123 labels; underscores are tolerated because some storage hosts use them.
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_HOSTNAME = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")
# A last label that is a number (decimal, octal or 0x-hex) makes the whole host an IPv4
# address for inet_aton and for WHATWG URL parsers (127.1, 0x7f.1, 2130706433): never a name.
_NUMERIC_LABEL = re.compile(r"^(?:0x[0-9a-f]*|[0-9]+)$")


def normalize_host(host: str) -> str:
    """Lower-case ASCII form of a host: one trailing dot removed, IDNA names in punycode.

    Raises ValueError for a host that cannot be encoded.
    """
    host = host.strip().lower()
    if host.endswith("."):
        host = host[:-1]
    if not host.isascii():
        # The same IDNA 2008 encoder httpx applies to URL hosts, so both sides compare equal.
        try:
            host = idna.encode(host).decode("ascii")
        except idna.IDNAError as error:
            raise ValueError(f"invalid IDNA host {host!r}") from error
    return host


def parse_ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address when ``host`` is a canonical IP literal (brackets allowed), else None."""
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def looks_like_ip(host: str) -> bool:
    """True for IP literals in any form a resolver might accept: 127.1, 0x7f.1, 2130706433."""
    if parse_ip(host) is not None or ":" in host:
        return True
    labels = host.rstrip(".").split(".")
    return bool(_NUMERIC_LABEL.match(labels[-1]))


def is_hostname(host: str) -> bool:
    """A syntactically valid DNS name (already normalized) that is not an IP in disguise."""
    return len(host) <= 253 and bool(_HOSTNAME.match(host)) and not looks_like_ip(host)


def format_origin(host: str, port: int) -> str:
    """``host:port``, with IPv6 addresses bracketed: the form insecure_hosts entries take."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _allowed_entry(entry: str) -> str:
    wildcard = entry.strip().startswith("*.")
    host = normalize_host(entry.strip()[2:] if wildcard else entry)
    if not is_hostname(host):
        raise ValueError(f"allowed host {entry!r} is not a host name (no IPs, ports or paths)")
    if wildcard and "." not in host:
        raise ValueError(f"wildcard {entry!r} is too broad: it needs at least two labels")
    return f"*.{host}" if wildcard else host


def _insecure_entry(entry: str) -> str:
    host, sep, port_text = entry.strip().rpartition(":")
    if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"insecure host {entry!r} must be an explicit host:port pair")
    port = int(port_text)
    if ":" in host and not host.startswith("["):
        raise ValueError(f"insecure host {entry!r} must be host:port, IPv6 in brackets")
    address = parse_ip(host)
    if address is not None:
        if not address.is_loopback:
            raise ValueError(f"insecure host {entry!r}: only loopback addresses may be listed")
        return format_origin(str(address), port)
    name = normalize_host(host)
    if not is_hostname(name):
        raise ValueError(f"insecure host {entry!r} is not a canonical host name or loopback IP")
    return format_origin(name, port)


def parse_host_list(value: str) -> tuple[str, ...]:
    """Split a comma-separated setting into its non-empty, stripped entries."""
    return tuple(part.strip() for part in value.split(",") if part.strip())


@dataclass(frozen=True)
class FetchPolicy:
    """Where recordings may come from and how much time and space a download may take.

    Entries are validated and normalized on construction; a bad entry raises ValueError,
    so a misconfigured deployment fails at start-up instead of fetching something unsafe.
    """

    allowed_hosts: tuple[str, ...]
    insecure_hosts: tuple[str, ...] = ()
    max_bytes: int = DEFAULT_MAX_BYTES
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    total_timeout: float = 120.0
    max_redirects: int = 3

    def __post_init__(self) -> None:
        if isinstance(self.allowed_hosts, str) or isinstance(self.insecure_hosts, str):
            # A bare string would be iterated character by character.
            raise TypeError("host lists are tuples; use FetchPolicy.from_strings for CSV")
        object.__setattr__(
            self, "allowed_hosts", tuple(_allowed_entry(e) for e in self.allowed_hosts)
        )
        object.__setattr__(
            self, "insecure_hosts", tuple(_insecure_entry(e) for e in self.insecure_hosts)
        )
        if self.max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        if min(self.connect_timeout, self.read_timeout, self.total_timeout) <= 0:
            raise ValueError("timeouts must be positive")
        if self.max_redirects < 0:
            raise ValueError("max_redirects cannot be negative")

    @classmethod
    def from_strings(
        cls,
        allowed_hosts: str,
        insecure_hosts: str = "",
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        total_timeout: float = 120.0,
        max_redirects: int = 3,
    ) -> FetchPolicy:
        """Build a policy from comma-separated settings, e.g. environment variables."""
        return cls(
            allowed_hosts=parse_host_list(allowed_hosts),
            insecure_hosts=parse_host_list(insecure_hosts),
            max_bytes=max_bytes,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            total_timeout=total_timeout,
            max_redirects=max_redirects,
        )

    def host_allowed(self, host: str) -> bool:
        """Whether a normalized host is on the https allow-list."""
        for entry in self.allowed_hosts:
            if entry.startswith("*."):
                # Subdomains only: "*.callrail.com" matches "a.callrail.com", not
                # "callrail.com" and not "evilcallrail.com".
                if host.endswith(entry[1:]):
                    return True
            elif host == entry:
                return True
        return False

    def insecure_origin(self, host: str, port: int) -> bool:
        """Whether ``http://host:port`` is an explicitly listed local origin."""
        return format_origin(host, port) in self.insecure_hosts

    def exempt_address(self, address: str, port: int) -> bool:
        """Whether a (loopback) address:port was listed, exempting it from the public-only rule."""
        ip = parse_ip(address)
        return ip is not None and format_origin(str(ip), port) in self.insecure_hosts
