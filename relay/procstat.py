"""What Linux's /proc says about processes and CPUs: the one place that parses it.

- ``/proc/PID/stat`` (proc(5)): pid, command name, state, parent pid and the user and system
  CPU time in clock ticks. The command name sits in parentheses and may itself hold spaces,
  parentheses, even a newline (a process names itself: prctl(PR_SET_NAME), or the file name it
  was started from), so the fields after it are found from the *last* ``)`` of the line.
- ``/proc/PID/task``: the process's threads; ``/proc/PID/task/TID/schedstat``: nanoseconds
  each thread has run on a CPU, the scheduler's own accounting (exact, where the stat file's
  figures are sampled at clock ticks). Kernels without CONFIG_SCHED_INFO have no schedstat.
- ``/proc/PID/status``: the resident set size (``VmRSS``).
- ``/proc/stat``: per CPU, the ticks spent busy and in total since boot.
- ``/proc/cpuinfo`` and ``/proc/meminfo``: the CPU's model, its physical cores and the
  machine's memory, for the benchmarks' record of the machine they ran on.

A process that is gone (or was never there) reads as ``None`` (or as no threads), never as
an error: the processes watched come and go while they are read. The node agent reads its
processes' CPU here; the benchmarks read their systems' and the machine's.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

CLK_TCK: Final = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
HAVE_SCHEDSTAT: Final = os.path.exists("/proc/self/schedstat")  # CONFIG_SCHED_INFO kernels
_STAT_FIELDS: Final = 13  # fields after "(comm)" up to stime: state is the first, stime the 13th


@dataclass(frozen=True, slots=True)
class Stat:
    """The figures of one ``/proc/PID/stat`` line this project uses."""

    pid: int
    comm: str  # the command name, as the kernel keeps it (at most 15 bytes)
    state: str  # R running, S sleeping, Z zombie, ... (proc(5))
    ppid: int
    utime: int  # clock ticks in user mode, every thread included
    stime: int  # clock ticks in kernel mode, every thread included

    @property
    def cpu_ticks(self) -> int:
        return self.utime + self.stime

    @property
    def cpu_seconds(self) -> float:
        return self.cpu_ticks / CLK_TCK


def parse_stat(line: bytes) -> Stat:
    """One ``/proc/PID/stat`` line; ValueError when it is not one."""
    start, end = line.find(b"("), line.rfind(b")")
    if start < 0 or end < start:
        raise ValueError(f"no (comm) in a stat line: {line[:80]!r}")
    rest = line[end + 1 :].split()
    if len(rest) < _STAT_FIELDS:
        raise ValueError(f"a stat line with {len(rest)} fields after (comm): {line[:80]!r}")
    return Stat(
        pid=int(line[:start]),
        comm=line[start + 1 : end].decode(errors="replace"),
        state=rest[0].decode(errors="replace"),
        ppid=int(rest[1]),
        utime=int(rest[11]),  # field 14 of proc(5)
        stime=int(rest[12]),  # field 15
    )


def stat(pid: int) -> Stat | None:
    """``/proc/PID/stat`` of ``pid``, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return parse_stat(f.read())
    except (OSError, ValueError):
        return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` (all its threads), or None when it is gone."""
    st = stat(pid)
    return None if st is None else st.cpu_seconds


def processes() -> dict[int, Stat]:
    """Every process there is now, by pid."""
    out: dict[int, Stat] = {}
    with contextlib.suppress(OSError):
        for name in os.listdir("/proc"):
            if name.isdigit():
                st = stat(int(name))
                if st is not None:
                    out[st.pid] = st
    return out


def descendants(roots: Iterable[int], procs: Mapping[int, Stat] | None = None) -> list[int]:
    """``roots`` and every process descended from them, each once, depth first from the first
    root (so a single root comes first), from ``procs`` (one reading of :func:`processes`; by
    default a new one). A root that is gone is still listed."""
    children: dict[int, list[int]] = {}
    for st in (processes() if procs is None else procs).values():
        children.setdefault(st.ppid, []).append(st.pid)
    out: list[int] = []
    seen: set[int] = set()
    todo = list(reversed(list(roots)))
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def threads(pid: int) -> list[int]:
    """The thread ids of ``pid`` (the first thread's is ``pid``); none when it is gone."""
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task") if t.isdigit()]
    except OSError:
        return []


def run_ns(pid: int) -> int | None:
    """Nanoseconds every thread of ``pid`` has run on a CPU (schedstat's first field), or None
    when it is gone or the kernel keeps no schedstat. A thread that ends while it is read
    is left out."""
    if not HAVE_SCHEDSTAT:
        return None
    tids = threads(pid)
    if not tids:
        return None
    total = 0
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return total


def rss_bytes(pid: int) -> int | None:
    """Resident memory of ``pid`` (``VmRSS``; 0 for a process with no memory of its own, a
    zombie or a kernel thread), or None when it is gone."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return 0


def parse_cpu_busy(text: str) -> dict[str, tuple[float, float]]:
    """Per CPU (``"cpu0"``, ...) of a ``/proc/stat`` text: (busy, total) seconds since boot.
    Busy is all but idle and iowait; the total is the first eight columns (user, nice,
    system, idle, iowait, irq, softirq, steal: guest time is already in user and nice)."""
    out: dict[str, tuple[float, float]] = {}
    for line in text.splitlines():
        name, *vals = line.split() or [""]
        if name.startswith("cpu") and name != "cpu":
            ticks = [int(v) for v in vals[:8]]
            idle = ticks[3] + ticks[4]  # idle + iowait
            out[name] = ((sum(ticks) - idle) / CLK_TCK, sum(ticks) / CLK_TCK)
    return out


def cpu_busy() -> dict[str, tuple[float, float]]:
    """Per CPU (``"cpu0"``, ...): (busy, total) seconds since boot, from /proc/stat; empty
    where there is none."""
    try:
        with open("/proc/stat") as f:
            return parse_cpu_busy(f.read())
    except OSError:
        return {}


@dataclass(frozen=True, slots=True)
class Machine:
    """What ``/proc/cpuinfo`` and ``/proc/meminfo`` say about the machine (None: not said)."""

    cpu_model: str | None
    physical_cores: int | None  # distinct (physical id, core id) pairs
    mem_bytes: int | None  # MemTotal


def parse_machine(cpuinfo: str, meminfo: str) -> Machine:
    """:class:`Machine` from the texts of ``/proc/cpuinfo`` and ``/proc/meminfo``."""
    model: str | None = None
    cores: set[tuple[str, str]] = set()
    phys = ""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "model name" and model is None:
            model = value
        elif key == "physical id":
            phys = value
        elif key == "core id":
            cores.add((phys, value))
    mem = None
    for line in meminfo.splitlines():
        if line.startswith("MemTotal:"):
            with contextlib.suppress(ValueError, IndexError):
                mem = int(line.split()[1]) * 1024
            break
    return Machine(model, len(cores) or None, mem)


def machine() -> Machine:
    """This machine's :class:`Machine`; its fields None where /proc is missing or silent."""
    texts = []
    for path in ("/proc/cpuinfo", "/proc/meminfo"):
        try:
            with open(path) as f:
                texts.append(f.read())
        except OSError:
            texts.append("")
    return parse_machine(*texts)
