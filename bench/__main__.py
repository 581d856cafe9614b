"""Relay benchmark: our relay against coturn, a plain C forwarder and a bare uvloop forwarder.

    python -m bench                 # full run (a few minutes)
    python -m bench --quick         # short run (< 60 s)
    python -m bench --systems ours,coturn --sizes 200
    python -m bench --quality-off --systems ours --cpu-only   # cost of RTP inspection
    python -m bench --gso-off --systems ours,cfwd --cpu-only  # what UDP GSO saves

Each system runs with one worker/thread, pinned to CPU 1; the generator and its echo peer run on
CPU 0. 4 flows of ChannelData go generator -> system -> echo -> system -> generator. For TURN
systems every flow is a real allocation (REST credentials) with a channel bound to the echo.
Figures: CPU time per relayed packet (both directions) at a fixed offered rate, the highest
offered rate with < 1% loss, relay-added round-trip latency (minus the direct generator->echo
path, same rate, same run) at half that rate, and for TURN systems the per-packet cost with 10
and with 5,000 live idle allocations and the resident memory per allocation.
``--quality-off`` adds our relay started with ``--quality off`` (system ``ours-noq``) to the
interleaved CPU rounds and reports the per-packet cost of RTP/RTCP inspection (on / off; the
generator's packets carry RTP headers, so inspection does its real work). ``--gso-off`` adds it
started with ``--gso off`` (system ``ours-nogso``): every datagram its own sendmmsg entry, as
in the C forwarder, instead of same-destination runs sent as one UDP_SEGMENT message.

Call workloads (bench/workloads.py: voice, video, screen-share and a mix, each call a TURN
allocation carrying real SRTP made with pylibsrtp) run over every system at once, interleaved
like the CPU rounds: CPU per relayed packet, loss and latency per workload and system. Our relay
also runs with 1 and with 2 workers (``--workers``), and the TURN systems with 10, 1,000 and
5,000 live idle allocations.

Progress goes to stderr (a line per step: elapsed, an estimate of what is left, what runs); the
table to stdout; everything, with the machine it ran on, to bench/out/report.json, and the
plots (bench/plots.py) to bench/out/*.png.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench import loadgen, turnclient, workloads
from bench.report import (  # noqa: F401 (re-exported: bench.gate imports some)
    GEN_CPU,
    LABELS,
    QS,
    ROOT,
    SYSTEM_CPU,
    cdf,
    machine,
    ratios,
    switch_costs,
    table,
    workers_table,
    workload_ratios,
    workload_table,
)

OUT = ROOT / "bench" / "out"
SECRET = "bench-secret"
REALM = "bench"
FLOWS = 4
ALL_SYSTEMS = ["ours", "coturn", "cfwd", "pyfwd"]
# our relay with RTP inspection off (--quality-off), with UDP GSO off (--gso-off)
OPTIONAL_SYSTEMS = ["ours-noq", "ours-nogso"]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class SkipSystem(RuntimeError):
    """The system could not be started or set up; the reason goes into the report."""


@dataclass
class Profile:
    sizes: list[int]
    fixed_rate: float
    fixed_seconds: float
    trials: int
    search_start: float
    search_ceiling: float
    search_step_seconds: float
    search_budget: float
    latency_seconds: float
    alloc_counts: list[int]
    alloc_seconds: float
    cpu_rounds: int  # interleaved rounds of the fixed-load CPU comparison
    # call-like workloads (bench/workloads.py), run interleaved over every system like the CPU
    # rounds; none unless asked for, so that older callers keep their run time
    workloads: list[str] = field(default_factory=list)
    workload_seconds: float = 2.0  # one trial: this much of every call
    workload_rounds: int = 3  # interleaved rounds (median)
    workload_scale: float = 1.0  # number of calls, relative to WORKLOADS[name].calls
    # our relay with 1 and with N workers, each through ``workers_flows`` allocations (the
    # kernel spreads them over the workers by SO_REUSEPORT hash); none unless asked for
    workers: list[int] = field(default_factory=list)
    workers_flows: int = 16


FULL = Profile(
    sizes=[200, 1200],
    fixed_rate=100_000,
    fixed_seconds=2.0,
    trials=3,
    search_start=40_000,
    search_ceiling=600_000,
    search_step_seconds=1.0,
    search_budget=12.0,
    latency_seconds=1.0,
    alloc_counts=[10, 1000, 5000],
    alloc_seconds=60.0,
    cpu_rounds=7,
    workloads=["voice", "video", "screen", "mix"],
    workload_seconds=2.0,
    workload_rounds=3,
    workload_scale=1.0,
    workers=[1, 2],
)
QUICK = Profile(
    sizes=[200, 1200],
    fixed_rate=100_000,
    fixed_seconds=0.6,
    trials=1,
    search_start=60_000,
    search_ceiling=600_000,
    search_step_seconds=0.3,
    search_budget=2.0,
    latency_seconds=0.4,
    alloc_counts=[10, 1000],
    alloc_seconds=10.0,
    cpu_rounds=3,
    workloads=["voice", "video", "screen", "mix"],
    workload_seconds=0.5,
    workload_rounds=1,
    workload_scale=0.25,
    workers=[1, 2],
)


# --- systems under test ---------------------------------------------------------------------


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

    def __init__(self, name: str, workdir: Path, echo: tuple[str, int]) -> None:
        self.name = name
        self.workdir = workdir
        self.echo = echo
        self.port = loadgen.free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.logfile = workdir / f"{name}.log"
        self.cpus: set[int] = {SYSTEM_CPU}  # where its processes run (pinned)

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


class TurnSystem(System):
    kind = "turn"

    def ready(self) -> bool:
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
            return loadgen.turn_flows((loadgen.HOST, self.port), self.echo, FLOWS, SECRET, REALM)
        except (turnclient.TurnError, OSError) as exc:
            raise SkipSystem(f"TURN setup failed: {exc}; log: {self.log_tail()}") from exc

    def call_flows(self, n: int) -> loadgen.Flows:
        # one client address (and /24) per call: loadgen.call_hosts
        try:
            return loadgen.turn_flows_from(
                (loadgen.HOST, self.port), self.echo, loadgen.call_hosts(n), SECRET, REALM
            )
        except (turnclient.TurnError, OSError) as exc:
            raise SkipSystem(
                f"TURN setup of {n} calls failed: {exc}; log: {self.log_tail()}"
            ) from exc


class Ours(TurnSystem):
    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "relay",
            "--listen",
            f"{loadgen.HOST}:{self.port}",
            "--relay-ip",
            loadgen.HOST,
            "--realm",
            REALM,
            "--auth-secret",
            SECRET,
            "--allow-peer",
            "127.0.0.0/8",
            "--workers",
            "1",
            "--ports",
            "22000-31999",
        ]


class OursNoQuality(Ours):
    def command(self) -> list[str]:
        return [*super().command(), "--quality", "off"]


class OursNoGso(Ours):
    def command(self) -> list[str]:
        return [*super().command(), "--gso", "off"]


class OursWorkers(Ours):
    """Our relay with ``workers`` worker processes, on as many CPUs as the machine has apart
    from the generator's, or sharing the generator's where it has too few."""

    def __init__(self, name: str, workdir: Path, echo: tuple[str, int], workers: int = 2) -> None:
        super().__init__(name, workdir, echo)
        self.workers = workers
        self.cpus, self.shares_generator_core = system_cpus(workers)

    def command(self) -> list[str]:
        cmd = super().command()
        cmd[cmd.index("--workers") + 1] = str(self.workers)
        return cmd

    def ready(self) -> bool:
        # every worker must be in the SO_REUSEPORT group before the flows are steered
        log = self.logfile.read_text(errors="replace")
        return log.count(" serving on ") >= self.workers and super().ready()

    # call_flows: each flow from its own client address (loadgen.call_hosts), as the relay
    # steers a client to a worker by its IP address (relay/server.py, steer_by_client_ip)


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
    def command(self) -> list[str]:
        exe = turnserver()
        # --relay-threads 1: one relay thread ("Total General servers: 1" in its log); the
        # listener, auth and admin threads are counted too (all threads of the process).
        return [
            exe,
            "-n",
            "--listening-ip",
            loadgen.HOST,
            "--listening-port",
            str(self.port),
            "--relay-ip",
            loadgen.HOST,
            "--min-port",
            "12000",
            "--max-port",
            "21999",
            "--use-auth-secret",
            "--static-auth-secret",
            SECRET,
            "--realm",
            REALM,
            "--allow-loopback-peers",
            "--relay-threads",
            "1",
            "--no-tcp",
            "--no-tls",
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


class PyForwarder(System):
    def command(self) -> list[str]:
        return [sys.executable, "-m", "bench.pyfwd", str(self.port), str(self.echo[1])]


CLASSES: dict[str, type[System]] = {
    "ours": Ours,
    "ours-noq": OursNoQuality,
    "ours-nogso": OursNoGso,
    "coturn": Coturn,
    "cfwd": CForwarder,
    "pyfwd": PyForwarder,
}


@contextlib.contextmanager
def running(system: System) -> Iterator[System]:
    try:
        system.start()
        yield system
    finally:
        system.stop()


# --- measurements ---------------------------------------------------------------------------

Step = Callable[[str, str], None]  # (plan key, message): a progress step begins


def _log_step(_key: str, msg: str) -> None:
    log(msg)


class Bench:
    def __init__(self, profile: Profile, rig: loadgen.Rig) -> None:
        self.p = profile
        self.rig = rig
        self.direct = loadgen.direct_flows(rig.addr, FLOWS)
        self.direct_gens = {size: self.direct.generator(size) for size in profile.sizes}
        self.last_cdf: dict[str, list[float]] = {}  # of the last latency() call

    def fixed(self, gen: Any, pids: list[int], rate: float | None = None) -> dict[str, float]:
        rate = rate or self.p.fixed_rate
        runs = [
            loadgen.trial(self.rig, gen, rate, self.p.fixed_seconds, pids)
            for _ in range(self.p.trials)
        ]
        return loadgen.median(runs)

    def latency(self, gen: Any, size: int, rate: float, pids: list[int]) -> dict[str, float]:
        """Relay-added RTT at ``rate``: paired trials through the system and direct."""
        through, direct = [], []
        t_rtts, d_rtts = [], []
        for _ in range(self.p.trials):
            through.append(loadgen.trial(self.rig, gen, rate, self.p.latency_seconds, pids))
            t_rtts.append(np.frombuffer(gen.rtts(), dtype=np.uint32).copy())
            direct.append(
                loadgen.trial(self.rig, self.direct_gens[size], rate, self.p.latency_seconds, [])
            )
            d_rtts.append(np.frombuffer(self.direct_gens[size].rtts(), dtype=np.uint32).copy())
        self.last_cdf = cdf(np.concatenate(t_rtts), np.concatenate(d_rtts))
        t, d = loadgen.median(through), loadgen.median(direct)
        return {
            "rate": rate,
            "loss": t["loss"],
            "rtt_p50_us": t["rtt_p50_us"],
            "rtt_p99_us": t["rtt_p99_us"],
            "direct_rtt_p50_us": d["rtt_p50_us"],
            "direct_rtt_p99_us": d["rtt_p99_us"],
            "added_p50_us": t["rtt_p50_us"] - d["rtt_p50_us"],
            "added_p99_us": t["rtt_p99_us"] - d["rtt_p99_us"],
        }

    def interleaved(self, systems: list[System]) -> dict[str, dict[str, dict[str, float]]]:
        """CPU per packet at the fixed rate, all systems running at once and measured in
        turn, round after round (the order rotating), so that the slow drifts of a shared
        machine (a neighbour's load, the hypervisor taking the core away) fall on every
        system alike. Returns per system and size the per-key medians over the rounds."""
        flows = {s.name: s.flows() for s in systems}
        try:
            gens = {
                name: {size: f.generator(size) for size in self.p.sizes}
                for name, f in flows.items()
            }
            runs: dict[str, dict[int, list[dict[str, float]]]] = {
                s.name: {size: [] for size in self.p.sizes} for s in systems
            }
            for s in systems:  # warm up
                loadgen.trial(self.rig, gens[s.name][self.p.sizes[0]], 20_000, 0.2, s.pids())
            for r in range(self.p.cpu_rounds):
                order = systems[r % len(systems) :] + systems[: r % len(systems)]
                for size in self.p.sizes:
                    for s in order:
                        runs[s.name][size].append(
                            loadgen.trial(
                                self.rig,
                                gens[s.name][size],
                                self.p.fixed_rate,
                                self.p.fixed_seconds,
                                s.pids(),
                            )
                        )
                log(
                    f"  cpu round {r + 1}/{self.p.cpu_rounds}: "
                    + ", ".join(
                        f"{s.name} {runs[s.name][self.p.sizes[0]][-1]['cpu_us_per_pkt']:.2f}"
                        for s in systems
                    )
                )
            return {
                name: {str(size): loadgen.median(v) for size, v in per.items()}
                for name, per in runs.items()
            }
        finally:
            for f in flows.values():
                f.close()

    def system(
        self, system: System, fixed_given: dict[str, dict[str, float]] | None = None
    ) -> dict[str, Any]:
        result: dict[str, Any] = {"label": LABELS[system.name], "sizes": {}}
        pids = system.pids()
        result["threads"] = sum(
            len(os.listdir(f"/proc/{p}/task")) for p in pids if os.path.isdir(f"/proc/{p}/task")
        )
        flows = system.flows()
        try:
            gens = {size: flows.generator(size) for size in self.p.sizes}
            # warm up (first packets take slow paths: ARP-free loopback, caches, allocations)
            loadgen.trial(self.rig, gens[self.p.sizes[0]], 20_000, 0.2, pids)
            for size in self.p.sizes:
                gen = gens[size]
                pids = system.pids()
                if fixed_given and str(size) in fixed_given:
                    fixed = fixed_given[str(size)]
                else:
                    log(f"  {system.name} {size} B: fixed {self.p.fixed_rate:,.0f}/s")
                    fixed = self.fixed(gen, pids)
                log(f"    {fixed['cpu_us_per_pkt']:.2f} us/pkt, loss {fixed['loss']:.2%}")
                log(f"  {system.name} {size} B: max rate search")
                search = loadgen.find_max_rate(
                    lambda r, gen=gen, pids=pids: loadgen.trial(
                        self.rig, gen, r, self.p.search_step_seconds, pids
                    ),
                    self.p.search_start,
                    self.p.search_ceiling,
                    self.p.search_budget,
                    log,
                )
                max_rate = float(search["max_rate"])  # type: ignore[arg-type]
                half = max(max_rate / 2, 1000.0)
                log(f"  {system.name} {size} B: latency at {half:,.0f}/s")
                lat = self.latency(gen, size, half, pids)
                log(f"    +{lat['added_p50_us']:.1f} us p50, +{lat['added_p99_us']:.1f} us p99")
                result["sizes"][str(size)] = {
                    "fixed": fixed,
                    "max_rate": max_rate,
                    "max_rate_limited_by": search["limited_by"],
                    "search": search["steps"],
                    "latency": lat,
                    "latency_cdf": self.last_cdf,
                }
            if system.kind == "turn":
                result["allocations"] = self.allocations(
                    system, gens[self.p.sizes[0]], self.p.sizes[0]
                )
        finally:
            flows.close()
        return result

    def allocations(self, system: System, gen: Any, size: int) -> dict[str, Any]:
        """Per-packet cost with N live idle allocations, and resident memory per allocation.
        Measured in ``trials`` rounds: each round opens idle allocations up to every count of
        the profile in turn, with one fixed-rate trial at each, then deletes them down to the
        first count again. Every count is so measured within seconds of the others, round after
        round, and a slow drift of the machine's speed falls on all of them alike; the figure
        per count is the median of its rounds (resident memory: the first round's)."""
        out: dict[str, Any] = {"size": size, "points": []}
        server = (loadgen.HOST, system.port)
        pids = system.pids()
        rss0 = loadgen.rss_bytes(pids)
        idle: list[turnclient.Idle] = []
        runs: dict[int, list[dict[str, float]]] = {}
        first: dict[int, dict[str, float]] = {}  # count -> allocations, setup seconds, rss
        deadline = time.monotonic() + self.p.alloc_seconds
        try:
            for rnd in range(self.p.trials):
                for target in self.p.alloc_counts:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    t0 = time.monotonic()
                    idle += turnclient.allocate_many(
                        server, target - len(idle), SECRET, REALM, max_seconds=left
                    )
                    took = time.monotonic() - t0
                    time.sleep(0.2)
                    if rnd == 0:
                        first[target] = {
                            "allocations": len(idle),
                            "setup_seconds": took,
                            "rss_bytes": loadgen.rss_bytes(pids),
                        }
                    trial = loadgen.trial(
                        self.rig, gen, self.p.fixed_rate, self.p.fixed_seconds, pids
                    )
                    runs.setdefault(target, []).append(trial)
                    log(
                        f"  {system.name} round {rnd + 1}/{self.p.trials}: {len(idle)} idle "
                        f"allocations ({took:.1f}s): {trial['cpu_us_per_pkt']:.2f} us/pkt at "
                        f"{self.p.fixed_rate:,.0f}/s, loss {trial['loss']:.2%}"
                    )
                keep = self.p.alloc_counts[0]
                turnclient.release_many(
                    server, idle[keep:], REALM, max_seconds=max(1.0, deadline - time.monotonic())
                )
                del idle[keep:]
                time.sleep(1.0)  # let the system finish tearing them down before the next round
        finally:
            turnclient.close_all(idle)
        for target, made in first.items():
            n, rss = int(made["allocations"]), made["rss_bytes"]
            out["points"].append(
                {
                    **made,
                    "allocations": n,
                    "rss_per_allocation_bytes": (rss - rss0) / n if n else math.nan,
                    "rounds": len(runs[target]),
                    "fixed": loadgen.median(runs[target]),
                }
            )
        out["rss_before_bytes"] = rss0
        return out

    def workloads(self, systems: list[System], step: Step | None = None) -> dict[str, Any]:
        """Every call workload of the profile over every system in ``systems`` (all running),
        measured in turn round after round like :meth:`interleaved`: each round is the next
        ``workload_seconds`` of every call (a new segment, so each system sees the calls go on,
        sequence numbers and timestamps continuing), played through each system and then
        straight to the echo (the direct path the relay-added latency is taken against)."""
        out: dict[str, Any] = {}
        for name in self.p.workloads:
            wl = workloads.Workload(name, scale=self.p.workload_scale)
            ncalls = len(wl.calls)
            (step or _log_step)(
                f"workload {name}",
                f"workload {name}: {ncalls} calls through " + ", ".join(s.name for s in systems),
            )
            res: dict[str, Any] = {**wl.describe(), "systems": {}}
            flows: dict[str, loadgen.Flows] = {}
            direct = loadgen.direct_flows(self.rig.addr, ncalls)
            try:
                live: list[System] = []
                for s in systems:
                    try:
                        flows[s.name] = s.call_flows(ncalls)
                        live.append(s)
                    except SkipSystem as exc:
                        log(f"  {s.name}: skipped: {exc}")
                        res["systems"][s.name] = {"label": LABELS[s.name], "skipped": str(exc)}
                warm = wl.segment(0.3)  # first packets of a flow take slow paths
                for s in live:
                    loadgen.replay_trial(self.rig, warm.player(flows[s.name]), s.pids())
                del warm
                runs: dict[str, list[dict[str, float]]] = {s.name: [] for s in live}
                rtts: dict[str, list[np.ndarray]] = {s.name: [] for s in live}
                d_runs: list[dict[str, float]] = []
                d_rtts: list[np.ndarray] = []
                for r in range(self.p.workload_rounds):
                    seg = wl.segment(self.p.workload_seconds)
                    res["segment_packets"] = seg.packets
                    order = live[r % len(live) :] + live[: r % len(live)] if live else []
                    for s in order:
                        player = seg.player(flows[s.name])
                        runs[s.name].append(loadgen.replay_trial(self.rig, player, s.pids()))
                        rtts[s.name].append(np.frombuffer(player.rtts(), dtype=np.uint32).copy())
                    player = seg.player(direct)
                    d_runs.append(loadgen.replay_trial(self.rig, player, []))
                    d_rtts.append(np.frombuffer(player.rtts(), dtype=np.uint32).copy())
                    del seg, player
                    log(
                        f"  {name} round {r + 1}/{self.p.workload_rounds}: "
                        + ", ".join(
                            f"{s.name} {runs[s.name][-1]['cpu_us_per_pkt']:.2f} us/pkt "
                            f"loss {runs[s.name][-1]['loss']:.2%}"
                            for s in live
                        )
                    )
                d = loadgen.median(d_runs)
                d_all = np.concatenate(d_rtts)
                res.update(offered_pps=d["offered_pps"], offered_mbps=d["offered_mbps"], direct=d)
                for s in live:
                    m: dict[str, Any] = loadgen.median(runs[s.name])
                    m["added_p50_us"] = m["rtt_p50_us"] - d["rtt_p50_us"]
                    m["added_p99_us"] = m["rtt_p99_us"] - d["rtt_p99_us"]
                    m["latency_cdf"] = cdf(np.concatenate(rtts[s.name]), d_all)
                    res["systems"][s.name] = {"label": LABELS[s.name], **m}
            finally:
                for f in flows.values():
                    f.close()
                direct.close()
            out[name] = res
        return out

    def workers(self, workdir: Path, step: Step | None = None) -> dict[str, Any]:
        """Our relay with each worker count of the profile, through ``workers_flows`` TURN
        allocations: CPU per packet at the fixed rate (and how it splits between processes),
        and the highest rate under 1% loss."""
        size = self.p.sizes[0]
        out: dict[str, Any] = {
            "flows": self.p.workers_flows,
            "size": size,
            "rate": self.p.fixed_rate,
            "points": [],
        }
        for w in self.p.workers:
            system = OursWorkers(f"ours-w{w}", workdir, self.rig.addr, workers=w)
            (step or _log_step)(
                f"workers {w}",
                f"ours with {w} worker(s) on CPU "
                f"{','.join(map(str, sorted(system.cpus)))}"
                + (" (shared with the generator)" if system.shares_generator_core else ""),
            )
            point: dict[str, Any] = {
                "workers": w,
                "cpus": sorted(system.cpus),
                "shares_generator_core": system.shares_generator_core,
            }
            try:
                with running(system):
                    flows = system.call_flows(self.p.workers_flows)
                    try:
                        gen = flows.generator(size)
                        pids = system.pids()
                        point["processes"] = len(pids)
                        loadgen.trial(self.rig, gen, 20_000, 0.2, pids)
                        c0 = loadgen.cpu_by_pid(pids)
                        fixed = self.fixed(gen, pids)
                        c1 = loadgen.cpu_by_pid(pids)
                        busy = sorted((c1[p] - c0.get(p, 0.0) for p in pids), reverse=True)
                        total = sum(busy) or math.nan
                        point["cpu_share_by_process"] = [b / total for b in busy]
                        log(
                            f"    {fixed['cpu_us_per_pkt']:.2f} us/pkt, loss {fixed['loss']:.2%}"
                            f", CPU split " + " / ".join(f"{b / total:.0%}" for b in busy)
                        )
                        search = loadgen.find_max_rate(
                            lambda r, gen=gen, pids=pids: loadgen.trial(
                                self.rig, gen, r, self.p.search_step_seconds, pids
                            ),
                            self.p.search_start,
                            self.p.search_ceiling,
                            self.p.search_budget,
                            log,
                        )
                        point.update(
                            fixed=fixed,
                            max_rate=float(search["max_rate"]),  # type: ignore[arg-type]
                            max_rate_limited_by=search["limited_by"],
                            search=search["steps"],
                        )
                    finally:
                        flows.close()
            except SkipSystem as exc:
                log(f"  ours-w{w}: skipped: {exc}")
                point["skipped"] = str(exc)
            out["points"].append(point)
        return out


# --- report ---------------------------------------------------------------------------------


class Progress:
    """Progress on stderr, one line per step: time elapsed, an estimate of the time left (the
    plan's remaining estimate, scaled by how the run has kept to the plan so far) and what runs
    now. ``out`` takes each line (the module's ``log`` by default)."""

    def __init__(self, total: float, out: Callable[[str], None] = log) -> None:
        self.t0 = time.monotonic()
        self.total = max(total, 1.0)
        self.done = 0.0  # planned seconds of the steps before the current one
        self.current = 0.0
        self.out = out
        self.plan: dict[str, float] = {}  # estimated seconds per step key (``plan()``)

    def step(self, msg: str, estimate: float = 0.0) -> None:
        self.done += self.current
        self.current = estimate
        elapsed = time.monotonic() - self.t0
        # how the run keeps to the plan, once enough of it has run to tell
        pace = min(max(elapsed / self.done, 0.6), 2.5) if self.done >= 0.15 * self.total else 1.0
        left = max(self.total - self.done, 0.0) * pace
        self.out(f"[{_clock(elapsed)} elapsed, ~{_clock(left)} left] {msg}")

    def __call__(self, msg: str) -> None:
        self.step(msg, 0.0)

    def begin(self, key: str, msg: str) -> None:
        """A step of the plan (``plan()``'s key) begins."""
        self.step(msg, self.plan.get(key, 0.0))


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds + 0.5), 60)
    return f"{m}:{s:02d}"


def _trial_s(seconds: float) -> float:
    return seconds + 0.25  # a trial's drain and set-up


def plan(systems: list[str], profile: Profile, cpu_only: bool = False) -> dict[str, float]:
    """Estimated seconds of each phase of :func:`run` (for the progress display)."""
    p = profile
    n = len(systems)
    turn = sum(1 for s in systems if CLASSES[s].kind == "turn")
    est = {
        "start": 2.0 * n,
        "interleaved": n * (0.5 + p.cpu_rounds * len(p.sizes) * _trial_s(p.fixed_seconds)),
    }
    if cpu_only:
        return est
    for name in p.workloads:
        spec = workloads.WORKLOADS[name]
        calls = max(1, round(spec.calls * p.workload_scale))
        est[f"workload {name}"] = (
            turn * calls * 0.004
            + n * _trial_s(0.3)
            + p.workload_rounds
            * ((n + 1) * _trial_s(p.workload_seconds) + calls * p.workload_seconds * 0.005)
        )
    per_size = p.search_budget + p.search_step_seconds + 2 * p.trials * _trial_s(p.latency_seconds)
    for name in systems:
        e = 2.0 + len(p.sizes) * per_size
        if CLASSES[name].kind == "turn":
            e += sum(c * 0.0015 + p.trials * _trial_s(p.fixed_seconds) for c in p.alloc_counts)
        est[name] = e
    if "ours" in systems:
        for w in p.workers:
            est[f"workers {w}"] = 3.0 + p.trials * _trial_s(p.fixed_seconds) + p.search_budget
    return est


def run(
    systems: list[str],
    profile: Profile,
    out: Path,
    progress: Callable[[str], None] = log,
    *,
    cpu_only: bool = False,
    plots: bool = True,
) -> dict[str, Any]:
    """Run the benchmark; write the JSON report to ``out`` and, with ``plots``, the PNG plots
    next to it (``plots.draw``). ``progress`` takes the progress lines."""
    est = plan(systems, profile, cpu_only)
    prog = Progress(sum(est.values()), progress)
    prog.plan = est
    pinned = loadgen.pin([os.getpid()], GEN_CPU)
    report: dict[str, Any] = {
        "machine": machine(),
        "pinned": pinned,
        "generator_cpu": GEN_CPU,
        "system_cpu": SYSTEM_CPU,
        "profile": profile.__dict__,
        "flows": FLOWS,
        "systems": {},
    }
    started = time.monotonic()
    rig = loadgen.Rig()
    bench = Bench(profile, rig)
    try:
        with tempfile.TemporaryDirectory(prefix="clickacall-bench-") as tmp:
            cpu: dict[str, dict[str, dict[str, float]]] = {}
            with contextlib.ExitStack() as stack:
                prog.begin("start", "starting " + ", ".join(systems))
                live: list[System] = []
                for name in systems:
                    system = CLASSES[name](name, Path(tmp), rig.addr)
                    try:
                        live.append(stack.enter_context(running(system)))
                    except SkipSystem as exc:
                        log(f"{name}: skipped in the CPU comparison: {exc}")
                if live:
                    prog.begin(
                        "interleaved",
                        "interleaved CPU comparison: " + ", ".join(s.name for s in live),
                    )
                    cpu = bench.interleaved(live)
                    if profile.workloads and not cpu_only:
                        report["workloads"] = bench.workloads(live, prog.begin)
            report["interleaved_cpu"] = cpu
            report.update(switch_costs(cpu))
            for name in [] if cpu_only else systems:
                prog.begin(
                    name,
                    f"{name}: rate search, latency"
                    + (", allocations" if CLASSES[name].kind == "turn" else ""),
                )
                system = CLASSES[name](name, Path(tmp), rig.addr)
                try:
                    with running(system):
                        report["systems"][name] = bench.system(system, cpu.get(name))
                except SkipSystem as exc:
                    log(f"{name}: skipped: {exc}")
                    report["systems"][name] = {"label": LABELS[name], "skipped": str(exc)}
            if "ours" in systems and profile.workers and not cpu_only:
                report["workers"] = bench.workers(Path(tmp), prog.begin)
    finally:
        bench.direct.close()
        rig.close()
    report["ratios"] = ratios(report["systems"], profile.sizes)
    report["workload_ratios"] = workload_ratios(report.get("workloads") or {})
    report["seconds"] = time.monotonic() - started
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=float))
    if plots:
        prog.step("plots")
        report["plots"] = draw_plots(report, out)
        out.write_text(json.dumps(report, indent=2, default=float))
    return report


def draw_plots(report: dict[str, Any], out: Path) -> dict[str, Any]:
    """The report's PNG plots next to ``out``; where matplotlib is missing, why not."""
    try:
        from bench import plots
    except ImportError as exc:  # matplotlib: pip install 'clickacall[bench]'
        log(f"plots skipped: {exc}")
        return {"skipped": f"{exc} (pip install 'clickacall[bench]')"}
    prefix = "" if out.stem == "report" else f"{out.stem}-"
    files = plots.draw(report, out.parent, prefix)
    return {k: str(v) for k, v in files.items()}


def _names(
    text: str | None, known: list[str], what: str, ap: argparse.ArgumentParser
) -> list[str] | None:
    if text is None:
        return None
    names = [] if text in ("", "none") else [x for x in text.split(",") if x]
    unknown = set(names) - set(known)
    if unknown:
        ap.error(f"unknown {what}: {', '.join(sorted(unknown))} (choose from {', '.join(known)})")
    return names


def main(argv: list[str] | None = None, prog: str = "python -m bench") -> int:
    ap = argparse.ArgumentParser(
        prog=prog,
        description=__doc__.split("\n")[0],
        epilog="Writes the table to stdout, progress to stderr, the JSON report to --out and "
        "the PNG plots next to it. See README.md, section Benchmarks, for each figure.",
    )
    ap.add_argument("--quick", action="store_true", help="short run (about 2 minutes)")
    ap.add_argument(
        "--systems",
        default=",".join(ALL_SYSTEMS),
        help=f"comma-separated subset of {','.join(ALL_SYSTEMS)}",
    )
    ap.add_argument("--sizes", help="payload sizes in bytes, comma-separated (default 200,1200)")
    ap.add_argument("--rate", type=float, help="fixed offered rate, packets/s (default 100000)")
    ap.add_argument("--trials", type=int, help="repeats per figure (median)")
    ap.add_argument("--allocs", help="idle allocation counts for TURN systems, e.g. 10,1000,5000")
    ap.add_argument(
        "--workloads",
        help=f"call workloads, comma-separated subset of {','.join(workloads.WORKLOADS)}"
        " or 'none' (default: all)",
    )
    ap.add_argument(
        "--calls-scale",
        type=float,
        help="number of calls per workload relative to the default "
        "(voice 400, video 100, screen 100, mix 300; --quick: 0.25)",
    )
    ap.add_argument(
        "--workload-seconds",
        type=float,
        help="seconds of every call per workload trial (default 2)",
    )
    ap.add_argument(
        "--workers",
        help="worker counts for our relay's scaling run, e.g. 1,2 or 'none' (default 1,2)",
    )
    ap.add_argument(
        "--quality-off",
        action="store_true",
        help="also run our relay with --quality off (ours-noq) and report the "
        "per-packet cost of RTP inspection",
    )
    ap.add_argument(
        "--gso-off",
        action="store_true",
        help="also run our relay with --gso off (ours-nogso) and report what UDP "
        "segmentation offload saves per packet",
    )
    ap.add_argument(
        "--cpu-only",
        action="store_true",
        help="only the interleaved CPU-per-packet rounds (no rate search, latency, "
        "workload, allocation or worker runs)",
    )
    ap.add_argument("--rounds", type=int, help="interleaved CPU rounds (median)")
    ap.add_argument("--no-plots", action="store_true", help="write no PNG plots")
    ap.add_argument("--out", type=Path, default=OUT / "report.json")
    args = ap.parse_args(argv)
    profile = copy.deepcopy(QUICK if args.quick else FULL)
    if args.sizes:
        profile.sizes = [int(s) for s in args.sizes.split(",")]
    if args.rate:
        profile.fixed_rate = args.rate
    if args.trials:
        profile.trials = args.trials
    if args.allocs is not None:
        profile.alloc_counts = [int(s) for s in args.allocs.split(",") if s]
    if args.rounds:
        profile.cpu_rounds = args.rounds
    wl = _names(args.workloads, list(workloads.WORKLOADS), "workloads", ap)
    if wl is not None:
        profile.workloads = wl
    if args.calls_scale is not None:
        if args.calls_scale <= 0:
            ap.error("--calls-scale must be positive")
        profile.workload_scale = args.calls_scale
    if args.workload_seconds is not None:
        if not 0 < args.workload_seconds <= 30:
            ap.error("--workload-seconds must be in (0, 30]")
        profile.workload_seconds = args.workload_seconds
    if args.workers is not None:
        try:
            profile.workers = (
                [int(w) for w in args.workers.split(",") if w] if args.workers != "none" else []
            )
        except ValueError:
            ap.error(f"--workers: not a list of counts: {args.workers!r}")
        if any(not 1 <= w <= 64 for w in profile.workers):
            ap.error("--workers: counts are 1..64")
    systems = [s for s in args.systems.split(",") if s]
    for flag, name in ((args.quality_off, "ours-noq"), (args.gso_off, "ours-nogso")):
        if flag and name not in systems:
            systems.append(name)
    unknown = set(systems) - set(ALL_SYSTEMS) - set(OPTIONAL_SYSTEMS)
    if unknown:
        ap.error(f"unknown systems: {', '.join(sorted(unknown))}")
    report = run(systems, profile, args.out, cpu_only=args.cpu_only, plots=not args.no_plots)
    print(table(report))
    log(f"report: {args.out} ({report['seconds']:.0f}s)")
    for name, path in (report.get("plots") or {}).items():
        if name != "skipped":
            log(f"plot {name}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
