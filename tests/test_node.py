"""The relay node as operators run it: several workers, metrics, drain and stop signals.

These run our relay only (they test our process model, not TURN behaviour shared with
coturn) with the blocking STUN client of ``tests/relayproc.py``.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from relay.listeners import listening_socket, steer_by_client_ip
from tests.relayproc import (
    REPO,
    RelayProcess,
    RelaySpec,
    StreamStunClient,
    StunClient,
    TurnError,
    free_tcp_port,
    scrape,
)

pytestmark = pytest.mark.timeout(90)


class Peer:
    """A UDP peer on loopback that echoes what it gets."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(3)
        self.address = self.sock.getsockname()

    def echo_one(self) -> tuple[bytes, tuple[str, int]]:
        data, src = self.sock.recvfrom(2048)
        self.sock.sendto(b"echo:" + data, src)
        return data, src


def start(tmp_path: Path, workers: int = 1, **kw: object) -> RelayProcess:
    """Start our relay; it is ready once every worker serves (tests/relayproc.py)."""
    spec = RelaySpec(workers=workers, **kw)  # type: ignore[arg-type]
    return RelayProcess(spec, tmp_path, impl="ours").start()


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


def test_two_workers_share_the_port_and_metrics_add_up(tmp_path: Path, peer: Peer) -> None:
    mport = free_tcp_port()
    relay = start(tmp_path, workers=2, extra_args=["--metrics", f"127.0.0.1:{mport}"])
    clients: list[StunClient] = []
    try:
        # four "hosts" on loopback: the node steers by client IP, so both workers get some
        for n in range(1, 5):
            user, password = relay.credentials(f"tok{n}")
            c = StunClient(relay.address, user, password, local=f"127.0.0.{n}")
            clients.append(c)
            relayed = c.allocate()
            assert relayed[1] in relay.relay_ports
            c.create_permission(*peer.address)
            roundtrip(c, peer, relayed, b"hello from %d" % n)
        log = relay.log_text()
        workers = set(re.findall(r"worker=(\d) pid=\d+ msg=\"allocation created", log))
        assert workers == {"0", "1"}, log
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # workers publish once a second
            m = scrape(mport)
            if m.get('clickacall_relay_allocations{transport="udp"}') == 4:
                break
            time.sleep(0.2)
        assert m["clickacall_relay_workers"] == 2
        assert m['clickacall_relay_allocations{transport="udp"}'] == 4
        assert m['clickacall_relay_allocations{transport="tcp"}'] == 0
        assert m['clickacall_relay_packets_total{direction="peer_to_client",transport="udp"}'] == 4
        assert m['clickacall_relay_packets_total{direction="client_to_peer",transport="udp"}'] == 4
        assert m['clickacall_relay_requests_total{method="allocate",result="ok"}'] == 4
        assert m['clickacall_relay_requests_total{method="allocate",result="401"}'] == 4
        assert m["clickacall_relay_draining"] == 0
    finally:
        for c in clients:
            c.close()
        relay.stop()


def test_sigterm_drains_keeps_calls_and_refuses_new_ones(tmp_path: Path, peer: Peer) -> None:
    relay = start(
        tmp_path, extra_args=["--drain-timeout", "60", "--alternate-server", "127.0.0.1:3479"]
    )
    assert relay.proc is not None
    user, password = relay.credentials("old-call")
    old = StunClient(relay.address, user, password)
    newcomer = StunClient(relay.address, *relay.credentials("new-call"))
    try:
        relayed = old.allocate()
        old.create_permission(*peer.address)
        relay.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert relay.proc.poll() is None, "the node must keep running while calls last"
        with pytest.raises(TurnError) as refused:
            newcomer.allocate()
        assert refused.value.response.error_code == 300  # Try Alternate
        alternate = refused.value.response.get(0x8023)  # ALTERNATE-SERVER
        assert alternate is not None and alternate[-4:] == socket.inet_aton("127.0.0.1")
        roundtrip(old, peer, relayed, b"still talking")
        old.refresh(600)
        old.refresh(0)  # the last call ends: the drained node exits by itself
        assert relay.proc.wait(timeout=10) == 0
        assert "drain finished with 0 allocation(s) left" in relay.log_text()
    finally:
        old.close()
        newcomer.close()
        relay.stop()


def test_drain_deadline_ends_the_node_and_sigint_stops_at_once(tmp_path: Path) -> None:
    relay = start(tmp_path, extra_args=["--drain-timeout", "1"])
    assert relay.proc is not None
    c = StunClient(relay.address, *relay.credentials("lingering"))
    try:
        c.allocate()
        started = time.monotonic()
        relay.proc.send_signal(signal.SIGUSR1)
        assert relay.proc.wait(timeout=10) == 0
        assert 0.9 <= time.monotonic() - started < 5
        assert "drain finished with 1 allocation(s) left" in relay.log_text()
    finally:
        c.close()
        relay.stop()

    relay = start(tmp_path)
    assert relay.proc is not None
    c = StunClient(relay.address, *relay.credentials("cut"))
    try:
        c.allocate()
        started = time.monotonic()
        relay.proc.send_signal(signal.SIGINT)
        assert relay.proc.wait(timeout=5) == 0
        assert time.monotonic() - started < 2
    finally:
        c.close()
        relay.stop()


def test_two_workers_drain_together(tmp_path: Path) -> None:
    relay = start(tmp_path, workers=2, extra_args=["--drain-timeout", "30"])
    assert relay.proc is not None
    c = StunClient(relay.address, *relay.credentials("a"))
    late = StunClient(relay.address, *relay.credentials("b"), local="127.0.0.2")
    try:
        c.allocate()
        relay.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        with pytest.raises(TurnError) as refused:
            late.allocate()
        assert refused.value.response.error_code == 508
        c.refresh(0)
        assert relay.proc.wait(timeout=10) == 0
    finally:
        c.close()
        late.close()
        relay.stop()


def test_a_second_node_on_a_port_in_use_exits_with_a_clear_message(tmp_path: Path) -> None:
    # SO_REUSEPORT let a second node join the first one's port group and take half of its
    # clients; it must refuse to start (exit status 2), whatever its worker count, for the
    # UDP and the TCP listener alike, and the first keeps serving
    first = start(tmp_path / "first", workers=2, tcp=True)
    try:
        host, port = first.address
        free = free_tcp_port()
        base = [sys.executable, "-m", "relay", "--relay-ip", host, "--auth-secret", "s"]
        base += ["--ports", "20000-20063", "--strict-port-range"]
        for workers, listen in (
            ("1", ["--listen", f"{host}:{port}"]),
            ("2", ["--listen", f"{host}:{port}"]),
            ("1", ["--listen", f"{host}:{free}", "--listen-tcp", f"{host}:{port}"]),
        ):
            second = subprocess.run(
                [*base, *listen, "--workers", workers],
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert second.returncode == 2, second.stderr
            kind = "TCP" if "--listen-tcp" in listen else "UDP"
            assert f"{kind} {host}:{port} already in use by another process" in second.stderr
            assert "worker 1/" not in second.stderr  # refused before any worker started
        user, password = first.credentials("still")
        with StunClient(first.address, user, password) as client:
            assert client.allocate()[1] in first.relay_ports
    finally:
        first.stop()


def test_the_user_quota_holds_across_workers(tmp_path: Path) -> None:
    # the node steers by client IP, so 127.0.0.1 and 127.0.0.2 reach different workers; one
    # credential held --user-quota allocations in each worker
    relay = start(tmp_path, workers=2, extra_args=["--user-quota", "1"])
    clients: list[StunClient] = []
    try:
        user, password = relay.credentials("one-token")
        for n in (1, 2):
            clients.append(StunClient(relay.address, user, password, local=f"127.0.0.{n}"))
        clients[0].allocate()
        with pytest.raises(TurnError) as refused:
            clients[1].allocate()
        assert refused.value.response.error_code == 486
        clients[0].refresh(0)  # given back in one worker, usable in the other
        assert clients[1].allocate()[1] in relay.relay_ports
        log = relay.log_text()
        created = set(re.findall(r"worker=(\d) pid=\d+ msg=\"allocation created", log))
        assert created == {"0", "1"}, log  # the two clients were served by two workers
    finally:
        for c in clients:
            c.close()
        relay.stop()


CHANNEL = 0x4001


def call(
    relay: RelayProcess, peer: Peer, token: str, host: int
) -> tuple[StunClient, tuple[str, int]]:
    """A client on 127.0.0.``host`` with an allocation and a channel (CHANNEL) to ``peer``,
    and its relayed address."""
    c = StunClient(relay.address, *relay.credentials(token), local=f"127.0.0.{host}")
    try:
        relayed = c.allocate()
        c.create_permission(*peer.address)
        c.channel_bind(CHANNEL, *peer.address)
    except BaseException:
        c.close()
        raise
    return c, relayed


def relays_both_ways(client: StunClient, peer: Peer, relayed: tuple[str, int], when: str) -> None:
    """ChannelData and a Send indication from the client reach the peer from the relayed
    address, and the peer's answers come back to the client on the channel."""
    who = f"{when}, the allocation of client {client.sock.getsockname()[0]}"
    for how in ("ChannelData", "Send"):
        payload = f"{how} {when}".encode()
        if how == "Send":
            client.send_indication(*peer.address, payload)
        else:
            client.send_channel(CHANNEL, payload)
        try:
            data, src = peer.echo_one()
        except TimeoutError:
            raise AssertionError(f"{who}: its {how} never reached the peer") from None
        assert (data, src) == (payload, relayed), who
        try:
            answer = client.recv_channel()
        except TimeoutError:
            raise AssertionError(f"{who}: the peer's answer never came back") from None
        assert answer == (CHANNEL, b"echo:" + payload), who


def test_a_workers_restart_keeps_the_other_workers_calls(tmp_path: Path, peer: Peer) -> None:
    # The node steers a client to slot (client IP % 2) of each listening port's SO_REUSEPORT
    # group. When a worker died, the kernel used to move the group's last socket into its
    # slot and the restarted worker joined at the end, so the other worker's clients were
    # steered to a worker without their allocations. Kill the worker of slot 0 (even last
    # octets), then that of slot 1: the other one's calls go on, and the restarted one
    # serves its own slot again, over UDP and TCP.
    relay = start(tmp_path, workers=2, tcp=True)
    clients: list[StunClient] = []
    try:
        for slot in (0, 1):
            calls: dict[int, tuple[StunClient, tuple[str, int]]] = {}
            for n in (1, 2, 3, 4):  # two client hosts per worker
                c, relayed = call(relay, peer, f"s{slot}-{n}", n)
                clients.append(c)
                relays_both_ways(c, peer, relayed, "before the restart")
                calls[n] = (c, relayed)
            served = {n: relay.worker_of(c) for n, (c, _) in calls.items()}
            assert served[2] == served[4] != served[1] == served[3], served
            victim = served[2 - slot]
            pid = relay.worker_pids().get(victim)
            assert pid is not None
            mark = relay.log_size()
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                restarted = relay.worker_pids().get(victim) not in (pid, None)
                if restarted and f"worker {victim} exited" in relay.log_text(mark):
                    break
                time.sleep(0.1)
            else:
                raise AssertionError(f"worker {victim} was not restarted:\n{relay.log_tail()}")
            assert "restarting" in relay.log_text(mark)
            for n, (c, relayed) in calls.items():
                if served[n] != victim:
                    relays_both_ways(c, peer, relayed, f"after worker {victim}'s restart")
            # the restarted worker serves its slot again
            for n in (2 - slot, 4 - slot):
                c, relayed = call(relay, peer, f"new{slot}-{n}", n)
                clients.append(c)
                relays_both_ways(c, peer, relayed, f"after worker {victim}'s restart")
                assert relay.worker_of(c) == victim
        # slot i is worker i, for UDP and TCP alike
        for n in (1, 2):
            with StreamStunClient(
                relay.address, *relay.credentials(f"tcp-{n}"), local=f"127.0.0.{n}"
            ) as tcp:
                tcp.allocate()
                assert relay.worker_of(tcp) == n % 2, relay.log_tail()
            assert relay.worker_of(clients[n - 1]) == n % 2
    finally:
        for c in clients:
            c.close()
        relay.stop()


def test_a_worker_that_ends_its_drain_first_keeps_the_others_calls(
    tmp_path: Path, peer: Peer
) -> None:
    # With three workers 127.0.0.n reaches slot (n + 1) % 3. The worker of slot 0 holds no
    # call and ends its drain at once. Its socket used to leave the groups: the kernel moved
    # slot 2's socket into slot 0 and hashed slot 2's clients over what was left, half of
    # them to a worker without their allocations. Now the slots stay and the node steers
    # slot 0's clients to a running worker, which refuses them as a drain does.
    relay = start(tmp_path, workers=3, extra_args=["--drain-timeout", "30"])
    assert relay.proc is not None
    calls: list[tuple[StunClient, tuple[str, int]]] = []
    late = StunClient(relay.address, *relay.credentials("late"), local="127.0.0.2")
    try:
        for n in (1, 1, 1, 4, 4, 4, 3, 6):  # slot 2 six times, slot 1 twice
            c = StunClient(relay.address, *relay.credentials(f"d{n}"), local=f"127.0.0.{n}")
            calls.append((c, c.allocate()))
            c.create_permission(*peer.address)
            c.channel_bind(CHANNEL, *peer.address)
            relays_both_ways(c, peer, calls[-1][1], "before the drain")
        served = {relay.worker_of(c) for c, _ in calls}
        assert len(served) == 2, served
        mark = relay.log_size()
        relay.proc.send_signal(signal.SIGTERM)
        idle = r'pid=(\d+) msg="draining: refusing new allocations, 0 active'
        deadline = time.monotonic() + 10
        while not (found := re.search(idle, relay.log_text(mark))):
            assert time.monotonic() < deadline, relay.log_tail()
            time.sleep(0.1)
        while True:  # the worker without calls ends, and the supervisor reaps it
            try:
                os.kill(int(found.group(1)), 0)
            except ProcessLookupError:
                break
            assert time.monotonic() < deadline, relay.log_tail()
            time.sleep(0.1)
        time.sleep(0.2)
        for c, relayed in calls:
            relays_both_ways(c, peer, relayed, "once a worker ended its drain")
        with pytest.raises(TurnError) as refused:
            late.allocate()
        assert refused.value.response.error_code == 508
        assert relay.proc.poll() is None
        for c, _ in calls:
            c.refresh(0)
        assert relay.proc.wait(timeout=10) == 0
    finally:
        late.close()
        for c, _ in calls:
            c.close()
        relay.stop()


def test_steering_picks_the_slot_by_client_ip_and_redirects_ended_slots() -> None:
    # in-process: three sockets of one group; 127.0.0.n is slot (n + 1) % 3 (0x7f000000 % 3
    # is 1); a redirect sends slot 0's clients to slot 1 and leaves the others alone
    socks = [listening_socket(("127.0.0.1", 0), reuse_port=True, workers=3)]
    port = socks[0].getsockname()[1]
    socks += [listening_socket(("127.0.0.1", port), reuse_port=True, workers=3) for _ in "ab"]

    def slot_of(n: int) -> int:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
            c.bind((f"127.0.0.{n}", 0))
            c.sendto(b"x", ("127.0.0.1", port))
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            for i, s in enumerate(socks):
                try:
                    s.recv(16)
                    return i
                except BlockingIOError:
                    pass
            time.sleep(0.01)
        raise AssertionError(f"nothing from 127.0.0.{n}")

    try:
        assert [slot_of(n) for n in (1, 2, 3, 4)] == [2, 0, 1, 2]
        steer_by_client_ip(socks[2], 3, {0: 1})  # any member sets the group's program
        assert [slot_of(n) for n in (1, 2, 3, 4)] == [2, 1, 1, 2]
    finally:
        for s in socks:
            s.close()
