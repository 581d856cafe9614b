"""Privacy: retention with an advanced clock, data-subject find / export / correct /
erase, the append-only audit log, and the per-visitor key with its daily salt. The API tests
run on SQLite and PostgreSQL (the ``store`` fixture of tests/test_api.py).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from control.app import create_app
from control.keys import key_id
from control.models import AuditEntry
from control.privacy import (
    DAY,
    PURGE_INTERVAL,
    RETENTION_ACTOR,
    VisitorKeys,
    audit_keys,
    months_ago,
    privacy_metrics,
    purge_if_due,
    subject_hash,
)
from control.store import Busy, SqlStore, Store, StoreError
from tests.test_api import (  # noqa: F401 (store: the fixture shared with test_api)
    OPH,
    T0,
    Api,
    Clock,
    World,
    beat,
    click,
    err,
    make_settings,
    store,
    world,
)
from tests.test_store import pg  # noqa: F401 (the shared PostgreSQL fixture)

REF = "ann@example.com"


def keyed(ref: str) -> str:
    """The audit subject of ``ref`` under the test settings' audit key."""
    return subject_hash(ref, audit_keys(make_settings(Clock()))[0])


@dataclass
class P(Api):
    app: FastAPI


@pytest.fixture
async def p(store: Store) -> AsyncIterator[P]:  # noqa: F811 (the fixture imported above)
    clock = Clock()
    app = create_app(make_settings(clock), store)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as c:
        yield P(c, clock, store, app)


def months_later(t: float, months: int) -> float:
    return months_ago(t, -months)


def actor(w: World) -> str:
    return key_id(w.th["Authorization"].removeprefix("Bearer "))


async def call_at(p: P, w: World, t: float, ref: str | None = None) -> str:
    p.clock.t = t
    await beat(p)
    call_id = str((await click(p, w))["call_id"])
    if ref is not None:
        r = await p.c.patch(f"/v1/calls/{call_id}", json={"visitor_ref": ref}, headers=w.th)
        assert r.status_code == 200, r.text
    return call_id


async def audit_log(p: P, w: World) -> list[dict[str, Any]]:
    r = await p.c.get("/v1/audit", params={"limit": 1000}, headers=w.th)
    assert r.status_code == 200, r.text
    entries: list[dict[str, Any]] = r.json()["entries"]
    return entries


async def rows_of(s: Store, tenant_id: str, call_id: str) -> dict[str, int]:
    """Rows left for a call in every table hanging off calls, and in calls itself."""
    assert isinstance(s, SqlStore)
    out = {}
    for table in [*await s._call_tables(), "calls"]:
        col = "id" if table == "calls" else "call_id"
        row = await s._fetchone(
            f"SELECT count(*) AS n FROM {table} WHERE tenant_id = ? AND {col} = ?",
            tenant_id,
            call_id,
        )
        assert row is not None
        out[table] = int(row["n"])
    return out


# --- the visitor key ---------------------------------------------------------------------------


def test_visitor_key_salt_rotates_daily() -> None:
    keys = VisitorKeys()
    day = 19_700 * DAY
    k = keys.key_for("198.51.100.7", day + 10)
    assert len(k) == 32 and int(k, 16) >= 0
    assert keys.key_for("198.51.100.7", day + DAY - 1) == k  # same IP, same UTC day
    assert keys.key_for("::ffff:198.51.100.7", day + 5) == k  # mapped form: same visitor
    assert keys.key_for("198.51.100.8", day + 10) != k  # the full address counts, not /24
    assert "198.51.100" not in k
    tomorrow = keys.key_for("198.51.100.7", day + DAY)
    assert tomorrow != k
    # yesterday's salt is gone for good: asking for that day again cannot give the old key
    assert keys.key_for("198.51.100.7", day + 10) not in (k, tomorrow)
    assert VisitorKeys().key_for("198.51.100.7", day + 10) != k  # a salt per process
    with pytest.raises(ValueError):
        keys.key_for("not-an-ip", day)


def test_months_ago_is_calendar_correct() -> None:
    def ts(*a: int) -> float:
        return dt.datetime(*a, tzinfo=dt.UTC).timestamp()

    assert months_ago(ts(2024, 3, 31, 12), 1) == ts(2024, 2, 29, 12)
    assert months_ago(ts(2023, 3, 31), 1) == ts(2023, 2, 28)
    assert months_ago(ts(2029, 1, 15, 8, 30), 60) == ts(2024, 1, 15, 8, 30)
    assert months_ago(ts(2024, 1, 10), 13) == ts(2022, 12, 10)
    assert months_later(ts(2024, 1, 31), 1) == ts(2024, 2, 29)


async def test_click_stores_a_visitor_key_never_the_ip(p: P) -> None:
    w = await world(p)
    first = await call_at(p, w, T0)
    second = await call_at(p, w, T0 + 60)
    nextday = await call_at(p, w, T0 + DAY)
    keys = {}
    for c in (first, second, nextday):
        r = await p.c.get("/v1/subjects", params={"call_id": c}, headers=w.th)
        assert r.status_code == 200, r.text
        keys[c] = r.json()["calls"][0]["visitor_key"]
        assert "127.0.0.1" not in r.text
    assert keys[first] == keys[second] != keys[nextday]
    # the key links one visitor's calls within the day
    r = await p.c.get("/v1/subjects", params={"key": keys[first]}, headers=w.th)
    assert [c["id"] for c in r.json()["calls"]] == [first, second]


# --- retention -----------------------------------------------------------------------------------


async def test_retention_purges_after_60_months(p: P) -> None:
    w = await world(p)
    old = await call_at(p, w, T0, REF)
    await p.c.post(f"/v1/calls/{old}/reject", headers=w.sh)  # a decline hangs off it
    kept = await call_at(p, w, months_later(T0, 2), REF)
    before = await rows_of(p.store, w.tenant, old)
    assert before["calls"] == 1 and before["call_declines"] == 1 and before["tokens"] == 1

    p.clock.t = months_later(T0, 61)  # `old` is 61 months old, `kept` 59
    purges = await purge_if_due(p.app, p.store)
    assert purges is not None and [(x.tenant_id, x.calls) for x in purges] == [(w.tenant, 1)]
    assert set((await rows_of(p.store, w.tenant, old)).values()) == {0}
    assert (await rows_of(p.store, w.tenant, kept))["calls"] == 1
    await beat(p)
    ids = [c["id"] for c in (await p.c.get("/v1/calls", headers=w.th)).json()["calls"]]
    assert ids == [kept]
    err(await p.c.get(f"/v1/subjects?call_id={old}", headers=w.th), 404, "not_found")

    # recorded (purges, and an audit entry the tenant reads) and counted
    (rec,) = await p.store.list_purges(w.tenant)
    assert (rec.calls, rec.at) == (1, p.clock.t)
    assert rec.cutoff == months_ago(p.clock.t, 60)
    # the audit entries of the set_ref on `old` (written at T0) went with it
    assert rec.audit_entries == 1
    log = await audit_log(p, w)
    purge = [e for e in log if e["action"] == "purge"]
    assert len(purge) == 1 and purge[0]["actor"] == RETENTION_ACTOR
    assert purge[0]["details"]["calls"] == 1
    assert all(e["at"] >= rec.cutoff for e in log)
    m = privacy_metrics(p.app)
    assert m.purges._value.get() == 1 and m.purged_calls._value.get() == 1

    # not due again within the hour; nothing more to purge after it, and nothing recorded
    assert await purge_if_due(p.app, p.store) is None
    p.clock.t += PURGE_INTERVAL
    assert await purge_if_due(p.app, p.store) == []
    assert len(await p.store.list_purges(w.tenant)) == 1
    assert m.purges._value.get() == 2


async def test_retention_follows_the_tenants_setting(p: P) -> None:
    short = await world(p, "Short")
    long = await world(p, "Long")
    t = await p.store.get_tenant(short.tenant)  # "Short" keeps 12 months, "Long" the default 60
    assert t is not None
    t.retention_months = 12
    await p.store.update_tenant(t)
    a = await call_at(p, short, T0)
    b = await call_at(p, long, T0)
    p.clock.t = months_later(T0, 12)  # exactly 12 months: not older than the retention yet
    assert await purge_if_due(p.app, p.store) == []
    p.clock.t += PURGE_INTERVAL
    purges = await purge_if_due(p.app, p.store)
    assert purges is not None and [(x.tenant_id, x.calls) for x in purges] == [(short.tenant, 1)]
    assert (await rows_of(p.store, short.tenant, a))["calls"] == 0
    assert (await rows_of(p.store, long.tenant, b))["calls"] == 1
    assert await p.store.list_purges(long.tenant) == []


async def test_purge_runs_at_start(p: P) -> None:
    w = await world(p)
    old = await call_at(p, w, T0)
    p.clock.t = months_later(T0, 61)
    async with p.app.router.lifespan_context(p.app):
        for _ in range(500):
            if getattr(p.app.state, "retention_last_run", None) is not None:
                break
            await asyncio.sleep(0.01)
        assert p.app.state.retention_last_run == p.clock.t
    assert (await rows_of(p.store, w.tenant, old))["calls"] == 0
    assert [x.calls for x in await p.store.list_purges(w.tenant)] == [1]


# --- data-subject rights -----------------------------------------------------------------------


async def test_find_export_correct_erase_fields(p: P) -> None:
    w = await world(p)
    c1 = await call_at(p, w, T0, REF)
    await p.c.post(f"/v1/calls/{c1}/reject", headers=w.sh)
    c2 = await call_at(p, w, T0 + 10, REF)
    other = await call_at(p, w, T0 + 20, "bob@example.com")
    anon = await call_at(p, w, T0 + 30)

    r = await p.c.get("/v1/subjects", params={"ref": REF}, headers=w.th)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["subject"] == keyed(REF) and not out["truncated"]
    assert [c["id"] for c in out["calls"]] == [c1, c2]
    first = out["calls"][0]
    assert first["visitor_ref"] == REF and first["visitor_prefix"] == "127.0.0.0/24"
    assert (first["visitor_browser"], first["visitor_os"]) == ("Chrome", "Windows")
    assert first["status"] == "rejected"
    assert [d["staff_id"] for d in first["records"]["call_declines"]] == [w.staff]
    r = await p.c.get("/v1/subjects", params={"call_id": c1}, headers=w.th)
    assert r.json()["subject"] == keyed(REF)
    assert (await p.c.get("/v1/subjects", params={"ref": "nobody"}, headers=w.th)).json()[
        "calls"
    ] == []

    # correct: a new identifier, a field removed
    new = "ann@new.example"
    body = {"visitor_ref": new, "visitor_browser": None, "visitor_prefix": "192.0.2.0/24"}
    r = await p.c.patch("/v1/subjects", params={"ref": REF}, json=body, headers=w.th)
    assert r.status_code == 200, r.text
    assert r.json() == {"calls": [c1, c2], "fields": sorted(body), "mode": "correct"}
    assert (await p.c.get("/v1/subjects", params={"ref": REF}, headers=w.th)).json()["calls"] == []
    got = (await p.c.get("/v1/subjects", params={"ref": new}, headers=w.th)).json()["calls"]
    assert [(c["visitor_browser"], c["visitor_os"], c["visitor_prefix"]) for c in got] == [
        (None, "Windows", "192.0.2.0/24")
    ] * 2

    # erase (fields, the default): the calls stay, anonymous, and still count
    r = await p.c.delete("/v1/subjects", params={"ref": new}, headers=w.th)
    assert r.status_code == 200, r.text
    assert r.json()["calls"] == [c1, c2] and r.json()["mode"] == "fields"
    for c in (c1, c2):
        call = (await p.c.get("/v1/subjects", params={"call_id": c}, headers=w.th)).json()
        (x,) = call["calls"]
        assert x["visitor_ref"] is x["visitor_prefix"] is x["visitor_key"] is None
        assert x["visitor_browser"] is x["visitor_os"] is None
        assert x["records"]["call_declines"] if c == c1 else True
    listed = (await p.c.get("/v1/calls", headers=w.th)).json()["calls"]
    assert {c["id"] for c in listed} == {c1, c2, other, anon}
    # others untouched
    (b,) = (await p.c.get("/v1/subjects", params={"ref": "bob@example.com"}, headers=w.th)).json()[
        "calls"
    ]
    assert b["id"] == other and b["visitor_prefix"] == "127.0.0.0/24"

    # every act is in the audit log, by this key, with hashed subjects only
    log = await audit_log(p, w)
    acts = [(e["action"], e["subject"]) for e in log]
    h, hn, hb = keyed(REF), keyed(new), keyed("bob@example.com")
    assert acts == [
        ("set_ref", h),
        ("set_ref", h),
        ("set_ref", hb),
        ("access", h),
        ("access", h),
        ("access", keyed("nobody")),
        ("correct", h),
        ("access", h),
        ("access", hn),
        ("erase", hn),
        ("access", None),
        ("access", None),
        ("access", hb),
    ]
    assert {e["actor"] for e in log} == {actor(w)}
    assert [e["seq"] for e in log] == sorted(e["seq"] for e in log)
    correct = next(e for e in log if e["action"] == "correct")
    assert correct["details"] == {
        "by": "ref",
        "calls": [c1, c2],
        "fields": sorted(body),
        "new_subject": hn,
    }
    assert hashlib.sha256(REF.encode()).hexdigest() != h  # keyed: no dictionary reverses it
    # the raw identifier is nowhere in the audit log, as the API shows it or as stored
    assert isinstance(p.store, SqlStore)
    raw = await p.store._fetch("SELECT * FROM audit_log")
    dump = repr([[r[k] for k in r.keys()] for r in raw]) + repr(log)  # noqa: SIM118
    for secret in (REF, new, "bob@example.com", "ann@", "127.0.0.1"):
        assert secret not in dump


async def test_erase_by_deleting_calls(p: P) -> None:
    w = await world(p)
    done = await call_at(p, w, T0, REF)
    live = await call_at(p, w, T0 + 1, REF)
    await p.c.post(f"/v1/calls/{done}/reject", headers=w.sh)
    r = await p.c.delete("/v1/subjects", params={"ref": REF, "mode": "delete"}, headers=w.th)
    err(r, 409, "call_in_progress")
    assert (await rows_of(p.store, w.tenant, done))["calls"] == 1  # nothing deleted
    p.clock.t = T0 + 3600  # `live` rang out: missed, so it may go
    r = await p.c.delete("/v1/subjects", params={"ref": REF, "mode": "delete"}, headers=w.th)
    assert r.status_code == 200, r.text
    assert r.json() == {"calls": [done, live], "fields": [], "mode": "delete"}
    for c in (done, live):
        assert set((await rows_of(p.store, w.tenant, c)).values()) == {0}
        err(await p.c.get(f"/v1/calls/{c}", headers=w.th), 404)
    log = await audit_log(p, w)
    assert log[-1]["action"] == "delete" and log[-1]["subject"] == keyed(REF)
    assert log[-1]["details"]["calls"] == [done, live]
    r = await p.c.delete("/v1/subjects", params={"mode": "nope", "ref": REF}, headers=w.th)
    err(r, 422, "invalid")


async def test_subject_validation(p: P) -> None:
    w = await world(p)
    c = await call_at(p, w, T0)
    bad_refs: list[Any] = ["", "   ", "x" * 257, "a\x00b", "a\nb", 5]
    for bad in bad_refs:
        r = await p.c.patch(f"/v1/calls/{c}", json={"visitor_ref": bad}, headers=w.th)
        err(r, 422, "invalid")
    r = await p.c.patch(f"/v1/calls/{c}", json={"visitor_ref": " " + "x" * 256 + " "}, headers=w.th)
    assert r.status_code == 200 and r.json()["visitor_ref"] == "x" * 256
    r = await p.c.patch(f"/v1/calls/{c}", json={"visitor_ref": None}, headers=w.th)
    assert r.status_code == 200 and r.json()["visitor_ref"] is None
    err(await p.c.patch(f"/v1/calls/{c}", json={}, headers=w.th), 422)
    err(await p.c.patch(f"/v1/calls/{c}", json={"status": "ended"}, headers=w.th), 422)
    err(await p.c.patch("/v1/calls/nope", json={"visitor_ref": "a"}, headers=w.th), 404)
    for params in ({}, {"ref": "a", "call_id": c}, {"key": "zz"}, {"ref": "   "}):
        err(await p.c.get("/v1/subjects", params=params, headers=w.th), 422, "invalid")
    for body in (
        {},
        {"visitor_prefix": "192.0.2.7/32"},
        {"visitor_prefix": "192.0.2.7"},
        {"visitor_prefix": "2001:db8::/64"},
        {"visitor_os": "x" * 65},
        {"visitor_key": "ab"},
    ):
        r = await p.c.patch("/v1/subjects", params={"call_id": c}, json=body, headers=w.th)
        err(r, 422, "invalid")
    r = await p.c.patch(
        "/v1/subjects",
        params={"call_id": c},
        json={"visitor_prefix": "2001:db8::/48"},
        headers=w.th,
    )
    assert r.status_code == 200, r.text
    for method in ("GET", "PATCH", "DELETE"):
        r = await p.c.request(method, "/v1/subjects", params={"call_id": c}, json={})
        err(r, 401, "unauthorized")
        r = await p.c.request(method, "/v1/subjects", params={"call_id": c}, headers=w.sh)
        err(r, 401, "unauthorized")
    err(await p.c.get("/v1/audit"), 401, "unauthorized")
    err(await p.c.get("/v1/audit", params={"limit": 0}, headers=w.th), 422)


async def test_audit_pages(p: P) -> None:
    w = await world(p)
    c = await call_at(p, w, T0)
    for i in range(5):
        await p.c.patch(f"/v1/calls/{c}", json={"visitor_ref": f"r{i}"}, headers=w.th)
    r = await p.c.get("/v1/audit", params={"limit": 2}, headers=w.th)
    page = r.json()
    seen = [e["subject"] for e in page["entries"]]
    while page["next_after"] is not None:
        page = (
            await p.c.get(
                "/v1/audit", params={"limit": 2, "after": page["next_after"]}, headers=w.th
            )
        ).json()
        seen += [e["subject"] for e in page["entries"]]
    assert seen == [keyed(f"r{i}") for i in range(5)]


# --- the audit log is append-only ----------------------------------------------------------------


async def test_audit_log_is_append_only(store: Store) -> None:  # noqa: F811
    from control.models import Tenant

    assert isinstance(store, SqlStore)
    await store.create_tenant(Tenant(id="t1", name="T"))
    await store.append_audit(
        AuditEntry(
            tenant_id="t1",
            at=T0,
            actor="ck_x",
            action="access",
            subject="ab",
            details={"calls": ["c1"]},
        )
    )
    (entry,) = await store.list_audit("t1")
    assert (entry.action, entry.details, entry.seq > 0) == ("access", {"calls": ["c1"]}, True)
    for sql in (
        "UPDATE audit_log SET action = 'nothing'",
        "UPDATE audit_log SET subject = NULL WHERE tenant_id = 't1'",
        "DELETE FROM audit_log",
        "DELETE FROM audit_log WHERE tenant_id = 't1'",
    ):
        with pytest.raises(StoreError, match="append-only"):
            await store._execute(sql, what="audit entry")
    if store.backend == "postgres":
        with pytest.raises(StoreError, match="append-only"):
            await store._execute("TRUNCATE audit_log", what="audit entry")
    assert await store.list_audit("t1") == [entry]
    # the retention purge is the one way out, and only for entries past the cutoff
    assert await store.purge_tenant("t1", T0, T0 + 1) is None
    purge = await store.purge_tenant("t1", T0 + 1, T0 + 2)
    assert purge is not None and (purge.calls, purge.audit_entries) == (0, 1)
    assert await store.list_audit("t1") == []


# --- an action and its audit entry are one transaction ----------------------------------------


async def test_an_action_whose_audit_entry_fails_is_not_stored(
    p: P, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the audit entry cannot be written, the audited change is not stored either (and the
    caller is told to try again); the same change then goes through with its entry."""
    w = await world(p)
    c = await call_at(p, w, T0, REF)
    await p.c.post(f"/v1/calls/{c}/reject", headers=w.sh)  # ended: it may be deleted
    entries = len(await audit_log(p, w))

    async def busy(entry: AuditEntry) -> None:
        raise Busy("the database is busy")

    async def fields() -> dict[str, Any]:
        row = await p.store._fetchone(
            "SELECT visitor_ref, visitor_os, call_ref FROM calls WHERE id = ?", c
        )
        assert row is not None
        return dict(row)

    before = await fields()
    assert before["visitor_ref"] == REF
    tenant = await p.store.get_tenant(w.tenant)
    attempts = [
        lambda: p.c.patch(f"/v1/calls/{c}", json={"visitor_ref": "x"}, headers=w.th),
        lambda: p.c.patch(
            "/v1/subjects", params={"call_id": c}, json={"visitor_os": "Other"}, headers=w.th
        ),
        lambda: p.c.delete("/v1/subjects", params={"call_id": c}, headers=w.th),
        lambda: p.c.delete("/v1/subjects", params={"call_id": c, "mode": "delete"}, headers=w.th),
        lambda: p.c.patch(f"/v1/tenants/{w.tenant}", json={"retention_months": 7}, headers=OPH),
    ]
    with monkeypatch.context() as m:
        m.setattr(p.store, "append_audit", busy)
        for attempt in attempts:
            r = await attempt()
            assert err(r, 503, "busy") == "the database is busy; try again shortly"
            assert await fields() == before  # nothing of it stored
        assert await p.store.get_tenant(w.tenant) == tenant
        # the retention purge: the calls stay, and no purge is on record
        p.clock.t = months_later(T0, 61)
        assert await purge_if_due(p.app, p.store) == []
        assert (await rows_of(p.store, w.tenant, c))["calls"] == 1
        assert await p.store.list_purges(w.tenant) == []
    assert len(await audit_log(p, w)) == entries

    # the same changes, with their entries
    for attempt in attempts[:2]:
        assert (await attempt()).status_code == 200
    assert (await fields())["visitor_os"] == "Other"
    assert (await attempts[4]()).status_code == 200
    assert (await attempts[2]()).status_code == 200
    assert await fields() == {"visitor_ref": None, "visitor_os": None, "call_ref": None}
    p.clock.t += PURGE_INTERVAL
    purges = await purge_if_due(p.app, p.store)
    assert purges is not None and [x.calls for x in purges] == [1]
    log = await audit_log(p, w)
    assert [e["action"] for e in log[-5:]] == ["set_ref", "correct", "settings", "erase", "purge"]
