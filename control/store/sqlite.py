"""SQLite back-end: embedded, one process, WAL mode, one writer.

Writes go through one connection behind an :class:`asyncio.Lock` (SQLite allows one writer at
a time anyway; queueing in-process beats spinning on ``SQLITE_BUSY``). Reads use a second,
read-only connection, which WAL lets run alongside the writer. ``:memory:`` uses a single
connection for both (a second one would open a different, empty database). ``busy_timeout``
covers the rare second process, e.g. ``migrate`` run by hand against a live file.

Statements run on the event loop's own thread first, on two more plain ``sqlite3``
connections (a reader and a writer, see :class:`_Now`): an indexed look-up or a one-row write
without fsync takes 5-30 µs there, against 30-60 µs of CPU for the round trip through
aiosqlite's thread (a queue, a thread wake-up, a callback into the loop), which made half of a
visitor's click. Nothing there may hold the loop for long: those connections have no busy
timeout, and a progress handler interrupts any statement still running after
:data:`LOOP_BUDGET` (a bulk delete or erasure, a long scan). Either way the statement runs
again the threaded way, which may wait and take its time as before, unless it had finished: in
autocommit a refused or interrupted statement is rolled back whole, but SQLite looks at the
progress handler once more after a statement has committed, so a write that counted changed
rows before its "interrupt" is done and is not run twice. The loop-thread writer never
checkpoints the WAL itself (a checkpoint ends in fsync); every :data:`CHECKPOINT_EVERY` writes
a passive checkpoint runs on the writer's thread.

Notifications are an in-process fan-out: every :class:`SqliteStore` on the same file in this
process shares one hub, and nothing crosses processes. That matches SQLite's role here (a
single control-plane process); deployments with several processes use PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sqlite3
import time
from collections.abc import AsyncIterator
from typing import Any

import aiosqlite

from control.store.base import (
    Busy,
    Conflict,
    Invalid,
    NotFound,
    StoreError,
    Subscription,
    check_channel,
    log,
)
from control.store.migrate import load_migrations, pending
from control.store.rows import Row
from control.store.sql import SqlStore

BUSY_TIMEOUT_MS = 5000
CHECKPOINT_EVERY = 1000  # loop-thread writes between two passive WAL checkpoints
LOOP_BUDGET = 0.005  # seconds a statement may run on the loop's thread before it goes threaded
PROGRESS_STEPS = 2000  # SQLite VM steps between two looks at the clock (tens of µs)
MEMORY = ":memory:"

# path (or a per-store key for :memory:) -> channel -> subscriptions
_HUBS: dict[str, dict[str, set[Subscription]]] = {}


def _create_private(path: str) -> None:
    """Create the database file owner-only (0600) if it does not exist yet: SQLite would make
    it 0644 (less the umask), and gives its ``-wal`` and ``-shm`` files the database file's
    mode, so they are owner-only too. An existing file keeps its mode."""
    if path == MEMORY or os.path.exists(path):
        return
    try:
        os.close(os.open(path, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600))
    except OSError as e:
        raise StoreError(f"cannot open SQLite database {path!r}: {e}") from e


async def _connect(path: str, *, readonly: bool) -> aiosqlite.Connection:
    if not readonly:
        _create_private(path)
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
            await _wal(conn)
            await conn.execute("PRAGMA synchronous = NORMAL")
            await conn.execute("PRAGMA secure_delete = ON")  # deleted content is zeroed
    except sqlite3.Error as e:
        await conn.close()
        raise StoreError(f"cannot open SQLite database {path!r}: {e}") from e
    return conn


async def _wal(conn: aiosqlite.Connection, tries: int = 100) -> None:
    """Switch a database to WAL mode. The switch takes an exclusive lock without calling the
    busy handler, so while other connections open the same fresh file (processes starting
    together) it can fail with "locked" at once: retry, unless it is WAL already."""
    for attempt in range(tries):
        rows = list(await conn.execute_fetchall("PRAGMA journal_mode"))
        if rows and str(rows[0][0]).lower() == "wal":
            return
        try:
            await conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as e:
            if not _locked(e) or attempt == tries - 1:
                raise
        await asyncio.sleep(0.01)


class _Now:
    """The loop-thread connections (none for ``:memory:``) and their checkpoint upkeep."""

    def __init__(self, path: str) -> None:
        self.reader = self._open(path, "PRAGMA query_only = ON")
        try:
            self.writer = self._open(
                path,
                "PRAGMA foreign_keys = ON",
                "PRAGMA synchronous = NORMAL",
                "PRAGMA secure_delete = ON",  # erasures (UPDATEs to NULL) are zeroed too
                "PRAGMA wal_autocheckpoint = 0",  # see CHECKPOINT_EVERY
            )
        except BaseException:
            self.reader.close()
            raise
        self.writes = 0
        self.checkpoint: asyncio.Task[None] | None = None
        self.deadline = 0.0  # of the statement running now (perf_counter)
        for conn in (self.reader, self.writer):
            conn.set_progress_handler(self._overdue, PROGRESS_STEPS)

    def _overdue(self) -> int:
        return int(time.perf_counter() > self.deadline)  # non-zero interrupts the statement

    def run(self, conn: sqlite3.Connection, sql: str, args: tuple[Any, ...]) -> sqlite3.Cursor:
        """Execute within :data:`LOOP_BUDGET`; the cursor's rows are to be read at once."""
        self.deadline = time.perf_counter() + LOOP_BUDGET
        return conn.execute(sql, args)

    @staticmethod
    def _open(path: str, *pragmas: str) -> sqlite3.Connection:
        """Opened off the loop (another process may be migrating: wait for it there), then
        used on the loop's thread with no busy timeout."""
        try:
            conn = sqlite3.connect(
                path,
                isolation_level=None,
                check_same_thread=False,
                timeout=BUSY_TIMEOUT_MS / 1000,
            )
        except sqlite3.Error as e:
            raise StoreError(f"cannot open SQLite database {path!r}: {e}") from e
        try:
            conn.row_factory = sqlite3.Row
            for pragma in pragmas:
                conn.execute(pragma)
            conn.execute("PRAGMA busy_timeout = 0")  # locked: step aside, never block the loop
        except sqlite3.Error as e:
            conn.close()
            raise StoreError(f"cannot open SQLite database {path!r}: {e}") from e
        return conn

    def close(self) -> None:
        self.reader.close()
        self.writer.close()


def _locked(e: BaseException) -> bool:
    """SQLITE_BUSY / SQLITE_LOCKED: another connection holds the lock."""
    return isinstance(e, sqlite3.OperationalError) and "locked" in str(e)


def _step_aside(e: BaseException) -> bool:
    """Locked, or interrupted past :data:`LOOP_BUDGET`: nothing was done, go threaded."""
    return _locked(e) or (isinstance(e, sqlite3.OperationalError) and "interrupt" in str(e))


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
    if _locked(e):  # still locked after BUSY_TIMEOUT_MS: the API answers 503, Retry-After
        log.warning("SQLite busy on %s: %s", what, msg)
        return Busy(f"the database is busy ({msg}); try again shortly")
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
    _UTC_DAY = "CAST({} / 86400 AS INTEGER)"  # CAST truncates
    # one writer: a transaction (BEGIN IMMEDIATE, under the store's lock) already runs alone,
    # its reads included
    _KEY_LOCK = None
    _CALL_TABLES = (
        "SELECT m.name AS name FROM sqlite_master AS m"
        " JOIN pragma_table_info(m.name) AS p WHERE m.type = 'table'"
        " AND p.name IN ('tenant_id', 'call_id') GROUP BY m.name"
        " HAVING count(*) = 2 ORDER BY m.name"
    )

    def __init__(
        self,
        path: str,
        writer: aiosqlite.Connection,
        reader: aiosqlite.Connection,
        now: _Now | None = None,
    ) -> None:
        self.path = path
        self._writer = writer
        self._reader = reader
        self._now = now
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
        try:
            now = None if path == MEMORY else await asyncio.to_thread(_Now, path)
        except BaseException:
            await reader.close()
            await writer.close()
            raise
        if applied:
            log.info("sqlite store %s migrated to %d", path, applied[-1])
        return cls(path, writer, reader, now)

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

    async def _run_fetch(self, sql: str, *args: Any) -> list[Row]:
        if self._tx() is not None:
            return await self._in_tx(sql, args, "query")
        rows = self._read_now(sql, args)
        if rows is None:
            rows = await asyncio.shield(self._read(sql, args))
        return rows

    async def _run_fetchone(self, sql: str, *args: Any) -> Row | None:
        if self._tx() is not None:
            found = await self._in_tx(sql, args, "query")
            return found[0] if found else None
        rows = self._read_now(sql, args)
        if rows is None:
            rows = await asyncio.shield(self._read(sql, args))
        return rows[0] if rows else None

    async def _write(self, sql: str, args: tuple[Any, ...], what: str) -> int:
        async with self._lock:
            try:
                async with self._writer.execute(sql, args) as cur:
                    return int(cur.rowcount)
            except _ERRORS as e:
                raise _map_error(e, what) from e

    async def _run_execute(self, sql: str, *args: Any, what: str) -> int:
        if self._tx() is not None:
            return await self._write_in_tx(sql, args, what)
        if self._now is not None:
            async with self._lock:
                n = self._write_now(sql, args, what)
            if n is not None:
                return n
        return await asyncio.shield(self._write(sql, args, what))

    # transactions: on the threaded writer, which they hold (the lock) from BEGIN to the end
    @contextlib.asynccontextmanager
    async def _begin(self) -> AsyncIterator[aiosqlite.Connection]:
        if self._closed:
            raise StoreError("the store is closed")
        async with self._lock:
            await self._control("BEGIN IMMEDIATE")
            try:
                yield self._writer
            except BaseException:
                with contextlib.suppress(StoreError):
                    await asyncio.shield(self._control("ROLLBACK"))
                raise
            try:
                await asyncio.shield(self._control("COMMIT"))
            except StoreError:
                with contextlib.suppress(StoreError):
                    await asyncio.shield(self._control("ROLLBACK"))
                raise

    async def _control(self, sql: str) -> None:
        try:
            async with self._writer.execute(sql):
                pass
        except _ERRORS as e:
            raise _map_error(e, "transaction") from e

    async def _in_tx(self, sql: str, args: tuple[Any, ...], what: str) -> list[Row]:
        """A query of this task's transaction (it sees the transaction's own writes)."""
        try:
            async with self._writer.execute(sql, args) as cur:
                return list(await cur.fetchall())
        except _ERRORS as e:
            raise _map_error(e, what) from e

    async def _write_in_tx(self, sql: str, args: tuple[Any, ...], what: str) -> int:
        """A write of this task's transaction; the rows it touched."""
        try:
            async with self._writer.execute(sql, args) as cur:
                return int(cur.rowcount)
        except _ERRORS as e:
            raise _map_error(e, what) from e

    # the loop-thread path (see the module's docstring); None: locked, go threaded
    def _read_now(self, sql: str, args: tuple[Any, ...]) -> list[Row] | None:
        now = self._now
        if now is None:
            return None
        try:
            cur = now.run(now.reader, sql, args)
            try:
                return cur.fetchall()
            finally:
                cur.close()
        except _ERRORS as e:
            if _step_aside(e):
                return None
            raise _map_error(e, "query") from e

    def _write_now(self, sql: str, args: tuple[Any, ...], what: str) -> int | None:
        now = self._now
        if now is None or self._closed:
            return None
        before = now.writer.total_changes
        try:
            cur = now.run(now.writer, sql, args)
            try:
                n = int(cur.rowcount)
            finally:
                cur.close()
        except _ERRORS as e:
            if not _step_aside(e):
                raise _map_error(e, what) from e
            # SQLite also calls the progress handler once more after a statement has finished
            # (and in autocommit, committed): an "interrupted" statement may have done its work.
            # A finished one counted its rows; one that was rolled back counted none, and one
            # that changed no row is safe to run again (nothing else writes in between: the
            # store's lock is held).
            done = now.writer.total_changes - before
            if done <= 0:
                return None
            n = done
        now.writes += 1
        if now.writes >= CHECKPOINT_EVERY and now.checkpoint is None:
            now.writes = 0
            now.checkpoint = asyncio.get_running_loop().create_task(self._checkpoint(now))
        return n

    async def _checkpoint(self, now: _Now) -> None:
        """A passive checkpoint (it waits for no reader or writer) on the writer's thread."""
        try:
            await self._writer.execute_fetchall("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error as e:
            log.warning("SQLite WAL checkpoint failed: %s", e)
        finally:
            now.checkpoint = None

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
            now, self._now = self._now, None
            if now is not None:
                if now.checkpoint is not None:
                    await asyncio.gather(now.checkpoint, return_exceptions=True)
                now.close()
            if self._reader is not self._writer:
                await self._reader.close()
            await self._writer.close()
