"""Error bodies carry a machine-readable part beside the English message, SQLite and
PostgreSQL: ``field`` (the request field, dotted, without pydantic's ``body.``), ``reason`` (a
stable key: pydantic's error type or one of ours) and ``params`` (what a translated text
needs). The dashboard shows ``err.<reason>`` from its catalogue beside the field; the
``message`` stays exactly what the API always said, so older clients see no change."""

from __future__ import annotations

from typing import Any

import httpx

from tests import test_dashboard
from tests.test_api import ERROR_KEYS, beat
from tests.test_dashboard import Env, tenant_with_admin
from tests.test_dashboard_calls import _api_of

store, pg, env = test_dashboard.store, test_dashboard.pg, test_dashboard.env


def detail(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == ERROR_KEYS, body
    error: dict[str, Any] = body["error"]
    return error


def expect(
    r: httpx.Response,
    status: int,
    message: str,
    field: str | None,
    reason: str | None,
    **params: Any,
) -> None:
    e = detail(r, status)
    assert (e["message"], e["field"], e["reason"], e["params"]) == (message, field, reason, params)


async def test_pydantic_errors_name_the_field_the_type_and_its_limits(env: Env) -> None:
    admin = await tenant_with_admin(env, "Acme", "owner@acme.test")
    links = "/v1/dashboard/links"

    async def create(body: dict[str, Any]) -> httpx.Response:
        return await admin.c.post(links, json=body, headers=admin.w)

    expect(
        await create({"name": "x" * 201}),
        422,
        "body.name: String should have at most 200 characters",
        "name",
        "string_too_long",
        max_length=200,
    )
    expect(await create({}), 422, "body.name: Field required", "name", "missing")
    expect(
        await create({"name": "Sales", "ring_timeout": 2}),
        422,
        "body.ring_timeout: Input should be greater than or equal to 5",
        "ring_timeout",
        "greater_than_equal",
        ge=5,
    )
    e = detail(await create({"name": "Sales", "media": ["fax"]}), 422)
    assert (e["field"], e["reason"]) == ("media.0", "enum")
    assert e["message"].startswith("body.media.0: Input should be ") and e["params"]["expected"]
    r = await admin.c.patch("/v1/dashboard/settings", json={"retention_months": 0}, headers=admin.w)
    expect(
        r,
        422,
        "body.retention_months: Input should be greater than or equal to 1",
        "retention_months",
        "greater_than_equal",
        ge=1,
    )
    r = await admin.c.get("/v1/dashboard/audit", params={"before": 0})
    assert detail(r, 422)["field"] == "before"  # query parameters lose "query." the same way
    assert (await admin.c.get("/v1/dashboard/links")).json()["links"] == []  # nothing stored


async def test_our_own_checks_have_stable_reasons(env: Env) -> None:
    admin = await tenant_with_admin(env, "Acme", "owner@acme.test")
    links = "/v1/dashboard/links"
    hours: dict[str, Any] = {"timezone": "Mars/Olympus", "windows": []}
    r = await admin.c.post(links, json={"name": "Sales", "hours": hours}, headers=admin.w)
    expect(
        r,
        422,
        "body.hours.timezone: Value error, unknown time zone 'Mars/Olympus'",
        "hours.timezone",
        "timezone_unknown",
        zone="Mars/Olympus",
    )
    hours = {"timezone": "Europe/Berlin", "windows": [[0, 540, 540]]}
    r = await admin.c.post(links, json={"name": "Sales", "hours": hours}, headers=admin.w)
    expect(
        r,
        422,
        "body.hours.windows: Value error, opening window (0, 540, 540) is empty (start equals end)",
        "hours.windows",
        "window_empty",
        window="(0, 540, 540)",
    )
    hours = {"timezone": "Europe/Berlin", "windows": [[9, 540, 600]]}
    r = await admin.c.post(links, json={"name": "Sales", "hours": hours}, headers=admin.w)
    expect(
        r,
        422,
        "body.hours.windows: Value error, weekday 9 must be 0 (Monday) to 6 (Sunday)",
        "hours.windows",
        "weekday_range",
        weekday=9,
    )
    r = await admin.c.post(links, json={"name": "Sales", "ring_staff": ["nobody"]}, headers=admin.w)
    expect(
        r,
        422,
        "ring_staff: unknown staff member(s): nobody",
        "ring_staff",
        "staff_unknown",
        ids="nobody",
    )

    staff = "/v1/dashboard/staff"
    r = await admin.c.post(staff, json={"name": "Sam", "email": "sam"}, headers=admin.w)
    msg = "email: must be an email address such as name@example.com"
    expect(r, 422, msg, "email", "email_invalid")
    body = {"name": "Sam", "email": "sam@acme.test", "staff": False, "admin": False}
    r = await admin.c.post(staff, json=body, headers=admin.w)
    msg = "roles: choose at least one of answering calls and admin"
    expect(r, 422, msg, "roles", "roles_none")
    r = await admin.c.post(staff, json={"name": "Me", "email": admin.email}, headers=admin.w)
    expect(r, 409, "email: another staff member has this email", "email", "email_taken")
    (me,) = [m["id"] for m in (await admin.c.get(staff)).json() if m["email"] == admin.email]
    r = await admin.c.patch(f"{staff}/{me}", json={"roles": ["boss"]}, headers=admin.w)
    msg = "roles: 'boss' is not a role (staff or admin)"
    expect(r, 422, msg, "roles", "role_unknown", role="boss")
    r = await admin.c.patch(f"{staff}/{me}", json={"roles": ["staff"]}, headers=admin.w)
    msg = (
        "roles: the business must keep at least one active admin; make someone else an admin first"
    )
    expect(r, 409, msg, "roles", "admin_last")
    r = await admin.c.post(f"{staff}/{me}/deactivate", headers=admin.w)
    msg = "you cannot deactivate yourself; ask another admin"
    expect(r, 409, msg, None, "self_deactivate")

    pw = "/v1/account/password"
    body = {"current": "not it at all", "password": "n" * 12, "password2": "n" * 12}
    r = await admin.c.post(pw, json=body, headers=admin.w)
    expect(r, 422, "current: this is not your current password", "current", "password_wrong")
    body = {"current": test_dashboard.PASSWORD, "password": "short", "password2": "short"}
    r = await admin.c.post(pw, json=body, headers=admin.w)
    expect(
        r, 422, "password: must be at least 10 characters", "password", "password_too_short", min=10
    )
    body = {**body, "password": "a new password 1", "password2": "a new password 2"}
    r = await admin.c.post(pw, json=body, headers=admin.w)
    expect(r, 422, "password2: the two new passwords differ", "password2", "password_mismatch")

    r = await admin.c.post("/v1/account/totp/confirm", json={"code": "123456"}, headers=admin.w)
    msg = "code: start setting up two-factor sign-in first"
    expect(r, 409, msg, "code", "totp_not_started")

    hooks = "/v1/dashboard/webhooks"
    body = {"url": "http://example.com/hook", "events": ["answered"]}
    r = await admin.c.post(hooks, json=body, headers=admin.w)
    expect(r, 422, "url: must start with https://", "url", "url_scheme")
    body = {"url": "https://10.0.0.1/", "events": ["answered"]}
    e = detail(await admin.c.post(hooks, json=body, headers=admin.w), 422)
    assert (e["field"], e["reason"], e["params"]) == (
        "url",
        "url_private",
        {"host": "10.0.0.1", "address": "10.0.0.1"},
    )
    assert e["message"].startswith("url: 10.0.0.1 is (or resolves to) 10.0.0.1, a private")
    r = await admin.c.post(hooks, json={**body, "events": []}, headers=admin.w)
    expect(r, 422, "events: choose at least one event", "events", "events_none")

    await beat(_api_of(env), "n1", "eu")
    r = await admin.c.patch(
        "/v1/dashboard/settings", json={"allowed_regions": ["mars"]}, headers=admin.w
    )
    expect(
        r,
        422,
        "allowed_regions: no relay node serves mars; choose from eu",
        "allowed_regions",
        "region_not_served",
        regions="mars",
        offered="eu",
    )
    assert (await admin.c.get("/v1/dashboard/staff")).json()[0]["email"] == admin.email


async def test_errors_about_no_field_keep_the_new_keys_empty(env: Env) -> None:
    admin = await tenant_with_admin(env, "Acme", "owner@acme.test")
    r = await admin.c.get("/v1/dashboard/links/nosuchlink")
    e = detail(r, 404)
    assert (e["field"], e["reason"], e["params"]) == (None, None, {})
    r = await env.op.get("/v1/links", headers={"Authorization": "Bearer nope"})
    e = detail(r, 401)
    assert (e["code"], e["field"], e["reason"], e["params"]) == ("unauthorized", None, None, {})
