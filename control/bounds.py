"""Bounds that hold before anyone authenticates: what a stranger can make the control plane
hold in memory or keep open.

- :class:`Bounds`, the outermost ASGI middleware: at most ``max_connections`` HTTP requests in
  progress plus WebSockets open, and ``max_per_prefix`` of them from one client /24 or /48
  (past either: 503 ``overloaded`` with ``Retry-After``, or a WebSocket handshake refused),
  and request bodies of at most ``max_body`` bytes: refused
  by their ``Content-Length`` before a byte is read, and counted as they stream (chunked
  bodies), 413 ``too_large`` either way.
- :class:`Pending`: WebSockets accepted but not yet authenticated, at most ``ws_unauth`` in
  all and ``ws_unauth_per_prefix`` from one client /24 or /48 (past it the handshake is
  refused); the signalling code holds a place from before the accept until the auth
  message, which must come within ``ws_auth_timeout`` seconds.
- WebSocket messages are bounded by uvicorn itself (``ws_max_size``: control/server.py),
  which closes with 1009 before the message is buffered whole.
- :func:`guarded_http`: uvicorn's httptools protocol with a deadline for each request head
  (``head_timeout``): a connection that sends nothing, or its headers a byte at a time
  (slow-loris), is closed instead of held; uvicorn itself closes idle keep-alive ones.

Every refusal counts in ``clickacall_control_bound_refusals_total{reason}``.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Final

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from control.metrics import ControlMetrics
from control.selection import truncate_ip

TRY_AGAIN: Final = 1  # seconds, the Retry-After of a refusal for load


class BodyTooLarge(HTTPException):
    """A streamed body went past the limit (answered 413 by the app's handler)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request bodies are limited to {limit} bytes")


def _json(status: int, code: str, message: str, extra: list[tuple[bytes, bytes]]) -> list[Message]:
    error: dict[str, object] = {"code": code, "message": message}  # the app's keys, empty
    error |= {"field": None, "reason": None, "params": {}}
    body = json.dumps({"error": error}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
        *extra,
    ]
    return [
        {"type": "http.response.start", "status": status, "headers": headers},
        {"type": "http.response.body", "body": body},
    ]


def _prefix(scope: Scope) -> str:
    """The client's /24 or /48 (all the control plane keeps of an address), or "-"."""
    client = scope.get("client")
    try:
        return truncate_ip(client[0]) if client else "-"
    except ValueError:
        return "-"


def _length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class Bounds:
    """Connections in progress and request body sizes, checked before any other work."""

    def __init__(
        self,
        app: ASGIApp,
        metrics: ControlMetrics,
        max_connections: int,
        max_body: int,
        max_per_prefix: int | None = None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.max_connections = max_connections
        self.max_per_prefix = max_per_prefix or max_connections
        self.max_body = max_body
        self.open = 0  # HTTP requests in progress plus WebSockets open
        self.by_prefix: Counter[str] = Counter()  # the same by client prefix (none at 0)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        prefix = _prefix(scope)
        if self.open >= self.max_connections:
            await self._refuse(kind, "connections", f"of {self.max_connections} connections", send)
            return
        if self.by_prefix[prefix] >= self.max_per_prefix:
            limit = f"of {self.max_per_prefix} connections from one network"
            await self._refuse(kind, "connections_prefix", limit, send)
            return
        self.open += 1
        self.by_prefix[prefix] += 1
        try:
            if kind == "http":
                await self._http(scope, receive, send)
            else:
                await self.app(scope, receive, send)
        finally:
            self.open -= 1
            self.by_prefix[prefix] -= 1
            if self.by_prefix[prefix] <= 0:
                del self.by_prefix[prefix]

    async def _refuse(self, kind: str, reason: str, limit: str, send: Send) -> None:
        self.metrics.bound_refusals.labels(reason=reason).inc()
        if kind == "websocket":
            await send({"type": "websocket.close", "code": 1013})  # handshake refused
            return
        message = f"the server is at its limit {limit}; try again shortly"
        for m in _json(503, "overloaded", message, [(b"retry-after", b"%d" % TRY_AGAIN)]):
            await send(m)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = self.max_body
        length = _length(scope)
        if length is not None and length > limit:
            self.metrics.bound_refusals.labels(reason="body_too_large").inc()
            for m in _json(413, "too_large", f"request bodies are limited to {limit} bytes", []):
                await send(m)
            return
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    self.metrics.bound_refusals.labels(reason="body_too_large").inc()
                    raise BodyTooLarge(limit)
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except BodyTooLarge as e:  # read outside a route (nothing answered it yet)
            if started:
                raise
            for m in _json(413, "too_large", str(e.detail), []):
                await send(m)


class Pending:
    """WebSockets not yet authenticated, in all and by client prefix (bounded memory: one
    counter per prefix with a socket pending, dropped at zero)."""

    def __init__(self, total: int, per_prefix: int) -> None:
        self.total = total
        self.per_prefix = per_prefix
        self.count = 0
        self.by_prefix: Counter[str] = Counter()

    def enter(self, prefix: str) -> str | None:
        """Hold a place for a socket from ``prefix``; the refusal's reason if there is none."""
        if self.count >= self.total:
            return "ws_unauth_total"
        if self.by_prefix[prefix] >= self.per_prefix:  # (a missing key reads 0, not stored)
            return "ws_unauth_prefix"
        self.count += 1
        self.by_prefix[prefix] += 1
        return None

    def leave(self, prefix: str) -> None:
        self.count -= 1
        self.by_prefix[prefix] -= 1
        if self.by_prefix[prefix] <= 0:
            del self.by_prefix[prefix]


def guarded_http(metrics: ControlMetrics, head_timeout: float) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol, closing a connection whose request head is not complete
    ``head_timeout`` seconds after the connection or the request began (``http=`` of
    uvicorn's config; control/server.py)."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    late = metrics.bound_refusals.labels(reason="head_timeout")

    class Guarded(HttpToolsProtocol):
        _head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self._head_timer is None:
                self._arm()

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._head_timer = self.loop.call_later(head_timeout, self._too_slow)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _too_slow(self) -> None:
            self._head_timer = None
            if not self.transport.is_closing():
                late.inc()
                self.transport.close()

    return Guarded
