"""The peer deny list, the unauthenticated rate limiter and log redaction (relay/policy.py),
alone and through the TURN core's CreatePermission / ChannelBind / Send handling."""

from __future__ import annotations

import pytest

from ext import _stun as stun
from relay.policy import PeerPolicy, RateLimiter, embedded_ipv4, prefix, redact
from tests.fakes import NOW, Client, family_attr, make_server, requested_transport

# One or more addresses inside every default-denied range, edges included.
DENIED_V4 = [
    "0.0.0.0",
    "0.1.2.3",
    "10.0.0.1",
    "10.255.255.255",
    "100.64.0.1",
    "100.127.255.254",
    "127.0.0.1",
    "127.255.255.254",
    "169.254.169.254",
    "172.16.0.1",
    "172.31.255.255",
    "192.0.0.8",
    "192.0.2.1",
    "192.88.99.1",
    "192.168.1.1",
    "198.18.0.1",
    "198.19.255.255",
    "198.51.100.7",
    "203.0.113.9",
    "224.0.0.1",
    "239.255.255.250",
    "240.0.0.1",
    "255.255.255.255",
]
DENIED_V6 = [
    "::",
    "::1",
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
    "::ffff:0.0.0.0",
    "::ffff:192.168.0.1",
    "::ffff:169.254.169.254",
    "::127.0.0.1",  # IPv4-compatible
    "::10.1.2.3",
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
    "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
    "100::1",
    "2001:db8::1",
    "2001:db8:ffff::1",
    "fc00::1",
    "fd12:3456::1",
    "fe80::1",
    "febf::1",
    "ff02::1",
    "ff0e::1",
    "2002:7f00:1::1",  # 6to4 of 127.0.0.1
    "2002:c0a8:101::1",  # 6to4 of 192.168.1.1
]
ALLOWED_V4 = ["8.8.8.8", "1.1.1.1", "100.63.255.255", "100.128.0.0", "172.32.0.1", "193.0.0.1"]
ALLOWED_V6 = [
    "2606:4700::1111",
    "2a00:1450::1",
    "::ffff:8.8.8.8",
    "64:ff9b::808:808",
    "2002:808:808::1",
]


@pytest.mark.parametrize("host", DENIED_V4 + DENIED_V6)
def test_default_denies(host: str) -> None:
    assert not PeerPolicy().permits(host, 3478)


@pytest.mark.parametrize("host", ALLOWED_V4 + ALLOWED_V6)
def test_default_allows_public(host: str) -> None:
    assert PeerPolicy().permits(host, 3478)
    assert PeerPolicy().permits(host)


@pytest.mark.parametrize("port", [0, -1, 65536])
def test_bad_ports_denied(port: int) -> None:
    assert not PeerPolicy().permits("8.8.8.8", port)


@pytest.mark.parametrize("host", ["", "not-an-ip", "1.2.3", "8.8.8.8.8", "::g"])
def test_garbage_denied(host: str) -> None:
    assert not PeerPolicy().permits(host, 1)


def test_allow_opens_and_covers_embedded_forms() -> None:
    policy = PeerPolicy(allow=["127.0.0.0/8"])
    assert policy.permits("127.0.0.1", 5000)
    assert policy.permits("::ffff:127.0.0.1", 5000)
    assert policy.permits("64:ff9b::7f00:1", 5000)
    assert not policy.permits("10.0.0.1", 5000)
    assert not policy.permits("::1", 5000)  # IPv6 loopback is a different rule
    assert PeerPolicy(allow=["::1/128"]).permits("::1", 1)


def test_deny_wins_over_allow() -> None:
    policy = PeerPolicy(allow=["10.0.0.0/8"], deny=["10.1.0.0/16", "8.8.8.0/24", "2606:4700::/32"])
    assert policy.permits("10.2.0.1", 1)
    assert not policy.permits("10.1.0.1", 1)
    assert not policy.permits("::ffff:10.1.0.1", 1)
    assert not policy.permits("8.8.8.8", 1)
    assert not policy.permits("::ffff:8.8.8.8", 1)
    assert not policy.permits("2002:808:808::1", 1)
    assert not policy.permits("2606:4700::1111", 1)
    assert policy.permits("1.1.1.1", 1)


def test_embedded_ipv4() -> None:
    import ipaddress

    def emb(host: str) -> str | None:
        inner = embedded_ipv4(ipaddress.IPv6Address(host))
        return None if inner is None else str(inner)

    assert emb("::ffff:1.2.3.4") == "1.2.3.4"
    assert emb("64:ff9b::102:304") == "1.2.3.4"
    assert emb("::1.2.3.4") == "1.2.3.4"
    assert emb("2002:102:304::") == "1.2.3.4"
    assert emb("2606:4700::1") is None


def test_redact() -> None:
    assert redact("198.51.100.77") == "198.51.100.0/24"
    assert redact("2001:db8:1234:5678::1") == "2001:db8:1234::/48"
    assert redact("::ffff:198.51.100.77") == "198.51.100.0/24"
    assert redact("junk") == "?"
    assert prefix("fe80::1%eth0") == "fe80::/48"


def test_rate_limiter_bucket() -> None:
    limiter = RateLimiter(rate=2.0, burst=3.0)
    assert [limiter.allow("1.2.3.4", 0.0) for _ in range(4)] == [True, True, True, False]
    assert not limiter.allow("1.2.3.99", 0.0)  # same /24 shares the bucket
    assert limiter.allow("1.2.4.4", 0.0)  # another /24 does not
    assert limiter.allow("1.2.3.4", 0.5)  # one token back after 0.5 s at 2/s
    assert not limiter.allow("1.2.3.4", 0.5)
    assert not limiter.allow("1.2.3.4", 0.2)  # a clock stepping back refills nothing
    assert [limiter.allow("1.2.3.4", 100.0) for _ in range(4)] == [True, True, True, False]


def test_rate_limiter_ipv6_prefix() -> None:
    limiter = RateLimiter(rate=1.0, burst=1.0)
    assert limiter.allow("2001:db8:1:2::1", 0.0)
    assert not limiter.allow("2001:db8:1:ffff::9", 0.0)  # same /48
    assert limiter.allow("2001:db8:2::1", 0.0)
    assert limiter.allow("::ffff:9.9.9.1", 0.0)
    assert not limiter.allow("9.9.9.2", 0.0)  # a mapped IPv4 client is its IPv4 /24


def test_rate_limiter_bounded_and_disabled() -> None:
    limiter = RateLimiter(rate=1.0, burst=1.0, max_entries=100)
    for i in range(1000):
        limiter.allow(f"10.{i // 256}.{i % 256}.1", 0.0)
    assert len(limiter) == 100
    off = RateLimiter(rate=0.0, burst=1.0)
    assert all(off.allow("1.2.3.4", 0.0) for _ in range(100))


# ---------------------------------------------------------------- through the TURN core


def _allocated(family: int, **overrides: object) -> tuple[Client, object]:
    server, backend = make_server(**overrides)
    client = Client(server)
    attrs = [requested_transport(), family_attr(stun.REQUESTED_ADDRESS_FAMILY, family)]
    assert client.allocate(NOW, attrs).ok
    return client, backend


@pytest.mark.parametrize("host", DENIED_V4 + DENIED_V6)
def test_denied_peers_get_403(host: str) -> None:
    family = stun.FAMILY_IPV6 if ":" in host else stun.FAMILY_IPV4
    client, backend = _allocated(family)
    reply = client.permission(NOW, (host, 5000))
    assert (reply.code, reply.reason) == (403, "Forbidden")
    assert reply.verify(client.key)
    reply = client.channel_bind(NOW, 0x4000, (host, 5000))
    assert (reply.code, reply.reason) == (403, "Forbidden")
    assert client.server.stats["refused.forbidden"] == 2
    assert "add_permission" not in backend.names()  # type: ignore[attr-defined]
    assert "bind_channel" not in backend.names()  # type: ignore[attr-defined]
    client.send_indication(NOW, (host, 5000), b"x")
    assert client.server.stats["send.denied_peer"] == 1


@pytest.mark.parametrize("host", ["8.8.8.8", "::ffff:8.8.8.8", "2606:4700::1111"])
def test_port_zero_denied_where_the_port_is_used(host: str) -> None:
    family = stun.FAMILY_IPV6 if ":" in host else stun.FAMILY_IPV4
    client, backend = _allocated(family)
    assert client.channel_bind(NOW, 0x4000, (host, 0)).code == 403
    assert backend.channels == {1: {}}  # type: ignore[attr-defined]
    # CreatePermission ignores the port (RFC 8656 section 9): port 0 installs the IP
    assert client.permission(NOW, (host, 0)).ok
    assert client.permission(NOW, (host, 9)).ok


def test_one_denied_peer_installs_nothing() -> None:
    client, backend = _allocated(stun.FAMILY_IPV4)
    reply = client.permission(NOW, ("8.8.8.8", 1), ("1.1.1.1", 2), ("10.0.0.1", 3))
    assert reply.code == 403
    assert backend.permissions == {1: set()}  # type: ignore[attr-defined]


def test_operator_allow_and_deny_through_core() -> None:
    client, backend = _allocated(
        stun.FAMILY_IPV4, policy=PeerPolicy(allow=["127.0.0.0/8"], deny=["8.8.8.0/24"])
    )
    assert client.permission(NOW, ("127.0.0.1", 5000)).ok
    assert client.channel_bind(NOW, 0x4001, ("127.0.0.2", 5000)).ok
    assert client.permission(NOW, ("8.8.8.8", 5000)).code == 403
    assert backend.permissions[1] == {"127.0.0.1", "127.0.0.2"}  # type: ignore[attr-defined]


def test_ipv6_mapped_allowed_when_v4_allowed() -> None:
    client, backend = _allocated(stun.FAMILY_IPV6, policy=PeerPolicy(allow=["127.0.0.0/8"]))
    assert client.permission(NOW, ("::ffff:127.0.0.1", 5000)).ok
    assert client.permission(NOW, ("::1", 5000)).code == 403
