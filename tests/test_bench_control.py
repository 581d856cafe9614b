"""Tiny runs of the control-plane benchmark (``python -m bench.control``, a few seconds): the
load workloads on SQLite, and click to ringing on a connected console on both back-ends through
``clickacall bench control``; the report's shape and the consistency of its figures, never an
absolute speed."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import httpload
from bench.pgserver import pg_bin_dir

ROOT = Path(__file__).resolve().parent.parent

# load runs of the control plane (clicks per second, click to ringing): alone
pytestmark = pytest.mark.serial


def test_percentiles_nearest_rank() -> None:
    xs = [i / 1000 for i in range(1, 101)]  # 1..100 ms
    p = httpload.percentiles(xs)
    assert p["p50"] == 50.0 and p["p90"] == 90.0 and p["p99"] == 99.0 and p["max"] == 100.0
    assert p["p99_9"] == 100.0 and math.isclose(p["mean"], 50.5)
    assert httpload.percentiles([]) == {}
    assert httpload.percentiles([0.002])["p99"] == 2.0


def _check_phase(r: dict[str, Any], mode: str) -> None:
    assert r["mode"] == mode
    assert 0 < r["ok"] <= r["completed"] <= r["sent"] <= r["offered"]
    assert r["statuses"].get("201") == r["ok"]  # every answer was a 201
    assert not r["failures"]
    assert r["elapsed"] > 0 and r["throughput"] > 0
    lat = r["latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p99_9"] <= lat["max"]
    assert lat["p50"] <= lat["max"] and lat["mean"] > 0
    control = r["cpu"]["control"]
    assert control["seconds"] > 0 and control["us_per_request"] > 0
    assert 0 < control["share"] <= 1.5  # one worker: about one core at most (threads, ticks)


def test_tiny_sqlite_run(tmp_path: Path) -> None:
    out = tmp_path / "control.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.control",
            "--db",
            "sqlite",
            "--quick",
            "--duration",
            "1",
            "--connections",
            "4",
            "--workloads",
            "calls,tokens",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "calls" in proc.stdout and "tokens" in proc.stdout and "max/s" in proc.stdout
    report = json.loads(out.read_text())
    assert report["benchmark"] == "control-plane"
    m = report["machine"]
    assert m["cpu_count"] >= 1 and m["python"].startswith("3.") and "fastapi" in m["packages"]
    assert report["profile"]["duration"] == 1
    assert set(report["results"]) == {"sqlite"}
    workloads = report["results"]["sqlite"]["workloads"]
    assert set(workloads) == {"calls", "tokens"}
    for figs in workloads.values():
        top = figs["max"]
        _check_phase(top, "closed")
        assert top["connections"] == 4
        assert len(figs["at_rate"]) == 1  # --quick: half the maximum only
        for r in figs["at_rate"]:
            _check_phase(r, "open")
            assert r["rate"] == max(1.0, round(top["throughput"] / 2))
            assert r["sent"] + r["unfinished"] >= r["completed"]
    v = report["verdict"]
    assert v["measured"] and v["calls_per_second"] == workloads["calls"]["max"]["throughput"]
    # --quick runs at half the maximum only: that run is the 500/s one when it is within 5 %
    near = [r for r in workloads["calls"]["at_rate"] if abs(r["rate"] - 500) <= 25]
    if near:
        assert v["p99_ms_at_500"] == near[0]["latency_ms"]["p99"]
        assert v["p99_met"] == (v["p99_ms_at_500"] < v["p99_target_ms"])
    else:
        assert v["p99_ms_at_500"] is None and v["p99_met"] is None
    assert isinstance(v["calls_met"], bool)


def test_click_to_ringing_both_backends(tmp_path: Path) -> None:
    out = tmp_path / "control.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "clickacall",
            "bench",
            "control",
            "--db",
            "both",
            "--workloads",
            "ringing",
            "--ring-clicks",
            "4",
            "--duration",
            "30",  # a bound only: 4 clicks end it
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "click to ringing on a connected console" in proc.stdout
    report = json.loads(out.read_text())
    assert report["profile"]["ring_clicks"] == 4
    results = report["results"]
    assert set(results) == {"sqlite", "postgres"}
    if pg_bin_dir() is None:
        assert "skipped" in results["postgres"]
        del results["postgres"]
    for db, res in results.items():
        assert res["workloads"] == {}, db  # the load workloads were not asked for
        r = res["ringing"]
        assert r["clicks"] == 4 and not r["failures"], (db, r)
        assert r["elapsed"] > 0 and r["clicks_per_second"] > 0
        for key in ("click_ms", "ring_ms"):
            lat = r[key]
            assert 0 < lat["p50"] <= lat["p99"] <= lat["max"], (db, key, lat)
        # the ring cannot reach the console before the click was sent, and the click's
        # answer is timed from its own send: both are within the run
        assert r["ring_ms"]["max"] <= r["elapsed"] * 1000
    assert report["verdict"] == {"measured": False}  # no calls workload: no target verdict
