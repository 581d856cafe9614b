"""One relay worker: uvloop drives the Cython fast path and feeds STUN to the TURN core.

The loop watches each listening socket, and the engine's own epoll set holding every relayed
socket, with ``add_reader``; each readiness callback drains into
:class:`ext._fastpath.Engine` until the kernel has nothing left (bounded per call so one busy
socket cannot starve the others). One wake-up serves all relayed sockets that are ready.
Only STUN messages come back up; they go through :class:`relay.turn.TurnServer`, whose
decisions reach the engine through :class:`FastPathBackend`.

TCP and TLS clients (``--listen-tcp``, ``--listen-tls``): the engine's
:class:`ext._stream.Streams` accepts their connections, does TLS and splits their streams; the
loop watches its epoll descriptor and gets back STUN messages and connection events only.
A connection's allocations are those of its 5-tuple (the listener and the client's address);
when it closes, they are deleted.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import random
import secrets
import signal
import socket
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ext import _fastpath, _stream
from relay import quality
from relay.backend import Address, Relayed
from relay.config import RelayConfig, show
from relay.listeners import SOCKET_BUFFER, Listeners, family_of, open_listeners
from relay.metrics import Board, LoopLag
from relay.revocations import RevocationReader
from relay.summaries import HandoffWriter
from relay.turn import TurnServer

log = logging.getLogger("clickacall.relay.server")

SWEEP_INTERVAL = 1.0
REVOCATION_POLL = 0.25  # seconds between looks at the node's revocation log
FINAL_SUMMARIES = 4096  # final summaries kept for the node agent to collect (oldest go first)
_RXQ = _fastpath.COUNTER_NAMES.index("rxq_overflow")
# --coalesce-us: what a read relayed (packets both ways and STUN messages in)
_MOVED = tuple(
    _fastpath.COUNTER_NAMES.index(n) for n in ("client_packets", "peer_packets", "stun_in")
)
# A worker waits only while packets come closer together than this many waits, so a quiet
# node never waits for nothing, and goes back to its event loop at least this often (timers,
# signals, TCP and TLS accepts run there).
COALESCE_WINDOW = 4
COALESCE_HOLD_NS = 1_000_000
COALESCE_BACKOFF = 64
DEFAULT_BATCH = 64  # datagrams per recvmmsg/sendmmsg in the fast path
# Benchmarking/debug knob, not a tuning option: forces the fast path's batch size, read once
# per worker start. tests/test_gate.py sets 1 (a system call per datagram), with the debug
# build, to slow the relay down and prove the performance gate (bench/gate.py) fails it.
BATCH_ENV = "CLICKACALL_FASTPATH_BATCH"


@dataclass(slots=True)
class _Alloc:
    sock: socket.socket
    port: int
    family: int
    permissions: set[str] = field(default_factory=set)
    channels: dict[int, Address] = field(default_factory=dict)
    started_at: float = 0.0  # wall clock
    rxq_at_open: int = 0  # the engine's receive-queue drop count when the allocation opened
    allocation: str | None = None  # the TURN core's allocation id and REST token id
    token_id: str | None = None
    mux: int = -1  # the shared peer-facing socket it relays from (--multiplex-peer), or -1
    peers: set[Address] = field(default_factory=set)  # peers it owns on that socket


class PortPool:
    """The relay ports one worker may use, handed out in a shuffled round-robin order."""

    def __init__(self, low: int, high: int) -> None:
        self._order = list(range(low, high + 1))
        random.shuffle(self._order)
        self._free = set(self._order)
        self._pos = 0

    def __len__(self) -> int:
        return len(self._free)

    def take(self, even: bool = False) -> int | None:
        """A free port (an even one whose successor is free too, when ``even``)."""
        n = len(self._order)
        for _ in range(n):
            port = self._order[self._pos]
            self._pos = (self._pos + 1) % n
            if port not in self._free or (even and (port % 2 or port + 1 not in self._free)):
                continue
            self._free.discard(port)
            return port
        return None

    def claim(self, port: int) -> bool:
        if port in self._free:
            self._free.discard(port)
            return True
        return False

    def give(self, port: int) -> None:
        self._free.add(port)


class FastPathBackend:
    """:class:`relay.backend.Backend` over real sockets and the fast path's tables."""

    def __init__(
        self,
        engine: _fastpath.Engine,
        loop: asyncio.AbstractEventLoop,
        relay_ips: dict[int, str],
        advertised: dict[int, str],
        pool: PortPool,
        *,
        board: Board | None = None,
        stream_ids: dict[tuple[int, Address], int] | None = None,
        multiplex: bool = False,
        relays_readable: Callable[[], object] | None = None,
    ) -> None:
        self.engine = engine
        # (listener, client) -> the TCP or TLS connection id that 5-tuple is (RelayWorker's)
        self.stream_ids = stream_ids if stream_ids is not None else {}
        self.board = board
        self.loop = loop
        # the engine's method itself is the callback: no Python frame per wake-up (it only
        # raises if epoll_wait itself fails, and the loop's exception handler logs that);
        # ``relays_readable`` instead when the worker does more than drain (--coalesce-us)
        loop.add_reader(engine.epoll_fd, relays_readable or engine.drain_relays)
        self.relay_ips = relay_ips
        self.advertised = advertised
        self.pool = pool
        self.allocs: dict[int, _Alloc] = {}
        # events for /metrics ("ports.busy"); the worker points this at the TURN core's stats
        self.stats: Counter[str] = Counter()
        # token -> (socket, port, family); the TURN core times the holds out
        self.reservations: dict[bytes, tuple[socket.socket, int, int]] = {}
        # quality: slots opened since the worker last labelled them, and the final summaries
        # of closed allocations waiting for the node agent (relay/quality.py, oldest first)
        self.unlabelled: set[int] = set()
        self.finished: deque[dict[str, Any]] = deque(maxlen=FINAL_SUMMARIES)
        # --multiplex-peer: family -> (shared socket, its port, the engine's index for it)
        self.shared: dict[int, tuple[socket.socket, int, int]] = {}
        if multiplex:
            self._open_shared()

    def _open_shared(self) -> None:
        """Bind one shared peer-facing socket per relayed family, on a port of the worker's
        range, with large buffers (every allocation's traffic goes through it)."""
        for family in self.relay_ips:
            taken = self._take_socket(family, True)  # even: a plain EVEN-PORT is served
            name = "IPv6" if family == socket.AF_INET6 else "IPv4"
            if taken is None:
                raise OSError(f"no free relay port for the shared {name} socket")
            sock, port = taken
            for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                try:
                    sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
                except OSError:
                    pass
            self.shared[family] = (sock, port, self.engine.add_mux(sock.fileno()))
            log.info(
                "multiplexed peer-facing %s socket: every allocation relays from %s",
                name,
                show((self.advertised[family], port)),
            )

    # -- sockets --------------------------------------------------------------------

    def _bind(self, family: int, port: int) -> socket.socket | None:
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.setblocking(False)
            sock.bind((self.relay_ips[family], port))
        except OSError as exc:
            sock.close()
            if exc.errno not in (errno.EADDRINUSE, errno.EACCES):
                log.warning("cannot bind relay port %d: %s", port, exc)
            return None
        return sock

    def _take_socket(self, family: int, even: bool) -> tuple[socket.socket, int] | None:
        for _ in range(16):
            port = self.pool.take(even)
            if port is None:
                return None
            sock = self._bind(family, port)
            if sock is not None:
                return sock, port
            # busy outside our control (another program, a client socket on an ephemeral
            # port): back in the pool for later, and the round-robin tries the next one
            self.pool.give(port)
            self.stats["ports.busy"] += 1
        return None

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
        if family not in self.relay_ips:
            return None
        if self.shared:
            return self._open_shared_relay(listener, client, family, reserve_next or reservation)
        token: bytes | None = None
        if reservation is not None:
            held = self.reservations.pop(reservation, None)
            if held is None or held[2] != family:
                return None
            sock, port = held[0], held[1]
        else:
            taken = self._take_socket(family, even_port)
            if taken is None:
                return None
            sock, port = taken
            if even_port and reserve_next:
                nxt = None
                if self.pool.claim(port + 1):
                    nxt = self._bind(family, port + 1)
                    if nxt is None:
                        self.pool.give(port + 1)
                        self.stats["ports.busy"] += 1
                if nxt is None:
                    sock.close()
                    self.pool.give(port)
                    return None
                token = secrets.token_bytes(8)
                self.reservations[token] = (nxt, port + 1, family)
        try:
            slot = self.engine.open_slot(sock.fileno(), listener, client[0], client[1])
        except OverflowError:
            sock.close()
            self.pool.give(port)
            if token is not None:
                self.release_reservation(token)
            return None
        self._opened(slot, listener, client, _Alloc(sock, port, family))
        return Relayed(slot, (self.advertised[family], port), token)

    def _opened(self, slot: int, listener: int, client: Address, alloc: _Alloc) -> None:
        """Keep a slot the engine just opened (its own relayed socket, or a shared one)."""
        conn = self.stream_ids.get((listener, client))
        if conn is not None:  # a TCP or TLS client: peers' packets go to its connection
            try:
                self.engine.attach_stream(slot, conn)
            except KeyError:  # it closed in this very batch: the core hears of it next
                pass
        alloc.started_at = time.time()
        alloc.rxq_at_open = int(self.engine.counters[_RXQ])
        self.allocs[slot] = alloc
        self.unlabelled.add(slot)

    def _open_shared_relay(
        self, listener: int, client: Address, family: int, port_wish: object
    ) -> Relayed | None:
        """An allocation on the family's shared socket (--multiplex-peer): its relayed
        address is that socket's, whose port is even (so a plain EVEN-PORT is met). The TURN
        core refuses EVEN-PORT's R bit and RESERVATION-TOKEN in this mode before it gets
        here; asked anyway, there is no next port to hold nor a held one to give."""
        sock, port, mux = self.shared[family]
        if port_wish:
            return None
        try:
            slot = self.engine.open_slot(-1, listener, client[0], client[1], mux=mux)
        except OverflowError:
            return None
        self._opened(slot, listener, client, _Alloc(sock, port, family, mux=mux))
        return Relayed(slot, (self.advertised[family], port), None)

    def claim_peer(self, handle: int, peer: Address) -> bool:
        alloc = self.allocs.get(handle)
        if alloc is None or alloc.mux < 0:
            return True  # a relayed socket of its own: any peer is told apart already
        if peer in alloc.peers:
            return True
        if peer[1] == alloc.port and peer[0] in (
            self.relay_ips[alloc.family],
            self.advertised[alloc.family],
        ):
            return False  # the shared socket itself: its datagrams could be nobody's
        if self.engine.mux_claim(alloc.mux, handle, peer[0], peer[1]) != handle:
            return False
        alloc.peers.add(peer)
        return True

    def _release_peer(self, handle: int, alloc: _Alloc, peer: Address) -> None:
        """The allocation no longer talks to ``peer`` (no permission, no channel)."""
        if alloc.mux >= 0 and peer in alloc.peers:
            alloc.peers.discard(peer)
            self.engine.mux_release(alloc.mux, handle, peer[0], peer[1])

    def summary(self, handle: int, *, final: bool = False) -> dict[str, Any] | None:
        """A summary of a live allocation in docs/relay-summaries.md's shape, less what
        the node agent adds (``seq``; ``node_id`` around it)."""
        alloc = self.allocs.get(handle)
        if alloc is None:
            return None
        rxq = int(self.engine.counters[_RXQ]) - alloc.rxq_at_open
        return {
            "token_id": alloc.token_id,
            "allocation": alloc.allocation,
            "final": final,
            "started_at": alloc.started_at,
            "at": time.time(),
            **quality.summarise(self.engine, handle, rxq_overflow=rxq),
        }

    def close_relay(self, handle: int) -> None:
        if handle in self.allocs and self.engine.quality:
            try:
                final = self.summary(handle, final=True)
                if final is not None:
                    self.finished.append(final)
                    if self.board is not None:
                        for d, name in enumerate(quality.DIRECTIONS):
                            fig = final["directions"][name]
                            if fig["packets"] and fig["mos"] is not None:
                                self.board.observe_call(
                                    d, fig["loss"], fig["jitter_ms"] / 1000.0, fig["mos"]
                                )
            except Exception:  # a summary bug must not leak the allocation's socket
                log.exception("final quality summary of slot %d failed", handle)
        self.unlabelled.discard(handle)
        alloc = self.allocs.pop(handle, None)
        if alloc is None:
            return
        for ip in alloc.permissions:
            self.engine.remove_permission(handle, ip)
        for chan, peer in alloc.channels.items():
            self.engine.unbind_channel(handle, chan, peer[0], peer[1])
        for peer in list(alloc.peers):
            self._release_peer(handle, alloc, peer)
        self.engine.close_slot(handle)
        if alloc.mux < 0:  # a shared socket stays for the others
            alloc.sock.close()
            self.pool.give(alloc.port)

    def add_permission(self, handle: int, peer_ip: str) -> None:
        alloc = self.allocs[handle]
        self.engine.add_permission(handle, peer_ip)
        alloc.permissions.add(peer_ip)

    def remove_permission(self, handle: int, peer_ip: str) -> None:
        alloc = self.allocs.get(handle)
        if alloc is not None and peer_ip in alloc.permissions:
            self.engine.remove_permission(handle, peer_ip)
            alloc.permissions.discard(peer_ip)
            bound = set(alloc.channels.values())
            for peer in [p for p in alloc.peers if p[0] == peer_ip and p not in bound]:
                self._release_peer(handle, alloc, peer)

    def bind_channel(self, handle: int, channel: int, peer: Address) -> None:
        alloc = self.allocs[handle]
        self.engine.bind_channel(handle, channel, peer[0], peer[1])
        alloc.channels[channel] = peer

    def unbind_channel(self, handle: int, channel: int, peer: Address) -> None:
        alloc = self.allocs.get(handle)
        if alloc is not None and alloc.channels.pop(channel, None) is not None:
            self.engine.unbind_channel(handle, channel, peer[0], peer[1])
            if peer[0] not in alloc.permissions:
                self._release_peer(handle, alloc, peer)

    def set_bandwidth(self, handle: int, bytes_per_second: int) -> None:
        self.engine.set_rate(handle, bytes_per_second)

    def send_to_peer(self, handle: int, peer: Address, data: bytes) -> None:
        if handle in self.allocs:
            self.engine.send_to_peer(handle, data, peer[0], peer[1])

    def count_drop(self, reason: str) -> None:
        self.engine.count_drop(reason)

    def release_reservation(self, token: bytes) -> None:
        held = self.reservations.pop(token, None)
        if held is not None:
            held[0].close()
            self.pool.give(held[1])

    def close(self) -> None:
        for handle in list(self.allocs):
            self.close_relay(handle)
        for token in list(self.reservations):
            self.release_reservation(token)
        for sock, port, mux in self.shared.values():
            self.engine.remove_mux(mux)
            sock.close()
            self.pool.give(port)
        self.shared.clear()
        self.loop.remove_reader(self.engine.epoll_fd)


def make_streams(config: RelayConfig, count: int) -> _stream.Streams | None:
    """The worker's TCP/TLS connection table with its share of the limits, and the TLS
    certificate loaded; None when the node has no TCP or TLS listener. Raises OSError
    (the worker cannot start) when the certificate does not load."""
    if not (config.listen_tcp or config.listen_tls):
        return None
    streams = _stream.Streams(
        max(1, -(-config.stream_max_connections // count)),
        per_source=config.stream_max_per_source,
        handshake_timeout=config.tls_handshake_timeout,
        idle_timeout=config.stream_idle_timeout,
        partial_timeout=config.stream_partial_timeout,
        max_message=config.stream_max_message,
        send_buffer=config.stream_send_buffer,
    )
    if config.listen_tls:
        assert config.tls_cert is not None
        try:
            streams.load_tls(config.tls_cert, config.tls_key)
        except ValueError as exc:
            raise OSError(f"cannot load the TLS certificate: {exc}") from None
    return streams


def worker_ports(ports: tuple[int, int], index: int, count: int) -> tuple[int, int]:
    """This worker's share of the relay port range: contiguous, even-aligned chunks."""
    low, high = ports
    span = (high - low + 1) // count
    span -= span % 2
    start = low + index * span
    end = high if index == count - 1 else start + span - 1
    return start, end


class RelayWorker:
    """Everything one worker process runs on its event loop."""

    def __init__(
        self,
        config: RelayConfig,
        turn_factory: Callable[[FastPathBackend], TurnServer],
        *,
        index: int = 0,
        count: int = 1,
        board: Board | None = None,
        revocations: Path | None = None,
        summaries: Path | None = None,
    ) -> None:
        self.config = config
        self.index = index
        self.count = count
        self.board = board
        self.revocations = RevocationReader(revocations) if revocations is not None else None
        self._revocation_poll: asyncio.TimerHandle | None = None
        # summaries for the supervisor's node agent (several workers): relay/summaries.py
        self.handoff = HandoffWriter(summaries, index) if summaries is not None else None
        self._handoff_timer: asyncio.TimerHandle | None = None
        # allocation ids in summaries: unique per node across workers and restarts
        self._alloc_prefix = f"{secrets.token_hex(3)}-{index}-"
        self.loop = asyncio.get_running_loop()
        slots = max(16, config.max_allocations // count + 1)
        self.engine = _fastpath.Engine(
            slots,
            batch=int(os.environ.get(BATCH_ENV) or DEFAULT_BATCH),
            counters=board.counters_buffer() if board is not None else None,
            latency=board.latency_buffer() if board is not None else None,
            quality=config.quality,
            gso=config.gso,
        )
        self.listeners: list[socket.socket] = []
        self.stream_listeners: list[socket.socket] = []
        self.transports: dict[int, str] = {}  # listener index -> "udp", "tcp", "tls"
        self.streams = make_streams(config, count)
        if self.streams is not None:
            self.engine.use_streams(self.streams)
        # TCP and TLS connections: id -> (listener, client), and back (the backend's)
        self.stream_conns: dict[int, tuple[int, Address]] = {}
        self.stream_ids: dict[tuple[int, Address], int] = {}
        self.stream_errors = 0
        relay_ips: dict[int, str] = {}
        advertised: dict[int, str] = {}
        for ip in config.relay_ip:
            fam = family_of(ip)
            relay_ips[fam] = ip
            advertised[fam] = ip
        if config.external_ip:
            advertised[family_of(config.external_ip)] = config.external_ip
        self._moved = self.engine.counters  # live: read before and after a --coalesce-us wait
        self._busy_ns = 0  # when a read last relayed something (--coalesce-us)
        self._backoff = 0  # busy wake-ups not to wait after the last wait that found nothing
        self._skip = 0  # of them, left
        low, high = worker_ports(config.ports, index, count)
        self.backend = FastPathBackend(
            self.engine,
            self.loop,
            relay_ips,
            advertised,
            PortPool(low, high),
            board=board,
            stream_ids=self.stream_ids,
            multiplex=config.multiplex_peer,
            relays_readable=self._relays_readable if config.coalesce_us else None,
        )
        self.turn = turn_factory(self.backend)
        self.backend.stats = self.turn.stats  # published with the core's
        self.stopped = asyncio.Event()
        self.draining = False
        self.drain_deadline = 0.0
        self._sweeper: asyncio.TimerHandle | None = None
        self.listener_errors = 0
        self.lag = LoopLag(self.loop, board)  # event-loop lag for /metrics (relay/metrics.py)

    def start(self, listeners: Listeners | None = None) -> None:
        """Serve on ``listeners`` (the supervisor's, for several workers), or on sockets
        of its own (:func:`open_listeners`). Either way :meth:`close` closes them: this
        process's copies."""
        if listeners is None:
            listeners = open_listeners(self.config, self.count)
        for sock in listeners.udp:
            sock.setblocking(False)
            idx = self.engine.add_listener(sock.fileno())
            self.listeners.append(sock)
            self.transports[idx] = "udp"
            # without --coalesce-us a wake-up only drains: no frame more than that
            readable = self._listener_readable if self.config.coalesce_us else self._listener_drain
            self.loop.add_reader(sock.fileno(), readable, idx)
        if self.streams is not None:
            for kind, transport, socks in (
                ("tcp", _stream.TCP, listeners.tcp),
                ("tls", _stream.TLS, listeners.tls),
            ):
                for sock in socks:
                    sock.setblocking(False)
                    self.stream_listeners.append(sock)
                    self.transports[self.engine.add_stream_listener(sock.fileno(), transport)] = (
                        kind
                    )
            self.loop.add_reader(self.streams.fileno, self._streams_readable)
        self._sweeper = self.loop.call_later(SWEEP_INTERVAL, self._sweep)
        self.lag.start()
        if self.revocations is not None:
            self._poll_revocations()
        if self.handoff is not None:
            self._handoff_timer = self.loop.call_later(
                self.config.summary_interval, self._hand_over
            )

    def _hand_over(self, *, last: bool = False) -> None:
        """Write this worker's summaries (final ones of ended allocations, then one of
        each live allocation) for the supervisor's node agent."""
        if not last:
            self._handoff_timer = self.loop.call_later(
                self.config.summary_interval, self._hand_over
            )
        assert self.handoff is not None
        try:
            out = self.take_final_summaries()
            if not last:
                out += self.quality_summaries()
            self.handoff.write(out)
        except Exception:  # tmpfs trouble or a summary bug must not stop the relay
            log.exception("handing summaries over to the node agent failed")

    def _poll_revocations(self) -> None:
        """Apply what the node agent added to the revocation log since the last look."""
        self._revocation_poll = self.loop.call_later(REVOCATION_POLL, self._poll_revocations)
        assert self.revocations is not None
        try:
            token_ids = self.revocations.poll(time.time())
        except OSError as exc:  # tmpfs trouble: try again at the next poll
            log.warning("cannot read the revocation log: %s", exc)
            return
        if token_ids:
            self.revoke(token_ids)

    def revoke(self, token_ids: Iterable[str]) -> int:
        """Tear down the allocations of revoked tokens and refuse them from now on."""
        ids = list(token_ids)
        try:
            deleted = self.turn.revoke(ids, time.time())
        except Exception:  # a bug must not stop the relay
            log.exception("applying %d revocation(s) failed", len(ids))
            return 0
        if deleted:
            log.info("revocations tore down %d allocation(s)", deleted, extra={"tokens": len(ids)})
            self.publish()
        else:
            log.debug("%d revocation(s) applied, no allocation affected", len(ids))
        return deleted

    def _moved_count(self) -> int:
        c = self._moved
        return int(c[_MOVED[0]] + c[_MOVED[1]] + c[_MOVED[2]])

    def _relays_readable(self) -> None:
        if self.engine.drain_relays():
            self._coalesce()

    def _coalesce(self) -> None:
        """--coalesce-us, after a read that relayed something: when packets are coming fast
        (the previous such read was less than COALESCE_WINDOW waits ago), wait that long
        and read every socket again, and again while each wait brings something, for up to
        COALESCE_HOLD_NS. The kernel queues what arrives meanwhile, so one wake-up of the
        worker serves many packets; each waits at most the wait plus the timer slack. Waits
        that find nothing back off (COALESCE_BACKOFF)."""
        wait = self.config.coalesce_us
        now = time.monotonic_ns()
        recent = now - self._busy_ns < COALESCE_WINDOW * 1000 * wait
        self._busy_ns = now
        if not recent:
            return
        if self._skip:
            self._skip -= 1
            return
        engine = self.engine
        until = now + COALESCE_HOLD_NS
        paid = False
        while True:
            before = self._moved_count()
            engine.coalesce_wait(wait)
            engine.drain_relays()
            for idx, kind in self.transports.items():
                if kind == "udp":
                    self._listener_drain(idx)
            if self.streams is not None:
                self._streams_readable()
            now = time.monotonic_ns()
            if self._moved_count() == before:
                engine.coalesce_idle()
                break
            paid = True
            self._busy_ns = now
            if now >= until:
                break
        # Traffic in bursts that one read takes whole (a screen-share's frames) gains nothing
        # from a wait, and pays the one that finds nothing: after such a wait, the next
        # 1, 2, 4 ... COALESCE_BACKOFF busy wake-ups do not wait.
        if paid:
            self._backoff = 0
        else:
            self._backoff = min(2 * self._backoff or 1, COALESCE_BACKOFF)
            self._skip = self._backoff

    def _listener_readable(self, idx: int) -> None:
        """A UDP listener's reader with --coalesce-us: drain it, then maybe wait and read
        every socket again (without, :meth:`_listener_drain` is the reader itself)."""
        before = self._moved_count()
        self._listener_drain(idx)
        if self._moved_count() != before:
            self._coalesce()

    def _listener_drain(self, idx: int) -> None:
        try:
            messages = self.engine.drain_listener(idx)
        except OSError as exc:
            self.listener_errors += 1
            if self.listener_errors & (self.listener_errors - 1) == 0:
                log.warning(
                    "listening socket read failed (%d so far): %s", self.listener_errors, exc
                )
            return
        if not messages:
            return
        now, wall = time.monotonic(), time.time()  # lifetimes run on the monotonic clock
        sock = self.listeners[idx]
        for data, client in messages:
            for reply, dest in self.turn.handle(data, idx, client, now, wall):
                try:
                    sock.sendto(reply, dest)
                except OSError:
                    self.engine.count_drop("send_failed")
        if self.backend.unlabelled:
            self._label_allocations()

    def _streams_readable(self) -> None:
        try:
            events = self.engine.drain_streams()
        except (OSError, MemoryError) as exc:
            self.stream_errors += 1
            if self.stream_errors & (self.stream_errors - 1) == 0:
                log.warning(
                    "stream connections' read failed (%d so far): %s", self.stream_errors, exc
                )
            return
        self._stream_events(events)

    def _stream_events(self, events: list[tuple[int, int, Any]]) -> None:
        """Connections opened and closed, and STUN messages from them, for the TURN core."""
        if not events:
            return
        now, wall = time.monotonic(), time.time()
        streams = self.streams
        assert streams is not None
        for kind, conn, value in events:
            try:
                if kind == _stream.EVENT_STUN:
                    where = self.stream_conns.get(conn)
                    if where is None:
                        continue
                    for reply, _ in self.turn.handle(value, where[0], where[1], now, wall):
                        streams.send(conn, reply)
                elif kind == _stream.EVENT_OPEN:
                    listener, client = value
                    where = (listener, (client[0], client[1]))
                    self.stream_conns[conn] = where
                    self.stream_ids[where] = conn
                elif kind == _stream.EVENT_CLOSED:
                    where = self.stream_conns.pop(conn, None)
                    if where is not None:
                        self.stream_ids.pop(where, None)
                        self.turn.connection_closed(where[0], where[1], now)
            except Exception:  # a bug must not stop the worker
                log.exception("handling a stream event failed")
        if self.backend.unlabelled:
            self._label_allocations()

    def reload_tls(self) -> bool:
        """SIGHUP: load the TLS certificate and key again (an ACME client renewed them).
        Open connections and allocations are untouched; new handshakes use the new ones.
        On a failure the old ones stay and the reason is logged."""
        if self.streams is None or not self.config.listen_tls:
            return False
        assert self.config.tls_cert is not None
        try:
            self.streams.load_tls(self.config.tls_cert, self.config.tls_key)
        except (ValueError, OSError) as exc:
            log.error("TLS certificate not reloaded (the old one stays in use): %s", exc)
            return False
        log.info("TLS certificate reloaded from %s", self.config.tls_cert)
        return True

    def _label_allocations(self) -> None:
        """Give new slots their allocation id and token id, so their summaries carry them."""
        todo = self.backend.unlabelled
        for alloc in self.turn.allocations.values():
            for n, handle in enumerate(alloc.handles):  # a dual allocation's IPv6 half: "-6"
                rec = self.backend.allocs.get(handle) if handle in todo else None
                if rec is not None:
                    rec.allocation = self._alloc_prefix + alloc.id + ("-6" if n else "")
                    rec.token_id = alloc.identity.issued_token
        todo.clear()

    def quality_summaries(self) -> list[dict[str, Any]]:
        """Summaries of every live allocation (cumulative since each started), for the node
        agent to send every few seconds; see also :meth:`take_final_summaries`."""
        if not self.engine.quality:
            return []
        if self.backend.unlabelled:
            self._label_allocations()
        out = []
        for handle in list(self.backend.allocs):
            summary = self.backend.summary(handle)
            if summary is not None:
                out.append(summary)
        return out

    def take_final_summaries(self) -> list[dict[str, Any]]:
        """The final summaries of allocations that ended since the last call, oldest first."""
        out = list(self.backend.finished)
        self.backend.finished.clear()
        return out

    def _sweep(self) -> None:
        self._sweeper = self.loop.call_later(SWEEP_INTERVAL, self._sweep)
        try:
            self.turn.sweep(time.monotonic(), time.time())
            if self.streams is not None:
                self._stream_events(self.streams.sweep())
            self.publish()
        except Exception:  # a sweep bug must not stop the relay
            log.exception("sweep failed")
        if self.draining and (
            self.turn.allocation_count == 0 or time.monotonic() >= self.drain_deadline
        ):
            log.info("drain finished with %d allocation(s) left", self.turn.allocation_count)
            self.stopped.set()

    def publish(self) -> None:
        """Write what only Python knows to the metrics board."""
        if self.board is not None:
            by: dict[str, int] = {"tcp": 0, "tls": 0}
            if self.stream_listeners:
                for alloc in self.turn.allocations.values():
                    kind = self.transports.get(alloc.listener)
                    if kind in by:
                        by[kind] += 1
            self.board.publish(
                draining=self.draining,
                allocations=self.turn.allocation_count,
                stats=self.turn.stats,
                by_transport=by,
            )

    def drain(self) -> None:
        if self.draining:
            return
        self.draining = True
        self.drain_deadline = time.monotonic() + self.config.drain_timeout
        self.turn.start_drain()
        self.publish()
        log.info(
            "draining: refusing new allocations, %d active, deadline in %.0f s",
            self.turn.allocation_count,
            self.config.drain_timeout,
        )
        if self.turn.allocation_count == 0:
            self.stopped.set()

    def stop(self) -> None:
        self.stopped.set()

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        self.lag.stop()
        if self._revocation_poll is not None:
            self._revocation_poll.cancel()
        if self.revocations is not None:
            self.revocations.close()
        for sock in self.listeners:
            self.loop.remove_reader(sock.fileno())
            sock.close()
        self.listeners.clear()
        if self.streams is not None:
            self.loop.remove_reader(self.streams.fileno)
            self.streams.close_all()
            self.streams.take_events()
            for sock in self.stream_listeners:
                sock.close()
            self.stream_listeners.clear()
        self.backend.close()
        if self.handoff is not None:  # the final summaries of what close() just ended
            if self._handoff_timer is not None:
                self._handoff_timer.cancel()
            self._hand_over(last=True)
            self.handoff.close()


async def serve(
    config: RelayConfig,
    turn_factory: Callable[[FastPathBackend], TurnServer],
    *,
    index: int = 0,
    count: int = 1,
    board: Board | None = None,
    ready: Callable[[RelayWorker], None] | None = None,
    revocations: Path | None = None,
    summaries: Path | None = None,
    listeners: Listeners | None = None,
) -> None:
    """Run one worker until SIGINT, or until a drain (SIGTERM/SIGUSR1) completes.

    ``revocations`` is the node's revocation log, which the worker follows, and
    ``summaries`` the directory it hands its quality summaries over in (several workers); a
    single worker's agent calls :meth:`RelayWorker.revoke` and the summary methods itself.
    ``listeners`` are the sockets the supervisor opened for this worker (several workers);
    without them the worker opens its own."""
    worker = RelayWorker(
        config,
        turn_factory,
        index=index,
        count=count,
        board=board,
        revocations=revocations,
        summaries=summaries,
    )
    worker.start(listeners)
    worker.publish()
    loop = worker.loop
    loop.add_signal_handler(signal.SIGINT, worker.stop)
    loop.add_signal_handler(signal.SIGTERM, worker.drain)
    loop.add_signal_handler(signal.SIGUSR1, worker.drain)
    loop.add_signal_handler(signal.SIGHUP, worker.reload_tls)
    listening = [f"{h}:{p}" for h, p in config.listen]
    listening += [f"{h}:{p}/tcp" for h, p in config.listen_tcp]
    listening += [f"{h}:{p}/tls" for h, p in config.listen_tls]
    log.info(
        "worker %d/%d (pid %d) serving on %s, relay ports %d-%d",
        index + 1,
        count,
        os.getpid(),
        ", ".join(listening),
        *worker_ports(config.ports, index, count),
    )
    if config.gso and not worker.engine.gso:
        log.warning(
            "this kernel has no UDP segmentation offload (UDP_SEGMENT, Linux 4.18+); "
            "every datagram is sent on its own"
        )
    if ready is not None:
        ready(worker)
    try:
        await worker.stopped.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        worker.close()
