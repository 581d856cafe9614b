"""An HTTP/1.1 load tool for the control-plane benchmark, meant to run in its own process.

    python -m bench.httpload < spec.json > result.json

One request, pre-serialised, sent over N keep-alive connections (uvloop, httptools' response
parser: a few µs of client work per request, so one core drives far more than the server under
test can take). Two modes, both bounded in count and in time:

- ``closed``: every connection sends its next request as soon as the previous answer is in;
  the completion rate is the server's maximum throughput at that concurrency.
- ``open``: requests are due at a fixed rate whatever the answers do, each on an idle connection
  (a new one while fewer than ``connections`` are open, else it queues). Latency runs from the
  moment a request was *due*, so a stalled server shows up in the tail rather than hiding in a
  slower offered rate (no coordinated omission). Requests not answered ``grace`` seconds after
  the last one was due count as unfinished.

It reads /proc for the CPU time the watched process trees used during the measurement.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import httptools

from relay import procstat

PERCENTILES = (50.0, 90.0, 99.0, 99.9)


# --- CPU time, from /proc (relay.procstat) -------------------------------------------------------


def tree_cpu(roots: Iterable[int]) -> dict[int, float]:
    """CPU seconds (user + system, threads included) of every process in the trees."""
    procs = procstat.processes()
    keep = procstat.descendants([r for r in roots if r in procs], procs)
    return {pid: procs[pid].cpu_seconds for pid in keep}


def cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


def busy_share(before: dict[str, tuple[float, float]]) -> dict[str, float]:
    """Per CPU: the busy fraction since ``before`` (:func:`relay.procstat.cpu_busy`), every
    process counted."""
    after = procstat.cpu_busy()
    out = {}
    for name, (busy, total) in after.items():
        b0, t0 = before.get(name, (0.0, 0.0))
        if total > t0:
            out[name] = round((busy - b0) / (total - t0), 3)
    return out


# --- the client ----------------------------------------------------------------------------------


class Closed(Exception):
    """The connection broke or timed out; the caller opens a new one."""


class Conn(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: Any = None  # uvloop's TCPTransport is no asyncio.Transport subclass
        self.waiter: asyncio.Future[int] | None = None
        self.closed = False
        self.body = bytearray()
        self.keep_body = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as e:
            self._fail(Closed(f"bad response: {e}"))
            self.close()

    def on_body(self, body: bytes) -> None:
        if self.keep_body:
            self.body += body

    def on_message_complete(self) -> None:
        w, self.waiter = self.waiter, None
        if w is not None and not w.done():
            w.set_result(self.parser.get_status_code())
        if not self.parser.should_keep_alive():
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(Closed(str(exc or "connection closed")))

    def _fail(self, exc: Exception) -> None:
        w, self.waiter = self.waiter, None
        if w is not None and not w.done():
            w.set_exception(exc)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    async def request(self, data: bytes, timeout: float) -> int:
        if self.closed or self.transport is None:
            raise Closed("connection closed")
        loop = asyncio.get_running_loop()
        waiter = self.waiter = loop.create_future()
        self.body.clear()
        self.transport.write(data)
        timer = loop.call_later(timeout, self._fail, Closed("timeout"))
        try:
            return int(await waiter)
        finally:
            timer.cancel()


async def connect(host: str, port: int) -> Conn:
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(Conn, host, port)
    return conn


@dataclass
class Tally:
    record: bool = True
    sent: int = 0
    completed: int = 0
    ok: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)

    def answer(self, status: int, seconds: float) -> None:
        if not self.record:
            return
        self.completed += 1
        if 200 <= status < 300:
            self.ok += 1
            self.latencies.append(seconds)
        key = str(status)
        self.statuses[key] = self.statuses.get(key, 0) + 1

    def fail(self, reason: str) -> None:
        if self.record:
            self.failures[reason] = self.failures.get(reason, 0) + 1


def percentiles(values: list[float]) -> dict[str, float]:
    """Milliseconds: p50/p90/p99/p99.9 (nearest rank), mean and max; NaN-free, {} if empty."""
    if not values:
        return {}
    xs = sorted(values)
    n = len(xs)
    out = {}
    for q in PERCENTILES:
        rank = min(n - 1, max(0, int(-(-q * n // 100)) - 1))
        out[f"p{q:g}".replace(".", "_")] = xs[rank] * 1000
    out["mean"] = sum(xs) / n * 1000
    out["max"] = xs[-1] * 1000
    return out


# --- the two modes -------------------------------------------------------------------------------


async def closed_loop(spec: dict[str, Any], data: bytes, seconds: float, tally: Tally) -> float:
    """Run for ``seconds`` or ``max_requests`` requests, whichever ends first; returns the
    elapsed time."""
    host, port, timeout = spec["host"], int(spec["port"]), float(spec["timeout"])
    budget = [int(spec["max_requests"])]
    start = time.perf_counter()
    deadline = start + seconds

    async def worker() -> None:
        conn: Conn | None = None
        while time.perf_counter() < deadline and budget[0] > 0:
            budget[0] -= 1
            try:
                if conn is None or conn.closed:
                    conn = await connect(host, port)
                tally.sent += tally.record
                t0 = time.perf_counter()
                status = await conn.request(data, timeout)
                tally.answer(status, time.perf_counter() - t0)
            except (Closed, OSError) as e:
                tally.fail("timeout" if str(e) == "timeout" else "connection")
                if conn is not None:
                    conn.close()
                conn = None
                await asyncio.sleep(0.01)
        if conn is not None:
            conn.close()

    await asyncio.gather(*(worker() for _ in range(int(spec["connections"]))))
    return time.perf_counter() - start


class Pool:
    def __init__(self, host: str, port: int, size: int) -> None:
        self.host, self.port, self.size = host, port, size
        self.idle: list[Conn] = []
        self.open = 0
        self.waiters: list[asyncio.Future[Conn | None]] = []

    async def fill(self, n: int) -> None:
        for _ in range(min(n, self.size)):
            self.idle.append(await connect(self.host, self.port))
            self.open += 1

    async def acquire(self) -> Conn | None:
        """An idle connection, a new one, or the next one released (None: open a new one)."""
        while self.idle:
            conn = self.idle.pop()
            if not conn.closed:
                return conn
            self.open -= 1
        if self.open < self.size:
            self.open += 1
            return None
        waiter: asyncio.Future[Conn | None] = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        return await waiter

    def release(self, conn: Conn | None) -> None:
        """Give back a connection; None (or a closed one) frees its slot."""
        if conn is not None and conn.closed:
            conn = None
        while self.waiters:
            w = self.waiters.pop(0)
            if not w.done():
                w.set_result(conn)
                return
        if conn is None:
            self.open -= 1
        else:
            self.idle.append(conn)

    def close(self) -> None:
        for conn in self.idle:
            conn.close()
        self.idle.clear()


async def open_loop(
    spec: dict[str, Any], data: bytes, seconds: float, tally: Tally, pool: Pool
) -> tuple[float, int, int]:
    """Offer ``rate``/s for ``seconds``; returns (elapsed, offered, unfinished)."""
    rate, timeout = float(spec["rate"]), float(spec["timeout"])
    offered = min(int(rate * seconds), int(spec["max_requests"]))
    tasks: set[asyncio.Task[None]] = set()

    async def one(due: float) -> None:
        conn = await pool.acquire()
        try:
            if conn is None:
                conn = await connect(pool.host, pool.port)
            status = await conn.request(data, timeout)
            tally.answer(status, time.perf_counter() - due)
        except (Closed, OSError) as e:
            tally.fail("timeout" if str(e) == "timeout" else "connection")
            if conn is not None:
                conn.close()
        finally:
            pool.release(conn)

    start = time.perf_counter() + 0.01
    i = 0
    while i < offered:
        now = time.perf_counter()
        while i < offered and start + i / rate <= now:
            tally.sent += tally.record
            task = asyncio.create_task(one(start + i / rate))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1
        if i < offered:
            await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
    unfinished = 0
    if tasks:
        _, pending = await asyncio.wait(set(tasks), timeout=float(spec["grace"]))
        unfinished = len(pending)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
    return time.perf_counter() - start, offered, unfinished


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    data = spec["request"].encode("latin-1")
    watch: dict[str, list[int]] = {k: [int(p) for p in v] for k, v in spec["watch"].items()}
    warm = Tally(record=False)
    tally = Tally()
    pool = Pool(spec["host"], int(spec["port"]), int(spec["connections"]))
    result: dict[str, Any] = {"mode": spec["mode"], "connections": int(spec["connections"])}
    try:
        # a first request whose answer is shown when it is not a 2xx (a broken set-up)
        probe = await connect(spec["host"], int(spec["port"]))
        probe.keep_body = True
        status = await probe.request(data, float(spec["timeout"]))
        if not 200 <= status < 300:
            result["probe"] = {"status": status, "body": probe.body.decode(errors="replace")}
        probe.close()
        if spec["mode"] == "closed":
            await closed_loop(spec, data, float(spec["warmup"]), warm)
        else:
            await pool.fill(int(spec["connections"]) // 4 + 1)
            await open_loop(spec, data, float(spec["warmup"]), warm, pool)
        cpu0 = {name: tree_cpu(pids) for name, pids in watch.items()}
        busy0 = procstat.cpu_busy()
        wall0 = time.perf_counter()
        me0 = os.times()
        if spec["mode"] == "closed":
            elapsed = await closed_loop(spec, data, float(spec["duration"]), tally)
            result.update(offered=tally.sent, unfinished=0)
        else:
            elapsed, offered, unfinished = await open_loop(
                spec, data, float(spec["duration"]), tally, pool
            )
            result.update(rate=float(spec["rate"]), offered=offered, unfinished=unfinished)
        wall = time.perf_counter() - wall0
        me1 = os.times()
        cpu = {name: cpu_delta(cpu0[name], tree_cpu(pids)) for name, pids in watch.items()}
        result["cpu_busy"] = busy_share(busy0)  # everything on the machine, per CPU
    finally:
        pool.close()
    result.update(
        sent=tally.sent,
        completed=tally.completed,
        ok=tally.ok,
        statuses=tally.statuses,
        failures=tally.failures,
        elapsed=elapsed,
        throughput=tally.ok / elapsed if elapsed > 0 else 0.0,
        latency_ms=percentiles(tally.latencies),
        cpu={
            name: {
                "seconds": sec,
                "share": sec / wall if wall > 0 else 0.0,  # 1.0: one core busy throughout
                "us_per_request": sec / tally.ok * 1e6 if tally.ok else None,
            }
            for name, sec in cpu.items()
        },
        client_cpu_seconds=(me1.user - me0.user) + (me1.system - me0.system),
    )
    return result


def main() -> int:
    spec = json.load(sys.stdin)
    cpu = spec.get("cpu")
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {int(cpu)})
    import uvloop

    result = uvloop.run(run(spec))
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
