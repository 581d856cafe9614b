"""A control plane in this process with a stand-in for the staff's cookie session, so the
console can be driven before ``control.api.sessions`` (issue 12's backend half) exists.

:class:`StandInControl` runs ``create_app`` under uvicorn in a thread on a loopback port,
with two extra routes answering for one staff member as if they were signed in: ``GET /v1/me``
and ``POST /v1/me/token`` (a real console token, signed and stored like the API's own), and
``app.state.session_probe`` saying everybody is signed in; and a link status
(``GET /v1/links/{public_id}/status``) that answers whatever ``link_status`` says. Everything else is the real control
plane: the click, answer, decline, hang up, the signalling and staff WebSockets. Once the real
session routes exist, tests sign in through :class:`~tests.web.pages.SignInPage` instead and
this module goes.
"""

from __future__ import annotations

import json
import secrets
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from control.api.deps import CONSOLE
from control.app import create_app
from control.keys import new_operator_key
from control.models import Role
from control.settings import ControlSettings
from tests.controlproc import ControlProcess, Tenant, bearer, free_port

CSRF = "stand-in-csrf"
NEW_CLICK_FIELDS = ("media", "lang")


class _OldClick:
    """Drops the click's new body fields (``media``, ``lang``) that today's strict ClickIn
    refuses, until the backend half accepts them."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if (
            scope["type"] != "http"
            or scope.get("method") != "POST"
            or not (path.startswith("/v1/links/") and path.endswith("/calls"))
        ):
            await self.app(scope, receive, send)
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        try:
            data = json.loads(body or b"{}")
            for name in NEW_CLICK_FIELDS:
                data.pop(name, None)
            body = json.dumps(data).encode()
        except ValueError:
            pass
        headers = [(k, v) for k, v in scope["headers"] if k != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app({**scope, "headers": headers}, replay, send)


@dataclass
class StandInControl:
    relay_secret: str = field(default_factory=lambda: secrets.token_hex(16))
    node_secret: str = field(default_factory=lambda: secrets.token_hex(16))
    port: int = field(default_factory=free_port)
    tenant: Tenant | None = None
    staff_name: str = "Ann"
    # what GET /v1/links/{public_id}/status answers (None: 404) until the backend serves it
    link_status: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.op_key, op = new_operator_key()
        self._dir = tempfile.TemporaryDirectory(prefix="clickacall-standin-")
        settings = ControlSettings(
            db_url=f"sqlite:///{Path(self._dir.name) / 'control.db'}",
            token_keys=[secrets.token_bytes(24)],
            operator_keys=[op],
            relay_secrets=[self.relay_secret.encode()],
            node_secrets=[self.node_secret],
            heartbeat_timeout=3.0,
        )
        self.app = create_app(settings)
        self.app.include_router(self._session_routes())
        self.app.add_middleware(_OldClick)

        async def signed_in(request: Request) -> str | None:
            return CSRF

        self.app.state.session_probe = signed_in
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def oh(self) -> dict[str, str]:
        return bearer(self.op_key)

    def _session_routes(self) -> APIRouter:
        router = APIRouter()

        @router.get("/v1/me")
        async def me() -> dict[str, Any]:
            t = self._tenant()
            return {
                "staff": {
                    "id": t.staff_id,
                    "name": self.staff_name,
                    "email": "ann@example.com",
                    "presence": "available",
                    "wrapup_until": None,
                },
                "tenant": {"id": t.id, "name": "Acme Bikes"},
                "csrf": CSRF,
            }

        @router.get("/v1/links/{public_id}/status")
        async def status(public_id: str) -> Any:
            if self.link_status is None:
                return JSONResponse({"error": {"code": "not_found", "message": "no"}}, 404)
            return JSONResponse(
                {"link": public_id, **self.link_status},
                headers={"access-control-allow-origin": "*", "cache-control": "no-store"},
            )

        @router.post("/v1/me/token")
        async def token(request: Request) -> dict[str, Any]:
            t = self._tenant()
            ctx = request.app.state.ctx
            text, record = ctx.signer.issue(
                tenant_id=t.id,
                call_id=CONSOLE,
                role=Role.STAFF,
                staff_id=t.staff_id,
                now=time.time(),
            )
            await ctx.db().save_token(record)
            return {"token": text, "token_id": record.id, "expires_at": record.expires_at}

        return router

    def _tenant(self) -> Tenant:
        assert self.tenant is not None, "call bootstrap() first"
        return self.tenant

    def start(self) -> StandInControl:
        self.thread.start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError("the in-process control plane did not start")

    def bootstrap(self, name: str = "Acme Bikes", **link: Any) -> Tenant:
        self.tenant = ControlProcess.bootstrap(self, name, **link)  # type: ignore[arg-type]
        return self.tenant

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self._dir.cleanup()
