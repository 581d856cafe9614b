"""What the staff console asks with its cookie session, and the callback requests it lists.

- ``GET /v1/me`` (cookie): who is signed in, their tenant, and the session's CSRF token;
- ``POST /v1/me/token`` (cookie + CSRF): a console token (the existing staff token, one hour at
  most and never past the session's end) for the staff endpoints and ``/v1/staff/events``. It
  names its session, so signing out revokes it;
- ``GET /v1/callbacks`` (a staff token): open callback requests on the links that ring this
  member, oldest first;
- ``POST /v1/callbacks/{call_id}/done`` (a staff token): mark one done (409 if it is already).
"""

from __future__ import annotations

import dataclasses

from fastapi import APIRouter, Request
from pydantic import BaseModel

from control import calls as machine
from control.api.deps import CONSOLE, ApiError, Id, StaffAuth, ctx_of, not_found, now_of
from control.api.sessions import CookieAuth, check_csrf
from control.lifecycle import callbacks_changed
from control.models import Call, Callback, Presence, Role, Staff
from control.schemas import CallOut, ErrorOut, StaffTokenOut
from control.store import Store
from control.tokens import DEFAULT_TOKEN_TTL, MIN_TOKEN_TTL

router = APIRouter(prefix="/v1", responses={401: {"model": ErrorOut}, 403: {"model": ErrorOut}})


class MeStaffOut(BaseModel):
    id: str
    name: str
    email: str | None
    presence: Presence
    wrapup_until: float | None


class MeTenantOut(BaseModel):
    id: str
    name: str


class MeOut(BaseModel):
    staff: MeStaffOut
    tenant: MeTenantOut
    csrf: str  # echo it as X-CSRF-Token on state-changing requests


class CallbackItemOut(BaseModel):
    call: CallOut
    link_name: str | None
    name_contact: str | None  # "Name · contact", as the visitor left it
    requested_at: float | None


@router.get("/me")
async def me(request: Request, auth: CookieAuth) -> MeOut:
    session, member = auth
    t = await ctx_of(request).db().get_tenant(member.tenant_id)
    if t is None:
        raise ApiError(401, "unauthorized", "sign in to the console first")
    return MeOut(
        staff=MeStaffOut(
            id=member.id,
            name=member.name,
            email=member.email,
            presence=member.presence,
            wrapup_until=member.wrapup_until,
        ),
        tenant=MeTenantOut(id=t.id, name=t.name),
        csrf=session.csrf,
    )


@router.post("/me/token", status_code=201)
async def console_token(request: Request, auth: CookieAuth) -> StaffTokenOut:
    session, member = auth
    check_csrf(request, session)
    if not member.is_staff:  # an admin who answers no calls (any more) has no console
        raise ApiError(403, "forbidden", "you do not answer calls; ask an admin to add you")
    ctx = ctx_of(request)
    now = now_of(request)
    ttl = min(DEFAULT_TOKEN_TTL, int(session.expires_at - now))
    if ttl < MIN_TOKEN_TTL:
        raise ApiError(401, "unauthorized", "the session is about to end; sign in again")
    token, record = ctx.signer.issue(
        tenant_id=member.tenant_id,
        call_id=CONSOLE,
        role=Role.STAFF,
        staff_id=member.id,
        now=now,
        ttl=ttl,
    )
    await ctx.db().save_token(dataclasses.replace(record, parent=session.id_hash))
    return StaffTokenOut(token=token, token_id=record.id, expires_at=record.expires_at)


async def member_links(store: Store, member: Staff) -> dict[str, str]:
    """The links that ring ``member`` (id -> name)."""
    team = await store.list_staff(member.tenant_id)
    return {
        k.id: k.name
        for k in await store.list_links(member.tenant_id)
        if member.id in {s.id for s in machine.rung_staff(k, team)}
    }


async def open_callbacks(store: Store, member: Staff) -> list[tuple[Call, str | None]]:
    """Open callback requests on the links that ring ``member``, oldest first."""
    links = await member_links(store, member)
    return [
        (c, links.get(c.link_id)) for c in await store.list_callbacks(member.tenant_id, list(links))
    ]


@router.get("/callbacks")
async def list_callbacks(request: Request, auth: StaffAuth) -> list[CallbackItemOut]:
    found = await open_callbacks(ctx_of(request).db(), auth[1])
    return [
        CallbackItemOut(
            call=CallOut.for_staff(c),
            link_name=name,
            name_contact=c.visitor_ref,
            requested_at=c.callback_at,
        )
        for c, name in found
    ]


@router.post(
    "/callbacks/{call_id}/done", responses={404: {"model": ErrorOut}, 409: {"model": ErrorOut}}
)
async def callback_done(request: Request, call_id: Id, auth: StaffAuth) -> CallOut:
    _, member = auth
    store = ctx_of(request).db()
    call = await store.get_call(member.tenant_id, call_id)
    if call is None or call.callback_state is None:
        raise not_found("callback request")
    if call.link_id not in await member_links(store, member):
        raise not_found("callback request")
    if not await store.close_callback(member.tenant_id, call.id, member.id, now_of(request)):
        raise ApiError(409, "conflict", "this callback request was already marked done")
    await callbacks_changed(store, call)
    done = dataclasses.replace(call, callback_state=Callback.DONE, callback_done_by=member.id)
    return CallOut.for_staff(done)
