"""Call-like workloads for the relay benchmark: voice, video, screen-share and a mix of calls.

Each call is one TURN allocation (one client socket, one channel to the echo peer) carrying the
streams a browser would send: an Opus audio stream, and for video or screen-share calls a video
stream. Every packet is real SRTP (pylibsrtp, AES-CM-128/HMAC-SHA1-80, one master key per call)
over a proper RTP header: version 2, payload type, marker on the last packet of a frame, one
sequence number and timestamp space and one SSRC per stream; every stream also sends an SRTCP
sender report about once a second. The relay sees what it sees in a call: RTP headers in the
clear, an opaque encrypted payload.

A :class:`Workload` keeps each stream's state (sequence, timestamp, frame count, SRTP context),
so its :meth:`Workload.segment` calls continue one call after another: a segment is the next
``seconds`` of every call, prepared in memory (bounded by ``MAX_PACKETS``) as a
:class:`Schedule` that ``ext._loadgen.Replay`` sends packet by packet at the packets' times.

Models (one direction; the echo peer sends every packet back, so the relay carries each stream
both ways):

- **voice**: Opus, 48 kHz clock, 20 ms packets (50/s), 150-170 bytes of payload (~160).
- **video**: voice plus 30 frames/s at 90 kHz: ~4.2 KB per frame (~1 Mbit/s) split into packets of
  at most 1,188 bytes of payload (1,210 on the wire as SRTP), sent as a burst per frame;
  a keyframe of ~36 KB (~31 packets) every 2 s.
- **screen**: voice plus a screen-share at 5 frames/s: mostly small frames (a still screen,
  0.3-2 KB), a content change (15-60 KB) on 15% of frames and a keyframe of ~90 KB every 5 s.
- **mix**: many calls at once: 60% voice, 30% video, 10% screen-share.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pylibsrtp

from bench import loadgen
from ext._loadgen import Replay

MAX_PACKETS = 250_000  # per segment: at most ~300 MB of prepared packets
MAX_PAYLOAD = 1188  # RTP payload per packet: 12 + 1188 + 10 = 1210 bytes of SRTP
RTCP_INTERVAL_NS = 1_000_000_000
_RTP = struct.Struct("!BBHII")
_SR = struct.Struct("!BBHIIIIII")  # RTCP SR: header, SSRC, NTP (2), RTP ts, packets, octets
_ZEROS = bytes(MAX_PAYLOAD)


@dataclass(frozen=True)
class Spec:
    name: str
    calls: int  # at scale 1.0
    mix: tuple[tuple[str, float], ...]  # call kinds and their shares
    description: str


WORKLOADS: dict[str, Spec] = {
    "voice": Spec(
        "voice", 400, (("voice", 1.0),), "voice calls: Opus 50 packets/s of ~160 B each way"
    ),
    "video": Spec(
        "video",
        100,
        (("video", 1.0),),
        "video calls: voice + 30 frames/s (~1 Mbit/s, 1.2 KB packets in bursts), "
        "keyframe every 2 s",
    ),
    "screen": Spec(
        "screen",
        100,
        (("screen", 1.0),),
        "screen-share calls: voice + 5 frames/s, big bursty frames, keyframe every 5 s",
    ),
    "mix": Spec(
        "mix",
        300,
        (("voice", 0.6), ("video", 0.3), ("screen", 0.1)),
        "a mix of calls: 60% voice, 30% video, 10% screen-share",
    ),
}


@dataclass
class Stream:
    """One RTP stream's state; it carries on from one segment to the next."""

    index: int  # the workload's stream number: SSRC = ssrc_base + index
    call: int
    media: str  # "audio", "video" or "screen"
    pt: int
    clock: int
    period_ns: int  # time between frames (audio: packets)
    seq: int
    ts0: int  # RTP timestamp at workload time 0
    next_ns: int  # workload time of the next frame
    next_rtcp_ns: int
    frames: int = 0
    packets: int = 0
    octets: int = 0


@dataclass
class Call:
    index: int
    kind: str  # "voice", "video" or "screen"
    key: bytes  # SRTP master key + salt (30 bytes)
    session: Any  # pylibsrtp.Session, outbound, any SSRC
    streams: list[Stream] = field(default_factory=list)


@dataclass
class Schedule:
    """One segment of a workload, ready to send: every packet (SRTP or SRTCP, without the
    ChannelData header) in one buffer, with its flow (call) and send time, and per RTP stream
    the table that finds a packet from its (SSRC, sequence number)."""

    data: bytes
    offsets: np.ndarray  # uint64 per packet
    lengths: np.ndarray  # uint16
    flows: np.ndarray  # uint32: call index
    times: np.ndarray  # uint64 ns from the segment's start, non-decreasing
    ssrc_base: int
    seq0: np.ndarray  # uint16 per stream: sequence number of its first packet here
    start: np.ndarray  # uint32 per stream: where its packets start in ``order``
    count: np.ndarray  # uint32 per stream: its RTP packets here
    order: np.ndarray  # uint32: packet indexes, stream after stream, in sequence order
    seconds: float
    rtp_packets: int
    rtcp_packets: int

    @property
    def packets(self) -> int:
        return int(self.times.size)

    def player(self, flows: loadgen.Flows) -> Replay:
        """A player of this segment over ``flows`` (at least one socket per call)."""
        calls = int(self.flows.max()) + 1
        if len(flows.socks) < calls:
            raise ValueError(f"{calls} calls need {calls} flows, got {len(flows.socks)}")
        return Replay(
            [s.fileno() for s in flows.socks[:calls]],
            flows.channels[:calls],
            self.data,
            self.offsets,
            self.lengths,
            self.flows,
            self.times,
            self.ssrc_base,
            self.seq0,
            self.start,
            self.count,
            self.order,
        )


def _call_kinds(spec: Spec, calls: int) -> list[str]:
    """Deterministic shares: call i gets the kind whose cumulative share covers it."""
    kinds: list[str] = []
    for i in range(calls):
        x = (i + 0.5) / calls
        acc = 0.0
        for kind, share in spec.mix:
            acc += share
            if x <= acc:
                kinds.append(kind)
                break
        else:
            kinds.append(spec.mix[-1][0])
    return kinds


class Workload:
    """The calls of one workload and their streams' state."""

    def __init__(
        self, name: str, scale: float = 1.0, calls: int | None = None, seed: int | None = None
    ) -> None:
        if name not in WORKLOADS:
            raise ValueError(f"unknown workload {name!r}; choose from {', '.join(WORKLOADS)}")
        self.spec = WORKLOADS[name]
        self.name = name
        ncalls = calls if calls is not None else max(1, round(self.spec.calls * scale))
        if ncalls < 1:
            raise ValueError("need at least one call")
        self.rng = np.random.default_rng(seed)
        self.ssrc_base = int(self.rng.integers(0x10000000, 0xE0000000))
        self.now_ns = 0  # workload time at the start of the next segment
        self.calls: list[Call] = []
        self.streams: list[Stream] = []
        for i, kind in enumerate(_call_kinds(self.spec, ncalls)):
            key = self.rng.bytes(30)
            policy = pylibsrtp.Policy(key=key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
            call = Call(i, kind, key, pylibsrtp.Session(policy=policy))
            self._stream(call, "audio", 111, 48_000, 20_000_000)
            if kind == "video":
                self._stream(call, "video", 96, 90_000, 1_000_000_000 // 30)
            elif kind == "screen":
                self._stream(call, "screen", 97, 90_000, 1_000_000_000 // 5)
            self.calls.append(call)

    def _stream(self, call: Call, media: str, pt: int, clock: int, period_ns: int) -> None:
        rng = self.rng
        s = Stream(
            index=len(self.streams),
            call=call.index,
            media=media,
            pt=pt,
            clock=clock,
            period_ns=period_ns,
            seq=int(rng.integers(0, 1 << 16)),
            ts0=int(rng.integers(0, 1 << 32)),
            next_ns=int(rng.integers(0, period_ns)),  # calls are not in step
            next_rtcp_ns=int(rng.integers(0, RTCP_INTERVAL_NS)),
        )
        call.streams.append(s)
        self.streams.append(s)

    @property
    def keys(self) -> list[bytes]:
        return [c.key for c in self.calls]

    def describe(self) -> dict[str, Any]:
        kinds: dict[str, int] = {}
        for c in self.calls:
            kinds[c.kind] = kinds.get(c.kind, 0) + 1
        return {
            "description": self.spec.description,
            "calls": len(self.calls),
            "streams": len(self.streams),
            "call_kinds": kinds,
        }

    def _frame_sizes(self, s: Stream) -> list[int]:
        """RTP payload sizes of the packets of ``s``'s next frame."""
        rng = self.rng
        if s.media == "audio":
            return [int(rng.integers(150, 171))]
        if s.media == "video":
            keyframe = s.frames % 60 == 0  # every 2 s at 30 frames/s
            size = rng.normal(36_000, 4_000) if keyframe else rng.normal(4_200, 900)
            size = float(np.clip(size, 800, 60_000))
        else:  # screen: 5 frames/s
            if s.frames % 25 == 0:  # keyframe every 5 s
                size = rng.normal(90_000, 10_000)
            elif rng.random() < 0.15:  # the content changed: a slide, a scroll
                size = rng.uniform(15_000, 60_000)
            else:
                size = rng.uniform(300, 2_000)
            size = float(np.clip(size, 300, 120_000))
        n = max(1, math.ceil(size / MAX_PAYLOAD))
        each = math.ceil(size / n)
        return [each] * (n - 1) + [max(1, int(size) - each * (n - 1))]

    def segment(self, seconds: float) -> Schedule:
        """The next ``seconds`` of every call, as a :class:`Schedule`."""
        if seconds <= 0:
            raise ValueError("seconds must be positive")
        t_start = self.now_ns
        t_end = t_start + int(seconds * 1e9)
        times: list[int] = []
        flows: list[int] = []
        pkts: list[bytes] = []
        streams: list[int] = []  # per packet: stream index, -1 for RTCP
        seq0 = np.zeros(len(self.streams), dtype=np.uint16)
        for s in self.streams:
            seq0[s.index] = s.seq
        for call in self.calls:
            session = call.session
            for s in call.streams:
                ssrc = (self.ssrc_base + s.index) & 0xFFFFFFFF
                while s.next_ns < t_end or s.next_rtcp_ns < t_end:
                    if s.next_rtcp_ns <= s.next_ns:  # an SRTCP sender report
                        ts = (s.ts0 + s.next_rtcp_ns * s.clock // 1_000_000_000) & 0xFFFFFFFF
                        sr = _SR.pack(
                            0x80,
                            200,
                            6,
                            ssrc,
                            s.next_rtcp_ns // 1_000_000_000,
                            0,
                            ts,
                            s.packets & 0xFFFFFFFF,
                            s.octets & 0xFFFFFFFF,
                        )
                        times.append(s.next_rtcp_ns - t_start)
                        flows.append(call.index)
                        pkts.append(session.protect_rtcp(sr))
                        streams.append(-1)
                        s.next_rtcp_ns += RTCP_INTERVAL_NS
                        continue
                    ts = (s.ts0 + s.next_ns * s.clock // 1_000_000_000) & 0xFFFFFFFF
                    sizes = self._frame_sizes(s)
                    for k, size in enumerate(sizes):
                        marker = 0x80 if k == len(sizes) - 1 and s.media != "audio" else 0
                        hdr = _RTP.pack(0x80, marker | s.pt, s.seq, ts, ssrc)
                        times.append(s.next_ns - t_start)
                        flows.append(call.index)
                        pkts.append(session.protect(hdr + _ZEROS[:size]))
                        streams.append(s.index)
                        s.seq = (s.seq + 1) & 0xFFFF
                        s.packets += 1
                        s.octets += size
                    s.frames += 1
                    s.next_ns += s.period_ns
                if len(pkts) > MAX_PACKETS:
                    raise ValueError(
                        f"workload {self.name}: over {MAX_PACKETS} packets in "
                        f"{seconds} s; use fewer calls or a shorter segment"
                    )
        self.now_ns = t_end
        if not pkts:
            raise ValueError(f"workload {self.name}: no packet in {seconds} s")
        t = np.asarray(times, dtype=np.uint64)
        idx = np.argsort(t, kind="stable")  # stable: a stream's packets stay in sequence order
        lengths = np.fromiter((len(p) for p in pkts), dtype=np.uint16, count=len(pkts))[idx]
        data = b"".join(pkts[i] for i in idx)
        offsets = np.zeros(len(pkts), dtype=np.uint64)
        np.cumsum(lengths[:-1], dtype=np.uint64, out=offsets[1:])
        st = np.asarray(streams, dtype=np.int64)[idx]
        rtp = np.flatnonzero(st >= 0)
        by_stream = np.argsort(st[rtp], kind="stable")  # sequence order within each stream
        order = rtp[by_stream].astype(np.uint32)
        count = np.bincount(st[rtp], minlength=len(self.streams)).astype(np.uint32)
        start = np.zeros(len(self.streams), dtype=np.uint32)
        np.cumsum(count[:-1], dtype=np.uint32, out=start[1:])
        return Schedule(
            data=data,
            offsets=offsets,
            lengths=lengths,
            flows=np.asarray(flows, dtype=np.uint32)[idx],
            times=t[idx],
            ssrc_base=self.ssrc_base,
            seq0=seq0,
            start=start,
            count=count,
            order=order,
            seconds=seconds,
            rtp_packets=int(rtp.size),
            rtcp_packets=int(len(pkts) - rtp.size),
        )


def decrypt(schedule: Schedule, keys: list[bytes]) -> list[tuple[int, bytes]]:
    """Every packet of ``schedule`` decrypted with its call's key: (call, RTP or RTCP packet).
    For tests and for checking by hand; raises pylibsrtp.Error on a packet that does not
    authenticate."""
    sessions = [
        pylibsrtp.Session(
            policy=pylibsrtp.Policy(key=k, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND)
        )
        for k in keys
    ]
    out = []
    for i in range(schedule.packets):
        off, n = int(schedule.offsets[i]), int(schedule.lengths[i])
        pkt = schedule.data[off : off + n]
        call = int(schedule.flows[i])
        if 192 <= pkt[1] <= 223:
            out.append((call, sessions[call].unprotect_rtcp(pkt)))
        else:
            out.append((call, sessions[call].unprotect(pkt)))
    return out


def nominal(name: str, seconds: float = 4.0, scale: float = 1.0) -> dict[str, float]:
    """Packets/s and Mbit/s one direction of a workload offers (from a generated segment)."""
    w = Workload(name, scale=scale, seed=1)
    s = w.segment(seconds)
    return {
        "pps": s.packets / seconds,
        "mbps": len(s.data) * 8 / seconds / 1e6,
        "calls": len(w.calls),
    }
