"""Where the per-packet cost goes: system calls, wake-ups and batch sizes per relayed packet.

    python -m bench.syscalls                                  # voice, 400 calls, 3 s each
    python -m bench.syscalls --workload voice --calls-scale 0.5 --seconds 2 \\
        --systems ours,coturn,cfwd,cfwd-gso
    python -m bench.syscalls --profile --calls-scale 0.25 --seconds 2 --systems ours,coturn,cfwd

Each system (bench/systems.py, pinned as in ``python -m bench``) carries the same segment of a
call workload (bench/workloads.py: real SRTP, one allocation per call for the TURN systems)
while ``perf stat`` counts kernel tracepoints in its processes (every thread):

- ``syscalls``: every system call (raw_syscalls:sys_enter);
- ``wakeups``: returns from epoll_wait/epoll_pwait/epoll_pwait2/poll/ppoll (the event loop
  waking up; with nothing ready it would block, so each is a wake-up or a timer);
- ``recv_calls`` and ``recv_nonempty``: recvmmsg/recvmsg/recvfrom calls, all and those that
  returned data; ``packets_per_batch`` is the packets the system received (its relayed count,
  both directions) per non-empty receive call;
- ``send_calls``: sendmmsg/sendmsg/sendto calls;
- ``context_switches`` and ``task_clock_ms`` (perf's software counters).

With ``--profile`` each system then plays the segment twice more: once without perf, for its
CPU per relayed packet (``cpu_us_per_pkt``) and its voluntary and involuntary context switches
(/proc), and once under ``perf record -g -F 4999 -p PIDS``, whose samples split that CPU into
microseconds per packet (bench/perfprof.py): under the send calls (of which the reader's
wake-up, ``sock_def_readable``), the receive calls, the wait calls (of which the sleep,
``schedule``), the rest of the kernel, and user space by shared object (our extensions,
CPython, uvloop, libc, the system's own binary, libevent, other). With the voluntary switches
per packet the report gives the wait's and the sleep's CPU per sleep. It goes under each
system's ``profile`` in the report and into a second table.

Every figure is divided by the packets relayed in the counted run. ``perf`` must be installed and
allowed to read tracepoints (root, or perf_event_paranoid <= -1); the run stops otherwise. The
report goes to bench/out/syscalls.json, the table to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import loadgen, perfprof, workloads
from bench.report import LABEL_W, LABELS
from bench.systems import CLASSES, COALESCE_US, OUT, SkipSystem, System, create, log, running
from relay.config import COALESCE_MAX_US

WAITS = ("epoll_wait", "epoll_pwait", "epoll_pwait2", "poll", "ppoll")
RECVS = ("recvmmsg", "recvmsg", "recvfrom")
SENDS = ("sendmmsg", "sendmsg", "sendto")
DEFAULT_SYSTEMS = ("ours", "coturn", "cfwd", "cfwd-gso")


def events() -> list[tuple[str, list[str]]]:
    """(figure, perf arguments) in the order perf prints them; figures repeat where summed."""
    out: list[tuple[str, list[str]]] = [
        ("syscalls", ["-e", "raw_syscalls:sys_enter"]),
        ("context_switches", ["-e", "context-switches"]),
        ("task_clock_ms", ["-e", "task-clock"]),
    ]
    out += [("wakeups", ["-e", f"syscalls:sys_exit_{w}"]) for w in WAITS]
    out += [("recv_calls", ["-e", f"syscalls:sys_exit_{r}"]) for r in RECVS]
    out += [
        ("recv_nonempty", ["-e", f"syscalls:sys_exit_{r}", "--filter", "ret > 0"]) for r in RECVS
    ]
    out += [("send_calls", ["-e", f"syscalls:sys_enter_{s}"]) for s in SENDS]
    return out


def parse(text: str, evs: list[tuple[str, list[str]]]) -> dict[str, float]:
    """perf stat -x, output: one line per event, in the order given."""
    rows = [ln for ln in text.splitlines() if ln and not ln.startswith("#") and "," in ln]
    if len(rows) != len(evs):
        raise RuntimeError(f"perf printed {len(rows)} counters for {len(evs)} events:\n{text}")
    out: dict[str, float] = {}
    for (name, args), row in zip(evs, rows, strict=True):
        value = row.split(",")[0]
        n = float(value) if value.replace(".", "", 1).isdigit() else 0.0  # <not counted>
        out[name] = out.get(name, 0.0) + n
        call = (
            args[1].split(":sys_exit_")[-1].split(":sys_enter_")[-1]
            if args[1].startswith("syscalls:")
            else None
        )
        if call is not None and name != "recv_nonempty":
            out[f"{name}.{call}"] = n  # the breakdown: which call it was
    return out


def counted(rig: loadgen.Rig, system: System, player: Any, workdir: Path) -> dict[str, Any]:
    """One replay of ``player`` through ``system`` with perf counting its processes."""
    evs = events()
    pids = system.pids()
    out_file = workdir / f"perf-{system.name}.txt"
    cmd = ["perf", "stat", "-x", ",", "-o", str(out_file)]
    for _, args in evs:
        cmd += args
    cmd += ["-p", ",".join(map(str, pids))]
    perf = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(0.5)  # attached before the first packet
    if perf.poll() is not None:
        err = perf.stderr.read().decode(errors="replace") if perf.stderr else ""
        raise RuntimeError(f"perf stat failed ({perf.returncode}): {err[-600:]}")
    try:
        trial = loadgen.replay_trial(rig, player, pids)
    finally:
        perfprof.stop(perf, 15)
    counts = parse(out_file.read_text(), evs)
    relayed = float(trial["relayed"])
    per = {k: v / relayed for k, v in counts.items() if k != "task_clock_ms"} if relayed else {}
    return {
        "label": LABELS[system.name],
        "relayed": relayed,
        "offered_pps": trial["offered_pps"],
        "loss": trial["loss"],
        "cpu_us_per_pkt": trial["cpu_us_per_pkt"],
        "counts": {**counts, "task_clock_ms": counts["task_clock_ms"]},
        "per_packet": per,
        "packets_per_batch": relayed / counts["recv_nonempty"] if counts["recv_nonempty"] else None,
        "packets_per_wakeup": relayed / counts["wakeups"] if counts["wakeups"] else None,
    }


def profiled(
    rig: loadgen.Rig,
    system: System,
    seg: workloads.Schedule,
    flows: loadgen.Flows,
    workdir: Path,
) -> dict[str, Any]:
    """Two more replays of the segment: one without perf for the CPU per packet and the
    context switches (/proc), one under ``perf record -g`` for how that CPU splits."""
    pids = system.pids()
    s0 = perfprof.switches(pids)
    plain = loadgen.replay_trial(rig, seg.player(flows), pids)
    s1 = perfprof.switches(pids)
    data = workdir / f"perf-{system.name}.data"
    with perfprof.recording(pids, data):
        recorded = loadgen.replay_trial(rig, seg.player(flows), pids)
    weights = perfprof.weigh(perfprof.script(data))
    data.unlink(missing_ok=True)
    relayed = float(plain["relayed"])
    cpu = float(plain["cpu_us_per_pkt"])
    us = perfprof.split(weights, cpu)
    vol = (s1[0] - s0[0]) / relayed if relayed else math.nan
    invol = (s1[1] - s0[1]) / relayed if relayed else math.nan
    return {
        "cpu_us_per_pkt": cpu,  # the replay without perf: what the categories divide
        "cpu_us_per_pkt_recorded": recorded["cpu_us_per_pkt"],  # the one perf sampled
        "relayed": relayed,
        "loss": plain["loss"],
        "samples": weights["samples"],
        "sampled_ms": weights["total"] / 1e6,
        "kernel_share": us.pop("kernel_share"),
        "us_per_pkt": us,
        "voluntary_switches_per_pkt": vol,
        "involuntary_switches_per_pkt": invol,
        # per time the system slept (a voluntary switch): the wait calls' CPU, and the
        # scheduler's part of it (a sleep/wake cycle's cost, as the samples place it)
        "wait_us_per_voluntary_switch": us["wait"] / vol if vol else None,
        "sleep_us_per_voluntary_switch": us["wait_sleep"] / vol if vol else None,
    }


def run(
    names: list[str],
    workload: str,
    scale: float,
    seconds: float,
    profile: bool = False,
    coalesce_us: int = COALESCE_US,
) -> dict[str, Any]:
    wl = workloads.Workload(workload, scale=scale)
    ncalls = len(wl.calls)
    # one echo address per call for every system when one needs it (ours-mux, coturn-src)
    rig = loadgen.Rig(distinct_peers=any(CLASSES[n].distinct_peers for n in names))
    results: dict[str, Any] = {}
    try:
        with contextlib.ExitStack() as stack:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cac-sys-")))
            live: dict[str, tuple[System, loadgen.Flows]] = {}
            for name in names:
                system = create(name, workdir, rig.addr, coalesce_us=coalesce_us)
                system.peer = rig.peer
                try:
                    stack.enter_context(running(system))
                    flows = system.call_flows(ncalls)
                except SkipSystem as exc:
                    log(f"{name}: skipped: {exc}")
                    results[name] = {"label": LABELS[name], "skipped": str(exc)}
                    continue
                stack.callback(flows.close)
                live[name] = (system, flows)
            warm = wl.segment(0.3)  # first packets of a flow take slow paths
            for system, flows in live.values():
                loadgen.replay_trial(rig, warm.player(flows), system.pids())
            del warm
            seg = wl.segment(seconds)
            for name, (system, flows) in live.items():
                log(f"{name}: {workload}, {ncalls} calls, {seconds:g} s, perf counting")
                results[name] = counted(rig, system, seg.player(flows), workdir)
                if profile:
                    log(f"{name}: the same segment without perf, then under perf record -g")
                    results[name]["profile"] = profiled(rig, system, seg, flows, workdir)
    finally:
        rig.close()
    return {
        "workload": workload,
        "calls": ncalls,
        "seconds": seconds,
        "profiled": profile,
        "systems": results,
    }


def table(report: dict[str, Any]) -> str:
    cols = ("syscalls", "wakeups", "recv_calls", "send_calls", "context_switches")
    head = (
        f"{'system':<{LABEL_W}}{'pkt/s':>8}{'us/pkt':>8}"
        + "".join(f"{c.replace('context_switches', 'ctx sw'):>11}" for c in cols)
        + f"{'pkt/batch':>10}{'pkt/wake':>9}"
    )
    lines = [
        f"{report['workload']}, {report['calls']} calls, {report['seconds']:g} s: "
        "per relayed packet",
        head,
        "-" * len(head),
    ]
    for r in report["systems"].values():
        if "skipped" in r:
            lines.append(f"{r['label']:<{LABEL_W}}skipped: {r['skipped'][:100]}")
            continue
        per = r["per_packet"]
        batch, wake = r["packets_per_batch"], r["packets_per_wakeup"]
        lines.append(
            f"{r['label']:<{LABEL_W}}{r['offered_pps']:>8,.0f}{r['cpu_us_per_pkt']:>8.2f}"
            + "".join(f"{per.get(c, 0):>11.3f}" for c in cols)
            + f"{'-' if batch is None else f'{batch:.2f}':>10}"
            + f"{'-' if wake is None else f'{wake:.2f}':>9}"
        )
    lines.append(
        "pkt/s: offered one way; us/pkt: CPU per relayed packet (both ways) with perf attached"
    )
    return "\n".join(lines)


def profile_table(report: dict[str, Any]) -> str:
    """The systems' CPU per relayed packet split by where perf's samples fell, in us/pkt."""
    cols = perfprof.CATEGORIES
    head = (
        f"{'system':<{LABEL_W}}{'us/pkt':>7}{'kern%':>6}"
        + "".join(f"{h:>{max(8, len(h) + 1)}}" for _, h in cols)
        + f"{'vcs/pkt':>8}{'wait/vcs':>9}{'sleep/vcs':>10}"
    )
    lines = [
        f"{report['workload']}, {report['calls']} calls, {report['seconds']:g} s: "
        "CPU per relayed packet by where it goes (us)",
        head,
        "-" * len(head),
    ]
    for r in report["systems"].values():
        p = r.get("profile")
        if p is None:
            continue
        us = p["us_per_pkt"]
        per_wait = p["wait_us_per_voluntary_switch"]
        per_sleep = p["sleep_us_per_voluntary_switch"]
        lines.append(
            f"{r['label']:<{LABEL_W}}{p['cpu_us_per_pkt']:>7.2f}{p['kernel_share'] * 100:>6.1f}"
            + "".join(f"{us.get(k, 0.0):>{max(8, len(h) + 1)}.3f}" for k, h in cols)
            + f"{p['voluntary_switches_per_pkt']:>8.3f}"
            + f"{'-' if per_wait is None else f'{per_wait:.1f}':>9}"
            + f"{'-' if per_sleep is None else f'{per_sleep:.1f}':>10}"
        )
    lines += [
        "us/pkt: CPU per relayed packet in a replay without perf, split by the perf record -g "
        "samples of a second one;",
        "(wake): of send, under sock_def_readable; (sleep): of wait, under schedule; kern%: "
        "send+recv+wait+k-other;",
        "vcs/pkt: voluntary context switches per packet (sleeps); wait/vcs, sleep/vcs: wait's "
        "and (sleep)'s us per sleep",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.syscalls", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--systems", default=",".join(DEFAULT_SYSTEMS))
    ap.add_argument("--workload", default="voice", choices=list(workloads.WORKLOADS))
    ap.add_argument("--calls-scale", type=float, default=1.0)
    ap.add_argument("--seconds", type=float, default=3.0, help="the counted segment (<= 10)")
    ap.add_argument("--out", type=Path, default=OUT / "syscalls.json")
    ap.add_argument(
        "--coalesce-us",
        type=int,
        default=COALESCE_US,
        help="the wait of ours-coalesce (our relay with --coalesce-us)",
    )
    ap.add_argument(
        "--profile",
        action="store_true",
        help="also split each system's CPU per packet by perf record -g samples",
    )
    args = ap.parse_args(argv)
    names = [n for n in args.systems.split(",") if n]
    if not names or set(names) - set(CLASSES):
        ap.error(f"--systems: a comma-separated subset of {','.join(CLASSES)}")
    if not 0 < args.seconds <= 10:
        ap.error("--seconds must be in (0, 10]")
    if not 0 < args.calls_scale <= 4:
        ap.error("--calls-scale must be in (0, 4]")
    if not 0 < args.coalesce_us <= COALESCE_MAX_US:
        ap.error(f"--coalesce-us must be in 1..{COALESCE_MAX_US}")
    if shutil.which("perf") is None:
        ap.error("perf is not installed (linux-perf)")
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {0})  # the generator's CPU, as in python -m bench
    started = time.time()
    report = run(
        names, args.workload, args.calls_scale, args.seconds, args.profile, args.coalesce_us
    )
    report["started"] = started
    report["load_average"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(table(report))
    if args.profile:
        print()
        print(profile_table(report))
    log(f"report: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
