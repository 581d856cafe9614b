"""Start a TURN relay as a subprocess on loopback for integration tests.

Two implementations can sit behind the same tests: ours (``python -m relay``)
and coturn (``turnserver``), selected by ``CLICKACALL_TEST_RELAY`` (``ours``,
the default, or ``coturn``). Running the suite against coturn checks the
tests themselves; running it against ours checks the relay.

Everything here is stdlib only: a tiny STUN client (enough for Binding,
Allocate, CreatePermission, ChannelBind, Send and Data with long-term
credentials), port picking, process start/stop and log capture.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import dataclasses
import hashlib
import hmac
import ipaddress
import os
import random
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from relay.policy import DEFAULT_DENY_V4, DEFAULT_DENY_V6
from tests import stunref as ref

REPO = Path(__file__).resolve().parent.parent
ENV_IMPL = "CLICKACALL_TEST_RELAY"
IMPLS = ("ours", "coturn")

# Listening ports and relay port blocks stay out of Linux's ephemeral range
# (32768-60999) so they never collide with client sockets bound to port 0;
# both are picked at random and checked free, since other suites run relays too.
LISTEN_PORTS = (61000, 65000)
RELAY_BLOCKS = (10000, 32704)
RELAY_BLOCK_SIZE = 64

# The peer ranges denied by default, mirrored for coturn (relay/policy.py).
DEFAULT_DENIED = DEFAULT_DENY_V4 + DEFAULT_DENY_V6


def relay_impl() -> str:
    impl = os.environ.get(ENV_IMPL, "ours").strip().lower() or "ours"
    if impl not in IMPLS:
        raise ValueError(f"{ENV_IMPL}={impl!r}: expected one of {', '.join(IMPLS)}")
    return impl


def have_ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


def rest_credentials(secret: str, token: str = "test", ttl: int = 3600) -> tuple[str, str]:
    """TURN REST credentials: ``"<expiry>:<token>"`` and base64(HMAC-SHA1(secret, username))."""
    username = f"{int(time.time()) + ttl}:{token}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _port_free(host: str, port: int, kind: int = socket.SOCK_DGRAM) -> bool:
    with socket.socket(_family(host), kind) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def make_certificate(
    cert: Path, key: Path, name: str = "localhost", ips: Sequence[str] = ()
) -> None:
    """A self-signed P-256 certificate for ``name``, 127.0.0.1, ::1 and ``ips`` (openssl's
    command)."""
    alt = ",".join([f"DNS:{name}", *(f"IP:{ip}" for ip in ("127.0.0.1", "::1", *ips))])
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
            "-subj", f"/CN={name}", "-addext", f"subjectAltName={alt}",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip


def free_tcp_port() -> int:
    """A free loopback TCP port (for a metrics listener)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> dict[str, float]:
    """The clickacall_ samples of the metrics listener on ``port``, by full name."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("clickacall_"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def tcp_connects(host: str, port: int, timeout: float = 0.3) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# --------------------------------------------------------------------------
# A small STUN/TURN client (RFC 8489 / RFC 8656) over the pure-Python reference codec
# (tests/stunref.py), so these tests do not lean on the Cython codec they exercise.

BINDING = 0x001
ALLOCATE = 0x003
REFRESH = 0x004
SEND = 0x006
DATA = 0x007
CREATE_PERMISSION = 0x008
CHANNEL_BIND = 0x009
REQUEST, INDICATION, SUCCESS, ERROR = ref.REQUEST, ref.INDICATION, ref.SUCCESS, ref.ERROR

A_USERNAME = 0x0006
A_MESSAGE_INTEGRITY = 0x0008
A_ERROR_CODE = 0x0009
A_CHANNEL_NUMBER = 0x000C
A_LIFETIME = 0x000D
A_XOR_PEER_ADDRESS = 0x0012
A_DATA = 0x0013
A_REALM = 0x0014
A_NONCE = 0x0015
A_XOR_RELAYED_ADDRESS = 0x0016
A_REQUESTED_ADDRESS_FAMILY = 0x0017
A_REQUESTED_TRANSPORT = 0x0019
A_XOR_MAPPED_ADDRESS = 0x0020
A_FINGERPRINT = 0x8028


def encode_xor_address(host: str, port: int, txid: bytes) -> bytes:
    return ref.encode_xor_address(host, port, txid)


def decode_xor_address(value: bytes, txid: bytes) -> tuple[str, int]:
    _, host, port = ref.decode_xor_address(value, txid)
    return host, port


@dataclasses.dataclass
class StunMessage:
    """A parsed reply, with the raw bytes kept to check its MESSAGE-INTEGRITY."""

    msg: ref.Message
    raw: bytes

    @property
    def method(self) -> int:
        return self.msg.method

    @property
    def klass(self) -> int:
        return self.msg.cls

    @property
    def txid(self) -> bytes:
        return self.msg.transaction_id

    def get(self, atype: int) -> bytes | None:
        return self.msg.get(atype)

    @property
    def error_code(self) -> int | None:
        v = self.get(A_ERROR_CODE)
        return ref.decode_error_code(v)[0] if v is not None and len(v) >= 4 else None

    @property
    def error_reason(self) -> str:
        v = self.get(A_ERROR_CODE)
        return ref.decode_error_code(v)[1] if v is not None and len(v) >= 4 else ""

    def integrity_ok(self, key: bytes) -> bool:
        return self.msg.integrity_offset >= 0 and ref.check_integrity(self.raw, self.msg, key)

    def __repr__(self) -> str:
        code = f" error={self.error_code} {self.error_reason!r}" if self.klass == ERROR else ""
        return f"<STUN method={self.method:#x} class={self.klass}{code}>"


def encode(
    method: int,
    klass: int,
    attrs: Iterable[tuple[int, bytes]],
    txid: bytes | None = None,
    key: bytes | None = None,
) -> tuple[bytes, bytes]:
    txid = txid or os.urandom(12)
    return ref.encode(method, klass, txid, list(attrs), key), txid


def decode(data: bytes) -> StunMessage | None:
    try:
        return StunMessage(ref.parse(data), data)
    except ref.StunError:
        return None


def stun_binding(host: str, port: int, timeout: float = 0.3) -> tuple[str, int] | None:
    """One STUN Binding; returns the XOR-MAPPED-ADDRESS, or None on no/bad answer."""
    msg, txid = encode(BINDING, REQUEST, [])
    with socket.socket(_family(host), socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.sendto(msg, (host, port))
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                data = s.recv(2048)
                reply = decode(data)
                if reply and reply.txid == txid and reply.klass == SUCCESS:
                    xma = reply.get(A_XOR_MAPPED_ADDRESS)
                    return decode_xor_address(xma, txid) if xma else ("", 0)
        except OSError:
            return None
    return None


AttrBuilder = Callable[[bytes], Sequence[tuple[int, bytes]]]


class TurnError(Exception):
    def __init__(self, response: StunMessage) -> None:
        super().__init__(f"TURN error {response.error_code} {response.error_reason!r}")
        self.response = response


class StunClient:
    """A blocking TURN-over-UDP client with long-term credentials (one allocation)."""

    def __init__(
        self, server: tuple[str, int], username: str, password: str, local: str | None = None
    ) -> None:
        self.server = server
        self.username = username
        self.password = password
        self.realm: bytes | None = None
        self.nonce: bytes | None = None
        self.key: bytes | None = None
        self.sock = socket.socket(_family(server[0]), socket.SOCK_DGRAM)
        if local is not None:  # e.g. another loopback address, to look like another host
            self.sock.bind((local, 0))
        self.sock.settimeout(0.25)
        self.sock.connect(server)
        self.pending: list[bytes] = []  # non-response datagrams seen while waiting
        self.retransmitted = False  # whether the last transaction sent its request again
        self.unsigned_errors: list[StunMessage] = []

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> StunClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _auth_attrs(self) -> list[tuple[int, bytes]]:
        assert self.realm is not None and self.nonce is not None
        return [
            (A_USERNAME, self.username.encode()),
            (A_REALM, self.realm),
            (A_NONCE, self.nonce),
        ]

    def _send(self, data: bytes) -> None:
        self.sock.send(data)

    def _recv(self, timeout: float) -> bytes:
        """The next datagram (message), or TimeoutError."""
        self.sock.settimeout(timeout)
        return self.sock.recv(65535)

    def _transact(self, method: int, build: AttrBuilder) -> StunMessage:
        txid = os.urandom(12)
        full = list(build(txid)) + (self._auth_attrs() if self.key else [])
        msg, _ = encode(method, REQUEST, full, txid=txid, key=self.key)
        rto = 0.25
        self.retransmitted = False
        for attempt in range(6):
            self.retransmitted = attempt > 0
            self._send(msg)
            deadline = time.monotonic() + rto
            while (left := deadline - time.monotonic()) > 0:
                try:
                    data = self._recv(left)
                except TimeoutError:
                    break
                reply = decode(data)
                if reply is None or reply.txid != txid:
                    self.pending.append(data)
                    continue
                return reply
            rto = min(rto * 2, 2.0)
        raise TimeoutError(f"no answer to STUN method {method:#x} from {self.server}")

    def request(self, method: int, build: AttrBuilder) -> StunMessage:
        """Send a request, doing the 401/438 nonce dance; raise TurnError on an error reply.

        ``build`` gives the attributes for a transaction id (XOR-PEER-ADDRESS of an
        IPv6 peer depends on it, and each retry after a 401 is a new transaction).
        """
        for _ in range(3):
            reply = self._transact(method, build)
            code = reply.error_code if reply.klass == ERROR else None
            if code in (401, 438) and reply.get(A_NONCE) is not None:
                self.nonce = reply.get(A_NONCE)
                if code == 401 or self.realm is None:
                    self.realm = reply.get(A_REALM)
                assert self.realm is not None, "401 without REALM"
                self.key = hashlib.md5(
                    self.username.encode() + b":" + self.realm + b":" + self.password.encode()
                ).digest()
                continue
            if reply.klass == ERROR:
                if self.key is not None and not reply.integrity_ok(self.key):
                    self.unsigned_errors.append(reply)
                raise TurnError(reply)
            if self.key is not None:
                assert reply.integrity_ok(self.key), f"bad MESSAGE-INTEGRITY on {reply!r}"
            return reply
        raise AssertionError("relay kept asking for authentication")

    def allocate(self, family: int | None = None, lifetime: int = 600) -> tuple[str, int]:
        attrs = [
            (A_REQUESTED_TRANSPORT, struct.pack("!B3x", 17)),
            (A_LIFETIME, struct.pack("!I", lifetime)),
        ]
        if family is not None:
            attrs.append((A_REQUESTED_ADDRESS_FAMILY, struct.pack("!B3x", family)))
        reply = self.request(ALLOCATE, lambda txid: attrs)
        relayed = reply.get(A_XOR_RELAYED_ADDRESS)
        assert relayed is not None, "Allocate success without XOR-RELAYED-ADDRESS"
        return decode_xor_address(relayed, reply.txid)

    def refresh(self, lifetime: int) -> StunMessage:
        try:
            return self.request(REFRESH, lambda txid: [(A_LIFETIME, struct.pack("!I", lifetime))])
        except TurnError as e:
            # A delete (lifetime 0) is not idempotent: when the machine is slow and the answer
            # to the first copy comes after we sent a second, the second finds no allocation
            # (437). The first copy deleted it, which is what we asked for.
            if lifetime == 0 and e.response.error_code == 437 and self.retransmitted:
                return e.response
            raise

    def create_permission(self, host: str, port: int = 0) -> StunMessage:
        """CreatePermission for host (RFC 8656 says the port is ignored)."""
        return self.request(
            CREATE_PERMISSION,
            lambda txid: [(A_XOR_PEER_ADDRESS, encode_xor_address(host, port, txid))],
        )

    def channel_bind(self, channel: int, host: str, port: int) -> StunMessage:
        return self.request(
            CHANNEL_BIND,
            lambda txid: [
                (A_CHANNEL_NUMBER, struct.pack("!H2x", channel)),
                (A_XOR_PEER_ADDRESS, encode_xor_address(host, port, txid)),
            ],
        )

    def send_indication(self, host: str, port: int, data: bytes) -> None:
        txid = os.urandom(12)
        msg, _ = encode(
            SEND,
            INDICATION,
            [(A_XOR_PEER_ADDRESS, encode_xor_address(host, port, txid)), (A_DATA, data)],
            txid=txid,
        )
        self._send(msg)

    def send_channel(self, channel: int, payload: bytes) -> None:
        """ChannelData (padded to 4 bytes, as streams need and UDP allows)."""
        frame = struct.pack("!HH", channel, len(payload)) + payload
        self._send(frame + b"\0" * (-len(frame) % 4))

    def recv_channel(self, timeout: float = 2.0) -> tuple[int, bytes]:
        """The next ChannelData: (channel, payload); other messages are kept in pending."""
        deadline = time.monotonic() + timeout
        while True:
            for i, data in enumerate(self.pending):
                if 0x40 <= data[0] <= 0x7F:
                    del self.pending[i]
                    chan, length = struct.unpack("!HH", data[:4])
                    return chan, data[4 : 4 + length]
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no ChannelData")
            self.pending.append(self._recv(left))

    def recv_data(self, timeout: float = 2.0) -> tuple[tuple[str, int], bytes]:
        """Next Data indication: (peer address, payload)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.pending:
                data = self.pending.pop(0)
            else:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("no Data indication")
                data = self._recv(left)
            msg = decode(data)
            if msg and msg.method == DATA and msg.klass == INDICATION:
                peer = msg.get(A_XOR_PEER_ADDRESS)
                payload = msg.get(A_DATA)
                assert peer is not None and payload is not None
                return decode_xor_address(peer, msg.txid), payload


class StreamStunClient(StunClient):
    """The same client over TCP, or TLS with ``tls`` (a context checking the relay's
    certificate): STUN and ChannelData framed on the stream (RFC 8656 12.5)."""

    def __init__(
        self,
        server: tuple[str, int],
        username: str,
        password: str,
        tls: ssl.SSLContext | None = None,
        local: str | None = None,
    ) -> None:
        self.server = server
        self.username = username
        self.password = password
        self.realm = None
        self.nonce = None
        self.key = None
        raw = socket.create_connection(
            server, timeout=5, source_address=(local, 0) if local else None
        )
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = tls.wrap_socket(raw, server_hostname=server[0]) if tls else raw
        self.buffer = b""
        self.pending = []
        self.unsigned_errors = []

    def _send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _recv(self, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        while True:
            if len(self.buffer) >= 4:
                length = struct.unpack("!H", self.buffer[2:4])[0]
                total = 20 + length if self.buffer[0] < 4 else 4 + length + (-length % 4)
                if len(self.buffer) >= total:
                    message, self.buffer = self.buffer[:total], self.buffer[total:]
                    return message
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no message")
            self.sock.settimeout(left)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the relay closed the connection")
            self.buffer += chunk


# --------------------------------------------------------------------------
# The relay process.


class RelayStartError(RuntimeError):
    pass


@dataclasses.dataclass
class RelaySpec:
    listen: Sequence[str] = ("127.0.0.1",)
    relay_ips: Sequence[str] = ("127.0.0.1",)
    allow_peers: Sequence[str] = ("127.0.0.0/8",)
    realm: str = "example"
    secret: str = "s3cret-for-tests"
    users: Sequence[tuple[str, str]] = ()
    workers: int = 1  # ours only
    extra_args: Sequence[str] = ()  # ours only: more flags for `python -m relay`
    tcp: bool = False  # TURN over TCP on the listen port's number
    tls: tuple[str, str] | None = None  # (certificate, key) PEM files: TURN over TLS
    tls_port: int = 0  # its port; 0: a free one


_LIVE: set[subprocess.Popen[bytes]] = set()


@atexit.register
def _kill_leftovers() -> None:
    for proc in list(_LIVE):
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)


class RelayProcess:
    """A relay subprocess; ``start()`` returns once it answers a STUN Binding."""

    def __init__(self, spec: RelaySpec, workdir: Path, impl: str | None = None) -> None:
        self.spec = spec
        self.impl = impl or relay_impl()
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / f"relay-{self.impl}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.tls_port = 0
        self.relay_ports = range(0)
        self.cmd: list[str] = []
        self.started_at = 0  # where the log of the latest start begins

    @property
    def host(self) -> str:
        return self.spec.listen[0]

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    @property
    def realm(self) -> str:
        return self.spec.realm

    @property
    def secret(self) -> str:
        return self.spec.secret

    def credentials(self, token: str = "test", ttl: int = 3600) -> tuple[str, str]:
        return rest_credentials(self.spec.secret, token, ttl)

    def _command(self, port: int, low: int, high: int) -> list[str]:
        s = self.spec
        if self.impl == "ours":
            cmd = [sys.executable, "-m", "relay"]
            for host in s.listen:
                cmd += ["--listen", _hostport(host, port)]
            for ip in s.relay_ips:
                cmd += ["--relay-ip", ip]
            cmd += ["--realm", s.realm, "--auth-secret", s.secret]
            cmd += ["--workers", str(s.workers), "--ports", f"{low}-{high}"]
            for cidr in s.allow_peers:
                cmd += ["--allow-peer", cidr]
            for name, password in s.users:
                cmd += ["--user", f"{name}:{password}"]
            for host in s.listen if s.tcp else ():
                cmd += ["--listen-tcp", _hostport(host, port)]
            if s.tls is not None:
                for host in s.listen:
                    cmd += ["--listen-tls", _hostport(host, self.tls_port)]
                cmd += ["--tls-cert", s.tls[0], "--tls-key", s.tls[1]]
            return cmd + list(s.extra_args)
        exe = shutil.which("turnserver")
        if exe is None:
            raise RelayStartError("coturn's turnserver is not installed (run `make debs`)")
        if s.users:
            raise RelayStartError("static --user credentials are not mirrored for coturn")
        cmd = [exe, "-n", "--listening-port", str(port)]
        for host in s.listen:
            cmd += ["--listening-ip", host]
        for ip in s.relay_ips:
            cmd += ["--relay-ip", ip]
        cmd += ["--min-port", str(low), "--max-port", str(high), "--realm", s.realm]
        cmd += ["--use-auth-secret", "--static-auth-secret", s.secret]
        cmd += [] if s.tcp else ["--no-tcp"]
        if s.tls is None:
            cmd += ["--no-tls"]
        else:
            cmd += ["--tls-listening-port", str(self.tls_port), "--cert", s.tls[0]]
            cmd += ["--pkey", s.tls[1]]
        cmd += ["--no-dtls", "--no-cli", "--no-tcp-relay"]
        cmd += ["--relay-threads", "1"]
        cmd += ["--pidfile", str(self.workdir / "turnserver.pid")]
        cmd += ["--userdb", str(self.workdir / "turndb")]
        cmd += ["--log-file", "stdout", "--simple-log", "--verbose", "--no-multicast-peers"]
        # Mirror our default peer policy: coturn allows private ranges unless told.
        # coturn treats a range that starts at the all-zeros address as "any"
        # (0.0.0.0-x or :: would deny everything), so those start one higher;
        # coturn refuses the unspecified address by itself.
        for cidr in DEFAULT_DENIED:
            net = ipaddress.ip_network(cidr)
            first, last = net[0], net[-1]
            if int(first) == 0:
                first += 1
            if first <= last:
                cmd.append(f"--denied-peer-ip={first}-{last}")
        for cidr in s.allow_peers:
            net = ipaddress.ip_network(cidr)
            cmd.append(f"--allowed-peer-ip={net[0]}-{net[-1]}")
            if net.overlaps(ipaddress.ip_network("127.0.0.0/8")) or net.overlaps(
                ipaddress.ip_network("::1/128")
            ):
                cmd.append("--allow-loopback-peers")
        return cmd

    def start(
        self, attempts: int = 4, ready_timeout: float = 20.0, port: int | None = None
    ) -> RelayProcess:
        """Start the relay (on ``port`` when given: a restart keeps its address)."""
        last = ""
        fixed = port
        for _ in range(attempts):
            port = fixed or self._pick_listen_port()
            if self.spec.tls is not None:
                self.tls_port = self.spec.tls_port or self._pick_listen_port(avoid=port)
            low, high = self._pick_relay_block()
            self.cmd = self._command(port, low, high)
            self.started_at = self.log_size()  # this attempt's lines follow
            with self.log_path.open("ab") as log:
                log.write(f"\n=== {' '.join(self.cmd)}\n".encode())
                log.flush()
                env = dict(os.environ, PYTHONUNBUFFERED="1")
                self.proc = subprocess.Popen(
                    self.cmd,
                    cwd=REPO if self.impl == "ours" else self.workdir,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                )
            _LIVE.add(self.proc)
            self.port, self.relay_ports = port, range(low, high + 1)
            if self._wait_ready(ready_timeout):
                return self
            self.stop()
            last = self.log_tail(40)
            if "in use" not in last.lower():
                break
            if fixed:
                time.sleep(0.5)  # the old process's sockets may linger a moment
        raise RelayStartError(
            f"{self.impl} relay did not answer a STUN Binding on "
            f"{_hostport(self.host, self.port)}; command: {' '.join(self.cmd)}\n"
            f"--- log tail ---\n{last}"
        )

    def _pick_listen_port(self, avoid: int = 0) -> int:
        streams = self.spec.tcp or self.spec.tls is not None
        for _ in range(200):
            port = random.randint(*LISTEN_PORTS)
            if port == avoid:
                continue
            if all(_port_free(h, port) for h in self.spec.listen) and (
                not streams
                or all(_port_free(h, port, socket.SOCK_STREAM) for h in self.spec.listen)
            ):
                return port
        raise RelayStartError("no free listening port")

    def _pick_relay_block(self) -> tuple[int, int]:
        for _ in range(200):
            low = random.randrange(RELAY_BLOCKS[0], RELAY_BLOCKS[1], RELAY_BLOCK_SIZE)
            high = low + RELAY_BLOCK_SIZE - 1
            ports = range(low, high + 1)
            if all(_port_free(ip, p) for ip in self.spec.relay_ips for p in ports):
                return low, high
        raise RelayStartError("no free relay port block")

    def worker_pids(self, since: int = 0) -> dict[int, int]:
        """Our workers that logged their "serving on" line (in the log from ``since``): index
        -> pid of its latest start (a restarted worker logs the line again)."""
        found = re.findall(r'msg="worker (\d+)/\d+ \(pid (\d+)\) serving', self.log_text(since))
        return {int(index) - 1: int(pid) for index, pid in found}

    def _wait_ready(self, timeout: float) -> bool:
        """Ready once it answers a STUN Binding (and connections on its TCP and TLS ports);
        ours with several workers only once every worker serves too: the first to start
        answers the Binding while the others may still be starting."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        workers = self.spec.workers if self.impl == "ours" and self.spec.workers > 1 else 0
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            if (
                len(self.worker_pids(self.started_at)) >= workers
                and all(stun_binding(h, self.port) is not None for h in self.spec.listen)
                and all(
                    tcp_connects(h, p)
                    for h in self.spec.listen
                    for p, on in ((self.port, self.spec.tcp), (self.tls_port, self.spec.tls))
                    if on
                )
            ):
                return True
            time.sleep(0.1)
        return False

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> int | None:
        proc = self.proc
        if proc is None:
            return None
        try:
            if proc.poll() is None:
                # Ours drains on SIGTERM (keeps allocations up to --drain-timeout)
                # and stops at once on SIGINT; coturn stops on SIGTERM.
                proc.send_signal(signal.SIGINT if self.impl == "ours" else signal.SIGTERM)
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    with self.log_path.open("ab") as log:
                        log.write(
                            b"\n=== test harness: no exit 5 s after the stop signal, killed\n"
                        )
            # The relay's own session: SIGKILL whatever of it is left (workers too).
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        finally:
            _LIVE.discard(proc)
        return proc.returncode

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def log_text(self, since: int = 0) -> str:
        try:
            with self.log_path.open("rb") as f:
                f.seek(since)
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 200, since: int = 0) -> str:
        return "\n".join(self.log_text(since).splitlines()[-lines:])

    def worker_of(self, client: StunClient) -> int:
        """The index of our relay's worker that logged the allocation of ``client`` (a
        client on a 127.0.0.0/24 address)."""
        port = client.sock.getsockname()[1]
        pattern = rf'worker=(\d+) pid=\d+ msg="allocation created for 127\.0\.0\.0/24:{port} '
        found = re.search(pattern, self.log_text())
        assert found is not None, f"no allocation logged for client port {port}"
        return int(found.group(1))

    def __repr__(self) -> str:
        return f"<RelayProcess {self.impl} {_hostport(self.host, self.port)}>"
