"""Tenant isolation over HTTP: tenant B (its API key, its staff, its visitor tokens) gets a 404
on every one of tenant A's ids, exactly as for an id that does not exist, never sees A's items
in a list, and A's records are unchanged afterwards. Both storage back-ends.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.test_api import (  # noqa: F401 (api, store: fixtures shared with test_api)
    OPH,
    Api,
    World,
    api,
    bearer,
    click,
    err,
    store,
    world,
)
from tests.test_store import pg  # noqa: F401 (the shared PostgreSQL fixture)


@dataclass
class AB:
    api: Api
    a: World
    b: World
    a_call: dict[str, Any]
    b_call: dict[str, Any]


@pytest.fixture
async def ab(api: Api) -> AB:  # noqa: F811 (the fixture imported above)
    a = await world(api, "Alpha")
    b = await world(api, "Beta")
    return AB(api, a, b, await click(api, a), await click(api, b))


async def _snapshot(client: httpx.AsyncClient, a: World) -> list[Any]:
    out = []
    for path in ("/v1/staff", "/v1/links", "/v1/calls"):
        out.append((await client.get(path, headers=a.th)).json())
    return out


async def test_tenant_endpoints_hide_other_tenants_ids(ab: AB) -> None:
    hc, a, b = ab.api.c, ab.a, ab.b
    before = await _snapshot(hc, a)
    a_token_id = ab.a_call["iceServers"][0]["username"].partition(":")[2]
    s, lk, c = a.staff, a.link["id"], ab.a_call["call_id"]
    attempts: list[tuple[str, str, dict[str, Any] | None]] = [
        ("GET", f"/v1/staff/{s}", None),
        ("PATCH", f"/v1/staff/{s}", {"name": "Mallory"}),
        ("POST", f"/v1/staff/{s}/token", None),
        ("DELETE", f"/v1/staff/{s}", None),
        ("GET", f"/v1/links/{lk}", None),
        ("PATCH", f"/v1/links/{lk}", {"active": False}),
        ("DELETE", f"/v1/links/{lk}", None),
        ("GET", f"/v1/calls/{c}", None),
        ("POST", f"/v1/tokens/{a_token_id}/revoke", None),
    ]
    for method, path, body in attempts:
        mine = await hc.request(method, path, json=body, headers=b.th)
        missing = await hc.request(
            method,
            path.replace(s, "x" * 32)
            .replace(lk, "y" * 32)
            .replace(c, "z" * 32)
            .replace(a_token_id, "t" * 32),
            json=body,
            headers=b.th,
        )
        err(mine, 404, "not_found")
        err(missing, 404, "not_found")
        assert mine.json() == missing.json()
    assert await _snapshot(hc, a) == before
    # referencing A's staff from B's link is the same refusal as an unknown id
    r = await hc.post("/v1/links", json={"name": "L", "ring_staff": [s]}, headers=b.th)
    assert "unknown staff member" in err(r, 422, "invalid")
    r = await hc.patch(f"/v1/links/{b.link['id']}", json={"ring_staff": [s]}, headers=b.th)
    err(r, 422, "invalid")
    # A's token still works: B's revoke did nothing
    r = await hc.post(f"/v1/calls/{c}/hangup", headers=bearer(ab.a_call["token"]))
    assert r.json()["status"] == "abandoned"


async def test_lists_show_only_own_items(ab: AB) -> None:
    hc, a, b = ab.api.c, ab.a, ab.b
    for w, other, call, other_call in ((a, b, ab.a_call, ab.b_call), (b, a, ab.b_call, ab.a_call)):
        staff = (await hc.get("/v1/staff", headers=w.th)).json()
        assert [x["id"] for x in staff] == [w.staff]
        links = (await hc.get("/v1/links", headers=w.th)).json()
        assert [x["id"] for x in links] == [w.link["id"]]
        calls = (await hc.get("/v1/calls", headers=w.th)).json()["calls"]
        assert [x["id"] for x in calls] == [call["call_id"]]
        for status in ("ringing", "missed"):
            page = await hc.get("/v1/calls", params={"status": status}, headers=w.th)
            assert other_call["call_id"] not in page.text
        ringing = (await hc.get("/v1/ringing", headers=w.sh)).json()
        assert [x["call"]["id"] for x in ringing] == [call["call_id"]]
        assert other.staff not in str(staff) and other.link["id"] not in str(links)


async def test_staff_and_visitor_tokens_stay_in_their_tenant(ab: AB) -> None:
    hc, a, b = ab.api.c, ab.a, ab.b
    c = ab.a_call["call_id"]
    for action in ("answer", "reject", "hangup"):
        err(await hc.post(f"/v1/calls/{c}/{action}", headers=b.sh), 404, "not_found")
    err(await hc.post(f"/v1/calls/{c}/hangup", headers=bearer(ab.b_call["token"])), 404)
    call = (await hc.get(f"/v1/calls/{c}", headers=a.th)).json()
    assert call["status"] == "ringing"
    assert (await hc.post(f"/v1/calls/{c}/answer", headers=a.sh)).status_code == 200


async def test_operator_key_paths_are_per_tenant(ab: AB) -> None:
    hc, a, b = ab.api.c, ab.a, ab.b
    r = await hc.post(f"/v1/tenants/{a.tenant}/keys", headers=OPH)
    a_key = r.json()
    err(await hc.delete(f"/v1/tenants/{b.tenant}/keys/{a_key['id']}", headers=OPH), 404)
    assert (await hc.get("/v1/staff", headers=bearer(a_key["key"]))).status_code == 200
    # a tenant key is never an operator key, even for its own tenant
    err(await hc.get(f"/v1/tenants/{a.tenant}", headers=a.th), 401)
    err(await hc.post(f"/v1/tenants/{b.tenant}/keys", headers=a.th), 401)


async def test_privacy_endpoints_stay_in_their_tenant(ab: AB) -> None:
    hc, a, b = ab.api.c, ab.a, ab.b
    c = ab.a_call["call_id"]
    ref = "ann@example.com"
    r = await hc.patch(f"/v1/calls/{c}", json={"visitor_ref": ref}, headers=a.th)
    assert r.status_code == 200, r.text
    a_export = (await hc.get("/v1/subjects", params={"call_id": c}, headers=a.th)).json()
    a_audit = (await hc.get("/v1/audit", headers=a.th)).json()
    key = a_export["calls"][0]["visitor_key"]
    # another tenant's call id: a 404 exactly like a missing one, on every endpoint
    attempts: list[tuple[str, str, dict[str, str], dict[str, Any] | None]] = [
        ("PATCH", f"/v1/calls/{c}", {}, {"visitor_ref": "mallory"}),
        ("GET", "/v1/subjects", {"call_id": c}, None),
        ("PATCH", "/v1/subjects", {"call_id": c}, {"visitor_ref": "mallory"}),
        ("DELETE", "/v1/subjects", {"call_id": c}, None),
        ("DELETE", "/v1/subjects", {"call_id": c, "mode": "delete"}, None),
    ]
    for method, path, params, body in attempts:
        mine = await hc.request(method, path, params=params, json=body, headers=b.th)
        missing = await hc.request(
            method,
            path.replace(c, "z" * 32),
            params={k: v.replace(c, "z" * 32) for k, v in params.items()},
            json=body,
            headers=b.th,
        )
        err(mine, 404, "not_found")
        err(missing, 404, "not_found")
        assert mine.json() == missing.json()
    # another tenant's identifier or visitor key finds nothing, changes nothing
    for params in ({"ref": ref}, {"key": key}):
        got = (await hc.get("/v1/subjects", params=params, headers=b.th)).json()
        assert got["calls"] == []
        r = await hc.patch("/v1/subjects", params=params, json={"visitor_os": "X"}, headers=b.th)
        assert r.json()["calls"] == []
        for mode in ("fields", "delete"):
            r = await hc.delete("/v1/subjects", params={**params, "mode": mode}, headers=b.th)
            assert r.json()["calls"] == []
    # A's records and audit log are as they were; B's log holds B's acts only
    after = (await hc.get("/v1/subjects", params={"call_id": c}, headers=a.th)).json()
    assert after["calls"] == a_export["calls"]
    a_log = (await hc.get("/v1/audit", headers=a.th)).json()["entries"]
    assert a_log[: len(a_audit["entries"])] == a_audit["entries"]
    assert {e["action"] for e in a_log[len(a_audit["entries"]) :]} == {"access"}
    b_log = (await hc.get("/v1/audit", headers=b.th)).json()["entries"]
    assert b_log and not {e["seq"] for e in b_log} & {e["seq"] for e in a_log}
    assert c not in str(b_log)


async def test_call_logs_stay_in_their_tenant(ab: AB) -> None:
    from tests.test_calllogs import send, summary

    hc, a, b = ab.api.c, ab.a, ab.b
    c, bc = ab.a_call["call_id"], ab.b_call["call_id"]
    out = await send(ab.api, [summary(1, ab.a_call["token_id"]), summary(2, ab.b_call["token_id"])])
    assert out["stored"] == 2
    a_detail = (await hc.get(f"/v1/calllogs/{c}", headers=a.th)).json()
    assert a_detail["id"] == c and len(a_detail["allocations"]) == 1
    # A's call: a 404 for B, exactly like a missing one
    mine = await hc.get(f"/v1/calllogs/{c}", headers=b.th)
    missing = await hc.get(f"/v1/calllogs/{'z' * 32}", headers=b.th)
    err(mine, 404, "not_found")
    assert mine.json() == missing.json()
    # B's lists, exports and analytics hold B's calls only, whatever the filters name
    a_ids = (c, a.link["id"], a.staff)
    for params in ({}, {"link": a.link["id"]}, {"staff": a.staff}, {"mos_below": 5}):
        got = (await hc.get("/v1/calllogs", params=params, headers=b.th)).json()["calls"]
        assert [x["id"] for x in got] in ([bc], [])
        text = (await hc.get("/v1/calllogs.csv", params=params, headers=b.th)).text
        assert not any(x in text for x in a_ids)
    for by in ("none", "link", "staff"):
        r = await hc.get("/v1/analytics", params={"by": by}, headers=b.th)
        assert r.status_code == 200 and r.json()["totals"]["calls"] == 1
        assert not any(x in r.text for x in a_ids)
    # tenants never see the cross-tenant aggregates, nor post summaries
    err(await hc.get("/v1/operator/aggregates", headers=b.th), 401)
    err(
        await hc.post("/v1/nodes/summaries", json={"node_id": "n1", "summaries": []}, headers=b.th),
        401,
    )
    assert (await hc.get(f"/v1/calllogs/{c}", headers=a.th)).json() == a_detail
