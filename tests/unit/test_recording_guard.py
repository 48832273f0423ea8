"""The recording fetcher's SSRF guard, its policy and its audio sniffing, with no network.

Every host is resolved by a fake resolver, so nothing here touches DNS or a socket.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence

import pytest

from callpipe.recordings import (
    FetchPolicy,
    HostUnresolved,
    PinnedBackend,
    UnsafeUrl,
    check_url,
    is_public_address,
    redact_url,
    sniff_audio,
)

PUBLIC = "34.120.1.2"
SIM_PORT = 8099


class FakeDns:
    """A resolver from a dict; records every lookup. Unknown names fail like NXDOMAIN."""

    def __init__(self, answers: dict[str, Sequence[str]]) -> None:
        self.answers = answers
        self.lookups: list[str] = []

    def __call__(self, host: str) -> Sequence[str]:
        self.lookups.append(host)
        if host not in self.answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return self.answers[host]


def dns(**extra: Sequence[str]) -> FakeDns:
    answers: dict[str, Sequence[str]] = {
        "app.callrail.com": [PUBLIC],
        "a.recordings.callrail.com": [PUBLIC],
        "x.y.recordings.callrail.com": [PUBLIC],
        "recordings.callrail.com": [PUBLIC],
        "evilrecordings.callrail.com": [PUBLIC],
        "xn--bcher-kva.example": [PUBLIC],
        "sim.callrail.test": ["127.0.0.1"],
        "evil.example": [PUBLIC],
    }
    answers.update({host.replace("_", "."): value for host, value in extra.items()})
    return FakeDns(answers)


POLICY = FetchPolicy(
    allowed_hosts=("app.callrail.com", "*.recordings.callrail.com", "bücher.example"),
    insecure_hosts=(f"127.0.0.1:{SIM_PORT}", f"sim.callrail.test:{SIM_PORT}"),
)
PRODUCTION = FetchPolicy(allowed_hosts=("app.callrail.com", "*.recordings.callrail.com"))


def refused(url: str, policy: FetchPolicy = POLICY, resolver: FakeDns | None = None) -> str:
    with pytest.raises(UnsafeUrl) as caught:
        check_url(url, policy, resolver or dns())
    return str(caught.value)


# --- accepted URLs ---------------------------------------------------------------------


def test_allowed_https_host_is_resolved_and_keeps_its_query() -> None:
    target = check_url("https://app.callrail.com/calls/CAL1/recording?sig=s3cr3t", POLICY, dns())
    assert (target.scheme, target.host, target.port) == ("https", "app.callrail.com", 443)
    assert target.addresses == (PUBLIC,)
    assert not target.insecure
    assert target.url.query == b"sig=s3cr3t"  # the request is sent with it...
    assert "s3cr3t" not in repr(target)  # ...but it is never shown
    assert target.redacted == "https://app.callrail.com/calls/CAL1/recording"


@pytest.mark.parametrize(
    "url",
    [
        "https://APP.CallRail.COM/x.mp3",
        "https://app.callrail.com./x.mp3",  # absolute name with the trailing dot
        "https://app.callrail.com:443/x.mp3",  # the default port, written out
    ],
)
def test_host_matching_is_case_insensitive_and_handles_trailing_dot(url: str) -> None:
    assert check_url(url, POLICY, dns()).host == "app.callrail.com"


def test_idna_hosts_match_in_unicode_or_punycode() -> None:
    assert check_url("https://BÜCHER.example/a", POLICY, dns()).host == "xn--bcher-kva.example"
    assert check_url("https://xn--bcher-kva.example/a", POLICY, dns()).host == (
        "xn--bcher-kva.example"
    )
    # A look-alike of an allowed domain (Cyrillic U+0430 for the "a") is a different name.
    assert "allow-list" in refused("https://\u0430pp.callrail.com/x")


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("a.recordings.callrail.com", True),
        ("x.y.recordings.callrail.com", True),  # any depth of subdomain
        ("recordings.callrail.com", False),  # a wildcard never matches the bare domain
        ("evilrecordings.callrail.com", False),  # nor a name that merely ends the same
        ("a.recordings.callrail.com.evil.example", False),
        ("app.callrail.com.evil.example", False),
        ("callrail.com", False),
        ("api.callrail.com", False),  # exact entries are exact
        ("evil.example", False),
    ],
)
def test_wildcard_entries_match_subdomains_only(host: str, allowed: bool) -> None:
    resolver = dns(**{host.replace(".", "_"): [PUBLIC]})
    if allowed:
        assert check_url(f"https://{host}/x.mp3", POLICY, resolver).host == host
    else:
        assert "allow-list" in refused(f"https://{host}/x.mp3", resolver=resolver)


# --- schemes, userinfo, ports ----------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "file://app.callrail.com/etc/passwd",
        "ftp://app.callrail.com/x.mp3",
        "gopher://app.callrail.com:70/_GET%20/",
        "data:audio/mpeg;base64,SUQzBAAAAAAAAA==",
        "javascript:alert(1)",
        "ws://app.callrail.com/x",
        "//app.callrail.com/x.mp3",  # scheme-relative
        "app.callrail.com/x.mp3",
    ],
)
def test_other_schemes_are_refused(url: str) -> None:
    assert "scheme" in refused(url)


def test_plain_http_to_an_allowed_host_is_refused() -> None:
    assert "plain http" in refused("http://app.callrail.com/x.mp3")


@pytest.mark.parametrize(
    "url",
    [
        "https://user:pw@app.callrail.com/x.mp3",
        "https://user@app.callrail.com/x.mp3",
        "https://app.callrail.com@evil.example/x.mp3",  # the host is evil.example
        "https://app.callrail.com\\@evil.example/x.mp3",  # backslash confusion
        "https://:@app.callrail.com/x.mp3",
    ],
)
def test_userinfo_is_refused(url: str) -> None:
    assert "credentials" in refused(url)


@pytest.mark.parametrize("port", [80, 0, 8443, 8080, SIM_PORT, 65535])
def test_https_only_on_port_443(port: int) -> None:
    assert f"port {port}" in refused(f"https://app.callrail.com:{port}/x.mp3")


@pytest.mark.parametrize(
    "url",
    [
        "https://app.callrail.com/x y.mp3",
        "https://app.callrail.com/x\n.mp3",
        "https://app.callrail.com\t/x.mp3",
        " https://app.callrail.com/x.mp3",
        "https://app.callrail.com/x\x00.mp3",
    ],
)
def test_whitespace_and_control_characters_are_refused(url: str) -> None:
    refused(url)


@pytest.mark.parametrize(
    "url",
    [
        "https://app.callrail.com:99999/x",
        "https://[::1/x",
        "https://0177.0.0.1/x",  # octal dotted quad: httpx calls it invalid
        "https://app.callrail.com:port/x",
    ],
)
def test_malformed_urls_are_refused(url: str) -> None:
    refused(url)


# --- IP literals -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        PUBLIC,  # even a public IP: recordings are fetched by name only
        "169.254.169.254",  # cloud metadata
        "10.0.0.1",
        "0.0.0.0",  # noqa: S104 (an address under test, nothing binds to it)
        "2130706433",  # 127.0.0.1 as one decimal number
        "017700000001",  # ... as one octal number
        "0x7f000001",  # ... as one hex number
        "0x7f.1",  # ... in hex, abbreviated
        "0x7f.0x0.0x0.0x1",
        "127.1",  # abbreviated dotted form
        "127.0.1",
        "0xa9fea9fe",  # 169.254.169.254 in hex
        "2852039166",  # 169.254.169.254 in decimal
        "[::1]",
        "[::]",
        "[::ffff:127.0.0.1]",  # IPv4-mapped loopback
        "[::ffff:7f00:1]",
        "[::ffff:169.254.169.254]",
        "[fe80::1%25eth0]",  # link-local with a zone
        "[2607:f8b0:4004:800::200e]",  # a public IPv6 literal, still a literal
        "[64:ff9b::7f00:1]",  # NAT64 of 127.0.0.1
    ],
)
@pytest.mark.parametrize("scheme", ["https", "http"])
def test_ip_literal_hosts_are_refused_in_every_encoding(host: str, scheme: str) -> None:
    resolver = dns()
    assert "IP-literal" in refused(f"{scheme}://{host}/x.mp3", resolver=resolver)
    assert resolver.lookups == []  # refused before any resolution


@pytest.mark.parametrize(
    "host", ["2130706433", "0x7f.1", "127.1", "0x7f000001", "[::ffff:127.0.0.1]", "127.0.0.2"]
)
def test_a_listed_loopback_origin_does_not_admit_other_spellings(host: str) -> None:
    # 127.0.0.1:8099 is insecure-listed; the same address in another form is still refused.
    assert "IP-literal" in refused(f"http://{host}:{SIM_PORT}/x.mp3")


def test_ip_literals_cannot_be_put_on_the_allow_list() -> None:
    for entry in ("127.0.0.1", "169.254.169.254", "2130706433", "[::1]", "::1", "0x7f.1"):
        with pytest.raises(ValueError, match="not a host name"):
            FetchPolicy(allowed_hosts=(entry,))


# --- insecure (local simulator) origins -----------------------------------------------


def test_listed_loopback_origin_is_allowed_over_http_only() -> None:
    target = check_url(f"http://127.0.0.1:{SIM_PORT}/rec.mp3?sig=1", POLICY, dns())
    assert (target.host, target.port, target.insecure) == ("127.0.0.1", SIM_PORT, True)
    assert target.addresses == ("127.0.0.1",)
    # https to the same origin is not what was listed.
    assert "IP-literal" in refused(f"https://127.0.0.1:{SIM_PORT}/rec.mp3")


def test_listed_hostname_origin_needs_its_exact_port_and_http() -> None:
    target = check_url(f"http://sim.callrail.test:{SIM_PORT}/rec.mp3", POLICY, dns())
    assert (target.host, target.addresses, target.insecure) == (
        "sim.callrail.test",
        ("127.0.0.1",),
        True,
    )
    assert "plain http" in refused(f"http://sim.callrail.test:{SIM_PORT + 1}/rec.mp3")
    assert "plain http" in refused("http://sim.callrail.test/rec.mp3")
    assert "allow-list" in refused(f"https://sim.callrail.test:{SIM_PORT}/rec.mp3")


def test_without_insecure_entries_no_http_and_no_loopback() -> None:
    resolver = dns()
    assert "IP-literal" in refused(f"http://127.0.0.1:{SIM_PORT}/x", PRODUCTION, resolver)
    assert "plain http" in refused(f"http://sim.callrail.test:{SIM_PORT}/x", PRODUCTION, resolver)
    assert "plain http" in refused("http://localhost/x", PRODUCTION, resolver)


def test_a_hostname_entry_does_not_exempt_the_address_it_resolves_to() -> None:
    # Only the name is listed, so its loopback answer is refused: listing a name can never
    # open loopback by itself (this is what stops DNS rebinding of a listed name).
    policy = FetchPolicy(allowed_hosts=(), insecure_hosts=(f"sim.callrail.test:{SIM_PORT}",))
    message = refused(f"http://sim.callrail.test:{SIM_PORT}/x", policy)
    assert "non-public address (127.0.0.1)" in message


def test_the_address_exemption_is_for_the_listed_port_only() -> None:
    policy = FetchPolicy(
        allowed_hosts=(),
        insecure_hosts=("127.0.0.1:1", f"sim.callrail.test:{SIM_PORT}"),
    )
    assert "non-public" in refused(f"http://sim.callrail.test:{SIM_PORT}/x", policy)


@pytest.mark.parametrize(
    "entry",
    [
        "127.0.0.1",  # no port: would open every port
        "sim.callrail.test",
        "127.0.0.1:0",
        "127.0.0.1:65536",
        "127.0.0.1:http",
        "10.0.0.5:80",  # only loopback addresses may be exempted
        "169.254.169.254:80",
        "192.168.1.10:8099",
        "[fd00::1]:8099",
        "::1:8099",  # IPv6 without brackets is ambiguous
        "127.1:8099",  # non-canonical address
        "2130706433:8099",
        "*.callrail.test:8099",
        "http://127.0.0.1:8099",
        ":8099",
    ],
)
def test_insecure_entries_must_be_explicit_loopback_or_name_with_port(entry: str) -> None:
    with pytest.raises(ValueError, match="insecure host"):
        FetchPolicy(allowed_hosts=(), insecure_hosts=(entry,))


def test_insecure_entries_are_normalized() -> None:
    policy = FetchPolicy(
        allowed_hosts=(), insecure_hosts=("[::1]:8099", " Sim.CallRail.Test.:8099 ", "127.0.0.1:1")
    )
    assert policy.insecure_hosts == ("[::1]:8099", "sim.callrail.test:8099", "127.0.0.1:1")


# --- policy construction -------------------------------------------------------------


@pytest.mark.parametrize(
    "entry", ["*", "*.com", "app.callrail.com:443", "https://app.callrail.com", "a.*.com", ""]
)
def test_bad_allow_list_entries_are_rejected(entry: str) -> None:
    with pytest.raises(ValueError, match=r"allowed host|wildcard"):
        FetchPolicy(allowed_hosts=(entry,))


def test_policy_from_comma_separated_strings() -> None:
    policy = FetchPolicy.from_strings(
        " App.CallRail.com , *.recordings.callrail.com,,",
        f"127.0.0.1:{SIM_PORT}, sim.callrail.test:{SIM_PORT}",
        max_bytes=1024,
        total_timeout=9.0,
    )
    assert policy.allowed_hosts == ("app.callrail.com", "*.recordings.callrail.com")
    assert policy.insecure_hosts == (f"127.0.0.1:{SIM_PORT}", f"sim.callrail.test:{SIM_PORT}")
    assert (policy.max_bytes, policy.total_timeout, policy.max_redirects) == (1024, 9.0, 3)
    assert FetchPolicy.from_strings("app.callrail.com").insecure_hosts == ()


def test_policy_rejects_a_bare_string_and_bad_limits() -> None:
    with pytest.raises(TypeError):
        FetchPolicy(allowed_hosts="app.callrail.com")  # type: ignore[arg-type]
    for limits in ({"max_bytes": 0}, {"read_timeout": 0.0}, {"max_redirects": -1}):
        with pytest.raises(ValueError, match=r"must be positive|cannot be negative"):
            FetchPolicy(allowed_hosts=(), **limits)  # type: ignore[arg-type]


def test_policy_defaults() -> None:
    policy = FetchPolicy(allowed_hosts=("app.callrail.com",))
    assert policy.max_bytes == 50 * 1024 * 1024
    assert policy.max_redirects == 3
    assert policy.insecure_hosts == ()


# --- resolution ------------------------------------------------------------------------

NON_PUBLIC = [
    "127.0.0.1",
    "127.255.255.254",
    "10.1.2.3",
    "172.16.0.1",
    "172.31.255.255",
    "192.168.1.1",
    "169.254.169.254",  # metadata server
    "169.254.0.1",
    "100.64.0.1",  # CGNAT
    "100.127.255.255",
    "0.0.0.0",  # noqa: S104 (an address under test, nothing binds to it)
    "0.1.2.3",
    "224.0.0.1",  # multicast
    "239.255.255.250",
    "255.255.255.255",
    "240.0.0.1",  # reserved
    "192.0.0.8",
    "192.0.2.1",  # documentation
    "198.18.0.1",  # benchmarking
    "203.0.113.9",
    "::1",
    "::",
    "fc00::1",  # unique local
    "fd12:3456:789a::1",
    "fe80::1",  # link-local
    "fe80::1%eth0",
    "ff02::1",  # multicast
    "::ffff:127.0.0.1",  # IPv4-mapped
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",
    "::127.0.0.1",  # IPv4-compatible (deprecated)
    "64:ff9b::7f00:1",  # NAT64
    "2002:7f00:1::1",  # 6to4 of 127.0.0.1
    "2001:db8::1",  # documentation
    "2001::1",  # Teredo
    "not-an-address",
]


@pytest.mark.parametrize("address", NON_PUBLIC)
def test_hosts_resolving_to_non_public_addresses_are_refused(address: str) -> None:
    assert not is_public_address(address)
    resolver = dns(app_callrail_com=[address])
    assert "non-public address" in refused("https://app.callrail.com/x.mp3", resolver=resolver)


@pytest.mark.parametrize(
    "address",
    [PUBLIC, "8.8.8.8", "172.15.255.255", "172.32.0.1", "100.128.0.1", "2607:f8b0:4004:800::200e"],
)
def test_public_addresses_are_accepted(address: str) -> None:
    assert is_public_address(address)
    target = check_url("https://app.callrail.com/x", POLICY, dns(app_callrail_com=[address]))
    assert target.addresses == (address,)


def test_ipv4_mapped_public_address_is_accepted() -> None:
    assert is_public_address("::ffff:8.8.8.8")


def test_one_private_answer_among_public_ones_refuses_the_host() -> None:
    resolver = dns(app_callrail_com=[PUBLIC, "8.8.8.8", "10.0.0.7"])
    assert "(10.0.0.7)" in refused("https://app.callrail.com/x.mp3", resolver=resolver)


def test_resolution_failures_are_host_unresolved_not_unsafe() -> None:
    with pytest.raises(HostUnresolved):
        check_url("https://a.recordings.callrail.com/x", POLICY, FakeDns({}))
    with pytest.raises(HostUnresolved):
        check_url("https://app.callrail.com/x", POLICY, dns(app_callrail_com=[]))


def test_refused_hosts_are_never_resolved() -> None:
    resolver = dns()
    refused("https://evil.example/x.mp3", resolver=resolver)
    refused("http://app.callrail.com/x.mp3", resolver=resolver)
    refused("https://app.callrail.com:8443/x.mp3", resolver=resolver)
    assert resolver.lookups == []


# --- the connection-time check (DNS rebinding) -----------------------------------------


def test_pinned_backend_refuses_a_name_that_rebinds_before_any_socket_opens() -> None:
    answers = iter([[PUBLIC], ["127.0.0.1"]])  # public for the check, loopback afterwards

    def rebinding(host: str) -> Sequence[str]:
        return next(answers)

    policy = FetchPolicy(allowed_hosts=("app.callrail.com",))
    assert check_url("https://app.callrail.com/x", policy, rebinding).addresses == (PUBLIC,)
    with pytest.raises(UnsafeUrl, match=r"non-public address \(127\.0\.0\.1\)"):
        PinnedBackend(policy, rebinding).connect_tcp("app.callrail.com", 443, timeout=0.1)


def test_pinned_backend_never_uses_unix_sockets() -> None:
    with pytest.raises(UnsafeUrl):
        PinnedBackend(POLICY, dns()).connect_unix_socket("/var/run/docker.sock")


# --- redaction -----------------------------------------------------------------------


def test_redact_url_drops_userinfo_query_and_fragment() -> None:
    assert (
        redact_url("https://u:p@App.CallRail.com:8443/a/b.mp3?Signature=SECRET&x=1#frag")
        == "https://app.callrail.com:8443/a/b.mp3"
    )
    assert redact_url("https://[::1]/x?sig=SECRET") == "https://[::1]/x"
    assert redact_url("http://[::1]:8099/x?sig=SECRET") == "http://[::1]:8099/x"
    assert redact_url("https://[::1/x?sig=SECRET") == "<unparseable URL>"


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example/x.mp3?Signature=SECRET",
        "https://app.callrail.com:8443/x.mp3?Signature=SECRET",
        "http://app.callrail.com/x.mp3?Signature=SECRET",
        "https://user:SECRET@app.callrail.com/x.mp3",
        "https://127.0.0.1/x.mp3?Signature=SECRET",
        "https://[::1/x.mp3?Signature=SECRET",
    ],
)
def test_refusals_never_show_the_query_or_credentials(url: str) -> None:
    assert "SECRET" not in refused(url)


def test_non_public_refusal_does_not_show_the_query() -> None:
    message = refused(
        "https://app.callrail.com/x?Signature=SECRET", resolver=dns(app_callrail_com=["10.0.0.1"])
    )
    assert "SECRET" not in message


# --- audio sniffing --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "extension"),
    [
        (b"ID3\x04\x00\x00\x00\x00\x00\x00\xff\xfb", "mp3"),
        (b"\xff\xfb\x90\x64" + bytes(8), "mp3"),  # MPEG-1 layer III frame, no tag
        (b"\xff\xf3\x48\xc4" + bytes(8), "mp3"),  # MPEG-2 layer III
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", "wav"),
        (b"OggS\x00\x02" + bytes(6), "ogg"),
        (b"fLaC\x00\x00\x00\x22" + bytes(4), "flac"),
        (b"\x00\x00\x00\x20ftypM4A \x00\x00", "m4a"),
        (b"\x00\x00\x00\x18ftypmp42\x00\x00", "m4a"),
    ],
)
def test_known_audio_formats_are_recognised(head: bytes, extension: str) -> None:
    assert sniff_audio(head) == extension


@pytest.mark.parametrize(
    "head",
    [
        b"",
        b"<html><body>",
        b'{"error":"x"}',
        b"RIFF\x24\x00\x00\x00AVI LIST",  # RIFF but not WAVE
        b"\xff\xf1\x50\x80" + bytes(8),  # AAC ADTS (layer 00), not MP3
        b"\xff\xfb\xf0\x64" + bytes(8),  # bad bitrate index
        b"\xff\xfb\x9c\x64" + bytes(8),  # reserved sample rate
        b"\xff\xeb\x90\x64" + bytes(8),  # reserved MPEG version
        b"\x89PNG\r\n\x1a\n" + bytes(4),
        b"PK\x03\x04" + bytes(8),
    ],
)
def test_other_bytes_are_not_audio(head: bytes) -> None:
    assert sniff_audio(head) is None
