"""The dashboard's Privacy section and the business's settings (control/api/dashprivacy.py)
without a browser, SQLite and PostgreSQL: calls made through the real API; an admin finds a
visitor by reference, call id, the call reference shown to the visitor (read leniently) and
the day's visitor key, exactly as the API does; the export (and its file) equals the API's;
corrections and erasure are the API's, audited with the member as actor and the subject only
hashed; after an erasure the visitor's references find nothing; the audit log pages newest
first. Retention and regions change with the API's rules (bad input: 422 naming the field,
nothing stored), each change audited from/to, by the operator's PATCH too. Staff-only members
get 403, nobody signed out anything, writes need CSRF and our origin, and another business
finds none of it."""

from __future__ import annotations

import dataclasses
from typing import Any

import httpx

from tests import test_dashboard
from tests.test_api import OPH, T0, bearer, beat, err
from tests.test_dashboard import ORIGIN, Env, Member, invite, tenant_with_admin
from tests.test_dashboard_calls import _api_of, again

store, pg, env = test_dashboard.store, test_dashboard.pg, test_dashboard.env

ANN = "ann@example.com"


@dataclasses.dataclass
class Visit:
    id: str
    call_ref: str
    token: dict[str, str]


async def visits(env: Env, m: Member, refs: list[str | None]) -> list[Visit]:
    """One call of ``m``'s business per entry, its ``visitor_ref`` set through the API."""
    c, key = env.op, m.key
    r = await c.post("/v1/staff", json={"name": "Ann"}, headers=key)
    assert r.status_code == 201, r.text
    body = {"name": "Sales", "ring_staff": [r.json()["id"]], "ring_timeout": 30}
    r = await c.post("/v1/links", json=body, headers=key)
    assert r.status_code == 201, r.text
    link = r.json()["public_id"]
    out = []
    for ref in refs:
        await beat(_api_of(env))
        r = await c.post(f"/v1/links/{link}/calls", json={})
        assert r.status_code == 201, r.text
        v = r.json()
        out.append(Visit(v["call_id"], v["call_ref"], bearer(v["token"])))
        if ref is not None:
            r = await c.patch(f"/v1/calls/{v['call_id']}", json={"visitor_ref": ref}, headers=key)
            assert r.status_code == 200, r.text
        r = await c.post(f"/v1/calls/{v['call_id']}/hangup", headers=bearer(v["token"]))
        assert r.status_code == 200, r.text
        env.clock.t += 60
    return out


def lenient(ref: str) -> str:
    """A call reference as a visitor might read it out: lower case, no dash, 0 as O."""
    return ref.replace("-", " ").lower().replace("0", "o").replace("1", "l")


def same_export(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return {**a, "exported_at": 0} == {**b, "exported_at": 0}


async def find(m: Member, **q: str) -> dict[str, Any]:
    r = await m.c.get("/v1/dashboard/subjects", params=q)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


async def api_find(env: Env, m: Member, **q: str) -> dict[str, Any]:
    r = await env.op.get("/v1/subjects", params=q, headers=m.key)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


async def audit(m: Member, **q: Any) -> dict[str, Any]:
    r = await m.c.get("/v1/dashboard/audit", params=q)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


async def me(m: Member) -> str:
    r = await m.c.get("/v1/me")
    return str(r.json()["staff"]["id"])


async def test_each_lookup_finds_the_visitors_calls_as_the_api_does(env: Env) -> None:
    admin = await tenant_with_admin(env, "Acme", "owner@acme.test")
    v1, v2, other = await visits(env, admin, [ANN, ANN, "bob@example.com"])
    await again(admin)
    # by reference: both of Ann's calls, oldest first, as the API's export
    out = await find(admin, ref=ANN)
    assert [c["id"] for c in out["calls"]] == [v1.id, v2.id]
    assert [c["call_ref"] for c in out["calls"]] == [v1.call_ref, v2.call_ref]
    assert same_export(out, await api_find(env, admin, ref=ANN))
    # by call id; by the call reference however it is typed
    assert [c["id"] for c in (await find(admin, call_id=other.id))["calls"]] == [other.id]
    for typed in (v2.call_ref, lenient(v2.call_ref), v2.call_ref.replace("-", "")):
        got = await find(admin, call_ref=typed)
        assert [c["id"] for c in got["calls"]] == [v2.id], typed
        assert same_export(got, await api_find(env, admin, call_ref=typed))
    # by the day's visitor key (every call here came from one address: all three)
    key = out["calls"][0]["visitor_key"]
    assert key and len(key) == 32
    got = await find(admin, key=key)
    assert [c["id"] for c in got["calls"]] == [v1.id, v2.id, other.id]
    assert same_export(got, await api_find(env, admin, key=key))
    # the file to save is that same export
    r = await admin.c.get("/v1/dashboard/subjects/export", params={"ref": ANN})
    assert r.status_code == 200, r.text
    assert r.headers["content-disposition"] == 'attachment; filename="visitor-ref-export.json"'
    assert r.headers["content-type"].startswith("application/json")
    assert same_export(r.json(), out)
    # nothing found; bad input names its field
    assert (await find(admin, ref="nobody@example.com"))["calls"] == []
    assert (await find(admin, call_ref="ZZZZ-ZZZZ"))["calls"] == []
    r = await admin.c.get("/v1/dashboard/subjects", params={"call_ref": "K7Q2-M9X"})
    assert err(r, 422, "invalid").startswith("call_ref: must be 8 letters")
    r = await admin.c.get("/v1/dashboard/subjects", params={"call_ref": "K7Q2-M9XU"})
    assert err(r, 422, "invalid").startswith("call_ref:")  # U is not Crockford's
    r = await admin.c.get("/v1/dashboard/subjects", params={"ref": ANN, "call_id": v1.id})
    assert "exactly one" in err(r, 422, "invalid")
    r = await admin.c.get("/v1/dashboard/subjects", params={"call_id": "f" * 32})
    err(r, 404, "not_found")
    # the API reads call references the same way
    r = await env.op.get("/v1/subjects", params={"call_ref": "nope"}, headers=admin.key)
    assert err(r, 422, "invalid").startswith("call_ref:")


async def test_correct_and_erase_are_the_apis_and_audited(env: Env) -> None:
    admin = await tenant_with_admin(env, "Acme", "owner@acme.test")
    v1, v2, other = await visits(env, admin, [ANN, ANN, "bob@example.com"])
    await again(admin)
    actor = f"staff:{await me(admin)}"
    # bad input: 422 naming the field, nothing changed
    for body, field in (
        ({"visitor_prefix": "10.1.2.3/32"}, "visitor_prefix"),
        ({"visitor_os": "x" * 65}, "visitor_os"),
        ({"visitor_ref": "a\nb"}, "visitor_ref"),
        ({"call_ref": "K7Q2-M9XD"}, "call_ref"),
    ):
        r = await admin.c.patch(
            "/v1/dashboard/subjects", params={"ref": ANN}, json=body, headers=admin.w
        )
        assert err(r, 422).startswith(f"body.{field}"), body
    r = await admin.c.patch("/v1/dashboard/subjects", params={"ref": ANN}, json={}, headers=admin.w)
    assert "nothing to change" in err(r, 422)
    assert [c["visitor_os"] for c in (await find(admin, ref=ANN))["calls"]] == [None, None]
    # correct: a new reference and a network prefix on both of Ann's calls
    new = "ann@new.example"
    body = {"visitor_ref": new, "visitor_prefix": "192.0.2.0/24"}
    r = await admin.c.patch(
        "/v1/dashboard/subjects",
        params={"call_ref": lenient(v1.call_ref)},
        json=body,
        headers=admin.w,
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"calls": [v1.id], "fields": sorted(body), "mode": "correct"}
    r = await admin.c.patch(
        "/v1/dashboard/subjects", params={"ref": ANN}, json=body, headers=admin.w
    )
    assert r.json()["calls"] == [v2.id]
    got = (await find(admin, ref=new))["calls"]
    assert [(c["id"], c["visitor_prefix"]) for c in got] == [
        (v1.id, "192.0.2.0/24"),
        (v2.id, "192.0.2.0/24"),
    ]
    # one call's reference, as PATCH /v1/calls/{id}
    r = await admin.c.patch(
        f"/v1/dashboard/calls/{other.id}", json={"visitor_ref": "bob@new.example"}, headers=admin.w
    )
    assert r.status_code == 200 and r.json()["visitor_ref"] == "bob@new.example", r.text
    # erase by the call reference: that call's personal fields and its reference go
    r = await admin.c.delete(
        "/v1/dashboard/subjects", params={"call_ref": v1.call_ref}, headers=admin.w
    )
    assert r.status_code == 200, r.text
    assert r.json()["calls"] == [v1.id] and "call_ref" in r.json()["fields"]
    assert (await find(admin, call_ref=v1.call_ref))["calls"] == []
    (anon,) = (await find(admin, call_id=v1.id))["calls"]
    assert anon["visitor_ref"] is anon["visitor_key"] is anon["call_ref"] is None
    # erase by the reference, deleting the calls
    r = await admin.c.delete(
        "/v1/dashboard/subjects", params={"ref": new, "mode": "delete"}, headers=admin.w
    )
    assert r.json() == {"calls": [v2.id], "fields": [], "mode": "delete"}
    assert (await find(admin, ref=new))["calls"] == []
    assert (await find(admin, call_ref=v2.call_ref))["calls"] == []
    r = await admin.c.get("/v1/dashboard/subjects", params={"call_id": v2.id})
    err(r, 404, "not_found")
    # the audit log: newest first, the member as actor (with a name), subjects hashed only
    log = await audit(admin, limit=100)
    assert log["next_before"] is None and log["next_after"] is None
    assert log["actors"][actor] == "owner"  # and the API key (no name) that set the refs
    assert {e["actor"] for e in log["entries"]} == set(log["actors"])
    mine = [e for e in log["entries"] if e["actor"] == actor]
    assert [e["action"] for e in mine][:4] == ["access", "access", "delete", "access"]
    assert {"correct", "erase", "set_ref", "access", "delete"} == {e["action"] for e in mine}
    seqs = [e["seq"] for e in log["entries"]]
    assert seqs == sorted(seqs, reverse=True)
    dump = repr(log)
    for secret in (ANN, new, "bob@", "127.0.0.1", v1.call_ref):
        assert secret not in dump
    # the API shows the same entries, oldest first or (new) newest first
    r = await env.op.get("/v1/audit", params={"limit": 100}, headers=admin.key)
    assert [e["seq"] for e in r.json()["entries"]] == sorted(seqs)
    r = await env.op.get("/v1/audit", params={"limit": 100, "order": "newest"}, headers=admin.key)
    assert r.json()["entries"] == log["entries"]
    # paging: three at a time, newest first, until no more
    seen: list[int] = []
    before = None
    while True:
        page = await audit(admin, limit=3, **({} if before is None else {"before": before}))
        seen += [e["seq"] for e in page["entries"]]
        before = page["next_before"]
        if before is None:
            break
    assert seen == seqs
    r = await admin.c.get("/v1/dashboard/audit", params={"before": 0})
    assert err(r, 422).startswith("query.before")


async def test_settings_change_with_the_apis_rules_and_are_audited(env: Env) -> None:
    admin = await tenant_with_admin(env, "Acme", "owner@acme.test")
    await beat(_api_of(env), "n1", "eu")
    await beat(_api_of(env), "n2", "us-east")
    r = await admin.c.get("/v1/dashboard/settings")
    assert r.status_code == 200, r.text
    assert r.json() == {
        "retention_months": 60,
        "allowed_regions": ["eu"],
        "regions": ["eu", "us-east"],
        "max_retention_months": 60,
    }

    async def stored() -> dict[str, Any]:
        r = await env.op.get(f"/v1/tenants/{admin.tenant}", headers=OPH)
        t: dict[str, Any] = r.json()
        return {k: t[k] for k in ("retention_months", "allowed_regions", "name")}

    before = await stored()
    for body, field in (
        ({"retention_months": 0}, "retention_months"),
        ({"retention_months": 61}, "retention_months"),
        ({"retention_months": "twelve"}, "retention_months"),
        ({"retention_months": 12, "allowed_regions": []}, "allowed_regions"),
        ({"retention_months": 12, "allowed_regions": ["EU!"]}, "allowed_regions"),
        ({"retention_months": 12, "allowed_regions": ["mars"]}, "allowed_regions"),
        ({"retention_months": 12, "name": "Evil"}, "name"),  # the operator's only
        ({"click_limits": {}}, "click_limits"),
    ):
        r = await admin.c.patch("/v1/dashboard/settings", json=body, headers=admin.w)
        msg = err(r, 422)
        assert msg.removeprefix("body.").startswith(field), (body, msg)
    r = await admin.c.patch(
        "/v1/dashboard/settings", json={"allowed_regions": ["mars"]}, headers=admin.w
    )
    assert err(r, 422) == ("allowed_regions: no relay node serves mars; choose from eu, us-east")
    assert await stored() == before
    assert (await audit(admin))["entries"] == []
    # a good change: stored once, audited from/to with the member
    body = {"retention_months": 12, "allowed_regions": ["us-east", "eu"]}
    r = await admin.c.patch("/v1/dashboard/settings", json=body, headers=admin.w)
    assert r.status_code == 200, r.text
    assert r.json()["retention_months"] == 12
    assert r.json()["allowed_regions"] == ["us-east", "eu"]
    assert await stored() == {**before, **body}
    # the same again changes nothing and writes nothing
    r = await admin.c.patch("/v1/dashboard/settings", json=body, headers=admin.w)
    assert r.status_code == 200, r.text
    (entry,) = (await audit(admin))["entries"]
    assert entry["action"] == "settings" and entry["subject"] is None
    assert entry["actor"] == f"staff:{await me(admin)}"
    assert entry["details"] == {
        "changes": {
            "retention_months": {"from": 60, "to": 12},
            "allowed_regions": {"from": ["eu"], "to": ["us-east", "eu"]},
        }
    }
    # the operator's PATCH goes through the same function: audited too
    r = await env.op.patch(
        f"/v1/tenants/{admin.tenant}",
        json={"retention_months": 24, "name": "Acme Ltd"},
        headers=OPH,
    )
    assert r.status_code == 200, r.text
    newest = (await audit(admin))["entries"][0]
    assert (newest["actor"], newest["action"]) == ("operator", "settings")
    assert newest["details"]["changes"] == {
        "name": {"from": "Acme", "to": "Acme Ltd"},
        "retention_months": {"from": 12, "to": 24},
    }
    r = await env.op.patch(
        f"/v1/tenants/{admin.tenant}", json={"retention_months": 61}, headers=OPH
    )
    assert err(r, 422).startswith("body.retention_months")
    assert (await stored())["retention_months"] == 24


async def test_only_the_business_admins_reach_its_visitors_and_settings(env: Env) -> None:
    a = await tenant_with_admin(env, "Acme", "owner@acme.test")
    b = await tenant_with_admin(env, "Bolt", "owner@bolt.test")
    (v,) = await visits(env, a, [ANN])
    await again(a)
    await again(b)
    # the other business finds nothing of it: a 404 by id, nothing by its references
    r = await b.c.get("/v1/dashboard/subjects", params={"call_id": v.id})
    missing = await b.c.get("/v1/dashboard/subjects", params={"call_id": "f" * 32})
    assert err(r, 404, "not_found") == missing.json()["error"]["message"]
    assert (await find(b, ref=ANN))["calls"] == []
    assert (await find(b, call_ref=v.call_ref))["calls"] == []
    r = await b.c.delete("/v1/dashboard/subjects", params={"call_id": v.id}, headers=b.w)
    err(r, 404, "not_found")
    r = await b.c.delete("/v1/dashboard/subjects", params={"ref": ANN}, headers=b.w)
    assert r.json()["calls"] == []
    r = await b.c.patch(f"/v1/dashboard/calls/{v.id}", json={"visitor_ref": "x"}, headers=b.w)
    err(r, 404, "not_found")
    r = await b.c.patch(
        "/v1/dashboard/subjects",
        params={"call_ref": v.call_ref},
        json={"visitor_os": "x"},
        headers=b.w,
    )
    assert r.json()["calls"] == []
    assert [c["visitor_ref"] for c in (await find(a, call_id=v.id))["calls"]] == [ANN]
    assert all(e["details"]["calls"] == [] for e in (await audit(b))["entries"])
    b_actor = f"staff:{await me(b)}"
    assert b_actor not in {e["actor"] for e in (await audit(a))["entries"]}
    r = await b.c.patch("/v1/dashboard/settings", json={"retention_months": 3}, headers=b.w)
    assert r.status_code == 200
    assert (await a.c.get("/v1/dashboard/settings")).json()["retention_months"] == 60
    # writes need the CSRF token and our origin
    q = {"ref": ANN}
    writes = [
        ("PATCH", "/v1/dashboard/subjects", q, {"visitor_os": "x"}),
        ("DELETE", "/v1/dashboard/subjects", q, None),
        ("PATCH", f"/v1/dashboard/calls/{v.id}", {}, {"visitor_ref": "x"}),
        ("PATCH", "/v1/dashboard/settings", {}, {"retention_months": 2}),
    ]
    for method, path, params, body in writes:
        for headers in (
            ORIGIN,
            {"X-CSRF-Token": "wrong", **ORIGIN},
            {"X-CSRF-Token": a.csrf, "Origin": "https://evil.test"},
        ):
            r = await a.c.request(method, path, params=params, json=body, headers=headers)
            assert err(r, 403, "forbidden"), (path, headers)
    assert [c["visitor_ref"] for c in (await find(a, call_id=v.id))["calls"]] == [ANN]
    assert (await a.c.get("/v1/dashboard/settings")).json()["retention_months"] == 60
    # a staff-only member: 403 everywhere; signed out: 401
    ann = await invite(env, a, "Ann Two", "ann2@acme.test")
    reads = [
        ("GET", "/v1/dashboard/subjects", q, None),
        ("GET", "/v1/dashboard/subjects/export", q, None),
        ("GET", "/v1/dashboard/audit", {}, None),
        ("GET", "/v1/dashboard/settings", {}, None),
    ]
    for method, path, params, body in reads + writes:
        r = await ann.c.request(method, path, params=params, json=body, headers=ann.w)
        assert err(r, 403, "forbidden").startswith("this needs an admin"), path
        anon = httpx.AsyncClient(transport=env.transport, base_url=test_dashboard.BASE)
        r = await anon.request(method, path, params=params, json=body, headers=ORIGIN)
        assert r.status_code == 401, path
    # the role is checked before the selector: no selector is still a 403, not a 422
    for method, path in (
        ("GET", "/v1/dashboard/subjects"),
        ("GET", "/v1/dashboard/subjects/export"),
        ("PATCH", "/v1/dashboard/subjects"),
        ("DELETE", "/v1/dashboard/subjects"),
    ):
        r = await ann.c.request(method, path, headers=ann.w)
        assert err(r, 403, "forbidden"), (method, path)
    assert (await ann.c.get("/dashboard/privacy")).status_code == 403
    assert [c["visitor_ref"] for c in (await find(a, call_id=v.id))["calls"]] == [ANN]
    assert env.clock.t > T0
