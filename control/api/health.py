"""``/healthz`` (the process is up) and ``/readyz`` (the database answers)."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request

from control.api.deps import ApiError, ctx_of
from control.schemas import ErrorOut

log = logging.getLogger("clickacall.control.api")

router = APIRouter()


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"model": ErrorOut}})
async def readyz(request: Request) -> dict[str, str]:
    try:
        await ctx_of(request).db().get_node("readyz-probe")
    except Exception as e:  # any driver failure means "not ready"
        log.warning("readiness check failed: %s", e)
        raise ApiError(503, "unavailable", "the database is not reachable") from None
    return {"status": "ready"}
