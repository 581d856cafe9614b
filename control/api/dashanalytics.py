"""The dashboard's analytics: ``GET /v1/dashboard/analytics``, the figures of the API's
``GET /v1/analytics`` (:func:`control.api.calllogs.tenant_analytics`, the same code) for a
signed-in admin, with the tenant from the cookie session
(:data:`~control.api.dashboard.AdminAuth`).

The query is the API's (``period`` day/week/month, ``by`` none/link/staff, ``since``,
``until``), read here as text so that bad input is a 422 whose message starts with the field
it is about (``period: ...``), which the page shows beside that field; an empty field is no
value (the API's default), as an untouched form sends it.
"""

from __future__ import annotations

from typing import Annotated, Final, get_args

from fastapi import APIRouter, Query, Request

from control.api.calllogs import Grouping, tenant_analytics
from control.api.dashboard import AdminAuth
from control.api.dashcalls import read_time
from control.api.deps import invalid
from control.quality import Period
from control.schemas import AnalyticsOut, ErrorOut

router = APIRouter(
    prefix="/v1/dashboard",
    include_in_schema=False,
    responses={401: {"model": ErrorOut}, 403: {"model": ErrorOut}},
)

Text = Annotated[str | None, Query(max_length=64)]
GROUPINGS: Final[tuple[Grouping, ...]] = get_args(Grouping)


def _period(raw: str | None) -> Period:
    if raw is None or raw.strip() == "":
        return Period.DAY
    try:
        return Period(raw.strip())
    except ValueError:
        known = ", ".join(p.value for p in Period)
        raise invalid("period", f"must be one of {known}", "one_of", {"known": known}) from None


def _by(raw: str | None) -> Grouping:
    value = (raw or "").strip() or "none"
    for g in GROUPINGS:
        if g == value:
            return g
    known = ", ".join(GROUPINGS)
    raise invalid("by", f"must be one of {known}", "one_of", {"known": known})


@router.get("/analytics", responses={422: {"model": ErrorOut}})
async def analytics(
    request: Request,
    auth: AdminAuth,
    period: Text = None,
    by: Text = None,
    since: Text = None,
    until: Text = None,
) -> AnalyticsOut:
    """The API's analytics for the admin's business (``GET /v1/analytics``)."""
    return await tenant_analytics(
        request,
        auth[1].tenant_id,
        _period(period),
        _by(by),
        read_time("since", since),
        read_time("until", until),
    )
