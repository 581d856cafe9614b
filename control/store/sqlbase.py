"""What a SQL back-end supplies: three statement primitives.

The shared SQL (``control/store/calllog.py``, ``control/store/sql.py``) is written once with
``?`` placeholders and runs only through these, so a back-end is a driver, a connection policy
and an error mapping (``control/store/sqlite.py``, ``control/store/postgres.py``).
"""

from __future__ import annotations

import abc
from typing import Any

from control.store.base import Store
from control.store.rows import Row


class SqlBase(Store):
    """The primitives under :class:`~control.store.sql.SqlStore`.

    Each turns driver errors into :class:`~control.store.base.Conflict` (unique),
    :class:`~control.store.base.NotFound` (the tenant reference) or
    :class:`~control.store.base.Invalid`.
    """

    @abc.abstractmethod
    async def _fetch(self, sql: str, *args: Any) -> list[Row]: ...
    @abc.abstractmethod
    async def _fetchone(self, sql: str, *args: Any) -> Row | None: ...
    @abc.abstractmethod
    async def _execute(self, sql: str, *args: Any, what: str) -> int:
        """Run one write statement; returns the number of rows it touched."""
