"""WebSocket signalling against a real server: uvicorn in this process (both back-ends), and
two ``python -m control`` processes on one PostgreSQL with the visitor on one and the staff
member on the other.

The clients are the ``websockets`` library's, the HTTP calls httpx's, all over loopback.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import httpx
import pytest
import uvicorn
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from control.api import signalling
from control.app import create_app
from control.models import Link
from control.store import Store
from tests.controlproc import ControlProcess, free_port
from tests.pgserver import PgServer
from tests.test_api import CHROME_UA, Api, Clock, World, bearer, click, make_settings, world
from tests.test_api import store as store  # noqa: F401 (both back-ends)
from tests.test_store import pg  # noqa: F401 (the shared PostgreSQL fixture)

WAIT = 10.0  # the longest any single expected message may take


class RealClock(Clock):
    def __call__(self) -> float:
        return time.time()


@dataclass
class Server:
    api: Api
    ws: str  # ws://127.0.0.1:PORT
    app: Any = None  # the app it serves (its settings may be changed while it runs)


@pytest.fixture
async def server(store: Store) -> AsyncIterator[Server]:  # noqa: F811
    port = free_port()
    app = create_app(make_settings(RealClock()), store)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    srv = uvicorn.Server(config)
    task = asyncio.create_task(srv.serve())
    deadline = time.monotonic() + WAIT
    while not srv.started:
        if task.done() or time.monotonic() > deadline:
            task.result()
            pytest.fail("uvicorn did not start")
        await asyncio.sleep(0.02)
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=base, timeout=WAIT) as c:
        yield Server(Api(c, RealClock(), store, app), f"ws://127.0.0.1:{port}", app)
    srv.should_exit = True
    await asyncio.wait_for(task, WAIT)


async def recv(ws: ClientConnection) -> dict[str, Any]:
    data = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
    assert isinstance(data, dict)
    return data


async def recv_type(ws: ClientConnection, kind: str) -> dict[str, Any]:
    """The next message of ``kind``, skipping others (pongs, status events)."""
    while True:
        message = await recv(ws)
        if message["type"] == kind:
            return message


async def close_code(ws: ClientConnection) -> tuple[int, list[dict[str, Any]]]:
    """Read until the server closes; (close code, messages seen meanwhile)."""
    seen: list[dict[str, Any]] = []
    try:
        while True:
            seen.append(json.loads(await asyncio.wait_for(ws.recv(), WAIT)))
    except ConnectionClosed as e:
        assert e.rcvd is not None, "closed without a close frame"
        return e.rcvd.code, seen


async def signal(base: str, path: str, token: str, after: int = 0) -> ClientConnection:
    ws = await connect(f"{base}{path}", open_timeout=WAIT)
    await ws.send(json.dumps({"type": "auth", "token": token, "after": after}))
    return ws


async def answer(api: Api, w: World, call_id: str) -> dict[str, Any]:
    r = await api.c.post(f"/v1/calls/{call_id}/answer", headers=w.sh)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


# --- one process ---------------------------------------------------------------------------


async def test_call_signalling_end_to_end(server: Server) -> None:
    api = server.api
    w = await world(api)
    console = await signal(server.ws, "/v1/staff/events", w.sh["Authorization"][7:])
    assert await recv(console) == {"type": "ringing", "calls": []}
    # then the member's presence and open callback requests (the web console's)
    assert (await recv(console))["type"] == "presence"
    assert await recv(console) == {"type": "callbacks", "count": 0}

    got = await click(api, w)
    call_id = got["call_id"]
    assert got["signal"] == f"/v1/calls/{call_id}/signal"
    ring = await recv(console)
    assert ring["type"] == "ring" and ring["call"]["id"] == call_id
    assert ring["link_name"] == "Sales"

    visitor = await signal(server.ws, got["signal"], got["token"])
    ready = await recv(visitor)
    assert ready["type"] == "ready" and ready["role"] == "visitor"
    assert ready["status"] == "ringing" and ready["call_id"] == call_id
    # the offer waits in the database until the staff member connects
    await visitor.send(json.dumps({"type": "offer", "sdp": "v=0 visitor-offer"}))
    await visitor.send(json.dumps({"type": "ping"}))
    assert await recv(visitor) == {"type": "pong"}

    ans = await answer(api, w, call_id)
    status = await recv(visitor)
    assert status["type"] == "call" and status["status"] == "answered"
    assert await recv(console) == {"type": "call", "call_id": call_id, "status": "answered"}

    staff = await signal(server.ws, ans["signal"], ans["token"])
    ready = await recv(staff)
    assert ready["role"] == "staff" and ready["status"] == "answered"
    offer = await recv(staff)
    assert offer["type"] == "offer" and offer["sdp"] == "v=0 visitor-offer"
    assert offer["from"] == "visitor" and isinstance(offer["seq"], int)

    await staff.send(json.dumps({"type": "answer", "sdp": "v=0 staff-answer"}))
    for i in range(3):
        await staff.send(json.dumps({"type": "candidate", "candidate": f"c{i}", "from": "x"}))
    got_answer = await recv(visitor)
    assert got_answer["type"] == "answer" and got_answer["from"] == "staff"
    cands = [await recv(visitor) for _ in range(3)]
    assert [c["candidate"] for c in cands] == ["c0", "c1", "c2"]
    assert all(c["from"] == "staff" for c in cands)  # a client cannot forge the sender
    # the visitor's own messages never come back to it; the staff member got only the offer

    # a visitor that reconnects asks for what it has not seen yet
    await visitor.close()
    visitor = await signal(server.ws, got["signal"], got["token"], after=cands[1]["seq"])
    assert (await recv(visitor))["type"] == "ready"
    again = await recv(visitor)
    assert again["candidate"] == "c2"

    # hang-up: both sides hear it and are closed normally; the tokens are revoked
    r = await api.c.post(f"/v1/calls/{call_id}/hangup", headers=bearer(got["token"]))
    assert r.json()["status"] == "ended"
    for ws in (visitor, staff):
        code, seen = await close_code(ws)
        assert code == 1000
        assert seen[-1]["type"] == "call" and seen[-1]["status"] == "ended"
    ws = await signal(server.ws, got["signal"], got["token"])
    code, seen = await close_code(ws)
    assert code == 4401 and "revoked" in seen[-1]["message"]
    # nothing of the call's signalling (ICE candidates: addresses) is kept
    assert await api.store.read_signals(w.tenant, call_id, "staff", 0) == []  # type: ignore[arg-type]
    await console.close()


async def test_only_the_two_parties(server: Server) -> None:
    api = server.api
    w = await world(api)
    other = await world(api, "Globex", node=False)
    got = await click(api, w)
    second = await click(api, w)

    async def refused(path: str, token: str) -> tuple[int, str]:
        code, seen = await close_code(await signal(server.ws, path, token))
        return code, seen[-1]["message"] if seen else ""

    # another call's visitor, a console token, another tenant's staff, garbage
    assert (await refused(got["signal"], second["token"]))[0] == 4404
    assert (await refused(got["signal"], w.sh["Authorization"][7:]))[0] == 4404
    assert (await refused(got["signal"], other.sh["Authorization"][7:]))[0] == 4404
    code, message = await refused(got["signal"], "v1.garbage.token")
    assert code == 4401 and "malformed" in message
    assert (await refused("/v1/calls/nope/signal", got["token"]))[0] == 4404

    # a second staff member cannot join a call a colleague answered
    r = await api.c.post("/v1/staff", json={"name": "Bo", "groups": ["sales"]}, headers=w.th)
    bo = r.json()["id"]
    await api.c.patch(f"/v1/links/{w.link['id']}", json={"ring_groups": ["sales"]}, headers=w.th)
    third = await click(api, w)
    bh = bearer((await api.c.post(f"/v1/staff/{bo}/token", headers=w.th)).json()["token"])
    r = await api.c.post(f"/v1/calls/{third['call_id']}/answer", headers=bh)
    assert r.status_code == 200
    r = await api.c.post(f"/v1/calls/{third['call_id']}/answer", headers=w.sh)
    assert r.status_code == 409
    assert (await refused(third["signal"], w.sh["Authorization"][7:]))[0] == 4404

    # a token revoked by the tenant is thrown out of a live connection
    visitor = await signal(server.ws, got["signal"], got["token"])
    assert (await recv(visitor))["type"] == "ready"
    r = await api.c.post(f"/v1/tokens/{got['token_id']}/revoke", headers=w.th)
    assert r.status_code == 200
    code, seen = await close_code(visitor)
    assert code == 4401 and seen[-1]["code"] == "unauthorized"


async def test_bad_input_is_answered_or_disconnected(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = server.api
    w = await world(api)
    got = await click(api, w)
    path = got["signal"]

    # first message not auth / not JSON
    ws = await connect(f"{server.ws}{path}")
    await ws.send("hello")
    code, seen = await close_code(ws)
    assert code == 4400 and "auth" in seen[-1]["message"]
    ws = await connect(f"{server.ws}{path}")
    await ws.send(json.dumps({"type": "offer"}))
    assert (await close_code(ws))[0] == 4400

    # no auth in time
    monkeypatch.setattr(server.app.state.ctx.settings, "ws_auth_timeout", 0.3)
    ws = await connect(f"{server.ws}{path}")
    assert (await close_code(ws))[0] == 4408

    # bad messages are answered and the connection stays
    ws = await signal(server.ws, path, got["token"])
    await recv_type(ws, "ready")
    for bad in ("not json", "[1, 2]", json.dumps({"type": "steal"}), json.dumps({"sdp": 1})):
        await ws.send(bad)
        error = await recv(ws)
        assert error["type"] == "error" and error["code"] == "invalid", error
    await ws.send(json.dumps({"type": "ping"}))
    assert await recv(ws) == {"type": "pong"}
    # binary frames and oversized messages end it
    await ws.send(b"\x00\x01")
    assert (await close_code(ws))[0] == 1003
    ws = await signal(server.ws, path, got["token"])
    await recv_type(ws, "ready")
    await ws.send(json.dumps({"type": "offer", "sdp": "x" * 70_000}))
    assert (await close_code(ws))[0] == 1009

    # too many errors, then a flood
    monkeypatch.setattr(signalling, "MAX_ERRORS", 3)
    ws = await signal(server.ws, path, got["token"])
    await recv_type(ws, "ready")
    for _ in range(5):
        await ws.send("{")
    code, seen = await close_code(ws)
    assert code == 4400 and sum(m["type"] == "error" for m in seen) == 4
    monkeypatch.setattr(signalling, "BURST", 5.0)
    monkeypatch.setattr(signalling, "RATE", 0.001)
    ws = await signal(server.ws, path, got["token"])
    await recv_type(ws, "ready")
    for i in range(10):
        await ws.send(json.dumps({"type": "candidate", "candidate": str(i)}))
    code, seen = await close_code(ws)
    assert code == 1008 and seen[-1]["code"] == "rate_limited", seen
    # the five accepted messages were kept; the rest were not
    rows = await api.store.read_signals(w.tenant, got["call_id"], "visitor", 0)  # type: ignore[arg-type]
    assert [json.loads(b)["candidate"] for _, b in rows] == ["0", "1", "2", "3", "4"], seen


async def test_ringing_ends_as_missed_while_the_visitor_waits(server: Server) -> None:
    api = server.api
    w = await world(api)
    link = await api.store.get_link(w.tenant, w.link["id"])
    assert isinstance(link, Link)
    link.ring_timeout = 2.5  # the API's minimum is 5 s; the store takes what it is given
    await api.store.update_link(link)
    console = await signal(server.ws, "/v1/staff/events", w.sh["Authorization"][7:])
    await recv_type(console, "ringing")
    got = await click(api, w)
    await recv_type(console, "ring")
    visitor = await signal(server.ws, got["signal"], got["token"])
    await recv_type(visitor, "ready")
    code, seen = await close_code(visitor)
    assert code == 1000 and seen[-1]["status"] == "missed"
    assert await recv(console) == {"type": "call", "call_id": got["call_id"], "status": "missed"}
    call = (await api.c.get(f"/v1/calls/{got['call_id']}", headers=w.th)).json()
    assert call["status"] == "missed"


# --- two processes, one PostgreSQL --------------------------------------------------------------


@pytest.fixture
async def two_controls(pg: PgServer) -> AsyncIterator[tuple[ControlProcess, ControlProcess]]:  # noqa: F811
    name = f"w_{uuid.uuid4().hex[:16]}"
    conn = await asyncpg.connect(pg.dsn())
    try:
        await conn.execute(f"CREATE DATABASE {name}")
    finally:
        await conn.close()
    a = ControlProcess(db_url=pg.dsn(name))
    b = ControlProcess(
        db_url=pg.dsn(name),
        relay_secret=a.relay_secret,
        node_secret=a.node_secret,
        token_key=a.token_key,
    )
    b.op_key, b._op_hash = a.op_key, a._op_hash
    await asyncio.to_thread(a.start)
    try:
        await asyncio.to_thread(b.start)
        try:
            yield a, b
        finally:
            await asyncio.to_thread(b.stop)
    finally:
        await asyncio.to_thread(a.stop)


async def test_visitor_and_staff_on_two_processes(
    two_controls: tuple[ControlProcess, ControlProcess],
) -> None:
    a, b = two_controls
    t = await asyncio.to_thread(a.bootstrap)
    async with (
        httpx.AsyncClient(base_url=a.url, timeout=WAIT) as ca,
        httpx.AsyncClient(base_url=b.url, timeout=WAIT) as cb,
    ):
        node = {"node_id": "n1", "region": "eu", "urls": ["turn:127.0.0.1:3478"]}
        r = await cb.post("/v1/nodes/heartbeat", json=node, headers=bearer(a.node_secret))
        assert r.status_code == 200, r.text
        console = await signal(b.ws_url, "/v1/staff/events", t.staff_token)
        await recv_type(console, "ringing")

        r = await ca.post(
            f"/v1/links/{t.link['public_id']}/calls", headers={"User-Agent": CHROME_UA}
        )
        assert r.status_code == 201, r.text
        got = r.json()
        visitor = await signal(a.ws_url, got["signal"], got["token"])
        await recv_type(visitor, "ready")
        await visitor.send(json.dumps({"type": "offer", "sdp": "offer-on-a"}))
        ring = await recv_type(console, "ring")  # created on A, heard on B
        assert ring["call"]["id"] == got["call_id"]

        # first answer wins across processes: two staff tokens race on A and B
        answers = await asyncio.gather(
            ca.post(f"/v1/calls/{got['call_id']}/answer", headers=t.sh),
            cb.post(f"/v1/calls/{got['call_id']}/answer", headers=t.sh),
        )
        assert sorted(r.status_code for r in answers) == [200, 409]
        ans = next(r.json() for r in answers if r.status_code == 200)
        assert (await recv_type(visitor, "call"))["status"] == "answered"

        staff = await signal(b.ws_url, ans["signal"], ans["token"])
        await recv_type(staff, "ready")
        offer = await recv_type(staff, "offer")
        assert offer["sdp"] == "offer-on-a" and offer["from"] == "visitor"
        await staff.send(json.dumps({"type": "answer", "sdp": "answer-on-b"}))
        await staff.send(json.dumps({"type": "candidate", "candidate": "cand-b"}))
        assert (await recv_type(visitor, "answer"))["sdp"] == "answer-on-b"
        assert (await recv_type(visitor, "candidate"))["candidate"] == "cand-b"
        await visitor.send(json.dumps({"type": "candidate", "candidate": "cand-a"}))
        assert (await recv_type(staff, "candidate"))["candidate"] == "cand-a"

        # staff hangs up on B; the visitor on A hears it
        r = await cb.post(f"/v1/calls/{got['call_id']}/hangup", headers=bearer(ans["token"]))
        assert r.json()["status"] == "ended", r.text
        code, seen = await close_code(visitor)
        assert code == 1000 and seen[-1]["status"] == "ended"
        assert (await close_code(staff))[0] == 1000
        await console.close()
