"""Changing a member's roles from the dashboard, and the audit log of what admins do there
(httpx over ASGI, SQLite and PostgreSQL; the fixtures are tests/test_dashboard.py's).

``PATCH /v1/dashboard/staff/{id}`` ``{"roles"}``: what a member loses takes effect at once (no
staff role: their console tokens are revoked and no new one is minted; no admin role: the
next dashboard request is a 403), and the business always keeps an active admin. Invitations,
deactivations, role changes, API keys made and revoked and two-step sign-in turned on and off
are in ``GET /v1/audit`` with the admin who did it.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pyotp
import pytest
from prometheus_client import generate_latest

from control.lifecycle import tenant_channel
from control.metrics import metrics_of
from control.models import AuditEntry
from control.store import Busy
from tests import test_dashboard
from tests.test_api import bearer, err
from tests.test_dashboard import PASSWORD, Env, invite, signin, tenant_with_admin

store, pg, env = test_dashboard.store, test_dashboard.pg, test_dashboard.env


async def _patch(by: Any, staff_id: str, roles: Any) -> Any:
    return await by.c.patch(f"/v1/dashboard/staff/{staff_id}", json={"roles": roles}, headers=by.w)


async def _id(env: Env, email: str) -> str:
    member = await env.store.find_staff_by_email(email)
    assert member is not None
    return member.id


async def _audit(env: Env, key: dict[str, str]) -> list[dict[str, Any]]:
    r = await env.op.get("/v1/audit", headers=key)
    assert r.status_code == 200, r.text
    entries: list[dict[str, Any]] = r.json()["entries"]
    return entries


async def test_roles_change_at_once_and_an_active_admin_always_remains(env: Env) -> None:
    admin = await tenant_with_admin(env, "Acme", "owner@acme.test")
    me = await _id(env, "owner@acme.test")
    ann = await invite(env, admin, "Ann", "ann@acme.test")
    ann_id = await _id(env, "ann@acme.test")
    # bad input names the field and changes nothing
    for roles, message in [
        ([], "roles: choose at least one"),
        (["boss"], "roles: 'boss' is not a role"),
        ("admin", "body.roles"),
    ]:
        assert err(await _patch(admin, ann_id, roles), 422).startswith(message), roles
    # the last admin cannot drop their admin role: 409 naming the field
    r = await _patch(admin, me, ["staff"])
    assert err(r, 409, "conflict").startswith("roles: the business must keep at least one")
    assert (await env.store.get_staff(admin.tenant, me)).roles == ["admin"]  # type: ignore[union-attr]
    # no CSRF token, or not an admin: refused
    r = await admin.c.patch(f"/v1/dashboard/staff/{ann_id}", json={"roles": ["admin"]})
    assert r.status_code == 403
    r = await _patch(ann, ann_id, ["staff", "admin"])
    assert err(r, 403, "forbidden").startswith("this needs an admin")
    # Ann, a console member with a live console token, becomes admin as well
    r = await ann.c.post("/v1/me/token", headers=ann.w)
    assert r.status_code == 201
    token = r.json()
    r = await _patch(admin, ann_id, ["admin", "staff"])
    assert r.status_code == 200, r.text
    assert r.json()["roles"] == ["staff", "admin"]
    assert (await ann.c.get("/v1/dashboard/staff")).status_code == 200  # same session
    assert (await env.op.get("/v1/callbacks", headers=bearer(token["token"]))).status_code == 200
    # now the owner may hand the admin role over, even their own
    r = await _patch(admin, me, ["staff"])
    assert r.status_code == 200 and r.json()["roles"] == ["staff"]
    r = await admin.c.get("/v1/dashboard/staff")
    assert err(r, 403, "forbidden").startswith("this needs an admin")  # the very next request
    r = await admin.c.get("/dashboard/staff")
    assert r.status_code == 403
    # Ann stops answering calls: her console's token is revoked (its socket hears it) and
    # she gets no new one; her dashboard session goes on
    async with await env.store.listen(tenant_channel(admin.tenant)) as sub:
        r = await _patch(ann, ann_id, ["admin"])
        assert r.status_code == 200 and r.json()["roles"] == ["admin"]
        event = json.loads(await asyncio.wait_for(anext(sub), 5))
        assert event == {"k": "revoked", "token": token["token_id"]}
    assert (await env.op.get("/v1/callbacks", headers=bearer(token["token"]))).status_code == 401
    r = await ann.c.post("/v1/me/token", headers=ann.w)
    assert err(r, 403, "forbidden").startswith("you do not answer calls")
    assert (await ann.c.get("/v1/dashboard/staff")).status_code == 200
    # Ann is now the only admin: she cannot drop it either, and signing in lands her there
    assert (await _patch(ann, ann_id, ["staff"])).status_code == 409
    c = env.client()
    r = await signin(c, "ann@acme.test")
    assert r.status_code == 303 and r.headers["location"] == "/dashboard"
    # an inactive admin does not count: deactivated people keep no roles that matter
    bo = await invite(env, ann, "Bo", "bo@acme.test", admin=True, staff=False)
    bo_id = await _id(env, "bo@acme.test")
    assert (await ann.c.post(f"/v1/dashboard/staff/{bo_id}/deactivate", headers=ann.w)).is_success
    assert (await _patch(ann, ann_id, ["staff"])).status_code == 409
    r = await _patch(ann, bo_id, ["staff"])
    assert err(r, 409, "inactive") == "this staff member is inactive"
    assert (await bo.c.get("/v1/me")).status_code == 401


async def test_a_business_cannot_change_another_business_s_roles(env: Env) -> None:
    a = await tenant_with_admin(env, "Acme", "owner@acme.test")
    b = await tenant_with_admin(env, "Bolt", "owner@bolt.test")
    bee = await invite(env, b, "Bee", "bee@bolt.test")
    bee_id = await _id(env, "bee@bolt.test")
    r = await _patch(a, bee_id, ["admin"])
    assert err(r, 404, "not_found") == "no such staff member"
    assert (await env.store.get_staff(b.tenant, bee_id)).roles == ["staff"]  # type: ignore[union-attr]
    assert (await bee.c.get("/v1/dashboard/staff")).status_code == 403
    # and Bolt's audit log says nothing of it, Acme's neither
    assert not [e for e in await _audit(env, a.key) if e["action"] == "staff_roles"]
    assert not [e for e in await _audit(env, b.key) if e["action"] == "staff_roles"]


async def test_two_admins_taking_each_other_s_admin_role_at_once_leave_one(env: Env) -> None:
    a = await tenant_with_admin(env, "Acme", "owner@acme.test")
    b = await invite(env, a, "Bo", "bo@acme.test", admin=True, staff=False)
    a_id, b_id = await _id(env, "owner@acme.test"), await _id(env, "bo@acme.test")
    answers = await asyncio.gather(_patch(a, b_id, ["staff"]), _patch(b, a_id, ["staff"]))
    # the loser is refused: no admin left to be (403), or the last one (409)
    assert sorted(r.status_code for r in answers) in ([200, 403], [200, 409])
    team = await env.store.list_staff(a.tenant)
    assert [m.email for m in team if m.is_admin] in (["owner@acme.test"], ["bo@acme.test"])
    # the store itself, both writes in flight at once (two connections on PostgreSQL)
    s = env.store
    assert await s.set_staff_access(a.tenant, a_id, roles=["staff", "admin"])
    assert await s.set_staff_access(a.tenant, b_id, roles=["staff", "admin"])
    for _ in range(5):
        done = await asyncio.gather(
            s.set_staff_access(a.tenant, a_id, roles=["staff"]),
            s.set_staff_access(a.tenant, b_id, roles=["staff"]),
            return_exceptions=True,
        )
        assert sorted(type(d).__name__ for d in done) == ["Conflict", "bool"], done
        assert len([m for m in await s.list_staff(a.tenant) if m.is_admin]) == 1
        for who in (a_id, b_id):
            assert await s.set_staff_access(a.tenant, who, roles=["staff", "admin"])
    assert not await s.set_staff_access(a.tenant, "f" * 32, roles=["admin"])  # no such member
    # deactivating is held to the same rule: two admins deactivating each other at once
    for _ in range(3):
        done = await asyncio.gather(
            s.set_staff_access(a.tenant, a_id, active=False),
            s.set_staff_access(a.tenant, b_id, active=False),
            return_exceptions=True,
        )
        assert sorted(type(d).__name__ for d in done) == ["Conflict", "bool"], done
        assert len([m for m in await s.list_staff(a.tenant) if m.active]) == 1
        for who in (a_id, b_id):
            assert await s.set_staff_access(a.tenant, who, active=True)
    # ... and one admin demoting the other while being deactivated by them
    done = await asyncio.gather(
        s.set_staff_access(a.tenant, a_id, active=False),
        s.set_staff_access(a.tenant, b_id, roles=["staff"]),
        return_exceptions=True,
    )
    assert sorted(type(d).__name__ for d in done) == ["Conflict", "bool"], done
    team = await s.list_staff(a.tenant)
    assert len([m for m in team if m.active and m.is_admin]) == 1


async def test_dashboard_actions_are_in_the_audit_log_with_who_did_them(env: Env) -> None:
    admin = await tenant_with_admin(env, "Acme", "owner@acme.test")
    me = await _id(env, "owner@acme.test")
    await invite(env, admin, "Ann", "ann@acme.test", admin=False, staff=True)
    ann_id = await _id(env, "ann@acme.test")
    body = {"name": "Bo", "email": "bo@acme.test"}
    r = await admin.c.post("/v1/dashboard/staff", json=body, headers=admin.w)
    bo_id = r.json()["member"]["id"]
    r = await admin.c.post(f"/v1/dashboard/staff/{bo_id}/invitation", headers=admin.w)
    assert r.status_code == 201  # a new link for someone who has not used theirs
    assert (await _patch(admin, ann_id, ["staff", "admin"])).status_code == 200
    assert (await _patch(admin, ann_id, ["staff", "admin"])).status_code == 200  # no change
    r = await admin.c.post("/v1/dashboard/keys", json={"name": "CRM"}, headers=admin.w)
    key = r.json()
    assert (await admin.c.delete(f"/v1/dashboard/keys/{key['id']}", headers=admin.w)).is_success
    r = await admin.c.post(f"/v1/dashboard/staff/{ann_id}/deactivate", headers=admin.w)
    assert r.is_success
    # two-step sign-in on, then off
    r = await admin.c.post("/v1/account/totp", headers=admin.w)
    code = pyotp.TOTP(r.json()["secret"]).at(env.clock.t)
    r = await admin.c.post("/v1/account/totp/confirm", json={"code": code}, headers=admin.w)
    assert r.status_code == 200, r.text
    body = {"password": PASSWORD}
    assert (await admin.c.post("/v1/account/totp/disable", json=body, headers=admin.w)).is_success
    # refused actions write nothing
    assert (await _patch(admin, me, ["staff"])).status_code == 409
    entries = [e for e in await _audit(env, admin.key) if e["actor"].startswith("staff:")]
    assert [(e["action"], e["actor"]) for e in entries] == [
        (action, f"staff:{me}")
        for action in (
            "staff_invite",
            "staff_invite",
            "staff_invite",
            "staff_roles",
            "key_create",
            "key_revoke",
            "staff_deactivate",
            "totp_on",
            "totp_off",
        )
    ]
    owner = "owner@acme.test"
    assert [e["details"] for e in entries[:3]] == [
        {"admin": owner, "staff_id": ann_id, "name": "Ann", "roles": ["staff"]},
        {"admin": owner, "staff_id": bo_id, "name": "Bo", "roles": ["staff"]},
        {"admin": owner, "staff_id": bo_id, "name": "Bo", "again": True},
    ]
    by = {e["action"]: e["details"] for e in entries}
    assert all(e["details"]["admin"] == owner for e in entries)
    assert by["staff_roles"]["roles"] == ["staff", "admin"]
    assert by["staff_roles"]["previous"] == ["staff"]
    assert by["key_create"] == {"admin": owner, "key_id": key["id"], "name": "CRM"}
    assert by["key_revoke"] == {"admin": owner, "key_id": key["id"], "name": "CRM"}
    assert by["staff_deactivate"] == {"admin": owner, "staff_id": ann_id, "name": "Ann"}
    assert by["totp_on"] == by["totp_off"] == {"admin": owner}
    assert all(e["subject"] is None and e["at"] == env.clock.t for e in entries)
    # counted by action (control/privacy.py's metric)
    registry = metrics_of(env.transport.app).registry  # type: ignore[arg-type]
    metrics = generate_latest(registry).decode()
    assert 'clickacall_control_audit_entries_total{action="staff_roles"} 1.0' in metrics


async def test_a_dashboard_action_whose_audit_entry_fails_is_not_stored(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each admin action and its audit entry are one transaction: when the entry cannot be
    written, the admin is told to try again and nothing of the action is stored."""
    admin = await tenant_with_admin(env, "Acme", "owner@acme.test")
    me = await _id(env, "owner@acme.test")
    await invite(env, admin, "Ann", "ann@acme.test", admin=False, staff=True)
    ann_id = await _id(env, "ann@acme.test")
    r = await admin.c.post("/v1/dashboard/keys", json={"name": "CRM"}, headers=admin.w)
    key_id = r.json()["id"]
    r = await admin.c.post("/v1/account/totp", headers=admin.w)
    secret = r.json()["secret"]
    entries = await _audit(env, admin.key)

    async def busy(entry: AuditEntry) -> None:
        raise Busy("the database is busy")

    async def state() -> Any:
        s = env.store
        return (
            [(m.email, m.roles, m.active) for m in await s.list_staff(admin.tenant)],
            [(k.id, k.revoked_at) for k in await s.list_api_keys(admin.tenant)],
            (await s.get_staff(admin.tenant, me)).totp_secret,  # type: ignore[union-attr]
        )

    before = await state()
    code = pyotp.TOTP(secret).at(env.clock.t)
    attempts = [
        ("post", "/v1/dashboard/staff", {"name": "Bo", "email": "bo@acme.test"}),
        ("patch", f"/v1/dashboard/staff/{ann_id}", {"roles": ["staff", "admin"]}),
        ("post", f"/v1/dashboard/staff/{ann_id}/deactivate", None),
        ("post", "/v1/dashboard/keys", {"name": "ERP"}),
        ("delete", f"/v1/dashboard/keys/{key_id}", None),
        ("post", "/v1/account/totp/confirm", {"code": code}),
    ]
    with monkeypatch.context() as m:
        m.setattr(env.store, "append_audit", busy)
        for method, url, body in attempts:
            kwargs: dict[str, Any] = {"headers": admin.w}
            if body is not None:
                kwargs["json"] = body
            r = await admin.c.request(method.upper(), url, **kwargs)
            assert err(r, 503, "busy") == "the database is busy; try again shortly", url
            assert await state() == before, url
    assert await _audit(env, admin.key) == entries
    assert (await env.store.find_staff_by_email("bo@acme.test")) is None

    # the same actions, with their entries
    for method, url, body in attempts:
        kwargs = {"headers": admin.w}
        if body is not None:
            kwargs["json"] = body
        r = await admin.c.request(method.upper(), url, **kwargs)
        assert r.is_success, (url, r.text)
    after = [e["action"] for e in await _audit(env, admin.key)][len(entries) :]
    assert after == [
        "staff_invite",
        "staff_roles",
        "staff_deactivate",
        "key_create",
        "key_revoke",
        "totp_on",
    ]
    # two-step sign-in stays on when turning it off cannot be audited
    body = {"password": PASSWORD}
    with monkeypatch.context() as m:
        m.setattr(env.store, "append_audit", busy)
        r = await admin.c.post("/v1/account/totp/disable", json=body, headers=admin.w)
        assert err(r, 503, "busy").startswith("the database is busy")
    assert (await env.store.get_staff(admin.tenant, me)).totp_secret == secret  # type: ignore[union-attr]
    r = await admin.c.post("/v1/account/totp/disable", json=body, headers=admin.w)
    assert r.is_success and (await _audit(env, admin.key))[-1]["action"] == "totp_off"
