"""CORS for the two public endpoints the embedded button calls from a business's site, and
for nothing else.

``GET /v1/links/{public_id}/status`` and ``POST /v1/links/{public_id}/calls`` answer any
origin without credentials: ``Access-Control-Allow-Origin: *`` and never
``Access-Control-Allow-Credentials``, on every answer (errors included: the button reads the
409 of a closed link). Their preflight (``OPTIONS``) allows ``Content-Type`` and the one method.
Every other route answers no CORS header, so a browser keeps other origins' scripts out of
them (the console's cookie is ``SameSite=Strict`` besides).

:class:`PublicCors` adds the header (an ASGI middleware: error answers come from the app's
exception handlers, past any route); :data:`router` answers the preflights, as routes, so the
metrics see their templates.
"""

from __future__ import annotations

import re
from typing import Final

from fastapi import APIRouter, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from control.api.deps import Id

PUBLIC: Final = re.compile(r"^/v1/links/[^/]+/(status|calls)$")
MAX_AGE: Final = "600"

router = APIRouter()


def _preflight(method: str) -> Response:
    return Response(
        status_code=204,
        headers={
            "Access-Control-Allow-Origin": "*",
            "Access-Control-Allow-Methods": f"{method}, OPTIONS",
            "Access-Control-Allow-Headers": "Content-Type",
            "Access-Control-Max-Age": MAX_AGE,
        },
    )


@router.options("/v1/links/{public_id}/status", include_in_schema=False)
async def status_preflight(public_id: Id) -> Response:
    return _preflight("GET")


@router.options("/v1/links/{public_id}/calls", include_in_schema=False)
async def click_preflight(public_id: Id) -> Response:
    return _preflight("POST")


class PublicCors:
    """Adds ``Access-Control-Allow-Origin: *`` to every answer of the public routes."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not PUBLIC.match(str(scope.get("path", ""))):
            await self.app(scope, receive, send)
            return

        async def send_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (k, v)
                    for k, v in message.get("headers", [])
                    if k.lower() != b"access-control-allow-origin"
                ]
                headers.append((b"access-control-allow-origin", b"*"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_cors)
