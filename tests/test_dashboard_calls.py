"""The dashboard's call log (control/api/dashcalls.py) without a browser, SQLite and PostgreSQL:
calls made through the real API (click, connection check, decline, answer, hang up) and relay
summaries posted as a node's agent does; the admin's list equals the API's for the same
filters, pages by cursor, explains bad filters by field, shows one call's timeline, quality
and retention date, and downloads exactly the API's CSV. Another business's call is a 404,
a staff-only member gets 403, and nobody signed out gets anything."""

from __future__ import annotations

import calendar
import dataclasses
import datetime as dt
from typing import Any

import httpx
from hypothesis import given
from hypothesis import strategies as st

from control.privacy import kept_until, months_ago
from tests import test_dashboard
from tests.test_api import NODEH, T0, bearer, beat, err
from tests.test_calllogs import flow, summary
from tests.test_dashboard import ORIGIN, Env, Member, csrf_of, invite, signin, tenant_with_admin

store, pg, env = test_dashboard.store, test_dashboard.pg, test_dashboard.env

UA = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36"}


@dataclasses.dataclass
class Seeded:
    good: str  # answered by Ann, hung up after 60 s, clean audio both ways
    poor: str  # answered by Ben, lossy audio and video
    missed: str  # Ann declined, nobody answered
    ann: str
    ben: str
    link: str


async def console(c: httpx.AsyncClient, key: dict[str, str], staff: str) -> dict[str, str]:
    r = await c.post(f"/v1/staff/{staff}/token", headers=key)
    assert r.status_code == 201, r.text
    return bearer(r.json()["token"])


async def seed(env: Env, admin: Member) -> Seeded:
    """Three calls of ``admin``'s business, made through the API with the clock moved."""
    c, key = env.op, admin.key
    staff = {}
    for name in ("Ann", "Ben"):
        r = await c.post("/v1/staff", json={"name": name}, headers=key)
        assert r.status_code == 201, r.text
        staff[name] = r.json()["id"]
    body = {"name": "Sales", "ring_staff": list(staff.values()), "ring_timeout": 30}
    r = await c.post("/v1/links", json=body, headers=key)
    assert r.status_code == 201, r.text
    link = r.json()
    made = []
    for i, (who, talk) in enumerate((("Ann", 60.0), ("Ben", 30.0), (None, 0.0))):
        env.clock.t = T0 + i * 3600
        await beat(_api_of(env))  # the relay node, alive now
        r = await c.post(f"/v1/links/{link['public_id']}/calls", json={}, headers=UA)
        assert r.status_code == 201, r.text
        v = r.json()
        visitor = bearer(v["token"])
        check = {"verdict": "partial", "transports": {"udp": "fail", "tcp": "ok"}, "ms": 900}
        r = await c.post(f"/v1/calls/{v['call_id']}/check", json=check, headers=visitor)
        assert r.status_code == 204, r.text
        if who is None:  # Ann declines; the call rings Ben on until it is missed
            r = await c.post(
                f"/v1/calls/{v['call_id']}/reject", headers=await console(c, key, staff["Ann"])
            )
            assert r.status_code == 200, r.text
            env.clock.t += 45
        else:
            env.clock.t += 5
            r = await c.post(
                f"/v1/calls/{v['call_id']}/answer", headers=await console(c, key, staff[who])
            )
            assert r.status_code == 200, r.text
            staff_token = r.json()["token_id"]
            env.clock.t += talk
            r = await c.post(f"/v1/calls/{v['call_id']}/hangup", headers=visitor)
            assert r.status_code == 200, r.text
            if who == "Ann":
                up, down, kinds = flow(3000), flow(3000, jitter=4.0), ("audio",)
            else:
                up, down = flow(1500, lost=150, jitter=30.0, mos=2.4), flow(1500, mos=3.9)
                kinds = ("audio", "video")
            start, at = T0 + i * 3600 + 5, env.clock.t
            sums = [
                summary(
                    10 * i + 1,
                    v["token_id"],
                    "v",
                    started=start,
                    at=at,
                    final=True,
                    up=up,
                    down=down,
                    kinds=kinds,
                ),
                summary(
                    10 * i + 2,
                    staff_token,
                    "s",
                    started=start,
                    at=at,
                    final=True,
                    up=down,
                    down=up,
                    kinds=kinds,
                ),
            ]
            r = await c.post(
                "/v1/nodes/summaries", json={"node_id": "n1", "summaries": sums}, headers=NODEH
            )
            assert r.status_code == 200 and r.json()["stored"] == 2, r.text
        made.append(v["call_id"])
    env.clock.t = T0 + 4 * 3600
    # hours went by: the admin's session is past its idle timeout, so they sign in again
    await again(admin)
    return Seeded(made[0], made[1], made[2], staff["Ann"], staff["Ben"], link["id"])


async def again(m: Member) -> None:
    """Sign ``m`` in again (a new session, a new CSRF token)."""
    r = await signin(m.c, m.email)
    assert r.status_code == 303, r.text
    m.csrf = await csrf_of(m.c)


@dataclasses.dataclass
class _View:
    c: httpx.AsyncClient


def _api_of(env: Env) -> Any:
    """``beat`` of tests/test_api wants something with ``.c``."""
    return _View(env.op)


async def page(m: Member, **q: Any) -> dict[str, Any]:
    r = await m.c.get("/v1/dashboard/calls", params=q)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


async def api_page(env: Env, m: Member, **q: Any) -> dict[str, Any]:
    r = await env.op.get("/v1/calllogs", params=q, headers=m.key)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


async def test_the_log_filters_pages_and_exports_as_the_api(env: Env) -> None:
    admin = await tenant_with_admin(env, "Acme", "owner@acme.test")
    s = await seed(env, admin)
    everything = await page(admin)
    assert [e["id"] for e in everything["calls"]] == [s.missed, s.poor, s.good]
    assert everything == await api_page(env, admin)
    assert everything["next_cursor"] is None
    # each filter as the API's
    cases: list[dict[str, Any]] = [
        {"outcome": "missed"},
        {"outcome": "ended"},
        {"mos_below": "3"},
        {"staff": s.ann},
        {"link": s.link},
        {"since": str(T0 + 1800), "until": str(T0 + 3 * 3600)},
        {"outcome": "ended", "mos_below": "4.5"},
    ]
    for q in cases:
        assert await page(admin, **q) == await api_page(env, admin, **q), q
    assert [e["id"] for e in (await page(admin, outcome="missed"))["calls"]] == [s.missed]
    assert [e["id"] for e in (await page(admin, mos_below="3"))["calls"]] == [s.poor]
    assert [e["id"] for e in (await page(admin, mos_below="3,0"))["calls"]] == [s.poor]
    # empty fields are no filter (what an untouched form sends)
    blank = {"since": "", "until": "", "link": "", "staff": "", "outcome": "", "mos_below": ""}
    assert await page(admin, **blank) == everything
    # cursor paging walks the same list, one call a page
    seen, cursor = [], None
    while True:
        got = await page(admin, limit=1, **({"cursor": cursor} if cursor else {}))
        assert got == await api_page(env, admin, limit=1, **({"cursor": cursor} if cursor else {}))
        seen += [e["id"] for e in got["calls"]]
        cursor = got["next_cursor"]
        if cursor is None:
            break
    assert seen == [s.missed, s.poor, s.good]
    # CSV: byte for byte the API's, for the same filters
    for q in [{}, *cases]:
        mine = await admin.c.get("/v1/dashboard/calls.csv", params=q)
        theirs = await env.op.get("/v1/calllogs.csv", params=q, headers=admin.key)
        assert mine.status_code == 200 and theirs.status_code == 200, q
        assert mine.headers["content-type"] == theirs.headers["content-type"]
        assert "attachment" in mine.headers["content-disposition"]
        assert mine.content == theirs.content, q
    rows = (await admin.c.get("/v1/dashboard/calls.csv", params={"mos_below": "3"})).text
    assert len(rows.strip().splitlines()) == 2 and s.poor in rows


async def test_bad_filters_name_their_field(env: Env) -> None:
    admin = await tenant_with_admin(env, "Acme", "owner@acme.test")
    bad = [
        ({"mos_below": "abc"}, "mos_below:"),
        ({"mos_below": "7"}, "mos_below:"),
        ({"mos_below": "nan"}, "mos_below:"),
        ({"since": "yesterday"}, "since:"),
        ({"until": "-5"}, "until:"),
        ({"since": str(T0), "until": str(T0 - 1)}, "until:"),
        ({"outcome": "lost"}, "outcome:"),
        ({"link": "no such/link"}, "link:"),
        ({"staff": "x" * 65}, "staff"),
    ]
    for q, field in bad:
        for path in ("/v1/dashboard/calls", "/v1/dashboard/calls.csv"):
            r = await admin.c.get(path, params=q)
            assert field in err(r, 422, "invalid").split(" ")[0], (path, q, r.text)


async def test_a_call_detail_has_its_timeline_quality_and_deletion_date(env: Env) -> None:
    admin = await tenant_with_admin(env, "Acme", "owner@acme.test")
    r = await env.op.patch(
        f"/v1/tenants/{admin.tenant}", json={"retention_months": 6}, headers=test_dashboard.OPH
    )
    assert r.status_code == 200, r.text
    s = await seed(env, admin)
    r = await admin.c.get(f"/v1/dashboard/calls/{s.poor}")
    assert r.status_code == 200, r.text
    d = r.json()
    api = (await env.op.get(f"/v1/calllogs/{s.poor}", headers=admin.key)).json()
    assert {k: d[k] for k in api} == api  # the API's detail, and more
    steps = [(x["kind"], x["staff"]) for x in d["timeline"]]
    assert steps == [
        ("clicked", []),
        ("check", []),
        ("rang", ["Ann", "Ben"]),
        ("answered", ["Ben"]),
        ("ended", []),
    ]
    check = d["timeline"][1]["detail"]
    assert check == {"verdict": "partial", "transports": {"udp": "fail", "tcp": "ok"}, "ms": 900}
    assert d["from_visitor"]["loss_pct"] == 9.091 and d["from_visitor"]["mos"] == 2.4
    assert d["from_visitor"]["jitter_ms"] == 30.0 and d["to_visitor"]["mos"] == 3.9
    assert d["media"] == ["audio", "video"] and d["relay_region"] == "eu"
    assert d["retention_months"] == 6
    assert d["kept_until"] == kept_until(d["created_at"], 6)
    assert d["kept_until"] - d["created_at"] > 180 * 86400
    assert d["call_ref"] and d["chosen_media"] in ("video", "voice")
    # the missed call: Ann declined, then it rang out
    d = (await admin.c.get(f"/v1/dashboard/calls/{s.missed}")).json()
    kinds = [(x["kind"], x["staff"]) for x in d["timeline"]]
    assert kinds == [
        ("clicked", []),
        ("check", []),
        ("rang", ["Ann", "Ben"]),
        ("declined", ["Ann"]),
        ("missed", []),
    ]
    assert d["mos"] is None and d["allocations"] == []
    # whom a call rang is kept with it: a link that rings only Ann now changes no old timeline
    r = await env.op.patch(f"/v1/links/{s.link}", json={"ring_staff": [s.ann]}, headers=admin.key)
    assert r.status_code == 200, r.text
    d = (await admin.c.get(f"/v1/dashboard/calls/{s.poor}")).json()
    assert ("rang", ["Ann", "Ben"]) in [(x["kind"], x["staff"]) for x in d["timeline"]]
    # the page for it exists; an unknown id is the 404 page
    r = await admin.c.get(f"/dashboard/calls/{s.missed}")
    assert r.status_code == 200 and f'call="{s.missed}"' in r.text
    assert (await admin.c.get(f"/dashboard/calls/{'f' * 32}")).status_code == 404
    assert (await admin.c.get("/dashboard/calls/..%2F..")).status_code == 404
    assert (await admin.c.get(f"/v1/dashboard/calls/{'f' * 32}")).status_code == 404


async def test_only_the_business_admins_see_its_calls(env: Env) -> None:
    a = await tenant_with_admin(env, "Acme", "owner@acme.test")
    b = await tenant_with_admin(env, "Bolt", "owner@bolt.test")
    s = await seed(env, a)
    await again(b)  # hours went by
    # the other business: its log is empty, the call a 404 page and request, as a missing one
    assert (await page(b))["calls"] == []
    assert (await page(b, link=s.link))["calls"] == []
    r = await b.c.get(f"/v1/dashboard/calls/{s.good}")
    assert (
        err(r, 404, "not_found")
        == (await b.c.get(f"/v1/dashboard/calls/{'f' * 32}")).json()["error"]["message"]
    )
    r = await b.c.get(f"/dashboard/calls/{s.good}")  # the dashboard's 404, not a visitor's
    assert r.status_code == 404 and "This page of the dashboard does not exist" in r.text
    assert 'href="/dashboard"' in r.text and "call link" not in r.text
    csv = (await b.c.get("/v1/dashboard/calls.csv")).text
    assert s.good not in csv and len(csv.strip().splitlines()) == 1
    choices = (await b.c.get("/v1/dashboard/calls/choices")).json()
    assert choices == {"links": [], "staff": []}
    choices = (await a.c.get("/v1/dashboard/calls/choices")).json()
    assert [x["name"] for x in choices["staff"]] == ["Ann", "Ben"]
    assert [x["id"] for x in choices["links"]] == [s.link]
    # a staff-only member: 403 everywhere; signed out: 401
    ann = await invite(env, a, "Ann Two", "ann2@acme.test")
    paths = [
        "/v1/dashboard/calls",
        "/v1/dashboard/calls.csv",
        "/v1/dashboard/calls/choices",
        f"/v1/dashboard/calls/{s.good}",
    ]
    for path in paths:
        r = await ann.c.get(path)
        assert err(r, 403, "forbidden").startswith("this needs an admin"), path
        assert (await env.op.get(path, headers=ORIGIN)).status_code == 401, path
    assert (await ann.c.get(f"/dashboard/calls/{s.good}")).status_code == 403


@given(
    st.floats(min_value=1.5e9, max_value=2.5e9),
    st.integers(min_value=1, max_value=60),
    st.integers(min_value=0, max_value=3),
)
def test_kept_until_is_where_the_retention_purge_starts_to_take_the_call(
    at: float, months: int, back: int
) -> None:
    # also the last days of months, whose day a shorter month lacks
    t = dt.datetime.fromtimestamp(at, dt.UTC)
    last = calendar.monthrange(t.year, t.month)[1]
    created = t.replace(day=max(1, last - back)).timestamp() if back else at
    k = kept_until(created, months)
    assert months_ago(k - 1, months) <= created < months_ago(k + 1, months)
