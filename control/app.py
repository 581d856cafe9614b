"""The control plane's HTTP API: ``create_app(settings, store=None)`` builds the FastAPI app.

Four kinds of caller, four kinds of credential, all as ``Authorization: Bearer ...``:

- the operator (an operator key): tenants and their API keys;
- a tenant (one of its API keys): staff, links, the call log, staff tokens, raw ICE
  credentials, revoking its own tokens;
- staff (a staff session token): ringing calls, answer / reject / hang up;
- a visitor (nothing for the click, then the visitor session token): hang up;
- relay nodes (the node secret): heartbeats, answered with the revocations they must apply.

Everything tenant-scoped goes through the store with the caller's tenant id, so another
tenant's id is a 404, exactly like a missing one. Errors are always
``{"error": {"code", "message"}}``; bad input is a 4xx, never a 500.

Time comes from ``app.state.clock`` (``settings.clock`` by default) so tests can move it.
Ringing calls past their link's ring timeout become missed lazily, when read or acted on.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from control import calllogs, privacy, signalling, subjects
from control import calls as machine
from control.deps import (
    ApiError,
    Ctx,
    check_session,
    node_auth,
    operator,
    publish,
    ringing_for,
    settle,
    signal_path,
    tenant,
    token_revoked,
    transition,
)
from control.deps import bearer_token as _bearer
from control.deps import ctx_of as _ctx
from control.deps import not_found as _not_found
from control.deps import now_of as _now
from control.keys import new_api_key
from control.metrics import install_metrics, instrument_store
from control.models import Call, CallStatus, Link, RelayNode, Role, SessionToken, Staff, Tenant
from control.schemas import (
    AnswerOut,
    CallOut,
    CallPageOut,
    ClickIn,
    ClickOut,
    CredentialsIn,
    CredentialsOut,
    ErrorOut,
    HeartbeatIn,
    HeartbeatOut,
    KeyOut,
    LinkIn,
    LinkOut,
    LinkPatch,
    NodeOut,
    RevokedOut,
    RingingOut,
    StaffIn,
    StaffOut,
    StaffPatch,
    StaffTokenOut,
    TenantCreated,
    TenantIn,
    TenantOut,
    TtlIn,
)
from control.selection import NoRelayAvailable, healthy, select_node, truncate_ip
from control.settings import ControlSettings
from control.store import Conflict, Invalid, NotFound, Store, open_store
from control.tokens import (
    MAX_RELAY_TTL,
    TokenSigner,
    ice_servers,
    raw_credentials,
    relay_credentials,
)

log = logging.getLogger("clickacall.control.api")

CONSOLE = "*"  # the call id inside a staff console token (not scoped to one call)
Id = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.-]{1,128}$")]


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


# --- authentication ------------------------------------------------------------------------


async def session(request: Request) -> SessionToken:
    """The presented session token, checked for signature, expiry and revocation."""
    return await check_session(_ctx(request), _bearer(request), _now(request))


async def staff_session(
    request: Request, token: Annotated[SessionToken, Depends(session)]
) -> tuple[SessionToken, Staff]:
    if token.role is not Role.STAFF or token.staff_id is None:
        raise ApiError(403, "forbidden", "this needs a staff session token")
    member = await _ctx(request).db().get_staff(token.tenant_id, token.staff_id)
    if member is None or not member.active:
        raise ApiError(401, "unauthorized", "this staff member no longer exists or is inactive")
    return token, member


Operator = Depends(operator)
TenantId = Annotated[str, Depends(tenant)]
StaffAuth = Annotated[tuple[SessionToken, Staff], Depends(staff_session)]
Session = Annotated[SessionToken, Depends(session)]


# --- helpers --------------------------------------------------------------------------------


def ua_family(ua: str | None) -> tuple[str | None, str | None]:
    """(browser family, OS family) of a User-Agent; nothing more of it is kept."""
    if not ua:
        return None, None
    ua = ua[:512]
    browser = None
    if "Edg/" in ua or "EdgA/" in ua or "EdgiOS/" in ua:
        browser = "Edge"
    elif "Firefox/" in ua or "FxiOS/" in ua:
        browser = "Firefox"
    elif "Chrome/" in ua or "CriOS/" in ua or "Chromium/" in ua:
        browser = "Chrome"
    elif "Safari/" in ua and "Version/" in ua:
        browser = "Safari"
    system = None
    if "Windows" in ua:
        system = "Windows"
    elif "iPhone" in ua or "iPad" in ua or "iPod" in ua:
        system = "iOS"
    elif "Android" in ua:
        system = "Android"
    elif "Mac OS X" in ua or "Macintosh" in ua:
        system = "macOS"
    elif "Linux" in ua:
        system = "Linux"
    return browser, system


def _prefix(request: Request) -> str | None:
    host = request.client.host if request.client else None
    if not host:
        return None
    try:
        return truncate_ip(host)
    except ValueError:
        return None


async def _pick_node(
    request: Request, allowed: list[str], visitor: str | None, hint: str | None = None
) -> RelayNode:
    ctx = _ctx(request)
    s = ctx.settings
    nodes = await ctx.db().list_nodes()
    try:
        return select_node(
            nodes,
            allowed_regions=allowed,
            visitor_region=s.region_map.region_for(visitor, hint=hint),
            now=_now(request),
            heartbeat_timeout=s.heartbeat_timeout,
            rng=s.rng,
            region_map=s.region_map,
        )
    except NoRelayAvailable as e:
        raise ApiError(503, "no_relay", str(e)) from None


def _relay_secret(request: Request, region: str) -> bytes:
    """The secret that signs relay credentials for ``region``'s nodes: the region's own
    (``--relay-secret-for``) if it has one, else the shared one (``--relay-secret``)."""
    s = _ctx(request).settings
    secrets_ = s.region_secrets.get(region) or s.relay_secrets
    if not secrets_:
        raise ApiError(503, "unavailable", f"no relay secret is configured for region {region}")
    return secrets_[0]


def _ice(request: Request, node: RelayNode, token_id: str) -> tuple[list[dict[str, Any]], float]:
    secret = _relay_secret(request, node.region)
    username, password = relay_credentials(secret, token_id, None, _now(request))
    expiry = float(username.partition(":")[0])
    return ice_servers({node.id: node.urls}, username, password), expiry


async def _settle(request: Request, call: Call, link: Link | None) -> Call:
    """The call as it stands now: a ringing call past its ring timeout is stored as missed."""
    ctx = _ctx(request)
    return await settle(ctx.db(), call, link, _now(request), ctx.settings.ring_timeout)


async def _call(request: Request, tenant_id: str, call_id: str) -> tuple[Call, Link | None]:
    store = _ctx(request).db()
    call = await store.get_call(tenant_id, call_id)
    if call is None:
        raise _not_found("call")
    link = await store.get_link(tenant_id, call.link_id)
    return await _settle(request, call, link), link


async def _check_staff_ids(request: Request, tenant_id: str, ids: list[str]) -> None:
    known = {s.id for s in await _ctx(request).db().list_staff(tenant_id)}
    unknown = sorted(set(ids) - known)
    if unknown:
        raise ApiError(422, "invalid", f"unknown staff member(s): {', '.join(unknown)}")


# --- health -----------------------------------------------------------------------------------

health = APIRouter()


@health.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@health.get("/readyz", responses={503: {"model": ErrorOut}})
async def readyz(request: Request) -> dict[str, str]:
    try:
        await _ctx(request).db().get_node("readyz-probe")
    except Exception as e:  # any driver failure means "not ready"
        log.warning("readiness check failed: %s", e)
        raise ApiError(503, "unavailable", "the database is not reachable") from None
    return {"status": "ready"}


v1 = APIRouter(prefix="/v1", responses={401: {"model": ErrorOut}, 404: {"model": ErrorOut}})


# --- operator ----------------------------------------------------------------------------------


async def _mint_key(request: Request, tenant_id: str) -> KeyOut:
    now = _now(request)
    for _ in range(3):
        key, record = new_api_key(tenant_id, now)
        try:
            await _ctx(request).db().add_api_key(record)
        except Conflict:
            continue
        return KeyOut(id=record.id, key=key, created_at=now)
    raise ApiError(409, "conflict", "could not mint a unique key; try again")


@v1.post("/tenants", status_code=201, dependencies=[Operator])
async def create_tenant(request: Request, body: TenantIn) -> TenantCreated:
    t = Tenant(
        id=uuid.uuid4().hex,
        name=body.name,
        allowed_regions=body.allowed_regions,
        retention_months=body.retention_months,
        created_at=_now(request),
    )
    await _ctx(request).db().create_tenant(t)
    return TenantCreated(tenant=TenantOut.of(t), api_key=await _mint_key(request, t.id))


@v1.get("/tenants/{tenant_id}", dependencies=[Operator])
async def get_tenant(request: Request, tenant_id: Id) -> TenantOut:
    t = await _ctx(request).db().get_tenant(tenant_id)
    if t is None:
        raise _not_found("tenant")
    return TenantOut.of(t)


@v1.post("/tenants/{tenant_id}/keys", status_code=201, dependencies=[Operator])
async def create_key(request: Request, tenant_id: Id) -> KeyOut:
    if await _ctx(request).db().get_tenant(tenant_id) is None:
        raise _not_found("tenant")
    return await _mint_key(request, tenant_id)


@v1.delete("/tenants/{tenant_id}/keys/{key_id}", status_code=204, dependencies=[Operator])
async def revoke_key(request: Request, tenant_id: Id, key_id: Id) -> Response:
    if not await _ctx(request).db().revoke_api_key(tenant_id, key_id, _now(request)):
        raise _not_found("active key")
    return Response(status_code=204)


# --- staff ---------------------------------------------------------------------------------------


@v1.post("/staff", status_code=201)
async def create_staff(request: Request, tenant_id: TenantId, body: StaffIn) -> StaffOut:
    s = Staff(
        id=uuid.uuid4().hex,
        tenant_id=tenant_id,
        name=body.name,
        groups=list(dict.fromkeys(body.groups)),
        active=body.active,
        created_at=_now(request),
    )
    await _ctx(request).db().create_staff(s)
    return StaffOut.of(s)


@v1.get("/staff")
async def list_staff(request: Request, tenant_id: TenantId) -> list[StaffOut]:
    return [StaffOut.of(s) for s in await _ctx(request).db().list_staff(tenant_id)]


async def _staff(request: Request, tenant_id: str, staff_id: str) -> Staff:
    s = await _ctx(request).db().get_staff(tenant_id, staff_id)
    if s is None:
        raise _not_found("staff member")
    return s


@v1.get("/staff/{staff_id}")
async def get_staff(request: Request, tenant_id: TenantId, staff_id: Id) -> StaffOut:
    return StaffOut.of(await _staff(request, tenant_id, staff_id))


@v1.patch("/staff/{staff_id}")
async def update_staff(
    request: Request, tenant_id: TenantId, staff_id: Id, body: StaffPatch
) -> StaffOut:
    s = await _staff(request, tenant_id, staff_id)
    changes = body.model_dump(exclude_unset=True, exclude_none=True)
    if "groups" in changes:
        changes["groups"] = list(dict.fromkeys(changes["groups"]))
    s = dataclasses.replace(s, **changes)
    await _ctx(request).db().update_staff(s)
    return StaffOut.of(s)


@v1.delete("/staff/{staff_id}", status_code=204)
async def delete_staff(request: Request, tenant_id: TenantId, staff_id: Id) -> Response:
    if not await _ctx(request).db().delete_staff(tenant_id, staff_id):
        raise _not_found("staff member")
    return Response(status_code=204)


@v1.post("/staff/{staff_id}/token", status_code=201)
async def staff_token(
    request: Request, tenant_id: TenantId, staff_id: Id, body: TtlIn | None = None
) -> StaffTokenOut:
    """A staff console token: not tied to one call, short-lived (default one hour)."""
    s = await _staff(request, tenant_id, staff_id)
    if not s.active:
        raise ApiError(409, "inactive", "this staff member is inactive")
    ttl = (body or TtlIn()).ttl
    ctx = _ctx(request)
    token, record = ctx.signer.issue(
        tenant_id=tenant_id,
        call_id=CONSOLE,
        role=Role.STAFF,
        staff_id=s.id,
        now=_now(request),
        ttl=ttl,
    )
    await ctx.db().save_token(record)
    return StaffTokenOut(token=token, token_id=record.id, expires_at=record.expires_at)


# --- links ---------------------------------------------------------------------------------------


@v1.post("/links", status_code=201)
async def create_link(request: Request, tenant_id: TenantId, body: LinkIn) -> LinkOut:
    await _check_staff_ids(request, tenant_id, body.ring_staff)
    ctx = _ctx(request)
    for _ in range(3):
        link = Link(
            id=uuid.uuid4().hex,
            public_id=secrets.token_urlsafe(9),
            tenant_id=tenant_id,
            name=body.name,
            media=list(dict.fromkeys(body.media)),
            ring_staff=list(dict.fromkeys(body.ring_staff)),
            ring_groups=list(dict.fromkeys(body.ring_groups)),
            hours=body.hours.model() if body.hours else None,
            ring_timeout=body.ring_timeout or ctx.settings.ring_timeout,
            active=body.active,
            created_at=_now(request),
        )
        try:
            await ctx.db().create_link(link)
        except Conflict:
            continue
        return LinkOut.of(link)
    raise ApiError(409, "conflict", "could not mint a unique public id; try again")


@v1.get("/links")
async def list_links(request: Request, tenant_id: TenantId) -> list[LinkOut]:
    return [LinkOut.of(k) for k in await _ctx(request).db().list_links(tenant_id)]


async def _link(request: Request, tenant_id: str, link_id: str) -> Link:
    k = await _ctx(request).db().get_link(tenant_id, link_id)
    if k is None:
        raise _not_found("link")
    return k


@v1.get("/links/{link_id}")
async def get_link(request: Request, tenant_id: TenantId, link_id: Id) -> LinkOut:
    return LinkOut.of(await _link(request, tenant_id, link_id))


@v1.patch("/links/{link_id}")
async def update_link(
    request: Request, tenant_id: TenantId, link_id: Id, body: LinkPatch
) -> LinkOut:
    link = await _link(request, tenant_id, link_id)
    changes: dict[str, Any] = {}
    if body.name is not None:
        changes["name"] = body.name
    if body.media is not None:
        changes["media"] = list(dict.fromkeys(body.media))
    if body.ring_staff is not None:
        await _check_staff_ids(request, tenant_id, body.ring_staff)
        changes["ring_staff"] = list(dict.fromkeys(body.ring_staff))
    if body.ring_groups is not None:
        changes["ring_groups"] = list(dict.fromkeys(body.ring_groups))
    if body.always_open:
        changes["hours"] = None
    elif body.hours is not None:
        changes["hours"] = body.hours.model()
    if body.ring_timeout is not None:
        changes["ring_timeout"] = body.ring_timeout
    if body.active is not None:
        changes["active"] = body.active
    link = dataclasses.replace(link, **changes)
    await _ctx(request).db().update_link(link)
    return LinkOut.of(link)


@v1.delete("/links/{link_id}", status_code=204)
async def delete_link(request: Request, tenant_id: TenantId, link_id: Id) -> Response:
    if not await _ctx(request).db().delete_link(tenant_id, link_id):
        raise _not_found("link")
    return Response(status_code=204)


# --- the call log ----------------------------------------------------------------------------------


@v1.get("/calls")
async def list_calls(
    request: Request,
    tenant_id: TenantId,
    status: CallStatus | None = None,
    since: Annotated[float | None, Query(ge=0)] = None,
    until: Annotated[float | None, Query(ge=0)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[
        str | None, Query(pattern=r"^[0-9A-Za-z.+-]{1,40}~[A-Za-z0-9_.-]{1,128}$")
    ] = None,
) -> CallPageOut:
    store = _ctx(request).db()
    page = await store.list_calls(tenant_id, status, since, until, limit, cursor)
    links = {k.id: k for k in await store.list_links(tenant_id)}
    out = [CallOut.of(await _settle(request, c, links.get(c.link_id))) for c in page.calls]
    return CallPageOut(calls=out, next_cursor=page.next_cursor)


@v1.get("/calls/{call_id}")
async def get_call(request: Request, tenant_id: TenantId, call_id: Id) -> CallOut:
    call, _ = await _call(request, tenant_id, call_id)
    return CallOut.of(call, await _ctx(request).db().list_declines(tenant_id, call_id))


# --- credentials and tokens -------------------------------------------------------------------------


@v1.post("/credentials", status_code=201, responses={503: {"model": ErrorOut}})
async def credentials(
    request: Request, tenant_id: TenantId, body: CredentialsIn | None = None
) -> CredentialsOut:
    """Raw ICE servers for tenants with their own signalling (revocable by ``token_id``)."""
    ctx = _ctx(request)
    t = await ctx.db().get_tenant(tenant_id)
    if t is None:
        raise _not_found("tenant")
    node = await _pick_node(request, t.allowed_regions, _prefix(request))
    secret = _relay_secret(request, node.region)
    record, servers = raw_credentials(
        secret, tenant_id, {node.id: node.urls}, (body or CredentialsIn()).ttl, _now(request)
    )
    await ctx.db().save_token(record)
    return CredentialsOut(token_id=record.id, iceServers=servers, expires_at=record.expires_at)


@v1.post("/tokens/{token_id}/revoke")
async def revoke_token(request: Request, tenant_id: TenantId, token_id: Id) -> RevokedOut:
    store = _ctx(request).db()
    record = await store.get_token(token_id)
    if record is None or record.tenant_id != tenant_id:
        raise _not_found("token")
    if record.revoked_at is not None:
        return RevokedOut(id=record.id, revoked_at=record.revoked_at)
    now = _now(request)
    await store.revoke_token(token_id, now)
    if record.call_id is not None:
        await token_revoked(store, record.call_id, record.id)
    return RevokedOut(id=record.id, revoked_at=now)


# --- visitors --------------------------------------------------------------------------------------


@v1.post(
    "/links/{public_id}/calls",
    status_code=201,
    responses={409: {"model": ErrorOut}, 503: {"model": ErrorOut}},
)
async def click(request: Request, public_id: Id, body: ClickIn | None = None) -> ClickOut:
    """A visitor's click: a ringing call, its visitor token and the ICE servers to use."""
    ctx = _ctx(request)
    store = ctx.db()
    now = _now(request)
    link = await store.get_link_by_public_id(public_id)
    if link is None:
        raise _not_found("call link")
    try:
        machine.admit(link, now)
    except machine.LinkUnavailable as e:
        raise ApiError(409, f"link_{e.reason}", str(e)) from None
    t = await store.get_tenant(link.tenant_id)
    if t is None:
        raise _not_found("call link")
    prefix = _prefix(request)
    node = await _pick_node(request, t.allowed_regions, prefix, body.region_hint if body else None)
    _relay_secret(request, node.region)  # before anything is stored
    browser, system = ua_family(request.headers.get("user-agent"))
    call = machine.ring(
        Call(
            id=uuid.uuid4().hex,
            tenant_id=t.id,
            link_id=link.id,
            relay_node=node.id,
            relay_region=node.region,
            visitor_prefix=prefix,
            visitor_browser=browser,
            visitor_os=system,
            visitor_key=privacy.visitor_key(request, t.id),
        ),
        now,
    )
    await store.create_call(call)
    token, record = ctx.signer.issue(tenant_id=t.id, call_id=call.id, role=Role.VISITOR, now=now)
    await store.save_token(record)
    await publish(store, call)
    servers, expiry = _ice(request, node, record.id)
    return ClickOut(
        call_id=call.id,
        token=token,
        token_id=record.id,
        token_expires_at=record.expires_at,
        signal=signal_path(call.id),
        iceServers=servers,
        expires_at=expiry,
    )


@v1.post("/calls/{call_id}/hangup", responses={409: {"model": ErrorOut}})
async def hangup(request: Request, call_id: Id, token: Session) -> CallOut:
    """Either party leaves: the visitor (its token) or the staff member who answered."""
    if token.call_id not in (call_id, CONSOLE if token.role is Role.STAFF else None):
        raise _not_found("call")
    store = _ctx(request).db()
    call, _ = await _call(request, token.tenant_id, call_id)
    if token.role is Role.STAFF:
        member = await store.get_staff(token.tenant_id, token.staff_id or "")
        if member is None or not member.active:
            raise ApiError(401, "unauthorized", "this staff member no longer exists or is inactive")
        if call.answered_by != token.staff_id:
            raise ApiError(403, "forbidden", "only the staff member who answered can hang up")
    role = token.role or Role.VISITOR
    try:
        ended = machine.hang_up(call, role, _now(request))
    except machine.InvalidTransition as e:
        raise ApiError(409, "invalid_state", str(e)) from None
    if not await transition(store, call, ended, _now(request)):
        raise ApiError(409, "conflict", "the call changed meanwhile; read it again")
    return CallOut.of(ended)


# --- staff -------------------------------------------------------------------------------------------


@v1.get("/ringing")
async def ringing(request: Request, auth: StaffAuth) -> list[RingingOut]:
    """Calls ringing this staff member now (not those they declined), oldest first."""
    ctx = _ctx(request)
    found = await ringing_for(ctx.db(), auth[1], _now(request), ctx.settings.ring_timeout)
    return [RingingOut(call=CallOut.of(c), link_name=k.name, media=k.media) for c, k in found]


def _scope(token: SessionToken, call_id: str) -> None:
    """A token scoped to one call acts on that call only (console tokens on any)."""
    if token.call_id not in (call_id, CONSOLE):
        raise _not_found("call")


async def _rung(request: Request, call: Call, link: Link | None) -> list[str]:
    if link is None:
        return []
    team = await _ctx(request).db().list_staff(call.tenant_id)
    return [s.id for s in machine.rung_staff(link, team)]


@v1.post(
    "/calls/{call_id}/answer",
    responses={403: {"model": ErrorOut}, 409: {"model": ErrorOut}, 503: {"model": ErrorOut}},
)
async def answer(request: Request, call_id: Id, auth: StaffAuth) -> AnswerOut:
    """First answer wins (compare-and-set on "ringing"); the others get 409."""
    token, member = auth
    _scope(token, call_id)
    ctx = _ctx(request)
    store = ctx.db()
    now = _now(request)
    call, link = await _call(request, token.tenant_id, call_id)
    if call.status is CallStatus.ANSWERED:
        raise ApiError(409, "already_answered", "this call was already answered")
    try:
        answered = machine.answer(call, member.id, now, rung_staff=await _rung(request, call, link))
    except machine.NotRung as e:
        raise ApiError(403, "forbidden", str(e)) from None
    except machine.InvalidTransition as e:
        raise ApiError(409, "invalid_state", str(e)) from None
    node = await store.get_node(call.relay_node) if call.relay_node else None
    if node is None or not node.urls:
        t = await store.get_tenant(call.tenant_id)
        node = await _pick_node(request, t.allowed_regions if t else [], call.visitor_prefix)
    _relay_secret(request, node.region)  # before anything is stored
    if not await transition(store, call, answered, now):
        raise ApiError(409, "already_answered", "this call was already answered")
    token_text, record = ctx.signer.issue(
        tenant_id=call.tenant_id, call_id=call.id, role=Role.STAFF, staff_id=member.id, now=now
    )
    await store.save_token(record)
    servers, expiry = _ice(request, node, record.id)
    return AnswerOut(
        call=CallOut.of(answered),
        token=token_text,
        token_id=record.id,
        token_expires_at=record.expires_at,
        signal=signal_path(call.id),
        iceServers=servers,
        expires_at=expiry,
    )


@v1.post("/calls/{call_id}/reject", responses={403: {"model": ErrorOut}, 409: {"model": ErrorOut}})
async def reject(request: Request, call_id: Id, auth: StaffAuth) -> CallOut:
    """Decline a ringing call; it is REJECTED once nobody else it rings is left."""
    token, member = auth
    _scope(token, call_id)
    store = _ctx(request).db()
    now = _now(request)
    call, link = await _call(request, token.tenant_id, call_id)
    rung = await _rung(request, call, link)
    try:
        machine.reject(call, member.id, now, rung_staff=rung)  # checks before anything is stored
        before = await store.decline_call(call.tenant_id, call.id, member.id, now)
        declined = machine.reject(call, member.id, now, rung_staff=rung, rejected=before)
    except machine.CallConflict:
        raise ApiError(409, "already_answered", "this call was already answered") from None
    except machine.NotRung as e:
        raise ApiError(403, "forbidden", str(e)) from None
    except machine.InvalidTransition as e:
        raise ApiError(409, "invalid_state", str(e)) from None
    if not await transition(store, call, declined, now):
        raise ApiError(409, "already_answered", "this call was already answered")
    return CallOut.of(declined, declined_by=before)


# --- relay nodes -------------------------------------------------------------------------------------


@v1.post("/nodes/heartbeat", dependencies=[Depends(node_auth)])
async def heartbeat(request: Request, body: HeartbeatIn) -> HeartbeatOut:
    store = _ctx(request).db()
    now = _now(request)
    await store.upsert_node(
        RelayNode(
            id=body.node_id,
            region=body.region,
            urls=body.urls,
            allocations=body.allocations,
            packet_rate=body.packet_rate,
            cpu=body.cpu,
            draining=body.draining,
            last_heartbeat=now,
            registered_at=now,
        )
    )
    # a credential outlives its issue by at most MAX_RELAY_TTL, so older revocations are moot
    revoked = await store.revoked_since(max(body.revocations_since, now - MAX_RELAY_TTL))
    return HeartbeatOut(now=now, revoked=list(dict.fromkeys(tid for tid, _ in revoked)))


@v1.get("/nodes", dependencies=[Operator])
async def list_nodes(request: Request) -> list[NodeOut]:
    """The relay registry as the operator sees it: every node that ever heartbeated."""
    ctx = _ctx(request)
    now = _now(request)
    return [
        NodeOut(
            id=n.id,
            region=n.region,
            urls=n.urls,
            allocations=n.allocations,
            packet_rate=n.packet_rate,
            cpu=n.cpu,
            draining=n.draining,
            healthy=healthy(n, now, ctx.settings.heartbeat_timeout),
            last_heartbeat=n.last_heartbeat,
            registered_at=n.registered_at,
        )
        for n in await ctx.db().list_nodes()
    ]


# --- the app -------------------------------------------------------------------------------------------


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        loc = ".".join(str(x) for x in err.get("loc", ()))
        parts.append(f"{loc}: {err.get('msg', 'invalid')}" if loc else str(err.get("msg")))
    return "; ".join(parts) or "invalid request"


def _install_handlers(app: FastAPI) -> None:
    async def api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return _error(exc.status, exc.code, exc.message)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        codes = {404: "not_found", 405: "method_not_allowed"}
        return _error(exc.status_code, codes.get(exc.status_code, "error"), str(exc.detail))

    async def invalid_request(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return _error(422, "invalid", _validation_message(exc))

    async def store_error(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, NotFound):
            return _error(404, "not_found", str(exc))
        if isinstance(exc, Conflict):
            return _error(409, "conflict", str(exc))
        return _error(400, "invalid", str(exc))

    async def internal(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return _error(500, "internal", "internal error")

    app.add_exception_handler(Exception, internal)
    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    for cls in (NotFound, Conflict, Invalid):
        app.add_exception_handler(cls, store_error)


HOUSEKEEPING_INTERVAL = 60.0
SIGNAL_MAX_AGE = 3600.0  # signalling messages older than this are of no use to anyone


@asynccontextmanager
async def _housekeeping(app: FastAPI) -> AsyncIterator[None]:
    """Periodic jobs of a running process: drop stale signalling messages (calls left
    hanging keep none of their ICE candidates, so none of their visitors' addresses), and
    enforce tenants' retention (:func:`control.privacy.purge_if_due`: at start, then hourly)."""

    async def loop() -> None:
        while True:
            try:
                ctx: Ctx = app.state.ctx
                purged = await ctx.db().purge_signals(app.state.clock() - SIGNAL_MAX_AGE)
                if purged:
                    log.info("purged %d stale signalling message(s)", purged)
            except Exception as e:  # the database may be away for a while: try again later
                log.warning("housekeeping failed: %s", e)
            try:  # retention: at start, then hourly (by the app's clock)
                await privacy.purge_if_due(app, app.state.ctx.db())
            except Exception as e:
                log.warning("retention purge failed: %s", e)
            await asyncio.sleep(HOUSEKEEPING_INTERVAL)

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def create_app(settings: ControlSettings, store: Store | None = None) -> FastAPI:
    """The API. With ``store`` given it is used as is (and not closed); otherwise the
    lifespan opens ``settings.db_url`` on start and closes it on shutdown."""
    ctx = Ctx(settings=settings, signer=TokenSigner(settings.token_keys), store=store)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if ctx.store is not None:
            async with _housekeeping(app):
                yield
            return
        ctx.store = await open_store(settings.db_url)
        instrument_store(ctx.store, metrics)
        try:
            async with _housekeeping(app):
                yield
        finally:
            opened, ctx.store = ctx.store, None
            await opened.close()

    app = FastAPI(
        title="Clickacall control plane",
        version="1",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.ctx = ctx
    app.state.clock = settings.clock
    metrics = install_metrics(app)
    if store is not None:
        instrument_store(store, metrics)
    privacy.privacy_metrics(app)  # its counters exist, at 0, before the first purge
    _install_handlers(app)
    app.include_router(health)
    app.include_router(v1)
    app.include_router(calllogs.router)
    app.include_router(signalling.router)
    app.include_router(subjects.router)
    return app
