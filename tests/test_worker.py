"""One relay worker (relay/server.py) run in this process on loopback: what it feeds the TURN
core and how it handles its relay ports (issue 14, items 9 and 13)."""

from __future__ import annotations

import asyncio
import random
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest

from relay.config import load_config
from relay.node import _turn_factory
from relay.server import RelayWorker
from tests.relayproc import StunClient, rest_credentials

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


def run_worker(scenario: Callable[[RelayWorker, tuple[str, int]], Any], *flags: str) -> Any:
    """Start a worker on a free loopback port, run ``scenario(worker, address)`` in a thread
    (it may block on sockets) while the loop serves, and close the worker."""
    port = _free_udp_port()
    low, high = _relay_block()
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
