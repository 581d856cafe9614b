"""The dashboard's Privacy section and the business's own settings: the API's data-subject
routes (:mod:`control.api.subjects`) and the tenant's retention and regions
(:mod:`control.api.tenants`) for a signed-in admin, with the tenant from the cookie session.

- ``GET /v1/dashboard/subjects?ref|call_id|call_ref|key``: the API's export (the same
  function, so the same JSON and the same ``access`` audit entry); the page lists its calls;
- ``GET /v1/dashboard/subjects/export?...``: that export as a file to save
  (``Content-Disposition: attachment``);
- ``PATCH /v1/dashboard/subjects?...``: correct visitor fields; ``DELETE`` with ``mode``:
  erase; ``PATCH /v1/dashboard/calls/{id}``: one call's ``visitor_ref``;
- ``GET /v1/dashboard/audit?before=&limit=``: the audit log, newest first, with the names of
  the actors it mentions (members, API keys);
- ``GET /v1/dashboard/settings``, ``PATCH /v1/dashboard/settings``: retention months and
  allowed regions, with the API's rules (:class:`~control.schemas.TenantSettingsIn`), plus one
  of our own: a region must be one a relay node reports or one already allowed (a region with
  no relay would leave the business's calls without media). Audited as ``settings``.

Every change is audited with ``staff:<id>`` as the actor; writes need the CSRF token and our
origin (:data:`~control.api.dashboard.AdminWrite`). Another tenant's call is a 404, its
references find nothing, as in the API.
"""

from __future__ import annotations

import json
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel

from control.api.dashboard import AdminAuth, AdminWrite
from control.api.deps import PAGE, ApiError, Id, Limit, ctx_of, invalid
from control.api.subjects import (
    AuditPageOut,
    CallRefIn,
    ChangedOut,
    Select,
    SubjectCallOut,
    SubjectOut,
    SubjectPatch,
    audit_page,
    correct,
    erase,
    export,
    set_ref,
)
from control.api.tenants import change_tenant
from control.models import MAX_RETENTION_MONTHS, Staff, Tenant
from control.schemas import ErrorOut, TenantSettingsIn

router = APIRouter(
    prefix="/v1/dashboard",
    include_in_schema=False,
    responses={
        401: {"model": ErrorOut},
        403: {"model": ErrorOut},
        404: {"model": ErrorOut},
        422: {"model": ErrorOut},
    },
)


def actor_of(member: Staff) -> str:
    """The audit log's actor for an admin's act in the dashboard."""
    return f"staff:{member.id}"


# --- the data subject ----------------------------------------------------------------------------


@router.get("/subjects")
async def find(request: Request, auth: AdminAuth, sel: Select) -> SubjectOut:
    member = auth[1]
    return await export(request, member.tenant_id, actor_of(member), sel)


@router.get("/subjects/export")
async def export_file(request: Request, auth: AdminAuth, sel: Select) -> Response:
    member = auth[1]
    out = await export(request, member.tenant_id, actor_of(member), sel)
    body = json.dumps(out.model_dump(mode="json"), indent=2, ensure_ascii=False)
    name = f"visitor-{sel.by.replace('_', '-')}-export.json"
    return Response(
        body.encode(),
        media_type="application/json",
        headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            "Cache-Control": "no-store",
        },
    )


@router.patch("/subjects")
async def correct_subject(
    request: Request, auth: AdminWrite, sel: Select, body: SubjectPatch
) -> ChangedOut:
    member = auth[1]
    return await correct(request, member.tenant_id, actor_of(member), sel, body)


@router.delete("/subjects", responses={409: {"model": ErrorOut}})
async def erase_subject(
    request: Request,
    auth: AdminWrite,  # first: a staff member's 403 comes before the selector's 422
    sel: Select,
    mode: Literal["fields", "delete"] = "fields",
) -> ChangedOut:
    member = auth[1]
    return await erase(request, member.tenant_id, actor_of(member), sel, mode)


@router.patch("/calls/{call_id}")
async def set_visitor_ref(
    request: Request, call_id: Id, body: CallRefIn, auth: AdminWrite
) -> SubjectCallOut:
    member = auth[1]
    return await set_ref(request, member.tenant_id, actor_of(member), call_id, body)


# --- the audit log -------------------------------------------------------------------------------


class DashAuditOut(AuditPageOut):
    actors: dict[str, str]  # actor -> a name: "staff:<id>" -> the member, key id -> its name


@router.get("/audit")
async def audit_log(
    request: Request,
    auth: AdminAuth,
    before: Annotated[int | None, Query(ge=1)] = None,
    limit: Limit = PAGE,
) -> DashAuditOut:
    tenant_id = auth[1].tenant_id
    page = await audit_page(request, tenant_id, limit, before=before, newest=True)
    store = ctx_of(request).db()
    names = {actor_of(s): s.name for s in await store.list_staff(tenant_id)}
    keys = {k.id: k.name or "" for k in await store.list_api_keys(tenant_id)}
    actors = {}
    for e in page.entries:
        if e.actor in names:
            actors[e.actor] = names[e.actor]
        elif e.actor in keys:
            actors[e.actor] = keys[e.actor]
    return DashAuditOut(**page.model_dump(), actors=actors)


# --- the business's settings ---------------------------------------------------------------------


class SettingsOut(BaseModel):
    retention_months: int
    allowed_regions: list[str]
    regions: list[str]  # what may be chosen: the relay nodes' regions and the current ones
    max_retention_months: int


async def _offered(request: Request, t: Tenant) -> list[str]:
    nodes = await ctx_of(request).db().list_nodes()
    return sorted({n.region for n in nodes} | set(t.allowed_regions))


async def _tenant(request: Request, tenant_id: str) -> Tenant:
    t = await ctx_of(request).db().get_tenant(tenant_id)
    if t is None:  # the session's tenant is gone
        raise ApiError(404, "not_found", "tenant not found")
    return t


async def _settings(request: Request, t: Tenant) -> SettingsOut:
    return SettingsOut(
        retention_months=t.retention_months,
        allowed_regions=t.allowed_regions,
        regions=await _offered(request, t),
        max_retention_months=MAX_RETENTION_MONTHS,
    )


@router.get("/settings")
async def settings(request: Request, auth: AdminAuth) -> SettingsOut:
    return await _settings(request, await _tenant(request, auth[1].tenant_id))


@router.patch("/settings")
async def change_settings(
    request: Request, body: TenantSettingsIn, auth: AdminWrite
) -> SettingsOut:
    member = auth[1]
    t = await _tenant(request, member.tenant_id)
    if body.allowed_regions is not None:
        offered = await _offered(request, t)
        unknown = [r for r in body.allowed_regions if r not in offered]
        if unknown:
            regions, choices = ", ".join(unknown), ", ".join(offered)
            raise invalid(
                "allowed_regions",
                f"no relay node serves {regions}; choose from {choices}",
                "region_not_served",
                {"regions": regions, "offered": choices},
            )
    t = await change_tenant(request, t, body, actor_of(member))
    return await _settings(request, t)
