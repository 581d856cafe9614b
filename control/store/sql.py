"""The shared SQL store: every record operation, written once for both back-ends.

Statements use ``?`` placeholders and portable SQL (``INSERT ... ON CONFLICT``, ``count(*)``,
no dialect functions) and run through the primitives of :class:`~control.store.sqlbase.SqlBase`;
a back-end subclasses :class:`SqlStore` and adds its driver, notifications and whatever else
differs. Tenant isolation is structural: every statement on a tenant-owned table filters on the
``tenant_id`` the caller passed, or the one the record carries.
"""

from __future__ import annotations

import re
import time
from typing import Any

from control.ids import MAX_PAGE
from control.models import (
    MAX_RETENTION_MONTHS,
    PERSONAL_CALL_FIELDS,
    ApiKey,
    AuditEntry,
    Call,
    CallStatus,
    Link,
    Purge,
    RelayNode,
    Role,
    SessionToken,
    Staff,
    Tenant,
)
from control.store.base import (
    MAX_SIGNAL_BYTES,
    MAX_SIGNALS,
    MAX_SUBJECT_CALLS,
    Invalid,
    NotFound,
    Ringing,
    StoreError,
)
from control.store.calllog import CallLogSql
from control.store.hooks import HookSql
from control.store.rows import (
    CALL_FIXED,
    CALL_MUTABLE,
    as_audit,
    as_call,
    as_key,
    as_link,
    as_node,
    as_purge,
    as_staff,
    as_tenant,
    as_token,
    call_fixed,
    call_mutable,
    columns,
    hours_json,
    opt_float,
    plain,
    to_json,
)
from control.store.web import WebSql

_TABLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_ID_CHUNK = 500  # ids per ``IN (...)`` list


def _check_tenant(t: Tenant) -> None:
    if not 1 <= t.retention_months <= MAX_RETENTION_MONTHS:
        raise Invalid(f"retention_months must be 1-{MAX_RETENTION_MONTHS}")
    if not t.allowed_regions:
        raise Invalid("a tenant needs at least one allowed region")


class SqlStore(CallLogSql, WebSql, HookSql):
    """Every record operation, written once in portable SQL with ``?`` placeholders; the
    call-log queries come from :class:`~control.store.calllog.CallLogSql`, the web front's
    (accounts, sessions, presence, callbacks) from :class:`~control.store.web.WebSql`."""

    # tenants
    async def create_tenant(self, tenant: Tenant) -> None:
        _check_tenant(tenant)
        await self._execute(
            "INSERT INTO tenants (id, name, allowed_regions, retention_months, created_at,"
            " click_limits) VALUES (?, ?, ?, ?, ?, ?)",
            tenant.id,
            tenant.name,
            to_json(tenant.allowed_regions),
            int(tenant.retention_months),
            float(tenant.created_at),
            to_json(tenant.click_limits),
            what="tenant",
        )

    async def get_tenant(self, tenant_id: str) -> Tenant | None:
        r = await self._fetchone("SELECT * FROM tenants WHERE id = ?", tenant_id)
        return None if r is None else as_tenant(r)

    async def list_tenants(self) -> list[Tenant]:
        return [
            as_tenant(r) for r in await self._fetch("SELECT * FROM tenants ORDER BY created_at, id")
        ]

    async def update_tenant(self, tenant: Tenant) -> None:
        _check_tenant(tenant)
        n = await self._execute(
            "UPDATE tenants SET name = ?, allowed_regions = ?, retention_months = ?,"
            " click_limits = ? WHERE id = ?",
            tenant.name,
            to_json(tenant.allowed_regions),
            int(tenant.retention_months),
            to_json(tenant.click_limits),
            tenant.id,
            what="tenant",
        )
        if not n:
            raise NotFound(f"no tenant {tenant.id!r}")

    # api keys
    async def add_api_key(self, key: ApiKey) -> None:
        await self._execute(
            "INSERT INTO api_keys (id, tenant_id, key_hash, created_at, revoked_at, name)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            key.id,
            key.tenant_id,
            bytes(key.key_hash),
            float(key.created_at),
            opt_float(key.revoked_at),
            key.name,
            what="api key",
        )

    async def find_api_key(self, key_hash: bytes) -> ApiKey | None:
        r = await self._fetchone(
            "SELECT * FROM api_keys WHERE key_hash = ? AND revoked_at IS NULL", bytes(key_hash)
        )
        return None if r is None else as_key(r)

    async def list_api_keys(self, tenant_id: str) -> list[ApiKey]:
        rows = await self._fetch(
            "SELECT * FROM api_keys WHERE tenant_id = ? ORDER BY created_at, id", tenant_id
        )
        return [as_key(r) for r in rows]

    async def revoke_api_key(self, tenant_id: str, key_id: str, at: float | None = None) -> bool:
        when = float(at) if at is not None else time.time()
        n = await self._execute(
            "UPDATE api_keys SET revoked_at = ? WHERE tenant_id = ? AND id = ? AND revoked_at IS NULL",
            when,
            tenant_id,
            key_id,
            what="api key",
        )
        return n > 0

    # staff
    async def create_staff(self, staff: Staff) -> None:
        await self._execute(
            "INSERT INTO staff (tenant_id, id, name, groups, active, created_at, email,"
            " password_hash, password_changed_at, roles, presence, wrapup_until, missed_rings,"
            " seen_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            staff.tenant_id,
            staff.id,
            staff.name,
            to_json(staff.groups),
            bool(staff.active),
            float(staff.created_at),
            staff.email,
            staff.password_hash,
            opt_float(staff.password_changed_at),
            to_json(staff.roles),
            str(staff.presence),
            opt_float(staff.wrapup_until),
            int(staff.missed_rings),
            opt_float(staff.seen_at),
            what="staff member",
        )

    async def get_staff(self, tenant_id: str, staff_id: str) -> Staff | None:
        r = await self._fetchone(
            "SELECT * FROM staff WHERE tenant_id = ? AND id = ?", tenant_id, staff_id
        )
        return None if r is None else as_staff(r)

    async def list_staff(self, tenant_id: str) -> list[Staff]:
        rows = await self._fetch(
            "SELECT * FROM staff WHERE tenant_id = ? ORDER BY created_at, id", tenant_id
        )
        return [as_staff(r) for r in rows]

    async def update_staff(self, staff: Staff) -> None:
        n = await self._execute(
            "UPDATE staff SET name = ?, groups = ?, active = ? WHERE tenant_id = ? AND id = ?",
            staff.name,
            to_json(staff.groups),
            bool(staff.active),
            staff.tenant_id,
            staff.id,
            what="staff member",
        )
        if not n:
            raise NotFound(f"no staff member {staff.id!r}")

    async def delete_staff(self, tenant_id: str, staff_id: str) -> bool:
        n = await self._execute(
            "DELETE FROM staff WHERE tenant_id = ? AND id = ?",
            tenant_id,
            staff_id,
            what="staff member",
        )
        return n > 0

    # links
    async def create_link(self, link: Link) -> None:
        await self._execute(
            "INSERT INTO links (tenant_id, id, public_id, name, media, ring_staff, ring_groups,"
            " hours, ring_timeout, active, created_at, relay_only)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            link.tenant_id,
            link.id,
            link.public_id,
            link.name,
            to_json([str(m) for m in link.media]),
            to_json(link.ring_staff),
            to_json(link.ring_groups),
            hours_json(link.hours),
            float(link.ring_timeout),
            bool(link.active),
            float(link.created_at),
            bool(link.relay_only),
            what="link",
        )

    async def get_link(self, tenant_id: str, link_id: str) -> Link | None:
        r = await self._fetchone(
            "SELECT * FROM links WHERE tenant_id = ? AND id = ?", tenant_id, link_id
        )
        return None if r is None else as_link(r)

    async def get_link_by_public_id(self, public_id: str) -> Link | None:
        r = await self._fetchone("SELECT * FROM links WHERE public_id = ?", public_id)
        return None if r is None else as_link(r)

    async def list_links(self, tenant_id: str) -> list[Link]:
        rows = await self._fetch(
            "SELECT * FROM links WHERE tenant_id = ? ORDER BY created_at, id", tenant_id
        )
        return [as_link(r) for r in rows]

    async def update_link(self, link: Link) -> None:
        n = await self._execute(
            "UPDATE links SET public_id = ?, name = ?, media = ?, ring_staff = ?, ring_groups = ?,"
            " hours = ?, ring_timeout = ?, active = ?, relay_only = ? WHERE tenant_id = ? AND id = ?",
            link.public_id,
            link.name,
            to_json([str(m) for m in link.media]),
            to_json(link.ring_staff),
            to_json(link.ring_groups),
            hours_json(link.hours),
            float(link.ring_timeout),
            bool(link.active),
            bool(link.relay_only),
            link.tenant_id,
            link.id,
            what="link",
        )
        if not n:
            raise NotFound(f"no link {link.id!r}")

    async def delete_link(self, tenant_id: str, link_id: str) -> bool:
        n = await self._execute(
            "DELETE FROM links WHERE tenant_id = ? AND id = ?", tenant_id, link_id, what="link"
        )
        return n > 0

    # calls
    async def create_call(self, call: Call) -> None:
        if await self.get_link(call.tenant_id, call.link_id) is None:
            raise NotFound(f"no link {call.link_id!r}")
        cols = ["tenant_id", "id", "link_id", "created_at", *CALL_MUTABLE, *CALL_FIXED]
        await self._execute(
            f"INSERT INTO calls ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
            call.tenant_id,
            call.id,
            call.link_id,
            float(call.created_at),
            *call_mutable(call),
            *call_fixed(call),
            what="call",
        )

    async def get_call(self, tenant_id: str, call_id: str) -> Call | None:
        r = await self._fetchone(
            "SELECT * FROM calls WHERE tenant_id = ? AND id = ?", tenant_id, call_id
        )
        return None if r is None else as_call(r)

    async def count_ringing(self, tenant_id: str, link_id: str, now: float) -> Ringing:
        r = await self._fetchone(
            "SELECT COUNT(*) AS tenant_n,"
            " SUM(CASE WHEN c.link_id = ? THEN 1 ELSE 0 END) AS link_n,"
            " MIN(c.created_at + l.ring_timeout) AS tenant_frees,"
            " MIN(CASE WHEN c.link_id = ? THEN c.created_at + l.ring_timeout END) AS link_frees"
            " FROM calls c JOIN links l ON l.tenant_id = c.tenant_id AND l.id = c.link_id"
            " WHERE c.tenant_id = ? AND c.status = 'ringing'"
            " AND c.created_at > ? - l.ring_timeout",
            link_id,
            link_id,
            tenant_id,
            float(now),
        )
        if r is None:
            return Ringing(0, 0, None, None)
        return Ringing(
            int(r["link_n"] or 0),
            int(r["tenant_n"] or 0),
            opt_float(r["link_frees"]),
            opt_float(r["tenant_frees"]),
        )

    async def lock_ringing(self, tenant_id: str) -> None:
        if self._tx() is None:
            raise StoreError("lock_ringing needs a transaction")
        if self._KEY_LOCK is not None:
            await self._fetchone(self._KEY_LOCK, f"clickacall.ringing:{tenant_id}")

    async def update_call(self, call: Call, expect_status: CallStatus) -> bool:
        # the visitor's personal fields are not written here (see "privacy" in Store)
        values = dict(zip(CALL_MUTABLE, call_mutable(call), strict=True))
        cols = [c for c in CALL_MUTABLE if c not in PERSONAL_CALL_FIELDS]
        sets = ", ".join(f"{c} = ?" for c in cols)
        n = await self._execute(
            f"UPDATE calls SET {sets} WHERE tenant_id = ? AND id = ? AND status = ?",
            *[values[c] for c in cols],
            call.tenant_id,
            call.id,
            str(CallStatus(expect_status)),
            what="call",
        )
        return n > 0

    # tokens
    async def save_token(self, token: SessionToken) -> None:
        await self._execute(
            "INSERT INTO tokens (id, tenant_id, call_id, role, staff_id, issued_at, expires_at,"
            " revoked_at, parent) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            token.id,
            token.tenant_id,
            token.call_id,
            None if token.role is None else str(token.role),
            token.staff_id,
            float(token.issued_at),
            float(token.expires_at),
            opt_float(token.revoked_at),
            token.parent,
            what="session token",
        )

    async def get_token(self, token_id: str) -> SessionToken | None:
        r = await self._fetchone("SELECT * FROM tokens WHERE id = ?", token_id)
        return None if r is None else as_token(r)

    async def revoke_token(self, token_id: str, at: float) -> bool:
        n = await self._execute(
            "UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
            float(at),
            token_id,
            what="session token",
        )
        return n > 0

    async def revoked_since(self, ts: float) -> list[tuple[str, float]]:
        rows = await self._fetch(
            "SELECT id, revoked_at FROM tokens WHERE revoked_at IS NOT NULL AND revoked_at >= ?"
            " ORDER BY revoked_at, id",
            float(ts),
        )
        return [(r["id"], float(r["revoked_at"])) for r in rows]

    async def revoke_call_tokens(self, tenant_id: str, call_id: str, at: float) -> int:
        return await self._execute(
            "UPDATE tokens SET revoked_at = ? WHERE tenant_id = ? AND call_id = ?"
            " AND revoked_at IS NULL",
            float(at),
            tenant_id,
            call_id,
            what="session token",
        )

    # staff declines
    async def decline_call(
        self, tenant_id: str, call_id: str, staff_id: str, at: float
    ) -> list[str]:
        await self._execute(
            "INSERT INTO call_declines (tenant_id, call_id, staff_id, at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (tenant_id, call_id, staff_id) DO NOTHING",
            tenant_id,
            call_id,
            staff_id,
            float(at),
            what="decline",
        )
        return await self.list_declines(tenant_id, call_id)

    async def list_declines(self, tenant_id: str, call_id: str) -> list[str]:
        rows = await self._fetch(
            "SELECT staff_id FROM call_declines WHERE tenant_id = ? AND call_id = ?"
            " ORDER BY at, staff_id",
            tenant_id,
            call_id,
        )
        return [r["staff_id"] for r in rows]

    async def list_decline_times(self, tenant_id: str, call_id: str) -> list[tuple[str, float]]:
        rows = await self._fetch(
            "SELECT staff_id, at FROM call_declines WHERE tenant_id = ? AND call_id = ?"
            " ORDER BY at, staff_id",
            tenant_id,
            call_id,
        )
        return [(str(r["staff_id"]), float(r["at"])) for r in rows]

    # signalling
    async def add_signal(
        self, tenant_id: str, call_id: str, sender: Role, body: str, at: float
    ) -> None:
        if len(body.encode()) > MAX_SIGNAL_BYTES:
            raise Invalid(f"a signalling message is limited to {MAX_SIGNAL_BYTES} bytes")
        most = MAX_SIGNALS
        n = await self._execute(
            "INSERT INTO signals (tenant_id, call_id, sender, body, created_at)"
            " SELECT ?, ?, ?, ?, ? WHERE (SELECT count(*) FROM signals"
            " WHERE tenant_id = ? AND call_id = ?) < ?",
            tenant_id,
            call_id,
            str(Role(sender)),
            body,
            float(at),
            tenant_id,
            call_id,
            most,
            what="signalling message",
        )
        if n == 0:
            raise Invalid(f"a call holds at most {most} signalling messages")

    async def read_signals(
        self, tenant_id: str, call_id: str, sender: Role, after: int
    ) -> list[tuple[int, str]]:
        rows = await self._fetch(
            "SELECT seq, body FROM signals WHERE tenant_id = ? AND call_id = ? AND sender = ?"
            " AND seq > ? ORDER BY seq",
            tenant_id,
            call_id,
            str(Role(sender)),
            int(after),
        )
        return [(int(r["seq"]), str(r["body"])) for r in rows]

    async def delete_signals(self, tenant_id: str, call_id: str) -> int:
        return await self._execute(
            "DELETE FROM signals WHERE tenant_id = ? AND call_id = ?",
            tenant_id,
            call_id,
            what="signalling message",
        )

    async def purge_signals(self, before: float) -> int:
        return await self._execute(
            "DELETE FROM signals WHERE created_at < ?", float(before), what="signalling message"
        )

    # privacy
    _call_tables_cache: list[str] | None = None

    async def _call_tables(self) -> list[str]:
        """Tables whose rows hang off a call: those with ``tenant_id`` and ``call_id``
        columns, found in the schema (so tables later migrations add are purged too)."""
        if self._call_tables_cache is None:
            names = [str(r["name"]) for r in await self._fetch(self._CALL_TABLES)]
            bad = [n for n in names if not _TABLE_NAME.match(n)]
            if bad:
                raise StoreError(f"unexpected table name(s) {bad!r}")
            self._call_tables_cache = names
        return self._call_tables_cache

    async def _delete_calls_where(self, tenant_id: str, where: str, *args: Any) -> int:
        """Delete the tenant's calls matching ``where`` (on ``calls``), rows hanging off
        them first. Each statement commits alone: a run cut short leaves calls that the
        next run (or a retried request) deletes, never rows whose call is gone."""
        sub = f"SELECT id FROM calls WHERE tenant_id = ? AND {where}"
        for table in await self._call_tables():
            await self._execute(
                f"DELETE FROM {table} WHERE tenant_id = ? AND call_id IN ({sub})",
                tenant_id,
                tenant_id,
                *args,
                what="call record",
            )
        return await self._execute(
            f"DELETE FROM calls WHERE tenant_id = ? AND {where}", tenant_id, *args, what="call"
        )

    async def _delete_audit(self, tenant_id: str, cutoff: float) -> int:
        """The one DELETE on ``audit_log``, for the retention purge (PostgreSQL overrides
        it to set the session flag its trigger asks for)."""
        return await self._execute(
            "DELETE FROM audit_log WHERE tenant_id = ? AND at < ?",
            tenant_id,
            float(cutoff),
            what="audit entry",
        )

    async def find_subject_calls(
        self,
        tenant_id: str,
        *,
        ref: str | None = None,
        call_id: str | None = None,
        key: str | None = None,
        call_ref: str | None = None,
        limit: int = MAX_SUBJECT_CALLS,
    ) -> list[Call]:
        given = [
            (c, v)
            for c, v in (
                ("visitor_ref", ref),
                ("id", call_id),
                ("visitor_key", key),
                ("call_ref", call_ref),
            )
            if v is not None
        ]
        if len(given) != 1:
            raise Invalid("give exactly one of ref, call_id, key and call_ref")
        if not 1 <= limit <= MAX_SUBJECT_CALLS:
            raise Invalid(f"limit must be 1-{MAX_SUBJECT_CALLS}")
        col, value = given[0]
        rows = await self._fetch(
            f"SELECT * FROM calls WHERE tenant_id = ? AND {col} = ?"
            f" ORDER BY created_at, id LIMIT {int(limit)}",
            tenant_id,
            value,
        )
        return [as_call(r) for r in rows]

    async def call_records(self, tenant_id: str, call_id: str) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for table in await self._call_tables():
            if table == "tokens":
                continue
            rows = await self._fetch(
                f"SELECT * FROM {table} WHERE tenant_id = ? AND call_id = ?", tenant_id, call_id
            )
            if rows:
                out[table] = [
                    {k: plain(r[k]) for k in columns(r) if k not in ("tenant_id", "call_id")}
                    for r in rows
                ]
        return out

    async def _by_ids(self, sql: str, tenant_id: str, call_ids: list[str], *args: Any) -> int:
        """Run ``sql`` (``... WHERE tenant_id = ? AND id IN ({})``, ``args`` first) over
        ``call_ids`` in chunks; the total of rows touched."""
        n = 0
        ids = list(dict.fromkeys(call_ids))
        for i in range(0, len(ids), _ID_CHUNK):
            chunk = ids[i : i + _ID_CHUNK]
            n += await self._execute(
                sql.format(", ".join("?" * len(chunk))), *args, tenant_id, *chunk, what="call"
            )
        return n

    async def set_call_fields(
        self, tenant_id: str, call_ids: list[str], changes: dict[str, str | None]
    ) -> int:
        unknown = set(changes) - set(PERSONAL_CALL_FIELDS)
        if unknown:
            raise Invalid(f"not a visitor field: {', '.join(sorted(unknown))}")
        if not changes:
            return 0
        cols = sorted(changes)
        sets = ", ".join(f"{c} = ?" for c in cols)
        return await self._by_ids(
            f"UPDATE calls SET {sets} WHERE tenant_id = ? AND id IN ({{}})",
            tenant_id,
            call_ids,
            *[changes[c] for c in cols],
        )

    async def erase_calls(self, tenant_id: str, call_ids: list[str]) -> int:
        n = await self.set_call_fields(tenant_id, call_ids, dict.fromkeys(PERSONAL_CALL_FIELDS))
        # call_ref is written once, at creation (CALL_FIXED): no state change puts it back
        await self._by_ids(
            "UPDATE calls SET call_ref = NULL WHERE tenant_id = ? AND id IN ({})",
            tenant_id,
            call_ids,
        )
        for call_id in dict.fromkeys(call_ids):
            await self.delete_signals(tenant_id, call_id)
        await self.forget_personal_deliveries(tenant_id, call_ids)
        return n

    async def delete_calls(self, tenant_id: str, call_ids: list[str]) -> int:
        n = 0
        ids = list(dict.fromkeys(call_ids))
        for i in range(0, len(ids), _ID_CHUNK):
            chunk = ids[i : i + _ID_CHUNK]
            n += await self._delete_calls_where(
                tenant_id, f"id IN ({', '.join('?' * len(chunk))})", *chunk
            )
        return n

    async def append_audit(self, entry: AuditEntry) -> None:
        await self._execute(
            "INSERT INTO audit_log (tenant_id, at, actor, action, subject, details)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            entry.tenant_id,
            float(entry.at),
            entry.actor,
            entry.action,
            entry.subject,
            to_json(entry.details),
            what="audit entry",
        )

    async def list_audit(
        self,
        tenant_id: str,
        after: int = 0,
        limit: int = 100,
        subjects: list[str] | None = None,
        *,
        before: int | None = None,
        newest: bool = False,
    ) -> list[AuditEntry]:
        if not 1 <= limit <= MAX_PAGE:
            raise Invalid(f"limit must be 1-{MAX_PAGE}")
        if subjects is not None and not 1 <= len(subjects) <= 16:
            raise Invalid("subjects must be 1-16 values")
        where = "" if subjects is None else f" AND subject IN ({', '.join('?' * len(subjects))})"
        args: list[Any] = [*(subjects or [])]
        if before is not None:
            where += " AND seq < ?"
            args.append(int(before))
        order = "seq DESC" if newest else "seq"
        rows = await self._fetch(
            f"SELECT * FROM audit_log WHERE tenant_id = ? AND seq > ?{where} ORDER BY {order}"
            f" LIMIT {int(limit)}",
            tenant_id,
            int(after),
            *args,
        )
        return [as_audit(r) for r in rows]

    async def purge_tenant(self, tenant_id: str, cutoff: float, at: float) -> Purge | None:
        cutoff = float(cutoff)
        calls = await self._delete_calls_where(tenant_id, "created_at < ?", cutoff)
        await self._execute(
            "DELETE FROM tokens WHERE tenant_id = ? AND expires_at < ?",
            tenant_id,
            cutoff,
            what="session token",
        )
        row = await self._fetchone(
            "SELECT count(*) AS n FROM audit_log WHERE tenant_id = ? AND at < ?", tenant_id, cutoff
        )
        audit = int(row["n"]) if row is not None else 0
        if not calls and not audit:
            return None
        purge = Purge(
            tenant_id=tenant_id, at=float(at), cutoff=cutoff, calls=calls, audit_entries=audit
        )
        # recorded before the audit entries go: SQLite's trigger lets a DELETE through only
        # below the cutoff of a purge on record
        await self._execute(
            "INSERT INTO purges (tenant_id, at, cutoff, calls, audit_entries)"
            " VALUES (?, ?, ?, ?, ?)",
            tenant_id,
            purge.at,
            cutoff,
            calls,
            audit,
            what="purge",
        )
        if audit:
            await self._delete_audit(tenant_id, cutoff)
        return purge

    async def list_purges(self, tenant_id: str) -> list[Purge]:
        rows = await self._fetch("SELECT * FROM purges WHERE tenant_id = ? ORDER BY seq", tenant_id)
        return [as_purge(r) for r in rows]

    # relay nodes
    async def upsert_node(self, node: RelayNode) -> None:
        await self._execute(
            "INSERT INTO relay_nodes (id, region, urls, allocations, packet_rate, cpu, draining,"
            " last_heartbeat, registered_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET region = excluded.region, urls = excluded.urls,"
            " allocations = excluded.allocations, packet_rate = excluded.packet_rate,"
            " cpu = excluded.cpu, draining = excluded.draining,"
            " last_heartbeat = excluded.last_heartbeat",
            node.id,
            node.region,
            to_json(node.urls),
            int(node.allocations),
            float(node.packet_rate),
            float(node.cpu),
            bool(node.draining),
            float(node.last_heartbeat),
            float(node.registered_at),
            what="relay node",
        )

    async def enrol_node(self, node_id: str, key_hash: str, at: float) -> bool:
        n = await self._execute(
            "INSERT INTO node_credentials (node_id, key_hash, enrolled_at) VALUES (?, ?, ?)"
            " ON CONFLICT (node_id) DO NOTHING",
            node_id,
            key_hash,
            float(at),
            what="node credential",
        )
        return n > 0

    async def node_credential(self, node_id: str) -> str | None:
        r = await self._fetchone("SELECT key_hash FROM node_credentials WHERE node_id = ?", node_id)
        return None if r is None else str(r["key_hash"])

    async def node_of_credential(self, key_hash: str) -> str | None:
        r = await self._fetchone(
            "SELECT node_id FROM node_credentials WHERE key_hash = ?", key_hash
        )
        return None if r is None else str(r["node_id"])

    async def revoke_node_credential(self, node_id: str) -> bool:
        n = await self._execute(
            "DELETE FROM node_credentials WHERE node_id = ?", node_id, what="node credential"
        )
        return n > 0

    async def list_nodes(self, region: str | None = None) -> list[RelayNode]:
        if region is None:
            rows = await self._fetch("SELECT * FROM relay_nodes ORDER BY id")
        else:
            rows = await self._fetch(
                "SELECT * FROM relay_nodes WHERE region = ? ORDER BY id", region
            )
        return [as_node(r) for r in rows]

    async def get_node(self, node_id: str) -> RelayNode | None:
        r = await self._fetchone("SELECT * FROM relay_nodes WHERE id = ?", node_id)
        return None if r is None else as_node(r)
