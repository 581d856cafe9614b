"""relay.procstat: /proc parsed once. Sample lines with command names made to confuse a parser
(spaces, parentheses, a newline), then this machine's real /proc: this process, a child
burning CPU under such a name, a process tree, threads, memory and the per-CPU counters."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from relay import procstat

pytestmark = pytest.mark.skipif(
    not os.path.exists("/proc/self/stat"), reason="relay.procstat reads Linux's /proc"
)

# the fields after (comm) of a real line, utime 1234 and stime 56 (fields 14 and 15)
TAIL = (
    b" S 4321 13323 5655 0 -1 4194304 98 0 0 0 1234 56 0 0 20 0 3 0 128950 3133440 355"
    b" 18446744073709551615 93826400661504 93826400681385 140730169137312 0 0 0 0 0 0 0 0 0"
    b" 17 0 0 0 0 0 0\n"
)


@pytest.mark.parametrize(
    "comm",
    [b"cat", b"a b", b"a) b", b"(x)", b") (", b"x) S 1 2 3", b"x\n) 9 (", b"", b"\xff)"],
)
def test_parse_stat_finds_the_fields_after_the_last_parenthesis(comm: bytes) -> None:
    st = procstat.parse_stat(b"13328 (" + comm + b")" + TAIL)
    assert (st.pid, st.state, st.ppid, st.utime, st.stime) == (13328, "S", 4321, 1234, 56)
    assert st.comm == comm.decode(errors="replace")
    assert st.cpu_ticks == 1290
    assert st.cpu_seconds == pytest.approx(1290 / procstat.CLK_TCK)


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"13328 cat S 1" + TAIL,  # no parentheses
        b"13328 )cat(" + TAIL,  # the wrong way round
        b"13328 (cat) S 4321 1 2 3",  # cut short
        b"pid (cat)" + TAIL,
        b"13328 (cat) S x 1 2 3 4 5 6 7 8 9 10 11 12",
        b"13328 (cat) S 1 1 2 3 4 5 6 7 8 9 ten 11 12",
    ],
)
def test_parse_stat_rejects_what_is_no_stat_line(line: bytes) -> None:
    with pytest.raises(ValueError):
        procstat.parse_stat(line)


def test_parse_cpu_busy() -> None:
    text = (
        "cpu  87020 0 33834 114306 1803 0 10325 8250 0 0\n"
        "cpu0 100 0 50 800 50 0 0 0 0 0\n"
        "cpu1 10 5 5 70 10 0 0 0 7 0\n"
        "intr 1 2 3\n"
        "\n"
        "ctxt 42\n"
    )
    busy = procstat.parse_cpu_busy(text)
    tck = procstat.CLK_TCK
    assert busy == {"cpu0": (150 / tck, 1000 / tck), "cpu1": (20 / tck, 100 / tck)}


def test_parse_machine() -> None:
    cpuinfo = (
        "processor\t: 0\nmodel name\t: Test CPU @ 3.00GHz\nphysical id\t: 0\ncore id\t: 0\n\n"
        "processor\t: 1\nmodel name\t: Test CPU @ 3.00GHz\nphysical id\t: 0\ncore id\t: 0\n\n"
        "processor\t: 2\nmodel name\t: Test CPU @ 3.00GHz\nphysical id\t: 1\ncore id\t: 0\n"
    )
    meminfo = "MemTotal:       16318548 kB\nMemFree:         1 kB\n"
    box = procstat.parse_machine(cpuinfo, meminfo)
    assert box == procstat.Machine("Test CPU @ 3.00GHz", 2, 16318548 * 1024)
    assert procstat.parse_machine("", "") == procstat.Machine(None, None, None)


def test_this_machine() -> None:
    box = procstat.machine()
    assert box.mem_bytes is not None and box.mem_bytes > 0
    assert box.physical_cores is None or 1 <= box.physical_cores <= (os.cpu_count() or 1)


# --- this machine's /proc -------------------------------------------------------------------


def _until(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return False


BURNER = """
import ctypes, sys
ctypes.CDLL(None).prctl(15, sys.argv[1].encode(), 0, 0, 0)  # PR_SET_NAME
print("burning", flush=True)
while True:
    pass
"""


@pytest.fixture
def burner() -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", BURNER, "burn) (x y"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "burning\n"
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_this_process() -> None:
    st = procstat.stat(os.getpid())
    assert st is not None
    assert (st.pid, st.ppid, st.state) == (os.getpid(), os.getppid(), "R")
    assert st.comm == Path("/proc/self/comm").read_text().rstrip("\n")
    own = os.times()
    seconds = procstat.cpu_seconds(os.getpid())
    assert seconds is not None
    assert abs(seconds - (own.user + own.system)) <= 0.1


def test_a_child_burning_cpu_under_a_confusing_name(burner: subprocess.Popen[str]) -> None:
    first = procstat.stat(burner.pid)
    assert first is not None
    assert (first.pid, first.comm, first.ppid) == (burner.pid, "burn) (x y", os.getpid())
    ns0 = procstat.run_ns(burner.pid)

    def grew() -> bool:
        now = procstat.stat(burner.pid)
        return now is not None and now.utime >= first.utime + 3

    assert grew() or _until(grew), "utime of a busy child did not grow in 10 s"
    if procstat.HAVE_SCHEDSTAT:
        ns1 = procstat.run_ns(burner.pid)
        # it ran meanwhile (clock ticks are samples: 3 of them need not mean 30 ms of run time)
        assert ns0 is not None and ns1 is not None and ns1 > ns0
    assert burner.pid in procstat.descendants([os.getpid()])
    assert procstat.threads(burner.pid) == [burner.pid]  # one thread: the interpreter's
    burner.kill()
    burner.wait()  # reaped: gone from /proc
    assert procstat.stat(burner.pid) is None
    assert procstat.cpu_seconds(burner.pid) is None
    assert procstat.threads(burner.pid) == []
    assert procstat.run_ns(burner.pid) is None
    assert procstat.rss_bytes(burner.pid) is None


def test_a_tree_whose_grandchild_was_started_from_a_confusing_file_name(tmp_path: Path) -> None:
    sleep = shutil.which("sleep")
    if sleep is None:
        pytest.skip("no sleep(1)")
    link = tmp_path / "sl) (e\nep"  # the kernel names a process after the file it ran
    link.symlink_to(sleep)
    sh = subprocess.Popen(["sh", "-c", '"$0" 30 & wait', str(link)])
    try:
        tree: list[int] = []

        def started() -> bool:  # forked, and past its exec (until then it is another sh)
            tree[:] = procstat.descendants([sh.pid])
            leaf = procstat.stat(tree[-1]) if len(tree) == 2 else None
            return leaf is not None and leaf.comm != "sh"

        assert _until(started), f"no grandchild: {tree}"
        assert tree[0] == sh.pid
        leaf = procstat.stat(tree[1])
        assert leaf is not None
        assert (leaf.comm, leaf.ppid, leaf.state in "RS") == ("sl) (e\nep", sh.pid, True)
        procs = procstat.processes()
        assert procs[sh.pid].ppid == os.getpid()
        assert procstat.descendants([tree[1], sh.pid], procs) == [tree[1], sh.pid]
        assert procstat.descendants([os.getpid()], procs)[0] == os.getpid()
    finally:
        for pid in procstat.descendants([sh.pid])[1:]:
            os.kill(pid, 9)
        sh.wait(10)


def test_threads_and_resident_memory() -> None:
    ready, stop = threading.Event(), threading.Event()
    tids: list[int] = []

    def worker() -> None:
        tids.append(threading.get_native_id())
        ready.set()
        stop.wait()

    t = threading.Thread(target=worker)
    t.start()
    try:
        assert ready.wait(5)
        mine = procstat.threads(os.getpid())
        assert os.getpid() in mine and tids[0] in mine
    finally:
        stop.set()
        t.join()
    before = procstat.rss_bytes(os.getpid())
    assert before is not None and before > 1 << 20
    block = bytes(range(256)) * (128 << 10)  # 32 MiB, every page written
    after = procstat.rss_bytes(os.getpid())
    assert after is not None and after - before >= 24 << 20
    del block


def test_cpu_busy_counts_every_cpu() -> None:
    before = procstat.cpu_busy()
    assert "cpu0" in before and len(before) <= (os.cpu_count() or 1)
    assert all(0 <= busy <= total for busy, total in before.values())

    def ticked() -> bool:
        after = procstat.cpu_busy()
        return all(after[c][1] > before[c][1] for c in before)

    assert _until(ticked, 5.0)
