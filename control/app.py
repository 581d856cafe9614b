"""The control plane's application: ``create_app(settings, store=None)`` builds it from the
routers of :mod:`control.api` and the web front's pages (:mod:`control.web`), the error handlers,
``/metrics`` and the housekeeping loop.

Time comes from ``app.state.clock`` (``settings.clock`` by default) so tests can move it.
Ringing calls past their link's ring timeout become missed lazily, when read or acted on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from control import hookworker, privacy, web
from control.accounts import Throttle
from control.api import ROUTERS, sessions
from control.api.cors import PublicCors
from control.api.deps import ApiError, Ctx, Params, json_params
from control.bounds import Bounds, Pending
from control.metrics import install_metrics, instrument_store, metrics_of
from control.settings import ControlSettings
from control.store import Busy, Conflict, Invalid, NotFound, Store, open_store
from control.tokens import TokenSigner

log = logging.getLogger("clickacall.control.api")

HOUSEKEEPING_INTERVAL = 60.0
SIGNAL_MAX_AGE = 3600.0  # signalling messages older than this are of no use to anyone
BUSY_RETRY_AFTER = 1  # seconds a client is asked to wait when the database is locked


def error_response(
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
    *,
    field: str | None = None,
    reason: str | None = None,
    params: Params | None = None,
) -> JSONResponse:
    """``{"error": {"code", "message", "field", "reason", "params"}}``: ``message`` is for
    people (English), the rest for programs and the front's catalogue (``err.<reason>``)."""
    body = {"code": code, "message": message, "field": field, "reason": reason}
    return JSONResponse(
        {"error": {**body, "params": params or {}}}, status_code=status, headers=headers
    )


_LOC_SOURCES = frozenset({"body", "query", "path", "header", "cookie"})


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        loc = ".".join(str(x) for x in err.get("loc", ()))
        parts.append(f"{loc}: {err.get('msg', 'invalid')}" if loc else str(err.get("msg")))
    return "; ".join(parts) or "invalid request"


def _validation_detail(exc: RequestValidationError) -> tuple[str | None, str | None, Params]:
    """The first error's field (its ``loc`` without ``body.``), pydantic type and ctx."""
    errors = exc.errors()
    if not errors:
        return None, None, {}
    err = errors[0]
    loc = [str(x) for x in err.get("loc", ())]
    if loc and loc[0] in _LOC_SOURCES:
        loc = loc[1:]
    return ".".join(loc) or None, str(err.get("type")) or None, json_params(err.get("ctx"))


def _install_handlers(app: FastAPI) -> None:
    async def api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return error_response(
            exc.status,
            exc.code,
            exc.message,
            exc.headers,
            field=exc.field,
            reason=exc.reason,
            params=exc.params,
        )

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        codes = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}
        return error_response(exc.status_code, codes.get(exc.status_code, "error"), str(exc.detail))

    async def invalid_request(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        field, reason, params = _validation_detail(exc)
        return error_response(
            422, "invalid", _validation_message(exc), field=field, reason=reason, params=params
        )

    async def store_error(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, NotFound):
            return error_response(404, "not_found", str(exc))
        if isinstance(exc, Conflict):
            return error_response(409, "conflict", str(exc))
        return error_response(400, "invalid", str(exc))

    async def busy(request: Request, exc: Exception) -> JSONResponse:
        metrics_of(request.app).db_busy.inc()
        return error_response(
            503,
            "busy",
            "the database is busy; try again shortly",
            {"Retry-After": str(BUSY_RETRY_AFTER)},
        )

    async def internal(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(500, "internal", "internal error")

    app.add_exception_handler(Exception, internal)
    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    for cls in (NotFound, Conflict, Invalid):
        app.add_exception_handler(cls, store_error)
    app.add_exception_handler(Busy, busy)


@asynccontextmanager
async def _housekeeping(app: FastAPI) -> AsyncIterator[None]:
    """Periodic jobs of a running process: drop stale signalling messages (calls left
    hanging keep none of their ICE candidates, so none of their visitors' addresses), ended
    console sessions and expired invitations, and enforce tenants' retention (:func:`control.privacy.purge_if_due`: at start, then hourly)."""

    async def loop() -> None:
        while True:
            try:
                ctx: Ctx = app.state.ctx
                now = float(app.state.clock())
                purged = await ctx.db().purge_signals(now - SIGNAL_MAX_AGE)
                if purged:
                    log.info("purged %d stale signalling message(s)", purged)
                ended = await ctx.db().purge_web(now, now - ctx.settings.session_idle)
                if ended:
                    log.info("purged %d ended console session(s) and invitation(s)", ended)
            except Exception as e:  # the database may be away for a while: try again later
                log.warning("housekeeping failed: %s", e)
            try:  # retention: at start, then hourly (by the app's clock)
                await privacy.purge_if_due(app, app.state.ctx.db())
            except Exception as e:
                log.warning("retention purge failed: %s", e)
            await asyncio.sleep(HOUSEKEEPING_INTERVAL)

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def limits(settings: ControlSettings) -> dict[str, float]:
    """The configured limits, as ``/metrics`` shows them (``config_limit{name}``)."""
    return {
        "ring_timeout_seconds": settings.ring_timeout,
        "heartbeat_timeout_seconds": settings.heartbeat_timeout,
        "session_idle_seconds": settings.session_idle,
        "session_max_seconds": settings.session_max,
        "signin_code_window_seconds": settings.signin_code_window,
        "wrapup_seconds": settings.wrapup_seconds,
        "away_after_rings": settings.away_after_rings,
        "throttle_burst": settings.throttle_burst,
        "throttle_interval_seconds": settings.throttle_interval,
        "throttle_entries": settings.throttle_entries,
        "revocation_window_seconds": settings.revocation_window,
        "summary_seq_jump": settings.summary_seq_jump,
        "click_visitor_burst": settings.click_limits.visitor_burst,
        "click_visitor_interval_seconds": settings.click_limits.visitor_interval,
        "click_link_burst": settings.click_limits.link_burst,
        "click_link_interval_seconds": settings.click_limits.link_interval,
        "click_ringing_per_link": settings.click_limits.ringing_per_link,
        "click_ringing_per_tenant": settings.click_limits.ringing_per_tenant,
        "click_entries": settings.click_entries,
        "max_body_bytes": settings.max_body,
        "ws_max_size_bytes": settings.ws_max_size,
        "ws_auth_timeout_seconds": settings.ws_auth_timeout,
        "ws_unauthenticated": settings.ws_unauth,
        "ws_unauthenticated_per_prefix": settings.ws_unauth_per_prefix,
        "max_connections": settings.max_connections,
        "max_connections_per_prefix": settings.max_per_prefix,
        "head_timeout_seconds": settings.head_timeout,
        "webhook_concurrency": settings.hook_concurrency,
        "webhook_timeout_seconds": settings.hook_timeout,
        "webhook_window_seconds": settings.hook_window,
        "webhook_queue": settings.hook_queue,
        "webhook_endpoints": settings.hook_endpoints,
    }


def create_app(settings: ControlSettings, store: Store | None = None) -> FastAPI:
    """The API. With ``store`` given it is used as is (and not closed); otherwise the
    lifespan opens ``settings.db_url`` on start and closes it on shutdown."""
    ctx = Ctx(
        settings=settings,
        signer=TokenSigner(settings.token_keys),
        store=store,
        throttle=Throttle(
            settings.throttle_burst, settings.throttle_interval, settings.throttle_entries
        ),
        clicks=Throttle(entries=settings.click_entries),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if ctx.store is not None:
            async with _housekeeping(app), hookworker.running(app):
                yield
            return
        ctx.store = await open_store(settings.db_url)
        instrument_store(ctx.store, metrics)
        hookworker.count_queue_full(app, ctx.store)
        try:
            async with _housekeeping(app), hookworker.running(app):
                yield
        finally:
            opened, ctx.store = ctx.store, None
            await opened.close()

    app = FastAPI(
        title="Clickacall control plane",
        version="1",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.ctx = ctx
    app.state.clock = settings.clock
    app.add_middleware(PublicCors)  # inside the metrics middleware (added next)
    metrics = install_metrics(app, public=False)  # served by metrics_listener(app) only
    metrics.set_limits(limits(settings))
    if store is not None:
        instrument_store(store, metrics)
        hookworker.count_queue_full(app, store)
    privacy.privacy_metrics(app)  # its counters exist, at 0, before the first purge
    hookworker.hook_metrics(app)  # and the webhooks'
    _install_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    web.install(app)  # the pages, /static, /embed.js and the security headers
    app.state.session_probe = sessions.session_csrf  # the console page: signed in or not
    # outermost, added last: connections and body sizes are bounded before any other work
    app.add_middleware(
        Bounds,
        metrics=metrics,
        max_connections=settings.max_connections,
        max_body=settings.max_body,
        max_per_prefix=settings.max_per_prefix,
    )
    app.state.pending = Pending(settings.ws_unauth, settings.ws_unauth_per_prefix)
    return app
