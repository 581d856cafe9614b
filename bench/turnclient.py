"""A small TURN client for the benchmark: Allocate with TURN REST credentials, ChannelBind, and a
pipelined bulk allocator for "many idle allocations" runs; :class:`StreamTurnClient` does the
same over a TCP or TLS connection (``ext._streamgen.StreamConn``).

STUN encoding is the project's codec, ``ext._stun``.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import struct
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from ext import _stun
from ext._streamgen import StreamConn
from relay.auth import long_term_key, rest_password

ALLOCATE, REFRESH, CHANNEL_BIND = 0x003, 0x004, 0x009
REQUEST, SUCCESS, ERROR = 0, 2, 3
USERNAME, MESSAGE_INTEGRITY, ERROR_CODE = 0x0006, 0x0008, 0x0009
CHANNEL_NUMBER, LIFETIME, XOR_PEER_ADDRESS = 0x000C, 0x000D, 0x0012
REALM, NONCE, XOR_RELAYED_ADDRESS, REQUESTED_TRANSPORT = 0x0014, 0x0015, 0x0016, 0x0019
FINGERPRINT = 0x8028
UDP = b"\x11\x00\x00\x00"

Attrs = list[tuple[int, bytes]]


class TurnError(RuntimeError):
    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.code = code  # the STUN error code of a failure answer, 0 for anything else


# --- STUN encoding: the project's codec ----------------------------------------------------


def encode(method: int, cls: int, tid: bytes, attrs: Attrs, key: bytes | None = None) -> bytes:
    return bytes(_stun.encode(method, cls, tid, attrs, key, fingerprint=True))


def parse(data: bytes) -> tuple[int, int, bytes, dict[int, bytes]]:
    """(method, class, transaction id, first value of each attribute type)."""
    try:
        msg = _stun.parse(data)
    except _stun.StunError as exc:
        raise TurnError(str(exc)) from exc
    attrs: dict[int, bytes] = {}
    for t, v in msg.attributes:
        attrs.setdefault(t, v)
    return msg.method, msg.cls, msg.transaction_id, attrs


def xor_address(host: str, port: int, tid: bytes) -> bytes:
    return bytes(_stun.encode_xor_address(host, port, tid))


def unxor_address(value: bytes, tid: bytes) -> tuple[str, int]:
    _, host, port = _stun.decode_xor_address(value, tid)
    return host, port


def error_code(value: bytes | None) -> int:
    if not value or len(value) < 4:
        return 0
    return (value[2] & 7) * 100 + value[3]


# --- credentials ---------------------------------------------------------------------------


def rest_credentials(secret: str, ident: str, ttl: int = 3600) -> tuple[str, str]:
    """TURN REST username ``"<unix-expiry>:<id>"`` and its password."""
    username = f"{int(time.time()) + ttl}:{ident}"
    return username, rest_password(secret.encode(), username)


# --- one client ----------------------------------------------------------------------------


class TurnClient:
    """Blocking TURN client on its own UDP socket (kept open: its 5-tuple is the allocation)."""

    def __init__(
        self,
        server: tuple[str, int],
        secret: str,
        realm: str,
        ident: str = "bench",
        timeout: float = 0.5,
        tries: int = 6,
        host: str = "127.0.0.1",
    ) -> None:
        self.server = server
        self.realm = realm
        self.username, self.password = rest_credentials(secret, ident)
        self.key: bytes | None = None
        self.nonce: bytes | None = None
        self.timeout = timeout
        self.tries = tries
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))  # any of 127.0.0.0/8: a relay may steer workers by client IP
        self.relayed: tuple[str, int] | None = None

    def close(self) -> None:
        self.sock.close()

    def _transact(
        self, method: int, attrs: Attrs, auth: bool
    ) -> tuple[int, bytes, dict[int, bytes]]:
        tid = os.urandom(12)
        if auth:
            assert self.nonce is not None
            attrs = attrs + [
                (USERNAME, self.username.encode()),
                (REALM, self.realm.encode()),
                (NONCE, self.nonce),
            ]
        data = encode(method, REQUEST, tid, attrs, self.key if auth else None)
        self.sock.settimeout(self.timeout)
        for _ in range(self.tries):
            self.sock.sendto(data, self.server)
            deadline = time.monotonic() + self.timeout
            while time.monotonic() < deadline:
                try:
                    reply = self.sock.recv(2048)
                except (TimeoutError, ConnectionRefusedError):
                    break
                try:
                    rmethod, cls, rtid, rattrs = parse(reply)
                except TurnError:
                    continue  # ChannelData or junk
                if rtid == tid and rmethod == method:
                    return cls, tid, rattrs
        raise TurnError(f"no answer from {self.server} to method {method:#x}")

    def request(self, method: int, attrs: Attrs) -> tuple[bytes, dict[int, bytes]]:
        """Send an authenticated request (fetching REALM/NONCE first); return the success."""
        for _ in range(3):
            cls, tid, rattrs = self._transact(method, attrs, auth=self.nonce is not None)
            if cls == SUCCESS:
                return tid, rattrs
            code = error_code(rattrs.get(ERROR_CODE))
            if code in (401, 438) and NONCE in rattrs:
                self.nonce = rattrs[NONCE]
                realm = rattrs.get(REALM)
                if realm is not None:
                    self.realm = realm.decode()
                self.key = long_term_key(self.username, self.realm, self.password)
                continue
            raise TurnError(f"method {method:#x} failed: {code} {rattrs.get(ERROR_CODE)!r}", code)
        raise TurnError(f"method {method:#x}: authentication keeps failing")

    def allocate(self, lifetime: int = 600) -> tuple[str, int]:
        tid, rattrs = self.request(
            ALLOCATE, [(REQUESTED_TRANSPORT, UDP), (LIFETIME, struct.pack("!I", lifetime))]
        )
        value = rattrs.get(XOR_RELAYED_ADDRESS)
        if value is None:
            raise TurnError("Allocate success without XOR-RELAYED-ADDRESS")
        self.relayed = unxor_address(value, tid)
        return self.relayed

    def channel_bind(self, channel: int, peer: tuple[str, int]) -> None:
        tid = os.urandom(12)  # the peer address is XORed with the cookie only for IPv4
        self.request(
            CHANNEL_BIND,
            [
                (CHANNEL_NUMBER, struct.pack("!HH", channel, 0)),
                (XOR_PEER_ADDRESS, xor_address(peer[0], peer[1], tid)),
            ],
        )

    def release(self) -> None:
        """Refresh with lifetime 0 (best effort)."""
        with contextlib.suppress(TurnError, OSError):
            self.request(REFRESH, [(LIFETIME, b"\0\0\0\0")])


class StreamTurnClient(TurnClient):
    """The client over a TCP connection, or TLS with ``tls``: one allocation per connection
    (its 5-tuple), messages framed on the stream; no retransmissions (the stream is
    reliable). ``conn`` is what ``ext._streamgen.StreamGenerator`` then sends on."""

    def __init__(
        self,
        server: tuple[str, int],
        secret: str,
        realm: str,
        ident: str = "bench",
        timeout: float = 3.0,
        tls: bool = False,
        host: str = "127.0.0.1",
        buffers: int = 4 << 20,
    ) -> None:
        self.server = server
        self.realm = realm
        self.username, self.password = rest_credentials(secret, ident)
        self.key = None
        self.nonce = None
        self.timeout = timeout
        self.tries = 1
        self.relayed = None
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            self.sock.bind((host, 0))
            for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                self.sock.setsockopt(socket.SOL_SOCKET, opt, buffers)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sock.settimeout(5)
            self.sock.connect(server)
            self.conn = StreamConn(self.sock, tls)
        except BaseException:
            self.sock.close()
            raise

    def _transact(
        self, method: int, attrs: Attrs, auth: bool
    ) -> tuple[int, bytes, dict[int, bytes]]:
        tid = os.urandom(12)
        if auth:
            assert self.nonce is not None
            attrs = attrs + [
                (USERNAME, self.username.encode()),
                (REALM, self.realm.encode()),
                (NONCE, self.nonce),
            ]
        self.conn.write(encode(method, REQUEST, tid, attrs, self.key if auth else None))
        deadline = time.monotonic() + self.timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                reply = self.conn.read_message(left)
            except (TimeoutError, ConnectionError) as exc:
                raise TurnError(
                    f"no answer from {self.server} to method {method:#x}: {exc}"
                ) from None
            try:
                rmethod, cls, rtid, rattrs = parse(reply)
            except TurnError:
                continue  # ChannelData
            if rtid == tid and rmethod == method:
                return cls, tid, rattrs
        raise TurnError(f"no answer from {self.server} to method {method:#x}")


# --- many idle allocations, pipelined -------------------------------------------------------


@dataclass(eq=False)
class Idle:
    """An allocation of the bulk allocator: its client socket (the 5-tuple: keep it open) and
    the credentials that can refresh or delete it."""

    sock: socket.socket
    username: str
    key: bytes


class _Bulk:
    """One request per allocation from many client sockets, at most ``window`` in flight; a
    request unanswered for a second goes again. The relay's nonce is per client address, so
    the first one it hands out (``nonce``) serves every later socket of this host; a 401 or
    438 brings a new one and the request goes again with it."""

    def __init__(
        self, server: tuple[str, int], realm: str, method: int, attrs: Attrs, window: int
    ) -> None:
        self.server, self.realm, self.method, self.attrs = server, realm, method, attrs
        self.window = window
        self.nonce: bytes | None = None
        # per allocation in flight: (transaction id, last send time, packet, with credentials)
        self.state: dict[Idle, tuple[bytes, float, bytes, bool]] = {}

    def send(self, item: Idle) -> None:
        tid = os.urandom(12)
        if self.nonce is None:
            data = encode(self.method, REQUEST, tid, self.attrs)
        else:
            data = encode(
                self.method,
                REQUEST,
                tid,
                self.attrs
                + [
                    (USERNAME, item.username.encode()),
                    (REALM, self.realm.encode()),
                    (NONCE, self.nonce),
                ],
                item.key,
            )
        self.state[item] = (tid, time.monotonic(), data, self.nonce is not None)
        item.sock.sendto(data, self.server)

    def run(self, items: Iterator[Idle], count: int, deadline: float) -> list[Idle]:
        """Send for up to ``count`` items (taken from ``items`` as the window allows) until
        each has its success or the deadline passes; returns those answered with success."""
        sel = selectors.DefaultSelector()
        done: list[Idle] = []
        started = 0
        try:
            while len(done) < count and time.monotonic() < deadline:
                while started < count and len(self.state) < self.window:
                    item = next(items)
                    started += 1
                    sel.register(item.sock, selectors.EVENT_READ, item)
                    self.send(item)
                now = time.monotonic()
                for item, (tid, sent_at, data, authed) in list(self.state.items()):
                    if now - sent_at > 1.0:
                        if self.nonce is not None and not authed:
                            # a relay limits unauthenticated requests per client prefix: the
                            # nonce is known by now, so ask again with credentials
                            self.send(item)
                        else:  # retransmit the same request
                            self.state[item] = (tid, now, data, authed)
                            item.sock.sendto(data, self.server)
                for key, _ in sel.select(0.05):
                    item = key.data
                    try:
                        reply = item.sock.recv(2048)
                    except (BlockingIOError, ConnectionRefusedError):
                        continue
                    if item not in self.state:
                        continue
                    try:
                        _, cls, tid, rattrs = parse(reply)
                    except TurnError:
                        continue
                    if tid != self.state[item][0]:
                        continue
                    if cls == SUCCESS:
                        del self.state[item]
                        sel.unregister(item.sock)
                        done.append(item)
                    elif error_code(rattrs.get(ERROR_CODE)) in (401, 438) and NONCE in rattrs:
                        self.nonce = rattrs[NONCE]
                        self.send(item)
                    else:
                        raise TurnError(
                            f"bulk method {self.method:#x} failed: {rattrs.get(ERROR_CODE)!r}"
                        )
        finally:
            sel.close()
        return done


def allocate_many(
    server: tuple[str, int],
    count: int,
    secret: str,
    realm: str,
    max_seconds: float = 30.0,
    window: int = 256,
) -> list[Idle]:
    """Create ``count`` allocations, one client socket and one REST username each (as every call
    has its own token; relays cap allocations per username), with at most ``window`` requests
    in flight. Returns those that got an allocation; stops at the deadline."""
    tag = os.urandom(3).hex()
    made: list[Idle] = []

    def fresh() -> Iterator[Idle]:
        while True:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
            username, password = rest_credentials(secret, f"idle-{tag}-{len(made)}")
            made.append(Idle(sock, username, long_term_key(username, realm, password)))
            yield made[-1]

    bulk = _Bulk(
        server,
        realm,
        ALLOCATE,
        [(REQUESTED_TRANSPORT, UDP), (LIFETIME, struct.pack("!I", 600))],
        window,
    )
    done: list[Idle] = []
    try:
        done = bulk.run(fresh(), count, time.monotonic() + max_seconds)
    finally:
        close_all(i for i in made if i not in done)
    return done


def release_many(
    server: tuple[str, int],
    idle: list[Idle],
    realm: str,
    max_seconds: float = 30.0,
    window: int = 256,
) -> int:
    """Delete allocations (Refresh with LIFETIME 0, pipelined) and close their sockets.
    Returns how many the relay confirmed before the deadline."""
    bulk = _Bulk(server, realm, REFRESH, [(LIFETIME, b"\0\0\0\0")], window)
    try:
        return len(bulk.run(iter(idle), len(idle), time.monotonic() + max_seconds))
    finally:
        close_all(idle)


def close_all(idle: Iterable[Idle]) -> None:
    for item in idle:
        item.sock.close()
