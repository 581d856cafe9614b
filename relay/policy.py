"""Who may be relayed to, who may knock how often, and how addresses appear in logs.

* :class:`PeerPolicy` is the peer deny list: a relay that forwards to loopback, RFC 1918,
  link-local or IPv6-mapped forms of them is an open door into the operator's network
  (coturn's CVE-2020-26262 was ``0.0.0.0`` and ``::`` slipping through). Addresses that embed
  an IPv4 address (IPv4-mapped, IPv4-compatible, NAT64, 6to4) are judged by the IPv4 rules.
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

DEFAULT_DENY_V4: Final[tuple[str, ...]] = (
    "0.0.0.0/8",  # "this network", includes 0.0.0.0
    "10.0.0.0/8",  # RFC 1918
    "100.64.0.0/10",  # CGNAT (RFC 6598)
    "127.0.0.0/8",  # loopback
    "169.254.0.0/16",  # link-local
    "172.16.0.0/12",  # RFC 1918
    "192.0.0.0/24",  # IETF protocol assignments
    "192.0.2.0/24",  # TEST-NET-1
    "192.88.99.0/24",  # 6to4 relay anycast
    "192.168.0.0/16",  # RFC 1918
    "198.18.0.0/15",  # benchmarking
    "198.51.100.0/24",  # TEST-NET-2
    "203.0.113.0/24",  # TEST-NET-3
    "224.0.0.0/4",  # multicast
    "240.0.0.0/4",  # reserved, includes 255.255.255.255
)

DEFAULT_DENY_V6: Final[tuple[str, ...]] = (
    "::/128",  # unspecified
    "::1/128",  # loopback
    "100::/64",  # discard-only
    "2001:db8::/32",  # documentation
    "fc00::/7",  # unique local
    "fe80::/10",  # link-local
    "ff00::/8",  # multicast
)

# IPv6 forms that carry an IPv4 address; the embedded address decides.
_MAPPED: Final = ipaddress.IPv6Network("::ffff:0:0/96")
_NAT64: Final = ipaddress.IPv6Network("64:ff9b::/96")
_COMPAT: Final = ipaddress.IPv6Network("::/96")
_SIX_TO_FOUR: Final = ipaddress.IPv6Network("2002::/16")


def embedded_ipv4(addr: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address inside an IPv4-mapped, NAT64, IPv4-compatible or 6to4 address."""
    value = int(addr)
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
    IPv6; an IPv4 rule also governs the IPv6 forms that embed that IPv4 address.
    """

    __slots__ = ("allow", "deny", "_default_v4", "_default_v6")

    def __init__(self, allow: Iterable[str] = (), deny: Iterable[str] = ()) -> None:
        self.allow: list[IPNetwork] = _networks(allow)
        self.deny: list[IPNetwork] = _networks(deny)
        self._default_v4 = _networks(DEFAULT_DENY_V4)
        self._default_v6 = _networks(DEFAULT_DENY_V6)

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
        if any(_within(a, self.allow) for a in forms):
            return True
        if inner is not None:
            return not _within(inner, self._default_v4)
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
