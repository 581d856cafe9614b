"""Smoke run of the benchmark machinery: the batched generator and echo, the TURN client, the
call workloads (real SRTP, replayed on a schedule), tiny end-to-end runs of ``python -m bench``
over every system that can exist here with the report and its plots, and ``clickacall bench``."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from bench import loadgen, runner, turnclient, workloads
from bench.report import LABEL_W, table
from bench.systems import (
    ALL_SYSTEMS,
    COTURN_BIN_ENV,
    OPTIONAL_SYSTEMS,
    CoturnSrc,
    SkipSystem,
    running,
    turnserver,
)
from clickacall import cli
from ext import _loadgen

# benchmark runs: rates found, packets counted under load, CPU per packet: alone
pytestmark = pytest.mark.serial


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
        sizes=[200],
        fixed_rate=20_000,
        fixed_seconds=0.3,
        trials=1,
        # a start every system passes on a loaded 2-core machine, and time for two more steps:
        # the figure only has to exist here (a search with no passing step reports 0)
        search_start=5_000,
        search_ceiling=45_000,
        search_step_seconds=0.2,
        search_budget=2.0,
        latency_seconds=0.2,
        alloc_counts=[10, 40],
        alloc_seconds=8.0,
        cpu_rounds=2,
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
    assert "clickacall" in table(report)
    assert set(report["interleaved_cpu"]) == set(systems)  # every system in the CPU rounds


def test_bench_over_tcp_and_tls(tmp_path: Path) -> None:
    """``--transport tcp,tls``: ours (and coturn where installed) serve TURN over TCP and TLS
    and the interleaved rounds measure CPU per packet through clients on streams."""
    systems = ["ours", "cfwd"] + (["coturn"] if shutil.which("turnserver") else [])
    profile = runner.Profile(
        sizes=[200],
        fixed_rate=20_000,
        fixed_seconds=0.3,
        trials=1,
        search_start=20_000,
        search_ceiling=45_000,
        search_step_seconds=0.2,
        search_budget=1.0,
        latency_seconds=0.2,
        alloc_counts=[10],
        alloc_seconds=8.0,
        cpu_rounds=2,
        stream_rate=5_000,
    )
    out = tmp_path / "report.json"
    report = runner.run(systems, profile, out, progress=lambda _: None, transports=["tcp", "tls"])
    streams = report["streams"]
    for transport in ("tcp", "tls"):
        per = streams["cpu"][transport]
        assert set(per) == {"ours", "coturn"} & set(systems)  # no forwarder: not TURN
        for name, sizes in per.items():
            fixed = sizes["200"]
            assert fixed["loss"] < 0.05, (transport, name, fixed)
            assert math.isfinite(fixed["cpu_us_per_pkt"]) and fixed["cpu_us_per_pkt"] > 0
    if "coturn" in systems:
        assert streams["ratios"]["tls"]["200"] is not None
    text = table(report)
    assert "TURN over TCP/TLS clients" in text and "tls       clickacall" in text
    assert report["systems"] == {}  # no UDP rounds when udp is not asked for


def test_c_forwarder_with_gso_relays_every_packet(tmp_path: Path) -> None:
    """cfwd-gso (bench/cfwd.c with UDP_SEGMENT) carries every packet both ways, intact: a
    flood of equal sizes (runs coalesced) and the generator's replies matched by sequence."""
    from bench.systems import CForwarderGso

    rig = loadgen.Rig()
    system = CForwarderGso("cfwd-gso", tmp_path, rig.addr)
    try:
        with running(system):
            assert system.command()[-1] == "gso"
            flows = system.flows()
            try:
                gen = flows.generator(200)
                res = loadgen.trial(rig, gen, 3_000, 0.5, system.pids())
                assert res["sent"] == 1500 and res["received"] == 1500, res
                assert res["cpu_us_per_pkt"] > 0
            finally:
                flows.close()
    finally:
        rig.close()
    # on SIGTERM (stop) it says what it sent: equal-sized datagrams to one address left in
    # fewer messages than datagrams, some of them UDP_SEGMENT runs
    m = re.search(
        r"sent (\d+) datagrams in (\d+) messages, (\d+) of them UDP_SEGMENT",
        system.logfile.read_text(),
    )
    assert m, system.log_tail()
    dgrams, msgs, segmented = map(int, m.groups())
    assert dgrams >= 3000 and 0 < segmented <= msgs < dgrams


def test_stream_generator_over_our_relay(tmp_path: Path) -> None:
    """The stream generator counts every packet through our relay over TCP and over TLS."""
    from bench.systems import Ours

    rig = loadgen.Rig()
    system = Ours("ours", tmp_path, rig.addr)
    system.serve_streams(*runner.make_certificate(tmp_path))
    try:
        with running(system):
            for transport in ("tcp", "tls"):
                flows = system.stream_flows(transport, 3)
                try:
                    assert flows.clients[0].conn.tls_version == (
                        None if transport == "tcp" else "TLSv1.3"
                    )
                    gen = flows.generator(300)
                    res = loadgen.trial(rig, gen, 3_000, 0.5, system.pids())
                    assert res["sent"] == 1500 and res["received"] == 1500, (transport, res)
                    assert len(gen.rtts()) == 4 * 1500
                finally:
                    flows.close()
    finally:
        rig.close()


def test_bulk_allocate_and_release_against_our_relay(tmp_path: Path) -> None:
    """The allocation-scaling run deletes idle allocations between rounds: what the bulk
    allocator opens, ``release_many`` really deletes on the relay (its allocation gauge)."""
    from tests.relayproc import RelayProcess, RelaySpec, free_tcp_port, scrape

    mport = free_tcp_port()
    relay = RelayProcess(
        RelaySpec(extra_args=["--metrics", f"127.0.0.1:{mport}"]), tmp_path, impl="ours"
    ).start()
    idle: list[turnclient.Idle] = []
    try:
        idle = turnclient.allocate_many(
            relay.address, 30, relay.secret, relay.realm, max_seconds=20
        )
        assert len(idle) == 30 and len({i.username for i in idle}) == 30

        def allocations(want: int) -> float:
            deadline = time.monotonic() + 5
            while True:  # workers publish about once a second
                got = scrape(mport).get('clickacall_relay_allocations{transport="udp"}', -1)
                if got == want or time.monotonic() > deadline:
                    return got
                time.sleep(0.1)

        assert allocations(30) == 30
        assert turnclient.release_many(relay.address, idle[10:], relay.realm, max_seconds=20) == 20
        assert all(i.sock.fileno() == -1 for i in idle[10:])  # closed
        del idle[10:]
        assert allocations(10) == 10
    finally:
        turnclient.close_all(idle)
        relay.stop()


# -- call workloads: real SRTP, replayed on a schedule --------------------------------------

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _rtp_fields(pkt: bytes) -> tuple[int, int, int, int, int]:
    """(marker, payload type, sequence, timestamp, SSRC) of an RTP packet."""
    b0, b1, seq, ts, ssrc = struct.unpack_from("!BBHII", pkt)
    assert b0 >> 6 == 2
    return b1 >> 7, b1 & 0x7F, seq, ts, ssrc


def test_workload_packets_are_srtp_that_decrypts() -> None:
    """Every prepared packet authenticates and decrypts with its call's key (pylibsrtp), and
    the RTP headers are per stream: one SSRC, consecutive sequence numbers, timestamps that
    follow the clock, across two segments in a row."""
    wl = workloads.Workload("mix", calls=10, seed=7)
    kinds = {c.kind for c in wl.calls}
    assert kinds == {"voice", "video", "screen"}
    last: dict[int, tuple[int, int]] = {}  # ssrc -> (seq, ts)
    for _ in range(2):
        seg = wl.segment(0.6)
        assert seg.packets == seg.rtp_packets + seg.rtcp_packets and seg.rtcp_packets > 0
        assert np.all(np.diff(seg.times.astype(np.int64)) >= 0)
        plain = workloads.decrypt(seg, wl.keys)  # raises if any packet does not authenticate
        assert len(plain) == seg.packets
        for i, (call, pkt) in enumerate(plain):
            wire = seg.data[int(seg.offsets[i]) : int(seg.offsets[i]) + int(seg.lengths[i])]
            assert wire != pkt  # encrypted on the wire
            if 192 <= pkt[1] <= 223:
                assert pkt[1] == 200  # sender report
                continue
            marker, pt, seq, ts, ssrc = _rtp_fields(pkt)
            stream = wl.streams[ssrc - wl.ssrc_base]
            assert stream.call == call and pt == stream.pt
            assert wire[:12] == pkt[:12]  # the header stays in the clear for the relay
            if stream.media == "audio":
                assert 150 <= len(pkt) - 12 <= 170
            else:
                assert len(pkt) - 12 <= workloads.MAX_PAYLOAD
            if ssrc in last:
                pseq, pts = last[ssrc]
                assert seq == (pseq + 1) & 0xFFFF
                assert (ts - pts) & 0xFFFFFFFF in (
                    0,
                    stream.period_ns * stream.clock // 10**9,
                    stream.period_ns * stream.clock // 10**9 + 1,
                )
            last[ssrc] = (seq, ts)
    assert len(last) == len(wl.streams)


def test_replay_direct_counts_every_packet() -> None:
    rig = loadgen.Rig()
    wl = workloads.Workload("video", calls=3, seed=1)
    flows = loadgen.direct_flows(rig.addr, 3)
    try:
        seg = wl.segment(0.5)
        player = seg.player(flows)
        res = loadgen.replay_trial(rig, player, [])
        assert res["sent"] == seg.packets and res["send_errors"] == 0
        assert res["received"] == seg.rtp_packets  # loopback, low rate
        assert res["received_rtcp"] == seg.rtcp_packets
        assert res["loss"] == 0.0 and res["relayed"] == 2 * seg.packets
        assert 0 < res["rtt_p50_us"] < 50_000
        rtts = np.frombuffer(player.rtts(), dtype=np.uint32)
        assert rtts.size == seg.rtp_packets
        raw = player.run(2.0, 0.3, rig.echo)  # the same packets again: matched afresh
        assert raw["received"] == seg.rtp_packets and raw["duplicates"] == 0
        assert raw["send_seconds"] >= 0.9 * float(seg.times[-1]) / 1e9  # paced, not a blast
    finally:
        flows.close()
        rig.close()


def test_replay_rejects_bad_schedules() -> None:
    wl = workloads.Workload("voice", calls=2, seed=2)
    seg = wl.segment(0.1)
    fds, chans = [0, 0], [0x4000, 0x4001]

    def make(**kw: object) -> _loadgen.Replay:
        args = dict(
            data=seg.data,
            offsets=seg.offsets,
            lengths=seg.lengths,
            flows=seg.flows,
            times=seg.times,
            ssrc_base=seg.ssrc_base,
            seq0=seg.seq0,
            start=seg.start,
            count=seg.count,
            order=seg.order,
        )
        args.update(kw)
        return _loadgen.Replay(fds, chans, **args)

    make()
    with pytest.raises(ValueError):
        make(flows=np.full_like(seg.flows, 5))
    with pytest.raises(ValueError):
        make(times=seg.times[::-1].copy())
    with pytest.raises(ValueError):
        make(offsets=seg.offsets + np.uint64(len(seg.data)))
    with pytest.raises(ValueError):
        make(order=np.full_like(seg.order, seg.packets))
    with pytest.raises(ValueError):
        _loadgen.Replay(
            fds,
            [0x3FFF, 0x4000],
            seg.data,
            seg.offsets,
            seg.lengths,
            seg.flows,
            seg.times,
            seg.ssrc_base,
            seg.seq0,
            seg.start,
            seg.count,
            seg.order,
        )
    with pytest.raises(ValueError):
        workloads.Workload("nope")


def test_bench_workloads_report_and_plots(tmp_path: Path) -> None:
    """A real short run with call workloads and the workers comparison: the JSON report has
    every figure and the machine, and the PNG plots next to it are valid images."""
    systems = ["ours", "cfwd", "cfwd-gso"]
    profile = runner.Profile(
        sizes=[200],
        fixed_rate=20_000,
        fixed_seconds=0.2,
        trials=1,
        search_start=20_000,
        search_ceiling=30_000,
        search_step_seconds=0.2,
        search_budget=0.5,
        latency_seconds=0.2,
        alloc_counts=[10],
        alloc_seconds=5.0,
        cpu_rounds=1,
        workloads=["voice", "screen"],
        workload_seconds=0.4,
        workload_rounds=1,
        workload_scale=0.03,
        workers=[1, 2],
        workers_flows=4,
        workers_rate=10_000,
        workers_rounds=2,
        latency_rates=[10_000],
        latency_rounds=2,
    )
    out = tmp_path / "report.json"
    lines: list[str] = []
    report = runner.run(systems, profile, out, progress=lines.append)
    assert any("elapsed" in line and "left" in line for line in lines)
    saved = json.loads(out.read_text())
    m = saved["machine"]
    for key in ("cpu_model", "cpus", "kernel", "python", "packages", "git_commit"):
        assert key in m
    assert m["packages"]["pylibsrtp"] != "not installed"
    for name in ("voice", "screen"):
        w = saved["workloads"][name]
        assert w["calls"] >= 1 and w["offered_pps"] > 0
        for s in systems:
            r = w["systems"][s]
            assert "skipped" not in r, r.get("skipped")
            assert math.isfinite(r["cpu_us_per_pkt"]) and r["cpu_us_per_pkt"] > 0
            assert r["received"] > 0 and r["loss"] < 0.5
            assert r["latency_cdf"]["through_us"]
    assert "ours/cfwd/voice" in saved["workload_ratios"]
    one, point = saved["workers"]["points"]
    assert point["workers"] == 2 and "skipped" not in point, point.get("skipped")
    assert one["workers"] == 1 and "one_worker_at_share" not in one
    assert point["fixed"]["relayed"] > 0 and saved["workers"]["rate"] == 10_000
    assert point["fixed"]["rate"] == 10_000 and one["fixed"]["rate"] == 10_000
    assert point["fixed"]["voluntary_switches_per_pkt"] > 0
    share = point["one_worker_at_share"]  # one worker at what each of the two sees
    assert share["rate"] == 5_000 and share["relayed"] > 0 and share["loss"] < 0.5
    assert len(point["cpu_share_by_process"]) == point["processes"]
    lat = saved["latency_rounds"]
    assert lat["rounds"] == 2 and set(lat["rates"]) == {"10000"}
    for s in systems:  # every system, every round, against that round's direct path
        r = lat["rates"]["10000"][s]
        assert len(r["rounds"]) == 2 and r["loss"] < 0.5
        assert r["added_p99_min_us"] <= r["added_p99_us"] <= r["added_p99_max_us"]
        assert all(x["direct_rtt_p99_us"] > 0 for x in r["rounds"])
        assert r["cdf"]["through_us"] and r["cdf"]["direct_us"]
    assert saved["systems"]["ours"]["sizes"]["200"]["latency_cdf"]["q"]
    expected = {"rate", "latency_cdf", "allocations", "workloads", "workers"}
    assert set(saved["plots"]) == expected
    from matplotlib.image import imread

    for name in expected:
        png = Path(saved["plots"][name])
        assert png.parent == tmp_path and png.name == f"{name}.png"
        assert png.read_bytes()[:8] == PNG_MAGIC
        h, w_, _ = imread(png).shape
        assert h > 100 and w_ > 100
    text = table(report)
    assert "voice" in text and "worker(s)" in text and "ratio ours/cfwd/200" in text
    assert "relay-added round trip" in text and "10,000 clickacall" in text


def test_clickacall_bench_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["bench", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: clickacall bench") and "--workloads" in text
    script = Path(sys.executable).parent / "clickacall"
    if script.exists():  # the console script, as installed
        res = subprocess.run(
            [str(script), "bench", "--help"], capture_output=True, text=True, timeout=60
        )
        assert res.returncode == 0 and "--calls-scale" in res.stdout
    with pytest.raises(SystemExit) as exc:
        cli.main(["bench", "--workloads", "nope"])
    assert exc.value.code == 2
    for bad in ("", "x", "10,0", ","):  # was an IndexError deep in the run for ""
        with pytest.raises(SystemExit) as exc:
            cli.main(["bench", "--allocs", bad])
        assert exc.value.code == 2
        assert "--allocs" in capsys.readouterr().err
    for flag, bad in (
        ("--latency-rates", ""),
        ("--latency-rates", "fast"),
        ("--latency-rates", "50000,0"),
        ("--latency-rounds", "0"),
        ("--workers-rate", "5"),
    ):
        with pytest.raises(SystemExit) as exc:
            cli.main(["bench", flag, bad])
        assert exc.value.code == 2
        assert flag in capsys.readouterr().err


def test_progress_lines() -> None:
    lines: list[str] = []
    prog = runner.Progress(100.0, lines.append)
    prog.plan = {"a": 60.0, "b": 40.0}
    prog.begin("a", "step a")
    prog.begin("b", "step b")
    prog("done")
    assert lines[0].endswith("step a") and "elapsed" in lines[0] and "~1:40 left" in lines[0]

    def left(line: str) -> int:
        m, s = line.split("~", 1)[1].split(" left", 1)[0].split(":")
        return int(m) * 60 + int(s)

    assert lines[1].endswith("step b") and left(lines[1]) < left(lines[0])
    assert len(lines) == 3


def test_suite_installs_coturn_when_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without turnserver the suite runs Debian's install (sudo when not root) and then uses
    it; an install that fails makes coturn a skipped system with the reason, not a crash."""
    installed: list[bool] = []
    runs: list[list[str]] = []

    def which(name: str) -> str | None:
        if name == "turnserver":
            return "/usr/bin/turnserver" if installed else None
        return f"/usr/bin/{name}"

    def run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
        runs.append(cmd)
        if "install" in cmd:
            installed.append(True)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(shutil, "which", which)
    monkeypatch.setattr(subprocess, "run", run)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert turnserver() == "/usr/bin/turnserver"
    assert runs[0][:3] == ["sudo", "-n", "apt-get"] and runs[1][-1] == "coturn"
    assert turnserver() == "/usr/bin/turnserver" and len(runs) == 2  # once only

    installed.clear()
    runs.clear()

    def refused(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
        runs.append(cmd)
        return subprocess.CompletedProcess(cmd, 100, "", "E: Unable to locate package coturn")

    monkeypatch.setattr(subprocess, "run", refused)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    with pytest.raises(SkipSystem, match="Unable to locate package coturn"):
        turnserver()
    assert runs[0][0] == "apt-get"  # root: no sudo


def test_coturn_src_is_optional_and_skipped_without_its_binary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``coturn-src`` (coturn built from source by whoever runs it) is never a default system
    and is skipped with a clear reason when CLICKACALL_COTURN_BIN is unset or not executable;
    given one, it runs it with the batched peer side and an echo per flow."""
    assert "coturn-src" in OPTIONAL_SYSTEMS and "coturn-src" not in ALL_SYSTEMS
    system = CoturnSrc("coturn-src", tmp_path, (loadgen.HOST, 9))
    monkeypatch.delenv(COTURN_BIN_ENV, raising=False)
    with pytest.raises(SkipSystem, match=f"{COTURN_BIN_ENV} is not set: build coturn"):
        system.command()
    plain = tmp_path / "turnserver"
    plain.write_text("")
    monkeypatch.setenv(COTURN_BIN_ENV, str(plain))
    with pytest.raises(SkipSystem, match="is not an executable file"):
        system.command()
    plain.chmod(0o755)
    cmd = system.command()
    assert cmd[0] == str(plain) and "--udp-gso" in cmd and "--multiplex-peer" in cmd
    assert cmd[cmd.index("--multiplex-peer-port") + 1] == str(system.mux_port)
    assert CoturnSrc.distinct_peers


def test_syscalls_profile_parses_perf_and_divides_by_packets() -> None:
    """bench/syscalls.py: perf stat's CSV, one line per event in order, summed per figure
    with the per-call breakdown kept; the table shows every system's figures per packet."""
    from bench import syscalls

    evs = syscalls.events()
    values = {"raw_syscalls:sys_enter": 900, "context-switches": 7, "task-clock": 12.5}
    values |= {"syscalls:sys_exit_epoll_wait": 20, "syscalls:sys_exit_poll": 5}
    values |= {"syscalls:sys_exit_recvmmsg": 300, "syscalls:sys_enter_sendmmsg": 250}
    lines = ["# started on Thu Dec  3 15:44:30 2026", ""]
    for name, args in evs:
        n = values.get(args[1], 0)
        if name == "recv_nonempty":
            n = 200 if args[1].endswith("recvmmsg") else 0
        lines.append(f"{n},,{args[1]},373600617,100.00,,")
    lines.append("<not counted>,,syscalls:sys_exit_extra,0,0.00,,")  # not one of ours: refused
    with pytest.raises(RuntimeError):
        syscalls.parse("\n".join(lines), evs)
    got = syscalls.parse("\n".join(lines[:-1]), evs)
    assert got["syscalls"] == 900 and got["task_clock_ms"] == 12.5
    assert got["wakeups"] == 25 and got["wakeups.epoll_wait"] == 20 and got["wakeups.poll"] == 5
    assert got["recv_calls"] == 300 and got["recv_nonempty"] == 200
    assert got["send_calls"] == 250 and got["send_calls.sendmmsg"] == 250
    per = {k: v / 1000 for k, v in got.items() if k != "task_clock_ms"}
    report = {
        "workload": "voice",
        "calls": 4,
        "seconds": 1.0,
        "systems": {
            "ours": {
                "label": "clickacall",
                "offered_pps": 200.0,
                "cpu_us_per_pkt": 7.5,
                "per_packet": per,
                "packets_per_batch": 1000 / 200,
                "packets_per_wakeup": 1000 / 25,
            },
            "coturn": {"label": "coturn", "skipped": "not installed"},
        },
    }
    text = syscalls.table(report)
    assert "clickacall" in text and "0.900" in text and "5.00" in text and "40.00" in text
    assert f"{'coturn':<{LABEL_W}}skipped: not installed" in text


def test_ours_mux_relays_every_flow_to_its_own_echo(tmp_path: Path) -> None:
    """ours-mux (our relay with --multiplex-peer) through a rig with an echo address per flow:
    every flow's allocation has the same relayed address, each is bound to a different echo,
    and every packet comes back, both ways through the one shared socket; flows bound to one
    echo for all would be refused (403) from the second on."""
    from bench.systems import OursMux

    rig = loadgen.Rig(distinct_peers=True)
    system = OursMux("ours-mux", tmp_path, rig.addr)
    system.peer = rig.peer
    assert "--multiplex-peer" in system.command()
    try:
        with running(system):
            flows = system.call_flows(6)
            try:
                assert len({c.relayed for c in flows.clients}) == 1
                assert len({rig.peer(i) for i in range(6)}) == 6
                gen = flows.generator(200)
                res = loadgen.trial(rig, gen, 3_000, 0.5, system.pids())
                assert res["sent"] == 1500 and res["received"] == 1500, res
            finally:
                flows.close()
            with pytest.raises(SkipSystem, match="403"):
                system.peer = lambda i: rig.addr
                system.call_flows(2).close()
    finally:
        rig.close()


def test_ours_coalesce_relays_every_packet_with_its_wait(tmp_path: Path) -> None:
    """ours-coalesce is our relay with --coalesce-us at the bench's wait, and a trial through
    it loses nothing: the datagrams that arrive while it waits are read after."""
    from bench.systems import COALESCE_US, create

    rig = loadgen.Rig()
    cmd = create("ours-coalesce", tmp_path, rig.addr, coalesce_us=150).command()
    assert cmd[cmd.index("--coalesce-us") + 1] == "150"
    system = create("ours-coalesce", tmp_path, rig.addr)
    cmd = system.command()
    assert cmd[cmd.index("--coalesce-us") + 1] == str(COALESCE_US)
    try:
        with running(system):
            flows = system.call_flows(6)
            try:
                res = loadgen.trial(rig, flows.generator(200), 20_000, 0.5, system.pids())
                assert res["sent"] == 10_000 and res["received"] == 10_000, res
            finally:
                flows.close()
    finally:
        rig.close()


def test_turn_systems_relay_from_addresses_of_their_own(tmp_path: Path) -> None:
    """Every TURN system of a run relays from its own loopback address, in RELAY_PORTS (below
    the ephemeral range), so 10,000 idle allocations fit: neither the generator's sockets nor
    a system running beside it can take its relay ports. Ours and coturn, both running, relay
    every packet through allocations on their own addresses."""
    from bench.systems import RELAY_PORTS, Coturn, Ours

    rig = loadgen.Rig()
    systems = [Ours("ours", tmp_path, rig.addr), Coturn("coturn", tmp_path, rig.addr)]
    hosts = [s.relay_host for s in systems]
    assert len(set(hosts)) == 2 and loadgen.HOST not in hosts
    try:
        with running(systems[0]), running(systems[1]):
            for system in systems:
                flows = system.call_flows(3)
                try:
                    for c in flows.clients:
                        assert c.relayed is not None
                        host, port = c.relayed
                        assert host == system.relay_host, (system.name, c.relayed)
                        assert RELAY_PORTS[0] <= port <= RELAY_PORTS[1]
                    res = loadgen.trial(rig, flows.generator(200), 3_000, 0.5, system.pids())
                    assert res["sent"] == 1500 and res["received"] == 1500, (system.name, res)
                finally:
                    flows.close()
    finally:
        rig.close()
