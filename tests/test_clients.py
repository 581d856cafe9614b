"""Real TURN clients (aioice, aiortc) against a live relay on loopback, over UDP, TCP and TLS
(``turn:...?transport=tcp``, ``turns:...?transport=tcp``: the relayed side stays UDP).

Run against coturn to check the tests, against ours to check the relay:
``CLICKACALL_TEST_RELAY=coturn .venv/bin/python -m pytest -q tests/test_clients.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import socket
import ssl
import struct

import pytest
from aioice import turn
from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCIceTransportPolicy,
    RTCPeerConnection,
)
from aiortc.mediastreams import AudioStreamTrack, MediaStreamTrack, VideoStreamTrack

from tests.relayproc import RelayProcess, StunClient, TurnError

pytestmark = [pytest.mark.slow]

SIZES = [1, 2, 3, 4, 7, 20, 99, 100, 171, 500, 999, 1000, 1199, 1200]


class Queueing(asyncio.DatagramProtocol):
    """Puts every datagram and error it gets into queues."""

    def __init__(self) -> None:
        self.datagrams: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()
        self.errors: list[Exception] = []
        self.closed = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.datagrams.put_nowait((data, (addr[0], addr[1])))

    def error_received(self, exc: Exception) -> None:
        self.errors.append(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(exc)

    async def get(self, timeout: float = 3.0) -> tuple[bytes, tuple[str, int]]:
        return await asyncio.wait_for(self.datagrams.get(), timeout)

    async def nothing_for(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            data, addr = await asyncio.wait_for(self.datagrams.get(), seconds)
            raise AssertionError(f"unexpected datagram of {len(data)} bytes from {addr}")


def payload(tag: int, size: int) -> bytes:
    """Distinct, size-exact payloads (a header of tag and size, then a pattern)."""
    head = struct.pack("!HH", tag, size)
    body = bytes((tag * 31 + i) & 0xFF for i in range(size))
    return (head + body[4:])[:size] if size >= 4 else body


async def open_peer(host: str) -> tuple[asyncio.DatagramTransport, Queueing]:
    loop = asyncio.get_running_loop()
    return await loop.create_datagram_endpoint(Queueing, local_addr=(host, 0))


def sockname(transport: asyncio.BaseTransport) -> tuple[str, int]:
    name = transport.get_extra_info("sockname")
    return name[0], name[1]


async def exchange_through_turn(
    relay: RelayProcess,
    caplog: pytest.LogCaptureFixture,
    transport: str = "udp",
    tls: ssl.SSLContext | None = None,
) -> None:
    """Allocate with aioice, talk to a UDP peer both ways, check sources and bytes."""
    caplog.set_level(logging.INFO, logger="aioice.turn")
    username, password = relay.credentials("aioice")
    server = (relay.host, relay.tls_port) if tls is not None else relay.address
    turn_tr, client = await asyncio.wait_for(
        turn.create_turn_endpoint(
            Queueing, server, username, password, ssl=tls, transport=transport
        ),
        10,
    )
    peer_tr: asyncio.DatagramTransport | None = None
    try:
        relayed = sockname(turn_tr)
        mapped = turn_tr.get_extra_info("related_address")
        assert relayed[0] in relay.spec.relay_ips, relayed
        assert relayed[1] in relay.relay_ports, (relayed, relay.relay_ports)
        assert ipaddress.ip_address(mapped[0]) == ipaddress.ip_address(relay.host), mapped

        # The peer lives in the relayed address's family.
        peer_tr, peer = await open_peer(relayed[0])
        peer_addr = sockname(peer_tr)

        # First packet: aioice binds a channel (which installs the permission).
        first = payload(0, 50)
        turn_tr.sendto(first, peer_addr)
        data, src = await peer.get()
        assert (data, src) == (first, relayed)
        assert any("TURN channel bound" in r.getMessage() for r in caplog.records)

        # Client -> peer, every size, arriving intact from the relayed address.
        sent = [payload(i + 1, size) for i, size in enumerate(SIZES)]
        for pkt in sent:
            turn_tr.sendto(pkt, peer_addr)
        got = [await peer.get() for _ in sent]
        assert sorted(d for d, _ in got) == sorted(sent)
        assert {s for _, s in got} == {relayed}
        await peer.nothing_for(0.2)

        # Peer -> client through the relayed address (ChannelData on the way back).
        replies = [payload(100 + i, size) for i, size in enumerate(SIZES)]
        for pkt in replies:
            peer_tr.sendto(pkt, relayed)
        back = [await client.get() for _ in replies]
        assert sorted(d for d, _ in back) == sorted(replies)
        assert {a for _, a in back} == {peer_addr}
        assert not client.errors, client.errors
    finally:
        turn_tr.close()
        if peer_tr is not None:
            peer_tr.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(client.closed), 5)
    # aioice only logs whether the Refresh(lifetime=0) that deletes the allocation worked.
    messages = [r.getMessage() for r in caplog.records]
    assert any("TURN allocation deleted" in m for m in messages), messages


@pytest.mark.timeout(60)
async def test_aioice_relays_both_ways_ipv4(relay: RelayProcess, caplog: pytest.LogCaptureFixture):
    await exchange_through_turn(relay, caplog)


@pytest.mark.timeout(60)
async def test_aioice_relays_both_ways_ipv6(relay6: RelayProcess, caplog: pytest.LogCaptureFixture):
    # The client talks to the relay over ::1; aioice asks for no address family,
    # so the relayed address is whatever the relay gives by default (RFC 8656: IPv4).
    await exchange_through_turn(relay6, caplog)


@pytest.mark.timeout(60)
async def test_aioice_relays_both_ways_over_tcp(
    relay_streams: RelayProcess, caplog: pytest.LogCaptureFixture
):
    await exchange_through_turn(relay_streams, caplog, transport="tcp")


@pytest.mark.timeout(60)
async def test_aioice_relays_both_ways_over_tls(
    relay_streams: RelayProcess, caplog: pytest.LogCaptureFixture, tls_certificate: tuple[str, str]
):
    tls = ssl.create_default_context(cafile=tls_certificate[0])
    await exchange_through_turn(relay_streams, caplog, transport="tcp", tls=tls)


@pytest.mark.timeout(60)
async def test_aioice_over_tls_checks_the_certificate(relay_streams: RelayProcess):
    """aioice (like a browser) refuses a certificate it does not trust: TLS is real TLS."""
    username, password = relay_streams.credentials("untrusted")
    with pytest.raises(ssl.SSLCertVerificationError):
        await asyncio.wait_for(
            turn.create_turn_endpoint(
                Queueing,
                (relay_streams.host, relay_streams.tls_port),
                username,
                password,
                ssl=ssl.create_default_context(),
                transport="tcp",
            ),
            10,
        )


@pytest.mark.timeout(60)
async def test_aioice_permissions_are_per_ip(relay: RelayProcess):
    """A second port on a permitted IP gets through (as a Data indication); another IP doesn't."""
    username, password = relay.credentials("perm")
    turn_tr, client = await asyncio.wait_for(
        turn.create_turn_endpoint(Queueing, relay.address, username, password), 10
    )
    transports: list[asyncio.DatagramTransport] = []
    try:
        relayed = sockname(turn_tr)
        peer_tr, peer = await open_peer("127.0.0.1")
        other_port_tr, _ = await open_peer("127.0.0.1")
        stranger_tr, _ = await open_peer("127.0.0.2")
        transports += [peer_tr, other_port_tr, stranger_tr]

        turn_tr.sendto(b"hello", sockname(peer_tr))
        assert await peer.get() == (b"hello", relayed)

        stranger_tr.sendto(b"no permission for 127.0.0.2", relayed)
        await client.nothing_for(0.5)

        other_port_tr.sendto(b"same ip, other port", relayed)
        assert await client.get() == (b"same ip, other port", sockname(other_port_tr))
        peer_tr.sendto(b"bound peer", relayed)
        assert await client.get() == (b"bound peer", sockname(peer_tr))
    finally:
        turn_tr.close()
        for t in transports:
            t.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(client.closed), 5)


@pytest.mark.timeout(60)
def test_ipv6_relayed_address_send_and_data_indications(relay6: RelayProcess):
    """REQUESTED-ADDRESS-FAMILY=IPv6, Send/Data indications to a ::1 peer (stdlib client)."""
    with (
        socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as peer,
        StunClient(relay6.address, *relay6.credentials("v6")) as client,
    ):
        peer.bind(("::1", 0))
        peer.settimeout(3)
        peer_addr = peer.getsockname()[:2]
        relayed = client.allocate(family=0x02)
        assert relayed[0] == "::1", relayed
        assert relayed[1] in relay6.relay_ports

        client.create_permission(*peer_addr)
        for i, size in enumerate(SIZES):
            client.send_indication(*peer_addr, payload(i, size))
            data, src = peer.recvfrom(2048)
            assert (data, src[:2]) == (payload(i, size), relayed)
            peer.sendto(payload(200 + i, size), relayed)
            assert client.recv_data() == (peer_addr, payload(200 + i, size))

        # An IPv4 peer on an IPv6 allocation is a family mismatch (RFC 8656: 443).
        with pytest.raises(TurnError) as err:
            client.create_permission("127.0.0.1")
        assert err.value.response.error_code == 443
        client.refresh(0)


@pytest.mark.timeout(60)
def test_create_permission_ignores_port(relay: RelayProcess):
    """RFC 8656 10.1: CreatePermission's XOR-PEER-ADDRESS port is ignored, so port 0 is fine.

    The permission it installs lets any port of that IP reach the client.
    """
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer,
        StunClient(relay.address, *relay.credentials("port0")) as client,
    ):
        peer.bind(("127.0.0.1", 0))
        peer_addr = peer.getsockname()
        relayed = client.allocate()
        client.create_permission("127.0.0.1", 0)
        peer.sendto(b"via port-0 permission", relayed)
        assert client.recv_data() == (peer_addr, b"via port-0 permission")
        client.refresh(0)


# --------------------------------------------------------------------------
# aiortc: a relay-only call between two peer connections in this process.


CANDIDATE = re.compile(r"^a=candidate:\S+ \d+ (\S+) \d+ (\S+) (\d+) typ (\w+)", re.M)


def sdp_candidates(sdp: str) -> list[tuple[str, str, int, str]]:
    return [(t.lower(), h, int(p), typ) for t, h, p, typ in CANDIDATE.findall(sdp)]


async def wait_connected(pc: RTCPeerConnection, timeout: float) -> None:
    async def poll() -> None:
        while pc.connectionState != "connected":
            assert pc.connectionState not in ("failed", "closed"), pc.connectionState
            await asyncio.sleep(0.05)

    await asyncio.wait_for(poll(), timeout)


async def recv_frames(track: MediaStreamTrack, count: int) -> list[object]:
    return [await asyncio.wait_for(track.recv(), 10) for _ in range(count)]


@pytest.mark.timeout(60)
async def test_aiortc_relay_only_call(relay: RelayProcess):
    host, port = relay.address
    await relay_only_call(relay, f"turn:{host}:{port}?transport=udp")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("transport", ["tcp", "tls"])
async def test_aiortc_relay_only_call_over_tcp_and_tls(
    relay_streams: RelayProcess,
    tls_certificate: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
    transport: str,
):
    """Both parties reach the relay over TCP, or TLS (``turns:``, the certificate trusted
    through SSL_CERT_FILE as a browser profile would); media goes relay to relay over UDP."""
    host = relay_streams.host
    if transport == "tls":
        monkeypatch.setenv("SSL_CERT_FILE", tls_certificate[0])
        url = f"turns:{host}:{relay_streams.tls_port}?transport=tcp"
    else:
        url = f"turn:{host}:{relay_streams.port}?transport=tcp"
    port = relay_streams.tls_port if transport == "tls" else relay_streams.port
    await relay_only_call(relay_streams, url, stream_port=port)


def established_to(port: int) -> int:
    """TCP connections on this host established to 127.0.0.1:``port`` (/proc/net/tcp)."""
    count = 0
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            remote, state = fields[2], fields[3]
            if state == "01" and remote == f"0100007F:{port:04X}":
                count += 1
    return count


async def relay_only_call(relay: RelayProcess, url: str, stream_port: int = 0) -> None:
    """A relay-only aiortc call between two peer connections through ``url``."""
    configs = []
    for name in ("caller", "callee"):
        username, password = relay.credentials(name)
        server = RTCIceServer(urls=url, username=username, credential=password)
        configs.append(
            RTCConfiguration(iceServers=[server], iceTransportPolicy=RTCIceTransportPolicy.RELAY)
        )
    caller, callee = (RTCPeerConnection(c) for c in configs)
    received: dict[str, dict[str, asyncio.Future[MediaStreamTrack]]] = {}
    loop = asyncio.get_running_loop()
    for name, pc in (("caller", caller), ("callee", callee)):
        futures = {"audio": loop.create_future(), "video": loop.create_future()}
        received[name] = futures

        def on_track(track: MediaStreamTrack, futures=futures) -> None:
            if not futures[track.kind].done():
                futures[track.kind].set_result(track)

        pc.on("track", on_track)
        pc.addTrack(AudioStreamTrack())
        pc.addTrack(VideoStreamTrack())

    try:
        async with asyncio.timeout(30):
            await caller.setLocalDescription(await caller.createOffer())
            offer = caller.localDescription
            await callee.setRemoteDescription(offer)
            await callee.setLocalDescription(await callee.createAnswer())
            answer = callee.localDescription
            await caller.setRemoteDescription(answer)

            # Only relay candidates were offered, all on the relay's relayed ports.
            for sdp in (offer.sdp, answer.sdp):
                cands = sdp_candidates(sdp)
                assert cands, sdp
                for transport, chost, cport, typ in cands:
                    assert (transport, typ) == ("udp", "relay"), (transport, typ)
                    assert chost in relay.spec.relay_ips and cport in relay.relay_ports

            await wait_connected(caller, 20)
            await wait_connected(callee, 20)
            if stream_port:  # each party's allocation lives on a connection to the relay
                assert established_to(stream_port) >= 2, stream_port

            for name in ("caller", "callee"):
                for kind in ("audio", "video"):
                    track = await received[name][kind]
                    frames = await recv_frames(track, 5)
                    assert len(frames) == 5, (name, kind)
                    # Decoded media, not placeholders: the base tracks send
                    # 640x480 video and 8 kHz audio, which Opus carries at 48 kHz.
                    for frame in frames:
                        if kind == "video":
                            assert (frame.width, frame.height) == (640, 480), frame
                        else:
                            assert frame.sample_rate == 48000 and frame.samples > 0, frame

            # The selected pair: aiortc has no public getter, aioice keeps it in
            # Connection._nominated.
            for pc in (caller, callee):
                ice = pc.getTransceivers()[0].receiver.transport.transport
                nominated = ice._connection._nominated
                assert nominated, "no nominated candidate pair"
                for pair in nominated.values():
                    assert pair.local_candidate.type == "relay", pair
                    assert pair.remote_candidate.type == "relay", pair
                    assert pair.local_candidate.port in relay.relay_ports, pair
                    assert pair.remote_candidate.port in relay.relay_ports, pair
    finally:
        await asyncio.wait_for(asyncio.gather(caller.close(), callee.close()), 10)
