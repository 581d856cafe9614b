"""``bench/web.py`` without a browser: what it asks of the control plane it starts."""

from __future__ import annotations

from pathlib import Path

from bench import web
from control.server import build_parser


def test_every_run_of_click_to_ringing_may_click(tmp_path: Path) -> None:
    """Each run is one click from this one machine, so the control plane the benchmark starts
    must let one visitor click more often than the default number of runs: with the stock
    per-visitor limit (5 at once) the sixth run was refused and the benchmark failed."""
    argv = web.Platform(tmp_path).control_argv("opkey:00")
    assert argv[:2] == ["-m", "control"]
    args = build_parser("control").parse_args(argv[2:])
    stock = build_parser("control").parse_args([])
    assert stock.click_visitor_burst < web.RUNS  # why the flags are there
    assert args.click_visitor_burst >= 100 * web.RUNS
    assert args.click_link_burst >= 100 * web.RUNS
    assert args.metrics == "off" and args.db.startswith("sqlite:///")
