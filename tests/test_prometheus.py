"""The relay's and the control plane's metrics as a real Prometheus server sees them.

A real control plane and a relay node registered with it (``--metrics``, ``--control``) carry a
short two-party RTP exchange through TURN channels; a real Prometheus (Debian's ``prometheus``,
installed by ``make debs``) scrapes both every second with the shipped alert rules loaded, and the
test reads the figures back through Prometheus's HTTP API. Prometheus runs as our own process on
loopback with its own config and data directory, never the distribution's service.

Also here, without servers: ``promtool check rules`` on the shipped rules, and a check that every
metric the dashboard and the rules name is one the code exposes (so a rename cannot silently
blank a panel or disarm an alert).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from control.metrics import metrics_of
from control.privacy import privacy_metrics
from relay.metrics import Board, RelayCollector
from tests.controlproc import ControlProcess, bearer, free_port
from tests.relayproc import RelayProcess, RelaySpec, StunClient

pytestmark = [pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
OBS = REPO / "relay" / "observability"
RULES = OBS / "alerts.yml"
DASHBOARD = OBS / "grafana-dashboard.json"
RELAY_JOB, CONTROL_JOB = "clickacall-relay", "clickacall-control"
NODE_ID = "prom-1"
CHANNEL = 0x4000
PACKETS = (30, 20)  # RTP packets client A sends to B, and B to A
SKIPPED = (7, 8)  # sequence numbers A never sends: upstream loss the relay should see
NO_CONTROL_METRICS = (
    "the control plane does not serve /metrics yet "
    "(control/app.py does not call control.metrics.install_metrics)"
)
ALERTS = {
    "ClickacallRelayDown",
    "ClickacallRelayCallLossHigh",
    "ClickacallRelayMosLow",
    "ClickacallRelayAllocationRefusals",
    "ClickacallRelayReceiveQueueDrops",
    "ClickacallControlDown",
    "ClickacallControlErrorRate",
}


def _binary(name: str) -> str:
    exe = shutil.which(name)
    if exe is None:
        pytest.skip(f"{name} is not installed (run `make debs`: Debian's prometheus package)")
    return exe


# --- no servers ------------------------------------------------------------------------------


def test_promtool_checks_the_alert_rules() -> None:
    promtool = _binary("promtool")
    r = subprocess.run(
        [promtool, "check", "rules", str(RULES)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in r.stdout, r.stdout


def test_promtool_unit_tests_of_the_alert_rules() -> None:
    """Synthetic series through the rules (tests/prometheus/alerts_test.yml): each alert fires
    when it should, with the labels and text an operator will see, and not before."""
    promtool = _binary("promtool")
    test_file = Path(__file__).resolve().parent / "prometheus" / "alerts_test.yml"
    r = subprocess.run(
        [promtool, "test", "rules", test_file.name],
        cwd=test_file.parent,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout, r.stdout


def _sample_names(families: Any) -> set[str]:
    """The series names Prometheus stores for these metric families, samples or not."""
    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_sum", "_count"),
        "gauge": ("",),
        "unknown": ("",),
    }
    return {fam.name + s for fam in families for s in suffixes[fam.type]}


def _exposed_names(tmp: Path) -> set[str]:
    board = Board(tmp / "board", create=True)
    try:
        names = _sample_names(RelayCollector([board]).collect())
    finally:
        board.close()
    app = FastAPI()
    privacy_metrics(app)  # registers the purge and audit counters in the app's registry
    return names | _sample_names(metrics_of(app).registry.collect())


def _dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    exprs += [
        v["query"]["query"] for v in dash["templating"]["list"] if isinstance(v.get("query"), dict)
    ]
    return exprs


def _rule_exprs() -> list[str]:
    yaml = pytest.importorskip("yaml")  # PyYAML, which uvicorn[standard] brings
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [str(rule["expr"]) for g in groups for rule in g["rules"]]


def test_dashboard_and_rules_name_only_metrics_the_code_exposes(tmp_path: Path) -> None:
    exposed = _exposed_names(tmp_path)
    exprs = _dashboard_exprs() + _rule_exprs()
    assert len(exprs) > 40
    used = {n for e in exprs for n in re.findall(r"\bclickacall_[a-z0-9_]+", e)}
    assert used - exposed == set(), f"unknown metrics in dashboard/rules; exposed: {exposed}"
    relay_used = {n for n in used if n.startswith("clickacall_relay_")}
    control_used = used - relay_used
    assert len(relay_used) >= 15 and len(control_used) >= 10, used


def test_dashboard_is_grafana_json() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] and dash["title"] and dash["schemaVersion"] >= 30
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for p in dash["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
        if p["type"] != "row":
            assert p["targets"] and all(t["expr"] for t in p["targets"]), p["title"]


# --- the live stack --------------------------------------------------------------------------


@dataclass
class Stack:
    control: ControlProcess
    relay: RelayProcess
    metrics_port: int
    prom_url: str
    control_metrics: bool  # does the control plane serve /metrics (control/app.py wires it)?
    sent: dict[str, tuple[int, int]]  # direction -> (packets, payload bytes) relayed
    allocations: int
    credentials_posts: int
    clients: list[StunClient]

    def query(self, expr: str) -> list[dict[str, Any]]:
        r = httpx.get(f"{self.prom_url}/api/v1/query", params={"query": expr}, timeout=5)
        body = r.json()
        assert r.status_code == 200 and body["status"] == "success", (expr, body)
        return list(body["data"]["result"])

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        assert len(result) <= 1, (expr, result)
        return float(result[0]["value"][1]) if result else None

    def wait_value(self, expr: str, ok: Callable[[float], bool], timeout: float = 10.0) -> float:
        """Poll until ``expr`` has one value that satisfies ``ok`` (scrapes are 1 s apart)."""
        deadline = time.monotonic() + timeout
        last: float | None = None
        while time.monotonic() < deadline:
            last = self.value(expr)
            if last is not None and ok(last):
                return last
            time.sleep(0.25)
        pytest.fail(f"{expr} = {last} after {timeout} s")


def _wait_registered(control: ControlProcess, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = httpx.get(f"{control.url}/v1/nodes", headers=control.oh, timeout=5)
        if any(n["id"] == NODE_ID and n["healthy"] for n in r.json()):
            return
        time.sleep(0.1)
    pytest.fail(f"relay node {NODE_ID} did not register in {timeout} s")


def _prometheus_config(stack_dir: Path, relay: str, control: str) -> Path:
    # JSON is YAML: no YAML writer needed
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {"job_name": RELAY_JOB, "static_configs": [{"targets": [relay]}]},
            {
                "job_name": CONTROL_JOB,
                "metrics_path": "/metrics",
                "static_configs": [{"targets": [control]}],
            },
        ],
    }
    path = stack_dir / "prometheus.yml"
    path.write_text(json.dumps(config, indent=2))
    return path


@contextlib.contextmanager
def _prometheus(workdir: Path, config: Path) -> Iterator[str]:
    exe = _binary("prometheus")
    port = free_port()
    log_path = workdir / "prometheus.log"
    cmd = [
        exe,
        f"--config.file={config}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--storage.tsdb.retention.time=1h",
    ]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            cmd,
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-3000:]
                pytest.fail(f"prometheus not ready on {url} (status {proc.poll()}):\n{tail}")
            time.sleep(0.1)
        yield url
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)


def _rtp(seq: int, ts: int, ssrc: int, size: int = 80) -> bytes:
    """An RTP packet (v2, Opus payload type 111) with ``size`` bytes of opaque payload, as
    SRTP leaves the header in the clear."""
    return struct.pack("!BBHII", 0x80, 111, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + bytes(size)


def _channel_data(payload: bytes) -> bytes:
    return struct.pack("!HH", CHANNEL, len(payload)) + payload


def _exchange(a: StunClient, b: StunClient) -> dict[str, tuple[int, int]]:
    """A sends PACKETS[0] RTP packets (minus SKIPPED) to B and B sends PACKETS[1] to A, 20 ms
    apart as a voice call would, over channel CHANNEL both ways; every packet must arrive."""
    sent_pk = sent_by = 0
    for i in range(max(PACKETS)):
        for n, src, dst, ssrc in ((0, a, b, 0x1111), (1, b, a, 0x2222)):
            if i >= PACKETS[n] or (n == 0 and i in SKIPPED):
                continue
            packet = _rtp(1000 + i, 960 * i, ssrc)
            src.sock.send(_channel_data(packet))
            sent_pk, sent_by = sent_pk + 1, sent_by + len(packet)
            dst.sock.settimeout(2.0)
            got = dst.sock.recv(65535)
            assert got[4 : 4 + len(packet)] == packet and got[:2] == struct.pack("!H", CHANNEL)
        time.sleep(0.02)
    # each packet is relayed client -> peer by its sender's allocation, then peer -> client by
    # the receiver's: both directions count every packet once
    return {"client_to_peer": (sent_pk, sent_by), "peer_to_client": (sent_pk, sent_by)}


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    _binary("prometheus")
    with contextlib.ExitStack() as es:
        work = Path(es.enter_context(tempfile.TemporaryDirectory(prefix="clickacall-prom-")))
        control = es.enter_context(ControlProcess(extra_args=["--heartbeat-timeout", "3"]))
        metrics_port = free_port()
        spec = RelaySpec(
            secret=control.relay_secret,
            extra_args=(
                "--metrics",
                f"127.0.0.1:{metrics_port}",
                "--control",
                control.url,
                "--node-id",
                NODE_ID,
                "--region",
                "eu",
                "--heartbeat-interval",
                "0.5",
            ),
        )
        mp = es.enter_context(pytest.MonkeyPatch.context())
        mp.setenv("CLICKACALL_NODE_SECRET", control.node_secret)
        relay = RelayProcess(spec, work / "relay", impl="ours").start()
        es.callback(relay.stop)
        _wait_registered(control)
        r = httpx.get(control.metrics_url, timeout=5)  # its own listener (--metrics)
        control_metrics = r.status_code == 200 and "clickacall_control_" in r.text
        assert httpx.get(f"{control.url}/metrics", timeout=5).status_code == 404  # not the API's

        prom_url = es.enter_context(
            _prometheus(
                work,
                _prometheus_config(
                    work, f"127.0.0.1:{metrics_port}", f"127.0.0.1:{control.metrics_port}"
                ),
            )
        )

        # two parties, each with its own raw ICE credentials from the control plane
        tenant = control.bootstrap()
        clients = []
        for _ in range(2):
            r = httpx.post(f"{control.url}/v1/credentials", headers=bearer(tenant.key), timeout=10)
            assert r.status_code == 201, r.text
            server = r.json()["iceServers"][0]
            assert f"turn:127.0.0.1:{relay.port}?transport=udp" in server["urls"], server
            c = es.enter_context(
                StunClient(relay.address, server["username"], server["credential"])
            )
            clients.append(c)
        a, b = clients
        relayed = [c.allocate() for c in clients]
        a.channel_bind(CHANNEL, *relayed[1])
        b.channel_bind(CHANNEL, *relayed[0])
        sent = _exchange(a, b)
        yield Stack(control, relay, metrics_port, prom_url, control_metrics, sent, 2, 2, clients)


def test_prometheus_scrapes_both_jobs(stack: Stack) -> None:
    up = stack.wait_value(f'up{{job="{RELAY_JOB}"}}', lambda v: v == 1)
    assert up == 1
    assert stack.control_metrics, NO_CONTROL_METRICS
    assert stack.wait_value(f'up{{job="{CONTROL_JOB}"}}', lambda v: v == 1) == 1


def test_relay_figures_match_the_traffic(stack: Stack) -> None:
    sel = f'job="{RELAY_JOB}"'
    for direction, (packets, payload) in stack.sent.items():
        got = stack.wait_value(
            f'clickacall_relay_packets_total{{{sel},direction="{direction}",transport="udp"}}',
            lambda v, n=packets: v >= n,  # type: ignore[misc]
        )
        assert got == packets, direction
        nbytes = stack.value(
            f'clickacall_relay_bytes_total{{{sel},direction="{direction}",transport="udp"}}'
        )
        assert nbytes == payload, direction
        others = f'clickacall_relay_packets_total{{{sel},direction="{direction}",transport!="udp"}}'
        assert stack.value(f"sum({others})") == 0, direction
    allocations = stack.wait_value(
        f'clickacall_relay_allocations{{{sel},transport="udp"}}', lambda v: v == stack.allocations
    )
    assert allocations == stack.allocations
    assert stack.value(f"sum(clickacall_relay_allocations{{{sel}}})") == stack.allocations
    ok = stack.value(f'clickacall_relay_requests_total{{{sel},method="allocate",result="ok"}}')
    assert ok == stack.allocations
    assert (
        stack.value(f'clickacall_relay_requests_total{{{sel},method="channel_bind",result="ok"}}')
        == 2
    )
    assert stack.value(f"clickacall_relay_workers{{{sel}}}") == 1
    assert stack.value(f"clickacall_relay_draining{{{sel}}}") == 0
    assert stack.value(f"sum(clickacall_relay_dropped_packets_total{{{sel}}})") == 0
    assert stack.value(f"clickacall_relay_receive_queue_drops_total{{{sel}}}") == 0
    # the relay-added latency histogram saw every relayed packet
    relayed = sum(p for p, _ in stack.sent.values())
    count = stack.value(f"clickacall_relay_added_latency_seconds_count{{{sel}}}")
    assert count is not None and 0 < count <= relayed


def test_control_plane_figures_match_the_requests(stack: Stack) -> None:
    assert stack.control_metrics, NO_CONTROL_METRICS
    sel = f'job="{CONTROL_JOB}"'
    posts = stack.wait_value(
        f'sum(clickacall_control_http_requests_total{{{sel},route="/v1/credentials",'
        f'method="POST",status="2xx"}})',
        lambda v: v >= stack.credentials_posts,
    )
    assert posts == stack.credentials_posts
    tenants = stack.value(
        f'sum(clickacall_control_http_requests_total{{{sel},route="/v1/tenants",method="POST"}})'
    )
    assert tenants == 1
    # the relay's node agent heartbeats every 0.5 s
    beats = stack.value(
        f'sum(clickacall_control_http_requests_total{{{sel},route="/v1/nodes/heartbeat"}})'
    )
    assert beats is not None and beats >= 2
    latency = stack.value(
        f"sum(clickacall_control_http_request_duration_seconds_count{{{sel},"
        f'route="/v1/credentials"}})'
    )
    assert latency == stack.credentials_posts
    assert (
        stack.wait_value(
            f'clickacall_control_relay_nodes_healthy{{{sel},region="eu"}}', lambda v: v == 1
        )
        == 1
    )


def test_alert_rules_load_and_dashboard_queries_run(stack: Stack) -> None:
    deadline = time.monotonic() + 10
    while True:
        r = httpx.get(f"{stack.prom_url}/api/v1/rules", timeout=5)
        rules = [rule for g in r.json()["data"]["groups"] for rule in g["rules"]]
        if rules and all(rule["health"] == "ok" for rule in rules):
            break
        assert time.monotonic() < deadline, rules
        time.sleep(0.25)
    assert {rule["name"] for rule in rules} == ALERTS
    assert all(rule["type"] == "alerting" for rule in rules)
    firing = {rule["name"] for rule in rules if rule["state"] != "inactive"}
    assert not firing & {"ClickacallRelayDown", "ClickacallRelayReceiveQueueDrops"}, firing
    # every dashboard query parses and evaluates, the way Grafana would send it
    for expr in _dashboard_exprs():
        if expr.startswith("label_values("):
            continue
        q = expr.replace("$relay", ".*").replace("$control", ".*")
        stack.query(q.replace("$__rate_interval", "1m"))


def test_a_finished_allocation_lands_in_the_quality_histograms(stack: Stack) -> None:
    """A hangs up (Refresh with lifetime 0): its allocation's final summary goes into the
    per-call histograms: A's stream lost len(SKIPPED) of PACKETS[0] on the way in (to_peer),
    B's stream arrived whole (to_client). Last in the module: it ends one allocation."""
    stack.clients[0].refresh(0)
    sel = f'job="{RELAY_JOB}"'
    for name in ("loss_ratio", "jitter_seconds", "mos"):
        for direction in ("to_peer", "to_client"):
            n = stack.wait_value(
                f'clickacall_relay_call_{name}_count{{{sel},direction="{direction}"}}',
                lambda v: v >= 1,
            )
            assert n == 1, (name, direction)

    def figure(name: str, direction: str, part: str = "sum", extra: str = "") -> float:
        v = stack.value(
            f'clickacall_relay_call_{name}_{part}{{{sel},direction="{direction}"{extra}}}'
        )
        assert v is not None, (name, direction, part, extra)
        return v

    assert figure("loss_ratio", "to_peer") == pytest.approx(len(SKIPPED) / PACKETS[0], abs=1e-3)
    assert figure("loss_ratio", "to_client") == 0
    # 2/30 = 6.7 % loss: above the 0.05 bucket, inside the 0.1 one
    assert figure("loss_ratio", "to_peer", "bucket", ',le="0.05"') == 0
    assert figure("loss_ratio", "to_peer", "bucket", ',le="0.1"') == 1
    mos_lossy, mos_clean = figure("mos", "to_peer"), figure("mos", "to_client")
    assert 1 <= mos_lossy < mos_clean <= 4.5
    assert 0 <= figure("jitter_seconds", "to_peer") < 0.05
    # one allocation left (B's)
    assert stack.wait_value(f"sum(clickacall_relay_allocations{{{sel}}})", lambda v: v == 1) == 1
