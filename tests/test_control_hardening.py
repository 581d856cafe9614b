"""Control-plane hardening: node enrolment and summary seq jumps, the
operator aggregates' fixed buckets and the audit log's keyed subjects, a locked database,
private database files and the separate metrics listener.

Real SQLite files throughout, the fake clock of tests/test_api.py, and a real control-plane
process (tests/controlproc.py) for the listeners.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import sqlite3
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import httpx
import pytest

import control.store.postgres as pg_store
import control.store.sqlite as sqlite_store
from control.app import create_app
from control.metrics import metrics_listener
from control.models import AuditEntry
from control.privacy import audit_keys, subject_hash
from control.selection import RegionMap
from control.server import UsageError, load_settings
from control.store import Store, load_migrations, open_store
from tests.controlproc import ROOT, ControlProcess, free_port
from tests.relayproc import RelayProcess, RelaySpec
from tests.test_api import NODEH, OPH, T0, Api, Clock, bearer, err, make_settings, world
from tests.test_calllogs import DAY, place, summary
from tests.test_store import PgServer
from tests.test_store import pg as pg  # noqa: F401 (the shared PostgreSQL fixture)


@pytest.fixture
async def sqlite_api(tmp_path: Path) -> AsyncIterator[Api]:
    """The API over a real SQLite file (tmp_path/c.db), with the fake clock."""
    store = await open_store(f"sqlite:///{tmp_path}/c.db")
    clock = Clock()
    app = create_app(make_settings(clock), store)
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            yield Api(c, clock, store)
    finally:
        await store.close()


async def scrape(app_client: httpx.AsyncClient) -> str:
    app = app_client._transport.app  # type: ignore[attr-defined]
    transport = httpx.ASGITransport(app=metrics_listener(app))
    async with httpx.AsyncClient(transport=transport, base_url="http://m") as m:
        r = await m.get("/metrics")
    assert r.status_code == 200
    return r.text


def sample(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not exposed")


# --- busy database, file modes, metrics listener ------------------------------------


async def test_locked_database_is_503_with_retry_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another connection holds the write lock past the busy timeout: the write is a 503 with
    Retry-After and counted, not a 500; once the lock goes, the same request works."""
    monkeypatch.setattr(sqlite_store, "BUSY_TIMEOUT_MS", 50)
    path = tmp_path / "busy.db"
    store: Store = await open_store(f"sqlite:///{path}")
    app = create_app(make_settings(Clock()), store)
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            holder.execute("BEGIN IMMEDIATE")  # the write lock, held
            r = await c.post("/v1/tenants", json={"name": "Acme"}, headers=OPH)
            assert r.status_code == 503, r.text
            assert r.headers["retry-after"] == "1"
            assert r.json()["error"]["code"] == "busy"
            assert sample(await scrape(c), "clickacall_control_db_busy_total") == 1
            holder.execute("ROLLBACK")
            r = await c.post("/v1/tenants", json={"name": "Acme"}, headers=OPH)
            assert r.status_code == 201, r.text
    finally:
        holder.close()
        await store.close()


async def test_database_files_are_created_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "private.db"
    store = await open_store(f"sqlite:///{path}")
    try:
        app = create_app(make_settings(Clock()), store)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            assert (await c.post("/v1/tenants", json={"name": "A"}, headers=OPH)).status_code == 201
        files = [path, Path(f"{path}-wal"), Path(f"{path}-shm")]
        for f in files:
            assert f.exists(), f
            assert stat.S_IMODE(f.stat().st_mode) == 0o600, (f, oct(f.stat().st_mode))
    finally:
        await store.close()


def test_metrics_only_on_their_own_listener() -> None:
    """A real process: /metrics on the API's port is a 404, the --metrics listener serves it
    (and nothing else); a --metrics port in use is a clear error at start."""
    with ControlProcess() as control:
        assert httpx.get(f"{control.url}/metrics", timeout=5).status_code == 404
        r = httpx.get(control.metrics_url, timeout=5)
        assert r.status_code == 200 and "clickacall_control_http_requests_total" in r.text
        base = control.metrics_url.removesuffix("/metrics")
        assert httpx.get(f"{base}/v1/nodes", headers=control.oh, timeout=5).status_code == 404
        argv = ["--listen", f"127.0.0.1:{free_port()}", "--db", "sqlite:///:memory:"]
        proc = subprocess.run(
            [sys.executable, "-m", "control", *argv, "--metrics", f"127.0.0.1:{control.port}"],
            cwd=ROOT,
            env={"CLICKACALL_TOKEN_KEY": "a-token-key-of-some-length", "PATH": ""},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 2, proc.stderr
    assert f"--metrics 127.0.0.1:{control.port}" in proc.stderr


# --- node enrolment, summary seq jumps ------------------------------------------------


def node_body(node_id: str, url: str = "turn:good.example:3478") -> dict[str, Any]:
    return {"node_id": node_id, "region": "eu", "urls": [url]}


def summaries(node_id: str, *seqs: int) -> dict[str, Any]:
    return {"node_id": node_id, "summaries": [summary(s, "tok-unknown") for s in seqs]}


async def test_enrolment_binds_a_node_id_to_its_own_credential(sqlite_api: Api) -> None:
    api = sqlite_api
    r = await api.c.post("/v1/nodes/enrol", json={"node_id": "n1"}, headers=NODEH)
    assert r.status_code == 201, r.text
    cred = r.json()["credential"]
    assert cred.startswith("cn_") and len(cred) > 40
    own = bearer(cred)
    stored = await api.store.node_credential("n1")
    assert stored == hashlib.sha256(cred.encode()).hexdigest()  # only the hash is kept
    assert (await api.c.post("/v1/nodes/heartbeat", json=node_body("n1"), headers=own)).is_success
    # the shared secret no longer speaks for n1: no hijacking its URLs, no posting its summaries
    hijack = node_body("n1", "turn:evil.example:3478")
    err(await api.c.post("/v1/nodes/heartbeat", json=hijack, headers=NODEH), 409, "node_enrolled")
    err(await api.c.post("/v1/nodes/enrol", json={"node_id": "n1"}, headers=NODEH), 409)
    err(await api.c.post("/v1/nodes/summaries", json=summaries("n1", 1), headers=NODEH), 409)
    [node] = (await api.c.get("/v1/nodes", headers=OPH)).json()
    assert node["urls"] == ["turn:good.example:3478"]
    # a node's credential is for that node only; an unknown one is refused
    err(await api.c.post("/v1/nodes/heartbeat", json=node_body("n2"), headers=own), 403)
    fake = bearer("cn_" + "A" * 43)
    err(await api.c.post("/v1/nodes/heartbeat", json=node_body("n1"), headers=fake), 401)
    r = await api.c.post("/v1/nodes/summaries", json=summaries("n1", 1), headers=own)
    assert r.status_code == 200 and r.json()["accepted"] == 1
    # an id that never enrolled still heartbeats with the shared secret (older nodes)
    assert (await api.c.post("/v1/nodes/heartbeat", json=node_body("n3"), headers=NODEH)).is_success
    nodes = (await api.c.get("/v1/nodes", headers=OPH)).json()
    assert [(n["id"], n["enrolled"]) for n in nodes] == [("n1", True), ("n3", False)]
    text = await scrape(api.c)
    refused = "clickacall_control_node_refusals_total"
    assert sample(text, f'{refused}{{reason="enrolled"}}') == 3
    assert sample(text, f'{refused}{{reason="wrong_node"}}') == 1
    assert sample(text, f'{refused}{{reason="bad_credential"}}') == 1
    assert sample(text, "clickacall_control_node_enrolments_total") == 1
    # the operator revokes: the old credential is dead, the node enrols afresh
    path = "/v1/nodes/n1/credential"
    err(await api.c.delete(path, headers=NODEH), 401)
    assert (await api.c.delete(path, headers=OPH)).status_code == 204
    err(await api.c.delete(path, headers=OPH), 404)
    err(await api.c.post("/v1/nodes/heartbeat", json=node_body("n1"), headers=own), 401)
    r = await api.c.post("/v1/nodes/enrol", json={"node_id": "n1"}, headers=OPH)  # or the operator
    assert r.status_code == 201 and r.json()["credential"] != cred
    new = bearer(r.json()["credential"])
    assert (await api.c.post("/v1/nodes/heartbeat", json=node_body("n1"), headers=new)).is_success
    err(await api.c.post("/v1/nodes/enrol", json={"node_id": "n9"}, headers=bearer("x")), 401)


async def test_summary_seq_jump_is_refused_and_keeps_the_high_water_mark(
    sqlite_api: Api,
) -> None:
    api = sqlite_api
    r = await api.c.post("/v1/nodes/enrol", json={"node_id": "n1"}, headers=NODEH)
    own = bearer(r.json()["credential"])

    async def post(*seqs: int) -> httpx.Response:
        return await api.c.post("/v1/nodes/summaries", json=summaries("n1", *seqs), headers=own)

    err(await post(2**62), 409, "seq_jump")  # would make every later summary a "replay"
    assert (await post()).json()["accepted"] == 0
    assert (await post(1, 2)).json()["accepted"] == 2
    jump = make_settings(Clock()).summary_seq_jump
    err(await post(3, 2 + jump + 1), 409, "seq_jump")  # the whole request: nothing stored
    assert (await post()).json()["accepted"] == 2
    assert (await post(3, 2 + jump)).json()["accepted"] == 2 + jump  # at the bound: fine
    text = await scrape(api.c)
    assert sample(text, 'clickacall_control_node_refusals_total{reason="seq_jump"}') == 2


def test_relay_enrols_at_first_start_and_keeps_its_credential(tmp_path: Path) -> None:
    """A real relay started with only the node secret enrols by itself, keeps its credential
    in its spool directory (0600) and uses it after a restart; the node secret alone can no
    longer re-register that node id."""
    with ControlProcess() as control:
        spool = tmp_path / "spool"
        args = ["--control", control.url, "--node-id", "enrolled-1", "--region", "eu"]
        args += ["--node-secret", control.node_secret, "--heartbeat-interval", "0.5"]
        args += ["--spool", str(spool)]
        spec = RelaySpec(secret=control.relay_secret, extra_args=args)

        def registered() -> list[dict[str, Any]]:
            r = httpx.get(f"{control.url}/v1/nodes", headers=control.oh, timeout=5)
            return [n for n in r.json() if n["id"] == "enrolled-1" and n["healthy"]]

        kept = spool / "node-credential"
        first = ""
        for run in range(2):  # the second run reuses the kept credential
            relay = RelayProcess(spec, tmp_path / f"relay{run}", impl="ours").start()
            try:
                wait_until(registered, 15)
                assert stat.S_IMODE(kept.stat().st_mode) == 0o600
                first = first or kept.read_text()
                assert kept.read_text() == first and first.startswith("cn_")
            finally:
                relay.stop()
        body = node_body("enrolled-1", "turn:evil.example:3478")
        r = httpx.post(
            f"{control.url}/v1/nodes/heartbeat", json=body, headers=bearer(control.node_secret)
        )
        assert r.status_code == 409, r.text


def wait_until(probe: Callable[[], object], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.1)


# --- aggregates over fixed buckets, keyed audit subjects -----------------------------


@pytest.fixture
async def regional(tmp_path: Path) -> AsyncIterator[Api]:
    """test_calllogs' app (the test client placed in a region) over a real SQLite file."""
    store = await open_store(f"sqlite:///{tmp_path}/r.db")
    clock = Clock()
    app = create_app(make_settings(clock, region_map=RegionMap({"127.0.0.0/8": "eu"})), store)
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            yield Api(c, clock, store)
    finally:
        await store.close()


async def test_aggregates_cannot_be_subtracted_to_reveal_a_small_group(regional: Api) -> None:
    api = regional
    w = await world(api)
    day = 1699833600.0  # Monday 2023-11-13, 00:00 UTC
    await place(api, w, day + 9 * 3600, answer=w.staff, talk=600)  # the one to single out
    for i in range(10):
        await place(api, w, day + 10 * 3600 + 60 * i, answer=w.staff, talk=5)
    for i in range(2):  # Tuesday: two calls, under the floor
        await place(api, w, day + DAY + 3600 + 60 * i, answer=w.staff, talk=5)

    async def get(**params: Any) -> dict[str, Any]:
        r = await api.c.get("/v1/operator/aggregates", params=params, headers=OPH)
        assert r.status_code == 200, r.text
        out: dict[str, Any] = r.json()
        return out

    # while Monday is still going, it is not shown at all (it could be read again later)
    api.clock.t = day + 23 * 3600
    assert (await get(since=day, until=day + DAY))["groups"] == []
    api.clock.t = day + 7 * DAY
    # two overlapping windows: the one with the lone 09:00 call and the one without
    a = await get(since=day, until=day + DAY)
    b = await get(since=day + 9.5 * 3600, until=day + DAY)
    assert a["groups"] == b["groups"] and a["since"] == b["since"] == day
    [g] = a["groups"]
    assert g["calls"] == 11  # whole UTC days only: the lone call is in both or in neither
    # a week is the sum of its shown days: Tuesday's two calls cannot be had as week - Monday
    daily = await get(since=day, until=day + 7 * DAY)
    weekly = await get(period="week", since=day, until=day + 7 * DAY)
    assert [x["calls"] for x in daily["groups"]] == [11] and daily["suppressed"] == 1
    assert [x["calls"] for x in weekly["groups"]] == [11] and weekly["suppressed"] == 1


async def test_audit_subjects_are_keyed_not_plain_hashes(regional: Api, tmp_path: Path) -> None:
    api = regional
    w = await world(api)
    call = await place(api, w, T0)
    ref = "+33612345678"
    r = await api.c.patch(f"/v1/calls/{call.call_id}", json={"visitor_ref": ref}, headers=w.th)
    assert r.status_code == 200, r.text
    r = await api.c.patch(f"/v1/calls/{call.call_id}", json={"visitor_ref": "x@y.z"}, headers=w.th)
    entries = (await api.c.get("/v1/audit", headers=w.th)).json()["entries"]
    subject = entries[0]["subject"]
    assert subject != hashlib.sha256(ref.encode()).hexdigest()  # no dictionary reverses it
    assert subject == subject_hash(ref, audit_keys(make_settings(Clock()))[0])
    assert entries[1]["details"]["previous"] == subject
    # whoever has the identifier can still find its entries, through the control plane
    found = (await api.c.get("/v1/audit", params={"ref": ref}, headers=w.th)).json()["entries"]
    assert [e["seq"] for e in found] == [entries[0]["seq"]]
    none = await api.c.get("/v1/audit", params={"ref": "nobody"}, headers=w.th)
    assert none.json()["entries"] == []
    # another key (another deployment, or --audit-key) gives another subject
    other = make_settings(Clock(), audit_keys=[b"another-audit-key-0123"])
    assert subject_hash(ref, audit_keys(other)[0]) != subject


def test_migration_replaces_unkeyed_subjects_with_a_marker(tmp_path: Path) -> None:
    """Rows written before keyed subjects hold plain SHA-256s; they cannot be re-keyed, so
    the migration replaces them (and those in details) with a marker and keeps the rest."""
    path = tmp_path / "old.db"
    old = hashlib.sha256(b"ann@example.com").hexdigest()
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY,"
            " name TEXT NOT NULL, applied_at REAL NOT NULL)"
        )
        for m in load_migrations("sqlite"):
            if m.version <= 5:
                db.executescript(m.sql)
                db.execute("INSERT INTO schema_migrations VALUES (?, ?, 0)", (m.version, m.name))
        rows = [
            ("set_ref", old, json.dumps({"call_id": "c1", "previous": None})),
            ("correct", old, json.dumps({"by": "ref", "new_subject": old, "calls": ["c1"]})),
            ("purge", None, json.dumps({"calls": 3})),
        ]
        for action, subject, details in rows:
            db.execute(
                "INSERT INTO audit_log (tenant_id, at, actor, action, subject, details)"
                " VALUES ('t1', 1.0, 'k1', ?, ?, ?)",
                (action, subject, details),
            )
    finally:
        db.close()

    async def migrate_and_read() -> list[AuditEntry]:
        store = await open_store(f"sqlite:///{path}")
        try:
            return await store.list_audit("t1")
        finally:
            await store.close()

    got = asyncio.run(migrate_and_read())
    assert [(e.action, e.subject) for e in got] == [
        ("set_ref", "sha256-removed"),
        ("correct", "sha256-removed"),
        ("purge", None),
    ]
    assert got[0].details == {"call_id": "c1", "previous": None}
    assert got[1].details == {"by": "ref", "new_subject": "sha256-removed", "calls": ["c1"]}
    assert got[2].details == {"calls": 3}
    assert old not in path.read_bytes().decode("latin-1")
    with sqlite3.connect(path) as db, pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.execute("UPDATE audit_log SET subject = 'x'")  # still append-only


def test_new_flags_have_defaults_and_clear_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CLICKACALL_AUDIT_KEY", "CLICKACALL_NODE_SECRET"):
        monkeypatch.delenv(name, raising=False)
    base = ["--token-key", "a-token-key-of-some-length"]
    settings, _, _ = load_settings(base, "control")
    assert settings.metrics_listen == ("127.0.0.1", 9642)
    assert settings.summary_seq_jump == 1_000_000 and settings.audit_keys == []
    settings, _, _ = load_settings(
        [*base, "--metrics", "off", "--summary-seq-jump", "10", "--audit-key", "k" * 16], "c"
    )
    assert settings.metrics_listen is None and settings.summary_seq_jump == 10
    assert audit_keys(settings) == [b"k" * 16]
    monkeypatch.setenv("CLICKACALL_AUDIT_KEY", "e" * 16)
    assert load_settings(base, "c")[0].audit_keys == [b"e" * 16]
    for argv, message in (
        (["--metrics", "nowhere"], "--metrics 'nowhere' must be HOST:PORT"),
        (["--metrics", "127.0.0.1:8080"], "--metrics must be another address than --listen"),
        (["--summary-seq-jump", "0"], "--summary-seq-jump must be at least 1"),
        (["--audit-key", "short"], "audit keys must be at least 16 bytes"),
    ):
        with pytest.raises(UsageError, match=re.escape(message)):
            load_settings([*base, *argv], "c")


async def test_a_postgresql_row_locked_too_long_is_503_with_retry_after(
    pg: PgServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL: another transaction holds the tenant's row past the lock timeout. The
    waiting write fails with lock_not_available and the API answers 503 with Retry-After,
    counted, as for a locked SQLite file (it was a 500); once the lock goes, the same
    request works."""
    monkeypatch.setattr(pg_store, "LOCK_TIMEOUT_MS", 200)
    name = f"t_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(pg.dsn())
    try:
        await admin.execute(f"CREATE DATABASE {name}")
    finally:
        await admin.close()
    store: Store = await open_store(pg.dsn(name))
    app = create_app(make_settings(Clock()), store)
    holder = await asyncpg.connect(pg.dsn(name))
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            r = await c.post("/v1/tenants", json={"name": "Acme"}, headers=OPH)
            assert r.status_code == 201, r.text
            tid = r.json()["tenant"]["id"]
            tx = holder.transaction()
            await tx.start()
            await holder.execute("SELECT 1 FROM tenants WHERE id = $1 FOR UPDATE", tid)
            r = await c.patch(f"/v1/tenants/{tid}", json={"name": "Acme 2"}, headers=OPH)
            assert r.status_code == 503, r.text
            assert r.headers["retry-after"] == "1"
            assert r.json()["error"]["code"] == "busy"
            assert sample(await scrape(c), "clickacall_control_db_busy_total") == 1
            await tx.rollback()
            r = await c.patch(f"/v1/tenants/{tid}", json={"name": "Acme 2"}, headers=OPH)
            assert r.status_code == 200, r.text
            assert r.json()["name"] == "Acme 2"
    finally:
        await holder.close()
        await store.close()
