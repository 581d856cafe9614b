"""Property-based tests of what strangers and tenants send the control plane: arbitrary JSON
bodies to the public and tenant endpoints get a 2xx or a 4xx in the API's error shape, a 422
naming the field, never a 500; arbitrary messages on the signalling and console WebSockets get
an ``invalid`` error or a clean close, never a server error (1011), and the connection that
survives still answers.

One SQLite-backed app per test, served by uvicorn on loopback from an event loop this module
drives, so that hypothesis can run its examples synchronously against it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from control.api.signalling import SIGNAL_TYPES
from control.api.visitors import CallbackIn
from control.app import create_app
from control.schemas import ClickIn, LinkIn, LinkPatch, StaffIn
from control.store import open_store
from tests.controlproc import free_port
from tests.test_api import CHROME_UA, ERROR_KEYS, Api, World, bearer, make_settings, world

WAIT = 10.0
SETTINGS = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


class RealClock:
    t = 0.0

    def __call__(self) -> float:
        return time.time()


@dataclass
class Served:
    loop: asyncio.AbstractEventLoop
    api: Api
    w: World
    ws: str
    visitor: tuple[str, str] | None = None  # a ringing call's signal URL and visitor token

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(asyncio.wait_for(coro, 30))


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    loop = asyncio.new_event_loop()
    store = loop.run_until_complete(open_store(f"sqlite:///{tmp_path}/props.db"))
    port = free_port()
    app = create_app(make_settings(RealClock()), store)  # type: ignore[arg-type]
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    task = loop.create_task(server.serve())

    async def started() -> None:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.02)

    loop.run_until_complete(asyncio.wait_for(started(), WAIT))
    client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=WAIT)
    api = Api(client, RealClock(), store)  # type: ignore[arg-type]
    w = loop.run_until_complete(world(api))
    try:
        yield Served(loop, api, w, f"ws://127.0.0.1:{port}")
    finally:
        server.should_exit = True
        loop.run_until_complete(client.aclose())
        loop.run_until_complete(asyncio.wait_for(task, WAIT))
        loop.run_until_complete(store.close())
        loop.close()


# --- bodies --------------------------------------------------------------------------------

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
    st.sampled_from(["", " ", "\x00", "a" * 300, "+1 555 0100", "a@b.example", "voice", "eu"]),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)


def near(model: type[Any]) -> st.SearchStrategy[Any]:
    """Objects with the model's own field names (and a stray one) holding anything."""
    names = sorted(model.model_fields) + ["extra"]
    return st.dictionaries(st.sampled_from(names), json_values, max_size=len(names))


def bodies(model: type[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(json_values, near(model))


async def _post(
    s: Served, method: str, path: str, headers: dict[str, str], body: Any, raw: bytes | None
) -> httpx.Response:
    if raw is not None:
        headers = {**headers, "Content-Type": "application/json"}
        return await s.api.c.request(method, path, content=raw, headers=headers)
    return await s.api.c.request(method, path, json=body, headers=headers)


def check_answer(r: httpx.Response) -> None:
    assert r.status_code < 500, (r.status_code, r.text)
    if r.status_code >= 400:
        body = r.json()
        assert set(body) == {"error"} and set(body["error"]) == ERROR_KEYS, body
        message = body["error"]["message"]
        assert isinstance(message, str) and message
        if r.status_code == 422 and body["error"]["code"] == "invalid":
            assert message.startswith("body"), message  # which field, e.g. "body.media: ..."


raws = st.one_of(
    st.none(),
    st.none(),
    st.binary(max_size=40),
    st.sampled_from([b"", b"{", b"[1,", b"\xff\xfe", b"nul"]),
)


@SETTINGS
@given(
    endpoint=st.sampled_from(
        ["click", "link_callback", "create_link", "patch_link", "create_staff"]
    ),
    data=st.data(),
    raw=raws,
)
def test_arbitrary_bodies_get_a_4xx_naming_the_field(
    served: Served, endpoint: str, data: st.DataObject, raw: bytes | None
) -> None:
    s, w = served, served.w
    public = w.link["public_id"]
    routes: dict[str, tuple[str, str, dict[str, str], type[Any]]] = {
        "click": ("POST", f"/v1/links/{public}/calls", {"User-Agent": CHROME_UA}, ClickIn),
        "link_callback": (
            "POST",
            f"/v1/links/{public}/callbacks",
            {"User-Agent": CHROME_UA},
            CallbackIn,
        ),
        "create_link": ("POST", "/v1/links", w.th, LinkIn),
        "patch_link": ("PATCH", f"/v1/links/{w.link['id']}", w.th, LinkPatch),
        "create_staff": ("POST", "/v1/staff", w.th, StaffIn),
    }
    method, path, headers, model = routes[endpoint]
    body = data.draw(bodies(model))
    # drawn whatever the answer: what hypothesis draws must not depend on the server (a click
    # the click limits refuse when an example is replayed draws nothing more)
    after_body = data.draw(bodies(CallbackIn)) if endpoint == "click" else None
    r = s.run(_post(s, method, path, headers, body, raw))
    check_answer(r)
    if endpoint == "click" and r.status_code == 201:  # do not leave calls ringing
        token = r.json()["token"]
        call_id = r.json()["call_id"]
        hang = s.run(s.api.c.post(f"/v1/calls/{call_id}/hangup", headers=bearer(token)))
        assert hang.status_code == 200, hang.text
        after = s.run(
            _post(
                s,
                "POST",
                f"/v1/calls/{call_id}/callback",
                bearer(token),
                after_body,
                None,
            )
        )
        check_answer(after)


# --- WebSocket messages ----------------------------------------------------------------------

messages = st.one_of(
    json_values,
    st.builds(
        lambda kind, extra: {"type": kind, **extra},
        st.sampled_from(sorted(SIGNAL_TYPES) + ["ping", "auth", "presence", "ready", "error"]),
        st.dictionaries(
            st.sampled_from(["sdp", "candidate", "from", "seq", "status", "token", "x"]),
            json_values,
            max_size=3,
        ),
    ),
).map(lambda m: json.dumps(m))
frames = st.one_of(messages, messages, st.text(max_size=30), st.binary(max_size=30))

CLEAN_CLOSES = {1000, 1003, 1008, 1009, 4400, 4401, 4403, 4404, 4409}


async def _open(url: str, token: str) -> tuple[ClientConnection, list[dict[str, Any]]]:
    ws = await connect(url, open_timeout=WAIT)
    await ws.send(json.dumps({"type": "auth", "token": token}))
    return ws, []


async def _until_pong(ws: ClientConnection) -> list[dict[str, Any]]:
    """Send a ping; the messages that come before its pong."""
    await ws.send(json.dumps({"type": "ping"}))
    seen = []
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
        if message.get("type") == "pong":
            return seen
        seen.append(message)


def _closed_cleanly(e: ConnectionClosed) -> None:
    assert e.rcvd is not None, "closed without a close frame"
    assert e.rcvd.code in CLEAN_CLOSES, (e.rcvd.code, e.rcvd.reason)


@SETTINGS
@given(sent=st.lists(frames, min_size=1, max_size=6), console=st.booleans())
def test_arbitrary_websocket_messages_get_clean_errors(
    served: Served, sent: list[str | bytes], console: bool
) -> None:
    s, w = served, served.w
    if console:
        url, token = f"{s.ws}/v1/staff/events", w.sh["Authorization"][7:]
    else:  # one ringing call for all examples (clicks are limited per visitor and link)
        if s.visitor is None:
            r = s.run(
                s.api.c.patch(f"/v1/links/{w.link['id']}", json={"ring_timeout": 600}, headers=w.th)
            )
            assert r.status_code == 200, r.text
            r = s.run(
                s.api.c.post(
                    f"/v1/links/{w.link['public_id']}/calls", headers={"User-Agent": CHROME_UA}
                )
            )
            assert r.status_code == 201, r.text
            s.visitor = (f"{s.ws}{r.json()['signal']}", r.json()["token"])
        url, token = s.visitor

    async def talk() -> None:
        ws, _ = await _open(url, token)
        try:
            greeting = await _until_pong(ws)  # authenticated, greeted
            assert console or greeting[0]["status"] == "ringing", greeting
            for frame in sent:
                await ws.send(frame)
            for message in await _until_pong(ws):
                assert message["type"] in (
                    "error",
                    "call",
                    "ring",
                    "ringing",
                    "presence",
                    "callbacks",
                ), message
                if message["type"] == "error":
                    assert message["code"] == "invalid" and isinstance(message["message"], str)
        except ConnectionClosed as e:  # binary frames, too many bad messages: a clean close
            _closed_cleanly(e)
        finally:
            await ws.close()

    async def available_again() -> None:  # the messages may have set the member away
        ws, _ = await _open(url, token)
        await _until_pong(ws)
        for message in ({"type": "presence", "status": "available"}, {"type": "ready"}):
            await ws.send(json.dumps(message))
        await _until_pong(ws)
        await ws.close()

    s.run(talk())
    if console:
        s.run(available_again())


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(first=frames)
def test_arbitrary_first_messages_close_cleanly(served: Served, first: str | bytes) -> None:
    s = served

    async def talk() -> None:
        ws = await connect(f"{s.ws}/v1/staff/events", open_timeout=WAIT)
        try:
            await ws.send(first)
            while True:
                message = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
                assert message["type"] == "error" and message["message"], message
        except ConnectionClosed as e:
            _closed_cleanly(e)

    s.run(talk())
