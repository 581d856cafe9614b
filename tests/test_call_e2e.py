"""A whole call through the real platform: two aiortc peers (the visitor and a staff member) get
their tokens and ICE servers from a real control plane, signal over its WebSocket, and carry
audio and video relay-only through a real relay node that registered itself with the control
plane. Hanging up revokes both tokens and the relay tears down both allocations.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCIceTransportPolicy,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import AudioStreamTrack, MediaStreamTrack, VideoStreamTrack

from tests.controlproc import ControlProcess, bearer
from tests.relayproc import RelayProcess, RelaySpec
from tests.test_clients import recv_frames, sdp_candidates, wait_connected
from tests.test_signalling import close_code, recv_type, signal

pytestmark = [pytest.mark.slow]


@pytest.fixture
def control() -> Iterator[ControlProcess]:
    with ControlProcess(extra_args=["--heartbeat-timeout", "3"]) as c:
        yield c


@pytest.fixture
def node(
    control: ControlProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[RelayProcess]:
    monkeypatch.setenv("CLICKACALL_NODE_SECRET", control.node_secret)
    spec = RelaySpec(
        secret=control.relay_secret,
        extra_args=(
            "--control",
            control.url,
            "--node-id",
            "e2e-1",
            "--region",
            "eu",
            "--heartbeat-interval",
            "0.5",
        ),
    )
    relay = RelayProcess(spec, tmp_path / "relay", impl="ours").start()
    try:
        yield relay
    finally:
        relay.stop()


def wait_registered(control: ControlProcess, node_id: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = httpx.get(f"{control.url}/v1/nodes", headers=control.oh, timeout=5)
        if any(n["id"] == node_id and n["healthy"] for n in r.json()):
            return
        time.sleep(0.1)
    pytest.fail(f"relay node {node_id} did not register in {timeout} s")


def peer(ice_servers: list[dict[str, Any]]) -> RTCPeerConnection:
    servers = [
        RTCIceServer(urls=s["urls"], username=s.get("username"), credential=s.get("credential"))
        for s in ice_servers
    ]
    return RTCPeerConnection(
        RTCConfiguration(iceServers=servers, iceTransportPolicy=RTCIceTransportPolicy.RELAY)
    )


def media(pc: RTCPeerConnection) -> dict[str, asyncio.Future[MediaStreamTrack]]:
    loop = asyncio.get_running_loop()
    futures = {"audio": loop.create_future(), "video": loop.create_future()}

    @pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        if not futures[track.kind].done():
            futures[track.kind].set_result(track)

    pc.addTrack(AudioStreamTrack())
    pc.addTrack(VideoStreamTrack())
    return futures


async def live_allocations(control: ControlProcess, node_id: str) -> int:
    async with httpx.AsyncClient(timeout=5) as c:
        r = await c.get(f"{control.url}/v1/nodes", headers=control.oh)
    return int(next(n["allocations"] for n in r.json() if n["id"] == node_id))


@pytest.mark.timeout(120)
async def test_a_call_through_the_control_plane_and_a_relay(
    control: ControlProcess, node: RelayProcess
) -> None:
    await asyncio.to_thread(wait_registered, control, "e2e-1")
    t = await asyncio.to_thread(control.bootstrap)
    visitor_pc = staff_pc = None
    async with httpx.AsyncClient(base_url=control.url, timeout=10) as api:
        try:
            async with asyncio.timeout(60):
                console = await signal(control.ws_url, "/v1/staff/events", t.staff_token)
                await recv_type(console, "ringing")

                # the visitor clicks: a ringing call, a token, ICE servers on our relay
                r = await api.post(f"/v1/links/{t.link['public_id']}/calls")
                assert r.status_code == 201, r.text
                click = r.json()
                urls = [u for s in click["iceServers"] for u in s["urls"]]
                assert f"turn:127.0.0.1:{node.port}?transport=udp" in urls, urls
                visitor_pc = peer(click["iceServers"])
                visitor_media = media(visitor_pc)
                visitor = await signal(control.ws_url, click["signal"], click["token"])
                await recv_type(visitor, "ready")
                await visitor_pc.setLocalDescription(await visitor_pc.createOffer())
                offer = visitor_pc.localDescription
                await visitor.send(json.dumps({"type": "offer", "sdp": offer.sdp}))

                # the staff console rings; the staff member answers and signals
                ring = await recv_type(console, "ring")
                assert ring["call"]["id"] == click["call_id"]
                r = await api.post(f"/v1/calls/{click['call_id']}/answer", headers=t.sh)
                assert r.status_code == 200, r.text
                answered = r.json()
                staff_pc = peer(answered["iceServers"])
                staff_media = media(staff_pc)
                staff = await signal(control.ws_url, answered["signal"], answered["token"])
                await recv_type(staff, "ready")
                got = await recv_type(staff, "offer")
                await staff_pc.setRemoteDescription(RTCSessionDescription(got["sdp"], "offer"))
                await staff_pc.setLocalDescription(await staff_pc.createAnswer())
                await staff.send(
                    json.dumps({"type": "answer", "sdp": staff_pc.localDescription.sdp})
                )
                assert (await recv_type(visitor, "call"))["status"] == "answered"
                got = await recv_type(visitor, "answer")
                await visitor_pc.setRemoteDescription(RTCSessionDescription(got["sdp"], "answer"))

                # relay candidates only, all on this node's relayed ports
                for sdp in (offer.sdp, staff_pc.localDescription.sdp):
                    cands = sdp_candidates(sdp)
                    assert cands and all(typ == "relay" for *_, typ in cands), sdp
                    assert all(port in node.relay_ports for _, _, port, _ in cands), sdp
                await wait_connected(visitor_pc, 20)
                await wait_connected(staff_pc, 20)
                for futures in (visitor_media, staff_media):
                    for kind in ("audio", "video"):
                        frames = await recv_frames(await futures[kind], 5)
                        assert len(frames) == 5
                        if kind == "video":
                            assert all((f.width, f.height) == (640, 480) for f in frames)
                # the node reports its load in heartbeats: wait for one that counts both
                deadline = time.monotonic() + 10
                while await live_allocations(control, "e2e-1") < 2:
                    assert time.monotonic() < deadline, "the node never reported both allocations"
                    await asyncio.sleep(0.25)

                # the staff member hangs up: both sockets close, both tokens are revoked,
                # and the relay tears down both allocations within a few heartbeats
                r = await api.post(
                    f"/v1/calls/{click['call_id']}/hangup", headers=bearer(answered["token"])
                )
                assert r.json()["status"] == "ended", r.text
                for ws in (visitor, staff):
                    code, seen = await close_code(ws)
                    assert code == 1000 and seen[-1]["status"] == "ended"
                deadline = time.monotonic() + 15
                while await live_allocations(control, "e2e-1") > 0:
                    assert time.monotonic() < deadline, "allocations outlived the call"
                    await asyncio.sleep(0.25)
                r = await api.get(f"/v1/calls/{click['call_id']}", headers=t.th)
                call = r.json()
                assert call["status"] == "ended" and call["answered_by"] == t.staff_id
                assert call["relay_node"] == "e2e-1" and call["relay_region"] == "eu"
                await console.close()
        finally:
            for pc in (visitor_pc, staff_pc):
                if pc is not None:
                    await asyncio.wait_for(pc.close(), 10)
