"""``make run``: a relay node on loopback with a working TURN credential, until Ctrl-C.

Until the control plane exists this starts ``python -m relay`` on 127.0.0.1 (one worker,
a random TURN REST secret, loopback peers allowed), waits until it answers a STUN Binding
request, then prints a ``turn:`` URL with a 24-hour username and password, the same as an
RTCIceServer JSON snippet, and a ``turnutils_uclient`` command that exercises it.
SIGINT and SIGTERM are passed on to the node; a second one kills it.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import struct
import subprocess
import sys
import time
from types import FrameType

from relay.auth import rest_password

HOST = "127.0.0.1"
REALM = "clickacall"
CREDENTIAL_LIFETIME = 24 * 3600
RELAY_PORTS = (49152, 65535)
READY_TIMEOUT = 15.0
STUN_MAGIC = 0x2112A442


def pick_port(host: str = HOST) -> int:
    """A UDP port free on ``host`` right now: 3478 if possible, else one below the relay
    range (so the listen port never falls among the relayed ports)."""
    candidates: list[int] = [3478, *range(3479, 3500)]
    candidates += [secrets.randbelow(20000) + 20000 for _ in range(50)]
    for port in candidates:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free UDP port found on {host}")


def rest_credential(secret: str, lifetime: int = CREDENTIAL_LIFETIME) -> tuple[str, str]:
    """A TURN REST username ``"<expiry>:<token-id>"`` and its password."""
    username = f"{int(time.time()) + lifetime}:demo-{secrets.token_hex(4)}"
    return username, rest_password(secret.encode(), username)


def stun_ping(host: str, port: int, timeout: float) -> bool:
    """True if a STUN Binding request to (host, port) gets a response in time."""
    txid = secrets.token_bytes(12)
    request = struct.pack("!HHI", 0x0001, 0, STUN_MAGIC) + txid
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.sendto(request, (host, port))
            while True:
                data, _ = s.recvfrom(2048)
                if len(data) >= 20 and data[8:20] == txid:
                    return True
        except OSError:  # timeout, or ICMP port unreachable while the node starts
            return False


def wait_ready(child: subprocess.Popen[bytes], port: int, timeout: float = READY_TIMEOUT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.poll() is not None:
            return False
        if stun_ping(HOST, port, 0.25):
            return True
        time.sleep(0.1)
    return False


def banner(port: int, username: str, password: str) -> str:
    url = f"turn:{HOST}:{port}?transport=udp"
    ice = {"urls": [url], "username": username, "credential": password}
    return "\n".join(
        [
            "",
            "Clickacall relay demo: a TURN/STUN relay node on loopback (1 worker).",
            "",
            f"  TURN URL:  {url}",
            f"  username:  {username}",
            f"  password:  {password}",
            "  (a TURN REST credential, valid for 24 hours)",
            "",
            "As an RTCIceServer for RTCPeerConnection({iceServers: [...]}):",
            "",
            "  " + json.dumps(ice),
            "",
            "Try it with coturn's test client (pairs of clients relaying to each other):",
            "",
            f"  turnutils_uclient -y -n 20 -p {port} -u '{username}' -w '{password}' {HOST}",
            "",
            "(it uses channels, i.e. ChannelData; add -s to use Send/Data indications instead)",
            "",
            "Loopback peers are allowed here (--allow-peer 127.0.0.0/8); a real node denies them.",
            "Press Ctrl-C to stop.",
            "",
        ]
    )


def main() -> int:
    port = pick_port()
    secret = secrets.token_urlsafe(32)
    env = dict(os.environ, CLICKACALL_AUTH_SECRET=secret)  # not on the command line: ps shows argv
    cmd = [
        sys.executable, "-m", "relay",
        "--listen", f"{HOST}:{port}",
        "--relay-ip", HOST,
        "--ports", f"{RELAY_PORTS[0]}-{RELAY_PORTS[1]}",
        "--workers", "1",
        "--realm", REALM,
        "--allow-peer", "127.0.0.0/8",
        "--drain-timeout", "2",
    ]
    # Its own process group: a terminal's Ctrl-C reaches only us, and we pass it on once.
    child = subprocess.Popen(cmd, env=env, process_group=0)
    signals_seen = 0

    def forward(signum: int, frame: FrameType | None) -> None:
        nonlocal signals_seen
        signals_seen += 1
        if child.poll() is not None:
            return
        if signals_seen == 1:
            child.send_signal(signum)
        else:
            child.kill()

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)

    if not wait_ready(child, port):
        if child.poll() is None:
            child.kill()
            child.wait()
            print(f"the relay node did not answer on {HOST}:{port} in {READY_TIMEOUT:.0f} s",
                  file=sys.stderr)
            return 1
        print(f"the relay node exited with status {child.returncode}", file=sys.stderr)
        return child.returncode or 1

    username, password = rest_credential(secret)
    print(banner(port, username, password), flush=True)
    while True:
        try:
            code = child.wait()
        except KeyboardInterrupt:  # pragma: no cover - handlers above replace the default
            continue
        return 0 if signals_seen and code in (0, -signal.SIGINT, -signal.SIGTERM) else code


if __name__ == "__main__":
    sys.exit(main())
