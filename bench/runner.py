"""The relay benchmark's runner: the profiles (full, quick), the measurements over the systems
of ``bench.systems`` and the run that writes the JSON report and its plots.

Figures: CPU time per relayed packet (both directions) at a fixed offered rate, the highest
offered rate with < 1% loss, relay-added round-trip latency (minus the direct generator->echo
path, same rate, same run) at half that rate, and for TURN systems the per-packet cost with 10
and with 5,000 live idle allocations and the resident memory per allocation. ``ours-noq`` (our
relay with ``--quality off``) in the interleaved CPU rounds gives the per-packet cost of RTP/RTCP
inspection (the generator's packets carry RTP headers, so inspection does its real work);
``ours-nogso`` (``--gso off``) sends every datagram as its own sendmmsg entry, as the C
forwarder does, instead of same-destination runs as one UDP_SEGMENT message.

Call workloads (bench/workloads.py: voice, video, screen-share and a mix, each call a TURN
allocation carrying real SRTP made with pylibsrtp) run over every system at once, interleaved
like the CPU rounds: CPU per relayed packet, loss and latency per workload and system. Our relay
also runs with 1 and with 2 workers, and the TURN systems with 10, 1,000 and 10,000 live idle
allocations.

TURN over TCP and TLS (``transports``: ``tcp``, ``tls``): ours and coturn serve both besides
UDP, and the same interleaved CPU rounds run over every (system, transport) pair at
``stream_rate`` through clients on TCP or TLS connections (ext/_streamgen.pyx: one write, one
TLS record per packet, as a browser sends), the relayed side staying UDP.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import resource
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench import loadgen, perfprof, turnclient, workloads
from bench.report import (
    GEN_CPU,
    LABELS,
    SYSTEM_CPU,
    cdf,
    machine,
    ratios,
    switch_costs,
    workload_ratios,
)
from bench.systems import (
    CLASSES,
    COALESCE_US,
    FLOWS,
    REALM,
    SECRET,
    OursWorkers,
    SkipSystem,
    System,
    create,
    log,
    running,
)
from relay import procstat


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
    # their CPU per packet is compared at this total rate: one that 2 workers carry without
    # loss on a 2-core machine where one of them shares the generator's core (at
    # ``fixed_rate`` the generator and the worker beside it overload that core)
    workers_rate: float = 40_000
    workers_rounds: int = 5  # interleaved rounds of the worker counts (median)
    workers_coalesce_us: int = 0  # their --coalesce-us (0: off, ours' default)
    coalesce_us: int = COALESCE_US  # ours-coalesce's --coalesce-us
    # relay-added latency at fixed rates, every system in turn round after round (the order
    # rotating) with a direct run in each round; none unless asked for
    latency_rates: list[float] = field(default_factory=list)
    latency_rounds: int = 5
    # TURN over TCP and TLS: CPU per packet at this offered rate (the stream generator sends
    # one write per packet, so it offers less than the UDP one's batches)
    stream_rate: float = 20_000


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
    alloc_counts=[10, 1000, 10_000],
    alloc_seconds=90.0,
    cpu_rounds=7,
    workloads=["voice", "video", "screen", "mix"],
    workload_seconds=2.0,
    workload_rounds=3,
    workload_scale=1.0,
    workers=[1, 2],
    latency_rates=[50_000, 100_000],
    latency_rounds=15,
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
    workers_rounds=1,
    latency_rates=[50_000, 100_000],
    latency_rounds=1,
)

# --- measurements ---------------------------------------------------------------------------

Step = Callable[[str, str], None]  # (plan key, message): a progress step begins


def _log_step(_key: str, msg: str) -> None:
    log(msg)


def added(through: dict[str, float], direct: dict[str, float]) -> dict[str, float]:
    """Loss and round-trip percentiles of a trial through a system, the direct path's, and
    the difference: the latency the system adds."""
    return {
        "loss": through["loss"],
        "rtt_p50_us": through["rtt_p50_us"],
        "rtt_p99_us": through["rtt_p99_us"],
        "direct_rtt_p50_us": direct["rtt_p50_us"],
        "direct_rtt_p99_us": direct["rtt_p99_us"],
        "added_p50_us": through["rtt_p50_us"] - direct["rtt_p50_us"],
        "added_p99_us": through["rtt_p99_us"] - direct["rtt_p99_us"],
    }


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

    def max_rate(self, gen: Any, pids: list[int]) -> dict[str, object]:
        """The highest rate ``gen`` carries through ``pids`` under 1% loss (ramp, bisection)."""
        return loadgen.find_max_rate(
            lambda r: loadgen.trial(self.rig, gen, r, self.p.search_step_seconds, pids),
            self.p.search_start,
            self.p.search_ceiling,
            self.p.search_budget,
            log,
        )

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
        return {"rate": rate, **added(loadgen.median(through), loadgen.median(direct))}

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

    def latency_rounds(self, systems: list[System]) -> dict[str, Any]:
        """Relay-added round-trip time of the first payload size at each of
        ``latency_rates``: every system in turn, round after round with the order rotating,
        and in each round a direct run (generator -> echo, no relay) that its systems' added
        latency is taken against, so that a stall of the shared machine lands on one round of
        every system instead of on one system's only figure. Per rate and system: each
        round's added p50 and p99, their medians and the p99s' spread, the loss, and the CDF
        of every round's round trips pooled."""
        size = self.p.sizes[0]
        seconds = self.p.latency_seconds
        flows = {s.name: s.flows() for s in systems}
        out: dict[str, Any] = {
            "size": size,
            "rounds": self.p.latency_rounds,
            "seconds": seconds,
            "rates": {},
        }
        try:
            gens = {name: f.generator(size) for name, f in flows.items()}
            direct = self.direct_gens[size]
            for s in systems:  # warm up
                loadgen.trial(self.rig, gens[s.name], 20_000, 0.2, s.pids())
            for rate in self.p.latency_rates:
                rows: dict[str, list[dict[str, float]]] = {s.name: [] for s in systems}
                rtts: dict[str, list[np.ndarray]] = {s.name: [] for s in systems}
                d_rtts: list[np.ndarray] = []
                for r in range(self.p.latency_rounds):
                    d = loadgen.trial(self.rig, direct, rate, seconds, [])
                    d_rtts.append(np.frombuffer(direct.rtts(), dtype=np.uint32).copy())
                    for s in systems[r % len(systems) :] + systems[: r % len(systems)]:
                        t = loadgen.trial(self.rig, gens[s.name], rate, seconds, s.pids())
                        rtts[s.name].append(
                            np.frombuffer(gens[s.name].rtts(), dtype=np.uint32).copy()
                        )
                        rows[s.name].append(added(t, d))
                    log(
                        f"  latency {rate:,.0f}/s round {r + 1}/{self.p.latency_rounds}: "
                        + ", ".join(
                            f"{s.name} +{rows[s.name][-1]['added_p99_us']:.0f}" for s in systems
                        )
                        + " us p99"
                    )
                d_all = np.concatenate(d_rtts)
                per: dict[str, Any] = {}
                for s in systems:
                    rs = rows[s.name]
                    p99 = [x["added_p99_us"] for x in rs]
                    per[s.name] = {
                        "label": LABELS[s.name],
                        "added_p50_us": float(np.median([x["added_p50_us"] for x in rs])),
                        "added_p99_us": float(np.median(p99)),
                        "added_p99_min_us": float(min(p99)),
                        "added_p99_max_us": float(max(p99)),
                        "loss": float(np.median([x["loss"] for x in rs])),
                        "rounds": rs,
                        "cdf": cdf(np.concatenate(rtts[s.name]), d_all),
                    }
                out["rates"][str(int(rate))] = per
            return out
        finally:
            for f in flows.values():
                f.close()

    def interleaved_streams(
        self, systems: list[System], transports: list[str]
    ) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
        """CPU per packet of every (system, transport) pair at ``stream_rate``, measured in
        turn, round after round with the order rotating, like :meth:`interleaved`; returns
        per transport, system and size the per-key medians over the rounds."""
        pairs = [(s, t) for t in transports for s in systems]
        flows: dict[tuple[str, str], loadgen.StreamFlows] = {}
        try:
            live = []
            for s, t in pairs:
                try:
                    flows[(s.name, t)] = s.stream_flows(t)
                    live.append((s, t))
                except SkipSystem as exc:
                    log(f"  {s.name} over {t}: skipped: {exc}")
            gens = {
                key: {size: f.generator(size) for size in self.p.sizes} for key, f in flows.items()
            }
            runs: dict[tuple[str, str], dict[int, list[dict[str, float]]]] = {
                key: {size: [] for size in self.p.sizes} for key in flows
            }
            for s, t in live:  # warm up
                loadgen.trial(self.rig, gens[(s.name, t)][self.p.sizes[0]], 5_000, 0.3, s.pids())
            for r in range(self.p.cpu_rounds):
                order = live[r % len(live) :] + live[: r % len(live)] if live else []
                for size in self.p.sizes:
                    for s, t in order:
                        runs[(s.name, t)][size].append(
                            loadgen.trial(
                                self.rig,
                                gens[(s.name, t)][size],
                                self.p.stream_rate,
                                self.p.fixed_seconds,
                                s.pids(),
                            )
                        )
                log(
                    f"  stream cpu round {r + 1}/{self.p.cpu_rounds}: "
                    + ", ".join(
                        f"{s.name}/{t} {runs[(s.name, t)][self.p.sizes[0]][-1]['cpu_us_per_pkt']:.2f}"
                        for s, t in live
                    )
                )
            out: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
            for (name, t), per in runs.items():
                out.setdefault(t, {})[name] = {
                    str(size): loadgen.median(v) for size, v in per.items() if v
                }
            return out
        finally:
            for f in flows.values():
                f.close()

    def system(
        self, system: System, fixed_given: dict[str, dict[str, float]] | None = None
    ) -> dict[str, Any]:
        result: dict[str, Any] = {"label": LABELS[system.name], "sizes": {}}
        pids = system.pids()
        result["threads"] = sum(len(procstat.threads(p)) for p in pids)
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
                search = self.max_rate(gen, pids)
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
            if system.kind == "turn" and self.p.alloc_counts:  # --allocs none: skipped
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
        limit = loadgen.open_files(max(self.p.alloc_counts) + 1024)  # a socket per allocation
        if limit != resource.RLIM_INFINITY and limit < max(self.p.alloc_counts) + 1024:
            log(f"  open-files limit {limit}: too low for {max(self.p.alloc_counts):,} allocations")
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
        """Our relay with each worker count of the profile, all running at once, each through
        ``workers_flows`` TURN allocations. CPU per packet at ``workers_rate`` is measured in
        ``workers_rounds`` interleaved rounds (the order rotating; medians), with context
        switches per packet and how the CPU splits between processes. One worker is also
        measured at ``workers_rate / N`` for every count N above one: the rate each of N
        workers sees, so that a difference that comes from a worker's smaller share (fewer
        packets per wake-up) is told apart from one that comes from the processes sharing
        cores. Then each count's highest rate under 1% loss."""
        size = self.p.sizes[0]
        out: dict[str, Any] = {
            "flows": self.p.workers_flows,
            "size": size,
            "rate": self.p.workers_rate,
            "rounds": self.p.workers_rounds,
            "coalesce_us": self.p.workers_coalesce_us,
            "points": [],
        }
        (step or _log_step)(
            "workers",
            f"ours with {', '.join(map(str, self.p.workers))} worker(s), all running, "
            f"{self.p.workers_rounds} interleaved rounds at {self.p.workers_rate:,.0f}/s",
        )
        with contextlib.ExitStack() as stack:
            live: dict[int, tuple[System, Any, dict[str, Any]]] = {}
            for w in self.p.workers:
                system = OursWorkers(
                    f"ours-w{w}",
                    workdir,
                    self.rig.addr,
                    workers=w,
                    coalesce_us=self.p.workers_coalesce_us,
                )
                system.peer = self.rig.peer
                point: dict[str, Any] = {
                    "workers": w,
                    "cpus": sorted(system.cpus),
                    "shares_generator_core": system.shares_generator_core,
                }
                out["points"].append(point)
                try:
                    stack.enter_context(running(system))
                    flows = system.call_flows(self.p.workers_flows)
                except SkipSystem as exc:
                    log(f"  ours-w{w}: skipped: {exc}")
                    point["skipped"] = str(exc)
                    continue
                stack.callback(flows.close)
                gen = flows.generator(size)
                pids = system.pids()
                point["processes"] = len(pids)
                loadgen.trial(self.rig, gen, 20_000, 0.2, pids)
                live[w] = (system, gen, point)
            # what each round measures, as (workers, rate, the point it is kept on, its key):
            # every count at the rate, and one worker at each other count's share of it
            runs: list[tuple[int, float, int, str]] = [
                (w, self.p.workers_rate, w, "fixed") for w in live
            ]
            if 1 in live:
                runs += [
                    (1, self.p.workers_rate / w, w, "one_worker_at_share") for w in live if w > 1
                ]
            got: dict[tuple[int, str], list[dict[str, float]]] = {}
            busy: dict[int, dict[int, float]] = {w: {} for w in live}
            for rnd in range(self.p.workers_rounds):
                k = rnd % len(runs) if runs else 0
                for w, rate, owner, key in runs[k:] + runs[:k]:
                    system, gen, _ = live[w]
                    pids = system.pids()
                    s0, c0 = perfprof.switches(pids), loadgen.cpu_by_pid(pids)
                    trial = loadgen.trial(self.rig, gen, rate, self.p.fixed_seconds, pids)
                    s1, c1 = perfprof.switches(pids), loadgen.cpu_by_pid(pids)
                    n = trial["relayed"] or math.nan
                    trial["voluntary_switches_per_pkt"] = (s1[0] - s0[0]) / n
                    trial["involuntary_switches_per_pkt"] = (s1[1] - s0[1]) / n
                    got.setdefault((owner, key), []).append(trial)
                    if key == "fixed":
                        for pid in pids:
                            busy[w][pid] = busy[w].get(pid, 0.0) + c1[pid] - c0.get(pid, 0.0)
                    log(
                        f"  round {rnd + 1}: {w} worker(s) at {rate:,.0f}/s: "
                        f"{trial['cpu_us_per_pkt']:.2f} us/pkt, loss {trial['loss']:.2%}, "
                        f"{trial['voluntary_switches_per_pkt']:.3f} sleeps/pkt"
                    )
            for (owner, key), trials in got.items():
                point = live[owner][2]
                point[key] = loadgen.median(trials)  # its offered rate included ("rate")
                if key == "fixed":
                    total = sum(busy[owner].values()) or math.nan
                    point["cpu_share_by_process"] = sorted(
                        (b / total for b in busy[owner].values()), reverse=True
                    )
            for w, (system, gen, point) in live.items():
                (step or _log_step)(f"workers {w}", f"ours with {w} worker(s): max rate")
                search = self.max_rate(gen, system.pids())
                point.update(
                    max_rate=float(search["max_rate"]),  # type: ignore[arg-type]
                    max_rate_limited_by=search["limited_by"],
                    search=search["steps"],
                )
        return out


# --- the run: progress, plan, report --------------------------------------------------------


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
    if p.latency_rates:
        est["latency"] = n * 0.3 + len(p.latency_rates) * p.latency_rounds * (n + 1) * _trial_s(
            p.latency_seconds
        )
    per_size = p.search_budget + p.search_step_seconds + 2 * p.trials * _trial_s(p.latency_seconds)
    for name in systems:
        e = 2.0 + len(p.sizes) * per_size
        if CLASSES[name].kind == "turn":
            e += sum(c * 0.0015 + p.trials * _trial_s(p.fixed_seconds) for c in p.alloc_counts)
        est[name] = e
    if "ours" in systems:
        shares = sum(1 for w in p.workers if w > 1) if 1 in p.workers else 0
        runs = (len(p.workers) + shares) * p.workers_rounds
        est["workers"] = 3.0 * len(p.workers) + runs * _trial_s(p.fixed_seconds)
        for w in p.workers:
            est[f"workers {w}"] = p.search_budget
    return est


def make_certificate(where: Path) -> tuple[str, str]:
    """A throwaway self-signed certificate for 127.0.0.1 (the ``openssl`` command line)."""
    cert, key = where / "bench-cert.pem", where / "bench-key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1",
            "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return str(cert), str(key)


STREAM_SYSTEMS = ("ours", "coturn")  # the systems that serve TURN over TCP and TLS


def run_streams(
    systems: list[str],
    profile: Profile,
    transports: list[str],
    rig: loadgen.Rig,
    bench: Bench,
    prog: Progress,
) -> dict[str, Any]:
    """The interleaved CPU rounds over TCP and TLS clients: ours and coturn serving UDP, TCP
    and TLS at once; returns the report's ``streams`` part (figures and ours/coturn ratios)."""
    names = [n for n in systems if n in STREAM_SYSTEMS]
    for n in systems:
        if n not in STREAM_SYSTEMS:
            log(f"{n}: no TCP or TLS clients (not a TURN server); left out of the stream rounds")
    out: dict[str, Any] = {"transports": transports, "rate": profile.stream_rate}
    with tempfile.TemporaryDirectory(prefix="clickacall-bench-streams-") as tmp:
        cert, key = make_certificate(Path(tmp))
        with contextlib.ExitStack() as stack:
            live: list[System] = []
            for name in names:
                system = create(name, Path(tmp), rig.addr, coalesce_us=profile.coalesce_us)
                try:
                    system.serve_streams(cert, key)
                    live.append(stack.enter_context(running(system)))
                except SkipSystem as exc:
                    log(f"{name}: skipped in the stream rounds: {exc}")
            prog.begin(
                "streams",
                "interleaved CPU comparison over "
                + ", ".join(transports)
                + ": "
                + ", ".join(s.name for s in live),
            )
            out["cpu"] = bench.interleaved_streams(live, transports)
    ratios: dict[str, dict[str, float | None]] = {}
    for t, per in out["cpu"].items():
        ours, coturn = per.get("ours", {}), per.get("coturn", {})
        ratios[t] = {
            size: (ours[size]["cpu_us_per_pkt"] / coturn[size]["cpu_us_per_pkt"])
            if size in coturn and coturn[size]["cpu_us_per_pkt"]
            else None
            for size in ours
        }
    out["ratios"] = ratios
    return out


def make_system(name: str, workdir: Path, rig: loadgen.Rig, profile: Profile) -> System:
    """System ``name`` with the rig's echo: one address per flow where the rig has them."""
    system = create(name, workdir, rig.addr, coalesce_us=profile.coalesce_us)
    system.peer = rig.peer
    return system


def run(
    systems: list[str],
    profile: Profile,
    out: Path,
    progress: Callable[[str], None] = log,
    *,
    cpu_only: bool = False,
    plots: bool = True,
    transports: list[str] | None = None,
) -> dict[str, Any]:
    """Run the benchmark; write the JSON report to ``out`` and, with ``plots``, the PNG plots
    next to it (``plots.draw``). ``progress`` takes the progress lines. ``transports`` beyond
    ``udp`` (``tcp``, ``tls``) add the stream rounds (:func:`run_streams`); without ``udp``
    among them only those run."""
    transports = transports or ["udp"]
    streams = [t for t in transports if t != "udp"]
    if "udp" not in transports:
        systems = [n for n in systems if n in STREAM_SYSTEMS]
        cpu_only = True
        plots = False
    est = plan(systems, profile, cpu_only) if "udp" in transports else {}
    if streams:
        est["streams"] = 4.0 + len(streams) * len(systems) * (
            2.0 + profile.cpu_rounds * len(profile.sizes) * _trial_s(profile.fixed_seconds)
        )
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
        "transports": transports,
        "systems": {},
    }
    started = time.monotonic()
    # one echo address per flow for every system when one of them needs it (ours-mux,
    # coturn-src)
    rig = loadgen.Rig(distinct_peers=any(CLASSES[n].distinct_peers for n in systems))
    bench = Bench(profile, rig)
    try:
        if streams:
            report["streams"] = run_streams(systems, profile, streams, rig, bench, prog)
        if "udp" not in transports:
            systems = []
        with tempfile.TemporaryDirectory(prefix="clickacall-bench-") as tmp:
            cpu: dict[str, dict[str, dict[str, float]]] = {}
            with contextlib.ExitStack() as stack:
                if systems:
                    prog.begin("start", "starting " + ", ".join(systems))
                live: list[System] = []
                for name in systems:
                    system = make_system(name, Path(tmp), rig, profile)
                    try:
                        live.append(stack.enter_context(running(system)))
                    except SkipSystem as exc:
                        log(f"{name}: skipped in the CPU comparison: {exc}")
                if live and "udp" in transports:
                    prog.begin(
                        "interleaved",
                        "interleaved CPU comparison: " + ", ".join(s.name for s in live),
                    )
                    cpu = bench.interleaved(live)
                    if profile.workloads and not cpu_only:
                        report["workloads"] = bench.workloads(live, prog.begin)
                    if profile.latency_rates and not cpu_only:
                        prog.begin(
                            "latency",
                            "latency at "
                            + ", ".join(f"{r:,.0f}" for r in profile.latency_rates)
                            + " pkt/s, interleaved",
                        )
                        report["latency_rounds"] = bench.latency_rounds(live)
            report["interleaved_cpu"] = cpu
            report.update(switch_costs(cpu))
            for name in [] if cpu_only else systems:
                prog.begin(
                    name,
                    f"{name}: rate search, latency"
                    + (", allocations" if CLASSES[name].kind == "turn" else ""),
                )
                system = make_system(name, Path(tmp), rig, profile)
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
