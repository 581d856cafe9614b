"""The default peer denylist, live: a relay started without --allow-peer refuses
CreatePermission and ChannelBind towards internal addresses with 403.

No packet goes anywhere but the relay on loopback: a permission or a channel
is only state in the relay, so even the accepted public addresses used as a
control never see traffic.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.relayproc import RelayProcess, StunClient, TurnError

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]

DENIED_V4 = [
    "127.0.0.1",  # loopback
    "127.255.255.254",
    "10.1.2.3",  # RFC 1918
    "172.16.0.1",
    "172.31.255.254",
    "192.168.1.1",
    "100.64.0.1",  # CGNAT
    "100.127.255.254",
    "169.254.1.1",  # link-local
    "224.0.0.1",  # multicast
    "239.255.255.250",
    "240.0.0.1",  # reserved
    "0.0.0.0",  # unspecified / "this network"
    "255.255.255.255",  # broadcast
]
DENIED_V6 = [
    "::1",
    "::",
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
    "fc00::1",
    "fd12:3456::1",
    "fe80::1",
    "ff02::1",
]
MAPPED = ["::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:192.168.1.1", "::ffff:8.8.8.8"]
# Just outside the denied ranges, or plainly public: these must be accepted,
# which shows the refusals above come from the policy, not a relay that refuses all.
ALLOWED_V4 = ["8.8.8.8", "11.0.0.1", "172.32.0.1", "100.128.0.1", "169.255.0.1"]
ALLOWED_V6 = ["2001:4860:4860::8888"]

FAMILY_V6 = 0x02


class Allocation:
    def __init__(self, client: StunClient, relayed: tuple[str, int]) -> None:
        self.client = client
        self.relayed = relayed
        self.next_channel = 0x4000

    def channel(self) -> int:
        self.next_channel += 1
        return self.next_channel


def _allocation(relay: RelayProcess, family: int | None) -> Iterator[Allocation]:
    with StunClient(relay.address, *relay.credentials("deny")) as client:
        relayed = client.allocate(family=family)
        yield Allocation(client, relayed)
        client.refresh(0)


@pytest.fixture(scope="module")
def alloc4(relay_deny: RelayProcess) -> Iterator[Allocation]:
    yield from _allocation(relay_deny, None)


@pytest.fixture(scope="module")
def alloc6(relay_deny6: RelayProcess) -> Iterator[Allocation]:
    yield from _allocation(relay_deny6, FAMILY_V6)


def refused(alloc: Allocation, call: str, host: str) -> int:
    """Run CreatePermission or ChannelBind towards host; return the error code."""
    with pytest.raises(TurnError) as err:
        if call == "permission":
            # A real port, so that only the address can be the reason for a refusal.
            alloc.client.create_permission(host, 5004)
        else:
            alloc.client.channel_bind(alloc.channel(), host, 5004)
    assert not alloc.client.unsigned_errors, (
        f"error response without valid MESSAGE-INTEGRITY: {alloc.client.unsigned_errors}"
    )
    code = err.value.response.error_code
    assert code is not None
    return code


def test_ipv4_allocation(alloc4: Allocation, relay_deny: RelayProcess):
    assert alloc4.relayed[0] == "127.0.0.1"
    assert alloc4.relayed[1] in relay_deny.relay_ports


@pytest.mark.parametrize("call", ["permission", "channel"])
@pytest.mark.parametrize("host", DENIED_V4)
def test_denied_ipv4_peer(alloc4: Allocation, call: str, host: str):
    assert refused(alloc4, call, host) == 403


@pytest.mark.parametrize("call", ["permission", "channel"])
@pytest.mark.parametrize("host", MAPPED + DENIED_V6)
def test_ipv6_peer_on_ipv4_allocation(alloc4: Allocation, call: str, host: str):
    # 403 (denied) or 443 (peer address family mismatch); never a success.
    assert refused(alloc4, call, host) in (403, 443)


@pytest.mark.parametrize("call", ["permission", "channel"])
@pytest.mark.parametrize("host", ALLOWED_V4)
def test_public_ipv4_peer_accepted(alloc4: Allocation, call: str, host: str):
    if call == "permission":
        alloc4.client.create_permission(host, 5004)
    else:
        alloc4.client.channel_bind(alloc4.channel(), host, 5004)


def test_ipv6_allocation(alloc6: Allocation, relay_deny6: RelayProcess):
    assert alloc6.relayed[0] == "::1"
    assert alloc6.relayed[1] in relay_deny6.relay_ports


@pytest.mark.parametrize("call", ["permission", "channel"])
@pytest.mark.parametrize("host", DENIED_V6)
def test_denied_ipv6_peer(alloc6: Allocation, call: str, host: str):
    assert refused(alloc6, call, host) == 403


@pytest.mark.parametrize("call", ["permission", "channel"])
@pytest.mark.parametrize("host", ["127.0.0.1", "8.8.8.8"])
def test_ipv4_peer_on_ipv6_allocation(alloc6: Allocation, call: str, host: str):
    assert refused(alloc6, call, host) in (403, 443)


@pytest.mark.parametrize("call", ["permission", "channel"])
@pytest.mark.parametrize("host", ALLOWED_V6)
def test_public_ipv6_peer_accepted(alloc6: Allocation, call: str, host: str):
    if call == "permission":
        alloc6.client.create_permission(host, 5004)
    else:
        alloc6.client.channel_bind(alloc6.channel(), host, 5004)
