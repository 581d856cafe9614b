"""Smoke run of the benchmark machinery: the batched generator and echo, the TURN client, and a
tiny end-to-end run of ``python -m bench`` over every system that can exist here (< 60 s)."""

from __future__ import annotations

import math
import shutil
import socket
import threading
from pathlib import Path

import numpy as np
import pytest

from bench import __main__ as runner
from bench import loadgen
from ext import _loadgen


def _direct(n: int = 2) -> tuple[loadgen.Rig, loadgen.Flows]:
    rig = loadgen.Rig()
    return rig, loadgen.direct_flows(rig.addr, n)


def test_generator_direct_counts_every_packet() -> None:
    rig, flows = _direct()
    try:
        gen = flows.generator(200)
        res = gen.run(5000.0, 1000, 2.0, 0.5, 8, rig.echo)
        assert res["sent"] == 1000
        assert res["received"] >= 990  # loopback, low rate
        assert res["duplicates"] == 0 and res["other"] == 0
        rtts = np.frombuffer(gen.rtts(), dtype=np.uint32)
        assert rtts.size == res["received"]
        assert 0 < np.median(rtts) < 50_000_000
        assert 0.15 < res["send_seconds"] < 1.0  # paced: 1000 packets at 5000/s is 0.2 s
    finally:
        flows.close()
        rig.close()


def test_generator_stops_on_time_bound() -> None:
    rig, flows = _direct(1)
    try:
        res = flows.generator(64).run(1000.0, 1_000_000, 0.2, 0.1, 4, rig.echo)
        assert res["sent"] < 1000 and res["total_seconds"] < 1.0
    finally:
        flows.close()
        rig.close()


def test_echo_thread_and_stop() -> None:
    rig, flows = _direct(1)
    try:
        done: list[int] = []
        t = threading.Thread(target=lambda: done.append(rig.echo.run(10.0)))
        t.start()
        res = flows.generator(100).run(2000.0, 200, 2.0, 0.5)
        rig.echo.stop()
        t.join(2.0)
        assert not t.is_alive()
        assert res["received"] >= 190 and done and done[0] >= 190
    finally:
        flows.close()
        rig.close()


def test_errors_are_oserrors_and_bad_args_value_errors() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    fd = sock.fileno()
    gen = _loadgen.Generator([fd], 100)
    sock.close()  # fd now invalid: sendmmsg says EBADF
    with pytest.raises(OSError):
        gen.run(1000.0, 10, 0.5)
    with pytest.raises(ValueError):
        _loadgen.Generator([], 100)
    with pytest.raises(ValueError):
        _loadgen.Generator([0], 8)  # shorter than the stamp
    with pytest.raises(ValueError):
        _loadgen.Generator([0], 100, [0x3FFF])


def test_find_max_rate_brackets() -> None:
    def fake(rate: float) -> dict[str, float]:
        return {"rate": rate, "achieved_rate": rate, "loss": 0.0 if rate <= 70_000 else 0.2}

    res = loadgen.find_max_rate(fake, 40_000, 600_000, 5.0, lambda _: None)
    assert 63_000 <= float(res["max_rate"]) <= 70_000  # type: ignore[arg-type]
    assert res["limited_by"] == "loss"


def test_bench_smoke(tmp_path: Path) -> None:
    systems = ["ours", "cfwd", "pyfwd"]
    if shutil.which("turnserver"):
        systems.insert(1, "coturn")
    profile = runner.Profile(
        sizes=[200], fixed_rate=20_000, fixed_seconds=0.3, trials=1, search_start=20_000,
        search_ceiling=45_000, search_step_seconds=0.2, search_budget=1.0, latency_seconds=0.2,
        alloc_counts=[10, 40], alloc_seconds=8.0, cpu_rounds=2,
    )
    out = tmp_path / "report.json"
    report = runner.run(systems, profile, out, progress=lambda _: None)
    assert out.exists()
    for name in systems:
        res = report["systems"][name]
        assert "skipped" not in res, f"{name}: {res.get('skipped')}"
        fixed = res["sizes"]["200"]["fixed"]
        assert fixed["relayed"] > 0
        assert math.isfinite(fixed["cpu_us_per_pkt"]) and fixed["cpu_us_per_pkt"] > 0
        assert res["sizes"]["200"]["max_rate"] > 0
    for name in ("ours", "coturn"):
        if name in systems:
            points = report["systems"][name]["allocations"]["points"]
            assert points and points[0]["allocations"] == 10
    assert "ours/cfwd/200" in report["ratios"]
    assert "clickacall" in runner.table(report)
    assert set(report["interleaved_cpu"]) == set(systems)  # every system in the CPU rounds
