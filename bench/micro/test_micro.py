"""pytest-benchmark micro-benchmarks of the hot functions (cases in bench/micro/cases.py).

    .venv/bin/python -m pytest bench/micro                 # all groups, saved (conftest.py)
    .venv/bin/python -m pytest bench/micro -k stun         # one group
    .venv/bin/python -m pytest bench/micro --benchmark-compare   # against the last saved run

Groups: stun, fastpath (times are per drain of ``PACKETS`` datagrams: see ``ops`` in the
extra info), auth, and reference (the functions the performance gate divides by). Absolute
times depend on the machine; compare runs of one machine, or use ``python -m bench.gate``,
which judges ratios to the references.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from bench.micro import cases

CASES = {c.name: c for c in [*cases.all_cases(), *cases.references().values()]}


@pytest.fixture(scope="module", autouse=True)
def _close_cases() -> Iterator[None]:
    yield
    for case in CASES.values():
        case.close()


@pytest.mark.parametrize("name", list(CASES))
def test_micro(benchmark: BenchmarkFixture, name: str) -> None:
    case = CASES[name]
    benchmark.group = case.group
    benchmark.extra_info.update(reference=case.ref, ops=case.ops)
    if case.setup is None:
        benchmark(case.run)
    else:  # a batch of datagrams queued (untimed) before every timed drain
        benchmark.pedantic(case.run, setup=case.setup, rounds=300, warmup_rounds=10)
