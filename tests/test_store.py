"""control.store against both back-ends: SQLite (a file per test) and a real PostgreSQL.

One PostgreSQL server per test run (tests/pgserver.py), one fresh database per test. The
PostgreSQL half skips only when no PostgreSQL binaries are installed (``make debs`` installs them).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest

from control.models import (
    ApiKey,
    Call,
    CallStatus,
    Link,
    Media,
    OpeningHours,
    RelayNode,
    Role,
    SessionToken,
    Staff,
    Tenant,
)
from control.store import (
    MAX_PAGE,
    Conflict,
    Invalid,
    NotFound,
    StatementOp,
    Store,
    StoreError,
    load_migrations,
    migrate,
    open_store,
)
from control.store.calllog import CallQuery
from control.store.rows import STATS_SELECT
from tests.pgserver import PgServer, pg_bin_dir

A, B = "tenant-a", "tenant-b"


@pytest.fixture(scope="session")
def pg() -> Iterator[PgServer]:
    if pg_bin_dir() is None:
        pytest.skip(
            "PostgreSQL binaries (initdb, pg_ctl) not found under /usr/lib/postgresql/*/bin "
            "or on PATH; `make debs` installs them"
        )
    with PgServer() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgres"])
async def url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('store')}/store.db"
    server: PgServer = request.getfixturevalue("pg")
    name = f"t_{uuid.uuid4().hex[:16]}"
    conn = await asyncpg.connect(server.dsn())
    try:
        await conn.execute(f"CREATE DATABASE {name}")
    finally:
        await conn.close()
    return server.dsn(name)


@pytest.fixture
async def store(url: str) -> AsyncIterator[Store]:
    s = await open_store(url)
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
async def two(store: Store) -> Store:
    """The store with tenants A and B, each with a staff member, a link and a call."""
    for t in (A, B):
        await store.create_tenant(Tenant(id=t, name=t.upper(), created_at=1.0))
        await store.create_staff(Staff(id=f"s-{t}", tenant_id=t, name="Ann", created_at=2.0))
        await store.create_link(_link(t, f"l-{t}", f"pub-{t}"))
        await store.create_call(Call(id=f"c-{t}", tenant_id=t, link_id=f"l-{t}", created_at=3.0))
    return store


def _link(tenant: str, link_id: str, public_id: str) -> Link:
    return Link(
        id=link_id,
        public_id=public_id,
        tenant_id=tenant,
        name="Sales",
        media=[Media.VOICE, Media.SCREEN],
        ring_staff=[f"s-{tenant}"],
        ring_groups=["sales"],
        hours=OpeningHours("Europe/Paris", [(0, 540, 1020), (4, 540, 960)]),
        ring_timeout=30.0,
        created_at=2.5,
    )


# --- records ---------------------------------------------------------------------------------


async def test_tenants(store: Store) -> None:
    t = Tenant(id="t1", name="Acme", allowed_regions=["eu", "uk"], created_at=10.0)
    await store.create_tenant(t)
    await store.create_tenant(Tenant(id="t0", name="Zed", created_at=5.0))
    assert await store.get_tenant("t1") == t
    assert await store.get_tenant("nope") is None
    assert [x.id for x in await store.list_tenants()] == ["t0", "t1"]
    t.name, t.retention_months, t.allowed_regions = "Acme SA", 24, ["eu"]
    await store.update_tenant(t)
    assert await store.get_tenant("t1") == t
    with pytest.raises(Conflict):
        await store.create_tenant(Tenant(id="t1", name="again"))
    with pytest.raises(NotFound):
        await store.update_tenant(Tenant(id="nope", name="x"))
    with pytest.raises(Invalid):
        await store.update_tenant(Tenant(id="t1", name="x", retention_months=61))
    with pytest.raises(Invalid):
        await store.create_tenant(Tenant(id="t2", name="x", allowed_regions=[]))
    assert await store.get_tenant("t1") == t


async def test_api_keys(two: Store) -> None:
    k = ApiKey(id="ck_aaa", tenant_id=A, key_hash=b"\x01" * 32, created_at=5.0)
    await two.add_api_key(k)
    await two.add_api_key(ApiKey(id="ck_bbb", tenant_id=B, key_hash=b"\x02" * 32))
    assert await two.find_api_key(b"\x01" * 32) == k
    assert await two.find_api_key(b"\x03" * 32) is None
    assert await two.list_api_keys(A) == [k]
    with pytest.raises(Conflict):  # same hash
        await two.add_api_key(ApiKey(id="ck_ccc", tenant_id=A, key_hash=b"\x01" * 32))
    with pytest.raises(Conflict):  # same id
        await two.add_api_key(ApiKey(id="ck_aaa", tenant_id=A, key_hash=b"\x04" * 32))
    with pytest.raises(NotFound):
        await two.add_api_key(ApiKey(id="ck_ddd", tenant_id="ghost", key_hash=b"\x05" * 32))
    # B cannot see or revoke A's key
    assert await two.list_api_keys(B) == [ApiKey(id="ck_bbb", tenant_id=B, key_hash=b"\x02" * 32)]
    assert not await two.revoke_api_key(B, "ck_aaa")
    assert await two.find_api_key(b"\x01" * 32) == k
    assert await two.revoke_api_key(A, "ck_aaa", at=9.0)
    assert not await two.revoke_api_key(A, "ck_aaa")
    assert await two.find_api_key(b"\x01" * 32) is None
    (listed,) = await two.list_api_keys(A)
    assert listed.revoked_at == 9.0


async def test_staff(two: Store) -> None:
    s = Staff(id="s2", tenant_id=A, name="Bob", groups=["sales", "eu"], created_at=4.0)
    await two.create_staff(s)
    assert await two.get_staff(A, "s2") == s
    assert [x.id for x in await two.list_staff(A)] == [f"s-{A}", "s2"]
    s.name, s.groups, s.active = "Robert", [], False
    await two.update_staff(s)
    assert await two.get_staff(A, "s2") == s
    with pytest.raises(Conflict):
        await two.create_staff(Staff(id="s2", tenant_id=A, name="dup"))
    with pytest.raises(NotFound):
        await two.create_staff(Staff(id="s9", tenant_id="ghost", name="x"))
    with pytest.raises(NotFound):
        await two.update_staff(Staff(id="s9", tenant_id=A, name="x"))
    assert await two.delete_staff(A, "s2")
    assert not await two.delete_staff(A, "s2")
    assert await two.get_staff(A, "s2") is None


async def test_links(two: Store) -> None:
    link = _link(A, "l2", "pub-2")
    link.hours = None
    await two.create_link(link)
    assert await two.get_link(A, "l2") == link
    assert await two.get_link_by_public_id("pub-2") == link
    assert await two.get_link_by_public_id("pub-none") is None
    assert [x.id for x in await two.list_links(A)] == [f"l-{A}", "l2"]
    link.name, link.media, link.active, link.public_id = "Support", [Media.VIDEO], False, "pub-3"
    link.hours = OpeningHours("UTC", [(6, 0, 60)])
    await two.update_link(link)
    assert await two.get_link(A, "l2") == link
    assert await two.get_link_by_public_id("pub-2") is None
    assert await two.delete_link(A, "l2")
    assert not await two.delete_link(A, "l2")
    assert await two.get_link(A, "l2") is None
    with pytest.raises(NotFound):
        await two.update_link(link)
    with pytest.raises(NotFound):
        await two.create_link(_link("ghost", "l9", "pub-9"))


async def test_duplicate_public_id_conflicts_and_loses_nothing(two: Store) -> None:
    before = await two.get_link(A, f"l-{A}")
    with pytest.raises(Conflict, match="public_id"):
        await two.create_link(_link(A, "l2", f"pub-{A}"))
    with pytest.raises(Conflict, match="public_id"):  # public ids are global: the button
        await two.create_link(_link(B, "l2", f"pub-{A}"))
    with pytest.raises(Conflict):
        await two.create_link(_link(A, f"l-{A}", "pub-fresh"))
    mine = await two.get_link(B, f"l-{B}")
    assert mine is not None
    mine.public_id = f"pub-{A}"
    with pytest.raises(Conflict):
        await two.update_link(mine)
    assert await two.get_link(A, f"l-{A}") == before
    assert (await two.get_link(B, f"l-{B}") or mine).public_id == f"pub-{B}"
    assert len(await two.list_links(A)) == len(await two.list_links(B)) == 1
    # and the store still works after the errors
    await two.create_link(_link(B, "l3", "pub-ok"))


async def test_calls(two: Store) -> None:
    c = Call(
        id="c2",
        tenant_id=A,
        link_id=f"l-{A}",
        created_at=7.0,
        relay_node="n1",
        relay_region="eu",
        visitor_prefix="192.0.2.0/24",
        visitor_browser="Firefox",
        visitor_os="Linux",
        visitor_ref="ann@example.com",
    )
    await two.create_call(c)
    assert await two.get_call(A, "c2") == c
    with pytest.raises(Conflict):
        await two.create_call(Call(id="c2", tenant_id=A, link_id=f"l-{A}"))
    with pytest.raises(NotFound):  # a link of another tenant
        await two.create_call(Call(id="c3", tenant_id=A, link_id=f"l-{B}"))
    with pytest.raises(NotFound):
        await two.create_call(Call(id="c3", tenant_id="ghost", link_id=f"l-{A}"))
    answered = Call(
        **{**_fields(c), "status": CallStatus.ANSWERED, "answered_at": 8.0, "answered_by": f"s-{A}"}
    )
    assert await two.update_call(answered, CallStatus.RINGING)
    assert not await two.update_call(answered, CallStatus.RINGING)
    assert await two.get_call(A, "c2") == answered
    ended = Call(
        **{
            **_fields(answered),
            "status": CallStatus.ENDED,
            "ended_at": 60.5,
            "end_reason": "hangup",
        }
    )
    assert await two.update_call(ended, CallStatus.ANSWERED)
    assert await two.get_call(A, "c2") == ended
    # calls outlive their link (they are the call log)
    assert await two.delete_link(A, f"l-{A}")
    assert await two.get_call(A, "c2") == ended


def _fields(c: Call) -> dict[str, object]:
    return {f: getattr(c, f) for f in Call.__slots__}


async def test_tenant_isolation(two: Store) -> None:
    """Tenant B, through every tenant-scoped method, sees and changes nothing of A's."""
    snapshot = (
        await two.list_staff(A),
        await two.list_links(A),
        await two.list_calls(A),
        await two.list_api_keys(A),
    )
    sa, la, ca = f"s-{A}", f"l-{A}", f"c-{A}"
    assert await two.get_staff(B, sa) is None
    assert await two.get_link(B, la) is None
    assert await two.get_call(B, ca) is None
    assert [s.id for s in await two.list_staff(B)] == [f"s-{B}"]
    assert [x.id for x in await two.list_links(B)] == [f"l-{B}"]
    assert [x.id for x in (await two.list_calls(B)).calls] == [f"c-{B}"]
    for status in CallStatus:
        assert all(x.tenant_id == B for x in (await two.list_calls(B, status=status)).calls)
    with pytest.raises(NotFound):
        await two.update_staff(Staff(id=sa, tenant_id=B, name="mine now"))
    with pytest.raises(NotFound):
        await two.update_link(_link(B, la, "pub-stolen"))
    assert not await two.update_call(
        Call(id=ca, tenant_id=B, link_id=f"l-{B}", status=CallStatus.ANSWERED), CallStatus.RINGING
    )
    with pytest.raises(NotFound):  # B's call on A's link
        await two.create_call(Call(id="c-x", tenant_id=B, link_id=la))
    assert not await two.delete_staff(B, sa)
    assert not await two.delete_link(B, la)
    assert not await two.revoke_api_key(B, "ck_none")
    # B may reuse A's internal ids without colliding or learning anything
    await two.create_staff(Staff(id=sa, tenant_id=B, name="B's own"))
    await two.create_link(_link(B, la, "pub-b2"))
    await two.create_call(Call(id=ca, tenant_id=B, link_id=la))
    assert (await two.get_staff(A, sa) or Staff("", "", "")).name == "Ann"
    after = (
        await two.list_staff(A),
        await two.list_links(A),
        await two.list_calls(A),
        await two.list_api_keys(A),
    )
    assert after == snapshot


# --- calls: pagination and compare-and-set ---------------------------------------------------


async def test_list_calls_pagination_is_stable(two: Store) -> None:
    link = f"l-{A}"
    for i in range(30):  # groups of three share a created_at: the id breaks ties
        await two.create_call(
            Call(id=f"p{i:02d}", tenant_id=A, link_id=link, created_at=100.0 + i // 3)
        )
    expected = sorted(
        [c for c in (await two.list_calls(A, limit=1000)).calls],
        key=lambda c: (c.created_at, c.id),
        reverse=True,
    )
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = await two.list_calls(A, limit=7, cursor=cursor)
        seen += [c.id for c in page.calls]
        pages += 1
        if pages == 2:  # new calls arriving mid-listing don't shift later pages
            await two.create_call(Call(id="late", tenant_id=A, link_id=link, created_at=500.0))
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == [c.id for c in expected]
    assert pages == 5
    # filters
    page = await two.list_calls(A, since=103.0, until=105.0, limit=100)
    assert sorted(c.id for c in page.calls) == [f"p{i:02d}" for i in range(9, 15)]
    assert page.next_cursor is None
    assert not (await two.list_calls(A, status=CallStatus.ANSWERED)).calls
    assert len((await two.list_calls(A, status=CallStatus.RINGING, limit=1000)).calls) == 32
    with pytest.raises(Invalid):
        await two.list_calls(A, cursor="garbage")
    with pytest.raises(Invalid):
        await two.list_calls(A, limit=0)


def test_one_query_pages_calls_and_call_logs() -> None:
    """list_calls and list_call_log run one builder: the same WHERE, ORDER BY and LIMIT, and
    the call log adds only the call_stats join and its columns."""
    calls_sql, calls_args = CallQuery(A, status=CallStatus.RINGING, since=1, limit=5).sql()
    log_sql, log_args = CallQuery(A, status=CallStatus.RINGING, since=1, limit=5, stats=True).sql()
    assert "JOIN" not in calls_sql and "s_" not in calls_sql
    assert f"c.*, {STATS_SELECT} FROM calls c LEFT JOIN call_stats s" in log_sql
    assert log_sql.split(" WHERE ")[1] == calls_sql.split(" WHERE ")[1]
    assert calls_sql.endswith("ORDER BY c.created_at DESC, c.id DESC LIMIT 6")
    assert calls_args == log_args == [A, "ringing", 1.0]
    # mos_below filters on the joined call_stats row, after the cursor's arguments
    sql, args = CallQuery(A, mos_below=3.5, cursor="100.0~c1").sql()
    assert "LEFT JOIN call_stats s" in sql and "s_mos" not in sql
    assert args == [A, 100.0, 100.0, "c1", 3.5]
    for bad in (CallQuery(A, limit=0), CallQuery(A, limit=MAX_PAGE + 1), CallQuery(A, cursor="x")):
        with pytest.raises(Invalid):
            bad.sql()
    # one row past the page says there is more; the cursor is the page's last call
    rows = [
        {"created_at": 3.0, "id": "c"},
        {"created_at": 2.0, "id": "b"},
        {"created_at": 2.0, "id": "a"},
    ]
    assert CallQuery(A, limit=2).page(rows) == (rows[:2], "2.0~b")
    assert CallQuery(A, limit=3).page(rows) == (rows, None)


async def test_call_log_pages_like_calls(two: Store) -> None:
    link = f"l-{A}"
    for i in range(20):  # pairs share a created_at; every third call is answered
        call = Call(id=f"q{i:02d}", tenant_id=A, link_id=link, created_at=100.0 + i // 2)
        await two.create_call(call)
        if i % 3 == 0:
            call.status, call.answered_at, call.answered_by = CallStatus.ANSWERED, 200.0, f"s-{A}"
            assert await two.update_call(call, CallStatus.RINGING)
    filters: list[dict[str, Any]] = [
        {},
        {"status": CallStatus.ANSWERED},
        {"since": 103.0, "until": 108.0},
        {"status": CallStatus.RINGING, "since": 101.0},
    ]
    for kw in filters:
        calls: list[list[str]] = []
        logs: list[list[str]] = []
        cursor: str | None = None
        while True:
            page = await two.list_calls(A, limit=3, cursor=cursor, **kw)
            log = await two.list_call_log(A, limit=3, cursor=cursor, **kw)
            calls.append([c.id for c in page.calls])
            logs.append([c.id for c, stats in log.entries if stats is None])
            assert page.next_cursor == log.next_cursor
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert calls == logs, kw
        assert sum(map(len, calls)) == len((await two.list_calls(A, limit=1000, **kw)).calls)
    answered = await two.list_call_log(A, staff_id=f"s-{A}", limit=1000)
    assert [c.id for c, _ in answered.entries] == [
        c.id for c in (await two.list_calls(A, status=CallStatus.ANSWERED, limit=1000)).calls
    ]


async def test_first_answer_wins_across_two_stores(two: Store, url: str) -> None:
    """Two stores on one database (as two processes); many staff answer at once."""
    other = await open_store(url)
    try:
        for round_ in range(5):
            call_id = f"race{round_}"
            await two.create_call(Call(id=call_id, tenant_id=A, link_id=f"l-{A}"))

            async def answer(s: Store, staff: str, call_id: str = call_id) -> bool:
                c = await s.get_call(A, call_id)
                assert c is not None
                c.status, c.answered_by, c.answered_at = CallStatus.ANSWERED, staff, 9.0
                return await s.update_call(c, CallStatus.RINGING)

            results = await asyncio.gather(
                *(answer(two if i % 2 else other, f"staff{i}") for i in range(8))
            )
            assert sum(results) == 1
            final = await other.get_call(A, call_id)
            assert final is not None and final.status == CallStatus.ANSWERED
            assert final.answered_by == f"staff{results.index(True)}"
    finally:
        await other.close()


# --- tokens, nodes -----------------------------------------------------------------------------


async def test_tokens_and_revocation(two: Store) -> None:
    t1 = SessionToken(
        id="tok1",
        tenant_id=A,
        call_id=f"c-{A}",
        role=Role.VISITOR,
        staff_id=None,
        issued_at=10.0,
        expires_at=610.0,
    )
    t2 = SessionToken(
        id="tok2",
        tenant_id=B,
        call_id=None,
        role=None,
        staff_id=None,
        issued_at=11.0,
        expires_at=70.0,
    )
    t3 = SessionToken(
        id="tok3",
        tenant_id=A,
        call_id=f"c-{A}",
        role=Role.STAFF,
        staff_id=f"s-{A}",
        issued_at=12.0,
        expires_at=612.0,
    )
    for t in (t1, t2, t3):
        await two.save_token(t)
    assert await two.get_token("tok1") == t1
    assert await two.get_token("tok2") == t2
    assert await two.get_token("nope") is None
    with pytest.raises(Conflict):
        await two.save_token(t1)
    with pytest.raises(NotFound):
        await two.save_token(SessionToken("tok9", "ghost", None, None, None, 1.0, 2.0))
    assert await two.revoked_since(0.0) == []
    assert await two.revoke_token("tok1", 20.0)
    assert not await two.revoke_token("tok1", 21.0)  # the first revocation time stays
    assert not await two.revoke_token("nope", 21.0)
    assert await two.revoke_token("tok3", 25.5)
    assert await two.revoked_since(0.0) == [("tok1", 20.0), ("tok3", 25.5)]
    assert await two.revoked_since(25.5) == [("tok3", 25.5)]
    assert await two.revoked_since(26.0) == []
    assert (await two.get_token("tok1") or t2).revoked_at == 20.0


async def test_revoke_call_tokens(two: Store) -> None:
    call = f"c-{A}"
    tokens = [
        SessionToken("v", A, call, Role.VISITOR, None, 1.0, 100.0),
        SessionToken("s", A, call, Role.STAFF, f"s-{A}", 2.0, 100.0),
        SessionToken("gone", A, call, Role.STAFF, f"s-{A}", 2.0, 100.0, revoked_at=5.0),
        SessionToken("other", A, "c-other", Role.VISITOR, None, 1.0, 100.0),
        SessionToken("b", B, call, Role.VISITOR, None, 1.0, 100.0),  # same call id, tenant B
    ]
    for t in tokens:
        await two.save_token(t)
    assert await two.revoke_call_tokens(A, call, 9.0) == 2
    assert await two.revoke_call_tokens(A, call, 10.0) == 0
    assert await two.revoked_since(6.0) == [("s", 9.0), ("v", 9.0)]
    assert (await two.get_token("gone") or tokens[0]).revoked_at == 5.0
    for tid in ("other", "b"):
        assert (await two.get_token(tid) or tokens[0]).revoked_at is None


async def test_declines(two: Store) -> None:
    call = f"c-{A}"
    assert await two.list_declines(A, call) == []
    assert await two.decline_call(A, call, "s1", 5.0) == ["s1"]
    assert await two.decline_call(A, call, "s1", 6.0) == ["s1"]  # again: no change
    assert await two.decline_call(A, call, "s0", 7.0) == ["s1", "s0"]
    assert await two.list_declines(B, call) == []
    with pytest.raises(NotFound):
        await two.decline_call("ghost", call, "s1", 1.0)


async def test_signals(two: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    call = f"c-{A}"
    await two.add_signal(A, call, Role.VISITOR, '{"type":"offer"}', 1.0)
    await two.add_signal(A, call, Role.STAFF, '{"type":"answer"}', 2.0)
    await two.add_signal(A, call, Role.VISITOR, '{"type":"candidate"}', 3.0)
    await two.add_signal(B, call, Role.VISITOR, '{"type":"other tenant"}', 3.0)
    got = await two.read_signals(A, call, Role.VISITOR, 0)
    assert [b for _, b in got] == ['{"type":"offer"}', '{"type":"candidate"}']
    assert got[0][0] < got[1][0]
    assert await two.read_signals(A, call, Role.VISITOR, got[0][0]) == got[1:]
    assert [b for _, b in await two.read_signals(A, call, Role.STAFF, 0)] == ['{"type":"answer"}']
    with pytest.raises(Invalid):
        await two.add_signal(A, call, Role.VISITOR, "x" * 70_000, 4.0)
    monkeypatch.setattr("control.store.sql.MAX_SIGNALS", 4)
    await two.add_signal(A, call, Role.STAFF, "{}", 4.0)
    with pytest.raises(Invalid, match="at most 4"):
        await two.add_signal(A, call, Role.STAFF, "{}", 5.0)
    assert await two.delete_signals(A, call) == 4
    assert await two.read_signals(A, call, Role.STAFF, 0) == []
    assert await two.purge_signals(3.5) == 1  # tenant B's message from t=3
    assert await two.read_signals(B, call, Role.VISITOR, 0) == []


async def test_nodes(store: Store) -> None:
    n1 = RelayNode(
        id="n1",
        region="eu",
        urls=["turn:192.0.2.1:3478?transport=udp"],
        last_heartbeat=100.0,
        registered_at=100.0,
    )
    n2 = RelayNode(id="n2", region="us", urls=["stun:198.51.100.1"], registered_at=50.0)
    await store.upsert_node(n1)
    await store.upsert_node(n2)
    assert await store.get_node("n1") == n1
    assert await store.get_node("n3") is None
    beat = RelayNode(
        id="n1",
        region="eu",
        urls=["turn:192.0.2.1:3478"],
        allocations=42,
        packet_rate=1.5e5,
        cpu=0.25,
        draining=True,
        last_heartbeat=105.0,
        registered_at=105.0,
    )
    await store.upsert_node(beat)
    got = await store.get_node("n1")
    assert got is not None
    assert got.registered_at == 100.0  # first registration kept
    got.registered_at = 105.0
    assert got == beat
    assert [n.id for n in await store.list_nodes()] == ["n1", "n2"]
    assert [n.id for n in await store.list_nodes("us")] == ["n2"]
    assert await store.list_nodes("ap") == []


# --- migrations, URLs, notifications -------------------------------------------------------------


async def test_statement_observer_sees_every_statement(store: Store) -> None:
    seen: list[tuple[StatementOp, float, bool]] = []

    def observer(op: StatementOp, seconds: float, failed: bool) -> None:
        seen.append((op, seconds, failed))

    store.observe_statements(observer)
    await store.create_tenant(Tenant(id=A, name="A"))  # one INSERT
    assert await store.get_tenant(A) is not None  # one row
    assert len(await store.list_tenants()) == 1  # rows
    with pytest.raises(Conflict):
        await store.create_tenant(Tenant(id=A, name="again"))
    assert [(op, failed) for op, _, failed in seen] == [
        ("write", False),
        ("read", False),
        ("read", False),
        ("write", True),
    ]
    assert all(0 <= seconds < 60 for _, seconds, _ in seen)
    store.observe_statements(None)
    await store.list_tenants()
    assert len(seen) == 4


async def test_migrations_are_idempotent(store: Store, url: str) -> None:
    await store.create_tenant(Tenant(id="t1", name="kept"))
    assert await migrate(url) == []
    again = await open_store(url)  # a second open applies nothing and keeps the data
    try:
        assert [t.name for t in await again.list_tenants()] == ["kept"]
    finally:
        await again.close()
    assert await migrate(url) == []


async def test_migrate_by_hand_on_fresh_database(url: str) -> None:
    # `url` is a fresh, never-opened database
    backend = "sqlite" if url.startswith("sqlite") else "postgres"
    every = [m.version for m in load_migrations(backend)]
    assert await migrate(url) == every
    assert await migrate(url) == []
    s = await open_store(url)
    try:
        assert await s.list_tenants() == []
    finally:
        await s.close()


async def test_urls() -> None:
    with pytest.raises(Invalid):
        await open_store("mysql://x")
    with pytest.raises(Invalid):
        await open_store("sqlite:///")
    with pytest.raises(StoreError):
        await open_store("sqlite:////nonexistent-dir/x/y.db")
    s = await open_store("sqlite:///:memory:")
    try:
        await s.create_tenant(Tenant(id="t", name="mem"))
        assert (await s.get_tenant("t") or Tenant("", "")).name == "mem"
        sub = await s.listen("ch")
        await s.notify("ch", "hello")
        assert await asyncio.wait_for(anext(sub), 5) == "hello"
    finally:
        await s.close()


async def test_notify_listen_across_two_stores(store: Store, url: str) -> None:
    other = await open_store(url)
    try:
        sub = await store.listen("call.c1")
        quiet = await store.listen("call.c2")
        await other.notify("call.c1", '{"type":"offer"}')
        await other.notify("call.c1", "second")
        await store.notify("call.c1", "from self")
        got = [await asyncio.wait_for(anext(sub), 5) for _ in range(3)]
        assert got == ['{"type":"offer"}', "second", "from self"]
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(anext(quiet), 0.2)
        await sub.aclose()
        with pytest.raises(StopAsyncIteration):
            await anext(sub)
        # a fresh subscription on the same channel still works after unsubscribing
        async with await other.listen("call.c1") as again:
            await store.notify("call.c1", "third")
            assert await asyncio.wait_for(anext(again), 5) == "third"
        with pytest.raises(Invalid):
            await store.notify("x" * 64, "too long a channel")
        with pytest.raises(Invalid):
            await store.notify("ok", "x" * 9000)
    finally:
        await other.close()
    # closing a store ends its subscriptions cleanly
    last = await store.listen("call.c3")
    await store.close()
    with pytest.raises(StopAsyncIteration):
        await anext(last)


async def test_concurrent_opens_migrate_once(url: str) -> None:
    """Processes starting together on a fresh database: one applies, the others wait."""
    stores = await asyncio.gather(*(open_store(url) for _ in range(4)))
    try:
        await stores[0].create_tenant(Tenant(id="t", name="x"))
        assert [t.id for t in await stores[3].list_tenants()] == ["t"]
        assert await migrate(url) == []
        # concurrent writers through every store at once
        await asyncio.gather(
            *(
                s.create_staff(Staff(id=f"s{i}-{j}", tenant_id="t", name="n"))
                for i, s in enumerate(stores)
                for j in range(10)
            )
        )
        assert len(await stores[1].list_staff("t")) == 40
    finally:
        for s in stores:
            await s.close()


async def test_slow_listener_is_ended_not_silently_dropped(store: Store) -> None:
    sub = await store.listen("busy")
    for i in range(1100):  # past SUBSCRIPTION_BACKLOG without reading
        await store.notify("busy", str(i))
    got: list[str] = []
    with pytest.raises(StoreError, match="fell behind"):
        while True:
            got.append(await asyncio.wait_for(anext(sub), 5))
    assert got == [str(i) for i in range(len(got))]
    again = await store.listen("busy")  # resubscribing works
    await store.notify("busy", "fresh")
    assert await asyncio.wait_for(anext(again), 5) == "fresh"


async def test_postgres_lost_notification_connection_ends_subscriptions(pg: PgServer) -> None:
    name = f"t_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(pg.dsn())
    try:
        await admin.execute(f"CREATE DATABASE {name}")
        store = await open_store(pg.dsn(name))
        try:
            sub = await store.listen("ch")
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = $1 AND query ILIKE 'LISTEN%'",
                name,
            )
            with pytest.raises(StoreError, match="subscribe again"):
                await asyncio.wait_for(anext(sub), 10)
            again = await store.listen("ch")  # a new notification connection
            await store.notify("ch", "back")
            assert await asyncio.wait_for(anext(again), 5) == "back"
        finally:
            await store.close()
    finally:
        await admin.close()
