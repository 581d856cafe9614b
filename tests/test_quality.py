"""Passive call quality: the fast path's RTP/RTCP inspection, relay/quality.py's summaries
and the E-model.

Most tests drive the engine directly over loopback sockets with its fake clock
(``Engine.fake_clock_ns``), so arrival times, and so jitter and gaps, are exact; one test per
path uses real time. Tolerances are stated where a figure is not exact.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ext import _fastpath
from relay import quality
from tests.test_fastpath import Rig, channel_data

NAMES = _fastpath.COUNTER_NAMES
SCREEN_FRAMES = quality.SCREEN_MIN_FRAMES
MS = 1_000_000  # ns
T0 = 10**12


def rtp(
    seq: int, ts: int, ssrc: int, pt: int = 111, marker: bool = False, payload: bytes = b"\x00" * 80
) -> bytes:
    return (
        struct.pack(
            "!BBHII", 0x80, (0x80 if marker else 0) | pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc
        )
        + payload
    )


def rtcp_sr(ssrc: int) -> bytes:
    return struct.pack("!BBHIIIIII", 0x80, 200, 6, ssrc, 0, 0, 0, 0, 0)


def rtcp_rr(ssrc: int) -> bytes:
    return struct.pack("!BBHI", 0x80, 201, 1, ssrc)


class Q(Rig):
    """A rig with a channel bound and a fake clock; sends one packet per batch."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        super().__init__(host)
        e = self.engine
        e.add_permission(self.slot, self.peer_addr[0])
        e.bind_channel(self.slot, 0x4001, *self.peer_addr)
        self.now = T0
        e.fake_clock_ns = self.now

    def at(self, ns: int) -> None:
        self.now = ns
        self.engine.fake_clock_ns = ns

    def to_peer(self, data: bytes) -> None:
        self.client.sendto(
            channel_data(0x4001, data) + b"\0" * (-len(data) % 4), self.listener.getsockname()
        )
        self.engine.drain_listener(self.idx)
        self.peer.recvfrom(4096)

    def to_client(self, data: bytes) -> None:
        self.peer.sendto(data, self.relay.getsockname())
        assert self.engine.drain_relay(self.slot) == 1
        self.client.recvfrom(4096)

    def streams(self) -> list[quality.Stream]:
        return quality.streams(quality.flow_table(self.engine), self.slot, with_rtcp_only=True)

    def stream(self, ssrc: int) -> quality.Stream:
        return next(s for s in self.streams() if s.ssrc == ssrc)

    def counter(self, name: str) -> int:
        return int(self.engine.counters[NAMES.index(name)])


@pytest.fixture
def q() -> Iterator[Q]:
    r = Q()
    yield r
    r.close()


def send_audio(
    q: Q,
    seqs: list[int],
    *,
    ssrc: int = 0x1234,
    clock: int = 48000,
    ptime_ms: int = 20,
    start_seq: int = 0,
    arrival_ms: list[float] | None = None,
    direction: str = "to_peer",
) -> None:
    """Packets ``seqs`` (offsets from ``start_seq``) of a stream sent every ``ptime_ms``; each
    arrives at its nominal time plus its entry of ``arrival_ms`` (extra delay)."""
    step = clock * ptime_ms // 1000
    send = q.to_peer if direction == "to_peer" else q.to_client
    for i, s in enumerate(seqs):
        extra = arrival_ms[i] if arrival_ms else 0.0
        q.at(T0 + int((s * ptime_ms + extra) * MS))
        send(rtp(start_seq + s, 1000 + s * step, ssrc))


# -- the E-model -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("r", "mos"),
    [
        (93.2, 4.41),
        (90, 4.34),
        (80, 4.02),
        (70, 3.60),
        (60, 3.10),
        (50, 2.58),
        (0, 1.0),
        (100, 4.5),
    ],
)
def test_r_to_mos_matches_g107(r: float, mos: float) -> None:
    # G.107 Annex B MOS(R) at the points G.109 tabulates (R 80 -> 4.02, 70 -> 3.60, 50 -> 2.58)
    assert quality.r_to_mos(r) == pytest.approx(mos, abs=0.006)


def test_r_factor_known_points() -> None:
    assert quality.r_factor(0.0, 0.0) == pytest.approx(93.2)
    # Id = 0.024 d below 177.3 ms, plus 0.11 (d - 177.3) above
    assert quality.r_factor(0.0, 100.0) == pytest.approx(93.2 - 2.4)
    assert quality.r_factor(0.0, 277.3) == pytest.approx(93.2 - 0.024 * 277.3 - 11.0)
    # Ie_eff = 95 Ppl / (Ppl + Bpl) with Ie = 0, BurstR = 1: 1 % -> 3.64, 5 % -> 15.78
    assert 93.2 - quality.r_factor(0.01, 0.0) == pytest.approx(95 / 26.1, abs=1e-3)
    assert 93.2 - quality.r_factor(0.05, 0.0) == pytest.approx(475 / 30.1, abs=1e-3)


def test_mos_falls_with_loss_and_jitter() -> None:
    clean = quality.mos(0.0, 0.0)
    assert 4.3 <= clean <= 4.41  # a clean call with the assumed 65 ms of path and codec
    assert quality.mos(0.01, 0.0) < clean
    assert quality.mos(0.05, 0.0) < quality.mos(0.01, 0.0) < clean
    assert quality.mos(0.0, 80.0) < quality.mos(0.0, 10.0) < clean
    assert quality.mos(0.2, 200.0) < 3.0
    assert quality.mos(1.0, 0.0) >= 1.0


# -- sequence, loss, reordering, duplicates --------------------------------------------------


def test_clean_audio_stream(q: Q) -> None:
    send_audio(q, list(range(100)))
    s = q.stream(0x1234)
    assert (s.packets, s.lost, s.reordered, s.duplicates) == (100, 0, 0, 0)
    assert s.kind == "audio" and s.clock_rate == 48000
    assert s.jitter_ms == 0.0  # perfectly paced
    assert s.max_gap_ms == pytest.approx(20.0)
    assert s.bytes == 100 * 92 and s.payload_type == 111
    assert q.counter("rtp_packets") == 100 and q.counter("non_rtp_packets") == 0


def test_loss_reorder_duplicates_across_the_sequence_wrap(q: Q) -> None:
    seqs = [i for i in range(300) if i not in (40, 41, 42, 200)]  # 4 lost
    seqs[10], seqs[11] = seqs[11], seqs[10]  # 1 reordered
    seqs[100], seqs[103] = seqs[103], seqs[100]  # 103..106 sent 106, 104, 105, 103: 3 late
    seqs.insert(150, seqs[149])  # 1 duplicate, right after the original
    seqs.insert(250, seqs[230])  # 1 duplicate, 20 packets late
    arrival = [0.0] * len(seqs)
    send_audio(q, seqs, start_seq=65400, arrival_ms=arrival)  # wraps at 136
    s = q.stream(0x1234)
    assert s.packets == 298
    assert s.lost == 4
    assert s.reordered == 4
    assert s.duplicates == 2


def test_sequence_restart_resyncs(q: Q) -> None:
    send_audio(q, list(range(50)))
    # the sender restarts its sequence far away: two in a row confirm the new sequence
    send_audio(q, list(range(50, 100)), start_seq=20000 - 50)
    s = q.stream(0x1234)
    assert s.packets == 100 and s.lost == 0 and s.duplicates == 0


def test_jitter_matches_rfc3550(q: Q) -> None:
    # every other packet 6 ms late: |D| alternates 6 ms, 6 ms -> J converges to 6 ms
    arrival = [6.0 if i % 2 else 0.0 for i in range(150)]
    send_audio(q, list(range(150)), arrival_ms=arrival)
    s = q.stream(0x1234)
    assert s.jitter_ms == pytest.approx(6.0, abs=0.1)
    # a reference computation of A.8 in floating point on the same arrivals
    j, prev = 0.0, None
    for i, extra in enumerate(arrival):
        transit = (i * 20 + extra) - i * 20
        if prev is not None and T0 + (i * 20 + extra) * MS >= T0 + 400 * MS:
            j += (abs(transit - prev) - j) / 16
        prev = transit
    assert s.jitter_ms == pytest.approx(j, abs=0.15)  # the engine starts after 0.4 s


def test_random_jitter_and_gap(q: Q) -> None:
    rng = np.random.default_rng(7)
    extra = rng.uniform(0, 10, 300).tolist()
    for k in range(200, 300):
        extra[k] += 500  # a 0.5 s stall before packet 200
    seqs = list(range(300))
    send_audio(q, seqs, arrival_ms=extra)
    s = q.stream(0x1234)
    # A.8 of uniform(0, 10) ms delays: E|D| = 10/3 ms; the stall adds a decaying bump
    # (500/16 ms, decaying by 15/16 per packet over the remaining 99 packets: ~0.05 ms)
    assert 2.5 < s.jitter_ms < 4.5
    assert s.max_gap_ms == pytest.approx(20 + extra[200] - extra[199], abs=0.01)
    assert s.clock_rate == 48000
    assert s.lost == 0 and s.reordered == 0


@pytest.mark.parametrize(
    ("clock", "ptime", "kind"),
    [(8000, 20, "audio"), (16000, 20, "audio"), (48000, 10, "audio"), (90000, 33, "video")],
)
def test_clock_rate_inferred_from_timestamps(q: Q, clock: int, ptime: int, kind: str) -> None:
    send_audio(q, list(range(60)), clock=clock, ptime_ms=ptime)  # >= 0.4 s of stream
    s = q.stream(0x1234)
    assert s.clock_rate == clock and s.kind == kind


# -- media kind: camera, screen share, retransmissions and probes ----------------------------
#
# Synthetic streams on one timeline of arrival times (ms), merged and sent in time order:
# ``audio_events`` 20 ms Opus, ``video_events`` frames of a 90 kHz stream (marker on each
# frame's last packet), ``rtx_events`` RFC 4588 retransmissions of some of a video stream's
# packets (its own SSRC, sequence and payload type, the original timestamp and marker),
# ``probe_events`` padding-only probes (P bit, no marker, the media's last timestamp).

Event = tuple[float, bytes]


def rtp_full(
    seq: int,
    ts: int,
    ssrc: int,
    pt: int,
    *,
    marker: bool = False,
    padding: bool = False,
    payload: bytes = b"\x00" * 80,
) -> bytes:
    return (
        struct.pack(
            "!BBHII",
            0xA0 if padding else 0x80,
            (0x80 if marker else 0) | pt,
            seq & 0xFFFF,
            ts & 0xFFFFFFFF,
            ssrc,
        )
        + payload
    )


def audio_events(ssrc: int, seconds: float, *, ts0: int = 1000, pt: int = 111) -> list[Event]:
    return [
        (i * 20.0, rtp_full(i, ts0 + i * 960, ssrc, pt, marker=i == 0))
        for i in range(int(seconds * 50))
    ]


def video_events(
    ssrc: int,
    seconds: float,
    *,
    fps: float = 30.0,
    ts0: int = 77,
    pt: int = 96,
    start_ms: float = 0.0,
    packets_per_frame: int = 2,
    keyframe_every: int = 30,
) -> list[Event]:
    out: list[Event] = []
    seq = 0
    for f in range(int(seconds * fps)):
        t = start_ms + f * 1000.0 / fps
        ts = ts0 + round(f * 90000 / fps)
        n = packets_per_frame * (4 if f % keyframe_every == 0 else 1)
        for k in range(n):
            out.append(
                (
                    t + 0.1 * k,
                    rtp_full(seq, ts, ssrc, pt, marker=k == n - 1, payload=b"\x00" * 1000),
                )
            )
            seq += 1
    return out


def rtx_events(
    media: list[Event], ssrc: int, *, every: int = 7, delay_ms: float = 60.0, pt: int = 97
) -> list[Event]:
    """Retransmit every ``every``-th packet of ``media`` ``delay_ms`` later, RFC 4588 style."""
    out: list[Event] = []
    for n, (t, pkt) in enumerate(media[3::every]):
        b1, orig_seq, ts = (
            pkt[1],
            struct.unpack("!H", pkt[2:4])[0],
            struct.unpack("!I", pkt[4:8])[0],
        )
        osn = struct.pack("!H", orig_seq)  # the RTX payload starts with the original sequence
        out.append(
            (
                t + delay_ms,
                rtp_full(n, ts, ssrc, pt, marker=bool(b1 & 0x80), payload=osn + pkt[12:]),
            )
        )
    return out


def probe_events(
    media: list[Event],
    ssrc: int,
    *,
    start_ms: float,
    bursts: int,
    per_burst: int = 10,
    gap_ms: float = 200.0,
    pt: int = 97,
    own_ts: int | None = None,
) -> list[Event]:
    """Bursts of padding-only packets: stamped with the media's latest timestamp at the time
    (libwebrtc on the RTX SSRC), or from ``own_ts`` at 90 kHz (a stream of their own)."""
    out: list[Event] = []
    seq = 0
    for b in range(bursts):
        t = start_ms + b * gap_ms
        if own_ts is None:
            ts = struct.unpack(
                "!I", max((m for m in media if m[0] <= t), key=lambda m: m[0])[1][4:8]
            )[0]
        else:
            ts = own_ts + int(t * 90)
        for k in range(per_burst):
            out.append(
                (
                    t + 0.2 * k,
                    rtp_full(seq, ts, ssrc, pt, padding=True, payload=b"\x00" * 255 + b"\xff"),
                )
            )
            seq += 1
    return out


def play(q: Q, *streams: list[Event], direction: str = "to_peer") -> None:
    send = q.to_peer if direction == "to_peer" else q.to_client
    for t, pkt in sorted((e for s in streams for e in s), key=lambda e: e[0]):
        q.at(T0 + int(t * MS))
        send(pkt)


def kinds(q: Q) -> dict[int, str]:
    return {s.ssrc: s.kind for s in q.streams()}


def test_second_video_stream_is_screen(q: Q) -> None:
    camera = video_events(2, 3.0)
    screen = video_events(
        3, 2.0, fps=5, ts0=0x5000_0000, start_ms=800, packets_per_frame=6, keyframe_every=10
    )
    play(q, audio_events(1, 3.0), camera, screen)
    play(q, audio_events(9, 3.0), direction="to_client")
    got = {(s.direction, s.ssrc): s.kind for s in q.streams()}
    assert got == {
        ("to_peer", 1): "audio",
        ("to_peer", 2): "video",
        ("to_peer", 3): "screen",
        ("to_client", 9): "audio",
    }
    assert not any(s.repair for s in q.streams())


def test_rtx_stream_is_video_not_screen(q: Q) -> None:
    """RFC 4588 retransmissions on their own SSRC and payload type, with markers where the
    originals had them and a steady trickle over the whole call: not a screen share."""
    camera = video_events(2, 4.0)
    rtx = rtx_events(camera, 0x2B, every=5)
    play(q, audio_events(1, 4.0), camera, rtx)
    s = {x.ssrc: x for x in q.streams()}
    assert s[0x2B].markers >= SCREEN_FRAMES and s[0x2B].payload_type == 97  # frame-like
    assert s[0x2B].kind == "video" and s[0x2B].repair
    assert s[2].kind == "video" and not s[2].repair
    # the repair stream stays out of the direction's figures' basis: a video-only direction
    # reports the camera's jitter, not the RTX stream's (whose timestamps are 60 ms old)
    assert s[0x2B].jitter_ms > 0
    up = quality.direction_figures([s[2], s[0x2B]], 0, 0, 0.0)
    assert up["jitter_ms"] == s[2].jitter_ms


def test_rtx_arriving_first_and_misread_clocks_are_still_repair(q: Q) -> None:
    """A probe burst on the RTX SSRC reaches the relay before the camera's first packet, and
    RTX retransmissions so irregular that the inferred clock is not 90 kHz: the timeline
    still ties both to the camera, which has more frames."""
    camera = video_events(2, 3.0, start_ms=5.0)
    probes = [(0.0, rtp_full(0, 77, 0x2B, 97, padding=True))]
    # from 1 s on, every 50 ms, a retransmission of one of the first packets, each older
    # than the one before: from its timestamps alone (first the probe's, then running
    # backwards) no plausible clock rate can be read
    rtx = []
    for n in range(20):
        t = 1000.0 + 50 * n
        orig = max((e for e in camera if e[0] <= 40 - 1.5 * n), key=lambda e: e[0])
        rtx.append((t, rtp_full(n + 1, struct.unpack("!I", orig[1][4:8])[0], 0x2B, 97)))
    play(q, camera, probes, rtx)
    s = {x.ssrc: x for x in q.streams()}
    assert s[0x2B].clock_rate == 0  # unknown from its timestamps alone
    assert s[0x2B].repair and s[0x2B].kind == "video"
    assert s[2].kind == "video" and not s[2].repair


def test_audio_on_the_cameras_timeline_stays_audio(q: Q) -> None:
    """A sender that starts every timestamp at 0 puts its audio near the camera's timeline
    for the first seconds: an audio clock rate is never a repair stream."""
    play(q, audio_events(1, 3.0, ts0=0), video_events(2, 3.0, ts0=0))
    s = {x.ssrc: x for x in q.streams()}
    assert quality.same_timeline(s[2], s[1])
    assert kinds(q) == {1: "audio", 2: "video"} and not s[1].repair


@pytest.mark.parametrize("own_timeline", [False, True])
def test_padding_probes_are_not_screen(q: Q, own_timeline: bool) -> None:
    """Padding-only bandwidth probes, in bursts, on the RTX SSRC (the media's timestamps) or
    on an SSRC and timeline of their own (no marker bit: no frames)."""
    camera = video_events(2, 3.0)
    probes = probe_events(
        camera, 0x77, start_ms=100, bursts=12, own_ts=0x3000_0000 if own_timeline else None
    )
    play(q, audio_events(1, 3.0), camera, probes)
    s = {x.ssrc: x for x in q.streams()}
    assert s[0x77].packets == 120 and s[0x77].markers == 0
    assert s[0x77].kind in ("video", "unknown") and s[2].kind == "video"
    assert s[0x77].repair is not own_timeline  # on the camera's timeline: a repair stream


def test_camera_screen_and_both_rtx_streams(q: Q) -> None:
    camera = video_events(2, 4.0)
    screen = video_events(3, 3.0, fps=10, ts0=0x9000_0000, start_ms=1000)
    play(
        q,
        audio_events(1, 4.0),
        camera,
        rtx_events(camera, 0x2B),
        screen,
        rtx_events(screen, 0x3B, every=4),
        probe_events(camera, 0x2B, start_ms=300, bursts=3),
    )
    assert kinds(q) == {1: "audio", 2: "video", 0x2B: "video", 3: "screen", 0x3B: "video"}
    assert {x.ssrc for x in q.streams() if x.repair} == {0x2B, 0x3B}


def test_a_second_video_too_young_to_tell_is_not_screen_yet(q: Q) -> None:
    camera = video_events(2, 2.0)
    screen = video_events(3, 0.6, fps=5, ts0=0x5000_0000, start_ms=1400)  # 3 frames, 0.4 s
    play(q, camera, screen)
    assert kinds(q) == {2: "video", 3: "video"}


def test_same_timeline_rule() -> None:
    def st(ts: int, ns: int) -> quality.Stream:
        return quality.Stream(
            "to_peer", 1, "video", 90000, 1, 1, 0, 0, 0, 0.0, 0.0, 96, 0, 0, last_ts=ts, last_ns=ns
        )

    a = st(1_000_000, 10 * 10**9)
    assert quality.same_timeline(a, st(1_000_000 - 90000, 9 * 10**9))  # 1 s earlier, in step
    assert quality.same_timeline(a, st(1_000_000 - 4 * 90000, 10 * 10**9))  # 4 s old
    assert not quality.same_timeline(a, st(1_000_000 - 6 * 90000, 10 * 10**9))  # 6 s old
    assert not quality.same_timeline(a, st(0x8000_0000, 10 * 10**9))  # an independent base
    assert quality.same_timeline(st(5, 10 * 10**9), st(0xFFFF_FFF0, 10 * 10**9))  # wraps


def test_rtcp_is_recognised_not_sequenced(q: Q) -> None:
    send_audio(q, list(range(10)), ssrc=0x1234)
    for _ in range(3):
        q.to_peer(rtcp_sr(0x1234) + rtcp_rr(0x1234)[4:])  # a compound SR + RR-ish tail
    q.to_client(rtcp_rr(0x777))
    s = q.stream(0x1234)
    assert s.packets == 10 and s.rtcp_packets == 3 and s.lost == 0
    table = quality.flow_table(q.engine)
    row = table[np.nonzero((table[:, 0] & 0xFFFFFFFF) == 0x1234)[0][0]]
    assert row[quality.FIELDS["rtcp_types"]] == 1 << (200 - 192)
    rr = q.stream(0x777)
    assert rr.direction == "to_client" and rr.packets == 0 and rr.kind == "unknown"
    assert q.counter("rtcp_packets") == 4
    # RTCP-only SSRCs stay out of summaries
    summary = quality.summarise(q.engine, q.slot)
    assert [st["ssrc"] for st in summary["streams"]] == [0x1234]


def test_non_rtp_is_counted_never_parsed(q: Q) -> None:
    junk = [
        b"",
        b"\x80",
        b"\x80\x6f\x00\x01\x00\x00\x00",
        b"\x00\x01\x00\x00" + b"\x21\x12\xa4\x42" * 4,
        b"\x16\xfe\xfd" + b"\x00" * 40,
        b"\x40" * 20,
        b"\x8f\x6f" + b"\x00" * 20,
    ]  # CC=15, short
    for j in junk:
        q.to_peer(j)
    assert q.counter("non_rtp_packets") == len(junk)
    assert q.counter("rtp_packets") == 0 and q.streams() == []
    slot_row = np.frombuffer(q.engine.slot_counters, dtype=np.int64).reshape(q.engine.capacity, -1)
    assert slot_row[q.slot][_fastpath.SLOT_COUNTER_NAMES.index("non_rtp_packets")] == len(junk)


def test_ssrc_overflow_is_counted(q: Q) -> None:
    for ssrc in range(1, 12):
        q.to_peer(rtp(0, 0, ssrc))
    assert len(q.streams()) == _fastpath.FLOWS_PER_SLOT_ // 2
    assert q.counter("ssrc_overflow") == 11 - _fastpath.FLOWS_PER_SLOT_ // 2
    q.to_client(rtp(0, 0, 99))  # the other direction has its own rows
    assert q.counter("ssrc_overflow") == 3


def test_quality_off_inspects_nothing() -> None:
    r = Q()
    try:
        r.engine.quality = False
        send_audio(r, list(range(20)))
        assert r.streams() == [] and r.counter("rtp_packets") == 0
        assert r.counter("client_packets") == 20  # still relayed
        r.engine.quality = True
        send_audio(r, list(range(20, 25)))
        assert r.stream(0x1234).packets == 5
    finally:
        r.close()


def test_slot_rows_cleared_when_reopened(q: Q) -> None:
    e = q.engine
    send_audio(q, list(range(5)))
    e.unbind_channel(q.slot, 0x4001, *q.peer_addr)
    e.remove_permission(q.slot, q.peer_addr[0])
    e.close_slot(q.slot)
    c = q.client.getsockname()
    assert e.open_slot(-1, q.idx, c[0], c[1]) == q.slot
    assert q.streams() == []


def test_send_indication_path_counts_to_peer(q: Q) -> None:
    for i in range(5):
        q.at(T0 + i * 20 * MS)
        assert q.engine.send_to_peer(q.slot, rtp(i, i * 960, 0x55), *q.peer_addr)
    s = q.stream(0x55)
    assert s.direction == "to_peer" and s.packets == 5


def test_summary_shape(q: Q) -> None:
    send_audio(q, [i for i in range(100) if i != 7])
    send_audio(q, list(range(100)), ssrc=0x99, direction="to_client")
    s = quality.summarise(q.engine, q.slot, rxq_overflow=3)
    assert set(s) == {"streams", "directions", "relay"}
    assert set(s["streams"][0]) == {
        "direction",
        "ssrc",
        "kind",
        "clock_rate",
        "packets",
        "bytes",
        "lost",
        "reordered",
        "duplicates",
        "jitter_ms",
        "max_gap_ms",
    }
    up, down = s["directions"]["to_peer"], s["directions"]["to_client"]
    assert up["lost"] == 1 and up["packets"] == 99 and down["lost"] == 0
    assert up["loss"] == pytest.approx(0.01)
    assert up["mos"] < down["mos"] <= 4.41
    assert s["relay"]["rxq_overflow"] == 3 and s["relay"]["dropped"] == 0
    assert quality.summaries(q.engine, [q.slot])[q.slot]["directions"] == s["directions"]


def test_flows_and_latency_are_views(q: Q) -> None:
    table = quality.flow_table(q.engine)
    lat = np.frombuffer(q.engine.latency, dtype=np.int64)
    send_audio(q, list(range(3)))
    assert table[:, quality.FIELDS["packets"]].sum() == 3  # seen without re-reading
    assert lat[_fastpath.LATENCY_BUCKETS + 1] == 3  # packets through the histogram


# -- real time, real SRTP -------------------------------------------------------------------

pylibsrtp = pytest.importorskip("pylibsrtp")


def srtp_session() -> pylibsrtp.Session:
    policy = pylibsrtp.Policy(key=os.urandom(30), ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
    return pylibsrtp.Session(policy=policy)


def test_srtp_through_the_engine_in_real_time() -> None:
    """SRTP (pylibsrtp) packets both ways, real clock: 20 ms pacing with injected loss,
    reordering, a duplicate and 0-8 ms of extra delay on every other packet."""
    r = Rig()
    try:
        e = r.engine
        e.add_permission(r.slot, r.peer_addr[0])
        e.bind_channel(r.slot, 0x4001, *r.peer_addr)
        up, down = srtp_session(), srtp_session()
        order = [i for i in range(60) if i not in (20, 33)]  # 2 lost
        order[5], order[6] = order[6], order[5]  # 1 reordered
        order.insert(40, order[39])  # 1 duplicate
        start = time.monotonic()
        sent_up = []
        for k, i in enumerate(order):
            due = start + i * 0.02 + (0.008 if i % 2 else 0.0)
            time.sleep(max(0.0, due - time.monotonic()))
            pkt = (
                up.protect(rtp(i, i * 960, 0xA1, payload=os.urandom(120)))
                if k != 40
                else sent_up[-1]
            )
            sent_up.append(pkt)
            r.client.sendto(
                channel_data(0x4001, pkt) + b"\0" * (-len(pkt) % 4), r.listener.getsockname()
            )
            e.drain_listener(r.idx)
            if k != 40:  # the duplicate goes one way only
                back = down.protect(rtp(i, i * 960, 0xB2, payload=os.urandom(120)))
                r.peer.sendto(back, r.relay.getsockname())
                e.drain_relay(r.slot)
            if i % 25 == 0:
                srtcp = up.protect_rtcp(rtcp_sr(0xA1))
                r.client.sendto(
                    channel_data(0x4001, srtcp) + b"\0" * (-len(srtcp) % 4),
                    r.listener.getsockname(),
                )
                e.drain_listener(r.idx)
        s = {x.ssrc: x for x in quality.streams(quality.flow_table(e), r.slot)}
        a, b = s[0xA1], s[0xB2]
        assert (a.packets, a.lost, a.reordered, a.duplicates) == (59, 2, 1, 1)
        assert (b.packets, b.lost, b.reordered, b.duplicates) == (58, 2, 1, 0)
        assert a.kind == b.kind == "audio" and a.clock_rate == 48000
        assert a.rtcp_packets == 3 and a.direction == "to_peer" and b.direction == "to_client"
        # |D| ~ 8 ms on most packets; a loaded CI box adds scheduler noise, so a band
        assert 3.0 < a.jitter_ms < 14.0
        assert a.max_gap_ms >= 35.0  # a packet missing: about 2 ptimes between neighbours
        lat = list(e.latency)
        assert lat[_fastpath.LATENCY_BUCKETS + 1] > 0
        assert quality.latency_quantile(lat, 0.99) < 1e6  # < 1 s from receive to send
    finally:
        r.close()


def test_rxq_overflow_counted_from_the_kernel() -> None:
    r = Rig()
    try:
        e = r.engine
        e.add_permission(r.slot, r.peer_addr[0])
        r.relay.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        for i in range(400):  # far beyond a 4 KiB (doubled) receive buffer
            r.peer.sendto(rtp(i, i, 5, payload=b"x" * 400), r.relay.getsockname())
        got = 0
        for _ in range(50):
            n = e.drain_relay(r.slot)
            got += n
            if n == 0:
                break
        assert got < 400
        # the kernel attaches the socket's drop count to datagrams queued after the drops
        r.peer.sendto(rtp(400, 400, 5), r.relay.getsockname())
        time.sleep(0.05)
        assert e.drain_relay(r.slot) == 1
        assert int(e.counters[NAMES.index("rxq_overflow")]) == 400 - got
    finally:
        r.close()


# -- fuzz ----------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    packets=st.lists(
        st.one_of(
            st.binary(min_size=0, max_size=64),
            st.builds(
                lambda b1, rest: bytes([0x80 | (rest[0] & 0x3F) if rest else 0x80, b1]) + rest,
                st.integers(0, 255),
                st.binary(min_size=0, max_size=40),
            ),
            st.builds(
                rtp,
                st.integers(0, 0xFFFF),
                st.integers(0, 2**32 - 1),
                st.integers(0, 2**32 - 1),
                st.integers(0, 127),
                st.booleans(),
                st.binary(max_size=10),
            ),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_fuzz_inspection_never_crashes_and_accounts_everything(packets: list[bytes]) -> None:
    r = Q()
    try:
        for i, p in enumerate(packets):
            r.at(T0 + i * 7 * MS)
            r.to_peer(p)
        seen = sum(
            r.counter(n)
            for n in ("rtp_packets", "rtcp_packets", "non_rtp_packets", "ssrc_overflow")
        )
        assert seen == len(packets) == r.counter("client_packets")
        for s in r.streams():
            assert s.lost >= 0 and s.packets >= s.duplicates
    finally:
        r.close()
