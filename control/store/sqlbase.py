"""What a SQL back-end supplies: three statement primitives and two dialect snippets.

The shared SQL (``control/store/calllog.py``, ``control/store/sql.py``) is written once with
``?`` placeholders and runs only through these, so a back-end is a driver, a connection policy,
an error mapping and the little SQL the two dialects spell differently
(``control/store/sqlite.py``, ``control/store/postgres.py``).
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

from control.store.base import Store
from control.store.rows import Row


class SqlBase(Store):
    """The primitives under :class:`~control.store.sql.SqlStore`.

    Each turns driver errors into :class:`~control.store.base.Conflict` (unique),
    :class:`~control.store.base.NotFound` (the tenant reference) or
    :class:`~control.store.base.Invalid`.
    """

    # the SQL the dialects spell differently, set by each back-end
    _UTC_DAY: ClassVar[str]
    """The UTC day number (days since the epoch) of the non-negative Unix time ``{}``."""
    _CALL_TABLES: ClassVar[str]
    """A query for the names (column ``name``, sorted) of the tables that have both a
    ``tenant_id`` and a ``call_id`` column."""

    @abc.abstractmethod
    async def _fetch(self, sql: str, *args: Any) -> list[Row]: ...
    @abc.abstractmethod
    async def _fetchone(self, sql: str, *args: Any) -> Row | None: ...
    @abc.abstractmethod
    async def _execute(self, sql: str, *args: Any, what: str) -> int:
        """Run one write statement; returns the number of rows it touched."""
