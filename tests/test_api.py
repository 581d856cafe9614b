"""The control plane's HTTP API, in process (httpx over ASGI) against SQLite and PostgreSQL,
plus one test of the real server process (``python -m control``).

A fake clock drives expiry; the store comes from the same fixtures as tests/test_store.py.
"""

from __future__ import annotations

import asyncio
import copy
import os
import random
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import httpx
import pytest
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

from control.api import ROUTERS
from control.api.relays import ua_family
from control.app import create_app
from control.ids import CURSOR_PATTERN, ID_PATTERN, MAX_PAGE
from control.keys import new_operator_key, verify_operator_key
from control.metrics import metrics_listener
from control.server import UsageError, load_settings
from control.settings import ControlSettings
from control.store import Store, load_migrations, open_store
from relay.auth import rest_password
from tests.test_store import pg  # noqa: F401 (the shared PostgreSQL fixture)

ROOT = Path(__file__).resolve().parent.parent
OP_KEY, OP = new_operator_key()
OPH = {"Authorization": f"Bearer {OP_KEY}"}
TOKEN_KEY = b"test-token-key-0123456789"
RELAY_SECRET = b"relay-secret"
NODE_SECRET = "node-secret"
NODEH = {"Authorization": f"Bearer {NODE_SECRET}"}
T0 = 1_700_000_000.0
CHROME_UA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko)"
    " Chrome/126.0.0.0 Safari/537.36"
)


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> float:
        return self.t


@dataclass
class Api:
    c: httpx.AsyncClient
    clock: Clock
    store: Store
    app: Any = None  # the application, for :meth:`metrics`

    async def metrics(self) -> str:
        """``GET /metrics`` from the app's separate metrics listener (``--metrics``)."""
        assert self.app is not None, "this Api was made without its app"
        return await app_metrics(self.app)


async def app_metrics(app: Any) -> str:
    """``GET /metrics`` from ``app``'s separate metrics listener (``--metrics``)."""
    transport = httpx.ASGITransport(app=metrics_listener(app))
    async with httpx.AsyncClient(transport=transport, base_url="http://metrics") as m:
        r = await m.get("/metrics")
        assert r.status_code == 200, r.text
        return r.text


@pytest.fixture(params=["sqlite", "postgres"])
async def store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('api')}/api.db"
    else:
        server = request.getfixturevalue("pg")
        name = f"a_{uuid.uuid4().hex[:16]}"
        conn = await asyncpg.connect(server.dsn())
        try:
            await conn.execute(f"CREATE DATABASE {name}")
        finally:
            await conn.close()
        url = server.dsn(name)
    s = await open_store(url)
    try:
        yield s
    finally:
        await s.close()


def make_settings(clock: Clock, **kw: Any) -> ControlSettings:
    base: dict[str, Any] = {
        "db_url": "unused",
        "token_keys": [TOKEN_KEY],
        "operator_keys": [OP],
        "relay_secrets": [RELAY_SECRET],
        "node_secrets": [NODE_SECRET],
        "clock": clock,
        "rng": random.Random(7),
    }
    base.update(kw)
    return ControlSettings(**base)


@pytest.fixture
async def api(store: Store) -> AsyncIterator[Api]:
    clock = Clock()
    app = create_app(make_settings(clock), store)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield Api(c, clock, store, app)


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


ERROR_KEYS = {"code", "message", "field", "reason", "params"}  # every error body has these


def err(r: httpx.Response, status: int, code: str | None = None) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == ERROR_KEYS
    if code is not None:
        assert body["error"]["code"] == code, body
    return str(body["error"]["message"])


async def new_tenant(api: Api, name: str = "Acme", **kw: Any) -> tuple[str, dict[str, str]]:
    r = await api.c.post("/v1/tenants", json={"name": name, **kw}, headers=OPH)
    assert r.status_code == 201, r.text
    body = r.json()
    return body["tenant"]["id"], bearer(body["api_key"]["key"])


async def beat(api: Api, node_id: str = "n1", region: str = "eu", **kw: Any) -> dict[str, Any]:
    body = {"node_id": node_id, "region": region, "urls": [f"turn:{node_id}.example:3478"], **kw}
    r = await api.c.post("/v1/nodes/heartbeat", json=body, headers=NODEH)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


@dataclass
class World:
    tenant: str
    th: dict[str, str]  # tenant key header
    staff: str
    sh: dict[str, str]  # staff console token header
    link: dict[str, Any]


async def world(api: Api, name: str = "Acme", node: bool = True) -> World:
    tid, th = await new_tenant(api, name)
    r = await api.c.post("/v1/staff", json={"name": "Ann", "groups": ["sales"]}, headers=th)
    assert r.status_code == 201, r.text
    staff = r.json()["id"]
    r = await api.c.post(f"/v1/staff/{staff}/token", headers=th)
    assert r.status_code == 201, r.text
    sh = bearer(r.json()["token"])
    r = await api.c.post("/v1/links", json={"name": "Sales", "ring_staff": [staff]}, headers=th)
    assert r.status_code == 201, r.text
    if node:
        await beat(api)
    return World(tid, th, staff, sh, r.json())


async def click(api: Api, w: World, **kw: Any) -> dict[str, Any]:
    r = await api.c.post(
        f"/v1/links/{w.link['public_id']}/calls", headers={"User-Agent": CHROME_UA}, **kw
    )
    assert r.status_code == 201, r.text
    out: dict[str, Any] = r.json()
    return out


# --- health, spec, errors ---------------------------------------------------------------------


async def test_health_ready_openapi(api: Api) -> None:
    assert (await api.c.get("/healthz")).json() == {"status": "ok"}
    assert (await api.c.get("/readyz")).json() == {"status": "ready"}
    spec = (await api.c.get("/openapi.json")).json()
    for path in ("/v1/tenants", "/v1/links", "/v1/calls/{call_id}/answer", "/v1/credentials"):
        assert path in spec["paths"]


def test_one_id_pattern_and_one_page_limit_across_the_api() -> None:
    """Every route, the dashboard's unlisted ones too, takes ids, cursors and page sizes as
    control.ids defines them: no router grows a pattern or a page limit of its own."""
    routes = []
    for router in ROUTERS:
        for route in router.routes:
            if isinstance(route, APIRoute):
                route = copy.copy(route)  # the spec leaves out include_in_schema=False routes
                route.include_in_schema = True
                routes.append(route)
    spec = get_openapi(title="all routes", version="0", routes=routes)
    limits, ids, cursors = 0, 0, 0
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            for p in op.get("parameters", []):
                schema = p["schema"].get("anyOf", [p["schema"]])[0]
                where = f"{method.upper()} {path} {p['name']}"
                if p["name"] == "limit":
                    limits += 1
                    assert schema.get("maximum") == MAX_PAGE, where
                elif p["name"] == "cursor":
                    cursors += 1
                    assert schema.get("pattern") == CURSOR_PATTERN, where
                elif p["name"].endswith("_id") or p["name"] in ("link", "staff", "endpoint"):
                    if path.startswith("/v1/dashboard/calls") and p["in"] == "query":
                        continue  # the page's form text, checked by dashcalls.read_filters
                    ids += 1
                    assert schema.get("pattern") == ID_PATTERN, where
    assert limits >= 4 and cursors >= 4 and ids >= 40, (limits, cursors, ids)


async def test_unknown_route_and_method_are_json(api: Api) -> None:
    err(await api.c.get("/v1/nope"), 404, "not_found")
    err(await api.c.put("/healthz"), 405, "method_not_allowed")


# --- operator ------------------------------------------------------------------------------------


async def test_tenants(api: Api) -> None:
    tid, th = await new_tenant(api)
    r = await api.c.get(f"/v1/tenants/{tid}", headers=OPH)
    assert r.json()["allowed_regions"] == ["eu"] and r.json()["retention_months"] == 60
    assert r.json()["name"] == "Acme"
    err(await api.c.get("/v1/tenants/nope", headers=OPH), 404, "not_found")
    tid2, _ = await new_tenant(api, "Beta", allowed_regions=["eu", "us-east"], retention_months=12)
    assert (await api.c.get(f"/v1/tenants/{tid2}", headers=OPH)).json()["retention_months"] == 12


@pytest.mark.parametrize(
    "body",
    [
        {"name": ""},
        {"name": "x" * 201},
        {"name": "A", "retention_months": 61},
        {"name": "A", "retention_months": 0},
        {"name": "A", "allowed_regions": []},
        {"name": "A", "allowed_regions": ["EU!"]},
        {"name": "A", "colour": "red"},
        {},
    ],
)
async def test_tenant_validation(api: Api, body: dict[str, Any]) -> None:
    err(await api.c.post("/v1/tenants", json=body, headers=OPH), 422, "invalid")


async def test_operator_auth(api: Api) -> None:
    _, th = await new_tenant(api)
    body = {"name": "X"}
    err(await api.c.post("/v1/tenants", json=body), 401, "unauthorized")
    for header in ("Bearer", "Basic abc", "Bearer ck_op_zz", "", "Bearer   "):
        err(await api.c.post("/v1/tenants", json=body, headers={"Authorization": header}), 401)
    other, _ = new_operator_key()
    err(await api.c.post("/v1/tenants", json=body, headers=bearer(other)), 401)
    err(await api.c.post("/v1/tenants", json=body, headers=th), 401)  # a tenant key
    r = await api.c.post(
        "/v1/tenants", content=b"{not json", headers={**OPH, "Content-Type": "application/json"}
    )
    err(r, 422, "invalid")


async def test_api_keys(api: Api) -> None:
    tid, th = await new_tenant(api)
    r = await api.c.post(f"/v1/tenants/{tid}/keys", headers=OPH)
    assert r.status_code == 201
    second = r.json()
    h2 = bearer(second["key"])
    assert (await api.c.get("/v1/staff", headers=h2)).status_code == 200
    r = await api.c.delete(f"/v1/tenants/{tid}/keys/{second['id']}", headers=OPH)
    assert r.status_code == 204
    err(await api.c.get("/v1/staff", headers=h2), 401, "unauthorized")
    assert (await api.c.get("/v1/staff", headers=th)).status_code == 200
    err(await api.c.delete(f"/v1/tenants/{tid}/keys/{second['id']}", headers=OPH), 404)
    err(await api.c.delete(f"/v1/tenants/{tid}/keys/ck_000000000000", headers=OPH), 404)
    err(await api.c.post("/v1/tenants/nope/keys", headers=OPH), 404)
    err(await api.c.post(f"/v1/tenants/{tid}/keys", headers=th), 401)


# --- staff and links ----------------------------------------------------------------------------------


async def test_staff_crud(api: Api) -> None:
    _, th = await new_tenant(api)
    err(await api.c.get("/v1/staff"), 401)
    r = await api.c.post("/v1/staff", json={"name": " Bo ", "groups": ["a", "a", "b"]}, headers=th)
    assert r.status_code == 201
    s = r.json()
    assert s["name"] == "Bo" and s["groups"] == ["a", "b"] and s["active"] is True
    assert [x["id"] for x in (await api.c.get("/v1/staff", headers=th)).json()] == [s["id"]]
    assert (await api.c.get(f"/v1/staff/{s['id']}", headers=th)).json() == s
    r = await api.c.patch(f"/v1/staff/{s['id']}", json={"active": False}, headers=th)
    assert r.json()["active"] is False and r.json()["name"] == "Bo"
    err(await api.c.post(f"/v1/staff/{s['id']}/token", headers=th), 409, "inactive")
    err(await api.c.patch(f"/v1/staff/{s['id']}", json={"name": ""}, headers=th), 422)
    err(await api.c.post("/v1/staff", json={"name": "x", "role": "boss"}, headers=th), 422)
    assert (await api.c.delete(f"/v1/staff/{s['id']}", headers=th)).status_code == 204
    for method in ("get", "delete"):
        err(await getattr(api.c, method)(f"/v1/staff/{s['id']}", headers=th), 404)
    err(await api.c.patch(f"/v1/staff/{s['id']}", json={"active": True}, headers=th), 404)
    err(await api.c.post(f"/v1/staff/{s['id']}/token", headers=th), 404)
    err(await api.c.get(f"/v1/staff/{'x' * 200}", headers=th), 422)


async def test_staff_token(api: Api) -> None:
    w = await world(api)
    r = await api.c.post(f"/v1/staff/{w.staff}/token", json={"ttl": 60}, headers=w.th)
    assert r.status_code == 201 and r.json()["expires_at"] == T0 + 60
    h = bearer(r.json()["token"])
    assert (await api.c.get("/v1/ringing", headers=h)).json() == []
    api.clock.t += 61
    assert "expired" in err(await api.c.get("/v1/ringing", headers=h), 401)
    err(await api.c.post(f"/v1/staff/{w.staff}/token", json={"ttl": 5}, headers=w.th), 422)
    err(await api.c.get("/v1/ringing", headers=bearer("v1.garbage.x")), 401)
    err(await api.c.get("/v1/ringing", headers=w.th), 401)  # an API key is not a session token


async def test_links_crud(api: Api) -> None:
    w = await world(api)
    link = w.link
    assert link["url"] == f"/c/{link['public_id']}" and link["active"] is True
    assert link["media"] == ["voice", "video"] and link["ring_timeout"] == 45.0
    assert [k["id"] for k in (await api.c.get("/v1/links", headers=w.th)).json()] == [link["id"]]
    assert (await api.c.get(f"/v1/links/{link['id']}", headers=w.th)).json() == link
    hours = {"timezone": "Europe/Paris", "windows": [[0, 540, 1020], [4, 1320, 120]]}
    r = await api.c.patch(
        f"/v1/links/{link['id']}",
        json={"hours": hours, "media": ["voice", "screen"], "ring_timeout": 30, "active": False},
        headers=w.th,
    )
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["hours"] == hours and got["media"] == ["voice", "screen"] and not got["active"]
    r = await api.c.patch(f"/v1/links/{link['id']}", json={"always_open": True}, headers=w.th)
    assert r.json()["hours"] is None and r.json()["ring_timeout"] == 30
    assert (await api.c.get(f"/v1/links/{link['id']}", headers=w.th)).json() == r.json()
    assert (await api.c.delete(f"/v1/links/{link['id']}", headers=w.th)).status_code == 204
    err(await api.c.get(f"/v1/links/{link['id']}", headers=w.th), 404)
    err(await api.c.delete(f"/v1/links/{link['id']}", headers=w.th), 404)
    err(await api.c.patch(f"/v1/links/{link['id']}", json={"name": "x"}, headers=w.th), 404)


@pytest.mark.parametrize(
    "body",
    [
        {"name": "L", "media": []},
        {"name": "L", "media": ["fax"]},
        {"name": "L", "ring_staff": ["unknown-staff"]},
        {"name": "L", "hours": {"timezone": "Mars/Olympus", "windows": []}},
        {"name": "L", "hours": {"windows": [[7, 0, 60]]}},
        {"name": "L", "hours": {"windows": [[0, 60, 60]]}},
        {"name": "L", "hours": {"windows": [[0, 60]]}},
        {"name": "L", "ring_timeout": 1},
        {"name": "L", "ring_timeout": "soon"},
    ],
)
async def test_link_validation(api: Api, body: dict[str, Any]) -> None:
    _, th = await new_tenant(api)
    err(await api.c.post("/v1/links", json=body, headers=th), 422, "invalid")


# --- a call, end to end -------------------------------------------------------------------------------


async def test_click_answer_hangup(api: Api) -> None:
    w = await world(api)
    got = await click(api, w)
    call_id = got["call_id"]
    (turn,) = got["iceServers"]
    assert turn["urls"] == ["turn:n1.example:3478"]
    expiry, _, token_id = turn["username"].partition(":")
    assert float(expiry) == got["expires_at"] > T0 + 3600
    assert turn["credential"] == rest_password(RELAY_SECRET, turn["username"])
    r = await api.c.get(f"/v1/calls/{call_id}", headers=w.th)
    call = r.json()
    assert call["status"] == "ringing" and call["created_at"] == T0
    assert call["visitor_prefix"] == "127.0.0.0/24"
    assert (call["visitor_browser"], call["visitor_os"]) == ("Chrome", "Windows")
    assert call["relay_node"] == "n1" and call["relay_region"] == "eu"
    assert CHROME_UA not in r.text
    ringing = (await api.c.get("/v1/ringing", headers=w.sh)).json()
    assert [x["call"]["id"] for x in ringing] == [call_id]
    assert ringing[0]["link_name"] == "Sales"

    api.clock.t += 5
    r = await api.c.post(f"/v1/calls/{call_id}/answer", headers=w.sh)
    assert r.status_code == 200, r.text
    ans = r.json()
    assert ans["call"]["status"] == "answered" and ans["call"]["answered_by"] == w.staff
    assert ans["call"]["answered_at"] == T0 + 5
    assert ans["iceServers"][0]["credential"] == rest_password(
        RELAY_SECRET, ans["iceServers"][0]["username"]
    )
    assert "already answered" in err(
        await api.c.post(f"/v1/calls/{call_id}/answer", headers=w.sh), 409, "already_answered"
    )
    assert (await api.c.get("/v1/ringing", headers=w.sh)).json() == []
    err(await api.c.post(f"/v1/calls/{call_id}/reject", headers=w.sh), 409, "already_answered")

    api.clock.t += 60
    vh = bearer(got["token"])
    r = await api.c.post(f"/v1/calls/{call_id}/hangup", headers=vh)
    assert r.status_code == 200 and r.json()["status"] == "ended"
    assert r.json()["end_reason"] == "visitor hung up" and r.json()["ended_at"] == T0 + 65
    assert "revoked" in err(await api.c.post(f"/v1/calls/{call_id}/hangup", headers=vh), 401)
    # ending the call revoked both parties' tokens, so the relays tear down both allocations
    sh = bearer(ans["token"])
    assert "revoked" in err(await api.c.post(f"/v1/calls/{call_id}/hangup", headers=sh), 401)
    revoked = (await beat(api, revocations_since=T0 + 64))["revoked"]
    assert {got["token_id"], ans["token_id"]} <= set(revoked)


async def test_staff_hangup_and_first_answer_wins(api: Api) -> None:
    w = await world(api)
    r = await api.c.post("/v1/staff", json={"name": "Bob", "groups": ["sales"]}, headers=w.th)
    bob = r.json()["id"]
    await api.c.patch(f"/v1/links/{w.link['id']}", json={"ring_groups": ["sales"]}, headers=w.th)
    bh = bearer((await api.c.post(f"/v1/staff/{bob}/token", headers=w.th)).json()["token"])
    call_id = (await click(api, w))["call_id"]
    assert len((await api.c.get("/v1/ringing", headers=bh)).json()) == 1
    assert (await api.c.post(f"/v1/calls/{call_id}/answer", headers=bh)).status_code == 200
    err(await api.c.post(f"/v1/calls/{call_id}/answer", headers=w.sh), 409, "already_answered")
    err(await api.c.post(f"/v1/calls/{call_id}/hangup", headers=w.sh), 403, "forbidden")
    r = await api.c.post(f"/v1/calls/{call_id}/hangup", headers=bh)
    assert r.json()["status"] == "ended" and r.json()["end_reason"] == "staff hung up"


async def test_concurrent_answers_one_wins(api: Api) -> None:
    w = await world(api)
    heads = [w.sh]
    for name in ("Bob", "Cy", "Di"):
        r = await api.c.post("/v1/staff", json={"name": name, "groups": ["sales"]}, headers=w.th)
        r = await api.c.post(f"/v1/staff/{r.json()['id']}/token", headers=w.th)
        heads.append(bearer(r.json()["token"]))
    await api.c.patch(f"/v1/links/{w.link['id']}", json={"ring_groups": ["sales"]}, headers=w.th)
    call_id = (await click(api, w))["call_id"]
    results = await asyncio.gather(
        *(api.c.post(f"/v1/calls/{call_id}/answer", headers=h) for h in heads)
    )
    assert sorted(r.status_code for r in results) == [200, 409, 409, 409]
    winner = next(r for r in results if r.status_code == 200).json()
    stored = (await api.c.get(f"/v1/calls/{call_id}", headers=w.th)).json()
    assert stored["answered_by"] == winner["call"]["answered_by"]


async def test_call_scoped_staff_token_stays_on_its_call(api: Api) -> None:
    w = await world(api)
    first = (await click(api, w))["call_id"]
    second = (await click(api, w))["call_id"]
    scoped = bearer((await api.c.post(f"/v1/calls/{first}/answer", headers=w.sh)).json()["token"])
    for action in ("answer", "reject", "hangup"):
        err(await api.c.post(f"/v1/calls/{second}/{action}", headers=scoped), 404, "not_found")
    r = await api.c.post(f"/v1/calls/{first}/hangup", headers=scoped)
    assert r.json()["status"] == "ended"


async def test_click_refusals(api: Api) -> None:
    w = await world(api, node=False)
    pub, lid = w.link["public_id"], w.link["id"]
    err(await api.c.post("/v1/links/nope/calls"), 404, "not_found")
    assert "allowed regions (eu)" in err(
        await api.c.post(f"/v1/links/{pub}/calls"), 503, "no_relay"
    )
    await beat(api, "us1", "us")  # outside the tenant's regions: never chosen
    await beat(api, "eu-d", "eu", draining=True)
    err(await api.c.post(f"/v1/links/{pub}/calls"), 503, "no_relay")
    await beat(api, "eu1", "eu")
    api.clock.t += 60  # its heartbeat goes stale
    err(await api.c.post(f"/v1/links/{pub}/calls"), 503, "no_relay")
    await beat(api, "eu1", "eu")
    assert (await api.c.post(f"/v1/links/{pub}/calls")).status_code == 201
    err(await api.c.post(f"/v1/links/{pub}/calls", json={"region_hint": "Mars!"}), 422)

    await api.c.patch(f"/v1/links/{lid}", json={"active": False}, headers=w.th)
    assert "not active" in err(await api.c.post(f"/v1/links/{pub}/calls"), 409, "link_inactive")
    closed = {"active": True, "hours": {"timezone": "UTC", "windows": []}}
    await api.c.patch(f"/v1/links/{lid}", json=closed, headers=w.th)
    assert "opening hours" in err(await api.c.post(f"/v1/links/{pub}/calls"), 409, "link_closed")


async def test_missed_lazily_and_abandoned(api: Api) -> None:
    w = await world(api)
    call_id = (await click(api, w))["call_id"]
    api.clock.t += 45
    await beat(api)
    call = (await api.c.get(f"/v1/calls/{call_id}", headers=w.th)).json()
    assert call["status"] == "missed" and call["ended_at"] == T0 + 45
    assert (await api.c.get("/v1/ringing", headers=w.sh)).json() == []
    err(await api.c.post(f"/v1/calls/{call_id}/answer", headers=w.sh), 409, "invalid_state")

    got = await click(api, w)
    err(await api.c.post(f"/v1/calls/{call_id}/hangup", headers=bearer(got["token"])), 404)
    r = await api.c.post(f"/v1/calls/{got['call_id']}/hangup", headers=bearer(got["token"]))
    assert r.json()["status"] == "abandoned"
    err(await api.c.post(f"/v1/calls/{got['call_id']}/hangup"), 401)


async def test_every_rung_member_must_decline(api: Api) -> None:
    w = await world(api)
    r = await api.c.post("/v1/staff", json={"name": "Bo", "groups": ["sales"]}, headers=w.th)
    bo = r.json()["id"]
    bh = bearer((await api.c.post(f"/v1/staff/{bo}/token", headers=w.th)).json()["token"])
    lid = w.link["id"]
    await api.c.patch(f"/v1/links/{lid}", json={"ring_groups": ["sales"]}, headers=w.th)
    got = await click(api, w)
    call_id = got["call_id"]
    r = await api.c.post(f"/v1/calls/{call_id}/reject", headers=w.sh)
    assert r.status_code == 200 and r.json()["status"] == "ringing", r.text
    assert r.json()["declined_by"] == [w.staff]
    assert (await api.c.get("/v1/ringing", headers=w.sh)).json() == []  # Ann declined it
    assert [c["call"]["id"] for c in (await api.c.get("/v1/ringing", headers=bh)).json()] == [
        call_id
    ]
    r = await api.c.post(f"/v1/calls/{call_id}/reject", headers=w.sh)  # again: no change
    assert r.json()["status"] == "ringing" and r.json()["declined_by"] == [w.staff]
    api.clock.t += 1
    r = await api.c.post(f"/v1/calls/{call_id}/reject", headers=bh)
    assert r.json()["status"] == "rejected" and r.json()["declined_by"] == [w.staff, bo]
    call = (await api.c.get(f"/v1/calls/{call_id}", headers=w.th)).json()
    assert call["status"] == "rejected" and call["declined_by"] == [w.staff, bo]
    # the visitor's token (and so its relay allocation) ends with the call
    assert "revoked" in err(
        await api.c.post(f"/v1/calls/{call_id}/hangup", headers=bearer(got["token"])), 401
    )


async def test_reject(api: Api) -> None:
    w = await world(api)
    r = await api.c.post("/v1/staff", json={"name": "Cy"}, headers=w.th)
    cy = r.json()["id"]
    ch = bearer((await api.c.post(f"/v1/staff/{cy}/token", headers=w.th)).json()["token"])
    call_id = (await click(api, w))["call_id"]
    assert (await api.c.get("/v1/ringing", headers=ch)).json() == []
    err(await api.c.post(f"/v1/calls/{call_id}/reject", headers=ch), 403, "forbidden")
    err(await api.c.post(f"/v1/calls/{call_id}/answer", headers=ch), 403, "forbidden")
    r = await api.c.post(f"/v1/calls/{call_id}/reject", headers=w.sh)
    assert r.json()["status"] == "rejected"
    err(await api.c.post(f"/v1/calls/{call_id}/reject", headers=w.sh), 409, "invalid_state")
    err(await api.c.post("/v1/calls/nope/answer", headers=w.sh), 404)
    visitor = (await click(api, w))["token"]
    err(await api.c.get("/v1/ringing", headers=bearer(visitor)), 403, "forbidden")
    await api.c.patch(f"/v1/staff/{w.staff}", json={"active": False}, headers=w.th)
    err(await api.c.get("/v1/ringing", headers=w.sh), 401)


async def test_list_calls(api: Api) -> None:
    w = await world(api)
    ids = []
    for _ in range(3):
        await beat(api)
        ids.append((await click(api, w))["call_id"])
        api.clock.t += 10
    api.clock.t += 20  # the first call's ring timeout (45 s) has now passed
    await beat(api)
    r = await api.c.post(
        f"/v1/calls/{ids[0]}/hangup", headers=bearer((await click(api, w))["token"])
    )
    err(r, 404)
    r = await api.c.get("/v1/calls", headers=w.th)
    assert len(r.json()["calls"]) == 4 and r.json()["next_cursor"] is None
    page = (await api.c.get("/v1/calls", params={"limit": 2}, headers=w.th)).json()
    assert len(page["calls"]) == 2 and page["next_cursor"]
    rest = await api.c.get(
        "/v1/calls", params={"limit": 2, "cursor": page["next_cursor"]}, headers=w.th
    )
    assert [c["id"] for c in rest.json()["calls"]][-2:] == [ids[1], ids[0]]
    r = await api.c.get("/v1/calls", params={"since": T0 + 10, "until": T0 + 20}, headers=w.th)
    assert [c["id"] for c in r.json()["calls"]] == [ids[1]]
    r = await api.c.get("/v1/calls", params={"status": "ringing"}, headers=w.th)
    assert len(r.json()["calls"]) == 3  # the first is missed by now (read lazily)
    r = await api.c.get("/v1/calls", params={"status": "missed"}, headers=w.th)
    assert {c["id"] for c in r.json()["calls"]} == set(ids[:1])
    err(await api.c.get("/v1/calls", params={"cursor": "garbage"}, headers=w.th), 422)
    err(await api.c.get("/v1/calls", params={"cursor": "abc~x1"}, headers=w.th), 400)
    err(await api.c.get("/v1/calls", params={"limit": 0}, headers=w.th), 422)
    err(await api.c.get("/v1/calls", params={"status": "bogus"}, headers=w.th), 422)
    err(await api.c.get("/v1/calls", params={"since": "yesterday"}, headers=w.th), 422)
    err(await api.c.get("/v1/calls/nope", headers=w.th), 404)


# --- credentials, tokens, nodes ------------------------------------------------------------------------


async def test_credentials_and_revocation(api: Api) -> None:
    w = await world(api, node=False)
    assert "no relay node" in err(await api.c.post("/v1/credentials", headers=w.th), 503)
    await beat(api)
    r = await api.c.post("/v1/credentials", json={"ttl": 600}, headers=w.th)
    assert r.status_code == 201, r.text
    cred = r.json()
    assert cred["expires_at"] == T0 + 600
    (turn,) = cred["iceServers"]
    assert turn["username"] == f"{int(T0) + 600}:{cred['token_id']}"
    assert turn["credential"] == rest_password(RELAY_SECRET, turn["username"])
    err(await api.c.post("/v1/credentials", json={"ttl": 10}, headers=w.th), 422)
    err(await api.c.post("/v1/credentials", headers=OPH), 401)

    api.clock.t += 1
    r = await api.c.post(f"/v1/tokens/{cred['token_id']}/revoke", headers=w.th)
    assert r.json() == {"id": cred["token_id"], "revoked_at": T0 + 1}
    again = await api.c.post(f"/v1/tokens/{cred['token_id']}/revoke", headers=w.th)
    assert again.json() == r.json()
    err(await api.c.post("/v1/tokens/nope/revoke", headers=w.th), 404)
    got = await click(api, w)
    visitor_tid = got["iceServers"][0]["username"].partition(":")[2]
    api.clock.t += 1
    await api.c.post(f"/v1/tokens/{visitor_tid}/revoke", headers=w.th)
    err(await api.c.post(f"/v1/calls/{got['call_id']}/hangup", headers=bearer(got["token"])), 401)
    assert (await beat(api, revocations_since=T0))["revoked"] == [cred["token_id"], visitor_tid]
    hb = await beat(api, revocations_since=T0 + 2)
    assert hb == {"now": T0 + 2, "revoked": [visitor_tid]}


async def test_node_registry_for_the_operator(api: Api) -> None:
    err(await api.c.get("/v1/nodes"), 401)
    assert (await api.c.get("/v1/nodes", headers=OPH)).json() == []
    await beat(api, "n1", allocations=3, packet_rate=1200.5, cpu=0.25)
    api.clock.t += 20
    await beat(api, "n2", region="us", draining=True)
    nodes = {n["id"]: n for n in (await api.c.get("/v1/nodes", headers=OPH)).json()}
    assert nodes["n1"]["healthy"] is False  # 20 s without a heartbeat
    assert nodes["n1"]["allocations"] == 3 and nodes["n1"]["cpu"] == 0.25
    assert nodes["n1"]["urls"] == ["turn:n1.example:3478"]
    assert nodes["n2"]["healthy"] is True and nodes["n2"]["draining"] is True
    assert nodes["n2"]["region"] == "us" and nodes["n2"]["last_heartbeat"] == T0 + 20
    _, th = await new_tenant(api)
    err(await api.c.get("/v1/nodes", headers=th), 401)  # a tenant key is not the operator's


async def test_heartbeat_errors(api: Api) -> None:
    body = {"node_id": "n1", "region": "eu", "urls": ["turn:a:3478"]}
    err(await api.c.post("/v1/nodes/heartbeat", json=body), 401)
    err(await api.c.post("/v1/nodes/heartbeat", json=body, headers=bearer("wrong")), 401)
    bad: dict[str, Any]
    for bad in (
        {"urls": ["http://a"]},
        {"urls": []},
        {"region": "Europe West"},
        {"cpu": -1},
        {"node_id": "a/b"},
    ):
        r = await api.c.post("/v1/nodes/heartbeat", json={**body, **bad}, headers=NODEH)
        err(r, 422, "invalid")


async def test_unconfigured_secrets_are_503(store: Store) -> None:
    app = create_app(make_settings(Clock(), relay_secrets=[], node_secrets=[]), store)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as c:
        body = {"node_id": "n1", "region": "eu", "urls": ["turn:a:3478"]}
        err(await c.post("/v1/nodes/heartbeat", json=body, headers=NODEH), 503)
        _, th = await new_tenant(Api(c, Clock(), store))
        err(await c.post("/v1/credentials", headers=th), 503)


async def test_hostile_input_is_4xx(api: Api) -> None:
    w = await world(api)
    nul = "a\x00b"
    cases = [
        ("POST", "/v1/tenants", {"name": nul}, OPH),
        ("POST", "/v1/staff", {"name": nul}, w.th),
        ("POST", "/v1/staff", {"name": "x", "groups": [nul]}, w.th),
        ("POST", "/v1/links", {"name": "x", "ring_groups": ["g\x01h"]}, w.th),
        ("POST", "/v1/links", {"name": "x", "hours": {"timezone": nul}}, w.th),
        ("POST", "/v1/links", {"name": "x", "hours": {"timezone": "../etc/passwd"}}, w.th),
        (
            "POST",
            "/v1/nodes/heartbeat",
            {"node_id": "n", "region": "eu", "urls": [f"turn:{nul}"]},
            NODEH,
        ),
        ("POST", "/v1/links", [1, 2, 3], w.th),
        ("POST", "/v1/links", {"name": "x", "media": "voice"}, w.th),
    ]
    for method, path, body, headers in cases:
        r = await api.c.request(method, path, json=body, headers=headers)
        err(r, 422, "invalid")
    for raw in (b'{"ring_timeout": 1e999}', b'{"ring_timeout": NaN}', b'{"name": "\\ud800"}'):
        headers = {**w.th, "Content-Type": "application/json"}
        r = await api.c.patch(f"/v1/links/{w.link['id']}", content=raw, headers=headers)
        assert r.status_code in (400, 422), r.text
    for path in ("/v1/staff/a%00b", "/v1/links/a%20b", "/v1/calls/%E2%82%AC"):
        err(await api.c.get(path, headers=w.th), 422, "invalid")
    for cursor in ("1.0~a\x00", "x" * 500, "1.0~"):
        err(await api.c.get("/v1/calls", params={"cursor": cursor}, headers=w.th), 422)
    err(await api.c.post("/v1/links/a%00/calls"), 422)
    big = {"name": "x", "ring_staff": ["s"] * 1000}
    err(await api.c.post("/v1/links", json=big, headers=w.th), 422)
    r = await api.c.post(
        f"/v1/links/{w.link['public_id']}/calls", headers={"User-Agent": "x" * 9000}
    )
    assert r.status_code == 201


def test_ua_family() -> None:
    firefox = "Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0"
    safari_ios = (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15"
        " (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
    )
    edge_mac = (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko)"
        " Chrome/126.0 Safari/537.36 Edg/126.0"
    )
    android = "Mozilla/5.0 (Linux; Android 14) AppleWebKit/537.36 Chrome/126.0 Mobile Safari/537.36"
    assert ua_family(CHROME_UA) == ("Chrome", "Windows")
    assert ua_family(firefox) == ("Firefox", "Linux")
    assert ua_family(safari_ios) == ("Safari", "iOS")
    assert ua_family(edge_mac) == ("Edge", "macOS")
    assert ua_family(android) == ("Chrome", "Android")
    assert ua_family("curl/8.0") == (None, None)
    assert ua_family(None) == (None, None)


# --- the real server process -------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_migrations_by_hand(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLICKACALL_")}

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "control", *argv],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    db = f"sqlite:///{tmp_path}/by-hand.db"
    first = run("--migrate", "--db", db)
    assert first.returncode == 0, first.stderr
    every = ", ".join(f"{m.version:04d}" for m in load_migrations("sqlite"))
    assert first.stdout.strip() == f"migrations applied: {every}"
    again = run("--migrate", "--db", db)
    assert again.stdout.strip() == "migrations applied: none (already up to date)"
    bad = run("--migrate", "--db", "mysql://x")
    assert bad.returncode == 2 and bad.stderr.startswith("clickacall control: error: --db")
    broken = run("--migrate", "--db", f"sqlite:///{tmp_path}/no/such/dir/x.db")
    assert broken.returncode == 1 and "cannot open SQLite database" in broken.stderr


def test_new_operator_key_works_with_its_hash() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "control", "--new-operator-key"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    key = out.split("secret): ")[1].split()[0]
    digest = out.split("--operator-key-hash ")[1].split()[0]
    settings, _, _ = load_settings(
        ["--operator-key-hash", digest, "--token-key", "k" * 20], "clickacall control"
    )
    assert verify_operator_key(key, settings.operator_keys).id == digest.split(":")[0]


def test_server_process(tmp_path: Path) -> None:
    port = _free_port()
    env = {**os.environ, "CLICKACALL_TOKEN_KEY": "a-token-key-of-some-length"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "control",
            "--listen",
            f"127.0.0.1:{port}",
            "--db",
            f"sqlite:///{tmp_path}/control.db",
            "--metrics",
            f"127.0.0.1:{_free_port()}",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                r = httpx.get(f"{base}/healthz", timeout=1)
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    out = proc.stdout.read() if proc.stdout else ""
                    pytest.fail(f"control did not start (rc={proc.poll()}):\n{out}")
                time.sleep(0.1)
        assert r.json() == {"status": "ok"}
        assert httpx.get(f"{base}/readyz").json() == {"status": "ready"}
        assert "/v1/links/{public_id}/calls" in httpx.get(f"{base}/openapi.json").json()["paths"]
        err(httpx.get(f"{base}/v1/staff"), 401, "unauthorized")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert (tmp_path / "control.db").exists()


def test_load_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    key, op = new_operator_key()
    env_key, env_op = new_operator_key()
    for name in list(os.environ):
        if name.startswith("CLICKACALL_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("CLICKACALL_OPERATOR_KEY", env_key)
    monkeypatch.setenv("CLICKACALL_AUTH_SECRET", "from-env")
    monkeypatch.setenv("CLICKACALL_TOKEN_KEY", "env-token-key-0123456789")
    argv = [
        "--listen",
        "[::1]:9000",
        "--db",
        "postgresql://db/x",
        "--token-key",
        "t" * 16,
        "--operator-key-hash",
        f"{op.id}:{op.key_hash.hex()}",
        "--node-secret",
        "ns",
    ]
    settings, listen, logs = load_settings(argv, "x")
    assert listen == ("::1", 9000) and logs == ("info", False)
    assert load_settings([*argv, "--log-json", "--log-level", "debug"], "x")[2] == ("debug", True)
    assert settings.db_url == "postgresql://db/x" and settings.token_keys == [b"t" * 16]
    assert settings.operator_keys == [op, env_op]
    assert settings.relay_secrets == [b"from-env"] and settings.node_secrets == ["ns"]
    for bad in (
        ["--operator-key-hash", "nope"],
        ["--operator-key-hash", f"{op.id}:abcd"],
        ["--ring-timeout", "0"],
        ["--listen", "127.0.0.1"],
    ):
        with pytest.raises(UsageError):
            load_settings(bad, "x")
    monkeypatch.setenv("CLICKACALL_OPERATOR_KEY", "not-a-key")
    with pytest.raises(UsageError, match="CLICKACALL_OPERATOR_KEY"):
        load_settings([], "x")


def test_server_bad_flags() -> None:
    for argv, text in (
        (["--db", "mysql://x"], "--db 'mysql://x' must be"),
        (["--listen", "127.0.0.1:99999"], "--listen"),
        (["--bogus"], "unrecognized arguments"),
        (["--token-key", "short"], "at least 16 bytes"),
    ):
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLICKACALL_")}
        env.setdefault("CLICKACALL_TOKEN_KEY", "a-token-key-of-some-length")
        proc = subprocess.run(
            [sys.executable, "-m", "control", *argv],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.startswith("clickacall control: error: ") and text in proc.stderr
        assert len(proc.stderr.splitlines()) == 1


def test_region_map_file(tmp_path: Path) -> None:
    good = tmp_path / "regions.toml"
    good.write_text(
        'default = "eu"\n'
        '[prefixes]\n"203.0.113.0/24" = "us-east"\n"2001:db8::/32" = "ap"\n'
        '[preferences]\n"us-east" = ["us-west", "eu"]\n'
    )
    settings, _, _ = load_settings(["--token-key", "k" * 20, "--region-map", str(good)], "x")
    rm = settings.region_map
    assert rm.region_for("203.0.113.0/24") == "us-east"
    assert rm.region_for("2001:db8:1::/48") == "ap"
    assert rm.region_for("198.51.100.0/24") == "eu"
    assert rm.ranked("us-east", ["eu", "us-west", "us-east"]) == ["us-east", "us-west", "eu"]
    assert load_settings(["--token-key", "k" * 20], "x")[0].region_map.region_for("1.2.3.4") is None
    for text, message in (
        (None, "No such file"),
        ("default = ", "not valid TOML"),
        ('regions = "eu"', "unknown key(s) regions"),
        ('[prefixes]\n"not-a-net" = "eu"', "is not a CIDR"),
        ('[preferences]\neu = "us"', "lists of regions"),
    ):
        path = tmp_path / "bad.toml"
        path.unlink(missing_ok=True)
        if text is not None:
            path.write_text(text)
        with pytest.raises(UsageError, match=re.escape(message)):
            load_settings(["--token-key", "k" * 20, "--region-map", str(path)], "x")


async def test_relay_credentials_use_the_secret_of_the_nodes_region(store: Store) -> None:
    """A region with its own secret (--relay-secret-for) gets credentials only its nodes
    accept; others use the shared one; with neither, a click is a 503 that stores nothing."""
    us_secret = b"us-only-secret"
    clock = Clock()
    settings = make_settings(clock, region_secrets={"us": [us_secret, b"us-old"]})
    app = create_app(settings, store)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as c:
        api = Api(c, clock, store)
        await beat(api, "n-eu", "eu")
        await beat(api, "n-us", "us")
        for region, secret in (("eu", RELAY_SECRET), ("us", us_secret)):
            _, th = await new_tenant(api, f"T-{region}", allowed_regions=[region])
            r = await c.post("/v1/credentials", json={"ttl": 600}, headers=th)
            assert r.status_code == 201, r.text
            (turn,) = r.json()["iceServers"]
            assert turn["urls"] == [f"turn:n-{region}.example:3478"]
            assert turn["credential"] == rest_password(secret, turn["username"])
            staff = (await c.post("/v1/staff", json={"name": "A"}, headers=th)).json()["id"]
            link = (
                await c.post("/v1/links", json={"name": "L", "ring_staff": [staff]}, headers=th)
            ).json()
            r = await c.post(f"/v1/links/{link['public_id']}/calls")
            assert r.status_code == 201, r.text
            (turn,) = r.json()["iceServers"]
            assert turn["credential"] == rest_password(secret, turn["username"])

    # no shared secret: a region without its own cannot be served, and nothing is stored
    app = create_app(
        make_settings(clock, relay_secrets=[], region_secrets={"us": [us_secret]}), store
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as c:
        api = Api(c, clock, store)
        _, th = await new_tenant(api, "T-eu2", allowed_regions=["eu"])
        staff = (await c.post("/v1/staff", json={"name": "A"}, headers=th)).json()["id"]
        link = (
            await c.post("/v1/links", json={"name": "L", "ring_staff": [staff]}, headers=th)
        ).json()
        r = await c.post(f"/v1/links/{link['public_id']}/calls")
        assert "region eu" in err(r, 503, "unavailable")
        assert (await c.get("/v1/calls", headers=th)).json()["calls"] == []


def test_relay_secret_for_flag() -> None:
    settings, _, _ = load_settings(
        [
            "--token-key",
            "k" * 20,
            "--relay-secret",
            "shared",
            "--relay-secret-for",
            "us-east=a=b",
            "--relay-secret-for",
            "us-east=old",
            "--relay-secret-for",
            "ap=x",
        ],
        "x",
    )
    assert settings.relay_secrets == [b"shared"]
    assert settings.region_secrets == {"us-east": [b"a=b", b"old"], "ap": [b"x"]}
    for bad in ("nosecret", "EU=x", "eu=", "=x", "1eu=x"):
        with pytest.raises(UsageError, match="REGION=SECRET") as info:
            load_settings(["--token-key", "k" * 20, "--relay-secret-for", bad], "x")
        assert "nosecret" not in str(info.value)  # a value without '=' may be a secret
