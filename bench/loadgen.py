"""Benchmark plumbing around the batched generator in ``ext._loadgen``: sockets, flows through a
system under test, one measured trial, and the process accounting (/proc) of the system."""

from __future__ import annotations

import contextlib
import math
import os
import resource
import select
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from bench import turnclient
from ext._loadgen import Echo, Generator, Replay
from ext._streamgen import StreamGenerator
from relay import procstat

HOST = "127.0.0.1"
SOCK_BUFFER = 4 << 20  # net.core.rmem_max here: what any relay may ask for unprivileged
# The generator's and echo's own sockets: large (SO_RCVBUFFORCE when root) so that a few ms of
# hypervisor stall on a small VM do not overflow the measuring side.
GEN_BUFFER = 64 << 20
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32)
FIRST_CHANNEL = 0x4000


def big_buffers(sock: socket.socket) -> None:
    for force, plain in ((SO_RCVBUFFORCE, socket.SO_RCVBUF), (SO_SNDBUFFORCE, socket.SO_SNDBUF)):
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, GEN_BUFFER)
        except OSError:  # not root: the rmem_max/wmem_max cap applies
            sock.setsockopt(socket.SOL_SOCKET, plain, GEN_BUFFER)


def udp_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    big_buffers(sock)
    sock.bind((HOST, 0))
    return sock


def free_port(tcp_too: bool = False) -> int:
    """A UDP port free on HOST (and, with ``tcp_too``, free for TCP as well)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((HOST, 0))
            port = int(sock.getsockname()[1])
        if not tcp_too:
            return port
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((HOST, port))
            except OSError:
                continue
            return port
    raise OSError("no port free for both UDP and TCP")


# --- accounting of the system under test (its whole process tree, all threads): relay.procstat


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants."""
    return procstat.descendants([pid])


def cpu_seconds(pids: Sequence[int]) -> float:
    """utime + stime (all threads) summed over ``pids``, from /proc/<pid>/stat."""
    ticks = 0
    for pid in pids:
        st = procstat.stat(pid)
        if st is not None:
            ticks += st.cpu_ticks
    return ticks / procstat.CLK_TCK


def open_files(need: int) -> int:
    """Raise this process's open-files limit to its hard limit when ``need`` descriptors (idle
    allocations' sockets, say) would not fit under the soft one; returns the limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need and soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return soft


def rss_bytes(pids: Sequence[int]) -> int:
    return sum(procstat.rss_bytes(pid) or 0 for pid in pids)


def pin(pids: Sequence[int], cpu: int) -> bool:
    """Pin every thread of ``pids`` to ``cpu``; False where the platform can't."""
    if not hasattr(os, "sched_setaffinity") or cpu >= (os.cpu_count() or 1):
        return False
    for pid in pids:
        for tid in procstat.threads(pid) or [pid]:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(tid, {cpu})
    return True


def pin_cpus(pids: Sequence[int], cpus: set[int]) -> bool:
    """Pin every thread of ``pids`` (0: the calling thread) to the CPU set ``cpus``."""
    ncpu = os.cpu_count() or 1
    cpus = {c for c in cpus if c < ncpu}
    if not hasattr(os, "sched_setaffinity") or not cpus:
        return False
    for pid in pids:
        for tid in (procstat.threads(pid) or [pid]) if pid else [0]:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(tid, cpus)
    return True


def cpu_exact(pids: Sequence[int]) -> float:
    """CPU seconds of every thread of ``pids`` from the scheduler's own run-time accounting
    (/proc/PID/task/TID/schedstat, nanoseconds), not sampled at clock ticks like
    :func:`cpu_seconds`: exact even over a short trial of a few thousand packets. A kernel
    without schedstat gets :func:`cpu_seconds`."""
    if not procstat.HAVE_SCHEDSTAT:
        return cpu_seconds(pids)
    return sum(procstat.run_ns(pid) or 0 for pid in pids) / 1e9


def cpu_by_pid(pids: Sequence[int]) -> dict[int, float]:
    """CPU seconds (all threads, :func:`cpu_exact`) of each of ``pids``."""
    return {pid: cpu_exact([pid]) for pid in pids}


# --- the rig: one echo peer, flows through a system, trials ---------------------------------


Peers = tuple[str, int] | Callable[[int], tuple[str, int]]  # one peer, or one per flow


class Rig:
    """The echo peer. It is served from the generator's own loop, on the generator's core.

    With ``distinct_peers`` it is an epoll set of echo sockets instead, and :meth:`peer`
    gives flow ``i`` an echo address of its own (the first is ``addr``): a relay that tells
    its allocations apart by the peer's address and port (ours with --multiplex-peer) needs
    a peer per allocation, as real calls have. Every system of a run then sees the same
    echoes; the extra work (one epoll_wait per wake-up) is the generator's."""

    def __init__(self, distinct_peers: bool = False) -> None:
        self.sock = udp_socket()
        self.addr: tuple[str, int] = self.sock.getsockname()
        self.extra: list[socket.socket] = []
        self.epoll: select.epoll | None = None
        if distinct_peers:
            self.epoll = select.epoll()
            self.epoll.register(self.sock.fileno(), select.EPOLLIN)
            self.echo = Echo(self.epoll.fileno(), epoll=True)
        else:
            self.echo = Echo(self.sock.fileno())

    def peer(self, i: int) -> tuple[str, int]:
        """Flow ``i``'s echo address: ``addr`` unless the rig has distinct peers."""
        if self.epoll is None or i == 0:
            return self.addr
        while len(self.extra) < i:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((HOST, 0))
            sock.setblocking(False)
            self.epoll.register(sock.fileno(), select.EPOLLIN)
            self.extra.append(sock)
        addr: tuple[str, int] = self.extra[i - 1].getsockname()
        return addr

    def close(self) -> None:
        for sock in self.extra:
            sock.close()
        if self.epoll is not None:
            self.epoll.close()
        self.sock.close()


@dataclass
class Flows:
    """N client sockets, connected to where their ChannelData goes, and their channels."""

    socks: list[socket.socket]
    channels: list[int]
    clients: list[turnclient.TurnClient] = field(default_factory=list)

    def generator(self, payload: int) -> Generator:
        return Generator([s.fileno() for s in self.socks], payload, self.channels)

    def close(self) -> None:
        for c in self.clients:
            c.release()
        for s in self.socks:
            s.close()


def direct_flows(target: tuple[str, int], n: int) -> Flows:
    """Flows straight to ``target`` (the echo itself, or a plain forwarder): no TURN."""
    socks = []
    for _ in range(n):
        sock = udp_socket()
        sock.connect(target)
        socks.append(sock)
    return Flows(socks, [FIRST_CHANNEL + i for i in range(n)])


def turn_flows(server: tuple[str, int], peer: Peers, n: int, secret: str, realm: str) -> Flows:
    """Per flow: Allocate (REST credentials), ChannelBind to ``peer`` (or to ``peer(i)``
    for flow ``i``), then connect the socket to the server so the generator's sendmmsg needs
    no address."""
    return turn_flows_from(server, peer, [HOST] * n, secret, realm)


ALLOCATION_MISMATCH = 437


def call_hosts(n: int) -> list[str]:
    """``n`` loopback client addresses, each in its own /24 as calls come from many networks
    (a relay's per-prefix limit on unauthenticated requests then applies per call, as in real
    use), the last octet alternating so a relay that steers workers by client IP spreads them."""
    if not 0 <= n <= 254 * 256:
        raise ValueError("too many calls for distinct loopback /24 prefixes")
    return [f"127.{1 + i // 256}.{i % 256}.{1 + i % 254}" for i in range(n)]


def turn_flows_from(
    server: tuple[str, int], peer: Peers, hosts: Sequence[str], secret: str, realm: str
) -> Flows:
    """Like :func:`turn_flows`, one flow per entry of ``hosts``, each client socket bound to
    that loopback address: distinct client IPs, as a relay that steers its workers by client
    IP (ours does) needs to spread the flows.

    coturn keeps a released allocation's 5-tuple for a few seconds (437 to a new Allocate from
    it), and a new socket may get a port that was just released: such a flow gets another
    socket, as a real client would."""
    flows = Flows([], [])
    spent: list[turnclient.TurnClient] = []  # kept open until done: their ports stay taken
    try:
        for i, host in enumerate(hosts):
            for attempt in range(5):
                client = turnclient.TurnClient(server, secret, realm, ident=f"flow{i}", host=host)
                try:
                    client.allocate()
                    break
                except turnclient.TurnError as exc:
                    spent.append(client)
                    if exc.code != ALLOCATION_MISMATCH or attempt == 4:
                        raise
            flows.clients.append(client)
            client.channel_bind(FIRST_CHANNEL + i, peer if isinstance(peer, tuple) else peer(i))
            big_buffers(client.sock)
            client.sock.settimeout(None)
            client.sock.connect(server)
            flows.socks.append(client.sock)
            flows.channels.append(FIRST_CHANNEL + i)
    except BaseException:
        flows.close()
        raise
    finally:
        for c in spent:
            c.close()
    return flows


@dataclass
class StreamFlows:
    """N TURN clients on TCP or TLS connections, each with a channel bound to the echo."""

    clients: list[turnclient.StreamTurnClient]
    channels: list[int]

    def generator(self, payload: int) -> StreamGenerator:
        return StreamGenerator([c.conn for c in self.clients], payload, self.channels)

    def close(self) -> None:
        for c in self.clients:
            c.close()  # the connection's close deletes its allocation


def stream_flows(
    server: tuple[str, int],
    peer: tuple[str, int],
    n: int,
    secret: str,
    realm: str,
    *,
    tls: bool,
) -> StreamFlows:
    """Per flow: a connection (TCP, or TLS), Allocate and ChannelBind to ``peer`` over it."""
    flows = StreamFlows([], [])
    try:
        for i, host in enumerate(call_hosts(n)):
            client = turnclient.StreamTurnClient(
                server, secret, realm, ident=f"stream{i}", tls=tls, host=host
            )
            flows.clients.append(client)
            client.allocate()
            client.channel_bind(FIRST_CHANNEL + i, peer)
            flows.channels.append(FIRST_CHANNEL + i)
    except BaseException:
        flows.close()
        raise
    return flows


def percentile_us(rtts: np.ndarray, q: float) -> float:
    return float(np.percentile(rtts, q)) / 1e3 if rtts.size else math.nan


def trial(
    rig: Rig, gen: Generator, rate: float, seconds: float, pids: Sequence[int], burst: int = 16
) -> dict[str, float]:
    """One paced run: offered ``rate`` packets/s for ``seconds``; CPU of ``pids`` over it
    (:func:`cpu_exact`: clock ticks would quantise a 2 s trial's figure to about 0.6%)."""
    count = max(1, int(rate * seconds))
    rig.echo.reset()
    c0, g0 = cpu_exact(pids), os.times()
    res = gen.run(rate, count, seconds * 1.25 + 0.2, 0.3, burst, rig.echo)
    c1, g1 = cpu_exact(pids), os.times()
    sent, received = res["sent"], res["received"]
    return {
        "rate": rate,
        "achieved_rate": sent / res["send_seconds"] if res["send_seconds"] else 0.0,
        "sent": sent,
        "received": received,
        "loss": 1.0 - received / sent if sent else 1.0,
        # both directions through the system
        **_run_figures(res, rig.echo.packets + received, c1 - c0, g1, g0, pids, gen.rtts()),
    }


def _run_figures(
    res: dict[str, float],
    relayed: int,
    cpu: float,
    g1: os.times_result,
    g0: os.times_result,
    pids: Sequence[int],
    rtts_raw: bytes,
) -> dict[str, float]:
    """What every run reports alike: pacing, CPU per relayed packet, the generator's own
    CPU and round-trip percentiles."""
    rtts = np.frombuffer(rtts_raw, dtype=np.uint32)
    wall = res["total_seconds"]
    return {
        "send_errors": res["send_errors"],
        "late_max_ms": res["late_max_seconds"] * 1e3,
        "oversleep_max_ms": res["oversleep_max_seconds"] * 1e3,
        "relayed": relayed,
        "cpu_us_per_pkt": cpu * 1e6 / relayed if relayed and pids else math.nan,
        "system_cpu": cpu / wall if pids else math.nan,
        "gen_cpu": (g1.user - g0.user + g1.system - g0.system) / wall,
        "rtt_p50_us": percentile_us(rtts, 50),
        "rtt_p99_us": percentile_us(rtts, 99),
    }


def replay_trial(
    rig: Rig, player: Replay, pids: Sequence[int], drain_seconds: float = 0.3
) -> dict[str, float]:
    """One run of a prepared call workload (``ext._loadgen.Replay``); CPU of ``pids`` over it
    (:func:`cpu_exact`: these runs carry far fewer packets than the floods). ``loss`` counts
    RTP packets; SRTCP packets are relayed and counted apart."""
    rig.echo.reset()
    c0, g0 = cpu_exact(pids), os.times()
    res = player.run(player.schedule_seconds * 1.25 + 0.5, drain_seconds, rig.echo)
    c1, g1 = cpu_exact(pids), os.times()
    sent, rtp = res["sent"], res["sent_rtp"]
    relayed = rig.echo.packets + res["received"] + res["received_rtcp"]
    secs = res["send_seconds"] or math.nan
    rtts_raw = player.rtts()
    return {
        "offered_pps": sent / secs,
        "offered_mbps": res["bytes_sent"] * 8 / secs / 1e6,
        "sent": sent,
        "sent_rtcp": res["sent_rtcp"],
        "received": res["received"],
        "received_rtcp": res["received_rtcp"],
        "loss": 1.0 - res["received"] / rtp if rtp else 1.0,
        **_run_figures(res, relayed, c1 - c0, g1, g0, pids, rtts_raw),
        "rtt_p999_us": percentile_us(np.frombuffer(rtts_raw, dtype=np.uint32), 99.9),
    }


def median(trials: Sequence[dict[str, float]]) -> dict[str, float]:
    """Per-key median of a few repeated trials."""
    return {k: float(np.median([t[k] for t in trials])) for k in trials[0]}


def good(t: dict[str, float], max_loss: float = 0.01) -> bool:
    return t["loss"] < max_loss and t["achieved_rate"] >= 0.97 * t["rate"]


def find_max_rate(
    measure: Callable[[float], dict[str, float]],
    start: float,
    ceiling: float,
    max_seconds: float,
    log: Callable[[str], None],
    tries: int = 2,
) -> dict[str, object]:
    """Highest offered rate with < 1% loss: ramp up by 1.5x, then bisect (geometric) until the
    bracket is within 10%, all inside ``max_seconds``. A rate passes if one of ``tries`` runs
    passes (a small VM's hypervisor stalls of several ms make single runs flaky). Records why
    the last failing rate failed: "loss", or "generator" when the generator itself fell behind
    its schedule (the figure is then a floor, not the system's limit)."""
    deadline = time.monotonic() + max_seconds
    best, bad, bad_reason = 0.0, 0.0, ""
    steps: list[dict[str, float]] = []
    rate = start
    while time.monotonic() < deadline:
        if bad and best and bad / best < 1.1:
            break
        ok = False
        for _ in range(tries):
            t = measure(rate)
            steps.append(t)
            ok = good(t)
            log(
                f"    {rate:>9,.0f}/s loss {t['loss']:6.2%} sent at {t['achieved_rate']:>9,.0f}/s"
                f" {'ok' if ok else 'too much'}"
            )
            if ok or time.monotonic() >= deadline:
                break
        if ok:
            best = rate
        else:
            bad = rate
            bad_reason = "loss" if t["loss"] >= 0.01 else "generator"
        if not bad:
            if rate >= ceiling:
                bad_reason = "ceiling"
                break
            rate = min(rate * 1.5, ceiling)
        elif not best:
            rate = rate / 2  # below the ramp's start
            if rate < 1000:
                break
        else:
            rate = math.sqrt(best * bad)
    return {"max_rate": best, "limited_by": bad_reason or "time", "steps": steps}
