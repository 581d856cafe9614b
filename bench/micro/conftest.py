"""``pytest bench/micro`` benchmarks (the project's addopts disable pytest-benchmark for the test
suite) and keeps what it measured: each run saved under bench/out/benchmarks/ (compare runs with
``--benchmark-compare``, or ``pytest-benchmark compare``) and the last one in
bench/out/micro.json. Options given on the command line win."""

from __future__ import annotations

from pathlib import Path

import pytest
from pytest_benchmark.utils import get_tag

OUT = Path(__file__).resolve().parent.parent / "out"


def pytest_configure(config: pytest.Config) -> None:
    opt = config.option
    opt.benchmark_enable = True
    if opt.benchmark_storage == "file://./.benchmarks":
        opt.benchmark_storage = f"file://{OUT / 'benchmarks'}"
    if not opt.benchmark_save and not opt.benchmark_autosave:
        opt.benchmark_autosave = get_tag()  # what --benchmark-autosave stores: commit, time
    if opt.benchmark_json is None:
        OUT.mkdir(parents=True, exist_ok=True)
        opt.benchmark_json = OUT / "micro.json"
