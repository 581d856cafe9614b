"""Bounds before authentication (control/bounds.py and uvicorn's options from
control/server.py): request body size, WebSocket message size at the protocol level,
unauthenticated WebSockets in all and per client /24, their time to authenticate, and
connections in progress. Each against a real uvicorn on loopback served exactly as
``clickacall control`` serves it, with httpx and ``websockets`` clients: the bound holds, what
is within it still works, and the refusal is counted.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from control.app import create_app
from control.server import UsageError, load_settings, serve_options
from control.settings import DEFAULT_MAX_BODY
from control.store import open_store
from tests.controlproc import free_port
from tests.test_api import OPH, app_metrics, make_settings
from tests.test_signalling import RealClock

WAIT = 10.0


@dataclass
class Live:
    http: httpx.AsyncClient
    ws: str
    app: Any

    async def refusals(self) -> dict[str, float]:
        text = await app_metrics(self.app)
        found = re.findall(r'bound_refusals_total\{reason="(\w+)"\} (\S+)', text)
        return {k: float(v) for k, v in found}


@asynccontextmanager
async def serving(tmp_path: Path, **kw: Any) -> AsyncIterator[Live]:
    settings = make_settings(RealClock(), **kw)
    store = await open_store(f"sqlite:///{tmp_path}/bounds.db")
    app = create_app(settings, store)
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="on",
        **serve_options(settings, app),
    )
    srv = uvicorn.Server(config)
    task = asyncio.create_task(srv.serve())
    deadline = time.monotonic() + WAIT
    try:
        while not srv.started:
            if task.done() or time.monotonic() > deadline:
                task.result()
                pytest.fail("uvicorn did not start")
            await asyncio.sleep(0.02)
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base, timeout=WAIT) as c:
            yield Live(c, f"ws://127.0.0.1:{port}", app)
    finally:
        srv.should_exit = True
        await asyncio.wait_for(task, WAIT)
        await store.close()


def error_of(r: httpx.Response, status: int, code: str) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"]["code"] == code, body
    return str(body["error"]["message"])


async def new_tenant(live: Live) -> httpx.Response:
    return await live.http.post("/v1/tenants", json={"name": "Acme"}, headers=OPH)


# --- request bodies ----------------------------------------------------------------------------


async def test_a_body_over_the_limit_by_its_length_is_refused_unread(tmp_path: Path) -> None:
    async with serving(tmp_path, max_body=64 * 1024) as live:
        big = json.dumps({"name": "x" * (256 * 1024)})
        r = await live.http.post("/v1/tenants", content=big, headers=OPH)
        assert "65536 bytes" in error_of(r, 413, "too_large")
        assert (await new_tenant(live)).status_code == 201  # a body within the limit
        assert (await live.refusals())["body_too_large"] == 1.0


async def test_a_streamed_body_is_counted_as_it_comes(tmp_path: Path) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"name": "'
        for _ in range(40):  # 40 x 4 KiB: past 64 KiB, with no Content-Length to tell
            yield b"x" * 4096
        yield b'"}'

    async with serving(tmp_path, max_body=64 * 1024) as live:
        json_ = {**OPH, "Content-Type": "application/json"}
        r = await live.http.post("/v1/tenants", content=chunks(), headers=json_)
        assert "content-length" not in r.request.headers
        error_of(r, 413, "too_large")

        async def small() -> AsyncIterator[bytes]:
            yield b'{"name": "Acme"}'

        r = await live.http.post("/v1/tenants", content=small(), headers=json_)
        assert r.status_code == 201, r.text
        assert (await live.refusals())["body_too_large"] == 1.0


def test_the_default_body_limit_is_a_mebibyte() -> None:
    assert DEFAULT_MAX_BODY == 1 << 20


async def test_a_request_head_must_arrive_in_time(tmp_path: Path) -> None:
    """A connection that sends nothing, or its headers too slowly (slow-loris), is closed
    at --head-timeout; before, uvicorn held it for as long as the client liked."""
    async with serving(tmp_path, head_timeout=0.5) as live:
        port = live.http.base_url.port
        assert port is not None
        silent = await asyncio.open_connection("127.0.0.1", port)
        slow = await asyncio.open_connection("127.0.0.1", port)
        slow[1].write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        for reader, writer in (silent, slow):
            assert await asyncio.wait_for(reader.read(), WAIT) == b""  # closed by the server
            writer.close()
        # one that takes its time between requests is left to uvicorn's keep-alive timeout,
        # and one that sends its head in time is answered
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await asyncio.wait_for(reader.readline(), WAIT)).startswith(b"HTTP/1.1 200")
        writer.close()
        assert (await live.refusals())["head_timeout"] == 2.0


# --- WebSockets --------------------------------------------------------------------------------


async def messages_until_closed(ws: ClientConnection) -> tuple[int | None, list[Any]]:
    seen = []
    try:
        while True:
            seen.append(json.loads(await asyncio.wait_for(ws.recv(), WAIT)))
    except ConnectionClosed as e:
        return (e.rcvd.code if e.rcvd else None), seen


async def test_a_websocket_message_over_the_limit_is_refused_by_the_protocol(
    tmp_path: Path,
) -> None:
    """Before the fix the server read a 1 MiB frame whole, then the app said it was too big;
    now uvicorn closes with 1009 before the message is complete and the app never sees it."""
    async with serving(tmp_path) as live:
        ws = await connect(f"{live.ws}/v1/staff/events", max_size=None)
        await ws.send("x" * (1 << 20))
        code, seen = await messages_until_closed(ws)
        assert code == 1009 and seen == [], seen
        # a message within the limit is read (and here refused for what it says)
        ws = await connect(f"{live.ws}/v1/staff/events")
        await ws.send(json.dumps({"type": "auth", "token": "x" * 1000}))
        code, seen = await messages_until_closed(ws)
        assert code == 4401 and seen[0]["code"] == "unauthorized"
        assert (await live.refusals())["ws_too_big"] == 1.0


@asynccontextmanager
async def sockets(url: str, n: int, host: str = "127.0.0.1") -> AsyncIterator[list[Any]]:
    opened = []
    try:
        for _ in range(n):
            opened.append(await connect(url, local_addr=(host, 0), open_timeout=WAIT))
        yield opened
    finally:
        for ws in opened:
            await ws.close()


async def refused(url: str, host: str = "127.0.0.1") -> int:
    with pytest.raises(InvalidStatus) as e:
        await connect(url, local_addr=(host, 0), open_timeout=WAIT)
    return int(e.value.response.status_code)


async def test_unauthenticated_websockets_are_bounded_per_prefix(tmp_path: Path) -> None:
    async with serving(tmp_path, ws_unauth=10, ws_unauth_per_prefix=3) as live:
        url = f"{live.ws}/v1/staff/events"
        async with sockets(url, 3) as held:
            assert await refused(url) == 403  # a fourth from 127.0.0.0/24
            async with sockets(url, 1, "127.0.1.1"):  # another /24 still gets in
                pass
            await held[0].close()  # a place frees once a socket leaves ...
            await asyncio.sleep(0.1)
            async with sockets(url, 1):
                pass
        assert (await live.refusals())["ws_unauth_prefix"] == 1.0


async def test_unauthenticated_websockets_are_bounded_in_all(tmp_path: Path) -> None:
    async with serving(tmp_path, ws_unauth=2, ws_unauth_per_prefix=10) as live:
        url = f"{live.ws}/v1/staff/events"
        async with sockets(url, 2) as held:
            assert await refused(url, "127.0.2.1") == 403
            # ... or authenticates (here: tries and fails, which also ends its wait)
            await held[0].send(json.dumps({"type": "auth", "token": "nope"}))
            assert (await messages_until_closed(held[0]))[0] == 4401
            await asyncio.sleep(0.1)
            async with sockets(url, 1, "127.0.2.1"):
                pass
        assert (await live.refusals())["ws_unauth_total"] == 1.0


async def test_a_websocket_must_authenticate_in_time(tmp_path: Path) -> None:
    async with serving(tmp_path, ws_auth_timeout=0.3, ws_unauth_per_prefix=1) as live:
        url = f"{live.ws}/v1/staff/events"
        ws = await connect(url)
        code, seen = await messages_until_closed(ws)
        assert code == 4408 and seen[-1]["code"] == "unauthorized"
        async with sockets(url, 1):  # its place is free again
            pass
        got = await live.refusals()
        assert got["ws_auth_timeout"] >= 1.0
        text = await app_metrics(live.app)
        assert "clickacall_control_websockets_unauthenticated 0.0" in text


async def test_connections_in_progress_are_bounded(tmp_path: Path) -> None:
    async with serving(tmp_path, max_connections=3, ws_unauth_per_prefix=10) as live:
        url = f"{live.ws}/v1/staff/events"
        async with sockets(url, 3) as held:
            r = await live.http.get("/healthz")
            assert "3 connections" in error_of(r, 503, "overloaded")
            assert r.headers["retry-after"] == "1"
            assert await refused(url) == 403
            await held[0].close()
            await asyncio.sleep(0.1)
            assert (await live.http.get("/healthz")).status_code == 200
        assert (await live.refusals())["connections"] == 2.0


async def test_connections_from_one_network_are_bounded(tmp_path: Path) -> None:
    kw = {"max_connections": 10, "max_per_prefix": 2, "ws_unauth_per_prefix": 10}
    async with serving(tmp_path, **kw) as live:
        url = f"{live.ws}/v1/staff/events"
        elsewhere = httpx.AsyncHTTPTransport(local_address="127.0.1.1")
        async with (
            sockets(url, 2),
            httpx.AsyncClient(transport=elsewhere, base_url=str(live.http.base_url)) as other,
        ):
            r = await live.http.get("/healthz")  # from 127.0.0.0/24, like the sockets
            assert "from one network" in error_of(r, 503, "overloaded")
            assert await refused(url) == 403
            assert (await other.get("/healthz")).status_code == 200  # another /24
        assert (await live.http.get("/healthz")).status_code == 200
        assert (await live.refusals())["connections_prefix"] == 2.0


# --- flags -------------------------------------------------------------------------------------


def _settings(*flags: str) -> Any:
    return load_settings(["--token-key", "k" * 32, *flags], "clickacall control")[0]


def test_flags() -> None:
    s = _settings(
        "--click-visitor-burst=2",
        "--click-visitor-interval=30",
        "--click-link-burst=9",
        "--click-link-interval=0.5",
        "--click-ringing-per-link=3",
        "--click-ringing-per-tenant=7",
        "--max-body=4096",
        "--ws-max-size=2048",
        "--ws-auth-timeout=5",
        "--ws-unauthenticated=50",
        "--ws-unauthenticated-per-prefix=5",
        "--max-connections=200",
        "--max-connections-per-prefix=20",
        "--head-timeout=3",
    )
    limits = s.click_limits
    assert (limits.visitor_burst, limits.visitor_interval) == (2, 30.0)
    assert (limits.link_burst, limits.link_interval) == (9, 0.5)
    assert (limits.ringing_per_link, limits.ringing_per_tenant) == (3, 7)
    assert (s.max_body, s.ws_max_size, s.ws_auth_timeout) == (4096, 2048, 5.0)
    assert (s.ws_unauth, s.ws_unauth_per_prefix, s.max_connections) == (50, 5, 200)
    assert s.max_per_prefix == 20
    assert s.head_timeout == 3.0
    assert serve_options(s, create_app(s))["ws_max_size"] == 2048


@pytest.mark.parametrize(
    "flag",
    [
        "--click-visitor-burst=0",
        "--click-link-interval=0",
        "--max-body=10",
        "--ws-max-size=0",
        "--ws-auth-timeout=-1",
        "--max-connections=0",
        "--max-connections-per-prefix=0",
        "--head-timeout=0",
    ],
)
def test_bad_flags_name_themselves(flag: str) -> None:
    with pytest.raises(UsageError, match=flag.split("=")[0]):
        _settings(flag)
