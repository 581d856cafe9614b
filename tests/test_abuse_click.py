"""Abuse limits on the public click (``POST /v1/links/{public_id}/calls``): token buckets per
visitor key and per link, caps on calls ringing per link and per tenant, each limit set per
tenant through ``PATCH /v1/tenants/{id}``, and the ringing fan-out to consoles costing the same
few database reads however many consoles listen.

In process over httpx's ASGI transport (each visitor its own client address), against both
store back-ends; the fan-out test runs a real uvicorn on loopback with ``websockets`` clients.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from control.app import create_app
from control.settings import ClickLimits
from control.store import Store
from tests.test_api import (
    CHROME_UA,
    OPH,
    Api,
    Clock,
    World,
    bearer,
    beat,
    err,
    make_settings,
    world,
)
from tests.test_api import store as store  # noqa: F401 (both back-ends)
from tests.test_signalling import WAIT, Server, recv_type, server  # noqa: F401
from tests.test_store import pg  # noqa: F401 (the shared PostgreSQL fixture)


@pytest.fixture
async def api(store: Store) -> AsyncIterator[Api]:  # noqa: F811
    clock = Clock()
    app = create_app(make_settings(clock), store)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        c.app = app  # type: ignore[attr-defined]
        yield Api(c, clock, store, app)


def visitor(api: Api, address: str) -> httpx.AsyncClient:
    """A client of the same app from its own address (so its own visitor key)."""
    app = api.c.app  # type: ignore[attr-defined]
    transport = httpx.ASGITransport(app=app, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://test")


async def click_from(c: httpx.AsyncClient, link: dict[str, Any]) -> httpx.Response:
    return await c.post(f"/v1/links/{link['public_id']}/calls", headers={"User-Agent": CHROME_UA})


async def refusals(api: Api) -> dict[str, float]:
    text = await api.metrics()
    found = re.findall(r'clickacall_control_click_refusals_total\{reason="(\w+)"\} (\S+)', text)
    return {k: float(v) for k, v in found}


async def set_limits(api: Api, w: World, **limits: Any) -> dict[str, Any]:
    r = await api.c.patch(f"/v1/tenants/{w.tenant}", json={"click_limits": limits}, headers=OPH)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


async def second_link(api: Api, w: World) -> dict[str, Any]:
    body = {"name": "Support", "ring_staff": [w.staff]}
    r = await api.c.post("/v1/links", json=body, headers=w.th)
    assert r.status_code == 201, r.text
    out: dict[str, Any] = r.json()
    return out


async def test_a_visitor_is_throttled_and_others_still_call(api: Api) -> None:
    w = await world(api)
    d = ClickLimits()
    async with visitor(api, "198.51.100.7") as eve, visitor(api, "203.0.113.9") as ann:
        for _ in range(d.visitor_burst):
            assert (await click_from(eve, w.link)).status_code == 201
        r = await click_from(eve, w.link)
        assert "too many calls from this visitor" in err(r, 429, "throttled")
        assert r.headers["retry-after"] == str(int(d.visitor_interval))
        assert (await click_from(ann, w.link)).status_code == 201  # someone else still calls
        api.clock.t += d.visitor_interval
        assert (await click_from(eve, w.link)).status_code == 201  # one more, refilled
        err(await click_from(eve, w.link), 429, "throttled")
    assert (await refusals(api))["visitor"] == 2.0
    calls = (await api.c.get("/v1/calls", headers=w.th)).json()["calls"]
    assert len(calls) == d.visitor_burst + 2  # a refused click stores nothing


async def test_a_link_is_throttled_per_tenant_limits(api: Api) -> None:
    w = await world(api)
    out = await set_limits(api, w, link_burst=3, link_interval=30)
    assert out["click_limits"] == {"link_burst": 3, "link_interval": 30}
    other = await second_link(api, w)
    clients = [visitor(api, f"198.51.100.{i}") for i in range(1, 6)]
    try:
        for c in clients[:3]:
            assert (await click_from(c, w.link)).status_code == 201
        r = await click_from(clients[3], w.link)
        assert "too many calls on this link" in err(r, 429, "link_throttled")
        assert r.headers["retry-after"] == "30"
        assert (await click_from(clients[4], other)).status_code == 201  # its own bucket
        # the refused visitor lost nothing of its own bucket
        api.clock.t += 30
        await beat(api)  # the relay node is still there
        assert (await click_from(clients[3], w.link)).status_code == 201
    finally:
        for c in clients:
            await c.aclose()
    assert (await refusals(api))["link"] == 1.0


async def test_ringing_caps_per_link_and_per_tenant(api: Api) -> None:
    w = await world(api)
    await set_limits(api, w, ringing_per_link=2, ringing_per_tenant=3)
    other = await second_link(api, w)
    clients = [visitor(api, f"198.51.100.{i}") for i in range(1, 8)]
    try:
        first = await click_from(clients[0], w.link)
        assert first.status_code == 201
        api.clock.t += 5
        assert (await click_from(clients[1], w.link)).status_code == 201
        r = await click_from(clients[2], w.link)
        message = err(r, 429, "link_ringing_limit")
        assert "ringing_per_link" in message and "2 call(s) ringing" in message
        # the first call stops ringing at the latest at its ring timeout (45 s), 40 s from now
        assert r.headers["retry-after"] == "40"
        assert (await click_from(clients[3], other)).status_code == 201  # 3 ringing in all
        message = err(await click_from(clients[4], other), 429, "tenant_ringing_limit")
        assert "ringing_per_tenant" in message
        # a call that stops ringing frees its place
        vh = bearer(first.json()["token"])
        r = await api.c.post(f"/v1/calls/{first.json()['call_id']}/hangup", headers=vh)
        assert r.status_code == 200, r.text
        assert (await click_from(clients[5], w.link)).status_code == 201
        # calls past their ring timeout count no more, settled or not
        api.clock.t += 46
        await beat(api)
        assert (await click_from(clients[6], w.link)).status_code == 201
        # one rings on the link now; 0 is no cap
        await set_limits(api, w, ringing_per_link=1)
        err(await click_from(clients[0], w.link), 429, "link_ringing_limit")
        await set_limits(api, w, ringing_per_link=0, ringing_per_tenant=0)
        assert (await click_from(clients[0], w.link)).status_code == 201
    finally:
        for c in clients:
            await c.aclose()
    got = await refusals(api)
    assert got["ringing_link"] == 2.0 and got["ringing_tenant"] == 1.0


async def test_ringing_caps_hold_for_concurrent_clicks(api: Api) -> None:
    """Clicks arriving at once each count the calls ringing and create one under the tenant's
    ringing lock: exactly the cap rings, every other click gets 429, on both back-ends."""
    w = await world(api)
    other = await second_link(api, w)
    clients = [visitor(api, f"198.51.100.{i}") for i in range(1, 25)]
    try:
        await set_limits(api, w, ringing_per_link=3, ringing_per_tenant=5)
        got = await asyncio.gather(*(click_from(c, w.link) for c in clients[:12]))
        codes = sorted(r.status_code for r in got)
        assert codes == [201] * 3 + [429] * 9, codes
        assert {r.json()["error"]["code"] for r in got if r.status_code == 429} == {
            "link_ringing_limit"
        }
        got = await asyncio.gather(*(click_from(c, other) for c in clients[12:]))
        codes = sorted(r.status_code for r in got)
        assert codes == [201] * 2 + [429] * 10, codes  # 5 in the tenant
        ringing = await api.store.count_ringing(w.tenant, w.link["id"], api.clock.t)
        assert (ringing.link, ringing.tenant) == (3, 5)
    finally:
        for c in clients:
            await c.aclose()


async def test_click_limits_through_the_tenant_patch(api: Api) -> None:
    w = await world(api)
    url = f"/v1/tenants/{w.tenant}"
    r = await api.c.patch(url, json={"click_limits": {"visitor_burst": 0}}, headers=OPH)
    assert "click_limits.visitor_burst" in err(r, 422, "invalid")
    r = await api.c.patch(url, json={"click_limits": {"nope": 1}}, headers=OPH)
    assert "click_limits.nope" in err(r, 422, "invalid")
    err(await api.c.patch(url, json={"name": "X"}, headers=w.th), 401)
    await set_limits(api, w, visitor_burst=1, ringing_per_tenant=50)
    r = await api.c.patch(url, json={"name": "Acme GmbH"}, headers=OPH)
    assert r.json()["click_limits"] == {"visitor_burst": 1, "ringing_per_tenant": 50}
    assert r.json()["name"] == "Acme GmbH" and r.json()["retention_months"] == 60
    async with visitor(api, "198.51.100.1") as eve:
        assert (await click_from(eve, w.link)).status_code == 201
        err(await click_from(eve, w.link), 429, "throttled")
        out = await set_limits(api, w, visitor_burst=None)  # back to the operator's default
        assert out["click_limits"] == {"ringing_per_tenant": 50}
        api.clock.t += 2 * ClickLimits().visitor_interval  # two refills: burst 1 took one
        await beat(api)
        assert (await click_from(eve, w.link)).status_code == 201
        assert (await click_from(eve, w.link)).status_code == 201
    got = (await api.c.get(url, headers=OPH)).json()
    assert got["click_limits"] == {"ringing_per_tenant": 50}
    err(await api.c.patch("/v1/tenants/nope", json={}, headers=OPH), 404, "not_found")


async def test_throttle_memory_is_bounded(store: Store) -> None:  # noqa: F811
    clock = Clock()
    app = create_app(make_settings(clock, click_entries=50), store)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        api = Api(c, clock, store)
        c.app = app  # type: ignore[attr-defined]
        w = await world(api)
        await set_limits(api, w, ringing_per_link=1000, ringing_per_tenant=1000, link_burst=1000)
        for i in range(120):
            async with visitor(api, f"10.0.{i // 200}.{i % 200 + 1}") as v:
                assert (await click_from(v, w.link)).status_code == 201
        assert len(app.state.ctx.clicks) <= 50


# --- the ringing fan-out -----------------------------------------------------------------------


CONSOLES = 8


async def reads(api: Api) -> float:
    text = await api.metrics()
    m = re.search(r'clickacall_control_db_query_duration_seconds_count\{op="read"\} (\S+)', text)
    assert m is not None, text
    return float(m.group(1))


async def test_ringing_fan_out_reads_the_store_once_per_click(server: Server) -> None:  # noqa: F811
    """Every console of the tenant hears a new call ring, for a fixed number of store reads
    however many consoles listen (before: each console re-read every ringing call)."""
    api = server.api
    await beat(api)
    w = await world(api, node=False)
    r = await api.c.patch(
        f"/v1/tenants/{w.tenant}", json={"click_limits": {"link_burst": 1000}}, headers=OPH
    )
    assert r.status_code == 200, r.text
    token = w.sh["Authorization"].removeprefix("Bearer ")
    sockets = []

    async def ring_all() -> float:
        before = await reads(api)
        async with visitor_http(server) as v:
            got = await click_from(v, w.link)
        assert got.status_code == 201, got.text
        for ws in sockets:
            ring = await recv_type(ws, "ring")
            assert ring["call"]["id"] == got.json()["call_id"]
        await asyncio.sleep(0.05)
        return await reads(api) - before

    try:
        counts = []
        for n in (1, CONSOLES, CONSOLES):  # more consoles, then more calls ringing
            while len(sockets) < n:
                ws = await connect(f"{server.ws}/v1/staff/events")
                await ws.send(json.dumps({"type": "auth", "token": token}))
                await recv_type(ws, "callbacks")  # the last of the greeting
                sockets.append(ws)
            counts.append(await ring_all())
    finally:
        for ws in sockets:
            await ws.close()
    # the same reads for one console as for many, with one call ringing or three
    assert max(counts) <= counts[0] + 2, counts


def visitor_http(srv: Server) -> httpx.AsyncClient:
    """A real visitor's client on loopback (three clicks stay within one visitor's burst)."""
    return httpx.AsyncClient(base_url=srv.ws.replace("ws://", "http://"), timeout=WAIT)
