"""Call quality end to end: what a real relay reports about SRTP media matches what was sent.

A real control plane and our relay node (``--control``, 0.5 s summaries, ``--metrics``) run on
loopback. The tests carry media through a TURN allocation made with the visitor's credentials
of a click, end the allocation, and read the relay's final summary back from the tenant's call
log (and the per-call histograms from the relay's ``/metrics``):

- SRTP made with pylibsrtp, in real time: Opus-like audio (PT 111, 48 kHz, 20 ms), camera video
  (PT 96, 90 kHz, 30 fps, marker on each frame's last packet), RFC 4588 retransmissions of the
  camera's lost packets (PT 97, own SSRC, the originals' timestamps), a screen share (PT 96, own
  SSRC and timestamp base, 5 fps) and, from the peer, audio back; with injected loss (sequence
  numbers never sent), reordering (pairs sent swapped), a duplicate and send-time jitter. Loss,
  reordering and duplicates must match exactly and the kinds be audio, video, video (RTX: not a
  screen) and screen. Jitter is RFC 3550 A.8 over the arrival times: the test computes it the
  same way over its own send times, so what separates the two is only loopback delivery and
  the relay's wake-ups (a tolerance of 1.5 ms + 25 %), and checks that the injected jitter is
  what the figure shows (U(0, a) delays give about a / 3).
- A real aiortc call, relay-only, both peers on the relay: audio and video both ways, reported
  as ``audio`` and ``video`` (no ``screen``: aiortc's RTX must not look like one), about no loss.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import struct
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.controlproc import ControlProcess, Tenant, free_port
from tests.relayproc import RelayProcess, RelaySpec, StunClient, scrape
from tests.test_agent import click_when_registered, turn_credentials, wait_for

pylibsrtp = pytest.importorskip("pylibsrtp")

# jitter of arrival times within 1.5 ms + 25 % of the sender's, and no loss: alone
pytestmark = [pytest.mark.slow, pytest.mark.serial, pytest.mark.timeout(150)]

NODE_ID = "quality-live"
CHANNEL = 0x4001
CLOCK_WINDOW_NS = 400_000_000  # ext/_rtp.pyx: the clock rate is known after 0.4 s


# --------------------------------------------------------------------------- the stack


@dataclass
class Stack:
    control: ControlProcess
    relay: RelayProcess
    tenant: Tenant
    metrics_port: int


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("quality-live")
    control = ControlProcess(port=free_port(), extra_args=["--heartbeat-timeout", "3"]).start()
    try:
        mport = free_port()
        args = [
            "--control",
            control.url,
            "--node-id",
            NODE_ID,
            "--region",
            "eu",
            "--node-secret",
            control.node_secret,
            "--heartbeat-interval",
            "0.5",
            "--summary-interval",
            "0.5",
            "--spool",
            str(work / "spool"),
            "--metrics",
            f"127.0.0.1:{mport}",
        ]
        spec = RelaySpec(secret=control.relay_secret, extra_args=args)
        relay = RelayProcess(spec, work / "relay", impl="ours").start()
        try:
            yield Stack(control, relay, control.bootstrap(), mport)
        finally:
            relay.stop()
    finally:
        control.stop()


def final_allocations(stack: Stack, call_id: str, least: int = 1) -> list[dict[str, Any]]:
    """The call's allocations once there are at least ``least`` and all have ended (their
    final summary arrived)."""

    def check() -> list[dict[str, Any]] | None:
        r = httpx.get(
            f"{stack.control.url}/v1/calllogs/{call_id}", headers=stack.tenant.th, timeout=5
        )
        assert r.status_code == 200, r.text
        allocs: list[dict[str, Any]] = r.json()["allocations"]
        return allocs if len(allocs) >= least and all(a["final"] for a in allocs) else None

    found: list[dict[str, Any]] = wait_for(check, 20, f"{least} final summaries")
    return found


# --------------------------------------------------------------------------- media plans


def rtp(
    seq: int, ts: int, ssrc: int, pt: int, *, marker: bool = False, payload: bytes = b""
) -> bytes:
    return (
        struct.pack(
            "!BBHII", 0x80, (0x80 if marker else 0) | pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc
        )
        + payload
    )


def sender_report(ssrc: int) -> bytes:
    return struct.pack("!BBHIIIIII", 0x80, 200, 6, ssrc, 0, 0, 0, 0, 0)


@dataclass
class Stream:
    """One SSRC's plan: packets (seq, timestamp, clear RTP) and what was done to them."""

    name: str
    ssrc: int
    clock: int
    kind: str
    packets: list[tuple[int, int, bytes]] = field(default_factory=list)
    skipped: set[int] = field(default_factory=set)
    swapped: list[int] = field(default_factory=list)  # i: seqs i and i + 1 go out swapped
    duplicated: set[int] = field(default_factory=set)
    sent: list[tuple[int, int, int]] = field(default_factory=list)  # (seq, ts, send ns)

    @property
    def expect(self) -> tuple[int, int, int, int]:
        """(packets, lost, reordered, duplicates) the relay should report."""
        n = len(self.packets) - len(self.skipped) + len(self.duplicated)
        return n, len(self.skipped), len(self.swapped), len(self.duplicated)


@dataclass(order=True)
class Event:
    at: float  # seconds from the start
    order: int
    stream: Stream = field(compare=False)
    seq: int = field(compare=False)
    ts: int = field(compare=False)
    wire: bytes = field(compare=False)
    to_peer: bool = field(compare=False)


def audio_stream(
    name: str,
    ssrc: int,
    seconds: float,
    *,
    skip: Iterable[int],
    swap: Iterable[int],
    dup: Iterable[int] = (),
) -> Stream:
    s = Stream(
        name, ssrc, 48000, "audio", skipped=set(skip), swapped=list(swap), duplicated=set(dup)
    )
    base = random.getrandbits(32)
    for i in range(int(seconds * 50)):
        s.packets.append(
            (
                i,
                base + 960 * i,
                rtp(i, base + 960 * i, ssrc, 111, marker=i == 0, payload=os.urandom(100)),
            )
        )
    return s


def video_stream(
    name: str,
    ssrc: int,
    seconds: float,
    *,
    fps: float,
    per_frame: int,
    start: float = 0.0,
    skip: Iterable[int] = (),
    swap: Iterable[int] = (),
) -> tuple[Stream, list[float]]:
    """The stream, and each packet's nominal send time (a frame's packets back to back)."""
    s = Stream(name, ssrc, 90000, "video", skipped=set(skip), swapped=list(swap))
    base = random.getrandbits(32)
    times: list[float] = []
    seq = 0
    for f in range(int(seconds * fps)):
        ts = (base + round(f * 90000 / fps)) & 0xFFFFFFFF
        n = per_frame * (3 if f % 30 == 0 else 1)  # a bigger keyframe now and then
        for k in range(n):
            s.packets.append(
                (seq, ts, rtp(seq, ts, ssrc, 96, marker=k == n - 1, payload=os.urandom(900)))
            )
            times.append(start + f / fps + 0.0002 * k)
            seq += 1
    return s, times


def schedule(
    stream: Stream,
    nominal: list[float],
    jitter_s: float,
    rng: random.Random,
    srtp: Any,
    *,
    to_peer: bool,
    group: list[int] | None = None,
) -> list[Event]:
    """Events of ``stream``: each packet at its nominal time plus U(0, jitter_s) (one draw per
    ``group`` of packets, e.g. a video frame), never before the previous one (the sender
    itself keeps its order; reordering is only what ``swapped`` asks)."""
    protected = {seq: srtp.protect(clear) for seq, _, clear in stream.packets}
    ts_of = {seq: ts for seq, ts, _ in stream.packets}
    order = [seq for seq, _, _ in stream.packets if seq not in stream.skipped]
    for i in stream.swapped:
        a, b = order.index(i), order.index(i + 1)
        assert b == a + 1, "swap pairs must be sent neighbours"
        order[a], order[b] = order[b], order[a]
    groups = group or list(range(len(stream.packets)))
    delay: dict[int, float] = {}
    out: list[Event] = []
    last = 0.0
    for pos, seq in enumerate(order):
        g = groups[seq]
        if g not in delay:
            delay[g] = rng.uniform(0, jitter_s)
        # a swapped packet goes at its partner's time, right behind it
        at = max(last, nominal[seq] + delay[g])
        last = at
        out.append(Event(at, pos, stream, seq, ts_of[seq], protected[seq], to_peer))
        if seq in stream.duplicated:
            out.append(Event(at + 0.001, pos, stream, seq, ts_of[seq], protected[seq], to_peer))
    return out


def reference_jitter_ms(stream: Stream) -> float:
    """RFC 3550 A.8 over the send times, as ext/_rtp.pyx computes it over arrivals: in
    integer timestamp units (J * 16), from the packet after the one that made the clock rate
    known (0.4 s after the first), duplicates left out, late packets included."""
    seen: set[int] = set()
    j16 = 0
    first_ns = last_ns = last_ts = 0
    known = False
    for seq, ts, ns in stream.sent:
        if not seen:
            first_ns, last_ns, last_ts = ns, ns, ts
            seen.add(seq)
            continue
        if seq in seen:
            continue
        seen.add(seq)
        gap = ns - last_ns
        if not known:
            known = ns - first_ns >= CLOCK_WINDOW_NS
        else:
            dts = (ts - last_ts + 0x80000000) % 0x100000000 - 0x80000000
            diff = abs(gap * stream.clock // 1_000_000_000 - dts)
            j16 += diff - ((j16 + 8) >> 4)
        last_ts, last_ns = ts, ns
    return j16 / 16 / stream.clock * 1000


class Sink:
    """Reads a socket until closed, counting datagrams (so no buffer fills up)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                self.sock.recv(65535)
                self.count += 1
            except TimeoutError:
                continue
            except OSError:
                return

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


def play(
    events: list[Event], client: StunClient, peer: socket.socket, relayed: tuple[str, int]
) -> None:
    """Send every event at its time (client -> peer as ChannelData, peer -> client to the
    relayed address), noting each packet's real send time for the reference jitter."""
    start = time.monotonic() + 0.05
    for ev in sorted(events):
        left = start + ev.at - time.monotonic()
        if left > 0:
            time.sleep(left)
        if ev.to_peer:
            data = struct.pack("!HH", CHANNEL, len(ev.wire)) + ev.wire
            client.sock.send(data + b"\0" * (-len(data) % 4))
        else:
            peer.sendto(ev.wire, relayed)
        ev.stream.sent.append((ev.seq, ev.ts, time.monotonic_ns()))


# --------------------------------------------------------------------------- SRTP


def test_srtp_loss_reordering_jitter_and_kinds_match_what_was_sent(stack: Stack) -> None:
    rng = random.Random(4)
    seconds = 6.0
    up = pylibsrtp.Session(
        policy=pylibsrtp.Policy(key=os.urandom(30), ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
    )
    down = pylibsrtp.Session(
        policy=pylibsrtp.Policy(key=os.urandom(30), ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
    )

    # client -> peer: audio with 7 lost, 3 swapped pairs and a duplicate, 0-12 ms jitter
    audio = audio_stream(
        "audio",
        0xA0D10,
        seconds,
        skip={40, 41, 97, 150, 151, 152, 260},
        swap=[60, 120, 200],
        dup={230},
    )
    # camera video, 30 fps, 2 packets a frame: 5 lost, 2 swapped pairs, 0-20 ms per frame
    camera, cam_times = video_stream(
        "camera",
        0xC0FFEE,
        seconds,
        fps=30,
        per_frame=2,
        skip={33, 34, 180, 181, 300},
        swap=[100, 250],
    )
    frames = [0] * len(camera.packets)
    for i in range(1, len(frames)):  # a frame: packets sharing a timestamp
        same = camera.packets[i][1] == camera.packets[i - 1][1]
        frames[i] = frames[i - 1] if same else frames[i - 1] + 1
    # RFC 4588 retransmissions of the camera's lost packets 40 ms after each, on their own
    # SSRC and payload type: the payload begins with the original sequence number
    rtx = Stream("rtx", 0xC0FFEF, 90000, "video")
    rtx_times = []
    for n, seq in enumerate(sorted(camera.skipped)):
        _, ts, clear = camera.packets[seq]
        rtx.packets.append(
            (
                n,
                ts,
                rtp(
                    n,
                    ts,
                    rtx.ssrc,
                    97,
                    marker=bool(clear[1] & 0x80),
                    payload=struct.pack("!H", seq) + clear[12:],
                ),
            )
        )
        rtx_times.append(cam_times[seq] + 0.04)
    # a screen share from 1 s on, 5 fps, 4 packets a frame, its own timestamp base
    screen, screen_times = video_stream(
        "screen", 0x5C8EE2, seconds - 1.5, fps=5, per_frame=4, start=1.0
    )
    # peer -> client: audio with 3 lost, 2 swapped pairs, 0-20 ms jitter
    back = audio_stream("back", 0xB0CC, seconds, skip={10, 11, 222}, swap=[50, 170])

    events = schedule(
        audio, [i * 0.02 for i in range(len(audio.packets))], 0.012, rng, up, to_peer=True
    )
    events += schedule(camera, cam_times, 0.020, rng, up, to_peer=True, group=frames)
    events += schedule(rtx, rtx_times, 0.0, rng, up, to_peer=True)
    events += schedule(
        screen,
        screen_times,
        0.005,
        rng,
        up,
        to_peer=True,
        group=[i // 4 for i in range(len(screen.packets))],
    )
    events += schedule(
        back, [i * 0.02 for i in range(len(back.packets))], 0.020, rng, down, to_peer=False
    )
    reports = Stream("srtcp", audio.ssrc, 48000, "audio")
    for k in range(3):  # SRTCP sender reports: RTCP, counted apart, not sequenced
        wire = up.protect_rtcp(sender_report(audio.ssrc))
        events.append(Event(1.0 + 2 * k, -1, reports, k, 0, wire, True))

    answer = click_when_registered(stack.control, stack.tenant)
    username, password, _ = turn_credentials(answer)
    before = scrape(stack.metrics_port)
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    client = StunClient(stack.relay.address, username, password)
    sinks: list[Sink] = []
    try:
        relayed = client.allocate()
        client.channel_bind(CHANNEL, *peer.getsockname())
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sinks = [Sink(peer), Sink(client.sock)]
        play(events, client, peer, relayed)
        time.sleep(0.3)
        for s in sinks:
            s.close()
        client.sock.settimeout(1.0)
        client.refresh(0)
    finally:
        for s in sinks:
            s.close()
        client.close()
        peer.close()
    relayed_up = sum(1 for e in events if e.to_peer)
    assert sinks[0].count == relayed_up  # the relay forwarded every packet

    [alloc] = final_allocations(stack, answer["call_id"])
    got = {(s["direction"], s["ssrc"]): s for s in alloc["streams"]}
    assert len(got) == 5, got
    report: dict[str, tuple[float, float]] = {}
    for stream, direction in (
        (audio, "to_peer"),
        (camera, "to_peer"),
        (rtx, "to_peer"),
        (screen, "to_peer"),
        (back, "to_client"),
    ):
        s = got[(direction, stream.ssrc)]
        packets, lost, reordered, duplicates = stream.expect
        assert (s["packets"], s["lost"], s["reordered"], s["duplicates"]) == (
            packets,
            lost,
            reordered,
            duplicates,
        ), (stream.name, s)
        want_kind = {"rtx": "video", "screen": "screen"}.get(stream.name, stream.kind)
        assert s["kind"] == want_kind, (stream.name, s)
        if stream.name != "rtx":  # RTX timestamps are old on purpose: no jitter to compare
            assert s["clock_rate"] == stream.clock
            ref = reference_jitter_ms(stream)
            report[stream.name] = (s["jitter_ms"], ref)
            assert abs(s["jitter_ms"] - ref) <= 1.5 + 0.25 * ref, (stream.name, s["jitter_ms"], ref)
    # the injected jitter is what the figures show: U(0, a) per packet gives E|D| = a / 3
    # (12 ms -> 4 ms, 20 ms -> 6.7 ms); the scheduler's own lateness can only add to it
    assert 2.0 <= report["audio"][1] <= 4.0 * 2 + 2, report
    assert 3.3 <= report["back"][1] <= 6.7 * 2 + 2, report
    assert report["screen"][0] < report["audio"][0], report  # 0-5 ms per frame: the least

    up_fig, down_fig = alloc["to_peer"], alloc["to_client"]
    assert up_fig["lost"] == len(audio.skipped) + len(camera.skipped)
    assert up_fig["jitter_ms"] == got[("to_peer", audio.ssrc)]["jitter_ms"]  # from the audio
    assert down_fig["lost"] == len(back.skipped)
    assert 1.0 <= up_fig["mos"] < down_fig["mos"] <= 4.5  # 2.3 % loss vs 1 % loss

    # the relay's per-call histograms took this allocation's final figures
    after = wait_for(
        lambda: (
            (m := scrape(stack.metrics_port)).get(
                'clickacall_relay_call_loss_ratio_count{direction="to_peer"}', 0
            )
            > before.get('clickacall_relay_call_loss_ratio_count{direction="to_peer"}', 0)
            and m
        ),
        10,
        "the per-call histograms",
    )

    def delta(name: str, direction: str) -> float:
        key = f'clickacall_relay_call_{name}{{direction="{direction}"}}'
        return float(after[key] - before.get(key, 0.0))

    audio_expected = len(audio.packets)  # the loss basis is the audio stream
    assert delta("loss_ratio_count", "to_peer") == 1
    assert delta("loss_ratio_sum", "to_peer") == pytest.approx(
        len(audio.skipped) / audio_expected, abs=1e-5
    )
    assert delta("loss_ratio_sum", "to_client") == pytest.approx(
        len(back.skipped) / len(back.packets), abs=1e-5
    )
    assert delta("jitter_seconds_sum", "to_peer") == pytest.approx(
        up_fig["jitter_ms"] / 1000, abs=2e-6
    )


# --------------------------------------------------------------------------- aiortc


async def test_aiortc_call_reports_audio_and_video_and_no_loss(stack: Stack) -> None:
    from aiortc import RTCConfiguration, RTCIceServer, RTCIceTransportPolicy, RTCPeerConnection
    from aiortc.mediastreams import MediaStreamTrack

    from tests.mediatracks import RealTimeAudio, RealTimeVideo
    from tests.test_clients import recv_frames, wait_connected

    answer = await asyncio.to_thread(click_when_registered, stack.control, stack.tenant)
    username, password, _ = turn_credentials(answer)
    host, port = stack.relay.address
    server = RTCIceServer(
        urls=f"turn:{host}:{port}?transport=udp", username=username, credential=password
    )
    config = RTCConfiguration(iceServers=[server], iceTransportPolicy=RTCIceTransportPolicy.RELAY)
    caller, callee = RTCPeerConnection(config), RTCPeerConnection(config)
    loop = asyncio.get_running_loop()
    tracks: dict[str, list[asyncio.Future[MediaStreamTrack]]] = {"caller": [], "callee": []}
    for name, pc in (("caller", caller), ("callee", callee)):
        futures = {"audio": loop.create_future(), "video": loop.create_future()}
        tracks[name] = list(futures.values())

        def on_track(track: MediaStreamTrack, futures=futures) -> None:  # type: ignore[no-untyped-def]
            if not futures[track.kind].done():
                futures[track.kind].set_result(track)

        pc.on("track", on_track)
        pc.addTrack(RealTimeAudio())
        pc.addTrack(RealTimeVideo())
    try:
        async with asyncio.timeout(60):
            await caller.setLocalDescription(await caller.createOffer())
            await callee.setRemoteDescription(caller.localDescription)
            await callee.setLocalDescription(await callee.createAnswer())
            await caller.setRemoteDescription(callee.localDescription)
            await wait_connected(caller, 20)
            await wait_connected(callee, 20)
            for pending in tracks.values():
                for fut in pending:
                    await recv_frames(await fut, 3)
            # a few seconds of call: the clock rates need 0.4 s, the screen rule 1 s
            t0 = time.monotonic()
            while time.monotonic() - t0 < 4.0:
                for pending in tracks.values():
                    for fut in pending:
                        await recv_frames(fut.result(), 1)
    finally:
        await asyncio.wait_for(asyncio.gather(caller.close(), callee.close()), 10)

    allocs = await asyncio.to_thread(final_allocations, stack, answer["call_id"], 2)
    media: dict[str, set[str]] = {"to_peer": set(), "to_client": set()}
    for a in allocs:
        for s in a["streams"]:
            media[s["direction"]].add(s["kind"])
    # each peer sends audio and video through its own allocation (to_peer) and receives the
    # other's through it (to_client)
    assert {"audio", "video"} <= media["to_peer"], allocs
    assert {"audio", "video"} <= media["to_client"], allocs
    assert "screen" not in media["to_peer"] | media["to_client"], allocs
    for a in allocs:
        for s in a["streams"]:
            if s["kind"] == "audio":
                assert s["clock_rate"] == 48000, s
            if s["kind"] in ("audio", "video") and s["packets"] >= 50:
                assert s["lost"] <= max(1, s["packets"] // 100), s  # loopback: ~no loss
                assert s["duplicates"] == 0, s
    audio_packets = sum(
        s["packets"]
        for a in allocs
        for s in a["streams"]
        if s["kind"] == "audio" and s["direction"] == "to_peer"
    )
    assert audio_packets >= 2 * 150  # two peers, > 3 s of 20 ms audio each
