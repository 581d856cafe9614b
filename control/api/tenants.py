"""The operator's routes: tenants and their API keys (an operator key).

Creating a tenant with ``admin_email`` also creates its first admin (a staff member with the
admin role: the dashboard) and answers an invitation link where they set their password.

A change of a tenant's settings (:func:`change_tenant`: the operator's ``PATCH`` here, an
admin's in the dashboard) writes a ``settings`` entry to the tenant's audit log: who, and each
field changed from what to what.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request, Response

from control.api.deps import ApiError, Id, Operator, ctx_of, not_found, now_of
from control.api.staff import check_email, mint_invitation
from control.api.subjects import write_audit
from control.keys import new_api_key
from control.models import ADMIN, Staff, Tenant
from control.schemas import (
    AdminCreated,
    ErrorOut,
    KeyOut,
    TenantCreated,
    TenantIn,
    TenantOut,
    TenantPatch,
    TenantSettingsIn,
)
from control.store import Conflict

router = APIRouter(
    prefix="/v1",
    dependencies=[Operator],
    responses={401: {"model": ErrorOut}, 404: {"model": ErrorOut}},
)


OPERATOR = "operator"  # the audit log's actor for the operator's changes


async def change_tenant(request: Request, t: Tenant, body: TenantSettingsIn, actor: str) -> Tenant:
    """Apply the fields ``body`` gives (for a :class:`TenantPatch`, ``click_limits`` too: a
    null limit follows the operator's default again), store the tenant once, and audit what
    changed (nothing changed: nothing stored, nothing written)."""
    given = body.model_dump(exclude_unset=True, exclude={"click_limits"})
    fields = {k: v for k, v in given.items() if v is not None}
    limits = dict(t.click_limits)
    if isinstance(body, TenantPatch) and body.click_limits is not None:
        for name, value in body.click_limits.model_dump(exclude_unset=True).items():
            if value is None:
                limits.pop(name, None)
            else:
                limits[name] = value
    changed = dataclasses.replace(t, **fields, click_limits=limits)
    diff: dict[str, Any] = {}
    for name in ("name", "allowed_regions", "retention_months", "click_limits"):
        old, new = getattr(t, name), getattr(changed, name)
        if old != new:
            diff[name] = {"from": old, "to": new}
    if not diff:
        return t
    store = ctx_of(request).db()
    async with store.transaction():  # stored and audited, or neither
        await store.update_tenant(changed)
        await write_audit(request, t.id, actor, "settings", None, changes=diff)
    return changed


async def mint_key(
    request: Request,
    tenant_id: str,
    name: str | None = None,
    audited: Callable[[str], Awaitable[None]] | None = None,
) -> KeyOut:
    """A new API key for the tenant: the key itself is in this answer only. ``audited(key_id)``
    writes its audit entry in the same transaction: the key is stored with it or not at all."""
    now = now_of(request)
    store = ctx_of(request).db()
    for _ in range(3):
        key, record = new_api_key(tenant_id, now)
        record.name = name
        try:
            async with store.transaction():  # one per try: a failed insert ends its transaction
                await store.add_api_key(record)
                if audited is not None:
                    await audited(record.id)
        except Conflict:
            continue
        return KeyOut(id=record.id, key=key, created_at=now, name=name)
    raise ApiError(409, "conflict", "could not mint a unique key; try again")


@router.post("/tenants", status_code=201, responses={409: {"model": ErrorOut}})
async def create_tenant(request: Request, body: TenantIn) -> TenantCreated:
    store = ctx_of(request).db()
    email = None
    if body.admin_email is not None:  # checked before anything is stored
        email = check_email(body.admin_email, "admin_email")
        if await store.find_staff_by_email(email) is not None:
            raise ApiError(409, "conflict", "admin_email: a staff member already has this email")
    now = now_of(request)
    t = Tenant(
        id=uuid.uuid4().hex,
        name=body.name,
        allowed_regions=body.allowed_regions,
        retention_months=body.retention_months,
        created_at=now,
    )
    await store.create_tenant(t)
    out = TenantCreated(tenant=TenantOut.of(t), api_key=await mint_key(request, t.id))
    if email is not None:
        admin = Staff(
            id=uuid.uuid4().hex,
            tenant_id=t.id,
            name=body.admin_name or email.split("@", 1)[0][:100],
            created_at=now,
            email=email,
            roles=[ADMIN],
        )
        await store.create_staff(admin)
        link = await mint_invitation(request, admin, email)
        out.admin = AdminCreated(
            staff_id=admin.id, email=email, invitation_url=link.url, expires_at=link.expires_at
        )
    return out


@router.get("/tenants/{tenant_id}")
async def get_tenant(request: Request, tenant_id: Id) -> TenantOut:
    t = await ctx_of(request).db().get_tenant(tenant_id)
    if t is None:
        raise not_found("tenant")
    return TenantOut.of(t)


@router.patch("/tenants/{tenant_id}", responses={422: {"model": ErrorOut}})
async def update_tenant(request: Request, tenant_id: Id, body: TenantPatch) -> TenantOut:
    """Change a tenant's name, regions, retention or click limits (the fields given; in
    ``click_limits`` a null field follows the operator's default again)."""
    t = await ctx_of(request).db().get_tenant(tenant_id)
    if t is None:
        raise not_found("tenant")
    return TenantOut.of(await change_tenant(request, t, body, OPERATOR))


@router.post("/tenants/{tenant_id}/keys", status_code=201)
async def create_key(request: Request, tenant_id: Id) -> KeyOut:
    if await ctx_of(request).db().get_tenant(tenant_id) is None:
        raise not_found("tenant")
    return await mint_key(request, tenant_id)


@router.delete("/tenants/{tenant_id}/keys/{key_id}", status_code=204)
async def revoke_key(request: Request, tenant_id: Id, key_id: Id) -> Response:
    if not await ctx_of(request).db().revoke_api_key(tenant_id, key_id, now_of(request)):
        raise not_found("active key")
    return Response(status_code=204)
