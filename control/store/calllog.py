"""Pages of a tenant's calls, call quality, and usage: the queries behind call logs.

:meth:`list_calls` and :meth:`list_call_log` run one query, :class:`CallQuery`: newest first
by ``(created_at, id)``, keyset-paged with an opaque cursor, so calls created while a client
pages never shift or repeat items. Relay summaries become one ``call_quality`` row per allocation,
folded into one ``call_stats`` row per call (``control/quality.py``); usage groups calls by UTC
day in the database and leaves weeks and months to Python.
"""

from __future__ import annotations

from dataclasses import dataclass

from control.ids import MAX_PAGE
from control.models import CallStatus
from control.quality import AllocationQuality, CallStats, Usage, call_stats
from control.store.base import CallLogPage, CallPage, Invalid
from control.store.rows import (
    STATS_SELECT,
    Row,
    as_call,
    as_quality,
    as_stats,
    as_usage,
    opt_float,
    quality_values,
    stats_values,
)
from control.store.sqlbase import SqlBase


def encode_cursor(created_at: float, call_id: str) -> str:
    return f"{float(created_at)!r}~{call_id}"


def decode_cursor(cursor: str) -> tuple[float, str]:
    ts, sep, call_id = cursor.partition("~")
    try:
        if not sep or not call_id:
            raise ValueError(cursor)
        return float(ts), call_id
    except ValueError:
        raise Invalid("malformed page cursor") from None


@dataclass(frozen=True, slots=True)
class CallQuery:
    """One page of one tenant's calls (table alias ``c``), newest first by
    ``(created_at, id)``: the query behind both :meth:`CallLogSql.list_calls` and
    :meth:`CallLogSql.list_call_log`.

    A filter left None does not apply. ``cursor`` resumes after the last call of the previous
    page (keyset pagination). ``stats`` adds each call's ``call_stats`` row, LEFT JOINed as
    ``s`` and selected as :data:`~control.store.rows.STATS_SELECT`; ``mos_below`` filters on
    that row (so calls without one are left out), joining it even when ``stats`` is False.
    """

    tenant_id: str
    status: CallStatus | None = None
    since: float | None = None
    until: float | None = None
    link_id: str | None = None
    staff_id: str | None = None  # who answered
    mos_below: float | None = None
    limit: int = 100
    cursor: str | None = None
    stats: bool = False

    def sql(self) -> tuple[str, list[object]]:
        """The statement, fetching one row past the page (:meth:`page` tells from it whether
        there is more), and its arguments; :class:`Invalid` for a bad limit or cursor."""
        if not 1 <= self.limit <= MAX_PAGE:
            raise Invalid(f"limit must be 1-{MAX_PAGE}")
        where = ["c.tenant_id = ?"]
        args: list[object] = [self.tenant_id]
        for cond, value in (
            ("c.status = ?", None if self.status is None else str(CallStatus(self.status))),
            ("c.created_at >= ?", opt_float(self.since)),
            ("c.created_at < ?", opt_float(self.until)),
            ("c.link_id = ?", self.link_id),
            ("c.answered_by = ?", self.staff_id),
        ):
            if value is not None:
                where.append(cond)
                args.append(value)
        if self.cursor is not None:
            ts, last_id = decode_cursor(self.cursor)
            where.append("(c.created_at < ? OR (c.created_at = ? AND c.id < ?))")
            args += [ts, ts, last_id]
        if self.mos_below is not None:
            where.append("s.mos < ?")
            args.append(float(self.mos_below))
        select = f"c.*, {STATS_SELECT}" if self.stats else "c.*"
        joined = self.stats or self.mos_below is not None
        join = (
            " LEFT JOIN call_stats s ON s.tenant_id = c.tenant_id AND s.call_id = c.id"
            if joined
            else ""
        )
        return (
            f"SELECT {select} FROM calls c{join} WHERE {' AND '.join(where)}"
            f" ORDER BY c.created_at DESC, c.id DESC LIMIT {self.limit + 1}",
            args,
        )

    def page(self, rows: list[Row]) -> tuple[list[Row], str | None]:
        """The page's rows out of those :meth:`sql` fetched, and the cursor of the next page
        (None: this is the last)."""
        if len(rows) <= self.limit:
            return rows, None
        last = rows[self.limit - 1]
        return rows[: self.limit], encode_cursor(last["created_at"], last["id"])


class CallLogSql(SqlBase):
    """The call-log half of :class:`~control.store.sql.SqlStore`."""

    # pages of calls
    async def list_calls(
        self,
        tenant_id: str,
        status: CallStatus | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> CallPage:
        q = CallQuery(
            tenant_id, status=status, since=since, until=until, limit=limit, cursor=cursor
        )
        rows, next_cursor = await self._call_page(q)
        return CallPage([as_call(r) for r in rows], next_cursor)

    async def list_call_log(
        self,
        tenant_id: str,
        *,
        status: CallStatus | None = None,
        since: float | None = None,
        until: float | None = None,
        link_id: str | None = None,
        staff_id: str | None = None,
        mos_below: float | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> CallLogPage:
        q = CallQuery(
            tenant_id,
            status=status,
            since=since,
            until=until,
            link_id=link_id,
            staff_id=staff_id,
            mos_below=mos_below,
            limit=limit,
            cursor=cursor,
            stats=True,
        )
        rows, next_cursor = await self._call_page(q)
        return CallLogPage([(as_call(r), as_stats(r)) for r in rows], next_cursor)

    async def _call_page(self, q: CallQuery) -> tuple[list[Row], str | None]:
        sql, args = q.sql()
        return q.page(await self._fetch(sql, *args))

    # call quality
    async def summary_seq(self, node_id: str) -> int:
        r = await self._fetchone("SELECT last_seq FROM node_summaries WHERE node_id = ?", node_id)
        return 0 if r is None else int(r["last_seq"])

    async def claim_summary(self, node_id: str, seq: int, stored: bool, at: float) -> bool:
        n = await self._execute(
            "INSERT INTO node_summaries (node_id, last_seq, stored, dropped, updated_at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (node_id) DO UPDATE SET"
            " last_seq = excluded.last_seq, stored = node_summaries.stored + excluded.stored,"
            " dropped = node_summaries.dropped + excluded.dropped,"
            " updated_at = excluded.updated_at WHERE node_summaries.last_seq < excluded.last_seq",
            node_id,
            int(seq),
            int(stored),
            int(not stored),
            float(at),
            what="summary",
        )
        return n > 0

    async def save_quality(self, record: AllocationQuality) -> bool:
        values = quality_values(record)
        cols = list(values)
        keys = {"tenant_id", "call_id", "node_id", "token_id", "allocation"}
        sets = ", ".join(f"{c} = excluded.{c}" for c in cols if c not in keys)
        n = await self._execute(
            f"INSERT INTO call_quality ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
            f" ON CONFLICT (node_id, token_id, allocation) DO UPDATE SET {sets}"
            " WHERE call_quality.seq < excluded.seq AND NOT call_quality.final",
            *values.values(),
            what="call",
        )
        return n > 0

    async def list_quality(self, tenant_id: str, call_id: str) -> list[AllocationQuality]:
        rows = await self._fetch(
            "SELECT * FROM call_quality WHERE tenant_id = ? AND call_id = ?"
            " ORDER BY started_at, node_id, allocation",
            tenant_id,
            call_id,
        )
        return [as_quality(r) for r in rows]

    async def refresh_call_stats(self, tenant_id: str, call_id: str, at: float) -> CallStats | None:
        stats = call_stats(await self.list_quality(tenant_id, call_id), at)
        if stats is None:
            return None
        values = stats_values(stats)
        cols = list(values)
        sets = ", ".join(f"{c} = excluded.{c}" for c in cols[2:])
        await self._execute(
            f"INSERT INTO call_stats ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
            f" ON CONFLICT (tenant_id, call_id) DO UPDATE SET {sets}",
            *values.values(),
            what="call",
        )
        return stats

    async def get_call_stats(self, tenant_id: str, call_id: str) -> CallStats | None:
        r = await self._fetchone(
            f"SELECT {STATS_SELECT} FROM call_stats s WHERE s.tenant_id = ? AND s.call_id = ?",
            tenant_id,
            call_id,
        )
        return None if r is None else as_stats(r)

    # usage
    async def usage(
        self, tenant_id: str, since: float, until: float, by: str | None = None
    ) -> list[Usage]:
        keys = {None: None, "link": "c.link_id", "staff": "c.answered_by"}
        if by not in keys:
            raise Invalid(f"cannot group usage by {by!r}")
        return await self._usage("c.tenant_id = ? AND ", [tenant_id], since, until, keys[by])

    async def regional_usage(self, since: float, until: float) -> list[Usage]:
        return await self._usage("", [], since, until, "c.relay_region")

    async def _usage(
        self, where: str, args: list[object], since: float, until: float, key: str | None
    ) -> list[Usage]:
        day = self._UTC_DAY.format("c.created_at")
        rows = await self._fetch(
            f"SELECT {day} AS day, {key or 'NULL'} AS grp, count(*) AS calls,"
            " sum(CASE WHEN c.answered_at IS NOT NULL THEN 1 ELSE 0 END) AS answered,"
            " sum(CASE WHEN c.answered_at IS NOT NULL AND c.ended_at IS NOT NULL"
            " THEN c.ended_at - c.answered_at ELSE 0 END) AS seconds,"
            " sum(COALESCE(s.bytes, 0)) AS bytes, sum(COALESCE(s.mos, 0)) AS mos_sum,"
            " count(s.mos) AS mos_calls"
            " FROM calls c LEFT JOIN call_stats s ON s.tenant_id = c.tenant_id AND s.call_id = c.id"
            f" WHERE {where}c.created_at >= ? AND c.created_at < ?"
            f" GROUP BY {day}{', ' + key if key else ''}",
            *args,
            float(since),
            float(until),
        )
        return [as_usage(r) for r in rows]
