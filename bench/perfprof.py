"""Where a relayed packet's CPU goes, from ``perf record -g`` samples of a system's threads.

:func:`recording` samples the processes (``perf record -g -F 4999 -p PIDS``: on-CPU time, kernel
call chains included) while a replay runs; :func:`samples` reads them back with ``perf script``
and :func:`weigh` puts every sample's period in one category (and at most one "of which"):

- ``send``: under sendmmsg/sendmsg/sendto; on loopback this includes the receiving socket's
  softirq delivery and the wake-up of its reader, of which ``send_wakeup`` is the part under
  ``sock_def_readable``;
- ``recv``: under recvmmsg/recvmsg/recvfrom;
- ``wait``: under epoll_wait/epoll_pwait/epoll_pwait2/poll/ppoll, of which ``wait_sleep`` is
  the sleep itself (``schedule``, ``__schedule``, ``finish_task_switch``; a preemption on the
  way out of the call is not a sleep);
- ``kernel``: any other kernel time (other system calls, interrupts, page faults);
- user space by the shared object the sample is in: ``ext`` (our extensions, ``ext/_*.so``),
  ``python`` (libpython or the interpreter), ``uvloop`` (its ``loop*.so``), ``libc`` (with
  ld.so and the vDSO), ``binary`` (the system's own executable: turnserver, cfwd), ``libevent``
  and ``user`` (anything else, unknown objects included).

A kernel sample is put under the system call its chain entered by (``__x64_sys_NAME`` and
kin, the outermost one), or, when the chain stops short of it (the syscall entry and exit
code), under the libc wrapper that made the call. :func:`split` turns the shares into
microseconds per relayed packet of a CPU figure measured apart (``cpu_us_per_pkt``): sampling
costs the sampled threads CPU of its own (with call chains, on a small VM, as much as the
work), so the shares come from the recorded run and the microseconds from a run without perf.

On a VM without a PMU perf samples on ``cpu-clock``, a timer interrupt: a sample due while
interrupts are off is taken where they come back on, so a section run with interrupts off is
counted where it ends. The wake-up's ``try_to_wake_up`` (an IPI to the reader's CPU: a VM exit
under KVM) lands on ``_raw_spin_unlock_irqrestore`` under ``sock_def_readable``, and the
switch back in on ``finish_task_switch``: the categories, built on the call chains, hold.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

FREQ = 4999
# (key, column heading); a key with a ``_`` suffix part is an "of which" of the key before it
CATEGORIES = (
    ("send", "send"),
    ("send_wakeup", "(wake)"),
    ("recv", "recv"),
    ("wait", "wait"),
    ("wait_sleep", "(sleep)"),
    ("kernel", "k-other"),
    ("ext", "ext"),
    ("python", "python"),
    ("uvloop", "uvloop"),
    ("libc", "libc"),
    ("binary", "binary"),
    ("libevent", "libevent"),
    ("user", "u-other"),
)
OF_WHICH = {"send_wakeup": "send", "wait_sleep": "wait"}
KERNEL_KEYS = ("send", "recv", "wait", "kernel")
CALLS = {
    **dict.fromkeys(("sendmmsg", "sendmsg", "sendto"), "send"),
    **dict.fromkeys(("recvmmsg", "recvmsg", "recvfrom"), "recv"),
    **dict.fromkeys(("epoll_wait", "epoll_pwait", "epoll_pwait2", "poll", "ppoll"), "wait"),
}
KERNEL_START = 0xFFFF800000000000  # x86-64's upper half; other 64-bit ports keep theirs there too
SYSCALL = re.compile(r"^(?:__x64_sys|__ia32_sys|__arm64_sys|__se_sys|__do_sys|sys)_(\w+)$")
WRAPPER = re.compile(
    r"(sendmmsg|sendmsg|sendto|recvmmsg|recvmsg|recvfrom|epoll_pwait2|"
    r"epoll_pwait|epoll_wait|ppoll|poll)"
)
SLEEP = frozenset(("schedule", "__schedule", "finish_task_switch"))
PREEMPTED = frozenset(("exit_to_user_mode_loop", "irqentry_exit_to_user_mode"))  # not a sleep
WAKE = "sock_def_readable"
OWN_BINARIES = frozenset(("turnserver", "cfwd"))

Frame = tuple[int, str, str]  # address, symbol, shared object
_FRAME = re.compile(r"^\s+([0-9a-fA-F]+)\s+(.*?)\s+\((.*)\)\s*$")


def samples(text: str) -> Iterator[tuple[float, list[Frame]]]:
    """(period, frames leaf first) of each sample of ``perf script -F tid,period,ip,sym,dso``:
    a header line ending in the period, then one tab-indented line per frame. The header is
    right-aligned (a thread id shorter than its column starts with spaces), so only the tab
    tells a frame."""
    period: float | None = None
    frames: list[Frame] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        if not line.startswith("\t"):
            if period is not None:
                yield period, frames
            fields = line.split()
            try:
                period = float(fields[-1])
            except (IndexError, ValueError):
                period = None  # a line of its own (a warning): ignored with its frames
            frames = []
            continue
        m = _FRAME.match(line)
        if m is not None and period is not None:
            frames.append((int(m.group(1), 16), m.group(2), m.group(3)))
    if period is not None:
        yield period, frames


def _base(symbol: str) -> str:
    return symbol.split(".", 1)[0]  # finish_task_switch.isra.0 -> finish_task_switch


def user_group(dso: str) -> str:
    """The user-space category of a shared object's path."""
    name = os.path.basename(dso)
    if dso == "[vdso]" or name.startswith(("libc.so", "libc-", "ld-linux", "libm.so")):
        return "libc"
    if "/uvloop/" in dso:
        return "uvloop"
    if name.startswith("_") and "/ext/" in dso and ".so" in name:
        return "ext"
    if name.startswith("libpython") or re.fullmatch(r"python3?(\.\d+)?", name):
        return "python"
    if name.startswith("libevent"):
        return "libevent"
    if name in OWN_BINARIES:
        return "binary"
    return "user"


def classify(frames: Sequence[Frame]) -> tuple[str, str | None]:
    """The category of one sample (frames leaf first) and its "of which", if any."""
    if not frames:
        return "user", None
    if frames[0][0] < KERNEL_START:
        return user_group(frames[0][2]), None
    kernel = [f for f in frames if f[0] >= KERNEL_START]
    call = None
    for _, sym, _ in reversed(kernel):  # the outermost: __x64_sys_sendmmsg, not __sys_sendmsg
        m = SYSCALL.match(sym)
        if m is not None:
            call = m.group(1)
            break
    if call is None:  # the syscall entry or exit code: the libc wrapper that made the call
        user = next((f for f in frames if f[0] < KERNEL_START), None)
        m = WRAPPER.search(user[1]) if user is not None else None
        call = m.group(1) if m is not None else None
    key = CALLS.get(call or "", "kernel")
    names = {_base(f[1]) for f in kernel}
    if key == "send" and WAKE in names:
        return key, "send_wakeup"
    if key == "wait" and names & SLEEP and not names & PREEMPTED:
        return key, "wait_sleep"
    return key, None


def weigh(text: str) -> dict[str, float]:
    """Sampled time (perf's periods: ns for cpu-clock) per category of ``perf script`` text;
    ``total`` is every sample's, ``samples`` their number. Categories without samples are 0."""
    out = dict.fromkeys((k for k, _ in CATEGORIES), 0.0)
    total = n = 0.0
    for period, frames in samples(text):
        n += 1
        key, sub = classify(frames)
        out[key] += period
        if sub is not None:
            out[sub] += period
        total += period
    out["total"] = total
    out["samples"] = n
    return out


def split(weights: dict[str, float], cpu_us_per_pkt: float) -> dict[str, float]:
    """Microseconds per relayed packet of each category: its share of the samples times
    ``cpu_us_per_pkt``; ``kernel_share`` is the kernel's fraction of the whole."""
    total = weights.get("total", 0.0)
    if not total:
        return {k: 0.0 for k, _ in CATEGORIES} | {"kernel_share": 0.0}
    us = {k: weights.get(k, 0.0) / total * cpu_us_per_pkt for k, _ in CATEGORIES}
    us["kernel_share"] = sum(weights.get(k, 0.0) for k in KERNEL_KEYS) / total
    return us


def stop(perf: subprocess.Popen[bytes], timeout: float) -> None:
    """Stop a ``perf stat`` or ``perf record`` as Ctrl-C does (it then writes what it has),
    and kill it if it has not finished in ``timeout`` seconds."""
    if perf.poll() is None:
        perf.send_signal(signal.SIGINT)
    try:
        perf.wait(timeout)
    except subprocess.TimeoutExpired:
        perf.kill()
        perf.wait(5)


@contextlib.contextmanager
def recording(pids: Sequence[int], data: Path) -> Iterator[None]:
    """``perf record -g`` of ``pids`` (every thread) into ``data`` for the body's duration."""
    err = data.with_suffix(".err")
    cmd = ["perf", "record", "-g", "-F", str(FREQ), "-o", str(data)]
    cmd += ["-p", ",".join(map(str, pids))]
    with open(err, "wb") as errf:
        perf = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=errf, stderr=errf)
    try:
        with contextlib.suppress(subprocess.TimeoutExpired):
            perf.wait(0.5)  # attached before the first packet
        if perf.poll() is not None:
            tail = err.read_text(errors="replace")[-600:]
            raise RuntimeError(f"perf record failed ({perf.returncode}): {tail}")
        yield
    finally:
        stop(perf, 30)
    if not data.exists():
        raise RuntimeError(f"perf record wrote nothing: {err.read_text(errors='replace')[-600:]}")


def script(data: Path) -> str:
    """The samples of a ``perf record`` file as ``perf script`` text (call chains, periods)."""
    res = subprocess.run(
        ["perf", "script", "-i", str(data), "-F", "tid,period,ip,sym,dso"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=300,
    )
    if res.returncode != 0:
        raise RuntimeError(f"perf script failed ({res.returncode}): {res.stderr[-600:]}")
    return res.stdout


def switches(pids: Sequence[int]) -> tuple[int, int]:
    """Voluntary and involuntary context switches so far of every thread of ``pids``."""
    vol = invol = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{pid}/task"):
                with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{tid}/status") as f:
                    for line in f:
                        if line.startswith("voluntary_ctxt_switches:"):
                            vol += int(line.split()[1])
                        elif line.startswith("nonvoluntary_ctxt_switches:"):
                            invol += int(line.split()[1])
    return vol, invol
