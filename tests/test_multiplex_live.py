"""--multiplex-peer, live: one shared peer-facing socket per worker.

A real relay process on loopback with ``--multiplex-peer``, TURN clients over UDP
(tests/relayproc.StunClient: long-term credentials, ChannelBind, Send/Data indications) and
plain UDP peers. Every allocation gets the shared socket's relayed address; what a peer sends
there reaches the one allocation that owns the peer's IP:port, through its channel or as a
Data indication; another allocation's ChannelBind to an owned peer gets 403 and its Send
indications are dropped and counted; a datagram from a peer nobody owns is dropped and
counted; an allocation's end frees its peers. The in-process tests at the end drive
:class:`relay.server.FastPathBackend` directly for what takes minutes live (a permission's
expiry).
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import Iterator

import pytest

from ext import _fastpath
from relay.server import FastPathBackend, PortPool
from tests.relayproc import (
    A_LIFETIME,
    A_REQUESTED_TRANSPORT,
    A_XOR_RELAYED_ADDRESS,
    ALLOCATE,
    RelayProcess,
    RelaySpec,
    StunClient,
    TurnError,
    decode_xor_address,
    free_tcp_port,
    scrape,
)

A_EVEN_PORT = 0x0018
A_RESERVATION_TOKEN = 0x0022


UNKNOWN = 'clickacall_relay_dropped_packets_total{reason="unknown_peer",transport="udp"}'
TAKEN = 'clickacall_relay_dropped_packets_total{reason="peer_taken",transport="udp"}'
MUXED = "clickacall_relay_multiplexed_allocations"


def wait_metric(port: int, name: str, want: float, timeout: float = 5.0) -> float:
    """The metric once it reaches ``want`` (the board is published about once a second)."""
    deadline = time.monotonic() + timeout
    while True:
        value = scrape(port).get(name, 0.0)
        if value >= want or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


class Mux:
    def __init__(self, relay: RelayProcess, metrics_port: int) -> None:
        self.relay = relay
        self.metrics_port = metrics_port


@pytest.fixture(scope="module")
def mux(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mux]:
    mport = free_tcp_port()
    spec = RelaySpec(extra_args=("--multiplex-peer", "--metrics", f"127.0.0.1:{mport}"))
    proc = RelayProcess(spec, tmp_path_factory.mktemp("mux"), impl="ours")
    proc.start()
    try:
        yield Mux(proc, mport)
    finally:
        proc.stop()


def peer() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(2)
    return sock


def silent(sock: socket.socket, wait: float = 0.3) -> bool:
    """Nothing arrives on ``sock`` within ``wait`` seconds."""
    sock.settimeout(wait)
    try:
        sock.recv(65535)
    except TimeoutError:
        return True
    finally:
        sock.settimeout(2)
    return False


def client(mux: Mux, name: str) -> StunClient:
    return StunClient(mux.relay.address, *mux.relay.credentials(name))


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_two_allocations_share_the_relayed_address_and_relay_both_ways(mux: Mux) -> None:
    p1, p2 = peer(), peer()
    with client(mux, "a") as a, client(mux, "b") as b, p1, p2:
        relayed_a = a.allocate()
        relayed_b = b.allocate()
        # the shared socket's address, on a port of the relay's range, for both
        assert relayed_a == relayed_b
        assert relayed_a[0] == "127.0.0.1" and relayed_a[1] in mux.relay.relay_ports
        # a: a channel to p1; b: Send indications to p2 (a permission, no channel)
        a.channel_bind(0x4001, *p1.getsockname())
        b.create_permission("127.0.0.1")
        a.send_channel(0x4001, b"a to p1")
        data, src = p1.recvfrom(100)
        assert (data, src) == (b"a to p1", relayed_a)
        b.send_indication(*p2.getsockname(), b"b to p2")
        data, src = p2.recvfrom(100)
        assert (data, src) == (b"b to p2", relayed_b)
        # back: p1's datagram reaches a on its channel, p2's reaches b as a Data indication
        p1.sendto(b"p1 to a", relayed_a)
        assert a.recv_channel() == (0x4001, b"p1 to a")
        p2.sendto(b"p2 to b", relayed_b)
        assert b.recv_data() == (p2.getsockname(), b"p2 to b")
        # and to nobody else: the demultiplexing is by the peer's exact IP:port
        assert silent(a.sock) and silent(b.sock)
        for _ in range(20):  # a few more each way, interleaved
            p1.sendto(b"x1", relayed_a)
            p2.sendto(b"x2", relayed_b)
        for _ in range(20):
            assert a.recv_channel() == (0x4001, b"x1")
            assert b.recv_data() == (p2.getsockname(), b"x2")
        assert wait_metric(mux.metrics_port, MUXED, 2) == 2
        a.refresh(0)
        b.refresh(0)
    deadline = time.monotonic() + 5
    while scrape(mux.metrics_port).get(MUXED) != 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert scrape(mux.metrics_port).get(MUXED) == 0


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_a_peer_owned_by_another_allocation_is_refused(mux: Mux) -> None:
    p1 = peer()
    with client(mux, "owner") as a, client(mux, "other") as c, p1:
        relayed = a.allocate()
        c.allocate()
        a.channel_bind(0x4001, *p1.getsockname())
        # ChannelBind of another allocation to the same IP:port: 403, with the mode's reason
        with pytest.raises(TurnError) as refused:
            c.channel_bind(0x4001, *p1.getsockname())
        assert refused.value.response.error_code == 403
        assert "multiplex" in refused.value.response.error_reason
        # and its Send indications to it are dropped and counted, never sent
        before = scrape(mux.metrics_port).get(TAKEN, 0.0)
        c.create_permission("127.0.0.1")
        c.send_indication(*p1.getsockname(), b"not yours")
        assert silent(p1)
        assert wait_metric(mux.metrics_port, TAKEN, before + 1) == before + 1
        # the shared socket's own address is nobody's peer
        with pytest.raises(TurnError) as own:
            c.channel_bind(0x4002, *relayed)
        assert own.value.response.error_code == 403
        # the owner still has it, both ways
        a.send_channel(0x4001, b"still mine")
        assert p1.recvfrom(100) == (b"still mine", relayed)
        p1.sendto(b"back", relayed)
        assert a.recv_channel() == (0x4001, b"back")
        assert silent(c.sock)
        a.refresh(0)
        c.refresh(0)


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_an_unknown_peers_datagram_is_dropped_and_counted(mux: Mux) -> None:
    stranger = peer()
    with client(mux, "quiet") as b, stranger:
        relayed = b.allocate()
        # a permission for the stranger's IP is not enough: the shared socket tells
        # allocations apart by IP:port, learnt when the client sends or binds a channel
        b.create_permission("127.0.0.1")
        before = scrape(mux.metrics_port).get(UNKNOWN, 0.0)
        for _ in range(3):
            stranger.sendto(b"who am I", relayed)
        assert wait_metric(mux.metrics_port, UNKNOWN, before + 3) == before + 3
        assert silent(b.sock)
        # once the client sent to it, the same peer is delivered
        b.send_indication(*stranger.getsockname(), b"hello")
        assert stranger.recvfrom(100) == (b"hello", relayed)
        stranger.sendto(b"now known", relayed)
        assert b.recv_data() == (stranger.getsockname(), b"now known")
        b.refresh(0)


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_the_end_of_an_allocation_frees_its_peers(mux: Mux) -> None:
    p1 = peer()
    with client(mux, "first") as a, client(mux, "second") as d, p1:
        relayed = a.allocate()
        d.allocate()
        a.channel_bind(0x4001, *p1.getsockname())
        with pytest.raises(TurnError):
            d.channel_bind(0x4003, *p1.getsockname())
        a.refresh(0)  # deleted: its peers go with it
        before = scrape(mux.metrics_port).get(UNKNOWN, 0.0)
        p1.sendto(b"anyone?", relayed)
        assert wait_metric(mux.metrics_port, UNKNOWN, before + 1) == before + 1
        d.channel_bind(0x4003, *p1.getsockname())
        p1.sendto(b"to d", relayed)
        assert d.recv_channel() == (0x4003, b"to d")
        d.send_channel(0x4003, b"from d")
        assert p1.recvfrom(100) == (b"from d", relayed)
        d.refresh(0)


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_reserving_even_port_and_reservation_token_get_400(mux: Mux) -> None:
    """No next port to hold, nor a held one to claim; a plain EVEN-PORT (R bit clear, which
    coturn's uclient sends at random) is served: the shared socket's port is even."""
    base = [(A_REQUESTED_TRANSPORT, struct.pack("!B3x", 17)), (A_LIFETIME, struct.pack("!I", 600))]
    with client(mux, "rtcp") as c:
        for extra in ((A_EVEN_PORT, b"\x80"), (A_RESERVATION_TOKEN, b"12345678")):
            with pytest.raises(TurnError) as refused:
                c.request(ALLOCATE, lambda txid, extra=extra: [*base, extra])  # type: ignore[misc]
            assert refused.value.response.error_code == 400
            assert "multiplex" in refused.value.response.error_reason
        relayed = c.allocate()  # a plain Allocate is served
        c.refresh(0)
    with client(mux, "even") as c:
        reply = c.request(ALLOCATE, lambda txid: [*base, (A_EVEN_PORT, b"\0")])
        value = reply.get(A_XOR_RELAYED_ADDRESS)
        assert value is not None
        assert decode_xor_address(value, reply.txid) == relayed and relayed[1] % 2 == 0
        c.refresh(0)


# --- the backend in process: what the TURN core's expiries do to the peer table --------------


@pytest.fixture
def backend() -> Iterator[FastPathBackend]:
    loop = asyncio.new_event_loop()
    engine = _fastpath.Engine(16)
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.setblocking(False)
    engine.add_listener(listener.fileno())
    be = FastPathBackend(
        engine,
        loop,
        {socket.AF_INET: "127.0.0.1"},
        {socket.AF_INET: "127.0.0.1"},
        PortPool(41000, 41099),
        multiplex=True,
    )
    try:
        yield be
    finally:
        be.close()
        listener.close()
        loop.close()


def test_backend_peers_go_with_their_permission_or_channel(backend: FastPathBackend) -> None:
    a = backend.open_relay(0, ("127.0.0.1", 5000), socket.AF_INET)
    b = backend.open_relay(0, ("127.0.0.1", 5001), socket.AF_INET)
    assert a is not None and b is not None and a.address == b.address
    mux = backend.allocs[a.handle].mux
    p, q = ("127.0.0.1", 7000), ("127.0.0.1", 7001)
    backend.add_permission(a.handle, "127.0.0.1")
    assert backend.claim_peer(a.handle, p) and backend.claim_peer(a.handle, q)
    backend.bind_channel(a.handle, 0x4000, q)
    assert not backend.claim_peer(b.handle, p)
    assert backend.engine.mux_owner(mux, *p) == a.handle
    # the permission expires: p (no channel) is freed, q (a channel) stays a's
    backend.remove_permission(a.handle, "127.0.0.1")
    assert backend.engine.mux_owner(mux, *p) == -1
    assert backend.engine.mux_owner(mux, *q) == a.handle
    assert backend.claim_peer(b.handle, p)
    # the channel expires too: q is freed
    backend.unbind_channel(a.handle, 0x4000, q)
    assert backend.engine.mux_owner(mux, *q) == -1
    # b's end frees p; the shared socket stays open for the others
    backend.close_relay(b.handle)
    assert backend.engine.mux_owner(mux, *p) == -1
    assert backend.shared[socket.AF_INET][0].fileno() >= 0
    assert int(backend.engine.counters[_fastpath.COUNTER_NAMES.index("mux_allocations")]) == 1


def test_backend_holds_no_port_in_mux_mode(backend: FastPathBackend) -> None:
    kw = {"even_port": True, "reserve_next": True}
    assert backend.open_relay(0, ("127.0.0.1", 5000), socket.AF_INET, **kw) is None
    held = backend.open_relay(0, ("127.0.0.1", 5001), socket.AF_INET, reservation=b"12345678")
    assert held is None
    even = backend.open_relay(0, ("127.0.0.1", 5002), socket.AF_INET, even_port=True)
    assert even is not None and even.address[1] % 2 == 0 and even.reservation is None
