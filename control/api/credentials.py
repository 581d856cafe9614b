"""Raw relay credentials for tenants with their own signalling (``POST /v1/credentials``,
revoked by ``DELETE /v1/credentials/{token_id}``), and revoking tokens (a tenant API key)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from control.api.deps import Id, TenantId, ctx_of, not_found, now_of
from control.api.relays import pick_node, relay_secret, visitor_prefix
from control.lifecycle import revoke_token as revoke
from control.schemas import CredentialsIn, CredentialsOut, ErrorOut, RevokedOut
from control.tokens import raw_credentials

router = APIRouter(prefix="/v1", responses={401: {"model": ErrorOut}, 404: {"model": ErrorOut}})


@router.post("/credentials", status_code=201, responses={503: {"model": ErrorOut}})
async def credentials(
    request: Request, tenant_id: TenantId, body: CredentialsIn | None = None
) -> CredentialsOut:
    """Raw ICE servers for tenants with their own signalling (revocable by ``token_id``)."""
    ctx = ctx_of(request)
    t = await ctx.db().get_tenant(tenant_id)
    if t is None:
        raise not_found("tenant")
    node = await pick_node(request, t.allowed_regions, visitor_prefix(request))
    secret = relay_secret(request, node.region)
    record, servers = raw_credentials(
        secret, tenant_id, {node.id: node.urls}, (body or CredentialsIn()).ttl, now_of(request)
    )
    await ctx.db().save_token(record)
    return CredentialsOut(token_id=record.id, iceServers=servers, expires_at=record.expires_at)


@router.delete("/credentials/{token_id}")
async def revoke_credentials(request: Request, tenant_id: TenantId, token_id: Id) -> RevokedOut:
    """Revoke raw credentials by their ``token_id`` (the part after the colon of their TURN
    username): the relay nodes learn it at their next heartbeat, tear down the allocations
    made with it and refuse it from then on. Idempotent; 404 for anything but this tenant's
    raw credentials (a call's tokens end with the call, or by ``/v1/tokens/{id}/revoke``)."""
    store = ctx_of(request).db()
    record = await store.get_token(token_id)
    if record is None or record.tenant_id != tenant_id or record.call_id or record.role:
        raise not_found("credentials")
    return RevokedOut(id=record.id, revoked_at=await revoke(store, record, now_of(request)))


@router.post("/tokens/{token_id}/revoke")
async def revoke_token(request: Request, tenant_id: TenantId, token_id: Id) -> RevokedOut:
    store = ctx_of(request).db()
    record = await store.get_token(token_id)
    if record is None or record.tenant_id != tenant_id:
        raise not_found("token")
    return RevokedOut(id=record.id, revoked_at=await revoke(store, record, now_of(request)))
