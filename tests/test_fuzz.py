"""The atheris fuzz targets (tests/fuzz_*.py), each run for a bounded time from its committed
seed corpus (tests/fuzz/corpus/<target>/, written by tests/fuzz/make_corpus.py): any input
that crashes a target, or on which the Cython code and its reference disagree, fails the
test with the input's hex and the crash file. ``make fuzz`` runs the same targets for longer
(``FUZZ_SECONDS``, 300 each by default).

``CLICKACALL_FUZZ_SECONDS`` sets the time here (default 15 s per target). atheris comes with
the test extras (pyproject.toml).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "fuzz" / "corpus"
TARGETS = ("stun", "classify", "stream")
SECONDS = int(os.environ.get("CLICKACALL_FUZZ_SECONDS", "15"))

pytestmark = pytest.mark.timeout(SECONDS + 120)


def test_every_target_has_a_corpus() -> None:
    for target in TARGETS:
        assert (ROOT / "tests" / f"fuzz_{target}.py").is_file()
        seeds = list((CORPUS / target).iterdir())
        assert len(seeds) >= 10, f"{target}: only {len(seeds)} seeds"
        assert all(s.stat().st_size <= 4096 for s in seeds)


@pytest.mark.parametrize("target", TARGETS)
def test_fuzz_target_finds_nothing(target: str, tmp_path: Path) -> None:
    if importlib.util.find_spec("atheris") is None:
        pytest.fail("atheris is not installed: `make deps` installs the test extras")
    found = tmp_path / "new"  # inputs atheris finds go here; the committed corpus is only read
    found.mkdir()
    cmd = [
        sys.executable,
        str(ROOT / "tests" / f"fuzz_{target}.py"),
        f"-max_total_time={SECONDS}",
        f"-artifact_prefix={tmp_path}/",
        "-rss_limit_mb=1024",
        "-print_final_stats=1",
        str(found),
        str(CORPUS / target),
    ]
    r = subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, errors="replace", timeout=SECONDS + 90
    )
    out = r.stdout + r.stderr
    crashes = sorted(p.name for p in tmp_path.iterdir() if p.name != "new")
    assert r.returncode == 0 and not crashes, (
        f"fuzz_{target} failed (rc={r.returncode}, {crashes}):\n{out[-4000:]}"
    )
    seeds = len(list((CORPUS / target).iterdir()))
    assert f"{seeds} files found in {CORPUS / target}" in out, out[-2000:]
    assert "stat::number_of_executed_units" in out, out[-2000:]
