"""--coalesce-us, live: a relay that waits after a busy wake-up and reads again.

A real relay process on loopback with ``--coalesce-us``, a TURN client over UDP
(tests/relayproc.StunClient) with a channel to a plain UDP peer. Packets sent far apart must
not make the relay wait at all (a quiet node sleeps until a packet wakes it); a burst both
ways must make it wait, and lose or reorder nothing; the waits, and those that found nothing,
are counted on /metrics.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from tests.relayproc import RelayProcess, RelaySpec, StunClient, free_tcp_port, scrape

WAITS = "clickacall_relay_coalesce_waits_total"
IDLE = "clickacall_relay_coalesce_idle_total"
BURST = 2000  # datagrams each way
CHUNK = 100  # of them sent before the test reads
GAP = 50e-6  # seconds between two sends: much closer together than 4 waits of 300 us


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RelayProcess, int]]:
    mport = free_tcp_port()
    spec = RelaySpec(extra_args=("--coalesce-us", "300", "--metrics", f"127.0.0.1:{mport}"))
    proc = RelayProcess(spec, tmp_path_factory.mktemp("coalesce"), impl="ours")
    proc.start()
    try:
        yield proc, mport
    finally:
        proc.stop()


def settled(port: int, name: str, timeout: float = 5.0) -> float:
    """The metric once two scrapes 1.2 s apart agree (the board is published each second;
    the engine's counters are live)."""
    deadline = time.monotonic() + timeout
    value = scrape(port).get(name, -1.0)
    while time.monotonic() < deadline:
        time.sleep(1.2)
        again = scrape(port).get(name, -1.0)
        if again == value:
            return value
        value = again
    return value


@pytest.mark.timeout(60)
def test_far_apart_packets_never_wait_and_a_burst_waits_and_loses_nothing(
    relay: tuple[RelayProcess, int],
) -> None:
    proc, mport = relay
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.settimeout(2)
    with peer, StunClient(proc.address, *proc.credentials("c")) as client:
        relayed = client.allocate()
        client.channel_bind(0x4001, *peer.getsockname())
        waits = settled(mport, WAITS)
        assert waits >= 0, "the exposition has no coalesce_waits"

        # 10 packets each way, all 50 ms apart: each is read on its own wake-up, none waits
        time.sleep(0.05)
        for i in range(10):
            client.send_channel(0x4001, b"slow %d" % i)
            assert peer.recvfrom(100) == (b"slow %d" % i, relayed)
            time.sleep(0.05)
            peer.sendto(b"back %d" % i, relayed)
            assert client.recv_channel() == (0x4001, b"back %d" % i)
            time.sleep(0.05)
        assert settled(mport, WAITS) == waits

        # packets both ways 50 us apart, in chunks the test's own sockets hold: the relay
        # waits, and every datagram arrives, in order
        got_peer: list[bytes] = []
        got_client: list[bytes] = []
        for start in range(0, BURST, CHUNK):
            for i in range(start, start + CHUNK):
                client.send_channel(0x4001, b"%06d" % i)
                peer.sendto(b"%06d" % i, relayed)
                pace = time.perf_counter() + GAP  # a trickle, as a call's packets come
                while time.perf_counter() < pace:
                    pass
            got_peer += [peer.recvfrom(100)[0] for _ in range(CHUNK)]
            got_client += [client.recv_channel()[1] for _ in range(CHUNK)]
        assert got_peer == [b"%06d" % i for i in range(BURST)]
        assert got_client == got_peer
    after = settled(mport, WAITS)
    assert after > waits
    # the last wait of the burst found nothing: the worker went back to sleeping
    assert scrape(mport)[IDLE] >= 1
