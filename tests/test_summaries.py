"""Per-allocation quality summaries from the relay's node agent to the control plane, and the
disk spool that carries them across outages (relay/spool.py, relay/summaries.py,
docs/relay-summaries.md).

The integration tests run a real control plane (tests/controlproc.py) and our relay
(tests/relayproc.py) with 0.5 s summaries, carry RTP through a TURN allocation on loopback
and read what arrived through the tenant's call log and the control plane's database. The
spool, the workers' hand-over files and the wire format are tested directly at the end.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import sqlite3
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from control.schemas import SummariesIn
from relay.agent import NodeAgent
from relay.config import ENV_NODE_SECRET, load_config
from relay.spool import LOG_NAME, STATE_NAME, Spool, SpoolError, default_dir
from relay.summaries import HandoffReader, HandoffWriter, wire
from tests.controlproc import ControlProcess, Tenant, free_port
from tests.relayproc import RelayProcess, RelaySpec, StunClient
from tests.test_agent import click_when_registered, turn_credentials, wait_for

pytestmark = pytest.mark.timeout(90)

INTERVAL = "0.5"


# --------------------------------------------------------------------------- helpers


def rtp(seq: int, ts: int, ssrc: int, payload: bytes = b"\x00" * 80) -> bytes:
    return struct.pack("!BBHII", 0x80, 111, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + payload


class Media:
    """20 ms Opus-like RTP from a TURN client to a loopback peer, which answers each packet
    with one of its own stream: ``sent`` went to_peer, ``echoed`` to_client."""

    def __init__(self, client: StunClient) -> None:
        self.client = client
        self.peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.peer.bind(("127.0.0.1", 0))
        self.peer.settimeout(0.2)
        self.sent = self.echoed = 0
        self._running = threading.Event()
        self._threads: list[threading.Thread] = []
        self._done = threading.Event()

    @property
    def address(self) -> tuple[str, int]:
        return self.peer.getsockname()  # type: ignore[no-any-return]

    def start(self) -> Media:
        self._running.set()
        self._threads = [
            threading.Thread(target=self._send, daemon=True),
            threading.Thread(target=self._echo, daemon=True),
        ]
        for t in self._threads:
            t.start()
        return self

    def _send(self) -> None:
        host, port = self.address
        while self._running.is_set():
            self.client.send_indication(host, port, rtp(self.sent, self.sent * 960, 0x1111))
            self.sent += 1
            time.sleep(0.02)

    def _echo(self) -> None:
        while not self._done.is_set():
            try:
                _, src = self.peer.recvfrom(2048)
            except TimeoutError:
                continue
            self.peer.sendto(rtp(self.echoed, self.echoed * 960, 0x2222), src)
            self.echoed += 1

    def pause(self) -> None:
        """Stop sending, and let the last packets' echoes through."""
        self._running.clear()
        self._threads[0].join(5)
        time.sleep(0.3)

    def close(self) -> None:
        self._running.clear()
        self._done.set()
        for t in self._threads:
            t.join(5)
        self.peer.close()


def start_relay(
    tmp_path: Path, control: ControlProcess, spool: Path, *, node_id: str, workers: int = 1
) -> RelayProcess:
    args = [
        "--control",
        control.url,
        "--node-id",
        node_id,
        "--region",
        "eu",
        "--node-secret",
        control.node_secret,
        "--heartbeat-interval",
        INTERVAL,
        "--summary-interval",
        INTERVAL,
        "--spool",
        str(spool),
    ]
    spec = RelaySpec(secret=control.relay_secret, workers=workers, extra_args=args)
    return RelayProcess(spec, tmp_path / node_id, impl="ours").start()


def call_log(control: ControlProcess, tenant: Tenant, call_id: str) -> dict[str, Any]:
    r = httpx.get(f"{control.url}/v1/calllogs/{call_id}", headers=tenant.th, timeout=5)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def allocation(control: ControlProcess, tenant: Tenant, call_id: str) -> dict[str, Any] | None:
    allocations = call_log(control, tenant, call_id)["allocations"]
    assert len(allocations) <= 1, allocations
    return allocations[0] if allocations else None


def start_call(
    control: ControlProcess, tenant: Tenant, relay: RelayProcess
) -> tuple[str, StunClient, Media, str]:
    """A visitor's click, an allocation with its credentials and RTP flowing to an echo
    peer: (call id, client, media, token id)."""
    answer = click_when_registered(control, tenant)
    username, password, token_id = turn_credentials(answer)
    client = StunClient(relay.address, username, password)
    client.allocate()
    media = Media(client)
    try:
        client.create_permission(*media.address)
        media.start()
    except BaseException:
        media.close()
        raise
    return answer["call_id"], client, media, token_id


def final_allocation(
    control: ControlProcess, tenant: Tenant, call_id: str
) -> dict[str, Any] | None:
    a = allocation(control, tenant, call_id)
    return a if a is not None and a["final"] else None


def node_summaries(control: ControlProcess, node_id: str) -> dict[str, int]:
    assert control.db_path is not None
    with sqlite3.connect(control.db_path) as db:
        row = db.execute(
            "SELECT last_seq, stored, dropped FROM node_summaries WHERE node_id = ?", (node_id,)
        ).fetchone()
    return dict(zip(("last_seq", "stored", "dropped"), row or (0, 0, 0), strict=True))


@pytest.fixture
def control() -> Iterator[ControlProcess]:
    proc = ControlProcess(port=free_port(), extra_args=["--heartbeat-timeout", "3"]).start()
    try:
        yield proc
    finally:
        proc.stop()


# --------------------------------------------------------------------------- delivery


@pytest.mark.parametrize("workers", [1, 2])
def test_summaries_arrive_during_the_call_and_a_final_one_after(
    tmp_path: Path, control: ControlProcess, workers: int
) -> None:
    tenant = control.bootstrap()
    node_id = f"sum-w{workers}"
    relay = start_relay(tmp_path, control, tmp_path / "spool", node_id=node_id, workers=workers)
    media = None
    try:
        call_id, client, media, token_id = start_call(control, tenant, relay)

        # during the call: rows keep arriving, growing, not final
        def live(least: int) -> dict[str, Any] | None:
            a = allocation(control, tenant, call_id)
            ok = (
                a is not None and not a["final"] and (a["to_peer"] or {}).get("packets", 0) >= least
            )
            return a if ok else None

        first = wait_for(lambda: live(10), 10, "a summary during the call")
        assert first["node_id"] == node_id and first["role"] == "visitor"
        later = wait_for(lambda: live(first["to_peer"]["packets"] + 25), 10, "a newer summary")
        assert later["at"] > first["at"] and later["to_client"]["packets"] > 0
        [stream] = [s for s in later["streams"] if s["direction"] == "to_peer"]
        assert stream["ssrc"] == 0x1111 and stream["kind"] == "audio" and stream["lost"] == 0

        # the allocation ends: a final summary with every packet
        media.pause()
        client.refresh(0)
        client.close()

        done = wait_for(lambda: final_allocation(control, tenant, call_id), 10, "the final summary")
        assert done["to_peer"]["packets"] == media.sent
        assert done["to_client"]["packets"] == media.echoed
        entry = call_log(control, tenant, call_id)
        assert entry["quality_final"] and entry["media"] == ["audio"]
        assert entry["bytes"] == done["to_peer"]["bytes"] + done["to_client"]["bytes"]

        # the control plane stored every summary once, seqs 1..n without a gap
        counts = node_summaries(control, node_id)
        assert counts["last_seq"] == counts["stored"] + counts["dropped"] >= 3, counts
        assert token_id not in relay.log_text()  # token ids travel, they are not logged
    finally:
        if media is not None:
            media.close()
        relay.stop()
    log = relay.log_text()
    assert "quality summaries not delivered" not in log, log
    assert "0 left in the spool" in log


def test_spooled_summaries_survive_a_control_plane_outage(
    tmp_path: Path, control: ControlProcess
) -> None:
    tenant = control.bootstrap()
    node_id = "sum-outage"
    spool = tmp_path / "spool"
    relay = start_relay(tmp_path, control, spool, node_id=node_id)
    media = None
    try:
        call_id, client, media, _ = start_call(control, tenant, relay)
        wait_for(lambda: allocation(control, tenant, call_id), 10, "a first summary")
        before = node_summaries(control, node_id)

        # the control plane goes away mid-call; the relay keeps relaying and spooling
        control.stop(keep=True)
        time.sleep(2.5)  # about five summary rounds
        warning = "quality summaries not delivered"
        wait_for(lambda: warning in relay.log_text(), 5, "the relay to notice")
        assert (spool / LOG_NAME).stat().st_size > 0
        during = media.sent

        control.start()  # the same database, the same port
        wait_for(
            lambda: node_summaries(control, node_id)["last_seq"] > before["last_seq"] + 4,
            10,
            "the spooled summaries",
        )
        a = allocation(control, tenant, call_id)
        assert a is not None and a["to_peer"]["packets"] >= during * 0.9

        media.pause()
        client.refresh(0)
        client.close()

        done = wait_for(lambda: final_allocation(control, tenant, call_id), 10, "the final summary")
        assert done["to_peer"]["packets"] == media.sent  # nothing lost
        assert done["to_client"]["packets"] == media.echoed
        counts = node_summaries(control, node_id)
        # every seq stored exactly once: none lost in the outage, none counted twice
        assert counts["last_seq"] == counts["stored"] + counts["dropped"], counts
        assert counts["dropped"] == 0, counts
        log = relay.log_text()
        assert log.count(warning) == 1 and "summaries delivered again" in log
    finally:
        if media is not None:
            media.close()
        relay.stop()
    log = relay.log_text()
    assert f"summaries: {counts['last_seq']} delivered, 0 left in the spool" in log, log


def test_summaries_spooled_by_a_stopped_relay_are_sent_by_the_next(
    tmp_path: Path, control: ControlProcess
) -> None:
    """The control plane is down when the relay stops: the final summary waits on disk,
    and the next relay started on the same spool delivers it, with seqs that go on."""
    tenant = control.bootstrap()
    node_id = "sum-restart"
    spool = tmp_path / "spool"
    relay = start_relay(tmp_path, control, spool, node_id=node_id)
    media = None
    try:
        call_id, client, media, _ = start_call(control, tenant, relay)
        wait_for(lambda: allocation(control, tenant, call_id), 10, "a first summary")
        control.stop(keep=True)
        time.sleep(1.5)
        media.pause()
        assert relay.proc is not None
        relay.proc.send_signal(signal.SIGINT)  # ends the allocation: its final summary
        assert relay.proc.wait(10) == 0
        client.close()
    finally:
        if media is not None:
            media.close()
        relay.stop()
    state = json.loads((spool / STATE_NAME).read_text())
    pending = Spool(spool)
    assert len(pending) >= 3 and pending.next_seq == state["next_seq"]
    pending.close()

    control.start()
    relay = start_relay(tmp_path, control, spool, node_id=node_id)
    try:
        done = wait_for(
            lambda: final_allocation(control, tenant, call_id), 10, "the spooled final summary"
        )
        assert done["to_peer"]["packets"] == media.sent
        counts = node_summaries(control, node_id)
        assert counts["last_seq"] == state["next_seq"] - 1 == counts["stored"], counts
    finally:
        relay.stop()


# --------------------------------------------------------------------------- the spool


def summary(alloc: str, n: int, *, final: bool = False, token: str = "tok") -> dict[str, Any]:
    return {
        "token_id": token,
        "allocation": alloc,
        "final": final,
        "started_at": 1000.0,
        "at": 1000.0 + n,
        "streams": [],
        "directions": {},
        "relay": {"dropped": n},
    }


def bodies(spool: Spool, limit: int = 1000) -> list[dict[str, Any]]:
    return [json.loads(b) for _, b in spool.pending(limit)]


def test_spool_numbers_in_order_and_forgets_only_what_was_acknowledged(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    assert [spool.append(summary("a", i)) for i in range(5)] == [1, 2, 3, 4, 5]
    assert spool.pending(10) == []  # nothing is sent before it is on disk
    spool.flush()
    got = bodies(spool)
    assert [b["seq"] for b in got] == [1, 2, 3, 4, 5]
    assert list(got[0]) == ["seq", *summary("a", 0)]  # seq first, the summary unchanged
    assert [b["seq"] for b in bodies(spool, 2)] == [1, 2]
    assert spool.ack(3) == 3
    assert [b["seq"] for b in bodies(spool)] == [4, 5]
    spool.close()

    again = Spool(tmp_path)  # a restart: the same pending records, the seq goes on
    assert [b["seq"] for b in bodies(again)] == [4, 5] and again.next_seq == 6
    assert again.ack(5) == 2 and len(again) == 0
    assert (tmp_path / LOG_NAME).stat().st_size == 0  # emptied once all is acknowledged
    again.close()
    third = Spool(tmp_path)
    assert third.append(summary("a", 9)) == 6  # the seq never goes back
    third.close()


def test_spool_seq_is_durable_before_anything_is_sent(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    for i in range(3):
        spool.append(summary("a", i))
    spool.flush()
    assert json.loads((tmp_path / STATE_NAME).read_text())["next_seq"] == 4
    spool.close()
    # a lost state file: the log still knows the highest seq
    (tmp_path / STATE_NAME).unlink()
    again = Spool(tmp_path)
    assert again.next_seq == 4 and len(again) == 3
    again.close()


def test_spool_one_agent_at_a_time(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    with pytest.raises(SpoolError, match="in use by another relay node"):
        Spool(tmp_path)
    spool.close()
    Spool(tmp_path).close()
    (tmp_path / "file").write_text("")
    with pytest.raises(SpoolError, match="cannot use spool directory"):
        Spool(tmp_path / "file" / "spool")


def test_spool_tolerates_a_torn_tail_and_damaged_lines(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    for i in range(4):
        spool.append(summary("a", i))
    spool.flush()
    spool.close()
    log = tmp_path / LOG_NAME
    lines = log.read_bytes().splitlines(keepends=True)
    damaged = lines[1].replace(b'"allocation":"a"', b'"allocation":"b"')  # CRC no longer matches
    log.write_bytes(lines[0] + damaged + lines[2] + lines[3] + lines[3][:17])  # + a torn write

    again = Spool(tmp_path)
    assert again.corrupt == 2
    assert [b["seq"] for b in bodies(again)] == [1, 3, 4]
    assert again.append(summary("a", 5)) == 5
    again.flush()
    again.close()
    third = Spool(tmp_path)  # the torn tail was cut: the new record is whole
    assert third.corrupt == 0 and [b["seq"] for b in bodies(third)] == [1, 3, 4, 5]
    third.close()

    (tmp_path / STATE_NAME).write_text("{not json")
    fourth = Spool(tmp_path)
    assert fourth.corrupt == 1 and fourth.next_seq == 6
    fourth.close()


def test_spool_a_disk_filling_mid_write_cuts_back_and_keeps_the_records(tmp_path: Path) -> None:
    room = [1 << 30]  # bytes the fake disk still takes

    def disk(fd: int, data: memoryview) -> int:
        if room[0] <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        n = min(len(data), room[0])
        room[0] -= n
        return os.write(fd, data[:n])

    log = tmp_path / LOG_NAME
    spool = Spool(tmp_path, write=disk)
    for i in range(3):
        spool.append(summary("a", i))
    spool.flush()
    whole = log.stat().st_size
    room[0] = 25  # the disk fills 25 bytes into the next flush: half a record went in
    for i in range(3, 6):
        spool.append(summary("a", i))
    with pytest.raises(OSError):
        spool.flush()
    assert log.stat().st_size == whole  # cut back to the last whole record
    assert spool.write_failures == 1 and spool.stats()["write_failures"] == 1
    assert len(spool) == 6  # the three are still queued in memory
    assert [b["seq"] for b in bodies(spool)] == [1, 2, 3]
    with pytest.raises(OSError):  # still full
        spool.flush()
    assert log.stat().st_size == whole and spool.write_failures == 2
    room[0] = 1 << 30  # space again: the queued records and a new one go in whole
    spool.append(summary("a", 6))
    spool.flush()
    assert [b["seq"] for b in bodies(spool)] == [1, 2, 3, 4, 5, 6, 7]
    assert spool.corrupt == 0
    spool.close()
    again = Spool(tmp_path)
    assert again.corrupt == 0 and [b["seq"] for b in bodies(again)] == [1, 2, 3, 4, 5, 6, 7]
    again.close()


def test_spool_bound_drops_superseded_summaries_first_and_keeps_finals(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_records=10)
    for i in range(6):
        spool.append(summary("a", i))  # seqs 1-6: a's 1-5 are superseded by 6
    spool.append(summary("b", 0, final=True))  # 7
    spool.append(summary("c", 0))  # 8
    spool.flush()
    for i in range(3):
        spool.append(summary("d", i))  # 9-11: 11 records, over the bound
    spool.flush()
    kept = [(b["seq"], b["allocation"]) for b in bodies(spool)]
    assert spool.dropped == {"superseded": 2, "intermediate": 0, "final": 0}  # down to 9
    assert kept == [
        (3, "a"),
        (4, "a"),
        (5, "a"),
        (6, "a"),
        (7, "b"),
        (8, "c"),
        (9, "d"),
        (10, "d"),
        (11, "d"),
    ]

    # nothing superseded left to drop: the oldest intermediate ones go, finals stay
    full = Spool(tmp_path / "f", max_records=4)
    for i, final in enumerate((True, False, True, False, True)):
        full.append(summary(f"x{i}", 0, final=final))
    full.flush()
    assert [b["allocation"] for b in bodies(full)] == ["x0", "x2", "x4"]
    assert full.dropped == {"superseded": 0, "intermediate": 2, "final": 0}
    full.close()

    # bytes bound: the log is rewritten, so the disk use really shrinks
    size = len(json.dumps(summary("a", 0), separators=(",", ":"))) + 16
    small = Spool(tmp_path / "s", max_bytes=size * 20)
    for i in range(40):
        small.append(summary("a", i))
        small.flush()
    assert (tmp_path / "s" / LOG_NAME).stat().st_size <= size * 20
    assert bodies(small)[-1]["at"] == 1039.0 and small.dropped["superseded"] > 0
    small.close()
    spool.close()


def test_spool_renumbers_when_the_control_plane_is_ahead(tmp_path: Path) -> None:
    """A lost spool starts again at seq 1: the control plane, already past that, would
    ignore everything as replays; told its highest seq, the spool jumps past it."""
    spool = Spool(tmp_path)
    for i in range(3):
        spool.append(summary("a", i))
    spool.flush()
    assert spool.ack(0) == 0 and spool.next_seq == 4  # the control plane has none yet
    assert spool.ack(41) == 0 and spool.renumbered == 1
    assert [b["seq"] for b in bodies(spool)] == [42, 43, 44] and spool.next_seq == 45
    assert [b["at"] for b in bodies(spool)] == [1000.0, 1001.0, 1002.0]
    spool.close()
    again = Spool(tmp_path)
    assert [b["seq"] for b in bodies(again)] == [42, 43, 44] and again.next_seq == 45
    assert again.ack(43) == 2 and [b["seq"] for b in bodies(again)] == [44]
    again.close()


# --------------------------------------------------------------------------- wire format


def worker_summary(**over: Any) -> dict[str, Any]:
    """What relay/server.py's FastPathBackend.summary gives (relay/quality.py's shape)."""
    stream = {
        "direction": "to_peer",
        "ssrc": 0x1111,
        "kind": "audio",
        "clock_rate": 48000,
        "packets": 250,
        "bytes": 40000,
        "lost": 2,
        "reordered": 0,
        "duplicates": 0,
        "jitter_ms": 3.2,
        "max_gap_ms": 60.0,
    }
    out = {
        "token_id": "tok-1",
        "allocation": "a1b2c3-0-1f",
        "final": False,
        "started_at": 1764070000.0,
        "at": 1764070005.0,
        "streams": [stream] * 20,
        "directions": {
            "to_peer": {
                "packets": 250,
                "bytes": 40000,
                "lost": 2,
                "jitter_ms": 3.2,
                "loss": 0.008,
                "mos": 4.3,
            },
            "to_client": {
                "packets": 0,
                "bytes": 0,
                "lost": 0,
                "jitter_ms": 0.0,
                "loss": 0.0,
                "mos": None,
            },
        },
        "relay": {
            "dropped": 0,
            "rxq_overflow": 1,
            "delay_us_p99": 128.0,
            "non_rtp_packets": 3,
            "ssrc_overflow": 0,
        },
    }
    out.update(over)
    return out


def test_wire_is_exactly_what_the_control_plane_accepts() -> None:
    w = wire(worker_summary())
    assert w is not None
    body = SummariesIn.model_validate({"node_id": "n1", "summaries": [{"seq": 1, **w}]})
    s = body.summaries[0]
    assert len(s.streams) == 16 and s.relay.delay_us_p99 == 128 and s.relay.rxq_overflow == 1
    assert "loss" not in w["directions"]["to_peer"] and "non_rtp_packets" not in w["relay"]
    assert s.directions.to_client is not None and s.directions.to_client.mos is None
    # out-of-schema values are clamped, not sent to be refused
    odd = wire(worker_summary(at=1.0, relay={"delay_us_p99": 1e12, "dropped": -1}))
    assert odd is not None and odd["at"] == odd["started_at"]
    SummariesIn.model_validate({"node_id": "n1", "summaries": [{"seq": 2, **odd}]})
    # no token id (a static --user credential), or one the control plane cannot take
    assert wire(worker_summary(token_id=None)) is None
    assert wire(worker_summary(token_id="a b")) is None
    assert wire(worker_summary(allocation=None)) is None


async def test_agent_drops_only_the_summary_the_control_plane_refuses(tmp_path: Path) -> None:
    seen: list[list[int]] = []
    highest = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal highest
        assert request.url.path == "/v1/nodes/summaries"
        seqs = [s["seq"] for s in json.loads(request.content)["summaries"]]
        seen.append(seqs)
        if 3 in seqs:  # one poisoned record
            return httpx.Response(422, json={"error": {"code": "invalid", "message": "bad"}})
        highest = max([highest, *seqs])
        return httpx.Response(
            200, json={"accepted": highest, "stored": len(seqs), "replayed": 0, "dropped": 0}
        )

    cfg = load_config(
        [
            "--listen",
            "127.0.0.1:3478",
            "--auth-secret",
            "s",
            "--control",
            "http://c.example",
            "--node-id",
            "n1",
            "--spool",
            str(tmp_path),
        ],
        env={ENV_NODE_SECRET: "x"},
    )
    batch = [worker_summary(allocation=f"a{i}") for i in range(6)]
    agent = NodeAgent(
        cfg,
        lambda: None,
        lambda ids: None,  # type: ignore[arg-type,return-value]
        transport=httpx.MockTransport(handler),
        collect=lambda: batch,
    )
    assert await agent._open_spool()
    async with agent._client() as client:
        assert await agent._collect() == 6
        assert await agent._deliver(client) == 5
    assert agent.rejected == 1 and agent.spool is not None and len(agent.spool) == 0
    assert seen[0] == [] and seen[1] == [1, 2, 3, 4, 5, 6]  # first, learn the highest seq
    # halves until the poisoned one stands alone: [1,2,3] -> [1], [2,3] -> [2], [3]
    assert [3] in seen and [4, 5, 6] in seen and [1, 2, 3, 4, 5, 6] in seen
    agent.spool.close()


async def test_agent_counts_a_spool_the_disk_refuses_in_the_metrics(tmp_path: Path) -> None:
    from relay.metrics import NODE_EVENTS, RelayCollector

    cfg = load_config(
        ["--listen", "127.0.0.1:3478", "--auth-secret", "s", "--control", "http://c.example"]
        + ["--node-id", "n1", "--spool", str(tmp_path)],
        env={ENV_NODE_SECRET: "x"},
    )
    batch = [worker_summary(allocation="a1")]
    agent = NodeAgent(cfg, lambda: None, lambda ids: None, collect=lambda: batch)  # type: ignore[arg-type,return-value]

    def full(fd: int, data: memoryview) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    agent.spool = Spool(tmp_path, write=full)
    before = NODE_EVENTS["spool.write_failed"]
    assert await agent._collect() == 1
    assert NODE_EVENTS["spool.write_failed"] == before + 1
    assert len(agent.spool) == 1 and agent.summary_problem == "spool"  # kept for a retry
    events = next(m for m in RelayCollector([]).collect() if m.name == "clickacall_relay_events")
    values = {s.labels["event"]: s.value for s in events.samples}
    assert values["spool.write_failed"] == before + 1
    agent.spool.close()


# --------------------------------------------------------------------------- hand-over


def test_handoff_reaches_the_agent_across_segments_and_worker_restarts(tmp_path: Path) -> None:
    reader = HandoffReader(tmp_path, 0)
    other = HandoffReader(tmp_path, 1)
    assert reader.poll() == []  # no worker yet
    writer = HandoffWriter(tmp_path, 0, segment_bytes=200)
    writer.write([{"n": i} for i in range(3)])  # segment 1, past 200 bytes with the next
    assert reader.poll() == [{"n": 0}, {"n": 1}, {"n": 2}]
    writer.write([{"n": 3, "pad": "x" * 200}])
    writer.write([{"n": 4}])  # segment 2
    assert [d["n"] for d in reader.poll()] == [3, 4]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summaries-0.2"]  # 1 was read: gone

    # a worker killed mid-write, and its replacement
    os.write(writer._fd, b'{"n": 5}\n{"n": 6, "tor')
    assert [d["n"] for d in reader.poll()] == [5]
    replacement = HandoffWriter(tmp_path, 0)
    replacement.write([{"n": 7}])
    assert [d["n"] for d in reader.poll()] == [7] and reader.malformed == 1
    assert other.poll() == []  # another worker's files are not this reader's
    writer.close()
    replacement.close()


def test_default_spool_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_dir("n1", {"STATE_DIRECTORY": "/var/lib/clickacall"}) == Path(
        "/var/lib/clickacall/spool/n1"
    )
    assert default_dir("n1", {"XDG_STATE_HOME": "/s"}) == Path("/s/clickacall/spool/n1")
    monkeypatch.setenv("HOME", "/home/relay")
    assert default_dir("n1", {}) == Path("/home/relay/.local/state/clickacall/spool/n1")
