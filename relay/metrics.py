"""Prometheus exposition for a relay node.

Each worker owns a *board*: a small shared-memory file. The fast path writes its global
counters straight into the board (the engine is given that memory), so a scrape reads them
live, in bulk, with nothing per packet. Once a second the worker also writes what only
Python knows (active allocations, draining, slow-path results) under a sequence lock, and
:class:`LoopLag` writes how late the worker's event loop runs a periodic timer. The
process that serves ``--metrics`` (the supervisor, or the single worker's own thread) reads
every board at scrape time and sums them. No label grows with users, calls or addresses:
labels are directions, drop reasons, STUN methods and result codes.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import struct
import tempfile
import time
from asyncio import AbstractEventLoop, TimerHandle
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path

from prometheus_client import start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from ext import _fastpath
from relay import quality

BOARD_SIZE = 64 * 1024
# seq, pid, draining, allocations, updated (unix ms), allocations of TCP and of TLS clients
_HEAD = struct.Struct("<QqqqQqq")
COUNTERS_AT = 64
COUNTER_CELLS = 128  # room for the engine's counters (_fastpath.NCOUNTERS)
LATENCY_AT = COUNTERS_AT + COUNTER_CELLS * 8  # the engine's receive-to-send histogram
assert _HEAD.size <= COUNTERS_AT and _fastpath.NCOUNTERS <= COUNTER_CELLS
QUALITY_AT = LATENCY_AT + 32 * 8  # per-call loss/jitter/MOS histograms, written by Python
# per metric and direction: len(buckets) cumulative-free bucket counts, then sum, count;
# sums are int64 in fixed point (QUALITY_SCALE)
QUALITY_METRICS = (
    ("loss", quality.LOSS_BUCKETS),
    ("jitter", quality.JITTER_BUCKETS),
    ("mos", quality.MOS_BUCKETS),
)
QUALITY_SCALE = 1_000_000
_QCELLS = max(len(b) for _, b in QUALITY_METRICS) + 2
LAG_AT = QUALITY_AT + len(QUALITY_METRICS) * 2 * _QCELLS * 8  # event-loop lag, LoopLag writes
# bucket upper bounds, seconds; cells: one count per bucket, then the sum (ns), the count, the
# worst lag of the last LAG_WINDOW seconds (ns) and when the next tick is due (CLOCK_MONOTONIC
# ns, 0 while no loop runs), so a scrape also sees a loop that is stuck right now
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, math.inf)
_LAG_SUM, _LAG_COUNT, _LAG_MAX, _LAG_DUE = range(len(LAG_BUCKETS), len(LAG_BUCKETS) + 4)
_LAG_CELLS = len(LAG_BUCKETS) + 4
LAG_INTERVAL = 0.25  # seconds between two ticks of the lag timer
LAG_WINDOW = 15.0  # seconds the max-lag gauge looks back (a typical scrape interval)
STATS_AT = LAG_AT + _LAG_CELLS * 8
_STATS_LEN = struct.Struct("<I")
MAX_STATS = BOARD_SIZE - STATS_AT - _STATS_LEN.size

_DIRECTIONS = (("client_to_peer", "client"), ("peer_to_client", "peer"))

# Events counted outside the workers, in the process that serves /metrics (the supervisor,
# or the single worker): the node agent's (e.g. "spool.write_failed"). Added to the
# clickacall_relay_events_total family at scrape time.
NODE_EVENTS: Counter[str] = Counter()


class Board:
    """One worker's shared-memory board (a file under /dev/shm, mapped by both sides)."""

    def __init__(self, path: Path, *, create: bool = False) -> None:
        self.path = path
        flags = os.O_RDWR | (os.O_CREAT | os.O_EXCL if create else 0)
        fd = os.open(path, flags, 0o600)
        try:
            if create:
                os.ftruncate(fd, BOARD_SIZE)
            self._map = mmap.mmap(fd, BOARD_SIZE)
        finally:
            os.close(fd)
        self._view = memoryview(self._map)

    def counters_buffer(self) -> memoryview:
        """The region the engine writes its counters into."""
        return self._view[COUNTERS_AT : COUNTERS_AT + _fastpath.NCOUNTERS * 8]

    def latency_buffer(self) -> memoryview:
        """The region the engine writes its receive-to-send histogram into."""
        return self._view[LATENCY_AT : LATENCY_AT + _fastpath.LATENCY_CELLS * 8]

    def _quality_cells(self) -> memoryview:
        return self._view[QUALITY_AT:STATS_AT].cast("q")

    def observe_call(
        self, direction: int, loss: float, jitter_seconds: float, mos: float | None
    ) -> None:
        """Record one finished allocation direction in the per-call histograms (the worker
        calls this when an allocation ends; nothing here is per packet)."""
        cells = self._quality_cells()
        for m, (_, buckets) in enumerate(QUALITY_METRICS):
            value = (loss, jitter_seconds, mos)[m]
            if value is None:
                continue
            at = (m * 2 + direction) * _QCELLS
            b = next(i for i, bound in enumerate(buckets) if value <= bound)
            cells[at + b] += 1
            cells[at + len(buckets)] += int(value * QUALITY_SCALE)
            cells[at + len(buckets) + 1] += 1

    def _lag_cells(self) -> memoryview:
        return self._view[LAG_AT:STATS_AT].cast("q")

    def observe_lag(self, lag_ns: int, recent_max_ns: int, next_due_ns: int) -> None:
        """One tick of the worker's lag timer (:class:`LoopLag`): its lateness, the worst of
        the last LAG_WINDOW seconds, and when the next tick is due (0: no loop runs)."""
        cells = self._lag_cells()
        if lag_ns >= 0:
            s = lag_ns / 1e9
            cells[next(i for i, bound in enumerate(LAG_BUCKETS) if s <= bound)] += 1
            cells[_LAG_SUM] += lag_ns
            cells[_LAG_COUNT] += 1
        cells[_LAG_MAX] = recent_max_ns
        cells[_LAG_DUE] = next_due_ns

    def read_lag(self, now_ns: int | None = None) -> tuple[list[int], int]:
        """(histogram cells: bucket counts, sum ns, count; the worker's current max lag in ns).
        The max is the worst tick of the last LAG_WINDOW seconds, or, if the next tick is
        overdue now (a blocked or stuck loop), how overdue it is, whichever is larger."""
        cells = list(self._lag_cells())
        now = time.monotonic_ns() if now_ns is None else now_ns
        due = cells[_LAG_DUE]
        overdue = now - due if due else 0
        return cells[:_LAG_MAX], max(cells[_LAG_MAX], overdue, 0)

    def read_quality(self) -> tuple[list[int], list[int]]:
        """(latency histogram cells, per-call histogram cells), live values."""
        return list(self.latency_buffer().cast("q")), list(self._quality_cells())

    def publish(
        self,
        *,
        draining: bool,
        allocations: int,
        stats: Mapping[str, int],
        by_transport: Mapping[str, int] | None = None,
    ) -> None:
        """What only Python knows: ``allocations`` in all, ``by_transport`` of them those of
        TCP and TLS clients (``{"tcp": n, "tls": m}``; the rest are UDP clients')."""
        blob = json.dumps(dict(stats), separators=(",", ":")).encode()[:MAX_STATS]
        by = by_transport or {}
        streams = (int(by.get("tcp", 0)), int(by.get("tls", 0)))
        seq = _HEAD.unpack_from(self._map, 0)[0]
        pid = os.getpid()
        _HEAD.pack_into(self._map, 0, seq + 1, pid, int(draining), allocations, 0, *streams)
        _STATS_LEN.pack_into(self._map, STATS_AT, len(blob))
        self._map[STATS_AT + 4 : STATS_AT + 4 + len(blob)] = blob
        now = int(time.time() * 1000)
        _HEAD.pack_into(self._map, 0, seq + 2, pid, int(draining), allocations, now, *streams)

    def read(self) -> tuple[dict[str, int], list[int], dict[str, int]]:
        """(head fields, engine counters, slow-path stats), retried past a torn write."""
        for _ in range(100):
            seq, pid, draining, allocations, updated, tcp, tls = _HEAD.unpack_from(self._map, 0)
            (n,) = _STATS_LEN.unpack_from(self._map, STATS_AT)
            blob = bytes(self._map[STATS_AT + 4 : STATS_AT + 4 + min(n, MAX_STATS)])
            if seq % 2 == 0 and _HEAD.unpack_from(self._map, 0)[0] == seq:
                break
            time.sleep(0.001)
        counters = list(self.counters_buffer().cast("q"))
        try:
            stats = {str(k): int(v) for k, v in json.loads(blob or b"{}").items()}
        except (ValueError, AttributeError):
            stats = {}
        head = {
            "pid": pid,
            "draining": draining,
            "allocations": allocations,
            "updated": updated,
            "allocations_tcp": tcp,
            "allocations_tls": tls,
        }
        return head, counters, stats

    def close(self) -> None:
        self._view.release()
        try:
            self._map.close()
        except BufferError:  # an engine still holds the counters view; the OS frees it
            pass


class LoopLag:
    """How late one worker's event loop runs: a timer due every LAG_INTERVAL seconds notes,
    each time it runs, how long after its due time it did (CLOCK_MONOTONIC, read at the
    callback, not the loop's cached clock). A loop busy with a long callback, a slow-path
    burst or a paused process runs it late by that much; an idle or healthy loop within a
    millisecond or so. Each tick goes to the board's histogram, with the worst lag of the
    last LAG_WINDOW seconds and the next due time (so a scrape also sees a loop stuck now).

    The next tick is scheduled from when this one ran, so a stall costs one late tick, not
    a burst of catching-up ones. :attr:`count` and :attr:`max_ns` (since start) are kept
    with or without a board."""

    def __init__(
        self,
        loop: AbstractEventLoop,
        board: Board | None = None,
        *,
        interval: float = LAG_INTERVAL,
        window: float = LAG_WINDOW,
        clock: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self.loop = loop
        self.board = board
        self.interval = interval
        self.clock = clock
        self._step = int(interval * 1e9)
        self._recent: deque[int] = deque(maxlen=max(1, math.ceil(window / interval)))
        self._due = 0
        self._timer: TimerHandle | None = None
        self.count = 0
        self.max_ns = 0  # the worst lag seen since start

    def start(self) -> None:
        self._schedule(self.clock())
        if self.board is not None:  # a restarted worker replaces its predecessor's due time
            self.board.observe_lag(-1, 0, self._due)

    def _schedule(self, now: int) -> None:
        self._due = now + self._step
        self._timer = self.loop.call_later(self.interval, self._tick)

    def _tick(self) -> None:
        now = self.clock()
        lag = max(0, now - self._due)  # timers may fire a hair early: that is no lag
        self.count += 1
        self.max_ns = max(self.max_ns, lag)
        self._recent.append(lag)
        self._schedule(now)
        if self.board is not None:
            self.board.observe_lag(lag, max(self._recent), self._due)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.board is not None:
            self.board.observe_lag(-1, 0, 0)  # no loop to be late any more


def board_dir() -> Path:
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
    return Path(tempfile.mkdtemp(prefix="clickacall-metrics-", dir=base))


def _split(key: str) -> tuple[str, str]:
    head, _, tail = key.partition(".")
    return head, tail or "ok"


class RelayCollector(Collector):
    """Reads every worker's board at scrape time."""

    def __init__(self, boards: Iterable[Board], *, ephemeral_overlap: int = 0) -> None:
        self.boards = list(boards)
        self.ephemeral_overlap = ephemeral_overlap  # relay ports in the kernel's ephemeral range

    def collect(self) -> Iterator[Metric]:
        names = _fastpath.COUNTER_NAMES
        block = len(names)
        total = [0] * _fastpath.NCOUNTERS
        stats: dict[str, int] = {}
        allocations = draining = 0
        stream_allocations = {"tcp": 0, "tls": 0}
        for board in self.boards:
            head, counters, wstats = board.read()
            allocations += head["allocations"]
            for kind in stream_allocations:
                stream_allocations[kind] += head[f"allocations_{kind}"]
            draining = max(draining, head["draining"])
            for i, v in enumerate(counters[: len(total)]):
                total[i] += v
            for k, v in wstats.items():
                stats[k] = stats.get(k, 0) + v
        for k, v in list(NODE_EVENTS.items()):
            stats[k] = stats.get(k, 0) + v
        c = dict(zip(names, total[:block], strict=True))
        # the totals, and what TCP and TLS clients account for; UDP clients are the rest
        tcp = dict(zip(names, total[block : 2 * block], strict=True))
        tls = dict(zip(names, total[2 * block : 3 * block], strict=True))
        udp = {k: v - tcp[k] - tls[k] for k, v in c.items()}
        by_transport = {"udp": udp, "tcp": tcp, "tls": tls}

        yield GaugeMetricFamily("clickacall_relay_workers", "Worker processes", len(self.boards))
        yield GaugeMetricFamily(
            "clickacall_relay_ports_in_ephemeral_range",
            "Relay ports (--ports) inside the kernel's ephemeral port range "
            "(net.ipv4.ip_local_port_range) at start: other sockets may take them",
            self.ephemeral_overlap,
        )
        yield GaugeMetricFamily(
            "clickacall_relay_draining", "1 while the node refuses new allocations", draining
        )
        alloc = GaugeMetricFamily(
            "clickacall_relay_allocations",
            "Live TURN allocations, by the transport their client uses",
            labels=["transport"],
        )
        alloc.add_metric(["udp"], allocations - sum(stream_allocations.values()))
        for kind, n in stream_allocations.items():
            alloc.add_metric([kind], n)
        yield alloc
        yield GaugeMetricFamily(
            "clickacall_relay_multiplexed_allocations",
            "Live allocations relaying from a worker's shared peer-facing socket "
            "(--multiplex-peer); their unknown-peer and peer-taken drops are in "
            "clickacall_relay_dropped_packets",
            c["mux_allocations"],
        )
        pk = CounterMetricFamily(
            "clickacall_relay_packets",
            "Packets relayed by the fast path, by direction and client transport",
            labels=["direction", "transport"],
        )
        by = CounterMetricFamily(
            "clickacall_relay_bytes",
            "Payload bytes relayed by the fast path, by direction and client transport",
            labels=["direction", "transport"],
        )
        for label, key in _DIRECTIONS:
            for transport, figures in by_transport.items():
                pk.add_metric([label, transport], figures[f"{key}_packets"])
                by.add_metric([label, transport], figures[f"{key}_bytes"])
        yield pk
        yield by
        drops = CounterMetricFamily(
            "clickacall_relay_dropped_packets",
            "Packets dropped, by reason and client transport",
            labels=["reason", "transport"],
        )
        for name in names:
            if name.startswith("drop_"):
                for transport, figures in by_transport.items():
                    drops.add_metric([name[5:], transport], figures[name])
        yield drops
        yield from self._streams(total[3 * block :])
        yield CounterMetricFamily(
            "clickacall_relay_stun_messages", "STUN messages handed to the slow path", c["stun_in"]
        )
        yield CounterMetricFamily(
            "clickacall_relay_data_indications",
            "Peer packets delivered as Data indications (no channel bound)",
            c["data_indications"],
        )
        yield CounterMetricFamily(
            "clickacall_relay_gso_messages",
            "UDP_SEGMENT messages sent: several datagrams to one destination in one message "
            "(those a route refused count in gso_fallbacks too)",
            c["gso_messages"],
        )
        yield CounterMetricFamily(
            "clickacall_relay_gso_fallbacks",
            "UDP_SEGMENT messages the route refused, sent again one datagram at a time",
            c["gso_fallbacks"],
        )
        yield CounterMetricFamily(
            "clickacall_relay_coalesce_waits",
            "Waits of --coalesce-us after a wake-up that relayed packets, each followed by "
            "another read of every socket",
            c["coalesce_waits"],
        )
        yield CounterMetricFamily(
            "clickacall_relay_coalesce_idle",
            "Waits of --coalesce-us after which no socket had anything: the worker went back "
            "to sleeping until a packet wakes it",
            c["coalesce_idle"],
        )
        yield CounterMetricFamily(
            "clickacall_relay_socket_errors", "Relayed-socket read errors", c["recv_errors"]
        )
        requests = CounterMetricFamily(
            "clickacall_relay_requests",
            "Slow-path STUN/TURN requests by method and result",
            labels=["method", "result"],
        )
        events = CounterMetricFamily(
            "clickacall_relay_events",
            "Slow-path events: expiries, refusals, auth and rate-limit outcomes",
            labels=["event"],
        )
        auth = 0
        for key in sorted(stats):
            method, result = _split(key)
            if result.isdigit() or result == "ok":
                requests.add_metric([method, result], stats[key])
                if result in ("401", "441"):
                    auth += stats[key]
            else:
                events.add_metric([key], stats[key])
        yield requests
        yield events
        yield CounterMetricFamily(
            "clickacall_relay_auth_failures", "Requests refused with 401 or 441", auth
        )
        yield from self._quality(c)
        yield from self._loop_lag()

    def _streams(self, cells: list[int]) -> Iterator[Metric]:
        """The TCP and TLS listeners' connection counters (ext/_stream.pyx)."""
        names = _fastpath.STREAM_COUNTER_NAMES
        n = len(names)
        rows = {"tcp": dict(zip(names, cells[:n], strict=True))}
        rows["tls"] = dict(zip(names, cells[n : 2 * n], strict=True))
        open_ = GaugeMetricFamily(
            "clickacall_relay_connections",
            "TCP and TLS client connections open now (TLS handshakes under way included)",
            labels=["transport"],
        )
        accepted = CounterMetricFamily(
            "clickacall_relay_connections_accepted",
            "TCP and TLS client connections accepted",
            labels=["transport"],
        )
        refused = CounterMetricFamily(
            "clickacall_relay_connections_refused",
            "TCP and TLS client connections closed as soon as accepted: over the node's share "
            "(node), over the client /24 or /48's (source), no file descriptor (descriptors)",
            labels=["transport", "reason"],
        )
        closed = CounterMetricFamily(
            "clickacall_relay_connections_closed",
            "TCP and TLS client connections closed, by why: the client, the relay (server), "
            "the idle, TLS handshake and partial-message (slow-loris) timeouts, a failed "
            "handshake, an oversize or malformed message, a socket or TLS error",
            labels=["transport", "reason"],
        )
        handshakes = CounterMetricFamily(
            "clickacall_relay_tls_handshakes", "TLS handshakes completed", labels=["transport"]
        )
        for transport, row in rows.items():
            open_.add_metric([transport], row["open"])
            accepted.add_metric([transport], row["accepted"])
            for reason in ("node", "source", "descriptors"):
                refused.add_metric([transport, reason], row[f"refused_{reason}"])
            for name, value in row.items():
                if name.startswith("closed_"):
                    closed.add_metric([transport, name[7:]], value)
            if transport == "tls":
                handshakes.add_metric([transport], row["handshakes"])
        yield open_
        yield accepted
        yield refused
        yield closed
        yield handshakes

    def _loop_lag(self) -> Iterator[Metric]:
        cells = [0] * (len(LAG_BUCKETS) + 2)
        worst = 0
        now = time.monotonic_ns()
        for board in self.boards:
            hist, recent = board.read_lag(now)
            cells = [a + b for a, b in zip(cells, hist, strict=True)]
            worst = max(worst, recent)
        acc, buckets = 0, []
        for i, bound in enumerate(LAG_BUCKETS):
            acc += cells[i]
            buckets.append(("+Inf" if math.isinf(bound) else repr(bound), acc))
        yield HistogramMetricFamily(
            "clickacall_relay_event_loop_lag_seconds",
            f"How late the workers' event loops ran a timer due every {LAG_INTERVAL} s "
            "(all workers summed)",
            buckets=buckets,
            sum_value=cells[_LAG_SUM] / 1e9,
        )
        yield GaugeMetricFamily(
            "clickacall_relay_event_loop_lag_max_seconds",
            f"The worst event-loop lag of any worker over the last {LAG_WINDOW:g} s, or how "
            "overdue a worker's timer is now if more",
            worst / 1e9,
        )

    def _quality(self, c: Mapping[str, int]) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "clickacall_relay_receive_queue_drops",
            "Datagrams the kernel dropped on the node's sockets for a full receive queue "
            "(SO_RXQ_OVFL)",
            c["rxq_overflow"],
        )
        media = CounterMetricFamily(
            "clickacall_relay_media_packets",
            "Relayed packets by what RTP/RTCP inspection saw in them",
            labels=["type"],
        )
        for label, key in (
            ("rtp", "rtp_packets"),
            ("rtcp", "rtcp_packets"),
            ("other", "non_rtp_packets"),
            ("untracked_ssrc", "ssrc_overflow"),
        ):
            media.add_metric([label], c[key])
        yield media
        nb = _fastpath.LATENCY_BUCKETS
        lat = [0] * _fastpath.LATENCY_CELLS
        qcells: list[int] = []
        for board in self.boards:
            cells, q = board.read_quality()
            lat = [a + b for a, b in zip(lat, cells, strict=False)]
            qcells = q if not qcells else [a + b for a, b in zip(qcells, q, strict=True)]
        acc, buckets = 0, []
        for b in range(nb):
            acc += lat[b]
            le = "+Inf" if b == nb - 1 else repr(2**b / 1e6)
            buckets.append((le, acc))
        yield HistogramMetricFamily(
            "clickacall_relay_added_latency_seconds",
            "Receive-to-send time of relayed packets inside the relay (per batch, per packet)",
            buckets=buckets,
            sum_value=lat[nb] / 1e9,
        )
        names = {
            "loss": (
                "clickacall_relay_call_loss_ratio",
                "Upstream packet loss of finished allocations, per direction",
            ),
            "jitter": (
                "clickacall_relay_call_jitter_seconds",
                "RFC 3550 interarrival jitter of finished allocations, per direction",
            ),
            "mos": (
                "clickacall_relay_call_mos",
                "Estimated MOS (simplified E-model) of finished allocations, per direction",
            ),
        }
        for m, (key, bounds) in enumerate(QUALITY_METRICS):
            fam = HistogramMetricFamily(*names[key], labels=["direction"])
            for d, direction in enumerate(quality.DIRECTIONS):
                at = (m * 2 + d) * _QCELLS
                cells = qcells[at : at + _QCELLS] if qcells else [0] * _QCELLS
                acc, hb = 0, []
                for i, bound in enumerate(bounds):
                    acc += cells[i]
                    hb.append(("+Inf" if math.isinf(bound) else repr(bound), acc))
                fam.add_metric([direction], hb, sum_value=cells[len(bounds)] / QUALITY_SCALE)
            yield fam


def serve_metrics(
    address: tuple[str, int], boards: Iterable[Board], *, ephemeral_overlap: int = 0
) -> CollectorRegistry:
    """Serve ``/metrics`` from a daemon thread; returns the registry."""
    registry = CollectorRegistry()
    registry.register(RelayCollector(boards, ephemeral_overlap=ephemeral_overlap))
    start_http_server(address[1], addr=address[0], registry=registry)
    return registry
