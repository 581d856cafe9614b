"""Relay benchmark: our relay against coturn, a plain C forwarder and a bare uvloop forwarder.

    python -m bench                 # full run (a few minutes)
    python -m bench --quick         # short run (< 60 s)
    python -m bench --systems ours,coturn --sizes 200
    python -m bench --quality-off --systems ours --cpu-only   # cost of RTP inspection

Each system runs with one worker/thread, pinned to CPU 1; the generator and its echo peer run on
CPU 0. 4 flows of ChannelData go generator -> system -> echo -> system -> generator. For TURN
systems every flow is a real allocation (REST credentials) with a channel bound to the echo.
Figures: CPU time per relayed packet (both directions) at a fixed offered rate, the highest
offered rate with < 1% loss, relay-added round-trip latency (minus the direct generator->echo
path, same rate, same run) at half that rate, and for TURN systems the per-packet cost with 10
and with 5,000 live idle allocations and the resident memory per allocation.
``--quality-off`` adds our relay started with ``--quality off`` (system ``ours-noq``) to the
interleaved CPU rounds and reports the per-packet cost of RTP/RTCP inspection (on / off; the
generator's packets carry RTP headers, so inspection does its real work).
Progress goes to stderr; the table to stdout; everything to bench/out/report.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import loadgen, turnclient

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
SECRET = "bench-secret"
REALM = "bench"
FLOWS = 4
SYSTEM_CPU, GEN_CPU = 1, 0
ALL_SYSTEMS = ["ours", "coturn", "cfwd", "pyfwd"]
OPTIONAL_SYSTEMS = ["ours-noq"]  # our relay with RTP inspection off (--quality-off)
LABELS = {
    "ours": "clickacall",
    "ours-noq": "clickacall q-off",
    "coturn": "coturn",
    "cfwd": "C forwarder",
    "pyfwd": "uvloop fwd",
}


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


FULL = Profile(sizes=[200, 1200], fixed_rate=100_000, fixed_seconds=2.0, trials=3,
               search_start=40_000, search_ceiling=600_000, search_step_seconds=1.0,
               search_budget=12.0, latency_seconds=1.0, alloc_counts=[10, 5000],
               alloc_seconds=40.0, cpu_rounds=7)
QUICK = Profile(sizes=[200, 1200], fixed_rate=100_000, fixed_seconds=0.6, trials=1,
                search_start=60_000, search_ceiling=600_000, search_step_seconds=0.3,
                search_budget=2.0, latency_seconds=0.4, alloc_counts=[10, 1000],
                alloc_seconds=10.0, cpu_rounds=3)


# --- systems under test ---------------------------------------------------------------------

def _pin_child() -> None:  # runs in the child between fork and exec
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > SYSTEM_CPU:
        os.sched_setaffinity(0, {SYSTEM_CPU})


class System:
    kind = "fwd"  # or "turn"

    def __init__(self, name: str, workdir: Path, echo: tuple[str, int]) -> None:
        self.name = name
        self.workdir = workdir
        self.echo = echo
        self.port = loadgen.free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.logfile = workdir / f"{name}.log"

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self, timeout: float = 20.0) -> None:
        cmd = self.command()
        with open(self.logfile, "wb") as out:
            self.proc = subprocess.Popen(
                cmd, cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, preexec_fn=_pin_child,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SkipSystem(f"exited with {self.proc.returncode}: {self.log_tail()}")
            if self.ready():
                loadgen.pin(self.pids(), SYSTEM_CPU)
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


class TurnSystem(System):
    kind = "turn"

    def ready(self) -> bool:
        # any STUN answer to an unauthenticated Allocate (a 401) means it is serving
        client = turnclient.TurnClient((loadgen.HOST, self.port), SECRET, REALM, timeout=0.2,
                                       tries=1)
        try:
            client._transact(turnclient.ALLOCATE, [(turnclient.REQUESTED_TRANSPORT,
                                                    turnclient.UDP)], auth=False)
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


class Ours(TurnSystem):
    def command(self) -> list[str]:
        return [sys.executable, "-m", "relay", "--listen", f"{loadgen.HOST}:{self.port}",
                "--relay-ip", loadgen.HOST, "--realm", REALM, "--auth-secret", SECRET,
                "--allow-peer", "127.0.0.0/8", "--workers", "1", "--ports", "22000-31999"]


class OursNoQuality(Ours):
    def command(self) -> list[str]:
        return [*super().command(), "--quality", "off"]


class Coturn(TurnSystem):
    def command(self) -> list[str]:
        exe = shutil.which("turnserver")
        if exe is None:
            raise SkipSystem("turnserver not installed (make debs)")
        # --relay-threads 1: one relay thread ("Total General servers: 1" in its log); the
        # listener, auth and admin threads are counted too (all threads of the process).
        return [exe, "-n", "--listening-ip", loadgen.HOST, "--listening-port", str(self.port),
                "--relay-ip", loadgen.HOST, "--min-port", "12000", "--max-port", "21999",
                "--use-auth-secret", "--static-auth-secret", SECRET, "--realm", REALM,
                "--allow-loopback-peers", "--relay-threads", "1", "--no-tcp", "--no-tls",
                "--no-dtls", "--no-tcp-relay", "--no-cli", "--log-file", "stdout",
                "--simple-log", "--pidfile", str(self.workdir / "turnserver.pid"),
                "--db", str(self.workdir / "turndb")]


class CForwarder(System):
    def command(self) -> list[str]:
        gcc = shutil.which("gcc") or shutil.which("cc")
        if gcc is None:
            raise SkipSystem("no C compiler")
        OUT.mkdir(parents=True, exist_ok=True)
        exe = OUT / "cfwd"
        src = ROOT / "bench" / "cfwd.c"
        if not exe.exists() or exe.stat().st_mtime < src.stat().st_mtime:
            res = subprocess.run([gcc, "-O2", "-Wall", "-o", str(exe), str(src)],
                                 capture_output=True, text=True)
            if res.returncode:
                raise SkipSystem(f"gcc failed: {res.stderr[-400:]}")
        return [str(exe), str(self.port), str(self.echo[1])]


class PyForwarder(System):
    def command(self) -> list[str]:
        return [sys.executable, "-m", "bench.pyfwd", str(self.port), str(self.echo[1])]


CLASSES: dict[str, type[System]] = {
    "ours": Ours, "ours-noq": OursNoQuality, "coturn": Coturn, "cfwd": CForwarder, "pyfwd": PyForwarder,
}


@contextlib.contextmanager
def running(system: System) -> Iterator[System]:
    try:
        system.start()
        yield system
    finally:
        system.stop()


# --- measurements ---------------------------------------------------------------------------

class Bench:
    def __init__(self, profile: Profile, rig: loadgen.Rig) -> None:
        self.p = profile
        self.rig = rig
        self.direct = loadgen.direct_flows(rig.addr, FLOWS)
        self.direct_gens = {size: self.direct.generator(size) for size in profile.sizes}

    def fixed(self, gen: Any, pids: list[int], rate: float | None = None) -> dict[str, float]:
        rate = rate or self.p.fixed_rate
        runs = [loadgen.trial(self.rig, gen, rate, self.p.fixed_seconds, pids)
                for _ in range(self.p.trials)]
        return loadgen.median(runs)

    def latency(self, gen: Any, size: int, rate: float, pids: list[int]) -> dict[str, float]:
        """Relay-added RTT at ``rate``: paired trials through the system and direct."""
        through, direct = [], []
        for _ in range(self.p.trials):
            through.append(loadgen.trial(self.rig, gen, rate, self.p.latency_seconds, pids))
            direct.append(loadgen.trial(self.rig, self.direct_gens[size], rate,
                                        self.p.latency_seconds, []))
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
            gens = {name: {size: f.generator(size) for size in self.p.sizes}
                    for name, f in flows.items()}
            runs: dict[str, dict[int, list[dict[str, float]]]] = {
                s.name: {size: [] for size in self.p.sizes} for s in systems}
            for s in systems:  # warm up
                loadgen.trial(self.rig, gens[s.name][self.p.sizes[0]], 20_000, 0.2, s.pids())
            for r in range(self.p.cpu_rounds):
                order = systems[r % len(systems):] + systems[:r % len(systems)]
                for size in self.p.sizes:
                    for s in order:
                        runs[s.name][size].append(loadgen.trial(
                            self.rig, gens[s.name][size], self.p.fixed_rate,
                            self.p.fixed_seconds, s.pids()))
                log(f"  cpu round {r + 1}/{self.p.cpu_rounds}: " + ", ".join(
                    f"{s.name} {runs[s.name][self.p.sizes[0]][-1]['cpu_us_per_pkt']:.2f}"
                    for s in systems))
            return {name: {str(size): loadgen.median(v) for size, v in per.items()}
                    for name, per in runs.items()}
        finally:
            for f in flows.values():
                f.close()

    def system(self, system: System,
               fixed_given: dict[str, dict[str, float]] | None = None) -> dict[str, Any]:
        result: dict[str, Any] = {"label": LABELS[system.name], "sizes": {}}
        pids = system.pids()
        result["threads"] = sum(len(os.listdir(f"/proc/{p}/task")) for p in pids
                                if os.path.isdir(f"/proc/{p}/task"))
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
                        self.rig, gen, r, self.p.search_step_seconds, pids),
                    self.p.search_start, self.p.search_ceiling, self.p.search_budget, log)
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
                }
            if system.kind == "turn":
                result["allocations"] = self.allocations(system, gens[self.p.sizes[0]],
                                                         self.p.sizes[0])
        finally:
            flows.close()
        return result

    def allocations(self, system: System, gen: Any, size: int) -> dict[str, Any]:
        """Per-packet cost with N live idle allocations, and resident memory per allocation."""
        out: dict[str, Any] = {"size": size, "points": []}
        pids = system.pids()
        rss0 = loadgen.rss_bytes(pids)
        idle: list[Any] = []
        deadline = time.monotonic() + self.p.alloc_seconds
        try:
            for target in self.p.alloc_counts:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                t0 = time.monotonic()
                idle += turnclient.allocate_many((loadgen.HOST, system.port),
                                                 target - len(idle), SECRET, REALM,
                                                 max_seconds=left)
                took = time.monotonic() - t0
                time.sleep(0.2)
                rss = loadgen.rss_bytes(pids)
                log(f"  {system.name}: {len(idle)} idle allocations ({took:.1f}s); "
                    f"fixed {self.p.fixed_rate:,.0f}/s")
                fixed = self.fixed(gen, pids)
                log(f"    {fixed['cpu_us_per_pkt']:.2f} us/pkt, loss {fixed['loss']:.2%}")
                out["points"].append({
                    "allocations": len(idle),
                    "setup_seconds": took,
                    "rss_bytes": rss,
                    "rss_per_allocation_bytes": (rss - rss0) / len(idle) if idle else math.nan,
                    "fixed": fixed,
                })
        finally:
            turnclient.close_all(idle)
        out["rss_before_bytes"] = rss0
        return out


# --- report ---------------------------------------------------------------------------------

def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not b or math.isnan(a) or math.isnan(b):
        return None
    return a / b


def ratios(systems: dict[str, Any], sizes: list[int]) -> dict[str, Any]:
    ours = systems.get("ours")
    if not ours or "sizes" not in ours:
        return {}
    out: dict[str, Any] = {}
    for other in ("coturn", "cfwd"):
        them = systems.get(other)
        if not them or "sizes" not in them:
            continue
        for size in map(str, sizes):
            a, b = ours["sizes"].get(size), them["sizes"].get(size)
            if not a or not b:
                continue
            out[f"ours/{other}/{size}"] = {
                "cpu_per_pkt": _ratio(a["fixed"]["cpu_us_per_pkt"], b["fixed"]["cpu_us_per_pkt"]),
                "max_rate": _ratio(a["max_rate"], b["max_rate"]),
                "added_p50": _ratio(a["latency"]["added_p50_us"], b["latency"]["added_p50_us"]),
                "added_p99": _ratio(a["latency"]["added_p99_us"], b["latency"]["added_p99_us"]),
            }
    return out


def quality_cost(cpu: dict[str, dict[str, dict[str, float]]]) -> dict[str, Any]:
    """CPU per packet with RTP inspection on (ours) and off (ours-noq), per size."""
    on, off = cpu.get("ours"), cpu.get("ours-noq")
    if not on or not off:
        return {}
    out: dict[str, Any] = {}
    for size in on:
        if size in off:
            a, b = on[size]["cpu_us_per_pkt"], off[size]["cpu_us_per_pkt"]
            out[size] = {"on_us_per_pkt": a, "off_us_per_pkt": b, "ratio": _ratio(a, b)}
    return out


def table(report: dict[str, Any]) -> str:
    rate = report["profile"]["fixed_rate"]
    lines = [
        f"{'system':<12} {'size':>5} {'us/pkt@' + format(rate / 1000, '.0f') + 'k':>11} "
        f"{'loss':>6} {'max pps <1%':>12} {'by':>9} {'+p50 us':>8} {'+p99 us':>8}",
    ]
    for name, res in report["systems"].items():
        if "skipped" in res:
            lines.append(f"{LABELS[name]:<12} skipped: {res['skipped'][:200]}")
            continue
        for size, r in res["sizes"].items():
            f, lat = r["fixed"], r["latency"]
            lines.append(
                f"{res['label']:<12} {size:>5} {f['cpu_us_per_pkt']:>11.2f} {f['loss']:>6.2%} "
                f"{r['max_rate']:>12,.0f} {r['max_rate_limited_by']:>9} "
                f"{lat['added_p50_us']:>8.1f} {lat['added_p99_us']:>8.1f}")
    for res in report["systems"].values():
        alloc = res.get("allocations")
        if not alloc:
            continue
        for p in alloc["points"]:
            lines.append(
                f"{res['label']}: {p['allocations']:>5} idle allocations: "
                f"{p['fixed']['cpu_us_per_pkt']:.2f} us/pkt ({alloc['size']} B, "
                f"loss {p['fixed']['loss']:.2%}), RSS {p['rss_bytes'] / 2**20:.1f} MiB, "
                f"{p['rss_per_allocation_bytes'] / 1024:.2f} KiB/allocation")
    for size, q in report.get("quality_cost", {}).items():
        ratio = q["ratio"]
        lines.append(
            f"RTP inspection {size} B: on {q['on_us_per_pkt']:.3f} us/pkt, off "
            f"{q['off_us_per_pkt']:.3f} us/pkt"
            + (f", on/off {ratio:.3f} ({(ratio - 1) * 100:+.1f}%)" if ratio else ""))
    if not report["systems"]:
        for name, per in report.get("interleaved_cpu", {}).items():
            for size, f in per.items():
                lines.append(f"{LABELS[name]:<16} {size:>5} B: {f['cpu_us_per_pkt']:.3f} us/pkt, "
                             f"loss {f['loss']:.2%} (interleaved median)")
    for key, r in report["ratios"].items():
        vals = ", ".join(f"{k} {v:.2f}" for k, v in r.items() if v is not None)
        lines.append(f"ratio {key}: {vals}")
    lines.append(f"generator CPU {GEN_CPU}, systems CPU {SYSTEM_CPU}; us/pkt: medians of "
                 f"{report['profile']['cpu_rounds']} interleaved rounds; other figures: "
                 f"medians of {report['profile']['trials']} trial(s); +p50/+p99 = RTT minus "
                 f"the direct path's at half the max rate")
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"cpus": os.cpu_count(), "cpu_model": model, "kernel": platform.release(),
            "python": platform.python_version()}


def run(systems: list[str], profile: Profile, out: Path,
        progress: Callable[[str], None] = log, *, cpu_only: bool = False) -> dict[str, Any]:
    pinned = loadgen.pin([os.getpid()], GEN_CPU)
    report: dict[str, Any] = {
        "machine": machine(),
        "pinned": pinned,
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
                live: list[System] = []
                for name in systems:
                    system = CLASSES[name](name, Path(tmp), rig.addr)
                    try:
                        live.append(stack.enter_context(running(system)))
                    except SkipSystem as exc:
                        progress(f"{name}: skipped in the CPU comparison: {exc}")
                if live:
                    progress("interleaved CPU comparison: " + ", ".join(s.name for s in live))
                    cpu = bench.interleaved(live)
            report["interleaved_cpu"] = cpu
            report["quality_cost"] = quality_cost(cpu)
            for name in [] if cpu_only else systems:
                progress(f"{name}: starting")
                system = CLASSES[name](name, Path(tmp), rig.addr)
                try:
                    with running(system):
                        report["systems"][name] = bench.system(system, cpu.get(name))
                except SkipSystem as exc:
                    progress(f"{name}: skipped: {exc}")
                    report["systems"][name] = {"label": LABELS[name], "skipped": str(exc)}
    finally:
        bench.direct.close()
        rig.close()
    report["ratios"] = ratios(report["systems"], profile.sizes)
    report["seconds"] = time.monotonic() - started
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=float))
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="short run (< 60 s)")
    ap.add_argument("--systems", default=",".join(ALL_SYSTEMS),
                    help=f"comma-separated subset of {','.join(ALL_SYSTEMS)}")
    ap.add_argument("--sizes", help="payload sizes in bytes, comma-separated (default 200,1200)")
    ap.add_argument("--rate", type=float, help="fixed offered rate, packets/s (default 100000)")
    ap.add_argument("--trials", type=int, help="repeats per figure (median)")
    ap.add_argument("--allocs", help="idle allocation counts for TURN systems, e.g. 10,5000")
    ap.add_argument("--quality-off", action="store_true",
                    help="also run our relay with --quality off (ours-noq) and report the "
                         "per-packet cost of RTP inspection")
    ap.add_argument("--cpu-only", action="store_true",
                    help="only the interleaved CPU-per-packet rounds (no rate search, latency "
                         "or allocation runs)")
    ap.add_argument("--rounds", type=int, help="interleaved CPU rounds (median)")
    ap.add_argument("--out", type=Path, default=OUT / "report.json")
    args = ap.parse_args(argv)
    profile = Profile(**(QUICK if args.quick else FULL).__dict__)
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
    systems = [s for s in args.systems.split(",") if s]
    if args.quality_off and "ours-noq" not in systems:
        systems.append("ours-noq")
    unknown = set(systems) - set(ALL_SYSTEMS) - set(OPTIONAL_SYSTEMS)
    if unknown:
        ap.error(f"unknown systems: {', '.join(sorted(unknown))}")
    report = run(systems, profile, args.out, cpu_only=args.cpu_only)
    print(table(report))
    log(f"report: {args.out} ({report['seconds']:.0f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
