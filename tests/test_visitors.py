"""What the visitor's page and the call button ask, through the real app (httpx over ASGI)
on SQLite and PostgreSQL: link status and CORS, the click's media and ``nobody_available``,
callback requests with and without a call (and the data-subject requests covering them), the
connection check, fresh ICE credentials."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from control.models import Presence
from tests import test_api, test_store
from tests.test_api import (
    CHROME_UA,
    OPH,
    Api,
    World,
    bearer,
    beat,
    click,
    err,
    new_tenant,
    world,
)

# fixtures: the app on both back-ends, over the shared PostgreSQL
api, store, pg = test_api.api, test_api.store, test_store.pg

ORIGIN = {"Origin": "https://shop.example"}
ACAO = "access-control-allow-origin"


async def status(api: Api, w: World, **kw: Any) -> dict[str, Any]:
    r = await api.c.get(f"/v1/links/{w.link['public_id']}/status", headers=ORIGIN, **kw)
    assert r.status_code == 200, r.text
    assert r.headers[ACAO] == "*" and "access-control-allow-credentials" not in r.headers
    assert r.headers["cache-control"] == "no-store"
    out: dict[str, Any] = r.json()
    return out


async def seen(api: Api, w: World, staff_id: str | None = None, **fields: Any) -> None:
    """The member's console was active just now (and any other state fields)."""
    changes = {"seen_at": api.clock.t, **fields}
    assert await api.store.set_staff_fields(w.tenant, staff_id or w.staff, changes)


async def test_link_status_states_and_cors(api: Api) -> None:
    w = await world(api)
    got = await status(api, w)
    assert got == {
        "link": w.link["public_id"],
        "name": "Sales",
        "business": "Acme",
        "media": ["voice", "video"],
        "state": "unavailable",  # nobody's console was seen
        "next_open": None,
        "timezone": None,
        "relay_only": True,
    }
    await seen(api, w)
    assert (await status(api, w))["state"] == "open"
    api.clock.t += 91  # the console went quiet
    assert (await status(api, w))["state"] == "unavailable"
    await seen(api, w, presence=Presence.AWAY)
    assert (await status(api, w))["state"] == "unavailable"
    await seen(api, w, presence=Presence.AVAILABLE, wrapup_until=api.clock.t + 10)
    assert (await status(api, w))["state"] == "unavailable"
    api.clock.t += 10
    await seen(api, w)
    assert (await status(api, w))["state"] == "open"

    # closed: Mondays 09:00-17:00 in Berlin; T0 is a Tuesday evening
    hours = {"timezone": "Europe/Berlin", "windows": [[0, 540, 1020]]}
    await api.c.patch(f"/v1/links/{w.link['id']}", json={"hours": hours}, headers=w.th)
    got = await status(api, w)
    assert got["state"] == "closed" and got["timezone"] == "Europe/Berlin"
    assert got["next_open"] == datetime(2023, 11, 20, 8, 0, tzinfo=UTC).timestamp()
    await api.c.patch(f"/v1/links/{w.link['id']}", json={"active": False}, headers=w.th)
    assert (await status(api, w))["state"] == "inactive"
    r = await api.c.get("/v1/links/nope/status", headers=ORIGIN)
    err(r, 404, "not_found")
    assert r.headers[ACAO] == "*"

    # the click answers CORS too, errors included; nothing else does
    r = await api.c.post(f"/v1/links/{w.link['public_id']}/calls", headers=ORIGIN)
    err(r, 409, "link_inactive")
    assert r.headers[ACAO] == "*"
    for r in (
        await api.c.get("/v1/links", headers={**w.th, **ORIGIN}),
        await api.c.get("/healthz", headers=ORIGIN),
        await api.c.post(f"/v1/links/{w.link['public_id']}/callbacks", headers=ORIGIN, json={}),
    ):
        assert ACAO not in r.headers, r.url
    # preflights: answered for the two, with Content-Type allowed; refused elsewhere
    pre = {**ORIGIN, "Access-Control-Request-Method": "POST"}
    for path, method in (("status", "GET"), ("calls", "POST")):
        r = await api.c.options(f"/v1/links/{w.link['public_id']}/{path}", headers=pre)
        assert r.status_code == 204
        assert r.headers[ACAO] == "*" and method in r.headers["access-control-allow-methods"]
        assert r.headers["access-control-allow-headers"] == "Content-Type"
        assert "access-control-allow-credentials" not in r.headers
    r = await api.c.options("/v1/links", headers=pre)
    assert r.status_code == 405 and ACAO not in r.headers


async def test_click_media_reference_and_nobody_available(api: Api) -> None:
    w = await world(api)
    body = {"click_limits": {"visitor_burst": 100}}  # one test client clicks many times
    assert (await api.c.patch(f"/v1/tenants/{w.tenant}", json=body, headers=OPH)).is_success
    got = await click(api, w, json={"media": "video", "lang": "de-DE"})
    assert got["media"] == "video" and got["relay_only"] is True
    assert got["ring_timeout"] == 45 and got["staff_name"] is None
    ref = got["call_ref"]
    assert len(ref) == 9 and ref[4] == "-" and ref.replace("-", "").isalnum()
    call = (await api.c.get(f"/v1/calls/{got['call_id']}", headers=w.th)).json()
    assert call["call_ref"] == ref and call["media"] == "video"
    assert (await click(api, w))["media"] == "voice"  # the link's first
    assert (await click(api, w))["call_ref"] != ref

    url = f"/v1/links/{w.link['public_id']}/calls"
    before = len((await api.c.get("/v1/calls", headers=w.th)).json()["calls"])
    await api.c.patch(f"/v1/links/{w.link['id']}", json={"media": ["voice"]}, headers=w.th)
    assert "media" in err(await api.c.post(url, json={"media": "video"}), 422, "invalid")
    err(await api.c.post(url, json={"media": "screen"}), 422, "invalid")
    err(await api.c.post(url, json={"lang": "<script>"}), 422, "invalid")
    # every member it rings away, in wrap-up or inactive: nobody_available, nothing stored
    await api.store.set_staff_fields(w.tenant, w.staff, {"presence": "away"})
    assert "callback" in err(await api.c.post(url), 409, "nobody_available")
    await api.store.set_staff_fields(
        w.tenant, w.staff, {"presence": "available", "wrapup_until": api.clock.t + 5}
    )
    err(await api.c.post(url), 409, "nobody_available")
    api.clock.t += 5
    assert (await api.c.post(url)).status_code == 201
    await api.c.patch(f"/v1/staff/{w.staff}", json={"active": False}, headers=w.th)
    err(await api.c.post(url), 409, "nobody_available")
    calls = (await api.c.get("/v1/calls", headers=w.th)).json()["calls"]
    assert len(calls) == before + 1
    # a link that names nobody to ring takes calls as before (API users answer their way)
    r = await api.c.post("/v1/links", json={"name": "API"}, headers=w.th)
    assert (await api.c.post(f"/v1/links/{r.json()['public_id']}/calls")).status_code == 201


async def callbacks_of(api: Api, sh: dict[str, str]) -> list[dict[str, Any]]:
    r = await api.c.get("/v1/callbacks", headers=sh)
    assert r.status_code == 200, r.text
    out: list[dict[str, Any]] = r.json()
    return out


async def test_callbacks_with_and_without_a_call(api: Api) -> None:
    w = await world(api)
    other = await world(api, "Globex", node=False)
    url = f"/v1/links/{w.link['public_id']}/callbacks"
    # nobody available (no console seen): a callback instead of a call
    r = await api.c.post(
        url, json={"name": " Eve ", "contact": "+49 30 1234567"}, headers={"User-Agent": CHROME_UA}
    )
    assert r.status_code == 201, r.text
    first = r.json()["call_ref"]
    # bad input names the field and stores nothing
    for body, field in (
        ({"name": "", "contact": "eve@example.com"}, "name"),
        ({"name": "Eve", "contact": "call me"}, "contact"),
        ({"name": "Eve\x00", "contact": "eve@example.com"}, "name"),
        ({"name": "E" * 101, "contact": "eve@example.com"}, "name"),
        ({"name": "Eve"}, "contact"),
    ):
        assert field in err(await api.c.post(url, json=body), 422, "invalid")
    # someone available now: call instead
    await seen(api, w)
    err(await api.c.post(url, json={"name": "Eve", "contact": "e@x.eu"}), 409, "link_open")

    # after a call nobody answered: the (revoked) visitor token still leaves a callback
    got = await click(api, w)
    vh = bearer(got["token"])
    r = await api.c.post(
        f"/v1/calls/{got['call_id']}/callback",
        json={"name": "Al", "contact": "al@x.eu"},
        headers=vh,
    )
    err(r, 409, "invalid_state")  # still ringing
    await api.c.post(f"/v1/calls/{got['call_id']}/hangup", headers=vh)
    body = {"name": "Al", "contact": "al@x.eu"}
    api.clock.t += 1
    r = await api.c.post(f"/v1/calls/{got['call_id']}/callback", json=body, headers=vh)
    assert r.status_code == 201 and r.json() == {"call_ref": got["call_ref"]}
    err(await api.c.post(f"/v1/calls/{got['call_id']}/callback", json=body, headers=vh), 409)
    err(await api.c.post(f"/v1/calls/{got['call_id']}/callback", json=body), 401)
    second = await click(api, w)
    err(  # another call's token
        await api.c.post(
            f"/v1/calls/{got['call_id']}/callback", json=body, headers=bearer(second["token"])
        ),
        404,
    )
    # an answered call takes none
    await api.c.post(f"/v1/calls/{second['call_id']}/answer", headers=w.sh)
    r = await api.c.post(
        f"/v1/calls/{second['call_id']}/callback", json=body, headers=bearer(second["token"])
    )
    err(r, 409, "invalid_state")

    # staff see them oldest first, mark them done once; other tenants see nothing
    listed = await callbacks_of(api, w.sh)
    assert [c["call"]["call_ref"] for c in listed] == [first, got["call_ref"]]
    assert listed[0]["name_contact"] == "Eve · +49 30 1234567"
    assert (
        listed[0]["call"]["status"] == "missed"
        and listed[0]["call"]["end_reason"] == "nobody available"
    )
    assert listed[0]["call"]["visitor_browser"] == "Chrome" and listed[0]["link_name"] == "Sales"
    assert (
        listed[1]["name_contact"] == "Al · al@x.eu" and listed[1]["call"]["status"] == "abandoned"
    )
    assert await callbacks_of(api, other.sh) == []
    done_id = listed[0]["call"]["id"]
    err(await api.c.post(f"/v1/callbacks/{done_id}/done", headers=other.sh), 404)
    r = await api.c.post(f"/v1/callbacks/{done_id}/done", headers=w.sh)
    assert r.status_code == 200
    assert r.json()["callback_state"] == "done" and r.json()["callback_done_by"] == w.staff
    err(await api.c.post(f"/v1/callbacks/{done_id}/done", headers=w.sh), 409, "conflict")
    assert [c["call"]["id"] for c in await callbacks_of(api, w.sh)] == [got["call_id"]]

    # the data-subject requests cover them: export by the name and contact, then erase
    r = await api.c.get("/v1/subjects", params={"ref": "Al · al@x.eu"}, headers=w.th)
    assert [c["id"] for c in r.json()["calls"]] == [got["call_id"]]
    r = await api.c.delete("/v1/subjects", params={"ref": "Al · al@x.eu"}, headers=w.th)
    assert r.status_code == 200, r.text
    assert await callbacks_of(api, w.sh) == []
    call = (await api.c.get(f"/v1/calls/{got['call_id']}", headers=w.th)).json()
    assert call["callback_state"] == "open" and call["visitor_browser"] is None


async def test_anonymous_callbacks_are_throttled(api: Api) -> None:
    w = await world(api)
    url = f"/v1/links/{w.link['public_id']}/callbacks"
    body = {"name": "Eve", "contact": "eve@example.com"}
    for _ in range(5):
        assert (await api.c.post(url, json=body)).status_code == 201
    r = await api.c.post(url, json=body)
    assert "try again" in err(r, 429, "throttled")
    assert r.headers["retry-after"] == "20"
    api.clock.t += 20
    assert (await api.c.post(url, json=body)).status_code == 201
    metrics = await api.metrics()
    assert 'clickacall_control_throttle_refusals_total{what="callback"} 1.0' in metrics
    assert 'clickacall_control_callbacks_requested_total{via="link"} 6.0' in metrics


async def test_connection_check(api: Api) -> None:
    w = await world(api)
    got = await click(api, w)
    vh = bearer(got["token"])
    path = f"/v1/calls/{got['call_id']}/check"
    verdict = {
        "verdict": "partial",
        "transports": {"udp": "fail", "tcp": "ok", "tls": "skipped"},
        "ms": 812,
    }
    r = await api.c.post(path, json=verdict, headers=vh)
    assert r.status_code == 204, r.text
    call = (await api.c.get(f"/v1/calls/{got['call_id']}", headers=w.th)).json()
    assert call["visitor_check"] == verdict
    for bad in (
        {"verdict": "great", "ms": 1},
        {"verdict": "ok", "ms": -1},
        {"verdict": "ok", "ms": 1, "transports": {"quic": "ok"}},
    ):
        err(await api.c.post(path, json=bad, headers=vh), 422, "invalid")
    err(await api.c.post(path, json=verdict, headers=w.sh), 404)  # a console token
    err(await api.c.post(path, json=verdict), 401)
    await api.c.post(f"/v1/calls/{got['call_id']}/hangup", headers=vh)
    err(await api.c.post(path, json=verdict, headers=vh), 401)  # over: the token is revoked


async def test_fresh_ice_repicks_an_unhealthy_node(api: Api) -> None:
    w = await world(api)
    got = await click(api, w)
    vh = bearer(got["token"])
    path = f"/v1/calls/{got['call_id']}/ice"
    r = await api.c.post(path, headers=vh)
    assert r.status_code == 200, r.text
    ice = r.json()
    assert ice["relay_node"] == "n1"
    username = ice["iceServers"][0]["username"]
    assert username.endswith(f":{got['token_id']}")  # revoking the call's token ends it
    # n1 stops heartbeating (15 s is the timeout), n2 comes: the next restart moves the call
    api.clock.t += 20
    await beat(api, "n2")
    r = await api.c.post(path, headers=vh)
    assert r.json()["relay_node"] == "n2"
    assert "n2.example" in r.json()["iceServers"][0]["urls"][0]
    call = (await api.c.get(f"/v1/calls/{got['call_id']}", headers=w.th)).json()
    assert call["relay_node"] == "n2"
    # the member who answered may ask too, with the call token; a console token may not
    ans = (await api.c.post(f"/v1/calls/{got['call_id']}/answer", headers=w.sh)).json()
    r = await api.c.post(path, headers=bearer(ans["token"]))
    assert r.status_code == 200 and r.json()["relay_node"] == "n2"
    err(await api.c.post(path, headers=w.sh), 404)
    other = await click(api, w)
    err(await api.c.post(path, headers=bearer(other["token"])), 404)
    await api.c.post(f"/v1/calls/{got['call_id']}/hangup", headers=vh)
    err(await api.c.post(path, headers=vh), 401)  # over
    # no healthy node at all: 503
    api.clock.t += 20
    err(
        await api.c.post(f"/v1/calls/{other['call_id']}/ice", headers=bearer(other["token"])),
        503,
        "no_relay",
    )


async def test_status_of_another_tenant_link_is_only_by_public_id(api: Api) -> None:
    w = await world(api)
    _, gh = await new_tenant(api, "Globex")
    # the public id is the only handle; the tenant's own id does not work here
    err(await api.c.get(f"/v1/links/{w.link['id']}/status"), 404)
    r = await api.c.get(f"/v1/links/{w.link['public_id']}/status", headers=gh)
    assert r.status_code == 200
