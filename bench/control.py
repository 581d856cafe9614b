"""Control-plane benchmark: calls created and tokens issued per second on one core, with latency.

    clickacall bench control                         # SQLite and PostgreSQL (about 2 minutes)
    clickacall bench control --db sqlite --quick     # short run
    python -m bench.control --db postgres --duration 20 --out /tmp/control.json

A real control plane (``python -m control``: one uvicorn worker, one process) runs pinned to
CPU 1; this runner, the load tool (bench/httpload.py, a second process) and PostgreSQL, when it
is the database, run on CPU 0. The runner bootstraps a tenant, a staff member and a call link
through the API and keeps one relay node registered with heartbeats, so clicks can pick it.

Per database, two workloads over HTTP/1.1 keep-alive:

- ``calls``: ``POST /v1/links/{public_id}/calls``, a visitor's click (a ringing call, its
  visitor token and the ICE servers with TURN credentials);
- ``tokens``: ``POST /v1/staff/{staff_id}/token``, a staff console token (the tenant's API key
  checked, the token signed and stored).

and one measured with a staff console connected:

- ``ringing``: click to ringing. A console (``/v1/staff/events`` with the staff member's console
  token, as the web console connects) listens while the runner clicks, one click at a time
  (at most ``--ring-clicks``, at most ``--duration`` seconds); per click, the time from
  sending the click's request to its answer (``click_ms``) and to the ``ring`` event arriving
  on the console (``ring_ms``). Each call is hung up (the visitor's token) before the next
  click, so the console rings for one call at a time. It runs first, before the load
  workloads leave thousands of unanswered calls ringing.

For the load workloads: the most requests per second answered 2xx in a closed loop with ``--connections``
connections, then latency percentiles in an open loop at half that rate and, in a full run, at
the reference rate of 500/s (half of the 1,000 calls/s target). Latency runs from the
moment each request was due. The control plane's (and PostgreSQL's) CPU time per request comes
from /proc. The target: at least 1,000 call creations/s with SQLite and p99 under 50 ms at
500/s. Progress goes to stderr, the table to stdout, everything to bench/out/control.json.

Every load loop is bounded in time and count and talks to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib.metadata
import json
import os
import platform
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import connect as ws_connect

from bench.httpload import percentiles
from bench.pgserver import PgServer, pg_bin_dir
from control.keys import new_operator_key
from relay import procstat

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out" / "control.json"
HOST = "127.0.0.1"
SERVER_CPU, LOAD_CPU = 1, 0
TARGET_CALLS = 1000.0  # creations/s with SQLite
TARGET_RATE = 500.0  # "half that rate"
TARGET_P99_MS = 50.0
HEARTBEAT_EVERY = 4.0  # well inside the control plane's 15 s heartbeat timeout
NODE_ID = "bench-node"
UA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko)"
    " Chrome/126.0.0.0 Safari/537.36"
)
WORKLOADS = ("calls", "tokens", "ringing")
LOAD_WORKLOADS = ("calls", "tokens")  # httpload's; "ringing" is ring_latency()
CLICKS_UNLIMITED = (
    "--click-visitor-burst=1000000000",
    "--click-link-burst=1000000000",
    "--click-ringing-per-link=0",
    "--click-ringing-per-tenant=0",
)
DBS = ("sqlite", "postgres")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass
class Profile:
    duration: float  # seconds of each measured phase
    warmup: float  # seconds of unmeasured load before each phase
    connections: int  # closed loop
    open_connections: int  # most connections the open loop may open
    reference_rate: bool  # also measure at TARGET_RATE, not only at half the maximum
    timeout: float = 10.0  # one request
    grace: float = 5.0  # open loop: how long answers may trail the last due request
    max_rate: float = 20_000.0  # bound on any request count: max_rate * duration
    ring_clicks: int = 200  # click-to-ringing: at most this many clicks (and ``duration`` s)


FULL = Profile(duration=10.0, warmup=2.0, connections=32, open_connections=64, reference_rate=True)
QUICK = Profile(
    duration=3.0,
    warmup=1.0,
    connections=16,
    open_connections=32,
    reference_rate=False,
    ring_clicks=50,
)


def _cpus() -> set[int]:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return set()


_CPUS = _cpus()  # as started, before main() pins this process to LOAD_CPU


def two_cores() -> bool:
    """Whether the control plane and the load can each have a core of their own."""
    return {SERVER_CPU, LOAD_CPU} <= _CPUS


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --- the system under test -----------------------------------------------------------------------


@dataclass
class Fixture:
    public_id: str  # the call link's
    api_key: str  # the tenant's
    staff_id: str


class ControlServer:
    """``python -m control`` on a free loopback port, pinned to :data:`SERVER_CPU`."""

    def __init__(self, db_url: str, workdir: Path) -> None:
        self.db_url = db_url
        self.workdir = workdir
        self.port = free_port()
        self.node_secret = secrets.token_hex(16)
        self.op_key, op = new_operator_key()
        self.op_hash = f"{op.id}:{op.key_hash.hex()}"
        self.logfile = workdir / "control.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.pinned = two_cores()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def _pin(self) -> None:  # in the child, between fork and exec
        if self.pinned:
            os.sched_setaffinity(0, {SERVER_CPU})

    def start(self, timeout: float = 30.0) -> ControlServer:
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "CLICKACALL_TOKEN_KEY": secrets.token_hex(24),
            "CLICKACALL_AUTH_SECRET": secrets.token_hex(16),
            "CLICKACALL_NODE_SECRET": self.node_secret,
        }
        with open(self.logfile, "wb") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "control",
                    "--listen",
                    f"{HOST}:{self.port}",
                    "--db",
                    self.db_url,
                    "--operator-key-hash",
                    self.op_hash,
                    "--log-level",
                    "warning",
                    "--metrics",
                    "off",
                    # one client clicks at full speed on one link and nobody answers: the
                    # click limits are off here (their own cost is a bucket look-up)
                    *CLICKS_UNLIMITED,
                ],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=self._pin,
            )
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return self
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the control plane did not start:\n{self.log_tail()}")
            time.sleep(0.1)

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self.logfile.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def bootstrap(self) -> Fixture:
        """A tenant (EU), one staff member and a link ringing them, through the API."""
        with httpx.Client(base_url=self.url, timeout=10) as c:
            r = c.post("/v1/tenants", json={"name": "Bench"}, headers=bearer(self.op_key))
            r.raise_for_status()
            key = r.json()["api_key"]["key"]
            r = c.post("/v1/staff", json={"name": "Ann"}, headers=bearer(key))
            r.raise_for_status()
            staff = r.json()["id"]
            r = c.post(
                "/v1/links", json={"name": "Sales", "ring_staff": [staff]}, headers=bearer(key)
            )
            r.raise_for_status()
            return Fixture(public_id=r.json()["public_id"], api_key=key, staff_id=staff)

    def heartbeat(self, client: httpx.Client) -> None:
        body = {"node_id": NODE_ID, "region": "eu", "urls": [f"turn:{HOST}:3478"]}
        r = client.post(
            f"{self.url}/v1/nodes/heartbeat", json=body, headers=bearer(self.node_secret)
        )
        r.raise_for_status()


@contextlib.contextmanager
def heartbeats(server: ControlServer, every: float = HEARTBEAT_EVERY) -> Iterator[None]:
    """Keep the relay node registered (and healthy) while the block runs."""
    stop = threading.Event()
    with httpx.Client(timeout=5) as client:
        server.heartbeat(client)

        def beat() -> None:
            while not stop.wait(every):
                try:
                    server.heartbeat(client)
                except httpx.HTTPError as e:
                    log(f"  heartbeat failed: {e}")

        thread = threading.Thread(target=beat, name="heartbeats", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(every + 6)


# --- load ----------------------------------------------------------------------------------------


def request_bytes(workload: str, fx: Fixture, port: int) -> str:
    host = f"Host: {HOST}:{port}\r\n"
    if workload == "calls":
        return (
            f"POST /v1/links/{fx.public_id}/calls HTTP/1.1\r\n{host}User-Agent: {UA}\r\n"
            "Content-Length: 0\r\n\r\n"
        )
    if workload == "tokens":
        return (
            f"POST /v1/staff/{fx.staff_id}/token HTTP/1.1\r\n{host}"
            f"Authorization: Bearer {fx.api_key}\r\nContent-Length: 0\r\n\r\n"
        )
    raise ValueError(workload)


def load(spec: dict[str, Any]) -> dict[str, Any]:
    """Run bench/httpload.py in its own process (on :data:`LOAD_CPU`) and return its result,
    with ``foreign_cpu``: the share of the control plane's CPU that other processes took
    meanwhile (another benchmark on the machine makes every figure lower)."""
    limit = float(spec["warmup"]) + float(spec["duration"]) + float(spec["grace"]) + 60
    proc = subprocess.run(
        [sys.executable, "-m", "bench.httpload"],
        input=json.dumps(spec).encode(),
        capture_output=True,
        cwd=ROOT,
        timeout=limit,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    if proc.returncode != 0:
        raise RuntimeError(f"load tool failed ({proc.returncode}): {proc.stderr.decode()[-2000:]}")
    result: dict[str, Any] = json.loads(proc.stdout)
    if "probe" in result:
        raise RuntimeError(f"the first request was refused: {result['probe']}")
    if spec.get("cpu") is not None:
        busy = result.get("cpu_busy", {}).get(f"cpu{SERVER_CPU}")
        if busy is not None:
            foreign = max(0.0, busy - result["cpu"]["control"]["share"])
            result["foreign_cpu"] = round(foreign, 3)
            if foreign > 0.1:
                log(f"    note: other processes took {foreign:.0%} of CPU {SERVER_CPU} meanwhile")
    return result


def measure(
    p: Profile, server: ControlServer, fx: Fixture, workload: str, watch: dict[str, list[int]]
) -> dict[str, Any]:
    base: dict[str, Any] = {
        "host": HOST,
        "port": server.port,
        "request": request_bytes(workload, fx, server.port),
        "timeout": p.timeout,
        "grace": p.grace,
        "warmup": p.warmup,
        "duration": p.duration,
        "max_requests": int(p.max_rate * max(p.duration, p.warmup)),
        "watch": watch,
        "cpu": LOAD_CPU if server.pinned else None,
    }
    log(f"  {workload}: closed loop, {p.connections} connections, {p.duration:g} s")
    top = load({**base, "mode": "closed", "connections": p.connections})
    log(
        f"    {top['throughput']:,.0f}/s, p50 {top['latency_ms'].get('p50', 0):.1f} ms, "
        f"p99 {top['latency_ms'].get('p99', 0):.1f} ms"
    )
    rates = [max(1.0, round(top["throughput"] / 2))]
    if p.reference_rate and abs(rates[0] - TARGET_RATE) > 0.05 * TARGET_RATE:
        rates.append(TARGET_RATE)
    at_rate = []
    for rate in sorted(rates):
        log(f"  {workload}: open loop at {rate:,.0f}/s, {p.duration:g} s")
        r = load({**base, "mode": "open", "rate": rate, "connections": p.open_connections})
        log(
            f"    {r['ok']}/{r['offered']} ok, p50 {r['latency_ms'].get('p50', 0):.1f} ms, "
            f"p99 {r['latency_ms'].get('p99', 0):.1f} ms"
        )
        at_rate.append(r)
    return {"max": top, "at_rate": at_rate}


# --- click to ringing ----------------------------------------------------------------------------


async def _next_ring(ws: Any, timeout: float) -> tuple[dict[str, Any], float]:
    """The console's next ``ring`` event and when it arrived (perf_counter); other events (the
    previous call's end, presence) are skipped."""
    deadline = time.perf_counter() + timeout
    while True:
        left = deadline - time.perf_counter()
        if left <= 0:
            raise TimeoutError("no ring on the console")
        raw = await asyncio.wait_for(ws.recv(), left)
        at = time.perf_counter()
        msg = json.loads(raw)
        if msg.get("type") == "ring":
            return msg, at


async def _ring_latency(p: Profile, server: ControlServer, fx: Fixture) -> dict[str, Any]:
    ws_url = f"ws://{HOST}:{server.port}/v1/staff/events"
    click_s: list[float] = []
    ring_s: list[float] = []
    failures: dict[str, int] = {}
    async with httpx.AsyncClient(base_url=server.url, timeout=p.timeout) as c:
        r = await c.post(f"/v1/staff/{fx.staff_id}/token", headers=bearer(fx.api_key))
        r.raise_for_status()
        token = r.json()["token"]
        async with ws_connect(ws_url, open_timeout=p.timeout, max_size=2**22) as ws:
            await ws.send(json.dumps({"type": "auth", "token": token}))
            while json.loads(await asyncio.wait_for(ws.recv(), p.timeout))["type"] != "callbacks":
                pass  # the opening messages: ringing, presence, callbacks
            started = time.perf_counter()
            deadline = started + p.duration
            url = f"/v1/links/{fx.public_id}/calls"
            while len(ring_s) < p.ring_clicks and time.perf_counter() < deadline:
                t0 = time.perf_counter()
                post = asyncio.create_task(c.post(url, headers={"User-Agent": UA}))
                try:
                    ring, rang = await _next_ring(ws, p.timeout)
                    resp = await post
                except (TimeoutError, httpx.HTTPError) as e:
                    post.cancel()
                    failures[type(e).__name__] = failures.get(type(e).__name__, 0) + 1
                    break  # the console is out of step: stop rather than misattribute rings
                answered = resp.elapsed.total_seconds()
                if resp.status_code != 201:
                    failures[str(resp.status_code)] = failures.get(str(resp.status_code), 0) + 1
                    break
                got = resp.json()
                if ring["call"]["id"] != got["call_id"]:
                    failures["wrong_call"] = failures.get("wrong_call", 0) + 1
                    break
                ring_s.append(rang - t0)
                click_s.append(answered)
                h = await c.post(f"/v1/calls/{got['call_id']}/hangup", headers=bearer(got["token"]))
                if h.status_code != 200:
                    failures[f"hangup {h.status_code}"] = (
                        failures.get(f"hangup {h.status_code}", 0) + 1
                    )
                    break
            elapsed = time.perf_counter() - started
    return {
        "clicks": len(ring_s),
        "failures": failures,
        "elapsed": elapsed,
        "clicks_per_second": len(ring_s) / elapsed if elapsed > 0 else 0.0,
        "click_ms": percentiles(click_s),
        "ring_ms": percentiles(ring_s),
    }


def ring_latency(p: Profile, server: ControlServer, fx: Fixture) -> dict[str, Any]:
    """Click to ringing on a connected console: one click at a time, each call hung up before
    the next; bounded by ``p.ring_clicks`` clicks and ``p.duration`` seconds."""
    log(f"  ringing: a console connected, up to {p.ring_clicks} clicks or {p.duration:g} s")
    out = asyncio.run(_ring_latency(p, server, fx))
    ring, click = out["ring_ms"], out["click_ms"]
    log(
        f"    {out['clicks']} clicks, click p50 {click.get('p50', 0):.1f} ms, ring p50 "
        f"{ring.get('p50', 0):.1f} ms, p99 {ring.get('p99', 0):.1f} ms"
        + (f", failures {out['failures']}" if out["failures"] else "")
    )
    return out


# --- databases -----------------------------------------------------------------------------------


def postmaster_pid(pg: PgServer) -> int:
    return int((pg.datadir / "postmaster.pid").read_text().split()[0])


def run_db(db: str, p: Profile, workloads: list[str]) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="clickacall-bc-")))
        watch: dict[str, list[int]] = {}
        info: dict[str, Any] = {}
        if db == "sqlite":
            url = f"sqlite:///{workdir}/control.db"
            info["sqlite_version"] = sqlite3.sqlite_version
        else:
            if pg_bin_dir() is None:
                return {"skipped": "PostgreSQL binaries (initdb, pg_ctl) not found"}
            pg = stack.enter_context(PgServer())
            url = pg.dsn()
            watch["postgres"] = [postmaster_pid(pg)]
            info["postgres_bin"] = str(pg.bin)
            info["postgres_settings"] = "fsync=off synchronous_commit=off full_page_writes=off"
        server = ControlServer(url, workdir).start()
        stack.callback(server.stop)
        assert server.proc is not None
        watch["control"] = [server.proc.pid]
        fx = server.bootstrap()
        out: dict[str, Any] = {"info": info, "workloads": {}}
        with heartbeats(server):
            if "ringing" in workloads:  # first: before the load leaves calls ringing
                out["ringing"] = ring_latency(p, server, fx)
            for workload in workloads:
                if workload in LOAD_WORKLOADS:
                    out["workloads"][workload] = measure(p, server, fx, workload, watch)
        if server.proc.poll() is not None:
            raise RuntimeError(f"the control plane died:\n{server.log_tail()}")
        return out


# --- report --------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    versions = {}
    for pkg in (
        "fastapi",
        "starlette",
        "pydantic",
        "uvicorn",
        "uvloop",
        "httptools",
        "aiosqlite",
        "asyncpg",
    ):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[pkg] = importlib.metadata.version(pkg)
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": procstat.machine().cpu_model or platform.processor() or None,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "packages": versions,
        "placement": (
            {"control_plane_cpu": SERVER_CPU, "load_and_postgres_cpu": LOAD_CPU}
            if two_cores()
            else "unpinned (fewer than 2 CPUs)"
        ),
    }


def verdict(results: dict[str, Any]) -> dict[str, Any]:
    """Whether the control plane's target is met, from the SQLite calls figures."""
    calls = results.get("sqlite", {}).get("workloads", {}).get("calls")
    if not calls:
        return {"measured": False}
    top = calls["max"]["throughput"]
    ref = [r for r in calls["at_rate"] if abs(r["rate"] - TARGET_RATE) <= 0.05 * TARGET_RATE]
    p99 = ref[0]["latency_ms"].get("p99") if ref else None
    return {
        "measured": True,
        "calls_per_second": top,
        "calls_target": TARGET_CALLS,
        "calls_met": top >= TARGET_CALLS,
        "p99_ms_at_500": p99,
        "p99_target_ms": TARGET_P99_MS,
        "p99_met": None if p99 is None else p99 < TARGET_P99_MS,
    }


def _ms(d: dict[str, float], key: str) -> str:
    v = d.get(key)
    return "-" if v is None else f"{v:.1f}"


def table(results: dict[str, Any]) -> str:
    head = (
        f"{'db':<9}{'workload':<9}{'conns':>6}{'max/s':>9}{'p50':>7}{'p99':>7}{'cpu/req':>9}  |"
        f"{'rate/s':>8}{'ok/offered':>14}{'p50':>7}{'p99':>7}{'p99.9':>8}{'max':>8}"
    )
    lines = [head, "-" * len(head)]
    for db, res in results.items():
        if "skipped" in res:
            lines.append(f"{db:<9}skipped: {res['skipped']}")
            continue
        for wl, figs in res["workloads"].items():
            top = figs["max"]
            cpu = top["cpu"]["control"]["us_per_request"]
            left = (
                f"{db:<9}{wl:<9}{top['connections']:>6}{top['throughput']:>9,.0f}"
                f"{_ms(top['latency_ms'], 'p50'):>7}{_ms(top['latency_ms'], 'p99'):>7}"
                f"{'-' if cpu is None else f'{cpu:,.0f}us':>9}  |"
            )
            for i, r in enumerate(figs["at_rate"]):
                lat = r["latency_ms"]
                lines.append(
                    (left if i == 0 else " " * (len(left) - 1) + "|")
                    + f"{r['rate']:>8,.0f}{str(r['ok']) + '/' + str(r['offered']):>14}"
                    f"{_ms(lat, 'p50'):>7}{_ms(lat, 'p99'):>7}{_ms(lat, 'p99_9'):>8}"
                    f"{_ms(lat, 'max'):>8}"
                )
    lines.append("latencies in ms; cpu/req: the control plane's CPU per 2xx answer at max")
    rings = {db: res["ringing"] for db, res in results.items() if "ringing" in res}
    if rings:
        head = (
            f"{'db':<9}{'clicks':>7}{'per s':>7}  |{'click p50':>10}{'p99':>7}  |"
            f"{'ringing p50':>12}{'p99':>7}{'max':>7}  failures"
        )
        lines += ["", "click to ringing on a connected console, one click at a time", head]
        lines.append("-" * len(head))
        for db, r in rings.items():
            click, ring = r["click_ms"], r["ring_ms"]
            lines.append(
                f"{db:<9}{r['clicks']:>7}{r['clicks_per_second']:>7.0f}  |"
                f"{_ms(click, 'p50'):>10}{_ms(click, 'p99'):>7}  |"
                f"{_ms(ring, 'p50'):>12}{_ms(ring, 'p99'):>7}{_ms(ring, 'max'):>7}  "
                + (", ".join(f"{k} {v}" for k, v in r["failures"].items()) or "-")
            )
        lines.append("click: the click's answer; ringing: from sending the click to the ring event")
    return "\n".join(lines)


def main(argv: list[str] | None = None, prog: str = "python -m bench.control") -> int:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    ap.add_argument("--db", choices=[*DBS, "both"], default="both")
    ap.add_argument("--quick", action="store_true", help="short phases, no 500/s reference run")
    ap.add_argument("--duration", type=float, help="seconds of each measured phase")
    ap.add_argument("--connections", type=int, help="closed-loop connections")
    ap.add_argument(
        "--workloads",
        default=",".join(WORKLOADS),
        help="comma-separated subset of calls,tokens,ringing (default: all)",
    )
    ap.add_argument(
        "--ring-clicks",
        type=int,
        help="click to ringing: at most this many clicks (default 200; --quick 50)",
    )
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    p = dataclasses.replace(QUICK if args.quick else FULL)
    if args.duration is not None:
        if not 0 < args.duration <= 600:
            ap.error("--duration must be 0-600 seconds")
        p.duration = args.duration
        p.warmup = min(p.warmup, max(0.5, args.duration / 3))
    if args.connections is not None:
        p.connections = max(1, min(args.connections, 1024))
    if args.ring_clicks is not None:
        if not 1 <= args.ring_clicks <= 10_000:
            ap.error("--ring-clicks must be 1-10000")
        p.ring_clicks = args.ring_clicks
    workloads = [w for w in args.workloads.split(",") if w]
    if not workloads or set(workloads) - set(WORKLOADS):
        ap.error(f"--workloads takes a comma-separated subset of {','.join(WORKLOADS)}")
    if two_cores():
        os.sched_setaffinity(0, {LOAD_CPU})  # PostgreSQL, started from here, inherits it
    dbs = list(DBS) if args.db == "both" else [args.db]
    started = time.time()
    results: dict[str, Any] = {}
    for db in dbs:
        log(f"{db}:")
        results[db] = run_db(db, p, workloads)
    report: dict[str, Any] = {
        "benchmark": "control-plane",
        "started": started,
        "seconds": time.time() - started,
        "machine": machine(),
        "profile": asdict(p),
        "target": {"calls_per_second": TARGET_CALLS, "p99_ms": TARGET_P99_MS, "at_rate": 500},
        "results": results,
        "verdict": verdict(results),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(table(results))
    v = report["verdict"]
    if v.get("measured"):
        p99 = v["p99_ms_at_500"]
        latency = "not measured (--quick)"
        if p99 is not None:
            latency = f"{p99:.1f} ms ({'met' if v['p99_met'] else 'NOT met'})"
        print(
            f"target (SQLite): >= {TARGET_CALLS:,.0f} calls/s: {v['calls_per_second']:,.0f} "
            f"({'met' if v['calls_met'] else 'NOT met'}); p99 < {TARGET_P99_MS:g} ms at 500/s: "
            + latency
        )
    print(f"report: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
