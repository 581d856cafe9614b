"""The sans-I/O TURN core (relay/turn.py) driven directly with a fake clock and backend.

Authentication details live in test_auth.py, the peer deny list in test_policy.py."""

from __future__ import annotations

import logging
import os
import socket
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ext import _stun as stun
from relay.turn import REASONS, TCP_ALLOCATION_REASON, TurnServer
from tests.fakes import (
    NOW,
    RELAY_IP4,
    RELAY_IP6,
    SECRET,
    Client,
    FakeBackend,
    family_attr,
    lifetime_attr,
    make_server,
    requested_transport,
    rest_password,
    rest_username,
)

PEER = ("8.8.8.8", 5000)
PEER2 = ("1.1.1.1", 6000)
PAD = (0x8050, b"p" * 96)  # comprehension-optional padding: room for full unauthenticated answers


def allocated(**overrides: object) -> tuple[TurnServer, FakeBackend, Client]:
    server, backend = make_server(**overrides)
    client = Client(server)
    assert client.allocate(NOW).ok
    return server, backend, client


# ---------------------------------------------------------------- Binding, framing, errors


def test_binding() -> None:
    server, backend = make_server()
    client = Client(server, addr=("192.0.2.33", 61000))
    data = client.build(stun.BINDING, [], auth=False, fingerprint=False)
    assert len(data) == 20
    reply = client.send_raw(data, NOW)
    assert reply is not None and reply.ok and reply.msg.method == stun.BINDING
    assert reply.xor_address(stun.XOR_MAPPED_ADDRESS) == (1, "192.0.2.33", 61000)
    # XOR-MAPPED-ADDRESS alone: no SOFTWARE, and no FINGERPRINT as the request had none
    assert [t for t, _ in reply.msg.attributes] == [stun.XOR_MAPPED_ADDRESS]
    assert reply.msg.fingerprint_offset < 0 and reply.msg.integrity_offset < 0
    assert len(reply.raw) == 32
    assert backend.calls == [] and server.stats["binding.ok"] == 1


@pytest.mark.parametrize(
    ("addr", "fingerprint", "size"),
    [
        (("192.0.2.33", 1), False, 20 + 12),
        (("192.0.2.33", 1), True, 20 + 12 + 8),
        (("2001:db8::7", 1), False, 20 + 24),
        (("2001:db8::7", 1), True, 20 + 24 + 8),
    ],
)
def test_binding_answer_is_at_most_request_plus_24(
    addr: tuple[str, int], fingerprint: bool, size: int
) -> None:
    server, _ = make_server()
    client = Client(server, addr=addr)
    data = client.build(stun.BINDING, [], auth=False, fingerprint=fingerprint)
    reply = client.send_raw(data, NOW)
    assert reply is not None and reply.ok
    assert len(reply.raw) == size <= len(data) + 24
    assert (reply.msg.fingerprint_offset >= 0) == fingerprint
    assert reply.get(stun.SOFTWARE) is None


@pytest.mark.parametrize(
    ("addr", "mapped"),
    [
        (("::ffff:192.0.2.33", 5), (1, "192.0.2.33", 5)),
        (("2001:db8::7", 6), (2, "2001:db8::7", 6)),
    ],
)
def test_binding_mapped_forms(addr: tuple[str, int], mapped: tuple[int, str, int]) -> None:
    server, _ = make_server()
    reply = Client(server, addr=addr).request(stun.BINDING, [], NOW, auth=False)
    assert reply.xor_address(stun.XOR_MAPPED_ADDRESS) == mapped


def test_binding_indication_and_stray_responses_ignored() -> None:
    server, _ = make_server()
    client = Client(server)
    for cls in (stun.INDICATION, stun.SUCCESS, stun.ERROR):
        assert client.send_raw(client.build(stun.BINDING, [], cls=cls, auth=False), NOW) is None
    data = stun.encode(stun.DATA, stun.INDICATION, os.urandom(12), [])
    assert server.handle(data, 0, client.addr, NOW) == []


def test_binding_unknown_attribute_420() -> None:
    server, _ = make_server()
    client = Client(server)
    attrs = [(0x7F01, b"x"), (0x0003, b"\0\0\0\0"), (0x7F01, b"y"), (0x8999, b"ok"), PAD]
    reply = client.request(stun.BINDING, attrs, NOW, auth=False)
    assert (reply.code, reply.reason) == (420, "Unknown Attribute")
    assert reply.get(stun.UNKNOWN_ATTRIBUTES) == struct.pack("!HH", 0x7F01, 0x0003)
    assert reply.get(stun.SOFTWARE) is None and reply.msg.fingerprint_offset >= 0
    # comprehension-optional unknowns and ICE attributes are fine
    attrs = [(0x8999, b"ok"), (stun.PRIORITY, b"\0\0\0\1"), (stun.USE_CANDIDATE, b"")]
    assert client.request(stun.BINDING, attrs, NOW, auth=False).ok


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00\x01",
        b"\x00\x01\x00\x00" + b"\x21\x12\xa4\x42",  # short header
        b"\x00\x01\x00\x00" + b"\xde\xad\xbe\xef" + b"t" * 12,  # bad cookie
        b"\x00\x01\x00\x04\x21\x12\xa4\x42" + b"t" * 12,  # length past the end
        b"\xff" * 40,
    ],
)
def test_malformed_dropped_and_counted(data: bytes) -> None:
    server, _ = make_server()
    assert server.handle(data, 0, ("192.0.2.1", 1), NOW) == []
    assert server.stats["malformed"] == 1


def test_bad_fingerprint_dropped() -> None:
    server, _ = make_server()
    data = bytearray(Client(server).build(stun.BINDING, [], auth=False))
    data[-1] ^= 0xFF
    assert server.handle(bytes(data), 0, ("192.0.2.1", 1), NOW) == []
    assert server.stats["malformed"] == 1


@pytest.mark.parametrize("method", [0x00F, stun.SEND, stun.DATA, stun.CONNECT])
def test_unknown_method_request_400(method: int) -> None:
    server, _ = make_server()
    reply = Client(server).request(method, [PAD], NOW, auth=False)
    assert (reply.code, reply.reason) == (400, "Bad Request")
    assert reply.msg.method == method and reply.get(stun.SOFTWARE) is None
    assert [t for t, _ in reply.msg.attributes] == [stun.ERROR_CODE, stun.FINGERPRINT]


def test_reason_phrases() -> None:
    assert REASONS == {
        300: "Try Alternate",
        400: "Bad Request",
        401: "Unauthorized",
        403: "Forbidden",
        420: "Unknown Attribute",
        437: "Allocation Mismatch",
        438: "Stale Nonce",
        440: "Address Family not Supported",
        441: "Wrong Credentials",
        442: "Unsupported Transport Protocol",
        443: "Peer Address Family Mismatch",
        486: "Allocation Quota Reached",
        508: "Insufficient Capacity",
    }


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_never_raises_on_garbage(data: bytes) -> None:
    server, _ = make_server()
    out = server.handle(data, 0, ("192.0.2.1", 1), NOW)
    assert server.stats["internal_error"] == 0
    for raw, _addr in out:
        stun.parse(raw)


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=8 * 200 - 1), st.integers(0, 3))
def test_never_raises_on_mutations(bit: int, which: int) -> None:
    server, _ = make_server()
    client = Client(server)
    client.challenge(NOW)
    assert client.allocate(NOW).ok
    txid = os.urandom(12)
    peer = (stun.XOR_PEER_ADDRESS, stun.encode_xor_address("8.8.8.8", 1, txid))
    messages = [
        client.build(stun.ALLOCATE, [requested_transport(), lifetime_attr(60)], txid=txid),
        client.build(stun.CHANNEL_BIND, [peer, (stun.CHANNEL_NUMBER, b"\x40\0\0\0")], txid=txid),
        client.build(stun.CREATE_PERMISSION, [peer, peer], txid=txid),
        stun.encode(stun.SEND, stun.INDICATION, txid, [peer, (stun.DATA_ATTR, b"d")]),
    ]
    data = bytearray(messages[which])
    if bit < len(data) * 8:
        data[bit // 8] ^= 1 << (bit % 8)
    server.handle(bytes(data), 0, client.addr, NOW)
    assert server.stats["internal_error"] == 0


# ---------------------------------------------------------------- Allocate


def test_allocate_success() -> None:
    server, backend = make_server()
    client = Client(server)
    client.challenge(NOW)
    reply = client.allocate(NOW)
    assert reply.ok and reply.verify(client.key)
    assert reply.xor_address(stun.XOR_RELAYED_ADDRESS) == (1, RELAY_IP4, 50000)
    assert reply.xor_address(stun.XOR_MAPPED_ADDRESS) == (1, *client.addr)
    assert reply.lifetime == 600
    assert reply.get(stun.RESERVATION_TOKEN) is None
    assert reply.msg.integrity_offset >= 0 and reply.msg.fingerprint_offset >= 0
    assert backend.calls == [("open_relay", 0, client.addr, socket.AF_INET, False, False, None)]
    assert server.allocation_count == 1


def test_allocate_retransmission_and_mismatch() -> None:
    server, backend = make_server()
    client = Client(server)
    client.challenge(NOW)
    txid = os.urandom(12)
    first = client.allocate(NOW, txid=txid)
    again = client.allocate(NOW + 1, txid=txid)
    assert again.raw == first.raw
    assert backend.names() == ["open_relay"]
    assert server.stats["allocate.retransmit"] == 1
    other = client.allocate(NOW + 1)
    assert (other.code, other.reason) == (437, "Allocation Mismatch")
    # the same client on another listener is another 5-tuple
    second = Client(server, listener=1, nonce=client.nonce)
    assert second.allocate(NOW).ok and server.allocation_count == 2


@pytest.mark.parametrize(
    ("attrs", "code"),
    [
        ([], 400),
        ([(stun.REQUESTED_TRANSPORT, b"\x11\0")], 400),
        ([requested_transport(6)], 442),
        ([requested_transport(), (stun.EVEN_PORT, b"\x80\0")], 400),
        ([requested_transport(), (stun.LIFETIME, b"\0\0")], 400),
        ([requested_transport(), family_attr(stun.REQUESTED_ADDRESS_FAMILY, 3)], 440),
        ([requested_transport(), (stun.REQUESTED_ADDRESS_FAMILY, b"\x01")], 400),
        (
            [
                requested_transport(),
                family_attr(stun.REQUESTED_ADDRESS_FAMILY, 1),
                family_attr(stun.ADDITIONAL_ADDRESS_FAMILY, 2),
            ],
            400,
        ),
        ([requested_transport(), family_attr(stun.ADDITIONAL_ADDRESS_FAMILY, 1)], 400),
        ([requested_transport(), (stun.RESERVATION_TOKEN, b"x" * 8), (stun.EVEN_PORT, b"\0")], 400),
        (
            [
                requested_transport(),
                (stun.RESERVATION_TOKEN, b"x" * 8),
                family_attr(stun.REQUESTED_ADDRESS_FAMILY, 1),
            ],
            400,
        ),
        (
            [
                requested_transport(),
                (stun.RESERVATION_TOKEN, b"x" * 8),
                family_attr(stun.ADDITIONAL_ADDRESS_FAMILY, 2),
            ],
            400,
        ),
        (
            [
                requested_transport(),
                (stun.EVEN_PORT, b"\x80"),
                family_attr(stun.ADDITIONAL_ADDRESS_FAMILY, 2),
            ],
            400,
        ),
        ([requested_transport(), (stun.RESERVATION_TOKEN, b"x" * 8)], 508),
        ([requested_transport(), (stun.RESERVATION_TOKEN, b"x" * 7)], 400),
        ([requested_transport(), (0x7F00, b"?")], 420),
    ],
)
def test_allocate_refusals(attrs: list[tuple[int, bytes]], code: int) -> None:
    server, backend = make_server()
    client = Client(server)
    client.challenge(NOW)
    reply = client.allocate(NOW, attrs)
    assert reply.code == code
    assert reply.reason == (TCP_ALLOCATION_REASON if code == 442 else REASONS[code])
    assert reply.verify(client.key) and reply.get(stun.SOFTWARE)
    assert backend.calls == [] and server.allocation_count == 0
    if code == 420:
        assert reply.get(stun.UNKNOWN_ATTRIBUTES) == b"\x7f\x00"


def test_allocate_ipv6_and_families() -> None:
    server, backend = make_server()
    client = Client(server)
    attrs = [requested_transport(), family_attr(stun.REQUESTED_ADDRESS_FAMILY, 2)]
    reply = client.allocate(NOW, attrs)
    assert reply.xor_address(stun.XOR_RELAYED_ADDRESS) == (2, RELAY_IP6, 50000)
    assert backend.calls[0][3] == socket.AF_INET6
    server6, _ = make_server(relay_ip6=None)
    assert Client(server6).allocate(NOW, attrs).code == 440
    server4, _ = make_server(relay_ip4=None)
    assert Client(server4).allocate(NOW).code == 440
    assert Client(server4).allocate(NOW, attrs).ok


def test_tcp_allocations_are_refused_with_a_reason() -> None:
    """RFC 6062 TCP allocations (REQUESTED-TRANSPORT=6) are not served: 442, saying why."""
    server, backend = make_server()
    reply = Client(server).allocate(NOW, [requested_transport(6)])
    assert reply.code == 442 and "RFC 6062" in reply.reason and "only UDP" in reply.reason
    assert server.stats["refused.transport"] == 1 and backend.calls == []


def dual() -> list[tuple[int, bytes]]:
    return [requested_transport(), family_attr(stun.ADDITIONAL_ADDRESS_FAMILY, 2)]


def relayed_addresses(reply: object) -> list[tuple[int, str, int]]:
    msg = reply.msg  # type: ignore[attr-defined]
    return [
        stun.decode_xor_address(v, msg.transaction_id)
        for t, v in msg.attributes
        if t == stun.XOR_RELAYED_ADDRESS
    ]


PEER6 = ("2001:4860:4860::8888", 7000)


def test_dual_allocation_relays_each_family_from_its_own_address() -> None:
    server, backend = make_server(bandwidth_bytes_per_second=100_000)
    client = Client(server)
    reply = client.allocate(NOW, [*dual(), (stun.DONT_FRAGMENT, b"")])
    assert reply.ok and reply.get(stun.ADDRESS_ERROR_CODE) is None
    assert relayed_addresses(reply) == [(1, RELAY_IP4, 50000), (2, RELAY_IP6, 50001)]
    assert [c[3] for c in backend.calls if c[0] == "open_relay"] == [
        socket.AF_INET,
        socket.AF_INET6,
    ]
    assert backend.bandwidth == {1: 100_000, 2: 100_000}
    assert server.allocation_count == 1
    # each peer through the relayed address of its family
    assert client.permission(NOW, PEER, PEER6).ok
    assert backend.permissions == {1: {PEER[0]}, 2: {PEER6[0]}}
    assert client.channel_bind(NOW, 0x4000, PEER).ok
    assert client.channel_bind(NOW, 0x4001, PEER6).ok
    assert backend.channels == {1: {0x4000: PEER}, 2: {0x4001: PEER6}}
    client.send_indication(NOW, PEER6, b"six")
    client.send_indication(NOW, PEER, b"four")
    assert backend.sent == [(2, PEER6, b"six"), (1, PEER, b"four")]
    # the deny list holds for both families
    assert client.permission(NOW, ("fd00::1", 1)).code == 403
    assert client.permission(NOW, ("10.0.0.1", 1)).code == 403
    # a Refresh may name either family; it refreshes (or deletes) the whole allocation
    for family in (1, 2):
        attrs = [family_attr(stun.REQUESTED_ADDRESS_FAMILY, family), lifetime_attr(900)]
        assert client.request(stun.REFRESH, attrs, NOW).lifetime == 900
    server.sweep(NOW + 299)
    assert backend.permissions == {1: {PEER[0]}, 2: {PEER6[0]}}
    server.sweep(NOW + 300)  # expiries are removed from the relayed address of their family
    assert backend.permissions == {1: set(), 2: set()}
    assert client.refresh(NOW + 301, 0).ok
    assert [c for c in backend.calls if c[0] == "close_relay"] == [
        ("close_relay", 1),
        ("close_relay", 2),
    ]
    assert server.allocation_count == 0


def test_dual_allocation_as_coturns_client_asks_for_it() -> None:
    """turnutils_uclient -Z numbers ADDITIONAL-ADDRESS-FAMILY as coturn does (0x8032, the
    draft's) and adds an EVEN-PORT without the R bit: both halves, the IPv4 one even."""
    server, _ = make_server(relay_ip6=None)
    attrs = [requested_transport(), (stun.EVEN_PORT, b"\0"), (0x8032, b"\x02\0\0\0")]
    reply = Client(server).allocate(NOW, attrs)
    assert reply.ok and reply.get(0x8033) is not None and reply.get(stun.ADDRESS_ERROR_CODE) is None
    server, _ = make_server(FakeBackend(ports=range(50001, 50010)))
    reply = Client(server).allocate(NOW, attrs)
    assert [a[0] for a in relayed_addresses(reply)] == [1, 2]
    assert relayed_addresses(reply)[0][2] % 2 == 0


def test_dual_allocation_without_ipv6_keeps_the_ipv4_half() -> None:
    server, _ = make_server(relay_ip6=None)
    reply = Client(server).allocate(NOW, dual())
    assert reply.ok and [a[0] for a in relayed_addresses(reply)] == [1]
    value = reply.get(stun.ADDRESS_ERROR_CODE)
    assert value is not None and value[0] == 2
    assert stun.decode_error_code(b"\0" + value[1:])[0] == 440
    # no free port for the IPv6 half: 508 for that half, the IPv4 half stands
    server, backend = make_server(FakeBackend(ports=range(50000, 50001)))
    reply = Client(server).allocate(NOW, dual())
    assert reply.ok and [a[0] for a in relayed_addresses(reply)] == [1]
    value = reply.get(stun.ADDRESS_ERROR_CODE)
    assert value is not None and stun.decode_error_code(b"\0" + value[1:])[0] == 508
    # IPv4 not relayed here: the request fails as a whole (IPv4 is what it asks first)
    server, _ = make_server(relay_ip4=None)
    assert Client(server).allocate(NOW, dual()).code == 440


def test_a_closed_connection_deletes_its_allocation() -> None:
    server, backend, client = allocated()
    other = Client(server, addr=client.addr, listener=1, nonce=client.nonce)
    assert other.allocate(NOW).ok  # the same address on another listener: another 5-tuple
    assert server.connection_closed(1, client.addr, NOW + 1)
    assert server.allocation_count == 1 and server.stats["deleted.connection_closed"] == 1
    assert ("close_relay", 2) in backend.calls
    assert not server.connection_closed(1, client.addr, NOW + 2)  # nothing left there


@pytest.mark.parametrize(
    ("asked", "granted"), [(None, 600), (60, 600), (1200, 1200), (99999, 3600)]
)
def test_allocate_lifetime(asked: int | None, granted: int) -> None:
    server, _ = make_server()
    attrs = [requested_transport()] + ([] if asked is None else [lifetime_attr(asked)])
    reply = Client(server).allocate(NOW, attrs)
    assert reply.lifetime == granted
    server.sweep(NOW + granted - 1)
    assert server.allocation_count == 1
    server.sweep(NOW + granted)
    assert server.allocation_count == 0


def test_even_port_and_reservations() -> None:
    server, backend = make_server()
    plain = Client(server, addr=("192.0.2.1", 1))
    assert plain.allocate(NOW).xor_address(stun.XOR_RELAYED_ADDRESS)[2] == 50000
    even = Client(server, addr=("192.0.2.1", 2))
    reply = even.allocate(NOW, [requested_transport(), (stun.EVEN_PORT, b"\x00")])
    assert reply.xor_address(stun.XOR_RELAYED_ADDRESS)[2] == 50002
    assert reply.get(stun.RESERVATION_TOKEN) is None
    keeper = Client(server, addr=("192.0.2.1", 3))
    reply = keeper.allocate(NOW, [requested_transport(), (stun.EVEN_PORT, b"\x80")])
    assert reply.xor_address(stun.XOR_RELAYED_ADDRESS)[2] == 50004
    assert backend.calls[-1][4:6] == (True, True)
    token = reply.get(stun.RESERVATION_TOKEN)
    assert token is not None and len(token) == 8
    claimer = Client(server, addr=("192.0.2.1", 4))
    reply = claimer.allocate(NOW + 10, [requested_transport(), (stun.RESERVATION_TOKEN, token)])
    assert reply.xor_address(stun.XOR_RELAYED_ADDRESS)[2] == 50005
    assert backend.calls[-1][6] == token
    late = Client(server, addr=("192.0.2.1", 5))
    assert (
        late.allocate(NOW + 11, [requested_transport(), (stun.RESERVATION_TOKEN, token)]).code
        == 508
    )


def test_reservation_expires_after_30s() -> None:
    server, backend = make_server()
    keeper = Client(server, addr=("192.0.2.1", 3))
    token = keeper.allocate(NOW, [requested_transport(), (stun.EVEN_PORT, b"\x80")]).get(
        stun.RESERVATION_TOKEN
    )
    assert token is not None
    server.sweep(NOW + 29)
    assert backend.released == []
    server.sweep(NOW + 30)
    assert backend.released == [token] and server.stats["expired.reservation"] == 1
    claimer = Client(server, addr=("192.0.2.1", 4))
    reply = claimer.allocate(NOW + 31, [requested_transport(), (stun.RESERVATION_TOKEN, token)])
    assert reply.code == 508


def test_even_port_reservations_count_in_the_user_quota() -> None:
    server, backend = make_server(max_allocations_per_user=2)
    keeper = Client(server, addr=("192.0.2.1", 3))
    reply = keeper.allocate(NOW, [requested_transport(), (stun.EVEN_PORT, b"\x80")])
    token = reply.get(stun.RESERVATION_TOKEN)
    assert token is not None  # the allocation and the port held for the next: two
    third = Client(server, addr=("192.0.2.1", 5))
    assert third.allocate(NOW).code == 486  # was served: the reservation escaped the quota
    assert server.stats["refused.quota"] == 1
    # claiming the reservation turns its charge into the new allocation's
    claimer = Client(server, addr=("192.0.2.1", 4))
    assert claimer.allocate(NOW + 1, [requested_transport(), (stun.RESERVATION_TOKEN, token)]).ok
    assert third.allocate(NOW + 1).code == 486
    assert claimer.refresh(NOW + 2, 0).ok
    assert third.allocate(NOW + 2).ok
    # an R-bit Allocate needs room for two; a reservation left to expire gives its place back
    assert third.refresh(NOW + 3, 0).ok and keeper.refresh(NOW + 3, 0).ok
    assert keeper.allocate(NOW + 4, [requested_transport(), (stun.EVEN_PORT, b"\x80")]).ok
    assert third.allocate(NOW + 4).code == 486
    server.sweep(NOW + 4 + 30)
    assert server.stats["expired.reservation"] == 1
    assert third.allocate(NOW + 35).ok
    assert keeper.refresh(NOW + 36, 0).ok
    nested = Client(server, addr=("192.0.2.1", 6))
    reply = nested.allocate(NOW + 36, [requested_transport(), (stun.EVEN_PORT, b"\x80")])
    assert reply.code == 486  # one left, two needed
    assert backend.held == {}  # type: ignore[attr-defined]


def test_even_port_reservations_count_in_the_node_capacity() -> None:
    server, _ = make_server(max_allocations_total=2, max_allocations_per_user=0)
    keeper = Client(server, addr=("192.0.2.1", 3))
    token = keeper.allocate(NOW, [requested_transport(), (stun.EVEN_PORT, b"\x80")]).get(
        stun.RESERVATION_TOKEN
    )
    assert token is not None
    other = Client(server, addr=("192.0.2.9", 3))
    assert other.allocate(NOW).code == 508  # the held port counts: was served
    assert server.stats["refused.capacity"] == 1
    claimer = Client(server, addr=("192.0.2.1", 4))
    assert claimer.allocate(NOW + 1, [requested_transport(), (stun.RESERVATION_TOKEN, token)]).ok
    assert server.allocation_count == 2


def test_quota_per_user() -> None:
    server, backend = make_server(
        max_allocations_per_user=2, static_users={"alice": "w", "bob": "b"}
    )
    clients = [Client(server, addr=("192.0.2.1", p), password="w") for p in (1, 2, 3)]
    assert [c.allocate(NOW).code for c in clients] == [0, 0, 486]
    assert clients[2].last is not None and clients[2].last.reason == "Allocation Quota Reached"
    assert server.stats["refused.quota"] == 1
    bob = Client(server, addr=("192.0.2.1", 4), username="bob", password="b")
    assert bob.allocate(NOW).ok
    assert clients[0].refresh(NOW, 0).ok  # freeing one lets the third in
    assert clients[2].allocate(NOW).ok


def test_rest_quota_counts_token_id_across_expiries() -> None:
    from tests.fakes import SECRET, rest_password

    server, _ = make_server(max_allocations_per_user=1)
    names = [f"{int(NOW) + 100}:tok", f"{int(NOW) + 200}:tok", f"{int(NOW) + 200}:other"]
    codes = []
    for port, name in enumerate(names):
        client = Client(server, addr=("192.0.2.1", port + 1), username=name)
        client.password = rest_password(SECRET, name)
        codes.append(client.allocate(NOW).code)
    assert codes == [0, 486, 0]


def test_total_cap_and_backend_full() -> None:
    server, _ = make_server(max_allocations_total=2)
    codes = [Client(server, addr=("192.0.2.1", p)).allocate(NOW).code for p in (1, 2, 3)]
    assert codes == [0, 0, 508] and server.stats["refused.capacity"] == 1
    server, backend = make_server(FakeBackend(ports=range(50000, 50001)))
    assert Client(server, addr=("192.0.2.1", 1)).allocate(NOW).ok
    reply = Client(server, addr=("192.0.2.1", 2)).allocate(NOW)
    assert (reply.code, reply.reason) == (508, "Insufficient Capacity")
    assert server.stats["refused.no_port"] == 1 and server.allocation_count == 1


def test_bandwidth_cap() -> None:
    server, backend, _ = allocated(bandwidth_bytes_per_second=250_000)
    assert backend.bandwidth == {1: 250_000}
    server, backend, _ = allocated()
    assert "set_bandwidth" not in backend.names()


@pytest.mark.parametrize("alternate", [("198.51.100.9", 3478), None])
def test_drain(alternate: tuple[str, int] | None) -> None:
    server, backend = make_server(alternate_server=alternate)
    client = Client(server)
    client.challenge(NOW)
    txid = os.urandom(12)
    first = client.allocate(NOW, txid=txid)
    server.start_drain()
    assert server.draining
    newcomer = Client(server, addr=("192.0.2.200", 1))
    reply = newcomer.allocate(NOW)
    if alternate is None:
        assert (reply.code, reply.reason) == (508, "Insufficient Capacity")
    else:
        assert (reply.code, reply.reason) == (300, "Try Alternate")
        value = reply.get(stun.ALTERNATE_SERVER)
        assert value is not None and stun.decode_address(value) == (1, *alternate)
        assert reply.verify(newcomer.key)
    assert server.stats["refused.drain"] == 1
    assert client.allocate(NOW + 1, txid=txid).raw == first.raw  # retransmissions still work
    assert client.refresh(NOW + 2, 1200).ok
    assert client.permission(NOW + 2, PEER).ok
    assert backend.names().count("open_relay") == 1


# ---------------------------------------------------------------- Refresh


def test_refresh_updates_and_caps() -> None:
    server, _, client = allocated()
    reply = client.refresh(NOW + 100, 1800)
    assert reply.ok and reply.lifetime == 1800 and reply.verify(client.key)
    server.sweep(NOW + 1000)
    assert server.allocation_count == 1
    assert client.refresh(NOW + 100, 99999).lifetime == 3600
    assert client.refresh(NOW + 100).lifetime == 600
    assert client.refresh(NOW + 100, 30).lifetime == 30
    server.sweep(NOW + 130)
    assert server.allocation_count == 0


def test_refresh_zero_deletes() -> None:
    server, backend, client = allocated()
    reply = client.refresh(NOW + 5, 0)
    assert reply.ok and reply.lifetime == 0
    assert backend.names() == ["open_relay", "close_relay"]
    assert server.allocation_count == 0
    assert client.refresh(NOW + 6, 0).code == 437
    assert client.allocate(NOW + 7).ok  # the 5-tuple can be used again


def test_refresh_family_mismatch_and_no_allocation() -> None:
    server, _, client = allocated()
    reply = client.request(stun.REFRESH, [family_attr(stun.REQUESTED_ADDRESS_FAMILY, 2)], NOW)
    assert (reply.code, reply.reason) == (443, "Peer Address Family Mismatch")
    assert client.request(stun.REFRESH, [family_attr(stun.REQUESTED_ADDRESS_FAMILY, 1)], NOW).ok
    stranger = Client(server, addr=("192.0.2.99", 1), nonce=None)
    stranger.challenge(NOW)
    for reply in (
        stranger.refresh(NOW),
        stranger.permission(NOW, PEER),
        stranger.channel_bind(NOW, 0x4000, PEER),
    ):
        assert (reply.code, reply.reason) == (437, "Allocation Mismatch")
        assert reply.verify(stranger.key)


def test_expired_allocation_is_gone_before_sweep() -> None:
    server, backend, client = allocated()
    assert client.refresh(NOW + 600).code == 437
    assert backend.names() == ["open_relay", "close_relay"]
    assert server.stats["expired.allocation"] == 1


# ---------------------------------------------------------------- CreatePermission


def test_create_permission() -> None:
    server, backend, client = allocated()
    reply = client.permission(NOW, PEER, PEER2, ("8.8.8.8", 1))
    assert reply.ok and reply.verify(client.key)
    assert backend.permissions[1] == {"8.8.8.8", "1.1.1.1"}
    server.sweep(NOW + 299)
    assert backend.permissions[1] == {"8.8.8.8", "1.1.1.1"}
    assert client.permission(NOW + 200, PEER2).ok  # refresh one
    server.sweep(NOW + 300)
    assert backend.permissions[1] == {"1.1.1.1"}
    assert ("remove_permission", 1, "8.8.8.8") in backend.calls
    server.sweep(NOW + 500)
    assert backend.permissions[1] == set()
    assert server.stats["expired.permission"] == 2


def test_create_permission_errors() -> None:
    server, backend, client = allocated(max_permissions=2)
    assert client.request(stun.CREATE_PERMISSION, [PAD], NOW).code == 400
    reply = client.permission(NOW, ("2606:4700::1111", 1))
    assert (reply.code, reply.reason) == (443, "Peer Address Family Mismatch")
    bad = (stun.XOR_PEER_ADDRESS, b"\x00\x07\x00")
    assert client.request(stun.CREATE_PERMISSION, [bad], NOW).code == 400
    assert client.permission(NOW, PEER, PEER2).ok
    assert client.permission(NOW, ("9.9.9.9", 1)).code == 508
    assert client.permission(NOW, PEER).ok  # refreshing doesn't count against the limit
    assert backend.permissions[1] == {"8.8.8.8", "1.1.1.1"}


# ---------------------------------------------------------------- ChannelBind


def test_channel_bind() -> None:
    server, backend, client = allocated()
    assert client.refresh(NOW, 3600).ok
    reply = client.channel_bind(NOW, 0x4000, PEER)
    assert reply.ok and reply.verify(client.key)
    assert backend.channels[1] == {0x4000: PEER}
    assert backend.permissions[1] == {"8.8.8.8"}  # ChannelBind installs the permission too
    assert client.channel_bind(NOW + 100, 0x4000, PEER).ok  # refresh
    assert client.channel_bind(NOW, 0x4FFF, PEER2).ok
    server.sweep(NOW + 399)  # the permission of PEER was refreshed at +100
    assert backend.permissions[1] == {"8.8.8.8"}
    server.sweep(NOW + 700)
    assert backend.channels[1] == {}
    assert ("unbind_channel", 1, 0x4000, PEER) in backend.calls
    assert server.stats["expired.channel"] == 2


@pytest.mark.parametrize("channel", [0x0000, 0x3FFF, 0x8000, 0xFFFF])
def test_channel_number_range(channel: int) -> None:
    _, backend, client = allocated()
    assert client.channel_bind(NOW, channel, PEER).code == 400
    assert "bind_channel" not in backend.names()


@pytest.mark.parametrize("channel", [0x4000, 0x4FFF, 0x5000, 0x7FFF])
def test_channel_numbers_accepted(channel: int) -> None:
    # RFC 8656 numbers channels 0x4000-0x4FFF; RFC 5766 clients (coturn's tools) use up to 0x7FFF
    _, backend, client = allocated()
    assert client.channel_bind(NOW, channel, PEER).ok
    assert backend.channels[1] == {channel: PEER}


def test_channel_bind_conflicts() -> None:
    server, backend, client = allocated()
    assert client.channel_bind(NOW, 0x4000, PEER).ok
    assert client.channel_bind(NOW, 0x4000, PEER2).code == 400  # channel taken
    assert client.channel_bind(NOW, 0x4001, PEER).code == 400  # peer taken
    assert client.channel_bind(NOW, 0x4000, ("8.8.8.8", 5001)).code == 400  # port matters
    no_number = client._with_peers(stun.CHANNEL_BIND, [PEER], [], NOW)
    assert no_number.code == 400
    two = client._with_peers(
        stun.CHANNEL_BIND, [PEER, PEER2], [(stun.CHANNEL_NUMBER, b"\x40\x02\0\0")], NOW
    )
    assert two.code == 400
    v6 = client.channel_bind(NOW, 0x4003, ("2606:4700::1111", 1))
    assert v6.code == 443
    assert backend.channels[1] == {0x4000: PEER}


def test_channel_cooldown_after_expiry() -> None:
    server, backend, client = allocated()
    assert client.refresh(NOW, 3600).ok
    assert client.channel_bind(NOW, 0x4000, PEER).ok
    server.sweep(NOW + 600)
    assert backend.channels[1] == {}
    assert client.channel_bind(NOW + 700, 0x4000, PEER2).code == 400
    assert client.channel_bind(NOW + 700, 0x4001, PEER).code == 400
    assert client.channel_bind(NOW + 700, 0x4002, PEER2).ok
    assert client.channel_bind(NOW + 800, 0x4000, PEER).ok  # the same pair may come back
    assert client.channel_bind(NOW + 800, 0x4003, ("9.9.9.9", 9)).ok
    server.sweep(NOW + 1000)
    server.sweep(NOW + 1500)  # 0x4002 and 0x4003 expired at +1300/+1400 -> cooling down
    assert client.channel_bind(NOW + 1500, 0x4002, ("9.9.9.9", 9)).code == 400
    server.sweep(NOW + 1800)
    assert client.channel_bind(NOW + 1800, 0x4002, ("9.9.9.9", 9)).ok


# ---------------------------------------------------------------- Send indication


def test_send_indication() -> None:
    server, backend, client = allocated()
    client.send_indication(NOW, PEER, b"early")
    assert server.stats["send.no_permission"] == 1 and backend.sent == []
    assert client.permission(NOW, ("8.8.8.8", 1)).ok
    client.send_indication(NOW, PEER, b"hello")  # any port of a permitted IP
    assert backend.sent == [(1, PEER, b"hello")]
    client.send_indication(NOW, ("10.0.0.1", 1), b"x")
    assert server.stats["send.denied_peer"] == 1
    client.send_indication(NOW, ("2606:4700::1111", 1), b"x")
    assert server.stats["send.family_mismatch"] == 1
    txid = os.urandom(12)
    peer_only = [(stun.XOR_PEER_ADDRESS, stun.encode_xor_address(*PEER, txid))]
    assert (
        server.handle(stun.encode(stun.SEND, stun.INDICATION, txid, peer_only), 0, client.addr, NOW)
        == []
    )
    assert server.stats["send.bad_request"] == 1
    unknown = peer_only + [(stun.DATA_ATTR, b"d"), (0x7F00, b"?")]
    assert (
        server.handle(stun.encode(stun.SEND, stun.INDICATION, txid, unknown), 0, client.addr, NOW)
        == []
    )
    assert server.stats["send.unknown_attribute"] == 1
    server.sweep(NOW + 300)
    client.send_indication(NOW + 300, PEER, b"late")
    assert server.stats["send.no_permission"] == 2
    stranger = Client(server, addr=("192.0.2.99", 9))
    stranger.send_indication(NOW, PEER, b"x")
    assert server.stats["send.no_allocation"] == 1
    assert len(backend.sent) == 1 and server.stats["send.ok"] == 1


# ---------------------------------------------------------------- expiry


def test_sweep_frees_allocation_and_quota() -> None:
    server, backend = make_server(max_allocations_per_user=1)
    client = Client(server)
    assert client.allocate(NOW).ok
    assert client.permission(NOW, PEER).ok
    assert client.channel_bind(NOW, 0x4000, PEER2).ok
    server.sweep(NOW + 599)
    assert server.allocation_count == 1
    server.sweep(NOW + 600)
    assert server.allocation_count == 0
    assert backend.names()[-1] == "close_relay" and backend.relays == {}
    other = Client(server, addr=("192.0.2.2", 2))
    assert other.allocate(NOW + 601).ok  # the user's quota was given back


# ---------------------------------------------------------------- revocation


def rest_client(server: TurnServer, port: int, token: str, expiry: float) -> Client:
    from tests.fakes import SECRET, rest_password

    name = f"{int(expiry)}:{token}"
    return Client(
        server, addr=("192.0.2.1", port), username=name, password=rest_password(SECRET, name)
    )


def test_revoke_tears_down_the_tokens_allocations_and_refuses_it() -> None:
    server, backend = make_server(max_allocations_per_user=1)
    doomed = rest_client(server, 1, "tok", NOW + 3600)
    other = rest_client(server, 2, "other", NOW + 3600)
    alice = Client(server, addr=("192.0.2.1", 3))
    for client in (doomed, other, alice):
        assert client.allocate(NOW).ok
    assert doomed.permission(NOW, PEER).ok and doomed.channel_bind(NOW, 0x4000, PEER2).ok
    handle = next(h for h, r in backend.relays.items() if r.address[1] == 50000)

    assert server.revoke(["tok", "never-seen"], NOW + 10) == 1
    assert handle not in backend.relays and ("close_relay", handle) in backend.calls
    assert server.allocation_count == 2 and server.stats["revoked.allocation"] == 1
    assert doomed.refresh(NOW + 11).code == 437  # the allocation is gone
    assert doomed.permission(NOW + 11, PEER).code == 437
    # the credential cannot allocate again, nor can another username of the same token
    reply = doomed.allocate(NOW + 12)
    assert (reply.code, reply.reason) == (401, "Unauthorized") and reply.get(stun.NONCE)
    again = rest_client(server, 4, "tok", NOW + 7200)
    assert again.allocate(NOW + 12).code == 401
    assert server.stats["auth.revoked"] == 2 and server.stats["refused.quota"] == 0
    # a token id never allocated here is refused too
    assert rest_client(server, 5, "never-seen", NOW + 3600).allocate(NOW + 12).code == 401
    # others are untouched; revoking again is harmless
    assert other.refresh(NOW + 13).ok and alice.refresh(NOW + 13).ok
    assert server.revoke(["tok"], NOW + 14) == 0
    assert server.revoke([], NOW + 14) == 0
    assert server.allocation_count == 2 and server.stats["revoked.allocation"] == 1


def test_revoke_does_not_touch_static_users() -> None:
    server, _, alice = allocated()
    assert server.revoke(["alice", "user:alice"], NOW) == 0
    assert alice.refresh(NOW + 1).ok and server.allocation_count == 1


def test_revoked_credential_with_a_bad_password_gets_the_usual_401() -> None:
    server, _ = make_server()
    server.revoke(["tok"], NOW)
    stranger = rest_client(server, 1, "tok", NOW + 3600)
    stranger.password = "guess"
    assert stranger.allocate(NOW).code == 401
    assert server.stats["auth.bad_integrity"] == 1 and server.stats["auth.revoked"] == 0


def test_revocations_are_remembered_until_no_username_can_be_valid() -> None:
    server, _ = make_server(revocation_memory=100.0)
    long_lived = rest_client(server, 1, "long", NOW + 1000)
    assert long_lived.allocate(NOW).ok
    server.revoke(["long", "short"], NOW)
    assert server.revoked_count == 2
    server.sweep(NOW + 100)  # "short" is forgotten; "long" had a username valid until +1000
    assert server.revoked_count == 1
    assert rest_client(server, 2, "long", NOW + 1000).allocate(NOW + 500).code == 401
    assert rest_client(server, 3, "short", NOW + 1000).allocate(NOW + 500).ok
    server.sweep(NOW + 1000)
    assert server.revoked_count == 0


# ---------------------------------------------------------------- rate limiting


def test_unauthenticated_rate_limit() -> None:
    server, _ = make_server(unauth_rate=1.0, unauth_burst=3.0)
    a = Client(server, addr=("192.0.2.10", 1))
    b = Client(server, addr=("192.0.2.11", 1))  # same /24
    c = Client(server, addr=("192.0.3.10", 1))  # another /24
    binding = lambda cl: cl.send_raw(cl.build(stun.BINDING, [], auth=False), NOW)  # noqa: E731
    assert [binding(a) is not None for _ in range(3)] == [True, True, True]
    assert binding(a) is None and binding(b) is None
    assert server.stats["rate_limited"] == 2
    assert binding(c) is not None
    unauth = c.build(stun.ALLOCATE, [requested_transport(), PAD], auth=False)
    assert c.send_raw(unauth, NOW) is not None
    assert c.send_raw(unauth, NOW) is not None
    assert c.send_raw(unauth, NOW) is None  # 401s are limited too
    assert a.send_raw(a.build(stun.BINDING, [], auth=False), NOW + 1.0) is not None


def test_rate_limit_spares_authenticated_requests() -> None:
    server, _ = make_server(unauth_rate=1.0, unauth_burst=1.0)
    client = Client(server)
    client.challenge(NOW)
    assert client.allocate(NOW).ok
    for i in range(20):
        assert client.refresh(NOW + i * 0.01).ok
        assert client.permission(NOW + i * 0.01, PEER).ok


# ---------------------------------------------------------------- logging


def test_logging_redacts_and_tags_allocation(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="clickacall.relay.turn")
    server, _ = make_server()
    client = Client(server, addr=("192.0.2.123", 40000))
    for _ in range(5):  # failed unauthenticated requests: counters, no records
        client.send_raw(client.build(stun.ALLOCATE, [requested_transport()], auth=False), NOW)
    assert caplog.records == []
    assert client.allocate(NOW).ok
    assert client.permission(NOW, PEER).ok
    assert client.refresh(NOW, 0).ok
    assert caplog.records
    for record in caplog.records:
        assert record.name == "clickacall.relay.turn"
        assert record.__dict__["alloc"] == "1"
        assert "192.0.2.123" not in record.getMessage()
        assert "8.8.8.8" not in record.getMessage()
    assert any("192.0.2.0/24" in r.getMessage() for r in caplog.records)
    assert {r.levelno for r in caplog.records} <= {logging.DEBUG, logging.INFO}


def test_logging_full_ips_opt_in_and_adapter(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    base = logging.getLogger("clickacall.relay.turn")
    backend = FakeBackend()
    from relay.turn import TurnConfig

    config = TurnConfig(realm="r", static_users={"alice": "wonderland"}, log_full_ips=True)
    server = TurnServer(
        config, backend, nonce_key=b"k" * 32, log=logging.LoggerAdapter(base, {"worker": 3})
    )
    client = Client(server, addr=("192.0.2.123", 40000), realm="r")
    assert client.allocate(NOW).ok
    server.start_drain()
    created = [r for r in caplog.records if "created" in r.getMessage()]
    assert created and "192.0.2.123" in created[0].getMessage()
    assert all(r.__dict__["worker"] == 3 for r in caplog.records)
    assert [r.__dict__["alloc"] for r in caplog.records] == ["1", "-"]


def test_stats_keys_do_not_grow_with_clients() -> None:
    server, _ = make_server()
    for port in range(1, 60):
        client = Client(server, addr=(f"192.0.{port}.1", port))
        client.allocate(NOW)
        client.permission(NOW, (f"8.8.{port}.8", port))
        client.send_indication(NOW, (f"9.9.{port}.9", port), b"x")
    assert len(server.stats) < 12


# ---------------------------------------------------------------------------------- clocks


def test_lifetimes_follow_the_monotonic_clock_not_the_wall_clock() -> None:
    # REST usernames carry Unix expiries: ``wall`` is Unix time, ``now`` the monotonic
    # clock (here seconds since boot). A wall clock stepped a year forward or back must
    # neither end the allocation early nor change its permission's lifetime. (The credential
    # outlives the jump: an expired one could not Refresh, test_expired_rest_username.)
    server, backend = make_server()
    expiry = NOW + 2 * 365 * 86400
    username = rest_username(expiry)
    client = Client(server, username=username, password=rest_password(SECRET, username), wall=NOW)
    boot = 1000.0
    assert client.allocate(boot).ok
    assert client.permission(boot, PEER).ok
    for jump in (365 * 86400.0, -365 * 86400.0):
        server.sweep(boot + 10, NOW + jump)
        assert server.allocation_count == 1
        assert backend.permissions[1] == {PEER[0]}
    client.wall = NOW + 365 * 86400.0
    assert client.refresh(boot + 20).ok  # the allocation is alive on its own clock
    server.sweep(boot + 299, NOW)
    assert backend.permissions[1] == {PEER[0]}
    server.sweep(boot + 301, NOW)  # 300 s of monotonic time: the permission is gone
    assert backend.permissions[1] == set()
    server.sweep(boot + 20 + 599, NOW - 86400)
    assert server.allocation_count == 1
    server.sweep(boot + 20 + 601, NOW)
    assert server.allocation_count == 0


def test_rest_expiry_is_checked_on_the_wall_clock() -> None:
    server, _ = make_server()
    username = rest_username(NOW + 60)
    late = Client(
        server, username=username, password=rest_password(SECRET, username), wall=NOW + 61
    )
    late.challenge(5.0)
    assert late.allocate(5.0).code == 401  # expired by Unix time, whatever ``now`` is
    assert server.stats["auth.expired"] == 1


# ---------------------------------------------------------------- --multiplex-peer


def test_multiplexed_peer_owned_by_another_allocation() -> None:
    """With one shared relayed socket the backend owns each peer IP:port for one allocation:
    another's ChannelBind to it gets 403 (the request is valid, the mode forbids it), its Send
    indications are dropped and counted; the owner's go through."""
    backend = FakeBackend()
    backend.peer_owners = {}
    server, _ = make_server(backend, multiplex_peer=True)
    a = Client(server, addr=("192.0.2.1", 40000))
    b = Client(server, addr=("192.0.2.2", 40000))
    assert a.allocate(NOW).ok and b.allocate(NOW).ok
    assert a.channel_bind(NOW, 0x4000, PEER).ok
    refused = b.channel_bind(NOW, 0x4000, PEER)
    assert refused.code == 403 and "multiplex" in refused.reason
    assert server.stats["refused.peer_taken"] == 1
    assert b.permission(NOW, PEER).ok
    b.send_indication(NOW, PEER, b"not yours")
    assert server.stats["send.peer_taken"] == 1 and backend.drops == {"peer_taken": 1}
    a.send_indication(NOW, PEER, b"mine")
    assert [data for _, _, data in backend.sent] == [b"mine"]
    assert b.channel_bind(NOW, 0x4001, PEER2).ok  # another peer is free


@pytest.mark.parametrize(
    ("extra", "code"),
    [
        ((stun.EVEN_PORT, b"\x80"), 400),  # R bit: no next port to hold
        ((stun.RESERVATION_TOKEN, b"x" * 8), 400),  # no held port to claim
        ((stun.EVEN_PORT, b"\x00"), 0),  # a plain even port: the shared one is
    ],
)
def test_multiplexed_refuses_port_reservations(extra: tuple[int, bytes], code: int) -> None:
    server, backend = make_server(multiplex_peer=True)
    client = Client(server)
    reply = client.allocate(NOW, [requested_transport(), extra])
    if code:
        assert reply.code == code and "multiplex" in reply.reason
        assert not [c for c in backend.calls if c[0] == "open_relay"]
    else:
        assert reply.ok
