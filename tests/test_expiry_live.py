"""A TURN REST credential's expiry holds for the whole allocation, on a real relay process:
once the username's expiry passes, Refresh, CreatePermission and ChannelBind are refused
(401), another credential cannot take the allocation over (441), and the refusals are counted.
"""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path

import pytest

from tests.relayproc import RelayProcess, RelaySpec, StunClient, TurnError, free_tcp_port

pytestmark = pytest.mark.timeout(60)


def event(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    wanted = f'clickacall_relay_events_total{{event="{name}"}} '
    for line in text.splitlines():
        if line.startswith(wanted):
            return float(line[len(wanted) :])
    return 0.0


def test_expired_credential_cannot_keep_its_allocation(tmp_path: Path) -> None:
    mport = free_tcp_port()
    spec = RelaySpec(extra_args=["--metrics", f"127.0.0.1:{mport}"])
    relay = RelayProcess(spec, tmp_path, impl="ours").start()
    try:
        short = relay.credentials("short-lived", ttl=2)
        expiry = int(short[0].partition(":")[0])
        with (
            StunClient(relay.address, *short) as client,
            StunClient(relay.address, *relay.credentials("bystander")) as bystander,
        ):
            client.allocate(lifetime=600)
            client.create_permission("127.0.0.1")  # valid for now
            bystander.allocate(lifetime=600)
            time.sleep(max(0.0, expiry + 1.1 - time.time()))  # the username has expired

            for refused in (
                lambda: client.refresh(600),
                lambda: client.create_permission("127.0.0.1"),
                lambda: client.channel_bind(0x4000, "127.0.0.1", 9),
            ):
                with pytest.raises(AssertionError, match="kept asking for authentication"):
                    refused()
            deadline = time.monotonic() + 10  # workers publish their counters periodically
            while event(mport, "auth.expired_allocation") < 3 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert event(mport, "auth.expired_allocation") >= 3  # the client retries each

            # a fresh credential does not adopt the allocation made with the expired one
            client.username, client.password = relay.credentials("fresh")
            client.key = None
            with pytest.raises(TurnError) as caught:
                client.refresh(600)
            assert caught.value.response.error_code == 441

            bystander.refresh(600)  # others are untouched (an error would raise)
    finally:
        relay.stop()
