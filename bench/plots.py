"""The benchmark report's plots, as PNG files next to the report (matplotlib, Agg canvas: no
display, no pyplot state).

- ``rate.png``: delivered rate and loss against offered rate, per system and payload size, from
  the max-rate search's steps (each dot one trial; the dotted line is the rate found);
- ``latency_cdf.png``: relay-added round-trip latency as a CDF, per system: the RTT of every
  packet through the system minus the median RTT of the direct path (generator -> echo ->
  generator, same load, same run), for the floods (at half each system's max rate) and for each
  call workload; the dashed grey curve is the direct path's own spread about its median, the
  part of any tail that the rig adds, not the system;
- ``allocations.png``: CPU per relayed packet and resident memory against the number of live
  allocations (TURN systems);
- ``workloads.png``: per call workload and system, CPU per relayed packet, loss and added p99;
- ``workers.png``: our relay with 1 and with N workers: CPU per packet and max rate.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

COLORS = {
    "ours": "C0",
    "coturn": "C1",
    "cfwd": "C2",
    "pyfwd": "C3",
    "ours-noq": "C4",
    "ours-nogso": "C5",
    "cfwd-gso": "C6",
    "ours-mux": "C8",
    "coturn-src": "C9",
    "ours-coalesce": "#16386b",  # a darker blue than ours' (C7, grey, is the direct path's)
}
DPI = 110


def _color(name: str) -> str:
    return COLORS.get(name, "C7")


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=DPI, format="png")
    return path


def _label(report: dict[str, Any], name: str) -> str:
    res = report.get("systems", {}).get(name, {})
    return str(res.get("label", name))


def rate(report: dict[str, Any], path: Path) -> Path | None:
    systems = {n: r for n, r in report.get("systems", {}).items() if "sizes" in r}
    sizes = sorted({s for r in systems.values() for s in r["sizes"]}, key=int)
    if not sizes:
        return None
    fig = Figure(figsize=(5.5 * len(sizes), 7.5), layout="constrained")
    axes = fig.subplots(2, len(sizes), squeeze=False)
    for col, size in enumerate(sizes):
        top, bottom = axes[0][col], axes[1][col]
        top_rate = 0.0
        for name, res in systems.items():
            r = res["sizes"].get(size)
            if not r or not r.get("search"):
                continue
            steps = sorted(r["search"], key=lambda t: t["rate"])
            x = np.array([t["rate"] for t in steps]) / 1e3
            delivered = np.array([t["achieved_rate"] * (1 - t["loss"]) for t in steps]) / 1e3
            loss = np.array([t["loss"] for t in steps]) * 100
            c = _color(name)
            top.plot(x, delivered, "o-", color=c, ms=4, lw=1, label=res["label"])
            bottom.plot(x, loss, "o-", color=c, ms=4, lw=1, label=res["label"])
            behind = np.array([t["achieved_rate"] < 0.97 * t["rate"] for t in steps])
            if behind.any():  # the generator could not send at the offered rate
                for ax, y in ((top, delivered), (bottom, loss)):
                    ax.plot(x[behind], y[behind], "o", ms=8, mfc="none", mec="k", mew=0.8)
            if r.get("max_rate"):
                for ax in (top, bottom):
                    ax.axvline(r["max_rate"] / 1e3, color=c, ls=":", lw=1)
            top_rate = max(top_rate, float(x.max()))
        if top_rate:
            top.plot(
                [0, top_rate],
                [0, top_rate],
                color="0.6",
                lw=0.8,
                ls="--",
                label="delivered = offered",
            )
        top.set_title(f"{size} B payload: delivered vs offered")
        top.set_xlabel("offered, thousand packets/s (one direction)")
        top.set_ylabel("delivered back, thousand packets/s")
        bottom.set_title(f"{size} B payload: loss vs offered")
        bottom.set_xlabel("offered, thousand packets/s")
        bottom.set_ylabel("loss, % (round trip)")
        bottom.set_yscale("symlog", linthresh=1.0)
        bottom.set_ylim(0, 100)
        bottom.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        bottom.axhline(1.0, color="0.4", lw=0.8, ls="--", label="1% loss")
        for ax in (top, bottom):
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.suptitle(
        "Max-rate search steps (dotted: highest rate with < 1% loss; ringed: the "
        "generator fell behind the offered rate)"
    )
    return _save(fig, path)


def _added(c: dict[str, list[float]], key: str = "through_us") -> tuple[np.ndarray, np.ndarray]:
    """(RTT quantiles of ``key`` minus the direct path's median, quantile levels)."""
    q = np.asarray(c["q"]) / 100
    direct = np.asarray(c["direct_us"])
    median = float(np.interp(0.5, q, direct))
    return np.asarray(c[key]) - median, q


def latency_cdf(report: dict[str, Any], path: Path) -> Path | None:
    panels: list[tuple[str, dict[str, tuple[str, dict[str, list[float]]]]]] = []
    lat = report.get("latency_rounds") or {}
    for rate, per in (lat.get("rates") or {}).items():
        curves = {n: (r["label"], r.get("cdf") or {}) for n, r in per.items()}
        panels.append(
            (
                f"flood {lat['size']} B at {int(rate):,} pkt/s, {lat['rounds']} interleaved rounds",
                curves,
            )
        )
    systems = {n: r for n, r in report.get("systems", {}).items() if "sizes" in r}
    for size in sorted({s for r in systems.values() for s in r["sizes"]}, key=int):
        curves = {
            n: (r["label"], r["sizes"][size].get("latency_cdf") or {})
            for n, r in systems.items()
            if size in r["sizes"]
        }
        panels.append((f"flood {size} B, at half each system's max rate", curves))
    for wname, w in (report.get("workloads") or {}).items():
        curves = {
            n: (r["label"], r.get("latency_cdf") or {})
            for n, r in w.get("systems", {}).items()
            if "skipped" not in r
        }
        panels.append(
            (
                f"{wname}: {w.get('calls', '?')} calls, "
                f"{w.get('offered_pps', math.nan):,.0f} pkt/s",
                curves,
            )
        )
    panels = [(t, {n: c for n, c in cs.items() if c[1]}) for t, cs in panels]
    panels = [(t, cs) for t, cs in panels if cs]
    if not panels:
        return None
    ncol = min(3, len(panels))
    nrow = math.ceil(len(panels) / ncol)
    fig = Figure(figsize=(5.2 * ncol, 3.9 * nrow), layout="constrained")
    axes = fig.subplots(nrow, ncol, squeeze=False).ravel()
    for ax, (title, curves) in zip(axes, panels, strict=False):
        ref = curves.get("ours") or next(iter(curves.values()))
        added, q = _added(ref[1], "direct_us")
        ax.plot(added, q, color="0.5", lw=1.0, ls="--", label="direct path")
        for name, (label, c) in curves.items():
            added, q = _added(c)
            ax.plot(added, q, color=_color(name), lw=1.4, label=label)
        ax.set_xscale("symlog", linthresh=10.0)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_ylim(0, 1.0)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("relay-added RTT, us (RTT minus the direct path's median)")
        ax.set_ylabel("fraction of packets")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8, loc="lower right")
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    fig.suptitle("Relay-added latency CDF (left is better; the top of each curve is the tail)")
    return _save(fig, path)


def allocations(report: dict[str, Any], path: Path) -> Path | None:
    series = {
        n: r["allocations"]
        for n, r in report.get("systems", {}).items()
        if r.get("allocations", {}).get("points")
    }
    if not series:
        return None
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    cpu_ax, mem_ax = fig.subplots(1, 2)
    for name, a in series.items():
        pts = a["points"]
        x = [p["allocations"] for p in pts]
        c = _color(name)
        label = _label(report, name)
        cpu_ax.plot(x, [p["fixed"]["cpu_us_per_pkt"] for p in pts], "o-", color=c, label=label)
        mem_ax.plot(x, [p["rss_bytes"] / 2**20 for p in pts], "o-", color=c, label=label)
        for p in pts:
            if p["fixed"]["loss"] >= 0.01:
                cpu_ax.annotate(
                    f"loss {p['fixed']['loss']:.0%}",
                    (p["allocations"], p["fixed"]["cpu_us_per_pkt"]),
                    fontsize=7,
                    textcoords="offset points",
                    xytext=(4, 4),
                )
    size = next(iter(series.values()))["size"]
    rate = report.get("profile", {}).get("fixed_rate", math.nan)
    cpu_ax.set_title(
        f"CPU per relayed packet ({size} B at {rate:,.0f}/s, 4 busy flows)", fontsize=10
    )
    cpu_ax.set_ylabel("CPU us per packet")
    cpu_ax.set_ylim(0, cpu_ax.get_ylim()[1] * 1.15)
    for a in series.values():
        last = a["points"][-1]
        if math.isfinite(last.get("rss_per_allocation_bytes", math.nan)):
            mem_ax.annotate(
                f"{last['rss_per_allocation_bytes'] / 1024:.1f} KiB/allocation",
                (last["allocations"], last["rss_bytes"] / 2**20),
                fontsize=7,
                textcoords="offset points",
                xytext=(-90, 6),
            )
    mem_ax.set_title("resident memory of the relay", fontsize=10)
    mem_ax.set_ylabel("RSS, MiB")
    mem_ax.set_ylim(0, mem_ax.get_ylim()[1] * 1.15)
    for ax in (cpu_ax, mem_ax):
        ax.set_xscale("log")
        ax.set_xlabel("live idle allocations")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    return _save(fig, path)


def workloads(report: dict[str, Any], path: Path) -> Path | None:
    wl = report.get("workloads") or {}
    names = [n for n, w in wl.items() if w.get("systems")]
    if not names:
        return None
    systems: list[str] = []
    for n in names:
        for s, r in wl[n]["systems"].items():
            if "skipped" not in r and s not in systems:
                systems.append(s)
    fig = Figure(figsize=(13, 4.2), layout="constrained")
    axes = fig.subplots(1, 3)
    metrics = [
        ("cpu_us_per_pkt", "CPU us per relayed packet", 1.0),
        ("loss", "loss, % of RTP packets", 100.0),
        ("added_p99_us", "relay-added p99 RTT, us", 1.0),
    ]
    width = 0.8 / max(1, len(systems))
    x = np.arange(len(names))
    for ax, (key, title, scale) in zip(axes, metrics, strict=True):
        for i, s in enumerate(systems):
            vals = [wl[n]["systems"].get(s, {}).get(key, math.nan) * scale for n in names]
            label = next(
                (
                    wl[n]["systems"][s]["label"]
                    for n in names
                    if s in wl[n]["systems"] and "label" in wl[n]["systems"][s]
                ),
                s,
            )
            ax.bar(
                x + (i - (len(systems) - 1) / 2) * width, vals, width, color=_color(s), label=label
            )
        ax.set_xticks(x, [f"{n}\n{wl[n]['calls']} calls" for n in names], fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3, axis="y")
        if key == "loss":
            ax.set_ylim(0, max(1.0, ax.get_ylim()[1]))
            losses = [
                wl[n]["systems"].get(s, {}).get("loss", math.nan) for n in names for s in systems
            ]
            if all(v == 0 for v in losses):
                ax.text(
                    0.5,
                    0.5,
                    "no RTP packet lost",
                    ha="center",
                    va="center",
                    transform=ax.transAxes,
                    color="0.4",
                )
    # under the bars, not over them: there are up to 9 systems
    axes[0].legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3)
    fig.suptitle("Call workloads (real SRTP, one allocation per call)")
    return _save(fig, path)


def workers(report: dict[str, Any], path: Path) -> Path | None:
    wk = report.get("workers") or {}
    pts = [p for p in wk.get("points", []) if "skipped" not in p]
    if not pts:
        return None
    fig = Figure(figsize=(9, 3.8), layout="constrained")
    cpu_ax, rate_ax = fig.subplots(1, 2)
    labels = [
        f"{p['workers']} worker(s)\nCPU {','.join(map(str, p['cpus']))}"
        + ("\n(shares generator's)" if p["shares_generator_core"] else "")
        for p in pts
    ]
    x = np.arange(len(pts))
    cpu = cpu_ax.bar(x, [p["fixed"]["cpu_us_per_pkt"] for p in pts], color="C0")
    cpu_ax.bar_label(cpu, [f"{p['fixed']['cpu_us_per_pkt']:.2f}" for p in pts], fontsize=8)
    # one worker at each worker count's share of the rate: what each of those workers sees
    shares = [
        (i, p["one_worker_at_share"]) for i, p in enumerate(pts) if "one_worker_at_share" in p
    ]
    if shares:
        xs = [x[-1] + 1 + k for k in range(len(shares))]
        extra = cpu_ax.bar(
            xs, [sh["cpu_us_per_pkt"] for _, sh in shares], color="C0", alpha=0.45, hatch="//"
        )
        cpu_ax.bar_label(extra, [f"{sh['cpu_us_per_pkt']:.2f}" for _, sh in shares], fontsize=8)
        cpu_ax.set_xticks(
            [*x, *xs],
            [
                *labels,
                *(f"1 worker\nat {sh['rate']:,.0f}/s\n(each one's share)" for _, sh in shares),
            ],
            fontsize=8,
        )
    else:
        cpu_ax.set_xticks(x, labels, fontsize=8)
    bars = rate_ax.bar(x, [p["max_rate"] / 1e3 for p in pts], color="C0")
    rate_ax.bar_label(
        bars,
        [f"{p['max_rate'] / 1e3:.0f}k, by {p['max_rate_limited_by']}" for p in pts],
        fontsize=8,
    )
    cpu_ax.set_title(
        f"CPU per packet at {wk['rate']:,.0f}/s ({wk['flows']} allocations)", fontsize=10
    )
    cpu_ax.set_ylabel("CPU us per packet")
    rate_ax.set_title("highest rate with < 1% loss", fontsize=10)
    rate_ax.set_ylabel("thousand packets/s")
    rate_ax.set_xticks(x, labels, fontsize=8)
    for ax in (cpu_ax, rate_ax):
        ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)


def draw(report: dict[str, Any], outdir: Path, prefix: str = "") -> dict[str, Path]:
    """Every plot the report has data for, as ``outdir/<prefix><name>.png``."""
    outdir.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    for name, fn in (
        ("rate", rate),
        ("latency_cdf", latency_cdf),
        ("allocations", allocations),
        ("workloads", workloads),
        ("workers", workers),
    ):
        path = fn(report, outdir / f"{prefix}{name}.png")
        if path is not None:
            out[name] = path
    return out
