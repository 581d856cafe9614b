"""Who may be relayed to, who may knock how often, and how addresses appear in logs.

* :class:`PeerPolicy` is the peer deny list: a relay that forwards to loopback, RFC 1918,
  link-local or IPv6-mapped forms of them is an open door into the operator's network
  (coturn's CVE-2020-26262 was ``0.0.0.0`` and ``::`` slipping through). By default every
  IANA special-purpose range is denied, the IPv6 forms that embed an IPv4 address
  (IPv4-mapped, IPv4-compatible, NAT64, 6to4) included; an operator's IPv4 rule also governs
  those forms. The node's own listening addresses are denied too (nested allocations).
* :class:`RateLimiter` is a token bucket per client prefix (/24 for IPv4, /48 for IPv6) for
  unauthenticated requests, in a bounded LRU table so a spray of sources cannot grow it.
* :func:`redact` turns a client address into its prefix for logs.

Nothing here does I/O or reads the clock; callers pass ``now``.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from collections.abc import Iterable
from typing import Final

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# The default deny lists: every entry of IANA's special-purpose address registries, as of
# their 2025 updates (https://www.iana.org/assignments/iana-ipv4-special-registry and
# https://www.iana.org/assignments/iana-ipv6-special-registry, RFC 6890), whatever their
# "globally reachable" column says: none of them is where a call's media peer lives. Plus the
# few special ranges those registries leave to others: multicast, IPv4-compatible,
# site-local and SIIT forms. Sub-blocks of a listed block are kept as registry rows so the
# list can be checked against the registries line by line.
DEFAULT_DENY_V4: Final[tuple[str, ...]] = (
    "0.0.0.0/8",  # "this network" (RFC 791), includes 0.0.0.0/32 "this host"
    "10.0.0.0/8",  # private use (RFC 1918)
    "100.64.0.0/10",  # shared address space, CGNAT (RFC 6598)
    "127.0.0.0/8",  # loopback (RFC 1122)
    "169.254.0.0/16",  # link-local (RFC 3927)
    "172.16.0.0/12",  # private use (RFC 1918)
    "192.0.0.0/24",  # IETF protocol assignments (RFC 6890): includes 192.0.0.0/29 DS-Lite,
    # 192.0.0.8/32 dummy, 192.0.0.9/32 PCP anycast, 192.0.0.10/32 TURN anycast,
    # 192.0.0.170/31 NAT64/DNS64 discovery
    "192.0.2.0/24",  # documentation TEST-NET-1 (RFC 5737)
    "192.31.196.0/24",  # AS112-v4 (RFC 7535)
    "192.52.193.0/24",  # AMT (RFC 7450)
    "192.88.99.0/24",  # deprecated 6to4 relay anycast (RFC 7526), includes 6a44 192.88.99.2
    "192.168.0.0/16",  # private use (RFC 1918)
    "192.175.48.0/24",  # direct delegation AS112 service (RFC 7534)
    "198.18.0.0/15",  # benchmarking (RFC 2544)
    "198.51.100.0/24",  # documentation TEST-NET-2 (RFC 5737)
    "203.0.113.0/24",  # documentation TEST-NET-3 (RFC 5737)
    "224.0.0.0/4",  # multicast (RFC 5771; not in the special-purpose registry)
    "240.0.0.0/4",  # reserved (RFC 1112), includes 255.255.255.255/32 limited broadcast
)

DEFAULT_DENY_V6: Final[tuple[str, ...]] = (
    "::/128",  # unspecified (RFC 4291)
    "::1/128",  # loopback (RFC 4291)
    "::/96",  # IPv4-compatible, deprecated (RFC 4291; not in the registry)
    "::ffff:0:0/96",  # IPv4-mapped (RFC 4291): never a destination on the wire
    "::ffff:0:0:0/96",  # IPv4-translated, SIIT (RFC 2765; not in the registry)
    "64:ff9b::/96",  # IPv4-IPv6 translation, NAT64 well-known prefix (RFC 6052)
    "64:ff9b:1::/48",  # local-use IPv4/IPv6 translation (RFC 8215)
    "100::/64",  # discard-only (RFC 6666)
    "100:0:0:1::/64",  # dummy IPv6 prefix (RFC 9780)
    "2001::/23",  # IETF protocol assignments (RFC 2928), includes all of the following:
    "2001::/32",  # Teredo (RFC 4380)
    "2001:1::1/128",  # PCP anycast (RFC 7723)
    "2001:1::2/128",  # TURN anycast (RFC 8155)
    "2001:1::3/128",  # DNS-SD SRP anycast (RFC 9665)
    "2001:2::/48",  # benchmarking (RFC 5180)
    "2001:3::/32",  # AMT (RFC 7450)
    "2001:4:112::/48",  # AS112-v6 (RFC 7535)
    "2001:10::/28",  # deprecated ORCHID (RFC 4843)
    "2001:20::/28",  # ORCHIDv2 (RFC 7343)
    "2001:30::/28",  # drone remote ID DETs (RFC 9374)
    "2001:db8::/32",  # documentation (RFC 3849)
    "2002::/16",  # 6to4 (RFC 3056)
    "2620:4f:8000::/48",  # direct delegation AS112 service (RFC 7534)
    "3fff::/20",  # documentation (RFC 9637)
    "5f00::/16",  # segment routing SRv6 SIDs (RFC 9602)
    "fc00::/7",  # unique local (RFC 4193)
    "fe80::/10",  # link-local unicast (RFC 4291)
    "fec0::/10",  # site-local, deprecated (RFC 3879; not in the registry)
    "ff00::/8",  # multicast (RFC 4291; not in the registry)
)

# IPv6 forms that carry an IPv4 address; the embedded address decides.
_MAPPED: Final = ipaddress.IPv6Network("::ffff:0:0/96")
_NAT64: Final = ipaddress.IPv6Network("64:ff9b::/96")
_COMPAT: Final = ipaddress.IPv6Network("::/96")
_SIX_TO_FOUR: Final = ipaddress.IPv6Network("2002::/16")


def embedded_ipv4(addr: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address inside an IPv4-mapped, NAT64, IPv4-compatible or 6to4 address."""
    value = int(addr)
    if value < 2:  # :: and ::1 are themselves, not IPv4-compatible forms (RFC 4291)
        return None
    if addr in _MAPPED or addr in _NAT64 or addr in _COMPAT:
        return ipaddress.IPv4Address(value & 0xFFFFFFFF)
    if addr in _SIX_TO_FOUR:
        return ipaddress.IPv4Address((value >> 80) & 0xFFFFFFFF)
    return None


def _networks(cidrs: Iterable[str]) -> list[IPNetwork]:
    return [ipaddress.ip_network(c, strict=False) for c in cidrs]


def _within(addr: IPAddress, nets: list[IPNetwork]) -> bool:
    return any(addr.version == net.version and addr in net for net in nets)


class PeerPolicy:
    """Decides whether a peer address may be relayed to.

    ``allow`` CIDRs (``--allow-peer``) open ranges the defaults deny; ``deny`` CIDRs
    (``--deny-peer``) add denials and win over ``allow``. Either may be written in IPv4 or
    IPv6; an IPv4 rule also governs the IPv6 forms that embed that IPv4 address. An IPv6 rule
    that opens an embedding prefix (NAT64's ``64:ff9b::/96``, say) reaches only the IPv4
    addresses inside it that the IPv4 rules let through.

    ``own`` lists the node's own transport addresses as ``(ip, low_port, high_port)``: its
    listening addresses. They are denied whatever ``allow`` says (a peer there would be a
    client of the relay itself: nested allocations through it), but only those ports, so
    other ports of the same IP (a loopback test peer) stay governed by the rules above.
    Requests that name no port (CreatePermission) are not checked against them.
    """

    __slots__ = ("allow", "deny", "own", "_default_v4", "_default_v6")

    def __init__(
        self,
        allow: Iterable[str] = (),
        deny: Iterable[str] = (),
        own: Iterable[tuple[str, int, int]] = (),
    ) -> None:
        self.allow: list[IPNetwork] = _networks(allow)
        self.deny: list[IPNetwork] = _networks(deny)
        self.own: dict[IPAddress, list[tuple[int, int]]] = {}
        for host, low, high in own:
            self.own.setdefault(ipaddress.ip_address(host), []).append((low, high))
        self._default_v4 = _networks(DEFAULT_DENY_V4)
        self._default_v6 = _networks(DEFAULT_DENY_V6)

    def is_own(self, host: str, port: int) -> bool:
        """True when ``(host, port)`` is one of the node's own addresses (any form of it)."""
        if not self.own:
            return False
        try:
            addr = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        inner = embedded_ipv4(addr) if isinstance(addr, ipaddress.IPv6Address) else None
        for a in (addr,) if inner is None else (addr, inner):
            if any(low <= port <= high for low, high in self.own.get(a, ())):
                return True
        return False

    def permits(self, host: str, port: int | None = None) -> bool:
        """True when ``host`` (textual IPv4/IPv6) and ``port`` (when given) may be a peer."""
        if port is not None and not 0 < port < 65536:
            return False
        try:
            addr = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        inner = embedded_ipv4(addr) if isinstance(addr, ipaddress.IPv6Address) else None
        forms: tuple[IPAddress, ...] = (addr,) if inner is None else (addr, inner)
        if any(_within(a, self.deny) for a in forms):
            return False
        if port is not None and self.is_own(host, port):
            return False
        if any(_within(a, self.allow) for a in forms):
            if inner is not None and not _within(inner, self.allow):
                return not _within(inner, self._default_v4)
            return True
        if isinstance(addr, ipaddress.IPv4Address):
            return not _within(addr, self._default_v4)
        return not _within(addr, self._default_v6)


def prefix(host: str) -> str:
    """The client's /24 (IPv4, including IPv4-mapped) or /48 (IPv6) as text."""
    try:
        addr = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return "?"
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    bits = 24 if addr.version == 4 else 48
    return str(ipaddress.ip_network(f"{addr}/{bits}", strict=False))


def redact(ip: str) -> str:
    """An address as it may appear in logs: only its /24 (IPv4) or /48 (IPv6)."""
    return prefix(ip)


class RateLimiter:
    """Token buckets keyed by client prefix, ``rate`` tokens/s up to ``burst``.

    The table holds at most ``max_entries`` prefixes; the least recently seen is forgotten
    first (a forgotten prefix starts again with a full bucket, which errs on letting
    people in). ``rate <= 0`` disables limiting.
    """

    __slots__ = ("rate", "burst", "max_entries", "_buckets")

    def __init__(self, rate: float, burst: float, max_entries: int = 65536) -> None:
        self.rate = rate
        self.burst = max(burst, 1.0)
        self.max_entries = max_entries
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    @staticmethod
    def key(host: str) -> str:
        if host.startswith("::ffff:") and "." in host:  # dual-stack socket, IPv4 client
            host = host[7:]
        if ":" not in host:  # IPv4 fast path: no parsing
            return host.rpartition(".")[0]
        return prefix(host)

    def allow(self, host: str, now: float) -> bool:
        """Take one token for ``host``'s prefix; False when its bucket is empty."""
        if self.rate <= 0:
            return True
        k = self.key(host)
        bucket = self._buckets.get(k)
        if bucket is None:
            if len(self._buckets) >= self.max_entries:
                self._buckets.popitem(last=False)
            bucket = self._buckets[k] = [self.burst, now]
        else:
            self._buckets.move_to_end(k)
            elapsed = now - bucket[1]
            if elapsed > 0:  # a clock that steps back refills nothing
                bucket[0] = min(self.burst, bucket[0] + elapsed * self.rate)
                bucket[1] = now
        if bucket[0] < 1.0:
            return False
        bucket[0] -= 1.0
        return True
