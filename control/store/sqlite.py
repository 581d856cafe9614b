"""SQLite back-end: embedded, one process, WAL mode, one writer.

Writes go through one connection behind an :class:`asyncio.Lock` (SQLite allows one writer at
a time anyway; queueing in-process beats spinning on ``SQLITE_BUSY``). Reads use a second,
read-only connection, which WAL lets run alongside the writer. ``:memory:`` uses a single
connection for both (a second one would open a different, empty database). ``busy_timeout``
covers the rare second process, e.g. ``migrate`` run by hand against a live file.

Notifications are an in-process fan-out: every :class:`SqliteStore` on the same file in this
process shares one hub, and nothing crosses processes. That matches SQLite's role here (a
single control-plane process); deployments with several processes use PostgreSQL.
"""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
import time
from typing import Any

import aiosqlite

from control.store import (
    Conflict,
    Invalid,
    NotFound,
    Row,
    SqlStore,
    StoreError,
    Subscription,
    check_channel,
    load_migrations,
    log,
    pending,
)

BUSY_TIMEOUT_MS = 5000
MEMORY = ":memory:"

# path (or a per-store key for :memory:) -> channel -> subscriptions
_HUBS: dict[str, dict[str, set[Subscription]]] = {}


async def _connect(path: str, *, readonly: bool) -> aiosqlite.Connection:
    try:
        conn = await aiosqlite.connect(path, isolation_level=None)
    except sqlite3.Error as e:
        raise StoreError(f"cannot open SQLite database {path!r}: {e}") from e
    try:
        conn.row_factory = aiosqlite.Row
        await conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        await conn.execute("PRAGMA foreign_keys = ON")
        if readonly:
            await conn.execute("PRAGMA query_only = ON")
        else:
            await conn.execute("PRAGMA journal_mode = WAL")
            await conn.execute("PRAGMA synchronous = NORMAL")
    except sqlite3.Error as e:
        await conn.close()
        raise StoreError(f"cannot open SQLite database {path!r}: {e}") from e
    return conn


def _statements(script: str) -> list[str]:
    """Split a migration into statements (sqlite3's own notion of a complete statement)."""
    out, buf = [], ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    if buf.strip() and not all(
        ln.strip().startswith("--") or not ln.strip() for ln in buf.splitlines()
    ):
        raise StoreError("migration ends with an incomplete statement")
    return out


async def _migrate(conn: aiosqlite.Connection) -> list[int]:
    migrations = load_migrations("sqlite")
    try:
        await conn.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as e:
        raise StoreError(f"cannot lock the SQLite database to migrate it: {e}") from e
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY,"
            " name TEXT NOT NULL, applied_at REAL NOT NULL)"
        )
        async with conn.execute("SELECT version FROM schema_migrations") as cur:
            applied = {int(r[0]) for r in await cur.fetchall()}
        todo = pending(migrations, applied, "sqlite")
        for m in todo:
            log.info("applying sqlite migration %04d_%s", m.version, m.name)
            for stmt in _statements(m.sql):
                await conn.execute(stmt)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                (m.version, m.name, time.time()),
            )
        await conn.execute("COMMIT")
    except BaseException as e:
        await conn.execute("ROLLBACK")
        if isinstance(e, sqlite3.Error):
            raise StoreError(f"SQLite migration failed: {e}") from e
        raise
    return [m.version for m in todo]


async def migrate_path(path: str) -> list[int]:
    conn = await _connect(path, readonly=False)
    try:
        return await _migrate(conn)
    finally:
        await conn.close()


def _map_error(e: Exception, what: str) -> StoreError:
    msg = str(e)
    if isinstance(e, sqlite3.IntegrityError):
        if msg.startswith("UNIQUE constraint failed"):
            cols = re.findall(r"\w+\.(\w+)", msg)
            return Conflict(f"a {what} with this {', '.join(cols) or 'id'} already exists")
        if msg.startswith("FOREIGN KEY constraint failed"):
            return NotFound(f"unknown tenant for this {what}")
        return Invalid(f"invalid {what}: {msg}")
    if isinstance(
        e,
        OverflowError
        | TypeError
        | sqlite3.InterfaceError
        | sqlite3.DataError
        | sqlite3.ProgrammingError,
    ):
        return Invalid(f"invalid value for a {what}: {msg}")
    log.error("SQLite error on %s: %s", what, msg)
    return StoreError(f"database error: {msg}")


_ERRORS = (sqlite3.Error, OverflowError, TypeError)


class SqliteStore(SqlStore):
    backend = "sqlite"

    def __init__(
        self, path: str, writer: aiosqlite.Connection, reader: aiosqlite.Connection
    ) -> None:
        self.path = path
        self._writer = writer
        self._reader = reader
        self._lock = asyncio.Lock()
        self._subs: set[Subscription] = set()
        self._hub_key = f"{MEMORY}{id(self)}" if path == MEMORY else os.path.realpath(path)
        self._closed = False

    @classmethod
    async def open(cls, path: str) -> SqliteStore:
        writer = await _connect(path, readonly=False)
        try:
            applied = await _migrate(writer)
            reader = writer if path == MEMORY else await _connect(path, readonly=True)
        except BaseException:
            await writer.close()
            raise
        if applied:
            log.info("sqlite store %s migrated to %d", path, applied[-1])
        return cls(path, writer, reader)

    # primitives
    #
    # Each runs to completion even when its caller is cancelled (a WebSocket closing, a
    # timeout): a statement abandoned half-way would leave its cursor open, and an open
    # cursor keeps the connection's read transaction, and so its snapshot, forever.
    async def _read(self, sql: str, args: tuple[Any, ...]) -> list[Row]:
        try:
            return list(await self._reader.execute_fetchall(sql, args))
        except _ERRORS as e:
            raise _map_error(e, "query") from e

    async def _fetch(self, sql: str, *args: Any) -> list[Row]:
        return await asyncio.shield(self._read(sql, args))

    async def _fetchone(self, sql: str, *args: Any) -> Row | None:
        rows = await asyncio.shield(self._read(sql, args))
        return rows[0] if rows else None

    async def _write(self, sql: str, args: tuple[Any, ...], what: str) -> int:
        async with self._lock:
            try:
                async with self._writer.execute(sql, args) as cur:
                    return int(cur.rowcount)
            except _ERRORS as e:
                raise _map_error(e, what) from e

    async def _execute(self, sql: str, *args: Any, what: str) -> int:
        return await asyncio.shield(self._write(sql, args, what))

    # notifications (in-process)
    @property
    def _hub(self) -> dict[str, set[Subscription]]:
        return _HUBS.setdefault(self._hub_key, {})

    async def listen(self, channel: str) -> Subscription:
        check_channel(channel)
        if self._closed:
            raise StoreError("the store is closed")
        sub = Subscription(channel, self._unsubscribe)
        self._hub.setdefault(channel, set()).add(sub)
        self._subs.add(sub)
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        self._subs.discard(sub)
        hub = _HUBS.get(self._hub_key)
        if hub is None:
            return
        subs = hub.get(sub.channel)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del hub[sub.channel]
        if not hub:
            del _HUBS[self._hub_key]

    async def notify(self, channel: str, payload: str) -> None:
        check_channel(channel, payload)
        for sub in list(self._hub.get(channel, ())):
            sub.deliver(payload)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for sub in list(self._subs):
            sub.fail(None)
        async with self._lock:
            if self._reader is not self._writer:
                await self._reader.close()
            await self._writer.close()
