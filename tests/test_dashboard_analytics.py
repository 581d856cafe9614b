"""The dashboard's analytics (control/api/dashanalytics.py) without a browser, SQLite and
PostgreSQL: calls made through the real API over several weeks (clicks, answers by two
members on two links, hang-ups, relay summaries for the relayed bytes) with the clock moved;
the admin's figures equal the API's ``/v1/analytics`` for the same business and query, for
every period and grouping; bad input is a 422 naming its field; another business sees none
of it, a staff-only member gets 403 and nobody signed out gets anything."""

from __future__ import annotations

import dataclasses
from typing import Any

from control.quality import MAX_SPAN, Period
from tests import test_dashboard
from tests.test_api import NODEH, T0, bearer, beat, err
from tests.test_calllogs import flow, summary
from tests.test_dashboard import ORIGIN, Env, Member, invite, tenant_with_admin
from tests.test_dashboard_calls import UA, _api_of, again, console

store, pg, env = test_dashboard.store, test_dashboard.pg, test_dashboard.env

DAY = 86400.0
PERIODS = ("day", "week", "month")
GROUPINGS = ("none", "link", "staff")
# (days before T0, link, who answers or None, seconds talked, packets each way relayed)
PLAN = [
    (24, "Sales", "Ann", 120.0, 2000),  # October 2023 (T0 is 14 November)
    (24, "Sales", None, 0.0, 0),
    (17, "Support", "Ben", 300.0, 5000),
    (9, "Sales", "Ben", 45.0, 800),
    (9, "Support", None, 0.0, 0),
    (2, "Sales", "Ann", 600.0, 9000),
    (0, "Support", "Ann", 30.0, 300),
]


@dataclasses.dataclass
class Seeded:
    links: dict[str, str]  # name -> id
    staff: dict[str, str]


async def seed(env: Env, admin: Member) -> Seeded:
    """:data:`PLAN`'s calls of ``admin``'s business through the API, the clock moved."""
    c, key = env.op, admin.key
    staff = {}
    for name in ("Ann", "Ben"):
        r = await c.post("/v1/staff", json={"name": name}, headers=key)
        assert r.status_code == 201, r.text
        staff[name] = r.json()["id"]
    links = {}
    for name in ("Sales", "Support"):
        body = {"name": name, "ring_staff": list(staff.values()), "ring_timeout": 30}
        r = await c.post("/v1/links", json=body, headers=key)
        assert r.status_code == 201, r.text
        links[name] = r.json()
    for i, (back, link, who, talk, packets) in enumerate(PLAN):
        env.clock.t = T0 - back * DAY + i * 60
        await beat(_api_of(env))
        r = await c.post(f"/v1/links/{links[link]['public_id']}/calls", json={}, headers=UA)
        assert r.status_code == 201, r.text
        v = r.json()
        if who is None:  # nobody answers: it rings out (missed)
            env.clock.t += 40
            continue
        env.clock.t += 5
        r = await c.post(
            f"/v1/calls/{v['call_id']}/answer", headers=await console(c, key, staff[who])
        )
        assert r.status_code == 200, r.text
        env.clock.t += talk
        r = await c.post(f"/v1/calls/{v['call_id']}/hangup", headers=bearer(v["token"]))
        assert r.status_code == 200, r.text
        sums = [
            summary(
                i + 1,
                v["token_id"],
                "v",
                started=env.clock.t - talk,
                at=env.clock.t,
                final=True,
                up=flow(packets),
                down=flow(packets),
            ),
        ]
        r = await c.post(
            "/v1/nodes/summaries", json={"node_id": "n1", "summaries": sums}, headers=NODEH
        )
        assert r.status_code == 200 and r.json()["stored"] == 1, r.text
    env.clock.t = T0 + 3600
    await again(admin)  # the seeding moved the clock past the session's idle timeout
    return Seeded({k: v["id"] for k, v in links.items()}, staff)


async def mine(m: Member, **q: Any) -> dict[str, Any]:
    r = await m.c.get("/v1/dashboard/analytics", params=q)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


async def theirs(env: Env, m: Member, **q: Any) -> dict[str, Any]:
    r = await env.op.get("/v1/analytics", params=q, headers=m.key)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


async def test_the_figures_are_the_apis_for_every_period_and_grouping(env: Env) -> None:
    admin = await tenant_with_admin(env, "Acme", "owner@acme.test")
    s = await seed(env, admin)
    ranges: list[dict[str, Any]] = [
        {},  # the API's defaults: the range ending with today (UTC)
        {"since": T0 - 30 * DAY, "until": T0 + DAY},
        {"since": T0 - 10 * DAY, "until": T0 - DAY},  # a slice: two calls of day -9 only
    ]
    for period in PERIODS:
        for by in GROUPINGS:
            for r in ranges:
                q = {"period": period, "by": by, **r}
                got = await mine(admin, **q)
                assert got == await theirs(env, admin, **q), q
                assert got["period"] == period and got["by"] == by
    # the numbers are what was seeded, not merely the same as the API's
    days = await mine(admin, period="day", since=T0 - 30 * DAY, until=T0 + DAY)
    assert days["totals"]["calls"] == len(PLAN)
    assert days["totals"]["answered"] == sum(1 for p in PLAN if p[2] is not None)
    assert days["totals"]["minutes"] == round(sum(p[3] for p in PLAN) / 60, 2)
    assert days["totals"]["bytes"] == sum(2 * p[4] * 160 for p in PLAN)
    assert [b["calls"] for b in days["buckets"]] == [2, 1, 2, 1, 1]
    months = await mine(admin, period="month", since=T0 - 30 * DAY, until=T0 + DAY)
    assert [(b["date"], b["calls"]) for b in months["buckets"]] == [
        ("2023-10-01", 3),
        ("2023-11-01", 4),
    ]
    by_link = await mine(admin, period="month", by="link", since=T0 - 30 * DAY, until=T0 + DAY)
    got = {(b["date"], b["name"]): (b["calls"], b["answered"]) for b in by_link["buckets"]}
    assert got == {
        ("2023-10-01", "Sales"): (2, 1),
        ("2023-10-01", "Support"): (1, 1),
        ("2023-11-01", "Sales"): (2, 2),
        ("2023-11-01", "Support"): (2, 1),
    }
    assert {b["key"] for b in by_link["buckets"]} == set(s.links.values())
    by_staff = await mine(admin, period="week", by="staff", since=T0 - 30 * DAY, until=T0 + DAY)
    names = {b["name"] for b in by_staff["buckets"]}
    assert names == {"Ann", "Ben", None}  # None: the calls nobody answered
    ann = [b for b in by_staff["buckets"] if b["key"] == s.staff["Ann"]]
    assert sum(b["minutes"] for b in ann) == round(750 / 60, 2)
    # what an untouched form sends: empty fields are the API's defaults
    blank = await mine(admin, period="", by="", since="", until="")
    assert blank == await theirs(env, admin)
    assert blank["until"] == (T0 // DAY + 1) * DAY and blank["period"] == "day"


async def test_bad_queries_name_their_field(env: Env) -> None:
    admin = await tenant_with_admin(env, "Acme", "owner@acme.test")
    longest = MAX_SPAN[Period.DAY]
    bad = [
        ({"period": "year"}, "period"),
        ({"period": "DAY "}, "period"),
        ({"by": "colour"}, "by"),
        ({"by": "x" * 65}, "by"),
        ({"since": "yesterday"}, "since"),
        ({"since": "nan"}, "since"),
        ({"until": "-5"}, "until"),
        ({"until": "1e12"}, "until"),
        ({"since": str(T0), "until": str(T0 - 1)}, "until"),
        ({"since": str(T0 - longest - DAY), "until": str(T0)}, "since"),
        ({"period": "week", "since": str(T0 - 161 * 7 * DAY), "until": str(T0)}, "since"),
    ]
    for q, field in bad:
        r = await admin.c.get("/v1/dashboard/analytics", params=q)
        message = err(r, 422, "invalid")
        assert message.split(":")[0].split(".")[-1] == field, (q, message)
    # the API's own range errors name the field too (the same code answers both)
    for q, field in bad[-3:]:
        r = await env.op.get("/v1/analytics", params=q, headers=admin.key)
        assert err(r, 422, "invalid").startswith(f"{field}:"), q
    # nothing was wrong with these
    r = await admin.c.get("/v1/dashboard/analytics", params={"period": "month", "by": "staff"})
    assert r.status_code == 200, r.text


async def test_only_the_business_admins_see_its_figures(env: Env) -> None:
    a = await tenant_with_admin(env, "Acme", "owner@acme.test")
    b = await tenant_with_admin(env, "Bolt", "owner@bolt.test")
    s = await seed(env, a)
    await again(b)  # hours went by
    span = {"since": T0 - 30 * DAY, "until": T0 + DAY}
    for by in GROUPINGS:
        other = await mine(b, by=by, **span)
        assert other["buckets"] == [] and other["totals"]["calls"] == 0, by
        assert other == await theirs(env, b, by=by, **span)
        own = await mine(a, by=by, **span)
        assert own["totals"]["calls"] == len(PLAN)
    links = await mine(a, by="link", **span)
    assert {x["key"] for x in links["buckets"]} == set(s.links.values())
    # a staff-only member: 403; signed out: 401
    ann = await invite(env, a, "Ann Two", "ann2@acme.test")
    r = await ann.c.get("/v1/dashboard/analytics")
    assert err(r, 403, "forbidden").startswith("this needs an admin")
    r = await ann.c.get("/v1/dashboard/analytics", params={"period": "year"})
    assert r.status_code == 403  # who asks is checked before what is asked
    assert (await env.op.get("/v1/dashboard/analytics", headers=ORIGIN)).status_code == 401
    # an API key is no way in to the dashboard's twin
    r = await env.op.get("/v1/dashboard/analytics", headers=a.key)
    assert r.status_code == 401
    # the page itself: the shell for the admin, 403 for the member
    r = await a.c.get("/dashboard/analytics")
    assert r.status_code == 200 and 'section="analytics"' in r.text
    assert (await ann.c.get("/dashboard/analytics")).status_code == 403
