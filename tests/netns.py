"""A test host in a network namespace of its own, linked to this one by a veth pair.

``NetHost()`` makes namespace ``cac-<pid>-<n>`` with a /30 link: this host's end is
``gateway`` (10.213.<k>.1), the namespace's is ``address`` (10.213.<k>.2). Nothing is routed
beyond the link, so the host reaches only what this machine serves on ``gateway``.
:meth:`NetHost.block` drops what the namespace sends to this host by protocol and port, the
way a corporate or hotel firewall does (policy routing rules with ``blackhole``: the kernel
discards such packets before they leave the namespace, with no answer). Needs root and
iproute2 (``ip``); :func:`missing` says why not.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence

_SEQ = itertools.count()


def missing() -> str | None:
    """Why test hosts cannot be made here (None: they can)."""
    if shutil.which("ip") is None:
        return "iproute2's ip is not installed (make debs)"
    if os.geteuid() != 0:
        return "network namespaces need root"
    return None


def ip(*args: str) -> None:
    got = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20)
    if got.returncode:
        raise RuntimeError(f"ip {' '.join(args)}: {got.stderr.strip()}")


class NetHost:
    def __init__(self) -> None:
        n = next(_SEQ)
        k = (os.getpid() * 7 + n) % 250 + 1
        self.name = f"cac-{os.getpid()}-{n}"
        self.gateway, self.address = f"10.213.{k}.1", f"10.213.{k}.2"
        self._veth = f"cac{os.getpid() % 100000}v{n}"  # this end; the other is ...n
        ip("netns", "add", self.name)
        try:
            ip("link", "add", self._veth, "type", "veth", "peer", "name", self._veth + "n")
            ip("link", "set", self._veth + "n", "netns", self.name)
            ip("addr", "add", f"{self.gateway}/30", "dev", self._veth)
            ip("link", "set", self._veth, "up")
            self.exec_ip("addr", "add", f"{self.address}/30", "dev", self._veth + "n")
            self.exec_ip("link", "set", self._veth + "n", "up")
            self.exec_ip("link", "set", "lo", "up")
        except BaseException:
            self.close()
            raise

    def exec_ip(self, *args: str) -> None:
        ip("-n", self.name, *args)

    def block(self, proto: str, dport: int | None = None) -> None:
        """Drop the host's ``proto`` ("udp", "tcp") packets to this host (to ``dport``)."""
        self.exec_ip("rule", "add", *self._rule(proto, dport), "blackhole")

    def unblock(self, proto: str, dport: int | None = None) -> None:
        """Undo :meth:`block` with the same arguments."""
        self.exec_ip("rule", "del", *self._rule(proto, dport), "blackhole")

    def _rule(self, proto: str, dport: int | None) -> list[str]:
        rule = ["to", self.gateway, "ipproto", proto]
        if dport is not None:
            rule += ["dport", str(dport)]
        return rule

    def run(self, argv: Sequence[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run a command in the namespace."""
        return subprocess.run(
            ["ip", "netns", "exec", self.name, *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def reaches(self, proto: str, port: int) -> bool:
        """Whether a UDP datagram leaves for, or a TCP connection reaches, gateway:port."""
        probe = (
            "import socket, sys\n"
            "host, port, proto = sys.argv[1], int(sys.argv[2]), sys.argv[3]\n"
            "kind = socket.SOCK_DGRAM if proto == 'udp' else socket.SOCK_STREAM\n"
            "s = socket.socket(socket.AF_INET, kind); s.settimeout(3)\n"
            "try:\n"
            "    s.sendto(b'x', (host, port)) if proto == 'udp' else s.connect((host, port))\n"
            "except OSError:\n"
            "    sys.exit(1)\n"
        )
        got = self.run([sys.executable, "-c", probe, self.gateway, str(port), proto])
        return got.returncode == 0

    def close(self) -> None:
        """Remove the namespace (which removes both ends of its link)."""
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=20)
        subprocess.run(["ip", "link", "del", self._veth], capture_output=True, timeout=20)

    def __enter__(self) -> NetHost:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
