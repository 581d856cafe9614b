"""The forwarding engine on real loopback sockets, driven directly (no TURN core)."""

from __future__ import annotations

import socket
import struct
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ext import _fastpath
from ext import _stun as stun

NAMES = _fastpath.COUNTER_NAMES


def udp(host: str = "127.0.0.1") -> socket.socket:
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.bind((host, 0))
    s.settimeout(2.0)
    return s


class Rig:
    """listener + relayed socket owned by an engine, a client and a peer around them."""

    def __init__(self, host: str = "127.0.0.1", batch: int = 8, gso: bool = True) -> None:
        self.engine = _fastpath.Engine(8, batch=batch, gso=gso)
        self.listener = udp(host)
        self.listener.setblocking(False)
        self.relay = udp(host)
        self.relay.setblocking(False)
        self.client = udp(host)
        self.peer = udp(host)
        self.idx = self.engine.add_listener(self.listener.fileno())
        c = self.client.getsockname()
        self.slot = self.engine.open_slot(self.relay.fileno(), self.idx, c[0], c[1])
        self.peer_addr = self.peer.getsockname()[:2]

    def counter(self, name: str) -> int:
        return int(self.engine.counters[NAMES.index(name)])

    def close(self) -> None:
        for s in (self.listener, self.relay, self.client, self.peer):
            s.close()


@pytest.fixture(params=["127.0.0.1", "::1"])
def rig(request: pytest.FixtureRequest) -> Rig:
    try:
        r = Rig(request.param)
    except OSError as exc:  # pragma: no cover - host without IPv6 loopback
        pytest.skip(f"no {request.param}: {exc}")
    yield r
    r.close()


def channel_data(chan: int, payload: bytes) -> bytes:
    return struct.pack("!HH", chan, len(payload)) + payload


def test_channel_data_both_ways(rig: Rig) -> None:
    e = rig.engine
    e.add_permission(rig.slot, rig.peer_addr[0])
    e.bind_channel(rig.slot, 0x4001, rig.peer_addr[0], rig.peer_addr[1])
    payloads = [bytes([i]) * (i * 37 % 1300 + 1) for i in range(20)]
    for p in payloads:
        rig.client.sendto(
            channel_data(0x4001, p) + b"\x00" * (-len(p) % 4), rig.listener.getsockname()
        )
    assert e.drain_listener(rig.idx) == []
    got = [rig.peer.recvfrom(2048) for _ in payloads]
    assert [g[0] for g in got] == payloads
    assert {g[1][:2] for g in got} == {rig.relay.getsockname()[:2]}
    for p in payloads:
        rig.peer.sendto(p, rig.relay.getsockname())
    assert e.drain_relay(rig.slot) == len(payloads)
    back = [rig.client.recvfrom(2048)[0] for _ in payloads]
    assert back == [channel_data(0x4001, p) for p in payloads]
    row = np.frombuffer(e.slot_counters, dtype=np.int64).reshape(e.capacity, -1)[rig.slot]
    assert row[0] == len(payloads) and row[2] == len(payloads)
    assert row[1] == row[3] == sum(map(len, payloads))


# Runs that share one UDP_SEGMENT message towards the peer: 100 x 5 ended by the shorter 60;
# 100 x 3 (a longer datagram starts a new message); 200 x 2; 1300 twice alone (above the
# 1232-byte segment limit); 1232 x 3 ended by 7. Towards the client every datagram is 4 bytes
# longer (ChannelData header), so the 1232s go alone too: 4 + 3 GSO messages in all.
GSO_SIZES = [100] * 5 + [60] + [100] * 3 + [200, 200] + [1300, 1300] + [1232] * 3 + [7]


def _both_ways(r: Rig, sizes: list[int]) -> list[bytes]:
    """Relay datagrams of ``sizes`` client -> peer and back, one drain each way; assert each
    side got exactly those datagrams in order, and return the payloads."""
    e = r.engine
    e.add_permission(r.slot, r.peer_addr[0])
    e.bind_channel(r.slot, 0x4001, r.peer_addr[0], r.peer_addr[1])
    payloads = [bytes([i + 1]) * n for i, n in enumerate(sizes)]
    for p in payloads:
        r.client.sendto(channel_data(0x4001, p) + b"\x00" * (-len(p) % 4), r.listener.getsockname())
    assert e.drain_listener(r.idx) == []
    assert [r.peer.recvfrom(4096)[0] for _ in payloads] == payloads
    for p in payloads:
        r.peer.sendto(p, r.relay.getsockname())
    assert e.drain_relay(r.slot) == len(payloads)
    assert [r.client.recvfrom(4096)[0] for _ in payloads] == [
        channel_data(0x4001, p) for p in payloads
    ]
    for s in (r.peer, r.client):
        s.setblocking(False)
        with pytest.raises(BlockingIOError):  # nothing more: no datagram was merged or split
            s.recvfrom(4096)
    return payloads


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
@pytest.mark.parametrize("gso", [True, False])
def test_gso_keeps_every_datagram_and_its_order(host: str, gso: bool) -> None:
    if gso and not _fastpath.gso_supported():  # pragma: no cover - kernel before 4.18
        pytest.skip("kernel without UDP_SEGMENT")
    r = Rig(host, batch=64, gso=gso)
    try:
        _both_ways(r, GSO_SIZES)
        assert r.engine.gso is gso
        assert r.counter("gso_messages") == (7 if gso else 0)
        assert r.counter("gso_fallbacks") == r.counter("drop_send_failed") == 0
        assert r.counter("client_packets") == r.counter("peer_packets") == len(GSO_SIZES)
    finally:
        r.close()


def test_gso_refused_by_the_route_is_sent_one_by_one() -> None:
    """A socket that sends without UDP checksums cannot segment (EINVAL): every GSO message
    is sent again datagram by datagram, counted, and GSO stays on for other sockets."""
    if not _fastpath.gso_supported():  # pragma: no cover - kernel before 4.18
        pytest.skip("kernel without UDP_SEGMENT")
    r = Rig(batch=64)
    try:
        r.relay.setsockopt(socket.SOL_SOCKET, 11, 1)  # SO_NO_CHECK
        _both_ways(r, GSO_SIZES)
        assert r.counter("gso_fallbacks") == 4  # the four messages towards the peer
        assert r.counter("drop_send_failed") == 0
        assert r.engine.gso is True
    finally:
        r.close()


def test_data_indication_when_no_channel(rig: Rig) -> None:
    e = rig.engine
    e.add_permission(rig.slot, rig.peer_addr[0])
    for size in (1, 2, 3, 4, 5, 1000):
        rig.peer.sendto(b"x" * size, rig.relay.getsockname())
        assert e.drain_relay(rig.slot) == 1
        raw = rig.client.recvfrom(2048)[0]
        msg = stun.parse(raw)
        assert (msg.method, msg.cls) == (stun.DATA, stun.INDICATION)
        assert msg.get(stun.DATA_ATTR) == b"x" * size
        fam, host, port = stun.decode_xor_address(
            msg.get(stun.XOR_PEER_ADDRESS), msg.transaction_id
        )
        assert (host, port) == rig.peer_addr
    assert rig.counter("data_indications") == 6


def test_drops_are_counted(rig: Rig) -> None:
    e = rig.engine
    lst = rig.listener.getsockname()
    # no channel bound
    rig.client.sendto(channel_data(0x4002, b"abc"), lst)
    # length field larger than the datagram
    rig.client.sendto(struct.pack("!HH", 0x4002, 100) + b"abc", lst)
    # too short and a first byte nobody uses
    rig.client.sendto(b"\x40", lst)
    rig.client.sendto(b"\xff" * 30, lst)
    e.drain_listener(rig.idx)
    assert rig.counter("drop_no_channel") == 1
    assert rig.counter("drop_malformed") == 3
    # channel without permission (expired permission): nothing leaves
    e.bind_channel(rig.slot, 0x4003, rig.peer_addr[0], rig.peer_addr[1])
    rig.client.sendto(channel_data(0x4003, b"abc"), lst)
    e.drain_listener(rig.idx)
    assert rig.counter("drop_no_permission") == 1
    # a peer without permission gets nothing through either
    rig.peer.sendto(b"hello", rig.relay.getsockname())
    assert e.drain_relay(rig.slot) == 0
    assert rig.counter("drop_no_permission") == 2
    rig.client.settimeout(0.1)
    with pytest.raises(TimeoutError):
        rig.client.recvfrom(100)


def test_stun_goes_up(rig: Rig) -> None:
    req = stun.encode(stun.BINDING, stun.REQUEST, b"123456789012", [])
    rig.client.sendto(req, rig.listener.getsockname())
    got = rig.engine.drain_listener(rig.idx)
    assert got == [(req, rig.client.getsockname()[:2])]


def test_bandwidth_cap_drops_excess(rig: Rig) -> None:
    e = rig.engine
    e.add_permission(rig.slot, rig.peer_addr[0])
    e.bind_channel(rig.slot, 0x4001, rig.peer_addr[0], rig.peer_addr[1])
    e.set_rate(rig.slot, 1)  # burst floor is 64 KiB
    for _ in range(8):
        rig.client.sendto(channel_data(0x4001, b"z" * 1000), rig.listener.getsockname())
    e.drain_listener(rig.idx)
    for _ in range(100):
        rig.client.sendto(channel_data(0x4001, b"z" * 1000), rig.listener.getsockname())
        e.drain_listener(rig.idx)
    assert rig.counter("drop_over_bandwidth") >= 100 - 65


def test_unbind_and_close_free_entries() -> None:
    r = Rig()
    try:
        e = r.engine
        e.add_permission(r.slot, r.peer_addr[0])
        e.bind_channel(r.slot, 0x4001, *r.peer_addr)
        assert e.table_entries == 3
        assert e.unbind_channel(r.slot, 0x4001, *r.peer_addr)
        assert e.remove_permission(r.slot, r.peer_addr[0])
        assert e.table_entries == 0
        e.close_slot(r.slot)
        assert e.active_slots == 0
        with pytest.raises(KeyError):
            e.drain_relay(r.slot)
    finally:
        r.close()


def test_table_grows_and_shrinks() -> None:
    e = _fastpath.Engine(4000)
    lsock = udp()
    try:
        idx = e.add_listener(lsock.fileno())
        slots = [e.open_slot(-1, idx, "127.0.0.1", 10000 + i) for i in range(4000)]
        for i, s in enumerate(slots):
            e.add_permission(s, f"10.{i >> 8}.{i & 255}.1")
            e.bind_channel(s, 0x4000 + (i % 4096), f"10.{i >> 8}.{i & 255}.1", 5000)
        assert e.table_entries == 12000
        for i, s in enumerate(slots):
            assert e.remove_permission(s, f"10.{i >> 8}.{i & 255}.1")
            assert e.unbind_channel(s, 0x4000 + (i % 4096), f"10.{i >> 8}.{i & 255}.1", 5000)
            e.close_slot(s)
        assert e.table_entries == 0 and e.active_slots == 0
        with pytest.raises(OverflowError):
            for _ in range(4001):
                e.open_slot(-1, idx, "127.0.0.1", 1)
    finally:
        lsock.close()


def test_bad_arguments_raise_cleanly() -> None:
    e = _fastpath.Engine(2)
    with pytest.raises(ValueError):
        e.drain_listener(0)
    with pytest.raises(ValueError):
        _fastpath.Engine(0)
    lsock = udp()
    try:
        idx = e.add_listener(lsock.fileno())
        with pytest.raises(ValueError):
            e.open_slot(-1, idx, "not an ip", 1)
        slot = e.open_slot(-1, idx, "127.0.0.1", 1)
        with pytest.raises(ValueError):
            e.bind_channel(slot, 0x3FFF, "127.0.0.1", 1)
        with pytest.raises(ValueError):
            e.add_permission(slot, "::zz")
    finally:
        lsock.close()


@settings(max_examples=300, deadline=None)
@given(packets=st.lists(st.binary(min_size=0, max_size=1500), min_size=1, max_size=20))
def test_fuzz_listener_never_crashes_and_counts(packets: list[bytes]) -> None:
    r = Rig()
    try:
        e = r.engine
        e.add_permission(r.slot, r.peer_addr[0])
        e.bind_channel(r.slot, 0x4001, *r.peer_addr)
        for p in packets:
            r.client.sendto(p, r.listener.getsockname())
        stun_up = e.drain_listener(r.idx)
        handled = (
            len(stun_up)
            + r.counter("client_packets")
            + sum(r.counter(n) for n in NAMES if n.startswith("drop_"))
        )
        # every datagram either went up as STUN, was forwarded, or was counted as dropped
        # (empty datagrams are malformed too)
        assert handled == len(packets)
        assert r.counter("stun_in") == len(stun_up) == sum(1 for p in packets if p and p[0] < 4)
    finally:
        r.close()


def test_drain_relays_through_the_engines_epoll() -> None:
    rigs = [Rig() for _ in range(3)]
    try:
        # one engine, three allocations: reuse the first rig's engine and listener
        e = rigs[0].engine
        slots = [rigs[0].slot]
        for r in rigs[1:]:
            c = r.client.getsockname()
            # the other rigs' relayed sockets join engine 0 (their own engine is unused)
            slots.append(e.open_slot(r.relay.fileno(), rigs[0].idx, c[0], c[1]))
        for r, slot in zip(rigs, slots, strict=True):
            e.add_permission(slot, r.peer_addr[0])
        for r in rigs:  # 30 datagrams through an engine whose batch holds 8
            for k in range(10):
                r.peer.sendto(b"ping %d" % k, r.relay.getsockname())
        import select

        assert select.select([e.epoll_fd], [], [], 2.0)[0]
        time.sleep(0.05)
        assert e.drain_relays() == 30
        for r in rigs:
            got = [stun.parse(r.client.recvfrom(200)[0]).get(stun.DATA_ATTR) for _ in range(10)]
            assert got == [b"ping %d" % k for k in range(10)]
        assert e.drain_relays() == 0
        sends = int(e.counters[NAMES.index("send_calls")])
        assert sends <= 5  # gathered across sockets: ceil(30 / 8) sendmmsg calls, not 30
    finally:
        for r in rigs:
            r.close()


def test_a_lone_datagram_leaves_with_one_send_call_and_a_refused_one_is_counted() -> None:
    """A call's relayed socket has a datagram per batch: it leaves with one send call, and a
    send the kernel refuses (a broadcast peer without SO_BROADCAST: EACCES) is dropped and
    counted, never raised, while the next datagram still goes."""
    r = Rig()
    try:
        e = r.engine
        for ip in ("127.0.0.1", "255.255.255.255"):
            e.add_permission(r.slot, ip)
        e.bind_channel(r.slot, 0x4001, *r.peer_addr)
        e.bind_channel(r.slot, 0x4002, "255.255.255.255", 9)
        before = r.counter("send_calls")
        r.client.sendto(channel_data(0x4001, b"one"), r.listener.getsockname())
        time.sleep(0.05)
        assert e.drain_listener(r.idx) == []
        assert r.peer.recvfrom(100) == (b"one", r.relay.getsockname())
        assert r.counter("send_calls") - before == 1
        r.client.sendto(channel_data(0x4002, b"refused"), r.listener.getsockname())
        r.client.sendto(channel_data(0x4001, b"two"), r.listener.getsockname())
        time.sleep(0.05)
        e.drain_listener(r.idx)  # the same socket: one sendmmsg of two, the first refused
        assert r.counter("drop_send_failed") == 1
        assert r.peer.recvfrom(100) == (b"two", r.relay.getsockname())
        r.client.sendto(channel_data(0x4002, b"refused"), r.listener.getsockname())
        time.sleep(0.05)
        e.drain_listener(r.idx)  # alone
        assert r.counter("drop_send_failed") == 2
        assert r.counter("client_packets") == 4
    finally:
        r.close()


def test_many_channels_per_allocation_grow_the_binding_array() -> None:
    r = Rig()
    try:
        e = r.engine  # 8 slots: starts with 24 bindings
        for chan in range(0x4000, 0x4000 + 300):
            e.bind_channel(r.slot, chan, "127.0.0.1", 20000 + chan - 0x4000)
        e.add_permission(r.slot, "127.0.0.1")
        r.peer.sendto(b"late", r.relay.getsockname())  # from r.peer's port: no channel for it
        r.client.sendto(channel_data(0x4000 + 299, b"x"), r.listener.getsockname())
        e.drain_listener(r.idx)
        assert r.counter("client_packets") == 1
        for chan in range(0x4000, 0x4000 + 300):
            assert e.unbind_channel(r.slot, chan, "127.0.0.1", 20000 + chan - 0x4000)
        assert e.table_entries == 1
    finally:
        r.close()


# --- a shared peer-facing socket (--multiplex-peer) ------------------------------------------


def test_shared_socket_demultiplexes_by_peer_address_and_port() -> None:
    """Two slots on one shared socket: a peer's datagram goes to the slot that claimed its
    IP:port (channel or Data indication), a claim of another's peer fails, a stranger's
    datagram is dropped as unknown_peer, both slots' sends leave in one sendmmsg from the
    shared address, and closing one slot leaves the socket to the other."""
    e = _fastpath.Engine(8, batch=16)
    listener, shared = udp(), udp()
    listener.setblocking(False)
    shared.setblocking(False)
    c1, c2, p1, p2, stranger = udp(), udp(), udp(), udp(), udp()
    try:
        li = e.add_listener(listener.fileno())
        mux = e.add_mux(shared.fileno())
        s1 = e.open_slot(-1, li, *c1.getsockname(), mux=mux)
        s2 = e.open_slot(-1, li, *c2.getsockname(), mux=mux)
        count = lambda name: int(e.counters[NAMES.index(name)])  # noqa: E731
        assert count("mux_allocations") == 2
        assert e.mux_claim(mux, s1, *p1.getsockname()) == s1
        assert e.mux_claim(mux, s2, *p2.getsockname()) == s2
        assert e.mux_claim(mux, s2, *p1.getsockname()) == s1  # p1 is s1's
        for s in (s1, s2):
            e.add_permission(s, "127.0.0.1")
        e.bind_channel(s1, 0x4001, *p1.getsockname())
        p1.sendto(b"to s1", shared.getsockname())
        p2.sendto(b"to s2", shared.getsockname())
        stranger.sendto(b"nobody's", shared.getsockname())
        time.sleep(0.05)
        assert e.drain_relays() == 2
        assert c1.recv(100) == b"\x40\x01\x00\x05to s1"
        msg = stun.parse(c2.recv(200))
        assert msg.method == stun.DATA and msg.get(stun.DATA_ATTR) == b"to s2"
        assert count("drop_unknown_peer") == 1
        # client -> peer of both slots: ChannelData through the listener, one sendmmsg
        e.bind_channel(s2, 0x4002, *p2.getsockname())
        before = count("send_calls")
        c1.sendto(b"\x40\x01\x00\x03abc", listener.getsockname())
        c2.sendto(b"\x40\x02\x00\x03xyz", listener.getsockname())
        time.sleep(0.05)
        assert e.drain_listener(li) == []
        assert count("send_calls") - before == 1
        assert p1.recvfrom(100) == (b"abc", shared.getsockname())
        assert p2.recvfrom(100) == (b"xyz", shared.getsockname())
        # s1 goes: its peer is released, s2 still reads the shared socket
        e.unbind_channel(s1, 0x4001, *p1.getsockname())
        e.remove_permission(s1, "127.0.0.1")
        assert e.mux_release(mux, s2, *p1.getsockname()) is False  # not s2's to release
        assert e.mux_release(mux, s1, *p1.getsockname()) is True
        e.close_slot(s1)
        assert count("mux_allocations") == 1 and e.mux_owner(mux, *p1.getsockname()) == -1
        p1.sendto(b"late", shared.getsockname())
        p2.sendto(b"again", shared.getsockname())
        time.sleep(0.05)
        assert e.drain_relay(s2) == 1  # one slot's drain reads the shared socket too
        assert c2.recv(100) == b"\x40\x02\x00\x05again"
        assert count("drop_unknown_peer") == 2
    finally:
        for s in (listener, shared, c1, c2, p1, p2, stranger):
            s.close()
