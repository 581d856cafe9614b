"""The dashboard's call log: the API's call log (:mod:`control.api.calllogs`) for a signed-in
admin, with the tenant from the cookie session (:data:`~control.api.dashboard.AdminAuth`).

- ``GET /v1/dashboard/calls``: one page of the log, newest first, with the API's filters
  (``since``, ``until``, ``link``, ``staff``, ``outcome``, ``mos_below``) and cursor paging;
- ``GET /v1/dashboard/calls.csv``: exactly that filtered log as the API's CSV (the same code);
- ``GET /v1/dashboard/calls/choices``: the links and staff the filters offer;
- ``GET /v1/dashboard/calls/{id}``: one call as the API's detail (per-direction loss, jitter,
  MOS, each allocation as the relay measured it), plus what the detail page shows: the
  timeline of the call's states (rung, declined, answered, ended, callback) with the visitor's
  connection check, the media the visitor chose, and until when the tenant's retention keeps
  the record.

Filters come in as text and are read here, so bad input is a 422 whose message starts with the
field it is about (``mos_below: ...``), which the page shows beside that field. Another
tenant's call is a 404, a member who is not an admin gets 403, as everywhere in the dashboard.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel

from control import calls as machine
from control.api.calllogs import CallLogFilters, calllogs_csv, get_calllog, list_calllogs
from control.api.dashboard import AdminAuth
from control.api.deps import PAGE, ApiError, Cursor, Id, Limit, ctx_of, invalid
from control.ids import is_id
from control.models import MAX_RETENTION_MONTHS, CallStatus
from control.privacy import kept_until
from control.schemas import CallLogDetailOut, CallLogPageOut, ErrorOut

router = APIRouter(
    prefix="/v1/dashboard",
    include_in_schema=False,
    responses={401: {"model": ErrorOut}, 403: {"model": ErrorOut}, 404: {"model": ErrorOut}},
)

MAX_TIME = 1e11
Text = Annotated[str | None, Query(max_length=64)]


def read_time(name: str, raw: str | None) -> float | None:
    """A time filter (Unix seconds) from the page's text; empty is none."""
    if raw is None or raw.strip() == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not 0 <= value <= MAX_TIME:  # also NaN
        raise invalid(name, "must be a date", "date_invalid")
    return value


def _id(name: str, raw: str | None) -> str | None:
    if raw is None or raw == "":
        return None
    if not is_id(raw):
        raise invalid(name, f"not one of this business's {name}s", "not_ours")
    return raw


def read_filters(
    since: Text = None,
    until: Text = None,
    link: Text = None,
    staff: Text = None,
    outcome: Text = None,
    mos_below: Text = None,
) -> CallLogFilters:
    """The call log's filters from the page's text, each error naming its field."""
    start, end = read_time("since", since), read_time("until", until)
    if start is not None and end is not None and end < start:
        raise invalid("until", "the end is before the start", "range_reversed")
    status = None
    if outcome:
        try:
            status = CallStatus(outcome)
        except ValueError:
            known = ", ".join(s.value for s in CallStatus)
            raise invalid(
                "outcome", f"must be one of {known}", "one_of", {"known": known}
            ) from None
    mos = None
    if mos_below is not None and mos_below.strip():
        try:
            mos = float(mos_below.strip().replace(",", "."))
        except ValueError:
            mos = math.nan
        if not 1.0 <= mos <= 5.0:
            raise invalid("mos_below", "must be a number from 1 to 5, such as 3.5", "mos_invalid")
    return CallLogFilters(start, end, _id("link", link), _id("staff", staff), status, mos)


# the list and its CSV take the same filters, each error naming its field
Filters = Annotated[CallLogFilters, Depends(read_filters)]


@router.get("/calls", responses={422: {"model": ErrorOut}})
async def calls(
    request: Request,
    auth: AdminAuth,
    f: Filters,
    limit: Limit = PAGE,
    cursor: Cursor = None,
) -> CallLogPageOut:
    out = await list_calllogs(request, auth[1].tenant_id, f, limit, cursor, "json")
    assert isinstance(out, CallLogPageOut)
    return out


@router.get("/calls.csv", responses={200: {"content": {"text/csv": {}}}, 422: {"model": ErrorOut}})
async def calls_csv(
    request: Request,
    auth: AdminAuth,
    f: Filters,
) -> Response:
    """The API's CSV of the same filtered log (``GET /v1/calllogs.csv``)."""
    return await calllogs_csv(request, auth[1].tenant_id, f)


class Choice(BaseModel):
    id: str
    name: str
    active: bool


class ChoicesOut(BaseModel):
    links: list[Choice]
    staff: list[Choice]


@router.get("/calls/choices")
async def choices(request: Request, auth: AdminAuth) -> ChoicesOut:
    store = ctx_of(request).db()
    tenant_id = auth[1].tenant_id
    links = sorted(await store.list_links(tenant_id), key=lambda k: (k.name.lower(), k.id))
    team = sorted(await store.list_staff(tenant_id), key=lambda s: (s.name.lower(), s.id))
    return ChoicesOut(
        links=[Choice(id=k.id, name=k.name, active=k.active) for k in links],
        staff=[Choice(id=s.id, name=s.name, active=s.active) for s in team if s.is_staff],
    )


class StepOut(BaseModel):
    """One moment of the call's life; ``at`` is None when the record holds no time for it."""

    kind: str  # clicked, check, rang, declined, answered, callback, or the final outcome
    at: float | None
    staff: list[str] = []  # names: who was rung, who declined, who answered
    detail: dict[str, Any] = {}  # the check's verdict and transports; the end's reason


class DashCallOut(CallLogDetailOut):
    call_ref: str | None
    chosen_media: str | None  # what the visitor chose: video or voice
    end_reason: str | None
    visitor_check: dict[str, Any] | None
    timeline: list[StepOut]
    retention_months: int
    kept_until: float  # deleted at the first hourly purge after this


@router.get("/calls/{call_id}")
async def call_detail(request: Request, call_id: Id, auth: AdminAuth) -> DashCallOut:
    tenant_id = auth[1].tenant_id
    detail = await get_calllog(request, tenant_id, call_id)  # 404 for another tenant's call
    store = ctx_of(request).db()
    call = await store.get_call(tenant_id, call_id)
    tenant = await store.get_tenant(tenant_id)
    if call is None or tenant is None:  # erased in between
        raise ApiError(404, "not_found", "call not found")
    team = await store.list_staff(tenant_id)
    names = {s.id: s.name for s in team}
    link = await store.get_link(tenant_id, call.link_id)
    steps = [StepOut(kind="clicked", at=call.created_at, detail={"media": call.media})]
    if call.visitor_check is not None:
        steps.append(StepOut(kind="check", at=None, detail=dict(call.visitor_check)))
    if call.rung is not None:  # whom the click rang (available members of the link then)
        rung = sorted(names.get(s, "?") for s in call.rung)
        steps.append(StepOut(kind="rang", at=call.created_at, staff=rung))
    elif link is not None:  # a call from before that was kept: whom the link rings now
        rung = sorted(s.name for s in machine.rung_staff(link, team))
        steps.append(StepOut(kind="rang", at=call.created_at, staff=rung, detail={"now": True}))
    for staff_id, at in await store.list_decline_times(tenant_id, call_id):
        steps.append(StepOut(kind="declined", at=at, staff=[names.get(staff_id, "?")]))
    if call.answered_at is not None:
        who = [names.get(call.answered_by, "?")] if call.answered_by else []
        steps.append(StepOut(kind="answered", at=call.answered_at, staff=who))
    if detail.outcome not in (CallStatus.RINGING, CallStatus.ANSWERED):
        reason = {"reason": call.end_reason}
        steps.append(StepOut(kind=detail.outcome.value, at=call.ended_at, detail=reason))
    if call.callback_state is not None:
        steps.append(
            StepOut(kind="callback", at=call.callback_at, detail={"state": call.callback_state})
        )
    # in time order; the check (no time of its own) stays just after the click
    steps.sort(key=lambda s: call.created_at if s.at is None else s.at)
    months = max(1, min(tenant.retention_months, MAX_RETENTION_MONTHS))
    return DashCallOut(
        **detail.model_dump(),
        call_ref=call.call_ref,
        chosen_media=call.media,
        end_reason=call.end_reason,
        visitor_check=call.visitor_check,
        timeline=steps,
        retention_months=months,
        kept_until=kept_until(call.created_at, months),
    )
