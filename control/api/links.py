"""A tenant's call links: the buttons and shareable URLs visitors click (a tenant API key)."""

from __future__ import annotations

import dataclasses
import secrets
import uuid
from typing import Any

from fastapi import APIRouter, Request, Response

from control.api.deps import ApiError, Id, TenantId, ctx_of, invalid, not_found, now_of
from control.models import Link
from control.schemas import ErrorOut, LinkIn, LinkOut, LinkPatch
from control.store import Conflict

router = APIRouter(prefix="/v1", responses={401: {"model": ErrorOut}, 404: {"model": ErrorOut}})


async def _check_staff_ids(request: Request, tenant_id: str, ids: list[str]) -> None:
    known = {s.id for s in await ctx_of(request).db().list_staff(tenant_id)}
    unknown = sorted(set(ids) - known)
    if unknown:
        names = ", ".join(unknown)
        raise invalid(
            "ring_staff", f"unknown staff member(s): {names}", "staff_unknown", {"ids": names}
        )


async def _link(request: Request, tenant_id: str, link_id: str) -> Link:
    k = await ctx_of(request).db().get_link(tenant_id, link_id)
    if k is None:
        raise not_found("link")
    return k


@router.post("/links", status_code=201)
async def create_link(request: Request, tenant_id: TenantId, body: LinkIn) -> LinkOut:
    await _check_staff_ids(request, tenant_id, body.ring_staff)
    ctx = ctx_of(request)
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
            created_at=now_of(request),
            relay_only=body.relay_only,
        )
        try:
            await ctx.db().create_link(link)
        except Conflict:
            continue
        return LinkOut.of(link)
    raise ApiError(409, "conflict", "could not mint a unique public id; try again")


@router.get("/links")
async def list_links(request: Request, tenant_id: TenantId) -> list[LinkOut]:
    return [LinkOut.of(k) for k in await ctx_of(request).db().list_links(tenant_id)]


@router.get("/links/{link_id}")
async def get_link(request: Request, tenant_id: TenantId, link_id: Id) -> LinkOut:
    return LinkOut.of(await _link(request, tenant_id, link_id))


@router.patch("/links/{link_id}")
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
    if body.relay_only is not None:
        changes["relay_only"] = body.relay_only
    link = dataclasses.replace(link, **changes)
    await ctx_of(request).db().update_link(link)
    return LinkOut.of(link)


@router.delete("/links/{link_id}", status_code=204)
async def delete_link(request: Request, tenant_id: TenantId, link_id: Id) -> Response:
    if not await ctx_of(request).db().delete_link(tenant_id, link_id):
        raise not_found("link")
    return Response(status_code=204)
