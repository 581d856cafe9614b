"""Control-plane hardening (issue 14, defects 5-7): node enrolment and summary seq jumps, the
operator aggregates' fixed buckets and the audit log's keyed subjects, a locked database,
private database files and the separate metrics listener.

Real SQLite files throughout, the fake clock of tests/test_api.py, and a real control-plane
process (tests/controlproc.py) for the listeners.
"""

from __future__ import annotations

import sqlite3
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

import control.store.sqlite as sqlite_store
from control.app import create_app
from control.metrics import metrics_listener
from control.store import Store, open_store
from tests.controlproc import ROOT, ControlProcess, free_port
from tests.test_api import OPH, Api, Clock, make_settings


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


# --- defect 7: busy database, file modes, metrics listener ------------------------------------


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
