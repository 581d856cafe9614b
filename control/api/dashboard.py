"""What the business's dashboard asks with its cookie session: the staff, the API keys.

Every route here needs a signed-in member with the admin role (:data:`AdminAuth`; anyone else
gets 403) and takes the tenant from that session, never from the request: another tenant's
member or key is a 404, exactly as in the API. Requests that change something also carry the
session's CSRF token and come from our origin (:data:`AdminWrite`).

- ``GET /v1/dashboard/staff``: the team, with who is available for calls right now;
- ``POST /v1/dashboard/staff``: a new member (name, email, roles) and their invitation link;
- ``POST /v1/dashboard/staff/{id}/invitation``: a new link for a member who has not used theirs;
- ``POST /v1/dashboard/staff/{id}/deactivate``: as the API's ``PATCH {"active": false}``
  (their sessions and tokens end, their sockets close); never oneself, nor the last admin;
- ``PATCH /v1/dashboard/staff/{id}`` ``{"roles": [...]}``: change what a member may do. The
  business always keeps an active admin (409 naming ``roles`` otherwise). A member who no
  longer answers calls loses their tokens (their console's socket closes, and it gets no new
  token); one who is no longer an admin is refused the next dashboard request (403);
- ``GET /v1/dashboard/keys``, ``POST /v1/dashboard/keys`` (the key shown once),
  ``DELETE /v1/dashboard/keys/{id}``: the tenant's API keys, as the operator's key routes.

Each change (and turning two-step sign-in on or off, :mod:`control.api.account`) is written to
the tenant's audit log (``GET /v1/audit``) by :func:`dashboard_audit`, with the admin who did it
as the actor (``staff:<id>``, their email as ``admin`` in the details) and whom or what it
concerned (``staff_id`` and ``name``, ``key_id`` and ``name``).
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field

from control import calls as machine
from control.api.deps import ApiError, Id, ctx_of, invalid, not_found, now_of, require_active
from control.api.sessions import check_csrf, cookie_session
from control.api.staff import (
    InvitationOut,
    check_email,
    email_taken,
    ended_staff,
    mint_invitation,
)
from control.api.tenants import mint_key
from control.lifecycle import revoke_tokens_of_staff
from control.models import ADMIN, STAFF, AuditEntry, Presence, Staff, WebSession
from control.privacy import audit
from control.schemas import ErrorOut, KeyOut, Name, Strict
from control.store import Conflict

FORBIDDEN = "this needs an admin of the business; ask one to make you an admin"
KEEP_ADMIN = "the business must keep at least one active admin; make someone else an admin first"

router = APIRouter(
    prefix="/v1/dashboard",
    include_in_schema=False,
    responses={401: {"model": ErrorOut}, 403: {"model": ErrorOut}, 404: {"model": ErrorOut}},
)


async def admin_session(request: Request) -> tuple[WebSession, Staff]:
    """The signed-in member if they are an admin: 401 signed out, 403 not an admin."""
    session, member = await cookie_session(request)
    if not member.is_admin:
        raise ApiError(403, "forbidden", FORBIDDEN)
    return session, member


async def admin_write(request: Request) -> tuple[WebSession, Staff]:
    """:func:`admin_session`, for a request that changes something: CSRF and origin too."""
    session, member = await admin_session(request)
    check_csrf(request, session)
    return session, member


AdminAuth = Annotated[tuple[WebSession, Staff], Depends(admin_session)]
AdminWrite = Annotated[tuple[WebSession, Staff], Depends(admin_write)]


async def dashboard_audit(request: Request, by: Staff, action: str, **details: Any) -> None:
    """Write what admin ``by`` just did to their tenant's audit log (``GET /v1/audit``)."""
    entry = AuditEntry(
        tenant_id=by.tenant_id,
        at=now_of(request),
        actor=f"staff:{by.id}",
        action=action,
        details={"admin": by.email, **details},
    )
    await audit(request.app, ctx_of(request).db(), entry)


# --- staff -------------------------------------------------------------------------------------


class TeamMemberOut(BaseModel):
    id: str
    name: str
    email: str | None
    roles: list[str]
    active: bool
    has_password: bool  # the invitation was used
    presence: Presence
    available_now: bool  # a call would ring them now: available, no wrap-up, console open
    seen_at: float | None
    you: bool

    @classmethod
    def of(cls, m: Staff, me: Staff, now: float) -> TeamMemberOut:
        return cls(
            id=m.id,
            name=m.name,
            email=m.email,
            roles=m.roles,
            active=m.active,
            has_password=m.password_hash is not None,
            presence=m.presence,
            available_now=machine.available(m, now) and machine.on_console(m, now),
            seen_at=m.seen_at,
            you=m.id == me.id,
        )


class NewMemberIn(Strict):
    name: Name
    email: str = Field(max_length=320)
    admin: bool = False  # the dashboard
    staff: bool = True  # the console: answers calls


class InvitedOut(BaseModel):
    member: TeamMemberOut
    invitation: InvitationOut


async def _member(request: Request, tenant_id: str, staff_id: str) -> Staff:
    found = await ctx_of(request).db().get_staff(tenant_id, staff_id)
    if found is None:
        raise not_found("staff member")
    return found


@router.get("/staff")
async def team(request: Request, auth: AdminAuth) -> list[TeamMemberOut]:
    me = auth[1]
    now = now_of(request)
    members = await ctx_of(request).db().list_staff(me.tenant_id)
    return [TeamMemberOut.of(m, me, now) for m in members]


@router.post("/staff", status_code=201, responses={409: {"model": ErrorOut}})
async def add_member(request: Request, body: NewMemberIn, auth: AdminWrite) -> InvitedOut:
    me = auth[1]
    email = check_email(body.email)
    roles = [r for r, on in ((STAFF, body.staff), (ADMIN, body.admin)) if on]
    if not roles:
        raise invalid("roles", "choose at least one of answering calls and admin", "roles_none")
    store = ctx_of(request).db()
    if await store.find_staff_by_email(email) is not None:
        raise email_taken()
    member = Staff(
        id=uuid.uuid4().hex,
        tenant_id=me.tenant_id,
        name=body.name,
        created_at=now_of(request),
        email=email,
        roles=roles,
    )
    try:
        async with store.transaction():  # the member, their link and the audit entry
            await store.create_staff(member)
            link = await mint_invitation(request, member, email)
            await dashboard_audit(
                request, me, "staff_invite", staff_id=member.id, name=member.name, roles=roles
            )
    except Conflict:  # taken meanwhile
        raise email_taken() from None
    return InvitedOut(member=TeamMemberOut.of(member, me, now_of(request)), invitation=link)


@router.post("/staff/{staff_id}/invitation", status_code=201, responses={409: {"model": ErrorOut}})
async def reinvite(request: Request, staff_id: Id, auth: AdminWrite) -> InvitationOut:
    member = await _member(request, auth[1].tenant_id, staff_id)
    require_active(member)
    if member.email is None:
        raise invalid(
            "email", "this member has no email to invite", "email_none", status=409, code="conflict"
        )
    async with ctx_of(request).db().transaction():
        link = await mint_invitation(request, member, member.email)
        await dashboard_audit(
            request, auth[1], "staff_invite", staff_id=member.id, name=member.name, again=True
        )
    return link


@router.post("/staff/{staff_id}/deactivate", responses={409: {"model": ErrorOut}})
async def deactivate(request: Request, staff_id: Id, auth: AdminWrite) -> TeamMemberOut:
    me = auth[1]
    member = await _member(request, me.tenant_id, staff_id)
    if member.id == me.id:
        raise ApiError(
            409,
            "conflict",
            "you cannot deactivate yourself; ask another admin",
            reason="self_deactivate",
        )
    if member.active:
        member = dataclasses.replace(member, active=False)
        store = ctx_of(request).db()
        try:  # an admin demoted meanwhile (by the one deactivated) may leave no admin
            async with store.transaction():  # deactivated and audited, or neither
                if not await store.set_staff_access(me.tenant_id, member.id, active=False):
                    raise not_found("staff member")
                await dashboard_audit(
                    request, me, "staff_deactivate", staff_id=member.id, name=member.name
                )
        except Conflict:
            raise ApiError(409, "conflict", KEEP_ADMIN, reason="admin_last") from None
        await ended_staff(request, member)  # sessions, tokens and sockets: after the commit
    return TeamMemberOut.of(member, me, now_of(request))


class RolesIn(Strict):
    roles: list[str] = Field(max_length=2)


@router.patch("/staff/{staff_id}", responses={409: {"model": ErrorOut}, 422: {"model": ErrorOut}})
async def set_roles(
    request: Request, staff_id: Id, body: RolesIn, auth: AdminWrite
) -> TeamMemberOut:
    """Change a member's roles (``staff``: answers calls in the console; ``admin``: the
    dashboard). What they lose takes effect at once."""
    me = auth[1]
    unknown = [r for r in body.roles if r not in (STAFF, ADMIN)]
    if unknown:
        raise invalid(
            "roles",
            f"{unknown[0]!r} is not a role (staff or admin)",
            "role_unknown",
            {"role": unknown[0]},
        )
    roles = [r for r in (STAFF, ADMIN) if r in body.roles]
    if not roles:
        raise invalid("roles", "choose at least one of answering calls and admin", "roles_none")
    store = ctx_of(request).db()
    member = await _member(request, me.tenant_id, staff_id)
    require_active(member)
    before = [r for r in (STAFF, ADMIN) if r in member.roles]
    if roles != before:
        try:
            async with store.transaction():  # changed and audited, or neither
                if not await store.set_staff_access(me.tenant_id, member.id, roles=roles):
                    raise not_found("staff member")
                await dashboard_audit(
                    request,
                    me,
                    "staff_roles",
                    staff_id=member.id,
                    name=member.name,
                    roles=roles,
                    previous=before,
                )
        except Conflict:
            raise invalid("roles", KEEP_ADMIN, "admin_last", status=409, code="conflict") from None
        if STAFF in before and STAFF not in roles:  # no more calls: the console's tokens go
            await revoke_tokens_of_staff(store, me.tenant_id, member.id, now_of(request))
        member = dataclasses.replace(member, roles=roles)
    return TeamMemberOut.of(member, me, now_of(request))


# --- API keys ----------------------------------------------------------------------------------


class KeyItemOut(BaseModel):
    id: str
    name: str | None
    created_at: float
    revoked_at: float | None


class NewKeyIn(Strict):
    name: Name = Field(max_length=100)


@router.get("/keys")
async def keys(request: Request, auth: AdminAuth) -> list[KeyItemOut]:
    found = await ctx_of(request).db().list_api_keys(auth[1].tenant_id)
    return [
        KeyItemOut(id=k.id, name=k.name, created_at=k.created_at, revoked_at=k.revoked_at)
        for k in sorted(found, key=lambda k: (-k.created_at, k.id))
    ]


@router.post("/keys", status_code=201)
async def create_key(request: Request, body: NewKeyIn, auth: AdminWrite) -> KeyOut:
    async def audited(key_id: str) -> None:
        await dashboard_audit(request, auth[1], "key_create", key_id=key_id, name=body.name)

    return await mint_key(request, auth[1].tenant_id, body.name, audited)


@router.delete("/keys/{key_id}", status_code=204)
async def revoke_key(request: Request, key_id: Id, auth: AdminWrite) -> Response:
    store = ctx_of(request).db()
    names = {k.id: k.name for k in await store.list_api_keys(auth[1].tenant_id)}
    async with store.transaction():  # revoked and audited, or neither
        if not await store.revoke_api_key(auth[1].tenant_id, key_id, now_of(request)):
            raise not_found("active key")
        await dashboard_audit(request, auth[1], "key_revoke", key_id=key_id, name=names.get(key_id))
    return Response(status_code=204)
