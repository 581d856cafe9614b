"""A tenant's staff members and their console tokens (a tenant API key)."""

from __future__ import annotations

import dataclasses
import uuid

from fastapi import APIRouter, Request, Response

from control.api.deps import CONSOLE, ApiError, Id, TenantId, ctx_of, not_found, now_of
from control.models import Role, Staff
from control.schemas import ErrorOut, StaffIn, StaffOut, StaffPatch, StaffTokenOut, TtlIn

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
    s = dataclasses.replace(s, **changes)
    await ctx_of(request).db().update_staff(s)
    return StaffOut.of(s)


@router.delete("/staff/{staff_id}", status_code=204)
async def delete_staff(request: Request, tenant_id: TenantId, staff_id: Id) -> Response:
    if not await ctx_of(request).db().delete_staff(tenant_id, staff_id):
        raise not_found("staff member")
    return Response(status_code=204)


@router.post("/staff/{staff_id}/token", status_code=201)
async def staff_token(
    request: Request, tenant_id: TenantId, staff_id: Id, body: TtlIn | None = None
) -> StaffTokenOut:
    """A staff console token: not tied to one call, short-lived (default one hour)."""
    s = await _staff(request, tenant_id, staff_id)
    if not s.active:
        raise ApiError(409, "inactive", "this staff member is inactive")
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
