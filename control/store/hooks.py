"""Webhooks' records, written once for both back-ends: a tenant's endpoints and the durable
delivery queue (one row per event and endpoint, kept until delivered or given up).

A delivery is taken by one worker at a time with a lease: :meth:`HookSql.claim_delivery` moves
its ``next_attempt_at`` past the attempt's timeout only if nobody moved it meanwhile (one
conditional UPDATE), so two processes sharing a PostgreSQL database never send one delivery
twice at once, and a process that dies mid-attempt leaves a delivery that is due again once
its lease runs out. Nothing is lost on a restart: the queue is these rows.
"""

from __future__ import annotations

from typing import Any

from control.ids import MAX_PAGE
from control.models import Delivery, DeliveryState, Hook
from control.store.base import Invalid
from control.store.calllog import decode_cursor, encode_cursor
from control.store.rows import Row, from_json, opt_float, to_json
from control.store.sqlbase import SqlBase


def as_hook(r: Row) -> Hook:
    return Hook(
        id=r["id"],
        tenant_id=r["tenant_id"],
        url=r["url"],
        events=[str(e) for e in from_json(r["events"])],
        secret=r["secret"],
        prev_secret=r["prev_secret"],
        prev_until=opt_float(r["prev_until"]),
        include_visitor=bool(r["include_visitor"]),
        active=bool(r["active"]),
        created_at=float(r["created_at"]),
    )


def as_delivery(r: Row) -> Delivery:
    return Delivery(
        id=r["id"],
        tenant_id=r["tenant_id"],
        endpoint_id=r["endpoint_id"],
        event=r["event"],
        payload=r["payload"],
        call_id=r["call_id"],
        personal=bool(r["personal"]),
        state=DeliveryState(r["state"]),
        attempts=int(r["attempts"]),
        next_attempt_at=float(r["next_attempt_at"]),
        last_status=None if r["last_status"] is None else int(r["last_status"]),
        last_error=r["last_error"],
        last_error_code=r["last_error_code"],
        last_error_params=dict(from_json(r["last_error_params"]) or {}),
        created_at=float(r["created_at"]),
        queued_at=float(r["queued_at"]),
        done_at=opt_float(r["done_at"]),
    )


def _params(d: Delivery) -> str | None:
    """``last_error_params`` as stored: a JSON object with the code, NULL without one."""
    return None if d.last_error_code is None else to_json(d.last_error_params)


class HookSql(SqlBase):
    """The webhooks' statements (mixed into :class:`~control.store.sql.SqlStore`)."""

    # endpoints
    async def create_hook(self, hook: Hook) -> None:
        await self._execute(
            "INSERT INTO webhook_endpoints (tenant_id, id, url, events, secret, prev_secret,"
            " prev_until, include_visitor, active, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            *self._hook_values(hook),
            what="webhook endpoint",
        )

    @staticmethod
    def _hook_values(hook: Hook) -> list[Any]:
        return [
            hook.tenant_id,
            hook.id,
            hook.url,
            to_json(list(hook.events)),
            hook.secret,
            hook.prev_secret,
            opt_float(hook.prev_until),
            bool(hook.include_visitor),
            bool(hook.active),
            float(hook.created_at),
        ]

    async def get_hook(self, tenant_id: str, hook_id: str) -> Hook | None:
        r = await self._fetchone(
            "SELECT * FROM webhook_endpoints WHERE tenant_id = ? AND id = ?", tenant_id, hook_id
        )
        return None if r is None else as_hook(r)

    async def list_hooks(self, tenant_id: str) -> list[Hook]:
        rows = await self._fetch(
            "SELECT * FROM webhook_endpoints WHERE tenant_id = ? ORDER BY created_at, id",
            tenant_id,
        )
        return [as_hook(r) for r in rows]

    async def count_hooks(self, tenant_id: str) -> int:
        r = await self._fetchone(
            "SELECT count(*) AS n FROM webhook_endpoints WHERE tenant_id = ?", tenant_id
        )
        return 0 if r is None else int(r["n"])

    async def update_hook(self, hook: Hook) -> bool:
        n = await self._execute(
            "UPDATE webhook_endpoints SET url = ?, events = ?, secret = ?, prev_secret = ?,"
            " prev_until = ?, include_visitor = ?, active = ? WHERE tenant_id = ? AND id = ?",
            hook.url,
            to_json(list(hook.events)),
            hook.secret,
            hook.prev_secret,
            opt_float(hook.prev_until),
            bool(hook.include_visitor),
            bool(hook.active),
            hook.tenant_id,
            hook.id,
            what="webhook endpoint",
        )
        return n > 0

    async def delete_hook(self, tenant_id: str, hook_id: str) -> bool:
        async with self.transaction():
            await self._execute(
                "DELETE FROM webhook_deliveries WHERE tenant_id = ? AND endpoint_id = ?",
                tenant_id,
                hook_id,
                what="webhook delivery",
            )
            n = await self._execute(
                "DELETE FROM webhook_endpoints WHERE tenant_id = ? AND id = ?",
                tenant_id,
                hook_id,
                what="webhook endpoint",
            )
        return n > 0

    # the queue
    async def add_deliveries(self, deliveries: list[Delivery]) -> None:
        for d in deliveries:
            await self._execute(
                "INSERT INTO webhook_deliveries (tenant_id, id, endpoint_id, call_id, event,"
                " payload, personal, state, attempts, next_attempt_at, last_status, last_error,"
                " last_error_code, last_error_params, created_at, queued_at, done_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                d.tenant_id,
                d.id,
                d.endpoint_id,
                d.call_id,
                d.event,
                d.payload,
                bool(d.personal),
                str(d.state),
                int(d.attempts),
                float(d.next_attempt_at),
                d.last_status,
                d.last_error,
                d.last_error_code,
                _params(d),
                float(d.created_at),
                float(d.queued_at),
                opt_float(d.done_at),
                what="webhook delivery",
            )

    async def count_pending(self, tenant_id: str | None = None) -> int:
        """Deliveries still to make: the tenant's, or everyone's (None)."""
        if tenant_id is None:
            r = await self._fetchone(
                "SELECT count(*) AS n FROM webhook_deliveries WHERE state = ?", "pending"
            )
        else:
            r = await self._fetchone(
                "SELECT count(*) AS n FROM webhook_deliveries WHERE tenant_id = ? AND state = ?",
                tenant_id,
                "pending",
            )
        return 0 if r is None else int(r["n"])

    async def due_deliveries(self, now: float, limit: int) -> list[Delivery]:
        rows = await self._fetch(
            "SELECT * FROM webhook_deliveries WHERE state = ? AND next_attempt_at <= ?"
            f" ORDER BY next_attempt_at, id LIMIT {int(limit)}",
            "pending",
            float(now),
        )
        return [as_delivery(r) for r in rows]

    async def next_due(self) -> float | None:
        r = await self._fetchone(
            "SELECT min(next_attempt_at) AS t FROM webhook_deliveries WHERE state = ?", "pending"
        )
        return None if r is None else opt_float(r["t"])

    async def claim_delivery(self, d: Delivery, lease_until: float) -> bool:
        n = await self._execute(
            "UPDATE webhook_deliveries SET next_attempt_at = ?"
            " WHERE tenant_id = ? AND id = ? AND state = ? AND next_attempt_at = ?",
            float(lease_until),
            d.tenant_id,
            d.id,
            "pending",
            float(d.next_attempt_at),
            what="webhook delivery",
        )
        return n > 0

    async def finish_attempt(self, d: Delivery) -> bool:
        """Write the outcome of an attempt (state, attempts, next time, status, error, done)
        if the delivery is still pending (a "send again" or a deletion meanwhile wins)."""
        n = await self._execute(
            "UPDATE webhook_deliveries SET state = ?, attempts = ?, next_attempt_at = ?,"
            " last_status = ?, last_error = ?, last_error_code = ?, last_error_params = ?,"
            " done_at = ? WHERE tenant_id = ? AND id = ? AND state = ?",
            str(d.state),
            int(d.attempts),
            float(d.next_attempt_at),
            d.last_status,
            d.last_error,
            d.last_error_code,
            _params(d),
            opt_float(d.done_at),
            d.tenant_id,
            d.id,
            "pending",
            what="webhook delivery",
        )
        return n > 0

    async def get_delivery(self, tenant_id: str, delivery_id: str) -> Delivery | None:
        r = await self._fetchone(
            "SELECT * FROM webhook_deliveries WHERE tenant_id = ? AND id = ?",
            tenant_id,
            delivery_id,
        )
        return None if r is None else as_delivery(r)

    async def list_deliveries(
        self,
        tenant_id: str,
        endpoint_id: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[Delivery], str | None]:
        """The tenant's deliveries, newest first, keyset-paged; (page, next cursor)."""
        if not 1 <= limit <= MAX_PAGE:
            raise Invalid(f"limit must be 1-{MAX_PAGE}")
        where = ["tenant_id = ?"]
        args: list[Any] = [tenant_id]
        if endpoint_id is not None:
            where.append("endpoint_id = ?")
            args.append(endpoint_id)
        if cursor:
            at, key = decode_cursor(cursor)
            where.append("(created_at < ? OR (created_at = ? AND id < ?))")
            args += [at, at, key]
        rows = await self._fetch(
            f"SELECT * FROM webhook_deliveries WHERE {' AND '.join(where)}"
            f" ORDER BY created_at DESC, id DESC LIMIT {int(limit) + 1}",
            *args,
        )
        page = [as_delivery(r) for r in rows[:limit]]
        return page, (
            encode_cursor(page[-1].created_at, page[-1].id) if len(rows) > limit else None
        )

    async def requeue_delivery(self, tenant_id: str, delivery_id: str, now: float) -> bool:
        """ "Send again": pending from ``now`` with its id and payload, a fresh retry window."""
        n = await self._execute(
            "UPDATE webhook_deliveries SET state = ?, attempts = 0, next_attempt_at = ?,"
            " queued_at = ?, done_at = NULL, last_error = NULL, last_error_code = NULL,"
            " last_error_params = NULL, last_status = NULL"
            " WHERE tenant_id = ? AND id = ?",
            "pending",
            float(now),
            float(now),
            tenant_id,
            delivery_id,
            what="webhook delivery",
        )
        return n > 0

    async def forget_personal_deliveries(self, tenant_id: str, call_ids: list[str]) -> int:
        """An erasure: deliveries of these calls whose payload carried visitor details go."""
        n = 0
        for call_id in dict.fromkeys(call_ids):
            n += await self._execute(
                "DELETE FROM webhook_deliveries WHERE tenant_id = ? AND call_id = ?"
                " AND personal = ?",
                tenant_id,
                call_id,
                True,
                what="webhook delivery",
            )
        return n
