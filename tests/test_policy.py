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
# Every range of IANA's IPv4 and IPv6 special-purpose address registries, and the special
# ranges outside them, by their first and last addresses (written out here, not read from
# relay/policy.py, so a range dropped there fails here).
SPECIAL_PURPOSE = [
    ("0.0.0.0", "0.255.255.255"),
    ("10.0.0.0", "10.255.255.255"),
    ("100.64.0.0", "100.127.255.255"),
    ("127.0.0.0", "127.255.255.255"),
    ("169.254.0.0", "169.254.255.255"),
    ("172.16.0.0", "172.31.255.255"),
    ("192.0.0.0", "192.0.0.255"),
    ("192.0.0.9", "192.0.0.10"),  # PCP and TURN anycast
    ("192.0.0.170", "192.0.0.171"),
    ("192.0.2.0", "192.0.2.255"),
    ("192.31.196.0", "192.31.196.255"),
    ("192.52.193.0", "192.52.193.255"),
    ("192.88.99.0", "192.88.99.255"),
    ("192.168.0.0", "192.168.255.255"),
    ("192.175.48.0", "192.175.48.255"),
    ("198.18.0.0", "198.19.255.255"),
    ("198.51.100.0", "198.51.100.255"),
    ("203.0.113.0", "203.0.113.255"),
    ("224.0.0.0", "239.255.255.255"),
    ("240.0.0.0", "255.255.255.255"),
    ("::", "::"),
    ("::1", "::1"),
    ("::0.0.0.2", "::255.255.255.255"),  # IPv4-compatible
    ("::ffff:0.0.0.0", "::ffff:255.255.255.255"),  # IPv4-mapped, public ones included
    ("::ffff:0:0.0.0.0", "::ffff:0:255.255.255.255"),  # SIIT IPv4-translated
    ("64:ff9b::", "64:ff9b::ffff:ffff"),  # NAT64 well-known prefix
    ("64:ff9b:1::", "64:ff9b:1:ffff:ffff:ffff:ffff:ffff"),
    ("100::", "100::ffff:ffff:ffff:ffff"),
    ("100:0:0:1::", "100:0:0:1:ffff:ffff:ffff:ffff"),
    ("2001::", "2001:1ff:ffff:ffff:ffff:ffff:ffff:ffff"),  # IETF protocol assignments
    ("2001::", "2001:0:ffff:ffff:ffff:ffff:ffff:ffff"),  # Teredo
    ("2001:1::1", "2001:1::3"),
    ("2001:2::", "2001:2:0:ffff:ffff:ffff:ffff:ffff"),
    ("2001:3::", "2001:3:ffff:ffff:ffff:ffff:ffff:ffff"),
    ("2001:4:112::", "2001:4:112:ffff:ffff:ffff:ffff:ffff"),
    ("2001:10::", "2001:3f:ffff:ffff:ffff:ffff:ffff:ffff"),  # ORCHID, ORCHIDv2, DETs
    ("2001:db8::", "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"),
    ("2002::", "2002:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),  # 6to4, public ones included
    ("2620:4f:8000::", "2620:4f:8000:ffff:ffff:ffff:ffff:ffff"),
    ("3fff::", "3fff:fff:ffff:ffff:ffff:ffff:ffff:ffff"),
    ("5f00::", "5f00:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
    ("fc00::", "fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
    ("fe80::", "febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
    ("fec0::", "feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),  # site-local
    ("ff00::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
]
ALLOWED_V4 = ["8.8.8.8", "1.1.1.1", "100.63.255.255", "100.128.0.0", "172.32.0.1", "193.0.0.1"]
ALLOWED_V6 = [
    "2606:4700::1111",
    "2a00:1450::1",
    "2001:200::1",  # just past 2001::/23
    "2001:4860:4860::8888",
    "2620:4f:8001::1",
    "3fff:1000::1",
    "64:ff9c::1",
]


@pytest.mark.parametrize("host", DENIED_V4 + DENIED_V6)
def test_default_denies(host: str) -> None:
    assert not PeerPolicy().permits(host, 3478)


@pytest.mark.parametrize(("first", "last"), SPECIAL_PURPOSE)
def test_every_special_purpose_range_denied(first: str, last: str) -> None:
    policy = PeerPolicy()
    assert not policy.permits(first, 3478)
    assert not policy.permits(last, 3478)
    assert not policy.permits(first)


@pytest.mark.parametrize(
    "host",
    ["64:ff9b:1::808:808", "2001:0:4136:e378:8000:63bf:3fff:fdd2", "fec0::1", "::ffff:8.8.8.8"],
)
def test_issue_14_ipv6_gaps_closed(host: str) -> None:
    # NAT64 local-use, Teredo, site-local and a mapped public IPv4 were relayable
    assert not PeerPolicy().permits(host, 3478)


def test_allowing_an_embedding_prefix_reaches_public_ipv4_only() -> None:
    policy = PeerPolicy(allow=["64:ff9b::/96"])
    assert policy.permits("64:ff9b::808:808", 1)
    assert not policy.permits("64:ff9b::7f00:1", 1)  # NAT64 of 127.0.0.1
    assert not policy.permits("64:ff9b::a00:1", 1)
    assert PeerPolicy(allow=["64:ff9b::/96", "10.0.0.0/8"]).permits("64:ff9b::a00:1", 1)


def test_own_addresses_denied_only_on_their_ports() -> None:
    own = [("127.0.0.1", 3478, 3478), ("127.0.0.1", 443, 443), ("2001:db8::7", 3478, 3478)]
    policy = PeerPolicy(allow=["127.0.0.0/8", "2001:db8::/32"], own=own)
    assert not policy.permits("127.0.0.1", 3478)
    assert not policy.permits("127.0.0.1", 443)
    assert not policy.permits("::ffff:127.0.0.1", 3478)  # any form of it
    assert not policy.permits("2001:db8::7", 3478)
    assert policy.permits("127.0.0.1", 3479)  # the same IP's other ports are peers
    assert policy.permits("127.0.0.2", 3478)
    assert policy.permits("127.0.0.1")  # CreatePermission names no port
    assert policy.is_own("127.0.0.1", 443) and not policy.is_own("127.0.0.1", 444)


def test_own_addresses_of_a_node() -> None:
    from relay.config import load_config
    from relay.node import own_addresses

    cfg = load_config(
        ["--listen", "0.0.0.0:3478", "--listen", "[2001:db8::9]:3479"]
        + ["--listen-tcp", "192.0.2.8:443", "--relay-ip", "203.0.113.7"]
        + ["--relay-ip", "2001:db8::9", "--external-ip", "198.51.100.4", "--user", "a:b"]
    )
    assert sorted(own_addresses(cfg)) == sorted(
        [
            ("127.0.0.1", 3478, 3478),
            ("203.0.113.7", 3478, 3478),
            ("198.51.100.4", 3478, 3478),
            ("2001:db8::9", 3479, 3479),
            ("192.0.2.8", 443, 443),
            ("198.51.100.4", 443, 443),
        ]
    )


def test_own_address_through_core_is_403_and_counted() -> None:
    policy = PeerPolicy(allow=["127.0.0.0/8"], own=[("127.0.0.1", 3478, 3478)])
    client, backend = _allocated(stun.FAMILY_IPV4, policy=policy)
    reply = client.channel_bind(NOW, 0x4000, ("127.0.0.1", 3478))
    assert (reply.code, reply.reason) == (403, "Forbidden")
    assert client.server.stats["refused.own_address"] == 1
    assert client.permission(NOW, ("127.0.0.1", 3478)).ok  # a permission is per IP
    client.send_indication(NOW, ("127.0.0.1", 3478), b"nested")
    assert client.server.stats["send.denied_peer"] == 1
    assert backend.drops == {"denied_peer": 1}  # type: ignore[attr-defined]
    assert backend.sent == []  # type: ignore[attr-defined]
    assert client.channel_bind(NOW, 0x4000, ("127.0.0.1", 3479)).ok


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


@pytest.mark.parametrize("host", ["8.8.8.8", "2606:4700::1111"])
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
