"""Prometheus exposition for a relay node.

Each worker owns a *board*: a small shared-memory file. The fast path writes its global
counters straight into the board (the engine is given that memory), so a scrape reads them
live, in bulk, with nothing per packet. Once a second the worker also writes what only
Python knows (active allocations, draining, slow-path results) under a sequence lock. The
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
from collections.abc import Iterable, Iterator, Mapping
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
_HEAD = struct.Struct("<QqqqQ")  # seq, pid, draining, allocations, updated (unix ms)
COUNTERS_AT = 64
LATENCY_AT = COUNTERS_AT + 32 * 8  # the engine's receive-to-send histogram
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
STATS_AT = QUALITY_AT + len(QUALITY_METRICS) * 2 * _QCELLS * 8
_STATS_LEN = struct.Struct("<I")
MAX_STATS = BOARD_SIZE - STATS_AT - _STATS_LEN.size

_DIRECTIONS = (("client_to_peer", "client"), ("peer_to_client", "peer"))


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

    def observe_call(self, direction: int, loss: float, jitter_seconds: float,
                     mos: float | None) -> None:
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

    def read_quality(self) -> tuple[list[int], list[int]]:
        """(latency histogram cells, per-call histogram cells), live values."""
        return list(self.latency_buffer().cast("q")), list(self._quality_cells())

    def publish(self, *, draining: bool, allocations: int, stats: Mapping[str, int]) -> None:
        blob = json.dumps(dict(stats), separators=(",", ":")).encode()[:MAX_STATS]
        seq = _HEAD.unpack_from(self._map, 0)[0]
        _HEAD.pack_into(self._map, 0, seq + 1, os.getpid(), int(draining), allocations, 0)
        _STATS_LEN.pack_into(self._map, STATS_AT, len(blob))
        self._map[STATS_AT + 4 : STATS_AT + 4 + len(blob)] = blob
        _HEAD.pack_into(
            self._map, 0, seq + 2, os.getpid(), int(draining), allocations, int(time.time() * 1000)
        )

    def read(self) -> tuple[dict[str, int], list[int], dict[str, int]]:
        """(head fields, engine counters, slow-path stats), retried past a torn write."""
        for _ in range(100):
            seq, pid, draining, allocations, updated = _HEAD.unpack_from(self._map, 0)
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
        head = {"pid": pid, "draining": draining, "allocations": allocations, "updated": updated}
        return head, counters, stats

    def close(self) -> None:
        self._view.release()
        try:
            self._map.close()
        except BufferError:  # an engine still holds the counters view; the OS frees it
            pass


def board_dir() -> Path:
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
    return Path(tempfile.mkdtemp(prefix="clickacall-metrics-", dir=base))


def _split(key: str) -> tuple[str, str]:
    head, _, tail = key.partition(".")
    return head, tail or "ok"


class RelayCollector(Collector):
    """Reads every worker's board at scrape time."""

    def __init__(self, boards: Iterable[Board]) -> None:
        self.boards = list(boards)

    def collect(self) -> Iterator[Metric]:
        names = _fastpath.COUNTER_NAMES
        total = [0] * len(names)
        stats: dict[str, int] = {}
        allocations = draining = 0
        for board in self.boards:
            head, counters, wstats = board.read()
            allocations += head["allocations"]
            draining = max(draining, head["draining"])
            for i, v in enumerate(counters[: len(names)]):
                total[i] += v
            for k, v in wstats.items():
                stats[k] = stats.get(k, 0) + v
        c = dict(zip(names, total, strict=True))

        yield GaugeMetricFamily("clickacall_relay_workers", "Worker processes", len(self.boards))
        yield GaugeMetricFamily(
            "clickacall_relay_draining", "1 while the node refuses new allocations", draining
        )
        yield GaugeMetricFamily(
            "clickacall_relay_allocations", "Live TURN allocations", allocations
        )
        pk = CounterMetricFamily(
            "clickacall_relay_packets", "Packets relayed by the fast path", labels=["direction"]
        )
        by = CounterMetricFamily(
            "clickacall_relay_bytes", "Payload bytes relayed by the fast path", labels=["direction"]
        )
        for label, key in _DIRECTIONS:
            pk.add_metric([label], c[f"{key}_packets"])
            by.add_metric([label], c[f"{key}_bytes"])
        yield pk
        yield by
        drops = CounterMetricFamily(
            "clickacall_relay_dropped_packets", "Packets dropped, by reason", labels=["reason"]
        )
        for name in names:
            if name.startswith("drop_"):
                drops.add_metric([name[5:]], c[name])
        yield drops
        yield CounterMetricFamily(
            "clickacall_relay_stun_messages", "STUN messages handed to the slow path", c["stun_in"]
        )
        yield CounterMetricFamily(
            "clickacall_relay_data_indications",
            "Peer packets delivered as Data indications (no channel bound)",
            c["data_indications"],
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
        for label, key in (("rtp", "rtp_packets"), ("rtcp", "rtcp_packets"),
                           ("other", "non_rtp_packets"), ("untracked_ssrc", "ssrc_overflow")):
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
            buckets=buckets, sum_value=lat[nb] / 1e9,
        )
        names = {
            "loss": ("clickacall_relay_call_loss_ratio",
                     "Upstream packet loss of finished allocations, per direction"),
            "jitter": ("clickacall_relay_call_jitter_seconds",
                       "RFC 3550 interarrival jitter of finished allocations, per direction"),
            "mos": ("clickacall_relay_call_mos",
                    "Estimated MOS (simplified E-model) of finished allocations, per direction"),
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


def serve_metrics(address: tuple[str, int], boards: Iterable[Board]) -> CollectorRegistry:
    """Serve ``/metrics`` from a daemon thread; returns the registry."""
    registry = CollectorRegistry()
    registry.register(RelayCollector(boards))
    start_http_server(address[1], addr=address[0], registry=registry)
    return registry
