"""The web front's records, written once for both back-ends: staff accounts and presence,
console sessions and invitations, the tokens minted under a session, and what a visitor adds
to a call (the connection check's verdict, a callback request).

Every statement here is one conditional write or one read, so two processes racing (two
consoles marking one callback done, an invitation used twice at once) end with exactly one
winner, and a state change of the call (``update_call``) never writes these columns. The one
exception is a change of roles or activity (``set_staff_access``): a transaction serialised on the
tenant's row, since keeping an admin is a rule over the whole team.
"""

from __future__ import annotations

from typing import Any

from control.ids import MAX_PAGE
from control.models import (
    ADMIN,
    Call,
    Callback,
    CallStatus,
    Invitation,
    Presence,
    SessionToken,
    Staff,
    WebSession,
)
from control.store.base import (
    MAX_CALLBACKS,
    MAX_RECOVERY_CODES,
    STAFF_STATE,
    Conflict,
    Invalid,
)
from control.store.rows import (
    as_call,
    as_invitation,
    as_staff,
    as_token,
    as_web_session,
    from_json,
    opt_float,
    to_json,
)
from control.store.sqlbase import SqlBase


def _in(values: list[str]) -> str:
    return ", ".join("?" * len(values))


def _staff_value(column: str, value: Any) -> Any:
    if value is None:
        return None
    if column == "presence":
        return str(Presence(value))
    if column in ("missed_rings", "totp_step"):
        return int(value)
    if column in ("password_changed_at", "wrapup_until", "seen_at"):
        return float(value)
    return str(value)


class WebSql(SqlBase):
    """The web front's statements (mixed into :class:`~control.store.sql.SqlStore`)."""

    # staff accounts and presence
    async def find_staff_by_email(self, email: str) -> Staff | None:
        r = await self._fetchone("SELECT * FROM staff WHERE email = ?", email)
        return None if r is None else as_staff(r)

    async def set_staff_fields(
        self, tenant_id: str, staff_id: str, changes: dict[str, Any]
    ) -> bool:
        unknown = set(changes) - set(STAFF_STATE)
        if unknown:
            raise Invalid(f"not a staff state field: {', '.join(sorted(unknown))}")
        if not changes:
            found = await self._fetchone(
                "SELECT id FROM staff WHERE tenant_id = ? AND id = ?", tenant_id, staff_id
            )
            return found is not None
        cols = sorted(changes)
        n = await self._execute(
            f"UPDATE staff SET {', '.join(f'{c} = ?' for c in cols)} WHERE tenant_id = ? AND id = ?",
            *[_staff_value(c, changes[c]) for c in cols],
            tenant_id,
            staff_id,
            what="staff member",
        )
        return n > 0

    async def set_staff_access(
        self,
        tenant_id: str,
        staff_id: str,
        *,
        roles: list[str] | None = None,
        active: bool | None = None,
    ) -> bool:
        changes: dict[str, Any] = {}
        if roles is not None:
            changes["roles"] = to_json(list(dict.fromkeys(roles)))
        if active is not None:
            changes["active"] = bool(active)
        if not changes:
            raise Invalid("set_staff_access: give roles or active")
        cols = sorted(changes)
        async with self.transaction():
            # the tenant's row first: concurrent changes in one tenant wait here, so each
            # counts the admins the one before it left (PostgreSQL's row lock; SQLite's
            # transactions hold the one writer anyway)
            await self._execute(
                "UPDATE tenants SET name = name WHERE id = ?", tenant_id, what="tenant"
            )
            n = await self._execute(
                f"UPDATE staff SET {', '.join(f'{c} = ?' for c in cols)}"
                " WHERE tenant_id = ? AND id = ?",
                *[changes[c] for c in cols],
                tenant_id,
                staff_id,
                what="staff member",
            )
            if not n:
                return False
            rows = await self._fetch(
                "SELECT roles FROM staff WHERE tenant_id = ? AND active = ?", tenant_id, True
            )
            if not any(ADMIN in from_json(r["roles"]) for r in rows):
                raise Conflict("roles: the business must keep at least one active admin")
        return True

    async def miss_rings(self, tenant_id: str, staff_ids: list[str], away_after: int) -> list[str]:
        ids = sorted(set(staff_ids))[:MAX_PAGE]
        if not ids:
            return []
        await self._execute(
            f"UPDATE staff SET missed_rings = missed_rings + 1 WHERE tenant_id = ? AND id IN ({_in(ids)})",
            tenant_id,
            *ids,
            what="staff member",
        )
        due = await self._fetch(
            f"SELECT id FROM staff WHERE tenant_id = ? AND id IN ({_in(ids)})"
            " AND presence = ? AND missed_rings >= ? ORDER BY id",
            tenant_id,
            *ids,
            str(Presence.AVAILABLE),
            int(away_after),
        )
        away: list[str] = []
        for r in due:
            n = await self._execute(
                "UPDATE staff SET presence = ? WHERE tenant_id = ? AND id = ? AND presence = ?",
                str(Presence.AWAY),
                tenant_id,
                r["id"],
                str(Presence.AVAILABLE),
                what="staff member",
            )
            if n:
                away.append(str(r["id"]))
        return away

    # tokens minted for a member or under a web session
    async def revoke_tokens_of(
        self, tenant_id: str, at: float, *, staff_id: str | None = None, parent: str | None = None
    ) -> list[SessionToken]:
        if (staff_id is None) == (parent is None):
            raise Invalid("give exactly one of staff_id and parent")
        col, value = ("staff_id", staff_id) if staff_id is not None else ("parent", parent)
        where = f"tenant_id = ? AND {col} = ? AND revoked_at IS NULL"
        live = await self._fetch(
            f"SELECT * FROM tokens WHERE {where} ORDER BY issued_at, id", tenant_id, value
        )
        await self._execute(
            f"UPDATE tokens SET revoked_at = ? WHERE {where}",
            float(at),
            tenant_id,
            value,
            what="session token",
        )
        return [as_token(r) for r in live]

    # console sessions
    async def create_web_session(self, session: WebSession) -> None:
        await self._execute(
            "INSERT INTO web_sessions (id_hash, tenant_id, staff_id, csrf, created_at, last_seen,"
            " expires_at, revoked_at, pending) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            session.id_hash,
            session.tenant_id,
            session.staff_id,
            session.csrf,
            float(session.created_at),
            float(session.last_seen),
            float(session.expires_at),
            opt_float(session.revoked_at),
            bool(session.pending),
            what="web session",
        )

    async def get_web_session(self, id_hash: str) -> WebSession | None:
        r = await self._fetchone("SELECT * FROM web_sessions WHERE id_hash = ?", id_hash)
        return None if r is None else as_web_session(r)

    async def touch_web_session(self, id_hash: str, at: float) -> bool:
        n = await self._execute(
            "UPDATE web_sessions SET last_seen = ? WHERE id_hash = ? AND revoked_at IS NULL",
            float(at),
            id_hash,
            what="web session",
        )
        return n > 0

    async def revoke_web_sessions(
        self, tenant_id: str, staff_id: str, at: float, *, id_hash: str | None = None
    ) -> int:
        sql = (
            "UPDATE web_sessions SET revoked_at = ? WHERE tenant_id = ? AND staff_id = ?"
            " AND revoked_at IS NULL"
        )
        args: list[Any] = [float(at), tenant_id, staff_id]
        if id_hash is not None:
            sql += " AND id_hash = ?"
            args.append(id_hash)
        return await self._execute(sql, *args, what="web session")

    async def list_web_sessions(self, tenant_id: str, staff_id: str) -> list[WebSession]:
        rows = await self._fetch(
            "SELECT * FROM web_sessions WHERE tenant_id = ? AND staff_id = ?"
            f" AND revoked_at IS NULL ORDER BY created_at, id_hash LIMIT {int(MAX_PAGE)}",
            tenant_id,
            staff_id,
        )
        return [as_web_session(r) for r in rows]

    async def count_web_sessions(self, now: float, idle_since: float) -> int:
        r = await self._fetchone(
            "SELECT count(*) AS n FROM web_sessions WHERE revoked_at IS NULL AND expires_at > ?"
            " AND last_seen >= ?",
            float(now),
            float(idle_since),
        )
        return int(r["n"]) if r is not None else 0

    async def purge_web(self, now: float, idle_since: float) -> int:
        n = await self._execute(
            "DELETE FROM web_sessions WHERE revoked_at IS NOT NULL OR expires_at <= ?"
            " OR last_seen < ?",
            float(now),
            float(idle_since),
            what="web session",
        )
        return n + await self._execute(
            "DELETE FROM invitations WHERE expires_at <= ?", float(now), what="invitation"
        )

    # two-factor sign-in
    async def use_totp_step(self, tenant_id: str, staff_id: str, step: int) -> bool:
        n = await self._execute(
            "UPDATE staff SET totp_step = ? WHERE tenant_id = ? AND id = ?"
            " AND (totp_step IS NULL OR totp_step < ?)",
            int(step),
            tenant_id,
            staff_id,
            int(step),
            what="staff member",
        )
        return n > 0

    async def replace_recovery_codes(
        self, tenant_id: str, staff_id: str, code_hashes: list[str], at: float
    ) -> None:
        if len(code_hashes) > MAX_RECOVERY_CODES:
            raise Invalid(f"at most {MAX_RECOVERY_CODES} recovery codes")
        await self._execute(
            "DELETE FROM recovery_codes WHERE tenant_id = ? AND staff_id = ?",
            tenant_id,
            staff_id,
            what="recovery code",
        )
        for code_hash in dict.fromkeys(code_hashes):
            await self._execute(
                "INSERT INTO recovery_codes (tenant_id, staff_id, code_hash, created_at, used_at)"
                " VALUES (?, ?, ?, ?, NULL)",
                tenant_id,
                staff_id,
                code_hash,
                float(at),
                what="recovery code",
            )

    async def use_recovery_code(
        self, tenant_id: str, staff_id: str, code_hash: str, at: float
    ) -> bool:
        n = await self._execute(
            "UPDATE recovery_codes SET used_at = ? WHERE tenant_id = ? AND staff_id = ?"
            " AND code_hash = ? AND used_at IS NULL",
            float(at),
            tenant_id,
            staff_id,
            code_hash,
            what="recovery code",
        )
        return n > 0

    async def count_recovery_codes(self, tenant_id: str, staff_id: str) -> int:
        r = await self._fetchone(
            "SELECT count(*) AS n FROM recovery_codes WHERE tenant_id = ? AND staff_id = ?"
            " AND used_at IS NULL",
            tenant_id,
            staff_id,
        )
        return int(r["n"]) if r is not None else 0

    # invitations
    async def replace_invitation(self, invitation: Invitation) -> None:
        await self._execute(
            "DELETE FROM invitations WHERE tenant_id = ? AND staff_id = ? AND used_at IS NULL",
            invitation.tenant_id,
            invitation.staff_id,
            what="invitation",
        )
        await self._execute(
            "INSERT INTO invitations (token_hash, tenant_id, staff_id, email, created_at,"
            " expires_at, used_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            invitation.token_hash,
            invitation.tenant_id,
            invitation.staff_id,
            invitation.email,
            float(invitation.created_at),
            float(invitation.expires_at),
            opt_float(invitation.used_at),
            what="invitation",
        )

    async def get_invitation(self, token_hash: str) -> Invitation | None:
        r = await self._fetchone("SELECT * FROM invitations WHERE token_hash = ?", token_hash)
        return None if r is None else as_invitation(r)

    async def use_invitation(self, token_hash: str, at: float) -> bool:
        n = await self._execute(
            "UPDATE invitations SET used_at = ? WHERE token_hash = ? AND used_at IS NULL"
            " AND expires_at > ?",
            float(at),
            token_hash,
            float(at),
            what="invitation",
        )
        return n > 0

    # what a visitor adds to a call
    async def set_call_check(
        self, tenant_id: str, call_id: str, check: dict[str, Any], statuses: list[CallStatus]
    ) -> bool:
        states = [str(CallStatus(s)) for s in statuses]
        n = await self._execute(
            f"UPDATE calls SET visitor_check = ? WHERE tenant_id = ? AND id = ?"
            f" AND status IN ({_in(states)})",
            to_json(check),
            tenant_id,
            call_id,
            *states,
            what="call",
        )
        return n > 0

    async def request_callback(
        self, tenant_id: str, call_id: str, visitor_ref: str, at: float, statuses: list[CallStatus]
    ) -> bool:
        states = [str(CallStatus(s)) for s in statuses]
        n = await self._execute(
            f"UPDATE calls SET visitor_ref = ?, callback_state = ?, callback_at = ?"
            f" WHERE tenant_id = ? AND id = ? AND status IN ({_in(states)})"
            " AND answered_at IS NULL AND callback_state IS NULL",
            visitor_ref,
            str(Callback.OPEN),
            float(at),
            tenant_id,
            call_id,
            *states,
            what="call",
        )
        return n > 0

    async def close_callback(self, tenant_id: str, call_id: str, staff_id: str, at: float) -> bool:
        n = await self._execute(
            "UPDATE calls SET callback_state = ?, callback_done_by = ?"
            " WHERE tenant_id = ? AND id = ? AND callback_state = ?",
            str(Callback.DONE),
            staff_id,
            tenant_id,
            call_id,
            str(Callback.OPEN),
            what="call",
        )
        return n > 0

    async def list_callbacks(self, tenant_id: str, link_ids: list[str]) -> list[Call]:
        ids = sorted(set(link_ids))[:MAX_PAGE]
        if not ids:
            return []
        rows = await self._fetch(
            f"SELECT * FROM calls WHERE tenant_id = ? AND callback_state = ?"
            f" AND visitor_ref IS NOT NULL AND link_id IN ({_in(ids)})"
            f" ORDER BY callback_at, id LIMIT {int(MAX_CALLBACKS)}",
            tenant_id,
            str(Callback.OPEN),
            *ids,
        )
        return [as_call(r) for r in rows]
