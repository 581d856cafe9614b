"""Property-based tests of the TURN core as a state machine, and of the fast path's datagram
classification.

The STUN codec itself is covered differentially in tests/test_stun.py (round trips, random
bytes, attribute soups, mutations against tests/stunref.py) and the stream framer in
tests/test_stream.py; garbage and bit flips into the TURN core in tests/test_turn.py. Here:
long random sequences of *authenticated, well-formed* requests with hostile values (any
lifetime, channel number, transport, family, EVEN-PORT, peers in denied ranges) from several
clients, with the clock jumping, must keep the core's books straight: no internal error,
at most one answer per request and to its sender with its transaction id, every relay port
accounted for, and everything released once the clock passes every lifetime.
"""

from __future__ import annotations

import os
import struct

from hypothesis import event, given, settings
from hypothesis import strategies as st

from ext import _stun as stun
from ext._fastpath import classify
from relay.turn import TurnServer
from tests.fakes import NOW, Client, FakeBackend, make_server

PORTS = range(50000, 50008)
CLIENTS = [("192.0.2.50", 40000), ("192.0.2.51", 40001), ("2001:db8::5", 40002)]
PEERS = [
    ("8.8.8.8", 5000),
    ("1.1.1.1", 6000),
    ("2001:4860::8888", 7000),
    ("10.0.0.1", 1),  # denied by default
    ("127.0.0.1", 3478),  # denied by default
    ("::ffff:8.8.8.8", 5000),
    ("ff02::1", 9),
]

peers = st.one_of(st.sampled_from(PEERS[:2]), st.sampled_from(PEERS))
u32 = st.one_of(st.integers(0, 0xFFFFFFFF), st.sampled_from([0, 1, 59, 600, 3600, 86401]))
family_byte = st.sampled_from([1, 2, 0, 3, 255])
allocate_attrs = st.lists(
    st.one_of(
        st.builds(
            lambda p: (stun.REQUESTED_TRANSPORT, bytes([p, 0, 0, 0])),
            st.sampled_from([17, 17, 6, 0, 255]),
        ),
        st.builds(lambda s: (stun.LIFETIME, struct.pack("!I", s)), u32),
        st.builds(lambda f: (stun.REQUESTED_ADDRESS_FAMILY, bytes([f, 0, 0, 0])), family_byte),
        st.builds(lambda f: (stun.ADDITIONAL_ADDRESS_FAMILY, bytes([f, 0, 0, 0])), family_byte),
        st.builds(lambda b: (stun.EVEN_PORT, bytes([b])), st.sampled_from([0, 0x80, 0x7F])),
        st.just((stun.DONT_FRAGMENT, b"")),
        st.builds(lambda v: (stun.RESERVATION_TOKEN, v), st.binary(min_size=0, max_size=9)),
    ),
    max_size=5,
)
allocate_attrs_ok = [
    (stun.LIFETIME, struct.pack("!I", 60)),
    (stun.EVEN_PORT, b"\x80"),
    (stun.EVEN_PORT, b"\x00"),
    (stun.REQUESTED_ADDRESS_FAMILY, b"\x02\0\0\0"),
    (stun.ADDITIONAL_ADDRESS_FAMILY, b"\x02\0\0\0"),
    (stun.DONT_FRAGMENT, b""),
]
UDP = (stun.REQUESTED_TRANSPORT, bytes([17, 0, 0, 0]))
actions = st.one_of(
    # mostly what a client sends (so that permissions and channels have allocations to
    # land on), sometimes anything
    st.tuples(
        st.just("allocate"),
        st.integers(0, 2),
        st.lists(st.sampled_from(allocate_attrs_ok), max_size=2).map(lambda a: [UDP, *a]),
    ),
    st.tuples(st.just("allocate"), st.integers(0, 2), allocate_attrs),
    st.tuples(st.just("refresh"), st.integers(0, 2), u32),
    st.tuples(st.just("permission"), st.integers(0, 2), st.lists(peers, max_size=3)),
    st.tuples(
        st.just("channel"),
        st.integers(0, 2),
        st.tuples(st.one_of(st.integers(0x4000, 0x4003), st.integers(0, 0xFFFF)), peers),
    ),
    st.tuples(
        st.just("send"),
        st.integers(0, 2),
        st.tuples(st.sampled_from(PEERS), st.binary(max_size=40)),
    ),
    st.tuples(
        st.just("soup"),
        st.integers(0, 2),
        st.tuples(
            st.sampled_from(
                [
                    stun.ALLOCATE,
                    stun.REFRESH,
                    stun.CREATE_PERMISSION,
                    stun.CHANNEL_BIND,
                    stun.BINDING,
                    0x00F,
                ]
            ),
            st.lists(st.tuples(st.integers(0, 0xFFFF), st.binary(max_size=24)), max_size=4),
        ),
    ),
    st.tuples(st.just("time"), st.just(0), st.sampled_from([0.5, 30.0, 61.0, 299.0, 301.0, 700.0])),
    st.tuples(st.just("closed"), st.integers(0, 2), st.none()),
)


def _request(
    client: Client, method: int, attrs: list[tuple[int, bytes]], txid: bytes, now: float
) -> None:
    data = client.build(method, attrs, txid=txid)
    out = client.server.handle(data, client.listener, client.addr, now)
    assert len(out) <= 1, out
    for raw, dest in out:
        assert dest == client.addr
        msg = stun.parse(raw)
        assert msg.transaction_id == txid and msg.method == method
        assert msg.cls in (stun.SUCCESS, stun.ERROR)
        code = msg.get(stun.ERROR_CODE)
        event(f"{method:#x} {stun.decode_error_code(code)[0] if code else 'ok'}")


def _books_balance(server: TurnServer, backend: FakeBackend) -> None:
    assert server.stats["internal_error"] == 0
    allocations = server.allocations.values()
    assert len(backend.relays) == sum(1 + (a.extra is not None) for a in allocations)
    # every relay port is free, relaying, or held for an EVEN-PORT reservation: none leaks
    assert sorted(
        backend.free
        + [r.address[1] for r in backend.relays.values()]
        + [p for _, p in backend.held.values()]
    ) == list(PORTS)


@settings(max_examples=150, deadline=None)
@given(st.lists(actions, min_size=1, max_size=30))
def test_random_request_sequences_keep_the_books(steps: list[tuple[str, int, object]]) -> None:
    server, backend = make_server(FakeBackend(PORTS))
    clients = [Client(server, addr=a) for a in CLIENTS]
    now = NOW
    for c in clients:
        c.challenge(now)
    for c in clients[:2]:  # two start with an allocation, for permissions and channels
        assert c.allocate(now).ok
    for name, who, arg in steps:
        client = clients[who]
        txid = os.urandom(12)
        if name == "allocate":
            _request(client, stun.ALLOCATE, list(arg), txid, now)  # type: ignore[call-overload]
        elif name == "refresh":
            _request(client, stun.REFRESH, [(stun.LIFETIME, struct.pack("!I", arg))], txid, now)
        elif name == "permission":
            peers = [(stun.XOR_PEER_ADDRESS, stun.encode_xor_address(h, p, txid)) for h, p in arg]
            _request(client, stun.CREATE_PERMISSION, peers, txid, now)
        elif name == "channel":
            number, (host, port) = arg  # type: ignore[misc]
            attrs = [
                (stun.CHANNEL_NUMBER, struct.pack("!HH", number, 0)),
                (stun.XOR_PEER_ADDRESS, stun.encode_xor_address(host, port, txid)),
            ]
            _request(client, stun.CHANNEL_BIND, attrs, txid, now)
        elif name == "send":
            (host, port), payload = arg  # type: ignore[misc]
            attrs = [
                (stun.XOR_PEER_ADDRESS, stun.encode_xor_address(host, port, txid)),
                (stun.DATA_ATTR, payload),
            ]
            raw = stun.encode(stun.SEND, stun.INDICATION, txid, attrs)
            assert server.handle(raw, client.listener, client.addr, now) == []
        elif name == "soup":
            method, attrs = arg  # type: ignore[misc]
            attrs = [
                (t, v)
                for t, v in attrs
                if t
                not in (stun.MESSAGE_INTEGRITY, stun.MESSAGE_INTEGRITY_SHA256, stun.FINGERPRINT)
            ]
            _request(client, method, attrs, txid, now)
        elif name == "time":
            now += float(arg)  # type: ignore[arg-type]
            server.sweep(now)
        else:
            server.connection_closed(client.listener, client.addr, now)
        _books_balance(server, backend)
    # once every lifetime (at most an hour, reservations 30 s) has passed, nothing is held
    now += 2 * 86400
    server.sweep(now)
    _books_balance(server, backend)
    assert server.allocation_count == 0 and backend.held == {}
    assert sorted(backend.free) == list(PORTS)


# --- the fast path's classification of a client's datagram (ext/_framing.pxd) --------------


def reference_class(data: bytes) -> tuple[int, int, int]:
    """RFC 7983 / RFC 8656 12.4: (0, 0, 0) STUN, (1, channel, length) ChannelData whose
    length fits, (2, 0, 0) anything else (dropped as malformed)."""
    if data and data[0] < 4:
        return (0, 0, 0)
    if len(data) >= 4 and 0x40 <= data[0] <= 0x7F:
        chan, length = struct.unpack("!HH", data[:4])
        if 4 + length <= len(data):
            return (1, chan, length)
    return (2, 0, 0)


channel_data = st.builds(
    lambda chan, payload, extra, cut: (struct.pack("!HH", chan, len(payload)) + payload + extra)[
        :cut
    ],
    st.integers(0x4000, 0x7FFF),
    st.binary(max_size=64),
    st.binary(max_size=4),
    st.integers(0, 80),
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=64), channel_data))
def test_classification_follows_the_rfcs(data: bytes) -> None:
    assert classify(data) == reference_class(data)
    assert classify(bytearray(data)) == classify(memoryview(data))
