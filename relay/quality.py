"""Per-allocation call quality from the fast path's flow table (docs/relay-summaries.md).

The engine (:mod:`ext._fastpath`) keeps one int64 row per (allocation slot, direction, SSRC)
in a table it owns; :func:`flow_table` is a numpy *view* of it (no copy), so reading it costs
nothing per packet. This module turns a slot's rows into the ``streams`` / ``directions`` /
``relay`` parts of a summary, and estimates a MOS per direction with the simplified E-model.

Directions: rows ``[slot * FLOWS_PER_SLOT, + FLOWS_PER_SLOT / 2)`` are ``to_peer`` (what the
client sent through the relay), the next half ``to_client``.

What the figures mean (all as seen *at the relay*, i.e. upstream damage; what the relay
itself adds is in ``relay``):

- ``lost`` = expected - received, expected from the extended sequence numbers
  (RFC 3550 A.3: highest - base + 1), received = packets - duplicates - stray (packets of a
  sequence jump that never resynced); clamped at 0.
- ``reordered``: arrived below the highest sequence already seen, not a duplicate.
- ``jitter_ms``: RFC 3550 A.8 interarrival jitter in timestamp units / clock rate.
- ``kind``: from the inferred clock rate: 90 kHz is video, 8/16/48 kHz audio, unknown until
  the engine has seen 0.4 s of the stream. In one direction of one allocation, video streams
  after the first (by first arrival) are ``screen``: a call's camera starts first, and a
  screen share is a second video stream (retransmission SSRCs, RFC 4588, would be counted as
  one too: they are rare outside loss and are not told apart here).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from ext import _fastpath

FIELDS: Final = {name: i for i, name in enumerate(_fastpath.FLOW_FIELDS)}
PER_SLOT: Final = _fastpath.FLOWS_PER_SLOT_
DIRECTIONS: Final = ("to_peer", "to_client")
_SLOT_COUNTERS: Final = {n: i for i, n in enumerate(_fastpath.SLOT_COUNTER_NAMES)}
_DIR_COUNTERS: Final = (("client_packets", "client_bytes"), ("peer_packets", "peer_bytes"))

# -- the E-model (ITU-T G.107, simplified as in Cole & Rosenbluth, "Voice over IP performance
# monitoring", 2001) --------------------------------------------------------------------------
#
#   R = R0 - Is - Id - Ie_eff  (+ A = 0),  with the G.107 defaults R0 - Is = 93.2
#   Id = 0.024 d + 0.11 (d - 177.3) H(d - 177.3)        d: one-way mouth-to-ear delay, ms
#   Ie_eff = Ie + (95 - Ie) * Ppl / (Ppl / BurstR + Bpl) Ppl: packet loss, percent
#   MOS = 1 if R < 0; 4.5 if R > 100; else 1 + 0.035 R + 7e-6 R (R - 60) (100 - R)
#
# The relay sees neither the codec nor the path's one-way delay, so:
# - codec constants are G.113 Appendix I's G.711 with packet loss concealment, Ie = 0 and
#   Bpl = 25.1 (Opus at WebRTC's rates is close to transparent, Ie ~ 0, and conceals loss at
#   least as well, so this errs on the pessimistic side); BurstR = 1 (random loss);
# - d = ASSUMED_PATH_MS (both access legs and the relay hop) + the relay-added delay + a
#   jitter buffer of 2 x the measured jitter + CODEC_MS (20 ms frame + 5 ms look-ahead).
IE: Final = 0.0
BPL: Final = 25.1
BURST_R: Final = 1.0
ASSUMED_PATH_MS: Final = 40.0
CODEC_MS: Final = 25.0


def r_to_mos(r: float) -> float:
    """G.107's mapping of the transmission rating R to an estimated MOS (1 .. 4.5)."""
    if r <= 0:
        return 1.0
    if r >= 100:
        return 4.5
    return 1 + 0.035 * r + 7e-6 * r * (r - 60) * (100 - r)


def r_factor(loss: float, delay_ms: float, *, ie: float = IE, bpl: float = BPL,
             burst_r: float = BURST_R) -> float:
    """R from a loss fraction (0..1) and a one-way delay in ms."""
    ppl = 100.0 * min(max(loss, 0.0), 1.0)
    d = max(delay_ms, 0.0)
    i_d = 0.024 * d + (0.11 * (d - 177.3) if d > 177.3 else 0.0)
    ie_eff = ie + (95.0 - ie) * ppl / (ppl / burst_r + bpl)
    return 93.2 - i_d - ie_eff


def mos(loss: float, jitter_ms: float, *, relay_delay_ms: float = 0.0,
        path_ms: float = ASSUMED_PATH_MS) -> float:
    """Estimated MOS from loss (fraction), jitter (ms) and the delays around it."""
    delay = path_ms + relay_delay_ms + 2.0 * max(jitter_ms, 0.0) + CODEC_MS
    return round(r_to_mos(r_factor(loss, delay)), 2)


# -- reading the table -------------------------------------------------------------------


@dataclass(slots=True)
class Stream:
    direction: str
    ssrc: int
    kind: str
    clock_rate: int
    packets: int
    bytes: int
    lost: int
    reordered: int
    duplicates: int
    jitter_ms: float
    max_gap_ms: float
    payload_type: int
    rtcp_packets: int
    first_ns: int

    def wire(self) -> dict[str, Any]:
        """The stream as docs/relay-summaries.md has it."""
        d = asdict(self)
        for k in ("payload_type", "rtcp_packets", "first_ns"):
            del d[k]
        return d


def flow_table(engine: _fastpath.Engine) -> npt.NDArray[np.int64]:
    """The engine's flow table as a (rows, fields) int64 array sharing its memory."""
    return np.frombuffer(engine.flows, dtype=np.int64).reshape(-1, len(FIELDS))


def _kind(clock: int) -> str:
    if clock >= 90000:
        return "video"
    if clock > 0:
        return "audio"
    return "unknown"


def streams(table: npt.NDArray[np.int64], slot: int, *, with_rtcp_only: bool = False) -> list[Stream]:
    """The slot's flows, to_peer first; RTCP-only SSRCs only when asked."""
    rows = table[slot * PER_SLOT : (slot + 1) * PER_SLOT]
    f = FIELDS
    out: list[Stream] = []
    for half, direction in enumerate(DIRECTIONS):
        mine: list[Stream] = []
        for row in rows[half * PER_SLOT // 2 : (half + 1) * PER_SLOT // 2]:
            if row[f["key"]] == 0 or (row[f["packets"]] == 0 and not with_rtcp_only):
                continue
            r = [int(v) for v in row]
            packets = r[f["packets"]]
            clock = r[f["clock_rate"]]
            expected = r[f["max_seq"]] - r[f["base_seq"]] + 1 if packets else 0
            received = packets - r[f["duplicates"]] - r[f["stray"]]
            mine.append(Stream(
                direction=direction,
                ssrc=r[f["key"]] & 0xFFFFFFFF,
                kind=_kind(clock),
                clock_rate=clock,
                packets=packets,
                bytes=r[f["bytes"]],
                lost=max(0, expected - received),
                reordered=r[f["reordered"]],
                duplicates=r[f["duplicates"]],
                jitter_ms=round(r[f["jitter16"]] / 16 / clock * 1000, 3) if clock else 0.0,
                max_gap_ms=round(r[f["max_gap_ns"]] / 1e6, 3),
                payload_type=r[f["payload_type"]],
                rtcp_packets=r[f["rtcp_packets"]],
                first_ns=r[f["first_ns"]],
            ))
        videos = sorted((s for s in mine if s.kind == "video"), key=lambda s: s.first_ns)
        for s in videos[1:]:
            s.kind = "screen"
        out += sorted(mine, key=lambda s: (s.first_ns, s.ssrc))
    return out


def latency_quantile(latency: Iterable[int], q: float) -> float:
    """The q-quantile (0..1) of the receive-to-send histogram in microseconds: the upper
    bound of the bucket it falls in (bucket b holds [2^(b-1), 2^b) us). 0 when empty."""
    cells = list(latency)
    counts = cells[: _fastpath.LATENCY_BUCKETS]
    total = sum(counts)
    if total == 0:
        return 0.0
    need = q * total
    seen = 0
    for b, c in enumerate(counts):
        seen += c
        if seen >= need:
            return float(2**b)
    return float(2 ** (len(counts) - 1))


def direction_figures(mine: list[Stream], packets: int, nbytes: int,
                      relay_delay_ms: float) -> dict[str, Any]:
    """A direction's totals. Loss, jitter and MOS come from its audio streams when it has
    any (the E-model is a speech model), else from all its streams; jitter is the worst
    stream's, loss the packet-weighted one."""
    audio = [s for s in mine if s.kind == "audio"] or mine
    lost = sum(s.lost for s in mine)
    basis_lost = sum(s.lost for s in audio)
    basis_expected = sum(s.packets - s.duplicates + s.lost for s in audio)
    loss = basis_lost / basis_expected if basis_expected > 0 else 0.0
    jitter = max((s.jitter_ms for s in audio), default=0.0)
    out: dict[str, Any] = {"packets": packets, "bytes": nbytes, "lost": lost,
                           "jitter_ms": jitter, "loss": round(loss, 5)}
    out["mos"] = mos(loss, jitter, relay_delay_ms=relay_delay_ms) if audio else None
    return out


def summarise(engine: _fastpath.Engine, slot: int, *, rxq_overflow: int = 0,
              table: npt.NDArray[np.int64] | None = None) -> dict[str, Any]:
    """``streams``, ``directions`` and ``relay`` of one allocation's summary.

    ``rxq_overflow`` is what the caller attributes to the allocation (the engine counts
    receive-queue drops per worker: the caller passes the increase since the allocation
    started). ``relay.delay_us_p99`` is the worker's receive-to-send p99 (log2 bucket bound).
    """
    t = flow_table(engine) if table is None else table
    mine = streams(t, slot)
    c = _SLOT_COUNTERS
    row = np.frombuffer(engine.slot_counters, dtype=np.int64).reshape(-1, len(c))[slot]
    p99_us = latency_quantile(engine.latency, 0.99)
    directions: dict[str, Any] = {}
    for half, direction in enumerate(DIRECTIONS):
        pk, by = _DIR_COUNTERS[half]
        directions[direction] = direction_figures(
            [s for s in mine if s.direction == direction], int(row[c[pk]]), int(row[c[by]]),
            p99_us / 1000.0)
    return {
        "streams": [s.wire() for s in mine],
        "directions": directions,
        "relay": {"dropped": int(row[c["dropped_packets"]]), "rxq_overflow": rxq_overflow,
                  "delay_us_p99": p99_us,
                  "non_rtp_packets": int(row[c["non_rtp_packets"]]),
                  "ssrc_overflow": int(row[c["ssrc_overflow"]])},
    }


def summaries(engine: _fastpath.Engine, slots: Iterable[int],
              rxq_overflow: Mapping[int, int] | None = None) -> dict[int, dict[str, Any]]:
    """:func:`summarise` for several slots over one view of the table."""
    t = flow_table(engine)
    extra = rxq_overflow or {}
    return {s: summarise(engine, s, rxq_overflow=extra.get(s, 0), table=t) for s in slots}


# -- histogram buckets for Prometheus (relay/metrics.py observes final summaries) ------------

LOSS_BUCKETS: Final = (0.0, 0.001, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, math.inf)
JITTER_BUCKETS: Final = (0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, math.inf)  # s
MOS_BUCKETS: Final = (1.0, 2.0, 2.5, 3.0, 3.5, 3.8, 4.0, 4.2, 4.4, math.inf)
