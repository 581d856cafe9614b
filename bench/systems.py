"""The systems the relay benchmark compares, each a process it starts, pins and stops: our relay
(and its variants: RTP inspection off, UDP GSO off, N workers), coturn (installed from Debian's
package when missing), a plain C recvmmsg/sendmmsg forwarder (bench/cfwd.c), the same forwarder
sending with UDP GSO (``cfwd-gso``: the kernel's best, the limit) and a bare uvloop forwarder
(bench/pyfwd.py); optionally coturn built from source by whoever runs it (``coturn-src``, the
binary in CLICKACALL_COTURN_BIN, never installed, committed nor run in CI).

Each system runs with one worker/thread, pinned to CPU 1; the generator and its echo peer run on
CPU 0. Flows of ChannelData go generator -> system -> echo -> system -> generator. For TURN
systems every flow is a real allocation (REST credentials) with a channel bound to the echo.
With :meth:`System.serve_streams` ours and coturn also serve TURN over TCP (on the UDP port's
number) and TLS (a port of its own, the certificate given), and :meth:`TurnSystem.stream_flows`
makes flows whose clients reach them that way (``bench --transport tcp,tls``).
``bench.runner`` measures them; ``bench.gate`` judges ours against the others.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from bench import loadgen, turnclient
from bench.report import GEN_CPU, ROOT, SYSTEM_CPU

OUT = ROOT / "bench" / "out"
SECRET = "bench-secret"
REALM = "bench"
FLOWS = 4
ALL_SYSTEMS = ["ours", "coturn", "cfwd", "cfwd-gso", "pyfwd"]
# our relay with RTP inspection off (--quality-off), with UDP GSO off (--gso-off), with one
# shared peer-facing socket (--multiplex-peer: ``--systems ours,ours-mux,...``); coturn built
# from source by whoever runs it (``coturn-src``: CLICKACALL_COTURN_BIN, never in CI); with
# --coalesce-us (``ours-coalesce``: COALESCE_US unless bench's --coalesce-us says otherwise)
OPTIONAL_SYSTEMS = ["ours-noq", "ours-nogso", "ours-mux", "ours-coalesce", "coturn-src"]
COTURN_BIN_ENV = "CLICKACALL_COTURN_BIN"
COALESCE_US = 200  # ours-coalesce's --coalesce-us unless bench's --coalesce-us says otherwise
# Every TURN system relays from a loopback address of its own (127.0.0.2 and up, _relay_hosts),
# each with these 20,000 ports: below the kernel's ephemeral range (32768 up), and on an address
# no generator socket binds, so that neither the generator's sockets, nor another system running
# beside it, take a port it needs. 10,000 idle allocations fit next to a workload's calls.
RELAY_PORTS = (12000, 31999)
MAX_ALLOCATIONS = 12000  # ours' node cap (default 10,000): the idle ones plus flood and calls


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class SkipSystem(RuntimeError):
    """The system could not be started or set up; the reason goes into the report."""


def _pin_child() -> None:  # runs in the child between fork and exec
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > SYSTEM_CPU:
        os.sched_setaffinity(0, {SYSTEM_CPU})


def system_cpus(workers: int = 1) -> tuple[set[int], bool]:
    """The CPUs a system with ``workers`` processes runs on, and whether that set includes the
    generator's CPU (a machine with too few cores: the figures then carry the sharing)."""
    ncpu = os.cpu_count() or 1
    if ncpu <= SYSTEM_CPU:
        return set(range(ncpu)), True
    others = [c for c in range(ncpu) if c != GEN_CPU]
    if len(others) >= workers:
        return set(others[:workers]), False
    return set(range(ncpu)), True


class System:
    kind = "fwd"  # or "turn"
    distinct_peers = False  # needs an echo address per flow (the rig then gives every system one)

    def __init__(self, name: str, workdir: Path, echo: tuple[str, int]) -> None:
        self.name = name
        self.workdir = workdir
        self.echo = echo
        # the echo address of flow i: ``echo`` for all, unless the run's rig has distinct
        # peers (a system that needs them, ours-mux, asks for it: ``distinct_peers``)
        self.peer: Callable[[int], tuple[str, int]] = lambda i: echo
        self.port = loadgen.free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.logfile = workdir / f"{name}.log"
        self.cpus: set[int] = {SYSTEM_CPU}  # where its processes run (pinned)
        self.stream_cert: tuple[str, str] | None = None  # TCP and TLS listeners too
        self.tls_port = 0

    def serve_streams(self, cert: str, key: str) -> None:
        """Also serve TURN over TCP (the UDP port's number) and TLS (``tls_port``)."""
        if self.kind != "turn":
            raise SkipSystem("not a TURN server: no TCP or TLS clients")
        self.stream_cert = (cert, key)
        self.port = loadgen.free_port(tcp_too=True)
        self.tls_port = loadgen.free_port(tcp_too=True)

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self, timeout: float = 20.0) -> None:
        cmd = self.command()
        with open(self.logfile, "wb") as out:
            cpus = set(self.cpus)
            pin_child = (
                _pin_child if cpus == {SYSTEM_CPU} else (lambda: loadgen.pin_cpus([0], cpus))
            )
            self.proc = subprocess.Popen(
                cmd,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=pin_child,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SkipSystem(f"exited with {self.proc.returncode}: {self.log_tail()}")
            if self.ready():
                loadgen.pin_cpus(self.pids(), cpus)
                return
            time.sleep(0.1)
        raise SkipSystem(f"not ready after {timeout:.0f}s: {self.log_tail()}")

    def ready(self) -> bool:
        return "ready" in self.logfile.read_text(errors="replace")

    def pids(self) -> list[int]:
        assert self.proc is not None
        return loadgen.tree(self.proc.pid)

    def log_tail(self, n: int = 400) -> str:
        try:
            text = self.logfile.read_text(errors="replace")
        except OSError:
            return ""
        return " ".join(text[-n:].split())

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        pids = self.pids()  # the whole tree: a draining worker must not outlive the run
        self.proc.terminate()  # a relay may drain gracefully: give it a moment, no more
        try:
            self.proc.wait(2)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        for pid in pids[1:]:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)

    def flows(self) -> loadgen.Flows:
        return loadgen.direct_flows((loadgen.HOST, self.port), FLOWS)

    def call_flows(self, n: int) -> loadgen.Flows:
        """``n`` flows, one per call of a workload (or per flow of the workers comparison)."""
        return loadgen.direct_flows((loadgen.HOST, self.port), n)


def _relay_hosts() -> Iterator[str]:
    while True:
        for last in range(2, 255):
            yield f"127.0.0.{last}"


RELAY_HOSTS = _relay_hosts()


class TurnSystem(System):
    kind = "turn"

    def __init__(self, name: str, workdir: Path, echo: tuple[str, int]) -> None:
        super().__init__(name, workdir, echo)
        self.relay_host = next(RELAY_HOSTS)  # its relayed sockets' address: RELAY_PORTS

    def ready(self) -> bool:
        if self.stream_cert is not None and not all(
            _tcp_connects(p) for p in (self.port, self.tls_port)
        ):
            return False
        # any STUN answer to an unauthenticated Allocate (a 401) means it is serving
        client = turnclient.TurnClient(
            (loadgen.HOST, self.port), SECRET, REALM, timeout=0.2, tries=1
        )
        try:
            client._transact(
                turnclient.ALLOCATE, [(turnclient.REQUESTED_TRANSPORT, turnclient.UDP)], auth=False
            )
            return True
        except (turnclient.TurnError, OSError):
            return False
        finally:
            client.close()

    def flows(self) -> loadgen.Flows:
        try:
            return loadgen.turn_flows((loadgen.HOST, self.port), self.peer, FLOWS, SECRET, REALM)
        except (turnclient.TurnError, OSError) as exc:
            raise SkipSystem(f"TURN setup failed: {exc}; log: {self.log_tail()}") from exc

    def stream_flows(self, transport: str, n: int = FLOWS) -> loadgen.StreamFlows:
        """``n`` flows whose clients reach the system over TCP or TLS (``transport``)."""
        port = self.tls_port if transport == "tls" else self.port
        try:
            return loadgen.stream_flows(
                (loadgen.HOST, port), self.echo, n, SECRET, REALM, tls=transport == "tls"
            )
        except (turnclient.TurnError, OSError, ValueError) as exc:
            raise SkipSystem(
                f"TURN over {transport} failed: {exc}; log: {self.log_tail()}"
            ) from exc

    def call_flows(self, n: int) -> loadgen.Flows:
        # one client address (and /24) per call: loadgen.call_hosts
        try:
            return loadgen.turn_flows_from(
                (loadgen.HOST, self.port), self.peer, loadgen.call_hosts(n), SECRET, REALM
            )
        except (turnclient.TurnError, OSError) as exc:
            raise SkipSystem(
                f"TURN setup of {n} calls failed: {exc}; log: {self.log_tail()}"
            ) from exc


def _tcp_connects(port: int) -> bool:
    try:
        with socket.create_connection((loadgen.HOST, port), timeout=0.2):
            return True
    except OSError:
        return False


class Ours(TurnSystem):
    def command(self) -> list[str]:
        return self.base_command() + self.stream_args()

    def stream_args(self) -> list[str]:
        if self.stream_cert is None:
            return []
        cert, key = self.stream_cert
        return [
            "--listen-tcp",
            f"{loadgen.HOST}:{self.port}",
            "--listen-tls",
            f"{loadgen.HOST}:{self.tls_port}",
            "--tls-cert",
            cert,
            "--tls-key",
            key,
        ]

    def base_command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "relay",
            "--listen",
            f"{loadgen.HOST}:{self.port}",
            "--relay-ip",
            self.relay_host,
            "--realm",
            REALM,
            "--auth-secret",
            SECRET,
            "--allow-peer",
            "127.0.0.0/8",
            "--workers",
            "1",
            "--ports",
            f"{RELAY_PORTS[0]}-{RELAY_PORTS[1]}",
            "--max-allocations",
            str(MAX_ALLOCATIONS),
        ]


class OursNoQuality(Ours):
    def command(self) -> list[str]:
        return [*super().command(), "--quality", "off"]


class OursMux(Ours):
    """Our relay with --multiplex-peer: one shared peer-facing socket, allocations told
    apart by the peer's address and port, so every flow needs an echo of its own."""

    distinct_peers = True

    def command(self) -> list[str]:
        return [*super().command(), "--multiplex-peer"]


class OursCoalesce(Ours):
    """Our relay with --coalesce-us: after a wake-up that relayed packets it waits and reads
    again, so one wake-up serves many packets."""

    def __init__(
        self, name: str, workdir: Path, echo: tuple[str, int], wait_us: int = COALESCE_US
    ) -> None:
        super().__init__(name, workdir, echo)
        self.wait_us = wait_us

    def command(self) -> list[str]:
        return [*super().command(), "--coalesce-us", str(self.wait_us)]


class OursNoGso(Ours):
    def command(self) -> list[str]:
        return [*super().command(), "--gso", "off"]


class OursWorkers(Ours):
    """Our relay with ``workers`` worker processes, on as many CPUs as the machine has apart
    from the generator's, or sharing the generator's where it has too few."""

    def __init__(
        self,
        name: str,
        workdir: Path,
        echo: tuple[str, int],
        workers: int = 2,
        coalesce_us: int = 0,
    ) -> None:
        super().__init__(name, workdir, echo)
        self.workers = workers
        self.coalesce_us = coalesce_us
        self.cpus, self.shares_generator_core = system_cpus(workers)

    def command(self) -> list[str]:
        cmd = super().command()
        cmd[cmd.index("--workers") + 1] = str(self.workers)
        return cmd + (["--coalesce-us", str(self.coalesce_us)] if self.coalesce_us else [])

    def ready(self) -> bool:
        # every worker must be in the SO_REUSEPORT group before the flows are steered
        log = self.logfile.read_text(errors="replace")
        return log.count(" serving on ") >= self.workers and super().ready()

    # call_flows: each flow from its own client address (loadgen.call_hosts), as the relay
    # steers a client to a worker by its IP address (relay/listeners.py, steer_by_client_ip)


def turnserver() -> str:
    """coturn's ``turnserver``, installed from Debian's package when missing (apt-get, with
    sudo when not root), as `make debs` would; SkipSystem when it cannot be."""
    exe = shutil.which("turnserver")
    if exe is not None:
        return exe
    sudo: list[str] = []
    if os.geteuid() != 0:
        if shutil.which("sudo") is None:
            raise SkipSystem("turnserver not installed, and no root or sudo to install coturn")
        sudo = ["sudo", "-n"]
    if shutil.which("apt-get") is None:
        raise SkipSystem("turnserver not installed, and no apt-get to install coturn with")
    log("coturn is not installed: installing Debian's coturn package (apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (
        ["apt-get", "update", "-q"],
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", "coturn"],
    ):
        try:
            res = subprocess.run(
                [*sudo, *cmd], env=env, capture_output=True, text=True, timeout=600
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SkipSystem(f"installing coturn failed: {exc}") from None
        if res.returncode != 0:
            tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or ["?"]
            raise SkipSystem(f"installing coturn failed ({' '.join(cmd[:2])}): {tail[0]}")
    exe = shutil.which("turnserver")
    if exe is None:
        raise SkipSystem("coturn was installed but turnserver is not on PATH")
    return exe


class Coturn(TurnSystem):
    def executable(self) -> str:
        return turnserver()

    def command(self) -> list[str]:
        exe = self.executable()
        # --relay-threads 1: one relay thread ("Total General servers: 1" in its log); the
        # listener, auth and admin threads are counted too (all threads of the process).
        if self.stream_cert is None:
            streams = ["--no-tcp", "--no-tls"]
        else:  # TCP on the listening port, TLS on its own, the same certificate as ours
            cert, key = self.stream_cert
            streams = ["--tls-listening-port", str(self.tls_port), "--cert", cert, "--pkey", key]
        return [
            exe,
            "-n",
            "--listening-ip",
            loadgen.HOST,
            "--listening-port",
            str(self.port),
            "--relay-ip",
            self.relay_host,
            "--min-port",
            str(RELAY_PORTS[0]),
            "--max-port",
            str(RELAY_PORTS[1]),
            "--use-auth-secret",
            "--static-auth-secret",
            SECRET,
            "--realm",
            REALM,
            "--allow-loopback-peers",
            "--relay-threads",
            "1",
            *streams,
            "--no-dtls",
            "--no-tcp-relay",
            "--no-cli",
            "--log-file",
            "stdout",
            "--simple-log",
            "--pidfile",
            str(self.workdir / "turnserver.pid"),
            "--db",
            str(self.workdir / "turndb"),
        ]


def coturn_src_bin() -> str:
    """The ``turnserver`` named by CLICKACALL_COTURN_BIN (coturn built from source by whoever
    runs the benchmark, README: Benchmarks); SkipSystem when it is unset or not executable."""
    exe = os.environ.get(COTURN_BIN_ENV, "")
    if not exe:
        raise SkipSystem(
            f"{COTURN_BIN_ENV} is not set: build coturn from source yourself and point it at "
            "the turnserver binary (README, Benchmarks); never installed, committed nor in CI"
        )
    if not (os.path.isfile(exe) and os.access(exe, os.X_OK)):
        raise SkipSystem(f"{COTURN_BIN_ENV}={exe} is not an executable file")
    return exe


class CoturnSrc(Coturn):
    """coturn's newest release built from source (the binary in CLICKACALL_COTURN_BIN), with the
    Debian coturn's configuration plus its batched peer side (4.17): ``--multiplex-peer`` (one
    UDP socket per relay thread shared by every allocation, told apart by the peer's exact
    IP:port, so every flow needs an echo of its own; implies sendmmsg batching, and recvmmsg
    is on by default) and ``--udp-gso`` (a sendmmsg batch to one destination of one size goes
    as one UDP_SEGMENT send)."""

    distinct_peers = True

    def __init__(self, name: str, workdir: Path, echo: tuple[str, int]) -> None:
        super().__init__(name, workdir, echo)
        self.mux_port = loadgen.free_port()  # its shared relay socket (IPv4 only: --relay-ip)
        self.peers_used = 0  # echo addresses handed to its flows so far (_fresh_peers)

    def executable(self) -> str:
        return coturn_src_bin()

    # A peer IP:port belongs to one allocation at a time in its demux table (a second
    # allocation's ChannelBind to it is a 400), and a run keeps its flood flows open while it
    # sets up a workload's calls: each set of flows gets echoes no earlier set had.
    def flows(self) -> loadgen.Flows:
        return self._fresh_peers(FLOWS, super().flows)

    def call_flows(self, n: int) -> loadgen.Flows:
        return self._fresh_peers(n, lambda: super(CoturnSrc, self).call_flows(n))

    def _fresh_peers(self, n: int, make: Callable[[], loadgen.Flows]) -> loadgen.Flows:
        peer, base = self.peer, self.peers_used
        self.peers_used += n
        self.peer = lambda i: peer(base + i)
        try:
            return make()
        finally:
            self.peer = peer

    def command(self) -> list[str]:
        return [
            *super().command(),
            "--multiplex-peer",
            "--multiplex-peer-port",
            str(self.mux_port),
            "--udp-gso",
        ]


class CForwarder(System):
    def command(self) -> list[str]:
        gcc = shutil.which("gcc") or shutil.which("cc")
        if gcc is None:
            raise SkipSystem("no C compiler")
        OUT.mkdir(parents=True, exist_ok=True)
        exe = OUT / "cfwd"
        src = ROOT / "bench" / "cfwd.c"
        if not exe.exists() or exe.stat().st_mtime < src.stat().st_mtime:
            res = subprocess.run(
                [gcc, "-O2", "-Wall", "-o", str(exe), str(src)], capture_output=True, text=True
            )
            if res.returncode:
                raise SkipSystem(f"gcc failed: {res.stderr[-400:]}")
        return [str(exe), str(self.port), str(self.echo[1])]


class CForwarderGso(CForwarder):
    """The C forwarder with runs of equal-sized datagrams sent as UDP_SEGMENT messages."""

    def command(self) -> list[str]:
        return [*super().command(), "gso"]


class PyForwarder(System):
    def command(self) -> list[str]:
        return [sys.executable, "-m", "bench.pyfwd", str(self.port), str(self.echo[1])]


CLASSES: dict[str, type[System]] = {
    "ours": Ours,
    "ours-noq": OursNoQuality,
    "ours-nogso": OursNoGso,
    "ours-mux": OursMux,
    "ours-coalesce": OursCoalesce,
    "coturn": Coturn,
    "coturn-src": CoturnSrc,
    "cfwd": CForwarder,
    "cfwd-gso": CForwarderGso,
    "pyfwd": PyForwarder,
}


def create(
    name: str, workdir: Path, echo: tuple[str, int], *, coalesce_us: int = COALESCE_US
) -> System:
    """System ``name`` (a key of :data:`CLASSES`); ``coalesce_us``: ours-coalesce's wait."""
    cls = CLASSES[name]
    if issubclass(cls, OursCoalesce):
        return cls(name, workdir, echo, wait_us=coalesce_us)
    return cls(name, workdir, echo)


@contextlib.contextmanager
def running(system: System) -> Iterator[System]:
    try:
        system.start()
        yield system
    finally:
        system.stop()
