"""PostgreSQL back-end: an asyncpg pool, for several control-plane processes on one database.

Queries are the shared ones of :class:`control.store.sql.SqlStore`, with ``?`` placeholders turned
into ``$n``. JSON columns are ``jsonb`` (sent and read as text). Nothing a process must share
lives in the process: "first answer wins" is one conditional UPDATE, and notifications use
LISTEN/NOTIFY on one dedicated connection per store (not from the pool, since a pooled
connection is handed to other work between queries).

Migrations take a transaction-level advisory lock, so processes starting together on a fresh
database apply them once.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg  # type: ignore[import-untyped]

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

POOL_MIN = 1
POOL_MAX = 10
CONNECT_TIMEOUT = 10.0
# a row or table lock held longer than this fails the waiting statement (55P03) instead of
# parking the request until the client gives up: the API answers 503 with Retry-After, as
# for SQLite's busy timeout (control.store.sqlite.BUSY_TIMEOUT_MS, the same 5 s)
LOCK_TIMEOUT_MS = 5000
MIGRATION_LOCK = 0x636C6B63  # "clkc": the advisory lock key migrations take

_SQL: dict[str, str] = {}


def _pg(sql: str) -> str:
    """``?`` placeholders to ``$1..$n`` (the shared SQL has no ``?`` inside literals)."""
    out = _SQL.get(sql)
    if out is None:
        n = 0

        def number(_: re.Match[str]) -> str:
            nonlocal n
            n += 1
            return f"${n}"

        out = _SQL[sql] = re.sub(r"\?", number, sql)
    return out


_CONNECT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
)


async def _migrate(conn: Any) -> list[int]:
    migrations = load_migrations("postgres")
    try:
        async with conn.transaction():
            # a process starting beside one that is migrating waits for it, however long
            await conn.execute("SET LOCAL lock_timeout = 0")
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY,"
                " name text NOT NULL, applied_at double precision NOT NULL)"
            )
            applied = {
                int(r["version"]) for r in await conn.fetch("SELECT version FROM schema_migrations")
            }
            todo = pending(migrations, applied, "postgres")
            for m in todo:
                log.info("applying postgres migration %04d_%s", m.version, m.name)
                await conn.execute(m.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                    m.version,
                    m.name,
                    time.time(),
                )
    except (asyncpg.PostgresError, asyncpg.InterfaceError) as e:
        raise StoreError(f"PostgreSQL migration failed: {e}") from e
    return [m.version for m in todo]


async def migrate_dsn(dsn: str) -> list[int]:
    try:
        conn = await asyncpg.connect(dsn, timeout=CONNECT_TIMEOUT)
    except _CONNECT_ERRORS as e:
        raise StoreError(f"cannot connect to PostgreSQL: {e}") from e
    try:
        return await _migrate(conn)
    finally:
        await conn.close()


# another transaction held what this one needed: worth trying again shortly, not a fault
_BUSY = (
    asyncpg.LockNotAvailableError,  # 55P03: lock_timeout
    asyncpg.DeadlockDetectedError,  # 40P01
    asyncpg.SerializationError,  # 40001
)


def _map_error(e: Exception, what: str) -> StoreError:
    if isinstance(e, _BUSY):
        log.warning("PostgreSQL busy on %s: %s", what, e)
        return Busy(f"the database is busy ({e.sqlstate}); try again shortly")
    if isinstance(e, asyncpg.UniqueViolationError):
        m = re.search(r"Key \((.*?)\)=", getattr(e, "detail", None) or "")
        return Conflict(f"a {what} with this {m.group(1) if m else 'id'} already exists")
    if isinstance(e, asyncpg.ForeignKeyViolationError):
        return NotFound(f"unknown tenant for this {what}")
    if isinstance(
        e,
        asyncpg.IntegrityConstraintViolationError
        | asyncpg.DataError
        | asyncpg.exceptions._base.DataError
        | OverflowError
        | TypeError,
    ):
        return Invalid(f"invalid value for a {what}: {e}")
    log.error("PostgreSQL error on %s: %s", what, e)
    return StoreError(f"database error: {e}")


_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, OverflowError, TypeError)


class PostgresStore(SqlStore):
    backend = "postgres"
    _UTC_DAY = "CAST(floor({} / 86400) AS BIGINT)"  # CAST rounds: floor first
    _KEY_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended(?, 0))"  # until commit/rollback
    _CALL_TABLES = (
        "SELECT table_name AS name FROM information_schema.columns"
        " WHERE table_schema = current_schema()"
        " AND column_name IN ('tenant_id', 'call_id') GROUP BY table_name"
        " HAVING count(*) = 2 ORDER BY table_name"
    )

    def __init__(self, dsn: str, pool: Any) -> None:
        self._dsn = dsn
        self._pool = pool
        self._listener: Any = None  # the dedicated LISTEN connection, opened on first listen
        self._channels: dict[str, set[Subscription]] = {}
        self._listen_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    @classmethod
    async def open(cls, dsn: str) -> PostgresStore:
        try:
            pool = await asyncpg.create_pool(
                dsn,
                min_size=POOL_MIN,
                max_size=POOL_MAX,
                timeout=CONNECT_TIMEOUT,
                server_settings={"lock_timeout": str(LOCK_TIMEOUT_MS)},
            )
        except _CONNECT_ERRORS as e:
            raise StoreError(f"cannot connect to PostgreSQL: {e}") from e
        try:
            async with pool.acquire() as conn:
                applied = await _migrate(conn)
        except BaseException:
            await pool.close()
            raise
        if applied:
            log.info("postgres store migrated to %d", applied[-1])
        return cls(dsn, pool)

    # primitives (on the transaction's connection while this task is in one)
    @contextlib.asynccontextmanager
    async def _begin(self) -> AsyncIterator[Any]:
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                yield conn
        except _ERRORS as e:
            raise _map_error(e, "transaction") from e

    async def _run_fetch(self, sql: str, *args: Any) -> list[Row]:
        try:
            return list(await (self._tx() or self._pool).fetch(_pg(sql), *args))
        except _ERRORS as e:
            raise _map_error(e, "query") from e

    async def _run_fetchone(self, sql: str, *args: Any) -> Row | None:
        try:
            return await (self._tx() or self._pool).fetchrow(_pg(sql), *args)
        except _ERRORS as e:
            raise _map_error(e, "query") from e

    async def _run_execute(self, sql: str, *args: Any, what: str) -> int:
        try:
            status = await (self._tx() or self._pool).execute(_pg(sql), *args)
        except _ERRORS as e:
            raise _map_error(e, what) from e
        # "INSERT 0 1", "UPDATE 1", "DELETE 0": the row count is the last word
        return int(str(status).rsplit(" ", 1)[-1])

    # privacy: the audit log's trigger lets a DELETE through only in a transaction that
    # set clickacall.audit_purge (SET LOCAL: it ends with the transaction)
    async def _delete_audit(self, tenant_id: str, cutoff: float) -> int:
        # in the caller's transaction when there is one (a purge and its audit entry are one),
        # and the trigger's permission only around this statement
        async with self.transaction():
            conn = self._tx()
            assert conn is not None  # in the transaction just joined or begun
            try:
                await conn.execute("SET LOCAL clickacall.audit_purge = 'on'")
                status = await conn.execute(
                    "DELETE FROM audit_log WHERE tenant_id = $1 AND at < $2",
                    tenant_id,
                    float(cutoff),
                )
                await conn.execute("SET LOCAL clickacall.audit_purge = 'off'")
            except _ERRORS as e:
                raise _map_error(e, "audit entry") from e
        return int(str(status).rsplit(" ", 1)[-1])

    # notifications: LISTEN/NOTIFY
    async def _listen_conn(self) -> Any:
        if self._listener is None or self._listener.is_closed():
            try:
                conn = await asyncpg.connect(self._dsn, timeout=CONNECT_TIMEOUT)
            except _CONNECT_ERRORS as e:
                raise StoreError(f"cannot open the notification connection: {e}") from e
            conn.add_termination_listener(self._on_lost)
            self._listener = conn
        return self._listener

    async def listen(self, channel: str) -> Subscription:
        check_channel(channel)
        async with self._listen_lock:
            if self._closed:
                raise StoreError("the store is closed")
            conn = await self._listen_conn()
            subs = self._channels.get(channel)
            if subs is None:
                try:
                    await conn.add_listener(channel, self._on_notify)
                except _ERRORS as e:
                    raise StoreError(f"cannot listen on {channel!r}: {e}") from e
                subs = self._channels[channel] = set()
            sub = Subscription(channel, self._unsubscribe)
            subs.add(sub)
        return sub

    def _on_notify(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        for sub in list(self._channels.get(channel, ())):
            sub.deliver(payload)

    def _on_lost(self, conn: Any) -> None:
        if conn is not self._listener:
            return
        self._listener = None
        channels, self._channels = self._channels, {}
        if not self._closed:
            log.warning("lost the PostgreSQL notification connection; ending subscriptions")
        for subs in channels.values():
            for sub in list(subs):
                sub.fail(StoreError("lost the notification connection; subscribe again"))

    def _unsubscribe(self, sub: Subscription) -> None:
        subs = self._channels.get(sub.channel)
        if subs is None:
            return
        subs.discard(sub)
        if not subs and not self._closed:
            task = asyncio.get_running_loop().create_task(self._unlisten(sub.channel))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _unlisten(self, channel: str) -> None:
        async with self._listen_lock:
            subs = self._channels.get(channel)
            if subs or subs is None or self._listener is None:
                return  # re-subscribed meanwhile, or already gone
            del self._channels[channel]
            try:
                await self._listener.remove_listener(channel, self._on_notify)
            except _ERRORS as e:
                log.warning("could not UNLISTEN %r: %s", channel, e)

    async def notify(self, channel: str, payload: str) -> None:
        check_channel(channel, payload)
        await self._execute("SELECT pg_notify(?, ?)", channel, payload, what="notification")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for subs in list(self._channels.values()):
            for sub in list(subs):
                sub.fail(None)
        self._channels.clear()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        async with self._listen_lock:
            if self._listener is not None:
                listener, self._listener = self._listener, None
                await listener.close()
        await self._pool.close()
