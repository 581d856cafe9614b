"""The SQLite store's loop-thread path (control/store/sqlite.py): statements run on the event
loop's thread, and step aside to aiosqlite's threads when the database is locked or a statement
runs past its budget, having done nothing; the WAL is checkpointed off the loop."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from control.models import SessionToken, Tenant
from control.store import Conflict, NotFound
from control.store import sqlite as backend
from control.store.sqlite import SqliteStore


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = await SqliteStore.open(str(tmp_path / "loop.db"))
    try:
        await s.create_tenant(Tenant(id="t", name="x"))
        yield s
    finally:
        await s.close()


def token(i: int, tenant: str = "t") -> SessionToken:
    return SessionToken(
        id=f"tok{i}",
        tenant_id=tenant,
        call_id=None,
        role=None,
        staff_id=None,
        issued_at=float(i),
        expires_at=float(i) + 60,
    )


class Threaded:
    """Counts the statements that went the threaded way."""

    def __init__(self, s: SqliteStore, monkeypatch: pytest.MonkeyPatch) -> None:
        self.reads = self.writes = 0
        read, write = s._read, s._write

        async def counted_read(*a: Any) -> Any:
            self.reads += 1
            return await read(*a)

        async def counted_write(*a: Any) -> Any:
            self.writes += 1
            return await write(*a)

        monkeypatch.setattr(s, "_read", counted_read)
        monkeypatch.setattr(s, "_write", counted_write)


async def test_plain_statements_stay_on_the_loop(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    threaded = Threaded(store, monkeypatch)
    await store.save_token(token(1))
    assert (await store.get_token("tok1")) == token(1)
    assert await store.revoke_token("tok1", 5.0)
    with pytest.raises(Conflict):
        await store.save_token(token(1))
    with pytest.raises(NotFound):
        await store.save_token(token(2, tenant="nobody"))  # the foreign key holds
    assert (threaded.reads, threaded.writes) == (0, 0)


async def test_over_budget_statements_are_redone_threaded(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(300):
        await store.save_token(token(i))
    monkeypatch.setattr(backend, "LOOP_BUDGET", -1.0)  # everything is over budget
    assert store._now is not None
    for conn in (store._now.reader, store._now.writer):
        conn.set_progress_handler(store._now._overdue, 1)
    threaded = Threaded(store, monkeypatch)
    assert len(await store._fetch("SELECT * FROM tokens")) == 300
    n = await store._execute("UPDATE tokens SET revoked_at = ?", 9.0, what="token")
    assert n == 300  # the interrupted UPDATE changed nothing; the threaded one did it all
    assert (threaded.reads, threaded.writes) == (1, 1)
    assert {t for (t,) in await store._fetch("SELECT revoked_at FROM tokens")} == {9.0}


async def test_a_write_interrupted_after_it_finished_is_not_done_twice(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite calls the progress handler once more when a statement has finished, after an
    autocommit write has committed: "interrupted" there must not send the write threaded again
    (an INSERT would fail as a duplicate, an UPDATE of a counter would count twice)."""
    assert store._now is not None
    calls = {"n": 0, "stop_at": 0}

    def overdue() -> int:  # interrupt at the stop_at-th look at the clock of a statement
        calls["n"] += 1
        return int(calls["n"] == calls["stop_at"])

    store._now.writer.set_progress_handler(overdue, 1)
    run = store._now.run
    monkeypatch.setattr(store._now, "run", lambda *a: (calls.update(n=0), run(*a))[1])
    for i in range(200):  # every place a statement can be interrupted, the last one included
        calls["stop_at"] = i + 1
        await store.save_token(token(i))
    assert len(await store._fetch("SELECT id FROM tokens")) == 200
    for i in range(200):
        calls["stop_at"] = i + 1
        n = await store._execute(
            "UPDATE tokens SET issued_at = issued_at + 1 WHERE id = ?", f"tok{i}", what="token"
        )
        assert n == 1
    rows = await store._fetch("SELECT id, issued_at FROM tokens")
    assert {str(r["id"]): float(r["issued_at"]) for r in rows} == {
        f"tok{i}": float(i) + 1 for i in range(200)
    }


async def test_locked_database_waits_off_the_loop(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    threaded = Threaded(store, monkeypatch)
    other = sqlite3.connect(tmp_path / "loop.db", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        other.execute("UPDATE tenants SET name = 'y'")
        write = asyncio.ensure_future(store.save_token(token(1)))
        ticks = 0
        while not write.done() and ticks < 20:  # the loop keeps running meanwhile
            await asyncio.sleep(0.01)
            ticks += 1
        assert not write.done() and ticks == 20
        assert (await store.get_tenant("t")).name == "x"  # type: ignore[union-attr]
        other.execute("COMMIT")
        await asyncio.wait_for(write, 10)
    finally:
        other.close()
    assert threaded.writes == 1 and threaded.reads == 0
    assert (await store.get_token("tok1")) == token(1)
    assert (await store.get_tenant("t")).name == "y"  # type: ignore[union-attr]


async def test_wal_is_checkpointed_off_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backend, "CHECKPOINT_EVERY", 50)
    s = await SqliteStore.open(str(tmp_path / "wal.db"))
    try:
        await s.create_tenant(Tenant(id="t", name="x"))
        ran: list[int] = []
        checkpoint = s._checkpoint

        async def counted(now: Any) -> None:
            ran.append(1)
            await checkpoint(now)

        monkeypatch.setattr(s, "_checkpoint", counted)
        assert s._now is not None
        for batch in range(3):
            for i in range(50):
                await s.save_token(token(batch * 50 + i))
            assert s._now.checkpoint is not None  # the 50th write (with create_tenant) started it
            while s._now.checkpoint is not None:
                await asyncio.sleep(0.01)
            assert len(ran) == batch + 1
        for i in range(150, 199):
            await s.save_token(token(i))  # the last one starts a checkpoint: close waits for it
        assert s._now.checkpoint is not None
    finally:
        await s.close()
    conn = sqlite3.connect(tmp_path / "wal.db")
    try:
        assert conn.execute("SELECT count(*) FROM tokens").fetchone()[0] == 199
    finally:
        conn.close()


async def test_memory_database_has_no_loop_path() -> None:
    s = await SqliteStore.open(":memory:")
    try:
        assert s._now is None
        await s.create_tenant(Tenant(id="t", name="x"))
        await s.save_token(token(1))
        assert (await s.get_token("tok1")) == token(1)
    finally:
        await s.close()
