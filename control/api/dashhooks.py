"""The dashboard's webhooks (``/v1/dashboard/webhooks``): twins of the API's routes
(:mod:`control.api.webhooks`) for the admin's cookie session, calling the same handlers with
the tenant of the session (never one from the request), so the checks and the 422s naming
their field are the API's. Reading needs :data:`AdminAuth`; changing, :data:`AdminWrite`
(CSRF and origin too)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from control.api import webhooks as api
from control.api.dashboard import AdminAuth, AdminWrite
from control.api.deps import Cursor, Id, IdQuery, Limit
from control.schemas import ErrorOut

router = APIRouter(
    prefix="/v1/dashboard",
    include_in_schema=False,
    responses={401: {"model": ErrorOut}, 403: {"model": ErrorOut}, 404: {"model": ErrorOut}},
)


@router.get("/webhooks")
async def list_hooks(request: Request, auth: AdminAuth) -> list[api.HookOut]:
    return await api.list_hooks(request, auth[1].tenant_id)


@router.post("/webhooks", status_code=201, responses={422: {"model": ErrorOut}})
async def create_hook(request: Request, body: api.HookIn, auth: AdminWrite) -> api.HookOut:
    return await api.create_hook(request, auth[1].tenant_id, body)


@router.get("/webhooks/deliveries")
async def list_deliveries(
    request: Request,
    auth: AdminAuth,
    endpoint: IdQuery = None,
    limit: Limit = 20,
    cursor: Cursor = None,
) -> api.DeliveriesOut:
    return await api.list_deliveries(request, auth[1].tenant_id, endpoint, limit, cursor)


@router.post("/webhooks/deliveries/{delivery_id}/retry", status_code=202)
async def retry_delivery(request: Request, delivery_id: Id, auth: AdminWrite) -> api.DeliveryOut:
    return await api.retry_delivery(request, auth[1].tenant_id, delivery_id)


@router.patch("/webhooks/{hook_id}", responses={422: {"model": ErrorOut}})
async def update_hook(
    request: Request, hook_id: Id, body: api.HookPatch, auth: AdminWrite
) -> api.HookOut:
    return await api.update_hook(request, auth[1].tenant_id, hook_id, body)


@router.delete("/webhooks/{hook_id}", status_code=204)
async def delete_hook(request: Request, hook_id: Id, auth: AdminWrite) -> Response:
    return await api.delete_hook(request, auth[1].tenant_id, hook_id)


@router.post("/webhooks/{hook_id}/rotate")
async def rotate_secret(request: Request, hook_id: Id, auth: AdminWrite) -> api.HookOut:
    return await api.rotate_secret(request, auth[1].tenant_id, hook_id, None)
