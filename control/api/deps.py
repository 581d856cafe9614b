"""What every router shares: the per-app context, API errors, path and query parameter types,
and the callers' authentication (operator key, tenant API key, session token, node secret).

Errors are always ``{"error": {"code", "message", "field", "reason", "params"}}``
(:class:`ApiError`, raised anywhere and answered by the app's handler, or turned into a close
code on a WebSocket). Another tenant's
record is a 404, exactly like a missing one: everything tenant-scoped goes through the store
with the caller's tenant id.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import logging
import math
from collections.abc import Mapping
from typing import Annotated

from fastapi import Depends, Path, Query
from pydantic_core import PydanticCustomError
from starlette.requests import HTTPConnection

from control.accounts import Throttle
from control.ids import CURSOR_PATTERN, DEFAULT_PAGE, ID_PATTERN, MAX_PAGE
from control.keys import (
    Unauthorized,
    bearer,
    hash_key,
    parse_key,
    verify_api_key,
    verify_operator_key,
)
from control.lifecycle import CONSOLE as CONSOLE  # the call id of a staff console token
from control.lifecycle import Policy, active_staff, settle
from control.metrics import metrics_of
from control.models import ApiKey, Call, Link, Role, SessionToken, Staff
from control.settings import ControlSettings
from control.store import Store
from control.tokens import TokenError, TokenSigner

log = logging.getLogger("clickacall.control.api")


# --- parameters ------------------------------------------------------------------------------

Id = Annotated[str, Path(pattern=ID_PATTERN)]
IdQuery = Annotated[str | None, Query(pattern=ID_PATTERN)]
Cursor = Annotated[str | None, Query(pattern=CURSOR_PATTERN)]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE)]
Time = Annotated[float | None, Query(ge=0, le=1e11)]
PAGE = DEFAULT_PAGE


# --- errors and context ----------------------------------------------------------------------


Scalar = str | int | float | bool | None
Params = dict[str, Scalar]


class ApiError(Exception):
    """Answered as ``{"error": {"code", "message", "field", "reason", "params"}}`` with
    ``status`` (or a WebSocket close). ``field`` is the request field the error is about
    (dotted: ``hours.timezone``), ``reason`` a stable key for the front's catalogue
    (``err.<reason>``) and ``params`` what its text needs; the English ``message`` is kept."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
        *,
        field: str | None = None,
        reason: str | None = None,
        params: Params | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.field = field
        self.reason = reason
        self.params = params or {}


def json_params(ctx: Mapping[str, object] | None) -> Params:
    """The JSON-safe scalars of a pydantic error's ``ctx`` (finite numbers, text, booleans)."""
    out: Params = {}
    for key, value in (ctx or {}).items():
        if isinstance(value, float) and not math.isfinite(value):
            continue
        if value is None or isinstance(value, str | int | float | bool):
            out[str(key)] = value
    return out


def reason_of(e: ValueError) -> tuple[str | None, Params]:
    """The stable reason and params of a check's ValueError (a ``PydanticCustomError``)."""
    if isinstance(e, PydanticCustomError):
        return e.type, json_params(e.context)
    return None, {}


def invalid(
    field: str,
    text: str,
    reason: str | None = None,
    params: Params | None = None,
    *,
    status: int = 422,
    code: str = "invalid",
) -> ApiError:
    """An error about one request field: the message is ``"<field>: <text>"``."""
    return ApiError(status, code, f"{field}: {text}", field=field, reason=reason, params=params)


def invalid_value(field: str, e: ValueError) -> ApiError:
    """422 for a check's ValueError about ``field``, with its reason and params."""
    reason, params = reason_of(e)
    return invalid(field, str(e), reason, params)


def retry_after(wait: float) -> int:
    """A ``Retry-After`` value (whole seconds, at least 1) for a wait of ``wait`` seconds."""
    return max(1, math.ceil(wait))


def not_found(what: str) -> ApiError:
    return ApiError(404, "not_found", f"no such {what}")


def require_active(member: Staff) -> Staff:
    """``member``, who is to be given something (a console token, an invitation, new roles):
    a 409 if deactivated. Whether the caller may act is :func:`control.lifecycle.active_staff`."""
    if not member.active:
        raise ApiError(409, "inactive", "this staff member is inactive")
    return member


@dataclasses.dataclass(slots=True)
class Ctx:
    settings: ControlSettings
    signer: TokenSigner
    store: Store | None = None
    throttle: Throttle = dataclasses.field(default_factory=Throttle)  # sign-in, callbacks
    clicks: Throttle = dataclasses.field(default_factory=Throttle)  # the public click (rated)

    def db(self) -> Store:
        if self.store is None:
            raise ApiError(503, "unavailable", "the database is not open yet")
        return self.store

    @property
    def policy(self) -> Policy:
        s = self.settings
        return Policy(
            wrapup_seconds=s.wrapup_seconds,
            away_after_rings=s.away_after_rings,
            hook_queue=s.hook_queue,
        )


def ctx_of(conn: HTTPConnection) -> Ctx:
    ctx: Ctx = conn.app.state.ctx
    return ctx


def now_of(conn: HTTPConnection) -> float:
    return float(conn.app.state.clock())


# --- authentication (FastAPI dependencies) ------------------------------------------------


def bearer_token(conn: HTTPConnection) -> str:
    try:
        return bearer(conn.headers.get("authorization"))
    except Unauthorized:
        raise ApiError(401, "unauthorized", "missing or malformed Authorization header") from None


async def check_session(ctx: Ctx, token: str, now: float) -> SessionToken:
    """The session token's record if it is well signed, current and not revoked; 401 if not."""
    try:
        record = ctx.signer.decode(token, now)
    except TokenError as e:
        raise ApiError(401, "unauthorized", f"invalid session token ({e.reason})") from None
    stored = await ctx.db().get_token(record.id)
    if stored is None or stored.revoked_at is not None:
        raise ApiError(401, "unauthorized", "invalid session token (revoked)")
    return dataclasses.replace(record, parent=stored.parent)


async def acting_staff(ctx: Ctx, token: SessionToken) -> Staff:
    """The staff member a staff token speaks for, if they may still act; 401/403 if not."""
    if token.role is not Role.STAFF or token.staff_id is None:
        raise ApiError(403, "forbidden", "this needs a staff session token")
    member = await active_staff(ctx.db(), token.tenant_id, token.staff_id)
    if member is None:
        raise ApiError(401, "unauthorized", "this staff member no longer exists or is inactive")
    return member


async def operator(conn: HTTPConnection) -> None:
    key = bearer_token(conn)
    try:
        verify_operator_key(key, ctx_of(conn).settings.operator_keys)
    except Unauthorized as e:
        log.info("operator key refused: %s", e.reason)
        raise ApiError(401, "unauthorized", "invalid operator key") from None


async def api_key(conn: HTTPConnection) -> ApiKey:
    """The presented tenant API key (its id is the audit log's actor)."""
    key = bearer_token(conn)
    try:
        parse_key(key)
        stored = await ctx_of(conn).db().find_api_key(hash_key(key))
        return verify_api_key(key, stored)
    except Unauthorized as e:
        log.info("api key refused: %s", e.reason)
        raise ApiError(401, "unauthorized", "invalid API key") from None


async def tenant(conn: HTTPConnection) -> str:
    """The tenant id of the presented API key."""
    return (await api_key(conn)).tenant_id


NODE_CREDENTIAL_PREFIX = "cn_"  # a relay node's own credential (enrolment, control/api/nodes.py)


@dataclasses.dataclass(frozen=True, slots=True)
class NodeCaller:
    """Who sent a relay node's request: ``node_id`` for a node's own credential, None for
    the shared node secret (which speaks only for ids that have not enrolled)."""

    node_id: str | None


def credential_hash(credential: str) -> str:
    """What the store keeps of a node credential (256 random bits: a plain hash will do)."""
    return hashlib.sha256(credential.encode()).hexdigest()


def node_refused(conn: HTTPConnection, reason: str) -> None:
    metrics_of(conn.app).node_refusals.labels(reason=reason).inc()


def shared_node_secret(conn: HTTPConnection, presented: str) -> bool:
    """Whether ``presented`` is one of the shared node secrets; 503 if none is configured."""
    secrets_ = ctx_of(conn).settings.node_secrets
    if not secrets_:
        raise ApiError(503, "unavailable", "node heartbeats are off: no node secret is configured")
    ok = False
    for s in secrets_:
        ok |= hmac.compare_digest(presented.encode(), s.encode())
    return ok


async def node_auth(conn: HTTPConnection) -> NodeCaller:
    """A node's own credential (``cn_...``) or the shared node secret; 401 otherwise. Which
    node id the caller may speak for is :func:`node_may_speak_for`'s to check."""
    presented = bearer_token(conn)
    looks_own = presented.startswith(NODE_CREDENTIAL_PREFIX)
    if looks_own:
        node = await ctx_of(conn).db().node_of_credential(credential_hash(presented))
        if node is not None:
            return NodeCaller(node)
    if shared_node_secret(conn, presented):
        return NodeCaller(None)
    if looks_own:
        node_refused(conn, "bad_credential")
        raise ApiError(401, "unauthorized", "unknown or revoked node credential: enrol again")
    raise ApiError(401, "unauthorized", "invalid node secret")


async def node_may_speak_for(conn: HTTPConnection, caller: NodeCaller, node_id: str) -> None:
    """403 if the caller's credential is another node's; 409 if the caller has only the
    shared secret and ``node_id`` has enrolled (re-registering it would take it over)."""
    if caller.node_id is not None:
        if caller.node_id != node_id:
            node_refused(conn, "wrong_node")
            raise ApiError(
                403, "forbidden", f"this credential is node {caller.node_id}'s, not {node_id}'s"
            )
        return
    if await ctx_of(conn).db().node_credential(node_id) is not None:
        node_refused(conn, "enrolled")
        raise ApiError(
            409,
            "node_enrolled",
            f"node {node_id} has enrolled: its requests need its own credential, not the "
            "shared node secret",
        )


async def session(conn: HTTPConnection) -> SessionToken:
    """The presented session token, checked for signature, expiry and revocation."""
    return await check_session(ctx_of(conn), bearer_token(conn), now_of(conn))


async def staff_session(
    conn: HTTPConnection, token: Annotated[SessionToken, Depends(session)]
) -> tuple[SessionToken, Staff]:
    return token, await acting_staff(ctx_of(conn), token)


Operator = Depends(operator)
TenantId = Annotated[str, Depends(tenant)]
TenantKey = Annotated[ApiKey, Depends(api_key)]
Session = Annotated[SessionToken, Depends(session)]
StaffAuth = Annotated[tuple[SessionToken, Staff], Depends(staff_session)]


# --- calls as they stand -------------------------------------------------------------------------


async def settled(conn: HTTPConnection, call: Call, link: Link | None) -> Call:
    """The call as it stands now: a ringing call past its ring timeout is stored as missed."""
    ctx = ctx_of(conn)
    return await settle(ctx.db(), call, link, now_of(conn), ctx.settings.ring_timeout, ctx.policy)


async def load_call(conn: HTTPConnection, tenant_id: str, call_id: str) -> tuple[Call, Link | None]:
    """The tenant's call (settled) and its link; 404 if the tenant has no such call."""
    store = ctx_of(conn).db()
    call = await store.get_call(tenant_id, call_id)
    if call is None:
        raise not_found("call")
    link = await store.get_link(tenant_id, call.link_id)
    return await settled(conn, call, link), link
