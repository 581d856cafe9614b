"""Which relay node carries a call (sans-I/O).

:func:`select_node` decides in three steps:

1. **Eligible**: a node is a candidate only if its region is one of the tenant's allowed
   regions, it is healthy (a heartbeat within ``heartbeat_timeout`` seconds of ``now``), it is
   not draining and it has URLs clients can use. Nothing outside the allowed regions is ever
   chosen; no eligible node at all is :class:`NoRelayAvailable` (the API's 503).
2. **Nearest region**: the allowed regions are ranked by closeness to the visitor's region
   (:meth:`RegionMap.ranked`) and the first that has a candidate wins.
3. **Least loaded, by two random choices**: two of that region's candidates are drawn at
   random and the one with the lower :func:`load_score` is taken. Always taking the single
   least loaded node would send every call created between two heartbeats to the same node
   (the stampede); two choices spreads them while still steering away from busy nodes.

The visitor's region comes from :meth:`RegionMap.region_for`: an explicit hint, or the
longest configured CIDR that contains the visitor's truncated prefix (:func:`truncate_ip`).

Nothing here does I/O or reads the clock; callers pass ``now`` and a ``random.Random``.
"""

from __future__ import annotations

import ipaddress
import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from control.models import RelayNode
from relay.policy import prefix

HEARTBEAT_TIMEOUT: Final = 15.0

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_MAPPED: Final = ipaddress.IPv6Network("::ffff:0:0/96")


class NoRelayAvailable(Exception):
    """No healthy, non-draining relay node in any of the tenant's allowed regions."""

    def __init__(self, allowed_regions: Iterable[str]) -> None:
        regions = ", ".join(sorted(set(allowed_regions))) or "none"
        super().__init__(f"no relay node is available in the allowed regions ({regions})")
        self.allowed_regions = regions


def truncate_ip(ip: str) -> str:
    """The /24 (IPv4, IPv4-mapped IPv6 included) or /48 (IPv6) network of ``ip`` as text,
    the most of a visitor's address the control plane keeps. ValueError if not an address.

    Uses the relay's :func:`relay.policy.prefix`, so logs and records truncate alike.
    """
    result = prefix(ip)
    if result == "?":
        raise ValueError(f"not an IP address: {ip!r}")
    return result


def _network(text: str) -> IPNetwork:
    """An address or network as a network, IPv4-mapped IPv6 turned into IPv4."""
    net = ipaddress.ip_network(text.split("%", 1)[0], strict=False)
    if isinstance(net, ipaddress.IPv6Network) and net.prefixlen >= 96 and net.subnet_of(_MAPPED):
        inner = ipaddress.IPv4Address(int(net.network_address) & 0xFFFFFFFF)
        return ipaddress.IPv4Network(f"{inner}/{net.prefixlen - 96}")
    return net


def _contains(outer: IPNetwork, inner: IPNetwork) -> bool:
    """Whether ``inner`` lies wholly within ``outer`` (False across address families)."""
    return (
        outer.version == inner.version
        and int(outer.network_address) <= int(inner.network_address)
        and int(inner.broadcast_address) <= int(outer.broadcast_address)
    )


@dataclass(frozen=True, slots=True)
class LoadWeights:
    """How the heartbeat's figures add up to one load score.

    Each weight is the reciprocal of what counts as "one busy node" in that dimension, so
    a node at the nominal limit of any one of them scores about 1.0 and the dimensions add:
    ``cpu`` is the busy fraction of the node's cores (already 0..1), 2,000 allocations or
    200,000 packets/s make a busy node by default.
    """

    cpu: float = 1.0
    allocations: float = 1 / 2000
    packet_rate: float = 1 / 200_000


DEFAULT_WEIGHTS: Final = LoadWeights()


def load_score(node: RelayNode, weights: LoadWeights = DEFAULT_WEIGHTS) -> float:
    """A node's load: ``cpu*w.cpu + allocations*w.allocations + packet_rate*w.packet_rate``.
    Negative figures count as 0; a NaN (a broken report) makes the node look infinitely busy."""
    total = 0.0
    for value, weight in (
        (node.cpu, weights.cpu),
        (float(node.allocations), weights.allocations),
        (node.packet_rate, weights.packet_rate),
    ):
        if math.isnan(value):
            return math.inf
        total += max(value, 0.0) * weight
    return total


def healthy(node: RelayNode, now: float, heartbeat_timeout: float = HEARTBEAT_TIMEOUT) -> bool:
    """Whether the node's last heartbeat is recent: at most ``heartbeat_timeout`` seconds
    before ``now`` (a heartbeat stamped slightly in the future counts as recent)."""
    return now - node.last_heartbeat <= heartbeat_timeout


class RegionMap:
    """Where visitors are, and which regions are near which.

    ``prefixes`` maps CIDRs (IPv4 or IPv6) to a region; the longest one containing the
    visitor's prefix decides. ``preferences`` maps a region to the other regions in order of
    closeness (the region itself always comes first). ``default`` is the visitor region when
    nothing matches (None: unknown, and the tenant's own order of allowed regions decides).
    """

    __slots__ = ("_prefixes", "preferences", "default", "known")

    def __init__(
        self,
        prefixes: Mapping[str, str] | None = None,
        preferences: Mapping[str, Sequence[str]] | None = None,
        default: str | None = None,
    ) -> None:
        nets = [(_network(cidr), region) for cidr, region in (prefixes or {}).items()]
        nets.sort(key=lambda item: item[0].prefixlen, reverse=True)
        self._prefixes: list[tuple[IPNetwork, str]] = nets
        self.preferences: dict[str, list[str]] = {
            region: list(order) for region, order in (preferences or {}).items()
        }
        self.default = default
        known = {region for _, region in nets} | set(self.preferences)
        for order in self.preferences.values():
            known.update(order)
        if default is not None:
            known.add(default)
        self.known: frozenset[str] = frozenset(known)

    @classmethod
    def from_config(cls, data: Mapping[str, Any]) -> RegionMap:
        """From a config table: ``{"prefixes": {cidr: region}, "preferences": {region:
        [regions...]}, "default": region}``; ValueError with the offending entry otherwise."""
        prefixes = data.get("prefixes", {})
        preferences = data.get("preferences", {})
        default = data.get("default")
        if not isinstance(prefixes, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in prefixes.items()
        ):
            raise ValueError("region map 'prefixes' must map CIDR strings to region names")
        if not isinstance(preferences, Mapping) or not all(
            isinstance(k, str) and isinstance(v, list) and all(isinstance(r, str) for r in v)
            for k, v in preferences.items()
        ):
            raise ValueError("region map 'preferences' must map regions to lists of regions")
        if default is not None and not isinstance(default, str):
            raise ValueError("region map 'default' must be a region name")
        for cidr in prefixes:
            try:
                _network(cidr)
            except ValueError:
                raise ValueError(f"region map prefix {cidr!r} is not a CIDR") from None
        return cls(prefixes, preferences, default)

    def region_for(self, visitor: str | None = None, *, hint: str | None = None) -> str | None:
        """The visitor's region: ``hint`` when it names a region this map knows (or the map
        knows none), else the longest configured prefix containing ``visitor`` (an address or
        a truncated prefix such as ``"203.0.113.0/24"``), else the default."""
        if hint and (hint in self.known or not self.known):
            return hint
        if visitor:
            try:
                net = _network(visitor)
            except ValueError:
                net = None
            if net is not None:
                for candidate, region in self._prefixes:
                    if _contains(candidate, net):
                        return region
        return self.default

    def ranked(self, visitor_region: str | None, allowed_regions: Sequence[str]) -> list[str]:
        """The allowed regions, nearest to ``visitor_region`` first: the region itself, then
        its preference list, then the remaining allowed regions in the tenant's order."""
        allowed = list(dict.fromkeys(allowed_regions))
        if visitor_region is None:
            return allowed
        wanted = [visitor_region, *self.preferences.get(visitor_region, [])]
        near = [r for r in dict.fromkeys(wanted) if r in allowed]
        return near + [r for r in allowed if r not in near]


NO_REGIONS: Final = RegionMap()


def eligible(
    nodes: Iterable[RelayNode],
    allowed_regions: Iterable[str],
    now: float,
    heartbeat_timeout: float = HEARTBEAT_TIMEOUT,
) -> list[RelayNode]:
    """The nodes a call may use at all: in an allowed region, healthy, not draining, with
    URLs to hand out."""
    allowed = set(allowed_regions)
    return [
        n
        for n in nodes
        if n.region in allowed and not n.draining and n.urls and healthy(n, now, heartbeat_timeout)
    ]


def two_choices(
    candidates: Sequence[RelayNode],
    rng: random.Random,
    weights: LoadWeights = DEFAULT_WEIGHTS,
) -> RelayNode:
    """Draw two distinct candidates at random and keep the less loaded (the first drawn on
    a tie); a single candidate is simply taken."""
    if not candidates:
        raise ValueError("no candidates to choose from")
    if len(candidates) == 1:
        return candidates[0]
    first, second = rng.sample(list(candidates), 2)
    return second if load_score(second, weights) < load_score(first, weights) else first


def select_node(
    nodes: Iterable[RelayNode],
    *,
    allowed_regions: Sequence[str],
    visitor_region: str | None,
    now: float,
    heartbeat_timeout: float = HEARTBEAT_TIMEOUT,
    rng: random.Random,
    region_map: RegionMap = NO_REGIONS,
    weights: LoadWeights = DEFAULT_WEIGHTS,
) -> RelayNode:
    """The relay node for a call: an eligible node (see :func:`eligible`) in the allowed
    region nearest ``visitor_region`` that has one, the less loaded of two random picks
    there. Raises :class:`NoRelayAvailable` when no allowed region has an eligible node."""
    pool = eligible(nodes, allowed_regions, now, heartbeat_timeout)
    for region in region_map.ranked(visitor_region, allowed_regions):
        candidates = [n for n in pool if n.region == region]
        if candidates:
            return two_choices(candidates, rng, weights)
    raise NoRelayAvailable(allowed_regions)
