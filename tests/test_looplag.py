"""Event-loop lag: relay/metrics.py's LoopLag timer, the board cells it writes, and
``clickacall_relay_event_loop_lag_seconds`` / ``_max_seconds`` on a running relay's /metrics.

A loop is made late on purpose (a callback that sleeps, or SIGSTOP on a worker process) and
the figures must show it; an idle loop must not look late. Bounds are loose where the shared
machine's scheduler adds noise, and tight only where the test controls the delay.
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import uvloop

from relay.metrics import LAG_BUCKETS, LAG_WINDOW, Board, LoopLag, RelayCollector
from tests.relayproc import RelayProcess, RelaySpec, free_tcp_port
from tests.test_agent import wait_for

# how late an event loop's ticks are (an idle loop under 0.2 s, a tick rate): alone
pytestmark = [pytest.mark.serial, pytest.mark.timeout(60)]

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


def lag_metrics(boards: list[Board]) -> dict[str, float]:
    """The two lag families as name{le} -> value, read through the collector."""
    out: dict[str, float] = {}
    for fam in RelayCollector(boards).collect():
        if fam.name.startswith("clickacall_relay_event_loop_lag"):
            for s in fam.samples:
                le = s.labels.get("le")
                out[s.name + (f'{{le="{le}"}}' if le else "")] = s.value
    return out


@pytest.fixture
def board(tmp_path: Path) -> Iterator[Board]:
    b = Board(tmp_path / "board", create=True)
    yield b
    b.close()


@pytest.mark.parametrize("impl", sorted(LOOPS))
def test_a_blocked_loop_shows_in_the_histogram_and_the_max(board: Board, impl: str) -> None:
    loop = LOOPS[impl]()
    try:
        lag = LoopLag(loop, board, interval=0.05)

        async def run() -> None:
            lag.start()
            await asyncio.sleep(0.5)  # healthy ticks
            healthy_max = lag.max_ns
            time.sleep(0.35)  # the loop is blocked: the tick due in < 0.05 s runs ~0.3 s late
            await asyncio.sleep(0.3)
            lag.stop()
            assert healthy_max < 0.2e9, healthy_max  # an idle loop is not "late"

        loop.run_until_complete(run())
    finally:
        loop.close()
    m = lag_metrics([board])
    count = m["clickacall_relay_event_loop_lag_seconds_count"]
    assert count == lag.count >= 10  # ~0.8 s of 50 ms ticks, fewer on a loaded box
    assert 0.28e9 <= lag.max_ns < 0.5e9
    # exactly the one blocked tick in the 0.25 .. 0.5 s bucket (a loaded box may add a
    # stray late tick below it, never one that late)
    assert (
        m['clickacall_relay_event_loop_lag_seconds_bucket{le="0.5"}']
        - m['clickacall_relay_event_loop_lag_seconds_bucket{le="0.25"}']
        == 1
    )
    assert m['clickacall_relay_event_loop_lag_seconds_bucket{le="+Inf"}'] == count
    assert 0.28 <= m["clickacall_relay_event_loop_lag_seconds_sum"] < 0.5 + 0.02 * count
    # stopped: no loop is overdue; the window's max was cleared with it
    assert m["clickacall_relay_event_loop_lag_max_seconds"] == 0


def test_a_loop_stuck_right_now_shows_in_the_max_before_its_timer_runs(board: Board) -> None:
    """The scrape comes while the loop is still blocked: its tick has not run, so the
    histogram has nothing late yet, but the max gauge sees how overdue the tick is."""
    loop = uvloop.new_event_loop()
    started = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        lag = LoopLag(loop, board, interval=0.05)
        lag.start()
        loop.call_soon(started.set)
        loop.run_forever()
        lag.stop()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        assert started.wait(10)
        time.sleep(0.3)
        before = lag_metrics([board])
        assert before["clickacall_relay_event_loop_lag_seconds_count"] >= 2
        assert before["clickacall_relay_event_loop_lag_max_seconds"] < 0.2
        loop.call_soon_threadsafe(time.sleep, 1.0)
        time.sleep(0.6)
        during = lag_metrics([board])
        assert 0.3 <= during["clickacall_relay_event_loop_lag_max_seconds"] < 1.0
        late = 'clickacall_relay_event_loop_lag_seconds_bucket{le="0.25"}'
        assert during["clickacall_relay_event_loop_lag_seconds_count"] == during[late]
        # once the loop wakes, the overdue tick lands in the histogram (~1 s late)
        count, le = (
            "clickacall_relay_event_loop_lag_seconds_count",
            'clickacall_relay_event_loop_lag_seconds_bucket{le="0.5"}',
        )
        after = wait_for(
            lambda: (m := lag_metrics([board]))[count] > m[le] and m, 5, "the late tick"
        )
        assert after[count] - after[le] == 1
        assert after["clickacall_relay_event_loop_lag_max_seconds"] >= 0.5
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_lag_window_and_summing_across_boards(tmp_path: Path) -> None:
    """Driven by hand with a fake clock: the max gauge forgets a stall after LAG_WINDOW,
    and two workers' histograms add up while their max gauges do not."""
    boards = [Board(tmp_path / f"w{i}", create=True) for i in range(2)]
    try:
        # fake clocks far ahead of the real one, so the collector (which reads the real
        # CLOCK_MONOTONIC) never sees these ticks overdue; board.read_lag is given its "now"
        start = time.monotonic_ns() + 10**13
        clocks = [[start], [start]]
        loop = asyncio.new_event_loop()
        lags = [
            LoopLag(loop, b, interval=0.25, clock=lambda c=c: c[0])  # type: ignore[misc]
            for b, c in zip(boards, clocks, strict=True)
        ]
        for lag in lags:
            lag.start()
        step = int(0.25e9)

        def tick(i: int, late_ns: int) -> None:
            clocks[i][0] += step + late_ns
            lags[i]._tick()

        tick(0, int(0.7e9))  # one stall of 0.7 s
        for _ in range(3):
            tick(1, int(0.002e9))
        m = lag_metrics(boards)
        assert m["clickacall_relay_event_loop_lag_seconds_count"] == 4  # summed
        assert m['clickacall_relay_event_loop_lag_seconds_bucket{le="0.001"}'] == 0
        assert m['clickacall_relay_event_loop_lag_seconds_bucket{le="0.0025"}'] == 3
        assert m['clickacall_relay_event_loop_lag_seconds_bucket{le="0.5"}'] == 3
        assert m['clickacall_relay_event_loop_lag_seconds_bucket{le="1.0"}'] == 4
        assert m["clickacall_relay_event_loop_lag_seconds_sum"] == pytest.approx(0.706)
        assert m["clickacall_relay_event_loop_lag_max_seconds"] == pytest.approx(0.7)  # max
        # worker 0's next tick, due 0.25 s after its stall, not run 2 s later: overdue now
        assert boards[0].read_lag(clocks[0][0] + int(2.25e9))[1] == int(2e9)
        # after LAG_WINDOW seconds of healthy ticks worker 0's stall has left the window
        for _ in range(math.ceil(LAG_WINDOW / 0.25)):
            tick(0, 0)
            tick(1, 0)
        assert boards[0].read_lag(clocks[0][0])[1] == 0
        assert lag_metrics(boards)["clickacall_relay_event_loop_lag_max_seconds"] == 0
        for lag in lags:
            lag.stop()
        loop.close()
    finally:
        for b in boards:
            b.close()


def test_lag_buckets_are_sorted_and_end_in_inf() -> None:
    assert list(LAG_BUCKETS) == sorted(LAG_BUCKETS) and math.isinf(LAG_BUCKETS[-1])


# --- a running relay -----------------------------------------------------------------------


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("clickacall_relay_event_loop_lag") or line.startswith(
            "clickacall_relay_workers"
        ):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def test_relay_metrics_show_each_workers_loop_lag(tmp_path: Path) -> None:
    """Two workers: both tick into the summed histogram; one stopped with SIGSTOP for 0.8 s
    shows in the max gauge while stopped, and as one late tick in the histogram after."""
    mport = free_tcp_port()
    spec = RelaySpec(workers=2, extra_args=["--metrics", f"127.0.0.1:{mport}"])
    relay = RelayProcess(spec, tmp_path, impl="ours").start()
    try:
        pids = wait_for(lambda: len(p := relay.worker_pids()) == 2 and p, 20, "both workers")
        count = "clickacall_relay_event_loop_lag_seconds_count"
        first = wait_for(lambda: (m := scrape(mport)).get(count, 0) >= 8 and m, 20, "lag ticks")
        assert first["clickacall_relay_workers"] == 2
        # 2 workers x 4 ticks a second: the count grows about twice as fast as one loop's
        t0, c0 = time.monotonic(), first[count]
        time.sleep(2.0)
        rate = (scrape(mport)[count] - c0) / (time.monotonic() - t0)
        assert 5.0 <= rate <= 8.5, rate
        late = 'clickacall_relay_event_loop_lag_seconds_bucket{le="0.5"}'
        before = scrape(mport)
        assert before[late] == before[count]  # no tick of either worker was 0.5 s late yet

        os.kill(pids[1], signal.SIGSTOP)
        try:
            time.sleep(0.8)
            during = scrape(mport)
        finally:
            os.kill(pids[1], signal.SIGCONT)
        assert during["clickacall_relay_event_loop_lag_max_seconds"] >= 0.5
        after = wait_for(
            lambda: (m := scrape(mport))[count] > m[late] and m,
            10,
            "the stopped worker's late tick",
        )
        assert after[count] - after[late] == 1
        assert after["clickacall_relay_event_loop_lag_max_seconds"] >= 0.5
        assert after["clickacall_relay_event_loop_lag_seconds_sum"] >= 0.5
    finally:
        relay.stop()
