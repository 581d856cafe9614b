"""Relay selection (control/selection.py): eligibility, nearest allowed region, two random
choices, and where a visitor is."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from control import selection
from control.models import RelayNode
from control.selection import NoRelayAvailable, RegionMap, select_node, truncate_ip

NOW = 1_700_000_000.0
REGIONS = ["eu", "eu-north", "us", "ap"]

MAP = RegionMap(
    prefixes={
        "0.0.0.0/0": "us",
        "81.0.0.0/8": "eu",
        "81.200.0.0/16": "eu-north",
        "2001:db8::/32": "eu",
        "2001:db8:aa00::/40": "ap",
    },
    preferences={
        "eu": ["eu-north", "us", "ap"],
        "eu-north": ["eu", "us", "ap"],
        "us": ["eu", "eu-north", "ap"],
        "ap": ["us", "eu", "eu-north"],
    },
)


def node(
    nid: str,
    region: str = "eu",
    *,
    age: float = 1.0,
    draining: bool = False,
    cpu: float = 0.0,
    allocations: int = 0,
    packet_rate: float = 0.0,
    urls: list[str] | None = None,
) -> RelayNode:
    return RelayNode(
        id=nid,
        region=region,
        urls=[f"turn:{nid}.example:3478"] if urls is None else urls,
        cpu=cpu,
        allocations=allocations,
        packet_rate=packet_rate,
        draining=draining,
        last_heartbeat=NOW - age,
    )


def pick(
    nodes: list[RelayNode], allowed: list[str], visitor: str | None = None, seed: int = 0
) -> RelayNode:
    return select_node(
        nodes,
        allowed_regions=allowed,
        visitor_region=visitor,
        now=NOW,
        rng=random.Random(seed),
        region_map=MAP,
    )


# --- eligibility ------------------------------------------------------------------------


def test_only_node_is_chosen() -> None:
    only = node("a")
    assert pick([only], ["eu"]) is only


def test_no_node_is_a_clear_error() -> None:
    with pytest.raises(NoRelayAvailable, match=r"allowed regions \(eu\)"):
        pick([], ["eu"])


def test_never_outside_the_allowed_regions() -> None:
    nodes = [node("us1", "us"), node("ap1", "ap")]
    with pytest.raises(NoRelayAvailable):
        pick(nodes, ["eu"], visitor="us")
    with pytest.raises(NoRelayAvailable, match="none"):
        pick(nodes, [], visitor="us")


def test_stale_heartbeat_excluded() -> None:
    fresh, stale = node("fresh", cpu=0.9), node("stale", age=15.01)
    for seed in range(50):
        assert pick([stale, fresh], ["eu"], seed=seed) is fresh
    with pytest.raises(NoRelayAvailable):
        pick([stale], ["eu"])
    assert pick([node("edge", age=15.0)], ["eu"]).id == "edge"  # exactly at the timeout
    assert selection.healthy(node("never", age=NOW), NOW) is False  # registered, never beat


def test_draining_and_urlless_excluded() -> None:
    ok = node("ok", cpu=0.99)
    nodes = [node("drain", draining=True), node("nourl", urls=[]), ok]
    for seed in range(50):
        assert pick(nodes, ["eu"], seed=seed) is ok
    with pytest.raises(NoRelayAvailable):
        pick(nodes[:2], ["eu"])


def test_custom_heartbeat_timeout() -> None:
    old = node("old", age=40)
    assert (
        select_node(
            [old],
            allowed_regions=["eu"],
            visitor_region=None,
            now=NOW,
            heartbeat_timeout=60,
            rng=random.Random(1),
        )
        is old
    )


FLEETS = st.lists(
    st.builds(
        node,
        nid=st.text(alphabet="abcdef0123456789", min_size=1, max_size=6),
        region=st.sampled_from(REGIONS),
        age=st.floats(min_value=-5, max_value=60),
        draining=st.booleans(),
        cpu=st.floats(min_value=0, max_value=1),
        allocations=st.integers(min_value=0, max_value=10_000),
        packet_rate=st.floats(min_value=0, max_value=1e6),
    ),
    max_size=15,
)


@given(
    FLEETS,
    st.lists(st.sampled_from(REGIONS), max_size=4),
    st.none() | st.sampled_from([*REGIONS, "mars"]),
    st.integers(min_value=0, max_value=2**32),
)
def test_property_only_eligible_nodes_are_chosen(
    nodes: list[RelayNode], allowed: list[str], visitor: str | None, seed: int
) -> None:
    ok = [
        n
        for n in nodes
        if n.region in allowed and not n.draining and NOW - n.last_heartbeat <= 15.0
    ]
    if not ok:
        with pytest.raises(NoRelayAvailable):
            pick(nodes, allowed, visitor, seed)
        return
    chosen = pick(nodes, allowed, visitor, seed)
    assert any(chosen is n for n in ok)
    # and it sits in the nearest allowed region that has an eligible node
    ranked = MAP.ranked(visitor, allowed)
    assert chosen.region == next(r for r in ranked if any(n.region == r for n in ok))


# --- nearest region ---------------------------------------------------------------------


def test_prefers_the_visitors_region() -> None:
    nodes = [node("eu1", "eu", cpu=0.0), node("us1", "us", cpu=0.9)]
    for seed in range(20):
        assert pick(nodes, ["eu", "us"], visitor="us", seed=seed).id == "us1"
        assert pick(nodes, ["eu", "us"], visitor="eu", seed=seed).id == "eu1"


def test_falls_back_to_the_next_nearest_allowed_region() -> None:
    nodes = [node("us1", "us"), node("north", "eu-north"), node("ap1", "ap")]
    # eu has nothing; eu's list says eu-north, then us
    assert pick(nodes, ["eu", "eu-north", "us", "ap"], visitor="eu").id == "north"
    assert pick(nodes, ["eu", "us", "ap"], visitor="eu").id == "us1"
    # ap's list says us first
    assert pick(nodes[::2], ["ap", "us", "eu"], visitor="ap", seed=3).id == "ap1"
    assert pick(nodes[:2], ["ap", "us", "eu-north"], visitor="ap").id == "us1"


def test_unknown_or_no_visitor_region_uses_the_tenants_order() -> None:
    nodes = [node("us1", "us"), node("eu1", "eu")]
    assert pick(nodes, ["eu", "us"]).id == "eu1"
    assert pick(nodes, ["us", "eu"]).id == "us1"
    assert pick(nodes, ["us", "eu"], visitor="mars").id == "us1"


def test_ranked() -> None:
    assert MAP.ranked("ap", ["eu", "us", "ap"]) == ["ap", "us", "eu"]
    assert MAP.ranked("eu", ["ap", "eu", "eu"]) == ["eu", "ap"]
    assert MAP.ranked(None, ["us", "eu"]) == ["us", "eu"]
    assert RegionMap().ranked("us", ["eu", "us", "ap"]) == ["us", "eu", "ap"]


def test_region_for_longest_prefix() -> None:
    assert MAP.region_for("81.200.3.4") == "eu-north"
    assert MAP.region_for("81.7.3.4") == "eu"
    assert MAP.region_for("9.9.9.9") == "us"  # the catch-all
    assert MAP.region_for("81.200.3.0/24") == "eu-north"  # a truncated prefix, as stored
    assert MAP.region_for("::ffff:81.200.3.4") == "eu-north"  # IPv4-mapped
    assert MAP.region_for("2001:db8:aa12::/48") == "ap"
    assert MAP.region_for("2001:db8:1::/48") == "eu"
    assert MAP.region_for("2a00::1") is None  # no IPv6 catch-all, no default
    assert MAP.region_for(None) is None
    assert MAP.region_for("not an ip") is None


def test_region_for_hint_and_default() -> None:
    assert MAP.region_for("81.7.3.4", hint="ap") == "ap"
    assert MAP.region_for("81.7.3.4", hint="mars") == "eu"  # unknown hints are ignored
    assert RegionMap().region_for("1.2.3.4", hint="anything") == "anything"
    assert RegionMap(default="eu").region_for("1.2.3.4") == "eu"


def test_region_map_from_config() -> None:
    rm = RegionMap.from_config(
        {"prefixes": {"10.0.0.0/8": "eu"}, "preferences": {"eu": ["us"]}, "default": "us"}
    )
    assert rm.region_for("10.1.2.3") == "eu" and rm.region_for("1.1.1.1") == "us"
    assert rm.ranked("eu", ["us", "eu"]) == ["eu", "us"]
    for bad in (
        {"prefixes": {"nope": "eu"}},
        {"prefixes": {"10.0.0.0/8": 3}},
        {"prefixes": ["10.0.0.0/8"]},
        {"preferences": {"eu": "us"}},
        {"default": 5},
    ):
        with pytest.raises(ValueError):
            RegionMap.from_config(bad)


# --- load and two choices ---------------------------------------------------------------


def test_load_score() -> None:
    assert selection.load_score(node("idle")) == 0.0
    busy = node("b", cpu=0.5, allocations=1000, packet_rate=100_000)
    assert selection.load_score(busy) == pytest.approx(1.5)
    assert selection.load_score(node("n", cpu=float("nan"))) == float("inf")
    assert selection.load_score(node("neg", cpu=-1.0)) == 0.0
    weights = selection.LoadWeights(cpu=0.0, allocations=1.0, packet_rate=0.0)
    assert selection.load_score(busy, weights) == 1000


def test_two_choices_prefers_the_less_loaded_but_spreads() -> None:
    nodes = [node(f"n{i}", cpu=i / 10) for i in range(5)]  # n0 least loaded ... n4 most
    rng = random.Random(1234)
    counts = Counter(
        select_node(nodes, allowed_regions=["eu"], visitor_region="eu", now=NOW, rng=rng).id
        for _ in range(10_000)
    )
    # with 5 nodes, the k-th least loaded (0-based) wins when drawn with a busier one:
    # P = 2 * (4 - k) / 20, i.e. 40%, 30%, 20%, 10%, 0%
    for k, expected in enumerate([0.4, 0.3, 0.2, 0.1, 0.0]):
        assert counts[f"n{k}"] / 10_000 == pytest.approx(expected, abs=0.02)
    assert counts["n4"] == 0  # the busiest is never taken while others are up
    assert counts["n0"] < 10_000  # ... and the idlest is not stampeded


def test_equal_loads_spread_evenly() -> None:
    nodes = [node(f"n{i}", allocations=100) for i in range(4)]
    rng = random.Random(99)
    counts = Counter(
        select_node(nodes, allowed_regions=["eu"], visitor_region=None, now=NOW, rng=rng).id
        for _ in range(8000)
    )
    assert set(counts) == {"n0", "n1", "n2", "n3"}
    for n in counts.values():
        assert n / 8000 == pytest.approx(0.25, abs=0.03)


def test_two_choices_with_one_candidate_draws_nothing() -> None:
    class NoRandom(random.Random):
        def sample(self, *args: object, **kwargs: object) -> list[RelayNode]:  # type: ignore[override]
            raise AssertionError("no draw needed for a single candidate")

    only = node("only")
    assert selection.two_choices([only], NoRandom()) is only
    with pytest.raises(ValueError):
        selection.two_choices([], random.Random())


def test_selection_is_reproducible_with_a_seed() -> None:
    nodes = [node(f"n{i}", cpu=0.1) for i in range(6)]
    first = [pick(nodes, ["eu"], seed=s).id for s in range(30)]
    assert first == [pick(nodes, ["eu"], seed=s).id for s in range(30)]


# --- visitor prefixes -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ip", "expected"),
    [
        ("203.0.113.77", "203.0.113.0/24"),
        ("::ffff:203.0.113.77", "203.0.113.0/24"),
        ("2001:db8:1234:5678::1", "2001:db8:1234::/48"),
        ("fe80::1%eth0", "fe80::/48"),
    ],
)
def test_truncate_ip(ip: str, expected: str) -> None:
    assert truncate_ip(ip) == expected


@pytest.mark.parametrize("bad", ["", "example.com", "300.1.1.1", "1.2.3.4/24"])
def test_truncate_ip_refuses_non_addresses(bad: str) -> None:
    with pytest.raises(ValueError):
        truncate_ip(bad)


@given(st.ip_addresses())
def test_truncate_ip_property(addr: object) -> None:
    text = truncate_ip(str(addr))
    assert text.endswith("/24") or text.endswith("/48")
    assert str(addr) not in text or text.startswith(str(addr) + "/")
