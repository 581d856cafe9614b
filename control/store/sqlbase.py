"""What a SQL back-end supplies: three statement primitives and two dialect snippets.

The shared SQL (``control/store/calllog.py``, ``control/store/sql.py``) is written once with
``?`` placeholders and runs only through :meth:`SqlBase._fetch`, :meth:`SqlBase._fetchone` and
:meth:`SqlBase._execute`, so a back-end is a driver, a connection policy, an error mapping and
the little SQL the two dialects spell differently (``control/store/sqlite.py``,
``control/store/postgres.py``).

Those three time each statement for the observer :meth:`Store.observe_statements` set, if any,
and hand it to the back-end's ``_run_*`` method; so every statement is observed, whichever
back-end runs it and whichever record operation asked for it.
"""

from __future__ import annotations

import abc
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from contextvars import ContextVar
from typing import Any, ClassVar

from control.store.base import Store
from control.store.rows import Row

# The transaction the running task is in: (the store, the back-end's connection). A context
# variable, so it belongs to the task that opened it and statements of other tasks never run in it.
_TX: ContextVar[tuple[SqlBase, Any] | None] = ContextVar("clickacall_store_tx", default=None)


class SqlBase(Store):
    """The primitives under :class:`~control.store.sql.SqlStore`.

    A back-end implements ``_run_fetch``, ``_run_fetchone`` and ``_run_execute``; each turns
    driver errors into :class:`~control.store.base.Conflict` (unique),
    :class:`~control.store.base.NotFound` (the tenant reference) or
    :class:`~control.store.base.Invalid`.
    """

    # the SQL the dialects spell differently, set by each back-end
    _UTC_DAY: ClassVar[str]
    """The UTC day number (days since the epoch) of the non-negative Unix time ``{}``."""
    _CALL_TABLES: ClassVar[str]
    """A query for the names (column ``name``, sorted) of the tables that have both a
    ``tenant_id`` and a ``call_id`` column."""
    _KEY_LOCK: ClassVar[str | None]
    """A statement that holds a lock on its one argument, a key string, until the transaction
    ends; None where a transaction already runs alone (SQLite's one writer)."""

    @abc.abstractmethod
    async def _run_fetch(self, sql: str, *args: Any) -> list[Row]: ...
    @abc.abstractmethod
    async def _run_fetchone(self, sql: str, *args: Any) -> Row | None: ...
    @abc.abstractmethod
    async def _run_execute(self, sql: str, *args: Any, what: str) -> int:
        """Run one write statement; returns the number of rows it touched."""

    @abc.abstractmethod
    def _begin(self) -> AbstractAsyncContextManager[Any]:
        """A transaction on one connection, committed on exit, rolled back on an error; the
        connection is what ``_run_*`` use for this task's statements meanwhile."""

    def _tx(self) -> Any | None:
        """The connection of the transaction this task is in on this store, or None."""
        tx = _TX.get()
        return tx[1] if tx is not None and tx[0] is self else None

    def transaction(self) -> AbstractAsyncContextManager[None]:
        return self._transaction()

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[None]:
        if self._tx() is not None:  # already in one: join it
            yield
            return
        async with self._begin() as conn:
            mark = _TX.set((self, conn))
            try:
                yield
            finally:
                _TX.reset(mark)

    # the statements, observed (written out three times, not through a helper: no extra
    # coroutine per statement)
    async def _fetch(self, sql: str, *args: Any) -> list[Row]:
        observer = self._statement_observer
        if observer is None:
            return await self._run_fetch(sql, *args)
        start = time.perf_counter()
        failed = True
        try:
            rows = await self._run_fetch(sql, *args)
            failed = False
            return rows
        finally:
            observer("read", time.perf_counter() - start, failed)

    async def _fetchone(self, sql: str, *args: Any) -> Row | None:
        observer = self._statement_observer
        if observer is None:
            return await self._run_fetchone(sql, *args)
        start = time.perf_counter()
        failed = True
        try:
            row = await self._run_fetchone(sql, *args)
            failed = False
            return row
        finally:
            observer("read", time.perf_counter() - start, failed)

    async def _execute(self, sql: str, *args: Any, what: str) -> int:
        """Run one write statement; returns the number of rows it touched."""
        observer = self._statement_observer
        if observer is None:
            return await self._run_execute(sql, *args, what=what)
        start = time.perf_counter()
        failed = True
        try:
            n = await self._run_execute(sql, *args, what=what)
            failed = False
            return n
        finally:
            observer("write", time.perf_counter() - start, failed)
