"""The business's dashboard without a browser (httpx over ASGI, SQLite and PostgreSQL): the
operator's tenant with its first admin, the admin role on every dashboard page and request,
tenant isolation, the staff and API-key routes, two-step sign-in with TOTP and recovery codes,
a password change ending the other sessions, and the security headers of the pages."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from control import accounts
from control.app import create_app
from control.store import Store
from control.web.dashboard import SECTIONS
from tests import test_api, test_store
from tests.test_api import OPH, Clock, bearer, err, make_settings

store, pg = test_api.store, test_store.pg

BASE = "http://test"
ORIGIN = {"Origin": BASE}
PASSWORD = "a long enough password"


@dataclasses.dataclass
class Env:
    transport: httpx.ASGITransport
    clock: Clock
    store: Store
    op: httpx.AsyncClient

    def client(self, base: str = BASE) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=self.transport, base_url=base)


@pytest.fixture
async def env(store: Store) -> AsyncIterator[Env]:
    clock = Clock()
    transport = httpx.ASGITransport(app=create_app(make_settings(clock), store))
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as op:
        yield Env(transport, clock, store, op)


@dataclasses.dataclass
class Member:
    c: httpx.AsyncClient  # a browser: its cookie jar holds the session
    email: str
    csrf: str = ""
    tenant: str = ""
    key: dict[str, str] = dataclasses.field(default_factory=dict)  # the tenant's API key

    @property
    def w(self) -> dict[str, str]:
        """Headers of a state-changing request from the dashboard's page."""
        return {"X-CSRF-Token": self.csrf, **ORIGIN}


async def accept(c: httpx.AsyncClient, url: str, password: str = PASSWORD) -> httpx.Response:
    path = url.removeprefix(BASE)
    data = {"password": password, "password2": password}
    return await c.post(path, data=data, headers=ORIGIN)


async def signin(c: httpx.AsyncClient, email: str, password: str = PASSWORD) -> httpx.Response:
    return await c.post(
        "/console/signin", data={"email": email, "password": password}, headers=ORIGIN
    )


async def csrf_of(c: httpx.AsyncClient) -> str:
    r = await c.get("/v1/me")
    assert r.status_code == 200, r.text
    return str(r.json()["csrf"])


async def tenant_with_admin(env: Env, name: str, email: str) -> Member:
    """The operator creates the business with its first admin, who accepts the invitation."""
    r = await env.op.post("/v1/tenants", json={"name": name, "admin_email": email}, headers=OPH)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["admin"]["email"] == email
    c = env.client()
    r = await accept(c, body["admin"]["invitation_url"])
    assert r.status_code == 303 and r.headers["location"] == "/dashboard", r.text
    admin = Member(c, email, await csrf_of(c), body["tenant"]["id"])
    admin.key = bearer(body["api_key"]["key"])
    return admin


async def invite(env: Env, by: Member, name: str, email: str, **roles: bool) -> Member:
    """An admin invites someone from the dashboard; they set a password and are signed in."""
    body = {"name": name, "email": email, **roles}
    r = await by.c.post("/v1/dashboard/staff", json=body, headers=by.w)
    assert r.status_code == 201, r.text
    c = env.client()
    assert (await accept(c, r.json()["invitation"]["url"])).status_code == 303
    return Member(c, email, await csrf_of(c), by.tenant)


async def test_the_operator_creates_a_business_with_its_first_admin(env: Env) -> None:
    before = len(await env.store.list_tenants())
    # bad input: a message naming the field, and nothing stored
    r = await env.op.post("/v1/tenants", json={"name": "B", "admin_email": "nope"}, headers=OPH)
    assert err(r, 422).startswith("admin_email:")
    assert len(await env.store.list_tenants()) == before
    admin = await tenant_with_admin(env, "Acme", "owner@acme.test")
    r = await env.op.post(
        "/v1/tenants", json={"name": "B", "admin_email": "Owner@Acme.test"}, headers=OPH
    )
    assert err(r, 409).startswith("admin_email:")
    assert len(await env.store.list_tenants()) == before + 1
    # the admin is staff of the tenant, with the admin role only, and lands on the dashboard
    (member,) = await env.store.list_staff(admin.tenant)
    assert member.roles == ["admin"] and member.email == "owner@acme.test"
    r = await admin.c.get("/dashboard")
    assert r.status_code == 200 and "<clickacall-dashboard" in r.text
    assert 'href="/console"' not in r.text  # no console for an admin who answers no calls
    r = await admin.c.get("/console")
    assert r.status_code == 303 and r.headers["location"] == "/dashboard"
    # a tenant created without admin_email has none (as before)
    r = await env.op.post("/v1/tenants", json={"name": "C"}, headers=OPH)
    assert r.status_code == 201 and r.json()["admin"] is None
    # signing in again lands on the dashboard too
    c = env.client()
    r = await signin(c, "owner@acme.test")
    assert r.status_code == 303 and r.headers["location"] == "/dashboard"


async def test_staff_only_members_are_refused_every_dashboard_page_and_request(env: Env) -> None:
    admin = await tenant_with_admin(env, "Acme", "owner@acme.test")
    ann = await invite(env, admin, "Ann", "ann@acme.test")
    c = env.client()
    r = await signin(c, "ann@acme.test")
    assert r.status_code == 303 and r.headers["location"] == "/console"
    for section in SECTIONS:
        path = "/dashboard" if section == "home" else f"/dashboard/{section}"
        r = await ann.c.get(path)
        assert r.status_code == 403, path
        assert "for the business&#39;s admins" in r.text and "clickacall-dashboard" not in r.text
    requests = [
        ("GET", "/v1/dashboard/staff", None),
        ("POST", "/v1/dashboard/staff", {"name": "X", "email": "x@acme.test"}),
        ("POST", f"/v1/dashboard/staff/{'a' * 32}/deactivate", None),
        ("POST", f"/v1/dashboard/staff/{'a' * 32}/invitation", None),
        ("GET", "/v1/dashboard/keys", None),
        ("POST", "/v1/dashboard/keys", {"name": "k"}),
        ("DELETE", "/v1/dashboard/keys/ck_000000000000", None),
        ("GET", "/v1/account/security", None),
        ("POST", "/v1/account/totp", None),
        ("POST", "/v1/account/totp/confirm", {"code": "123456"}),
        ("POST", "/v1/account/totp/disable", {"password": PASSWORD}),
    ]
    for method, path, body in requests:
        r = await ann.c.request(method, path, json=body, headers=ann.w)
        assert err(r, 403, "forbidden").startswith("this needs an admin"), (method, path)
        # signed out: 401, never the data
        r = await env.op.request(method, path, json=body, headers=ORIGIN)
        assert r.status_code == 401, (method, path)
    assert len(await env.store.list_staff(admin.tenant)) == 2  # nothing was added
    # signed out, the dashboard is the sign-in form
    r = await env.op.get("/dashboard/staff")
    assert r.status_code == 200 and 'action="/console/signin"' in r.text
    # an admin who also answers calls sees both, with a link between them
    both = await invite(env, admin, "Bo", "bo@acme.test", admin=True, staff=True)
    r = await both.c.get("/console")
    assert r.status_code == 200 and 'href="/dashboard"' in r.text
    r = await both.c.get("/dashboard/staff")
    assert r.status_code == 200 and 'href="/console"' in r.text


async def test_a_business_sees_only_its_own_staff_and_keys(env: Env) -> None:
    a = await tenant_with_admin(env, "Acme", "owner@acme.test")
    b = await tenant_with_admin(env, "Bolt", "owner@bolt.test")
    bee = await invite(env, b, "Bee", "bee@bolt.test")
    r = await b.c.post("/v1/dashboard/keys", json={"name": "Bolt CRM"}, headers=b.w)
    assert r.status_code == 201
    bkey = r.json()
    r = await a.c.post("/v1/dashboard/keys", json={"name": "Acme CRM"}, headers=a.w)
    assert r.status_code == 201
    staff = (await a.c.get("/v1/dashboard/staff")).json()
    assert [m["email"] for m in staff] == ["owner@acme.test"]
    keys = (await a.c.get("/v1/dashboard/keys")).json()
    assert "Bolt CRM" not in {k["name"] for k in keys} and bkey["id"] not in {k["id"] for k in keys}
    bee_id = (await env.store.find_staff_by_email("bee@bolt.test")).id  # type: ignore[union-attr]
    # acting on the other business's records: 404, exactly as a missing one
    r = await a.c.post(f"/v1/dashboard/staff/{bee_id}/deactivate", headers=a.w)
    assert err(r, 404, "not_found") == "no such staff member"
    r = await a.c.post(f"/v1/dashboard/staff/{bee_id}/invitation", headers=a.w)
    assert r.status_code == 404
    assert (await a.c.delete(f"/v1/dashboard/keys/{bkey['id']}", headers=a.w)).status_code == 404
    # and nothing happened to them
    assert (await bee.c.get("/v1/me")).status_code == 200
    assert (await env.op.get("/v1/staff", headers=bearer(bkey["key"]))).status_code == 200


async def test_api_keys_from_the_dashboard_work_until_revoked(env: Env) -> None:
    admin = await tenant_with_admin(env, "Acme", "owner@acme.test")
    r = await admin.c.post("/v1/dashboard/keys", json={"name": "  "}, headers=admin.w)
    assert err(r, 422).startswith("body.name")
    r = await admin.c.post("/v1/dashboard/keys", json={"name": "CRM"}, headers=ORIGIN)
    assert "csrf" in err(r, 403)  # no CSRF token: refused
    r = await admin.c.post("/v1/dashboard/keys", json={"name": "CRM"}, headers=admin.w)
    assert r.status_code == 201
    made = r.json()
    assert made["name"] == "CRM" and made["key"].startswith("ck_live_")
    listed = (await admin.c.get("/v1/dashboard/keys")).json()
    assert [k["name"] for k in listed].count(None) == 1  # the operator's key, unnamed
    assert next(k for k in listed if k["id"] == made["id"]) == {
        "id": made["id"],
        "name": "CRM",
        "created_at": made["created_at"],
        "revoked_at": None,
    }
    assert all("key" not in k for k in listed)  # the secret is never shown again
    kh = bearer(made["key"])
    assert (await env.op.get("/v1/staff", headers=kh)).status_code == 200
    r = await admin.c.delete(f"/v1/dashboard/keys/{made['id']}", headers=admin.w)
    assert r.status_code == 204
    assert (await env.op.get("/v1/staff", headers=kh)).status_code == 401
    listed = (await admin.c.get("/v1/dashboard/keys")).json()
    assert next(k for k in listed if k["id"] == made["id"])["revoked_at"] == env.clock.t
    r = await admin.c.delete(f"/v1/dashboard/keys/{made['id']}", headers=admin.w)
    assert r.status_code == 404


async def test_invite_list_and_deactivate_staff(env: Env) -> None:
    admin = await tenant_with_admin(env, "Acme", "owner@acme.test")
    r = await admin.c.post(
        "/v1/dashboard/staff", json={"name": "Ann", "email": "bad"}, headers=admin.w
    )
    assert err(r, 422).startswith("email:")
    r = await admin.c.post(
        "/v1/dashboard/staff",
        json={"name": "Ann", "email": "x@acme.test", "staff": False},
        headers=admin.w,
    )
    assert err(r, 422).startswith("roles:")
    r = await admin.c.post(
        "/v1/dashboard/staff", json={"name": "Ann", "email": "owner@acme.test"}, headers=admin.w
    )
    assert err(r, 409).startswith("email:")
    assert len(await env.store.list_staff(admin.tenant)) == 1  # nothing stored half-way
    ann = await invite(env, admin, "Ann", "ann@acme.test")
    team = {m["name"]: m for m in (await admin.c.get("/v1/dashboard/staff")).json()}
    assert team["Ann"]["roles"] == ["staff"] and team["Ann"]["has_password"]
    assert not team["Ann"]["available_now"]  # no console open yet
    assert team[team["Ann"]["name"]]["you"] is False
    me = next(m for m in team.values() if m["you"])
    assert me["email"] == "owner@acme.test"
    # her console is open (a console token, the socket touches seen_at): available now
    r = await ann.c.post("/v1/me/token", headers=ann.w)
    assert r.status_code == 201
    member = await env.store.find_staff_by_email("ann@acme.test")
    assert member is not None
    await env.store.set_staff_fields(admin.tenant, member.id, {"seen_at": env.clock.t})
    team = {m["name"]: m for m in (await admin.c.get("/v1/dashboard/staff")).json()}
    assert team["Ann"]["available_now"]
    token = bearer(r.json()["token"])
    assert (await env.op.get("/v1/callbacks", headers=token)).status_code == 200
    # deactivating her ends her session and her console token at once
    r = await admin.c.post(f"/v1/dashboard/staff/{me['id']}/deactivate", headers=admin.w)
    assert err(r, 409).startswith("you cannot deactivate yourself")
    r = await admin.c.post(f"/v1/dashboard/staff/{member.id}/deactivate", headers=ORIGIN)
    assert r.status_code == 403  # no CSRF token
    r = await admin.c.post(f"/v1/dashboard/staff/{member.id}/deactivate", headers=admin.w)
    assert r.status_code == 200 and r.json()["active"] is False
    assert (await ann.c.get("/v1/me")).status_code == 401
    assert (await env.op.get("/v1/callbacks", headers=token)).status_code == 401
    assert (await signin(env.client(), "ann@acme.test")).status_code == 401
    r = await admin.c.post(f"/v1/dashboard/staff/{member.id}/invitation", headers=admin.w)
    assert r.status_code == 409


async def _enrol(admin: Member, env: Env) -> tuple[str, list[str]]:
    r = await admin.c.post("/v1/account/totp", headers=admin.w)
    assert r.status_code == 201, r.text
    body = r.json()
    secret = body["secret"]
    assert body["uri"].startswith("otpauth://totp/Clickacall:owner%40acme.test?secret=" + secret)
    assert body["qr"].startswith("data:image/svg+xml")
    # not on until confirmed; a wrong code is refused with a message naming the field
    r = await admin.c.post("/v1/account/totp/confirm", json={"code": "000000"}, headers=admin.w)
    assert err(r, 422).startswith("code: this code is wrong")
    assert not (await admin.c.get("/v1/account/security")).json()["totp"]
    code = accounts.totp_code(secret, env.clock.t)
    r = await admin.c.post("/v1/account/totp/confirm", json={"code": code}, headers=admin.w)
    assert r.status_code == 200, r.text
    codes: list[str] = r.json()["recovery_codes"]
    assert len(codes) == 10 and len(set(codes)) == 10
    got = (await admin.c.get("/v1/account/security")).json()
    assert got == {"totp": True, "recovery_codes_left": 10}
    return secret, codes


def _form_csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found is not None
    return found.group(1)


async def _password_step(env: Env) -> tuple[httpx.AsyncClient, str]:
    c = env.client()
    r = await signin(c, "owner@acme.test")
    assert r.status_code == 303 and r.headers["location"] == "/console/signin/code"
    assert (await c.get("/v1/me")).status_code == 401  # not signed in yet
    assert (await c.get("/dashboard")).text.count('action="/console/signin"') == 1
    r = await c.get("/console/signin/code")
    assert r.status_code == 200 and 'autocomplete="one-time-code"' in r.text
    return c, _form_csrf(r.text)


async def _code(c: httpx.AsyncClient, csrf: str, code: str) -> httpx.Response:
    return await c.post("/console/signin/code", data={"code": code, "csrf": csrf}, headers=ORIGIN)


async def test_two_step_sign_in_with_totp_and_recovery_codes(env: Env) -> None:
    admin = await tenant_with_admin(env, "Acme", "owner@acme.test")
    secret, recovery = await _enrol(admin, env)
    env.clock.t += 60  # the next codes
    c, csrf = await _password_step(env)
    # a wrong code: refused with a clear message, still not signed in
    r = await _code(
        c, csrf, "123456" if accounts.totp_code(secret, env.clock.t) != "123456" else "654321"
    )
    assert r.status_code == 401 and "This code is wrong or has expired" in r.text
    assert 'aria-invalid="true"' in r.text
    assert (await c.get("/v1/me")).status_code == 401
    assert (await _code(c, "x" * 43, accounts.totp_code(secret, env.clock.t))).status_code == 403
    # the right code: signed in (a new session: the pending one is over), on the dashboard
    good = accounts.totp_code(secret, env.clock.t)
    r = await _code(c, csrf, good)
    assert r.status_code == 303 and r.headers["location"] == "/dashboard"
    assert (await c.get("/v1/me")).status_code == 200
    # the same code again, in another sign-in: refused (a code is good once)
    c2, csrf2 = await _password_step(env)
    assert (await _code(c2, csrf2, good)).status_code == 401
    # a recovery code signs in once, typed as a person would
    r = await _code(c2, csrf2, recovery[0].upper().replace("-", " "))
    assert r.status_code == 303 and (await c2.get("/v1/me")).status_code == 200
    c3, csrf3 = await _password_step(env)
    assert (await _code(c3, csrf3, recovery[0])).status_code == 401
    assert (await c.get("/v1/account/security")).json()["recovery_codes_left"] == 9
    # wrong codes are throttled: 429 with Retry-After and a message
    statuses = [(await _code(c3, csrf3, "000000")).status_code for _ in range(6)]
    assert statuses[-1] == 429, statuses
    r = await _code(c3, csrf3, "000000")
    assert r.status_code == 429 and "too many tries" in r.text and "retry-after" in r.headers
    # leaving the code form (sign out) ends the pending session
    owner = await env.store.find_staff_by_email("owner@acme.test")
    assert owner is not None
    live = len(await env.store.list_web_sessions(admin.tenant, owner.id))
    r = await c3.post("/console/signout", data={"csrf": csrf3}, headers=ORIGIN)
    assert r.status_code == 303 and 'cc_session=""' in r.headers["set-cookie"]
    assert len(await env.store.list_web_sessions(admin.tenant, owner.id)) == live - 1
    # the code step times out: past --signin-code-window the pending session is over
    c4, csrf4 = await _password_step(env)
    env.clock.t += 301
    r = await _code(c4, csrf4, accounts.totp_code(secret, env.clock.t))
    assert r.status_code == 401 and "sign in again" in r.text
    # turned off (with the password): sign-in is one step again
    r = await c.post(
        "/v1/account/totp/disable",
        json={"password": "wrong password!"},
        headers=_w(c, await csrf_of(c)),
    )
    assert err(r, 422).startswith("password:")
    r = await c.post(
        "/v1/account/totp/disable", json={"password": PASSWORD}, headers=_w(c, await csrf_of(c))
    )
    assert r.status_code == 204
    r = await signin(env.client(), "owner@acme.test")
    assert r.status_code == 303 and r.headers["location"] == "/dashboard"


def _w(c: httpx.AsyncClient, csrf: str) -> dict[str, str]:
    return {"X-CSRF-Token": csrf, **ORIGIN}


async def test_a_password_change_ends_the_members_other_sessions(env: Env) -> None:
    admin = await tenant_with_admin(env, "Acme", "owner@acme.test")
    other = env.client()
    assert (await signin(other, "owner@acme.test")).status_code == 303
    csrf = await csrf_of(other)
    # a console token needs the staff role (answering calls): the admin takes it on
    r = await other.post("/v1/me/token", headers=_w(other, csrf))
    assert err(r, 403, "forbidden").startswith("you do not answer calls")
    me = (await admin.c.get("/v1/me")).json()["staff"]["id"]
    roles = {"roles": ["admin", "staff"]}
    r = await admin.c.patch(f"/v1/dashboard/staff/{me}", json=roles, headers=admin.w)
    assert r.status_code == 200, r.text
    r = await other.post("/v1/me/token", headers=_w(other, csrf))
    token = bearer(r.json()["token"])
    body: dict[str, Any] = {"current": "not it at all", "password": "n" * 12, "password2": "n" * 12}
    r = await admin.c.post("/v1/account/password", json=body, headers=admin.w)
    assert err(r, 422).startswith("current:")
    body = {"current": PASSWORD, "password": "short", "password2": "short"}
    assert err(
        await admin.c.post("/v1/account/password", json=body, headers=admin.w), 422
    ).startswith("password:")
    body = {"current": PASSWORD, "password": "a new password 1", "password2": "a new password 2"}
    assert err(
        await admin.c.post("/v1/account/password", json=body, headers=admin.w), 422
    ).startswith("password2:")
    assert (await other.get("/v1/me")).status_code == 200  # nothing changed yet
    body["password2"] = body["password"]
    r = await admin.c.post("/v1/account/password", json=body, headers=admin.w)
    assert r.status_code == 204
    assert (await admin.c.get("/v1/me")).status_code == 200  # this session stays
    assert (await other.get("/v1/me")).status_code == 401  # the other one is over
    assert (await env.op.get("/v1/callbacks", headers=token)).status_code == 401
    assert (await signin(env.client(), "owner@acme.test")).status_code == 401
    assert (await signin(env.client(), "owner@acme.test", "a new password 1")).status_code == 303


async def test_dashboard_pages_send_the_security_headers(env: Env) -> None:
    admin = await tenant_with_admin(env, "Acme", "owner@acme.test")
    for section in SECTIONS:
        path = "/dashboard" if section == "home" else f"/dashboard/{section}"
        r = await admin.c.get(path)
        assert r.status_code == 200, path
        csp = r.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "script-src 'self';" in csp
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] == "no-referrer"
        assert "strict-transport-security" not in r.headers  # plain HTTP
        assert "<script>" not in r.text and " style=" not in r.text
    assert (await admin.c.get("/dashboard/nope")).status_code == 404
    async with env.client("https://test") as s:
        for path in ("/dashboard", "/dashboard/keys", "/console/signin/code"):
            r = await s.get(path)
            assert r.headers["strict-transport-security"].startswith("max-age="), path
            assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
