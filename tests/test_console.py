"""The staff console's live side against a real server (uvicorn in this process, both
back-ends): presence, wrap-up and auto-away over ``/v1/staff/events``, two consoles of one
member, sockets closed by sign-out, revocation and deactivation; and relay-only signalling
(control/candidates.py), with the sans-I/O filter tested directly too."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from typing import Any

import httpx
import pytest

from control import accounts, candidates
from control.api import signalling
from control.models import Link, Role
from control.selection import RegionMap
from control.tokens import TokenSigner
from tests import test_api, test_signalling, test_store
from tests.test_api import OPH, Api, World, bearer, click, world
from tests.test_signalling import Server, close_code, recv, recv_type, signal

# fixtures: a real server on both back-ends, over the shared PostgreSQL
server, store, pg = test_signalling.server, test_api.store, test_store.pg

PASSWORD = "a long enough password"


async def events(server: Server, token: str) -> Any:
    """A console socket, past its opening messages (ringing, presence, callbacks)."""
    ws = await signal(server.ws, "/v1/staff/events", token)
    assert (await recv(ws))["type"] == "ringing"
    assert await recv(ws) == {
        "type": "presence",
        "status": "available",
        "wrapup_until": None,
        "reason": None,
    }
    assert await recv(ws) == {"type": "callbacks", "count": 0}
    return ws


def token_of(w: World) -> str:
    return w.sh["Authorization"][7:]


async def test_presence_wrapup_and_auto_away(server: Server) -> None:
    api = server.api
    w = await world(api)
    body = {"click_limits": {"visitor_burst": 100}}  # one test client clicks many times
    assert (await api.c.patch(f"/v1/tenants/{w.tenant}", json=body, headers=OPH)).is_success
    url = f"/v1/links/{w.link['public_id']}/calls"
    console = await events(server, token_of(w))
    member = (await api.c.get(f"/v1/staff/{w.staff}", headers=w.th)).json()
    assert member["seen_at"] is not None  # the socket marks the member seen

    # away by hand: nobody rings, the button says so
    await console.send(json.dumps({"type": "presence", "status": "away"}))
    got = await recv(console)
    assert got == {"type": "presence", "status": "away", "wrapup_until": None, "reason": "manual"}
    assert await recv(console) == {"type": "ringing", "calls": []}
    assert (await api.c.post(url)).json()["error"]["code"] == "nobody_available"
    r = await api.c.get(f"/v1/links/{w.link['public_id']}/status")
    assert r.json()["state"] == "unavailable"
    await console.send(json.dumps({"type": "presence", "status": "available"}))
    assert (await recv_type(console, "presence"))["status"] == "available"
    assert (await api.c.get(f"/v1/links/{w.link['public_id']}/status")).json()["state"] == "open"

    # a call answered and ended: wrap-up keeps new calls off, "ready" ends it
    got = await click(api, w)
    assert (await recv_type(console, "ring"))["call"]["id"] == got["call_id"]
    assert (await api.c.post(f"/v1/calls/{got['call_id']}/answer", headers=w.sh)).status_code == 200
    await recv_type(console, "call")
    await api.c.post(f"/v1/calls/{got['call_id']}/hangup", headers=bearer(got["token"]))
    wrap = await recv_type(console, "presence")
    assert wrap["status"] == "available" and wrap["reason"] is None
    assert 25 < wrap["wrapup_until"] - time.time() <= 30
    assert (await api.c.post(url)).json()["error"]["code"] == "nobody_available"
    await console.send(json.dumps({"type": "ready"}))
    ready = await recv_type(console, "presence")
    assert ready["wrapup_until"] is None and ready["reason"] == "manual"

    # three rings left unanswered: away (reason "missed"); a decline would have reset it
    link = await api.store.get_link(w.tenant, w.link["id"])
    assert isinstance(link, Link)
    link.ring_timeout = 0.3  # the API's minimum is 5 s; the store takes what it is given
    await api.store.update_link(link)

    async def missed() -> None:
        got = await click(api, w)
        await recv_type(console, "ring")
        await asyncio.sleep(0.4)
        call = (await api.c.get(f"/v1/calls/{got['call_id']}", headers=w.th)).json()
        assert call["status"] == "missed"

    await missed()
    got = await click(api, w)
    await recv_type(console, "ring")
    r = await api.c.post(f"/v1/calls/{got['call_id']}/reject", headers=w.sh)
    assert r.json()["status"] == "rejected"  # and the count starts again
    for _ in range(3):
        await missed()
    away = await recv_type(console, "presence")
    assert away == {"type": "presence", "status": "away", "wrapup_until": None, "reason": "missed"}
    member = (await api.c.get(f"/v1/staff/{w.staff}", headers=w.th)).json()
    assert member["presence"] == "away"
    # invalid console messages are answered, not fatal
    await console.send(json.dumps({"type": "presence", "status": "asleep"}))
    assert (await recv_type(console, "error"))["code"] == "invalid"
    await console.send(json.dumps({"type": "ping"}))
    assert (await recv_type(console, "pong")) == {"type": "pong"}
    metrics = await api.metrics()
    assert 'clickacall_control_presence_changes_total{reason="missed",status="away"} 1.0' in metrics
    assert 'clickacall_control_presence_changes_total{reason="call",status="wrapup"} 1.0' in metrics
    await console.close()


async def test_two_consoles_of_one_member_both_ring_and_both_stop(server: Server) -> None:
    api = server.api
    w = await world(api)
    second = (await api.c.post(f"/v1/staff/{w.staff}/token", headers=w.th)).json()["token"]
    tabs = [await events(server, token_of(w)), await events(server, second)]
    got = await click(api, w)
    for tab in tabs:
        assert (await recv_type(tab, "ring"))["call"]["id"] == got["call_id"]
    assert (await api.c.post(f"/v1/calls/{got['call_id']}/answer", headers=w.sh)).status_code == 200
    for tab in tabs:
        stop = await recv_type(tab, "call")
        assert stop == {"type": "call", "call_id": got["call_id"], "status": "answered"}
    # presence set in one tab reaches the other
    await tabs[0].send(json.dumps({"type": "presence", "status": "away"}))
    for tab in tabs:
        assert (await recv_type(tab, "presence"))["status"] == "away"
        await tab.close()


async def test_callbacks_count_reaches_the_console(server: Server) -> None:
    api = server.api
    w = await world(api)
    console = await events(server, token_of(w))
    got = await click(api, w)
    await api.c.post(f"/v1/calls/{got['call_id']}/hangup", headers=bearer(got["token"]))
    body = {"name": "Eve", "contact": "eve@example.com"}
    r = await api.c.post(
        f"/v1/calls/{got['call_id']}/callback", json=body, headers=bearer(got["token"])
    )
    assert r.status_code == 201, r.text
    assert await recv_type(console, "callbacks") == {"type": "callbacks", "count": 1}
    await api.c.post(f"/v1/callbacks/{got['call_id']}/done", headers=w.sh)
    assert await recv_type(console, "callbacks") == {"type": "callbacks", "count": 0}
    await console.close()


async def test_staff_see_the_visitors_region_never_their_prefix(server: Server) -> None:
    """The ringing list shows "browser, OS and region, never an address". Everything a
    staff token or console socket receives about a call leaves the visitor's network prefix
    out and says the region the operator's map places it in; the business's API key still
    reads the prefix (the call log, export and erasure cover it)."""
    api = server.api
    server.app.state.ctx.settings.region_map = RegionMap({"127.0.0.0/8": "eu-west"})
    w = await world(api)
    console = await events(server, token_of(w))

    def staff_view(call: dict[str, Any]) -> None:
        assert call["visitor_prefix"] is None, call
        assert (call["visitor_browser"], call["visitor_os"]) == ("Chrome", "Windows")

    first = await click(api, w)
    ring = await recv_type(console, "ring")
    assert ring["call"]["id"] == first["call_id"] and ring["visitor_region"] == "eu-west"
    staff_view(ring["call"])
    assert "127.0.0" not in json.dumps(ring)
    (listed,) = (await api.c.get("/v1/ringing", headers=w.sh)).json()
    assert listed["visitor_region"] == "eu-west"
    staff_view(listed["call"])
    business = (await api.c.get(f"/v1/calls/{first['call_id']}", headers=w.th)).json()
    assert business["visitor_prefix"] == "127.0.0.0/24"
    r = await api.c.post(f"/v1/calls/{first['call_id']}/answer", headers=w.sh)
    assert r.status_code == 200, r.text
    staff_view(r.json()["call"])
    await recv_type(console, "call")

    second = await click(api, w)
    r = await api.c.post(f"/v1/calls/{second['call_id']}/reject", headers=w.sh)
    assert r.status_code == 200, r.text
    staff_view(r.json())
    body = {"name": "Eve", "contact": "eve@example.com"}
    r = await api.c.post(
        f"/v1/calls/{second['call_id']}/callback", json=body, headers=bearer(second["token"])
    )
    assert r.status_code == 201, r.text
    (cb,) = (await api.c.get("/v1/callbacks", headers=w.sh)).json()
    staff_view(cb["call"])
    r = await api.c.post(f"/v1/callbacks/{second['call_id']}/done", headers=w.sh)
    staff_view(r.json())
    await console.close()


async def _signed_in(api: Api, server: Server, w: World) -> tuple[httpx.AsyncClient, str, str]:
    """A browser signed in to the console: (its client, the CSRF token, a console token)."""
    hashed = accounts.hash_password(PASSWORD)
    await api.store.set_staff_fields(
        w.tenant, w.staff, {"email": "ann@example.com", "password_hash": hashed}
    )
    base = server.ws.replace("ws://", "http://")
    c = httpx.AsyncClient(base_url=base, timeout=10)
    origin = {"Origin": base}
    r = await c.post(
        "/console/signin", data={"email": "ann@example.com", "password": PASSWORD}, headers=origin
    )
    assert r.status_code == 303, r.text
    csrf = (await c.get("/v1/me")).json()["csrf"]
    r = await c.post("/v1/me/token", headers={"X-CSRF-Token": csrf, **origin})
    assert r.status_code == 201, r.text
    return c, csrf, r.json()["token"]


async def test_signout_revocation_and_deactivation_close_sockets(server: Server) -> None:
    api = server.api
    w = await world(api)
    browser, csrf, token = await _signed_in(api, server, w)
    try:
        console = await events(server, token)
        other = await events(server, token_of(w))  # the tenant's own console token
        r = await browser.post(
            "/console/signout",
            data={"csrf": csrf},
            headers={"Origin": str(browser.base_url).rstrip("/")},
        )
        assert r.status_code == 303
        code, seen = await close_code(console)
        assert code == 4401 and seen[-1]["code"] == "unauthorized"
        # the tenant revokes a console token: its socket closes too
        minted = (await api.c.post(f"/v1/staff/{w.staff}/token", headers=w.th)).json()
        third = await events(server, minted["token"])
        assert (
            await api.c.post(f"/v1/tokens/{minted['token_id']}/revoke", headers=w.th)
        ).status_code == 200
        assert (await close_code(third))[0] == 4401
        # deactivation closes what is left
        await api.c.patch(f"/v1/staff/{w.staff}", json={"active": False}, headers=w.th)
        assert (await close_code(other))[0] == 4401
    finally:
        await browser.aclose()


async def _console_token(server: Server, w: World, left: float) -> str:
    """A console token of ``w``'s member, stored, that expires ``left`` seconds from now."""
    signer = TokenSigner([test_api.TOKEN_KEY])
    token, record = signer.issue(
        tenant_id=w.tenant,
        call_id="*",
        role=Role.STAFF,
        staff_id=w.staff,
        now=time.time() - 3600 + left,
        ttl=3600,
    )
    await server.api.store.save_token(record)
    return token


def _closes(text: str, reason: str) -> float:
    wanted = f'clickacall_control_websocket_closes_total{{reason="{reason}"}} '
    return next(float(ln[len(wanted) :]) for ln in text.splitlines() if ln.startswith(wanted))


async def test_console_token_expiry_closes_the_socket_unless_renewed(server: Server) -> None:
    api = server.api
    w = await world(api)
    console = await events(server, await _console_token(server, w, 4))
    code, seen = await close_code(console)
    assert code == 4401 and seen[-1]["message"] == "the console token expired"
    # a console that renews its token in time keeps its socket past the old token's expiry
    _, th = await test_api.new_tenant(api, "Other")
    stranger = (await api.c.post("/v1/staff", json={"name": "Eve"}, headers=th)).json()["id"]
    theirs = (await api.c.post(f"/v1/staff/{stranger}/token", headers=th)).json()["token"]
    console = await events(server, await _console_token(server, w, 4))
    await console.send(json.dumps({"type": "auth", "token": theirs}))
    assert (await recv_type(console, "error"))["code"] == "forbidden"  # not this member's
    await console.send(json.dumps({"type": "auth", "token": token_of(w)}))
    assert (await recv_type(console, "renewed"))["expires_at"] > time.time() + 600
    await asyncio.sleep(4.5)
    await console.send(json.dumps({"type": "ping"}))
    assert (await recv_type(console, "pong")) == {"type": "pong"}
    await console.close()
    assert _closes(await api.metrics(), "expired") == 1


async def test_console_rechecks_revocation_and_the_member_periodically(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Revocation and deactivation written without a notification (another process, a
    notification lost) still close the socket, at the next periodic re-check."""
    monkeypatch.setattr(signalling, "TOUCH_EVERY", 0.2)
    api = server.api
    w = await world(api)
    minted = (await api.c.post(f"/v1/staff/{w.staff}/token", headers=w.th)).json()
    console = await events(server, minted["token"])
    await api.store.revoke_token(minted["token_id"], time.time())  # no notification
    code, seen = await close_code(console)
    assert code == 4401 and seen[-1]["message"] == "this session token was revoked"
    console = await events(server, token_of(w))
    member = await api.store.get_staff(w.tenant, w.staff)
    assert member is not None
    await api.store.update_staff(dataclasses.replace(member, active=False))  # unannounced
    code, seen = await close_code(console)
    assert code == 4401 and seen[-1]["message"] == "this staff member is no longer active"
    text = await api.metrics()
    assert _closes(text, "revoked") == 1 and _closes(text, "staff") == 1


# --- relay-only signalling ------------------------------------------------------------------

HOST = "candidate:1 1 udp 2122260223 192.168.1.20 50000 typ host generation 0"
SRFLX = "candidate:2 1 udp 1686052607 203.0.113.7 50001 typ srflx raddr 192.168.1.20 rport 50000"
PRFLX = "candidate:5 1 udp 1845501695 203.0.113.8 50003 typ prflx raddr 192.168.1.20 rport 50000"
RELAY = "candidate:3 1 udp 41885439 198.51.100.9 60000 typ relay raddr 203.0.113.7 rport 50001"
MDNS = "candidate:4 1 udp 2122260223 3f1c2b9e-7e1a-4c2e-9d0f-1b2c3d4e5f60.local 50002 typ host"
SDP = "\r\n".join(
    [
        "v=0",
        "o=- 1 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "m=audio 50000 UDP/TLS/RTP/SAVPF 111",
        "c=IN IP4 192.168.1.20",
        "a=rtcp:50000 IN IP4 192.168.1.20",
        f"a={HOST}",
        f"a={SRFLX}",
        f"a={RELAY}",
        f"a={MDNS}",
        "a=end-of-candidates",
        "",
    ]
)
PRIVATE = ("192.168.1.20", "203.0.113.7", "203.0.113.8", ".local")


def test_candidate_filter() -> None:
    assert [candidates.candidate_type(c) for c in (HOST, SRFLX, PRFLX, RELAY, MDNS)] == [
        "host",
        "srflx",
        "prflx",
        "relay",
        "mdns",
    ]
    assert candidates.candidate_type("c0") is None  # no ICE candidate at all
    assert candidates.candidate_type("candidate:9 1 udp 1 1.2.3.4 5") == "other"
    assert candidates.screen({"type": "candidate", "candidate": HOST}) == (None, ["host"])
    kept, dropped = candidates.screen(
        {"type": "candidate", "candidate": {"candidate": RELAY, "sdpMid": "0"}}
    )
    assert dropped == [] and kept is not None
    assert kept["candidate"] == {
        "candidate": RELAY.replace("raddr 203.0.113.7 rport 50001", "raddr 0.0.0.0 rport 0"),
        "sdpMid": "0",
    }
    assert candidates.screen({"type": "candidate", "candidate": ""}) == (
        {"type": "candidate", "candidate": ""},
        [],
    )
    stripped, dropped = candidates.strip_sdp(SDP)
    assert sorted(dropped) == ["host", "mdns", "srflx"]
    assert not any(p in stripped for p in PRIVATE)
    assert "c=IN IP4 0.0.0.0\r\n" in stripped and "a=rtcp:50000 IN IP4 0.0.0.0\r\n" in stripped
    assert "typ relay raddr 0.0.0.0 rport 0\r\n" in stripped and stripped.endswith(
        "a=end-of-candidates\r\n"
    )


async def _call(server: Server, w: World) -> tuple[Any, Any]:
    api = server.api
    got = await click(api, w, json={"media": "video"})
    visitor = await signal(server.ws, got["signal"], got["token"])
    ready = await recv_type(visitor, "ready")
    assert ready["staff_name"] is None and ready["media"] == "video"
    ans = (await api.c.post(f"/v1/calls/{got['call_id']}/answer", headers=w.sh)).json()
    status = await recv_type(visitor, "call")
    assert status["status"] == "answered" and status["staff_name"] == "Ann"
    staff = await signal(server.ws, ans["signal"], ans["token"])
    ready = await recv_type(staff, "ready")
    assert ready["staff_name"] == "Ann" and ready["relay_only"] == w.link["relay_only"]
    return visitor, staff


async def test_relay_only_links_pass_relay_candidates_only(server: Server) -> None:
    api = server.api
    w = await world(api)
    visitor, staff = await _call(server, w)
    await visitor.send(json.dumps({"type": "offer", "sdp": {"type": "offer", "sdp": SDP}}))
    for text in (HOST, SRFLX, PRFLX, MDNS):
        await visitor.send(
            json.dumps({"type": "candidate", "candidate": {"candidate": text, "sdpMid": "0"}})
        )
    await visitor.send(json.dumps({"type": "candidate", "candidate": RELAY}))
    await visitor.send(json.dumps({"type": "reconnecting"}))
    offer = await recv_type(staff, "offer")
    assert "typ relay" in offer["sdp"]["sdp"]
    assert not any(p in offer["sdp"]["sdp"] for p in PRIVATE)
    relayed = await recv(staff)
    assert (
        relayed["type"] == "candidate" and "typ relay raddr 0.0.0.0 rport 0" in relayed["candidate"]
    )
    assert (await recv(staff))["type"] == "reconnecting"  # nothing else came between
    # the other way too
    await staff.send(json.dumps({"type": "answer", "sdp": SDP}))
    await staff.send(json.dumps({"type": "candidate", "candidate": HOST}))
    await staff.send(json.dumps({"type": "reconnected"}))
    answer = await recv_type(visitor, "answer")
    assert not any(p in answer["sdp"] for p in PRIVATE)
    assert (await recv(visitor))["type"] == "reconnected"
    metrics = await api.metrics()
    for kind, n in (("host", 4), ("srflx", 3), ("prflx", 1), ("mdns", 3)):
        assert (
            f'clickacall_control_signalling_candidates_dropped_total{{type="{kind}"}} {n}.0'
            in metrics
        )
    await visitor.close()
    await staff.close()


async def test_links_allowing_direct_paths_pass_everything(server: Server) -> None:
    api = server.api
    w = await world(api)
    r = await api.c.patch(f"/v1/links/{w.link['id']}", json={"relay_only": False}, headers=w.th)
    assert r.json()["relay_only"] is False
    w.link = r.json()
    visitor, staff = await _call(server, w)
    await visitor.send(json.dumps({"type": "offer", "sdp": SDP}))
    await visitor.send(json.dumps({"type": "candidate", "candidate": HOST}))
    assert (await recv_type(staff, "offer"))["sdp"] == SDP
    assert (await recv(staff))["candidate"] == HOST
    await visitor.close()
    await staff.close()
