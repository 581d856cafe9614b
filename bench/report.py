"""The benchmark report: the tables printed on stdout, the ratios and latency CDFs put in the
JSON report, and the record of the machine the run was made on. ``bench/runner.py`` runs the
systems; this module only turns what it measured into figures a person reads."""

from __future__ import annotations

import contextlib
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from relay import procstat

ROOT = Path(__file__).resolve().parent.parent
SYSTEM_CPU, GEN_CPU = 1, 0
LABELS = {
    "ours": "clickacall",
    "ours-noq": "clickacall q-off",
    "ours-nogso": "clickacall gso-off",
    "ours-mux": "clickacall mux",
    "ours-coalesce": "clickacall coalesce",
    "coturn": "coturn",
    "coturn-src": "coturn 4.17 src",
    "cfwd": "C forwarder",
    "cfwd-gso": "C fwd + GSO",
    "pyfwd": "uvloop fwd",
}
# the systems ours is held against: a ratio ours/<each> per flood size and per workload
REFERENCES = ("coturn", "coturn-src", "cfwd", "cfwd-gso")
LABEL_W = max(len(label) for label in LABELS.values()) + 1  # the tables' system column
MINE = ("ours", "ours-mux", "ours-coalesce")  # ours' variants held against them
QS = [
    float(q)
    for q in np.concatenate([np.arange(0, 99, 1.0), np.arange(99, 100, 0.1), [99.95, 100.0]])
]  # latency CDF grid (percent)


def cdf(through: np.ndarray, direct: np.ndarray) -> dict[str, list[float]]:
    """Quantiles (at ``QS`` percent) of the round-trip times through a system and of the direct
    path, in microseconds; quantile by quantile, their difference is the relay-added latency."""
    if not through.size or not direct.size:
        return {}
    return {
        "q": QS,
        "through_us": [float(v) / 1e3 for v in np.percentile(through, QS)],
        "direct_us": [float(v) / 1e3 for v in np.percentile(direct, QS)],
    }


def workload_ratios(wl: dict[str, Any]) -> dict[str, Any]:
    """Per workload: ours/coturn and ours/C forwarder CPU per relayed packet (and ours with
    a switch on / off, where ``ours-noq`` or ``ours-nogso`` ran; ours with one shared
    peer-facing socket, ``ours-mux``, and ours with --coalesce-us, ``ours-coalesce``, against
    each of them)."""
    out: dict[str, Any] = {}
    for name, res in wl.items():
        for mine in MINE:
            ours = res.get("systems", {}).get(mine)
            if not ours or "skipped" in ours:
                continue
            for other in ("ours", *REFERENCES, *SWITCHES.values()):
                them = res["systems"].get(other)
                if other == mine or not them or "skipped" in them:
                    continue
                out[f"{mine}/{other}/{name}"] = {
                    "cpu_per_pkt": _ratio(ours["cpu_us_per_pkt"], them["cpu_us_per_pkt"])
                }
    return out


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not b or math.isnan(a) or math.isnan(b):
        return None
    return a / b


def ratios(systems: dict[str, Any], sizes: list[int]) -> dict[str, Any]:
    ours = systems.get("ours")
    if not ours or "sizes" not in ours:
        return {}
    out: dict[str, Any] = {}
    for other in REFERENCES:
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


# report key -> the optional system that runs our relay with one feature off, and its name
SWITCHES = {"quality_cost": "ours-noq", "gso_cost": "ours-nogso"}
SWITCH_TEXT = {"quality_cost": "RTP inspection", "gso_cost": "UDP GSO"}


def switch_costs(cpu: dict[str, dict[str, dict[str, float]]]) -> dict[str, dict[str, Any]]:
    """CPU per packet of our relay (``on``) against each optional system that ran with one
    feature off, per size: ``{"quality_cost": {size: {...}}, "gso_cost": ...}``."""
    out: dict[str, dict[str, Any]] = {}
    on = cpu.get("ours")
    for key, system in SWITCHES.items():
        off = cpu.get(system)
        if not on or not off:
            continue
        out[key] = {}
        for size in on:
            if size in off:
                a, b = on[size]["cpu_us_per_pkt"], off[size]["cpu_us_per_pkt"]
                out[key][size] = {"on_us_per_pkt": a, "off_us_per_pkt": b, "ratio": _ratio(a, b)}
    return out


def table(report: dict[str, Any]) -> str:
    rate = report["profile"]["fixed_rate"]
    lines = [
        f"{'system':<{LABEL_W}} {'size':>5} {'us/pkt@' + format(rate / 1000, '.0f') + 'k':>11} "
        f"{'loss':>6} {'max pps <1%':>12} {'by':>9} {'+p50 us':>8} {'+p99 us':>8}",
    ]
    for name, res in report["systems"].items():
        if "skipped" in res:
            lines.append(f"{LABELS[name]:<{LABEL_W}} skipped: {res['skipped'][:200]}")
            continue
        for size, r in res["sizes"].items():
            f, lat = r["fixed"], r["latency"]
            lines.append(
                f"{res['label']:<{LABEL_W}} {size:>5} {f['cpu_us_per_pkt']:>11.2f} {f['loss']:>6.2%} "
                f"{r['max_rate']:>12,.0f} {r['max_rate_limited_by']:>9} "
                f"{lat['added_p50_us']:>8.1f} {lat['added_p99_us']:>8.1f}"
            )
    for res in report["systems"].values():
        alloc = res.get("allocations")
        if not alloc:
            continue
        for p in alloc["points"]:
            lines.append(
                f"{res['label']}: {p['allocations']:>5} idle allocations: "
                f"{p['fixed']['cpu_us_per_pkt']:.2f} us/pkt ({alloc['size']} B, "
                f"loss {p['fixed']['loss']:.2%}), RSS {p['rss_bytes'] / 2**20:.1f} MiB, "
                f"{p['rss_per_allocation_bytes'] / 1024:.2f} KiB/allocation"
            )
    for key, text in SWITCH_TEXT.items():
        for size, q in report.get(key, {}).items():
            ratio = q["ratio"]
            lines.append(
                f"{text} {size} B: on {q['on_us_per_pkt']:.3f} us/pkt, off "
                f"{q['off_us_per_pkt']:.3f} us/pkt"
                + (f", on/off {ratio:.3f} ({(ratio - 1) * 100:+.1f}%)" if ratio else "")
            )
    if not report["systems"]:
        for name, per in report.get("interleaved_cpu", {}).items():
            for size, f in per.items():
                lines.append(
                    f"{LABELS[name]:<{LABEL_W}} {size:>5} B: {f['cpu_us_per_pkt']:.3f} us/pkt, "
                    f"loss {f['loss']:.2%} (interleaved median)"
                )
    for key, r in report["ratios"].items():
        vals = ", ".join(f"{k} {v:.2f}" for k, v in r.items() if v is not None)
        lines.append(f"ratio {key}: {vals}")
    lines += workload_table(report)
    lines += latency_table(report)
    lines += workers_table(report)
    lines += streams_table(report)
    lines.append(
        f"generator CPU {GEN_CPU}, systems CPU {SYSTEM_CPU}; us/pkt: medians of "
        f"{report['profile']['cpu_rounds']} interleaved rounds; other figures: "
        f"medians of {report['profile']['trials']} trial(s); +p50/+p99 = RTT minus "
        f"the direct path's at half the max rate"
    )
    return "\n".join(lines)


def streams_table(report: dict[str, Any]) -> list[str]:
    """TURN over TCP and TLS: CPU per relayed packet, ours and coturn, and their ratio."""
    st = report.get("streams") or {}
    if not st.get("cpu"):
        return []
    rate = st["rate"]
    lines = [
        f"TURN over TCP/TLS clients (relayed side UDP), {rate:,.0f} pkt/s offered, "
        f"{report['profile']['cpu_rounds']} interleaved rounds (medians)",
        f"{'transport':<9} {'system':<12} {'size':>5} {'us/pkt':>8} {'loss':>7} "
        f"{'rtt p50 us':>10} {'rtt p99 us':>10}",
    ]
    for t, per in st["cpu"].items():
        for name, sizes in per.items():
            for size, f in sizes.items():
                lines.append(
                    f"{t:<9} {LABELS[name]:<12} {size:>5} {f['cpu_us_per_pkt']:>8.2f} "
                    f"{f['loss']:>7.2%} {f['rtt_p50_us']:>10.0f} {f['rtt_p99_us']:>10.0f}"
                )
    for t, r in st.get("ratios", {}).items():
        vals = ", ".join(f"{size} B {v:.2f}" for size, v in r.items() if v is not None)
        if vals:
            lines.append(f"ratio ours/coturn over {t}: {vals}")
    return lines


def workload_table(report: dict[str, Any]) -> list[str]:
    wl = report.get("workloads") or {}
    if not wl:
        return []
    lines = [
        "",
        f"{'workload':<8} {'calls':>5} {'pkt/s':>7} {'Mbit/s':>7} {'system':<{LABEL_W}} "
        f"{'us/pkt':>7} {'loss':>7} {'p50 us':>7} {'p99 us':>8} {'+p50 us':>8} "
        f"{'+p99 us':>8}",
    ]
    for name, res in wl.items():
        head = (
            f"{name:<8} {res['calls']:>5} {res.get('offered_pps', math.nan):>7,.0f} "
            f"{res.get('offered_mbps', math.nan):>7.1f}"
        )
        for sname, r in res["systems"].items():
            if "skipped" in r:
                lines.append(f"{head} {LABELS[sname]:<{LABEL_W}} skipped: {r['skipped'][:120]}")
            else:
                lines.append(
                    f"{head} {r['label']:<{LABEL_W}} {r['cpu_us_per_pkt']:>7.2f} {r['loss']:>7.2%} "
                    f"{r['rtt_p50_us']:>7.0f} {r['rtt_p99_us']:>8.0f} {r['added_p50_us']:>8.1f} "
                    f"{r['added_p99_us']:>8.1f}"
                )
            head = " " * len(head)
    for key, r in report.get("workload_ratios", {}).items():
        if r.get("cpu_per_pkt") is not None:
            lines.append(f"ratio {key}: cpu_per_pkt {r['cpu_per_pkt']:.2f}")
    lines.append(
        "workloads: real SRTP per call (one allocation each); us/pkt = CPU per relayed "
        "packet (both directions); loss over RTP; +p50/+p99 = RTT minus the direct path's"
    )
    return lines


def latency_table(report: dict[str, Any]) -> list[str]:
    """Relay-added round trip at fixed rates (``Bench.latency_rounds``): per rate and system the
    medians over the interleaved rounds, and the spread of the rounds' p99."""
    lat = report.get("latency_rounds") or {}
    if not lat.get("rates"):
        return []
    lines = [
        "",
        f"relay-added round trip, {lat['size']} B, medians of {lat['rounds']} interleaved "
        f"round(s) of {lat['seconds']:g} s (each against its round's direct path):",
        f"  {'pkt/s':>8} {'system':<{LABEL_W}} {'+p50 us':>8} {'+p99 us':>8} "
        f"{'p99 min-max':>16} {'loss':>7}",
    ]
    for rate, per in lat["rates"].items():
        for r in per.values():
            spread = f"{r['added_p99_min_us']:.0f}-{r['added_p99_max_us']:.0f}"
            lines.append(
                f"  {int(rate):>8,} {r['label']:<{LABEL_W}} {r['added_p50_us']:>8.1f} "
                f"{r['added_p99_us']:>8.1f} {spread:>16} {r['loss']:>7.2%}"
            )
    return lines


def _switches(f: dict[str, float]) -> str:
    """Sleeps (voluntary switches) and preemptions per packet of a workers trial."""
    if "voluntary_switches_per_pkt" not in f:
        return "switches not measured"
    return (
        f"{f['voluntary_switches_per_pkt']:.3f} sleeps, "
        f"{f['involuntary_switches_per_pkt']:.4f} preemptions per packet"
    )


def workers_table(report: dict[str, Any]) -> list[str]:
    wk = report.get("workers") or {}
    if not wk.get("points"):
        return []
    lines = [
        "",
        f"our relay by workers ({wk['flows']} allocations, {wk['size']} B, "
        f"us/pkt at {wk['rate']:,.0f}/s, median of {wk.get('rounds', 1)} interleaved rounds):",
    ]
    for p in wk["points"]:
        where = f"CPU {','.join(map(str, p['cpus']))}" + (
            " SHARED with the generator" if p["shares_generator_core"] else ""
        )
        if "skipped" in p:
            lines.append(f"  {p['workers']} worker(s): skipped: {p['skipped'][:200]}")
            continue
        split = " / ".join(f"{x:.0%}" for x in p.get("cpu_share_by_process", []))
        f = p["fixed"]
        lines.append(
            f"  {p['workers']} worker(s) on {where}: {f['cpu_us_per_pkt']:.2f} us/pkt "
            f"(loss {f['loss']:.2%}, {_switches(f)}), max {p['max_rate']:,.0f} pkt/s <1% loss "
            f"(by {p['max_rate_limited_by']}), CPU split by process {split}"
        )
        if "one_worker_at_share" in p:
            sh = p["one_worker_at_share"]
            lines.append(
                f"    1 worker at {sh['rate']:,.0f}/s (each of the {p['workers']}'s share): "
                f"{sh['cpu_us_per_pkt']:.2f} us/pkt ({_switches(sh)})"
            )
    done = [p for p in wk["points"] if "skipped" not in p]
    if len(done) > 1:
        one = done[0]["fixed"]["cpu_us_per_pkt"]
        lines.append(
            "  CPU per packet against "
            f"{done[0]['workers']} worker(s): "
            + ", ".join(
                f"{p['workers']} workers {p['fixed']['cpu_us_per_pkt'] / one:.2f}x"
                for p in done[1:]
            )
        )
    if any(p.get("shares_generator_core") for p in wk["points"]):
        lines.append(
            "  (this machine has too few cores to keep the generator apart: with "
            "the workers on its core, the max rate measures both, not the relay alone)"
        )
    return lines


def _run_out(cmd: list[str]) -> str:
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=10, cwd=ROOT)
    except (OSError, subprocess.SubprocessError):
        return ""
    return (res.stdout or res.stderr).strip() if res.returncode == 0 else ""


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str] = {}
    for name in (
        "clickacall",
        "uvloop",
        "numpy",
        "Cython",
        "pylibsrtp",
        "matplotlib",
        "setuptools",
    ):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    coturn = _run_out(["turnserver", "--version"]) if shutil.which("turnserver") else ""
    out["coturn"] = coturn.splitlines()[-1] if coturn else "not installed"
    gcc = _run_out([shutil.which("gcc") or "cc", "--version"])
    out["gcc"] = gcc.splitlines()[0] if gcc else "not installed"
    return out


def machine() -> dict[str, Any]:
    box = procstat.machine()
    commit = _run_out(["git", "rev-parse", "HEAD"])
    dirty = bool(_run_out(["git", "status", "--porcelain", "--untracked-files=no"]))
    affinity = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    return {
        "cpus": os.cpu_count(),
        "cpu_model": box.cpu_model or "",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "physical_cores": box.physical_cores,
        "cpus_usable": affinity,
        "memory_bytes": box.mem_bytes or 0,
        "kernel_version": platform.version(),
        "os": _os_release(),
        "arch": platform.machine(),
        "python_implementation": platform.python_implementation(),
        "python_executable": sys.executable,
        "packages": _versions(),
        "git_commit": commit or None,
        "git_dirty": dirty if commit else None,
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _os_release() -> str:
    with contextlib.suppress(OSError), open("/etc/os-release") as f:
        for line in f:
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    return platform.system()
