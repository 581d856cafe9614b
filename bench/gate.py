"""Performance gate: fail when a change makes the relay slower than the committed baseline.

    python -m bench.gate                      # every stage; exit 0 pass, 1 fail, 2 could not run
    python -m bench.gate --only relay         # or --only voice, --only micro
    python -m bench.gate --update-baseline    # measure and write bench/baseline.json
    python -m bench.gate --debug-build --slow-ns 3000 \
        --relay-env CLICKACALL_FASTPATH_BATCH=1                              # must FAIL

Three stages, each judged on ratios measured in one run, never on absolute times:

* relay: our relay, coturn and the C recvmmsg/sendmmsg forwarder (bench/cfwd.c), one worker
  each, all running at once on CPU 1, each measured in turn (the order rotating) at a fixed
  offered load of ChannelData from the batched generator on CPU 0, round after round. CPU time
  per relayed packet comes from /proc/PID/task/*/schedstat (nanoseconds, every thread). Each
  round gives ours/cfwd and ours/coturn; the gate takes their medians over the rounds.
  ours/cfwd fails when it is more than 15 % above the baseline's; ours/coturn fails above 1.0.
* voice: the same three running systems carry the benchmark's hardest call workload
  (bench/workloads.py: 400 voice calls, one TURN allocation each, SRTP at 50 packets/s each
  way), each round the next second of every call played through every system in turn.
  Per-packet cost here is mostly system calls over hundreds of sockets, which the flood does
  not show. ours/coturn fails when more than 15 % above the baseline's (ours is not yet clearly
  ahead of coturn on calls, so a fixed ceiling of 1.0 would be a coin toss, not a gate);
  ours/cfwd is reported, not judged: the C forwarder's cost on calls is bimodal.
* micro: the hot functions of bench/micro/cases.py (STUN parse/encode/integrity, the fast
  path's forward decision on real loopback datagrams with and without RTP inspection, session
  token and TURN REST credential checks), each timed interleaved with a reference function of
  the same nature (interpreter, C over bytes, UDP system calls), round after round: the median
  of the per-round ratios, against the baseline's ratio plus a margin.

Noise: a round is one short measurement of every system (or function) back to back, so a
neighbour's load or a hypervisor stall falls on all of them and mostly cancels in the ratio;
the median over an odd number of rounds ignores the rounds it did not cancel in (median over
the limit = a majority of rounds over it). A ratio over its limit, or within 5 % of it, is
measured once more with as many rounds again and judged on all of them, so neither a failure
nor a narrow pass rests on one pass's luck; a clearly slower change is over the limit in both
passes and fails.

The gate measures the extension modules it imports itself, and starts our relay with the
same ones. ``--debug-build`` builds the debug variant of the extensions (setup.py
--debug-build: -O0, line tracing) in a scratch directory and runs the gate on it;
``--relay-env`` sets variables for our relay only. With both and the benchmarking knob
CLICKACALL_FASTPATH_BATCH=1 (relay/server.py: one datagram per recvmmsg/sendmmsg), the
relay is a deliberately slowed one that must fail the flood and micro stages. A call packet's
cost is mostly the kernel's, which neither -O0 nor one datagram per call changes (about 8 %
more on voice), so ``--slow-ns N`` also builds that variant with every relayed packet waiting
N ns (setup.py --slow-ns): a regression of known size, which must fail the voice stage too.
tests/test_gate.py checks that it does.

Report on stdout, everything (every round) in bench/out/gate.json.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import ext
from bench import loadgen, workloads
from bench.report import GEN_CPU, machine  # GEN_CPU: the generator's core (systems: SYSTEM_CPU)
from bench.systems import CForwarder, Coturn, Ours, System, running
from ext import _fastpath
from relay import procstat

ROOT = Path(__file__).resolve().parent.parent
EXT_HOME = Path(ext.__file__).resolve().parent.parent  # where this process's extensions live
BASELINE = ROOT / "bench" / "baseline.json"
OUT = ROOT / "bench" / "out" / "gate.json"

CFWD_MARGIN = 0.15  # ours/cfwd may rise this much above the baseline ratio
COTURN_LIMIT = 1.0  # ours/coturn may not rise above this, whatever the baseline
VOICE_MARGIN = 0.15  # voice: ours/coturn may rise this much above the baseline's
MICRO_MARGINS = {"python": 0.25, "native": 0.25, "kernel": 0.30}  # by reference kind
BORDER = 0.05  # within this fraction of a limit: measure again and judge on all rounds
PASS, FAIL = "pass", "FAIL"
STAGES = ("relay", "voice", "micro")


@dataclass
class RelaySettings:
    rate: float = 50_000  # offered ChannelData packets/s (each relayed twice: out and back)
    size: int = 200  # payload bytes
    seconds: float = 1.5  # per measurement
    rounds: int = 9  # odd: the median is a round's figure, over it = a majority over it


@dataclass
class VoiceSettings:
    scale: float = 1.0  # calls, relative to the benchmark's voice workload (400)
    seconds: float = 1.0  # of every call per measurement (~20,000 packets each way at scale 1)
    rounds: int = 9


@dataclass
class MicroSettings:
    rounds: int = 21
    repeat: int = 5  # timings per case per round; the round's sample is their minimum
    target_seconds: float = 0.002  # length of one timing of a plain function


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --- judging ----------------------------------------------------------------------------------


@dataclass
class Check:
    name: str
    rounds: list[float]  # the per-round ratios
    baseline: float | None
    limit: float

    @property
    def median(self) -> float:
        return statistics.median(self.rounds)

    @property
    def over(self) -> int:
        return sum(r > self.limit for r in self.rounds)

    @property
    def borderline(self) -> bool:
        return abs(self.median / self.limit - 1.0) <= BORDER

    @property
    def result(self) -> str:
        return PASS if self.median <= self.limit else FAIL  # NaN (no figure) fails

    @property
    def unsure(self) -> bool:
        """Worth a second pass: failing, or passing by less than BORDER."""
        return self.borderline or self.result == FAIL

    def extend(self, more: Sequence[float]) -> None:
        self.rounds = [*self.rounds, *more]

    def as_json(self) -> dict[str, Any]:
        return {
            "median": self.median,
            "baseline": self.baseline,
            "limit": self.limit,
            "rounds_over_limit": self.over,
            "rounds": self.rounds,
            "result": self.result,
        }


def _column(rounds: Sequence[dict[str, float]], key: str) -> list[float]:
    return [r[key] for r in rounds if key in r]


def judged(
    stage: str,
    measure: Callable[[int], list[dict[str, Any]]],
    judge: Callable[[list[dict[str, Any]]], list[Check]],
    rounds: int,
    retry: bool,
) -> tuple[list[dict[str, Any]], list[Check], bool]:
    """``rounds`` rounds of ``measure`` (given the index of the first), judged; when a ratio
    is over its limit or within :data:`BORDER` of it, as many rounds again, judged on all.
    Returns the rounds, the checks and whether it measured twice."""
    got = measure(0)
    checks = judge(got)
    if not (retry and any(c.unsure for c in checks)):
        return got, checks, False
    log(f"{stage}: a ratio is over its limit or within 5% of it: measuring as many rounds again")
    got += measure(rounds)
    return got, judge(got), True


# --- relay stage ------------------------------------------------------------------------------


def measure(rig: loadgen.Rig, gen: Any, system: System, s: RelaySettings) -> dict[str, float]:
    """One trial; its CPU per packet is from schedstat (:func:`bench.loadgen.cpu_exact`)."""
    return loadgen.trial(rig, gen, s.rate, s.seconds, system.pids())


class GateOurs(Ours):
    """Our relay, with the extension modules this process imported (a debug build's, under
    --debug-build) and the --relay-env variables."""

    env: dict[str, str] = {}

    def command(self) -> list[str]:
        env = dict(self.env)
        if EXT_HOME != ROOT:
            env.setdefault("PYTHONPATH", os.pathsep.join([str(EXT_HOME), str(ROOT)]))
        return ["env", *(f"{k}={v}" for k, v in env.items()), *super().command()]


@contextlib.contextmanager
def relay_systems(workdir: Path, rig: loadgen.Rig) -> Iterator[list[System]]:
    with contextlib.ExitStack() as stack:
        systems: list[System] = []
        classes: tuple[tuple[type[System], str], ...] = (
            (GateOurs, "ours"),
            (Coturn, "coturn"),
            (CForwarder, "cfwd"),
        )
        for cls, name in classes:
            system = cls(name, workdir, rig.addr)
            try:
                systems.append(stack.enter_context(running(system)))
            except Exception as exc:  # the benchmark's SkipSystem, or worse: not a skip here
                raise GateError(f"{name} did not start: {exc}") from exc
        yield systems


class GateError(RuntimeError):
    """The gate could not measure (a system did not start): neither pass nor fail."""


def relay_rounds(
    rig: loadgen.Rig,
    systems: list[System],
    gens: dict[str, Any],
    s: RelaySettings,
    rounds: int,
    first: int = 0,
) -> list[dict[str, Any]]:
    out = []
    for r in range(first, first + rounds):
        k = r % len(systems)
        order = systems[k:] + systems[:k]
        trials = {sys_.name: measure(rig, gens[sys_.name], sys_, s) for sys_ in order}
        for sys_ in order:
            if not trials[sys_.name]["relayed"]:
                raise GateError(
                    f"{sys_.name} relayed nothing (exited: "
                    f"{sys_.proc is not None and sys_.proc.poll() is not None}); "
                    f"log: {sys_.log_tail()}"
                )
        out.append(round_row("relay", r, trials))
    return out


def round_row(stage: str, r: int, trials: dict[str, dict[str, float]]) -> dict[str, Any]:
    """One round's figures per system (CPU per packet, loss) and its two ratios, logged."""
    us = {name: t["cpu_us_per_pkt"] for name, t in trials.items()}
    row: dict[str, Any] = {
        "us_per_pkt": us,
        "loss": {name: t["loss"] for name, t in trials.items()},
        "ours/cfwd": us["ours"] / us["cfwd"],
        "ours/coturn": us["ours"] / us["coturn"],
    }
    log(
        f"  {stage} round {r + 1}: "
        + ", ".join(f"{n} {v:.3f}" for n, v in us.items())
        + f" us/pkt; ours/cfwd {row['ours/cfwd']:.3f}, ours/coturn {row['ours/coturn']:.3f}"
    )
    return row


def relay_checks(rounds: list[dict[str, Any]], baseline: dict[str, Any] | None) -> list[Check]:
    base = (baseline or {}).get("ratios", {})
    cfwd_base = base.get("ours/cfwd")
    return [
        Check(
            "ours/cfwd",
            _column(rounds, "ours/cfwd"),
            cfwd_base,
            cfwd_base * (1 + CFWD_MARGIN) if cfwd_base else float("inf"),
        ),
        Check("ours/coturn", _column(rounds, "ours/coturn"), base.get("ours/coturn"), COTURN_LIMIT),
    ]


def _median_by_system(rounds: list[dict[str, Any]], key: str) -> dict[str, float]:
    return {name: statistics.median(r[key][name] for r in rounds) for name in rounds[0][key]}


def _stage_report(
    settings: Any,
    rounds: list[dict[str, Any]],
    checks: list[Check],
    retried: bool,
    started: float,
    **extra: Any,
) -> dict[str, Any]:
    """A system stage's part of the report (relay, voice): its settings, the medians per
    system, the checks and every round, with what only that stage has (``extra``)."""
    return {
        "settings": asdict(settings),
        **extra,
        "us_per_pkt": _median_by_system(rounds, "us_per_pkt"),
        "loss": _median_by_system(rounds, "loss"),
        "checks": {c.name: c.as_json() for c in checks},
        "retried": retried,
        "rounds": rounds,
        "seconds": time.monotonic() - started,
    }


def flood_stage(
    rig: loadgen.Rig,
    systems: list[System],
    s: RelaySettings,
    baseline: dict[str, Any] | None,
    retry: bool,
) -> dict[str, Any]:
    started = time.monotonic()
    flows = {}
    try:
        for system in systems:
            try:
                flows[system.name] = system.flows()
            except Exception as exc:
                raise GateError(f"{system.name}: {exc}") from exc
        gens = {name: f.generator(s.size) for name, f in flows.items()}
        for system in systems:  # warm up: first packets take slow paths
            loadgen.trial(rig, gens[system.name], 20_000, 0.3, system.pids())
        log(f"relay: {s.rounds} rounds of {s.seconds:g} s at {s.rate:,.0f} pkt/s, {s.size} B")
        rounds, checks, retried = judged(
            "relay",
            lambda first: relay_rounds(rig, systems, gens, s, s.rounds, first),
            lambda got: relay_checks(got, baseline),
            s.rounds,
            retry,
        )
    finally:
        for f in flows.values():
            f.close()
    return _stage_report(
        s,
        rounds,
        checks,
        retried,
        started,
        cpu_counter="schedstat" if procstat.HAVE_SCHEDSTAT else "stat",
    )


def voice_rounds(
    rig: loadgen.Rig,
    systems: list[System],
    wl: workloads.Workload,
    flows: dict[str, loadgen.Flows],
    s: VoiceSettings,
    rounds: int,
    first: int = 0,
) -> list[dict[str, Any]]:
    """Each round: the next ``s.seconds`` of every call, played through every system in turn
    (the order rotating), so all systems carry the same packets at the same times."""
    out = []
    for r in range(first, first + rounds):
        seg = wl.segment(s.seconds)
        k = r % len(systems)
        trials = {
            x.name: loadgen.replay_trial(rig, seg.player(flows[x.name]), x.pids())
            for x in systems[k:] + systems[:k]
        }
        del seg
        for name, t in trials.items():
            if not t["relayed"]:
                raise GateError(f"{name} relayed no voice packet")
        row = round_row("voice", r, trials)
        row["offered_pps"] = {name: t["offered_pps"] for name, t in trials.items()}
        out.append(row)
    return out


def voice_checks(rounds: list[dict[str, Any]], baseline: dict[str, Any] | None) -> list[Check]:
    """ours/coturn is judged against the baseline + :data:`VOICE_MARGIN`; ours/cfwd is
    reported beside it but not judged (no limit): on call traffic the C forwarder's own cost
    is bimodal on the same machine (8.5-9.9 us per packet in one run, 12.3-13.6 in another,
    as its one socket's batches come out large or small), so a ratio to it would fail good
    builds."""
    base = (baseline or {}).get("ratios", {})
    b = base.get("ours/coturn")
    return [
        Check("ours/cfwd", _column(rounds, "ours/cfwd"), base.get("ours/cfwd"), float("inf")),
        Check(
            "ours/coturn",
            _column(rounds, "ours/coturn"),
            b,
            b * (1 + VOICE_MARGIN) if b else float("inf"),
        ),
    ]


def voice_stage(
    rig: loadgen.Rig,
    systems: list[System],
    s: VoiceSettings,
    baseline: dict[str, Any] | None,
    retry: bool,
) -> dict[str, Any]:
    started = time.monotonic()
    wl = workloads.Workload("voice", scale=s.scale, seed=16)
    ncalls = len(wl.calls)
    flows: dict[str, loadgen.Flows] = {}
    try:
        for system in systems:
            try:
                flows[system.name] = system.call_flows(ncalls)
            except Exception as exc:
                raise GateError(f"{system.name}: {ncalls} calls: {exc}") from exc
        warm = wl.segment(0.3)  # first packets of a flow take slow paths
        for system in systems:
            loadgen.replay_trial(rig, warm.player(flows[system.name]), system.pids())
        del warm
        log(f"voice: {s.rounds} rounds of {s.seconds:g} s of {ncalls} voice calls")
        rounds, checks, retried = judged(
            "voice",
            lambda first: voice_rounds(rig, systems, wl, flows, s, s.rounds, first),
            lambda got: voice_checks(got, baseline),
            s.rounds,
            retry,
        )
    finally:
        for f in flows.values():
            f.close()
    return _stage_report(
        s,
        rounds,
        checks,
        retried,
        started,
        calls=ncalls,
        offered_pps=statistics.median(r["offered_pps"]["ours"] for r in rounds),
    )


def relay_stage(
    s: RelaySettings | None,
    baseline: dict[str, Any] | None,
    retry: bool = True,
    voice: VoiceSettings | None = None,
    voice_baseline: dict[str, Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """The flood (``s``) and the voice workload (``voice``) over the same running systems;
    either may be None to skip it. Returns {"relay": ..., "voice": ...} for those run."""
    out: dict[str, dict[str, Any]] = {}
    rig = loadgen.Rig()
    try:
        with (
            tempfile.TemporaryDirectory(prefix="clickacall-gate-") as tmp,
            relay_systems(Path(tmp), rig) as systems,
        ):
            if s is not None:
                out["relay"] = flood_stage(rig, systems, s, baseline, retry)
            if voice is not None:
                out["voice"] = voice_stage(rig, systems, voice, voice_baseline, retry)
    finally:
        rig.close()
    return out


# --- micro stage ------------------------------------------------------------------------------


def _time_plain(fn: Callable[[], object], number: int) -> float:
    t0 = time.perf_counter_ns()
    for _ in range(number):
        fn()
    return (time.perf_counter_ns() - t0) / number


def _sample(case: Any, number: int, repeat: int) -> float:
    """Best per-operation time (ns) of ``repeat`` timings."""
    best = float("inf")
    for _ in range(repeat):
        if case.setup is not None:
            case.setup()
            t0 = time.perf_counter_ns()
            case.run()
            t = (time.perf_counter_ns() - t0) / case.ops
        else:
            t = _time_plain(case.run, number) / case.ops
        best = min(best, t)
    return best


def calibrate(case: Any, target_seconds: float) -> int:
    if case.setup is not None:
        return 1
    once = max(_time_plain(case.run, 10), 1.0)  # ns
    return max(1, int(target_seconds * 1e9 / once))


def micro_rounds(
    cases: list[Any], refs: dict[str, Any], s: MicroSettings, rounds: int, numbers: dict[str, int]
) -> list[dict[str, Any]]:
    items = [*refs.values(), *cases]
    out = []
    for r in range(rounds):
        k = r % len(items)
        ns = {c.name: _sample(c, numbers[c.name], s.repeat) for c in items[k:] + items[:k]}
        out.append(
            {
                "ns": ns,
                "ratios": {c.name: ns[c.name] / ns[refs[c.ref].name] for c in cases},
            }
        )
    return out


def micro_checks(
    cases: list[Any], rounds: list[dict[str, Any]], baseline: dict[str, Any] | None
) -> list[Check]:
    base = (baseline or {}).get("ratios", {})
    out = []
    for c in cases:
        b = base.get(c.name)
        limit = b * (1 + MICRO_MARGINS[c.ref]) if b else float("inf")
        out.append(Check(c.name, [r["ratios"][c.name] for r in rounds], b, limit))
    return out


def micro_stage(
    s: MicroSettings,
    baseline: dict[str, Any] | None,
    retry: bool = True,
    cases: list[Any] | None = None,
) -> dict[str, Any]:
    from bench.micro import cases as micro

    started = time.monotonic()
    refs = micro.references()
    cases = micro.all_cases() if cases is None else cases
    try:
        numbers = {c.name: calibrate(c, s.target_seconds) for c in [*refs.values(), *cases]}
        log(f"micro: {len(cases)} functions, {s.rounds} interleaved rounds")
        rounds, checks, retried = judged(
            "micro",
            lambda _first: micro_rounds(cases, refs, s, s.rounds, numbers),
            lambda got: micro_checks(cases, got, baseline),
            s.rounds,
            retry,
        )
    finally:
        for c in [*refs.values(), *cases]:
            c.close()
    ns = {name: statistics.median(r["ns"][name] for r in rounds) for name in rounds[0]["ns"]}
    return {
        "settings": asdict(s),
        "references": {c.name: c.ref for c in cases},
        "ns_per_op": ns,
        "checks": {c.name: c.as_json() for c in checks},
        "retried": retried,
        "rounds": rounds,
        "seconds": time.monotonic() - started,
    }


# --- report, baseline -------------------------------------------------------------------------


def _fmt(v: float | None, width: int = 8) -> str:
    if v is None or v == float("inf"):
        return f"{'-':>{width}}"
    return f"{v:>{width}.3f}"


def table(title: str, checks: dict[str, dict[str, Any]]) -> list[str]:
    lines = [
        title,
        f"  {'ratio':<26} {'median':>8} {'baseline':>8} {'limit':>8} {'over':>7}  result",
    ]
    for name, c in checks.items():
        over = f"{c['rounds_over_limit']}/{len(c['rounds'])}"
        lines.append(
            f"  {name:<26} {_fmt(c['median'])} {_fmt(c['baseline'])} "
            f"{_fmt(c['limit'])} {over:>7}  {c['result']}"
        )
    return lines


def _systems_block(title: str, stage: dict[str, Any], limits: str) -> list[str]:
    """The report of a stage that measures the three systems (relay, voice)."""
    twice = " (measured twice: a ratio was near or over its limit)" if stage["retried"] else ""
    return [
        "",
        *table(title + twice, stage["checks"]),
        "  us/pkt (median): "
        + ", ".join(f"{k} {v:.3f}" for k, v in stage["us_per_pkt"].items())
        + "; loss: "
        + ", ".join(f"{k} {v:.1%}" for k, v in stage["loss"].items()),
        f"  {limits}",
    ]


def render(report: dict[str, Any]) -> str:
    base = report.get("baseline_info") or {}
    if report["result"] == "UPDATED":
        head = f"performance gate: new baseline written to {report['baseline_path']}"
    else:
        head = f"performance gate: baseline {report['baseline_path']}" + (
            f" (measured {base.get('date')} on {base.get('machine', {}).get('cpu_model')}, "
            f"{base.get('machine', {}).get('cpus')} CPUs)"
            if base
            else " (none)"
        )
    lines = [head]
    relay = report.get("relay")
    if relay:
        st = relay["settings"]
        lines += _systems_block(
            f"relay: CPU per relayed packet, {st['size']} B ChannelData at {st['rate']:,.0f} "
            f"pkt/s, {len(relay['rounds'])} interleaved rounds of {st['seconds']:g} s",
            relay,
            f"ours/cfwd limit = baseline x {1 + CFWD_MARGIN:.2f}; ours/coturn limit "
            f"= {COTURN_LIMIT:.1f}",
        )
    voice = report.get("voice")
    if voice:
        lines += _systems_block(
            f"voice: CPU per relayed packet, {voice['calls']} voice calls (SRTP, 50 pkt/s each "
            f"way), {len(voice['rounds'])} interleaved rounds of "
            f"{voice['settings']['seconds']:g} s of every call",
            voice,
            f"ours/coturn limit = baseline x {1 + VOICE_MARGIN:.2f}; ours/cfwd is not judged "
            "(the C forwarder's cost on calls is bimodal)",
        )
    micro = report.get("micro")
    if micro:
        n = len(micro["rounds"])
        lines.append("")
        lines += table(
            f"micro: time / reference time, {n} interleaved rounds"
            + (" (measured twice: a ratio was near or over its limit)" if micro["retried"] else ""),
            micro["checks"],
        )
        lines.append(
            "  references: "
            + ", ".join(
                f"{k} {v:,.0f} ns"
                for k, v in micro["ns_per_op"].items()
                if k.startswith("reference")
            )
            + "; limits = baseline x (1 + "
            + ", ".join(f"{m:.2f} {k}" for k, m in MICRO_MARGINS.items())
            + ")"
        )
    lines.append("")
    failed = [
        f"{stage} {name}"
        for stage in STAGES
        for name, c in (report.get(stage) or {}).get("checks", {}).items()
        if c["result"] == FAIL
    ]
    lines.append(
        f"gate: {report['result']}"
        + (f" ({', '.join(failed)})" if failed else "")
        + f" in {report['seconds']:.0f} s; report {report['out']}"
    )
    return "\n".join(lines)


def load_baselines(path: Path) -> dict[str, dict[str, Any]]:
    """The baselines of ``path`` by CPU model. The ratios depend on the CPU (the micro
    stage's most: stun.parse/reference.native is 0.25 on one of this project's VMs' Intel
    Xeon and 0.33 on the other's AMD EPYC, the fast path's 0.32 and 0.26), so the file keeps
    one baseline per CPU model that has measured one (``machines``); a file of the older
    form, one baseline, is that baseline's CPU's."""
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    if "machines" in data:
        machines: dict[str, dict[str, Any]] = data["machines"]
        return machines
    return {(data.get("machine") or {}).get("cpu_model") or "unknown": data}


def load_baseline(path: Path, cpu_model: str) -> dict[str, Any] | None:
    """The baseline to hold this machine to: its CPU model's, and for a stage that CPU has
    not measured (or a CPU that has measured none), the loosest of the others: each ratio
    the largest any CPU measured, so a CPU without a baseline of its own still fails a
    change that is slower everywhere."""
    machines = load_baselines(path)
    if not machines:
        return None
    out: dict[str, Any] = {}
    for stage in STAGES:
        entries = [m[stage] for m in machines.values() if m.get(stage)]
        if not entries:
            continue
        loose = copy.deepcopy(entries[0])
        loose["ratios"] = {
            k: max(e["ratios"][k] for e in entries if k in e.get("ratios", {}))
            for k in {k for e in entries for k in e.get("ratios", {})}
        }
        out[stage] = loose
    own = machines.get(cpu_model)
    if own is not None:
        out.update({k: v for k, v in own.items() if k not in STAGES or v})
    else:
        models = ", ".join(sorted(machines))
        out.update(
            date="-",
            machine={"cpu_model": f"none for {cpu_model}: the loosest of {models}", "cpus": "-"},
            load_average=None,
        )
    return out


def new_baselines(report: dict[str, Any], path: Path) -> dict[str, Any]:
    """The baseline file with this machine's CPU model's baseline measured anew (the stages
    that ran) and every other CPU model's kept."""
    machines = load_baselines(path)
    model = report["machine"].get("cpu_model") or "unknown"
    machines[model] = new_baseline(report, machines.get(model))
    return {"machines": dict(sorted(machines.items()))}


def new_baseline(report: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = dict(old or {})
    out.update(
        {
            "date": datetime.date.today().isoformat(),
            "machine": report["machine"],
            "load_average": report["load_average"],
            "command": "python -m bench.gate --update-baseline",
        }
    )
    if report.get("relay"):
        r = report["relay"]
        out["relay"] = {
            "settings": r["settings"],
            "ratios": {k: c["median"] for k, c in r["checks"].items()},
            "us_per_pkt": r["us_per_pkt"],
            "rounds": len(r["rounds"]),
        }
    if report.get("voice"):
        v = report["voice"]
        out["voice"] = {
            "settings": v["settings"],
            "calls": v["calls"],
            "ratios": {k: c["median"] for k, c in v["checks"].items()},
            "us_per_pkt": v["us_per_pkt"],
            "rounds": len(v["rounds"]),
        }
    if report.get("micro"):
        m = report["micro"]
        out["micro"] = {
            "ratios": {k: c["median"] for k, c in m["checks"].items()},
            "references": m["references"],
            "ns_per_op": m["ns_per_op"],
            "rounds": len(m["rounds"]),
        }
    return out


def build_debug(dest: Path, slow_ns: int = 0) -> None:
    """The debug variant of the extensions (setup.py --debug-build), built from this tree's
    sources into ``dest``/ext, leaving the tree's own build alone; with ``slow_ns``, every
    relayed packet waits that long (setup.py --slow-ns)."""
    (dest / "ext").mkdir(parents=True, exist_ok=True)
    for f in ("setup.py", "pyproject.toml"):
        shutil.copy2(ROOT / f, dest / f)
    for f in (ROOT / "ext").iterdir():
        if f.suffix in (".pyx", ".pxd", ".pxi") or f.name == "__init__.py":
            shutil.copy2(f, dest / "ext" / f.name)
    res = subprocess.run(
        [
            sys.executable,
            "setup.py",
            "-q",
            "build_ext",
            "--inplace",
            "--debug-build",
            f"--slow-ns={slow_ns}",
        ],
        cwd=dest,
        capture_output=True,
        text=True,
    )
    if res.returncode:
        raise GateError(f"debug build failed: {res.stderr[-2000:]}")


SETTLE_BUSY = 0.10  # the share of the machine others may use for it to count as quiet


def settle(limit: float, sample: float = 1.0, needed: int = 3) -> tuple[float, float]:
    """Wait, at most ``limit`` seconds, until the machine has been quiet (at most
    :data:`SETTLE_BUSY` of all CPUs busy) for ``needed`` samples in a row: the gate runs right
    after the test suite, whose browsers and databases may still be exiting, and a ratio
    measured while they do is noise. Returns (seconds waited, busy share of the last sample)."""
    start = time.monotonic()
    quiet = 0
    share = 0.0
    before = procstat.cpu_busy()
    while time.monotonic() - start < limit and quiet < needed:
        time.sleep(sample)
        after = procstat.cpu_busy()
        busy = sum(after[c][0] - before[c][0] for c in after if c in before)
        total = sum(after[c][1] - before[c][1] for c in after if c in before)
        before = after
        share = busy / total if total > 0 else 0.0
        quiet = quiet + 1 if share <= SETTLE_BUSY else 0
    return time.monotonic() - start, share


def _without(argv: list[str], flag: str, option: str) -> list[str]:
    """``argv`` less ``flag`` and ``option`` (with its value, as ``--x N`` or ``--x=N``)."""
    out: list[str] = []
    skip = False
    for a in argv:
        if skip:
            skip = False
        elif a == option:
            skip = True
        elif a != flag and not a.startswith(option + "="):
            out.append(a)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.gate", description=__doc__.split("\n")[0])
    ap.add_argument("--only", choices=STAGES, help="run one stage")
    ap.add_argument(
        "--debug-build",
        action="store_true",
        help="build the debug extensions in a scratch directory and gate those",
    )
    ap.add_argument(
        "--slow-ns",
        type=int,
        default=0,
        metavar="NS",
        help="with --debug-build: every relayed packet waits NS nanoseconds (the gate's test)",
    )
    ap.add_argument(
        "--relay-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="environment variable for our relay only (repeatable)",
    )
    ap.add_argument(
        "--update-baseline",
        action="store_true",
        help="measure (three times the rounds) and write the baseline file",
    )
    ap.add_argument("--baseline", type=Path, default=BASELINE)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--rounds", type=int, help="relay rounds (odd)")
    ap.add_argument("--seconds", type=float, help="relay measurement length")
    ap.add_argument("--rate", type=float, help="relay offered rate, packets/s")
    ap.add_argument("--voice-rounds", type=int, help="voice rounds (odd)")
    ap.add_argument("--voice-seconds", type=float, help="voice: seconds of every call per round")
    ap.add_argument(
        "--voice-scale", type=float, help="voice: number of calls relative to 400 (1.0)"
    )
    ap.add_argument("--no-retry", action="store_true", help="never re-measure a borderline ratio")
    ap.add_argument(
        "--settle",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="wait at most this long for the machine to be quiet before measuring (0: not at all)",
    )
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    if args.slow_ns < 0 or (args.slow_ns and not args.debug_build):
        ap.error("--slow-ns wants --debug-build and 0 or more nanoseconds")
    if args.debug_build:
        rest = _without(sys.argv[1:] if argv is None else argv, "--debug-build", "--slow-ns")
        with tempfile.TemporaryDirectory(prefix="clickacall-gate-debug-") as tmp:
            t0 = time.monotonic()
            try:
                build_debug(Path(tmp), args.slow_ns)
            except GateError as exc:
                log(f"gate: could not run: {exc}")
                return 2
            log(f"debug build in {tmp} ({time.monotonic() - t0:.0f} s)")
            # ``-m`` puts the working directory first on sys.path: run from the scratch
            # directory so that its ext/ wins, and find bench/ (and the rest) through ROOT
            env = {**os.environ, "PYTHONPATH": os.pathsep.join([tmp, str(ROOT)])}
            return subprocess.run(
                [sys.executable, "-m", "bench.gate", *rest], env=env, cwd=tmp
            ).returncode
    for item in args.relay_env:
        name, sep, value = item.partition("=")
        if not sep or not name:
            ap.error(f"--relay-env wants NAME=VALUE, not {item!r}")
        GateOurs.env[name] = value

    relay_s, voice_s, micro_s = RelaySettings(), VoiceSettings(), MicroSettings()
    baseline = load_baseline(args.baseline, machine().get("cpu_model") or "unknown")
    if baseline and "relay" in baseline and not args.update_baseline:
        # measure as the baseline was measured: a ratio depends on the load
        relay_s.rate = baseline["relay"]["settings"]["rate"]
        relay_s.size = baseline["relay"]["settings"]["size"]
    if args.rounds:
        relay_s.rounds = args.rounds
    if args.seconds:
        relay_s.seconds = args.seconds
    if args.rate:
        relay_s.rate = args.rate
    if baseline and "voice" in baseline and not args.update_baseline:
        voice_s.scale = baseline["voice"]["settings"]["scale"]
    if args.voice_rounds:
        voice_s.rounds = args.voice_rounds
    if args.voice_seconds:
        voice_s.seconds = args.voice_seconds
    if args.voice_scale:
        voice_s.scale = args.voice_scale
    if args.update_baseline:
        relay_s.rounds = relay_s.rounds * 3
        voice_s.rounds = voice_s.rounds * 3
        micro_s.rounds = micro_s.rounds * 3
    retry = not (args.no_retry or args.update_baseline)

    if args.settle > 0:
        waited, share = settle(args.settle)
        log(f"gate: waited {waited:.0f} s for a quiet machine (others' CPU use {share:.0%})")
    started = time.monotonic()
    host = machine()  # before pinning: it reports the CPUs this process may use
    pinned = loadgen.pin([os.getpid()], GEN_CPU)
    report: dict[str, Any] = {
        "machine": host,
        "load_average": list(os.getloadavg()),
        "pinned": pinned,
        "baseline_path": str(args.baseline),
        "baseline_info": (
            {k: baseline.get(k) for k in ("date", "machine", "load_average")} if baseline else None
        ),
        "extensions": str(EXT_HOME / "ext"),
        "slow_ns": _fastpath.SLOW_NS,
        "relay_env": {
            **{k: v for k, v in os.environ.items() if k.startswith("CLICKACALL_FASTPATH")},
            **GateOurs.env,
        },
        "out": str(args.out),
    }
    try:
        if args.only in (None, "micro"):
            report["micro"] = micro_stage(micro_s, (baseline or {}).get("micro"), retry)
        if args.only != "micro":
            report.update(
                relay_stage(
                    relay_s if args.only in (None, "relay") else None,
                    (baseline or {}).get("relay"),
                    retry,
                    voice_s if args.only in (None, "voice") else None,
                    (baseline or {}).get("voice"),
                )
            )
    except GateError as exc:
        log(f"gate: could not run: {exc}")
        report.update(result="ERROR", error=str(exc))
        _write(args.out, report)
        return 2
    checks = [c for stage in STAGES for c in report.get(stage, {}).get("checks", {}).values()]
    report["result"] = FAIL if any(c["result"] == FAIL for c in checks) else PASS
    report["seconds"] = time.monotonic() - started
    _write(args.out, report)
    if args.update_baseline:
        if report["load_average"][0] > 0.5:
            log(
                f"warning: load average {report['load_average'][0]:.2f} when measuring: a "
                "baseline is best measured on a quiet machine"
            )
        args.baseline.write_text(json.dumps(new_baselines(report, args.baseline), indent=2) + "\n")
        log(f"baseline written: {args.baseline} (load average {report['load_average'][0]:.2f})")
        report["result"] = "UPDATED"
    print(render(report), flush=True)
    if args.update_baseline:
        return 0
    if baseline is None:
        log(f"gate: no baseline at {args.baseline}: run python -m bench.gate --update-baseline")
        return 2
    return 1 if report["result"] == FAIL else 0


def _write(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=float) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
