"""One relay worker (relay/server.py) run in this process on loopback: what it feeds the TURN
core and how it handles its relay ports; the relay port range against the kernel's
ephemeral range."""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from relay.config import load_config
from relay.metrics import RelayCollector
from relay.node import _turn_factory, check_port_range, ephemeral_overlap
from relay.server import RelayWorker
from tests.relayproc import StunClient, TurnError, rest_credentials

pytestmark = pytest.mark.timeout(60)

SECRET = "s"


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _relay_block(size: int = 16) -> tuple[int, int]:
    """A block of free relay ports outside the ephemeral range, as tests/relayproc.py does."""
    for _ in range(200):
        low = random.randrange(10000, 32000, size)
        ports = range(low, low + size)
        free = []
        for port in ports:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    break
                free.append(port)
        if len(free) == size:
            return low, low + size - 1
    raise RuntimeError("no free relay port block")


def run_worker(
    scenario: Callable[[RelayWorker, tuple[str, int]], Any],
    *flags: str,
    ports: tuple[int, int] | None = None,
) -> Any:
    """Start a worker on a free loopback port, run ``scenario(worker, address)`` in a thread
    (it may block on sockets) while the loop serves, and close the worker."""
    port = _free_udp_port()
    low, high = ports or _relay_block()
    config = load_config(
        ["--listen", f"127.0.0.1:{port}", "--auth-secret", SECRET, "--workers", "1"]
        + ["--ports", f"{low}-{high}", "--allow-peer", "127.0.0.0/8", *flags]
    )

    async def main() -> Any:
        worker = RelayWorker(config, _turn_factory(config, b"k" * 32, 1))
        worker.start()
        try:
            return await asyncio.to_thread(scenario, worker, ("127.0.0.1", port))
        finally:
            worker.close()

    return asyncio.run(main())


def test_a_wall_clock_jump_does_not_expire_allocations(monkeypatch: pytest.MonkeyPatch) -> None:
    real = time.time

    def scenario(worker: RelayWorker, address: tuple[str, int]) -> None:
        with StunClient(address, *rest_credentials(SECRET, "clock", 7200)) as client:
            client.allocate(lifetime=600)
            assert worker.turn.allocation_count == 1
            # NTP (or an operator) steps the wall clock a day forward: the allocation has
            # lived a few milliseconds and must stay
            monkeypatch.setattr(time, "time", lambda: real() + 86400)
            worker._sweep()
            assert worker.turn.allocation_count == 1
            assert worker.turn.stats["expired.allocation"] == 0
            monkeypatch.setattr(time, "time", real)

    run_worker(scenario)


def test_a_relay_port_busy_elsewhere_goes_back_to_the_pool() -> None:
    low, high = _relay_block(4)
    squatters = []
    for port in range(low, high + 1):  # another program holds every relay port for a while
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", port))
        squatters.append(sock)

    def scenario(worker: RelayWorker, address: tuple[str, int]) -> None:
        with StunClient(address, *rest_credentials(SECRET, "busy")) as client:
            with pytest.raises(TurnError) as refused:
                client.allocate()
            assert refused.value.response.error_code == 508
        assert worker.turn.stats["ports.busy"] >= 4
        assert len(worker.backend.pool) == 4  # none of them leaked out of the pool
        for sock in squatters:
            sock.close()
        with StunClient(address, *rest_credentials(SECRET, "free")) as client:
            relayed = client.allocate()  # the ports are free again: served
            assert low <= relayed[1] <= high

    try:
        run_worker(scenario, ports=(low, high))
    finally:
        for sock in squatters:
            sock.close()


def test_relay_ports_overlapping_the_ephemeral_range_warn_or_refuse(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    proc = tmp_path / "ip_local_port_range"
    proc.write_text("32768\t60999\n")
    base = ["--listen", "127.0.0.1:3478", "--user", "a:b", "--workers", "1"]
    assert ephemeral_overlap((49152, 65535), proc) == (60999 - 49152 + 1, (32768, 60999))
    assert ephemeral_overlap((10000, 20000), proc) == (0, (32768, 60999))
    assert ephemeral_overlap((10000, 20000), tmp_path / "missing") == (0, None)

    with caplog.at_level(logging.WARNING, logger="clickacall.relay.node"):
        assert check_port_range(load_config(base), proc) == 11848  # the default --ports
    assert "overlaps the kernel's ephemeral port range 32768-60999" in caplog.text
    caplog.clear()
    assert check_port_range(load_config([*base, "--ports", "10000-20000"]), proc) == 0
    assert caplog.text == ""
    strict = load_config([*base, "--strict-port-range"])
    with caplog.at_level(logging.ERROR, logger="clickacall.relay.node"):
        assert check_port_range(strict, proc) is None  # run_node exits with EXIT_REFUSED
    assert "refusing to start (--strict-port-range)" in caplog.text
    assert (
        check_port_range(load_config([*base, "--strict-port-range", "--ports", "1-9"]), proc) == 0
    )

    gauge = next(
        m
        for m in RelayCollector([], ephemeral_overlap=11848).collect()
        if m.name == "clickacall_relay_ports_in_ephemeral_range"
    )
    assert gauge.samples[0].value == 11848
