"""Bad input on TCP and TLS connections to a live relay is dropped and counted, and the relay
keeps serving a well-behaved client all along.

One relay (ours: the figures come from its /metrics) with short stream timers; a well-behaved
TCP client holds an allocation with a channel to a UDP echo peer and checks a round trip after
each kind of abuse: garbage, a truncated frame, an oversize length, a slow-loris message, a
mute TLS client and a plain-text one, thousands of idle connections, and a client that never
reads while its peer floods it. Also here: Send/Data indications and the 442 for an RFC 6062
TCP allocation over TLS, the per-source and per-node connection limits, and a certificate
reloaded on SIGHUP with connections and allocations kept.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import socket
import ssl
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.relayproc import (
    RelayProcess,
    RelaySpec,
    StreamStunClient,
    TurnError,
    encode,
    free_tcp_port,
    make_certificate,
    scrape,
)

pytestmark = [pytest.mark.slow]

CHANNEL = 0x4000
IDLE = 2.0  # --stream-idle-timeout
PARTIAL = 1.0  # --stream-partial-timeout
HANDSHAKE = 1.0  # --tls-handshake-timeout
IDLE_CONNECTIONS = 2000


def wait_metric(port: int, name: str, ok: object, timeout: float = 10.0) -> float:
    deadline = time.monotonic() + timeout
    while True:
        value = scrape(port).get(name, 0.0)
        if ok(value) or time.monotonic() > deadline:  # type: ignore[operator]
            return value
        time.sleep(0.1)


class Echo:
    """A UDP peer that echoes what it gets (a thread), counting it."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.address = self.sock.getsockname()
        self.count = 0
        self.stop = False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.stop:
            try:
                data, addr = self.sock.recvfrom(65535)
            except (TimeoutError, OSError):
                continue
            self.count += 1
            self.sock.sendto(data, addr)

    def close(self) -> None:
        self.stop = True
        self.thread.join(2)
        self.sock.close()


class Stack:
    def __init__(self, relay: RelayProcess, metrics: int, cert: tuple[str, str]) -> None:
        self.relay = relay
        self.metrics = metrics
        self.cert = cert
        self.echo = Echo()
        user, password = relay.credentials("good")
        self.good = StreamStunClient(relay.address, user, password)
        relayed = self.good.allocate()
        assert relayed[1] in relay.relay_ports
        self.good.channel_bind(CHANNEL, *self.echo.address)
        self.round_trips = 0

    def round_trip(self, n: int = 10) -> None:
        """The well-behaved client's packets all come back (through the relay both ways)."""
        sent = [os.urandom(20 + i * 13) for i in range(n)]
        for p in sent:
            self.good.send_channel(CHANNEL, p)
        got = [self.good.recv_channel(3) for _ in sent]
        assert got == [(CHANNEL, p) for p in sent]
        self.round_trips += 1

    def value(self, name: str) -> float:
        return scrape(self.metrics).get(name, 0.0)

    def closed(self, reason: str, transport: str = "tcp") -> str:
        return f'clickacall_relay_connections_closed_total{{reason="{reason}",transport="{transport}"}}'

    def close(self) -> None:
        self.good.close()
        self.echo.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("abuse")
    cert, key = work / "cert.pem", work / "key.pem"
    make_certificate(cert, key)
    metrics = free_tcp_port()
    spec = RelaySpec(
        tcp=True,
        tls=(str(cert), str(key)),
        extra_args=[
            "--metrics",
            f"127.0.0.1:{metrics}",
            "--stream-idle-timeout",
            str(IDLE),
            "--stream-partial-timeout",
            str(PARTIAL),
            "--tls-handshake-timeout",
            str(HANDSHAKE),
            "--stream-send-buffer",
            "8192",
            "--stream-max-per-source",
            "5000",
            "--stream-max-connections",
            "6000",
        ],
    )
    relay = RelayProcess(spec, work, impl="ours").start()
    s = None
    try:
        s = Stack(relay, metrics, (str(cert), str(key)))
        s.round_trip()
        yield s
        s.round_trip()  # still served after everything
    finally:
        if s is not None:
            s.close()
        relay.stop()


def raw(stack: Stack, tls: bool = False) -> socket.socket:
    port = stack.relay.tls_port if tls else stack.relay.port
    sock = socket.create_connection((stack.relay.host, port), timeout=5)
    return sock


def closed_by_relay(sock: socket.socket, timeout: float = 5.0) -> bool:
    sock.settimeout(timeout)
    try:
        while sock.recv(4096):
            pass
        return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_garbage_closes_the_connection(stack: Stack) -> None:
    before = stack.value(stack.closed("malformed"))
    sock = raw(stack)
    sock.sendall(b"\xff" + os.urandom(200))
    assert closed_by_relay(sock)
    sock.close()
    assert wait_metric(stack.metrics, stack.closed("malformed"), lambda v: v > before) > before
    stack.round_trip()


def test_oversize_length_closes_the_connection(stack: Stack) -> None:
    before = stack.value(stack.closed("oversize"))
    sock = raw(stack)
    sock.sendall(struct.pack("!HH", CHANNEL, 60000) + b"x" * 100)  # beyond 4096
    assert closed_by_relay(sock)
    sock.close()
    assert wait_metric(stack.metrics, stack.closed("oversize"), lambda v: v > before) > before
    stack.round_trip()


def test_a_truncated_frame_is_dropped_and_counted(stack: Stack) -> None:
    name = 'clickacall_relay_dropped_packets_total{reason="truncated",transport="tcp"}'
    before = stack.value(name)
    sock = raw(stack)
    frame = struct.pack("!HH", CHANNEL, 100) + b"y" * 100
    sock.sendall(frame[:57])
    time.sleep(0.2)
    sock.close()  # the rest never comes
    assert wait_metric(stack.metrics, name, lambda v: v > before) == before + 1
    stack.round_trip()


def test_slow_loris_is_cut_off(stack: Stack) -> None:
    before = stack.value(stack.closed("partial_timeout"))
    sock = raw(stack)
    message, _ = encode(0x001, 0x0000, [(0x8022, b"s" * 400)])  # a Binding, byte by byte
    closed = False
    started = time.monotonic()
    for byte in message:
        try:
            sock.send(bytes([byte]))
        except OSError:
            closed = True
            break
        time.sleep(0.05)
        if time.monotonic() - started > PARTIAL + 3:
            break
        stack.good.send_channel(CHANNEL, b"meanwhile")  # served all along
        assert stack.good.recv_channel(3) == (CHANNEL, b"meanwhile")
    assert closed or closed_by_relay(sock)
    assert time.monotonic() - started < PARTIAL + 3
    sock.close()
    got = wait_metric(stack.metrics, stack.closed("partial_timeout"), lambda v: v > before)
    assert got == before + 1


def test_mute_and_plain_text_tls_clients(stack: Stack) -> None:
    timeout_name = stack.closed("handshake_timeout", "tls")
    failed_name = stack.closed("handshake_failed", "tls")
    t0, f0 = stack.value(timeout_name), stack.value(failed_name)
    mute = raw(stack, tls=True)
    plain = raw(stack, tls=True)
    plain.sendall(encode(0x001, 0x0000, [])[0])  # STUN in the clear on the TLS port
    assert closed_by_relay(plain)
    assert closed_by_relay(mute, HANDSHAKE + 3)
    mute.close()
    plain.close()
    assert wait_metric(stack.metrics, timeout_name, lambda v: v > t0) == t0 + 1
    assert wait_metric(stack.metrics, failed_name, lambda v: v > f0) == f0 + 1
    stack.round_trip()


def test_thousands_of_idle_connections(stack: Stack) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if min(hard, 1 << 20) < IDLE_CONNECTIONS + 200:
        pytest.skip(f"the open-files limit ({hard}) is too low for {IDLE_CONNECTIONS} sockets")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, IDLE_CONNECTIONS + 200), hard))
    before = stack.value(stack.closed("idle"))
    socks = []
    try:
        for _ in range(IDLE_CONNECTIONS):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex((stack.relay.host, stack.relay.port))
            socks.append(s)
        opened = wait_metric(
            stack.metrics,
            'clickacall_relay_connections{transport="tcp"}',
            lambda v: v >= IDLE_CONNECTIONS + 1,
        )
        assert opened >= IDLE_CONNECTIONS + 1  # the good client's and the idle ones
        stack.round_trip()  # served with thousands of idle connections open
        closed = wait_metric(
            stack.metrics,
            stack.closed("idle"),
            lambda v: v >= before + IDLE_CONNECTIONS,
            timeout=IDLE + 15,
        )
        assert closed >= before + IDLE_CONNECTIONS
        stack.round_trip()  # the good client holds an allocation: it is not idle
    finally:
        for s in socks:
            s.close()
    assert wait_metric(
        stack.metrics, 'clickacall_relay_connections{transport="tcp"}', lambda v: v == 1
    )


def test_a_slow_reader_gets_its_media_dropped_not_buffered(stack: Stack) -> None:
    name = 'clickacall_relay_dropped_packets_total{reason="backpressure",transport="tcp"}'
    before = stack.value(name)
    user, password = stack.relay.credentials("slow")
    slow = StreamStunClient(stack.relay.address, user, password)
    flood = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    flood.bind(("127.0.0.1", 0))
    try:
        relayed = slow.allocate()
        slow.channel_bind(CHANNEL + 1, *flood.getsockname())
        slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        for _ in range(3000):  # 3.6 MB the client never reads
            flood.sendto(b"z" * 1200, relayed)
        dropped = wait_metric(stack.metrics, name, lambda v: v > before + 100)
        assert dropped > before + 100
        stack.round_trip()  # everyone else is served meanwhile
    finally:
        slow.close()
        flood.close()


def test_send_and_data_indications_over_tls(stack: Stack) -> None:
    user, password = stack.relay.credentials("tls-indications")
    ctx = ssl.create_default_context(cafile=stack.cert[0])
    c = StreamStunClient((stack.relay.host, stack.relay.tls_port), user, password, tls=ctx)
    try:
        assert c.sock.version() in ("TLSv1.2", "TLSv1.3")  # type: ignore[attr-defined]
        c.allocate()
        c.create_permission(*stack.echo.address)
        for i in range(20):
            c.send_indication(*stack.echo.address, b"ind%d" % i)
        got = [c.recv_data(3) for _ in range(20)]
        assert got == [(stack.echo.address, b"ind%d" % i) for i in range(20)]
        # RFC 6062 TCP allocations are refused with 442 and a reason that says so
        attrs = [(0x0019, struct.pack("!B3x", 6))]
        tcp_alloc = StreamStunClient((stack.relay.host, stack.relay.tls_port), user, password, ctx)
        with tcp_alloc, pytest.raises(TurnError) as err:
            tcp_alloc.request(0x003, lambda txid: attrs)
        assert err.value.response.error_code == 442
        assert "RFC 6062" in err.value.response.error_reason
    finally:
        c.close()


def test_certificate_reload_on_sighup_keeps_connections(stack: Stack, tmp_path: Path) -> None:
    """An ACME client renewed the certificate: SIGHUP, and new handshakes get the new one
    while open connections and their allocations carry on."""
    user, password = stack.relay.credentials("before-reload")
    old_ctx = ssl.create_default_context(cafile=stack.cert[0])
    before = StreamStunClient((stack.relay.host, stack.relay.tls_port), user, password, old_ctx)
    try:
        before.allocate()
        before.channel_bind(CHANNEL, *stack.echo.address)
        new_cert, new_key = tmp_path / "new.pem", tmp_path / "new-key.pem"
        make_certificate(new_cert, new_key)
        shutil.copy(new_cert, stack.cert[0])  # rotated in place, as an ACME client does
        shutil.copy(new_key, stack.cert[1])
        assert stack.relay.proc is not None
        since = stack.relay.log_size()
        os.kill(stack.relay.proc.pid, signal.SIGHUP)
        deadline = time.monotonic() + 5
        while "TLS certificate reloaded" not in stack.relay.log_text(since):
            assert time.monotonic() < deadline, stack.relay.log_text(since)
            time.sleep(0.1)
        new_ctx = ssl.create_default_context(cafile=str(new_cert))
        after = StreamStunClient((stack.relay.host, stack.relay.tls_port), user, password, new_ctx)
        after.close()
        with pytest.raises(ssl.SSLCertVerificationError):
            StreamStunClient((stack.relay.host, stack.relay.tls_port), user, password, old_ctx)
        before.send_channel(CHANNEL, b"still here")  # the old connection and its allocation
        assert before.recv_channel(3) == (CHANNEL, b"still here")
    finally:
        before.close()


def test_connection_limits(tmp_path: Path) -> None:
    """Per client /24 and per node: more connections are closed (reset) at once, counted."""
    metrics = free_tcp_port()
    spec = RelaySpec(
        tcp=True,
        extra_args=[
            "--metrics",
            f"127.0.0.1:{metrics}",
            "--stream-max-per-source",
            "3",
            "--stream-max-connections",
            "5",
        ],
    )
    relay = RelayProcess(spec, tmp_path, impl="ours").start()
    socks: list[socket.socket] = []
    try:
        for host in ["127.0.0.1"] * 4 + ["127.0.1.1", "127.0.2.1", "127.0.3.1"]:
            s = socket.socket()
            s.bind((host, 0))
            s.connect((relay.host, relay.port))
            socks.append(s)
            time.sleep(0.05)
        refused = 'clickacall_relay_connections_refused_total{reason="%s",transport="tcp"}'
        assert wait_metric(metrics, refused % "source", lambda v: v == 1) == 1
        assert wait_metric(metrics, refused % "node", lambda v: v == 1) == 1
        assert closed_by_relay(socks[3]) and closed_by_relay(socks[6])
        assert scrape(metrics)['clickacall_relay_connections{transport="tcp"}'] == 5
    finally:
        for s in socks:
            s.close()
        relay.stop()
