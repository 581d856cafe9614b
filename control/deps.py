"""What the HTTP API and the WebSocket signalling share: the per-app context, API errors, the
callers' authentication (operator key, tenant API key, node secret; used by every router), and
the one way a call changes state.

Every state change goes through :func:`transition`: a compare-and-set on the stored status
(so across processes exactly one racing writer wins), then notifications on the call's
channel (its signalling connections, wherever they are) and the tenant's channel (staff
consoles). A call reaching a final state also revokes every token issued for it (the relays
tear down its allocations at their next heartbeat) and drops its signalling messages, which
carry ICE candidates and so visitors' addresses.
"""

from __future__ import annotations

import dataclasses
import hmac
import json
import logging

from starlette.requests import HTTPConnection

from control import calls as machine
from control.keys import (
    Unauthorized,
    bearer,
    hash_key,
    parse_key,
    verify_api_key,
    verify_operator_key,
)
from control.models import FINAL_STATUSES, Call, CallStatus, Link, SessionToken, Staff
from control.settings import ControlSettings
from control.store import Store
from control.tokens import TokenError, TokenSigner

log = logging.getLogger("clickacall.control.api")


class ApiError(Exception):
    """Answered as ``{"error": {"code", "message"}}`` with ``status`` (or a WebSocket close)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def not_found(what: str) -> ApiError:
    return ApiError(404, "not_found", f"no such {what}")


@dataclasses.dataclass(slots=True)
class Ctx:
    settings: ControlSettings
    signer: TokenSigner
    store: Store | None = None

    def db(self) -> Store:
        if self.store is None:
            raise ApiError(503, "unavailable", "the database is not open yet")
        return self.store


def ctx_of(conn: HTTPConnection) -> Ctx:
    ctx: Ctx = conn.app.state.ctx
    return ctx


def now_of(conn: HTTPConnection) -> float:
    return float(conn.app.state.clock())


async def check_session(ctx: Ctx, token: str, now: float) -> SessionToken:
    """The session token's record if it is well signed, current and not revoked; 401 if not."""
    try:
        record = ctx.signer.decode(token, now)
    except TokenError as e:
        raise ApiError(401, "unauthorized", f"invalid session token ({e.reason})") from None
    stored = await ctx.db().get_token(record.id)
    if stored is None or stored.revoked_at is not None:
        raise ApiError(401, "unauthorized", "invalid session token (revoked)")
    return record


# --- authentication (FastAPI dependencies) ------------------------------------------------


def bearer_token(conn: HTTPConnection) -> str:
    try:
        return bearer(conn.headers.get("authorization"))
    except Unauthorized:
        raise ApiError(401, "unauthorized", "missing or malformed Authorization header") from None


async def operator(conn: HTTPConnection) -> None:
    key = bearer_token(conn)
    try:
        verify_operator_key(key, ctx_of(conn).settings.operator_keys)
    except Unauthorized as e:
        log.info("operator key refused: %s", e.reason)
        raise ApiError(401, "unauthorized", "invalid operator key") from None


async def tenant(conn: HTTPConnection) -> str:
    """The tenant id of the presented API key."""
    key = bearer_token(conn)
    try:
        parse_key(key)
        stored = await ctx_of(conn).db().find_api_key(hash_key(key))
        return verify_api_key(key, stored).tenant_id
    except Unauthorized as e:
        log.info("api key refused: %s", e.reason)
        raise ApiError(401, "unauthorized", "invalid API key") from None


async def node_auth(conn: HTTPConnection) -> None:
    secrets_ = ctx_of(conn).settings.node_secrets
    if not secrets_:
        raise ApiError(503, "unavailable", "node heartbeats are off: no node secret is configured")
    presented = bearer_token(conn).encode()
    ok = False
    for s in secrets_:
        ok |= hmac.compare_digest(presented, s.encode())
    if not ok:
        raise ApiError(401, "unauthorized", "invalid node secret")


# --- notifications ---------------------------------------------------------------------------


def signal_path(call_id: str) -> str:
    """Where a call's two parties open their signalling WebSocket."""
    return f"/v1/calls/{call_id}/signal"


def call_channel(call_id: str) -> str:
    """A call's notification channel: its two parties' signalling connections listen on it."""
    return f"call_{call_id}"


def tenant_channel(tenant_id: str) -> str:
    """A tenant's notification channel: its staff consoles listen on it."""
    return f"tenant_{tenant_id}"


def _event(kind: str, **fields: object) -> str:
    return json.dumps({"k": kind, **fields}, separators=(",", ":"))


async def publish(store: Store, call: Call) -> None:
    """Tell the call's parties and the tenant's staff consoles that ``call`` changed."""
    await store.notify(call_channel(call.id), _event("status", status=str(call.status)))
    await store.notify(
        tenant_channel(call.tenant_id),
        _event("call", call=call.id, link=call.link_id, status=str(call.status)),
    )


async def signal_posted(store: Store, call: Call, sender: str) -> None:
    await store.notify(call_channel(call.id), _event("signal", sender=sender))


async def token_revoked(store: Store, call_id: str, token_id: str) -> None:
    await store.notify(call_channel(call_id), _event("revoked", token=token_id))


# --- state changes ---------------------------------------------------------------------------


async def transition(store: Store, before: Call, after: Call, now: float) -> bool:
    """Store ``after`` if the call is still in ``before``'s status; False if it changed meanwhile."""
    if after is before:
        return True
    if not await store.update_call(after, before.status):
        return False
    if after.status in FINAL_STATUSES:
        revoked = await store.revoke_call_tokens(after.tenant_id, after.id, now)
        await store.delete_signals(after.tenant_id, after.id)
        log.info(
            "call %s %s (%s); %d token(s) revoked",
            after.id,
            after.status,
            after.end_reason or "-",
            revoked,
        )
    await publish(store, after)
    return True


async def settle(
    store: Store, call: Call, link: Link | None, now: float, default_timeout: float
) -> Call:
    """The call as it stands at ``now``: a ringing call past its ring timeout becomes missed."""
    if call.status is not CallStatus.RINGING:
        return call
    timeout = link.ring_timeout if link is not None else default_timeout
    missed = machine.expire(call, now, timeout)
    if missed is call or await transition(store, call, missed, now):
        return missed
    return await store.get_call(call.tenant_id, call.id) or missed


MAX_RINGING = 1000


async def ringing_for(
    store: Store, member: Staff, now: float, default_timeout: float
) -> list[tuple[Call, Link]]:
    """(call, link) for each call ringing ``member`` at ``now`` that they have not declined."""
    page = await store.list_calls(member.tenant_id, CallStatus.RINGING, limit=MAX_RINGING)
    if not page.calls:
        return []
    links = {k.id: k for k in await store.list_links(member.tenant_id)}
    team = await store.list_staff(member.tenant_id)
    out: list[tuple[Call, Link]] = []
    for call in reversed(page.calls):
        link = links.get(call.link_id)
        if link is None or member.id not in {s.id for s in machine.rung_staff(link, team)}:
            continue
        if member.id in await store.list_declines(call.tenant_id, call.id):
            continue
        call = await settle(store, call, link, now, default_timeout)
        if call.status is CallStatus.RINGING:
            out.append((call, link))
    return out
