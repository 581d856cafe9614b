"""bench.gate's baselines: one per CPU model, and the loosest of them for a CPU without one."""

from __future__ import annotations

import json
from pathlib import Path

from bench.gate import load_baseline, load_baselines, new_baselines


def entry(
    model: str, parse: float, to_peer: float, voice: float | None = None
) -> dict[str, object]:
    out: dict[str, object] = {
        "date": "2026-12-04",
        "machine": {"cpu_model": model, "cpus": 2},
        "load_average": [0.1, 0.1, 0.1],
        "micro": {"ratios": {"stun.parse": parse, "fastpath.to_peer": to_peer}, "rounds": 63},
    }
    if voice is not None:
        out["voice"] = {"settings": {"scale": 1.0}, "ratios": {"ours/coturn": voice}}
    return out


def test_each_cpu_is_held_to_its_own_baseline_and_an_unknown_one_to_the_loosest(
    tmp_path: Path,
) -> None:
    path = tmp_path / "baseline.json"
    xeon, epyc = entry("Intel Xeon", 0.25, 0.32, voice=1.0), entry("AMD EPYC", 0.33, 0.26)
    path.write_text(json.dumps({"machines": {"Intel Xeon": xeon, "AMD EPYC": epyc}}))

    mine = load_baseline(path, "AMD EPYC")
    assert mine is not None
    assert mine["micro"]["ratios"] == {"stun.parse": 0.33, "fastpath.to_peer": 0.26}
    assert mine["machine"]["cpu_model"] == "AMD EPYC"
    # a stage this CPU never measured: the others' (here the Xeon's alone)
    assert mine["voice"]["ratios"] == {"ours/coturn": 1.0}

    other = load_baseline(path, "Ampere Altra")
    assert other is not None
    assert other["micro"]["ratios"] == {"stun.parse": 0.33, "fastpath.to_peer": 0.32}
    assert "none for Ampere Altra" in other["machine"]["cpu_model"]

    assert load_baseline(tmp_path / "missing.json", "AMD EPYC") is None


def test_a_baseline_of_the_older_form_is_its_cpus_and_an_update_keeps_the_others(
    tmp_path: Path,
) -> None:
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps(entry("Intel Xeon", 0.25, 0.32, voice=1.0)))
    assert set(load_baselines(path)) == {"Intel Xeon"}

    report = {
        "machine": {"cpu_model": "AMD EPYC", "cpus": 2},
        "load_average": [0.2, 0.2, 0.2],
        "micro": {
            "checks": {"stun.parse": {"median": 0.33}},
            "references": {"stun.parse": "native"},
            "ns_per_op": {},
            "rounds": [{}] * 63,
        },
    }
    written = new_baselines(report, path)
    assert set(written["machines"]) == {"AMD EPYC", "Intel Xeon"}
    assert written["machines"]["Intel Xeon"]["micro"]["ratios"]["stun.parse"] == 0.25
    assert written["machines"]["AMD EPYC"]["micro"]["ratios"] == {"stun.parse": 0.33}
    assert "voice" not in written["machines"]["AMD EPYC"]
