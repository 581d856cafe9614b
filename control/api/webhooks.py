"""A tenant's webhooks (a tenant API key): endpoints for call events, their signing secrets,
the delivery log and "send again" (control/webhooks.py, docs/webhooks.md).

- ``GET /v1/webhooks``, ``POST /v1/webhooks`` (the secret in the answer, shown once),
  ``GET|PATCH|DELETE /v1/webhooks/{id}``;
- ``POST /v1/webhooks/{id}/rotate``: a new secret (shown once); the old one still signs
  (a second signature) for ``grace_seconds`` (default a day);
- ``GET /v1/webhooks/deliveries`` (``endpoint``, ``limit``, ``cursor``): newest first;
- ``POST /v1/webhooks/deliveries/{id}/retry``: send again, with the same idempotency id.

An endpoint's URL must be ``https://`` and its host not in a private, loopback, link-local or
other special-purpose range (resolved now; checked again at each delivery): a 422 naming
``url`` otherwise. The handlers take the tenant id as a parameter, so the dashboard's twins
(:mod:`control.api.dashhooks`) call them with the tenant of the admin's session.
"""

from __future__ import annotations

import dataclasses
import uuid

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from control.api.deps import (
    ApiError,
    Cursor,
    Id,
    IdQuery,
    Limit,
    TenantId,
    ctx_of,
    invalid,
    not_found,
    now_of,
)
from control.hookworker import hook_policy
from control.models import HOOK_EVENTS, Delivery, Hook
from control.schemas import ErrorOut, Strict
from control.store import Invalid
from control.webhooks import HOOK_CHANNEL, MAX_URL, Refused, new_secret

DEFAULT_GRACE = 24 * 3600.0  # the old secret still signs this long after a rotation
MAX_GRACE = 7 * 24 * 3600.0
DELIVERY_PAGE = 50

router = APIRouter(
    prefix="/v1",
    responses={401: {"model": ErrorOut}, 404: {"model": ErrorOut}, 422: {"model": ErrorOut}},
)


class HookIn(Strict):
    url: str = Field(max_length=MAX_URL)
    events: list[str] = Field(default_factory=lambda: list(HOOK_EVENTS), max_length=10)
    include_visitor: bool = False
    active: bool = True


class HookPatch(Strict):
    url: str | None = Field(default=None, max_length=MAX_URL)
    events: list[str] | None = Field(default=None, max_length=10)
    include_visitor: bool | None = None
    active: bool | None = None


class RotateIn(Strict):
    grace_seconds: float = Field(default=DEFAULT_GRACE, ge=0, le=MAX_GRACE)


class HookOut(BaseModel):
    id: str
    url: str
    events: list[str]
    include_visitor: bool
    active: bool
    created_at: float
    previous_secret_until: float | None  # a rotation's grace: the old secret signs until then
    secret: str | None = None  # only in the answer that made it (create, rotate)

    @classmethod
    def of(cls, h: Hook, now: float, secret: bool = False) -> HookOut:
        grace = h.prev_until if h.prev_secret and h.prev_until and h.prev_until > now else None
        return cls(
            id=h.id,
            url=h.url,
            events=h.events,
            include_visitor=h.include_visitor,
            active=h.active,
            created_at=h.created_at,
            previous_secret_until=grace,
            secret=h.secret if secret else None,
        )


class DeliveryOut(BaseModel):
    id: str  # the idempotency id the receiver saw
    endpoint_id: str
    event: str
    call_id: str | None
    state: str
    attempts: int
    next_attempt_at: float | None  # pending only
    last_status: int | None
    last_error: str | None  # why the last attempt failed, in English
    last_error_code: str | None  # the same for programs: one of HOOK_ERRORS (docs/webhooks.md)
    last_error_params: dict[str, str | int | float]  # what the code's sentence needs
    created_at: float
    done_at: float | None
    payload: str  # the JSON body sent

    @classmethod
    def of(cls, d: Delivery) -> DeliveryOut:
        return cls(
            id=d.id,
            endpoint_id=d.endpoint_id,
            event=d.event,
            call_id=d.call_id,
            state=str(d.state),
            attempts=d.attempts,
            next_attempt_at=d.next_attempt_at if d.state == "pending" else None,
            last_status=d.last_status,
            last_error=d.last_error,
            last_error_code=d.last_error_code,
            last_error_params=d.last_error_params,
            created_at=d.created_at,
            done_at=d.done_at,
            payload=d.payload,
        )


class DeliveriesOut(BaseModel):
    deliveries: list[DeliveryOut]
    next_cursor: str | None


def _events(events: list[str]) -> list[str]:
    unknown = [e for e in events if e not in HOOK_EVENTS]
    if unknown:
        known = ", ".join(HOOK_EVENTS)
        raise invalid(
            "events",
            f"unknown event {unknown[0]!r}; one of {known}",
            "events_unknown",
            {"event": unknown[0], "known": known},
        )
    if not events:
        raise invalid("events", "choose at least one event", "events_none")
    return [e for e in HOOK_EVENTS if e in events]


async def _url(request: Request, url: str) -> str:
    try:
        return await hook_policy(request.app).check(url.strip())
    except Refused as e:
        raise ApiError(
            422, "invalid", str(e), field="url", reason=e.reason, params=dict(e.params)
        ) from None


async def _hook(request: Request, tenant_id: str, hook_id: str) -> Hook:
    h = await ctx_of(request).db().get_hook(tenant_id, hook_id)
    if h is None:
        raise not_found("webhook endpoint")
    return h


@router.get("/webhooks")
async def list_hooks(request: Request, tenant_id: TenantId) -> list[HookOut]:
    now = now_of(request)
    return [HookOut.of(h, now) for h in await ctx_of(request).db().list_hooks(tenant_id)]


@router.post("/webhooks", status_code=201)
async def create_hook(request: Request, tenant_id: TenantId, body: HookIn) -> HookOut:
    """A new endpoint; the answer carries its signing secret, shown this once."""
    ctx = ctx_of(request)
    events = _events(body.events)
    url = await _url(request, body.url)
    store = ctx.db()
    if await store.count_hooks(tenant_id) >= ctx.settings.hook_endpoints:
        most = ctx.settings.hook_endpoints
        raise invalid(
            "url",
            f"at most {most} endpoints; delete one",
            "hooks_too_many",
            {"max": most},
            status=409,
            code="too_many",
        )
    hook = Hook(
        id=uuid.uuid4().hex,
        tenant_id=tenant_id,
        url=url,
        events=events,
        secret=new_secret(),
        include_visitor=body.include_visitor,
        active=body.active,
        created_at=now_of(request),
    )
    await store.create_hook(hook)
    return HookOut.of(hook, hook.created_at, secret=True)


@router.get("/webhooks/deliveries")
async def list_deliveries(
    request: Request,
    tenant_id: TenantId,
    endpoint: IdQuery = None,
    limit: Limit = DELIVERY_PAGE,
    cursor: Cursor = None,
) -> DeliveriesOut:
    """The delivery log, newest first (``endpoint``: one endpoint's only)."""
    try:
        page, nxt = await ctx_of(request).db().list_deliveries(tenant_id, endpoint, limit, cursor)
    except Invalid as e:
        raise ApiError(422, "invalid", f"cursor: {e}") from None
    return DeliveriesOut(deliveries=[DeliveryOut.of(d) for d in page], next_cursor=nxt)


@router.post("/webhooks/deliveries/{delivery_id}/retry", status_code=202)
async def retry_delivery(request: Request, tenant_id: TenantId, delivery_id: Id) -> DeliveryOut:
    """Send again: the delivery is queued anew with its id and payload."""
    store = ctx_of(request).db()
    if not await store.requeue_delivery(tenant_id, delivery_id, now_of(request)):
        raise not_found("delivery")
    await store.notify(HOOK_CHANNEL, "")
    d = await store.get_delivery(tenant_id, delivery_id)
    if d is None:
        raise not_found("delivery")
    return DeliveryOut.of(d)


@router.get("/webhooks/{hook_id}")
async def get_hook(request: Request, tenant_id: TenantId, hook_id: Id) -> HookOut:
    return HookOut.of(await _hook(request, tenant_id, hook_id), now_of(request))


@router.patch("/webhooks/{hook_id}")
async def update_hook(
    request: Request, tenant_id: TenantId, hook_id: Id, body: HookPatch
) -> HookOut:
    hook = await _hook(request, tenant_id, hook_id)
    changes: dict[str, object] = {}
    if body.events is not None:
        changes["events"] = _events(body.events)
    if body.url is not None and body.url.strip() != hook.url:
        changes["url"] = await _url(request, body.url)
    if body.include_visitor is not None:
        changes["include_visitor"] = body.include_visitor
    if body.active is not None:
        changes["active"] = body.active
    hook = dataclasses.replace(hook, **changes)  # type: ignore[arg-type]
    if not await ctx_of(request).db().update_hook(hook):
        raise not_found("webhook endpoint")
    return HookOut.of(hook, now_of(request))


@router.delete("/webhooks/{hook_id}", status_code=204)
async def delete_hook(request: Request, tenant_id: TenantId, hook_id: Id) -> Response:
    """The endpoint and its delivery log; nothing more is sent to it."""
    if not await ctx_of(request).db().delete_hook(tenant_id, hook_id):
        raise not_found("webhook endpoint")
    return Response(status_code=204)


@router.post("/webhooks/{hook_id}/rotate")
async def rotate_secret(
    request: Request, tenant_id: TenantId, hook_id: Id, body: RotateIn | None = None
) -> HookOut:
    """A new signing secret (in the answer, shown once). The previous one keeps signing too
    (a second ``v1=`` signature) for ``grace_seconds``, so receivers can switch over."""
    hook = await _hook(request, tenant_id, hook_id)
    now = now_of(request)
    grace = (body or RotateIn()).grace_seconds
    hook = dataclasses.replace(
        hook,
        secret=new_secret(),
        prev_secret=hook.secret if grace > 0 else None,
        prev_until=now + grace if grace > 0 else None,
    )
    if not await ctx_of(request).db().update_hook(hook):
        raise not_found("webhook endpoint")
    return HookOut.of(hook, now, secret=True)
