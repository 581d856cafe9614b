"""The relay registry: nodes' heartbeats (the node secret) and the operator's view of them.

Relay nodes' quality summaries arrive at ``POST /v1/nodes/summaries``
(:mod:`control.api.calllogs`, with the call logs they feed)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from control.api.deps import Operator, ctx_of, node_auth, now_of
from control.metrics import metrics_of
from control.models import RelayNode
from control.schemas import ErrorOut, HeartbeatIn, HeartbeatOut, NodeOut
from control.selection import healthy
from control.tokens import CLOCK_SKEW, MAX_RELAY_TTL

router = APIRouter(prefix="/v1", responses={401: {"model": ErrorOut}})


@router.post("/nodes/heartbeat", dependencies=[Depends(node_auth)])
async def heartbeat(request: Request, body: HeartbeatIn) -> HeartbeatOut:
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
        )
        for n in await ctx.db().list_nodes()
    ]
