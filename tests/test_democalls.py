"""The made-up calls ``clickacall up`` seeds for its demo business (clickacall/democalls.py),
on both back-ends: what the API's call log and analytics show of them, the dashboard's too.

(``tests/test_cli.py`` runs ``clickacall up`` itself: seeded once, not again on a restart.)
"""

from __future__ import annotations

from collections import Counter

from clickacall import democalls
from control.models import Link
from control.quality import DAY
from tests import test_dashboard
from tests.test_api import err
from tests.test_dashboard import Env, Member, invite, tenant_with_admin

store, pg, env = test_dashboard.store, test_dashboard.pg, test_dashboard.env


async def _business(env: Env, domain: str = "acme.test") -> tuple[Member, list[democalls.Team]]:
    """A business with two links, each answered by its own members."""
    admin = await tenant_with_admin(env, domain, f"owner@{domain}")
    for name in ("Ann", "Bo", "Cy"):
        await invite(env, admin, name, f"{name.lower()}@{domain}")
    staff = {m.name: m for m in await env.store.list_staff(admin.tenant)}
    teams = []
    for name, members in (("Support", ["Ann"]), ("Sales", ["Bo", "Cy"])):
        body = {"name": name, "ring_staff": [staff[m].id for m in members]}
        r = await env.op.post("/v1/links", json=body, headers=admin.key)
        assert r.status_code == 201, r.text
        link = await env.store.get_link(admin.tenant, r.json()["id"])
        assert isinstance(link, Link)
        teams.append(democalls.Team(link, [staff[m] for m in members]))
    return admin, teams


async def test_demo_calls_fill_the_call_log_and_the_analytics(env: Env) -> None:
    admin, teams = await _business(env)
    now = env.clock.t
    n = await democalls.seed(env.store, teams, now, days=14, seed=7)
    assert 14 * 2 <= n <= 14 * 9
    # the call log lists every one of them, newest first, with outcomes and quality
    r = await env.op.get("/v1/calllogs", params={"limit": 200}, headers=admin.key)
    assert r.status_code == 200, r.text
    calls = r.json()["calls"]
    assert len(calls) == n and not r.json()["next_cursor"]
    assert [c["created_at"] for c in calls] == sorted(
        (c["created_at"] for c in calls), reverse=True
    )
    assert all(now - 14 * DAY <= c["created_at"] <= now for c in calls)
    outcomes = Counter(c["outcome"] for c in calls)
    assert {"ended", "missed", "rejected"} <= set(outcomes), outcomes
    assert outcomes["ended"] > n / 2
    ids = {t.link.id: {m.id for m in t.members} for t in teams}
    assert {c["link_id"] for c in calls} == set(ids)
    for c in calls:
        if c["outcome"] == "ended":  # answered by a member of the link, with figures
            assert c["staff_id"] in ids[c["link_id"]]
            assert c["duration"] > 0 and c["bytes"] > 0
            assert 1.0 <= c["mos"] <= 4.5 and c["from_visitor"]["loss_pct"] is not None
            assert "audio" in c["media"] and c["relay_region"] == "eu"
        else:
            assert c["staff_id"] is None and c["mos"] is None and c["bytes"] == 0
    assert {c["staff_id"] for c in calls} - {None} == {m for s in ids.values() for m in s}
    assert any(c["mos"] is not None and c["mos"] < 3.5 for c in calls)  # a few bad lines
    # a call's detail: its quality per party, marked as a demo call, no visitor reference
    ended = next(c for c in calls if c["outcome"] == "ended")
    r = await env.op.get(f"/v1/calllogs/{ended['id']}", headers=admin.key)
    assert r.status_code == 200, r.text
    assert len(r.json()["allocations"]) == 2
    stored = await env.store.get_call(admin.tenant, ended["id"])
    assert stored is not None and stored.relay_node == democalls.DEMO_NODE
    assert stored.end_reason is not None and stored.end_reason.endswith(democalls.DEMO_MARK)
    assert stored.visitor_ref is None and stored.visitor_key is None
    rejected = next(c for c in calls if c["outcome"] == "rejected")
    assert await env.store.list_declines(admin.tenant, rejected["id"])
    # the dashboard's call detail draws them like any call: timeline, quality, demo mark
    for c in (ended, rejected):
        r = await admin.c.get(f"/v1/dashboard/calls/{c['id']}")
        assert r.status_code == 200, r.text
        detail = r.json()
        steps = [s["kind"] for s in detail["timeline"]]
        assert steps[0] == "clicked" and ("answered" in steps) == (c is ended), steps
        assert ("declined" in steps) == (c is rejected), steps
        rang = next(s for s in detail["timeline"] if s["kind"] == "rang")
        team = next(t for t in teams if t.link.id == c["link_id"])
        assert rang["staff"] == sorted(m.name for m in team.members)
        assert not rang["detail"]  # whom that click rang, not whom the link rings today
        assert str(detail["end_reason"]).endswith("(demo call)")
    # analytics: calls on most days, answered rate, minutes, relayed bytes
    r = await env.op.get("/v1/analytics", params={"period": "day"}, headers=admin.key)
    days = [b for b in r.json()["buckets"] if b["calls"]]
    assert len(days) >= 10, days
    totals = r.json()["totals"]
    assert totals["calls"] == n and totals["answered"] == outcomes["ended"]
    assert totals["minutes"] > 0 and totals["bytes"] > 0 and 0 < totals["answered_rate"] < 1
    r = await env.op.get("/v1/analytics", params={"by": "staff"}, headers=admin.key)
    assert {b["key"] for b in r.json()["buckets"]} - {None} == {m for s in ids.values() for m in s}
    # the dashboard's call log (the admin's session) shows the same calls
    r = await admin.c.get("/v1/dashboard/calls", params={"limit": 100})
    assert r.status_code == 200, r.text
    assert [c["id"] for c in r.json()["calls"]] == [c["id"] for c in calls[:100]]


async def test_demo_calls_are_the_same_for_a_seed_and_none_are_in_the_future(env: Env) -> None:
    a, a_teams = await _business(env, "acme.test")
    b, b_teams = await _business(env, "bolt.test")
    # "now" early in a UTC day: today's calls would all lie ahead, so there are none today
    now = (env.clock.t // DAY) * DAY + 3600
    n = await democalls.seed(env.store, a_teams, now, days=3, seed=1)
    assert n == await democalls.seed(env.store, b_teams, now, days=3, seed=1)
    plans = []
    for m in (a, b):
        page = await env.store.list_call_log(m.tenant, limit=100)
        assert len(page.entries) == n > 0
        assert all(c.created_at < (now // DAY) * DAY for c, _ in page.entries)
        assert all(c.ended_at is not None and c.ended_at <= now for c, _ in page.entries)
        plans.append([(c.created_at, c.status, c.media) for c, _ in page.entries])
    assert plans[0] == plans[1]  # the same seed plans the same calls
    # each business sees only its own
    r = await env.op.get("/v1/calllogs", headers=b.key)
    assert len(r.json()["calls"]) == n
    page = await env.store.list_call_log(a.tenant, limit=1)
    r = await env.op.get(f"/v1/calllogs/{page.entries[0][0].id}", headers=b.key)
    assert err(r, 404, "not_found")
