"""Relay benchmark: our relay against coturn, a plain C forwarder and a bare uvloop forwarder.

    python -m bench                 # full run (a few minutes)
    python -m bench --quick         # short run (< 60 s)
    python -m bench --systems ours,coturn --sizes 200
    python -m bench --quality-off --systems ours --cpu-only   # cost of RTP inspection
    python -m bench --gso-off --systems ours,cfwd --cpu-only  # what UDP GSO saves
    python -m bench --transport tcp,tls   # TURN over TCP and TLS clients, ours and coturn
    python -m bench control [--db sqlite|postgres|both] [--quick]  # the control plane:
                                    # clicks/s, p50/p99, click to ringing (bench/control.py)

``bench.runner`` runs the systems of ``bench.systems`` and says what each figure is; README.md,
section Benchmarks, shows results.

Progress goes to stderr (a line per step: elapsed, an estimate of what is left, what runs); the
table to stdout; everything, with the machine it ran on, to bench/out/report.json, and the
plots (bench/plots.py) to bench/out/*.png.
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from bench import workloads
from bench.report import table
from bench.runner import FULL, QUICK, run
from bench.systems import ALL_SYSTEMS, COALESCE_US, OPTIONAL_SYSTEMS, OUT, log
from relay.config import COALESCE_MAX_US


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


N = TypeVar("N", int, float)


def _numbers(
    text: str,
    kind: Callable[[str], N],
    ok: Callable[[N], bool],
    flag: str,
    want: str,
    ap: argparse.ArgumentParser,
) -> list[N]:
    """A comma-separated list of numbers that each pass ``ok``, or ``none`` (an empty list);
    anything else (an empty text too) is a usage error saying what ``flag`` wants."""
    try:
        values = [] if text == "none" else [kind(x) for x in text.split(",") if x]
    except ValueError:
        values = []
    if (not values and text != "none") or not all(ok(v) for v in values):
        ap.error(f"{flag}: {text!r}: {want}")
    return values


def main(argv: list[str] | None = None, prog: str = "python -m bench") -> int:
    args_in = sys.argv[1:] if argv is None else argv
    if args_in[:1] == ["control"]:  # the control-plane benchmark, its own options
        from bench import control

        return control.main(args_in[1:], prog=f"{prog} control")
    ap = argparse.ArgumentParser(
        prog=prog,
        description=__doc__.split("\n")[0],
        epilog="Writes the table to stdout, progress to stderr, the JSON report to --out and "
        "the PNG plots next to it. See README.md, section Benchmarks, for each figure. "
        f"'{prog} control --help': the control plane's benchmark (clicks per second on SQLite "
        "and PostgreSQL, click to ringing on a connected console).",
    )
    ap.add_argument("--quick", action="store_true", help="short run (about 2 minutes)")
    ap.add_argument(
        "--systems",
        default=",".join(ALL_SYSTEMS),
        help=f"comma-separated subset of {','.join(ALL_SYSTEMS)}; optional, not by default: "
        f"{','.join(OPTIONAL_SYSTEMS)} (coturn-src: the turnserver in CLICKACALL_COTURN_BIN)",
    )
    ap.add_argument("--sizes", help="payload sizes in bytes, comma-separated (default 200,1200)")
    ap.add_argument("--rate", type=float, help="fixed offered rate, packets/s (default 100000)")
    ap.add_argument("--trials", type=int, help="repeats per figure (median)")
    ap.add_argument(
        "--allocs", help="idle allocation counts for TURN systems, e.g. 10,1000,10000, or none"
    )
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
        "--workers-rate",
        type=float,
        help="total packets/s at which the worker counts' CPU per packet is compared "
        "(default 40000: what 2 workers carry on 2 cores beside the generator)",
    )
    ap.add_argument(
        "--workers-coalesce-us",
        type=int,
        default=0,
        help="the worker counts' --coalesce-us (default 0: off, as the relay's default)",
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
        "--coalesce-us",
        type=int,
        default=COALESCE_US,
        help=f"the wait of ours-coalesce, our relay with --coalesce-us (default {COALESCE_US})",
    )
    ap.add_argument(
        "--cpu-only",
        action="store_true",
        help="only the interleaved CPU-per-packet rounds (no rate search, latency, "
        "workload, allocation or worker runs)",
    )
    ap.add_argument("--rounds", type=int, help="interleaved CPU rounds (median)")
    ap.add_argument(
        "--latency-rates",
        help="offered packets/s at which every system's added latency is measured in "
        "interleaved rounds, comma-separated, or 'none' (default 50000,100000)",
    )
    ap.add_argument(
        "--latency-rounds", type=int, help="interleaved latency rounds (median; default 7)"
    )
    ap.add_argument(
        "--transport",
        default="udp",
        help="how the clients reach the TURN systems: udp, tcp, tls, or several "
        "comma-separated (default udp); tcp and tls run the interleaved CPU rounds of ours "
        "and coturn serving TURN over TCP and TLS (the relayed side stays UDP) at "
        "--stream-rate",
    )
    ap.add_argument(
        "--stream-rate",
        type=float,
        help="offered packets/s for TCP and TLS clients (default 20000: one write per packet)",
    )
    ap.add_argument("--no-plots", action="store_true", help="write no PNG plots")
    ap.add_argument("--out", type=Path, default=OUT / "report.json")
    args = ap.parse_args(args_in)
    profile = copy.deepcopy(QUICK if args.quick else FULL)
    if args.sizes:
        profile.sizes = [int(s) for s in args.sizes.split(",")]
    if args.rate:
        profile.fixed_rate = args.rate
    if args.trials:
        profile.trials = args.trials
    if args.allocs is not None:
        profile.alloc_counts = _numbers(
            args.allocs,
            int,
            lambda c: c >= 1,
            "--allocs",
            "counts of 1 or more, e.g. 10,1000,10000, or none",
            ap,
        )
    if args.rounds:
        profile.cpu_rounds = args.rounds
    if args.latency_rates is not None:
        profile.latency_rates = _numbers(
            args.latency_rates,
            float,
            lambda r: 1_000 <= r <= 1_000_000,
            "--latency-rates",
            "packets/s in [1000, 1000000], comma-separated, or none",
            ap,
        )
    if args.latency_rounds is not None:
        if not 1 <= args.latency_rounds <= 99:
            ap.error("--latency-rounds: 1 to 99")
        profile.latency_rounds = args.latency_rounds
    if args.stream_rate:
        profile.stream_rate = args.stream_rate
    transports = [t for t in args.transport.split(",") if t]
    if not transports or set(transports) - {"udp", "tcp", "tls"}:
        ap.error(f"--transport: {args.transport!r}: choose from udp, tcp, tls (comma-separated)")
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
    if args.workers_rate is not None:
        if not 1_000 <= args.workers_rate <= 1_000_000:
            ap.error("--workers-rate: packets/s in [1000, 1000000]")
        profile.workers_rate = args.workers_rate
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
    if not 1 <= args.coalesce_us <= COALESCE_MAX_US:
        ap.error(f"--coalesce-us: 1..{COALESCE_MAX_US} microseconds")
    profile.coalesce_us = args.coalesce_us
    if not 0 <= args.workers_coalesce_us <= COALESCE_MAX_US:
        ap.error(f"--workers-coalesce-us: 0..{COALESCE_MAX_US} microseconds")
    profile.workers_coalesce_us = args.workers_coalesce_us
    for flag, name in ((args.quality_off, "ours-noq"), (args.gso_off, "ours-nogso")):
        if flag and name not in systems:
            systems.append(name)
    unknown = set(systems) - set(ALL_SYSTEMS) - set(OPTIONAL_SYSTEMS)
    if unknown:
        ap.error(f"unknown systems: {', '.join(sorted(unknown))}")
    report = run(
        systems,
        profile,
        args.out,
        cpu_only=args.cpu_only,
        plots=not args.no_plots,
        transports=transports,
    )
    print(table(report))
    log(f"report: {args.out} ({report['seconds']:.0f}s)")
    for name, path in (report.get("plots") or {}).items():
        if name != "skipped":
            log(f"plot {name}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
