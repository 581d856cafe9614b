"""The relay's node agent (``--control``) against a real control plane and real relays.

Each integration test starts ``python -m control`` (tests/controlproc.py) with a short
heartbeat timeout and our relay (tests/relayproc.py) with a 0.5 s heartbeat, all on
loopback, and checks what a visitor's click and a TURN client see. The agent's parts that
need no process (load from boards, the revocation log, warn-once logging) are tested
directly at the end.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ext import _fastpath
from relay.agent import BoardLoad, NodeAgent, node_name
from relay.config import ENV_NODE_SECRET, load_config
from relay.metrics import Board
from relay.revocations import RevocationReader, RevocationWriter
from tests.controlproc import ControlProcess, Tenant, free_port
from tests.relayproc import RelayProcess, RelaySpec, StreamStunClient, StunClient, TurnError, scrape

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parent.parent
INTERVAL = "0.5"
HEARTBEAT_TIMEOUT = "2"
WARNING = 'msg="control plane heartbeat failed'


# --------------------------------------------------------------------------- helpers


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def start_control() -> ControlProcess:
    return ControlProcess(extra_args=["--heartbeat-timeout", HEARTBEAT_TIMEOUT]).start()


@pytest.fixture
def control() -> Iterator[ControlProcess]:
    proc = start_control()
    try:
        yield proc
    finally:
        proc.stop()


def click(control: ControlProcess, tenant: Tenant) -> httpx.Response:
    return httpx.post(f"{control.url}/v1/links/{tenant.link['public_id']}/calls", timeout=5)


def click_when_registered(control: ControlProcess, tenant: Tenant) -> dict[str, Any]:
    """The first click that finds a relay (the node's first heartbeats take a moment)."""

    def attempt() -> dict[str, Any] | None:
        r = click(control, tenant)
        return r.json() if r.status_code == 201 else None

    answer: dict[str, Any] = wait_for(attempt, 10, "a relay node to register")
    return answer


def turn_credentials(answer: dict[str, Any]) -> tuple[str, str, str]:
    """(username, password, token id) of a click's TURN entry."""
    turn = next(s for s in answer["iceServers"] if s["urls"][0].startswith("turn:"))
    username = turn["username"]
    return username, turn["credential"], username.partition(":")[2]


def start_relay(
    tmp_path: Path,
    control: ControlProcess,
    *,
    node_id: str,
    workers: int = 1,
    extra: list[str] | None = None,
    secret_flag: bool = False,
) -> RelayProcess:
    """Our relay with the node agent on, every worker serving before this returns."""
    args = ["--control", control.url, "--node-id", node_id, "--region", "eu"]
    args += ["--heartbeat-interval", INTERVAL, *(extra or [])]
    if secret_flag:
        args += ["--node-secret", control.node_secret]
    spec = RelaySpec(secret=control.relay_secret, workers=workers, extra_args=args)
    relay = RelayProcess(spec, tmp_path / node_id, impl="ours").start()
    wait_for(lambda: len(relay.worker_pids()) >= workers, 20, "every worker to serve")
    return relay


def event(port: int, name: str) -> float:
    return scrape(port).get(f'clickacall_relay_events_total{{event="{name}"}}', 0.0)


class Peer:
    """A UDP peer on loopback that echoes what it gets."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(3)
        self.address: tuple[str, int] = self.sock.getsockname()

    def echo_one(self) -> tuple[bytes, tuple[str, int]]:
        data, src = self.sock.recvfrom(2048)
        self.sock.sendto(b"echo:" + data, src)
        return data, src


@pytest.fixture
def peer() -> Iterator[Peer]:
    p = Peer()
    yield p
    p.sock.close()


def roundtrip(client: StunClient, peer: Peer, relayed: tuple[str, int], payload: bytes) -> None:
    client.send_indication(peer.address[0], peer.address[1], payload)
    data, src = peer.echo_one()
    assert data == payload and src == relayed
    assert client.recv_data() == (peer.address, b"echo:" + payload)


def refused_on_refresh(client: StunClient) -> bool:
    try:
        client.refresh(600)
    except TurnError as e:
        assert e.response.error_code == 437, e
        return True
    return False


# --------------------------------------------------------------------------- bad input


def test_control_without_node_secret_exits_2_with_one_line() -> None:
    env = {k: v for k, v in os.environ.items() if k != ENV_NODE_SECRET}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "relay",
            "--listen",
            "127.0.0.1:3478",
            "--auth-secret",
            "s",
            "--control",
            "http://127.0.0.1:9",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        env=env,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert lines == [
        "clickacall relay: error: --control needs a node secret: set CLICKACALL_NODE_SECRET "
        "(or give --node-secret SECRET, or node_secret in the [relay] table of --config)"
    ]


# --------------------------------------------------------------------------- registration


def test_node_registers_clicks_get_its_urls_and_it_is_dropped_when_it_stops(
    tmp_path: Path, control: ControlProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant = control.bootstrap()
    r = click(control, tenant)
    assert (r.status_code, r.json()["error"]["code"]) == (503, "no_relay")

    monkeypatch.setenv(ENV_NODE_SECRET, control.node_secret)
    relay = start_relay(tmp_path, control, node_id="eu-kill")
    try:
        answer = click_when_registered(control, tenant)
        servers = answer["iceServers"]
        where = f"127.0.0.1:{relay.port}"
        assert [s["urls"] for s in servers] == [[f"turn:{where}?transport=udp"], [f"stun:{where}"]]
        username, password, _ = turn_credentials(answer)
        with StunClient(relay.address, username, password) as client:
            assert client.allocate()[1] in relay.relay_ports  # the relay takes its credentials
        assert 'msg="registered with the control plane" node=eu-kill' in relay.log_text()

        assert relay.proc is not None
        relay.proc.kill()  # SIGKILL: no goodbye, the control plane times the node out
        relay.proc.wait(5)
        wait_for(lambda: click(control, tenant).status_code == 503, 8, "the node to time out")
    finally:
        relay.stop()

    relay = start_relay(tmp_path, control, node_id="eu-int")
    try:
        answer = click_when_registered(control, tenant)
        assert answer["iceServers"][0]["urls"] == [f"turn:127.0.0.1:{relay.port}?transport=udp"]
        assert relay.proc is not None
        relay.proc.send_signal(signal.SIGINT)  # stops at once, telling the control plane first
        assert relay.proc.wait(5) == 0
        assert click(control, tenant).status_code == 503
        assert "told the control plane this node is stopping" in relay.log_text()
    finally:
        relay.stop()


def test_node_registers_tcp_and_tls_urls_and_clicks_list_udp_then_tcp_then_tls(
    tmp_path: Path,
    control: ControlProcess,
    monkeypatch: pytest.MonkeyPatch,
    tls_certificate: tuple[str, str],
) -> None:
    """A node with --listen-tcp and --listen-tls registers turn:?transport=tcp and turns: URLs;
    a click's iceServers list UDP, then TCP, then TLS, and the TLS URL's credentials work."""
    tenant = control.bootstrap()
    monkeypatch.setenv(ENV_NODE_SECRET, control.node_secret)
    args = ["--control", control.url, "--node-id", "eu-tls", "--region", "eu"]
    args += ["--heartbeat-interval", INTERVAL]
    spec = RelaySpec(secret=control.relay_secret, tcp=True, tls=tls_certificate, extra_args=args)
    relay = RelayProcess(spec, tmp_path / "eu-tls", impl="ours").start()
    try:
        answer = click_when_registered(control, tenant)
        turn = answer["iceServers"][0]
        where, tls = f"127.0.0.1:{relay.port}", f"127.0.0.1:{relay.tls_port}"
        assert turn["urls"] == [
            f"turn:{where}?transport=udp",
            f"turn:{where}?transport=tcp",
            f"turns:{tls}?transport=tcp",
        ]
        assert answer["iceServers"][1]["urls"] == [f"stun:{where}"]
        ctx = ssl.create_default_context(cafile=tls_certificate[0])
        with StreamStunClient(
            (relay.host, relay.tls_port), turn["username"], turn["credential"], tls=ctx
        ) as client:
            assert client.allocate()[1] in relay.relay_ports
    finally:
        relay.stop()


# --------------------------------------------------------------------------- revocation


@pytest.mark.parametrize("workers", [1, 2])
def test_revoked_token_allocations_are_torn_down(
    tmp_path: Path, control: ControlProcess, peer: Peer, workers: int
) -> None:
    tenant = control.bootstrap()
    mport = free_port()
    relay = start_relay(
        tmp_path,
        control,
        node_id=f"eu-w{workers}",
        workers=workers,
        secret_flag=True,
        extra=["--metrics", f"127.0.0.1:{mport}", "--drain-timeout", "30"],
    )
    clients: list[StunClient] = []

    def client(answer: dict[str, Any], local: str) -> StunClient:
        username, password, _ = turn_credentials(answer)
        c = StunClient(relay.address, username, password, local=local)
        clients.append(c)
        return c

    try:
        call = click_when_registered(control, tenant)
        other = click(control, tenant).json()
        token_id = turn_credentials(call)[2]
        # with two workers, 127.0.0.1 and 127.0.0.2 land on different ones (steered by client IP)
        doomed = [client(call, f"127.0.0.{n}") for n in range(1, workers + 1)]
        bystander = client(other, "127.0.0.4")  # the other worker than 127.0.0.1's
        relayed = {}
        for c in [*doomed, bystander]:
            relayed[c] = c.allocate()
            c.create_permission(*peer.address)
            roundtrip(c, peer, relayed[c], b"before")

        r = httpx.post(f"{control.url}/v1/tokens/{token_id}/revoke", headers=tenant.th, timeout=5)
        assert r.status_code == 200, r.text
        revoked_at = time.monotonic()
        for c in doomed:
            wait_for(lambda c=c: refused_on_refresh(c), 5, "the allocation to be torn down")
        assert time.monotonic() - revoked_at < 5
        for c in doomed:  # the relayed address no longer carries anything
            peer.sock.sendto(b"anyone?", relayed[c])
            with pytest.raises(TimeoutError):
                c.recv_data(timeout=0.3)
        roundtrip(bystander, peer, relayed[bystander], b"still here")
        bystander.refresh(600)
        wait_for(lambda: event(mport, "revoked.allocation") == workers, 5, "the teardown count")

        # the revoked credential cannot allocate again, from any worker
        for n in range(1, workers + 1):
            with pytest.raises(AssertionError, match="kept asking for authentication"):
                client(call, f"127.0.0.{n}").allocate()
        wait_for(lambda: event(mport, "auth.revoked") >= workers, 5, "the refusals")

        if workers == 2:  # a restarted worker gets the revocations still live
            # Kill 127.0.0.1's worker: its replacement gets the same sockets, so the
            # bystander's steering is unchanged (tests/test_node.py checks both slots).
            victim = relay.worker_of(doomed[0])
            assert relay.worker_of(bystander) != victim
            os.kill(relay.worker_pids()[victim], signal.SIGKILL)
            exited = f"worker {victim} exited"
            wait_for(lambda: exited in relay.log_text(), 5, "the supervisor to notice")
            before = relay.log_text().count('msg="worker ')
            wait_for(lambda: relay.log_text().count('msg="worker ') > before, 10, "the restart")
            for n in (1, 2):
                with pytest.raises(AssertionError, match="kept asking for authentication"):
                    client(call, f"127.0.0.{n}").allocate()
            roundtrip(bystander, peer, relayed[bystander], b"after restart")

        # draining is reported: the control plane stops choosing the node while it still runs
        assert relay.proc is not None
        relay.proc.send_signal(signal.SIGTERM)
        wait_for(lambda: click(control, tenant).status_code == 503, 5, "the drain to be seen")
        assert relay.proc.poll() is None
        roundtrip(bystander, peer, relayed[bystander], b"while draining")
        assert WARNING not in relay.log_text()
    finally:
        for c in clients:
            c.close()
        relay.stop()


# --------------------------------------------------------------------------- outage


def test_control_plane_down_then_back(tmp_path: Path, peer: Peer) -> None:
    control = ControlProcess(
        port=free_port(), extra_args=["--heartbeat-timeout", HEARTBEAT_TIMEOUT]
    )
    relay = start_relay(tmp_path, control, node_id="eu-outage", secret_flag=True)
    c = StunClient(relay.address, *relay.credentials("during-outage"))
    try:
        relayed = c.allocate()
        c.create_permission(*peer.address)
        roundtrip(c, peer, relayed, b"no control plane")
        time.sleep(2)  # several failed heartbeats, one warning
        log = relay.log_text()
        assert relay.running() and log.count(WARNING) == 1, log
        assert "level=warning" in log.split(WARNING)[0].rsplit("\n", 1)[-1]
        assert "registered" not in log

        control.start()
        tenant = control.bootstrap()
        wait_for(lambda: click(control, tenant).status_code == 201, 10, "the node to register")
        log = relay.log_text()
        assert 'msg="registered with the control plane"' in log and log.count(WARNING) == 1
        roundtrip(c, peer, relayed, b"still relaying")
    finally:
        c.close()
        relay.stop()
        control.stop()


# --------------------------------------------------------------------------- parts


def test_default_node_id_is_the_host_name(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_config(["--listen", "127.0.0.1:3478", "--auth-secret", "s"], env={})
    monkeypatch.setattr(socket, "gethostname", lambda: "relay 7.eu_west (lab)")
    assert node_name(cfg) == "relay-7.eu_west-lab"
    monkeypatch.setattr(socket, "gethostname", lambda: "***")
    assert node_name(cfg) == "relay"
    cfg.node_id = "given"
    assert node_name(cfg) == "given"


def test_board_load_sums_workers_and_measures_rates(tmp_path: Path) -> None:
    boards = [Board(tmp_path / f"w{i}", create=True) for i in range(2)]
    now = [100.0]
    draining = [False]
    load = BoardLoad(boards, draining=lambda: draining[0], cores=4, clock=lambda: now[0])
    client_packets = _fastpath.COUNTER_NAMES.index("client_packets")
    peer_packets = _fastpath.COUNTER_NAMES.index("peer_packets")
    try:
        for i, board in enumerate(boards):
            board.publish(draining=False, allocations=3 + i, stats={})
        first = load.read()
        assert (first.allocations, first.packet_rate, first.cpu, first.draining) == (7, 0, 0, False)
        for board in boards:
            counters = board.counters_buffer().cast("q")
            counters[client_packets] += 100
            counters[peer_packets] += 50
            counters.release()
        boards[1].publish(draining=True, allocations=1, stats={})
        now[0] += 2.0
        second = load.read()
        assert (second.allocations, second.packet_rate, second.draining) == (4, 150.0, True)
        assert 0.0 <= second.cpu <= 1.0
        boards[1].publish(draining=False, allocations=1, stats={})
        draining[0] = True  # the supervisor was told to stop
        assert load.read().draining
    finally:
        for board in boards:
            board.close()


def test_revocation_log_reaches_late_readers_and_survives_compaction(tmp_path: Path) -> None:
    path = tmp_path / "revocations"
    early = RevocationReader(path)
    assert early.poll(0) == []  # no file yet
    writer = RevocationWriter(path, memory=100)
    assert writer.add(["a", "b", "bad id", ""], now=0) == 2
    assert writer.add(["a"], now=1) == 0  # already live
    assert early.poll(1) == ["a", "b"] and early.poll(1) == []
    with open(path, "ab") as f:  # a line still being written is left for the next poll
        f.write(b"150.000 par")
    assert early.poll(2) == []
    with open(path, "ab") as f:
        f.write(b"tial\n")
    assert early.poll(2) == ["partial"]
    late = RevocationReader(path)  # a worker started later gets everything still live
    assert late.poll(2) == ["a", "b", "partial"]
    assert late.poll(20) == []
    assert writer.add([f"t{i}" for i in range(1100)], now=50) == 1100
    assert len(late.poll(60)) == 1100
    # once most lines are past their memory, the writer rewrites the file with the live ones
    writer.add(["fresh"], now=200)
    assert path.stat().st_size < 100
    assert late.poll(210) == ["fresh"] and early.poll(210) == ["fresh"]
    assert RevocationReader(path).poll(210) == ["fresh"]
    writer.close()
    early.close()
    late.close()


async def test_agent_warns_once_per_problem_and_delivers_each_revocation_once(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.DEBUG, logger="clickacall.relay.agent")
    answers: list[httpx.Response | Exception] = [
        httpx.ConnectError("refused"),
        httpx.ConnectError("refused"),
        httpx.Response(500, json={"error": {"code": "internal", "message": "boom"}}),
        httpx.Response(200, content=b"not json"),
        httpx.Response(200, json={"now": 1000.0, "revoked": ["t1", "t2"]}),
        httpx.Response(200, json={"now": 1001.0, "revoked": ["t2", "t3", 7]}),
    ]
    bodies: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == "Bearer node-secret"
        if request.url.path == "/v1/nodes/enrol":  # a control plane that predates enrolment
            return httpx.Response(404, json={"error": {"code": "not_found", "message": "no"}})
        bodies.append(json.loads(request.content))
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    cfg = load_config(
        [
            "--listen",
            "127.0.0.1:3478",
            "--auth-secret",
            "s",
            "--control",
            "http://c.example/",
            "--node-id",
            "n1",
            "--heartbeat-interval",
            "1",
        ],
        env={ENV_NODE_SECRET: "node-secret"},
    )
    delivered: list[list[str]] = []
    agent = NodeAgent(
        cfg,
        BoardLoad([], pids=list).read,
        delivered.append,
        transport=httpx.MockTransport(handler),
        spool=tmp_path,
    )
    async with agent._client() as client:
        delays = [await agent._attempt(client) for _ in range(6)]
    assert delays[0] < delays[1] <= 1.0 and delays[3:] == [1.0, 1.0, 1.0]
    assert delivered == [["t1", "t2"], ["t3"]]
    assert [b["revocations_since"] for b in bodies] == [0, 0, 0, 0, 0, 998.0]
    assert bodies[0] == {
        "node_id": "n1",
        "region": "eu",
        "urls": ["turn:127.0.0.1:3478?transport=udp", "stun:127.0.0.1:3478"],
        "allocations": 0,
        "packet_rate": 0.0,
        "cpu": 0.0,
        "draining": False,
        "revocations_since": 0,
    }
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 4, warnings  # unreachable, HTTP 500, bad answer, malformed id
    assert "refused" in warnings[0] and "HTTP 500: boom" in warnings[1]
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert infos == [
        "the control plane does not enrol nodes: using the node secret",
        "registered with the control plane",
    ]
    assert all(r.__dict__.get("node") == "n1" for r in caplog.records if r.name.endswith("agent"))


def test_agent_thread_stops_promptly_when_the_control_plane_hangs() -> None:
    """A control plane that accepts connections but never answers must not hold up a stop."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    cfg = load_config(
        [
            "--listen",
            "127.0.0.1:3478",
            "--auth-secret",
            "s",
            "--node-id",
            "n",
            "--control",
            f"http://127.0.0.1:{server.getsockname()[1]}",
            "--heartbeat-interval",
            "5",
        ],
        env={ENV_NODE_SECRET: "x"},
    )
    from relay.agent import AgentThread

    thread = AgentThread(NodeAgent(cfg, BoardLoad([], pids=list).read, lambda ids: None)).start()
    try:
        time.sleep(0.3)
        started = time.monotonic()
        thread.stop()
        assert time.monotonic() - started < 2.5
    finally:
        server.close()


def test_agent_run_returns_when_stopped_even_if_never_registered() -> None:
    cfg = load_config(
        [
            "--listen",
            "127.0.0.1:3478",
            "--auth-secret",
            "s",
            "--node-id",
            "n",
            "--control",
            f"http://127.0.0.1:{free_port()}",
            "--heartbeat-interval",
            "0.2",
        ],
        env={ENV_NODE_SECRET: "x"},
    )
    agent = NodeAgent(cfg, BoardLoad([], pids=list).read, lambda ids: None)

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop))
        deadline = time.monotonic() + 20  # a loaded machine may take its time to fail twice
        while agent.failures < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(task, 2)

    asyncio.run(main())
    assert agent.beats == 0 and agent.failures >= 2
