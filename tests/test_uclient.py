"""coturn's own test client, turnutils_uclient, against a live relay on loopback.

turnutils_peer is the echo peer; uclient counts what it sent through the relay
and what came back. Needs the coturn package (``make debs``). Over UDP, TCP (``-t``) and
TLS (``-t -S``); IPv6 relayed addresses (``-x``) and dual allocations (``-Z``); and a TURN
REST username that is only the expiry (uclient's own when given ``-W`` but no ``-u``).
"""

from __future__ import annotations

import concurrent.futures
import itertools
import random
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.relayproc import (
    LISTEN_PORTS,
    RelayProcess,
    RelaySpec,
    have_ipv6_loopback,
    relay_impl,
)

pytestmark = [pytest.mark.slow]

UCLIENT = shutil.which("turnutils_uclient")
PEER = shutil.which("turnutils_peer")
if UCLIENT is None or PEER is None:
    pytest.skip(
        "coturn's turnutils_uclient/turnutils_peer are not installed (`make debs`)",
        allow_module_level=True,
    )


def _echoes(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        s.sendto(b"ping", (host, port))
        try:
            return s.recv(64) == b"ping"
        except OSError:
            return False


@pytest.fixture(scope="module")
def echo_peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """turnutils_peer echoing UDP on 127.0.0.1:PORT (and [::1]:PORT where there is ::1)."""
    yield from _peer_process(tmp_path_factory)


def _peer_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    assert PEER is not None
    log_path = tmp_path_factory.mktemp("peer") / "turnutils_peer.log"
    hosts = ["-L", "127.0.0.1"] + (["-L", "::1"] if have_ipv6_loopback() else [])
    for _ in range(5):
        port = random.randint(*LISTEN_PORTS)
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                [PEER, *hosts, "-p", str(port)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            deadline = time.monotonic() + 5
            while proc.poll() is None and time.monotonic() < deadline:
                if _echoes(port):
                    yield "127.0.0.1", port
                    return
                time.sleep(0.1)
        finally:
            proc.kill()
            proc.wait(5)
    pytest.fail(f"turnutils_peer never echoed; log:\n{log_path.read_text(errors='replace')}")


TOTALS = re.compile(r"start_mclient: tot_send_msgs=(\d+), tot_recv_msgs=(\d+)")
LOST = re.compile(r"Total lost packets (\d+) \([^)]*\), total send dropped (\d+)")
RELAYED = re.compile(r"Received relay addr: ([\d.]+):(\d+)")
TOKEN = re.compile(r"clnet_allocate: rtv=(\d+)")


_RUNS = itertools.count(1)


def run_uclient(
    relay: RelayProcess,
    flags: list[str],
    messages: int,
    clients: int,
    *,
    port: int | None = None,
    user: str | None = "uclient",
) -> str:
    """uclient with TURN REST credentials from the relay's secret: ``user`` is the name
    after the expiry (None: no -u, so the username is the expiry alone), numbered per run
    as the control plane issues a token per call: each run leaves an allocation or an
    EVEN-PORT reservation behind for a while, and the relay counts them in the token's
    --user-quota."""
    assert UCLIENT is not None
    host, default_port = relay.address
    cmd = [UCLIENT, "-v", "-W", relay.secret, "-p", str(port or default_port)]
    cmd += [] if user is None else ["-u", f"{user}{next(_RUNS)}"]
    cmd += ["-n", str(messages), "-m", str(clients), "-z", "5", *flags, host]
    try:
        done = subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=60,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        out = (exc.output or b"").decode(errors="replace")
        pytest.fail(f"uclient timed out: {' '.join(cmd)}\n{out[-4000:]}")
    out = done.stdout.decode(errors="replace")
    print(" ".join(cmd), f"-> rc={done.returncode}\n", out[-4000:])
    return out


def check_all_echoed(out: str, expected: int) -> None:
    totals = TOTALS.findall(out)
    lost = LOST.findall(out)
    assert totals and lost, "uclient printed no totals (did the allocation fail?)"
    sent, received = map(int, totals[-1])
    lost_packets, dropped = map(int, lost[-1])
    assert sent == expected, (sent, expected)
    assert received == sent
    assert (lost_packets, dropped) == (0, 0)


CASES = {
    # name: (flags, with peer)
    "channels+rtcp-pairs": (["-l", "170"], True),
    "channels": (["-c", "-l", "170"], True),
    "send-indications": (["-c", "-s", "-l", "170"], True),
    "large": (["-c", "-l", "1200"], True),
    "client-to-client": (["-y", "-c", "-l", "170"], False),
}


@pytest.mark.timeout(90)
@pytest.mark.parametrize("case", list(CASES))
def test_uclient_echo(relay: RelayProcess, echo_peer: tuple[str, int], case: str):
    flags, with_peer = CASES[case]
    if with_peer:
        flags = [*flags, "-e", echo_peer[0], "-r", str(echo_peer[1])]
    messages, clients = 40, 2
    out = run_uclient(relay, flags, messages, clients)
    check_all_echoed(out, messages * clients)

    relayed = [(h, int(p)) for h, p in RELAYED.findall(out)]
    assert relayed, "no relayed address reported"
    for h, p in relayed:
        assert h == "127.0.0.1" and p in relay.relay_ports, (h, p)
    if "-c" not in flags:
        # Without -c every client also allocates an RTCP relay: EVEN-PORT with
        # R bit, then the next port through the RESERVATION-TOKEN.
        assert any(int(t) != 0 for t in TOKEN.findall(out)), "no RESERVATION-TOKEN handed out"
        ports = {p for _, p in relayed}
        pairs = [p for p in ports if p % 2 == 0 and p + 1 in ports]
        assert pairs, (sorted(ports), "no even/odd RTP/RTCP relay port pair")


# --------------------------------------------------------------------------
# TURN over TCP and TLS (the relayed side stays UDP), IPv6, dual allocations


# Against coturn 4.6.1 itself (CLICKACALL_TEST_RELAY=coturn) the TLS cases with the most
# traffic, "tls-send-indications", "tls-large" and "tls-client-to-client", lose messages: its
# log says "TLS/TCP socket buffer operation error" and closes sessions. Ours passes them all.
STREAM_CASES = {
    "tcp": ["-t", "-l", "170"],
    "tcp-channels": ["-t", "-c", "-l", "170"],
    "tcp-send-indications": ["-t", "-c", "-s", "-l", "170"],
    "tcp-large": ["-t", "-c", "-l", "1200"],
    "tcp-client-to-client": ["-t", "-y", "-c", "-l", "170"],
    "tls": ["-t", "-S", "-l", "170"],
    "tls-channels": ["-t", "-S", "-c", "-l", "170"],
    "tls-send-indications": ["-t", "-S", "-c", "-s", "-l", "170"],
    "tls-large": ["-t", "-S", "-c", "-l", "1200"],
    "tls-client-to-client": ["-t", "-S", "-y", "-c", "-l", "170"],
}


@pytest.mark.timeout(90)
@pytest.mark.parametrize("case", list(STREAM_CASES))
def test_uclient_over_tcp_and_tls(
    relay_streams: RelayProcess, echo_peer: tuple[str, int], case: str
) -> None:
    flags = list(STREAM_CASES[case])
    if "-y" not in flags:
        flags += ["-e", echo_peer[0], "-r", str(echo_peer[1])]
    port = relay_streams.tls_port if "-S" in flags else None
    messages, clients = 40, 2
    out = run_uclient(relay_streams, flags, messages, clients, port=port)
    check_all_echoed(out, messages * clients)
    relayed = [(h, int(p)) for h, p in RELAYED.findall(out)]
    assert relayed and all(p in relay_streams.relay_ports for _, p in relayed), relayed


@pytest.mark.timeout(90)
@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
def test_uclient_ipv6_relayed_address(
    relay_streams6: RelayProcess, echo_peer: tuple[str, int], transport: str
) -> None:
    """-x asks for an IPv6 relayed address (REQUESTED-ADDRESS-FAMILY); the peer is ::1."""
    flags = ["-x", "-c", "-l", "170", "-e", "::1", "-r", str(echo_peer[1])]
    flags += {"udp": [], "tcp": ["-t"], "tls": ["-t", "-S"]}[transport]
    port = relay_streams6.tls_port if transport == "tls" else None
    out = run_uclient(relay_streams6, flags, 20, 2, port=port)
    check_all_echoed(out, 40)
    assert re.search(r"IPv6\. Received relay addr: ::1:\d+", out), out[-2000:]


@pytest.mark.timeout(90)
@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
@pytest.mark.parametrize("peer", ["::1", "127.0.0.1"])
def test_uclient_dual_allocation(
    relay_streams6: RelayProcess, echo_peer: tuple[str, int], transport: str, peer: str
) -> None:
    """-Z: one allocation with an IPv4 and an IPv6 relayed address (RFC 8656
    ADDITIONAL-ADDRESS-FAMILY, as coturn numbers it); the peer of either family is reached
    from the relayed address of its family."""
    flags = ["-Z", "-l", "170", "-e", peer, "-r", str(echo_peer[1])]
    flags += {"udp": [], "tcp": ["-t"], "tls": ["-t", "-S"]}[transport]
    port = relay_streams6.tls_port if transport == "tls" else None
    since = relay_streams6.log_size()
    out = run_uclient(relay_streams6, flags, 20, 2, port=port)
    check_all_echoed(out, 40)
    if relay_streams6.impl == "ours":
        log = relay_streams6.log_text(since)
        assert re.search(r"allocation created .* and IPv6 port \d+", log), log[-2000:]


@pytest.mark.timeout(90)
@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_uclient_username_of_only_the_expiry(
    relay_streams: RelayProcess, echo_peer: tuple[str, int], transport: str
) -> None:
    """With -W and no -u, uclient's TURN REST username is the expiry alone, as coturn
    accepts: so does ours (the quota and revocations key on the whole username)."""
    flags = ["-c", "-l", "170", "-e", echo_peer[0], "-r", str(echo_peer[1])]
    flags += ["-t"] if transport == "tcp" else []
    out = run_uclient(relay_streams, flags, 20, 2, user=None)
    check_all_echoed(out, 40)


# --------------------------------------------------------------------------
# --multiplex-peer: one shared relayed socket per worker


@pytest.fixture(scope="module")
def relay_mux(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    if relay_impl() != "ours":
        pytest.skip("--multiplex-peer is our relay's flag")
    proc = RelayProcess(
        RelaySpec(extra_args=("--multiplex-peer",)), tmp_path_factory.mktemp("relay-mux")
    )
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def second_echo_peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """Another turnutils_peer: in multiplexed mode a peer IP:port is one allocation's."""
    yield from _peer_process(tmp_path_factory)


@pytest.mark.timeout(90)
def test_uclient_multiplexed_channels_and_send_indications(
    relay_mux: RelayProcess,
    echo_peer: tuple[str, int],
    second_echo_peer: tuple[str, int],
) -> None:
    """Two uclients at once against --multiplex-peer, each with its own echo peer: one over
    channels, one over Send/Data indications. Both get the same relayed address (the
    shared socket's) and every message comes back. (-c: no RTCP pair, whose reserving
    EVEN-PORT gets 400 in this mode; uclient still sends a plain EVEN-PORT half the time,
    which the even shared port meets.)"""
    runs = [
        ["-c", "-l", "170", "-e", echo_peer[0], "-r", str(echo_peer[1])],
        ["-c", "-s", "-l", "170", "-e", second_echo_peer[0], "-r", str(second_echo_peer[1])],
    ]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        outs = list(pool.map(lambda flags: run_uclient(relay_mux, flags, 40, 1), runs))
    relayed = set()
    for out in outs:
        check_all_echoed(out, 40)
        relayed |= {(h, int(p)) for h, p in RELAYED.findall(out)}
    assert len(relayed) == 1, relayed
    ((host, port),) = relayed
    assert host == "127.0.0.1" and port in relay_mux.relay_ports


@pytest.mark.timeout(90)
def test_uclient_multiplexed_refuses_the_rtcp_pair(
    relay_mux: RelayProcess, echo_peer: tuple[str, int]
) -> None:
    """Without -c uclient asks for an RTP/RTCP pair (EVEN-PORT with the R bit): 400, with
    the mode named in the reason, and nothing is relayed."""
    out = run_uclient(relay_mux, ["-l", "170", "-e", echo_peer[0], "-r", str(echo_peer[1])], 5, 1)
    assert re.search(r"error 400 \(Bad Request: EVEN-PORT .*--multiplex-peer", out), out[-2000:]
    assert not TOTALS.findall(out), out[-2000:]
