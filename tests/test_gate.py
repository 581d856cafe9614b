"""The performance gate (bench/gate.py) can fail: a deliberately slowed relay and slowed hot
functions fail it. ``make test`` runs the gate itself on the real build after the suite."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import gate
from bench.micro import cases

ROOT = Path(__file__).resolve().parent.parent

# the gate measures speed and CPU ratios and waits for a quiet machine (settle): alone
pytestmark = pytest.mark.serial


def test_check_judges_the_median_against_the_limit() -> None:
    c = gate.Check("x", [1.0, 1.3, 1.1, 0.9, 1.2], baseline=1.0, limit=1.15)
    assert c.median == 1.1 and c.over == 2 and c.result == gate.PASS
    assert c.borderline  # 1.1 is within 5 % of 1.15: measured again
    c.extend([1.3, 1.4, 1.25])
    assert c.median == pytest.approx(1.225) and c.over == 5 and c.result == gate.FAIL
    assert c.unsure and not c.borderline  # a failure is measured twice too
    assert not gate.Check("y", [0.8, 0.85, 0.9], None, 1.0).unsure
    assert gate.Check("z", [float("nan")], None, 1.0).result == gate.FAIL


def test_relay_limits_come_from_the_baseline_and_the_fixed_coturn_ceiling() -> None:
    rounds = [
        {"ours/cfwd": 1.2, "ours/coturn": 0.9},
        {"ours/cfwd": 1.5, "ours/coturn": 1.1},
        {"ours/cfwd": 1.45, "ours/coturn": 1.05},
    ]
    cfwd, coturn = gate.relay_checks(rounds, {"ratios": {"ours/cfwd": 1.2, "ours/coturn": 0.8}})
    assert cfwd.limit == pytest.approx(1.2 * (1 + gate.CFWD_MARGIN))
    assert cfwd.result == gate.FAIL and cfwd.median == 1.45
    assert coturn.limit == gate.COTURN_LIMIT and coturn.result == gate.FAIL


def test_voice_judges_ours_coturn_against_the_baseline_and_only_reports_ours_cfwd() -> None:
    rounds = [
        {"ours/cfwd": 1.30, "ours/coturn": 1.02},
        {"ours/cfwd": 1.20, "ours/coturn": 1.20},
        {"ours/cfwd": 1.25, "ours/coturn": 1.18},
    ]
    cfwd, coturn = gate.voice_checks(rounds, {"ratios": {"ours/cfwd": 0.9, "ours/coturn": 1.0}})
    assert coturn.limit == pytest.approx(1.0 * (1 + gate.VOICE_MARGIN))
    assert coturn.median == 1.18 and coturn.result == gate.FAIL  # a majority over 1.15
    # ours/cfwd: its median is reported with the baseline's, but it has no limit
    assert cfwd.median == 1.25 and cfwd.baseline == 0.9 and cfwd.limit == float("inf")
    assert cfwd.result == gate.PASS and not cfwd.unsure
    # without a baseline there is nothing to hold ours/coturn to (the first measurement)
    assert all(c.result == gate.PASS for c in gate.voice_checks(rounds, None))


def test_judged_measures_again_only_when_a_ratio_is_near_or_over_its_limit() -> None:
    firsts: list[int] = []

    def measure(first: int) -> list[dict[str, Any]]:
        firsts.append(first)
        return [{"r": 1.0}] * 3

    def judge_at(limit: float) -> Any:
        return lambda got: [gate.Check("r", [g["r"] for g in got], None, limit)]

    got, checks, twice = gate.judged("t", measure, judge_at(2.0), 3, retry=True)
    assert (len(got), twice, firsts) == (3, False, [0])  # clearly under: once
    got, checks, twice = gate.judged("t", measure, judge_at(1.02), 3, retry=True)
    assert (len(got), twice, firsts[1:]) == (6, True, [0, 3])  # within 5 %: all rounds again
    assert len(checks[0].rounds) == 6  # judged on all of them
    got, checks, twice = gate.judged("t", measure, judge_at(0.5), 3, retry=False)
    assert (len(got), twice, checks[0].result) == (3, False, gate.FAIL)


def _slowed(case: cases.Case, times: int) -> cases.Case:
    """The same function doing its work ``times`` over: what a regression looks like."""
    run = case.run

    def slow() -> object:
        for _ in range(times - 1):
            run()
        return run()

    return cases.Case(case.name, case.group, case.ref, slow, case.setup, case.ops, case.close)


def _pick(names: tuple[str, ...]) -> list[cases.Case]:
    out = []
    for c in cases.all_cases():
        if c.name in names:
            out.append(c)
        else:
            c.close()
    return out


def test_micro_gate_passes_the_same_code_and_fails_slowed_functions() -> None:
    settings = gate.MicroSettings(rounds=7, repeat=3)
    pick = ("stun.parse", "stun.encode", "auth.token_verify")
    measured = gate.micro_stage(settings, None, retry=False, cases=_pick(pick))
    baseline = {"ratios": {k: v["median"] for k, v in measured["checks"].items()}}

    same = gate.micro_stage(settings, baseline, cases=_pick(pick))
    assert {k: v["result"] for k, v in same["checks"].items()} == dict.fromkeys(pick, gate.PASS)

    slowed = [
        _slowed(c, 2) if c.name in ("stun.parse", "auth.token_verify") else c for c in _pick(pick)
    ]
    slow = gate.micro_stage(settings, baseline, cases=slowed)
    results = {k: v["result"] for k, v in slow["checks"].items()}
    assert results == {
        "stun.parse": gate.FAIL,
        "stun.encode": gate.PASS,
        "auth.token_verify": gate.FAIL,
    }, slow["checks"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the gate reads Linux /proc")
def test_settle_waits_for_a_quiet_machine_and_no_longer_than_asked() -> None:
    spin = "import time\nt = time.time()\nwhile time.time() - t < 4: pass"
    busy = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(os.cpu_count() or 2)]
    try:  # every core busy (for at most 4 s): never quiet while they run
        waited, share = gate.settle(1.5, sample=0.25)
        assert 1.5 <= waited < 3.0 and share > gate.SETTLE_BUSY
    finally:
        for p in busy:
            p.kill()
            p.wait()
    waited, share = gate.settle(20.0, sample=0.25, needed=2)
    assert waited < 20.0 and share <= gate.SETTLE_BUSY  # quiet again once they are gone


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the gate reads Linux /proc")
@pytest.mark.timeout(700)
def test_a_slowed_relay_fails_the_gate(tmp_path: Path) -> None:
    """The debug build of the extensions (-O0, line tracing) with the fast path's batch forced
    to one datagram (CLICKACALL_FASTPATH_BATCH=1) costs about a third more CPU per flood
    packet, but only ~8 % more on a call, whose cost is mostly the kernel's; built with every
    relayed packet waiting 3 us as well (--slow-ns, about a quarter of a voice packet's cost),
    it must fail all three stages: both flood ratios, the voice stage's ours/coturn, and the
    STUN codec's micro-benchmarks."""
    out = tmp_path / "gate.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.gate",
            "--debug-build",
            "--slow-ns",
            "3000",
            "--relay-env",
            "CLICKACALL_FASTPATH_BATCH=1",
            "--settle",
            "10",
            # a slowed build misses its limits by 25-100 %: five rounds are a clear majority
            "--rounds",
            "5",
            "--voice-rounds",
            "5",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=680,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 1, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr[-3000:]}"
    report = json.loads(out.read_text())
    assert report["result"] == gate.FAIL
    assert report["extensions"] != str(ROOT / "ext")  # it measured the debug build
    relay = report["relay"]["checks"]
    assert relay["ours/cfwd"]["result"] == gate.FAIL, proc.stdout
    assert relay["ours/coturn"]["result"] == gate.FAIL, proc.stdout
    assert report["slow_ns"] == 3000
    assert report["voice"]["checks"]["ours/coturn"]["result"] == gate.FAIL, proc.stdout
    assert report["micro"]["checks"]["stun.parse"]["result"] == gate.FAIL, proc.stdout
    print(proc.stdout)
