"""A tenant's staff members, their console tokens and their invitations (a tenant API key).

Deactivating a member (``PATCH {"active": false}``) or deleting them ends their console
sessions and revokes every token of theirs; their live sockets close at once
(:func:`control.lifecycle.revoke_staff`). ``POST /v1/staff/{id}/invitation`` sets the member's
email and returns a link, shown once, where they choose their password (then they sign in to
the console with email and password).
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Annotated

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, StringConstraints

from control.accounts import INVITATION_TTL, new_secret, normalize_email, secret_hash
from control.api.deps import (
    CONSOLE,
    ApiError,
    Id,
    TenantId,
    ctx_of,
    invalid,
    invalid_value,
    not_found,
    now_of,
    require_active,
)
from control.lifecycle import revoke_staff
from control.metrics import metrics_of
from control.models import Invitation, Role, Staff
from control.schemas import (
    ErrorOut,
    StaffIn,
    StaffOut,
    StaffPatch,
    StaffTokenOut,
    Strict,
    TtlIn,
)
from control.store import Conflict

router = APIRouter(prefix="/v1", responses={401: {"model": ErrorOut}, 404: {"model": ErrorOut}})


async def _staff(request: Request, tenant_id: str, staff_id: str) -> Staff:
    s = await ctx_of(request).db().get_staff(tenant_id, staff_id)
    if s is None:
        raise not_found("staff member")
    return s


@router.post("/staff", status_code=201)
async def create_staff(request: Request, tenant_id: TenantId, body: StaffIn) -> StaffOut:
    s = Staff(
        id=uuid.uuid4().hex,
        tenant_id=tenant_id,
        name=body.name,
        groups=list(dict.fromkeys(body.groups)),
        active=body.active,
        created_at=now_of(request),
    )
    await ctx_of(request).db().create_staff(s)
    return StaffOut.of(s)


@router.get("/staff")
async def list_staff(request: Request, tenant_id: TenantId) -> list[StaffOut]:
    return [StaffOut.of(s) for s in await ctx_of(request).db().list_staff(tenant_id)]


@router.get("/staff/{staff_id}")
async def get_staff(request: Request, tenant_id: TenantId, staff_id: Id) -> StaffOut:
    return StaffOut.of(await _staff(request, tenant_id, staff_id))


@router.patch("/staff/{staff_id}")
async def update_staff(
    request: Request, tenant_id: TenantId, staff_id: Id, body: StaffPatch
) -> StaffOut:
    s = await _staff(request, tenant_id, staff_id)
    changes = body.model_dump(exclude_unset=True, exclude_none=True)
    if "groups" in changes:
        changes["groups"] = list(dict.fromkeys(changes["groups"]))
    was_active = s.active
    s = dataclasses.replace(s, **changes)
    await ctx_of(request).db().update_staff(s)
    if was_active and not s.active:
        await ended_staff(request, s)
    return StaffOut.of(s)


async def ended_staff(request: Request, member: Staff) -> None:
    """A member just deactivated: their web sessions and tokens end, their sockets close."""
    ended = await revoke_staff(ctx_of(request).db(), member.tenant_id, member.id, now_of(request))
    metrics_of(request.app).web_sessions_revoked.labels(reason="staff").inc(ended)


@router.delete("/staff/{staff_id}", status_code=204)
async def delete_staff(request: Request, tenant_id: TenantId, staff_id: Id) -> Response:
    store = ctx_of(request).db()
    if not await store.delete_staff(tenant_id, staff_id):  # their web sessions go with them
        raise not_found("staff member")
    await revoke_staff(store, tenant_id, staff_id, now_of(request))
    return Response(status_code=204)


@router.post("/staff/{staff_id}/token", status_code=201)
async def staff_token(
    request: Request, tenant_id: TenantId, staff_id: Id, body: TtlIn | None = None
) -> StaffTokenOut:
    """A staff console token: not tied to one call, short-lived (default one hour)."""
    s = await _staff(request, tenant_id, staff_id)
    require_active(s)
    ttl = (body or TtlIn()).ttl
    ctx = ctx_of(request)
    token, record = ctx.signer.issue(
        tenant_id=tenant_id,
        call_id=CONSOLE,
        role=Role.STAFF,
        staff_id=s.id,
        now=now_of(request),
        ttl=ttl,
    )
    await ctx.db().save_token(record)
    return StaffTokenOut(token=token, token_id=record.id, expires_at=record.expires_at)


# --- invitations -----------------------------------------------------------------------------


class InvitationIn(Strict):
    email: Annotated[str, StringConstraints(max_length=320)]


class InvitationOut(BaseModel):
    url: str  # where the member sets their password; shown once
    expires_at: float


@router.post(
    "/staff/{staff_id}/invitation",
    status_code=201,
    responses={409: {"model": ErrorOut}, 422: {"model": ErrorOut}},
)
async def invite(
    request: Request, tenant_id: TenantId, staff_id: Id, body: InvitationIn
) -> InvitationOut:
    """Set the member's email and mint an invitation link (valid 7 days, used once); one not
    yet used is replaced. The link's base is ``--public-url``, else this request's."""
    s = await _staff(request, tenant_id, staff_id)
    require_active(s)
    email = check_email(body.email)
    try:
        await ctx_of(request).db().set_staff_fields(tenant_id, s.id, {"email": email})
    except Conflict:
        raise email_taken() from None
    return await mint_invitation(request, s, email)


def check_email(text: str, field: str = "email") -> str:
    """A sign-in email, normalised; 422 naming ``field`` if it is not one."""
    try:
        return normalize_email(text)
    except ValueError as e:
        raise invalid_value(field, e) from None


def email_taken() -> ApiError:
    return invalid(
        "email", "another staff member has this email", "email_taken", status=409, code="conflict"
    )


async def mint_invitation(request: Request, member: Staff, email: str) -> InvitationOut:
    """A new invitation link for ``member`` (whose email is ``email``), replacing one not yet
    used; the link is in this answer only."""
    ctx = ctx_of(request)
    now = now_of(request)
    secret = new_secret()
    invitation = Invitation(
        secret_hash(secret), member.tenant_id, member.id, email, now, now + INVITATION_TTL
    )
    await ctx.db().replace_invitation(invitation)
    base = ctx.settings.public_url or str(request.base_url).rstrip("/")
    return InvitationOut(url=f"{base}/console/invite/{secret}", expires_at=invitation.expires_at)
