"""Security headers on every HTTP response of the control plane (an ASGI middleware).

- ``Content-Security-Policy``: only our own scripts, styles, images, media and connections;
  no inline script or style anywhere (the pages set sizes through classes or the CSSOM), no
  ``<base>``, forms post only to us. ``frame-ancestors 'none'`` everywhere except the call page
  (``/c/...``), which the embed button frames on the businesses' sites: ``frame-ancestors *``.
- ``X-Content-Type-Options: nosniff``, ``Referrer-Policy: no-referrer`` (a call link's id never
  leaks to another site through a Referer).
- ``Permissions-Policy``: camera, microphone and screen capture for our own origin only (an
  iframe's ``allow`` attribute still grants them to the framed call page: its own origin).
- ``Cross-Origin-Opener-Policy: same-origin``, except on the call page when it runs inside the
  widget's iframe (``?embed=1``), where it must keep talking to the page that framed it.
- ``Strict-Transport-Security`` when the request came over HTTPS.

A header the route set itself is left alone. The embed loader (``/embed.js``) also gets
``Cross-Origin-Resource-Policy: cross-origin`` so sites that isolate themselves (COEP) can load
it.
"""

from __future__ import annotations

from typing import Final

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "media-src 'self' blob: mediastream:; connect-src 'self'; font-src 'self'; "
    "manifest-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors {ancestors}"
)
CSP: Final = _CSP.format(ancestors="'none'")
CSP_FRAMEABLE: Final = _CSP.format(ancestors="*")
PERMISSIONS: Final = "camera=(self), microphone=(self), display-capture=(self)"
HSTS: Final = "max-age=31536000"
CALL_PAGE: Final = "/c/"
EMBED: Final = "/embed.js"


def _embedded(scope: Scope) -> bool:
    query: bytes = scope.get("query_string", b"")
    return any(part in (b"embed=1", b"embed=true") for part in query.split(b"&"))


def headers_for(scope: Scope) -> dict[str, str]:
    """The security headers a response to this request carries (route-set ones win)."""
    path: str = scope.get("path", "")
    frameable = path.startswith(CALL_PAGE)
    out = {
        "content-security-policy": CSP_FRAMEABLE if frameable else CSP,
        "x-content-type-options": "nosniff",
        "referrer-policy": "no-referrer",
        "permissions-policy": PERMISSIONS,
    }
    if not (frameable and _embedded(scope)):
        out["cross-origin-opener-policy"] = "same-origin"
    if scope.get("scheme") in ("https", "wss"):
        out["strict-transport-security"] = HSTS
    if path == EMBED:
        out["cross-origin-resource-policy"] = "cross-origin"
    return out


class SecurityHeaders:
    """``app.add_middleware(SecurityHeaders)``: adds :func:`headers_for` to HTTP responses."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = headers_for(scope)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in extra.items():
                    if name not in headers:
                        headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)
