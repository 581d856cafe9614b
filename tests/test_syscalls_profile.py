"""``python -m bench.syscalls --profile``: perf record's samples put in categories and turned
into microseconds per relayed packet (bench/perfprof.py), on samples captured from a real run,
and one short live run through our relay under perf."""

from __future__ import annotations

import math
import shutil
import subprocess

import pytest

from bench import perfprof, syscalls

# perf samples and CPU microseconds per packet (kernel share): alone
pytestmark = pytest.mark.serial

# ``perf script -F tid,period,ip,sym,dso`` of ``perf record -g -F 4999`` on ours, coturn and
# cfwd (python -m bench.syscalls --profile, voice, 100 calls; Linux 6.18 under KVM, cpu-clock):
# one sample of each kind, copied as printed (the headers' trailing blank dropped)
CAPTURED = """\
29514     200040
\tffffffff81e824f0 __x64_sys_recvmmsg ([kernel.kallsyms])
\tffffffff8224d141 do_syscall_64 ([kernel.kallsyms])
\tffffffff81000130 entry_SYSCALL_64_after_hwframe ([kernel.kallsyms])
\t          10b013 __recvmmsg (/usr/lib/x86_64-linux-gnu/libc.so.6)
\t        ffffffff [unknown] ([unknown])

29514     200040
\t          1581d0 PyVectorcall_Call (/root/.pyenv/versions/3.11.7/lib/libpython3.11.so.1.0)

29514     200040
\t            c8d6 __pyx_f_3ext_9_fastpath_6Engine__recv_peers \
(/work/wt-prof/ext/_fastpath.cpython-311-x86_64-linux-gnu.so)

29514     200040
\tffffffff82259361 schedule ([kernel.kallsyms])
\tffffffff82260984 schedule_hrtimeout_range_clock ([kernel.kallsyms])
\tffffffff81753b58 do_epoll_wait ([kernel.kallsyms])
\tffffffff81753bce do_epoll_pwait.part.0 ([kernel.kallsyms])
\tffffffff8175547c __x64_sys_epoll_pwait ([kernel.kallsyms])
\tffffffff8224d141 do_syscall_64 ([kernel.kallsyms])
\tffffffff81000130 entry_SYSCALL_64_after_hwframe ([kernel.kallsyms])
\t          108c59 epoll_pwait (/usr/lib/x86_64-linux-gnu/libc.so.6)
\t               6 [unknown] ([unknown])
\t    5589069e3350 [unknown] ([unknown])

29514     200040
\t          163f00 __memmove_evex_unaligned_erms (/usr/lib/x86_64-linux-gnu/libc.so.6)

29516     200040
\tffffffff81e84d96 sock_def_readable ([kernel.kallsyms])
\tffffffff820a70b0 __udp_enqueue_schedule_skb ([kernel.kallsyms])
\tffffffff820a74bd udp_queue_rcv_one_skb ([kernel.kallsyms])
\tffffffff820a7964 udp_unicast_rcv_skb ([kernel.kallsyms])
\tffffffff82055da8 ip_protocol_deliver_rcu ([kernel.kallsyms])
\tffffffff82055f11 ip_local_deliver_finish ([kernel.kallsyms])
\tffffffff81eb959d __netif_receive_skb_one_core ([kernel.kallsyms])
\tffffffff81eb9883 process_backlog ([kernel.kallsyms])
\tffffffff81eb9f71 __napi_poll ([kernel.kallsyms])
\tffffffff81eba54e net_rx_action ([kernel.kallsyms])
\tffffffff813697dd handle_softirqs ([kernel.kallsyms])
\tffffffff813691eb do_softirq.part.0 ([kernel.kallsyms])
\tffffffff81369ad4 __local_bh_enable_ip ([kernel.kallsyms])
\tffffffff81eb6684 __dev_queue_xmit ([kernel.kallsyms])
\tffffffff8205a56c ip_finish_output2 ([kernel.kallsyms])
\tffffffff8205ccdf ip_output ([kernel.kallsyms])
\tffffffff8205e341 ip_send_skb ([kernel.kallsyms])
\tffffffff820a1ff7 udp_send_skb ([kernel.kallsyms])
\tffffffff820a6ac0 udp_sendmsg ([kernel.kallsyms])
\tffffffff81e80f5d __sys_sendto ([kernel.kallsyms])
\tffffffff81e80fa0 __x64_sys_sendto ([kernel.kallsyms])
\tffffffff8224d141 do_syscall_64 ([kernel.kallsyms])
\tffffffff81000130 entry_SYSCALL_64_after_hwframe ([kernel.kallsyms])
\t          10ad0c __libc_sendto (/usr/lib/x86_64-linux-gnu/libc.so.6)

29514     200040
\t          11287f __pyx_f_6uvloop_4loop___on_uvpoll_event \
(/work/main/.venv/lib/python3.11/site-packages/uvloop/loop.cpython-311-x86_64-linux-gnu.so)

29514     200040
\tffffffff81755170 __x64_sys_epoll_wait ([kernel.kallsyms])
\tffffffff8224d141 do_syscall_64 ([kernel.kallsyms])
\tffffffff81000130 entry_SYSCALL_64_after_hwframe ([kernel.kallsyms])
\t          108ef3 epoll_wait (/usr/lib/x86_64-linux-gnu/libc.so.6)

29514     200040
\tffffffff8224d116 do_syscall_64 ([kernel.kallsyms])
\tffffffff81000130 entry_SYSCALL_64_after_hwframe ([kernel.kallsyms])
\t          10b0c3 __sendmmsg (/usr/lib/x86_64-linux-gnu/libc.so.6)

29514     200040
\tffffffff813ae493 finish_task_switch.isra.0 ([kernel.kallsyms])
\tffffffff822587c4 __schedule ([kernel.kallsyms])
\tffffffff82259373 schedule ([kernel.kallsyms])
\tffffffff8225372f irqentry_exit_to_user_mode ([kernel.kallsyms])
\tffffffff81000e06 asm_sysvec_apic_timer_interrupt ([kernel.kallsyms])
\t           10a97 __pyx_f_3ext_9_fastpath_6Engine__peer_packet \
(/work/wt-prof/ext/_fastpath.cpython-311-x86_64-linux-gnu.so)
\t 100007f00000403 [unknown] ([unknown])

29516     200040
\t           52b10 [unknown] (/usr/bin/turnserver)

29516     200040
\t            13c0 [unknown] (/usr/lib/x86_64-linux-gnu/libevent_pthreads-2.1.so.7.0.1)

29516     200040
\tffffffff813ae493 finish_task_switch.isra.0 ([kernel.kallsyms])
\tffffffff822587c4 __schedule ([kernel.kallsyms])
\tffffffff82259373 schedule ([kernel.kallsyms])
\tffffffff81423981 exit_to_user_mode_loop ([kernel.kallsyms])
\tffffffff8224d320 do_syscall_64 ([kernel.kallsyms])
\tffffffff81000130 entry_SYSCALL_64_after_hwframe ([kernel.kallsyms])
\t          108f36 epoll_wait (/usr/lib/x86_64-linux-gnu/libc.so.6)
\t    7f3f18000e50 [unknown] ([unknown])
\t           25e70 [unknown] (/usr/lib/x86_64-linux-gnu/libevent_core-2.1.so.7.0.1)
\t6e61686320687469 [unknown] ([unknown])

29526     200040
\t            15ae main (/work/wt-prof/bench/out/cfwd)
\t              10 [unknown] ([unknown])
\t               0 [unknown] ([unknown])
"""


def test_captured_samples_fall_in_their_categories() -> None:
    """Each kind of sample in its category: the system call its kernel chain entered by (or,
    in the syscall entry/exit code, the libc wrapper's), the wake-up and sleep within,
    user space by shared object; a preemption is neither a sleep nor under the wait."""
    got = [perfprof.classify(frames) for _, frames in perfprof.samples(CAPTURED)]
    assert got == [
        ("recv", None),
        ("python", None),
        ("ext", None),
        ("wait", "wait_sleep"),
        ("libc", None),
        ("send", "send_wakeup"),
        ("uvloop", None),
        ("wait", None),
        ("send", None),  # do_syscall_64 alone: the wrapper __sendmmsg says which
        ("kernel", None),  # a timer interrupt's preemption in user space
        ("binary", None),
        ("libevent", None),
        ("wait", None),  # preempted on the way out of epoll_wait: no sleep
        ("binary", None),
    ]
    # perf right-aligns the thread id: a shorter one (the pid counter wrapped) starts the
    # header with spaces, which once made every header look like a frame and gave 0 samples
    short = CAPTURED.replace("29514 ", " 2951 ")
    assert short != CAPTURED
    assert [perfprof.classify(f) for _, f in perfprof.samples(short)] == got
    assert perfprof.classify([]) == ("user", None)
    assert perfprof.user_group("/usr/lib/x86_64-linux-gnu/libssl.so.3") == "user"
    assert perfprof.user_group("[vdso]") == "libc"


def test_weights_split_into_microseconds_per_packet() -> None:
    """Periods summed per category (absent ones 0), then the shares of a CPU figure: the
    top-level categories add up to it, an "of which" stays inside its parent."""
    w = perfprof.weigh(CAPTURED + "\nperf: a stray warning line\n")
    period = 200040.0
    assert w["samples"] == 14 and w["total"] == 14 * period
    assert w["send"] == 2 * period and w["send_wakeup"] == period
    assert w["wait"] == 3 * period and w["wait_sleep"] == period
    assert w["recv"] == w["kernel"] == w["ext"] == w["python"] == w["uvloop"] == period
    assert w["binary"] == 2 * period and w["libevent"] == w["libc"] == period
    assert w["user"] == 0.0
    us = perfprof.split(w, 14.0)  # 1 us per sample
    assert us["send"] == pytest.approx(2.0) and us["send_wakeup"] == pytest.approx(1.0)
    top = [k for k, _ in perfprof.CATEGORIES if k not in perfprof.OF_WHICH]
    assert sum(us[k] for k in top) == pytest.approx(14.0)
    assert us["kernel_share"] == pytest.approx(7 / 14)
    assert perfprof.split(perfprof.weigh(""), 5.0)["send"] == 0.0


def test_profile_table_shows_each_category() -> None:
    us = perfprof.split(perfprof.weigh(CAPTURED), 14.0)
    share = us.pop("kernel_share")
    report = {
        "workload": "voice",
        "calls": 100,
        "seconds": 2.0,
        "systems": {
            "ours": {
                "label": "clickacall",
                "profile": {
                    "cpu_us_per_pkt": 14.0,
                    "kernel_share": share,
                    "us_per_pkt": us,
                    "voluntary_switches_per_pkt": 0.25,
                    "wait_us_per_voluntary_switch": 12.0,
                    "sleep_us_per_voluntary_switch": 4.0,
                },
            },
            "coturn": {"label": "coturn", "skipped": "not installed"},
        },
    }
    text = syscalls.profile_table(report)
    row = next(ln for ln in text.splitlines() if ln.startswith("clickacall"))
    assert row.split() == [
        "clickacall", "14.00", "50.0", "2.000", "1.000", "1.000", "3.000", "1.000", "1.000",
        "1.000", "1.000", "1.000", "1.000", "2.000", "1.000", "0.000", "0.250", "12.0", "4.0",
    ]  # fmt: skip
    assert "coturn" not in text and "(sleep)" in text


def _perf_usable() -> None:
    """perf is a dependency of bench.syscalls: fail, naming what is missing, when it is not."""
    if shutil.which("perf") is None:
        pytest.fail("perf is not installed (Debian: linux-perf): bench.syscalls needs it")
    res = subprocess.run(
        ["perf", "record", "-q", "-o", "/dev/null", "-g", "--", "true"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if res.returncode != 0:
        pytest.fail(f"perf record is not usable here (root, or perf_event_paranoid): {res.stderr}")


def test_profile_live_through_our_relay() -> None:
    """A short voice segment through our relay: counted, replayed without perf, and sampled;
    every category present, most of the CPU in the kernel's send, receive and wait."""
    _perf_usable()
    report = syscalls.run(["ours"], "voice", 0.05, 0.5, profile=True)
    r = report["systems"]["ours"]
    assert "skipped" not in r, r
    p = r["profile"]
    assert p["samples"] > 0 and p["relayed"] > 0 and math.isfinite(p["cpu_us_per_pkt"])
    assert set(p["us_per_pkt"]) == {k for k, _ in perfprof.CATEGORIES}
    us = p["us_per_pkt"]
    assert us["send"] > 0 and us["wait"] > 0 and us["ext"] >= 0
    assert us["binary"] == us["libevent"] == 0.0  # not coturn's or cfwd's
    assert 0.3 < p["kernel_share"] <= 1.0
    assert p["voluntary_switches_per_pkt"] >= 0
    assert "clickacall" in syscalls.profile_table(report)
