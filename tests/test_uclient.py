"""coturn's own test client, turnutils_uclient, against a live relay on loopback.

turnutils_peer is the echo peer; uclient counts what it sent through the relay
and what came back. Needs the coturn package (``make debs``).
"""

from __future__ import annotations

import random
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.relayproc import LISTEN_PORTS, RelayProcess

pytestmark = [pytest.mark.slow]

UCLIENT = shutil.which("turnutils_uclient")
PEER = shutil.which("turnutils_peer")
if UCLIENT is None or PEER is None:
    pytest.skip(
        "coturn's turnutils_uclient/turnutils_peer are not installed (`make debs`)",
        allow_module_level=True,
    )


def _echoes(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        s.sendto(b"ping", ("127.0.0.1", port))
        try:
            return s.recv(64) == b"ping"
        except OSError:
            return False


@pytest.fixture(scope="module")
def echo_peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """turnutils_peer echoing UDP on 127.0.0.1:PORT."""
    assert PEER is not None
    log_path = tmp_path_factory.mktemp("peer") / "turnutils_peer.log"
    for _ in range(5):
        port = random.randint(*LISTEN_PORTS)
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                [PEER, "-L", "127.0.0.1", "-p", str(port)],
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


def run_uclient(relay: RelayProcess, flags: list[str], messages: int, clients: int) -> str:
    assert UCLIENT is not None
    host, port = relay.address
    cmd = [UCLIENT, "-v", "-W", relay.secret, "-u", "uclient", "-p", str(port)]
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
