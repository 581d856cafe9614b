"""The relay registry: nodes' enrolment and heartbeats, and the operator's view of them.

Enrolment binds a node id to a credential of its own. ``POST /v1/nodes/enrol`` (the shared
node secret, or the operator key) gives an id that has none a fresh random credential, once;
only its SHA-256 is stored. From then on heartbeats and summaries of that id need that
credential: the shared secret alone is refused (409, counted), so whoever else holds it cannot
take the id over (its TURN URLs) or post its summaries. An id that never enrolled still
heartbeats with the shared secret (nodes older than enrolment). The operator revokes a
credential with ``DELETE /v1/nodes/{node_id}/credential``; the node then enrols again.

Relay nodes' quality summaries arrive at ``POST /v1/nodes/summaries``
(:mod:`control.api.calllogs`, with the call logs they feed)."""

from __future__ import annotations

import logging
import secrets
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from control.api.deps import (
    NODE_CREDENTIAL_PREFIX,
    ApiError,
    Id,
    NodeCaller,
    Operator,
    bearer_token,
    credential_hash,
    ctx_of,
    node_auth,
    node_may_speak_for,
    node_refused,
    not_found,
    now_of,
    shared_node_secret,
)
from control.keys import Unauthorized, verify_operator_key
from control.metrics import metrics_of
from control.models import RelayNode
from control.schemas import EnrolIn, EnrolOut, ErrorOut, HeartbeatIn, HeartbeatOut, NodeOut
from control.selection import healthy
from control.tokens import CLOCK_SKEW, MAX_RELAY_TTL

log = logging.getLogger("clickacall.control.nodes")

router = APIRouter(prefix="/v1", responses={401: {"model": ErrorOut}})

Node = Annotated[NodeCaller, Depends(node_auth)]


async def enrol_auth(request: Request) -> None:
    """The shared node secret or an operator key."""
    presented = bearer_token(request)
    if ctx_of(request).settings.node_secrets and shared_node_secret(request, presented):
        return
    try:
        verify_operator_key(presented, ctx_of(request).settings.operator_keys)
    except Unauthorized:
        raise ApiError(401, "unauthorized", "invalid node secret or operator key") from None


@router.post(
    "/nodes/enrol",
    status_code=201,
    dependencies=[Depends(enrol_auth)],
    responses={409: {"model": ErrorOut}},
)
async def enrol(request: Request, body: EnrolIn) -> EnrolOut:
    """Give a node id that has no credential one of its own (shown once); 409 if it has one."""
    now = now_of(request)
    credential = NODE_CREDENTIAL_PREFIX + secrets.token_urlsafe(32)
    if not await ctx_of(request).db().enrol_node(body.node_id, credential_hash(credential), now):
        node_refused(request, "enrolled")
        raise ApiError(
            409,
            "node_enrolled",
            f"node {body.node_id} has already enrolled; if it lost its credential, the operator "
            f"revokes it (DELETE /v1/nodes/{body.node_id}/credential) and the node enrols again",
        )
    metrics_of(request.app).node_enrolments.inc()
    log.info("relay node %s enrolled", body.node_id)
    return EnrolOut(node_id=body.node_id, credential=credential, enrolled_at=now)


@router.delete(
    "/nodes/{node_id}/credential",
    status_code=204,
    dependencies=[Operator],
    responses={404: {"model": ErrorOut}},
)
async def revoke_credential(request: Request, node_id: Id) -> Response:
    """Revoke a node's credential: its requests are refused until it enrols again."""
    if not await ctx_of(request).db().revoke_node_credential(node_id):
        raise not_found("enrolled node")
    log.info("relay node %s: credential revoked by the operator", node_id)
    return Response(status_code=204)


@router.post("/nodes/heartbeat", responses={403: {"model": ErrorOut}, 409: {"model": ErrorOut}})
async def heartbeat(request: Request, body: HeartbeatIn, caller: Node) -> HeartbeatOut:
    await node_may_speak_for(request, caller, body.node_id)
    store = ctx_of(request).db()
    now = now_of(request)
    await store.upsert_node(
        RelayNode(
            id=body.node_id,
            region=body.region,
            urls=body.urls,
            allocations=body.allocations,
            packet_rate=body.packet_rate,
            cpu=body.cpu,
            draining=body.draining,
            last_heartbeat=now,
            registered_at=now,
        )
    )
    revoked = await store.revoked_since(revocation_floor(request, body.revocations_since, now))
    return HeartbeatOut(now=now, revoked=list(dict.fromkeys(tid for tid, _ in revoked)))


def revocation_floor(request: Request, since: float, now: float) -> float:
    """From when a node needs revocations: everything since its cursor (its last heartbeat
    the control plane answered), however long it was away, so a node that missed a day of
    revocations (or one whose clock or release lets an expired username live on) still
    hears each one. A node with no cursor (just started: it holds no allocation) or one
    older than ``revocation_window`` gets what could still matter: revocations newer than
    the longest relay credential's life (a credential is issued before its revocation and
    lives at most MAX_RELAY_TTL), plus the clock skew tokens allow."""
    live = now - MAX_RELAY_TTL - CLOCK_SKEW
    if since <= 0:
        return live
    if since < now - ctx_of(request).settings.revocation_window:
        metrics_of(request.app).revocation_window_hits.inc()
        return live
    return since


@router.get("/nodes", dependencies=[Operator])
async def list_nodes(request: Request) -> list[NodeOut]:
    """The relay registry as the operator sees it: every node that ever heartbeated."""
    ctx = ctx_of(request)
    store = ctx.db()
    now = now_of(request)
    return [
        NodeOut(
            id=n.id,
            region=n.region,
            urls=n.urls,
            allocations=n.allocations,
            packet_rate=n.packet_rate,
            cpu=n.cpu,
            draining=n.draining,
            healthy=healthy(n, now, ctx.settings.heartbeat_timeout),
            last_heartbeat=n.last_heartbeat,
            registered_at=n.registered_at,
            enrolled=await store.node_credential(n.id) is not None,
        )
        for n in await store.list_nodes()
    ]
