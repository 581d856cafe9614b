"""Console sessions through the real app (httpx over ASGI) on SQLite and PostgreSQL:
invitations, sign-in and its throttle, the cookie over HTTP and HTTPS, idle and absolute
expiry on the app's clock, CSRF and origin checks, sign-out and deactivation revoking sessions
and console tokens; and the flags that set the limits."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from control import accounts
from control.app import create_app
from control.server import UsageError, load_settings
from control.store import Store
from tests import test_api, test_store
from tests.controlproc import ControlProcess
from tests.test_api import Api, Clock, World, err, make_settings, world

# fixtures: the store on both back-ends, over the shared PostgreSQL
store, pg = test_api.store, test_store.pg

ORIGIN = {"Origin": "http://test"}
PASSWORD = "a long enough password"


@dataclasses.dataclass
class Web:
    api: Api
    https: httpx.AsyncClient  # the same app reached over https://test


@pytest.fixture
async def web(store: Store) -> AsyncIterator[Web]:
    clock = Clock()
    app = create_app(make_settings(clock), store)
    transport = httpx.ASGITransport(app=app)
    async with (
        httpx.AsyncClient(transport=transport, base_url="http://test") as c,
        httpx.AsyncClient(transport=transport, base_url="https://test") as s,
    ):
        yield Web(Api(c, clock, store, app), s)


async def invite(api: Api, w: World, email: str = "ann@example.com") -> str:
    r = await api.c.post(f"/v1/staff/{w.staff}/invitation", json={"email": email}, headers=w.th)
    assert r.status_code == 201, r.text
    url: str = r.json()["url"]
    assert url.startswith("http://test/console/invite/")
    assert r.json()["expires_at"] == api.clock.t + 7 * 24 * 3600
    return url.rsplit("/", 1)[1]


async def account(api: Api, w: World, email: str = "ann@example.com") -> None:
    """The member has an email and a password (as an invitation leaves them)."""
    changes = {"email": email, "password_hash": accounts.hash_password(PASSWORD)}
    assert await api.store.set_staff_fields(w.tenant, w.staff, changes)


async def signin(
    c: httpx.AsyncClient, email: str = "ann@example.com", password: str = PASSWORD, **headers: str
) -> httpx.Response:
    origin = {"Origin": str(c.base_url).rstrip("/")}
    return await c.post(
        "/console/signin",
        data={"email": email, "password": password},
        headers={**origin, **headers},
    )


async def me(c: httpx.AsyncClient) -> dict[str, Any]:
    r = await c.get("/v1/me")
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


async def console_token(c: httpx.AsyncClient, csrf: str) -> str:
    r = await c.post("/v1/me/token", headers={"X-CSRF-Token": csrf, **ORIGIN})
    assert r.status_code == 201, r.text
    token: str = r.json()["token"]
    return token


def page(r: httpx.Response, status: int, *texts: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("text/html")
    assert r.headers["cache-control"] == "no-store"
    for text in texts:
        assert text in r.text, (text, r.text)


async def test_invitation_sets_the_password_once(web: Web) -> None:
    api = web.api
    w = await world(api)
    other = await world(api, "Globex", node=False)
    assert "email" in err(
        await api.c.post(f"/v1/staff/{w.staff}/invitation", json={"email": "nope"}, headers=w.th),
        422,
    )
    token = await invite(api, w, "Ann@Example.com")
    path = f"/console/invite/{token}"
    # the password's rules, each naming its field; nothing stored meanwhile
    good = {"password": PASSWORD, "password2": PASSWORD}
    page(
        await api.c.post(path, data={"password": "short", "password2": "short"}, headers=ORIGIN),
        422,
        "password: must be at least 10",
    )
    page(
        await api.c.post(path, data={**good, "password2": PASSWORD + "!"}, headers=ORIGIN),
        422,
        "Password again: this is not the same password",
    )
    page(
        await api.c.post(path, data=good, headers={"Origin": "https://evil.example"}), 403, "origin"
    )
    page(await api.c.post(path, data=good), 403, "origin")
    r = await api.c.get(f"/v1/staff/{w.staff}", headers=w.th)
    assert r.json()["email"] == "ann@example.com" and r.json()["has_password"] is False
    assert not api.c.cookies
    # set: signed in at once
    r = await api.c.post(path, data=good, headers=ORIGIN)
    assert r.status_code == 303 and r.headers["location"] == "/console"
    assert (await me(api.c))["staff"]["email"] == "ann@example.com"
    assert (await api.c.get(f"/v1/staff/{w.staff}", headers=w.th)).json()["has_password"] is True
    # once
    page(
        await api.c.post(path, data=good, headers=ORIGIN),
        410,
        "invitation: this link was already used",
    )
    # inviting again replaces an unused link; links expire after 7 days
    first, second = await invite(api, w), await invite(api, w)
    page(
        await api.c.post(f"/console/invite/{first}", data=good, headers=ORIGIN),
        404,
        "invitation: this link is not valid",
    )
    api.clock.t += 7 * 24 * 3600
    page(
        await api.c.post(f"/console/invite/{second}", data=good, headers=ORIGIN),
        410,
        "invitation: this link has expired",
    )
    # one email, one member, across tenants
    r = await api.c.post(
        f"/v1/staff/{other.staff}/invitation", json={"email": "ann@example.com"}, headers=other.th
    )
    assert "email" in err(r, 409, "conflict")
    assert (await api.c.get(f"/v1/staff/{other.staff}", headers=other.th)).json()["email"] is None
    # an inactive member gets none
    await api.c.patch(f"/v1/staff/{other.staff}", json={"active": False}, headers=other.th)
    err(
        await api.c.post(
            f"/v1/staff/{other.staff}/invitation", json={"email": "x@y.eu"}, headers=other.th
        ),
        409,
        "inactive",
    )


async def test_invitation_links_use_the_public_url(store: Store) -> None:
    clock = Clock()
    app = create_app(make_settings(clock, public_url="https://calls.example.com"), store)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as c:
        w = await world(Api(c, clock, store))
        r = await c.post(f"/v1/staff/{w.staff}/invitation", json={"email": "a@b.eu"}, headers=w.th)
        assert r.json()["url"].startswith("https://calls.example.com/console/invite/")


async def test_signin_cookie_and_throttle(web: Web) -> None:
    api = web.api
    w = await world(api)
    await account(api, w)
    for email, password in (("ann@example.com", "wrong password"), ("bob@example.com", PASSWORD)):
        r = await signin(api.c, email, password)
        page(r, 401, "Email or password is wrong")
        assert "set-cookie" not in r.headers
    r = await signin(api.c, "Ann@Example.com ")
    assert r.status_code == 303 and r.headers["location"] == "/console"
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("cc_session=")
    attrs = {a.strip().lower() for a in cookie.split(";")[1:]}
    assert {"httponly", "samesite=strict", "path=/", "max-age=43200"} <= attrs
    assert "secure" not in attrs and not any(a.startswith("domain") for a in attrs)
    got = await me(api.c)
    assert got["staff"]["id"] == w.staff and got["tenant"] == {"id": w.tenant, "name": "Acme"}
    assert got["staff"]["presence"] == "available" and len(got["csrf"]) >= 40
    # a foreign page cannot post the form
    page(await signin(api.c, Origin="https://evil.example"), 403, "origin")
    # five tries, then one per 20 s (per email, and per client network)
    api.clock.t += 100  # the network's bucket full again
    for _ in range(5):
        page(await signin(api.c, password="wrong password"), 401)
    r = await signin(api.c)  # even the right password waits
    page(r, 429, "try again in 20 seconds")
    assert r.headers["retry-after"] == "20"
    api.clock.t += 20
    assert (await signin(api.c)).status_code == 303
    metrics = await api.metrics()
    for outcome, n in (("ok", 2), ("wrong", 7), ("throttled", 1), ("refused", 1)):
        assert f'clickacall_control_signins_total{{outcome="{outcome}"}} {n}.0' in metrics
    assert 'clickacall_control_throttle_refusals_total{what="signin"} 1.0' in metrics
    assert "clickacall_control_web_sessions 1.0" in metrics  # the first one was replaced
    # right passwords give their network its try back: a team behind one address signs in
    # one after another (the email's bucket is cleared; only failures drain the network's)
    api.clock.t += 100
    for _ in range(8):
        assert (await signin(api.c)).status_code == 303
    for _ in range(5):
        page(await signin(api.c, "bob@example.com", "guess"), 401)
    page(await signin(api.c, "carl@example.com", "guess"), 429, "try again in")
    # an inactive member cannot sign in
    await api.c.patch(f"/v1/staff/{w.staff}", json={"active": False}, headers=w.th)
    api.clock.t += 100
    page(await signin(api.c, "ann@example.com"), 401, "Email or password is wrong")


async def test_cookie_over_https_is_host_prefixed_and_secure(web: Web) -> None:
    w = await world(web.api)
    await account(web.api, w)
    r = await signin(web.https)
    assert r.status_code == 303
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("__Host-cc_session=")
    attrs = {a.strip().lower() for a in cookie.split(";")[1:]}
    assert {"secure", "httponly", "samesite=strict", "path=/"} <= attrs
    assert (await me(web.https))["staff"]["id"] == w.staff


async def test_sessions_end_idle_and_at_their_absolute_limit(web: Web) -> None:
    api = web.api
    w = await world(api)
    await account(api, w)
    assert (await signin(api.c)).status_code == 303
    for _ in range(3):  # use keeps it alive
        api.clock.t += 3599
        await me(api.c)
    api.clock.t += 3600  # an hour unused
    err(await api.c.get("/v1/me"), 401, "unauthorized")
    assert (await signin(api.c)).status_code == 303
    for _ in range(14):  # every 50 minutes for 11 h 40 min
        api.clock.t += 3000
        await me(api.c)
    api.clock.t += 12 * 3600 - 14 * 3000
    err(await api.c.get("/v1/me"), 401)


async def test_console_token_needs_csrf_and_our_origin(web: Web) -> None:
    api = web.api
    w = await world(api)
    await account(api, w)
    err(await api.c.post("/v1/me/token", headers=ORIGIN), 401)  # signed out
    await signin(api.c)
    csrf = (await me(api.c))["csrf"]
    assert "csrf" in err(await api.c.post("/v1/me/token", headers=ORIGIN), 403, "forbidden")
    r = await api.c.post("/v1/me/token", headers={"X-CSRF-Token": csrf + "x", **ORIGIN})
    assert "csrf" in err(r, 403)
    r = await api.c.post(
        "/v1/me/token", headers={"X-CSRF-Token": csrf, "Origin": "https://evil.example"}
    )
    assert "origin" in err(r, 403)
    assert "origin" in err(await api.c.post("/v1/me/token", headers={"X-CSRF-Token": csrf}), 403)
    r = await api.c.post(
        "/v1/me/token", headers={"X-CSRF-Token": csrf, "Sec-Fetch-Site": "same-origin"}
    )
    assert r.status_code == 201
    token = await console_token(api.c, csrf)
    r = await api.c.get("/v1/ringing", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    # the token lasts an hour at most, and never past the session's end
    assert (await api.c.post("/v1/me/token", headers={"X-CSRF-Token": csrf, **ORIGIN})).json()[
        "expires_at"
    ] == api.clock.t + 3600
    for _ in range(23):
        api.clock.t += 1800
        await me(api.c)
    left = (await api.c.post("/v1/me/token", headers={"X-CSRF-Token": csrf, **ORIGIN})).json()
    assert left["expires_at"] == api.clock.t + 1800


async def test_signout_revokes_the_session_and_its_console_tokens(web: Web) -> None:
    api = web.api
    w = await world(api)
    await account(api, w)
    await signin(api.c)
    csrf = (await me(api.c))["csrf"]
    tokens = [await console_token(api.c, csrf) for _ in range(2)]
    # without the CSRF token nothing happens
    page(await api.c.post("/console/signout", data={}, headers=ORIGIN), 403, "csrf")
    page(
        await api.c.post(
            "/console/signout", data={"csrf": csrf}, headers={"Origin": "https://evil.example"}
        ),
        403,
    )
    await me(api.c)
    r = await api.c.post("/console/signout", data={"csrf": csrf}, headers=ORIGIN)
    assert r.status_code == 303 and r.headers["location"] == "/console"
    assert (
        'cc_session=""' in r.headers["set-cookie"] or "max-age=0" in r.headers["set-cookie"].lower()
    )
    for token in tokens:
        err(await api.c.get("/v1/ringing", headers={"Authorization": f"Bearer {token}"}), 401)
    err(await api.c.get("/v1/me"), 401)
    # the tenant's own console token (no session) lives on
    assert (await api.c.get("/v1/ringing", headers=w.sh)).status_code == 200
    metrics = await api.metrics()
    assert 'clickacall_control_web_sessions_revoked_total{reason="signout"} 1.0' in metrics


@pytest.mark.parametrize("how", ["deactivate", "delete"])
async def test_deactivating_or_deleting_a_member_ends_everything(web: Web, how: str) -> None:
    api = web.api
    w = await world(api)
    await account(api, w)
    await signin(api.c)
    token = await console_token(api.c, (await me(api.c))["csrf"])
    if how == "deactivate":
        r = await api.c.patch(f"/v1/staff/{w.staff}", json={"active": False}, headers=w.th)
        assert r.status_code == 200
        await api.c.patch(f"/v1/staff/{w.staff}", json={"active": True}, headers=w.th)
    else:
        assert (await api.c.delete(f"/v1/staff/{w.staff}", headers=w.th)).status_code == 204
    err(await api.c.get("/v1/me"), 401)
    for t in (token, w.sh["Authorization"][7:]):
        err(await api.c.get("/v1/ringing", headers={"Authorization": f"Bearer {t}"}), 401)


def test_limit_flags() -> None:
    base = ["--token-key", "k" * 16]
    s, _, _ = load_settings(base, "control")
    assert (s.session_idle, s.session_max, s.wrapup_seconds, s.away_after_rings) == (
        3600,
        43200,
        30,
        3,
    )
    assert (s.public_url, s.throttle_burst, s.throttle_interval, s.throttle_entries) == (
        None,
        5,
        20,
        10000,
    )
    s, _, _ = load_settings(
        [
            *base,
            "--session-idle", "600",
            "--session-max", "7200",
            "--wrapup-seconds", "0",
            "--away-after-rings", "1",
            "--public-url", "https://calls.example.com/",
            "--throttle-burst", "3",
            "--throttle-interval", "5",
            "--throttle-entries", "100",
        ],
        "control",
    )  # fmt: skip
    assert (s.session_idle, s.session_max, s.wrapup_seconds, s.away_after_rings) == (
        600,
        7200,
        0,
        1,
    )
    assert s.public_url == "https://calls.example.com"
    assert (s.throttle_burst, s.throttle_interval, s.throttle_entries) == (3, 5, 100)
    for bad, says in (
        (["--session-idle", "0"], "--session-idle"),
        (["--wrapup-seconds", "-1"], "--wrapup-seconds"),
        (["--away-after-rings", "0"], "--away-after-rings"),
        (["--public-url", "calls.example.com"], "--public-url"),
        (["--throttle-burst", "0"], "--throttle-burst"),
    ):
        with pytest.raises(UsageError, match=says):
            load_settings([*base, *bad], "control")


async def test_a_real_process_invites_and_signs_in() -> None:
    """``python -m control`` with the new flags: the invitation link uses --public-url, the
    invited member sets a password and is signed in; /metrics shows the limits."""
    proc = ControlProcess(
        extra_args=["--public-url", "https://calls.example.com", "--session-idle", "600"]
    )
    await asyncio.to_thread(proc.start)
    try:
        t = await asyncio.to_thread(proc.bootstrap)
        async with httpx.AsyncClient(base_url=proc.url, timeout=10) as c:
            r = await c.post(
                f"/v1/staff/{t.staff_id}/invitation",
                json={"email": "ann@example.com"},
                headers=t.th,
            )
            url = r.json()["url"]
            assert url.startswith("https://calls.example.com/console/invite/")
            good = {"password": PASSWORD, "password2": PASSWORD}
            r = await c.post(
                f"/console/invite/{url.rsplit('/', 1)[1]}", data=good, headers={"Origin": proc.url}
            )
            assert r.status_code == 303 and r.headers["set-cookie"].startswith("cc_session=")
            assert (await me(c))["staff"]["email"] == "ann@example.com"
            metrics = (await c.get(proc.metrics_url)).text
            assert 'clickacall_control_config_limit{name="session_idle_seconds"} 600.0' in metrics
            assert "clickacall_control_web_sessions 1.0" in metrics
    finally:
        await asyncio.to_thread(proc.stop)


async def test_a_null_origin_counts_only_with_sec_fetch_site(web: Web) -> None:
    """Under Referrer-Policy no-referrer a browser posts our own form with "Origin: null":
    Sec-Fetch-Site, which a page cannot set, tells our page from another site's."""
    api = web.api
    w = await world(api)
    await account(api, w)
    page(await signin(api.c, Origin="null", **{"Sec-Fetch-Site": "cross-site"}), 403, "origin")
    page(await signin(api.c, Origin="null"), 403, "origin")
    r = await signin(api.c, Origin="null", **{"Sec-Fetch-Site": "same-origin"})
    assert r.status_code == 303, r.text
