"""The hot functions, as benchmark cases, and the reference functions they are measured against.

A :class:`Case` is something to time: ``run()`` does ``ops`` operations (one for a plain
function, one per packet for the fast path's batches); ``setup()``, when not None, must run
(untimed) before every ``run()`` (it queues the packets a drain then forwards). ``ref`` names
the reference function of the same nature that the gate divides by: ``python`` (interpreter
work), ``native`` (C code over bytes: HMAC-SHA1, CRC-32, struct) or ``kernel`` (UDP loopback
system calls). A ratio to a reference timed in the same run cancels most of what the machine
does to absolute times (clock speed, a neighbour's load, a slower CI host).

Groups: ``stun`` (ext._stun parse, encode, MESSAGE-INTEGRITY check), ``fastpath`` (the
ChannelData forward decision and framing in ext._fastpath, with and without RTP header
inspection, fed real loopback datagrams), ``auth`` (session token verification in
control/tokens.py, the relay's TURN REST credential check in relay/auth.py), ``reference``.
"""

from __future__ import annotations

import hashlib
import hmac
import socket
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

from control.models import Role
from control.tokens import TokenSigner, relay_credentials
from ext import _fastpath
from ext import _stun as stun
from relay.auth import PASSWORD_MD5, Credentials, NonceMint

SECRET = b"micro-bench-relay-secret"
REALM = "micro"
TXID = bytes(range(12))
NOW = 1_800_000_000.0
CLIENT = ("198.51.100.7", 50123)
PACKETS = 256  # per fast-path drain: 4 batches of 64
PAYLOAD = 200  # bytes of RTP (12-byte header) per ChannelData message
CHANNEL = 0x4001
SOCK_BUFFER = 4 << 20


@dataclass
class Case:
    name: str
    group: str
    ref: str
    run: Callable[[], object]
    setup: Callable[[], None] | None = None
    ops: int = 1
    close: Callable[[], None] = field(default=lambda: None)


# --- reference functions --------------------------------------------------------------------

_REF_BLOCK = bytes(range(256)) * 2
_REF_KEY = hashlib.md5(b"ref", usedforsecurity=False).digest()


def ref_python() -> int:
    """Interpreter work of fixed cost: a loop of dict, int and str operations."""
    seen: dict[int, int] = {}
    total = 0
    for i in range(64):
        seen[i & 15] = i
        total += len(str(i)) + seen[i & 15]
    return total


def ref_native() -> int:
    """C work over bytes of fixed cost, of the kinds the STUN codec does."""
    digest = hmac.digest(_REF_KEY, _REF_BLOCK, "sha1")
    head = struct.unpack_from("!HHI12s", _REF_BLOCK)
    return zlib.crc32(_REF_BLOCK) ^ len(digest) ^ head[0]


class _Loopback:
    """The kernel reference: a UDP socket that sends to itself and reads back, ``n`` times
    (one operation: one datagram sent and received, as the fast path's per-packet cost)."""

    def __init__(self, n: int = 16) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.connect(self.sock.getsockname())
        self.data = b"k" * PAYLOAD
        self.n = n

    def run(self) -> int:
        send, recv, data = self.sock.send, self.sock.recv, self.data
        got = 0
        for _ in range(self.n):
            send(data)
            got += len(recv(2048))
        return got


def references() -> dict[str, Case]:
    loop = _Loopback()
    return {
        "python": Case("reference.python", "reference", "python", ref_python),
        "native": Case("reference.native", "reference", "native", ref_native),
        "kernel": Case(
            "reference.kernel", "reference", "kernel", loop.run, ops=loop.n, close=loop.sock.close
        ),
    }


# --- STUN ------------------------------------------------------------------------------------


def _rest_user() -> tuple[str, str]:
    return relay_credentials(SECRET, "0123456789abcdef0123456789abcdef", 3600, NOW)


def _allocate_request(key: bytes, user: str, nonce: bytes) -> bytes:
    """An authenticated Allocate as browsers send it."""
    return stun.encode(
        stun.ALLOCATE,
        stun.REQUEST,
        TXID,
        [
            (stun.REQUESTED_TRANSPORT, b"\x11\x00\x00\x00"),
            (stun.LIFETIME, struct.pack("!I", 600)),
            (stun.USERNAME, user.encode()),
            (stun.REALM, REALM.encode()),
            (stun.NONCE, nonce),
            (stun.SOFTWARE, b"libwebrtc micro"),
        ],
        key,
    )


def stun_cases() -> list[Case]:
    user, password = _rest_user()
    key = hashlib.md5(f"{user}:{REALM}:{password}".encode(), usedforsecurity=False).digest()
    nonce = NonceMint(b"n" * 32, 600).issue(CLIENT, NOW)
    request = _allocate_request(key, user, nonce)
    msg = stun.parse(request)
    assert stun.check_integrity(request, msg, key)
    answer_attrs = [
        (stun.XOR_RELAYED_ADDRESS, stun.encode_xor_address("203.0.113.7", 49170, TXID)),
        (stun.XOR_MAPPED_ADDRESS, stun.encode_xor_address(*CLIENT, TXID)),
        (stun.LIFETIME, struct.pack("!I", 600)),
        (stun.SOFTWARE, b"Clickacall"),
    ]
    return [
        Case("stun.parse", "stun", "native", lambda: stun.parse(request)),
        Case(
            "stun.encode",
            "stun",
            "native",
            lambda: stun.encode(stun.ALLOCATE, stun.SUCCESS, TXID, answer_attrs, key),
        ),
        Case(
            "stun.check_integrity",
            "stun",
            "native",
            lambda: stun.check_integrity(request, msg, key),
        ),
    ]


# --- auth: session tokens and TURN REST credentials --------------------------------------------


def auth_cases() -> list[Case]:
    signer = TokenSigner([b"k" * 32, b"old-key-still-valid"])
    token, _ = signer.issue(tenant_id="tenant-1", call_id="call-1", role=Role.VISITOR, now=NOW)

    def verify_token() -> object:
        return signer.verify(token, NOW + 1, is_revoked=lambda _tid: False)

    user, password = _rest_user()
    creds = Credentials(REALM, [SECRET, b"previous-secret"], {})
    mint = NonceMint(b"n" * 32, 600)
    nonce = mint.issue(CLIENT, NOW)
    key = creds.keys(user, [password], PASSWORD_MD5)[0]
    request = _allocate_request(key, user, nonce)
    msg = stun.parse(request)

    def rest_check() -> bool:
        """What the TURN core does for an authenticated request (relay/turn.py
        _authenticate): the nonce, the username's candidate passwords from each secret,
        their long-term keys, MESSAGE-INTEGRITY against each until one matches."""
        mint.check(nonce, CLIENT, NOW + 1)
        username = user
        found = creds.lookup(username)
        assert found is not None
        _identity, passwords = found
        for k in creds.keys(username, passwords, PASSWORD_MD5):
            if stun.check_integrity(request, msg, k):
                return True
        return False

    assert rest_check()
    return [
        Case("auth.token_verify", "auth", "python", verify_token),
        Case("auth.rest_credentials", "auth", "python", rest_check),
    ]


# --- the fast path: ChannelData forward decision, framing, RTP inspection --------------------


def _udp(buffer: int = SOCK_BUFFER) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        s.setsockopt(socket.SOL_SOCKET, opt, buffer)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    return s


class FastPathRig:
    """An engine with one listener and one allocation (relayed socket, channel, permission)
    between a client socket and a peer socket, on loopback. ``to_peer`` cases queue
    ChannelData from the client and time one ``drain_listener``; ``to_client`` cases queue
    RTP from the peer and time one ``drain_relay``. Every batch goes to one address in
    datagrams of one size, so with UDP GSO (the engine's default) it leaves as one message:
    the kernel's share is small and the engine's own work shows."""

    def __init__(self, quality: bool) -> None:
        self.engine = _fastpath.Engine(16, quality=quality)
        self.listener, self.relay = _udp(), _udp()
        self.client, self.peer = _udp(), _udp()
        self.idx = self.engine.add_listener(self.listener.fileno())
        c = self.client.getsockname()
        self.slot = self.engine.open_slot(self.relay.fileno(), self.idx, c[0], c[1])
        p = self.peer.getsockname()
        self.engine.add_permission(self.slot, p[0])
        self.engine.bind_channel(self.slot, CHANNEL, p[0], p[1])
        self.client.connect(self.listener.getsockname())
        self.peer.connect(self.relay.getsockname())
        self.seq = 0
        self.at_peer = self.at_client = 0  # datagrams forwarded, not yet read there
        self.rtp = bytearray(PAYLOAD)
        self.framed = bytearray(4 + PAYLOAD)
        struct.pack_into("!HH", self.framed, 0, CHANNEL, PAYLOAD)

    def _next_rtp(self, buf: bytearray, off: int, ssrc: int) -> None:
        self.seq += 1
        # V=2, PT 111 (Opus), 20 ms frames at 48 kHz
        struct.pack_into(
            "!BBHII", buf, off, 0x80, 111, self.seq & 0xFFFF, (self.seq * 960) & 0xFFFFFFFF, ssrc
        )

    def _drain(self, sock: socket.socket, want: int) -> None:
        got = 0
        while True:
            try:
                sock.recv(4096)
            except BlockingIOError:
                break
            got += 1
        if got != want:
            raise RuntimeError(f"fast-path bench rig lost packets: {got} of {want} arrived")

    def queue_to_peer(self) -> None:
        self._drain(self.peer, self.at_peer)
        send = self.client.send
        for _ in range(PACKETS):
            self._next_rtp(self.framed, 4, 0x1234ABCD)
            send(self.framed)
        self.at_peer = PACKETS

    def queue_to_client(self) -> None:
        self._drain(self.client, self.at_client)
        send = self.peer.send
        for _ in range(PACKETS):
            self._next_rtp(self.rtp, 0, 0x5678DCBA)
            send(self.rtp)
        self.at_client = PACKETS

    def to_peer(self) -> object:
        return self.engine.drain_listener(self.idx)

    def to_client(self) -> int:
        return self.engine.drain_relay(self.slot)

    def close(self) -> None:
        self.engine.close_slot(self.slot)
        for s in (self.listener, self.relay, self.client, self.peer):
            s.close()


def fastpath_cases() -> list[Case]:
    out = []
    for quality, suffix in ((False, ""), (True, "_rtp")):
        rig = FastPathRig(quality)
        out.append(
            Case(
                f"fastpath.to_peer{suffix}",
                "fastpath",
                "kernel",
                rig.to_peer,
                setup=rig.queue_to_peer,
                ops=PACKETS,
            )
        )
        rig2 = FastPathRig(quality)
        out.append(
            Case(
                f"fastpath.to_client{suffix}",
                "fastpath",
                "kernel",
                rig2.to_client,
                setup=rig2.queue_to_client,
                ops=PACKETS,
                close=_closing(rig, rig2),
            )
        )
    return out


def _closing(*rigs: FastPathRig) -> Callable[[], None]:
    def close() -> None:
        for r in rigs:
            r.close()

    return close


def all_cases() -> list[Case]:
    """Every hot-function case (references not included), in a fixed order."""
    return [*stun_cases(), *fastpath_cases(), *auth_cases()]
