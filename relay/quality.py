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
  the engine has seen 0.4 s of the stream; ``screen`` is a second video stream of the call
  that is media of its own, not a repair stream of the first: see :func:`classify`.
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


def r_factor(
    loss: float, delay_ms: float, *, ie: float = IE, bpl: float = BPL, burst_r: float = BURST_R
) -> float:
    """R from a loss fraction (0..1) and a one-way delay in ms."""
    ppl = 100.0 * min(max(loss, 0.0), 1.0)
    d = max(delay_ms, 0.0)
    i_d = 0.024 * d + (0.11 * (d - 177.3) if d > 177.3 else 0.0)
    ie_eff = ie + (95.0 - ie) * ppl / (ppl / burst_r + bpl)
    return 93.2 - i_d - ie_eff


def mos(
    loss: float, jitter_ms: float, *, relay_delay_ms: float = 0.0, path_ms: float = ASSUMED_PATH_MS
) -> float:
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
    # for the media kind (classify): marker bits, and the last packet's timestamp and arrival
    markers: int = 0
    last_ts: int = 0
    last_ns: int = 0
    repair: bool = False  # retransmissions (RTX) or probes for another stream, see classify

    def wire(self) -> dict[str, Any]:
        """The stream as docs/relay-summaries.md has it."""
        d = asdict(self)
        for k in _INTERNAL:
            del d[k]
        return d


_INTERNAL: Final = (
    "payload_type",
    "rtcp_packets",
    "first_ns",
    "markers",
    "last_ts",
    "last_ns",
    "repair",
)


def flow_table(engine: _fastpath.Engine) -> npt.NDArray[np.int64]:
    """The engine's flow table as a (rows, fields) int64 array sharing its memory."""
    return np.frombuffer(engine.flows, dtype=np.int64).reshape(-1, len(FIELDS))


def _kind(clock: int) -> str:
    if clock >= 90000:
        return "video"
    if clock > 0:
        return "audio"
    return "unknown"


# -- media kind: camera, screen share, or a repair stream ----------------------------------
#
# A call's direction can carry several 90 kHz SSRCs that are not all pictures of their own:
#
# - RTX (RFC 4588): retransmissions of the camera's lost packets on an SSRC and payload type of
#   their own (Chrome, Firefox, Safari and aiortc all negotiate it). The RTX payload begins with
#   the original sequence number, but SRTP encrypts the payload, so the relay cannot read it.
#   What stays in the clear is decisive, though: RFC 4588 section 4 has an RTX packet carry the
#   *original packet's timestamp*, so an RTX stream's timestamps sit on the timeline of the
#   stream it repairs, while every independent stream starts at a random timestamp (RFC 3550
#   5.1; aiortc and libwebrtc both draw one per sender).
# - Padding-only probes (bandwidth estimation): libwebrtc sends them on the RTX SSRC when RTX is
#   negotiated, stamped with the media stream's last timestamp, so the same rule catches them.
#   Probes and FEC on an SSRC of their own (FlexFEC, RFC 8627, which libwebrtc stamps from its
#   own random base) never set the marker bit, which ends a video frame.
#
# So, per direction:
# 1. Repair streams: a stream whose last (timestamp, arrival) lies on a video stream's timeline,
#    i.e. its timestamp is within TIMELINE_SLACK_S of the video's last timestamp advanced at 90
#    kHz by the arrival-time difference, repairs the one of the pair with more marker bits
#    (frames; ties: the earlier). Retransmissions are at most a few seconds old (libwebrtc
#    keeps ~1 s of history), hence the slack; two independent streams match by chance with
#    probability 2 * 5 * 90000 / 2^32 = 0.02 %. Repair streams are reported as ``video`` (they
#    carry the camera's video; one whose sparse timestamps gave no clock rate was ``unknown``)
#    and left out of the direction's loss and jitter basis (their timestamps are old by design,
#    which the jitter formula would read as jitter). A stream with an audio clock rate is never
#    taken for a repair stream: senders that start every stream's timestamps at 0 (some
#    gateways) would otherwise have their audio on the camera's timeline for the first seconds.
#    (An RTX stream's clock is misread as 48 kHz only if the ages of the packets it resends
#    differ by over a quarter of the 0.4 s or more the engine measures over: rare.)
# 2. Of the other video streams, those carrying pictures, at least SCREEN_MIN_FRAMES marker
#    bits over at least SCREEN_MIN_SECONDS, are media; the first of them to arrive is the
#    camera (a call's camera starts first) and every later one a screen share, ``screen``.
#    Video streams without frames (probes, FEC) or too young to tell stay ``video``; a young
#    share turns ``screen`` in a later summary (summaries are cumulative, the last one wins).
#
# Limits: a screen share sent with the camera off is the direction's only video: ``video``.
# Simulcast layers (an SFU's business, not a 1:1 relayed call's) would each look like a screen.
TIMELINE_SLACK_S: Final = 5.0
SCREEN_MIN_FRAMES: Final = 3
SCREEN_MIN_SECONDS: Final = 1.0
VIDEO_CLOCK: Final = 90000


def same_timeline(a: Stream, b: Stream, clock: int = VIDEO_CLOCK) -> bool:
    """Whether b's last packet is stamped on a's RTP timeline (a's ``clock``): b's timestamp
    advanced by the arrival-time difference lands within TIMELINE_SLACK_S of a's."""
    predicted = b.last_ts + (a.last_ns - b.last_ns) * clock // 1_000_000_000
    off = (a.last_ts - predicted + 0x80000000) % 0x100000000 - 0x80000000
    return abs(off) <= TIMELINE_SLACK_S * clock


def _has_frames(s: Stream) -> bool:
    return (
        s.markers >= SCREEN_MIN_FRAMES
        and s.last_ns - s.first_ns >= SCREEN_MIN_SECONDS * 1_000_000_000
    )


def classify(mine: list[Stream]) -> None:
    """Set ``kind`` and ``repair`` of one direction's streams (rules in the comment above)."""
    videos = [s for s in mine if s.kind == "video"]
    for v in videos:
        for s in mine:
            if (
                s is v
                or s.repair
                or v.repair
                or s.kind == "audio"
                or not s.packets
                or not same_timeline(v, s)
            ):
                continue
            fewer = (s.markers, -s.first_ns) < (v.markers, -v.first_ns)
            loser = s if fewer else v
            loser.repair = True
            loser.kind = "video"
    media = sorted(
        (s for s in videos if not s.repair and _has_frames(s)), key=lambda s: (s.first_ns, s.ssrc)
    )
    for s in media[1:]:
        s.kind = "screen"


def streams(
    table: npt.NDArray[np.int64], slot: int, *, with_rtcp_only: bool = False
) -> list[Stream]:
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
            mine.append(
                Stream(
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
                    markers=r[f["markers"]],
                    last_ts=r[f["last_ts"]] & 0xFFFFFFFF,
                    last_ns=r[f["last_ns"]],
                )
            )
        classify(mine)
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


def direction_figures(
    mine: list[Stream], packets: int, nbytes: int, relay_delay_ms: float
) -> dict[str, Any]:
    """A direction's totals. Loss, jitter and MOS come from its audio streams when it has
    any (the E-model is a speech model), else from all its streams but repair ones (RTX
    timestamps are old by design); jitter is the worst stream's, loss the packet-weighted
    one."""
    audio = [s for s in mine if s.kind == "audio"] or [s for s in mine if not s.repair]
    lost = sum(s.lost for s in mine)
    basis_lost = sum(s.lost for s in audio)
    basis_expected = sum(s.packets - s.duplicates + s.lost for s in audio)
    loss = basis_lost / basis_expected if basis_expected > 0 else 0.0
    jitter = max((s.jitter_ms for s in audio), default=0.0)
    out: dict[str, Any] = {
        "packets": packets,
        "bytes": nbytes,
        "lost": lost,
        "jitter_ms": jitter,
        "loss": round(loss, 5),
    }
    out["mos"] = mos(loss, jitter, relay_delay_ms=relay_delay_ms) if audio else None
    return out


def summarise(
    engine: _fastpath.Engine,
    slot: int,
    *,
    rxq_overflow: int = 0,
    table: npt.NDArray[np.int64] | None = None,
) -> dict[str, Any]:
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
            [s for s in mine if s.direction == direction],
            int(row[c[pk]]),
            int(row[c[by]]),
            p99_us / 1000.0,
        )
    return {
        "streams": [s.wire() for s in mine],
        "directions": directions,
        "relay": {
            "dropped": int(row[c["dropped_packets"]]),
            "rxq_overflow": rxq_overflow,
            "delay_us_p99": p99_us,
            "non_rtp_packets": int(row[c["non_rtp_packets"]]),
            "ssrc_overflow": int(row[c["ssrc_overflow"]]),
        },
    }


def summaries(
    engine: _fastpath.Engine, slots: Iterable[int], rxq_overflow: Mapping[int, int] | None = None
) -> dict[int, dict[str, Any]]:
    """:func:`summarise` for several slots over one view of the table."""
    t = flow_table(engine)
    extra = rxq_overflow or {}
    return {s: summarise(engine, s, rxq_overflow=extra.get(s, 0), table=t) for s in slots}


# -- histogram buckets for Prometheus (relay/metrics.py observes final summaries) ------------

LOSS_BUCKETS: Final = (0.0, 0.001, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, math.inf)
JITTER_BUCKETS: Final = (0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, math.inf)  # s
MOS_BUCKETS: Final = (1.0, 2.0, 2.5, 3.0, 3.5, 3.8, 4.0, 4.2, 4.4, math.inf)
