"""Fakes for driving the sans-I/O TURN core directly: a recording Backend and a TURN client
that builds requests with the Cython codec and reads the answers."""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import os
import socket
import struct
from dataclasses import dataclass, field

from ext import _stun as stun
from relay.backend import Address, Relayed
from relay.turn import TurnConfig, TurnServer

RELAY_IP4 = "203.0.113.5"
RELAY_IP6 = "2001:db8::5"
SECRET = b"s3cret"
NONCE_KEY = b"k" * 32
REALM = "example.org"
NOW = 1_700_000_000.0  # the fake clock starts here (REST expiries are wall-clock)


class FakeBackend:
    """Records every call; hands out ports from a small pool (None when it runs dry)."""

    def __init__(self, ports: range = range(50000, 50008)) -> None:
        self.free: list[int] = list(ports)
        self.calls: list[tuple[object, ...]] = []
        self.relays: dict[int, Relayed] = {}
        self.permissions: dict[int, set[str]] = {}
        self.channels: dict[int, dict[int, Address]] = {}
        self.bandwidth: dict[int, int] = {}
        self.sent: list[tuple[int, Address, bytes]] = []
        self.held: dict[bytes, tuple[int, int]] = {}  # token -> (family, port)
        self.released: list[bytes] = []
        self.drops: dict[str, int] = {}  # count_drop(reason)
        self.peer_owners: dict[Address, int] | None = None  # set: claim_peer as --multiplex-peer
        self._handles = itertools.count(1)
        self._tokens = itertools.count(1)

    def _take(self, port: int) -> None:
        self.free.remove(port)

    def open_relay(
        self,
        listener: int,
        client: Address,
        family: int,
        *,
        even_port: bool = False,
        reserve_next: bool = False,
        reservation: bytes | None = None,
    ) -> Relayed | None:
        self.calls.append(
            ("open_relay", listener, client, family, even_port, reserve_next, reservation)
        )
        token: bytes | None = None
        if reservation is not None:
            if reservation not in self.held:
                return None
            family_held, port = self.held.pop(reservation)
            assert family_held == family
        elif even_port:
            ports = [
                p for p in self.free if p % 2 == 0 and (not reserve_next or p + 1 in self.free)
            ]
            if not ports:
                return None
            port = ports[0]
            self._take(port)
            if reserve_next:
                self._take(port + 1)
                token = struct.pack("!Q", next(self._tokens))
                self.held[token] = (family, port + 1)
        else:
            if not self.free:
                return None
            port = self.free.pop(0)
        handle = next(self._handles)
        host = RELAY_IP4 if family == socket.AF_INET else RELAY_IP6
        relayed = Relayed(handle, (host, port), token)
        self.relays[handle] = relayed
        self.permissions[handle] = set()
        self.channels[handle] = {}
        return relayed

    def close_relay(self, handle: int) -> None:
        self.calls.append(("close_relay", handle))
        relayed = self.relays.pop(handle)
        self.free.append(relayed.address[1])
        self.permissions.pop(handle)
        self.channels.pop(handle)

    def count_drop(self, reason: str) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + 1

    def release_reservation(self, token: bytes) -> None:
        self.calls.append(("release_reservation", token))
        self.released.append(token)
        held = self.held.pop(token, None)
        if held is not None:
            self.free.append(held[1])

    def add_permission(self, handle: int, peer_ip: str) -> None:
        self.calls.append(("add_permission", handle, peer_ip))
        self.permissions[handle].add(peer_ip)

    def remove_permission(self, handle: int, peer_ip: str) -> None:
        self.calls.append(("remove_permission", handle, peer_ip))
        self.permissions[handle].discard(peer_ip)

    def bind_channel(self, handle: int, channel: int, peer: Address) -> None:
        self.calls.append(("bind_channel", handle, channel, peer))
        self.channels[handle][channel] = peer

    def unbind_channel(self, handle: int, channel: int, peer: Address) -> None:
        self.calls.append(("unbind_channel", handle, channel, peer))
        assert self.channels[handle].pop(channel) == peer

    def set_bandwidth(self, handle: int, bytes_per_second: int) -> None:
        self.calls.append(("set_bandwidth", handle, bytes_per_second))
        self.bandwidth[handle] = bytes_per_second

    def claim_peer(self, handle: int, peer: Address) -> bool:
        """Like a shared relayed socket's backend when ``peers`` is set: one owner a peer."""
        if self.peer_owners is None:
            return True
        return self.peer_owners.setdefault(peer, handle) == handle

    def send_to_peer(self, handle: int, peer: Address, data: bytes) -> None:
        self.calls.append(("send_to_peer", handle, peer, data))
        self.sent.append((handle, peer, data))

    def names(self) -> list[object]:
        return [c[0] for c in self.calls]


def rest_username(expiry: float, token: str = "tok") -> str:
    return f"{int(expiry)}:{token}"


def rest_password(secret: bytes, username: str) -> str:
    return base64.b64encode(hmac.new(secret, username.encode(), hashlib.sha1).digest()).decode()


def make_server(
    backend: FakeBackend | None = None, **overrides: object
) -> tuple[TurnServer, FakeBackend]:
    backend = backend or FakeBackend()
    options: dict[str, object] = {
        "realm": REALM,
        "auth_secrets": [SECRET],
        "static_users": {"alice": "wonderland"},
        "relay_ip4": RELAY_IP4,
        "relay_ip6": RELAY_IP6,
        "nonce_lifetime": 86400.0,  # long tests needn't re-challenge; test_auth covers 438
    }
    options.update(overrides)
    config = TurnConfig(**options)  # type: ignore[arg-type]
    return TurnServer(config, backend, nonce_key=NONCE_KEY), backend


@dataclass
class Reply:
    """A parsed answer (or None fields when the server said nothing)."""

    raw: bytes
    msg: stun.Message

    @property
    def ok(self) -> bool:
        return self.msg.cls == stun.SUCCESS

    @property
    def code(self) -> int:
        value = self.msg.get(stun.ERROR_CODE)
        return 0 if value is None else stun.decode_error_code(value)[0]

    @property
    def reason(self) -> str:
        value = self.msg.get(stun.ERROR_CODE)
        return "" if value is None else stun.decode_error_code(value)[1]

    def get(self, attr: int) -> bytes | None:
        return self.msg.get(attr)

    def xor_address(self, attr: int) -> tuple[int, str, int]:
        value = self.msg.get(attr)
        assert value is not None
        return stun.decode_xor_address(value, self.msg.transaction_id)

    @property
    def lifetime(self) -> int:
        value = self.msg.get(stun.LIFETIME)
        assert value is not None
        return int(struct.unpack("!I", value)[0])

    def verify(self, key: bytes) -> bool:
        return stun.check_integrity(self.raw, self.msg, key)


@dataclass
class Client:
    """A TURN client on one 5-tuple, talking to ``server`` through ``listener``."""

    server: TurnServer
    addr: Address = ("192.0.2.50", 40000)
    username: str = "alice"
    password: str = "wonderland"
    realm: str = REALM
    listener: int = 0
    sha256: bool = False
    nonce: bytes | None = None
    last: Reply | None = None
    sent: list[bytes] = field(default_factory=list)
    wall: float | None = None  # Unix time passed beside the monotonic ``now`` (None: now)

    @property
    def key(self) -> bytes:
        material = f"{self.username}:{self.realm}:{self.password}".encode()
        if self.sha256:
            return hashlib.sha256(material).digest()
        return hashlib.md5(material).digest()

    def build(
        self,
        method: int,
        attrs: list[tuple[int, bytes]],
        *,
        cls: int = stun.REQUEST,
        auth: bool = True,
        txid: bytes | None = None,
        fingerprint: bool = True,
    ) -> bytes:
        txid = txid or os.urandom(12)
        attrs = list(attrs)
        key = None
        if auth:
            assert self.nonce is not None, "no nonce yet: call challenge() first"
            attrs += [
                (stun.USERNAME, self.username.encode()),
                (stun.REALM, self.realm.encode()),
                (stun.NONCE, self.nonce),
            ]
            key = self.key
        return stun.encode(
            method, cls, txid, attrs, key, sha256=self.sha256, fingerprint=fingerprint
        )

    def send_raw(self, data: bytes, now: float) -> Reply | None:
        self.sent.append(data)
        out = self.server.handle(data, self.listener, self.addr, now, self.wall)
        assert len(out) <= 1
        if not out:
            self.last = None
            return None
        raw, dest = out[0]
        assert dest == self.addr
        self.last = Reply(raw, stun.parse(raw))
        return self.last

    def request(
        self, method: int, attrs: list[tuple[int, bytes]], now: float, **kw: object
    ) -> Reply:
        reply = self.send_raw(self.build(method, attrs, **kw), now)  # type: ignore[arg-type]
        assert reply is not None, "server did not answer"
        return reply

    def challenge(self, now: float) -> Reply:
        """An unauthenticated Allocate, to learn the nonce."""
        reply = self.request(stun.ALLOCATE, [requested_transport()], now, auth=False)
        assert reply.code == 401, reply.code
        nonce = reply.get(stun.NONCE)
        assert nonce is not None
        self.nonce = nonce
        return reply

    def allocate(
        self, now: float, attrs: list[tuple[int, bytes]] | None = None, **kw: object
    ) -> Reply:
        if self.nonce is None:
            self.challenge(now)
        if attrs is None:
            attrs = [requested_transport()]
        return self.request(stun.ALLOCATE, attrs, now, **kw)

    def refresh(self, now: float, lifetime: int | None = None, **kw: object) -> Reply:
        attrs = [] if lifetime is None else [(stun.LIFETIME, struct.pack("!I", lifetime))]
        return self.request(stun.REFRESH, attrs, now, **kw)

    def _with_peers(
        self, method: int, peers: list[Address], extra: list[tuple[int, bytes]], now: float
    ) -> Reply:
        txid = os.urandom(12)
        attrs = list(extra) + [
            (stun.XOR_PEER_ADDRESS, stun.encode_xor_address(h, p, txid)) for h, p in peers
        ]
        return self.request(method, attrs, now, txid=txid)

    def permission(self, now: float, *peers: Address) -> Reply:
        return self._with_peers(stun.CREATE_PERMISSION, list(peers), [], now)

    def channel_bind(self, now: float, channel: int, peer: Address) -> Reply:
        number = (stun.CHANNEL_NUMBER, struct.pack("!HH", channel, 0))
        return self._with_peers(stun.CHANNEL_BIND, [peer], [number], now)

    def send_indication(self, now: float, peer: Address, data: bytes) -> None:
        txid = os.urandom(12)
        attrs = [
            (stun.XOR_PEER_ADDRESS, stun.encode_xor_address(peer[0], peer[1], txid)),
            (stun.DATA_ATTR, data),
        ]
        raw = stun.encode(stun.SEND, stun.INDICATION, txid, attrs)
        assert self.server.handle(raw, self.listener, self.addr, now) == []


def requested_transport(protocol: int = 17) -> tuple[int, bytes]:
    return (stun.REQUESTED_TRANSPORT, bytes([protocol, 0, 0, 0]))


def family_attr(attr: int, family: int) -> tuple[int, bytes]:
    return (attr, bytes([family, 0, 0, 0]))


def lifetime_attr(seconds: int) -> tuple[int, bytes]:
    return (stun.LIFETIME, struct.pack("!I", seconds))
