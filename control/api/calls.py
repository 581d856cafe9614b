"""Calls: a visitor's click, staff answering and declining, either party hanging up, and the
tenant's list of calls.

- the visitor: nothing for the click (``POST /v1/links/{public_id}/calls``), then its visitor
  token to hang up;
- staff: a console token for ringing calls, answer and reject (decline), then the call token
  the answer returned to hang up;
- the tenant (an API key): the calls, newest first, keyset-paged.

Every state change goes through :func:`control.lifecycle.transition`.
"""

from __future__ import annotations

import dataclasses
import functools
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Query, Request

from control import calls as machine
from control import privacy
from control.accounts import new_call_ref
from control.api.deps import (
    CONSOLE,
    PAGE,
    ApiError,
    Cursor,
    Id,
    Limit,
    Session,
    StaffAuth,
    TenantId,
    acting_staff,
    ctx_of,
    load_call,
    not_found,
    now_of,
    retry_after,
    settled,
)
from control.api.relays import ice_for, pick_node, relay_secret, ua_family, visitor_prefix
from control.lifecycle import (
    Policy,
    create_call,
    publish,
    ringing_for,
    signal_path,
    transition,
)
from control.metrics import metrics_of
from control.models import CALL_MEDIA, Call, CallStatus, Link, Media, Role, SessionToken
from control.schemas import (
    AnswerOut,
    CallOut,
    CallPageOut,
    ClickIn,
    ClickOut,
    ErrorOut,
    RingingOut,
)
from control.settings import ClickLimits
from control.store import Conflict, Store

router = APIRouter(prefix="/v1", responses={401: {"model": ErrorOut}, 404: {"model": ErrorOut}})


# --- the tenant's calls ------------------------------------------------------------------------


@router.get("/calls")
async def list_calls(
    request: Request,
    tenant_id: TenantId,
    status: CallStatus | None = None,
    since: Annotated[float | None, Query(ge=0)] = None,
    until: Annotated[float | None, Query(ge=0)] = None,
    limit: Limit = PAGE,
    cursor: Cursor = None,
) -> CallPageOut:
    store = ctx_of(request).db()
    page = await store.list_calls(tenant_id, status, since, until, limit, cursor)
    links = {k.id: k for k in await store.list_links(tenant_id)}
    out = [CallOut.of(await settled(request, c, links.get(c.link_id))) for c in page.calls]
    return CallPageOut(calls=out, next_cursor=page.next_cursor)


@router.get("/calls/{call_id}")
async def get_call(request: Request, tenant_id: TenantId, call_id: Id) -> CallOut:
    call, _ = await load_call(request, tenant_id, call_id)
    return CallOut.of(call, await ctx_of(request).db().list_declines(tenant_id, call_id))


# --- the visitor ---------------------------------------------------------------------------------


@router.post(
    "/links/{public_id}/calls",
    status_code=201,
    responses={
        409: {"model": ErrorOut},
        422: {"model": ErrorOut},
        429: {"model": ErrorOut},
        503: {"model": ErrorOut},
    },
)
async def click(request: Request, public_id: Id, body: ClickIn | None = None) -> ClickOut:
    """A visitor's click: a ringing call, its visitor token and the ICE servers to use.

    409 ``link_inactive``, ``link_closed`` or ``nobody_available`` (every member the link
    rings is away, in wrap-up or inactive): the visitor may leave a callback request instead.
    429 with ``Retry-After`` past the click limits (:class:`~control.settings.ClickLimits`,
    the tenant's own where set): ``throttled`` (this visitor), ``link_throttled`` (this
    link), ``link_ringing_limit`` or ``tenant_ringing_limit`` (calls ringing at once).
    """
    ctx = ctx_of(request)
    store = ctx.db()
    now = now_of(request)
    body = body or ClickIn()
    link = await store.get_link_by_public_id(public_id)
    if link is None:
        raise not_found("call link")
    try:
        machine.admit(link, now)
    except machine.LinkUnavailable as e:
        raise ApiError(409, f"link_{e.reason}", str(e)) from None
    media = choose_media(link, body.media)
    t = await store.get_tenant(link.tenant_id)
    if t is None:
        raise not_found("call link")
    key = privacy.visitor_key(request, t.id)
    limits = ctx.settings.click_limits.apply(t.click_limits)
    _throttle(request, limits, link, key, now)
    ringing = machine.ringable(link, await store.list_staff(link.tenant_id), now)
    if machine.nobody_available(link, ringing):
        raise ApiError(409, "nobody_available", NOBODY)
    rung = [m.id for m in ringing]
    prefix = visitor_prefix(request)
    node = await pick_node(request, t.allowed_regions, prefix, body.region_hint)
    relay_secret(request, node.region)  # before anything is stored
    browser, system = ua_family(request.headers.get("user-agent"))
    call = machine.ring(
        Call(
            id=uuid.uuid4().hex,
            tenant_id=t.id,
            link_id=link.id,
            relay_node=node.id,
            relay_region=node.region,
            visitor_prefix=prefix,
            visitor_browser=browser,
            visitor_os=system,
            visitor_key=key,
            media=media,
            rung=rung,
        ),
        now,
    )
    caps = functools.partial(_ringing_caps, request, limits, link, now)
    call = await create_with_ref(store, call, now, ctx.policy, caps)  # in its transaction
    token, record = ctx.signer.issue(tenant_id=t.id, call_id=call.id, role=Role.VISITOR, now=now)
    await store.save_token(record)
    await publish(store, call)
    servers, expiry = ice_for(request, node, record.id)
    return ClickOut(
        call_id=call.id,
        token=token,
        token_id=record.id,
        token_expires_at=record.expires_at,
        signal=signal_path(call.id),
        iceServers=servers,
        expires_at=expiry,
        call_ref=call.call_ref,
        relay_only=link.relay_only,
        ring_timeout=link.ring_timeout,
        media=media,
    )


NOBODY = "nobody can take a call on this link now; leave a callback request"
REF_TRIES = 5


def _refuse(request: Request, reason: str, code: str, message: str, wait: float) -> ApiError:
    metrics_of(request.app).click_refusals.labels(reason=reason).inc()
    seconds = retry_after(wait)
    return ApiError(
        429, code, f"{message}; try again in {seconds} s", headers={"Retry-After": str(seconds)}
    )


def _throttle(
    request: Request, limits: ClickLimits, link: Link, key: str | None, now: float
) -> None:
    """The click's token buckets: the visitor's (its visitor key, else its /24 or /48) and
    the link's; a refused click takes from neither. 429 ``throttled`` / ``link_throttled``."""
    who = f"v:{link.tenant_id}:{key}" if key else f"p:{visitor_prefix(request) or '-'}"
    wait, short = ctx_of(request).clicks.take_rated(
        [
            (who, limits.visitor_burst, limits.visitor_interval),
            (f"l:{link.id}", limits.link_burst, limits.link_interval),
        ],
        now,
    )
    if short == 0:
        raise _refuse(request, "visitor", "throttled", "too many calls from this visitor", wait)
    if short == 1:
        raise _refuse(request, "link", "link_throttled", "too many calls on this link", wait)


async def _ringing_caps(request: Request, limits: ClickLimits, link: Link, now: float) -> None:
    """Calls ringing at once: 429 ``link_ringing_limit`` or ``tenant_ringing_limit`` (a cap
    of 0 is none). In the new call's transaction, under the tenant's ringing lock: counted
    and created as one, so concurrent clicks cannot pass a cap."""
    if not limits.ringing_per_link and not limits.ringing_per_tenant:
        return
    store = ctx_of(request).db()
    await store.lock_ringing(link.tenant_id)
    found = await store.count_ringing(link.tenant_id, link.id, now)
    if limits.ringing_per_link and found.link >= limits.ringing_per_link:
        wait = (found.link_frees or now + 1) - now
        n = limits.ringing_per_link
        raise _refuse(
            request,
            "ringing_link",
            "link_ringing_limit",
            f"this link already has {n} call(s) ringing, its limit (ringing_per_link)",
            wait,
        )
    if limits.ringing_per_tenant and found.tenant >= limits.ringing_per_tenant:
        wait = (found.tenant_frees or now + 1) - now
        n = limits.ringing_per_tenant
        raise _refuse(
            request,
            "ringing_tenant",
            "tenant_ringing_limit",
            f"this business already has {n} call(s) ringing, its limit (ringing_per_tenant)",
            wait,
        )


def choose_media(link: Link, wanted: str | None) -> Media | None:
    """What the call is: ``wanted`` if the link offers it (else 422), or the first of video
    and voice the link offers."""
    offered = [m for m in link.media if m in CALL_MEDIA]
    if wanted is None:
        return offered[0] if offered else None
    if wanted not in offered:
        names = ", ".join(str(m) for m in offered) or "neither video nor voice"
        raise ApiError(422, "invalid", f"media: this call link offers {names}")
    return Media(wanted)


async def create_with_ref(
    store: Store,
    call: Call,
    now: float,
    policy: Policy,
    admit: Callable[[], Awaitable[None]] | None = None,
) -> Call:
    """Store a new call with a fresh reference, drawing again on the rare clash (its webhook
    events are queued with it, and ``admit`` runs first, in the same transaction:
    :func:`control.lifecycle.create_call`)."""
    for _ in range(REF_TRIES):
        call = dataclasses.replace(call, call_ref=new_call_ref())
        try:
            await create_call(store, call, now, policy, admit)
        except Conflict:
            continue
        return call
    raise ApiError(503, "unavailable", "could not mint a unique call reference; try again")


@router.post("/calls/{call_id}/hangup", responses={409: {"model": ErrorOut}})
async def hangup(request: Request, call_id: Id, token: Session) -> CallOut:
    """Either party leaves: the visitor (its token) or the staff member who answered."""
    if token.call_id not in (call_id, CONSOLE if token.role is Role.STAFF else None):
        raise not_found("call")
    ctx = ctx_of(request)
    call, _ = await load_call(request, token.tenant_id, call_id)
    if token.role is Role.STAFF:
        member = await acting_staff(ctx, token)
        if call.answered_by != member.id:
            raise ApiError(403, "forbidden", "only the staff member who answered can hang up")
    role = token.role or Role.VISITOR
    try:
        ended = machine.hang_up(call, role, now_of(request))
    except machine.InvalidTransition as e:
        raise ApiError(409, "invalid_state", str(e)) from None
    if not await transition(ctx.db(), call, ended, now_of(request), ctx.policy):
        raise ApiError(409, "conflict", "the call changed meanwhile; read it again")
    return CallOut.for_staff(ended)  # either party: neither needs the visitor's prefix


# --- staff ---------------------------------------------------------------------------------------


@router.get("/ringing")
async def ringing(request: Request, auth: StaffAuth) -> list[RingingOut]:
    """Calls ringing this staff member now (not those they declined), oldest first."""
    ctx = ctx_of(request)
    found = await ringing_for(
        ctx.db(), auth[1], now_of(request), ctx.settings.ring_timeout, ctx.policy
    )
    where = ctx.settings.region_map.region_for
    return [RingingOut.of(c, k, where(c.visitor_prefix)) for c, k in found]


def _scope(token: SessionToken, call_id: str) -> None:
    """A token scoped to one call acts on that call only (console tokens on any)."""
    if token.call_id not in (call_id, CONSOLE):
        raise not_found("call")


async def _rung(
    request: Request, call: Call, link: Link | None, now: float | None = None, keep: str = ""
) -> list[str]:
    """Who ``call`` rings; with ``now``, only those :func:`~control.calls.available` then
    (and ``keep``)."""
    if link is None:
        return []
    team = await ctx_of(request).db().list_staff(call.tenant_id)
    rung = machine.rung_staff(link, team)
    if now is None:
        return [s.id for s in rung]
    return [s.id for s in rung if s.id == keep or machine.available(s, now)]


@router.post(
    "/calls/{call_id}/answer",
    responses={403: {"model": ErrorOut}, 409: {"model": ErrorOut}, 503: {"model": ErrorOut}},
)
async def answer(request: Request, call_id: Id, auth: StaffAuth) -> AnswerOut:
    """First answer wins (compare-and-set on "ringing"); the others get 409."""
    token, member = auth
    _scope(token, call_id)
    ctx = ctx_of(request)
    store = ctx.db()
    now = now_of(request)
    call, link = await load_call(request, token.tenant_id, call_id)
    if call.status is CallStatus.ANSWERED:
        raise ApiError(409, "already_answered", "this call was already answered")
    try:
        answered = machine.answer(call, member.id, now, rung_staff=await _rung(request, call, link))
    except machine.NotRung as e:
        raise ApiError(403, "forbidden", str(e)) from None
    except machine.InvalidTransition as e:
        raise ApiError(409, "invalid_state", str(e)) from None
    node = await store.get_node(call.relay_node) if call.relay_node else None
    if node is None or not node.urls:
        t = await store.get_tenant(call.tenant_id)
        node = await pick_node(request, t.allowed_regions if t else [], call.visitor_prefix)
    relay_secret(request, node.region)  # before anything is stored
    if not await transition(store, call, answered, now, ctx.policy):
        raise ApiError(409, "already_answered", "this call was already answered")
    token_text, record = ctx.signer.issue(
        tenant_id=call.tenant_id, call_id=call.id, role=Role.STAFF, staff_id=member.id, now=now
    )
    await store.save_token(record)
    servers, expiry = ice_for(request, node, record.id)
    return AnswerOut(
        call=CallOut.for_staff(answered),
        token=token_text,
        token_id=record.id,
        token_expires_at=record.expires_at,
        signal=signal_path(call.id),
        iceServers=servers,
        expires_at=expiry,
    )


@router.post(
    "/calls/{call_id}/reject", responses={403: {"model": ErrorOut}, 409: {"model": ErrorOut}}
)
async def reject(request: Request, call_id: Id, auth: StaffAuth) -> CallOut:
    """Decline a ringing call; it is REJECTED once nobody else it rings is left."""
    token, member = auth
    _scope(token, call_id)
    store = ctx_of(request).db()
    now = now_of(request)
    call, link = await load_call(request, token.tenant_id, call_id)
    # who the call rings now (not those away or in wrap-up), and the one declining
    rung = await _rung(request, call, link, now, member.id)
    try:
        machine.reject(call, member.id, now, rung_staff=rung)  # checks before anything is stored
        before = await store.decline_call(call.tenant_id, call.id, member.id, now)
        declined = machine.reject(call, member.id, now, rung_staff=rung, rejected=before)
    except machine.CallConflict:
        raise ApiError(409, "already_answered", "this call was already answered") from None
    except machine.NotRung as e:
        raise ApiError(403, "forbidden", str(e)) from None
    except machine.InvalidTransition as e:
        raise ApiError(409, "invalid_state", str(e)) from None
    await store.set_staff_fields(member.tenant_id, member.id, {"missed_rings": 0})
    if not await transition(store, call, declined, now, ctx_of(request).policy):
        raise ApiError(409, "already_answered", "this call was already answered")
    return CallOut.for_staff(declined, declined_by=before)
