"""What the visitor's page and the embedded button ask besides the click (which stays in
:mod:`control.api.calls`).

- ``GET /v1/links/{public_id}/status`` (anyone, CORS): the link's name, business, media and
  state: ``open``, ``closed`` (with ``next_open``), ``unavailable`` (open, but no member it
  rings is available with a console seen lately) or ``inactive``. Never cached.
- ``POST /v1/calls/{id}/check`` (the visitor token): the connection check's verdict, stored
  with the call for the call log, while it rings or is answered.
- ``POST /v1/calls/{id}/ice`` (the visitor token, or the call token of the member who
  answered): fresh relay credentials for an ICE restart, on the call's node if it is healthy,
  else on a newly picked one (the call's ``relay_node`` follows).
- ``POST /v1/calls/{id}/callback`` (the visitor token, even revoked: the call is over): a
  callback request on a call nobody answered.
- ``POST /v1/links/{public_id}/callbacks`` (no credential, throttled per client prefix): a
  callback request when no call could start (the link closed or nobody available); it is
  stored as a missed call.

A callback's name and contact become the call's ``visitor_ref`` ("Name · contact"), so the
data-subject export, correction, erasure and retention cover it like any visitor field.
"""

from __future__ import annotations

import re
import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field, StringConstraints, field_validator, model_validator

from control import calls as machine
from control import privacy
from control.api.calls import create_with_ref
from control.api.deps import (
    ApiError,
    Ctx,
    Id,
    Session,
    acting_staff,
    bearer_token,
    ctx_of,
    load_call,
    not_found,
    now_of,
    retry_after,
)
from control.api.relays import ice_for, pick_node, relay_secret, ua_family, visitor_prefix
from control.lifecycle import callbacks_changed, move_relay, publish, request_callback
from control.metrics import metrics_of
from control.models import (
    CALL_MEDIA,
    FINAL_STATUSES,
    Call,
    Callback,
    CallStatus,
    Media,
    Role,
    SessionToken,
)
from control.schemas import ErrorOut, Strict
from control.selection import healthy
from control.tokens import TokenError

router = APIRouter(prefix="/v1", responses={404: {"model": ErrorOut}, 409: {"model": ErrorOut}})

_PRINTABLE = r"^[^\x00-\x1f\x7f]*$"
_PHONE = re.compile(r"^\+?[0-9][0-9 ()./-]{2,}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
MAX_REF = 256  # a visitor_ref, as /v1/subjects?ref= takes it
UNANSWERED = [CallStatus.MISSED, CallStatus.REJECTED, CallStatus.ABANDONED, CallStatus.FAILED]
LINK_CLOSED = "link closed"
NOBODY_AVAILABLE = "nobody available"


# --- bodies ----------------------------------------------------------------------------------


class LinkStatusOut(BaseModel):
    link: str  # the public id
    name: str
    business: str
    media: list[Media]  # what a visitor may choose: video and/or voice
    state: Literal["open", "closed", "unavailable", "inactive"]
    next_open: float | None  # when a closed link opens next (None: not known or never)
    timezone: str | None  # the opening hours' time zone
    relay_only: bool


class CheckIn(Strict):
    verdict: Literal["ok", "blocked", "partial"]
    transports: dict[Literal["udp", "tcp", "tls"], Literal["ok", "fail", "skipped"]] = {}
    ms: int = Field(ge=0, le=600_000)


class IceOut(BaseModel):
    iceServers: list[dict[str, Any]]  # noqa: N815 (the WebRTC spelling)
    expires_at: float
    relay_node: str


class CallbackIn(Strict):
    name: Annotated[
        str,
        StringConstraints(strip_whitespace=True, min_length=1, max_length=100, pattern=_PRINTABLE),
    ]
    contact: Annotated[
        str,
        StringConstraints(strip_whitespace=True, min_length=3, max_length=200, pattern=_PRINTABLE),
    ]

    @field_validator("contact")
    @classmethod
    def _contact(cls, v: str) -> str:
        if not (_PHONE.match(v) and sum(c.isdigit() for c in v) >= 3) and not _EMAIL.match(v):
            raise ValueError("must be a phone number or an email address")
        return v

    @model_validator(mode="after")
    def _fits(self) -> CallbackIn:
        if len(self.ref) > MAX_REF:
            raise ValueError(f"name and contact together must stay within {MAX_REF - 3} characters")
        return self

    @property
    def ref(self) -> str:
        return f"{self.name} · {self.contact}"


class CallbackOut(BaseModel):
    call_ref: str | None


# --- the button --------------------------------------------------------------------------------


@router.get("/links/{public_id}/status")
async def link_status(request: Request, response: Response, public_id: Id) -> LinkStatusOut:
    """The call button's one request: whether the link takes calls now."""
    response.headers["Cache-Control"] = "no-store"
    store = ctx_of(request).db()
    link = await store.get_link_by_public_id(public_id)
    tenant = None if link is None else await store.get_tenant(link.tenant_id)
    if link is None or tenant is None:
        raise not_found("call link")
    now = now_of(request)
    state, opens = machine.link_state(link, await store.list_staff(link.tenant_id), now)
    return LinkStatusOut(
        link=link.public_id,
        name=link.name,
        business=tenant.name,
        media=[m for m in link.media if m in CALL_MEDIA],
        state=state,  # type: ignore[arg-type]
        next_open=opens,
        timezone=link.hours.timezone if link.hours is not None else None,
        relay_only=link.relay_only,
    )


# --- during a call ------------------------------------------------------------------------------


def _own(token: SessionToken, call_id: str) -> None:
    if token.call_id != call_id or token.role is None:
        raise not_found("call")


@router.post("/calls/{call_id}/check", status_code=204)
async def check(request: Request, call_id: Id, token: Session, body: CheckIn) -> Response:
    """The visitor's connection check: can it reach the call's relay, per transport."""
    _own(token, call_id)
    if token.role is not Role.VISITOR:
        raise ApiError(403, "forbidden", "only the visitor reports the connection check")
    call, _ = await load_call(request, token.tenant_id, call_id)
    verdict = body.model_dump(mode="json")
    live = [CallStatus.RINGING, CallStatus.ANSWERED]
    if not await ctx_of(request).db().set_call_check(call.tenant_id, call.id, verdict, live):
        raise ApiError(409, "call_over", f"the call is {call.status}")
    return Response(status_code=204)


@router.post("/calls/{call_id}/ice", responses={503: {"model": ErrorOut}})
async def fresh_ice(request: Request, call_id: Id, token: Session) -> IceOut:
    """Fresh relay credentials for an ICE restart (the same token id: revoking the call's
    tokens still ends the allocations made with them)."""
    _own(token, call_id)
    ctx = ctx_of(request)
    store = ctx.db()
    now = now_of(request)
    call, _ = await load_call(request, token.tenant_id, call_id)
    if token.role is Role.STAFF and call.answered_by != (await acting_staff(ctx, token)).id:
        raise ApiError(403, "forbidden", "only the staff member who answered")
    for _ in range(3):
        if call.status in FINAL_STATUSES:
            raise ApiError(409, "call_over", f"the call is {call.status}")
        node = await store.get_node(call.relay_node) if call.relay_node else None
        if node is not None and _usable(ctx, node, now):
            break
        t = await store.get_tenant(call.tenant_id)
        node = await pick_node(request, t.allowed_regions if t else [], call.visitor_prefix)
        relay_secret(request, node.region)
        if await move_relay(store, call, node.id, node.region):
            break
        found = await store.get_call(call.tenant_id, call.id)  # it changed meanwhile
        if found is None:
            raise not_found("call")
        call = found
    else:
        raise ApiError(409, "conflict", "the call keeps changing; try again")
    servers, expiry = ice_for(request, node, token.id)
    return IceOut(iceServers=servers, expires_at=expiry, relay_node=node.id)


def _usable(ctx: Ctx, node: Any, now: float) -> bool:
    return (
        bool(node.urls) and not node.draining and healthy(node, now, ctx.settings.heartbeat_timeout)
    )


# --- callback requests -------------------------------------------------------------------------


@router.post("/calls/{call_id}/callback", status_code=201, responses={401: {"model": ErrorOut}})
async def callback_after_call(request: Request, call_id: Id, body: CallbackIn) -> CallbackOut:
    """A callback request on a call nobody answered. The call is over, so its visitor token
    is revoked: here it still counts while it is well signed and unexpired."""
    ctx = ctx_of(request)
    try:
        token = ctx.signer.decode(bearer_token(request), now_of(request))
    except TokenError as e:
        raise ApiError(401, "unauthorized", f"invalid session token ({e.reason})") from None
    _own(token, call_id)
    if token.role is not Role.VISITOR:
        raise ApiError(403, "forbidden", "only the visitor leaves a callback request")
    call, _ = await load_call(request, token.tenant_id, call_id)
    if call.status is CallStatus.RINGING:
        raise ApiError(409, "invalid_state", "the call still rings; hang up first")
    if call.answered_at is not None:
        raise ApiError(409, "invalid_state", "this call was answered; no callback is needed")
    store = ctx.db()
    if not await request_callback(store, call, body.ref, now_of(request), UNANSWERED, ctx.policy):
        raise ApiError(409, "conflict", "a callback request was already left for this call")
    await callbacks_changed(store, call)
    return CallbackOut(call_ref=call.call_ref)


@router.post("/links/{public_id}/callbacks", status_code=201, responses={429: {"model": ErrorOut}})
async def callback_without_call(request: Request, public_id: Id, body: CallbackIn) -> CallbackOut:
    """A callback request when no call could start: the link is closed or nobody can take a
    call. It is stored as a missed call carrying the request."""
    ctx = ctx_of(request)
    store = ctx.db()
    now = now_of(request)
    link = await store.get_link_by_public_id(public_id)
    if link is None:
        raise not_found("call link")
    state, _ = machine.link_state(link, await store.list_staff(link.tenant_id), now)
    if state == "inactive":
        raise ApiError(409, "link_inactive", "this call link is not active")
    if state == "open":
        raise ApiError(409, "link_open", "someone can take a call on this link now: call instead")
    prefix = visitor_prefix(request)
    wait = ctx.throttle.take([f"callback:{prefix or '-'}"], now)
    if wait > 0:
        metrics_of(request.app).throttle_refusals.labels(what="callback").inc()
        seconds = retry_after(wait)
        raise ApiError(
            429,
            "throttled",
            f"too many requests; try again in {seconds} s",
            headers={"Retry-After": str(seconds)},
        )
    browser, system = ua_family(request.headers.get("user-agent"))
    call = await create_with_ref(
        store,
        Call(
            id=uuid.uuid4().hex,
            tenant_id=link.tenant_id,
            link_id=link.id,
            status=CallStatus.MISSED,
            created_at=now,
            ended_at=now,
            end_reason=LINK_CLOSED if state == "closed" else NOBODY_AVAILABLE,
            visitor_prefix=prefix,
            visitor_browser=browser,
            visitor_os=system,
            visitor_ref=body.ref,
            visitor_key=privacy.visitor_key(request, link.tenant_id),
            callback_state=Callback.OPEN,
            callback_at=now,
        ),
        now,
        ctx.policy,
    )
    metrics_of(request.app).callbacks_requested.labels(via="link").inc()
    await publish(store, call)
    await callbacks_changed(store, call)
    return CallbackOut(call_ref=call.call_ref)
